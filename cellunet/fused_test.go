package cellunet_test

import (
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/nn"
)

// fusedCase is one model and batch for the fused-step parity tests.
type fusedCase struct {
	name  string
	cfg   cellunet.Config
	batch int64
}

var fusedCases = []fusedCase{
	{"default", cellunet.DefaultConfig(), 128},
	// Widths that are no multiple of the 16-lane loops, three levels, a head
	// width 2·H[1] unlike H[0], and an odd batch.
	{"odd", cellunet.Config{InputDim: 24, Hidden: []int64{40, 24, 18}}, 37},
}

// fusedBatch is a training batch drawn from a fixed generator.
type fusedBatch struct {
	x0, t, noise, w *ct.Tensor
	coef            float64
}

func newFusedBatch(t *testing.T, s *ct.Scope, b, d int64, steps int, seed uint64) fusedBatch {
	t.Helper()
	g, err := ct.NewGenerator(ct.CPU, seed)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	return fusedBatch{
		x0:    s.Randn(ct.Options{}, g, b, d).Normalize(2, 1, 1e-12),
		t:     s.RandInt(0, int64(steps), ct.Options{DType: ct.Int64}, g, b),
		noise: s.Randn(ct.Options{}, g, b, d),
		w:     s.Rand(ct.Options{}, g, b).AddScalar(0.5), // importance weights in [0.5, 1.5)
		coef:  1 / float64(b),
	}
}

// autogradGrads runs the generic path (cellunet.Model under autograd, as
// the trainer does) and returns the per-sample mse and the flat gradient.
func autogradGrads(t *testing.T, s *ct.Scope, st *nn.Store, m *cellunet.Model, d *diffusion.Diffusion, fb fusedBatch) (mse, grad *ct.Tensor) {
	t.Helper()
	st.ZeroGrad()
	mse = d.PerSampleMSE(m, fb.x0, fb.t, fb.noise)
	mse.Mul(fb.w).Sum().MulScalar(fb.coef).Backward()
	return mse.Detach(), s.Adopt(st.FlatGrads().Clone())
}

// float64Grads is the reference truth: the same loss written out with
// cgotorch ops in float64 (from the float32 parameters and inputs) and
// differentiated by autograd. It returns the flat gradient in float64.
func float64Grads(t *testing.T, s *ct.Scope, m *cellunet.Model, cfg cellunet.Config, sched *diffusion.Schedule, fb fusedBatch) *ct.Tensor {
	t.Helper()
	ps := m.TrainableParams()
	p := make([]*ct.Tensor, len(ps))
	for i, q := range ps {
		p[i] = s.Adopt(q.T.Detach()).ToDType(ct.Float64).SetRequiresGrad(true)
	}
	f64 := ct.Options{DType: ct.Float64}
	k := 0
	next := func() *ct.Tensor { k++; return p[k-1] }
	linear := func(x *ct.Tensor) *ct.Tensor { w := next(); return x.Linear(w, next()) }
	ln := func(x *ct.Tensor) *ct.Tensor {
		w := next()
		return x.LayerNorm([]int64{x.Dim(1)}, w, next(), 1e-5)
	}
	ab := s.FromSlice(sched.SqrtAlphasCumprod).IndexSelect(0, fb.t).Unsqueeze(1)
	bb := s.FromSlice(sched.SqrtOneMinusAlphasCumprod).IndexSelect(0, fb.t).Unsqueeze(1)
	x0, noise := fb.x0.ToDType(ct.Float64), fb.noise.ToDType(ct.Float64)
	xt := ab.Mul(x0).Add(bb.Mul(noise))
	e := cfg.Hidden[0]
	steps := s.FromSlice(sched.TimestepMap).IndexSelect(0, fb.t).ToDType(ct.Float64).Unsqueeze(1)
	freqs := s.Arange(0, float64(e/2), 1, f64).MulScalar(-math.Log(10000) / float64(e/2)).Exp().Unsqueeze(0)
	args := steps.Mul(freqs)
	sin := ct.Cat([]*ct.Tensor{args.Cos(), args.Sin()}, 1)
	emb := linear(linear(sin).SiLU())
	semb := emb.SiLU()
	block := func(x *ct.Tensor) *ct.Tensor {
		h := linear(x) // state-dict order: fc, norm, emb_layer
		gamma, beta := next(), next()
		h = h.Add(linear(semb))
		return h.LayerNorm([]int64{h.Dim(1)}, gamma, beta, 1e-5).SiLU()
	}
	var skips []*ct.Tensor
	h := xt
	for i := range cfg.Hidden {
		h = block(h)
		if i < len(cfg.Hidden)-1 {
			skips = append(skips, h)
		}
	}
	for i := len(cfg.Hidden) - 2; i >= 0; i-- {
		h = block(h).Add(skips[i])
	}
	out := linear(ln(linear(h)).SiLU())
	mse := out.Sub(noise).Square().MeanDims(false, 1)
	mse.Mul(fb.w.ToDType(ct.Float64)).Sum().MulScalar(fb.coef).Backward()
	if k != len(p) {
		t.Fatalf("float64 reference used %d of %d parameters", k, len(p))
	}
	parts := make([]*ct.Tensor, len(p))
	for i := range p {
		parts[i] = p[i].Grad(s).Reshape(-1)
	}
	return ct.Cat(parts, 0)
}

// relErr is ‖a−b‖/‖b‖ over one parameter's segment of two flat gradients.
func relErr(a, b []float64) float64 {
	var num, den float64
	for i := range a {
		num += (a[i] - b[i]) * (a[i] - b[i])
		den += b[i] * b[i]
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// TestFusedStepGradients checks the fused step (both backends, 1 and 2
// threads) against autograd: the per-sample losses, and every parameter's
// gradient against the float64 truth.
//
// Tolerance, derived: both float32 computations evaluate the same
// expressions with different summation orders (BLAS blocking, 16-lane
// reductions, fused LayerNorm backward), so each differs from the exact
// result by rounding only. A length-K dot product in float32 carries a
// relative error of about √K·u (u = 2⁻²⁴ ≈ 6e-8; K ≤ 1024 here: ≈ 2e-6),
// and the longest gradient path (loss → head → 2n−1 blocks → time
// embedding) chains L ≈ 2·(2n+2) such products and normalisations, whose
// independent errors add in quadrature: √L·√K·u ≈ 1e-5 for n = 4. So
// every gradient tensor must satisfy ‖g−g64‖/‖g64‖ ≤ 4·max(err_autograd,
// √L·√K·u): no worse than a small factor of libtorch's own float32 autograd,
// or than the rounding bound where autograd happens to be closer.
func TestFusedStepGradients(t *testing.T) {
	for _, fc := range fusedCases {
		for _, backend := range []ct.FusedBackend{ct.FusedCPU, ct.FusedATen} {
			for _, threads := range []int{1, 2} {
				t.Run(fmt.Sprintf("%s/%s/threads=%d", fc.name, backend, threads), func(t *testing.T) {
					if err := ct.SetNumThreads(threads); err != nil {
						t.Fatal(err)
					}
					defer ct.SetNumThreads(1)
					checkFusedGradients(t, fc, backend)
				})
			}
		}
	}
}

// fusedFixture is a flattened model (seeded), the default diffusion and the
// model's fused step with a workspace for the case's batch; all are closed
// at the end of the test.
type fusedFixture struct {
	st   *nn.Store
	m    *cellunet.Model
	d    *diffusion.Diffusion
	step *ct.UnetStep
}

func newFusedFixture(t *testing.T, fc fusedCase, seed uint64, backend ct.FusedBackend) fusedFixture {
	return newFusedFixtureOn(t, fc, seed, backend, ct.CPU)
}

func newFusedFixtureOn(t *testing.T, fc fusedCase, seed uint64, backend ct.FusedBackend, dev ct.Device) fusedFixture {
	t.Helper()
	if err := ct.ManualSeed(seed); err != nil {
		t.Fatal(err)
	}
	var f fusedFixture
	f.st = nn.NewStore(dev)
	t.Cleanup(f.st.Close)
	var err error
	if f.m, err = cellunet.New(f.st.Root(), fc.cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.m.Close)
	if err := f.st.Flatten(); err != nil {
		t.Fatal(err)
	}
	if f.d, err = diffusion.New(diffusion.DefaultConfig(), dev); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.d.Close)
	sc := f.d.Schedule()
	f.step, err = f.m.NewFusedStep(cellunet.FusedSchedule{SqrtAlphasCumprod: sc.SqrtAlphasCumprod,
		SqrtOneMinusAlphasCumprod: sc.SqrtOneMinusAlphasCumprod, TimestepMap: sc.TimestepMap}, backend)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.step.Close)
	if err := f.step.Reserve(fc.batch); err != nil {
		t.Fatal(err)
	}
	return f
}

func checkFusedGradients(t *testing.T, fc fusedCase, backend ct.FusedBackend) {
	s := ct.NewScope()
	defer s.Close()
	f := newFusedFixture(t, fc, 3, backend)
	st, m, d, step := f.st, f.m, f.d, f.step
	sched := d.Schedule()
	fb := newFusedBatch(t, s, fc.batch, fc.cfg.InputDim, d.NumSteps(), 11)

	mseAuto, gAuto := autogradGrads(t, s, st, m, d, fb)
	g64 := float64Grads(t, s, m, fc.cfg, sched, fb)
	st.FlatGrads().Fill_(math.NaN()) // every gradient must be written
	mse := s.Empty(ct.Options{}, fc.batch)
	if err := step.Run(ct.UnetBatch{Data: fb.x0, T: fb.t, Noise: fb.noise, Weights: fb.w, MSE: mse, Coef: fb.coef}); err != nil {
		t.Fatal(err)
	}
	// Per-sample losses: the forward alone, ≈ 2n+3 products deep: rtol 1e-5.
	cgotorchtest.AssertClose(t, "mse", mse, mseAuto, 1e-5, 1e-7)

	gf := cgotorchtest.Float64s(st.FlatGrads())
	ga, gt := cgotorchtest.Float64s(gAuto), cgotorchtest.Float64s(g64)
	off := st.FlatOffsets()
	n := int64(len(fc.cfg.Hidden))
	const u = 1.0 / (1 << 24)
	k := float64(max(fc.cfg.Hidden[0], 2*fc.cfg.Hidden[1], fc.batch))
	bound := math.Sqrt(float64(2*(2*n+2))) * math.Sqrt(k) * u
	names := m.TrainableParams()
	worst := 0.0
	for i := range names {
		a, b := off[i], off[i+1]
		eAuto := relErr(ga[a:b], gt[a:b])
		eFused := relErr(gf[a:b], gt[a:b])
		worst = max(worst, eFused/max(eAuto, bound))
		if math.IsNaN(eFused) || eFused > 4*max(eAuto, bound) {
			t.Errorf("%s: fused gradient error %.3g, autograd float32 %.3g (bound %.3g)", names[i].Name, eFused, eAuto, bound)
		}
	}
	t.Logf("worst fused error / max(autograd error, %.2g) = %.3f", bound, worst)
}

// TestFusedUnderOpenBLASKernels reruns the gradient parity test with
// OpenBLAS forced to the kernels of other x86-64 CPUs (child processes).
func TestFusedUnderOpenBLASKernels(t *testing.T) {
	cgotorchtest.RunUnderOpenBLASKernels(t, "^TestFusedStepGradients$")
}

// TestFusedUpdateMatchesFusedAdamW: a run that applies AdamW + EMA to each
// parameter as its gradient is ready leaves the parameters, both moments and
// the EMA bit-identical to a plain run followed by cgotorch.FusedAdamW, over
// three steps (1 and 2 threads); the norms agree to float rounding.
func TestFusedUpdateMatchesFusedAdamW(t *testing.T) {
	for _, fc := range fusedCases {
		for _, threads := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/threads=%d", fc.name, threads), func(t *testing.T) {
				if err := ct.SetNumThreads(threads); err != nil {
					t.Fatal(err)
				}
				defer ct.SetNumThreads(1)
				type state struct{ p, m, v, e, sumsq []float64 }
				run := func(update bool) state {
					s := ct.NewScope()
					defer s.Close()
					fx := newFusedFixture(t, fc, 4, ct.FusedCPU)
					st, d, step := fx.st, fx.d, fx.step
					P := st.NumParams()
					mm, vv := s.Zeros(ct.Options{}, P), s.Zeros(ct.Options{}, P)
					ema := s.Adopt(st.FlatParams().Clone())
					sumsq := s.Zeros(ct.Options{DType: ct.Float64}, 2)
					cfg := ct.AdamWConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2}
					mse := s.Empty(ct.Options{}, fc.batch)
					for k := int64(1); k <= 3; k++ {
						fb := newFusedBatch(t, s, fc.batch, fc.cfg.InputDim, d.NumSteps(), uint64(20+k))
						b := ct.UnetBatch{Data: fb.x0, T: fb.t, Noise: fb.noise, Weights: fb.w, MSE: mse, Coef: fb.coef}
						if update {
							b.Update = &ct.FusedUpdate{Params: st.FlatParams(), ExpAvg: mm, ExpAvgSq: vv, Step: k, Config: cfg,
								EMAs: []*ct.Tensor{ema}, Rates: []float64{0.99}, SumSq: sumsq}
						}
						if err := step.Run(b); err != nil {
							t.Fatal(err)
						}
						if !update {
							if err := ct.FusedAdamW(st.FlatParams(), st.FlatGrads(), mm, vv, k, cfg,
								ct.FusedStep{EMAs: []*ct.Tensor{ema}, Rates: []float64{0.99}, SumSq: sumsq}); err != nil {
								t.Fatal(err)
							}
						}
					}
					f := cgotorchtest.Float64s
					return state{f(st.FlatParams()), f(mm), f(vv), f(ema), f(sumsq)}
				}
				a, b := run(false), run(true)
				for _, c := range []struct {
					name string
					x, y []float64
				}{{"parameters", a.p, b.p}, {"exp_avg", a.m, b.m}, {"exp_avg_sq", a.v, b.v}, {"EMA", a.e, b.e}} {
					for i := range c.x {
						if math.Float64bits(c.x[i]) != math.Float64bits(c.y[i]) {
							t.Fatalf("%s[%d]: %.9g after FusedAdamW, %.9g from the updating run", c.name, i, c.x[i], c.y[i])
						}
					}
				}
				// The norms' partial sums run in float lanes over blocks of 16
				// elements whose alignment follows the chunking: 16 roundings,
				// relative error ≤ 16·2⁻²⁴ ≈ 1e-6.
				for i := range a.sumsq {
					if !cgotorchtest.Close(b.sumsq[i], a.sumsq[i], 1e-6, 0) {
						t.Errorf("sumsq[%d] = %.17g, want %.17g", i, b.sumsq[i], a.sumsq[i])
					}
				}
			})
		}
	}
}

// TestFusedStepOpCounts counts libtorch dispatcher ops (RecordFunction) of
// one forward/backward of the default Cell_Unet at batch 128: the autograd
// path, the fused step's ATen backend (what runs on CUDA: its kernel
// launches) and the CPU backend (no libtorch op at all when it calls
// OpenBLAS directly: 52 sgemm calls and hand-written passes). "Kernels" are
// leaf ops that touch data.
func TestFusedStepOpCounts(t *testing.T) {
	fc := fusedCases[0]
	s := ct.NewScope()
	defer s.Close()
	count := func(fn func()) ct.OpCounts {
		c, err := ct.CountOps(fn)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var counts [3]ct.OpCounts
	for i, backend := range []ct.FusedBackend{ct.FusedATen, ct.FusedCPU} {
		fx := newFusedFixture(t, fc, 5, backend)
		fb := newFusedBatch(t, s, fc.batch, fc.cfg.InputDim, fx.d.NumSteps(), 12)
		mse := s.Empty(ct.Options{}, fc.batch)
		run := func() {
			if err := fx.step.Run(ct.UnetBatch{Data: fb.x0, T: fb.t, Noise: fb.noise, Weights: fb.w, MSE: mse, Coef: fb.coef}); err != nil {
				t.Fatal(err)
			}
		}
		run() // warm-up
		counts[i+1] = count(run)
		if i == 0 {
			autogradGrads(t, s, fx.st, fx.m, fx.d, fb) // warm-up
			counts[0] = count(func() { autogradGrads(t, s, fx.st, fx.m, fx.d, fb) })
		}
	}
	t.Logf("ops per forward+backward (all / leaf / kernels): autograd %d/%d/%d, fused ATen %d/%d/%d, fused CPU %d/%d/%d",
		counts[0].Ops, counts[0].Leaf, counts[0].Kernels, counts[1].Ops, counts[1].Leaf, counts[1].Kernels,
		counts[2].Ops, counts[2].Leaf, counts[2].Kernels)
	// Without OpenBLAS in the process the CPU backend's matrix products go
	// through libtorch's mm (ops); with it, nothing does.
	fx := newFusedFixture(t, fc, 5, ct.FusedCPU)
	if info, err := fx.step.Info(); err != nil {
		t.Fatal(err)
	} else if info.BLAS && counts[2].Ops != 0 {
		t.Errorf("the CPU backend ran %d libtorch ops, want 0", counts[2].Ops)
	}
	if counts[1].Kernels == 0 || counts[1].Kernels >= counts[0].Kernels {
		t.Errorf("fused ATen backend: %d kernels, autograd %d: want fewer, and some", counts[1].Kernels, counts[0].Kernels)
	}
}

// TestFusedStepOnCUDA: the fused step's ATen backend on a CUDA device (the
// GPU path) against autograd on the same device, per-sample losses and
// every parameter's gradient, within the sum of both float32 rounding
// bounds of TestFusedStepGradients (no float64 truth on the device).
// Skipped without CUDA unless CGOTORCH_REQUIRE_CUDA is set.
func TestFusedStepOnCUDA(t *testing.T) {
	if !ct.CUDAIsAvailable() {
		if os.Getenv("CGOTORCH_REQUIRE_CUDA") != "" {
			t.Fatalf("CGOTORCH_REQUIRE_CUDA is set but no CUDA device is available (%s)", ct.Build())
		}
		t.Skip("no CUDA device (set CGOTORCH_REQUIRE_CUDA=1 to make this a failure)")
	}
	dev := ct.CUDA(0)
	for _, fc := range fusedCases {
		t.Run(fc.name, func(t *testing.T) {
			s := ct.NewScope()
			defer s.Close()
			fx := newFusedFixtureOn(t, fc, 3, ct.FusedAuto, dev) // auto = ATen on CUDA
			if info, err := fx.step.Info(); err != nil || info.Backend != ct.FusedATen {
				t.Fatalf("backend %+v (%v), want ATen", info, err)
			}
			host := newFusedBatch(t, s, fc.batch, fc.cfg.InputDim, fx.d.NumSteps(), 11)
			fb := fusedBatch{x0: host.x0.To(dev, 0), t: host.t.To(dev, 0), noise: host.noise.To(dev, 0), w: host.w.To(dev, 0), coef: host.coef}
			mseAuto, gAuto := autogradGrads(t, s, fx.st, fx.m, fx.d, fb)
			mse := s.Empty(ct.On(dev), fc.batch)
			if err := fx.step.Run(ct.UnetBatch{Data: fb.x0, T: fb.t, Noise: fb.noise, Weights: fb.w, MSE: mse, Coef: fb.coef}); err != nil {
				t.Fatal(err)
			}
			cgotorchtest.AssertClose(t, "mse", mse.To(ct.CPU, 0), mseAuto.To(ct.CPU, 0), 1e-5, 1e-7)
			gf, ga := cgotorchtest.Float64s(fx.st.FlatGrads().To(ct.CPU, 0)), cgotorchtest.Float64s(gAuto.To(ct.CPU, 0))
			off := fx.st.FlatOffsets()
			n := int64(len(fc.cfg.Hidden))
			const u = 1.0 / (1 << 24)
			k := float64(max(fc.cfg.Hidden[0], 2*fc.cfg.Hidden[1], fc.batch))
			bound := math.Sqrt(float64(2*(2*n+2))) * math.Sqrt(k) * u
			for i, p := range fx.m.TrainableParams() {
				if e := relErr(gf[off[i]:off[i+1]], ga[off[i]:off[i+1]]); math.IsNaN(e) || e > 8*bound {
					t.Errorf("%s: fused and autograd gradients differ by %.3g (bound %.3g)", p.Name, e, 8*bound)
				}
			}
		})
	}
}
