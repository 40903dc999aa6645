package diffusion_test

import (
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// TestClassifierGuidanceMatchesPython: g = s·∇_x log p(y|x,t) for one
// classifier (s = 2) and the two-classifier sum (s1 = 2, s2 = 0.6), against
// torch.autograd.grad. Tolerance: the rule with K = kGuide. Also: the gradient
// is computed even inside no-grad, leaves x without a gradient, touches no
// parameter .grad and frees all its intermediates; no terms give zero.
func TestClassifierGuidanceMatchesPython(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	f.cls1.w1.SetRequiresGrad(true) // a trainable parameter must not receive a .grad
	x, tt := f.get(t, "in.x"), f.get(t, "in.t")
	y1, y2 := f.get(t, "in.y1"), f.get(t, "in.y2")
	cases := []struct {
		key   string
		terms []diffusion.ClassifierTerm
	}{
		{"guide.single", []diffusion.ClassifierTerm{{Classifier: f.cls1, Labels: y1, Scale: 2}}},
		{"guide.multi", []diffusion.ClassifierTerm{
			{Classifier: f.cls1, Labels: y1, Scale: 2},
			{Classifier: f.cls2, Labels: y2, Scale: 0.6}}},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			g := diffusion.ClassifierGuidance(c.terms...)
			base := ct.LiveTensors()
			var got *ct.Tensor
			ct.NoGrad(func() { got = g(x, tt) })
			if got.Scope() != s {
				t.Error("gradient does not join x's scope")
			}
			if d := ct.LiveTensors() - base; d != 1 {
				t.Errorf("guidance left base+%d live handles, want base+1 (the result)", d)
			}
			if got.RequiresGrad() || x.RequiresGrad() {
				t.Error("the gradient or x requires grad")
			}
			assertK(t, c.key, got, f.get(t, c.key), kGuide)
		})
	}
	if f.cls1.w1.Grad(s) != nil {
		t.Error("guidance accumulated into a parameter's .grad")
	}
	zero := diffusion.ClassifierGuidance()(x, tt)
	if v := zero.Abs().Sum().Item(); v != 0 {
		t.Errorf("no terms: |g| = %v, want 0", v)
	}
}
