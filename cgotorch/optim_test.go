package cgotorch_test

import (
	"fmt"
	"math"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

var goldenAdamW = ct.AdamWConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.05}

// TestAdamWMatchesPyTorch: three steps of torch::optim::AdamW through
// cgotorch equal torch.optim.AdamW in Python on the same gradients (the
// golden file's): elementwise formulas, K = the step count under the rule.
func TestAdamWMatchesPyTorch(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	g := golden(t, s, "testdata/adamw_golden.safetensors")
	p := []*ct.Tensor{g["p0"].Clone().SetRequiresGrad(true), g["p1"].Clone().SetRequiresGrad(true)}
	opt, err := ct.NewAdamW(p, goldenAdamW)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Close()
	for k := 0; k < 3; k++ {
		for i := range p {
			p[i].SetGrad(g[fmt.Sprintf("g%d.%d", k, i)].Clone())
		}
		if err := opt.Step(); err != nil {
			t.Fatal(err)
		}
		for i := range p {
			assertFP32(t, fmt.Sprintf("step %d param %d", k, i), p[i].Detach(), g[fmt.Sprintf("step%d.%d", k, i)], cgotorchtest.FP32{K: k + 1})
		}
	}
	st, err := opt.State(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Step != 3 {
		t.Errorf("state step = %d, want 3", st.Step)
	}
	assertFP32(t, "exp_avg", st.ExpAvg, g["final.exp_avg.0"], cgotorchtest.FP32{K: 3})
	assertFP32(t, "exp_avg_sq", st.ExpAvgSq, g["final.exp_avg_sq.0"], cgotorchtest.FP32{K: 3})
}

// TestFusedAdamWMatchesPyTorch: the single-pass flat-buffer AdamW with EMA
// equals torch.optim.AdamW plus ema.mul_(0.9).add_(p, alpha=0.1) on the
// same gradients (elementwise, K = the step count under the rule; the norms
// are float64 sums of 35 terms).
func TestFusedAdamWMatchesPyTorch(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	g := golden(t, s, "testdata/adamw_golden.safetensors")
	flat := func(a, b *ct.Tensor) *ct.Tensor {
		return ct.Cat([]*ct.Tensor{a.Reshape(-1), b.Reshape(-1)}, 0)
	}
	p := flat(g["p0"], g["p1"])
	ema := p.Clone()
	m, v := s.Zeros(ct.Options{}, 35), s.Zeros(ct.Options{}, 35)
	for k := 0; k < 3; k++ {
		grad := flat(g[fmt.Sprintf("g%d.0", k)], g[fmt.Sprintf("g%d.1", k)])
		sumsq := s.Zeros(ct.Of(ct.Float64), 2)
		wantG, wantP := grad.Norm().Item(), p.Norm().Item()
		if err := ct.FusedAdamW(p, grad.MulScalar(4), m, v, int64(k+1), goldenAdamW, ct.FusedStep{
			GradScale: 0.25, EMAs: []*ct.Tensor{ema}, Rates: []float64{0.9}, SumSq: sumsq}); err != nil {
			t.Fatal(err)
		}
		// float64 sums here against float32 norms of 35 elements (K = 35).
		tol := 2 * cgotorchtest.Gamma(35+1, cgotorchtest.UnitRoundoff(ct.Float32))
		if gotG, gotP := math.Sqrt(sumsq.Float64s()[0]), math.Sqrt(sumsq.Float64s()[1]); math.Abs(gotG-wantG) > tol*wantG || math.Abs(gotP-wantP) > tol*wantP {
			t.Errorf("norms from the fused pass: grad %v param %v, want %v %v", gotG, gotP, wantG, wantP)
		}
		if err := ct.FusedAdamW(s.Zeros(ct.Options{}, 35), grad, s.Zeros(ct.Options{}, 35), s.Zeros(ct.Options{}, 35), 1, goldenAdamW, ct.FusedStep{ZeroGrad: true}); err != nil {
			t.Fatal(err)
		}
		if grad.Abs().Sum().Item() != 0 {
			t.Error("gradient not zeroed")
		}
		assertFP32(t, fmt.Sprintf("step %d", k), p, flat(g[fmt.Sprintf("step%d.0", k)], g[fmt.Sprintf("step%d.1", k)]), cgotorchtest.FP32{K: k + 1})
		assertFP32(t, fmt.Sprintf("ema %d", k), ema, flat(g[fmt.Sprintf("ema%d.0", k)], g[fmt.Sprintf("ema%d.1", k)]), cgotorchtest.FP32{K: k + 2})
	}
}

func TestZeroGradSemantics(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	p := s.Ones(ct.Options{}, 3).SetRequiresGrad(true)
	opt, err := ct.NewAdamW([]*ct.Tensor{p}, ct.DefaultAdamWConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Close()
	p.MulScalar(2).Sum().Backward()
	g := p.Grad(s)
	if err := opt.ZeroGrad(false); err != nil {
		t.Fatal(err)
	}
	if got := p.Grad(s); got == nil || got.Abs().Sum().Item() != 0 {
		t.Fatal("ZeroGrad(false) did not zero the gradient in place")
	}
	if g.Sum().Item() != 0 {
		t.Error("ZeroGrad(false) replaced the gradient tensor instead of zeroing it")
	}
	if err := opt.ZeroGrad(true); err != nil {
		t.Fatal(err)
	}
	if p.Grad(s) != nil {
		t.Error("ZeroGrad(true) left a gradient")
	}
}

func TestAdamWLearningRateAndStateRoundTrip(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	mk := func() (*ct.Tensor, *ct.AdamW) {
		p := s.Full(1, ct.Options{}, 4).SetRequiresGrad(true)
		o, err := ct.NewAdamW([]*ct.Tensor{p}, ct.DefaultAdamWConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(o.Close)
		return p, o
	}
	p, opt := mk()
	if opt.LR() != 1e-3 {
		t.Errorf("lr = %v, want 1e-3", opt.LR())
	}
	if err := opt.SetLR(5e-4); err != nil || opt.LR() != 5e-4 {
		t.Fatalf("SetLR: lr = %v, err = %v", opt.LR(), err)
	}
	for i := 0; i < 2; i++ {
		if err := opt.ZeroGrad(true); err != nil {
			t.Fatal(err)
		}
		p.Square().Sum().Backward()
		if err := opt.Step(); err != nil {
			t.Fatal(err)
		}
	}
	sd, err := opt.StateDict(s)
	if err != nil {
		t.Fatal(err)
	}
	q, opt2 := mk()
	ct.NoGrad(func() { q.Copy_(p) })
	if err := opt2.LoadStateDict(sd); err != nil {
		t.Fatal(err)
	}
	if opt2.LR() != 5e-4 {
		t.Errorf("restored lr = %v", opt2.LR())
	}
	// One more identical step on both must give identical parameters.
	for _, x := range []struct {
		p *ct.Tensor
		o *ct.AdamW
	}{{p, opt}, {q, opt2}} {
		if err := x.o.ZeroGrad(true); err != nil {
			t.Fatal(err)
		}
		x.p.Square().Sum().Backward()
		if err := x.o.Step(); err != nil {
			t.Fatal(err)
		}
	}
	assertClose(t, "after restore", q.Detach(), p.Detach(), 0, 0)
}

func TestGeneratorStateRoundTrip(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	g, err := ct.NewGenerator(ct.CPU, 123)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	s.Randn(ct.Options{}, g, 10)
	st, err := g.State()
	if err != nil {
		t.Fatal(err)
	}
	a := s.Randn(ct.Options{}, g, 10)
	if err := g.SetState(st); err != nil {
		t.Fatal(err)
	}
	b := s.Randn(ct.Options{}, g, 10)
	assertClose(t, "replay", b, a, 0, 0)
	g.Close()
	g.Close() // idempotent
}

func TestGradNormAndClip(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	a := s.Zeros(ct.Options{}, 2).SetRequiresGrad(true)
	b := s.Zeros(ct.Options{}, 1).SetRequiresGrad(true)
	a.SetGrad(s.FromSlice([]float32{3, 0}))
	b.SetGrad(s.FromSlice([]float32{4}))
	if n := ct.GradNorm(s, []*ct.Tensor{a, b}).Item(); n != 5 {
		t.Errorf("grad norm = %v, want 5", n)
	}
	if n := ct.NormOf(s, []*ct.Tensor{a.Grad(s), b.Grad(s)}).Item(); n != 5 {
		t.Errorf("norm of = %v, want 5", n)
	}
	total, err := ct.ClipGradNorm([]*ct.Tensor{a, b}, 1)
	if err != nil || total != 5 {
		t.Fatalf("clip: total %v err %v", total, err)
	}
	if n := ct.GradNorm(s, []*ct.Tensor{a, b}).Item(); n < 0.9999 || n > 1.0001 {
		t.Errorf("norm after clipping to 1 = %v", n)
	}
}
