package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// TestMain doubles as the command when GOTORCH_E2E_MAIN is set, so the
// interrupt test can send a real SIGINT to a child process.
func TestMain(m *testing.M) {
	if os.Getenv("GOTORCH_E2E_MAIN") != "" {
		main()
		return
	}
	code := m.Run()
	removeModels()
	os.Exit(code)
}

// run executes the CLI in-process and returns its exit code and output.
func run(t *testing.T, ctx context.Context, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := mainRun(ctx, append([]string{"gotorch-train"}, args...), &out, &out)
	return code, out.String()
}

func pbmc(t *testing.T) string {
	return filepath.Join(cgotorchtest.DataDir(t), "format_fixtures", "anndata_0.8_written", "pbmc4k_top2000_counts_csr_gzip.h5ad")
}

// TestPipeline runs train-ae → encode → train on the bundled PBMC data with
// short step counts and checks every produced file.
func TestPipeline(t *testing.T) {
	dir := t.TempDir()
	data := pbmc(t)
	ae := filepath.Join(dir, "ae")
	code, out := run(t, context.Background(), "train-ae", "--data_dir", data, "--save_dir", ae,
		"--max_steps", "12", "--checkpoint_freq", "6", "--log_interval", "6", "--mem_log_interval", "6", "--threads", "2")
	if code != exitOK {
		t.Fatalf("train-ae exit %d:\n%s", code, out)
	}
	for _, f := range []string{"model_seed=0_step=0.pt", "model_seed=0_step=6.pt", "model_seed=0_step=11.pt", "genes.txt", "classes.txt", "memory.jsonl", "memory.svg"} {
		if _, err := os.Stat(filepath.Join(ae, f)); err != nil {
			t.Errorf("train-ae did not write %s", f)
		}
	}
	genes, _ := readLines(filepath.Join(ae, "genes.txt"))
	classes, _ := readLines(filepath.Join(ae, "classes.txt"))
	if len(genes) != 1989 || len(classes) != 8 {
		t.Errorf("genes.txt %d lines (want 1989), classes.txt %d (want 8)", len(genes), len(classes))
	}
	if !strings.Contains(out, "Step 0: CPU: ") || !strings.Contains(out, "Memory cleanup completed") {
		t.Errorf("train-ae output lacks the memory lines:\n%s", out)
	}
	for _, want := range []string{"gotorch-train " + version + " (commit", "allocator: configured", "Memory summary: ", "Cleanup: ", "Warnings: "} {
		if !strings.Contains(out, want) {
			t.Errorf("train-ae output lacks the header or the end-of-run summary (%q):\n%s", want, out)
		}
	}

	lat := filepath.Join(dir, "latents.npz")
	code, out = run(t, context.Background(), "encode", "--data_dir", data, "--vae_path", filepath.Join(ae, "model_seed=0_step=11.pt"), "--output", lat, "--chunk_rows", "1000")
	if code != exitOK {
		t.Fatalf("encode exit %d:\n%s", code, out)
	}
	l, err := npz.ReadLatents(lat)
	if err != nil {
		t.Fatal(err)
	}
	if l.N != 4271 || l.Dim != 128 || len(l.Labels) != 4271 || len(l.Classes) != 8 {
		t.Fatalf("latents N %d dim %d labels %d classes %d", l.N, l.Dim, len(l.Labels), len(l.Classes))
	}
	var norm float64
	for _, v := range l.Data[:128] {
		norm += float64(v) * float64(v)
	}
	if norm < 0.9999 || norm > 1.0001 {
		t.Errorf("latent row norm² %v, want 1", norm)
	}

	save := filepath.Join(dir, "ckpt")
	code, out = run(t, context.Background(), "train", "--latents", lat, "--save_dir", save, "--model_name", "m",
		"--batch_size", "64", "--lr_anneal_steps", "30", "--save_interval", "20", "--log_interval", "10", "--mem_log_interval", "10", "--cleanup_interval", "20")
	if code != exitOK {
		t.Fatalf("train exit %d:\n%s", code, out)
	}
	run := filepath.Join(save, "m")
	for _, f := range []string{"model000000.pt", "ema_0.9999_000000.pt", "opt000000.pt", "state000000.safetensors",
		"model000020.pt", "model000030.pt", "ema_0.9999_000030.pt", "opt000030.pt", "progress.csv", "memory.jsonl", "memory.svg", "classes.txt"} {
		if _, err := os.Stat(filepath.Join(run, f)); err != nil {
			t.Errorf("train did not write %s", f)
		}
	}
	sd, err := ct.LoadPT(filepath.Join(run, "model000030.pt"), ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if len(sd) != 52 {
		t.Errorf("model file has %d tensors, want 52", len(sd))
	}
	ct.FreeAll(sd)
	csv, _ := os.ReadFile(filepath.Join(run, "progress.csv"))
	if lines := strings.Count(string(csv), "\n"); lines != 4 { // header + steps 0, 10, 20
		t.Errorf("progress.csv has %d lines:\n%s", lines, csv)
	}
	series, _ := os.ReadFile(filepath.Join(run, "memory.jsonl"))
	var first map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(string(series), "\n", 2)[0]), &first); err != nil || first["rss_bytes"] == nil {
		t.Errorf("memory.jsonl first record %v (%v)", first, err)
	}
	svg, _ := os.ReadFile(filepath.Join(run, "memory.svg"))
	if !bytes.HasPrefix(bytes.TrimSpace(svg), []byte("<svg")) && !bytes.Contains(svg[:min(200, len(svg))], []byte("<svg")) {
		t.Errorf("memory.svg is not an SVG")
	}
	for _, want := range []string{"Step 10: CPU: ", "step 20 samples 1344", "trained 30 steps", "Memory summary: 3 samples"} {
		if !strings.Contains(out, want) {
			t.Errorf("train output lacks %q:\n%s", want, out)
		}
	}
}

// TestInterruptAndResume: SIGINT during train writes a checkpoint and exits
// 0; --resume_checkpoint continues to the end.
func TestInterruptAndResume(t *testing.T) {
	dir := t.TempDir()
	lat := filepath.Join(dir, "lat.npz")
	// Latents do not need an autoencoder: any unit rows will do.
	g := make([]float32, 512*128)
	for i := range g {
		g[i] = float32((i*7919)%13-6) / 30
	}
	if err := npz.WriteLatents(lat, g, 512, 128, nil, nil); err != nil {
		t.Fatal(err)
	}
	save := filepath.Join(dir, "ckpt")
	args := []string{"train", "--latents", lat, "--save_dir", save, "--model_name", "m", "--batch_size", "32",
		"--lr_anneal_steps", "100000", "--save_interval", "100000", "--log_interval", "5", "--mem_log_interval", "5", "--threads", "1"}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "GOTORCH_E2E_MAIN=1")
	cmd.Stderr = cmd.Stdout
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	var out strings.Builder
	sc := bufio.NewScanner(pipe)
	signalled := false
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if !signalled && strings.HasPrefix(sc.Text(), "step 10 samples") {
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			signalled = true
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("interrupted train exited with %v:\n%s", err, out.String())
	}
	var last int
	if i := strings.Index(out.String(), "interrupted after step "); i < 0 {
		t.Fatalf("no interrupt message:\n%s", out.String())
	} else {
		fmt.Sscanf(out.String()[i:], "interrupted after step %d", &last)
	}
	run1 := filepath.Join(save, "m")
	if _, err := os.Stat(filepath.Join(run1, fmt.Sprintf("state%06d.safetensors", last))); err != nil {
		t.Fatalf("no checkpoint for step %d: %v\n%s", last, err, out.String())
	}
	// Resume: 10 more updates to the new end, from the interrupt checkpoint.
	resume := append(append([]string{}, args...), "--resume_checkpoint", run1, "--lr_anneal_steps", fmt.Sprint(last+11))
	code, res := run(t, context.Background(), resume...)
	if code != exitOK || !strings.Contains(res, fmt.Sprintf("at step %d", last+1)) || !strings.Contains(res, "trained 10 steps") {
		t.Fatalf("resume exit %d:\n%s", code, res)
	}
	if _, err := os.Stat(filepath.Join(run1, fmt.Sprintf("model%06d.pt", last+11))); err != nil {
		t.Errorf("no final checkpoint after resuming: %v", err)
	}
	// The resumed run continued the memory series instead of restarting it.
	series, err := os.ReadFile(filepath.Join(run1, "memory.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var steps []int
	for _, line := range strings.Split(strings.TrimSpace(string(series)), "\n") {
		var rec struct{ Step int }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("memory.jsonl line %q: %v", line, err)
		}
		steps = append(steps, rec.Step)
	}
	if len(steps) < 3 || steps[0] != 0 || steps[len(steps)-1] <= last || !slices.IsSorted(steps) {
		t.Errorf("memory.jsonl after the resume holds steps %v; want the first run's from 0 then the resumed run's beyond %d", steps, last)
	}
}

// TestMicrobatchAuto: --microbatch auto runs the pre-flight probe and
// trains with the microbatch it chose (the A6 warning and the OOM report
// point to it).
func TestMicrobatchAuto(t *testing.T) {
	dir := t.TempDir()
	lat := filepath.Join(dir, "lat.npz")
	g := make([]float32, 128*128)
	for i := range g {
		g[i] = float32((i*7919)%13-6) / 30
	}
	if err := npz.WriteLatents(lat, g, 128, 128, nil, nil); err != nil {
		t.Fatal(err)
	}
	code, out := run(t, context.Background(), "train", "--latents", lat, "--save_dir", dir, "--model_name", "m", "--hidden_dim", "32,32,16,8",
		"--batch_size", "16", "--microbatch", "auto", "--lr_anneal_steps", "2", "--threads", "1")
	if code != exitOK || !strings.Contains(out, "Pre-flight: ") || !strings.Contains(out, "microbatch auto: microbatch ") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestHelpShowsDefaultsAndExitCodes(t *testing.T) {
	code, out := run(t, context.Background(), "train", "--help")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--batch_size value", "(default: 128)", "--cleanup_interval", "(default: 1000)", "$GOTORCH_BATCH_SIZE", "EXIT STATUS", "4  out of memory",
		"default: --save_dir/--model_name/memory.jsonl", "default: --save_dir/--model_name/memory.svg", "(default: off; on with --auto_config on a GPU and with --microbatch auto)",
		"--fp16_scale_growth value", "(default: 0.001)", "--microbatch SIZE", `(default: "-1")`, "--use_fp16 True"} {
		if !strings.Contains(out, want) {
			t.Errorf("train help lacks %q", want)
		}
	}
	code, out = run(t, context.Background(), "train-ae", "--help")
	if code != exitOK || !strings.Contains(out, "default: --save_dir/memory.jsonl") || strings.Contains(out, "   --auto_config ") || strings.Contains(out, "   --preflight ") {
		t.Errorf("train-ae help (exit %d): wrong memory defaults or plan flags it ignores:\n%s", code, out)
	}
	code, out = run(t, context.Background(), "--version")
	if code != exitOK || !strings.HasPrefix(out, "gotorch-train "+version+" (commit ") || !strings.Contains(out, "libtorch "+ct.Build().TorchVersion) || !strings.Contains(out, "go1.") {
		t.Errorf("--version (exit %d): %q", code, out)
	}
	code, out = run(t, context.Background(), "info")
	if code != exitOK || !strings.Contains(out, "libtorch: ") || !strings.Contains(out, "NVML: ") || !strings.Contains(out, "allocator: configured") {
		t.Errorf("info exit %d:\n%s", code, out)
	}
	fmt.Fprint(os.Stderr, "")
}

func isCUDABuild() bool { return ct.Build().CUDA }
