package cellunet_test

import (
	"math"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/nn"
)

// TestForwardAtEqualsForward: the shared-step forward (embedding folded into
// the biases) gives Forward's output at every kind of step, with and
// without autograd (then its gradient too), and a bfloat16 copy of the
// model stays within bfloat16 rounding of it.
func TestForwardAtEqualsForward(t *testing.T) {
	st, m := newDefault(t, 7)
	s := ct.NewScope()
	defer s.Close()
	g, err := ct.NewGenerator(ct.CPU, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	x := s.Randn(ct.Options{}, g, 64, 128)
	for _, step := range []int64{0, 1, 499, 999} {
		tt := s.Full(float64(step), ct.Options{DType: ct.Int64}, 64)
		var want, got *ct.Tensor
		ct.NoGrad(func() {
			want = s.Adopt(m.Forward(x, tt))
			got = s.Adopt(m.ForwardAt(x, step))
		})
		cgotorchtest.AssertClose(t, "ForwardAt no-grad", got, want, 1e-5, 1e-6)
	}
	// With autograd: same values and the same gradient w.r.t. x.
	xg := s.Adopt(x.Detach()).SetRequiresGrad(true)
	tt := s.Full(250, ct.Options{DType: ct.Int64}, 64)
	gradOf := func(y *ct.Tensor) *ct.Tensor { return s.Adopt(ct.GradOf(s.Adopt(y).Square().Sum(), xg)) }
	gw, gg := gradOf(m.Forward(xg, tt)), gradOf(m.ForwardAt(xg, 250))
	cgotorchtest.AssertClose(t, "ForwardAt gradient", gg, gw, 1e-4, 1e-6)

	// bfloat16: 8 significant bits; the error relative to the output's scale.
	bst := nn.NewStoreDType(ct.CPU, ct.BFloat16)
	defer bst.Close()
	bm, err := cellunet.New(bst.Root(), cellunet.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	var sd []ct.Named
	for _, p := range st.All() {
		sd = append(sd, ct.Named{Name: p.Name, T: p.T})
	}
	if err := bst.LoadStateDict(sd, true); err != nil {
		t.Fatal(err)
	}
	var want, got *ct.Tensor
	ct.NoGrad(func() {
		want = s.Adopt(m.ForwardAt(x, 600))
		got = s.Adopt(bm.ForwardAt(x, 600))
	})
	if got.DType() != ct.BFloat16 {
		t.Fatalf("bf16 model returned %s", got.DType())
	}
	diff := s.Adopt(got.ToDType(ct.Float32)).Sub(want)
	rel := diff.Norm().Item() / want.Norm().Item()
	if math.IsNaN(rel) || rel > 0.03 {
		t.Errorf("bfloat16 forward: relative error %.4f, want < 0.03", rel)
	}
	t.Logf("bfloat16 forward: relative L2 error %.4f", rel)
}
