package trainer

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// window accumulates the logged quantities on the device between two dumps,
// so a step adds a few tiny kernels and no host synchronisation; a dump
// reads the 18 sums once.
//
// Layout of acc (float64):
//
//	[0] Σ loss_i   [1] Σ mse_i   [2] samples
//	[3..14] per quartile q=0..3: Σ loss, Σ mse, samples  (a [4,3] view)
//	[15] Σ grad_norm   [16] Σ param_norm   [17] optimizer steps
type window struct {
	acc *ct.Tensor
	one *ct.Tensor // float64 [1] = 1: counts steps without allocating a scalar
	t   float64    // number of timesteps, for the quartile of each sample
}

const accLen = 18

func newWindow(dev ct.Device, steps int) (*window, error) {
	w := &window{t: float64(steps)}
	err := ct.Try(func() {
		o := ct.Options{DType: ct.Float64, Device: dev}
		w.acc, w.one = ct.Zeros(o, accLen), ct.Full(1, o, 1)
	})
	return w, err
}

func (w *window) close() {
	w.acc.Free()
	w.one.Free()
}

// addSamples adds one step's per-sample mse [B], weights [B] and timesteps [B].
func (w *window) addSamples(s *ct.Scope, mse, weights, t *ct.Tensor) {
	m := mse.ToDType(ct.Float64)
	l := m.Mul(weights)
	ones := s.Ones(ct.Options{DType: ct.Float64, Device: m.Device()}, mse.Dim(0))
	cols := ct.Stack([]*ct.Tensor{l, m, ones}, 1) // [B,3]
	head := s.Adopt(w.acc.Narrow(0, 0, 3))
	head.Add_(cols.SumDims(false, 0))
	// Quartile of a sample: ⌊4t/T⌋ (the reference's log_loss_dict).
	q := t.MulScalar(4).DivScalar(w.t).Floor().ToDType(ct.Int64).ClampMax(3)
	s.Adopt(w.acc.Narrow(0, 3, 12)).View(4, 3).IndexAdd_(0, q, cols)
}

// addNorms adds one optimizer step's sqrt(sumsq) = (grad_norm, param_norm),
// taking the root in place (sumsq is zeroed before every update), so that
// it allocates nothing.
func (w *window) addNorms(s *ct.Scope, sumsq *ct.Tensor) {
	s.Adopt(w.acc.Narrow(0, 15, 2)).Add_(sumsq.Sqrt_())
	s.Adopt(w.acc.Narrow(0, 17, 1)).Add_(w.one)
}

// dump reads the window (one host sync), returns the means and resets it.
func (w *window) dump() map[string]float64 {
	v := w.acc.Float64s()
	w.acc.Zero_()
	out := map[string]float64{}
	mean := func(sum, n float64) float64 {
		if n == 0 {
			return math.NaN()
		}
		return sum / n
	}
	out["loss"] = mean(v[0], v[2])
	out["mse"] = mean(v[1], v[2])
	for q := 0; q < 4; q++ {
		base := 3 + 3*q
		if v[base+2] > 0 { // the reference only logs quartiles that occurred
			out[fmt.Sprintf("loss_q%d", q)] = v[base] / v[base+2]
			out[fmt.Sprintf("mse_q%d", q)] = v[base+1] / v[base+2]
		}
	}
	if v[17] > 0 {
		out["grad_norm"] = v[15] / v[17]
		out["param_norm"] = v[16] / v[17]
	}
	return out
}

// progressColumns is the fixed CSV column order (sorted key names, as the
// reference's CSV writer orders them).
func progressColumns(lossScaling bool) []string {
	cols := []string{"grad_norm"}
	if lossScaling {
		cols = append(cols, "lg_loss_scale")
	}
	cols = append(cols, "loss", "loss_q0", "loss_q1", "loss_q2", "loss_q3", "lr",
		"mse", "mse_q0", "mse_q1", "mse_q2", "mse_q3", "param_norm", "samples", "step")
	return cols
}

// progressWriter appends rows to SaveDir/progress.csv, writing the header
// when the file is new.
type progressWriter struct {
	f    *os.File
	w    *bufio.Writer
	cols []string
}

func openProgress(dir string, cols []string) (*progressWriter, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "progress.csv")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p := &progressWriter{f: f, w: bufio.NewWriter(f), cols: cols}
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		fmt.Fprintln(p.w, strings.Join(cols, ","))
	}
	return p, nil
}

func (p *progressWriter) row(kv map[string]float64) error {
	if p == nil {
		return nil // a Prober, or a data-parallel rank other than 0, writes no progress file
	}
	fields := make([]string, len(p.cols))
	for i, c := range p.cols {
		if v, ok := kv[c]; ok && !math.IsNaN(v) {
			fields[i] = fmt.Sprintf("%.8g", v)
		}
	}
	fmt.Fprintln(p.w, strings.Join(fields, ","))
	return p.w.Flush()
}

func (p *progressWriter) close() error {
	if p == nil {
		return nil
	}
	err := p.w.Flush()
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// formatLine renders a dump as one stdout line.
func formatLine(kv map[string]float64, lossScaling bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "step %d samples %d loss %.6f mse %.6f", int64(kv["step"]), int64(kv["samples"]), kv["loss"], kv["mse"])
	for q := 0; q < 4; q++ {
		if v, ok := kv[fmt.Sprintf("loss_q%d", q)]; ok {
			fmt.Fprintf(&b, " q%d %.4f", q, v)
		}
	}
	if v, ok := kv["grad_norm"]; ok {
		fmt.Fprintf(&b, " grad_norm %.4g param_norm %.6g", v, kv["param_norm"])
	}
	fmt.Fprintf(&b, " lr %.4g", kv["lr"])
	if lossScaling {
		fmt.Fprintf(&b, " lg_loss_scale %.3f", kv["lg_loss_scale"])
	}
	return b.String()
}
