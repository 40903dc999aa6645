package cgotorch_test

import (
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

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
		cgotorchtest.AssertClose(t, "fused", got, want, 1e-5, 1e-6)
	}
	// Fallback: float64 and a non-contiguous view.
	x := s.Randn(ct.Options{}, g, 6, 20)
	w, b := s.Ones(ct.Options{}, 20), s.Zeros(ct.Options{}, 20)
	x64 := x.ToDType(ct.Float64)
	want := x64.LayerNorm([]int64{20}, w.ToDType(ct.Float64), b.ToDType(ct.Float64), 1e-5).SiLU()
	ct.NoGrad(func() { x64.LayerNormSiLU_(w.ToDType(ct.Float64), b.ToDType(ct.Float64), 1e-5) })
	cgotorchtest.AssertClose(t, "float64 fallback", x64, want, 1e-12, 1e-12)
	wide := s.Randn(ct.Options{}, g, 20, 6)
	view := wide.T()
	wantView := view.LayerNorm([]int64{20}, w, b, 1e-5).SiLU()
	ct.NoGrad(func() { view.LayerNormSiLU_(w, b, 1e-5) })
	cgotorchtest.AssertClose(t, "strided fallback", view, wantView, 1e-5, 1e-6)

	p := s.Randn(ct.Options{}, g, 4, 8).SetRequiresGrad(true)
	if err := ct.Try(func() { p.LayerNormSiLU_(s.Ones(ct.Options{}, 8), s.Zeros(ct.Options{}, 8), 1e-5) }); err == nil {
		t.Error("an input that requires grad was accepted with grad mode on")
	}
	if err := ct.Try(func() { x.LayerNormSiLU_(s.Ones(ct.Options{}, 7), b, 1e-5) }); err == nil {
		t.Error("a weight of the wrong width was accepted")
	}
}
