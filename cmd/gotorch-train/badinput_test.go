package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// badFixtures are the inputs of the bad-invocation table: small real data,
// a real autoencoder checkpoint and a real earlier run (checkpoints, memory
// series and plot, progress, genes and classes), plus damaged copies.
type badFixtures struct {
	dir     string // everything shared by the rows (read-only for them)
	run     string // an earlier run: save_dir/m with everything a run writes
	h5ad    string // 700 cells × 765 genes, raw counts (read-only source)
	h5ad4k  string // pbmc4k with obs/celltype
	plain   string // plain HDF5 with X/Y
	tenx    string // 10x v3 .h5 (no cell annotations)
	lat     string // 256 × 128 latents with labels and classes
	lat16   string // 64 × 16: the wrong width
	ae      string // autoencoder checkpoint trained on h5ad
	model   string // a Cell_Unet model file of run (its EMA file is next to it)
	trModel string // a truncated copy of model
	cls     string // a classifier trained on lat (classes.txt next to it)
	empty   string
	text    string // a shell script: neither HDF5, npz nor a checkpoint
	trLat   string // truncated copies
	trH5ad  string
	trAE    string
	aeBad   string // a corrupt autoencoder checkpoint with a train-ae name
	resumes map[string]string
}

// hidden is the small Cell_Unet of the fixtures' earlier run.
const hidden = "32,32,16,8"

func newBadFixtures(t *testing.T) *badFixtures {
	dir := t.TempDir()
	fx := &badFixtures{dir: dir, resumes: map[string]string{}}
	data := cgotorchtest.DataDir(t)
	fx.h5ad = filepath.Join(data, "format_fixtures", "anndata_0.8_written", "pbmc68k_counts_csr_gzip.h5ad")
	fx.h5ad4k = filepath.Join(data, "format_fixtures", "anndata_0.8_written", "pbmc4k_top2000_counts_csr_gzip.h5ad")
	fx.plain = filepath.Join(data, "pbmc4k_scdcc", "10X_PBMC_top2000.h5")
	fx.tenx = filepath.Join(data, "format_fixtures", "10x", "3.0.0", "filtered_feature_bc_matrix.h5")
	if msg := fx.build(); msg != "" {
		t.Fatal(msg)
	}
	return fx
}

// runQuiet runs the command in-process (for the fixtures).
func runQuiet(args ...string) (int, string) {
	var out bytes.Buffer
	code := mainRun(context.Background(), append([]string{"gotorch-train"}, args...), &out, &out)
	return code, out.String()
}

func (fx *badFixtures) path(name string) string { return filepath.Join(fx.dir, name) }

// build makes the fixtures, returning "" or what failed.
func (fx *badFixtures) build() string {
	w := func(name string, b []byte) string {
		p := fx.path(name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			panic(err)
		}
		return p
	}
	g := make([]float32, 256*128)
	for i := range g {
		g[i] = float32((i*7919)%13-6) / 30
	}
	labels := make([]int64, 256)
	for i := range labels {
		labels[i] = int64(i % 2)
	}
	fx.lat, fx.lat16 = fx.path("latents.npz"), fx.path("latents16.npz")
	if err := npz.WriteLatents(fx.lat, g, 256, 128, labels, []string{"B cell", "T cell"}); err != nil {
		return err.Error()
	}
	if err := npz.WriteLatents(fx.lat16, g[:64*16], 64, 16, nil, nil); err != nil {
		return err.Error()
	}
	fx.empty = w("empty.h5ad", nil)
	fx.text = w("notes.pt", []byte("#!/bin/sh\necho not data\n"))
	half := func(src, name string) string {
		b, err := os.ReadFile(src)
		if err != nil {
			panic(err)
		}
		return w(name, b[:len(b)/2])
	}
	fx.trLat = half(fx.lat, "truncated.npz")
	fx.trH5ad = half(fx.h5ad, "truncated.h5ad")

	// A real autoencoder checkpoint and a real earlier backbone run.
	code, out := runQuiet("train-ae", "--data_dir", fx.h5ad, "--no_labels", "--save_dir", fx.path("ae"),
		"--max_steps", "2", "--checkpoint_freq", "1", "--batch_size", "32", "--log_interval", "1", "--threads", "1")
	if code != exitOK {
		return "fixture train-ae: " + out
	}
	fx.ae = fx.path("ae/model_seed=0_step=1.pt")
	fx.trAE = half(fx.ae, "truncated_ae.pt")
	fx.aeBad = w("model_seed=0_step=1.pt", []byte("PK\x03\x04 not a zip"))
	code, out = runQuiet("train", "--latents", fx.lat, "--save_dir", fx.path("runs"), "--model_name", "m",
		"--hidden_dim", hidden, "--batch_size", "16", "--lr_anneal_steps", "2", "--save_interval", "1", "--log_interval", "1",
		"--mem_log_interval", "1", "--threads", "1")
	if code != exitOK {
		return "fixture train: " + out
	}
	fx.run = fx.path("runs/m")
	fx.model = filepath.Join(fx.run, "model000001.pt")
	fx.trModel = half(fx.model, "truncated_model.pt")
	code, out = runQuiet("train-classifier", "--latents", fx.lat, "--model_path", fx.path("cls"), "--hidden_dim", "32,32,16",
		"--batch_size", "16", "--iterations", "2", "--log_interval", "1", "--mem_log_interval", "0", "--threads", "1")
	if code != exitOK {
		return "fixture train-classifier: " + out
	}
	fx.cls = fx.path("cls/model000001.pt")
	// What train-ae would have written there too, so every file a failed
	// run could touch exists.
	if err := os.WriteFile(filepath.Join(fx.run, "genes.txt"), []byte("g1\ng2\n"), 0o644); err != nil {
		return err.Error()
	}
	if err := os.WriteFile(filepath.Join(fx.run, "oom_report.json"), []byte("{}\n"), 0o644); err != nil {
		return err.Error()
	}
	for _, f := range []string{"memory.jsonl", "memory.svg", "progress.csv", "classes.txt", "state000001.safetensors", "opt000001.pt"} {
		if _, err := os.Stat(filepath.Join(fx.run, f)); err != nil {
			return "fixture run lacks " + f
		}
	}
	// Damaged copies of the run to resume from.
	damage := map[string]func(dir string) error{
		"corrupt_state": func(d string) error { return truncate(filepath.Join(d, "state000001.safetensors")) },
		"corrupt_model": func(d string) error {
			return os.WriteFile(filepath.Join(d, "model000001.pt"), []byte("#!/bin/sh\n"), 0o644)
		},
		"missing_opt": func(d string) error { return os.Remove(filepath.Join(d, "opt000001.pt")) },
		"incomplete": func(d string) error {
			for _, s := range []string{"state000000.safetensors", "state000001.safetensors"} {
				if err := os.Remove(filepath.Join(d, s)); err != nil {
					return err
				}
			}
			return nil
		},
	}
	for name, fn := range damage {
		d := fx.path("resume_" + name)
		if err := copyTree(fx.run, d); err != nil {
			return err.Error()
		}
		if err := fn(d); err != nil {
			return err.Error()
		}
		fx.resumes[name] = d
	}
	return ""
}

func truncate(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b[:len(b)/2], 0o644)
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// hashTree maps every file under dir to its SHA-256.
func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// treeChanges lists what differs between two hashTree results: changed or
// removed files, and new files (unless allowed).
func treeChanges(before, after map[string]string, allowNew func(string) bool) []string {
	var d []string
	for f, h := range before {
		switch a, ok := after[f]; {
		case !ok:
			d = append(d, "removed "+f)
		case a != h:
			d = append(d, "changed "+f)
		}
	}
	for f := range after {
		if _, ok := before[f]; !ok && (allowNew == nil || !allowNew(f)) {
			d = append(d, "created "+f)
		}
	}
	sort.Strings(d)
	return d
}

// runBinary runs the command as a process (this test binary runs main()
// when GOTORCH_E2E_MAIN is set: the same main as bin/gotorch-train) with a
// clean environment plus env, and returns its exit status and output.
func runBinary(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GOTORCH_") && k != "GOTORCH_TESTDATA_DIR" || k == "PYTORCH_CUDA_ALLOC_CONF" || k == "PYTORCH_ALLOC_CONF" {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	// One thread each (rows run in parallel); a row that wrongly got past
	// its checks trains a few steps instead of the reference's 800,000.
	cmd.Env = append(cmd.Env, "GOTORCH_E2E_MAIN=1", "GOTORCH_NO_BLAS_REEXEC=1", "OMP_NUM_THREADS=1",
		"GOTORCH_LR_ANNEAL_STEPS=2", "GOTORCH_MAX_STEPS=2", "GOTORCH_ITERATIONS=2", "GOTORCH_NUM_SAMPLES=4", "GOTORCH_TIMESTEP_RESPACING=5")
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// badCase is one row: the command line (cmd then args; train, train-ae,
// encode, sample, train-classifier and eval rows also get their output
// flag pointing into the row's own copy of the earlier run), extra
// environment, the exit status, text the output must contain and must not
// contain.
type badCase struct {
	name string
	cmd  string
	args []string
	env  []string
	code int
	want []string
	deny []string
	// last is text the final one-line message itself must contain (the
	// flag or file it names).
	last string
	// allowNew lets a row create files it is expected to create.
	allowNew func(string) bool
}

func (fx *badFixtures) cases() []badCase {
	tr := func(name string, code int, want string, args ...string) badCase {
		return badCase{name: name, cmd: "train", args: args, code: code, want: []string{want}}
	}
	ae := func(name string, code int, want string, args ...string) badCase {
		return badCase{name: name, cmd: "train-ae", args: args, code: code, want: []string{want}}
	}
	enc := func(name string, code int, want string, args ...string) badCase {
		return badCase{name: name, cmd: "encode", args: args, code: code, want: []string{want}}
	}
	smp := func(name string, code int, last string, args ...string) badCase {
		return badCase{name: name, cmd: "sample", args: args, code: code, last: last}
	}
	cls := func(name string, code int, last string, args ...string) badCase {
		return badCase{name: name, cmd: "train-classifier", args: args, code: code, last: last}
	}
	ev := func(name string, code int, last string, args ...string) badCase {
		return badCase{name: name, cmd: "eval", args: args, code: code, last: last}
	}
	guided := func(a ...string) []string { return append([]string{"--classifier_path", fx.cls}, a...) }
	interp := func(a ...string) []string {
		return append([]string{"--classifier_path", fx.cls, "--init_cell_path", fx.h5ad, "--vae_path", fx.ae, "--cell_type", "0,1"}, a...)
	}
	genes := fx.path("ae/genes.txt")
	lat := []string{"--latents", fx.lat, "--hidden_dim", hidden}
	withLat := func(a ...string) []string { return append(append([]string{}, lat...), a...) }
	dataAE := []string{"--data_dir", fx.h5ad, "--no_labels", "--vae_path", fx.ae}
	withData := func(a ...string) []string { return append(append([]string{}, dataAE...), a...) }
	// A two-process world as torchrun describes it, less RANK; MASTER_PORT 1
	// is never reached (these rows fail before joining).
	world2 := []string{"WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=1"}
	cases := []badCase{
		// The program and its commands.
		{name: "no command", code: exitUsage, want: []string{"no command given", "COMMANDS:"}},
		{name: "unknown command", args: []string{"bogus"}, code: exitUsage, want: []string{`unknown command "bogus"`, "train-ae"}},
		{name: "unknown global flag", args: []string{"--bogus"}, code: exitUsage, want: []string{"bogus"}},
		{name: "unknown flag", cmd: "train", args: withLat("--no_such_flag", "1"), code: exitUsage, want: []string{"no_such_flag"}},
		{name: "stray argument", cmd: "train", args: withLat("extra"), code: exitUsage, want: []string{`unexpected argument "extra"`}},
		{name: "stray argument after a bool", cmd: "train", args: withLat("--use_fp16", "maybe"), code: exitUsage, want: []string{`unexpected argument "maybe"`}},
		{name: "bad bool value", cmd: "train", args: withLat("--oom_retry=maybe"), code: exitUsage, want: []string{"--oom_retry=maybe"}},
		{name: "info stray argument", cmd: "info", args: []string{"now"}, code: exitUsage, want: []string{`unexpected argument "now"`}},

		// train: inputs.
		tr("train without input", exitUsage, "--latents", "--batch_size", "8"),
		tr("train both inputs", exitUsage, "either --latents or --data_dir", "--latents", fx.lat, "--data_dir", fx.h5ad),
		tr("train data without vae", exitUsage, "--vae_path", "--data_dir", fx.h5ad),
		tr("latents missing", exitData, "--latents", "--latents", fx.path("nope.npz")),
		tr("latents empty", exitData, "--latents", "--latents", fx.empty),
		tr("latents truncated", exitData, "--latents", "--latents", fx.trLat),
		tr("latents corrupt", exitData, "--latents", "--latents", fx.text),
		tr("latents wrong kind (h5ad)", exitData, "--latents", "--latents", fx.h5ad),
		tr("latents wrong kind (directory)", exitData, "--latents", "--latents", fx.dir),
		tr("latents wrong width", exitData, "16 columns", "--latents", fx.lat16),
		tr("vae_path missing", exitData, "--vae_path", "--data_dir", fx.h5ad, "--vae_path", fx.path("nope.pt")),
		tr("vae_path empty", exitData, "empty file", "--data_dir", fx.h5ad, "--vae_path", fx.empty),
		tr("vae_path corrupt", exitData, "not a PyTorch checkpoint", "--data_dir", fx.h5ad, "--vae_path", fx.text),
		tr("vae_path truncated", exitData, "--vae_path", "--data_dir", fx.h5ad, "--vae_path", fx.trAE),
		tr("vae_path wrong kind (backbone)", exitData, "not an autoencoder", "--data_dir", fx.h5ad, "--vae_path", fx.model),
		tr("vae_path wrong kind (directory)", exitData, "is a directory", "--data_dir", fx.h5ad, "--vae_path", fx.dir),
		tr("data_dir missing", exitData, "--data_dir", "--data_dir", fx.path("nope.h5ad"), "--vae_path", fx.ae),
		tr("data_dir empty", exitData, "--data_dir", "--data_dir", fx.empty, "--vae_path", fx.ae),
		tr("data_dir truncated", exitData, "--data_dir", "--data_dir", fx.trH5ad, "--vae_path", fx.ae),
		tr("data_dir corrupt", exitData, "--data_dir", "--data_dir", fx.text, "--vae_path", fx.ae),
		tr("data_dir wrong kind (npz)", exitData, "--data_dir", "--data_dir", fx.lat, "--vae_path", fx.ae),
		tr("label_key missing", exitData, "--label_key", "--data_dir", fx.h5ad, "--label_key", "nope", "--vae_path", fx.ae),
		tr("vae for other genes", exitData, "genes", "--data_dir", fx.h5ad4k, "--vae_path", fx.ae),
		tr("resume missing", exitData, "--resume_checkpoint", withLat("--resume_checkpoint", "/nonexistent/model000100.pt")...),
		tr("resume wrong kind", exitData, "modelNNNNNN.pt", withLat("--resume_checkpoint", fx.ae)...),
		tr("resume corrupt state", exitData, "--resume_checkpoint", withLat("--resume_checkpoint", fx.resumes["corrupt_state"])...),
		tr("resume corrupt model", exitData, "not a PyTorch checkpoint", withLat("--resume_checkpoint", fx.resumes["corrupt_model"])...),
		tr("resume missing member", exitData, "opt000001.pt", withLat("--resume_checkpoint", filepath.Join(fx.resumes["missing_opt"], "model000001.pt"))...),
		tr("resume incomplete dir", exitData, "no complete checkpoint", withLat("--resume_checkpoint", fx.resumes["incomplete"])...),
		tr("resume other architecture", exitData, "--resume_checkpoint", "--latents", fx.lat, "--resume_checkpoint", fx.run),

		// train: values.
		tr("batch_size negative", exitUsage, "--batch_size -4", withLat("--batch_size", "-4")...),
		tr("batch_size not a number", exitUsage, "batch_size", withLat("--batch_size", "x")...),
		tr("batch_size above the data", exitUsage, "--batch_size 1000 exceeds", withLat("--batch_size", "1000")...),
		tr("microbatch not a number", exitUsage, "--microbatch", withLat("--microbatch", "half")...),
		tr("microbatch auto with sum", exitUsage, "--microbatch_sum", withLat("--microbatch", "auto", "--microbatch_sum")...),
		tr("lr negative", exitUsage, "--lr", withLat("--lr", "-1")...),
		tr("lr NaN", exitUsage, "--lr", withLat("--lr", "NaN")...),
		tr("weight_decay negative", exitUsage, "--weight_decay", withLat("--weight_decay", "-0.1")...),
		tr("lr_anneal_steps negative", exitUsage, "--lr_anneal_steps", withLat("--lr_anneal_steps", "-1")...),
		tr("ema_rate above 1", exitUsage, "--ema_rate", withLat("--ema_rate", "1.5")...),
		tr("log_interval zero", exitUsage, "--log_interval", withLat("--log_interval", "0")...),
		tr("save_interval zero", exitUsage, "--save_interval", withLat("--save_interval", "0")...),
		tr("seed negative", exitUsage, "seed", withLat("--seed", "-1")...),
		tr("schedule_sampler unknown", exitUsage, "--schedule_sampler", withLat("--schedule_sampler", "foo")...),
		tr("diffusion_steps zero", exitUsage, "--diffusion_steps", withLat("--diffusion_steps", "0")...),
		tr("noise_schedule unknown", exitUsage, "--noise_schedule", withLat("--noise_schedule", "quadratic")...),
		tr("precision unknown", exitUsage, "--precision", withLat("--precision", "fp8")...),
		tr("hidden_dim bad", exitUsage, "--hidden_dim", "--latents", fx.lat, "--hidden_dim", "512,x"),
		tr("fp16_scale_growth negative", exitUsage, "--fp16_scale_growth", withLat("--fp16_scale_growth", "-1")...),
		tr("device unknown", exitUsage, "--device", withLat("--device", "gpu7")...),
		tr("threads negative", exitUsage, "--threads", withLat("--threads", "-1")...),
		tr("mem_log_interval negative", exitUsage, "--mem_log_interval", withLat("--mem_log_interval", "-1")...),
		tr("cleanup_interval negative", exitUsage, "--cleanup_interval", withLat("--cleanup_interval", "-5")...),
		tr("cpu_mem_limit negative", exitUsage, "--cpu_mem_limit", withLat("--cpu_mem_limit", "-1")...),
		tr("chunk_rows zero", exitUsage, "--chunk_rows", withData("--chunk_rows", "0")...),
		tr("bn_mode unknown", exitUsage, "--bn_mode", withData("--bn_mode", "training")...),
		tr("alloc_conf garbage", exitUsage, "--alloc_conf", withLat("--alloc_conf", "garbage")...),
		tr("alloc_conf forbidden pair", exitUsage, "max_split_size_mb", withLat("--alloc_conf", "expandable_segments:True,max_split_size_mb:64")...),
		{name: "PYTORCH_CUDA_ALLOC_CONF garbage", cmd: "train", args: withLat(), env: []string{"PYTORCH_CUDA_ALLOC_CONF=garbage"}, code: exitUsage, want: []string{"PYTORCH_CUDA_ALLOC_CONF"}},
		{name: "PYTORCH_ALLOC_CONF forbidden pair", cmd: "train", args: withLat(), env: []string{"PYTORCH_ALLOC_CONF=max_split_size_mb:64,expandable_segments:True"}, code: exitUsage, want: []string{"PYTORCH_ALLOC_CONF"}},
		{name: "allocator variables disagree", cmd: "train", args: withLat(), env: []string{"PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:64", "PYTORCH_ALLOC_CONF=max_split_size_mb:128"}, code: exitUsage, want: []string{"disagree"}},
		{name: "env flag not a number", cmd: "train", args: withLat(), env: []string{"GOTORCH_BATCH_SIZE=x"}, code: exitUsage, want: []string{"GOTORCH_BATCH_SIZE"}},
		// train: data-parallel flags and the launcher's environment (all
		// refused before any process group is joined).
		tr("dist_timeout zero", exitUsage, "--dist_timeout 0", withLat("--dist_timeout", "0")...),
		tr("dist_timeout not a number", exitUsage, "dist_timeout", withLat("--dist_timeout", "soon")...),
		{name: "RANK not below WORLD_SIZE", cmd: "train", args: withLat(), env: append(world2, "RANK=2"), code: exitUsage, want: []string{"rank 2 is not below the world size 2"}},
		{name: "RANK not a number", cmd: "train", args: withLat(), env: append(world2, "RANK=first"), code: exitUsage, want: []string{`RANK="first"`}},
		{name: "WORLD_SIZE without MASTER_ADDR", cmd: "train", args: withLat(), env: []string{"WORLD_SIZE=2", "RANK=0"}, code: exitUsage, want: []string{"MASTER_ADDR is not set"}},
		{name: "MASTER_PORT not a port", cmd: "train", args: withLat(), env: []string{"WORLD_SIZE=2", "RANK=0", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=70000"}, code: exitUsage, want: []string{"MASTER_PORT 70000"}},
		{name: "Slurm without a master", cmd: "train", args: withLat(), env: []string{"SLURM_NTASKS=2", "SLURM_PROCID=0"}, code: exitUsage, want: []string{"SLURM_LAUNCH_NODE_IPADDR"}},
		{name: "global batch not divisible by the processes", cmd: "train", args: withLat("--batch_size", "7"), env: append(world2, "RANK=0"), code: exitUsage, want: []string{"--batch_size 7 is the global batch", "divisible by 2"}},
		tr("fp16 on the CPU build", exitDevice, "--use_fp16 needs a CUDA device", withLat("--use_fp16", "True")...),
		tr("cuda on the CPU build", exitDevice, "CPU flavour", withLat("--device", "cuda")...),
		{name: "startup out of memory", cmd: "train", args: []string{"--latents", fx.lat, "--cpu_mem_limit", "20"}, code: exitOOM,
			want: []string{"❌ Memory Error", "💡 Suggestions:", "🛠️ Remedies", "gotorch-train: out of memory"}},

		// train-ae.
		ae("train-ae without data", exitUsage, "--data_dir"),
		ae("train-ae data missing", exitData, "--data_dir", "--data_dir", fx.path("nope.h5ad")),
		ae("train-ae data empty", exitData, "--data_dir", "--data_dir", fx.empty),
		ae("train-ae data truncated", exitData, "--data_dir", "--data_dir", fx.trH5ad),
		ae("train-ae data corrupt", exitData, "--data_dir", "--data_dir", fx.text),
		ae("train-ae data wrong kind (npz)", exitData, "--data_dir", "--data_dir", fx.lat),
		ae("train-ae 10x needs no_labels", exitData, "--no_labels", "--data_dir", fx.tenx),
		ae("train-ae batch_size 1", exitUsage, "--batch_size", "--data_dir", fx.h5ad, "--batch_size", "1"),
		ae("train-ae max_steps 0", exitUsage, "--max_steps", "--data_dir", fx.h5ad, "--max_steps", "0"),
		ae("train-ae lr 0", exitUsage, "--lr", "--data_dir", fx.h5ad, "--lr", "0"),
		ae("train-ae checkpoint_freq 0", exitUsage, "--checkpoint_freq", "--data_dir", fx.h5ad, "--checkpoint_freq", "0"),
		ae("train-ae max_minutes negative", exitUsage, "--max_minutes", "--data_dir", fx.h5ad, "--max_minutes", "-1"),
		ae("train-ae num_genes negative", exitUsage, "--num_genes", "--data_dir", fx.h5ad, "--num_genes", "-1"),
		ae("train-ae num_genes mismatch", exitData, "--num_genes 5", "--data_dir", fx.h5ad, "--no_labels", "--num_genes", "5"),
		ae("train-ae has no auto_config", exitUsage, "auto_config", "--data_dir", fx.h5ad, "--auto_config"),
		ae("train-ae has no microbatch", exitUsage, "microbatch", "--data_dir", fx.h5ad, "--microbatch", "4"),
		ae("train-ae resume missing", exitData, "--resume_checkpoint", "--data_dir", fx.h5ad, "--no_labels", "--resume_checkpoint", fx.path("nope/model_seed=0_step=5.pt")),
		ae("train-ae resume misnamed", exitUsage, "model_seed=S_step=N.pt", "--data_dir", fx.h5ad, "--no_labels", "--resume_checkpoint", fx.text),
		ae("train-ae resume corrupt", exitData, "--resume_checkpoint", "--data_dir", fx.h5ad, "--no_labels", "--resume_checkpoint", fx.aeBad),
		ae("train-ae dist_timeout negative", exitUsage, "--dist_timeout", "--data_dir", fx.h5ad, "--dist_timeout", "-5"),
		{name: "train-ae fused under data-parallel", cmd: "train-ae", args: []string{"--data_dir", fx.h5ad, "--no_labels", "--train_step", "fused"}, env: append(world2, "RANK=1"), code: exitUsage,
			want: []string{"--train_step fused", "autograd"}},
		{name: "train-ae global batch not divisible", cmd: "train-ae", args: []string{"--data_dir", fx.h5ad, "--no_labels", "--batch_size", "9"}, env: append(world2, "RANK=0"), code: exitUsage,
			want: []string{"--batch_size 9", "divisible by 2"}},
		ae("train-ae stray argument", exitUsage, "unexpected argument", "--data_dir", fx.h5ad, "False"),
		{name: "train-ae out of memory", cmd: "train-ae", args: []string{"--data_dir", fx.h5ad, "--no_labels", "--cpu_mem_limit", "4"}, code: exitOOM,
			want: []string{"❌ Memory Error", "   2. Increase --microbatch", "train-ae has no --microbatch or --use_fp16"},
			deny: []string{") --microbatch", ") --use_fp16"}},

		// encode.
		enc("encode without data", exitUsage, "--data_dir", "--vae_path", fx.ae),
		enc("encode without vae", exitUsage, "--vae_path", "--data_dir", fx.h5ad),
		enc("encode vae corrupt", exitData, "not a PyTorch checkpoint", "--data_dir", fx.h5ad, "--vae_path", fx.text),
		{name: "plain HDF5 labels default to Y", cmd: "encode", args: []string{"--data_dir", fx.plain, "--vae_path", fx.ae}, code: exitData,
			want: []string{"--vae_path", "genes"}, deny: []string{"label"}},
		enc("encode output is a directory", exitUsage, "--output", "--data_dir", fx.h5ad, "--vae_path", fx.ae, "--output", fx.dir),
		enc("encode alloc_conf garbage", exitUsage, "--alloc_conf", "--data_dir", fx.h5ad, "--vae_path", fx.ae, "--alloc_conf", "garbage"),
		{name: "encode PYTORCH_ALLOC_CONF garbage", cmd: "encode", args: []string{"--data_dir", fx.h5ad, "--vae_path", fx.ae}, env: []string{"PYTORCH_ALLOC_CONF=garbage"}, code: exitUsage, want: []string{"PYTORCH_ALLOC_CONF"}},

		// sample (every row also gets --model_path, the earlier run's
		// model, and --sample_dir inside the row's copy of that run, whose
		// memory series and plot a failed sample must not touch).
		{name: "sample under a launcher, rank out of range", cmd: "sample", env: []string{"SLURM_NTASKS=4", "SLURM_PROCID=4", "MASTER_ADDR=node1", "MASTER_PORT=29500"}, code: exitUsage,
			want: []string{"rank 4 is not below the world size 4"}},
		smp("sample model_path missing", exitData, "--model_path", "--model_path", fx.path("nope/model000001.pt")),
		smp("sample model_path corrupt", exitData, "--model_path", "--model_path", fx.text),
		smp("sample model_path truncated", exitData, "--model_path", "--model_path", fx.trModel),
		smp("sample model_path wrong kind (autoencoder)", exitData, "--model_path", "--model_path", fx.ae),
		smp("sample model_path wrong kind (classifier)", exitData, "--model_path", "--model_path", fx.cls),
		smp("sample ema_rate absent", exitData, "--ema_rate 0.5", "--ema_rate", "0.5"),
		smp("sample hidden_dim differs", exitData, "--hidden_dim", "--hidden_dim", "512,512,256,128"),
		smp("sample num_samples zero", exitUsage, "--num_samples 0", "--num_samples", "0"),
		smp("sample batch_size negative", exitUsage, "--batch_size -1", "--batch_size", "-1"),
		smp("sample eta negative", exitUsage, "--eta", "--use_ddim", "True", "--eta", "-1"),
		smp("sample eta without ddim", exitUsage, "--use_ddim True", "--eta", "0.5"),
		smp("sample noise_weight zero", exitUsage, "--noise_weight", "--noise_weight", "0"),
		smp("sample respacing above T", exitUsage, "--timestep_respacing", "--timestep_respacing", "ddim3000"),
		smp("sample precision fp16", exitUsage, "--precision", "--precision", "fp16"),
		smp("sample bad bool value", exitUsage, "--use_ddim=maybe", "--use_ddim=maybe"),
		smp("sample stray argument", exitUsage, `unexpected argument "extra"`, "--use_ema", "False", "extra"),
		smp("sample cell_type without classifier", exitUsage, "--classifier_path", "--cell_type", "0"),
		smp("sample classifier missing", exitData, "--classifier_path", guided("--classifier_path", fx.path("nope.pt"), "--cell_type", "0")...),
		smp("sample classifier corrupt", exitData, "--classifier_path", "--classifier_path", fx.text, "--cell_type", "0"),
		smp("sample classifier wrong kind (backbone)", exitData, "--classifier_path", "--classifier_path", fx.model, "--cell_type", "0"),
		smp("sample classifier without cell_type", exitUsage, "--cell_type", guided()...),
		smp("sample cell_type out of range", exitUsage, "--cell_type 5", guided("--cell_type", "5")...),
		smp("sample cell_type unknown name", exitUsage, "no such class", guided("--cell_type", "NK cell")...),
		smp("sample num_class differs", exitData, "--num_class 3", guided("--cell_type", "0", "--num_class", "3")...),
		smp("sample classifier_scale NaN", exitUsage, "--classifier_scale", guided("--cell_type", "0", "--classifier_scale", "NaN")...),
		smp("sample one of two classifiers", exitUsage, "--classifier_path2", "--classifier_path1", fx.cls, "--cell_type", "0,1"),
		smp("sample two conditions, one class", exitUsage, "--cell_type", "--classifier_path1", fx.cls, "--classifier_path2", fx.cls, "--cell_type", "1"),
		smp("sample weight bad", exitUsage, "--weight", "--classifier_path1", fx.cls, "--classifier_path2", fx.cls, "--cell_type", "0,1", "--weight", "7"),
		smp("sample interpolation without vae", exitUsage, "--vae_path", "--classifier_path", fx.cls, "--init_cell_path", fx.h5ad, "--cell_type", "0,1"),
		smp("sample init_time above T", exitUsage, "--init_time", interp("--init_time", "1000")...),
		smp("sample interp_start below init_time", exitUsage, "--interp_start", interp("--interp_start", "10")...),
		smp("sample init_cell_path missing", exitData, "--init_cell_path", interp("--init_cell_path", fx.path("nope.h5ad"))...),
		smp("sample init_cell_path corrupt", exitData, "--init_cell_path", interp("--init_cell_path", fx.text)...),
		smp("sample init_cell_path without the label", exitData, "--label_key", interp("--label_key", "nope")...),
		smp("sample init_cell_path other genes", exitData, "--init_cell_path", interp("--init_cell_path", fx.h5ad4k)...),
		smp("sample vae_path missing", exitData, "--vae_path", "--vae_path", fx.path("nope/model_seed=0_step=1.pt")),
		smp("sample vae_path without genes", exitData, "--genes", "--vae_path", fx.text),
		smp("sample vae_path corrupt", exitData, "--vae_path", "--vae_path", fx.text, "--genes", genes),
		smp("sample vae_path truncated", exitData, "--vae_path", "--vae_path", fx.trAE, "--genes", genes),
		smp("sample genes differ", exitData, "genes", "--vae_path", fx.ae, "--genes", filepath.Join(fx.run, "genes.txt")),
		smp("sample genes missing", exitData, "--genes", "--vae_path", fx.ae, "--genes", fx.path("nope.txt")),
		smp("sample num_gene differs", exitData, "--num_gene 5", "--vae_path", fx.ae, "--num_gene", "5"),
		smp("sample bn_ref without vae_path", exitUsage, "--vae_path", "--bn_ref", fx.lat),
		smp("sample bn_ref with running statistics", exitUsage, "--bn_mode running", "--vae_path", fx.ae, "--bn_ref", fx.lat, "--bn_mode", "running"),
		smp("sample bn_ref missing", exitData, "--bn_ref", "--vae_path", fx.ae, "--bn_ref", fx.path("nope.npz")),
		smp("sample bn_ref corrupt", exitData, "--bn_ref", "--vae_path", fx.ae, "--bn_ref", fx.text),
		smp("sample sample_dir inside a file", exitUsage, "--sample_dir", "--sample_dir", filepath.Join(fx.text, "s")),
		smp("sample alloc_conf garbage", exitUsage, "--alloc_conf", "--alloc_conf", "garbage"),
		smp("sample cuda on the CPU build", exitDevice, "CPU flavour", "--device", "cuda"),

		// train-classifier (every row also gets --model_path, the row's
		// copy of the earlier run, whose files a failed run must not touch).
		cls("train-classifier without input", exitUsage, "--latents"),
		{name: "train-classifier microbatch under data-parallel", cmd: "train-classifier", args: []string{"--latents", fx.lat, "--batch_size", "8", "--microbatch", "2"}, env: append(world2, "RANK=1"), code: exitUsage,
			want: []string{"--microbatch 2", "each of the 2 processes computes its 4 rows of --batch_size 8"}},
		{name: "train-classifier global batch not divisible", cmd: "train-classifier", args: []string{"--latents", fx.lat, "--batch_size", "9"}, env: append(world2, "RANK=0"), code: exitUsage,
			want: []string{"--batch_size 9 is the global batch", "divisible by 2"}},
		cls("train-classifier both inputs", exitUsage, "either --latents", "--latents", fx.lat, "--data_dir", fx.h5ad),
		cls("train-classifier data without vae", exitUsage, "--vae_path", "--data_dir", fx.h5ad),
		cls("train-classifier data without labels", exitUsage, "--no_labels", "--data_dir", fx.h5ad, "--vae_path", fx.ae, "--no_labels"),
		cls("train-classifier latents missing", exitData, "--latents", "--latents", fx.path("nope.npz")),
		cls("train-classifier latents truncated", exitData, "--latents", "--latents", fx.trLat),
		cls("train-classifier latents corrupt", exitData, "--latents", "--latents", fx.text),
		cls("train-classifier latents unlabelled", exitData, "no labels array", "--latents", fx.lat16),
		cls("train-classifier latent_dim differs", exitData, "--latent_dim is 64", "--latents", fx.lat, "--latent_dim", "64"),
		cls("train-classifier val_latents unlabelled", exitData, "--val_latents", "--latents", fx.lat, "--val_latents", fx.lat16),
		cls("train-classifier label_key missing", exitData, "--label_key", "--data_dir", fx.h5ad, "--vae_path", fx.ae, "--label_key", "nope"),
		cls("train-classifier vae for other genes", exitData, "genes", "--data_dir", fx.h5ad4k, "--vae_path", fx.ae),
		cls("train-classifier vae_path corrupt", exitData, "--vae_path", "--data_dir", fx.h5ad, "--vae_path", fx.text),
		cls("train-classifier num_class negative", exitUsage, "--num_class", "--latents", fx.lat, "--num_class", "-1"),
		cls("train-classifier num_class below the labels", exitData, "--num_class 1", "--latents", fx.lat, "--num_class", "1"),
		cls("train-classifier hidden_dim short", exitUsage, "--hidden_dim", "--latents", fx.lat, "--hidden_dim", "512,256"),
		cls("train-classifier batch_size 1", exitUsage, "--batch_size", "--latents", fx.lat, "--batch_size", "1"),
		cls("train-classifier batch_size above the data", exitUsage, "--batch_size 1000 exceeds", "--latents", fx.lat, "--batch_size", "1000"),
		cls("train-classifier microbatch 1", exitUsage, "--microbatch", "--latents", fx.lat, "--microbatch", "1"),
		cls("train-classifier dropout 1", exitUsage, "--dropout", "--latents", fx.lat, "--dropout", "1"),
		cls("train-classifier start_guide_time above T", exitUsage, "--start_guide_time", "--latents", fx.lat, "--start_guide_time", "2000"),
		cls("train-classifier schedule_sampler unknown", exitUsage, "--schedule_sampler", "--latents", fx.lat, "--schedule_sampler", "importance"),
		cls("train-classifier fp16", exitUsage, "--classifier_use_fp16", "--latents", fx.lat, "--classifier_use_fp16", "True"),
		cls("train-classifier resume missing", exitData, "--resume_checkpoint", "--latents", fx.lat, "--resume_checkpoint", fx.path("nope/model000003.pt")),
		cls("train-classifier resume misnamed", exitData, "--resume_checkpoint", "--latents", fx.lat, "--resume_checkpoint", fx.text),
		cls("train-classifier resume corrupt model", exitData, "--resume_checkpoint", "--latents", fx.lat, "--resume_checkpoint", fx.resumes["corrupt_model"]),
		cls("train-classifier resume incomplete dir", exitData, "no complete checkpoint", "--latents", fx.lat, "--resume_checkpoint", fx.resumes["incomplete"]),
		cls("train-classifier resume other model", exitData, "--resume_checkpoint", "--latents", fx.lat, "--resume_checkpoint", fx.run),
		cls("train-classifier stray argument", exitUsage, `unexpected argument "False"`, "--latents", fx.lat, "--noised", "False", "False"),
		{name: "train-classifier out of memory", cmd: "train-classifier", args: []string{"--latents", fx.lat, "--cpu_mem_limit", "1"}, code: exitOOM,
			want: []string{"❌ Memory Error", "train-classifier has no --use_fp16", "gotorch-train: out of memory"}},

		// eval (every row also gets --output inside the row's copy of the
		// earlier run).
		ev("eval without real", exitUsage, "--real", "--generated", fx.lat, "--vae_path", fx.ae),
		ev("eval without generated", exitUsage, "--generated", "--real", fx.h5ad),
		ev("eval real missing", exitData, "nope.h5ad", "--real", fx.path("nope.h5ad"), "--generated", fx.lat, "--vae_path", fx.ae),
		ev("eval real corrupt", exitData, "notes.pt", "--real", fx.text, "--generated", fx.lat, "--vae_path", fx.ae),
		ev("eval generated missing", exitData, "nope.npz", "--real", fx.h5ad, "--generated", fx.path("nope.npz"), "--vae_path", fx.ae),
		ev("eval generated truncated", exitData, "truncated.npz", "--real", fx.h5ad, "--generated", fx.trLat, "--vae_path", fx.ae),
		ev("eval latents without vae", exitUsage, "--vae_path", "--real", fx.h5ad, "--generated", fx.lat),
		ev("eval vae_path corrupt", exitData, "--vae_path", "--real", fx.h5ad, "--generated", fx.lat, "--vae_path", fx.text),
		ev("eval real_values unknown", exitUsage, "--real_values", "--real", fx.h5ad, "--generated", fx.lat, "--vae_path", fx.ae, "--real_values", "tpm"),
		ev("eval plot not svg", exitUsage, "--plot", "--real", fx.h5ad, "--generated", fx.lat, "--vae_path", fx.ae, "--plot", fx.path("x.png")),
		ev("eval n_pcs 1", exitUsage, "--n_pcs", "--real", fx.h5ad, "--generated", fx.lat, "--vae_path", fx.ae, "--n_pcs", "1"),
		ev("eval stray argument", exitUsage, `unexpected argument "extra"`, "--real", fx.h5ad, "extra"),

		// info.
		{name: "info forbidden allocator pair", cmd: "info", args: []string{"--alloc_conf", "expandable_segments:True,max_split_size_mb:64"}, code: exitUsage, want: []string{"max_split_size_mb"}},
		{name: "info PYTORCH_CUDA_ALLOC_CONF garbage", cmd: "info", env: []string{"PYTORCH_CUDA_ALLOC_CONF=expandable_segments:maybe"}, code: exitUsage, want: []string{"PYTORCH_CUDA_ALLOC_CONF"}},
		{name: "info threads negative", cmd: "info", args: []string{"--threads", "-3"}, code: exitUsage, want: []string{"--threads"}},
	}
	return cases
}

// TestBadInvocations drives the command through a table of bad command
// lines: each must end with a one-line message and the documented exit
// status, never a Go panic, and must leave every existing file as it was
// (the row's own copy of an earlier run it is pointed at, and the shared
// inputs).
func TestBadInvocations(t *testing.T) {
	fx := newBadFixtures(t)
	cases := fx.cases()
	if len(cases) < 40 {
		t.Fatalf("only %d rows", len(cases))
	}
	shared := hashTree(t, fx.dir)
	t.Run("rows", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
				t.Parallel()
				row := t.TempDir()
				save := filepath.Join(row, "runs")
				if err := copyTree(fx.run, filepath.Join(save, "m")); err != nil {
					t.Fatal(err)
				}
				output := filepath.Join(save, "m", "latents.npz")
				if b, err := os.ReadFile(fx.lat); err != nil || os.WriteFile(output, b, 0o644) != nil {
					t.Fatal("copying latents", err)
				}
				before := hashTree(t, row)
				args := []string{}
				if tc.cmd != "" {
					args = append(args, tc.cmd)
				}
				args = append(args, tc.args...)
				// The row's own copy of the earlier run, unless the row
				// names the flag itself.
				def := func(flag, value string) {
					if !slices.Contains(tc.args, flag) {
						args = append(args, flag, value)
					}
				}
				switch tc.cmd {
				case "train":
					def("--save_dir", save)
					def("--model_name", "m")
				case "train-ae":
					def("--save_dir", filepath.Join(save, "m"))
				case "encode":
					def("--output", output)
				case "sample":
					def("--model_path", fx.model)
					def("--sample_dir", filepath.Join(save, "m", "s"))
				case "train-classifier":
					def("--model_path", filepath.Join(save, "m"))
				case "eval":
					def("--output", filepath.Join(save, "m", "metrics.json"))
				}
				code, out := runBinary(t, tc.env, args...)
				lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
				last := lines[len(lines)-1]
				switch {
				case code != tc.code:
					t.Errorf("exit %d, want %d", code, tc.code)
				case strings.Contains(out, "panic") || strings.Contains(out, "goroutine "):
					t.Errorf("a Go panic")
				case !strings.HasPrefix(last, "gotorch-train: "):
					t.Errorf("the last line is not the one-line error message")
				case pkgPrefix.MatchString(strings.TrimPrefix(last, "gotorch-train: ")):
					t.Errorf("the message carries a Go package prefix")
				}
				if !strings.Contains(last, tc.last) {
					t.Errorf("the message does not name %q", tc.last)
				}
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("output lacks %q", w)
					}
				}
				for _, d := range tc.deny {
					if strings.Contains(out, d) {
						t.Errorf("output contains %q", d)
					}
				}
				if ch := treeChanges(before, hashTree(t, row), tc.allowNew); len(ch) > 0 {
					t.Errorf("a failed run touched files: %v", ch)
				}
				if t.Failed() {
					t.Logf("gotorch-train %s\n%s", strings.Join(args, " "), out)
				}
			})
		}
	})
	if ch := treeChanges(shared, hashTree(t, fx.dir), nil); len(ch) > 0 {
		t.Errorf("failed runs touched the shared inputs: %v", ch)
	}
}
