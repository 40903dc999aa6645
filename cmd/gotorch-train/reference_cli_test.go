package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/classifier"
	"github.com/scdiffusion/gotorch-train/cellunet/trainer"
)

// parsed runs the command line through the real parsing path (prepareArgs,
// the flags and their checks, the stray-argument check) with the command's
// action replaced by one that records the configuration the real action
// would build from it.
type parsed struct {
	train    trainer.Config
	ae       autoencoder.TrainConfig
	cls      classifier.TrainConfig
	numClass int // train-classifier's --num_class
	sample   *samplePlan
	flags    map[string]string
	auto     bool
	called   bool
}

func parseLine(t *testing.T, line []string) (parsed, int, string) {
	t.Helper()
	var p parsed
	var out bytes.Buffer
	app := newApp(&out, &out)
	record := func(c *cli.Context) {
		p.called = true
		p.flags = map[string]string{}
		for _, n := range []string{"data_dir", "vae_path", "latents", "label_key", "model_path", "sample_dir", "use_ema"} {
			if f := c.Command.VisibleFlags(); slices.ContainsFunc(f, func(f cli.Flag) bool { return slices.Contains(f.Names(), n) }) {
				p.flags[n] = fmt.Sprint(c.Value(n))
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
		case "train-classifier":
			cmd.Action = noArgs(func(c *cli.Context) error {
				record(c)
				var err error
				p.cls, p.numClass, err = classifierConfig(c)
				return err
			})
		case "sample":
			cmd.Action = noArgs(func(c *cli.Context) error {
				record(c)
				var err error
				p.sample, err = planSample(c)
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
// lines (single or double quotes, no escapes), and replaces the
// reference's program name with ours: VAE_train.py → gotorch-train
// train-ae, cell_train.py → gotorch-train train, classifier_train.py →
// gotorch-train train-classifier, cell_sample.py and classifier_sample.py
// → gotorch-train sample.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	var quote rune
	inWord := false
	for _, r := range line {
		switch {
		case quote == 0 && (r == '\'' || r == '"'):
			quote, inWord = r, true
		case r == quote:
			quote = 0
		case r == ' ' && quote == 0:
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
	case "classifier_train.py":
		words = append([]string{"gotorch-train", "train-classifier"}, words[1:]...)
	case "cell_sample.py", "classifier_sample.py":
		words = append([]string{"gotorch-train", "sample"}, words[1:]...)
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

// TestReferenceSamplingCommandLines feeds classifier_train.py,
// cell_sample.py and classifier_sample.py command lines in the reference's
// spellings (train.sh's classifier line; the sampling scripts' argparse
// flags, spec §6–7, with --cell_type for the condition the reference sets
// in its __main__) and checks the parsed configuration.
func TestReferenceSamplingCommandLines(t *testing.T) {
	// train.sh: the classifier of the Open Problems data (22 classes).
	p, code, out := parseLine(t, shellWords(`classifier_train.py --data_dir 'X.h5ad' --model_path "output/checkpoint/classifier/open_problem_classifier" --iterations 400000 --vae_path 'checkpoint/AE/open_problem/model_seed=0_step=150000.pt' --num_class 22`))
	if code != exitOK || !p.called {
		t.Fatalf("classifier_train.py line: exit %d\n%s", code, out)
	}
	want := classifier.DefaultTrainConfig(22) // classifier_train.py's defaults
	want.Iterations = 400000
	want.SaveDir = "output/checkpoint/classifier/open_problem_classifier"
	if c := p.cls; c.LR != 3e-4 || c.WeightDecay != 0 || c.AnnealLR || c.BatchSize != 128 || c.Microbatch != -1 || c.ScheduleSampler != "uniform" ||
		c.StartGuideTime != 500 || !c.Noised || c.LogInterval != 100 || c.EvalInterval != 100 || c.SaveInterval != 100000 ||
		c.Model.InputDim != 128 || fmt.Sprint(c.Model.Hidden) != "[512 512 256 128]" || c.Model.Dropout != 0.1 ||
		c.Diffusion.Steps != 1000 || c.Diffusion.Schedule != "linear" || c.Resume != "" {
		t.Errorf("classifier_train.py line: %+v", c)
	}
	p.cls.Model.NumClass = int64(p.numClass) // the command sets it from --num_class once the data is read
	if p.numClass != 22 || !reflect.DeepEqual(p.cls, want) {
		t.Errorf("classifier_train.py line parsed to\n%+v (num_class %d)\nwant\n%+v", p.cls, p.numClass, want)
	}
	if p.flags["data_dir"] != "X.h5ad" || p.flags["vae_path"] != "checkpoint/AE/open_problem/model_seed=0_step=150000.pt" {
		t.Errorf("classifier_train.py line: inputs %v", p.flags)
	}
	// Every classifier_train.py flag we take, in its argparse spelling
	// (str2bool booleans with values), and the older --classifier_dir.
	p, code, out = parseLine(t, shellWords(`classifier_train.py --data_dir 'X.h5ad' --val_latents 'val.npz' --noised False --iterations 500000 --lr 3e-4 --weight_decay 0.0 --anneal_lr True --batch_size 128 --microbatch -1 --schedule_sampler uniform --resume_checkpoint '' --log_interval 100 --eval_interval 100 --save_interval 100000 --vae_path 'ae.pt' --latent_dim 128 --classifier_dir 'cls' --start_guide_time 500 --hidden_dim 512,512,256,128 --classifier_use_fp16 False --dropout 0.1 --num_class 12 --diffusion_steps 1000 --noise_schedule linear`))
	if code != exitOK || !p.called {
		t.Fatalf("classifier_train.py, all flags: exit %d\n%s", code, out)
	}
	want = classifier.DefaultTrainConfig(12)
	want.Noised, want.AnnealLR, want.SaveDir = false, true, "cls"
	if !reflect.DeepEqual(p.cls, want) || p.numClass != 12 || p.flags["model_path"] != "cls" {
		t.Errorf("classifier_train.py, all flags, parsed to\n%+v (num_class %d)\nwant\n%+v", p.cls, p.numClass, want)
	}
	if _, code, out = parseLine(t, shellWords(`classifier_train.py --latents 'l.npz' --classifier_use_fp16 True`)); code != exitUsage || !strings.Contains(out, "--classifier_use_fp16") {
		t.Errorf("--classifier_use_fp16 True: exit %d\n%s", code, out)
	}

	// cell_sample.py: unconditional, the reference's defaults spelled out.
	p, code, out = parseLine(t, shellWords(`cell_sample.py --model_path 'output/checkpoint/backbone/open_problem/model800000.pt' --sample_dir 'output/simulated_samples/open_problem' --num_samples 12000 --batch_size 3000 --use_ddim False --clip_denoised False --timestep_respacing '' --hidden_dim 512,512,256,128 --diffusion_steps 1000 --noise_schedule linear`))
	if code != exitOK || !p.called {
		t.Fatalf("cell_sample.py line: exit %d\n%s", code, out)
	}
	if s := p.sample; s.mode != modeUncond || s.numSamples != 12000 || s.batchSize != 3000 || s.ddim || s.clip || s.diff.Respacing != "" ||
		s.diff.Steps != 1000 || s.diff.Schedule != "linear" || s.prefix != "output/simulated_samples/open_problem" || s.decode || s.bf16 ||
		s.noiseWeight != 0.5 || s.eta != 0 || s.seed != 1234 {
		t.Errorf("cell_sample.py line: %+v", *s)
	}
	if p.flags["model_path"] != "output/checkpoint/backbone/open_problem/model800000.pt" || p.flags["use_ema"] != "true" {
		t.Errorf("cell_sample.py line: flags %v", p.flags)
	}
	// DDIM (which the reference's scripts crash on, spec §9) in every
	// boolean spelling, and the raw weights as the reference samples them.
	for _, spelling := range []string{"--use_ddim True", "--use_ddim", "--use_ddim=true", "--use_ddim yes", "--use_ddim 1"} {
		p, code, out = parseLine(t, shellWords(`cell_sample.py --model_path 'm.pt' `+spelling+` --timestep_respacing ddim50 --use_ema False --clip_denoised True`))
		if code != exitOK || !p.sample.ddim || p.sample.diff.Respacing != "ddim50" || !p.sample.clip || p.flags["use_ema"] != "false" {
			t.Errorf("%s: exit %d, plan %+v, flags %v\n%s", spelling, code, p.sample, p.flags, out)
		}
	}

	// classifier_sample.py, one condition: its defaults, and clip_denoised
	// True by default when guided.
	for _, line := range []string{
		`classifier_sample.py --model_path 'output/diffusion_checkpoint/muris_diffusion/model000000.pt' --classifier_path 'output/classifier_checkpoint/classifier_muris/model000100.pt' --num_samples 9000 --batch_size 3000 --clip_denoised True --use_ddim False --classifier_scale 2 --start_guide_steps 500 --filter False --num_class 12 --sample_dir 'output/simulated_samples/muris' --cell_type 2`,
		`classifier_sample.py --model_path 'output/diffusion_checkpoint/muris_diffusion/model000000.pt' --classifier_path 'output/classifier_checkpoint/classifier_muris/model000100.pt' --num_samples 9000 --sample_dir 'output/simulated_samples/muris' --cell_type 2`,
	} {
		p, code, out = parseLine(t, shellWords(line))
		if code != exitOK || !p.called {
			t.Fatalf("classifier_sample.py line: exit %d\n%s", code, out)
		}
		if s := p.sample; s.mode != modeClass || !s.clip || s.scale != 2 || s.guideStart != 500 || s.filter || s.numSamples != 9000 || s.batchSize != 3000 ||
			!reflect.DeepEqual(s.cellTypes, []string{"2"}) || !reflect.DeepEqual(s.clsPaths, []string{"output/classifier_checkpoint/classifier_muris/model000100.pt"}) ||
			s.prefix != "output/simulated_samples/muris" || s.ddim {
			t.Errorf("classifier_sample.py line %q: %+v", line, *s)
		}
	}
	// Two conditions (cond_fn_multi): two classifiers, their class counts
	// and scales.
	p, code, out = parseLine(t, shellWords(`classifier_sample.py --model_path 'm.pt' --classifier_path1 'type/model200000.pt' --classifier_path2 'organ/model200000.pt' --num_class1 2 --num_class2 2 --classifier_scale1 2 --classifier_scale2 1.5 --cell_type 0,1 --filter True`))
	if code != exitOK || !p.called {
		t.Fatalf("two conditions: exit %d\n%s", code, out)
	}
	if s := p.sample; s.mode != modeMulti || s.scales != [2]float64{2, 1.5} || !s.filter || !reflect.DeepEqual(s.cellTypes, []string{"0", "1"}) ||
		!reflect.DeepEqual(s.clsPaths, []string{"type/model200000.pt", "organ/model200000.pt"}) || !s.clip {
		t.Errorf("two conditions: %+v", *s)
	}
	// Gradient interpolation (cond_fn_inter) with the reference's ae_dir,
	// num_gene, init_time and init_cell_path; weights (10-i, i).
	p, code, out = parseLine(t, shellWords(`classifier_sample.py --model_path 'm.pt' --classifier_path 'c.pt' --ae_dir 'output/Autoencoder_checkpoint/WOT/model_seed=0_step=150000.pt' --num_gene 19423 --init_time 600 --init_cell_path 'data/WOT/filted_data.h5ad' --cell_type 6,7 --weight 7,3 --start_guide_steps 500`))
	if code != exitOK || !p.called {
		t.Fatalf("interpolation: exit %d\n%s", code, out)
	}
	if s := p.sample; s.mode != modeInterp || s.initTime != 600 || s.interpStart != 600 || s.weights != [2]float64{7, 3} ||
		s.scales != [2]float64{1.4, 0.6} || !s.decode ||
		s.genesPath != "output/Autoencoder_checkpoint/WOT/genes.txt" || p.flags["vae_path"] != "output/Autoencoder_checkpoint/WOT/model_seed=0_step=150000.pt" {
		t.Errorf("interpolation: %+v, flags %v", *s, p.flags)
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
