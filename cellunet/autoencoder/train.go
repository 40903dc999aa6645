package autoencoder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// ErrInterrupted is wrapped by Train's error when its context was
// cancelled: the current step was finished and a checkpoint written.
var ErrInterrupted = errors.New("autoencoder: training interrupted")

// TrainConfig is one autoencoder training run (VAE_train.py). Use
// DefaultTrainConfig and override fields; the zero value is not valid.
type TrainConfig struct {
	// Model is the architecture; Model.Genes must equal the data's column
	// count.
	Model Config
	// Device holds the model, the optimizer state and each batch.
	Device ct.Device
	// Seed seeds the initialisation (cgotorch.ManualSeed, as
	// torch.manual_seed before building the model), the data order and
	// Dropout. Reference: seed_everything(1234).
	Seed uint64
	// FileSeed is the {seed} of the checkpoint names (the reference's
	// --seed, default 0, which only names files).
	FileSeed int
	// BatchSize is the number of cells per step (reference 128). Batches
	// are consecutive slices of a seeded random permutation of the rows,
	// drawn anew every epoch; the last incomplete batch is dropped.
	BatchSize int
	// LR and WeightDecay are AdamW's (reference 5e-4 and 0.01; betas
	// (0.9, 0.999), eps 1e-8, no schedule, no clipping).
	LR, WeightDecay float64
	// MaxSteps is the number of updates; step labels run 0..MaxSteps-1
	// (reference 200,000).
	MaxSteps int
	// CheckpointFreq writes a checkpoint after step labels divisible by it
	// (reference 50,000); the last step is always written.
	CheckpointFreq int
	// LogEvery prints the mean loss of the steps since the previous line
	// at step labels divisible by it and at the last step (reference
	// prints every 1,000 steps).
	LogEvery int
	// MaxDuration stops training after the first step that ends later than
	// this after the start, writing a checkpoint (the reference's
	// max_minutes, 3000); 0 means no limit.
	MaxDuration time.Duration
	// SaveDir receives the checkpoints (created with parents). Required.
	SaveDir string
	// SaveState writes a sidecar state_seed={seed}_step={step}.safetensors
	// with each checkpoint: AdamW moments (2× the parameters), data order
	// and RNG states, so that Resume continues bit-exactly. Default true.
	SaveState bool
	// Resume continues from a checkpoint model_seed={seed}_step={S}.pt at
	// step S+1: exactly if its sidecar exists, else from its weights with
	// fresh AdamW moments and a fresh data order.
	Resume string
	// Init, if set, loads initial weights (a checkpoint of the same
	// architecture) instead of the seeded initialisation.
	Init string
	// Pretrained, if set, is an SCimilarity model directory loaded over the
	// seeded initialisation as the reference's --state_dict does
	// (Model.LoadPretrained); what was loaded is printed to Out.
	Pretrained string
	// Out receives progress lines; nil discards them.
	Out io.Writer
	// OnLog, if set, is called with every logged point.
	OnLog func(LogPoint)
	// AfterStep, if set, is called after every step's update at the fixed
	// phase where memory is sampled (the memory monitor).
	AfterStep func(step int)
	// BeforeRun, if set, runs once after the model is built and any
	// checkpoint restored, before the first step and before anything is
	// written to SaveDir; an error aborts Train with nothing on disk
	// changed. Callers create their own files here.
	BeforeRun func() error
	// Step selects the implementation of forward and backward: "auto" (or
	// "", the default) uses the fused step (Model.NewFusedStep: hand-written
	// forward and backward over buffers allocated once, the AdamW update
	// applied as each gradient is ready) where it applies — CPU, no dropout,
	// a single process — and autograd otherwise; "fused" requires it;
	// "generic" forces autograd (CLI: --train_step).
	Step string
	// Comm, if not nil, makes this process one rank of a data-parallel
	// run: BatchSize stays the global batch, each rank densifies and
	// computes an equal shard of it, BatchNorm normalises with the global
	// batch's statistics (SetBatchNormSync), gradients are summed over the
	// ranks before the update, rank 0's state is broadcast at the start and
	// only rank 0 writes checkpoints. Dropout must be 0. The step is
	// autograd's (the synchronised BatchNorm is differentiated through
	// the all-reduce), never the fused one.
	Comm *dist.Comm
}

// DefaultTrainConfig is the reference's training for genes genes on the
// CPU: DefaultConfig(genes), seed 1234, file seed 0, batch 128, AdamW lr
// 5e-4, weight decay 0.01, 200,000 steps, checkpoints every 50,000, a log
// line every 1,000 steps, sidecar state on. SaveDir must be set.
func DefaultTrainConfig(genes int64) TrainConfig {
	return TrainConfig{
		Model: DefaultConfig(genes), Device: ct.CPU, Seed: 1234, BatchSize: 128,
		LR: 5e-4, WeightDecay: 0.01, MaxSteps: 200000, CheckpointFreq: 50000, LogEvery: 1000,
		SaveState: true,
	}
}

// Validate reports configuration errors.
func (c TrainConfig) Validate() error {
	if err := c.Model.Validate(); err != nil {
		return err
	}
	switch {
	case c.BatchSize < 2:
		return fmt.Errorf("autoencoder: batch size must be at least 2 (train-mode BatchNorm), got %d", c.BatchSize)
	case c.LR <= 0 || c.WeightDecay < 0:
		return fmt.Errorf("autoencoder: need lr > 0 and weight decay >= 0, got %v and %v", c.LR, c.WeightDecay)
	case c.MaxSteps <= 0:
		return fmt.Errorf("autoencoder: max steps must be positive, got %d", c.MaxSteps)
	case c.CheckpointFreq <= 0 || c.LogEvery <= 0:
		return fmt.Errorf("autoencoder: checkpoint frequency and log interval must be positive, got %d and %d", c.CheckpointFreq, c.LogEvery)
	case c.SaveDir == "":
		return fmt.Errorf("autoencoder: SaveDir is required")
	case c.Resume != "" && c.Init != "", c.Resume != "" && c.Pretrained != "", c.Init != "" && c.Pretrained != "":
		return fmt.Errorf("autoencoder: Resume, Init and Pretrained are exclusive")
	case c.Step != "" && c.Step != "auto" && c.Step != "fused" && c.Step != "generic":
		return fmt.Errorf("autoencoder: unknown train_step %q (want auto, fused or generic)", c.Step)
	}
	if r := c.fusedReason(); c.Step == "fused" && r != "" {
		return fmt.Errorf("autoencoder: train_step fused does not cover %s; use train_step auto or generic (autograd)", r)
	}
	return nil
}

// ResumeError is returned by Train when TrainConfig.Resume cannot be
// restored (misnamed, missing, corrupt, or written for other data or
// another model). Nothing was written.
type ResumeError struct {
	Path string
	Err  error
}

func (e *ResumeError) Error() string { return e.Err.Error() }
func (e *ResumeError) Unwrap() error { return e.Err }

// fusedReason says why the fused step does not cover the run ("" if it
// does).
func (c TrainConfig) fusedReason() string {
	if c.Comm != nil {
		// The fused step's BatchNorm uses its own rows' statistics; a
		// data-parallel rank needs the global batch's (sync BatchNorm).
		return "data-parallel training, whose BatchNorm statistics are synchronised over the processes through autograd"
	}
	return c.Model.fusedReason(c.Device)
}

// useFused reports whether training uses the fused step.
func (c TrainConfig) useFused() bool {
	return c.Step != "generic" && c.fusedReason() == ""
}

// LogPoint is one logged loss: the mean training loss (MSE) of the Steps
// steps ending at step label Step.
type LogPoint struct {
	Step  int
	Loss  float64
	Steps int
}

// Result summarises a Train call.
type Result struct {
	// Steps is the number of updates this call made; NextStep the step
	// label a resumed run starts at.
	Steps, NextStep int
	// Checkpoint is the last checkpoint written ("" if none).
	Checkpoint string
	// Log holds every logged point of this call.
	Log []LogPoint
	// StoppedEarly is set when MaxDuration ended the run.
	StoppedEarly bool
	// Duration is the wall time of the training loop.
	Duration time.Duration
}

// Train trains the autoencoder on data (rows = cells, Cols() = genes of
// log1p expression): every step densifies one batch of BatchSize rows on
// the host, uploads it, and makes one AdamW update (a single fused pass
// over flat parameter, gradient and moment buffers) on MSE(mean) between
// the raw reconstruction and the batch, with the model in train mode
// (batch-statistics BatchNorm, running statistics updated). Checkpoints
// CheckpointName(FileSeed, step) are written to SaveDir. If ctx is
// cancelled it finishes the current step, writes a checkpoint and returns
// an error wrapping ErrInterrupted. Training never densifies the whole
// matrix; memory is parameters + gradients + 2 moments (4× the model) plus
// one batch and its activations.
func Train(ctx context.Context, cfg TrainConfig, data RowSource) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if g := data.Cols(); int64(g) != cfg.Model.Genes {
		return Result{}, fmt.Errorf("autoencoder: the data has %d genes (columns) but the model has %d genes", g, cfg.Model.Genes)
	}
	if n := data.Rows(); n < cfg.BatchSize {
		return Result{}, fmt.Errorf("autoencoder: the data has %d cells, fewer than the batch size %d (the last incomplete batch is dropped)", n, cfg.BatchSize)
	}
	// Grad mode belongs to the OS thread: keep the loop on one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tr, err := newTrainer(cfg, data)
	if err != nil {
		return Result{}, err
	}
	defer tr.close()
	// Nothing has been written yet: the caller may still refuse the run
	// (data-parallel ranks agree on it, so that one refusal stops all).
	if cfg.BeforeRun != nil {
		err = cfg.BeforeRun()
	}
	if tr.comm != nil {
		err = tr.comm.Agree(err, "could not start the run")
	}
	if err != nil {
		return Result{}, err
	}
	return tr.run(ctx)
}

type trainer struct {
	cfg   TrainConfig
	out   io.Writer
	data  RowSource
	store *nn.Store
	model *Model
	gen   *ct.Generator // Dropout

	fused    *ct.AEStep // the fused step (nil: autograd)
	m, v     *ct.Tensor // AdamW moments over the flat parameters
	adamStep int64

	pcg   *rand.PCG // data order
	perm  []int64
	pos   int // next batch within the epoch
	epoch int
	host  []float32 // one dense batch [B·G]

	lossSum *ct.Tensor // float64 [] on the device: Σ loss since the last log line
	lossN   int

	step      int // label of the next step
	lastSaved int

	comm *dist.Comm // nil: a single process
	dp   dpStep
}

// newTrainer builds the trainer; on error everything it built is released
// (the deferred close works on the local value, never on a nil result).
func newTrainer(cfg TrainConfig, data RowSource) (*trainer, error) {
	tr := &trainer{cfg: cfg, out: cfg.Out, data: data, lastSaved: -1,
		pcg: rand.NewPCG(cfg.Seed, 0x5ce11d1f), comm: cfg.Comm}
	if tr.out == nil {
		tr.out = io.Discard
	}
	built := false
	defer func() {
		if !built {
			tr.close()
		}
	}()
	var err error
	if err := ct.ManualSeed(cfg.Seed); err != nil {
		return nil, err
	}
	tr.store = nn.NewStore(cfg.Device)
	if tr.model, err = New(tr.store.Root(), cfg.Model); err != nil {
		return nil, err
	}
	if cfg.Init != "" {
		if err := tr.model.LoadCheckpoint(cfg.Init); err != nil {
			return nil, err
		}
	}
	if cfg.Pretrained != "" {
		if err := tr.loadPretrained(cfg.Pretrained); err != nil {
			return nil, err
		}
	}
	// The fused step writes its gradients (or never materialises them):
	// no zeroed buffer for it.
	flatten := tr.store.Flatten
	if cfg.useFused() {
		flatten = tr.store.FlattenForWriters
	}
	if err := flatten(); err != nil {
		return nil, err
	}
	if tr.gen, err = ct.NewGenerator(cfg.Device, cfg.Seed+1); err != nil {
		return nil, err
	}
	tr.model.SetDropoutGenerator(tr.gen)
	p := tr.store.NumParams()
	err = ct.Try(func() {
		o := ct.On(cfg.Device)
		tr.m, tr.v = ct.Zeros(o, p), ct.Zeros(o, p)
		tr.lossSum = ct.Zeros(ct.Options{DType: ct.Float64, Device: cfg.Device})
	})
	if err != nil {
		return nil, err
	}
	rows := int64(cfg.BatchSize)
	if tr.comm != nil {
		if rows, err = tr.setupDist(); err != nil {
			return nil, err
		}
	}
	tr.host = make([]float32, rows*cfg.Model.Genes)
	// Only rank 0 reads the checkpoint; startDist hands its state to the others.
	var resumeErr error
	if cfg.Resume != "" && tr.comm.IsRoot() {
		if err := tr.resume(cfg.Resume); err != nil {
			resumeErr = &ResumeError{Path: cfg.Resume, Err: err}
		}
	}
	if tr.comm != nil {
		err = tr.startDist(resumeErr)
	} else {
		err = resumeErr
	}
	if err != nil {
		return nil, err
	}
	if cfg.useFused() {
		if tr.fused, err = tr.model.NewFusedStep(); err != nil {
			return nil, err
		}
		if err := tr.fused.Reserve(int64(cfg.BatchSize)); err != nil {
			return nil, err
		}
	}
	built = true
	return tr, nil
}

func (tr *trainer) close() {
	tr.fused.Close()
	if tr.store != nil {
		tr.store.Close()
	}
	tr.gen.Close()
	tr.m.Free()
	tr.v.Free()
	tr.lossSum.Free()
	tr.dp.free()
}

func (tr *trainer) announce() {
	const mib = 1 << 20
	c := tr.cfg
	p := float64(tr.store.NumParams() * 4)
	fmt.Fprintf(tr.out, "autoencoder %d genes, hidden %v, latent %d: %d parameters on %s\n",
		c.Model.Genes, c.Model.Hidden, c.Model.Latent, tr.store.NumParams(), c.Device)
	fmt.Fprintf(tr.out, "memory: parameters %.1f MiB, gradients %.1f MiB, AdamW state %.1f MiB, batch %d×%d = %.1f MiB\n",
		p/mib, p/mib, 2*p/mib, c.BatchSize, c.Model.Genes, float64(len(tr.host)*4)/mib)
	fmt.Fprintf(tr.out, "data: %d cells, %d batches per epoch; steps %d..%d, AdamW lr %g wd %g\n",
		tr.data.Rows(), tr.data.Rows()/c.BatchSize, tr.step, c.MaxSteps-1, c.LR, c.WeightDecay)
	switch {
	case tr.fused != nil:
		if info, err := tr.fused.Info(); err == nil {
			fmt.Fprintf(tr.out, "training step: fused (CPU kernels): activations %.1f MiB for batch %d, allocated once; 0 tensor allocations per step\n",
				float64(info.WorkspaceBytes)/mib, info.Rows)
		}
	case c.Step == "generic":
		fmt.Fprintln(tr.out, "training step: autograd (forced)")
	default:
		fmt.Fprintf(tr.out, "training step: autograd (the fused step does not cover %s)\n", c.fusedReason())
	}
}

func (tr *trainer) run(ctx context.Context) (Result, error) {
	tr.announce()
	start := time.Now()
	first := tr.step
	var res Result
	finish := func() {
		res.Steps, res.NextStep, res.Duration = tr.step-first, tr.step, time.Since(start)
	}
	interrupt := func() (Result, error) {
		if tr.step > first && tr.lastSaved != tr.step-1 {
			if err := tr.save(tr.step - 1); err != nil {
				finish()
				return res, fmt.Errorf("%w; writing the checkpoint failed: %v", ErrInterrupted, err)
			}
		}
		res.Checkpoint = tr.lastPath()
		finish()
		return res, fmt.Errorf("%w at step %d; checkpoint %q", ErrInterrupted, tr.step, res.Checkpoint)
	}
	for tr.step < tr.cfg.MaxSteps {
		// Data-parallel ranks carry a stop request, and their clock, into
		// the step's agreement, so that every rank stops after the same step.
		tr.dp.stopRequested = ctx.Err() != nil
		tr.dp.timeUp = tr.cfg.MaxDuration > 0 && time.Since(start) >= tr.cfg.MaxDuration
		if tr.dp.stopRequested && tr.comm == nil {
			return interrupt()
		}
		label := tr.step
		if err := tr.runStep(); err != nil {
			if tr.comm != nil {
				err = tr.stopOnFailure(err, first)
				res.Checkpoint = tr.lastPath()
			}
			finish()
			return res, fmt.Errorf("autoencoder: step %d: %w", label, err)
		}
		tr.step++
		if tr.cfg.AfterStep != nil {
			tr.cfg.AfterStep(label)
		}
		last := tr.step == tr.cfg.MaxSteps
		if label%tr.cfg.LogEvery == 0 || last {
			lp, err := tr.log(label)
			if err != nil {
				finish()
				return res, err
			}
			res.Log = append(res.Log, lp)
			fmt.Fprintf(tr.out, "step %d: loss %.6f (mean of %d steps), %.1f steps/s\n",
				label, lp.Loss, lp.Steps, float64(tr.step-first)/time.Since(start).Seconds())
			if tr.cfg.OnLog != nil {
				tr.cfg.OnLog(lp)
			}
		}
		overtime := tr.cfg.MaxDuration > 0 && time.Since(start) >= tr.cfg.MaxDuration
		if tr.comm != nil {
			overtime = tr.dp.timeUpAgreed
		}
		if label%tr.cfg.CheckpointFreq == 0 || last || overtime {
			if err := tr.save(label); err != nil {
				finish()
				return res, err
			}
		}
		if overtime && !last {
			fmt.Fprintf(tr.out, "stopping after step %d: the run exceeded %v\n", label, tr.cfg.MaxDuration)
			res.StoppedEarly = true
			break
		}
		if tr.dp.stopAgreed && !last {
			return interrupt()
		}
	}
	res.Checkpoint = tr.lastPath()
	finish()
	return res, nil
}

func (tr *trainer) lastPath() string {
	if tr.lastSaved < 0 {
		return ""
	}
	return filepath.Join(tr.cfg.SaveDir, CheckpointName(tr.cfg.FileSeed, tr.lastSaved))
}

// nextBatch returns the row indices of the next batch (drop_last: a new
// permutation once fewer than BatchSize rows remain in the epoch).
func (tr *trainer) nextBatch() []int64 {
	b, n := tr.cfg.BatchSize, tr.data.Rows()
	if tr.perm == nil || (tr.pos+1)*b > n {
		tr.dp.keepPerm(tr.perm) // a data-parallel step may be undone
		if tr.perm == nil {
			tr.perm = make([]int64, n)
		}
		for i := range tr.perm {
			tr.perm[i] = int64(i)
		}
		r := rand.New(tr.pcg)
		r.Shuffle(n, func(i, j int) { tr.perm[i], tr.perm[j] = tr.perm[j], tr.perm[i] })
		tr.pos = 0
		tr.epoch++
	}
	idx := tr.perm[tr.pos*b : (tr.pos+1)*b]
	tr.pos++
	return idx
}

func (tr *trainer) runStep() error {
	if tr.comm != nil {
		tr.markStep()
	}
	c := tr.cfg
	opt := ct.AdamWConfig{LR: c.LR, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: c.WeightDecay}
	if tr.fused != nil { // a single process (fusedReason)
		idx := tr.nextBatch()
		if err := tr.data.Dense(idx, tr.host); err != nil {
			return fmt.Errorf("reading a batch: %w", err)
		}
		// Forward, backward and the update in one call, no tensor allocated.
		err := tr.fused.Run(tr.host, int64(c.BatchSize), tr.lossSum,
			&ct.FusedUpdate{Params: tr.store.FlatParams(), ExpAvg: tr.m, ExpAvgSq: tr.v, Step: tr.adamStep + 1, Config: opt})
		if err != nil {
			return err
		}
		tr.adamStep++
		tr.lossN++
		return nil
	}
	s := ct.NewScope()
	defer s.Close()
	var loss *ct.Tensor
	lerr := func() error {
		idx := tr.nextBatch()
		if tr.comm != nil {
			idx = idx[tr.dp.off : tr.dp.off+tr.dp.n] // this rank's shard
		}
		if err := tr.data.Dense(idx, tr.host); err != nil {
			return fmt.Errorf("reading a batch: %w", err)
		}
		return ct.Try(func() {
			x := s.FromBytes(f32bytes(tr.host), ct.Options{DType: ct.Float32, Device: c.Device}, int64(len(idx)), c.Model.Genes)
			loss = tr.model.Loss(x)
			if tr.comm != nil {
				// This shard's share of the global batch's mean: the sum
				// over ranks of the gradients is the single-process one.
				loss = loss.MulScalar(float64(len(idx)) / float64(c.BatchSize))
			}
			loss.Backward()
		})
	}()
	if tr.comm != nil {
		// The seam between gradient production and the update: agree on
		// the step, sum the loss and the gradients over the ranks.
		loss, lerr = tr.reduceStep(s, loss, lerr)
	}
	if lerr != nil {
		return lerr
	}
	var stepErr error
	err := ct.Try(func() {
		tr.adamStep++
		stepErr = ct.FusedAdamW(tr.store.FlatParams(), tr.store.FlatGrads(), tr.m, tr.v, tr.adamStep, opt, ct.FusedStep{ZeroGrad: true})
		tr.lossSum.Add_(loss.Detach())
		tr.lossN++
	})
	if err != nil {
		return err
	}
	return stepErr
}

// log reads and resets the loss window (one host synchronisation).
func (tr *trainer) log(label int) (LogPoint, error) {
	var sum float64
	if err := ct.Try(func() { sum = tr.lossSum.Item(); tr.lossSum.Zero_() }); err != nil {
		return LogPoint{}, err
	}
	lp := LogPoint{Step: label, Loss: sum / float64(tr.lossN), Steps: tr.lossN}
	tr.lossN = 0
	return lp, nil
}

// save writes checkpoint label (the parameters after label+1 updates) and,
// with SaveState, its sidecar (written second: a checkpoint whose sidecar
// is missing resumes from its weights only).
func (tr *trainer) save(label int) error {
	if !tr.comm.IsRoot() { // data-parallel ranks hold identical state: rank 0 writes it
		tr.lastSaved = label
		return nil
	}
	path := filepath.Join(tr.cfg.SaveDir, CheckpointName(tr.cfg.FileSeed, label))
	if err := tr.model.Save(path); err != nil {
		return err
	}
	if tr.cfg.SaveState {
		if err := tr.saveState(label); err != nil {
			return fmt.Errorf("autoencoder: saving the training state of step %d: %w", label, err)
		}
	}
	tr.lastSaved = label
	fmt.Fprintf(tr.out, "saved %s\n", path)
	return nil
}
