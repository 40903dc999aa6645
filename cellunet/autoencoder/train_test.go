package autoencoder_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// lowRankCSR is a synthetic expression matrix with structure an
// autoencoder can learn: log1p(relu(U·V)) with rank-4 factors, n×g.
func lowRankCSR(t testing.TB, n, g int) *autoencoder.CSR {
	t.Helper()
	r := rand.New(rand.NewPCG(11, 12))
	const k = 4
	u, v := make([]float64, n*k), make([]float64, k*g)
	for i := range u {
		u[i] = r.NormFloat64()
	}
	for i := range v {
		v[i] = r.NormFloat64()
	}
	dense := make([]float32, n*g)
	for i := 0; i < n; i++ {
		for j := 0; j < g; j++ {
			var s float64
			for l := 0; l < k; l++ {
				s += u[i*k+l] * v[l*g+j]
			}
			if s > 0 {
				dense[i*g+j] = float32(math.Log1p(3 * s))
			}
		}
	}
	csr, err := autoencoder.CSRFromDense(dense, n, g)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func smallTrainConfig(t testing.TB) autoencoder.TrainConfig {
	cfg := autoencoder.DefaultTrainConfig(50)
	cfg.Model = autoencoder.Config{Genes: 50, Hidden: []int64{64, 64, 64}, Latent: 16}
	cfg.BatchSize = 32
	cfg.MaxSteps = 150
	cfg.CheckpointFreq = 100
	cfg.LogEvery = 10
	cfg.Seed = 1234
	cfg.SaveDir = filepath.Join(t.TempDir(), "ae")
	return cfg
}

func sameSD(t *testing.T, what string, a, b map[string][]float64) {
	t.Helper()
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("%s: %d vs %d tensors", what, len(a), len(b))
	}
	for k, v := range a {
		if fmt.Sprint(v) != fmt.Sprint(b[k]) {
			t.Errorf("%s: %s differs", what, k)
		}
	}
}

// TestTrainLossDecreases: a short run on a learnable synthetic problem
// lowers the loss well below its start, writes the reference's checkpoint
// names (steps 0, 100 and the last, 149) with sidecars, and leaves no
// tensor handles or tensor bytes behind.
func TestTrainLossDecreases(t *testing.T) {
	cfg := smallTrainConfig(t)
	var out bytes.Buffer
	cfg.Out = &out
	data := lowRankCSR(t, 512, 50)
	base, bytes0 := ct.LiveTensors(), ct.CPUAllocatorStats().AllocatedBytes
	res, err := autoencoder.Train(t.Context(), cfg, data)
	if err != nil {
		t.Fatal(err)
	}
	if d := ct.LiveTensors() - base; d != 0 {
		t.Errorf("%d tensor handles leaked", d)
	}
	if b := ct.CPUAllocatorStats().AllocatedBytes; b != bytes0 {
		t.Errorf("tensor bytes in use %d after training, %d before", b, bytes0)
	}
	if res.Steps != 150 || res.NextStep != 150 || len(res.Log) != 16 {
		t.Fatalf("result %+v", res)
	}
	first, last := res.Log[0], res.Log[len(res.Log)-1]
	if first.Step != 0 || first.Steps != 1 || last.Step != 149 || last.Steps != 9 {
		t.Errorf("log points: first %+v last %+v", first, last)
	}
	if !(last.Loss < 0.4*first.Loss) {
		t.Errorf("loss went from %.4f to %.4f", first.Loss, last.Loss)
	}
	t.Logf("loss %.4f at step 0 → %.4f at step 149", first.Loss, last.Loss)
	for _, step := range []int{0, 100, 149} {
		for _, name := range []string{autoencoder.CheckpointName(0, step), fmt.Sprintf("state_seed=0_step=%d.safetensors", step)} {
			if _, err := os.Stat(filepath.Join(cfg.SaveDir, name)); err != nil {
				t.Error(err)
			}
		}
	}
	if want := filepath.Join(cfg.SaveDir, autoencoder.CheckpointName(0, 149)); res.Checkpoint != want {
		t.Errorf("Checkpoint %q, want %q", res.Checkpoint, want)
	}
	sd := cgotorchtest.LoadPT(t, res.Checkpoint)
	if n := sd["encoder.network.0.2.num_batches_tracked"]; len(n) != 1 || n[0] != 150 {
		t.Errorf("num_batches_tracked = %v, want 150 (train-mode BatchNorm)", n)
	}
	if !strings.Contains(out.String(), "step 149: loss") {
		t.Errorf("progress output:\n%s", out.String())
	}
	// The checkpoint is a complete model: Load it and encode.
	m, err := autoencoder.Load(res.Checkpoint, ct.CPU, 50)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.EncodeAll(data, autoencoder.DefaultInferOptions()); err != nil {
		t.Fatal(err)
	}
}

// TestTrainDeterministicAndResumable: the same seed gives bit-identical
// losses and weights; a run stopped at step 5 and resumed from its
// checkpoint ends bit-identical to an uninterrupted run; another seed
// differs. On the autograd path with dropout on (so the RNG state
// matters), on the autograd path without, and on the fused step (which
// covers no dropout).
func TestTrainDeterministicAndResumable(t *testing.T) {
	for _, c := range []struct {
		name    string
		step    string
		dropout bool
	}{{"generic-dropout", "generic", true}, {"generic", "generic", false}, {"fused", "fused", false}} {
		t.Run(c.name, func(t *testing.T) { trainDeterministicAndResumable(t, c.step, c.dropout) })
	}
}

func trainDeterministicAndResumable(t *testing.T, step string, dropout bool) {
	data := lowRankCSR(t, 200, 50)
	mk := func() autoencoder.TrainConfig {
		cfg := smallTrainConfig(t)
		if dropout {
			cfg.Model.Dropout, cfg.Model.InputDropout = 0.1, 0.05
		}
		cfg.Step = step
		cfg.MaxSteps, cfg.CheckpointFreq, cfg.LogEvery = 12, 5, 1
		return cfg
	}
	a, b := mk(), mk()
	ra, err := autoencoder.Train(t.Context(), a, data)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := autoencoder.Train(t.Context(), b, data)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ra.Log) != fmt.Sprint(rb.Log) {
		t.Errorf("losses differ between identical runs:\n%v\n%v", ra.Log, rb.Log)
	}
	final := autoencoder.CheckpointName(0, 11)
	sameSD(t, "identical runs", cgotorchtest.LoadPT(t, filepath.Join(a.SaveDir, final)), cgotorchtest.LoadPT(t, filepath.Join(b.SaveDir, final)))

	// Stop after step 5 (6 updates; 200 rows / 32 = 6 batches per epoch,
	// so the resumed run starts a new epoch), then resume to step 11.
	c := mk()
	c.MaxSteps = 6
	if _, err := autoencoder.Train(t.Context(), c, data); err != nil {
		t.Fatal(err)
	}
	c.MaxSteps = 12
	c.Resume = filepath.Join(c.SaveDir, autoencoder.CheckpointName(0, 5))
	rc, err := autoencoder.Train(t.Context(), c, data)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Steps != 6 || rc.NextStep != 12 {
		t.Errorf("resumed run: %+v", rc)
	}
	if fmt.Sprint(rc.Log) != fmt.Sprint(ra.Log[6:]) {
		t.Errorf("resumed losses differ:\n%v\n%v", rc.Log, ra.Log[6:])
	}
	sameSD(t, "resumed run", cgotorchtest.LoadPT(t, filepath.Join(a.SaveDir, final)), cgotorchtest.LoadPT(t, filepath.Join(c.SaveDir, final)))

	d := mk()
	d.Seed = 7
	rd, err := autoencoder.Train(t.Context(), d, data)
	if err != nil {
		t.Fatal(err)
	}
	if rd.Log[0].Loss == ra.Log[0].Loss {
		t.Error("another seed gave the same first loss")
	}
}

// TestTrainStops: cancellation writes a checkpoint of the last finished
// step and wraps ErrInterrupted; MaxDuration stops after the first step
// with a checkpoint; resuming without a sidecar continues from the weights.
func TestTrainStops(t *testing.T) {
	data := lowRankCSR(t, 128, 50)
	cfg := smallTrainConfig(t)
	cfg.LogEvery = 1
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cfg.OnLog = func(lp autoencoder.LogPoint) {
		if lp.Step == 3 {
			cancel()
		}
	}
	res, err := autoencoder.Train(ctx, cfg, data)
	if !errors.Is(err, autoencoder.ErrInterrupted) {
		t.Fatalf("error %v", err)
	}
	if res.Steps != 4 || res.Checkpoint != filepath.Join(cfg.SaveDir, autoencoder.CheckpointName(0, 3)) {
		t.Errorf("interrupted: %+v", res)
	}

	cfg = smallTrainConfig(t)
	cfg.MaxDuration = time.Nanosecond
	cfg.SaveState = false
	cfg.FileSeed = 3
	res, err = autoencoder.Train(t.Context(), cfg, data)
	if err != nil || !res.StoppedEarly || res.Steps != 1 || res.Checkpoint != filepath.Join(cfg.SaveDir, autoencoder.CheckpointName(3, 0)) {
		t.Fatalf("MaxDuration: %+v, %v", res, err)
	}
	cfg.MaxDuration = 0
	cfg.MaxSteps = 4
	cfg.Resume = res.Checkpoint
	var out bytes.Buffer
	cfg.Out = &out
	res, err = autoencoder.Train(t.Context(), cfg, data)
	if err != nil || res.Steps != 3 || !strings.Contains(out.String(), "no sidecar") {
		t.Errorf("weights-only resume: %+v, %v\n%s", res, err, out.String())
	}

	bad := smallTrainConfig(t)
	bad.BatchSize = 1000
	if _, err := autoencoder.Train(t.Context(), bad, data); err == nil {
		t.Error("batch larger than the data accepted")
	}
	bad = smallTrainConfig(t)
	bad.SaveDir = ""
	if _, err := autoencoder.Train(t.Context(), bad, data); err == nil {
		t.Error("empty SaveDir accepted")
	}
}

// TestTrainSetupErrorsAreErrors: a resume that fails after the model and
// optimizer buffers exist returns an error, releases them and writes
// nothing; before the fix the deferred cleanup dereferenced the nil result
// and panicked.
func TestTrainSetupErrorsAreErrors(t *testing.T) {
	data := lowRankCSR(t, 64, 50)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, autoencoder.CheckpointName(0, 10))
	if err := os.WriteFile(corrupt, []byte("PK\x03\x04 truncated"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, resume := range []string{filepath.Join(dir, "nope", autoencoder.CheckpointName(0, 10)), corrupt, filepath.Join(dir, "model.pt")} {
		cfg := smallTrainConfig(t)
		cfg.Resume = resume
		ran := false
		cfg.BeforeRun = func() error { ran = true; return nil }
		before := ct.LiveTensors()
		if _, err := autoencoder.Train(context.Background(), cfg, data); err == nil {
			t.Errorf("resume %s: Train succeeded", resume)
		}
		if ran {
			t.Errorf("resume %s: BeforeRun ran", resume)
		}
		if n := ct.LiveTensors() - before; n != 0 {
			t.Errorf("resume %s: %d tensor handles leaked", resume, n)
		}
		if _, err := os.Stat(cfg.SaveDir); !os.IsNotExist(err) {
			t.Errorf("resume %s: the failed run created its save dir (%v)", resume, err)
		}
	}
}
