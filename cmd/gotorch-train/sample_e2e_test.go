package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
)

// models are small checkpoints trained on the bundled PBMC 4k data, once
// per test binary: autoencoder, encoded latents (with labels), backbone
// (with its EMA) and classifier.
type models struct {
	dir, ae, latents, backbone, classifier string
	classes                                []string
}

var (
	modelsOnce sync.Once
	trained    models
	trainErr   error
)

func trainModels(t *testing.T) models {
	t.Helper()
	modelsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gotorch-sample-e2e-")
		if err != nil {
			trainErr = err
			return
		}
		m := models{dir: dir}
		step := func(args ...string) {
			if trainErr != nil {
				return
			}
			if code, out := run(t, context.Background(), args...); code != exitOK {
				trainErr = fmt.Errorf("%s exit %d:\n%s", args[0], code, out)
			}
		}
		step("train-ae", "--data_dir", pbmc(t), "--save_dir", filepath.Join(dir, "ae"), "--max_steps", "10",
			"--checkpoint_freq", "100", "--log_interval", "10", "--mem_log_interval", "0")
		m.ae = filepath.Join(dir, "ae", "model_seed=0_step=9.pt")
		m.latents = filepath.Join(dir, "latents.npz")
		step("encode", "--data_dir", pbmc(t), "--vae_path", m.ae, "--output", m.latents)
		step("train", "--latents", m.latents, "--save_dir", dir, "--model_name", "bb", "--batch_size", "64",
			"--lr_anneal_steps", "20", "--save_interval", "100", "--log_interval", "10", "--mem_log_interval", "0")
		m.backbone = filepath.Join(dir, "bb", "model000020.pt")
		step("train-classifier", "--latents", m.latents, "--model_path", filepath.Join(dir, "cls"), "--iterations", "30",
			"--batch_size", "64", "--log_interval", "10", "--save_interval", "100", "--mem_log_interval", "0", "--lr", "1e-3")
		m.classifier = filepath.Join(dir, "cls", "model000029.pt")
		m.classes, _ = readLines(filepath.Join(dir, "cls", "classes.txt"))
		trained = m
	})
	if trainErr != nil {
		t.Fatal(trainErr)
	}
	return trained
}

// removeModels deletes the trained models after all tests (TestMain).
func removeModels() {
	if trained.dir != "" {
		os.RemoveAll(trained.dir)
	}
}

func readCells(t *testing.T, path string) *npz.Latents {
	t.Helper()
	l, err := npz.ReadLatents(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range l.Data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("%s: non-finite value", path)
		}
	}
	return l
}

// TestTrainClassifierCommand: files and names of classifier_train.py,
// classes.txt from the data, an exact continuation with --resume_checkpoint,
// in-memory encoding with --data_dir/--vae_path, and Ctrl-C before the first
// step.
func TestTrainClassifierCommand(t *testing.T) {
	m := trainModels(t)
	dir := filepath.Join(t.TempDir(), "cls")
	args := []string{"train-classifier", "--latents", m.latents, "--model_path", dir, "--batch_size", "64",
		"--log_interval", "2", "--save_interval", "3", "--mem_log_interval", "2", "--threads", "1"}
	code, out := run(t, context.Background(), append(args, "--iterations", "5")...)
	if code != exitOK {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, f := range []string{"model000003.pt", "opt000003.pt", "state000003.safetensors", "model000004.pt", "opt000004.pt",
		"classes.txt", "progress.csv", "memory.jsonl"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	if classes, _ := readLines(filepath.Join(dir, "classes.txt")); len(classes) != 8 {
		t.Errorf("classes.txt: %v, want the 8 PBMC labels", classes)
	}
	for _, want := range []string{"Cell_classifier 128 → [512 512 256] → 8 classes", "step 4 samples 320", "train_acc@1_q0", "Step 2: CPU: "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out = run(t, context.Background(), append(args, "--iterations", "8", "--resume_checkpoint", dir)...)
	if code != exitOK || !strings.Contains(out, "resumed from "+filepath.Join(dir, "model000004.pt")+" at step 5") {
		t.Fatalf("resume exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "model000007.pt")); err != nil {
		t.Error("no final checkpoint after resuming")
	}

	enc := filepath.Join(t.TempDir(), "enc")
	code, out = run(t, context.Background(), "train-classifier", "--data_dir", pbmc(t), "--vae_path", m.ae, "--model_path", enc,
		"--iterations", "2", "--batch_size", "32", "--mem_log_interval", "0")
	if code != exitOK || !strings.Contains(out, "encoded 4271 cells") {
		t.Fatalf("--data_dir exit %d:\n%s", code, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	code, out = run(t, ctx, "train-classifier", "--latents", m.latents, "--model_path", t.TempDir(), "--iterations", "5", "--batch_size", "32", "--mem_log_interval", "0")
	if code != exitOK || !strings.Contains(out, "interrupted before the first step") {
		t.Errorf("cancelled run exit %d:\n%s", code, out)
	}
}

// TestSampleUnconditional: the reference's .npz (exactly num_samples rows),
// the decoded .h5ad that anndata reads, EMA weights by default, and the same
// bytes for the same seed; another seed, ancestral sampling and bf16 give
// other cells.
func TestSampleUnconditional(t *testing.T) {
	m := trainModels(t)
	dir := t.TempDir()
	base := []string{"sample", "--model_path", m.backbone, "--num_samples", "70", "--batch_size", "32", "--use_ddim",
		"--timestep_respacing", "ddim10", "--mem_log_interval", "0", "--threads", "1"}
	a := filepath.Join(dir, "a")
	code, out := run(t, context.Background(), append(base, "--sample_dir", a, "--vae_path", m.ae)...)
	if code != exitOK {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{"EMA weights", "ema_0.9999_000020.pt", "batch 2: 6 cells", "wrote " + a + ".npz: cell_gen [70,128]", "wrote " + a + ".h5ad: 70 cells × 1989 genes"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if l := readCells(t, a+".npz"); l.N != 70 || l.Dim != 128 || l.Labels != nil {
		t.Errorf("npz: %d×%d, labels %v", l.N, l.Dim, l.Labels != nil)
	}
	py := `
import sys, numpy as np, anndata as ad
z = np.load(sys.argv[1])
x = z["cell_gen"]
a = ad.read_h5ad(sys.argv[2])
print(z.files, x.dtype, x.shape, a.shape, a.var_names[0], a.obs_names[0], float(a.X.min()) >= 0)
`
	pyOut, err := exec.Command("/usr/bin/python3", "-c", py, a+".npz", a+".h5ad").CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, pyOut)
	}
	genes, _ := readLines(filepath.Join(filepath.Dir(m.ae), "genes.txt"))
	if want := fmt.Sprintf("['cell_gen'] float32 (70, 128) (70, 1989) %s 0 True\n", genes[0]); string(pyOut) != want {
		t.Errorf("python read %q, want %q", pyOut, want)
	}

	// Same seed: same bytes; other seed, raw weights, ancestral, bf16: other cells.
	b := filepath.Join(dir, "b")
	if code, out := run(t, context.Background(), append(base, "--sample_dir", b)...); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	same, _ := os.ReadFile(a + ".npz")
	again, _ := os.ReadFile(b + ".npz")
	if !bytes.Equal(same, again) {
		t.Error("the same seed gave different .npz bytes")
	}
	for _, extra := range [][]string{{"--seed", "5"}, {"--use_ema", "False"}, {"--precision", "bf16"}} {
		c := filepath.Join(dir, "c")
		code, out := run(t, context.Background(), append(append(base, "--sample_dir", c), extra...)...)
		if code != exitOK {
			t.Fatalf("%v: exit %d:\n%s", extra, code, out)
		}
		other, _ := os.ReadFile(c + ".npz")
		if bytes.Equal(same, other) {
			t.Errorf("%v gave the same cells", extra)
		}
	}
	anc := filepath.Join(dir, "anc")
	code, out = run(t, context.Background(), "sample", "--model_path", m.backbone, "--num_samples", "5", "--batch_size", "5",
		"--timestep_respacing", "25", "--noise_weight", "0.4", "--sample_dir", anc, "--mem_log_interval", "0")
	if code != exitOK || !strings.Contains(out, "ancestral (noise weight 0.4), 25 steps") || readCells(t, anc+".npz").N != 5 {
		t.Errorf("ancestral exit %d:\n%s", code, out)
	}
}

// TestSampleGuided: every class in one run (models loaded once, files
// {prefix}{k}.npz and .h5ad with the class in obs), a class by name with
// the filter, two conditions, and gradient interpolation from real cells.
func TestSampleGuided(t *testing.T) {
	m := trainModels(t)
	dir := t.TempDir()
	base := []string{"sample", "--model_path", m.backbone, "--use_ddim", "--timestep_respacing", "ddim10",
		"--mem_log_interval", "0", "--batch_size", "16"}
	p := filepath.Join(dir, "cls")
	code, out := run(t, context.Background(), append(base, "--classifier_path", m.classifier, "--cell_type", "all",
		"--num_samples", "3", "--sample_dir", p, "--vae_path", m.ae)...)
	if code != exitOK {
		t.Fatalf("all classes: exit %d:\n%s", code, out)
	}
	for k := range m.classes {
		if l := readCells(t, fmt.Sprintf("%s%d.npz", p, k)); l.N != 3 {
			t.Errorf("class %d: %d rows", k, l.N)
		}
		if _, err := os.Stat(fmt.Sprintf("%s%d.h5ad", p, k)); err != nil {
			t.Errorf("class %d: no .h5ad", k)
		}
	}
	py := `
import sys, anndata as ad
a = ad.read_h5ad(sys.argv[1])
print(a.obs["celltype"].tolist()[0], list(a.obs["celltype"].cat.categories) == sys.argv[2].split("|"))
`
	pyOut, err := exec.Command("/usr/bin/python3", "-c", py, p+"2.h5ad", strings.Join(m.classes, "|")).CombinedOutput()
	if err != nil || string(pyOut) != m.classes[2]+" True\n" {
		t.Errorf("obs of class 2: %v %q", err, pyOut)
	}

	// --bn_ref joins the decoder's dataset BatchNorm statistics: the class's
	// own latents twice over leave the statistics (mean, biased variance) and
	// so the decoded cells unchanged; the real cells' latents change them.
	guided2 := func(prefix string, extra ...string) {
		t.Helper()
		code, out := run(t, context.Background(), append(append(base, "--classifier_path", m.classifier, "--cell_type", "2",
			"--num_samples", "3", "--sample_dir", prefix, "--vae_path", m.ae), extra...)...)
		if code != exitOK || (len(extra) > 0 && !strings.Contains(out, "latents of --bn_ref")) {
			t.Fatalf("%v: exit %d:\n%s", extra, code, out)
		}
	}
	plain := filepath.Join(dir, "plain")
	guided2(plain)
	own := readCells(t, plain+"2.npz")
	twice := filepath.Join(dir, "twice.npz")
	if err := npz.WriteLatents(twice, append(slices.Clone(own.Data), own.Data...), 2*own.N, own.Dim, nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, ref, same string }{{"own", twice, "True"}, {"real", m.latents, "False"}} {
		q := filepath.Join(dir, "bnref_"+c.name)
		guided2(q, "--bn_ref", c.ref)
		if !slices.Equal(readCells(t, q+"2.npz").Data, own.Data) {
			t.Fatalf("--bn_ref %s changed the sampled latents", c.name)
		}
		cmp := `
import sys, numpy as np, anndata as ad
a, b = (ad.read_h5ad(f).X.toarray() for f in sys.argv[1:3])
print(bool(np.allclose(a, b, rtol=1e-4, atol=1e-5)))
`
		pyOut, err := exec.Command("/usr/bin/python3", "-c", cmp, plain+"2.h5ad", q+"2.h5ad").CombinedOutput()
		if err != nil || strings.TrimSpace(string(pyOut)) != c.same {
			t.Errorf("--bn_ref %s: decoded cells equal to those without it: %v %q, want %s", c.name, err, pyOut, c.same)
		}
	}

	// By name (PBMC's labels are numbers, which --cell_type reads as
	// indices: name the classes in a copy), with the filter.
	named := filepath.Join(dir, "named")
	os.MkdirAll(named, 0o755)
	ckpt, _ := os.ReadFile(m.classifier)
	os.WriteFile(filepath.Join(named, "model000029.pt"), ckpt, 0o644)
	writeLines(filepath.Join(named, "classes.txt"), []string{"B cells", "CD4 T", "CD8 T", "DC", "Mono", "NK", "Mega", "Other"})
	f := filepath.Join(dir, "filtered")
	code, out = run(t, context.Background(), append(base, "--classifier_path", filepath.Join(named, "model000029.pt"), "--cell_type", "B cells", "--filter",
		"--num_samples", "2", "--batch_size", "64", "--filter_max_batches", "30", "--sample_dir", f)...)
	if code != exitOK || !strings.Contains(out, "kept by the filter") {
		t.Fatalf("filter: exit %d:\n%s", code, out)
	}
	if l := readCells(t, f+"0.npz"); l.N != 2 {
		t.Errorf("filtered: %d rows", l.N)
	}

	mc := filepath.Join(dir, "multi")
	code, out = run(t, context.Background(), append(base, "--classifier_path1", m.classifier, "--classifier_path2", m.classifier,
		"--cell_type", "0,1", "--weight", "7,3", "--num_samples", "4", "--sample_dir", mc)...)
	if code != exitOK || readCells(t, mc+"0_1.npz").N != 4 {
		t.Fatalf("two conditions: exit %d:\n%s", code, out)
	}

	ip := filepath.Join(dir, "inter")
	code, out = run(t, context.Background(), append(base, "--classifier_path", m.classifier, "--init_cell_path", pbmc(t),
		"--vae_path", m.ae, "--cell_type", "0,1", "--weight", "6,4", "--num_samples", "20",
		"--sample_dir", ip)...)
	if code != exitOK || !strings.Contains(out, "noised to step 600; the loop starts at step 600") || readCells(t, ip+"0_1_w6_4.npz").N != 20 {
		t.Fatalf("interpolation: exit %d:\n%s", code, out)
	}
	code, out = run(t, context.Background(), append(base, "--classifier_path", m.classifier, "--init_cell_path", pbmc(t),
		"--vae_path", m.ae, "--cell_type", "0,1", "--interp_start", "999", "--num_samples", "4", "--sample_dir", ip)...)
	if code != exitOK || !strings.Contains(out, "the loop starts at step 900") { // ddim10: steps 0, 100, ..., 900
		t.Fatalf("interpolation from x_999: exit %d:\n%s", code, out)
	}
}
