package cgotorch_test

import (
	"math"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// assertLNSiLU compares LayerNorm+SiLU results over the last dimension
// under the rule of cgotorchtest/tolerance.go: K is a mean and a variance
// over the width plus the elementwise normalisation, affine map and SiLU;
// the scale of each element is Σ|t| of (x_i − μ)·rstd·w_i + b_i, that is
// (|x_i| + |μ|)·rstd·|w_i| + |b_i| (float64): the terms cancel when a row
// is nearly constant (width 1: rstd = 1/√eps).
func assertLNSiLU(t *testing.T, s *ct.Scope, name string, got, want, x, w, b *ct.Tensor, eps float64) {
	t.Helper()
	shape := x.Shape()
	width := int(shape[len(shape)-1])
	xs, ws, bs := cgotorchtest.Float64s(x), cgotorchtest.Float64s(w), cgotorchtest.Float64s(b)
	scale := make([]float64, len(xs))
	for r := 0; r < len(xs)/width; r++ {
		row := xs[r*width : (r+1)*width]
		mu, v := 0.0, 0.0
		for _, e := range row {
			mu += e
		}
		mu /= float64(width)
		for _, e := range row {
			v += (e - mu) * (e - mu)
		}
		rstd := 1 / math.Sqrt(v/float64(width)+eps)
		for i, e := range row {
			scale[r*width+i] = (math.Abs(e)+math.Abs(mu))*rstd*math.Abs(ws[i]) + math.Abs(bs[i])
		}
	}
	cgotorchtest.AssertFP32Elementwise(t, name, got, want, s.FromSlice(scale, x.Shape()...), 2*width+4)
}

// TestLayerNormSiLUMatchesLibtorch: the fused in-place kernel equals
// layer_norm then silu for widths that are and are not SIMD multiples, many
// rows (split across threads), large and tiny activations, and through the
// fallback for other dtypes and layouts; it refuses autograd inputs.
func TestLayerNormSiLUMatchesLibtorch(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	g, err := ct.NewGenerator(ct.CPU, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, c := range []struct {
		rows, width int64
		scale       float64
	}{{3, 1, 1}, {5, 37, 1}, {700, 512, 3}, {64, 1024, 40}, {9, 128, 1e-3}} {
		x := s.Randn(ct.Options{}, g, c.rows, c.width).MulScalar(c.scale)
		w := s.Randn(ct.Options{}, g, c.width).AddScalar(1)
		b := s.Randn(ct.Options{}, g, c.width).MulScalar(3) // large biases reach SiLU's tails
		want := x.LayerNorm([]int64{c.width}, w, b, 1e-5).SiLU()
		got := x.Clone()
		ct.NoGrad(func() { got.LayerNormSiLU_(w, b, 1e-5) })
		assertLNSiLU(t, s, "fused", got, want, x, w, b, 1e-5)
	}
	// Fallback: float64 and a non-contiguous view.
	x := s.Randn(ct.Options{}, g, 6, 20)
	w, b := s.Ones(ct.Options{}, 20), s.Zeros(ct.Options{}, 20)
	x64 := x.ToDType(ct.Float64)
	want := x64.LayerNorm([]int64{20}, w.ToDType(ct.Float64), b.ToDType(ct.Float64), 1e-5).SiLU()
	ct.NoGrad(func() { x64.LayerNormSiLU_(w.ToDType(ct.Float64), b.ToDType(ct.Float64), 1e-5) })
	assertLNSiLU(t, s, "float64 fallback", x64, want, x, w, b, 1e-5)
	wide := s.Randn(ct.Options{}, g, 20, 6)
	view := wide.T()
	before := view.Contiguous() // the input, copied before the in-place op
	wantView := view.LayerNorm([]int64{20}, w, b, 1e-5).SiLU()
	ct.NoGrad(func() { view.LayerNormSiLU_(w, b, 1e-5) })
	assertLNSiLU(t, s, "strided fallback", view, wantView, before, w, b, 1e-5)

	p := s.Randn(ct.Options{}, g, 4, 8).SetRequiresGrad(true)
	if err := ct.Try(func() { p.LayerNormSiLU_(s.Ones(ct.Options{}, 8), s.Zeros(ct.Options{}, 8), 1e-5) }); err == nil {
		t.Error("an input that requires grad was accepted with grad mode on")
	}
	if err := ct.Try(func() { x.LayerNormSiLU_(s.Ones(ct.Options{}, 7), b, 1e-5) }); err == nil {
		t.Error("a weight of the wrong width was accepted")
	}
}
