package monitor

import (
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/scdiffusion/gotorch-train/cgotorch/atomicfile"
)

// Plot series indices.
const (
	plRSS = iota
	plHWM
	plCPUTensors
	plAlloc
	plReserved
	plPeakAlloc
	plPeakReserved
	plProcGPU
	plLive
	plN
)

var plotStyle = [plN]struct {
	name, color, dash string
}{
	plRSS:          {"RSS (CPU)", "#1f77b4", ""},
	plHWM:          {"peak RSS (VmHWM)", "#1f77b4", "6,4"},
	plCPUTensors:   {"CPU tensors", "#2ca02c", ""},
	plAlloc:        {"GPU allocated", "#ff7f0e", ""},
	plReserved:     {"GPU reserved (Cached)", "#d62728", ""},
	plPeakAlloc:    {"peak allocated", "#ff7f0e", "6,4"},
	plPeakReserved: {"peak reserved", "#d62728", "6,4"},
	plProcGPU:      {"GPU process (NVML)", "#9467bd", ""},
	plLive:         {"live tensor handles", "#555555", ""},
}

type plotPoint struct {
	step int
	v    [plN]float64 // MiB (handles for plLive); NaN when unknown
}

func newPlotPoint(s *Sample) plotPoint {
	p := plotPoint{step: s.Step}
	for i := range p.v {
		p.v[i] = math.NaN()
	}
	set := func(i int, b int64, ok bool) {
		if ok {
			p.v[i] = mb(b)
		}
	}
	set(plRSS, s.RSSBytes, s.RSSValid)
	set(plHWM, s.PeakRSSBytes, s.PeakRSSValid)
	set(plCPUTensors, s.CPUTensorBytes, s.CPUAllocValid)
	set(plAlloc, s.CUDA.AllocatedBytes, s.CUDAValid)
	set(plReserved, s.CUDA.ReservedBytes, s.CUDAValid)
	set(plPeakAlloc, s.CUDA.PeakAllocatedBytes, s.CUDAValid)
	set(plPeakReserved, s.CUDA.PeakReservedBytes, s.CUDAValid)
	set(plProcGPU, s.ProcessGPUBytes, s.ProcessGPUValid)
	p.v[plLive] = float64(s.LiveTensors)
	return p
}

// plotBuffer keeps at most max points: when full, every other point is
// dropped and only every stride-th sample is kept from then on, so a run
// of any length plots with bounded memory.
type plotBuffer struct {
	pts    []plotPoint
	max    int
	stride int
	count  int
}

func (b *plotBuffer) add(s *Sample) { b.addPoint(newPlotPoint(s)) }

func (b *plotBuffer) addPoint(p plotPoint) {
	if b.stride == 0 {
		b.stride = 1
	}
	if b.count%b.stride == 0 {
		b.pts = append(b.pts, p)
		if len(b.pts) >= b.max {
			k := 0
			for i := 0; i < len(b.pts); i += 2 {
				b.pts[k] = b.pts[i]
				k++
			}
			b.pts = b.pts[:k]
			b.stride *= 2
		}
	}
	b.count++
}

// WritePlot writes the memory-over-steps plot of the samples so far as a
// self-contained SVG (no scripts, no external resources), atomically.
// Close calls it for Options.PlotPath.
func (m *Monitor) WritePlot(path string) error {
	pts := m.plot.pts
	if m.hasLast && (len(pts) == 0 || pts[len(pts)-1].step != m.last.Step) {
		pts = append(pts[:len(pts):len(pts)], newPlotPoint(&m.last))
	}
	title := "gotorch-train memory over steps"
	if m.opts.Program != "" {
		title = m.opts.Program + ": memory over steps"
	}
	return atomicfile.WriteFile(path, 0o644, func(w io.Writer) error {
		return writeSVG(w, pts, title, fmt.Sprintf("libtorch %s (%s), %d samples, MiB = 2^20 bytes", m.build.TorchVersion, m.build.Flavour(), m.samples))
	})
}

// niceTicks returns about n round tick values from at or below lo to at
// or above hi.
func niceTicks(lo, hi float64, n int) []float64 {
	if !(hi > lo) {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var t []float64
	first, last := math.Floor(lo/step), math.Ceil(hi/step-1e-9)
	for k := first; k <= last; k++ {
		t = append(t, k*step)
	}
	if len(t) < 2 {
		t = append(t, (last+1)*step)
	}
	return t
}

func fmtTick(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// panel draws one chart: series idx of pts, y axis labelled ylabel.
type panel struct {
	x, y, w, h float64 // plot area
	ylabel     string
	series     []int
	zeroBased  bool // y axis from 0 (memory) or from the data's minimum (handles, to show drift)
}

func writeSVG(w io.Writer, pts []plotPoint, title, subtitle string) error {
	const width, height = 960.0, 680.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	b.WriteString(`<rect width="100%" height="100%" fill="#ffffff"/>` + "\n")
	fmt.Fprintf(&b, `<text x="%g" y="24" text-anchor="middle" font-size="16" font-weight="bold">%s</text>`+"\n", width/2, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%g" y="42" text-anchor="middle" fill="#555">%s</text>`+"\n", width/2, html.EscapeString(subtitle))
	if len(pts) == 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">no samples</text>`+"\n", width/2, height/2)
		b.WriteString("</svg>\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	x0, x1 := float64(pts[0].step), float64(pts[len(pts)-1].step)
	if x1 <= x0 {
		x1 = x0 + 1
	}
	mem := panel{x: 80, y: 60, w: width - 300, h: 380, ylabel: "memory (MiB)", zeroBased: true,
		series: []int{plRSS, plHWM, plCPUTensors, plAlloc, plReserved, plPeakAlloc, plPeakReserved, plProcGPU}}
	live := panel{x: 80, y: 500, w: width - 300, h: 130, ylabel: "live handles", series: []int{plLive}}
	for _, p := range []panel{mem, live} {
		drawPanel(&b, p, pts, x0, x1)
	}
	// Legend (only series with data).
	ly := mem.y + 10
	for _, i := range append(mem.series, plLive) {
		if !hasData(pts, i) {
			continue
		}
		st := plotStyle[i]
		lx := mem.x + mem.w + 20
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly, lx+28, ly, st.color, dashAttr(st.dash))
		fmt.Fprintf(&b, `<text x="%g" y="%g" dominant-baseline="middle">%s</text>`+"\n", lx+36, ly, html.EscapeString(st.name))
		ly += 20
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">training step</text>`+"\n", live.x+live.w/2, height-12)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func dashAttr(d string) string {
	if d == "" {
		return ""
	}
	return ` stroke-dasharray="` + d + `"`
}

func hasData(pts []plotPoint, i int) bool {
	for _, p := range pts {
		if !math.IsNaN(p.v[i]) {
			return true
		}
	}
	return false
}

func drawPanel(b *strings.Builder, p panel, pts []plotPoint, x0, x1 float64) {
	ymin, ymax := math.Inf(1), 0.0
	for _, pt := range pts {
		for _, i := range p.series {
			if v := pt.v[i]; !math.IsNaN(v) {
				ymax = math.Max(ymax, v)
				ymin = math.Min(ymin, v)
			}
		}
	}
	lo := 0.0
	if !p.zeroBased && !math.IsInf(ymin, 1) {
		lo = ymin
	}
	nt := 4
	if p.zeroBased {
		nt = 5
	}
	yt := niceTicks(lo, math.Max(ymax, lo+1), nt)
	ybot, ytop := yt[0], yt[len(yt)-1]
	sx := func(s float64) float64 { return p.x + (s-x0)/(x1-x0)*p.w }
	sy := func(v float64) float64 { return p.y + p.h - (v-ybot)/(ytop-ybot)*p.h }
	fmt.Fprintf(b, `<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#999"/>`+"\n", p.x, p.y, p.w, p.h)
	for _, t := range yt {
		y := sy(t)
		fmt.Fprintf(b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#e5e5e5"/>`+"\n", p.x, y, p.x+p.w, y)
		fmt.Fprintf(b, `<text x="%g" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", p.x-6, y, fmtTick(t))
	}
	for _, t := range niceTicks(x0, x1, 8) {
		if t < x0 || t > x1 {
			continue
		}
		x := sx(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#e5e5e5"/>`+"\n", x, p.y, x, p.y+p.h)
		fmt.Fprintf(b, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", x, p.y+p.h+16, fmtTick(t))
	}
	fmt.Fprintf(b, `<text transform="translate(%g,%g) rotate(-90)" text-anchor="middle">%s</text>`+"\n", p.x-55, p.y+p.h/2, html.EscapeString(p.ylabel))
	for _, i := range p.series {
		st := plotStyle[i]
		var seg []string
		flush := func() {
			if len(seg) == 1 {
				fmt.Fprintf(b, `<circle cx="%s" r="2" fill="%s"/>`+"\n", strings.Replace(seg[0], ",", `" cy="`, 1), st.color)
			} else if len(seg) > 1 {
				fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", st.color, dashAttr(st.dash), strings.Join(seg, " "))
			}
			seg = seg[:0]
		}
		for _, pt := range pts {
			v := pt.v[i]
			if math.IsNaN(v) {
				flush()
				continue
			}
			seg = append(seg, fmt.Sprintf("%.1f,%.1f", sx(float64(pt.step)), sy(v)))
		}
		flush()
	}
}

// writeFileAtomic is atomicfile.WriteFile with bytes.
func writeFileAtomic(path string, data []byte) error {
	return atomicfile.WriteBytes(path, data, 0o644)
}
