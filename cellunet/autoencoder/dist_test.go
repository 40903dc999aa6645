package autoencoder_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// Two data-parallel ranks of autoencoder training as two processes of this
// test binary (TestDataParallelAERank, started by cgotorchtest.RunRanks).

const (
	aeEnvScenario = "AE_DIST_TEST_SCENARIO"
	aeEnvDir      = "AE_DIST_TEST_DIR"
	aeDistSteps   = 6
	aeOOMStep     = 3
)

func aeDistConfig(dir string) autoencoder.TrainConfig {
	cfg := autoencoder.DefaultTrainConfig(50)
	cfg.Model = autoencoder.Config{Genes: 50, Hidden: []int64{64, 64, 64}, Latent: 16}
	cfg.BatchSize = 32
	cfg.MaxSteps = aeDistSteps
	cfg.CheckpointFreq = 1
	cfg.LogEvery = 1
	cfg.Seed = 1234
	cfg.SaveDir = dir
	return cfg
}

type aeRankResult struct {
	Err    string    `json:"err"`
	OOM    bool      `json:"oom"`
	Peer   bool      `json:"peer"`
	Steps  int       `json:"steps"`
	Losses []float64 `json:"losses"`
}

func TestDataParallelAERank(t *testing.T) {
	if !cgotorchtest.IsRankProcess() {
		t.Skip("a rank of TestDataParallelAE; started by it")
	}
	dir := os.Getenv(aeEnvDir)
	comm, err := dist.JoinEnv(dist.Config{Device: ct.CPU, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer comm.Close()
	cfg := aeDistConfig(filepath.Join(dir, "run"))
	cfg.Comm = comm
	if os.Getenv(aeEnvScenario) == "oom" && comm.Rank() == 1 {
		// Rank 1 runs out of memory in step aeOOMStep, inside the forward
		// pass where rank 0 waits in a BatchNorm all-reduce.
		cfg.AfterStep = func(step int) {
			if step == aeOOMStep-1 {
				ct.SetCPUAllocLimit(ct.CPUAllocatorStats().AllocatedBytes + 64<<10)
			}
		}
	}
	res, err := autoencoder.Train(context.Background(), cfg, lowRankCSR(t, 300, 50))
	ct.SetCPUAllocLimit(0)
	out := aeRankResult{Steps: res.Steps}
	for _, lp := range res.Log {
		out.Losses = append(out.Losses, lp.Loss)
	}
	if err != nil {
		out.Err, out.OOM, out.Peer = err.Error(), errors.Is(err, ct.ErrOutOfMemory), errors.Is(err, dist.ErrPeerFailed)
	}
	b, _ := json.Marshal(out)
	if err := os.WriteFile(cgotorchtest.RankFile(dir, comm.Rank()), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func aeRanks(t *testing.T, top, scenario string) (string, [2]aeRankResult) {
	t.Helper()
	dir := filepath.Join(top, scenario)
	outs := cgotorchtest.RunRanks(t, 2, "TestDataParallelAERank", []string{aeEnvScenario + "=" + scenario, aeEnvDir + "=" + dir}, 3*time.Minute)
	var res [2]aeRankResult
	for r := range res {
		if err := json.Unmarshal(cgotorchtest.RankResult(t, dir, r, outs[r]), &res[r]); err != nil {
			t.Fatal(err)
		}
	}
	return dir, res
}

func TestDataParallelAE(t *testing.T) {
	if !ct.Gloo.Available() {
		if ct.Build().CUDA { // a pip wheel ships no Gloo headers; NCCL is that flavour's backend
			t.Skip("this CUDA-flavour libcgotorch has no Gloo backend; the CPU flavour runs this test")
		}
		t.Fatal("this libcgotorch has no Gloo backend (install libgloo-dev and rebuild the shim)")
	}
	ref := aeDistConfig(filepath.Join(t.TempDir(), "ref"))
	refRes, err := autoencoder.Train(context.Background(), ref, lowRankCSR(t, 300, 50))
	if err != nil {
		t.Fatal(err)
	}
	name := func(dir string, step int) string {
		return filepath.Join(dir, autoencoder.CheckpointName(0, step))
	}
	top := t.TempDir()
	var okDir string
	t.Run("two ranks with synchronised BatchNorm equal one process", func(t *testing.T) {
		dir, res := aeRanks(t, top, "ok")
		okDir = filepath.Join(dir, "run")
		for r, x := range res {
			if x.Err != "" || x.Steps != aeDistSteps {
				t.Fatalf("rank %d: %d steps, error %q", r, x.Steps, x.Err)
			}
		}
		// The losses of the global batch agree with the single process's to
		// rounding (the BatchNorm statistics are summed in float64).
		for i, l := range res[0].Losses {
			if want := refRes.Log[i].Loss; math.Abs(l-want) > 1e-5*math.Abs(want) {
				t.Errorf("step %d: loss %.8g, one process %.8g", i, l, want)
			}
		}
		// The weights agree too, except where the true gradient is zero: the
		// bias of a Linear layer in front of BatchNorm (which subtracts the
		// mean) and the running means that contain it. There AdamW turns
		// rounding noise into steps of up to lr whatever its size, so those
		// differ by up to ~lr per step.
		a, b := cgotorchtest.LoadPT(t, name(okDir, aeDistSteps-1)), cgotorchtest.LoadPT(t, name(ref.SaveDir, aeDistSteps-1))
		noise := regexp.MustCompile(`^((encoder|decoder)\.network\.\d+\.1\.bias|decoder\.network\.0\.0\.bias|.*running_mean)$`)
		for k, v := range a {
			tol := 1e-5
			if noise.MatchString(k) && k != "decoder.network.0.1.bias" { // that one is BatchNorm's own bias
				tol = 2 * ref.LR * aeDistSteps
			}
			for i := range v {
				if d := math.Abs(v[i] - b[k][i]); d > tol {
					t.Errorf("%s[%d]: %.8g, one process %.8g (|Δ| %.3g > %.3g)", k, i, v[i], b[k][i], d, tol)
					break
				}
			}
		}
	})
	t.Run("out of memory inside the forward pass stops both with a checkpoint", func(t *testing.T) {
		if okDir == "" {
			t.Skip("needs the two-rank run")
		}
		dir, res := aeRanks(t, top, "oom")
		if !res[1].OOM {
			t.Errorf("rank 1 (out of memory): %+v", res[1])
		}
		if !res[0].Peer || res[0].OOM {
			t.Errorf("rank 0 (its peer ran out of memory): %+v", res[0])
		}
		// Rank 0 undid the failed step (data order, BatchNorm running
		// statistics) and wrote the last complete one: the same checkpoint
		// as the run that did not fail.
		run := filepath.Join(dir, "run")
		sameSD(t, "the checkpoint written on failure", cgotorchtest.LoadPT(t, name(run, aeOOMStep-1)), cgotorchtest.LoadPT(t, name(okDir, aeOOMStep-1)))
		state := func(d string) []byte {
			b, err := os.ReadFile(filepath.Join(d, "state_seed=0_step=2.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		if string(state(run)) != string(state(okDir)) {
			t.Error("the training state written on failure differs from the run that did not fail")
		}
		if _, err := os.Stat(name(run, aeOOMStep)); err == nil {
			t.Errorf("a checkpoint of the failed step %d was written", aeOOMStep)
		}
	})
}
