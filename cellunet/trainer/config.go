// Package trainer trains the Cell_Unet diffusion backbone on cell latents:
// the reference's TrainLoop (../shared/spec/scdiffusion.md §3) with its
// defects removed and memory kept flat: forward and backward run as the
// fused Cell_Unet step by default (cellunet.Model.NewFusedStep; Config.Step),
// AdamW and every EMA as one fused pass over flat parameter buffers (or
// inside the fused step, as each gradient is ready), the ε noise and loss
// are float32, losses and norms are accumulated on the device with one host
// read per log, and checkpoints are written atomically with enough state to
// resume a run exactly.
//
// Legend: N = cells, D = latent width (128), B = batch, b = microbatch,
// P = number of parameters, S = global step label.
package trainer

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Precision selects the arithmetic of forward and backward.
type Precision string

// Precisions. FP16 and BF16 use CUDA autocast (matrix products in half
// precision, LayerNorm and the loss in float32) with float32 master weights;
// FP16 adds dynamic loss scaling. libtorch's CPU kernels have no float16
// matrix product, so both need a CUDA device.
const (
	FP32 Precision = "fp32"
	FP16 Precision = "fp16"
	BF16 Precision = "bf16"
)

// Config is one training run. Use DefaultConfig and override fields; the
// zero value is not valid.
type Config struct {
	Model     cellunet.Config
	Diffusion diffusion.Config
	// ScheduleSampler is "uniform" (default) or "loss-second-moment".
	ScheduleSampler string
	Device          ct.Device

	// BatchSize is the global batch per optimizer step (reference 128).
	BatchSize int
	// Microbatch is the number of samples per forward/backward; <= 0 means
	// the whole batch. Gradients are accumulated over the slices.
	Microbatch int
	// SumMicrobatchGrads reproduces the reference's summed slice gradients
	// (k slices give k× the batch-mean gradient). By default every slice's
	// loss is scaled by len(slice)/B, so the result is the gradient of the
	// whole batch's mean loss.
	SumMicrobatchGrads bool

	LR          float64
	WeightDecay float64
	// LRAnnealSteps is the number of updates N; the learning rate after
	// update s is lr0·(1 − s/N) as in the reference. 0 disables annealing
	// and training runs until interrupted.
	LRAnnealSteps int
	// EMARates are the EMA decay rates (reference "0.9999"); EMARateNames
	// keeps their spelling for file names (ema_0.9999_000100.pt).
	EMARates     []float64
	EMARateNames []string

	LogInterval  int // steps between progress lines (reference 100)
	SaveInterval int // steps between checkpoints (reference 200,000)
	// SaveDir receives checkpoints and progress.csv; created with parents.
	SaveDir string
	Seed    uint64

	Precision Precision
	// LossScaling turns on dynamic loss scaling (implied by FP16): backward
	// on loss·2^lg, skip the step and the EMA when a gradient is not finite
	// (lg −= 1), else lg += ScaleGrowth.
	LossScaling        bool
	InitialLgLossScale float64 // 20 for the backbone
	ScaleGrowth        float64 // 1e-3

	// ResumeCheckpoint is a checkpoint directory (the newest complete
	// checkpoint in it is used) or a model file modelNNNNNN.pt.
	ResumeCheckpoint string

	// Step selects the implementation of forward and backward: StepAuto
	// ("" too; the default) uses the fused step wherever it applies (fp32,
	// no dropout) and autograd otherwise; StepFused requires the fused step;
	// StepGeneric forces autograd (CLI: --train_step auto|fused|generic).
	Step StepImpl
	// fusedBackend overrides the fused step's backend (tests run the ATen
	// backend, the CUDA path's ops, on the CPU).
	fusedBackend ct.FusedBackend

	// OOMRetry recovers from out-of-memory in forward/backward: the step is
	// rerun from its first slice with half the microbatch (same batch, same
	// noise and timesteps), and the run continues with that microbatch. The
	// gradient is unchanged, with SumMicrobatchGrads too: there every
	// sample keeps the weight 1/len(its slice of the configured Microbatch).
	OOMRetry bool

	// Comm, if not nil, makes this process one rank of a data-parallel
	// run: BatchSize stays the global batch (each rank computes an equal
	// shard of it, see dist.Comm.Shard), gradients are summed over ranks
	// before the optimizer, rank 0's weights and state are broadcast at the
	// start, and only rank 0 writes checkpoints and progress.csv. Microbatch
	// is per process.
	Comm *dist.Comm `json:"-"`

	// Out receives progress lines (default: discard).
	Out io.Writer `json:"-"`
	// Hooks are optional callbacks (memory monitoring, tests).
	Hooks Hooks `json:"-"`
}

// DefaultConfig is the reference's backbone run (cell_train.py defaults with
// train.sh's 800,000 updates), on the CPU.
func DefaultConfig() Config {
	return Config{
		Model:              cellunet.DefaultConfig(),
		Diffusion:          diffusion.DefaultConfig(),
		ScheduleSampler:    "uniform",
		BatchSize:          128,
		Microbatch:         -1,
		LR:                 1e-4,
		WeightDecay:        1e-4,
		LRAnnealSteps:      800000,
		EMARates:           []float64{0.9999},
		EMARateNames:       []string{"0.9999"},
		LogInterval:        100,
		SaveInterval:       200000,
		SaveDir:            "output/checkpoint/backbone",
		Seed:               1234,
		Precision:          FP32,
		Step:               StepAuto,
		InitialLgLossScale: 20,
		ScaleGrowth:        1e-3,
	}
}

// ParseEMARates parses the reference's comma-separated rate list ("0.9999,0.999").
func ParseEMARates(s string) (rates []float64, names []string, err error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil, nil
	}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || r < 0 || r >= 1 {
			return nil, nil, fmt.Errorf("trainer: bad EMA rate %q in %q (want numbers in [0,1) separated by commas)", f, s)
		}
		rates = append(rates, r)
		names = append(names, f)
	}
	return rates, names, nil
}

func (c *Config) microbatch() int {
	if c.Microbatch <= 0 || c.Microbatch > c.BatchSize {
		return c.BatchSize
	}
	return c.Microbatch
}

// Validate reports configuration errors.
func (c *Config) Validate() error {
	if err := c.Model.Validate(); err != nil {
		return err
	}
	switch {
	case c.BatchSize <= 0:
		return fmt.Errorf("trainer: batch_size must be positive, got %d", c.BatchSize)
	case c.LR < 0:
		return fmt.Errorf("trainer: lr must be >= 0, got %v", c.LR)
	case c.WeightDecay < 0:
		return fmt.Errorf("trainer: weight_decay must be >= 0, got %v", c.WeightDecay)
	case c.LRAnnealSteps < 0:
		return fmt.Errorf("trainer: lr_anneal_steps must be >= 0, got %d", c.LRAnnealSteps)
	case c.LogInterval <= 0:
		return fmt.Errorf("trainer: log_interval must be positive, got %d", c.LogInterval)
	case c.SaveInterval <= 0:
		return fmt.Errorf("trainer: save_interval must be positive, got %d", c.SaveInterval)
	case c.SaveDir == "":
		return fmt.Errorf("trainer: save_dir is required")
	case len(c.EMARateNames) != 0 && len(c.EMARateNames) != len(c.EMARates):
		return fmt.Errorf("trainer: %d EMA rate names for %d rates", len(c.EMARateNames), len(c.EMARates))
	}
	switch c.Precision {
	case FP32, "":
	case FP16, BF16:
		if !c.Device.IsCUDA() {
			return fmt.Errorf("trainer: precision %s needs a CUDA device (libtorch's CPU kernels have no half-precision matrix product); use fp32 on the CPU", c.Precision)
		}
	default:
		return fmt.Errorf("trainer: unknown precision %q (want fp32, fp16 or bf16)", c.Precision)
	}
	if _, err := ParseStepImpl(string(c.Step)); err != nil {
		return err
	}
	if r := c.fusedReason(); c.Step == StepFused && r != "" {
		return fmt.Errorf("trainer: train_step fused does not cover %s; use train_step auto or generic (autograd)", r)
	}
	for _, r := range c.EMARates {
		if r < 0 || r >= 1 {
			return fmt.Errorf("trainer: EMA rate %v outside [0,1)", r)
		}
	}
	switch c.ScheduleSampler {
	case "", "uniform", "loss-second-moment":
	default:
		return fmt.Errorf("trainer: unknown schedule_sampler %q (want uniform or loss-second-moment)", c.ScheduleSampler)
	}
	if !(c.ScaleGrowth >= 0) || math.IsInf(c.ScaleGrowth, 0) {
		return fmt.Errorf("trainer: fp16_scale_growth must be a finite number >= 0, got %v", c.ScaleGrowth)
	}
	if _, err := diffusion.NewSchedule(c.Diffusion); err != nil {
		return err
	}
	return nil
}

func (c *Config) lossScaling() bool { return c.LossScaling || c.Precision == FP16 }

func (c *Config) emaName(k int) string {
	if k < len(c.EMARateNames) && c.EMARateNames[k] != "" {
		return c.EMARateNames[k]
	}
	return strconv.FormatFloat(c.EMARates[k], 'g', -1, 64)
}

// Hooks are optional callbacks into the loop. They run on the training
// goroutine; tensors they receive are valid only during the call.
type Hooks struct {
	// BeforeStep runs before step S draws its batch (fault injection in tests).
	BeforeStep func(step int)
	// AfterBackward runs after the last slice's backward of step S, before
	// the optimizer; grads are the parameters' gradients in Params() order
	// (scaled by the loss scale when loss scaling is on).
	AfterBackward func(step int, grads []*ct.Tensor)
	// AfterStep runs after step S's optimizer update at the fixed phase where
	// memory is sampled (the memory monitor: logging, cleanup, leak checks).
	// info.Loss is the step's batch loss as a 0-dim device tensor.
	AfterStep func(step int, info StepInfo)
	// OnOOMRetry reports a recovered out-of-memory: step S is rerun with
	// microbatch `to` instead of `from`.
	OnOOMRetry func(step, from, to int, err error)
	// BeforeSave runs before each checkpoint file is written; an error
	// aborts the save (tests simulate a crash mid-checkpoint).
	BeforeSave func(path string) error
	// BeforeRun runs once in Train after the model is built and any
	// checkpoint restored, before the first step and before anything is
	// written to SaveDir (progress.csv included); an error aborts Train with
	// nothing on disk changed. Callers create their own files here.
	BeforeRun func() error
}

// StepInfo describes a finished step to Hooks.AfterStep.
type StepInfo struct {
	Loss       *ct.Tensor // 0-dim float32 on the device: the batch's mean weighted loss
	LR         float64    // learning rate used by this step's update
	Skipped    bool       // loss scaling found a non-finite gradient; no update
	LgScale    float64    // log2 loss scale after this step (loss scaling only)
	Microbatch int        // microbatch size used (after any OOM retry)
}

// public is the configuration as recorded in checkpoints (callbacks and the
// output writer are not serialised).
func (c *Config) public() any { return *c }
