package autoencoder_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/nn"
)

// isPreBNBias reports the small model's Linear biases that feed a
// train-mode BatchNorm: their gradient is zero in exact arithmetic (BN
// removes the mean), so every implementation gets rounding noise there.
func isPreBNBias(name string) bool {
	switch name {
	case "encoder.network.0.1.bias", "encoder.network.1.1.bias", "encoder.network.2.1.bias",
		"decoder.network.0.0.bias", "decoder.network.1.1.bias", "decoder.network.2.1.bias":
		return true
	}
	return false
}

// assertGradsMatchGolden compares every parameter's gradient with
// PyTorch's (the golden "grad.<name>"): rtol 1e-5 with an absolute floor of
// 1e-6 of the tensor's largest gradient; the pre-BatchNorm biases (noise)
// within 1e-6 absolute.
func assertGradsMatchGolden(t *testing.T, s *ct.Scope, st *nn.Store, g map[string]*ct.Tensor) {
	t.Helper()
	for _, p := range st.Params() {
		want := g["grad."+p.Name]
		if isPreBNBias(p.Name) {
			cgotorchtest.AssertClose(t, "grad "+p.Name, p.T.Grad(s), want, 0, 1e-6)
			continue
		}
		scale := s.Adopt(want.Abs().Max()).Item()
		cgotorchtest.AssertClose(t, "grad "+p.Name, p.T.Grad(s), want, 1e-5, 1e-6*scale)
	}
}

// fusedGradTolerance is the normwise tolerance of a fused gradient tensor
// against PyTorch's, derived as for the Cell_Unet step
// (cellunet.TestFusedStepGradients): the two float32 computations differ by
// summation order only; a length-K dot product carries a relative error of
// about √K·u (u = 2⁻²⁴; K ≤ 64 here), the longest gradient path chains
// L = 2·(2·3+2) products and normalisations whose errors add in
// quadrature, and we allow a factor 4: 4·√L·√K·u ≈ 7.6e-6. (Elementwise
// comparison does not suit a reordered computation: a bias gradient that is
// a sum with heavy cancellation has a large relative error in few
// elements, as it does between OpenBLAS kernel families.)
const fusedGradTolerance = 4 * 4 * 8.0 / (1 << 24) // 4·√L·√K·u

// assertFusedGradsMatchGolden compares every gradient tensor with PyTorch's
// normwise (fusedGradTolerance); the pre-BatchNorm biases, which are
// rounding noise on both sides, within 1e-6 absolute.
func assertFusedGradsMatchGolden(t *testing.T, s *ct.Scope, st *nn.Store, g map[string]*ct.Tensor) {
	t.Helper()
	worst := 0.0
	defer func() { t.Logf("largest relative gradient error %.3g (tolerance %.3g)", worst, fusedGradTolerance) }()
	for _, p := range st.Params() {
		want := g["grad."+p.Name]
		if isPreBNBias(p.Name) {
			cgotorchtest.AssertClose(t, "grad "+p.Name, p.T.Grad(s), want, 0, 1e-6)
			continue
		}
		a, b := cgotorchtest.Float64s(p.T.Grad(s)), cgotorchtest.Float64s(want)
		var num, den float64
		for i := range a {
			num += (a[i] - b[i]) * (a[i] - b[i])
			den += b[i] * b[i]
		}
		e := math.Sqrt(num / den)
		worst = max(worst, e)
		if !(e <= fusedGradTolerance) {
			t.Errorf("grad %s: relative error %.3g, tolerance %.3g", p.Name, e, fusedGradTolerance)
		}
	}
}

// TestFusedStepMatchesPyTorch: the fused training step on the golden batch
// gives PyTorch's loss, BatchNorm running statistics (and
// num_batches_tracked; the tolerances of the autograd path's own golden
// test, TestTrainStepMatchesPyTorch) and gradients (fusedGradTolerance),
// at 1 and 2 threads.
func TestFusedStepMatchesPyTorch(t *testing.T) {
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			if err := ct.SetNumThreads(threads); err != nil {
				t.Fatal(err)
			}
			defer ct.SetNumThreads(1)
			st, m := newModel(t, smallConfig(), 1)
			if err := st.Flatten(); err != nil {
				t.Fatal(err)
			}
			s := ct.NewScope()
			defer s.Close()
			g := smallGolden(t, s)
			x := s.Adopt(g["X"].Narrow(0, 0, 32)).Contiguous()
			step, err := m.NewFusedStep()
			if err != nil {
				t.Fatal(err)
			}
			defer step.Close()
			if err := step.Reserve(32); err != nil {
				t.Fatal(err)
			}
			st.FlatGrads().Fill_(math.NaN()) // every gradient must be written
			loss := s.Zeros(ct.Options{DType: ct.Float64})
			if err := step.Run(x.Float32s(), 32, loss, nil); err != nil {
				t.Fatal(err)
			}
			cfg, batch := smallConfig(), 32
			kEnc, kDec := encodeK(cfg, batch), decodeK(cfg, batch)
			assertK(t, "loss", loss.ToDType(ct.Float32).Reshape(1), g["train.loss"], kEnc+kDec+batch*int(cfg.Genes))
			for _, p := range m.Params() {
				if w, ok := g["train.buf."+p.Name]; ok {
					assertK(t, p.Name, p.T, w, kEnc+kDec)
				}
			}
			assertFusedGradsMatchGolden(t, s, st, g)
			info, err := step.Info()
			if err != nil || info.GEMMsLastRun != 23 {
				t.Errorf("info %+v (%v): want 23 matrix products", info, err)
			}
		})
	}
}

// TestFusedAEUpdateMatchesFusedAdamW: runs that apply AdamW as each
// gradient is ready leave parameters, moments and running statistics
// bit-identical to plain runs followed by cgotorch.FusedAdamW (three steps).
func TestFusedAEUpdateMatchesFusedAdamW(t *testing.T) {
	s0 := ct.NewScope()
	defer s0.Close()
	x := smallGolden(t, s0)["X"].Float32s()
	run := func(update bool) [][]float64 {
		st, m := newModel(t, smallConfig(), 2)
		if err := st.Flatten(); err != nil {
			t.Fatal(err)
		}
		step, err := m.NewFusedStep()
		if err != nil {
			t.Fatal(err)
		}
		defer step.Close()
		if err := step.Reserve(48); err != nil {
			t.Fatal(err)
		}
		s := ct.NewScope()
		defer s.Close()
		P := st.NumParams()
		mm, vv := s.Zeros(ct.Options{}, P), s.Zeros(ct.Options{}, P)
		cfg := ct.AdamWConfig{LR: 5e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
		for k := int64(1); k <= 3; k++ {
			batch := x[(k-1)*48*50 : k*48*50]
			var upd *ct.FusedUpdate
			if update {
				upd = &ct.FusedUpdate{Params: st.FlatParams(), ExpAvg: mm, ExpAvgSq: vv, Step: k, Config: cfg}
			}
			if err := step.Run(batch, 48, nil, upd); err != nil {
				t.Fatal(err)
			}
			if !update {
				if err := ct.FusedAdamW(st.FlatParams(), st.FlatGrads(), mm, vv, k, cfg, ct.FusedStep{}); err != nil {
					t.Fatal(err)
				}
			}
		}
		out := [][]float64{cgotorchtest.Float64s(st.FlatParams()), cgotorchtest.Float64s(mm), cgotorchtest.Float64s(vv)}
		for _, p := range m.Params() {
			if p.Buffer {
				out = append(out, cgotorchtest.Float64s(p.T))
			}
		}
		return out
	}
	a, b := run(false), run(true)
	for k := range a {
		for i := range a[k] {
			if math.Float64bits(a[k][i]) != math.Float64bits(b[k][i]) {
				t.Fatalf("state %d element %d: %.9g after FusedAdamW, %.9g from the updating run", k, i, a[k][i], b[k][i])
			}
		}
	}
}

// TestFusedTrainAllocatesNothing: after its first step the fused training
// loop (batch densified into a reused host buffer, forward, backward and
// AdamW in one call) allocates no tensor memory — counted by the tracked
// CPU allocator — where the autograd loop allocates every step.
func TestFusedTrainAllocatesNothing(t *testing.T) {
	if !ct.CPUAllocatorStats().Installed {
		t.Skip("the tracked CPU allocator is not installed")
	}
	data := lowRankCSR(t, 64*60, 50)
	measure := func(step string) (allocs float64, transient int64) {
		cfg := smallTrainConfig(t)
		cfg.BatchSize = 64
		cfg.Step = step
		cfg.MaxSteps, cfg.LogEvery, cfg.CheckpointFreq = 50, 1<<20, 1<<20
		cfg.SaveState = false
		var a0, a1 ct.CPUAllocStats
		cfg.AfterStep = func(step int) {
			switch step {
			case 4:
				a0 = ct.CPUAllocatorStats()
				ct.ResetCPUPeak()
			case 44:
				a1 = ct.CPUAllocatorStats()
			}
		}
		if _, err := autoencoder.Train(t.Context(), cfg, data); err != nil {
			t.Fatal(err)
		}
		return float64(a1.NumAllocs-a0.NumAllocs) / 40, a1.PeakAllocatedBytes - a0.AllocatedBytes
	}
	fa, fb := measure("fused")
	ga, gb := measure("generic")
	t.Logf("per step: fused %.1f allocations, %d transient bytes; autograd %.1f allocations, %.2f MiB transient", fa, fb, ga, float64(gb)/(1<<20))
	if fa != 0 || fb != 0 {
		t.Errorf("fused step: %.2f allocations and %d transient bytes per step, want 0", fa, fb)
	}
	if ga == 0 {
		t.Error("autograd step allocated nothing: the measurement is broken")
	}
}

// TestFusedTrainLossesMatchAutograd: 1,000 steps of the fused and the
// autograd training loop from the same seed (same batches), at 1 and 2
// threads: the per-step losses are statistically indistinguishable —
// Welch's t test of the means and the two-sample Kolmogorov–Smirnov test on
// the last 500 steps (two-sided, α = 0.001: |t| < 3.29, D < 0.123) — the
// first losses (same weights, same batch) agree to 1e-5 and the mean paired
// difference over all steps stays below 1e-3 of the mean loss. (The
// pre-BatchNorm biases follow rounding noise on both paths, see
// isPreBNBias; they cannot change the loss.)
func TestFusedTrainLossesMatchAutograd(t *testing.T) {
	data := lowRankCSR(t, 1024, 50)
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			if err := ct.SetNumThreads(threads); err != nil {
				t.Fatal(err)
			}
			defer ct.SetNumThreads(1)
			run := func(step string) []float64 {
				cfg := smallTrainConfig(t)
				cfg.Step = step
				cfg.MaxSteps, cfg.LogEvery, cfg.CheckpointFreq = 1000, 1, 1<<20
				cfg.SaveState = false
				var losses []float64
				cfg.OnLog = func(lp autoencoder.LogPoint) { losses = append(losses, lp.Loss) }
				if _, err := autoencoder.Train(t.Context(), cfg, data); err != nil {
					t.Fatal(err)
				}
				return losses
			}
			ref, got := run("generic"), run("fused")
			if len(ref) != 1000 || len(got) != 1000 {
				t.Fatalf("%d and %d losses", len(ref), len(got))
			}
			if ref[999] > 0.7*ref[0] {
				t.Fatalf("the loss did not fall: %v → %v", ref[0], ref[999])
			}
			tw, d := cgotorchtest.WelchT(got[500:], ref[500:]), cgotorchtest.KSStatistic(got[500:], ref[500:])
			var diff, mean float64
			for i := range got {
				diff += got[i] - ref[i]
				mean += ref[i]
			}
			drift, first := math.Abs(diff)/mean, math.Abs(got[0]/ref[0]-1)
			t.Logf("last 500 steps: Welch t = %.4f, KS D = %.4f; paired drift %.2g; first loss %.8g vs %.8g", tw, d, drift, got[0], ref[0])
			if math.Abs(tw) >= 3.29 || d >= 0.123 || drift >= 1e-3 || first > 1e-5 {
				t.Errorf("losses distinguishable from autograd's: Welch t %.3f, KS D %.3f, drift %.3g, first-loss difference %.3g", tw, d, drift, first)
			}
		})
	}
}

// TestFusedUnderOpenBLASKernels reruns the fused autoencoder's parity
// tests with OpenBLAS forced to the kernels of other x86-64 CPUs.
func TestFusedUnderOpenBLASKernels(t *testing.T) {
	cgotorchtest.RunUnderOpenBLASKernels(t, "^(TestFusedStepMatchesPyTorch|TestFusedTrainLossesMatchAutograd)$")
}
