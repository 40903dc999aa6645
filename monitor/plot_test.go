package monitor

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

// checkSVG parses the file as XML and rejects scripts, event handlers and
// external references.
func checkSVG(t *testing.T, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if se.Name.Local == "script" || se.Name.Local == "image" || se.Name.Local == "foreignObject" {
				t.Fatalf("element <%s>", se.Name.Local)
			}
			for _, a := range se.Attr {
				if strings.HasPrefix(a.Name.Local, "on") || a.Name.Local == "href" {
					t.Fatalf("attribute %s=%q", a.Name.Local, a.Value)
				}
			}
		}
	}
	if strings.Contains(strings.ReplaceAll(string(b), `xmlns="http://www.w3.org/2000/svg"`, ""), "http") {
		t.Fatal("external reference")
	}
}

func TestPlotOnClose(t *testing.T) {
	skipOnCUDA(t)
	dir := t.TempDir()
	plot := filepath.Join(dir, "memory.svg")
	m, _ := newTestMonitor(t, Options{LogInterval: -1, SampleInterval: 10, PlotPath: plot, Program: "gotorch-train <test>"})
	s := cgotorch.NewScope()
	defer s.Close()
	for step := 0; step <= 500; step++ {
		if step%100 == 0 {
			s.Full(1, cgotorch.Options{}, 256, 256)
		}
		m.LogMemoryUsage(step)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	checkSVG(t, b)
	for _, want := range []string{"memory (MiB)", "live handles", "training step", "RSS (CPU)", "peak RSS (VmHWM)", "CPU tensors",
		"live tensor handles", "<polyline", "gotorch-train &lt;test&gt;: memory over steps", ">500<"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("plot lacks %q", want)
		}
	}
	if strings.Contains(string(b), "GPU allocated") {
		t.Error("GPU series in the legend of a CPU run")
	}
}

func TestPlotWithGPUSeries(t *testing.T) {
	var pts []plotPoint
	for i := 0; i < 50; i++ {
		s := withNVML(cudaSample(int64(i)*10*MiB, int64(i)*12*MiB, -1, 0), 16*GiB, 8*GiB, int64(i)*13*MiB)
		s.Step = i * 100
		s.LiveTensors = int64(100 + i)
		if i == 20 {
			s.CUDAValid = false // a gap
		}
		pts = append(pts, newPlotPoint(&s))
	}
	var buf bytes.Buffer
	if err := writeSVG(&buf, pts, "t", "s"); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, buf.Bytes())
	for _, want := range []string{"GPU allocated", "GPU reserved (Cached)", "peak reserved", "GPU process (NVML)"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("plot lacks %q", want)
		}
	}
	// An empty plot is still a valid SVG.
	buf.Reset()
	writeSVG(&buf, nil, "t", "s")
	checkSVG(t, buf.Bytes())
}

func TestPlotBufferBounded(t *testing.T) {
	b := plotBuffer{max: 100}
	s := Sample{RSSValid: true}
	for i := 0; i < 100000; i++ {
		s.Step = i
		b.add(&s)
		if len(b.pts) >= b.max {
			t.Fatalf("buffer grew to %d", len(b.pts))
		}
	}
	if len(b.pts) < b.max/2 || b.pts[0].step != 0 {
		t.Fatalf("%d points, first %d", len(b.pts), b.pts[0].step)
	}
	for i := 1; i < len(b.pts); i++ {
		if d := b.pts[i].step - b.pts[i-1].step; d != b.stride {
			t.Fatalf("uneven spacing %d (stride %d)", d, b.stride)
		}
	}
}

func TestNiceTicks(t *testing.T) {
	for _, c := range []struct{ lo, hi float64 }{{0, 1}, {0, 183.4}, {0, 12345}, {1000, 1000}, {0, 7e6}} {
		ts := niceTicks(c.lo, c.hi, 5)
		if len(ts) < 2 || ts[0] > c.lo || ts[len(ts)-1] < c.hi || len(ts) > 12 {
			t.Errorf("%v: %v", c, ts)
		}
	}
}

func TestSummaryJSON(t *testing.T) {
	m, _ := newTestMonitor(t, Options{LogInterval: 1, Leak: LeakConfig{WarmupSteps: -1, MinSamples: 3}})
	for step := 0; step < 5; step++ {
		m.LogMemoryUsage(step)
	}
	m.CleanupMemory()
	s := m.Summary()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back["samples"].(float64) != 5 || back["cleanups"].(float64) != 1 || len(back["leaks"].([]any)) == 0 {
		t.Fatalf("%s", b)
	}
	// Verdicts with too few points carry infinite bounds, written as null.
	v := LeakVerdict{Series: SeriesRSS, Slope: math.NaN(), Lower: math.Inf(-1), Upper: math.Inf(1)}
	if b, err := json.Marshal(v); err != nil || !strings.Contains(string(b), `"lower_per_1000_steps":null`) {
		t.Fatalf("%s %v", b, err)
	}
}
