package trainer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// referenceCheckpoint copies the model, opt and EMA files of checkpoint
// label to a new directory without the state sidecar: a checkpoint as the
// reference writes it.
func referenceCheckpoint(t *testing.T, cfg Config, label int) string {
	t.Helper()
	dst := t.TempDir()
	files := []string{modelFile(cfg.SaveDir, label), optFile(cfg.SaveDir, label)}
	for k := range cfg.EMARates {
		files = append(files, emaFile(cfg.SaveDir, cfg.emaName(k), label))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// adamSteps reads the step count of parameter 0 from an opt file.
func adamSteps(t *testing.T, path string) float64 {
	t.Helper()
	ts, err := ct.LoadPT(path, ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(ts)
	for _, n := range ts {
		if n.Name == "state.0.step" {
			return n.T.Item()
		}
	}
	t.Fatalf("%s has no state.0.step", path)
	return 0
}

func savedLabels(t *testing.T, dir string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "model*.pt"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range m {
		names = append(names, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "model"), ".pt"))
	}
	return strings.Join(names, " ")
}

// TestResumeFromStepZero: from the step-0 checkpoint with its state file
// the run continues exactly; from a reference-style step-0 checkpoint (no
// state file) it behaves as the reference's TrainLoop, whose
// `if self.resume_step:` is false for 0: the weights are loaded, the
// optimizer and the EMA are not, and all N updates run again.
func TestResumeFromStepZero(t *testing.T) {
	data := latents(t, 128, 16, 8)
	defer data.Free()
	a := smallConfig(t)
	a.LRAnnealSteps = 20
	if _, err := Train(context.Background(), a, data); err != nil {
		t.Fatal(err)
	}
	if got := savedLabels(t, a.SaveDir); got != "000000 000020" {
		t.Fatalf("saved %s, want 000000 000020", got)
	}

	b := a
	b.SaveDir = t.TempDir()
	b.ResumeCheckpoint = modelFile(a.SaveDir, 0)
	res, err := Train(context.Background(), b, data)
	if err != nil || res.Steps != 19 {
		t.Fatalf("exact resume from step 0: %+v %v", res, err)
	}
	equalBits(t, "final weights after an exact resume from step 0", flatParams(t, a.SaveDir, 20), flatParams(t, b.SaveDir, 20))

	c := a
	c.SaveDir = t.TempDir()
	c.ResumeCheckpoint = filepath.Join(referenceCheckpoint(t, a, 0), "model000000.pt")
	var out bytes.Buffer
	c.Out = &out
	res, err = Train(context.Background(), c, data)
	if err != nil || res.Steps != 20 {
		t.Fatalf("reference-style resume from step 0: %+v %v", res, err)
	}
	if s := adamSteps(t, optFile(c.SaveDir, 20)); s != 20 {
		t.Errorf("AdamW step count %v after resuming from a reference step-0 checkpoint, want 20 (optimizer not loaded)", s)
	}
	if !strings.Contains(out.String(), "neither the optimizer nor the EMA") {
		t.Errorf("no note on the step-0 semantics:\n%s", out.String())
	}
	if got := savedLabels(t, c.SaveDir); got != "000000 000020" {
		t.Errorf("saved %s, want 000000 000020 (the reference saves at its loop step 0)", got)
	}
}

// TestSaveCadenceAfterReferenceResume: resuming a reference checkpoint S
// the reference saves when (step − S) % save_interval == 0 and at the end;
// with a state file the run keeps its original cadence.
func TestSaveCadenceAfterReferenceResume(t *testing.T) {
	data := latents(t, 128, 16, 9)
	defer data.Free()
	a := smallConfig(t)
	a.LRAnnealSteps, a.SaveInterval = 30, 10
	if _, err := Train(context.Background(), a, data); err != nil {
		t.Fatal(err)
	}
	if got := savedLabels(t, a.SaveDir); got != "000000 000010 000020 000030" {
		t.Fatalf("saved %s", got)
	}
	d := a
	d.SaveDir = t.TempDir()
	d.LRAnnealSteps, d.SaveInterval = 40, 15
	d.ResumeCheckpoint = filepath.Join(referenceCheckpoint(t, a, 10), "model000010.pt")
	res, err := Train(context.Background(), d, data)
	if err != nil || res.Steps != 30 {
		t.Fatalf("resume: %+v %v", res, err)
	}
	if got := savedLabels(t, d.SaveDir); got != "000010 000025 000040" {
		t.Errorf("saved %s after resuming reference checkpoint 10 with save_interval 15, want 000010 000025 000040", got)
	}
	if s := adamSteps(t, optFile(d.SaveDir, 40)); s != 11+30 {
		t.Errorf("AdamW step count %v, want 41 (11 restored + 30)", s)
	}

	// An exact resume (state file) keeps the global cadence.
	e := a
	e.SaveDir = t.TempDir()
	e.LRAnnealSteps, e.SaveInterval = 40, 15
	e.ResumeCheckpoint = modelFile(a.SaveDir, 10)
	if _, err := Train(context.Background(), e, data); err != nil {
		t.Fatal(err)
	}
	if got := savedLabels(t, e.SaveDir); got != "000015 000030 000040" {
		t.Errorf("saved %s after an exact resume, want 000015 000030 000040", got)
	}
}
