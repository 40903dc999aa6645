package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/classifier"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

func newTrainClassifierCommand() *cli.Command {
	return &cli.Command{
		Name:  "train-classifier",
		Usage: "train the noisy-latent Cell_classifier for guided sampling (classifier_train.py)",
		Description: "Latents and labels come from --latents (an .npz from encode, with labels) or from --data_dir plus\n" +
			"--vae_path (encoded in memory; labels from --label_key). Each step noises a batch at t < start_guide_time\n" +
			"and takes one AdamW step on the cross-entropy. Checkpoints model/opt{step:06d}.pt (torch.save format, the\n" +
			"reference's names) and a state sidecar go to --model_path, with classes.txt, progress.csv and the memory\n" +
			"series. Ctrl-C or SIGTERM finishes the current step, writes a checkpoint and exits 0; --resume_checkpoint\n" +
			"DIR (or modelNNNNNN.pt) continues exactly.\n\n" + exitStatusHelp,
		Flags: slices.Concat(dataFlags(), encodeFlags(), []cli.Flag{
			&cli.StringFlag{Name: "latents", Usage: "latent `FILE` (.npz with cell_gen [N,128] and labels) instead of --data_dir/--vae_path", EnvVars: env("latents"), Category: catData},
			&cli.StringFlag{Name: "val_latents", Usage: "held-out latent `FILE` (.npz with labels): one noised batch is evaluated every eval_interval steps (the reference's val_data_dir)", EnvVars: env("val_latents"), Category: catData},
			&cli.StringFlag{Name: "model_path", Aliases: []string{"classifier_dir"}, Value: "output/classifier_checkpoint/classifier", Usage: "checkpoint `DIR`", EnvVars: env("model_path"), Category: catTrain},
			&cli.IntFlag{Name: "num_class", Usage: "number of classes (0: from the data's classes)", EnvVars: env("num_class"), Category: catModel,
				Action: intAtLeast("num_class", 0)},
			&cli.StringFlag{Name: "hidden_dim", Value: "512,512,256,128", Usage: "classifier widths `E,H1,H2[,...]` (entries after the third are unused, as in the reference)", EnvVars: env("hidden_dim"), Category: catModel,
				Action: parsedBy("hidden_dim", "at least three positive widths separated by commas, e.g. 512,512,256,128", parseClassifierHidden)},
			&cli.IntFlag{Name: "latent_dim", Value: 128, Usage: "latent width (must match the latents)", EnvVars: env("latent_dim"), Category: catModel,
				Action: intAtLeast("latent_dim", 1)},
			&cli.Float64Flag{Name: "dropout", Value: 0.1, Usage: "dropout after every activation in training", EnvVars: env("dropout"), Category: catModel,
				Action: floatAtLeast("dropout", 0, false)},
			&cli.IntFlag{Name: "iterations", Value: 500000, Usage: "training `STEPS` (labels 0..iterations-1)", EnvVars: env("iterations"), Category: catTrain,
				Action: intAtLeast("iterations", 1)},
			&cli.IntFlag{Name: "batch_size", Value: 128, Usage: "cells per step (at least 2: train-mode BatchNorm)", EnvVars: env("batch_size"), Category: catTrain,
				Action: intAtLeast("batch_size", 2)},
			&cli.IntFlag{Name: "microbatch", Value: -1, Usage: "cells per forward/backward (-1: the whole batch; else at least 2); BatchNorm then sees each slice", EnvVars: env("microbatch"), Category: catMemory},
			&cli.Float64Flag{Name: "lr", Value: 3e-4, Usage: "AdamW learning rate", EnvVars: env("lr"), Category: catTrain,
				Action: floatAtLeast("lr", 0, false)},
			&cli.Float64Flag{Name: "weight_decay", Value: 0.0, Usage: "AdamW weight decay", EnvVars: env("weight_decay"), Category: catTrain,
				Action: floatAtLeast("weight_decay", 0, false)},
			&cli.BoolFlag{Name: "anneal_lr", Usage: "anneal the learning rate linearly to 0 over the iterations", EnvVars: env("anneal_lr"), Category: catTrain},
			&cli.StringFlag{Name: "schedule_sampler", Value: "uniform", Usage: "timestep sampler: uniform or loss-second-moment (never updated by classifier training, so uniform too)", EnvVars: env("schedule_sampler"), Category: catTrain,
				Action: oneOf("schedule_sampler", "uniform", "loss-second-moment")},
			&cli.IntFlag{Name: "start_guide_time", Value: 500, Usage: "train at noise levels t < `T` (guidance is applied there)", EnvVars: env("start_guide_time"), Category: catTrain,
				Action: intAtLeast("start_guide_time", 1)},
			&cli.BoolFlag{Name: "noised", Value: true, Usage: "train on noised latents (--noised False: clean latents at t = 0)", EnvVars: env("noised"), Category: catTrain},
			&cli.IntFlag{Name: "log_interval", Value: 100, Usage: "progress line every `STEPS`", EnvVars: env("log_interval"), Category: catTrain,
				Action: intAtLeast("log_interval", 1)},
			&cli.IntFlag{Name: "eval_interval", Value: 100, Usage: "validation batch every `STEPS` (with --val_latents)", EnvVars: env("eval_interval"), Category: catTrain,
				Action: intAtLeast("eval_interval", 1)},
			&cli.IntFlag{Name: "save_interval", Value: 100000, Usage: "checkpoint every `STEPS` (and at the last step)", EnvVars: env("save_interval"), Category: catTrain,
				Action: intAtLeast("save_interval", 1)},
			&cli.StringFlag{Name: "resume_checkpoint", Usage: "continue after `PATH`: a checkpoint directory (newest complete) or modelNNNNNN.pt; empty: start afresh", EnvVars: env("resume_checkpoint"), Category: catTrain},
			&cli.Uint64Flag{Name: "seed", Value: 1234, Usage: "random seed", EnvVars: env("seed"), Category: catTrain},
			&cli.IntFlag{Name: "diffusion_steps", Value: 1000, Usage: "diffusion `T`", EnvVars: env("diffusion_steps"), Category: catModel,
				Action: intBetween("diffusion_steps", 1, 100000)},
			&cli.StringFlag{Name: "noise_schedule", Value: "linear", Usage: "linear or cosine", EnvVars: env("noise_schedule"), Category: catModel,
				Action: oneOf("noise_schedule", "linear", "cosine")},
			&cli.BoolFlag{Name: "classifier_use_fp16", Usage: "the reference's fp16 flag; only False is supported (the classifier is small and trains in float32)", EnvVars: env("classifier_use_fp16"), Category: catMemory},
		}, memoryFlags("--model_path"), runtimeFlags(), distFlags()),
		Action: runTrainClassifier,
	}
}

// parseClassifierHidden checks --hidden_dim for the classifier: at least
// the three widths it uses.
func parseClassifierHidden(v string) error {
	h, err := cellunet.ParseHidden(v)
	if err == nil && len(h) < 3 {
		err = fmt.Errorf("%d widths", len(h))
	}
	return err
}

// classifierConfig turns the flags into the training configuration; it
// reads no file and checks every value (usage errors). numClass is
// --num_class (0: from the data; the configuration then holds 1 until the
// data is read).
func classifierConfig(c *cli.Context) (cfg classifier.TrainConfig, numClass int, err error) {
	if err := parseClassifierHidden(c.String("hidden_dim")); err != nil {
		return cfg, 0, usagef("--hidden_dim %q: want at least three positive widths separated by commas, e.g. 512,512,256,128", c.String("hidden_dim"))
	}
	hidden, _ := cellunet.ParseHidden(c.String("hidden_dim"))
	if c.Bool("classifier_use_fp16") {
		return cfg, 0, usagef("--classifier_use_fp16 True is not supported: the classifier trains in float32 (--classifier_use_fp16 False)")
	}
	numClass = c.Int("num_class")
	cfg = classifier.DefaultTrainConfig(max(int64(numClass), 1))
	cfg.Model.InputDim = int64(c.Int("latent_dim"))
	cfg.Model.Hidden = hidden
	cfg.Model.Dropout = c.Float64("dropout")
	cfg.Diffusion = diffusion.Config{Steps: c.Int("diffusion_steps"), Schedule: c.String("noise_schedule")}
	cfg.ScheduleSampler = c.String("schedule_sampler")
	cfg.StartGuideTime = c.Int("start_guide_time")
	cfg.Noised = c.Bool("noised")
	cfg.Seed = c.Uint64("seed")
	cfg.BatchSize, cfg.Microbatch = c.Int("batch_size"), c.Int("microbatch")
	cfg.LR, cfg.WeightDecay, cfg.AnnealLR = c.Float64("lr"), c.Float64("weight_decay"), c.Bool("anneal_lr")
	cfg.Iterations = c.Int("iterations")
	cfg.LogInterval, cfg.EvalInterval, cfg.SaveInterval = c.Int("log_interval"), c.Int("eval_interval"), c.Int("save_interval")
	cfg.SaveDir = c.String("model_path")
	cfg.Resume = c.String("resume_checkpoint")
	switch {
	case cfg.SaveDir == "":
		return cfg, 0, usagef("--model_path DIR is required: the checkpoint folder")
	case cfg.Model.Dropout >= 1:
		return cfg, 0, usagef("--dropout %v: must be below 1", cfg.Model.Dropout)
	case cfg.Microbatch == 0 || cfg.Microbatch == 1 || cfg.Microbatch < -1:
		return cfg, 0, usagef("--microbatch %d: want -1 (the whole batch) or at least 2 (train-mode BatchNorm needs 2 cells per slice)", cfg.Microbatch)
	case cfg.StartGuideTime > cfg.Diffusion.Steps:
		return cfg, 0, usagef("--start_guide_time %d: must be at most --diffusion_steps %d", cfg.StartGuideTime, cfg.Diffusion.Steps)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, 0, usageError{err}
	}
	if _, err := diffusion.NewSchedule(cfg.Diffusion); err != nil {
		return cfg, 0, usageError{err}
	}
	return cfg, numClass, nil
}

// checkClassifierInputs checks that the inputs are given coherently and
// that a checkpoint to resume from exists, before anything is loaded.
func checkClassifierInputs(c *cli.Context, root bool) error {
	lat, data := c.String("latents"), c.String("data_dir")
	switch {
	case lat == "" && data == "":
		return usagef("no input: give --latents FILE.npz (from encode, with labels), or --data_dir FILE with --vae_path AE.pt")
	case lat != "" && data != "":
		return usagef("give either --latents or --data_dir with --vae_path, not both")
	case data != "" && c.String("vae_path") == "":
		return usagef("--data_dir needs --vae_path AE.pt (the autoencoder that encodes it), or give --latents FILE.npz instead")
	case data != "" && c.Bool("no_labels"):
		return usagef("the classifier learns the labels: drop --no_labels (name the label column with --label_key)")
	}
	// Only rank 0 of a data-parallel run reads the checkpoint.
	if r := c.String("resume_checkpoint"); r != "" && root {
		if err := classifier.CheckResume(r); err != nil {
			return flagErr("resume_checkpoint", err)
		}
	}
	return nil
}

func runTrainClassifier(c *cli.Context) error {
	// Everything the flags alone decide is checked before any file is read;
	// nothing is written before the data and any checkpoint are loaded.
	cfg, numClass, err := classifierConfig(c)
	if err != nil {
		return err
	}
	// The launcher's environment (torchrun, srun, a PyTorchJob), before the
	// device: --device cuda becomes this process's GPU.
	dr, err := newDistRun(c, cfg.BatchSize)
	if err != nil {
		return err
	}
	if n := cfg.BatchSize / dr.world.Size; dr.world.Distributed() && cfg.Microbatch > 0 && cfg.Microbatch < n {
		return usagef("--microbatch %d: each of the %d processes computes its %d rows of --batch_size %d in one pass (BatchNorm sees the global batch); drop --microbatch, or raise --batch_size only as memory allows",
			cfg.Microbatch, dr.world.Size, n, cfg.BatchSize)
	}
	if err := checkClassifierInputs(c, dr.root()); err != nil {
		return err
	}
	dev, err := setup(c)
	if err != nil {
		return err
	}
	cfg.Device = dev
	raw := io.Writer(c.App.Writer)
	out := dr.logOut(raw) // rank 0 logs; the other ranks print memory lines and errors
	printHeader(out)
	prog := newProgress(out, "train-classifier", cfg.Iterations)
	defer prog.done()
	out = prog
	cfg.Out = out
	mem, err := newMemory(c, dev, memoryRun{batchSize: cfg.BatchSize, microbatch: cfg.Microbatch, command: "train-classifier",
		unavailable: []string{"--use_fp16"}, out: dr.memWriter(out, raw), rank: dr.world.Rank})
	if err != nil {
		return err
	}
	defer mem.close()
	var vae *autoencoder.Model
	if c.String("latents") == "" {
		if vae, err = openVAE(c, dev); err != nil { // before the data: a bad checkpoint fails at once
			return err
		}
	}

	var res classifier.Result
	err = dr.result(mem.guard(func() error {
		lat, classes, err := loadLabelledLatents(c, out, dev, "latents", vae)
		if err != nil {
			return err
		}
		k := int64(len(classes))
		if k == 0 {
			k = lat.maxLabel + 1
		}
		switch {
		case numClass == 0:
			cfg.Model.NumClass = k
		case int64(numClass) < lat.maxLabel+1:
			return dataErr(fmt.Errorf("--num_class %d but the labels go up to %d (%d classes in the data)", numClass, lat.maxLabel, k))
		}
		if lat.n < cfg.BatchSize {
			return usagef("--batch_size %d exceeds the %d cells of the input (the last incomplete batch is dropped, so no batch would remain)", cfg.BatchSize, lat.n)
		}
		train, err := lat.upload(dev)
		if err != nil {
			return err
		}
		defer train.Latents.Free()
		defer train.Labels.Free()
		var val *classifier.Data
		if p := c.String("val_latents"); p != "" {
			vl, _, err := loadLabelledLatents(c, out, dev, "val_latents", nil)
			if err != nil {
				return err
			}
			if vl.maxLabel >= cfg.Model.NumClass {
				return flagErr("val_latents", fmt.Errorf("%s: label %d outside the %d classes", p, vl.maxLabel, cfg.Model.NumClass))
			}
			if vl.n < cfg.BatchSize {
				return flagErr("val_latents", fmt.Errorf("%s has %d cells, fewer than --batch_size %d", p, vl.n, cfg.BatchSize))
			}
			v, err := vl.upload(dev)
			if err != nil {
				return err
			}
			defer v.Latents.Free()
			defer v.Labels.Free()
			val = &v
		}
		cfg.AfterStep = func(step int) {
			mem.afterStep(step)
			prog.step(step)
		}
		// Everything is valid and loaded, any checkpoint restored: only now
		// are files created or changed.
		cfg.BeforeRun = func() error {
			if err := os.MkdirAll(cfg.SaveDir, 0o755); err != nil {
				return err
			}
			if err := mem.start(cfg.SaveDir, cfg.Resume != ""); err != nil {
				return err
			}
			if len(classes) > 0 && dr.root() {
				return writeLines(filepath.Join(cfg.SaveDir, "classes.txt"), classes)
			}
			return nil
		}
		if cfg.Comm, err = dr.join(out, dev, cfg.BatchSize); err != nil {
			return err
		}
		defer cfg.Comm.Close()
		res, err = classifier.Train(c.Context, cfg, train, val)
		var re *classifier.ResumeError
		switch {
		case errors.As(err, &re):
			return flagErr("resume_checkpoint", err)
		case errors.Is(err, classifier.ErrData):
			return dataErr(err)
		}
		return err
	}))
	switch {
	case errors.Is(err, classifier.ErrInterrupted) && res.Checkpoint == "":
		fmt.Fprintln(out, "interrupted before the first step: no checkpoint written")
		return nil
	case errors.Is(err, classifier.ErrInterrupted):
		fmt.Fprintf(out, "interrupted after step %d: checkpoint %s written; continue with --resume_checkpoint %s\n",
			res.NextStep-1, res.Checkpoint, cfg.SaveDir)
		return nil
	case err != nil:
		return err
	}
	fmt.Fprintf(out, "classifier trained: %d steps in %.1fs (%.1f steps/s); checkpoint %s\n", res.Steps, res.Duration.Seconds(),
		float64(res.Steps)/res.Duration.Seconds(), res.Checkpoint)
	return nil
}

// labelled is a host latent table with one label per row.
type labelled struct {
	data     []float32 // [n·dim]
	labels   []int64
	n, dim   int
	maxLabel int64
}

func (l *labelled) upload(dev ct.Device) (classifier.Data, error) {
	var d classifier.Data
	err := ct.Try(func() {
		x := ct.FromSlice(l.data, int64(l.n), int64(l.dim))
		y := ct.FromSlice(l.labels)
		d = classifier.Data{Latents: x, Labels: y}
		if dev.IsCUDA() {
			d = classifier.Data{Latents: x.To(dev, 0), Labels: y.To(dev, 0)}
			x.Free()
			y.Free()
		}
	})
	return d, err
}

// loadLabelledLatents reads the latent file named by flag (latents or
// val_latents) or, for "latents" without it, preprocesses --data_dir and
// encodes it with the autoencoder vae (from openVAE; closed here). Every
// row must have a label.
func loadLabelledLatents(c *cli.Context, out io.Writer, dev ct.Device, flag string, vae *autoencoder.Model) (*labelled, []string, error) {
	var l labelled
	var classes []string
	if p := c.String(flag); p != "" {
		f, err := npz.ReadLatents(p)
		if err != nil {
			return nil, nil, flagErr(flag, err)
		}
		if f.Labels == nil {
			return nil, nil, flagErr(flag, fmt.Errorf("%s has no labels array: encode it from data with a label column (encode --label_key)", p))
		}
		if f.N == 0 {
			return nil, nil, flagErr(flag, fmt.Errorf("%s: cell_gen has no rows", p))
		}
		fmt.Fprintf(out, "%s: %s, %d cells, %d classes\n", flag, p, f.N, len(f.Classes))
		l = labelled{data: f.Data, labels: f.Labels, n: f.N, dim: f.Dim}
		classes = f.Classes
	} else {
		pp, err := loadData(c, out)
		if err != nil {
			vae.Close()
			return nil, nil, err
		}
		if len(pp.Labels) != pp.X.Rows {
			vae.Close()
			return nil, nil, flagErr("data_dir", fmt.Errorf("%s has no labels: name the label column with --label_key", c.String("data_dir")))
		}
		labels, classes0 := pp.Labels, pp.Classes
		lat, err := encodeLatents(c, out, dev, pp, vae)
		if err != nil {
			return nil, nil, err
		}
		l = labelled{data: lat, labels: labels, n: len(labels), dim: len(lat) / max(len(labels), 1)}
		classes = classes0
	}
	if l.dim != c.Int("latent_dim") {
		return nil, nil, flagErr(flag, fmt.Errorf("the latents have %d columns, --latent_dim is %d", l.dim, c.Int("latent_dim")))
	}
	l.maxLabel = -1
	for i, y := range l.labels {
		if y < 0 || (classes != nil && y >= int64(len(classes))) {
			return nil, nil, flagErr(flag, fmt.Errorf("label %d of cell %d outside the %d classes", y, i, len(classes)))
		}
		l.maxLabel = max(l.maxLabel, y)
	}
	return &l, classes, nil
}
