package trainer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	t.Run("equal to one process", func(t *testing.T) {
		dir, res := runRanks(t, "ok", step)
		for r, x := range res {
			if x.Err != "" || x.Steps != distSteps {
				t.Fatalf("rank %d: %d steps, error %q", r, x.Steps, x.Err)
			}
		}
		run := filepath.Join(dir, "run")
		equalBits(t, "weights", flatParams(t, run, distSteps), flatParams(t, ref, distSteps))
		equalBits(t, "EMA", loadFile(t, emaFile(run, "0.9", distSteps)), loadFile(t, emaFile(ref, "0.9", distSteps)))
		equalBits(t, "AdamW state", loadFile(t, optFile(run, distSteps)), loadFile(t, optFile(ref, distSteps)))
		// The sampler saw the whole batch's losses on every rank: its history
		// (in the state file) is the single process's.
		if !bytes.Equal(stateTensor(t, run, "sampler.loss_history"), stateTensor(t, ref, "sampler.loss_history")) {
			t.Error("the loss-aware sampler's history differs from the single process's")
		}
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
		// resuming from it continues the reference run exactly.
		run := filepath.Join(dir, "run")
		if _, err := os.Stat(stateFile(run, oomStep-1)); err != nil {
			t.Fatalf("no checkpoint of step %d: %v (rank 0: %s)", oomStep-1, err, res[0].Err)
		}
		resumed := referenceRun(t, modelFile(run, oomStep-1), step)
		equalBits(t, "weights after resuming the stopped run", flatParams(t, resumed, distSteps), flatParams(t, ref, distSteps))
	})
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
