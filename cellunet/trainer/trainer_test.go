package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/internal/unettest"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

func TestMain(m *testing.M) { cgotorchtest.Main(m) }

// impl is a training-step implementation the loop tests run on.
type impl struct {
	name    string
	step    StepImpl
	backend ct.FusedBackend
}

// impls: the autograd path, the fused CPU step (the default on the CPU) and
// the fused step's ATen backend (the CUDA path's ops, here on the CPU).
var impls = []impl{{"generic", StepGeneric, ct.FusedAuto}, {"fused", StepFused, ct.FusedCPU}, {"fused-aten", StepFused, ct.FusedATen}}

// forImpls runs f once per implementation, as subtests; within f,
// smallConfig and implConfig select that implementation.
func forImpls(t *testing.T, f func(t *testing.T)) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			cur = im
			defer func() { cur = impls[1] }()
			f(t)
		})
	}
}

// cur is the implementation of the running loop test (tests run one at a time).
var cur = impls[1]

// implConfig sets cfg's step implementation to the current one.
func implConfig(cfg Config) Config {
	cfg.Step, cfg.fusedBackend = cur.step, cur.backend
	return cfg
}

// smallConfig is a Cell_Unet small enough for many steps in a unit test.
func smallConfig(t *testing.T) Config {
	cfg := implConfig(DefaultConfig())
	cfg.Model = cellunet.Config{InputDim: 16, Hidden: []int64{32, 32, 16, 8}}
	cfg.BatchSize = 32
	cfg.LR = 1e-3
	cfg.LRAnnealSteps = 200
	cfg.LogInterval = 50
	cfg.SaveInterval = 1000
	cfg.SaveDir = t.TempDir()
	cfg.Seed = 7
	return cfg
}

// latents returns N unit-norm rows of width d, unowned (the caller frees).
func latents(t *testing.T, n, d int64, seed uint64) *ct.Tensor {
	g, err := ct.NewGenerator(ct.CPU, seed)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	s := ct.NewScope()
	defer s.Close()
	return s.Keep(s.Randn(ct.Options{}, g, n, d).Normalize(2, 1, 1e-12))
}

type record struct {
	losses []float64
	lrs    []float64
}

func (r *record) hook(step int, info StepInfo) {
	r.losses = append(r.losses, info.Loss.Item())
	r.lrs = append(r.lrs, info.LR)
}

func flatParams(t *testing.T, dir string, label int) []float64 {
	return loadFile(t, modelFile(dir, label))
}

func equalBits(t *testing.T, what string, a, b []float64) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: lengths %d and %d", what, len(a), len(b))
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			t.Fatalf("%s differ at %d: %.10g vs %.10g", what, i, a[i], b[i])
		}
	}
}

func TestDeterministicLossSequence(t *testing.T) {
	forImpls(t, func(t *testing.T) {
		data := latents(t, 256, 16, 1)
		defer data.Free()
		run := func() []float64 {
			cfg := smallConfig(t)
			cfg.LRAnnealSteps = 30
			var r record
			cfg.Hooks.AfterStep = r.hook
			if _, err := Train(context.Background(), cfg, data); err != nil {
				t.Fatal(err)
			}
			return r.losses
		}
		a, b := run(), run()
		equalBits(t, "losses of two runs with the same seed", a, b)
		if a[len(a)-1] >= a[0] {
			t.Errorf("loss did not decrease over 30 steps: %v → %v", a[0], a[len(a)-1])
		}
	})
}

// TestResumeIsExact: 200 steps straight = 100 steps, interrupt, resume, 100
// more: identical losses and weights, bit for bit.
func TestResumeIsExact(t *testing.T) {
	forImpls(t, func(t *testing.T) {
		data := latents(t, 200, 16, 2)
		defer data.Free()
		for _, sampler := range []string{"uniform", "loss-second-moment"} {
			t.Run(sampler, func(t *testing.T) {
				cfg := smallConfig(t)
				cfg.ScheduleSampler = sampler
				cfg.EMARates, cfg.EMARateNames = []float64{0.99, 0.9}, []string{"0.99", "0.9"}
				var straight record
				cfg.Hooks.AfterStep = straight.hook
				if _, err := Train(context.Background(), cfg, data); err != nil {
					t.Fatal(err)
				}

				cfg2 := smallConfig(t)
				cfg2.ScheduleSampler, cfg2.EMARates, cfg2.EMARateNames = cfg.ScheduleSampler, cfg.EMARates, cfg.EMARateNames
				var first record
				ctx, cancel := context.WithCancel(context.Background())
				cfg2.Hooks.AfterStep = func(step int, info StepInfo) {
					first.hook(step, info)
					if step == 99 {
						cancel()
					}
				}
				res, err := Train(ctx, cfg2, data)
				if !errors.Is(err, ErrInterrupted) || res.NextStep != 100 {
					t.Fatalf("interrupted run: %+v, %v", res, err)
				}
				var second record
				cfg2.Hooks.AfterStep = second.hook
				cfg2.ResumeCheckpoint = cfg2.SaveDir
				if res, err = Train(context.Background(), cfg2, data); err != nil || res.Steps != 100 {
					t.Fatalf("resumed run: %+v, %v", res, err)
				}
				equalBits(t, "losses", straight.losses, append(first.losses, second.losses...))
				equalBits(t, "learning rates", straight.lrs, append(first.lrs, second.lrs...))
				equalBits(t, "final weights", flatParams(t, cfg.SaveDir, 200), flatParams(t, cfg2.SaveDir, 200))
				for _, rate := range cfg.EMARateNames {
					a, b := loadFile(t, emaFile(cfg.SaveDir, rate, 200)), loadFile(t, emaFile(cfg2.SaveDir, rate, 200))
					equalBits(t, "EMA "+rate, a, b)
				}
			})
		}
	})
}

func loadFile(t *testing.T, path string) []float64 {
	sd, err := ct.LoadPT(path, ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(sd)
	var out []float64
	for _, n := range sd {
		out = append(out, cgotorchtest.Float64s(n.T)...)
	}
	return out
}

// TestMicrobatchEquivalence: 4 microbatches of 32 give the gradient of the
// batch of 128, the reference's summing option 4× it. The two differ only
// in how the batch's terms are added up (and in the matrix products' blocking
// for 32 or 128 rows): cgotorchtest's tolerance rule with Cell_Unet's
// gradient accumulation length (unettest.GradK).
func TestMicrobatchEquivalence(t *testing.T) {
	forImpls(t, func(t *testing.T) {
		data := latents(t, 256, 128, 3)
		defer data.Free()
		grads := func(mb int, sum bool) *ct.Tensor {
			cfg := implConfig(DefaultConfig())
			cfg.SaveDir = t.TempDir()
			cfg.Microbatch, cfg.SumMicrobatchGrads = mb, sum
			if sum {
				cfg.Step = StepGeneric // the fused step does not cover --microbatch_sum
			}
			tr, err := newTrainer(cfg, data)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.close()
			s := ct.NewScope()
			defer s.Close()
			batch := tr.data.next(s)
			tt, w := tr.sampler.Sample(s, 128, tr.noiseGen)
			noise := s.Randn(ct.Options{}, tr.noiseGen, 128, 128)
			if _, err := tr.forwardBackward(s, batch, tt, w, noise); err != nil {
				t.Fatal(err)
			}
			grads, _ := tr.store.Grads(s)
			var parts []*ct.Tensor
			for _, g := range grads {
				parts = append(parts, g.Reshape(-1))
			}
			return s.Keep(ct.Cat(parts, 0))
		}
		whole, micro, summed := grads(128, false), grads(32, false), grads(32, true)
		defer whole.Free()
		defer micro.Free()
		defer summed.Free()
		s := ct.NewScope()
		defer s.Close()
		tol := cgotorchtest.FP32{K: unettest.GradK(DefaultConfig().Model, 128)}
		cgotorchtest.AssertFP32(t, "gradient of 4×32 vs 128", micro, whole, tol)
		cgotorchtest.AssertFP32(t, "summed microbatch gradients vs 4× the batch's", summed, s.Adopt(whole.MulScalar(4)), tol)
	})
}

// TestLossScalingSkipsNonFiniteStep: with dynamic loss scaling an injected
// inf gradient skips the update and the EMA and lowers the scale by one.
func TestLossScalingSkipsNonFiniteStep(t *testing.T) {
	forImpls(t, func(t *testing.T) {
		data := latents(t, 128, 16, 4)
		defer data.Free()
		cfg := smallConfig(t)
		cfg.LossScaling = true
		cfg.LRAnnealSteps = 6
		cfg.SaveInterval = 1
		var infos []StepInfo
		cfg.Hooks.AfterBackward = func(step int, grads []*ct.Tensor) {
			if step == 3 {
				grads[0].View(-1).Narrow(0, 5, 1).Fill_(math.Inf(1))
			}
		}
		cfg.Hooks.AfterStep = func(step int, info StepInfo) { infos = append(infos, info) }
		if _, err := Train(context.Background(), cfg, data); err != nil {
			t.Fatal(err)
		}
		for i, info := range infos {
			want := 20 + float64(i+1)*1e-3
			if i >= 3 {
				want = 20 + float64(i)*1e-3 - 1
			}
			if info.Skipped != (i == 3) || math.Abs(info.LgScale-want) > 1e-9 {
				t.Errorf("step %d: skipped %v lg %.4f, want skipped %v lg %.4f", i, info.Skipped, info.LgScale, i == 3, want)
			}
		}
		equalBits(t, "weights across the skipped step", flatParams(t, cfg.SaveDir, 2), flatParams(t, cfg.SaveDir, 3))
		equalBits(t, "EMA across the skipped step", loadFile(t, emaFile(cfg.SaveDir, "0.9999", 2)), loadFile(t, emaFile(cfg.SaveDir, "0.9999", 3)))
		if a, b := flatParams(t, cfg.SaveDir, 3), flatParams(t, cfg.SaveDir, 4); a[0] == b[0] && a[1] == b[1] {
			t.Error("step after the skipped one did not update")
		}
	})
}

// TestInterruptedCheckpointLeavesPreviousIntact: a failure while writing
// checkpoint 2 leaves checkpoint 1 complete and resumable.
func TestInterruptedCheckpointLeavesPreviousIntact(t *testing.T) {
	forImpls(t, func(t *testing.T) {
		data := latents(t, 128, 16, 5)
		defer data.Free()
		cfg := smallConfig(t)
		cfg.SaveInterval = 1
		cfg.LRAnnealSteps = 10
		crash := errors.New("simulated crash")
		cfg.Hooks.BeforeSave = func(path string) error {
			if path == optFile(cfg.SaveDir, 2) {
				return crash
			}
			return nil
		}
		if _, err := Train(context.Background(), cfg, data); !errors.Is(err, crash) {
			t.Fatalf("err = %v, want the simulated crash", err)
		}
		before := flatParams(t, cfg.SaveDir, 1)
		labels, err := completeLabels(cfg.SaveDir)
		if err != nil || fmt.Sprint(labels) != "[0 1]" {
			t.Fatalf("complete checkpoints %v (%v), want [0 1]", labels, err)
		}
		tmps, _ := filepath.Glob(filepath.Join(cfg.SaveDir, ".*tmp*"))
		if len(tmps) != 0 {
			t.Errorf("temporary files left: %v", tmps)
		}
		cfg.Hooks.BeforeSave = nil
		cfg.ResumeCheckpoint = cfg.SaveDir
		res, err := Train(context.Background(), cfg, data)
		if err != nil || res.Steps != 8 {
			t.Fatalf("resume: %+v %v", res, err)
		}
		equalBits(t, "checkpoint 1 untouched", before, flatParams(t, cfg.SaveDir, 1))
	})
}

// TestLRAnnealMatchesReference: update 0 uses lr0 and update k ≥ 1 uses
// lr0·(1 − (k−1)/N).
func TestLRAnnealMatchesReference(t *testing.T) {
	forImpls(t, func(t *testing.T) {
		data := latents(t, 64, 16, 6)
		defer data.Free()
		cfg := smallConfig(t)
		cfg.LRAnnealSteps = 10
		var r record
		cfg.Hooks.AfterStep = r.hook
		if _, err := Train(context.Background(), cfg, data); err != nil {
			t.Fatal(err)
		}
		for k, lr := range r.lrs {
			want := cfg.LR
			if k > 0 {
				want = cfg.LR * (1 - float64(k-1)/10)
			}
			if math.Abs(lr-want) > 1e-15 {
				t.Errorf("update %d used lr %v, want %v", k, lr, want)
			}
		}
		if len(r.lrs) != 10 {
			t.Errorf("%d updates, want 10", len(r.lrs))
		}
	})
}

// TestLeakOverManySteps: 2,000 steps keep live handles constant and RSS flat.
func TestLeakOverManySteps(t *testing.T) {
	forImpls(t, func(t *testing.T) {
		data := latents(t, 256, 16, 8)
		defer data.Free()
		cfg := smallConfig(t)
		cfg.LRAnnealSteps = 2600
		cfg.LogInterval = 100
		var live []int64
		var rss []int64
		cfg.Hooks.AfterStep = func(step int, info StepInfo) {
			if step >= 600 && step%100 == 0 {
				runtime.GC()
				live = append(live, ct.LiveTensors())
				rss = append(rss, cgotorchtest.RSS(t))
			}
		}
		if _, err := Train(context.Background(), cfg, data); err != nil {
			t.Fatal(err)
		}
		for i, n := range live {
			if n != live[0] {
				t.Fatalf("live handles at sample %d: %d, first sample %d", i, n, live[0])
			}
		}
		// RSS over the last 2,000 steps: growth below 2 MiB.
		if grow := rss[len(rss)-1] - rss[0]; grow > 2<<20 {
			t.Errorf("RSS grew %d bytes over 2,000 steps (samples %v)", grow, rss)
		}
	})
}

// TestCheckpointsLoadInPyTorch: the model, EMA and optimizer files load with
// torch.load into the reference Cell_Unet and torch.optim.AdamW.
func TestCheckpointsLoadInPyTorch(t *testing.T) {
	data := latents(t, 64, 128, 9)
	defer data.Free()
	cfg := DefaultConfig()
	cfg.SaveDir = t.TempDir()
	cfg.BatchSize = 16
	cfg.LRAnnealSteps = 2
	cfg.SaveInterval = 100
	if _, err := Train(context.Background(), cfg, data); err != nil {
		t.Fatal(err)
	}
	script := `
import sys, torch
sys.path.insert(0, sys.argv[1])
from scdiffusion_ref import Cell_Unet
m = Cell_Unet()
m.load_state_dict(torch.load(sys.argv[2]))
m.load_state_dict(torch.load(sys.argv[3]))
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=1e-4)
opt.load_state_dict(torch.load(sys.argv[4]))
print("ok", opt.param_groups[0]["lr"], opt.state[m.out2.bias]["step"])
`
	ref, _ := filepath.Abs("../../scripts/reference")
	out, err := exec.Command(cgotorchtest.RefPython(t), "-c", script, ref, modelFile(cfg.SaveDir, 2),
		emaFile(cfg.SaveDir, "0.9999", 2), optFile(cfg.SaveDir, 2)).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	want := fmt.Sprintf("ok %v tensor(2.)\n", 1e-4*(1-1.0/2))
	if string(out) != want {
		t.Errorf("python printed %q, want %q", out, want)
	}
}

// stepPeak measures the CPU allocator's peak growth during one step at a
// given microbatch, relative to the bytes in use when the step starts.
func stepPeak(t *testing.T, cfg Config, data *ct.Tensor, mb int, warm bool) int64 {
	cfg.Microbatch = mb
	cfg.SaveDir = t.TempDir()
	tr, err := newTrainer(cfg, data)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	// Step 0 also allocates what a log dump and first-use buffers need;
	// with warm, measure a later step, like the one the limit is set for.
	if warm {
		if err := tr.runStep(); err != nil {
			t.Fatal(err)
		}
		tr.step++
	}
	base := ct.CPUAllocatorStats().AllocatedBytes
	ct.ResetCPUPeak()
	if err := tr.runStep(); err != nil {
		t.Fatal(err)
	}
	return ct.CPUAllocatorStats().PeakAllocatedBytes - base
}

// TestOOMRetryIsStepExact (memory.md X5): an allocation limit makes step s
// run out of memory at microbatch 8; the step is retried at microbatch 4 and
// the run continues. It must equal, bit for bit, a run that used
// microbatch 8 until s−1 and 4 from s on. The autograd path and the fused
// step's ATen backend allocate every step, so the limit strikes mid-run; the
// fused CPU step allocates only its workspace (at the first step, and again
// when the microbatch changes), so there the limit strikes at step 0.
func TestOOMRetryIsStepExact(t *testing.T) {
	for _, c := range []struct {
		name    string
		step    StepImpl
		backend ct.FusedBackend
		s       int
	}{
		{"generic", StepGeneric, ct.FusedAuto, 5},
		{"fused-aten", StepFused, ct.FusedATen, 5},
		{"fused-cpu", StepFused, ct.FusedCPU, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := smallConfig(t)
			base.Step, base.fusedBackend = c.step, c.backend
			oomRetryIsStepExact(t, base, c.s)
		})
	}
}

func oomRetryIsStepExact(t *testing.T, base Config, s int) {
	data := latents(t, 256, 128, 10)
	defer data.Free()
	base.Model = cellunet.Config{InputDim: 128, Hidden: []int64{256, 256, 128, 64}}
	base.LRAnnealSteps = 12
	base.OOMRetry = true
	d4, d8 := stepPeak(t, base, data, 4, s > 0), stepPeak(t, base, data, 8, s > 0)
	if d8 <= d4 {
		t.Fatalf("step peak at microbatch 8 (%d B) not above microbatch 4 (%d B)", d8, d4)
	}

	// Run B: microbatch 8; step s hits the limit and is retried.
	cfgB := base
	cfgB.SaveDir = t.TempDir()
	cfgB.Microbatch = 8
	var recB record
	var retries [][2]int
	cfgB.Hooks.AfterStep = recB.hook
	cfgB.Hooks.BeforeStep = func(step int) {
		switch step {
		case s:
			ct.SetCPUAllocLimit(ct.CPUAllocatorStats().AllocatedBytes + (d4+d8)/2)
		case s + 1:
			ct.SetCPUAllocLimit(0)
		}
	}
	cfgB.Hooks.OnOOMRetry = func(step, from, to int, err error) {
		retries = append(retries, [2]int{from, to})
		if step != s || !errors.Is(err, ct.ErrOutOfMemory) {
			t.Errorf("retry at step %d with %v", step, err)
		}
	}
	res, err := Train(context.Background(), cfgB, data)
	ct.SetCPUAllocLimit(0)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(retries) != "[[8 4]]" || res.Microbatch != 4 {
		t.Fatalf("retries %v, final microbatch %d; want one retry 8→4", retries, res.Microbatch)
	}

	// Run A: microbatch 8 for steps 0..s−1, then 4 (via resume).
	cfgA := base
	cfgA.SaveDir = t.TempDir()
	cfgA.Microbatch = 8
	var recA record
	if s > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		cfgA.Hooks.AfterStep = func(step int, info StepInfo) {
			recA.hook(step, info)
			if step == s-1 {
				cancel()
			}
		}
		if _, err := Train(ctx, cfgA, data); !errors.Is(err, ErrInterrupted) {
			t.Fatal(err)
		}
		cfgA.ResumeCheckpoint = cfgA.SaveDir
	}
	cfgA.Microbatch = 4
	cfgA.Hooks.AfterStep = recA.hook
	if _, err := Train(context.Background(), cfgA, data); err != nil {
		t.Fatal(err)
	}
	equalBits(t, "losses", recB.losses, recA.losses)
	equalBits(t, "final weights", flatParams(t, cfgB.SaveDir, 12), flatParams(t, cfgA.SaveDir, 12))
}

// TestSetupErrorsAreErrors: a failure while the trainer is built (after the
// model and buffers exist) is returned as an error, releases what was built
// and writes nothing; before the fix the deferred cleanup dereferenced the
// nil result and panicked.
func TestSetupErrorsAreErrors(t *testing.T) {
	data := latents(t, 64, 16, 1)
	defer data.Free()
	corrupt := filepath.Join(t.TempDir(), "model000100.pt")
	if err := os.WriteFile(corrupt, []byte("#!/bin/sh\nnot a checkpoint\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		resume string
	}{
		{"missing checkpoint", filepath.Join(t.TempDir(), "nope", "model000100.pt")},
		{"corrupt checkpoint", corrupt},
		{"directory without checkpoints", t.TempDir()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := smallConfig(t)
			cfg.ResumeCheckpoint = tc.resume
			ran := false
			cfg.Hooks.BeforeRun = func() error { ran = true; return nil }
			before := ct.LiveTensors()
			_, err := Train(context.Background(), cfg, data)
			if err == nil {
				t.Fatal("Train succeeded")
			}
			if ran {
				t.Error("BeforeRun ran although the checkpoint could not be restored")
			}
			if n := ct.LiveTensors() - before; n != 0 {
				t.Errorf("%d tensor handles leaked", n)
			}
			if entries, _ := os.ReadDir(cfg.SaveDir); len(entries) != 0 {
				t.Errorf("the failed run wrote %d files into its save dir", len(entries))
			}
		})
	}
	cfg := smallConfig(t)
	cfg.ScheduleSampler = "foo"
	if _, err := Train(context.Background(), cfg, data); err == nil || !strings.Contains(err.Error(), "schedule_sampler") {
		t.Errorf("unknown sampler: %v", err)
	}
	// BeforeRun refusing the run: nothing written, the error returned.
	cfg = smallConfig(t)
	refuse := errors.New("refused")
	cfg.Hooks.BeforeRun = func() error { return refuse }
	if _, err := Train(context.Background(), cfg, data); !errors.Is(err, refuse) {
		t.Errorf("BeforeRun's error not returned: %v", err)
	}
	if entries, _ := os.ReadDir(cfg.SaveDir); len(entries) != 0 {
		t.Errorf("a refused run wrote %d files", len(entries))
	}
}

// TestOOMRetryKeepsSummedGradient: with SumMicrobatchGrads the configured
// microbatch is part of the mathematics (k slices sum to k× the batch-mean
// gradient). A retry with a smaller microbatch, aligned or not with the
// configured slices, must give the configured gradient, not one that grows
// with the number of slices.
func TestOOMRetryKeepsSummedGradient(t *testing.T) {
	data := latents(t, 256, 128, 3)
	defer data.Free()
	grads := func(run int) []float64 { return firstBatchGrads(t, data, 32, true, run) }
	want := grads(32)
	var maxAbs float64
	for _, g := range want {
		maxAbs = math.Max(maxAbs, math.Abs(g))
	}
	for _, run := range []int{16, 12, 5} {
		got := grads(run)
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-5*maxAbs+1e-9 {
				t.Fatalf("microbatch %d (configured 32, summed): grad[%d] = %.9g, want %.9g", run, i, got[i], want[i])
			}
		}
	}
}

// firstBatchGrads is the flat gradient of the first batch (128 of data) of
// the default model configured with microbatch mb (and SumMicrobatchGrads
// sum), computed with the slices of microbatch run.
func firstBatchGrads(t *testing.T, data *ct.Tensor, mb int, sum bool, run int) []float64 {
	cfg := DefaultConfig()
	cfg.Step = StepGeneric // tryForwardBackward is the autograd path
	cfg.SaveDir = t.TempDir()
	cfg.Microbatch, cfg.SumMicrobatchGrads = mb, sum
	tr, err := newTrainer(cfg, data)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	s := ct.NewScope()
	defer s.Close()
	batch := tr.data.next(s)
	tt, w := tr.sampler.Sample(s, 128, tr.noiseGen)
	noise := s.Randn(ct.Options{}, tr.noiseGen, 128, 128)
	if _, err := tr.tryForwardBackward(s, batch, tt, w, noise, run); err != nil {
		t.Fatal(err)
	}
	grads, _ := tr.store.Grads(s)
	var parts []*ct.Tensor
	for _, g := range grads {
		parts = append(parts, g.Reshape(-1))
	}
	return cgotorchtest.Float64s(ct.Cat(parts, 0))
}
