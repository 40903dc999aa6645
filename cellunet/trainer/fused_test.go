package trainer

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// stepAllocs runs warm-up steps, then measured steps of tr, and returns
// the CPU allocator's allocations per measured step and the transient
// tensor bytes of a step (peak above the bytes in use before it).
func stepAllocs(t *testing.T, tr *trainer, warmup, steps int) (allocs float64, transient int64) {
	t.Helper()
	for i := 0; i < warmup; i++ {
		if err := tr.runStep(); err != nil {
			t.Fatal(err)
		}
		tr.step++
	}
	before := ct.CPUAllocatorStats()
	ct.ResetCPUPeak()
	for i := 0; i < steps; i++ {
		if err := tr.runStep(); err != nil {
			t.Fatal(err)
		}
		tr.step++
	}
	after := ct.CPUAllocatorStats()
	return float64(after.NumAllocs-before.NumAllocs) / float64(steps), after.PeakAllocatedBytes - before.AllocatedBytes
}

// TestFusedStepAllocatesNothing: after its first step the fused CPU path
// (the default Cell_Unet, batch 128, uniform sampler, fused AdamW + EMA,
// log window) allocates no tensor memory at all — counted by the tracked
// CPU allocator — where the autograd path allocates its activations,
// gradients and temporaries every step.
func TestFusedStepAllocatesNothing(t *testing.T) {
	if !ct.CPUAllocatorStats().Installed {
		t.Skip("the tracked CPU allocator is not installed")
	}
	data := latents(t, 128*80, 128, 21) // 80 batches: no new epoch permutation while measuring
	defer data.Free()
	measure := func(step StepImpl) (float64, int64, string) {
		cfg := DefaultConfig()
		cfg.SaveDir = t.TempDir()
		cfg.Step = step
		cfg.LogInterval = 1 << 20 // the log dump (a host read) is not part of the steady state
		var out strings.Builder
		cfg.Out = &out
		tr, err := newTrainer(cfg, data)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.close()
		tr.announce()
		a, b := stepAllocs(t, tr, 3, 40)
		return a, b, out.String()
	}
	fa, fb, announce := measure(StepFused)
	ga, gb, _ := measure(StepGeneric)
	t.Logf("per step: fused %.1f allocations, %d transient bytes; autograd %.1f allocations, %.1f MiB transient", fa, fb, ga, float64(gb)/(1<<20))
	if fa != 0 || fb != 0 {
		t.Errorf("fused step: %.2f allocations and %d transient bytes per step, want 0", fa, fb)
	}
	if ga == 0 {
		t.Errorf("autograd step allocated nothing: the measurement is broken")
	}
	if !strings.Contains(announce, "0 tensor allocations per step") {
		t.Errorf("announce does not describe the fused step:\n%s", announce)
	}
}

// lossRun trains cfg for its LRAnnealSteps and returns every step's loss.
func lossRun(t *testing.T, cfg Config, data *ct.Tensor) []float64 {
	t.Helper()
	var r record
	cfg.Hooks.AfterStep = r.hook
	if _, err := Train(context.Background(), cfg, data); err != nil {
		t.Fatal(err)
	}
	return r.losses
}

// TestFusedLossesMatchAutograd: 1,000 training steps on the fused CPU step,
// the fused ATen backend and autograd, same seeds (same batches, timesteps
// and noise), at 1 and 2 threads. The paths differ only by float32
// rounding, which lets their parameters drift apart slowly; their losses
// must be statistically indistinguishable. Tests, on the per-step losses of
// the last 500 steps (past the initial fall, where the loss distribution is
// nearly stationary): Welch's two-sample t test of the means, |t| < 3.29,
// and the two-sample Kolmogorov–Smirnov test of the distributions,
// D < 1.949·√(2/500) = 0.123 (both two-sided, α = 0.001). And two guards
// the statistics alone would not catch: the first step's loss (same
// parameters, same batch) agrees to 1e-5, and the mean paired difference
// over all 1,000 steps is below 1e-3 of the mean loss (rounding-level
// drift; seeds differ by percents).
func TestFusedLossesMatchAutograd(t *testing.T) {
	data := latents(t, 1024, 16, 22)
	defer data.Free()
	base := DefaultConfig()
	base.Model = cellunet.Config{InputDim: 16, Hidden: []int64{32, 32, 16, 8}}
	base.BatchSize = 32
	base.LR = 1e-3
	base.LRAnnealSteps = 1000
	base.LogInterval = 100
	base.SaveInterval = 1 << 20
	base.Seed = 5
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			if err := ct.SetNumThreads(threads); err != nil {
				t.Fatal(err)
			}
			defer ct.SetNumThreads(1)
			run := func(step StepImpl, backend ct.FusedBackend) []float64 {
				cfg := base
				cfg.SaveDir = t.TempDir()
				cfg.Step, cfg.fusedBackend = step, backend
				return lossRun(t, cfg, data)
			}
			ref := run(StepGeneric, ct.FusedAuto)
			if ref[len(ref)-1] > 0.9*ref[0] {
				t.Fatalf("the loss did not fall: %v → %v", ref[0], ref[len(ref)-1])
			}
			for _, c := range []struct {
				name    string
				backend ct.FusedBackend
			}{{"cpu", ct.FusedCPU}, {"aten", ct.FusedATen}} {
				got := run(StepFused, c.backend)
				tw, d := cgotorchtest.WelchT(got[500:], ref[500:]), cgotorchtest.KSStatistic(got[500:], ref[500:])
				var diff, mean float64
				for i := range got {
					diff += got[i] - ref[i]
					mean += ref[i]
				}
				drift := math.Abs(diff) / mean
				first := math.Abs(got[0]/ref[0] - 1)
				t.Logf("%s: last 500 steps: Welch t = %.4f, KS D = %.4f; paired drift %.2g; first loss %.8g vs %.8g", c.name, tw, d, drift, got[0], ref[0])
				if math.Abs(tw) >= 3.29 || d >= 0.123 || drift >= 1e-3 || first > 1e-5 {
					t.Errorf("%s: losses distinguishable from autograd's: Welch t %.3f, KS D %.3f, drift %.3g, first-loss difference %.3g", c.name, tw, d, drift, first)
				}
			}
		})
	}
}

// TestFusedUnderOpenBLASKernels reruns the loss comparison with OpenBLAS
// forced to the kernels of other x86-64 CPUs (child processes).
func TestFusedUnderOpenBLASKernels(t *testing.T) {
	cgotorchtest.RunUnderOpenBLASKernels(t, "^TestFusedLossesMatchAutograd$")
}
