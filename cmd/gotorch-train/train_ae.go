package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
)

func newTrainAECommand() *cli.Command {
	return &cli.Command{
		Name:  "train-ae",
		Usage: "train the autoencoder (VAE_train.py) on an .h5ad of raw counts",
		Description: "Preprocesses --data_dir like the reference, writes genes.txt and classes.txt to --save_dir and\n" +
			"checkpoints model_seed={seed}_step={step}.pt (torch.save format) there.\n\n" + exitStatusHelp,
		Flags: slices.Concat(dataFlags(), []cli.Flag{
			&cli.StringFlag{Name: "save_dir", Value: "output/ae_checkpoint", Usage: "`DIR` for checkpoints, genes.txt and classes.txt", EnvVars: env("save_dir"), Category: catTrain},
			&cli.IntFlag{Name: "num_genes", Usage: "expected gene count after filtering (the reference's --num_genes); 0: take it from the data", EnvVars: env("num_genes"), Category: catModel},
			&cli.IntFlag{Name: "max_steps", Value: 200000, Usage: "training `STEPS` (reference 200,000; the paper uses the step-150,000 checkpoint)", EnvVars: env("max_steps"), Category: catTrain},
			&cli.IntFlag{Name: "batch_size", Value: 128, Usage: "cells per step", EnvVars: env("batch_size"), Category: catTrain},
			&cli.Float64Flag{Name: "lr", Value: 5e-4, Usage: "AdamW learning rate", EnvVars: env("lr"), Category: catTrain},
			&cli.Float64Flag{Name: "weight_decay", Value: 0.01, Usage: "AdamW weight decay", EnvVars: env("weight_decay"), Category: catTrain},
			&cli.IntFlag{Name: "checkpoint_freq", Value: 50000, Usage: "checkpoint every `STEPS` (and at the end)", EnvVars: env("checkpoint_freq"), Category: catTrain},
			&cli.IntFlag{Name: "log_interval", Value: 1000, Usage: "print the mean loss every `STEPS`", EnvVars: env("log_interval"), Category: catTrain},
			&cli.IntFlag{Name: "max_minutes", Value: 3000, Usage: "stop (with a checkpoint) after `MINUTES`", EnvVars: env("max_minutes"), Category: catTrain},
			&cli.Uint64Flag{Name: "seed", Value: 1234, Usage: "random seed (initialisation, data order)", EnvVars: env("seed"), Category: catTrain},
			&cli.IntFlag{Name: "file_seed", Value: 0, Usage: "the {seed} in checkpoint names (the reference's --seed, which only names files)", EnvVars: env("file_seed"), Category: catTrain},
			&cli.StringFlag{Name: "resume_checkpoint", Usage: "continue from `FILE` model_seed=S_step=N.pt", EnvVars: env("resume_checkpoint"), Category: catTrain},
		}, memoryFlags(), runtimeFlags(), distFlags()),
		Action: runTrainAE,
	}
}

func runTrainAE(c *cli.Context) error {
	out := c.App.Writer
	dr, err := newDistRun(c, c.Int("batch_size"))
	if err != nil {
		return err
	}
	raw := out
	out = dr.logOut(out)
	dev, err := setup(c)
	if err != nil {
		return err
	}
	pp, err := loadData(c, out)
	if err != nil {
		return err
	}
	genes := int64(pp.X.Cols)
	if n := c.Int("num_genes"); n > 0 && int64(n) != genes {
		return dataErr(fmt.Errorf("--num_genes %d but %s has %d genes after filtering (genes in >= 3 cells)", n, c.String("data_dir"), genes))
	}
	dir := c.String("save_dir")
	if dr.root() {
		if err := writeLines(filepath.Join(dir, "genes.txt"), pp.Genes); err != nil {
			return err
		}
		if len(pp.Classes) > 0 {
			if err := writeLines(filepath.Join(dir, "classes.txt"), pp.Classes); err != nil {
				return err
			}
		}
	}
	cfg := autoencoder.DefaultTrainConfig(genes)
	cfg.Device = dev
	cfg.Seed = c.Uint64("seed")
	cfg.FileSeed = c.Int("file_seed")
	cfg.BatchSize = c.Int("batch_size")
	cfg.LR = c.Float64("lr")
	cfg.WeightDecay = c.Float64("weight_decay")
	cfg.MaxSteps = c.Int("max_steps")
	cfg.CheckpointFreq = c.Int("checkpoint_freq")
	cfg.LogEvery = c.Int("log_interval")
	cfg.MaxDuration = time.Duration(c.Int("max_minutes")) * time.Minute
	cfg.SaveDir = dir
	cfg.Resume = c.String("resume_checkpoint")
	prog := newProgress(out, "train-ae", cfg.MaxSteps)
	defer prog.done()
	out = prog
	cfg.Out = out
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	mem, err := newMemory(c, dev, memoryRun{batchSize: cfg.BatchSize, out: dr.memWriter(out, raw), rank: dr.world.Rank})
	if err != nil {
		return err
	}
	defer mem.close()
	fmt.Fprintf(out, "autoencoder: %d genes → %d, %d parameters; %d steps, batch %d\n",
		genes, cfg.Model.Latent, cfg.Model.NumParams(), cfg.MaxSteps, cfg.BatchSize)
	cfg.AfterStep = func(step int) {
		mem.afterStep(step)
		prog.step(step)
	}
	if cfg.Comm, err = dr.join(out, dev, cfg.BatchSize); err != nil {
		return dr.result(err)
	}
	defer cfg.Comm.Close()
	var res autoencoder.Result
	err = dr.result(mem.guard(func() error {
		var err error
		res, err = autoencoder.Train(c.Context, cfg, rowSource(pp.X))
		return err
	}))
	if errors.Is(err, autoencoder.ErrInterrupted) {
		fmt.Fprintf(out, "interrupted: checkpoint %s written; continue with --resume_checkpoint %s\n", res.Checkpoint, res.Checkpoint)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "autoencoder trained: %d steps in %.1fs; checkpoint %s\n", res.Steps, res.Duration.Seconds(), res.Checkpoint)
	return nil
}
