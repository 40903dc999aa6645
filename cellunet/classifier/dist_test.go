package classifier_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/classifier"
	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// Two data-parallel ranks of classifier training as two processes of this
// test binary (TestDataParallelClassifierRank, started by
// cgotorchtest.RunRanks): tensor ownership on the data-parallel path, and
// an out-of-memory on one rank. Equality with one process is tested end to
// end in cmd/gotorch-train (TestDataParallel).

const (
	clsEnvScenario = "CLS_DIST_TEST_SCENARIO"
	clsEnvDir      = "CLS_DIST_TEST_DIR"
	clsDistSteps   = 6
	clsOOMStep     = 3
)

type clsRankResult struct {
	Err   string `json:"err"`
	OOM   bool   `json:"oom"`
	Peer  bool   `json:"peer"`
	Steps int    `json:"steps"`
	// Live tensor handles after every step, and the handles and allocator
	// bytes the run (join, Train, close) left behind.
	LivePerStep  []int64 `json:"live_per_step"`
	LeakedHandle int64   `json:"leaked_handles"`
	LeakedBytes  int64   `json:"leaked_bytes"`
}

func TestDataParallelClassifierRank(t *testing.T) {
	if !cgotorchtest.IsRankProcess() {
		t.Skip("a rank of TestDataParallelClassifier; started by it")
	}
	dir := os.Getenv(clsEnvDir)
	data, val := clusters(t, 200, 3, 2), clusters(t, 64, 3, 3)
	// The process group's own buffers (Comm.Reserve) live until Close: count
	// from before the join to after it.
	base, bytes0 := ct.LiveTensors(), ct.CPUAllocatorStats().AllocatedBytes
	comm, err := dist.JoinEnv(dist.Config{Device: ct.CPU, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	rank := comm.Rank()
	cfg := smallTrainConfig(t, 3)
	cfg.SaveDir = filepath.Join(dir, "run")
	cfg.Iterations, cfg.SaveInterval, cfg.LogInterval, cfg.EvalInterval = clsDistSteps, 1, 1, 2
	cfg.Comm = comm
	var out clsRankResult
	cfg.AfterStep = func(step int) {
		out.LivePerStep = append(out.LivePerStep, ct.LiveTensors())
		if os.Getenv(clsEnvScenario) == "oom" && rank == 1 && step == clsOOMStep-1 {
			// Rank 1 runs out of memory early in step clsOOMStep (the batch,
			// the noise or the forward pass, where rank 0 waits in a
			// BatchNorm all-reduce).
			ct.SetCPUAllocLimit(ct.CPUAllocatorStats().AllocatedBytes + 64<<10)
		}
	}
	res, err := classifier.Train(context.Background(), cfg, data, &val)
	ct.SetCPUAllocLimit(0)
	comm.Close()
	out.Steps = res.Steps
	out.LeakedHandle, out.LeakedBytes = ct.LiveTensors()-base, ct.CPUAllocatorStats().AllocatedBytes-bytes0
	if err != nil {
		out.Err, out.OOM, out.Peer = err.Error(), errors.Is(err, ct.ErrOutOfMemory), errors.Is(err, dist.ErrPeerFailed)
	}
	b, _ := json.Marshal(out)
	if err := os.WriteFile(cgotorchtest.RankFile(dir, rank), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func clsRanks(t *testing.T, top, scenario string) (string, [2]clsRankResult) {
	t.Helper()
	dir := filepath.Join(top, scenario)
	outs := cgotorchtest.RunRanks(t, 2, "TestDataParallelClassifierRank", []string{clsEnvScenario + "=" + scenario, clsEnvDir + "=" + dir}, 3*time.Minute)
	var res [2]clsRankResult
	for r := range res {
		if err := json.Unmarshal(cgotorchtest.RankResult(t, dir, r, outs[r]), &res[r]); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "run"), res
}

func TestDataParallelClassifier(t *testing.T) {
	if !ct.Gloo.Available() {
		if ct.Build().CUDA { // a pip wheel ships no Gloo headers; NCCL is that flavour's backend
			t.Skip("this CUDA-flavour libcgotorch has no Gloo backend; the CPU flavour runs this test")
		}
		t.Fatal("this libcgotorch has no Gloo backend (install libgloo-dev and rebuild the shim)")
	}
	top := t.TempDir()
	var okRun string
	t.Run("every tensor of a data-parallel step is freed", func(t *testing.T) {
		run, res := clsRanks(t, top, "ok")
		for r, x := range res {
			if x.Err != "" || x.Steps != clsDistSteps {
				t.Fatalf("rank %d: %d steps, error %q", r, x.Steps, x.Err)
			}
			// After the first step (AdamW state, permutation, window) the
			// number of live handles stays put, and Train frees everything.
			for i, n := range x.LivePerStep[1:] {
				if n != x.LivePerStep[0] {
					t.Errorf("rank %d: %d live tensor handles after step %d, %d after step 0", r, n, i+1, x.LivePerStep[0])
				}
			}
			if x.LeakedHandle != 0 || x.LeakedBytes != 0 {
				t.Errorf("rank %d: Train left %d tensor handles and %d bytes behind", r, x.LeakedHandle, x.LeakedBytes)
			}
		}
		okRun = run
	})
	t.Run("out of memory on one rank stops both with a checkpoint", func(t *testing.T) {
		if okRun == "" {
			t.Skip("needs the run that does not fail")
		}
		run, res := clsRanks(t, top, "oom")
		if !res[1].OOM || res[0].OOM || !res[0].Peer {
			t.Fatalf("rank 1 (out of memory): %+v; rank 0 (its peer ran out): %+v", res[1], res[0])
		}
		if res[0].Steps != clsOOMStep || res[1].Steps != clsOOMStep {
			t.Errorf("ranks stopped after %d and %d steps, want %d", res[0].Steps, res[1].Steps, clsOOMStep)
		}
		for r, x := range res {
			if x.LeakedHandle != 0 || x.LeakedBytes != 0 {
				t.Errorf("rank %d: the failed run left %d tensor handles and %d bytes behind", r, x.LeakedHandle, x.LeakedBytes)
			}
		}
		// Rank 0 undid the failed step (data order, noise and dropout
		// generators, BatchNorm statistics) and wrote the last complete one:
		// the files of the run that did not fail, byte for byte.
		for _, f := range []string{"model000002.pt", "opt000002.pt", "state000002.safetensors"} {
			a, err := os.ReadFile(filepath.Join(run, f))
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(okRun, f))
			if err != nil {
				t.Fatal(err)
			}
			if string(a) != string(b) {
				t.Errorf("%s written on failure differs from the run that did not fail", f)
			}
		}
		if _, err := os.Stat(filepath.Join(run, "model000003.pt")); err == nil {
			t.Errorf("a checkpoint of the failed step %d was written", clsOOMStep)
		}
	})
}
