package trainer

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// Two data-parallel ranks as two processes of this test binary
// (TestDataParallelRank, started by cgotorchtest.RunRanks with the world in
// the environment as torchrun sets it). The
// end-to-end tests through torchrun itself are in cmd/gotorch-train; these
// run in the libtorch 2.x CI too.

const (
	envScenario = "TRAINER_DIST_TEST_SCENARIO"
	envStep     = "TRAINER_DIST_TEST_STEP"
	envDir      = "TRAINER_DIST_TEST_DIR"
	distSteps   = 12
	oomStep     = 5
)

// distConfig is the run every process makes: the loss-aware sampler over
// 10 diffusion steps, so the gathered per-sample losses steer the timestep
// draws after a few steps.
func distConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.Model.InputDim = 16
	cfg.Model.Hidden = []int64{32, 32, 16, 8}
	cfg.Diffusion.Steps, cfg.Diffusion.Schedule = 10, "cosine" // (linear β would exceed 1 at T = 10)
	cfg.ScheduleSampler = "loss-second-moment"
	cfg.BatchSize = 32
	cfg.LR = 1e-3
	cfg.LRAnnealSteps = distSteps
	cfg.LogInterval = 4
	cfg.SaveInterval = 1000
	cfg.SaveDir = dir
	cfg.Seed = 11
	cfg.EMARates, cfg.EMARateNames = []float64{0.9}, []string{"0.9"}
	return cfg
}

// rankResult is what a rank process reports to the test.
type rankResult struct {
	Err     string `json:"err"`
	OOM     bool   `json:"oom"`  // errors.Is(err, ErrOutOfMemory)
	Peer    bool   `json:"peer"` // errors.Is(err, dist.ErrPeerFailed)
	PeerOOM bool   `json:"peer_oom"`
	Steps   int    `json:"steps"`
}

// TestDataParallelRank is one rank of the tests below.
func TestDataParallelRank(t *testing.T) {
	if !cgotorchtest.IsRankProcess() {
		t.Skip("a rank of TestDataParallelTwoRanks; started by it")
	}
	dir := os.Getenv(envDir)
	comm, err := dist.JoinEnv(dist.Config{Device: ct.CPU, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer comm.Close()
	data := latents(t, 256, 16, 3)
	defer data.Free()
	cfg := distConfig(filepath.Join(dir, "run"))
	cfg.Comm = comm
	if cfg.Step, err = ParseStepImpl(os.Getenv(envStep)); err != nil {
		t.Fatal(err)
	}
	if os.Getenv(envScenario) == "oom" && comm.Rank() == 1 {
		// Rank 1 runs out of memory at step oomStep's first allocation
		// (the fused step itself allocates nothing per step; the timestep
		// draw before it does).
		cfg.Hooks.BeforeStep = func(step int) {
			if step == oomStep {
				ct.SetCPUAllocLimit(ct.CPUAllocatorStats().AllocatedBytes + 1)
			}
		}
	}
	res, err := Train(context.Background(), cfg, data)
	ct.SetCPUAllocLimit(0)
	out := rankResult{Steps: res.Steps}
	if err != nil {
		var pe *dist.PeerError
		out.Err, out.OOM, out.Peer = err.Error(), errors.Is(err, ct.ErrOutOfMemory), errors.Is(err, dist.ErrPeerFailed)
		out.PeerOOM = errors.As(err, &pe) && pe.Status == dist.OutOfMemory
	}
	b, _ := json.Marshal(out)
	if err := os.WriteFile(cgotorchtest.RankFile(dir, comm.Rank()), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// runRanks runs scenario with the given training step on two rank
// processes and returns their results.
func runRanks(t *testing.T, scenario string, step StepImpl) (dir string, res [2]rankResult) {
	t.Helper()
	dir = t.TempDir()
	outs := cgotorchtest.RunRanks(t, 2, "TestDataParallelRank", []string{envScenario + "=" + scenario, envStep + "=" + string(step), envDir + "=" + dir}, 3*time.Minute)
	for r := range res {
		if err := json.Unmarshal(cgotorchtest.RankResult(t, dir, r, outs[r]), &res[r]); err != nil {
			t.Fatal(err)
		}
	}
	return dir, res
}

// The single-process reference: the batch in two microbatches of 16, the
// same per-sample work and gradient sums as two ranks of 16 rows, with the
// same training step.
func referenceRun(t *testing.T, resume string, step StepImpl) string {
	t.Helper()
	data := latents(t, 256, 16, 3)
	defer data.Free()
	cfg := distConfig(t.TempDir())
	cfg.Microbatch = 16
	cfg.Step = step
	cfg.ResumeCheckpoint = resume
	if _, err := Train(context.Background(), cfg, data); err != nil {
		t.Fatal(err)
	}
	return cfg.SaveDir
}

func TestDataParallelTwoRanks(t *testing.T) {
	if !ct.Gloo.Available() {
		if ct.Build().CUDA { // a pip wheel ships no Gloo headers; NCCL is that flavour's backend
			t.Skip("this CUDA-flavour libcgotorch has no Gloo backend; the CPU flavour runs this test")
		}
		t.Fatal("this libcgotorch has no Gloo backend (install libgloo-dev and rebuild the shim)")
	}
	// The fused step (the default: each rank runs it on its shard and the
	// all-reduced flat gradient goes through the separate AdamW + EMA pass)
	// and autograd's, each against a single process with the same step.
	for _, step := range []StepImpl{StepFused, StepGeneric} {
		t.Run(string(step), func(t *testing.T) { testTwoRanks(t, step) })
	}
}

func testTwoRanks(t *testing.T, step StepImpl) {
	ref := referenceRun(t, "", step)
	same := sameSums(t, step)
	t.Run("equal to one process", func(t *testing.T) {
		dir, res := runRanks(t, "ok", step)
		for r, x := range res {
			if x.Err != "" || x.Steps != distSteps {
				t.Fatalf("rank %d: %d steps, error %q", r, x.Steps, x.Err)
			}
		}
		run := filepath.Join(dir, "run")
		same.weights(t, "weights", flatParams(t, run, distSteps), flatParams(t, ref, distSteps))
		same.weights(t, "EMA", loadFile(t, emaFile(run, "0.9", distSteps)), loadFile(t, emaFile(ref, "0.9", distSteps)))
		got, want := cgotorchtest.LoadPT(t, optFile(run, distSteps)), cgotorchtest.LoadPT(t, optFile(ref, distSteps))
		if len(got) != len(want) {
			t.Fatalf("AdamW state: %d tensors, want %d", len(got), len(want))
		}
		for name, w := range want {
			same.state(t, "AdamW state "+name, got[name], w)
		}
		// The sampler saw the whole batch's losses on every rank: its history
		// (in the state file) is the single process's.
		same.state(t, "the loss-aware sampler's history", float32s(stateTensor(t, run, "sampler.loss_history")),
			float32s(stateTensor(t, ref, "sampler.loss_history")))
		if _, err := os.Stat(filepath.Join(run, "progress.csv")); err != nil {
			t.Errorf("rank 0 wrote no progress.csv: %v", err)
		}
	})
	t.Run("out of memory on one rank stops both with a checkpoint", func(t *testing.T) {
		dir, res := runRanks(t, "oom", step)
		if !res[1].OOM || res[1].Peer {
			t.Errorf("rank 1 (out of memory): %+v", res[1])
		}
		if !res[0].Peer || !res[0].PeerOOM || res[0].OOM {
			t.Errorf("rank 0 (its peer ran out of memory): %+v", res[0])
		}
		if res[0].Steps != oomStep || res[1].Steps != oomStep {
			t.Errorf("ranks stopped after %d and %d steps, want %d", res[0].Steps, res[1].Steps, oomStep)
		}
		// Rank 0 wrote step oomStep−1, with the failed step's draws undone:
		// resuming from it continues the reference run exactly (a wrong
		// draw would change most weights by far more than the drift).
		run := filepath.Join(dir, "run")
		if _, err := os.Stat(stateFile(run, oomStep-1)); err != nil {
			t.Fatalf("no checkpoint of step %d: %v (rank 0: %s)", oomStep-1, err, res[0].Err)
		}
		resumed := referenceRun(t, modelFile(run, oomStep-1), step)
		same.weights(t, "weights after resuming the stopped run", flatParams(t, resumed, distSteps), flatParams(t, ref, distSteps))
	})
}

// comparison compares a two-rank run with the single process that splits
// the batch into the ranks' two halves.
type comparison struct{ exact bool }

// sameSums says how: bit for bit where both add the halves' gradients the
// same way — autograd (each half's gradient, then one addition), and the
// fused step when it calls OpenBLAS's sgemm itself. With libtorch's mm
// instead (the fused step's fallback, e.g. over the reference BLAS of
// Debian trixie's libtorch 2.6) the single process accumulates its second
// half inside the matrix product (addmm, beta 1), which rounds differently
// from the all-reduce's separate addition: the runs then drift apart by a
// few ulps per step, which AdamW's normalisation carries into the weights.
func sameSums(t *testing.T, step StepImpl) comparison {
	if step == StepGeneric {
		return comparison{exact: true}
	}
	data := latents(t, 64, 16, 3)
	defer data.Free()
	cfg := distConfig(t.TempDir())
	cfg.Step = step
	tr, err := newTrainer(cfg, data)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	info, err := tr.fused.step.Info()
	if err != nil {
		t.Fatal(err)
	}
	if !info.BLAS {
		t.Logf("the fused step uses libtorch's mm here: comparing within the drift of differently rounded gradient sums")
	}
	return comparison{exact: info.BLAS}
}

// weights compares weights (or EMA weights): without exactness, at most
// 0.1 % of them may differ by more than 1e-5 — those whose true gradient is
// near zero, where AdamW scales rounding noise to steps of up to ~lr — and
// none by more than 2·lr per step (measured over libtorch 2.6's mm: none
// off by > 1e-5, max |Δ| 1.2e-7).
func (c comparison) weights(t *testing.T, what string, got, want []float64) {
	t.Helper()
	if c.exact {
		equalBits(t, what, got, want)
		return
	}
	md, frac := drift(t, what, got, want, 1e-5)
	lr := distConfig("").LR
	t.Logf("%s: max |Δ| %.3g, %.4f %% off by > 1e-5", what, md, 100*frac)
	if frac > 0.001 || md > 2*lr*distSteps {
		t.Errorf("%s: max |Δ| %.3g, %.4f %% off by > 1e-5 (want ≤ 0.1 %% and ≤ %.3g)", what, md, 100*frac, 2*lr*distSteps)
	}
}

// state compares one tensor of optimizer or sampler state: without
// exactness, every value within 1e-4 of the tensor's largest (measured over
// libtorch 2.6's mm: ≤ 2e-7).
func (c comparison) state(t *testing.T, what string, got, want []float64) {
	t.Helper()
	if c.exact {
		equalBits(t, what, got, want)
		return
	}
	scale := cgotorchtest.MaxAbs(want)
	if md, _ := drift(t, what, got, want, 0); md > 1e-4*scale {
		t.Errorf("%s: max |Δ| %.3g, more than 1e-4 of the largest value %.3g", what, md, scale)
	}
}

// drift is the largest absolute difference and the fraction of values
// differing by more than tol.
func drift(t *testing.T, what string, got, want []float64, tol float64) (maxDiff, frac float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: lengths %d and %d", what, len(got), len(want))
	}
	over := 0
	for i := range got {
		d := math.Abs(got[i] - want[i])
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		maxDiff = max(maxDiff, d)
		if d > tol {
			over++
		}
	}
	return maxDiff, float64(over) / float64(len(got))
}

// float32s reads little-endian float32 bytes.
func float32s(b []byte) []float64 {
	out := make([]float64, len(b)/4)
	for i := range out {
		out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return out
}

// stateTensor reads a tensor of a checkpoint's state file as bytes.
func stateTensor(t *testing.T, dir, name string) []byte {
	t.Helper()
	ts, _, err := ct.LoadSafetensors(stateFile(dir, distSteps), ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(ts)
	for _, n := range ts {
		if n.Name == name {
			var b []byte
			if err := ct.Try(func() { b = n.T.Bytes() }); err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("%s has no %s", stateFile(dir, distSteps), name)
	return nil
}
