package main

import (
	"errors"
	"fmt"
	"io"
	"os"
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
			"checkpoints model_seed={seed}_step={step}.pt (torch.save format) there. The memory plan flags of train\n" +
			"(--microbatch, --use_fp16, --auto_config, --preflight) do not apply: the autoencoder trains in fp32 on whole\n" +
			"batches (its train-mode BatchNorm needs them).\n\n" + exitStatusHelp,
		Flags: slices.Concat(dataFlags(), []cli.Flag{
			&cli.StringFlag{Name: "save_dir", Value: "output/ae_checkpoint", Usage: "`DIR` for checkpoints, genes.txt and classes.txt", EnvVars: env("save_dir"), Category: catTrain},
			&cli.IntFlag{Name: "num_genes", Usage: "expected gene count after filtering (the reference's --num_genes); 0: take it from the data", EnvVars: env("num_genes"), Category: catModel,
				Action: intAtLeast("num_genes", 0)},
			&cli.IntFlag{Name: "max_steps", Value: 200000, Usage: "training `STEPS` (reference 200,000; the paper uses the step-150,000 checkpoint)", EnvVars: env("max_steps"), Category: catTrain,
				Action: intAtLeast("max_steps", 1)},
			&cli.IntFlag{Name: "batch_size", Value: 128, Usage: "cells per step (at least 2: train-mode BatchNorm)", EnvVars: env("batch_size"), Category: catTrain,
				Action: intAtLeast("batch_size", 2)},
			&cli.Float64Flag{Name: "lr", Value: 5e-4, Usage: "AdamW learning rate", EnvVars: env("lr"), Category: catTrain,
				Action: floatAtLeast("lr", 0, true)},
			&cli.Float64Flag{Name: "weight_decay", Value: 0.01, Usage: "AdamW weight decay", EnvVars: env("weight_decay"), Category: catTrain,
				Action: floatAtLeast("weight_decay", 0, false)},
			&cli.IntFlag{Name: "checkpoint_freq", Value: 50000, Usage: "checkpoint every `STEPS` (and at the end)", EnvVars: env("checkpoint_freq"), Category: catTrain,
				Action: intAtLeast("checkpoint_freq", 1)},
			&cli.IntFlag{Name: "log_interval", Value: 1000, Usage: "print the mean loss every `STEPS`", EnvVars: env("log_interval"), Category: catTrain,
				Action: intAtLeast("log_interval", 1)},
			&cli.IntFlag{Name: "max_minutes", Value: 3000, Usage: "stop (with a checkpoint) after `MINUTES`; 0: no limit", EnvVars: env("max_minutes"), Category: catTrain,
				Action: intAtLeast("max_minutes", 0)},
			&cli.Uint64Flag{Name: "seed", Value: 1234, Usage: "random seed (initialisation, data order)", EnvVars: env("seed"), Category: catTrain},
			&cli.IntFlag{Name: "file_seed", Value: 0, Usage: "the {seed} in checkpoint names (the reference's --seed, which only names files)", EnvVars: env("file_seed"), Category: catTrain},
			&cli.StringFlag{Name: "resume_checkpoint", Usage: "continue from `FILE` model_seed=S_step=N.pt", EnvVars: env("resume_checkpoint"), Category: catTrain},
			&cli.StringFlag{Name: "state_dict", Usage: "initialise from an SCimilarity model `DIR` (encoder.ckpt, decoder.ckpt) as the reference does: all but the gene-indexed first encoder and last decoder layers", EnvVars: env("state_dict"), Category: catModel},
			&cli.StringFlag{Name: "train_step", Value: "auto", Usage: "forward/backward implementation: auto (the fused autoencoder step where it applies: CPU, no dropout), fused, or generic (autograd)", EnvVars: env("train_step"), Category: catTrain,
				Action: oneOf("train_step", "auto", "fused", "generic")},
		}, memoryFlags("--save_dir"), runtimeFlags(), distFlags()),
		Action: runTrainAE,
	}
}

// aeConfig turns the flags into the training configuration for genes genes
// (usage errors; no file is read).
func aeConfig(c *cli.Context, genes int64) (autoencoder.TrainConfig, error) {
	cfg := autoencoder.DefaultTrainConfig(genes)
	cfg.Seed = c.Uint64("seed")
	cfg.FileSeed = c.Int("file_seed")
	cfg.BatchSize = c.Int("batch_size")
	cfg.LR = c.Float64("lr")
	cfg.WeightDecay = c.Float64("weight_decay")
	cfg.MaxSteps = c.Int("max_steps")
	cfg.CheckpointFreq = c.Int("checkpoint_freq")
	cfg.LogEvery = c.Int("log_interval")
	cfg.MaxDuration = time.Duration(c.Int("max_minutes")) * time.Minute
	cfg.SaveDir = c.String("save_dir")
	cfg.Resume = c.String("resume_checkpoint")
	cfg.Pretrained = c.String("state_dict")
	cfg.Step = c.String("train_step")
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

func runTrainAE(c *cli.Context) error {
	if err := checkPretrainedDir(c.String("state_dict"), c.String("resume_checkpoint")); err != nil {
		return err
	}
	if _, err := aeConfig(c, 1); err != nil { // every flag but the gene count
		return err
	}
	if err := needDataDir(c); err != nil {
		return err
	}
	// The launcher's environment (torchrun, srun, a PyTorchJob), before the
	// device: --device cuda becomes this process's GPU.
	dr, err := newDistRun(c, c.Int("batch_size"))
	if err != nil {
		return err
	}
	if dr.world.Distributed() && c.String("train_step") == "fused" {
		return usagef("--train_step fused: data-parallel train-ae trains through autograd (its BatchNorm statistics are synchronised over the processes); use --train_step auto or generic")
	}
	// Every rank checks the name; only rank 0 reads the checkpoint (the
	// others may not see its file system).
	if r := c.String("resume_checkpoint"); r != "" {
		if _, _, ok := autoencoder.ParseCheckpointName(r); !ok {
			return usagef("--resume_checkpoint %s: want a train-ae checkpoint named model_seed=S_step=N.pt", r)
		}
	}
	if r := c.String("resume_checkpoint"); r != "" && dr.root() {
		if st, err := os.Stat(r); err != nil {
			return flagErr("resume_checkpoint", err)
		} else if st.IsDir() {
			return usagef("--resume_checkpoint %s is a directory; want a checkpoint file model_seed=S_step=N.pt", r)
		}
	}
	dev, err := setup(c)
	if err != nil {
		return err
	}
	raw := io.Writer(c.App.Writer)
	out := dr.logOut(raw) // rank 0 logs; the other ranks print memory lines and errors
	printHeader(out)
	prog := newProgress(out, "train-ae", c.Int("max_steps"))
	defer prog.done()
	out = prog
	mem, err := newMemory(c, dev, memoryRun{batchSize: c.Int("batch_size"), command: "train-ae",
		unavailable: []string{"--microbatch", "--use_fp16"}, out: dr.memWriter(out, raw), rank: dr.world.Rank})
	if err != nil {
		return err
	}
	defer mem.close()

	var res autoencoder.Result
	var cfg autoencoder.TrainConfig
	err = dr.result(mem.guard(func() error {
		pp, err := loadData(c, out)
		if err != nil {
			return err
		}
		genes := int64(pp.X.Cols)
		if n := c.Int("num_genes"); n > 0 && int64(n) != genes {
			return flagErr("data_dir", fmt.Errorf("--num_genes %d but %s has %d genes after filtering (genes in >= 3 cells)", n, c.String("data_dir"), genes))
		}
		if cfg, err = aeConfig(c, genes); err != nil {
			return err
		}
		if pp.X.Rows < cfg.BatchSize {
			return usagef("--batch_size %d exceeds the %d cells of --data_dir after filtering", cfg.BatchSize, pp.X.Rows)
		}
		cfg.Device = dev
		cfg.Out = out
		// Everything is valid and loaded, any checkpoint restored: only now
		// are files created or changed (rank 0's; the other ranks' only an
		// out-of-memory report of their own).
		cfg.BeforeRun = func() error {
			dir := cfg.SaveDir
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := mem.start(dir, cfg.Resume != ""); err != nil {
				return err
			}
			if !dr.root() {
				return nil
			}
			if err := writeLines(filepath.Join(dir, "genes.txt"), pp.Genes); err != nil {
				return err
			}
			if len(pp.Classes) > 0 {
				if err := writeLines(filepath.Join(dir, "classes.txt"), pp.Classes); err != nil {
					return err
				}
			}
			fmt.Fprintf(out, "autoencoder: %d genes → %d, %d parameters; %d steps, batch %d\n",
				genes, cfg.Model.Latent, cfg.Model.NumParams(), cfg.MaxSteps, cfg.BatchSize)
			return nil
		}
		cfg.AfterStep = func(step int) {
			mem.afterStep(step)
			prog.step(step)
		}
		if cfg.Comm, err = dr.join(out, dev, cfg.BatchSize); err != nil {
			return err
		}
		defer cfg.Comm.Close()
		res, err = autoencoder.Train(c.Context, cfg, rowSource(pp.X))
		var re *autoencoder.ResumeError
		if errors.As(err, &re) {
			return flagErr("resume_checkpoint", err)
		}
		if errors.Is(err, autoencoder.ErrPretrained) {
			return flagErr("state_dict", err)
		}
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

// checkPretrainedDir checks --state_dict before anything is written: a
// directory with encoder.ckpt and decoder.ckpt, not combined with a resume.
func checkPretrainedDir(dir, resume string) error {
	if dir == "" {
		return nil
	}
	if resume != "" {
		return usagef("--state_dict initialises a new run; it cannot be combined with --resume_checkpoint")
	}
	st, err := os.Stat(dir)
	if err != nil {
		return dataErr(fmt.Errorf("--state_dict %s: %w", dir, errors.Unwrap(err)))
	}
	if !st.IsDir() {
		return dataErr(fmt.Errorf("--state_dict %s: not a directory; want an SCimilarity model directory with %s and %s", dir, autoencoder.PretrainedEncoder, autoencoder.PretrainedDecoder))
	}
	for _, f := range []string{autoencoder.PretrainedEncoder, autoencoder.PretrainedDecoder} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return dataErr(fmt.Errorf("--state_dict %s: no %s (an SCimilarity model directory holds %s and %s)", dir, f, autoencoder.PretrainedEncoder, autoencoder.PretrainedDecoder))
		}
	}
	return nil
}
