package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
	"github.com/scdiffusion/gotorch-train/cellunet/trainer"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

func newTrainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "train the Cell_Unet diffusion backbone (cell_train.py) on latents",
		Description: "Latents come from --latents (an .npz from encode) or from --data_dir plus --vae_path (encoded\n" +
			"in memory). Checkpoints model/ema_RATE/opt{step:06d}.pt (torch.save format) and a state sidecar go to\n" +
			"--save_dir/--model_name, with progress.csv, the memory series and plot. Ctrl-C or SIGTERM finishes\n" +
			"the current step, writes a checkpoint and exits 0; --resume_checkpoint DIR continues exactly.\n\n" + exitStatusHelp,
		Flags: slices.Concat(dataFlags(), encodeFlags(), []cli.Flag{
			&cli.StringFlag{Name: "latents", Usage: "latent `FILE` (.npz with cell_gen [N,128]) instead of --data_dir/--vae_path", EnvVars: env("latents"), Category: catData},
			&cli.StringFlag{Name: "model_name", Value: "backbone", Usage: "run `NAME`: checkpoints go to save_dir/model_name", EnvVars: env("model_name"), Category: catTrain},
			&cli.StringFlag{Name: "save_dir", Value: "output/checkpoint", Usage: "checkpoint `DIR`", EnvVars: env("save_dir"), Category: catTrain},
			&cli.StringFlag{Name: "hidden_dim", Value: "512,512,256,128", Usage: "Cell_Unet hidden `WIDTHS`, comma-separated", EnvVars: env("hidden_dim"), Category: catModel,
				Action: parsedBy("hidden_dim", "positive widths separated by commas, e.g. 512,512,256,128", func(v string) error { _, err := cellunet.ParseHidden(v); return err })},
			&cli.IntFlag{Name: "batch_size", Value: 128, Usage: "global batch per optimizer step", EnvVars: env("batch_size"), Category: catTrain,
				Action: intAtLeast("batch_size", 1)},
			&cli.StringFlag{Name: "microbatch", Value: "-1", Usage: "samples per forward/backward (gradients accumulated): a `SIZE`, -1 for the whole batch, or auto: the largest that the pre-flight prediction fits in 90% of the memory available at the start", EnvVars: env("microbatch"), Category: catMemory,
				Action: parsedBy("microbatch", "-1 (the whole batch), a positive size or auto", func(v string) error { _, _, err := parseMicrobatch(v); return err })},
			&cli.BoolFlag{Name: "microbatch_sum", Usage: "sum microbatch gradients as the reference does (effective lr × number of slices) instead of the batch mean", EnvVars: env("microbatch_sum"), Category: catTrain},
			&cli.Float64Flag{Name: "lr", Value: 1e-4, Usage: "AdamW learning rate", EnvVars: env("lr"), Category: catTrain,
				Action: floatAtLeast("lr", 0, false)},
			&cli.Float64Flag{Name: "weight_decay", Value: 1e-4, Usage: "AdamW weight decay", EnvVars: env("weight_decay"), Category: catTrain,
				Action: floatAtLeast("weight_decay", 0, false)},
			&cli.IntFlag{Name: "lr_anneal_steps", Value: 800000, Usage: "total updates; the learning rate anneals linearly to 0 (0: no anneal, run until interrupted)", EnvVars: env("lr_anneal_steps"), Category: catTrain,
				Action: intAtLeast("lr_anneal_steps", 0)},
			&cli.StringFlag{Name: "ema_rate", Value: "0.9999", Usage: "EMA `RATES`, comma-separated", EnvVars: env("ema_rate"), Category: catTrain,
				Action: parsedBy("ema_rate", "rates in [0,1) separated by commas, e.g. 0.9999", func(v string) error { _, _, err := trainer.ParseEMARates(v); return err })},
			&cli.IntFlag{Name: "log_interval", Value: 100, Usage: "progress line every `STEPS`", EnvVars: env("log_interval"), Category: catTrain,
				Action: intAtLeast("log_interval", 1)},
			&cli.IntFlag{Name: "save_interval", Value: 200000, Usage: "checkpoint every `STEPS`", EnvVars: env("save_interval"), Category: catTrain,
				Action: intAtLeast("save_interval", 1)},
			&cli.StringFlag{Name: "resume_checkpoint", Usage: "continue from a checkpoint `DIR` (newest complete checkpoint) or modelNNNNNN.pt; empty: start afresh", EnvVars: env("resume_checkpoint"), Category: catTrain},
			&cli.Uint64Flag{Name: "seed", Value: 1234, Usage: "random seed", EnvVars: env("seed"), Category: catTrain},
			&cli.StringFlag{Name: "schedule_sampler", Value: "uniform", Usage: "timestep sampler: uniform or loss-second-moment", EnvVars: env("schedule_sampler"), Category: catTrain,
				Action: oneOf("schedule_sampler", "uniform", "loss-second-moment")},
			&cli.IntFlag{Name: "diffusion_steps", Value: 1000, Usage: "diffusion `T`", EnvVars: env("diffusion_steps"), Category: catModel,
				Action: intBetween("diffusion_steps", 1, 100000)},
			&cli.StringFlag{Name: "noise_schedule", Value: "linear", Usage: "linear or cosine", EnvVars: env("noise_schedule"), Category: catModel,
				Action: oneOf("noise_schedule", "linear", "cosine")},
			&cli.BoolFlag{Name: "use_fp16", Usage: "fp16 autocast with float32 master weights and dynamic loss scaling (CUDA)", EnvVars: env("use_fp16"), Category: catMemory},
			&cli.Float64Flag{Name: "fp16_scale_growth", Value: 1e-3, Usage: "log2 loss-scale growth per good step with --use_fp16 (the reference's fp16_scale_growth)", EnvVars: env("fp16_scale_growth"), Category: catMemory,
				Action: floatAtLeast("fp16_scale_growth", 0, false)},
			&cli.StringFlag{Name: "precision", Value: "fp32", Usage: "fp32, fp16 or bf16 (CUDA autocast); --use_fp16 means fp16", EnvVars: env("precision"), Category: catMemory,
				Action: oneOf("precision", "fp32", "fp16", "bf16")},
			&cli.BoolFlag{Name: "oom_retry", Value: true, Usage: "on out-of-memory, rerun the step with half the microbatch (batch and gradient unchanged, --microbatch_sum included) and continue", EnvVars: env("oom_retry"), Category: catMemory},
			&cli.StringFlag{Name: "train_step", Value: "auto", Usage: "forward/backward implementation: auto (the fused Cell_Unet step where it applies: fp32, no dropout), fused, or generic (autograd)", EnvVars: env("train_step"), Category: catTrain,
				Action: oneOf("train_step", "auto", "fused", "generic")},
		}, planFlags(), memoryFlags("--save_dir/--model_name"), runtimeFlags(), distFlags()),
		Action: runTrain,
	}
}

// parseMicrobatch reads --microbatch: auto, or an integer (<= 0: the whole
// batch, as in the reference).
func parseMicrobatch(v string) (mb int, auto bool, err error) {
	if v == "auto" {
		return -1, true, nil
	}
	mb, err = strconv.Atoi(v)
	return mb, false, err
}

// trainConfig turns the flags into the trainer's configuration; it reads
// no file and checks every value (usage errors).
func trainConfig(c *cli.Context) (cfg trainer.Config, autoMicrobatch bool, err error) {
	cfg = trainer.DefaultConfig()
	if cfg.Model.Hidden, err = cellunet.ParseHidden(c.String("hidden_dim")); err != nil {
		return cfg, false, usagef("--hidden_dim %q: %v", c.String("hidden_dim"), err)
	}
	cfg.Diffusion = diffusion.Config{Steps: c.Int("diffusion_steps"), Schedule: c.String("noise_schedule")}
	cfg.ScheduleSampler = c.String("schedule_sampler")
	cfg.BatchSize = c.Int("batch_size")
	if cfg.Microbatch, autoMicrobatch, err = parseMicrobatch(c.String("microbatch")); err != nil {
		return cfg, false, usagef("--microbatch %q: want -1 (the whole batch), a positive size or auto", c.String("microbatch"))
	}
	cfg.SumMicrobatchGrads = c.Bool("microbatch_sum")
	if autoMicrobatch && cfg.SumMicrobatchGrads {
		return cfg, false, usagef("--microbatch auto with --microbatch_sum: the summed gradient depends on the microbatch, so it cannot be chosen from memory; give --microbatch SIZE")
	}
	cfg.LR, cfg.WeightDecay = c.Float64("lr"), c.Float64("weight_decay")
	cfg.LRAnnealSteps = c.Int("lr_anneal_steps")
	if cfg.EMARates, cfg.EMARateNames, err = trainer.ParseEMARates(c.String("ema_rate")); err != nil {
		return cfg, false, usagef("--ema_rate %q: %v", c.String("ema_rate"), err)
	}
	cfg.LogInterval, cfg.SaveInterval = c.Int("log_interval"), c.Int("save_interval")
	cfg.SaveDir = filepath.Join(c.String("save_dir"), c.String("model_name"))
	cfg.ResumeCheckpoint = c.String("resume_checkpoint")
	cfg.Seed = c.Uint64("seed")
	cfg.Precision = trainer.Precision(c.String("precision"))
	if c.Bool("use_fp16") {
		cfg.Precision = trainer.FP16
	}
	cfg.ScaleGrowth = c.Float64("fp16_scale_growth")
	cfg.OOMRetry = c.Bool("oom_retry")
	if cfg.Step, err = trainer.ParseStepImpl(c.String("train_step")); err != nil {
		return cfg, false, usageError{err}
	}
	return cfg, autoMicrobatch, nil
}

// checkPrecision refuses half precision without CUDA: a device error (exit
// 5) with the CPU build, a usage error with the CUDA build on --device cpu.
func checkPrecision(cfg trainer.Config) error {
	if cfg.Precision != trainer.FP16 && cfg.Precision != trainer.BF16 || cfg.Device.IsCUDA() {
		return nil
	}
	what := "--use_fp16"
	if cfg.Precision == trainer.BF16 {
		what = "--precision bf16"
	}
	if !ct.Build().CUDA {
		return fmt.Errorf("%s needs a CUDA device: %w: this libcgotorch.so is the CPU flavour, whose kernels have no half-precision matrix product (train in fp32 on the CPU: --use_fp16 False)", what, ct.ErrNoCUDA)
	}
	return usagef("%s needs a CUDA device: add --device cuda (libtorch's CPU kernels have no half-precision matrix product)", what)
}

// checkTrainInputs checks that the inputs are given coherently and exist,
// before anything is loaded. Only rank 0 of a data-parallel run reads the
// checkpoint (the others may not see its file system): root says whether
// this process checks it.
func checkTrainInputs(c *cli.Context, root bool) error {
	lat, data := c.String("latents"), c.String("data_dir")
	switch {
	case lat == "" && data == "":
		return usagef("no input: give --latents FILE.npz (from encode), or --data_dir FILE with --vae_path AE.pt")
	case lat != "" && data != "":
		return usagef("give either --latents or --data_dir with --vae_path, not both")
	case data != "" && c.String("vae_path") == "":
		return usagef("--data_dir needs --vae_path AE.pt (the autoencoder that encodes it), or give --latents FILE.npz instead")
	}
	if cp := c.String("resume_checkpoint"); cp != "" && root {
		if err := trainer.CheckResume(cp); err != nil {
			return flagErr("resume_checkpoint", err)
		}
	}
	return nil
}

func runTrain(c *cli.Context) error {
	cfg, autoMB, err := trainConfig(c)
	if err != nil {
		return err
	}
	// The launcher's environment (torchrun, srun, a PyTorchJob), before the
	// device: --device cuda becomes this process's GPU.
	dr, err := newDistRun(c, cfg.BatchSize)
	if err != nil {
		return err
	}
	if err := checkTrainInputs(c, dr.root()); err != nil {
		return err
	}
	dev, err := setup(c)
	if err != nil {
		return err
	}
	cfg.Device = dev
	if err := checkPrecision(cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	raw := io.Writer(c.App.Writer)
	out := dr.logOut(raw) // rank 0 logs; the other ranks print memory lines and errors
	printHeader(out)
	// On a terminal a progress bar runs between the log lines.
	prog := newProgress(out, "train", cfg.LRAnnealSteps)
	defer prog.done()
	out = prog
	cfg.Out = out

	mem, err := newMemory(c, dev, memoryRun{batchSize: cfg.BatchSize, microbatch: cfg.Microbatch, fp16: cfg.Precision == trainer.FP16,
		bf16: cfg.Precision == trainer.BF16, sum: cfg.SumMicrobatchGrads, command: "train", out: dr.memWriter(out, raw), rank: dr.world.Rank})
	if err != nil {
		return err
	}
	defer mem.close()
	mem.applyAutoConfig(&cfg, c, autoMB)
	if err := checkPrecision(cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	var vae *autoencoder.Model
	if c.String("latents") == "" {
		if vae, err = openVAE(c, dev); err != nil { // before the data: a bad checkpoint fails at once
			return err
		}
	}

	var res trainer.Result
	err = dr.result(mem.guard(func() error {
		lat, classes, err := loadLatents(c, out, dev, vae)
		if err != nil {
			return err
		}
		if n := len(lat) / 128; n < cfg.BatchSize {
			return usagef("--batch_size %d exceeds the %d cells of the input (the last incomplete batch is dropped, so no batch would remain)", cfg.BatchSize, n)
		}
		data, err := latentTensor(lat, dev)
		if err != nil {
			return err
		}
		defer data.Free()
		lat = nil // the host copy is no longer needed
		if autoMB {
			if err := mem.chooseMicrobatch(&cfg, data); err != nil {
				return err
			}
		} else if _, err := mem.preflight(cfg, data, false); err != nil {
			return err
		}
		mem.hookTrainer(&cfg)
		afterStep := cfg.Hooks.AfterStep
		cfg.Hooks.AfterStep = func(step int, info trainer.StepInfo) {
			afterStep(step, info)
			prog.step(step)
		}
		// Everything is valid and loaded, the checkpoint restored: only now
		// are files created or changed (rank 0's; the other ranks' only an
		// out-of-memory report of their own).
		cfg.Hooks.BeforeRun = func() error {
			if err := os.MkdirAll(cfg.SaveDir, 0o755); err != nil {
				return err
			}
			if err := mem.start(cfg.SaveDir, cfg.ResumeCheckpoint != ""); err != nil {
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
		res, err = trainer.Train(c.Context, cfg, data)
		var re *trainer.ResumeError
		if errors.As(err, &re) {
			return flagErr("resume_checkpoint", err)
		}
		return err
	}))
	if errors.Is(err, trainer.ErrInterrupted) {
		fmt.Fprintf(out, "interrupted after step %d: checkpoint %s written; continue with --resume_checkpoint %s\n",
			res.NextStep-1, res.Checkpoint, cfg.SaveDir)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "trained %d steps in %.1fs (%.2f steps/s); checkpoint %s\n", res.Steps, res.Duration.Seconds(),
		float64(res.Steps)/res.Duration.Seconds(), res.Checkpoint)
	rows := cfg.BatchSize / dr.world.Size // per process
	if configured := min(rows, max(cfg.Microbatch, 0)); res.Microbatch < rows && (configured == 0 || res.Microbatch < configured) {
		fmt.Fprintf(out, "note: out-of-memory retries reduced the microbatch to %d; use --microbatch %d next time\n", res.Microbatch, res.Microbatch)
	}
	return nil
}

// loadLatents reads --latents, or preprocesses --data_dir and encodes it
// with the autoencoder vae (closed here). It returns [N·128] latents and
// the class names.
func loadLatents(c *cli.Context, out io.Writer, dev ct.Device, vae *autoencoder.Model) ([]float32, []string, error) {
	if p := c.String("latents"); p != "" {
		l, err := npz.ReadLatents(p)
		if err != nil {
			return nil, nil, flagErr("latents", err)
		}
		if l.Dim != 128 {
			return nil, nil, flagErr("latents", fmt.Errorf("%s: cell_gen has %d columns, Cell_Unet expects 128", p, l.Dim))
		}
		if l.N == 0 {
			return nil, nil, flagErr("latents", fmt.Errorf("%s: cell_gen has no rows", p))
		}
		fmt.Fprintf(out, "latents: %s, %d cells\n", p, l.N)
		return l.Data, l.Classes, nil
	}
	pp, err := loadData(c, out)
	if err != nil {
		vae.Close()
		return nil, nil, err
	}
	lat, err := encodeLatents(c, out, dev, pp, vae)
	return lat, pp.Classes, err
}

// latentTensor uploads [N·128] latents to dev once; batches are drawn there.
func latentTensor(lat []float32, dev ct.Device) (*ct.Tensor, error) {
	var t *ct.Tensor
	err := ct.Try(func() {
		host := ct.FromSlice(lat, int64(len(lat)/128), 128)
		t = host
		if dev.IsCUDA() {
			t = host.To(dev, 0)
			host.Free()
		}
	})
	return t, err
}
