package cellunet_test

import (
	"math"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/internal/unettest"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// TestForwardAtEqualsForward: the shared-step forward (embedding folded into
// the biases) gives Forward's output at every kind of step, with and
// without autograd (then its gradient too), and a bfloat16 copy of the
// model stays within bfloat16 rounding of it.
func TestForwardAtEqualsForward(t *testing.T) {
	_, m := newDefault(t, 7)
	s := ct.NewScope()
	defer s.Close()
	g, err := ct.NewGenerator(ct.CPU, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	x := s.Randn(ct.Options{}, g, 64, 128)
	// Two evaluations of the same formula in other orders: the rule of
	// cgotorchtest/tolerance.go, with the forward's accumulation length (the
	// gradient retraces it backwards).
	k := unettest.ForwardK(m.Config())
	for _, step := range []int64{0, 1, 499, 999} {
		tt := s.Full(float64(step), ct.Options{DType: ct.Int64}, 64)
		var want, got *ct.Tensor
		ct.NoGrad(func() {
			want = s.Adopt(m.Forward(x, tt))
			got = s.Adopt(m.ForwardAt(x, step))
		})
		cgotorchtest.AssertFP32(t, "ForwardAt no-grad", got, want, cgotorchtest.FP32{K: k})
	}
	// With autograd: same values and the same gradient w.r.t. x.
	xg := s.Adopt(x.Detach()).SetRequiresGrad(true)
	tt := s.Full(250, ct.Options{DType: ct.Int64}, 64)
	gradOf := func(y *ct.Tensor) *ct.Tensor { return s.Adopt(ct.GradOf(s.Adopt(y).Square().Sum(), xg)) }
	gw, gg := gradOf(m.Forward(xg, tt)), gradOf(m.ForwardAt(xg, 250))
	cgotorchtest.AssertFP32(t, "ForwardAt gradient", gg, gw, cgotorchtest.FP32{K: 2*k + int(m.Config().InputDim)})

	// Matrix products in bfloat16 (8 significant bits): the error relative
	// to the output's scale, and the result is float32.
	mx, err := cellunet.NewMixed(m, ct.BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	defer mx.Close()
	var want, got *ct.Tensor
	base := ct.LiveTensors()
	ct.NoGrad(func() {
		want = s.Adopt(m.ForwardAt(x, 600))
		got = s.Adopt(mx.ForwardAt(x, 600))
	})
	if d := ct.LiveTensors() - base; d != 2 {
		t.Errorf("%d live handles after two forwards, want their 2 results", d)
	}
	if got.DType() != ct.Float32 {
		t.Fatalf("mixed model returned %s", got.DType())
	}
	rel := s.Adopt(got.Sub(want)).Norm().Item() / want.Norm().Item()
	if math.IsNaN(rel) || rel > 0.03 || rel == 0 {
		t.Errorf("bfloat16 matrix products: relative error %.4f, want in (0, 0.03)", rel)
	}
	t.Logf("bfloat16 matrix products: relative L2 error %.4f", rel)
	if _, err := cellunet.NewMixed(m, ct.Float64); err == nil {
		t.Error("NewMixed(float64): no error")
	}
}
