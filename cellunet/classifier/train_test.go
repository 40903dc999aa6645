package classifier_test

import (
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/classifier"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// clusters returns n unit latents [n,128] in k classes: class c is the unit
// vector of a random centre plus noise of spread 0.6 — classes overlap
// once noised at large t, as real cell types do.
func clusters(t *testing.T, n, k int, seed uint64) classifier.Data {
	t.Helper()
	var d classifier.Data
	err := ct.Try(func() {
		g, err := ct.NewGenerator(ct.CPU, seed)
		if err != nil {
			panic(err)
		}
		defer g.Close()
		s := ct.NewScope()
		defer s.Close()
		centres := s.Randn(ct.Options{}, g, int64(k), 128).Normalize(2, 1, 1e-12)
		y := s.RandInt(0, int64(k), ct.Options{DType: ct.Int64}, g, int64(n))
		x := centres.IndexSelect(0, y).Add(s.Randn(ct.Options{}, g, int64(n), 128).MulScalar(0.6 / math.Sqrt(128)))
		d = classifier.Data{Latents: s.Keep(x.Normalize(2, 1, 1e-12)), Labels: s.Keep(y)}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Latents.Free(); d.Labels.Free() })
	return d
}

func smallTrainConfig(t *testing.T, k int64) classifier.TrainConfig {
	cfg := classifier.DefaultTrainConfig(k)
	cfg.Model.Hidden = []int64{64, 64, 32, 16}
	cfg.BatchSize = 32
	cfg.Iterations = 12
	cfg.LogInterval = 4
	cfg.SaveInterval = 5
	cfg.SaveDir = t.TempDir()
	return cfg
}

// TestTrainLearns: on separable latents the noised cross-entropy falls and
// the accuracy at low noise (quartile 0, t < 250) beats chance clearly.
func TestTrainLearns(t *testing.T) {
	data := clusters(t, 512, 4, 1)
	cfg := smallTrainConfig(t, 4)
	cfg.Iterations = 150
	cfg.LogInterval = 50
	cfg.SaveInterval = 1000
	cfg.LR = 1e-3
	res, err := classifier.Train(context.Background(), cfg, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Log) != 3 || res.Steps != 150 || res.Checkpoint != classifier.ModelFile(cfg.SaveDir, 149) {
		t.Fatalf("result %+v", res)
	}
	first, last := res.Log[0], res.Log[len(res.Log)-1]
	if !(last.Loss < first.Loss*0.9) || !(last.AccQ[0] > 0.5) { // chance: 0.25
		t.Errorf("loss %.3f → %.3f, q0 accuracy %.3f: not learning", first.Loss, last.Loss, last.AccQ[0])
	}
	if !math.IsNaN(last.LossQ[2]) || !math.IsNaN(last.LossQ[3]) || math.IsNaN(last.LossQ[1]) {
		t.Errorf("quartiles %v: with t < 500 of 1000 only q0 and q1 occur", last.LossQ)
	}
	csv, err := os.ReadFile(filepath.Join(cfg.SaveDir, "progress.csv"))
	if err != nil || strings.Count(string(csv), "\n") != 4 || !strings.HasPrefix(string(csv), "step,samples,lr,train_loss,train_acc@1,") {
		t.Errorf("progress.csv (%v):\n%s", err, csv)
	}
}

func readModel(t *testing.T, path string) map[string][]float64 {
	t.Helper()
	sd, err := ct.LoadPT(path, ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(sd)
	out := map[string][]float64{}
	for _, n := range sd {
		out[n.Name] = n.T.ToDType(ct.Float64).Float64s()
	}
	return out
}

func sameModel(t *testing.T, what string, a, b map[string][]float64) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d vs %d tensors", what, len(a), len(b))
	}
	for k, va := range a {
		vb := b[k]
		for i := range va {
			if va[i] != vb[i] {
				t.Fatalf("%s: %s[%d] = %v vs %v", what, k, i, va[i], vb[i])
			}
		}
	}
}

// TestResumeIsExact: a run interrupted at step 7 and resumed from its
// checkpoint (or from the step-5 checkpoint) ends bit-identical to an
// uninterrupted run: weights, BatchNorm statistics, optimizer state, data
// order, noise and dropout masks all continue; and with validation data.
func TestResumeIsExact(t *testing.T) {
	data := clusters(t, 200, 3, 2)
	val := clusters(t, 64, 3, 3)
	straight := smallTrainConfig(t, 3)
	if _, err := classifier.Train(context.Background(), straight, data, &val); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model000005.pt", "opt000005.pt", "state000005.safetensors", "model000010.pt", "model000011.pt", "opt000011.pt"} {
		if _, err := os.Stat(filepath.Join(straight.SaveDir, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	for _, f := range []string{"model000000.pt", "model000012.pt"} {
		if _, err := os.Stat(filepath.Join(straight.SaveDir, f)); err == nil {
			t.Errorf("unexpected %s (saves at S > 0, S %% 5 == 0 and S = iterations-1 = 11)", f)
		}
	}
	want := readModel(t, classifier.ModelFile(straight.SaveDir, 11))

	// Interrupt after step 7 (Ctrl-C): the checkpoint of step 7 is written.
	cut := smallTrainConfig(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	cut.AfterStep = func(step int) {
		if step == 7 {
			cancel()
		}
	}
	res, err := classifier.Train(ctx, cut, data, &val)
	if !errors.Is(err, classifier.ErrInterrupted) || res.NextStep != 8 || res.Checkpoint != classifier.ModelFile(cut.SaveDir, 7) {
		t.Fatalf("interrupt: %v, %+v", err, res)
	}
	resumed := smallTrainConfig(t, 3)
	resumed.SaveDir = cut.SaveDir
	resumed.Resume = cut.SaveDir // the newest complete checkpoint: 7
	res, err = classifier.Train(context.Background(), resumed, data, &val)
	if err != nil || res.Steps != 4 {
		t.Fatalf("resume: %v, %+v", err, res)
	}
	sameModel(t, "resumed after the interrupt", want, readModel(t, classifier.ModelFile(cut.SaveDir, 11)))

	// From the in-loop checkpoint of step 5, named as a file.
	again := smallTrainConfig(t, 3)
	again.Resume = classifier.ModelFile(straight.SaveDir, 5)
	if _, err := classifier.Train(context.Background(), again, data, &val); err != nil {
		t.Fatal(err)
	}
	sameModel(t, "resumed from step 5", want, readModel(t, classifier.ModelFile(again.SaveDir, 11)))
}

// TestCheckpointsLoadInPyTorch: model and optimizer files load into the
// reference Cell_classifier and torch.optim.AdamW (whose parameter list
// includes the unused emb_layers3, which has no optimizer state).
func TestCheckpointsLoadInPyTorch(t *testing.T) {
	data := clusters(t, 128, 5, 4)
	cfg := classifier.DefaultTrainConfig(5)
	cfg.BatchSize = 32
	cfg.Iterations = 3
	cfg.SaveDir = t.TempDir()
	if _, err := classifier.Train(context.Background(), cfg, data, nil); err != nil {
		t.Fatal(err)
	}
	script := `
import sys, torch
sys.path.insert(0, sys.argv[1])
from scdiffusion_ref import Cell_classifier
m = Cell_classifier(128, [512, 512, 256, 128], 5, 0.1)
m.load_state_dict(torch.load(sys.argv[2]))
opt = torch.optim.AdamW(m.parameters(), lr=3e-4, weight_decay=0.0)
opt.load_state_dict(torch.load(sys.argv[3]))
print("ok", int(m.norm1.num_batches_tracked), opt.state[m.out.bias]["step"], m.emb_layers3[1].weight in opt.state)
`
	ref, _ := filepath.Abs("../../scripts/reference")
	out, err := exec.Command("/usr/bin/python3", "-c", script, ref, classifier.ModelFile(cfg.SaveDir, 2),
		filepath.Join(cfg.SaveDir, "opt000002.pt")).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	if want := "ok 3 tensor(3.) False\n"; string(out) != want {
		t.Errorf("python printed %q, want %q", out, want)
	}
	// And back: the file loads as a classifier for guidance.
	m, err := classifier.Load(classifier.ModelFile(cfg.SaveDir, 2), ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}

// TestNothingWrittenBeforeRun: files appear only after BeforeRun accepted
// the run; a resume that fails, or a BeforeRun that refuses, leaves the
// save directory uncreated and leaks no tensor.
func TestNothingWrittenBeforeRun(t *testing.T) {
	data := clusters(t, 64, 3, 6)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "model000003.pt")
	if err := os.WriteFile(corrupt, []byte("PK\x03\x04 truncated"), 0o644); err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("refused")
	for _, tc := range []struct {
		resume    string
		beforeRun error
		ran       bool
	}{
		{resume: filepath.Join(dir, "nope", "model000003.pt")},
		{resume: corrupt},
		{beforeRun: refuse, ran: true},
	} {
		cfg := smallTrainConfig(t, 3)
		cfg.SaveDir = filepath.Join(t.TempDir(), "run")
		cfg.Resume = tc.resume
		ran := false
		cfg.BeforeRun = func() error {
			ran = true
			if _, err := os.Stat(cfg.SaveDir); !os.IsNotExist(err) {
				t.Errorf("resume %q: the save dir exists before BeforeRun (%v)", tc.resume, err)
			}
			return tc.beforeRun
		}
		before := ct.LiveTensors()
		_, err := classifier.Train(context.Background(), cfg, data, nil)
		var re *classifier.ResumeError
		if err == nil || (tc.beforeRun != nil && !errors.Is(err, refuse)) ||
			(tc.resume != "" && (!errors.As(err, &re) || re.Path != tc.resume || !errors.Is(err, classifier.ErrData))) {
			t.Errorf("resume %q: error %v", tc.resume, err)
		}
		if ran != tc.ran {
			t.Errorf("resume %q: BeforeRun ran: %v, want %v", tc.resume, ran, tc.ran)
		}
		if n := ct.LiveTensors() - before; n != 0 {
			t.Errorf("resume %q: %d tensor handles leaked", tc.resume, n)
		}
		if _, err := os.Stat(cfg.SaveDir); !os.IsNotExist(err) {
			t.Errorf("resume %q: the failed run created its save dir (%v)", tc.resume, err)
		}
	}
	if err := classifier.CheckResume(filepath.Join(dir, "nope", "model000003.pt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CheckResume of a missing file: %v", err)
	}
	if err := classifier.CheckResume(corrupt); err != nil {
		t.Errorf("CheckResume of an existing model file: %v (it reads no tensor)", err)
	}
}

func TestTrainErrors(t *testing.T) {
	data := clusters(t, 64, 3, 5)
	cases := []struct {
		mod  func(*classifier.TrainConfig)
		want string
	}{
		{func(c *classifier.TrainConfig) { c.Model.NumClass = 2 }, "labels span 0..2 but the classifier has 2 classes"},
		{func(c *classifier.TrainConfig) { c.BatchSize = 100 }, "fewer than batch_size 100"},
		{func(c *classifier.TrainConfig) { c.StartGuideTime = 1001 }, "start_guide_time"},
		{func(c *classifier.TrainConfig) { c.ScheduleSampler = "nope" }, "schedule_sampler"},
		{func(c *classifier.TrainConfig) { c.Resume = "/nonexistent/model000003.pt" }, "resume checkpoint"},
		{func(c *classifier.TrainConfig) { c.Resume = "notamodel.pt" }, "resume checkpoint"},
	}
	for i, tc := range cases {
		cfg := smallTrainConfig(t, 3)
		tc.mod(&cfg)
		_, err := classifier.Train(context.Background(), cfg, data, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("case %d: error %v, want %q", i, err, tc.want)
		}
	}
}
