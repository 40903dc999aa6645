package classifier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// ErrInterrupted is wrapped by Train's error when its context was
// cancelled: the current step was finished and a checkpoint written.
var ErrInterrupted = errors.New("classifier: training interrupted")

// ErrData is wrapped by Train's errors about its input rather than the
// computation: data that does not fit the configuration (widths, label
// range, too few cells) and checkpoints to resume from that are missing,
// unreadable or of another run.
var ErrData = errors.New("invalid data or checkpoint")

// ResumeError is returned by Train when TrainConfig.Resume cannot be
// restored (missing, unreadable, or a checkpoint of another run); it wraps
// ErrData and the cause.
type ResumeError struct {
	Path string
	Err  error
}

func (e *ResumeError) Error() string { return e.Err.Error() }
func (e *ResumeError) Unwrap() error { return e.Err }

// TrainConfig is one classifier training run (classifier_train.py). Use
// DefaultTrainConfig and override fields; the zero value is not valid.
type TrainConfig struct {
	Model     Config
	Diffusion diffusion.Config
	// ScheduleSampler draws the noise levels: "uniform" (the reference's
	// default) or "loss-second-moment". classifier_train.py never feeds
	// losses back to the sampler, so both draw t uniformly; the name is
	// checked for compatibility.
	ScheduleSampler string
	// StartGuideTime is S: training steps t are drawn from 0..S-1, the
	// noise levels at which guidance is applied (reference 500).
	StartGuideTime int
	// Noised trains on x_t = q_sample(z0, t); without it on clean latents
	// with t = 0 (the reference's --noised False).
	Noised bool
	Device ct.Device
	// Seed seeds the initialisation (cgotorch.ManualSeed before building
	// the model, as setup_seed(1234) then create_classifier), the data
	// order, the noise and timesteps, and the dropout masks.
	Seed uint64

	// BatchSize is the number of cells per step (reference 128); batches
	// are consecutive slices of a per-epoch random permutation, the last
	// incomplete one dropped. Microbatch (<= 0: the whole batch) splits the
	// forward/backward; each slice's loss is scaled by len(slice)/B as the
	// reference does, and BatchNorm sees each slice's statistics.
	BatchSize, Microbatch int
	// LR and WeightDecay are AdamW's (reference 3e-4 and 0; betas
	// (0.9, 0.999), eps 1e-8). With AnnealLR the learning rate of step S is
	// LR·(1 − S/Iterations).
	LR, WeightDecay float64
	AnnealLR        bool
	// Iterations is the number of updates; step labels run
	// 0..Iterations-1 (reference 500,000).
	Iterations int
	// LogInterval prints and records the window means at step labels
	// divisible by it (reference 100). EvalInterval evaluates one held-out
	// batch at labels divisible by it, when Train gets validation data.
	LogInterval, EvalInterval int
	// SaveInterval writes a checkpoint at labels S > 0 divisible by it
	// (reference 100,000); the last step S = Iterations−1 is always
	// written. Checkpoint S holds the weights after S+1 updates.
	SaveInterval int
	// SaveDir receives model{S:06d}.pt, opt{S:06d}.pt, state{S:06d}.safetensors
	// and progress.csv (created with parents). Required.
	SaveDir string
	// Resume continues after a checkpoint: a model{S:06d}.pt file or a
	// directory (its newest complete checkpoint). With the state file the
	// run continues exactly at step S+1; a reference checkpoint (model and
	// optimizer only) continues at S+1 with fresh random streams.
	Resume string

	// Comm, if not nil, makes this process one rank of a data-parallel
	// run (see dist.go): BatchSize stays the global batch, each rank
	// computes BatchSize/Size rows of it in one pass (Microbatch must be
	// unset or cover them), and only rank 0 writes to SaveDir. The run's
	// mathematics is the single process's on the whole batch.
	Comm *dist.Comm

	// Out receives progress lines; nil discards them.
	Out io.Writer
	// BeforeRun, if set, runs once in Train after the model is built, the
	// data checked and any checkpoint restored, before the first step and
	// before anything is written to SaveDir (progress.csv included); an
	// error aborts Train with nothing on disk changed. Callers create their
	// own files here.
	BeforeRun func() error
	// AfterStep, if set, runs after every step's update (memory monitor).
	AfterStep func(step int)
	// OnLog, if set, receives every logged record.
	OnLog func(LogRecord)
}

// DefaultTrainConfig is classifier_train.py's defaults for numClass classes
// on the CPU: batch 128, AdamW lr 3e-4 wd 0, no annealing, 500,000
// iterations, t < 500, logs every 100 steps, checkpoints every 100,000.
// SaveDir must be set.
func DefaultTrainConfig(numClass int64) TrainConfig {
	return TrainConfig{
		Model: DefaultConfig(numClass), Diffusion: diffusion.DefaultConfig(), ScheduleSampler: "uniform",
		StartGuideTime: 500, Noised: true, Device: ct.CPU, Seed: 1234, BatchSize: 128, Microbatch: -1,
		LR: 3e-4, Iterations: 500000, LogInterval: 100, EvalInterval: 100, SaveInterval: 100000,
	}
}

// Validate reports configuration errors.
func (c TrainConfig) Validate() error {
	if err := c.Model.Validate(); err != nil {
		return err
	}
	switch {
	case c.BatchSize < 2:
		return fmt.Errorf("classifier: batch_size must be at least 2 (train-mode BatchNorm), got %d", c.BatchSize)
	case c.Microbatch == 1:
		return fmt.Errorf("classifier: microbatch 1 cannot train BatchNorm (it needs 2 rows per slice)")
	case c.LR < 0 || c.WeightDecay < 0:
		return fmt.Errorf("classifier: need lr >= 0 and weight_decay >= 0, got %v and %v", c.LR, c.WeightDecay)
	case c.Iterations <= 0:
		return fmt.Errorf("classifier: iterations must be positive, got %d", c.Iterations)
	case c.LogInterval <= 0 || c.EvalInterval <= 0 || c.SaveInterval <= 0:
		return fmt.Errorf("classifier: log_interval, eval_interval and save_interval must be positive, got %d, %d and %d",
			c.LogInterval, c.EvalInterval, c.SaveInterval)
	case c.Diffusion.Steps <= 0:
		return fmt.Errorf("classifier: diffusion_steps must be positive, got %d", c.Diffusion.Steps)
	case c.StartGuideTime <= 0 || c.StartGuideTime > c.Diffusion.Steps:
		return fmt.Errorf("classifier: start_guide_time must be in 1..%d (diffusion_steps), got %d", c.Diffusion.Steps, c.StartGuideTime)
	case c.SaveDir == "":
		return fmt.Errorf("classifier: the save directory is required")
	}
	switch c.ScheduleSampler {
	case "uniform", "loss-second-moment":
	default:
		return fmt.Errorf("classifier: unknown schedule_sampler %q (want uniform or loss-second-moment)", c.ScheduleSampler)
	}
	return nil
}

func (c TrainConfig) microbatch() int {
	if c.Microbatch <= 0 || c.Microbatch > c.BatchSize {
		return c.BatchSize
	}
	return c.Microbatch
}

// Data is a labelled latent table on the training device: Latents [N,D]
// float32 and Labels [N] int64 in 0..K-1. Train reads, never frees them.
type Data struct {
	Latents, Labels *ct.Tensor
}

// Result summarises a Train call.
type Result struct {
	// Steps is the number of updates this call made; NextStep the label a
	// resumed run would start at.
	Steps, NextStep int
	// Checkpoint is the model file of the last checkpoint written.
	Checkpoint string
	// Log holds every logged record of this call.
	Log      []LogRecord
	Duration time.Duration
}

// Train trains a Cell_classifier on noised latents: each step draws a batch,
// t ~ U{0..StartGuideTime−1}, x_t = q_sample(z0, t, ε) with float32 ε, and
// makes one AdamW update on the mean cross-entropy of classifier(x_t, t)
// (model in training mode: batch-statistics BatchNorm, Dropout). The
// optimizer is one fused pass over flat parameters; losses and accuracies
// are accumulated on the device, read once per log line. val, if non-nil,
// is evaluated (evaluation mode, no-grad, one noised batch) every
// EvalInterval steps. If ctx is cancelled Train finishes the current step,
// writes a checkpoint and returns an error wrapping ErrInterrupted.
func Train(ctx context.Context, cfg TrainConfig, train Data, val *Data) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	runtime.LockOSThread() // grad mode is per OS thread
	defer runtime.UnlockOSThread()
	tr, err := newTrainer(cfg, train, val)
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
	if tr.comm.IsRoot() {
		if tr.csv, err = openCSV(cfg.SaveDir, tr.step > 0); err != nil {
			return Result{}, err
		}
	}
	return tr.run(ctx)
}

type trainer struct {
	cfg   TrainConfig
	out   io.Writer
	store *nn.Store
	model *Model
	diff  *diffusion.Diffusion
	samp  diffusion.Sampler

	train, val        *batcher
	dataGen, noiseGen *ct.Generator
	dropGen           *ct.Generator
	valGen            *ct.Generator

	m, v     *ct.Tensor // AdamW moments over the flat parameters
	adamStep int64
	lr       float64
	win      *window
	csv      *csvLog

	step      int // label of the next step
	lastSaved int

	comm *dist.Comm // nil: a single process
	dp   dpStep
}

func newTrainer(cfg TrainConfig, train Data, val *Data) (_ *trainer, err error) {
	tr := &trainer{cfg: cfg, out: cfg.Out, lr: cfg.LR, lastSaved: -1, comm: cfg.Comm}
	if tr.out == nil {
		tr.out = io.Discard
	}
	defer func() {
		if err != nil {
			tr.close()
		}
	}()
	if err := ct.ManualSeed(cfg.Seed); err != nil {
		return nil, err
	}
	if cfg.Device.IsCUDA() {
		if err := ct.CUDAManualSeedAll(cfg.Seed); err != nil {
			return nil, err
		}
	}
	tr.store = nn.NewStore(cfg.Device)
	if tr.model, err = New(tr.store.Root(), cfg.Model); err != nil {
		return nil, err
	}
	if tr.comm != nil {
		err = tr.setupDist() // the flat gradient buffer too
	} else {
		err = tr.store.FlattenParams()
	}
	if err != nil {
		return nil, err
	}
	if tr.diff, err = diffusion.New(cfg.Diffusion, cfg.Device); err != nil {
		return nil, err
	}
	if tr.samp, err = diffusion.NewSampler(cfg.ScheduleSampler, cfg.StartGuideTime, cfg.Device); err != nil {
		return nil, err
	}
	gens := []**ct.Generator{&tr.dataGen, &tr.noiseGen, &tr.dropGen, &tr.valGen}
	for i, g := range gens {
		if *g, err = ct.NewGenerator(cfg.Device, cfg.Seed+uint64(i)+1); err != nil {
			return nil, err
		}
	}
	tr.model.SetDropoutGenerator(tr.dropGen)
	if tr.train, err = newBatcher(train, cfg, tr.dataGen, "training"); err != nil {
		return nil, err
	}
	if val != nil {
		if tr.val, err = newBatcher(*val, cfg, tr.valGen, "validation"); err != nil {
			return nil, err
		}
	}
	if tr.win, err = newWindow(cfg.Device, cfg.Diffusion.Steps); err != nil {
		return nil, err
	}
	p := tr.store.NumParams()
	if err := ct.Try(func() { tr.m, tr.v = ct.Zeros(ct.On(cfg.Device), p), ct.Zeros(ct.On(cfg.Device), p) }); err != nil {
		return nil, err
	}
	// Only rank 0 reads the checkpoint; startDist hands its state to the others.
	var resumeErr error
	if cfg.Resume != "" && tr.comm.IsRoot() {
		if err := tr.resume(cfg.Resume); err != nil {
			if !errors.Is(err, ct.ErrOutOfMemory) {
				err = &ResumeError{Path: cfg.Resume, Err: fmt.Errorf("%w (%w)", err, ErrData)}
			}
			resumeErr = err
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
	return tr, nil
}

func (tr *trainer) close() {
	if tr.model != nil {
		tr.model.Close()
	}
	if tr.store != nil {
		tr.store.Close()
	}
	if tr.diff != nil {
		tr.diff.Close()
	}
	if tr.samp != nil {
		tr.samp.Close()
	}
	tr.train.close()
	tr.val.close()
	for _, g := range []*ct.Generator{tr.dataGen, tr.noiseGen, tr.dropGen, tr.valGen} {
		g.Close()
	}
	tr.m.Free()
	tr.v.Free()
	tr.win.close()
	tr.csv.close()
	tr.dp.free()
}

func (tr *trainer) announce() {
	const mib = 1 << 20
	c := tr.cfg
	b := float64(tr.store.NumParams() * 4)
	fmt.Fprintf(tr.out, "Cell_classifier %d → %v → %d classes: %d parameters on %s (+ %d in the unused emb_layers3)\n",
		c.Model.InputDim, c.Model.Hidden[:3], c.Model.NumClass, tr.store.NumParams(), c.Device, c.Model.NumParams()-tr.store.NumParams())
	fmt.Fprintf(tr.out, "memory: parameters %.1f MiB, gradients %.1f MiB, AdamW state %.1f MiB\n", b/mib, b/mib, 2*b/mib)
	noise := fmt.Sprintf("noised latents, t < %d of %d", c.StartGuideTime, c.Diffusion.Steps)
	if !c.Noised {
		noise = "clean latents, t = 0"
	}
	fmt.Fprintf(tr.out, "data: %d cells, batch %d (microbatch %d), %d batches per epoch; %s; steps %d..%d, AdamW lr %g wd %g\n",
		tr.train.n, c.BatchSize, c.microbatch(), tr.train.n/int64(c.BatchSize), noise, tr.step, c.Iterations-1, c.LR, c.WeightDecay)
}

func (tr *trainer) run(ctx context.Context) (Result, error) {
	tr.announce()
	start := time.Now()
	first := tr.step
	var res Result
	finish := func() {
		res.Steps, res.NextStep, res.Duration = tr.step-first, tr.step, time.Since(start)
		if tr.lastSaved >= 0 {
			res.Checkpoint = modelFile(tr.cfg.SaveDir, tr.lastSaved)
		}
	}
	interrupt := func() (Result, error) {
		if tr.step > first && tr.lastSaved != tr.step-1 {
			if err := tr.save(tr.step - 1); err != nil {
				finish()
				return res, fmt.Errorf("%w; writing the checkpoint failed: %v", ErrInterrupted, err)
			}
		}
		finish()
		return res, fmt.Errorf("%w at step %d; checkpoint %q", ErrInterrupted, tr.step, res.Checkpoint)
	}
	for tr.step < tr.cfg.Iterations {
		// A data-parallel rank carries a stop request into the step's
		// agreement, so that every rank stops after the same step.
		tr.dp.stopRequested = ctx.Err() != nil
		if tr.dp.stopRequested && tr.comm == nil {
			return interrupt()
		}
		label := tr.step
		var err error
		if tr.comm != nil {
			if err = tr.runStepDist(label); err != nil {
				err = tr.stopOnFailure(err, first)
			}
		} else {
			err = tr.runStep(label)
		}
		if err != nil {
			finish()
			return res, fmt.Errorf("classifier: step %d: %w", label, err)
		}
		tr.step++
		if tr.val != nil && label%tr.cfg.EvalInterval == 0 {
			if err := tr.evaluate(); err != nil {
				finish()
				return res, fmt.Errorf("classifier: evaluating at step %d: %w", label, err)
			}
		}
		if tr.cfg.AfterStep != nil {
			tr.cfg.AfterStep(label)
		}
		if label%tr.cfg.LogInterval == 0 {
			rec, err := tr.dump(label)
			if err != nil {
				finish()
				return res, err
			}
			res.Log = append(res.Log, rec)
		}
		if (label > 0 && label%tr.cfg.SaveInterval == 0) || tr.step == tr.cfg.Iterations {
			if err := tr.save(label); err != nil {
				finish()
				return res, err
			}
		}
		if tr.dp.stopAgreed && tr.step < tr.cfg.Iterations {
			return interrupt()
		}
	}
	finish()
	return res, nil
}

// setLR sets the learning rate of update label: LR, or LR·(1 − label/Iterations) with AnnealLR.
func (tr *trainer) setLR(label int) {
	if tr.cfg.AnnealLR {
		tr.lr = tr.cfg.LR * (1 - float64(label)/float64(tr.cfg.Iterations))
	}
}

// adamW is classifier_train.py's AdamW at the current learning rate.
func (tr *trainer) adamW() ct.AdamWConfig {
	return ct.AdamWConfig{LR: tr.lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: tr.cfg.WeightDecay}
}

// runStep performs update label: batch, noise, forward/backward over the
// slices, AdamW, log window.
func (tr *trainer) runStep(label int) error {
	c := tr.cfg
	tr.setLR(label)
	s := ct.NewScope()
	defer s.Close()
	return ct.Try(func() {
		x0, y := tr.train.next(s)
		t, xt := tr.noised(s, x0, tr.noiseGen)
		B := int64(c.BatchSize)
		mb := int64(c.microbatch())
		var losses, hits []*ct.Tensor
		for off := int64(0); off < B; off += mb {
			n := min(mb, B-off)
			micro := ct.NewScope()
			func() {
				defer micro.Close()
				xj := micro.Adopt(xt.Narrow(0, off, n))
				tj := micro.Adopt(t.Narrow(0, off, n))
				yj := micro.Adopt(y.Narrow(0, off, n))
				logits := micro.Adopt(tr.model.Forward(xj, tj))
				ce := logits.CrossEntropy(yj, ct.ReduceNone)
				// classifier_train.py: loss.mean() · len(slice)/len(batch).
				ce.Mean().MulScalar(float64(n) / float64(B)).Backward()
				losses = append(losses, s.Adopt(ce.Detach()))
				hits = append(hits, s.Adopt(logits.Detach().Argmax(1, false).Eq(yj)))
			}()
		}
		grads, numel := tr.store.Grads(s)
		tr.adamStep++
		opt := tr.adamW()
		if err := ct.FusedAdamW(tr.store.FlatParams(), nil, tr.m, tr.v, tr.adamStep, opt, ct.FusedStep{Grads: grads, GradNumel: numel}); err != nil {
			panic(err)
		}
		for _, g := range grads {
			g.Free()
		}
		tr.store.ClearGrads()
		loss, hit := losses[0], hits[0]
		if len(losses) > 1 {
			loss, hit = s.Adopt(ct.Cat(losses, 0)), s.Adopt(ct.Cat(hits, 0))
		}
		tr.win.add(s, rowTrain, loss, hit, t)
	})
}

// runStepDist performs update label on a data-parallel rank (dist.go):
// the global batch's draws, this rank's rows forward and backward, the
// agreement and gradient all-reduce, AdamW, and the log window with the
// whole batch's losses.
func (tr *trainer) runStepDist(label int) error {
	tr.markStep()
	c := tr.cfg
	tr.setLR(label)
	s := ct.NewScope()
	defer s.Close()
	var t, loss, hit *ct.Tensor
	lerr := ct.Try(func() {
		x0, y := tr.train.next(s)
		var xt *ct.Tensor
		t, xt = tr.noised(s, x0, tr.noiseGen)
		off, n := tr.dp.off, tr.dp.n
		xj, tj, yj := xt.Narrow(0, off, n), t.Narrow(0, off, n), y.Narrow(0, off, n)
		logits := tr.model.Forward(xj, tj)
		ce := logits.CrossEntropy(yj, ct.ReduceNone)
		// This rank's share of the global batch's mean: the sum over ranks
		// of the gradients is the single process's.
		ce.Mean().MulScalar(float64(n) / float64(c.BatchSize)).Backward()
		loss, hit = ce.Detach(), logits.Detach().Argmax(1, false).Eq(yj)
	})
	gLoss, gHit, err := tr.reduceStep(s, loss, hit, lerr)
	if err != nil {
		return err
	}
	return ct.Try(func() {
		tr.adamStep++
		opt := tr.adamW()
		if err := ct.FusedAdamW(tr.store.FlatParams(), tr.store.FlatGrads(), tr.m, tr.v, tr.adamStep, opt, ct.FusedStep{ZeroGrad: true}); err != nil {
			panic(err)
		}
		tr.win.add(s, rowTrain, gLoss, gHit, t)
	})
}

// noised returns t [B] and x_t = q_sample(x0, t, ε) (or t = 0 and x0 when
// not Noised), owned by s. The timesteps are drawn before the noise.
func (tr *trainer) noised(s *ct.Scope, x0 *ct.Tensor, gen *ct.Generator) (t, xt *ct.Tensor) {
	B := x0.Dim(0)
	if !tr.cfg.Noised {
		return s.Zeros(ct.Options{DType: ct.Int64, Device: tr.cfg.Device}, B), x0
	}
	t, _ = tr.samp.Sample(s, B, gen)
	noise := s.Randn(ct.On(tr.cfg.Device), gen, x0.Shape()...)
	return t, s.Adopt(tr.diff.QSample(x0, t, noise))
}

// evaluate runs one validation batch in evaluation mode under no-grad.
func (tr *trainer) evaluate() error {
	s := ct.NewScope()
	defer s.Close()
	tr.model.SetTraining(false)
	defer tr.model.SetTraining(true)
	return ct.Try(func() {
		ct.NoGrad(func() {
			x0, y := tr.val.next(s)
			t, xt := tr.noised(s, x0, tr.valGen)
			logits := s.Adopt(tr.model.Forward(xt, t))
			ce := logits.CrossEntropy(y, ct.ReduceNone)
			tr.win.add(s, rowVal, ce, logits.Argmax(1, false).Eq(y), t)
		})
	})
}

func (tr *trainer) dump(label int) (LogRecord, error) {
	var rec LogRecord
	err := ct.Try(func() { rec = tr.win.dump() })
	if err != nil {
		return rec, err
	}
	rec.Step = label
	rec.Samples = int64(label+1) * int64(tr.cfg.BatchSize)
	rec.LR = tr.lr
	fmt.Fprintln(tr.out, rec.String())
	if tr.csv != nil { // nil on data-parallel ranks other than 0
		if err := tr.csv.write(rec); err != nil {
			fmt.Fprintf(tr.out, "warning: writing progress.csv: %v\n", err)
		}
	}
	if tr.cfg.OnLog != nil {
		tr.cfg.OnLog(rec)
	}
	return rec, nil
}

// batcher draws labelled batches on the device: a device-side permutation
// per epoch, consecutive slices of it, the last incomplete slice dropped
// (the reference's DataLoader with shuffle and drop_last, repeated).
type batcher struct {
	d     Data
	n, b  int64
	dev   ct.Device
	gen   *ct.Generator
	perm  *ct.Tensor // [N] int64, owned; nil before the first epoch
	pos   int64
	epoch int64
	mk    batchMark // a data-parallel step's start (dist.go)
}

func newBatcher(d Data, cfg TrainConfig, gen *ct.Generator, what string) (*batcher, error) {
	var n, nl, dim int64
	var ldt ct.DType
	if err := ct.Try(func() { n, dim, nl, ldt = d.Latents.Dim(0), d.Latents.Dim(1), d.Labels.Numel(), d.Labels.DType() }); err != nil {
		return nil, err
	}
	switch {
	case dim != cfg.Model.InputDim:
		return nil, fmt.Errorf("classifier: %w: the %s latents have %d columns, the classifier's input is %d", ErrData, what, dim, cfg.Model.InputDim)
	case nl != n || ldt != ct.Int64:
		return nil, fmt.Errorf("classifier: %w: the %s data has %d latents and %d labels (%s); want one int64 label per cell", ErrData, what, n, nl, ldt)
	case n < int64(cfg.BatchSize):
		return nil, fmt.Errorf("classifier: %w: the %s data has %d cells, fewer than batch_size %d (the last incomplete batch is dropped)", ErrData, what, n, cfg.BatchSize)
	}
	var lo, hi float64
	if err := ct.Try(func() {
		s := ct.NewScope()
		defer s.Close()
		lo, hi = s.Adopt(d.Labels.Min()).Item(), s.Adopt(d.Labels.Max()).Item()
	}); err != nil {
		return nil, err
	}
	if lo < 0 || hi >= float64(cfg.Model.NumClass) {
		return nil, fmt.Errorf("classifier: %w: the %s labels span %d..%d but the classifier has %d classes (num_class)", ErrData, what, int64(lo), int64(hi), cfg.Model.NumClass)
	}
	return &batcher{d: d, n: n, b: int64(cfg.BatchSize), dev: cfg.Device, gen: gen}, nil
}

// next returns the next batch's latents [B,D] and labels [B], owned by s.
func (bt *batcher) next(s *ct.Scope) (x, y *ct.Tensor) {
	if bt.perm == nil || (bt.pos+1)*bt.b > bt.n {
		if !bt.mk.on || bt.perm != bt.mk.perm { // the mark keeps its permutation
			bt.perm.Free()
		}
		bt.perm = (*ct.Scope)(nil).RandPerm(bt.n, ct.Options{DType: ct.Int64, Device: bt.dev}, bt.gen)
		bt.pos = 0
		bt.epoch++
	}
	idx := s.Adopt(bt.perm.Narrow(0, bt.pos*bt.b, bt.b))
	bt.pos++
	return s.Adopt(bt.d.Latents.IndexSelect(0, idx)), s.Adopt(bt.d.Labels.IndexSelect(0, idx))
}

func (bt *batcher) close() {
	if bt != nil {
		bt.commit()
		bt.perm.Free()
	}
}

// window accumulates per-sample losses and hits on the device between log
// lines: acc [2 rows (train, val), 3 quantities (Σ loss, Σ hit, samples),
// 5 columns (all, quartiles 0..3)] float64.
type window struct {
	acc   *ct.Tensor
	steps float64
}

const (
	rowTrain = 0
	rowVal   = 1
)

func newWindow(dev ct.Device, steps int) (*window, error) {
	w := &window{steps: float64(steps)}
	err := ct.Try(func() { w.acc = ct.Zeros(ct.Options{DType: ct.Float64, Device: dev}, 2, 3, 5) })
	return w, err
}

func (w *window) close() {
	if w != nil {
		w.acc.Free()
	}
}

// add records per-sample losses [B], hits [B] (bool) and steps t [B].
func (w *window) add(s *ct.Scope, row int64, loss, hit, t *ct.Tensor) {
	o := ct.Options{DType: ct.Float64, Device: loss.Device()}
	vals := ct.Stack([]*ct.Tensor{loss.ToDType(ct.Float64), hit.ToDType(ct.Float64), s.Ones(o, loss.Dim(0))}, 0) // [3,B]
	r := s.Adopt(w.acc.Narrow(0, row, 1)).View(3, 5)
	s.Adopt(r.Narrow(1, 0, 1)).Add_(vals.SumDims(true, 1))
	// Quartile of a sample: ⌊4t/T⌋, as the reference's log_loss_dict.
	q := t.MulScalar(4).DivScalar(w.steps).Floor().ToDType(ct.Int64).ClampMax(3)
	s.Adopt(r.Narrow(1, 1, 4)).IndexAdd_(1, q, vals)
}

// dump reads the window (one host sync), returns the means and resets it.
func (w *window) dump() LogRecord {
	v := w.acc.Float64s()
	w.acc.Zero_()
	at := func(row, qty, col int) float64 { return v[row*15+qty*5+col] }
	rec := LogRecord{Loss: math.NaN(), Acc: math.NaN(), ValLoss: math.NaN(), ValAcc: math.NaN()}
	for q := range 4 {
		rec.LossQ[q], rec.AccQ[q] = math.NaN(), math.NaN()
	}
	if n := at(rowTrain, 2, 0); n > 0 {
		rec.Loss, rec.Acc = at(rowTrain, 0, 0)/n, at(rowTrain, 1, 0)/n
	}
	for q := range 4 {
		if n := at(rowTrain, 2, q+1); n > 0 {
			rec.LossQ[q], rec.AccQ[q] = at(rowTrain, 0, q+1)/n, at(rowTrain, 1, q+1)/n
		}
	}
	if n := at(rowVal, 2, 0); n > 0 {
		rec.ValLoss, rec.ValAcc = at(rowVal, 0, 0)/n, at(rowVal, 1, 0)/n
	}
	return rec
}
