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
			&cli.IntFlag{Name: "num_class", Usage: "number of classes (0: from the data's classes)", EnvVars: env("num_class"), Category: catModel},
			&cli.StringFlag{Name: "hidden_dim", Value: "512,512,256,128", Usage: "classifier widths `E,H1,H2[,...]` (entries after the third are unused, as in the reference)", EnvVars: env("hidden_dim"), Category: catModel},
			&cli.IntFlag{Name: "latent_dim", Value: 128, Usage: "latent width (must match the latents)", EnvVars: env("latent_dim"), Category: catModel},
			&cli.Float64Flag{Name: "dropout", Value: 0.1, Usage: "dropout after every activation in training", EnvVars: env("dropout"), Category: catModel},
			&cli.IntFlag{Name: "iterations", Value: 500000, Usage: "training `STEPS` (labels 0..iterations-1)", EnvVars: env("iterations"), Category: catTrain},
			&cli.IntFlag{Name: "batch_size", Value: 128, Usage: "cells per step", EnvVars: env("batch_size"), Category: catTrain},
			&cli.IntFlag{Name: "microbatch", Value: -1, Usage: "cells per forward/backward (-1: the whole batch); BatchNorm then sees each slice", EnvVars: env("microbatch"), Category: catMemory},
			&cli.Float64Flag{Name: "lr", Value: 3e-4, Usage: "AdamW learning rate", EnvVars: env("lr"), Category: catTrain},
			&cli.Float64Flag{Name: "weight_decay", Value: 0.0, Usage: "AdamW weight decay", EnvVars: env("weight_decay"), Category: catTrain},
			&cli.BoolFlag{Name: "anneal_lr", Usage: "anneal the learning rate linearly to 0 over the iterations", EnvVars: env("anneal_lr"), Category: catTrain},
			&cli.StringFlag{Name: "schedule_sampler", Value: "uniform", Usage: "timestep sampler: uniform or loss-second-moment (never updated by classifier training, so uniform too)", EnvVars: env("schedule_sampler"), Category: catTrain},
			&cli.IntFlag{Name: "start_guide_time", Value: 500, Usage: "train at noise levels t < `T` (guidance is applied there)", EnvVars: env("start_guide_time"), Category: catTrain},
			&cli.BoolFlag{Name: "noised", Value: true, Usage: "train on noised latents (False: clean latents at t = 0)", EnvVars: env("noised"), Category: catTrain},
			&cli.IntFlag{Name: "log_interval", Value: 100, Usage: "progress line every `STEPS`", EnvVars: env("log_interval"), Category: catTrain},
			&cli.IntFlag{Name: "eval_interval", Value: 100, Usage: "validation batch every `STEPS` (with --val_latents)", EnvVars: env("eval_interval"), Category: catTrain},
			&cli.IntFlag{Name: "save_interval", Value: 100000, Usage: "checkpoint every `STEPS` (and at the last step)", EnvVars: env("save_interval"), Category: catTrain},
			&cli.StringFlag{Name: "resume_checkpoint", Usage: "continue after `PATH`: a checkpoint directory (newest complete) or modelNNNNNN.pt", EnvVars: env("resume_checkpoint"), Category: catTrain},
			&cli.Uint64Flag{Name: "seed", Value: 1234, Usage: "random seed", EnvVars: env("seed"), Category: catTrain},
			&cli.IntFlag{Name: "diffusion_steps", Value: 1000, Usage: "diffusion `T`", EnvVars: env("diffusion_steps"), Category: catModel},
			&cli.StringFlag{Name: "noise_schedule", Value: "linear", Usage: "linear or cosine", EnvVars: env("noise_schedule"), Category: catModel},
			&cli.BoolFlag{Name: "classifier_use_fp16", Usage: "the reference's fp16 flag; only False is supported (the classifier is small)", EnvVars: env("classifier_use_fp16"), Category: catMemory},
		}, memoryFlags(), runtimeFlags()),
		Action: runTrainClassifier,
	}
}

func runTrainClassifier(c *cli.Context) error {
	out := c.App.Writer
	// Everything the flags alone decide is checked before any file is read
	// or written.
	if err := noArgs(c); err != nil {
		return err
	}
	hidden, err := cellunet.ParseHidden(c.String("hidden_dim"))
	if err != nil {
		return usagef("--hidden_dim %q: want at least three positive widths separated by commas", c.String("hidden_dim"))
	}
	if c.Bool("classifier_use_fp16") {
		return usagef("--classifier_use_fp16 True is not supported: the classifier trains in float32")
	}
	numClass := c.Int("num_class")
	if numClass < 0 {
		return usagef("--num_class must be >= 0 (0: from the data), got %d", numClass)
	}
	cfg := classifier.DefaultTrainConfig(max(int64(numClass), 1))
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
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	if _, err := diffusion.NewSchedule(cfg.Diffusion); err != nil {
		return usageError{err}
	}
	if cfg.Resume != "" {
		if _, err := os.Stat(cfg.Resume); err != nil {
			return dataErr(fmt.Errorf("--resume_checkpoint %s: %w", cfg.Resume, err))
		}
	}
	dev, err := setup(c)
	if err != nil {
		return err
	}
	cfg.Device = dev

	lat, classes, err := loadLabelledLatents(c, out, dev, "latents")
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
		return dataErr(fmt.Errorf("the data has %d cells, fewer than --batch_size %d", lat.n, cfg.BatchSize))
	}
	train, err := lat.upload(dev)
	if err != nil {
		return err
	}
	defer train.Latents.Free()
	defer train.Labels.Free()
	var val *classifier.Data
	if p := c.String("val_latents"); p != "" {
		vl, _, err := loadLabelledLatents(c, out, dev, "val_latents")
		if err != nil {
			return err
		}
		if vl.maxLabel >= cfg.Model.NumClass {
			return dataErr(fmt.Errorf("--val_latents %s: label %d outside the %d classes", p, vl.maxLabel, cfg.Model.NumClass))
		}
		if vl.n < cfg.BatchSize {
			return dataErr(fmt.Errorf("--val_latents %s has %d cells, fewer than --batch_size %d", p, vl.n, cfg.BatchSize))
		}
		v, err := vl.upload(dev)
		if err != nil {
			return err
		}
		defer v.Latents.Free()
		defer v.Labels.Free()
		val = &v
	}

	if len(classes) > 0 {
		if err := writeLines(filepath.Join(cfg.SaveDir, "classes.txt"), classes); err != nil {
			return err
		}
	}
	prog := newProgress(out, "train-classifier", cfg.Iterations)
	defer prog.done()
	out = prog
	cfg.Out = out
	mem, err := newMemory(c, dev, memoryRun{batchSize: cfg.BatchSize, microbatch: cfg.Microbatch, saveDir: cfg.SaveDir, out: out})
	if err != nil {
		return err
	}
	defer mem.close()
	cfg.AfterStep = func(step int) {
		mem.afterStep(step)
		prog.step(step)
	}
	var res classifier.Result
	err = mem.guard(func() error {
		var err error
		res, err = classifier.Train(c.Context, cfg, train, val)
		return err
	})
	switch {
	case errors.Is(err, classifier.ErrInterrupted) && res.Checkpoint == "":
		fmt.Fprintln(out, "interrupted before the first step: no checkpoint written")
		return nil
	case errors.Is(err, classifier.ErrInterrupted):
		fmt.Fprintf(out, "interrupted after step %d: checkpoint %s written; continue with --resume_checkpoint %s\n",
			res.NextStep-1, res.Checkpoint, cfg.SaveDir)
		return nil
	case errors.Is(err, classifier.ErrData):
		return dataErr(err)
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
// encodes it with --vae_path. Every row must have a label.
func loadLabelledLatents(c *cli.Context, out io.Writer, dev ct.Device, flag string) (*labelled, []string, error) {
	var l labelled
	var classes []string
	if p := c.String(flag); p != "" {
		if flag == "latents" && c.String("data_dir") != "" {
			return nil, nil, usagef("give either --latents or --data_dir with --vae_path, not both")
		}
		f, err := npz.ReadLatents(p)
		if err != nil {
			return nil, nil, dataErr(err)
		}
		if f.Labels == nil {
			return nil, nil, dataErr(fmt.Errorf("--%s %s has no labels array: encode it from data with a label column (--label_key)", flag, p))
		}
		fmt.Fprintf(out, "%s: %s, %d cells, %d classes\n", flag, p, f.N, len(f.Classes))
		l = labelled{data: f.Data, labels: f.Labels, n: f.N, dim: f.Dim}
		classes = f.Classes
	} else {
		if c.Bool("no_labels") {
			return nil, nil, usagef("the classifier needs labels: drop --no_labels")
		}
		pp, err := loadData(c, out)
		if err != nil {
			return nil, nil, err
		}
		if len(pp.Labels) != pp.X.Rows {
			return nil, nil, dataErr(fmt.Errorf("%s has no labels (--label_key %s)", c.String("data_dir"), c.String("label_key")))
		}
		labels, classes0 := pp.Labels, pp.Classes
		lat, err := encodeLatents(c, out, dev, pp)
		if err != nil {
			return nil, nil, err
		}
		l = labelled{data: lat, labels: labels, n: len(labels), dim: len(lat) / max(len(labels), 1)}
		classes = classes0
	}
	if l.dim != c.Int("latent_dim") {
		return nil, nil, dataErr(fmt.Errorf("--%s: the latents have %d columns, --latent_dim is %d", flag, l.dim, c.Int("latent_dim")))
	}
	l.maxLabel = -1
	for i, y := range l.labels {
		if y < 0 || (classes != nil && y >= int64(len(classes))) {
			return nil, nil, dataErr(fmt.Errorf("--%s: label %d of cell %d outside the %d classes", flag, y, i, len(classes)))
		}
		l.maxLabel = max(l.maxLabel, y)
	}
	return &l, classes, nil
}
