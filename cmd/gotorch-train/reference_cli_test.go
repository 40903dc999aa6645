package main

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/trainer"
)

// parsed runs the command line through the real parsing path (prepareArgs,
// the flags and their checks, the stray-argument check) with the command's
// action replaced by one that records the configuration the real action
// would build from it.
type parsed struct {
	train  trainer.Config
	ae     autoencoder.TrainConfig
	flags  map[string]string
	auto   bool
	called bool
}

func parseLine(t *testing.T, line []string) (parsed, int, string) {
	t.Helper()
	var p parsed
	var out bytes.Buffer
	app := newApp(&out, &out)
	record := func(c *cli.Context) {
		p.called = true
		p.flags = map[string]string{}
		for _, n := range []string{"data_dir", "vae_path", "latents", "label_key"} {
			if c.Command.HasName("train") || n == "data_dir" || n == "label_key" {
				p.flags[n] = c.String(n)
			}
		}
	}
	for _, cmd := range app.Commands {
		switch cmd.Name {
		case "train":
			cmd.Action = noArgs(func(c *cli.Context) error {
				record(c)
				var err error
				p.train, p.auto, err = trainConfig(c)
				return err
			})
		case "train-ae":
			cmd.Action = noArgs(func(c *cli.Context) error {
				record(c)
				var err error
				p.ae, err = aeConfig(c, int64(c.Int("num_genes")))
				return err
			})
		}
	}
	args, err := prepareArgs(app, line)
	if err == nil {
		err = app.RunContext(context.Background(), args)
	}
	if err != nil {
		out.WriteString("gotorch-train: " + userMessage(err) + "\n")
	}
	return p, exitCode(err), out.String()
}

// shellWords splits a command line the way the shell would for these
// lines (single quotes, no escapes), and replaces the reference's program
// name with ours: VAE_train.py → gotorch-train train-ae, cell_train.py →
// gotorch-train train.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	quoted, inWord := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	switch words[0] {
	case "VAE_train.py":
		words = append([]string{"gotorch-train", "train-ae"}, words[1:]...)
	case "cell_train.py":
		words = append([]string{"gotorch-train", "train"}, words[1:]...)
	}
	return words
}

// TestReferenceCommandLines feeds the reference scripts' own command lines
// (scdiffusion.md: VAE_train.py and cell_train.py as train.sh runs them)
// and checks the parsed configuration field by field.
func TestReferenceCommandLines(t *testing.T) {
	// VAE_train.py --data_dir 'X.h5ad' --num_genes 13431 --save_dir '../output/checkpoint/AE/open_problem' --max_steps 200000
	p, code, out := parseLine(t, shellWords(`VAE_train.py --data_dir 'X.h5ad' --num_genes 13431 --save_dir '../output/checkpoint/AE/open_problem' --max_steps 200000`))
	if code != exitOK || !p.called {
		t.Fatalf("VAE_train.py line: exit %d\n%s", code, out)
	}
	wantAE := autoencoder.DefaultTrainConfig(13431)
	wantAE.SaveDir = "../output/checkpoint/AE/open_problem"
	wantAE.MaxSteps = 200000
	wantAE.MaxDuration = 3000 * 60 * 1e9
	wantAE.Step = "auto" // --train_step's default
	if !reflect.DeepEqual(p.ae, wantAE) {
		t.Errorf("VAE_train.py line parsed to\n%+v\nwant\n%+v", p.ae, wantAE)
	}
	// The reference's values (scdiffusion.md §5), spelled out.
	if a := p.ae; a.Model.Genes != 13431 || a.LR != 5e-4 || a.WeightDecay != 0.01 || a.BatchSize != 128 || a.CheckpointFreq != 50000 ||
		a.MaxDuration.Minutes() != 3000 || a.MaxSteps != 200000 || a.SaveDir != "../output/checkpoint/AE/open_problem" || a.Resume != "" {
		t.Errorf("VAE_train.py line: %+v", a)
	}
	if p.flags["data_dir"] != "X.h5ad" || p.flags["label_key"] != "" {
		t.Errorf("VAE_train.py line: data_dir %q label_key %q", p.flags["data_dir"], p.flags["label_key"])
	}

	// cell_train.py --data_dir 'X.h5ad' --vae_path '...model_seed=0_step=150000.pt' --model_name 'open_problem' --lr_anneal_steps 800000 --save_dir 'output/checkpoint/backbone'
	p, code, out = parseLine(t, shellWords(`cell_train.py --data_dir 'X.h5ad' --vae_path 'output/checkpoint/AE/open_problem/model_seed=0_step=150000.pt' --model_name 'open_problem' --lr_anneal_steps 800000 --save_dir 'output/checkpoint/backbone'`))
	if code != exitOK || !p.called {
		t.Fatalf("cell_train.py line 1: exit %d\n%s", code, out)
	}
	want := trainer.DefaultConfig() // the reference's cell_train.py defaults with train.sh's 800,000 updates
	want.SaveDir = "output/checkpoint/backbone/open_problem"
	want.OOMRetry = true // gotorch-train's --oom_retry, on by default
	checkTrain(t, "cell_train.py line 1", p.train, want)
	if p.flags["data_dir"] != "X.h5ad" || p.flags["vae_path"] != "output/checkpoint/AE/open_problem/model_seed=0_step=150000.pt" || p.flags["latents"] != "" {
		t.Errorf("cell_train.py line 1: inputs %v", p.flags)
	}

	// cell_train.py --data_dir 'X.h5ad' --vae_path 'ae.pt' --use_fp16 False --microbatch -1 --ema_rate 0.9999 --resume_checkpoint '' --fp16_scale_growth 1e-3
	line := `cell_train.py --data_dir 'X.h5ad' --vae_path 'ae.pt' --use_fp16 False --microbatch -1 --ema_rate 0.9999 --resume_checkpoint '' --fp16_scale_growth 1e-3`
	p, code, out = parseLine(t, shellWords(line))
	if code != exitOK || !p.called {
		t.Fatalf("cell_train.py line 2: exit %d\n%s", code, out)
	}
	want = trainer.DefaultConfig()
	want.SaveDir = "output/checkpoint/backbone" // --save_dir output/checkpoint, --model_name backbone
	want.OOMRetry = true
	checkTrain(t, "cell_train.py line 2", p.train, want)
	if p.flags["vae_path"] != "ae.pt" || p.auto {
		t.Errorf("cell_train.py line 2: vae_path %q, auto microbatch %v", p.flags["vae_path"], p.auto)
	}

	// Every spelling of a boolean, and the fp16 answer on the CPU build.
	for _, spelling := range [][]string{{"--use_fp16", "True"}, {"--use_fp16"}, {"--use_fp16=true"}, {"--use_fp16", "yes"}, {"--use_fp16", "1"}, {"-use_fp16", "Y"}} {
		p, code, out = parseLine(t, append([]string{"gotorch-train", "train", "--latents", "x.npz"}, spelling...))
		if code != exitOK || p.train.Precision != trainer.FP16 {
			t.Errorf("%v: exit %d, precision %s\n%s", spelling, code, p.train.Precision, out)
		}
	}
	for _, spelling := range [][]string{{"--use_fp16", "False"}, {"--use_fp16=false"}, {"--use_fp16", "no"}, {"--use_fp16", "0"}, {"--use_fp16=F"}, {}} {
		p, code, out = parseLine(t, append([]string{"gotorch-train", "train", "--latents", "x.npz", "--batch_size", "7"}, spelling...))
		if code != exitOK || p.train.Precision != trainer.FP32 || p.train.BatchSize != 7 {
			t.Errorf("%v: exit %d, precision %s, batch %d (a flag after the boolean must still count)\n%s", spelling, code, p.train.Precision, p.train.BatchSize, out)
		}
	}
	if p, code, _ = parseLine(t, []string{"gotorch-train", "train", "--latents", "x.npz", "--oom_retry", "False", "--microbatch_sum", "yes"}); code != exitOK || p.train.OOMRetry || !p.train.SumMicrobatchGrads {
		t.Errorf("--oom_retry False --microbatch_sum yes: exit %d, OOMRetry %v, sum %v", code, p.train.OOMRetry, p.train.SumMicrobatchGrads)
	}
	// A value of another flag that reads like a boolean stays that value.
	if p, code, _ = parseLine(t, []string{"gotorch-train", "train", "--latents", "x.npz", "--model_name", "yes", "--use_fp16", "no"}); code != exitOK || !strings.HasSuffix(p.train.SaveDir, "/yes") {
		t.Errorf("--model_name yes: exit %d, save dir %q", code, p.train.SaveDir)
	}
	if !isCUDABuild() {
		code, out := run(t, context.Background(), strings.Fields("train --data_dir X.h5ad --vae_path ae.pt --use_fp16 True")...)
		if code != exitDevice || !strings.Contains(out, "--use_fp16 needs a CUDA device") || !strings.Contains(out, "CPU flavour") {
			t.Errorf("--use_fp16 True on the CPU build: exit %d\n%s", code, out)
		}
	}
}

func checkTrain(t *testing.T, what string, got, want trainer.Config) {
	t.Helper()
	// The reference's values (scdiffusion.md §2–3), spelled out.
	if got.LR != 1e-4 || got.WeightDecay != 1e-4 || got.BatchSize != 128 || got.Microbatch != -1 || !reflect.DeepEqual(got.EMARates, []float64{0.9999}) ||
		got.LogInterval != 100 || got.SaveInterval != 200000 || got.ScaleGrowth != 1e-3 || got.Precision != trainer.FP32 ||
		got.LRAnnealSteps != 800000 || got.Diffusion.Steps != 1000 || got.Diffusion.Schedule != "linear" || got.ScheduleSampler != "uniform" ||
		got.SumMicrobatchGrads || got.ResumeCheckpoint != "" {
		t.Errorf("%s: %+v", what, got)
	}
	if !reflect.DeepEqual(got, want) {
		gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
		for i := 0; i < gv.NumField(); i++ {
			name := gv.Type().Field(i).Name
			if name == "Hooks" || name == "Out" {
				continue
			}
			if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
				t.Errorf("%s: %s = %+v, want %+v", what, name, gv.Field(i).Interface(), wv.Field(i).Interface())
			}
		}
	}
}

// TestUserMessage: errors reach the user on one line, without the Go
// package prefixes of the libraries, nested ones included.
func TestUserMessage(t *testing.T) {
	for in, want := range map[string]string{
		"monitor: out of memory (host): CPU out of memory":                       "out of memory (host): CPU out of memory",
		"--resume_checkpoint: trainer: resume: cgotorch: load: x.pt: bad":        "--resume_checkpoint: resume: load: x.pt: bad",
		"--data_dir: a.h5ad: /obs (scdata: nested): x\nsecond line":              "--data_dir: a.h5ad: /obs (nested): x second line",
		"--vae_path: autoencoder: ptfile: x.pt: not a PyTorch checkpoint; nn: y": "--vae_path: x.pt: not a PyTorch checkpoint; y",
		"the file nn.pt: fine": "the file nn.pt: fine",
	} {
		if got := userMessage(errors.New(in)); got != want {
			t.Errorf("userMessage(%q) = %q, want %q", in, got, want)
		}
	}
}
