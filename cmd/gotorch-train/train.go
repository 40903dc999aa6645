package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet"
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
			&cli.StringFlag{Name: "hidden_dim", Value: "512,512,256,128", Usage: "Cell_Unet hidden `WIDTHS`, comma-separated", EnvVars: env("hidden_dim"), Category: catModel},
			&cli.IntFlag{Name: "batch_size", Value: 128, Usage: "global batch per optimizer step", EnvVars: env("batch_size"), Category: catTrain},
			&cli.IntFlag{Name: "microbatch", Value: -1, Usage: "samples per forward/backward (gradients accumulated); -1: the whole batch", EnvVars: env("microbatch"), Category: catMemory},
			&cli.BoolFlag{Name: "microbatch_sum", Usage: "sum microbatch gradients as the reference does (effective lr × number of slices) instead of the batch mean", EnvVars: env("microbatch_sum"), Category: catTrain},
			&cli.Float64Flag{Name: "lr", Value: 1e-4, Usage: "AdamW learning rate", EnvVars: env("lr"), Category: catTrain},
			&cli.Float64Flag{Name: "weight_decay", Value: 1e-4, Usage: "AdamW weight decay", EnvVars: env("weight_decay"), Category: catTrain},
			&cli.IntFlag{Name: "lr_anneal_steps", Value: 800000, Usage: "total updates; the learning rate anneals linearly to 0 (0: no anneal, run until interrupted)", EnvVars: env("lr_anneal_steps"), Category: catTrain},
			&cli.StringFlag{Name: "ema_rate", Value: "0.9999", Usage: "EMA `RATES`, comma-separated", EnvVars: env("ema_rate"), Category: catTrain},
			&cli.IntFlag{Name: "log_interval", Value: 100, Usage: "progress line every `STEPS`", EnvVars: env("log_interval"), Category: catTrain},
			&cli.IntFlag{Name: "save_interval", Value: 200000, Usage: "checkpoint every `STEPS`", EnvVars: env("save_interval"), Category: catTrain},
			&cli.StringFlag{Name: "resume_checkpoint", Usage: "continue from a checkpoint `DIR` (newest complete checkpoint) or modelNNNNNN.pt", EnvVars: env("resume_checkpoint"), Category: catTrain},
			&cli.Uint64Flag{Name: "seed", Value: 1234, Usage: "random seed", EnvVars: env("seed"), Category: catTrain},
			&cli.StringFlag{Name: "schedule_sampler", Value: "uniform", Usage: "timestep sampler: uniform or loss-second-moment", EnvVars: env("schedule_sampler"), Category: catTrain},
			&cli.IntFlag{Name: "diffusion_steps", Value: 1000, Usage: "diffusion `T`", EnvVars: env("diffusion_steps"), Category: catModel},
			&cli.StringFlag{Name: "noise_schedule", Value: "linear", Usage: "linear or cosine", EnvVars: env("noise_schedule"), Category: catModel},
			&cli.BoolFlag{Name: "use_fp16", Usage: "fp16 autocast with float32 master weights and dynamic loss scaling (CUDA)", EnvVars: env("use_fp16"), Category: catMemory},
			&cli.StringFlag{Name: "precision", Value: "fp32", Usage: "fp32, fp16 or bf16 (CUDA autocast); --use_fp16 means fp16", EnvVars: env("precision"), Category: catMemory},
			&cli.BoolFlag{Name: "oom_retry", Value: true, Usage: "on out-of-memory, rerun the step with half the microbatch (batch unchanged) and continue", EnvVars: env("oom_retry"), Category: catMemory},
		}, memoryFlags(), runtimeFlags(), distFlags()),
		Action: runTrain,
	}
}

func runTrain(c *cli.Context) error {
	out := c.App.Writer
	cfg := trainer.DefaultConfig()
	hidden, err := cellunet.ParseHidden(c.String("hidden_dim"))
	if err != nil {
		return usageError{err}
	}
	cfg.Model.Hidden = hidden
	cfg.Diffusion = diffusion.Config{Steps: c.Int("diffusion_steps"), Schedule: c.String("noise_schedule")}
	cfg.ScheduleSampler = c.String("schedule_sampler")
	cfg.BatchSize, cfg.Microbatch = c.Int("batch_size"), c.Int("microbatch")
	cfg.SumMicrobatchGrads = c.Bool("microbatch_sum")
	cfg.LR, cfg.WeightDecay = c.Float64("lr"), c.Float64("weight_decay")
	cfg.LRAnnealSteps = c.Int("lr_anneal_steps")
	if cfg.EMARates, cfg.EMARateNames, err = trainer.ParseEMARates(c.String("ema_rate")); err != nil {
		return usageError{err}
	}
	cfg.LogInterval, cfg.SaveInterval = c.Int("log_interval"), c.Int("save_interval")
	cfg.SaveDir = filepath.Join(c.String("save_dir"), c.String("model_name"))
	cfg.ResumeCheckpoint = c.String("resume_checkpoint")
	cfg.Seed = c.Uint64("seed")
	cfg.Precision = trainer.Precision(c.String("precision"))
	if c.Bool("use_fp16") {
		cfg.Precision = trainer.FP16
	}
	cfg.OOMRetry = c.Bool("oom_retry")
	dr, err := newDistRun(c, cfg.BatchSize)
	if err != nil {
		return err
	}
	raw := out
	out = dr.logOut(out)
	// On a terminal a progress bar runs between the log lines.
	prog := newProgress(out, "train", cfg.LRAnnealSteps)
	defer prog.done()
	out = prog
	cfg.Out = out

	dev, err := setup(c)
	if err != nil {
		return err
	}
	cfg.Device = dev
	mem, err := newMemory(c, dev, memoryRun{batchSize: cfg.BatchSize, microbatch: cfg.Microbatch, fp16: cfg.Precision == trainer.FP16, saveDir: cfg.SaveDir,
		out: dr.memWriter(out, raw), rank: dr.world.Rank})
	if err != nil {
		return err
	}
	defer mem.close()
	mem.applyAutoConfig(&cfg, c)
	if err := cfg.Validate(); err != nil {
		if errors.Is(err, ct.ErrNoCUDA) {
			return err
		}
		return usageError{err}
	}

	lat, classes, err := loadLatents(c, out, dev)
	if err != nil {
		return err
	}
	if len(classes) > 0 && dr.root() {
		if err := writeLines(filepath.Join(cfg.SaveDir, "classes.txt"), classes); err != nil {
			return err
		}
	}
	data, err := latentTensor(lat, dev)
	if err != nil {
		return err
	}
	defer data.Free()
	lat = nil // the host copy is no longer needed

	if err := mem.guard(func() error { return mem.preflight(cfg, data) }); err != nil {
		return err
	}
	mem.hookTrainer(&cfg)
	afterStep := cfg.Hooks.AfterStep
	cfg.Hooks.AfterStep = func(step int, info trainer.StepInfo) {
		afterStep(step, info)
		prog.step(step)
	}
	if cfg.Comm, err = dr.join(out, dev, cfg.BatchSize); err != nil {
		return dr.result(err)
	}
	defer cfg.Comm.Close()
	var res trainer.Result
	err = dr.result(mem.guard(func() error {
		var err error
		res, err = trainer.Train(c.Context, cfg, data)
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
// with --vae_path. It returns [N·128] latents and the class names.
func loadLatents(c *cli.Context, out io.Writer, dev ct.Device) ([]float32, []string, error) {
	if p := c.String("latents"); p != "" {
		if c.String("data_dir") != "" {
			return nil, nil, usagef("give either --latents or --data_dir with --vae_path, not both")
		}
		l, err := npz.ReadLatents(p)
		if err != nil {
			return nil, nil, dataErr(err)
		}
		if l.Dim != 128 {
			return nil, nil, dataErr(fmt.Errorf("%s: cell_gen has %d columns, Cell_Unet expects 128", p, l.Dim))
		}
		fmt.Fprintf(out, "latents: %s, %d cells\n", p, l.N)
		return l.Data, l.Classes, nil
	}
	pp, err := loadData(c, out)
	if err != nil {
		return nil, nil, err
	}
	lat, err := encodeLatents(c, out, dev, pp)
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
