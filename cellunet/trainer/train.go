package trainer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// ErrInterrupted is returned (wrapped) when the context was cancelled: the
// current step was finished and a checkpoint written.
var ErrInterrupted = errors.New("trainer: interrupted")

// ResumeError is returned by Train when the checkpoint of
// Config.ResumeCheckpoint cannot be restored (missing, incomplete, corrupt or
// for another model). Nothing was written.
type ResumeError struct {
	Path string
	Err  error
}

func (e *ResumeError) Error() string { return e.Err.Error() }
func (e *ResumeError) Unwrap() error { return e.Err }

// Result summarises a run.
type Result struct {
	// Steps is the number of steps this call ran; NextStep the label a
	// resumed run would start at.
	Steps, NextStep int
	// Checkpoint is the model file of the last checkpoint written ("" if none).
	Checkpoint string
	// Microbatch is the microbatch in use at the end (smaller than requested
	// after an out-of-memory retry).
	Microbatch int
	// Duration is the wall time of the loop.
	Duration time.Duration
}

type trainer struct {
	cfg   Config
	dev   ct.Device
	out   io.Writer
	store *nn.Store
	model *cellunet.Model
	diff  *diffusion.Diffusion

	sampler           diffusion.Sampler
	data              *batcher
	dataGen, noiseGen *ct.Generator

	fused *fusedState // the fused step (nil: autograd)
	comm  *dist.Comm  // nil: a single process
	dp    dpStep      // this step's data-parallel state

	m, v     *ct.Tensor   // AdamW moments over the flat parameters
	emas     []*ct.Tensor // one flat copy per EMA rate
	sumsq    *ct.Tensor   // [2] float64: Σg², Σp² of the current step
	win      *window
	progress *progressWriter

	adamStep  int64   // optimizer steps taken (bias correction)
	lr        float64 // learning rate of the next update
	lg        float64 // log2 loss scale
	mb        int     // current microbatch
	step      int     // label of the next step
	lastSaved int
	// saveBase is the label the save cadence counts from: 0, or the
	// checkpoint label S of a resume without a state file, where the
	// reference's TrainLoop saves when (step − S) % save_interval == 0
	// (its loop counter restarts at 0 on resume).
	saveBase int
}

// Train runs the configured training on latents data ([N,D] float32 on
// cfg.Device, owned by the caller). It returns after LRAnnealSteps updates
// (having written the final checkpoint), or, if ctx is cancelled, after
// finishing the current step and writing a checkpoint, with an error
// wrapping ErrInterrupted. Out-of-memory errors wrap cgotorch.ErrOutOfMemory.
func Train(ctx context.Context, cfg Config, data *ct.Tensor) (res Result, err error) {
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	// Autocast and grad mode are per OS thread: keep the loop on one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tr, err := newTrainer(cfg, data)
	if err != nil {
		return res, err
	}
	defer tr.close()
	if err := tr.begin(); err != nil {
		return res, err
	}
	return tr.run(ctx)
}

// begin runs the BeforeRun hook, then opens progress.csv (rank 0 only).
// Data-parallel ranks agree on the outcome, so that one rank's refusal
// stops every rank before the first step.
func (tr *trainer) begin() error {
	err := func() error {
		// Nothing has been written yet: the caller may still refuse the run.
		if h := tr.cfg.Hooks.BeforeRun; h != nil {
			if err := h(); err != nil {
				return err
			}
		}
		if !tr.comm.IsRoot() {
			return nil
		}
		var err error
		tr.progress, err = openProgress(tr.cfg.SaveDir, progressColumns(tr.cfg.lossScaling()))
		return err
	}()
	if tr.comm != nil {
		return tr.comm.Agree(err, "could not start the run")
	}
	return err
}

// newTrainer builds the trainer; on error everything it built is released
// (the deferred close works on the local value, never on a nil result).
func newTrainer(cfg Config, data *ct.Tensor) (*trainer, error) {
	tr := &trainer{cfg: cfg, dev: cfg.Device, out: cfg.Out, lr: cfg.LR, lg: cfg.InitialLgLossScale, mb: cfg.microbatch(), lastSaved: -1, comm: cfg.Comm}
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
	// The model's initialisation draws from the default CPU generator, as
	// torch.manual_seed followed by Cell_Unet() does in Python.
	if err := ct.ManualSeed(cfg.Seed); err != nil {
		return nil, err
	}
	if cfg.Device.IsCUDA() {
		if err := ct.CUDAManualSeedAll(cfg.Seed); err != nil {
			return nil, err
		}
	}
	tr.store = nn.NewStore(cfg.Device)
	if tr.model, err = cellunet.New(tr.store.Root(), cfg.Model); err != nil {
		return nil, err
	}
	// Flat parameters (AdamW and the EMAs are single passes). Autograd's
	// gradients stay its own tensors, taken without a copy and released
	// after the update (no zeroing pass, no accumulation into a buffer); the
	// fused step writes its gradients into one flat buffer instead, and
	// data-parallel ranks on the autograd path accumulate into one: the
	// buffer is what one all-reduce sums over the ranks.
	if err := tr.flatten(); err != nil {
		return nil, err
	}
	if tr.diff, err = diffusion.New(cfg.Diffusion, cfg.Device); err != nil {
		return nil, err
	}
	if tr.sampler, err = diffusion.NewSampler(cfg.ScheduleSampler, tr.diff.NumSteps(), cfg.Device); err != nil {
		return nil, err
	}
	if tr.dataGen, err = ct.NewGenerator(cfg.Device, cfg.Seed); err != nil {
		return nil, err
	}
	if tr.noiseGen, err = ct.NewGenerator(cfg.Device, cfg.Seed+1); err != nil {
		return nil, err
	}
	if tr.data, err = newBatcher(data, int64(cfg.BatchSize), cfg.Device, tr.dataGen); err != nil {
		return nil, err
	}
	var d int64
	if err := ct.Try(func() { d = data.Dim(1) }); err != nil {
		return nil, err
	}
	if d != cfg.Model.InputDim {
		return nil, fmt.Errorf("trainer: the data has %d columns, the model's input dim is %d", d, cfg.Model.InputDim)
	}
	if tr.win, err = newWindow(cfg.Device, tr.diff.NumSteps()); err != nil {
		return nil, err
	}
	p := tr.store.NumParams()
	err = ct.Try(func() {
		o := ct.On(cfg.Device)
		tr.m, tr.v = ct.Zeros(o, p), ct.Zeros(o, p)
		flat := tr.store.FlatParams().Detach()
		defer flat.Free()
		for range cfg.EMARates {
			tr.emas = append(tr.emas, flat.Clone())
		}
		tr.sumsq = ct.Zeros(ct.Options{DType: ct.Float64, Device: cfg.Device}, 2)
	})
	if err != nil {
		return nil, err
	}
	// Only rank 0 reads the checkpoint; startDist hands its state to the others.
	var resumeErr error
	if cfg.ResumeCheckpoint != "" && tr.comm.IsRoot() {
		resumeErr = tr.resume()
	}
	if tr.comm != nil {
		err = tr.startDist(data, resumeErr)
	} else {
		err = resumeErr
	}
	if err != nil {
		return nil, err
	}
	if cfg.useFused() {
		if err := tr.newFused(); err != nil {
			return nil, err
		}
	}
	built = true
	return tr, nil
}

// resume restores cfg.ResumeCheckpoint (errors are *ResumeError).
func (tr *trainer) resume() error {
	dir, label, complete, err := resumePoint(tr.cfg.ResumeCheckpoint)
	if err != nil {
		return &ResumeError{Path: tr.cfg.ResumeCheckpoint, Err: err}
	}
	if err := tr.restore(dir, label, complete); err != nil {
		return &ResumeError{Path: tr.cfg.ResumeCheckpoint, Err: err}
	}
	fmt.Fprintf(tr.out, "resumed from %s at step %d\n", modelFile(dir, label), tr.step)
	return nil
}

func (tr *trainer) close() {
	tr.fused.close()
	if tr.model != nil {
		tr.model.Close()
	}
	if tr.store != nil {
		tr.store.Close()
	}
	if tr.diff != nil {
		tr.diff.Close()
	}
	if tr.sampler != nil {
		tr.sampler.Close()
	}
	if tr.data != nil {
		tr.data.close()
	}
	tr.dataGen.Close()
	tr.noiseGen.Close()
	tr.m.Free()
	tr.v.Free()
	for _, e := range tr.emas {
		e.Free()
	}
	tr.sumsq.Free()
	if tr.win != nil {
		tr.win.close()
	}
	tr.progress.close()
}

// announce prints what the run holds in memory (llm.c style).
func (tr *trainer) announce() {
	const mib = 1 << 20
	p := tr.store.NumParams()
	b := float64(p * 4)
	fmt.Fprintf(tr.out, "%s\n", ct.Build())
	fmt.Fprintf(tr.out, "Cell_Unet %v: %d parameters in %d tensors on %s\n", tr.cfg.Model.Hidden, p, len(tr.store.Params()), tr.dev)
	grads := fmt.Sprintf("%.1f MiB", b/mib)
	if tr.fused != nil && tr.fused.cpu {
		grads += " (paged in only when kept between backward and update: microbatches, loss scaling)"
	}
	fmt.Fprintf(tr.out, "memory: parameters %.1f MiB, gradients %s, AdamW state %.1f MiB, EMA %d× %.1f MiB\n",
		b/mib, grads, 2*b/mib, len(tr.emas), b/mib)
	fmt.Fprintf(tr.out, "data: %d cells, batch %d (microbatch %d), %d batches per epoch; %d steps of diffusion; precision %s\n",
		tr.data.n, tr.cfg.BatchSize, tr.mb, tr.data.batchesPerEpoch(), tr.diff.NumSteps(), tr.cfg.Precision)
	fmt.Fprintln(tr.out, tr.fusedInfo())
}

func (tr *trainer) run(ctx context.Context) (Result, error) {
	tr.announce()
	start := time.Now()
	first := tr.step
	res := Result{}
	total := tr.cfg.LRAnnealSteps
	for total == 0 || tr.step < total {
		// Data-parallel ranks carry a stop request into the step's
		// agreement instead, so that every rank stops after the same step.
		tr.dp.stopRequested = ctx.Err() != nil
		if tr.dp.stopRequested && tr.comm == nil {
			return tr.interrupt(res, first, start)
		}
		if err := tr.runStep(); err != nil {
			if tr.comm != nil {
				return tr.stopOnFailure(res, first, start, err)
			}
			res.Steps, res.NextStep, res.Microbatch, res.Duration = tr.step-first, tr.step, tr.mb, time.Since(start)
			return res, fmt.Errorf("step %d: %w", tr.step, err)
		}
		label := tr.step
		tr.step++
		if (label-tr.saveBase)%tr.cfg.SaveInterval == 0 {
			if err := tr.save(label, label+1); err != nil {
				return res, err
			}
			res.Checkpoint = modelFile(tr.cfg.SaveDir, label)
		}
		if tr.dp.stopAgreed && (total == 0 || tr.step < total) {
			return tr.interrupt(res, first, start)
		}
	}
	// Final checkpoint unless the last in-loop step was just saved.
	if tr.lastSaved != tr.step-1 && tr.step > first {
		if err := tr.save(tr.step, tr.step); err != nil {
			return res, err
		}
		res.Checkpoint = modelFile(tr.cfg.SaveDir, tr.step)
	}
	res.Steps, res.NextStep, res.Microbatch, res.Duration = tr.step-first, tr.step, tr.mb, time.Since(start)
	return res, nil
}

func (tr *trainer) interrupt(res Result, first int, start time.Time) (Result, error) {
	res.Steps, res.NextStep, res.Microbatch, res.Duration = tr.step-first, tr.step, tr.mb, time.Since(start)
	if tr.step > first && tr.lastSaved != tr.step-1 {
		label := tr.step - 1
		if err := tr.save(label, tr.step); err != nil {
			return res, fmt.Errorf("%w; writing the checkpoint failed: %v", ErrInterrupted, err)
		}
		res.Checkpoint = modelFile(tr.cfg.SaveDir, label)
	} else if tr.lastSaved >= 0 {
		res.Checkpoint = modelFile(tr.cfg.SaveDir, tr.lastSaved)
	}
	return res, fmt.Errorf("%w at step %d; checkpoint %s", ErrInterrupted, tr.step, res.Checkpoint)
}

// runStep performs step tr.step: batch, forward/backward over the slices,
// optimizer and EMA, LR anneal, logging.
func (tr *trainer) runStep() (err error) {
	label := tr.step
	if tr.comm != nil {
		tr.markStep()
	}
	if h := tr.cfg.Hooks.BeforeStep; h != nil {
		h(label)
	}
	s := ct.NewScope()
	defer s.Close()
	B := int64(tr.cfg.BatchSize)
	var t, w, mse *ct.Tensor
	ferr := ct.Try(func() {
		// The whole batch's randomness is drawn before it is split, so the
		// step's result does not depend on the microbatch (OOM retries) or
		// on the number of data-parallel ranks (each takes its shard).
		off, n := tr.rows()
		var err error
		if tr.fused != nil {
			var index, noise *ct.Tensor
			index, t, w, noise = tr.fusedDraw(s, off, n)
			ts, ws, ns := t, w, noise
			if tr.comm != nil {
				ts, ws, ns = s.Adopt(t.Narrow(0, off, n)), s.Adopt(w.Narrow(0, off, n)), s.Adopt(noise.Narrow(0, off, n))
			}
			if mse, err = tr.forwardBackwardRows(s, tr.data.data, index, ts, ws, ns, true); err == nil {
				// Handles in s (the tensors are the fused state's buffers).
				mse, t, w = mse.Alias(s), t.Alias(s), w.Alias(s)
			}
		} else {
			batch := tr.data.nextRows(s, off, n)
			t, w = tr.sampler.Sample(s, B, tr.noiseGen)
			noise := s.Randn(ct.On(tr.dev), tr.noiseGen, B, tr.cfg.Model.InputDim)
			if tr.comm != nil {
				mse, err = tr.forwardBackward(s, batch, s.Adopt(t.Narrow(0, off, n)), s.Adopt(w.Narrow(0, off, n)), s.Adopt(noise.Narrow(0, off, n)))
			} else {
				mse, err = tr.forwardBackward(s, batch, t, w, noise)
			}
		}
		if err != nil {
			panic(err)
		}
	})
	if tr.comm != nil {
		// The seam between gradient production and the optimizer: agree
		// on the step, gather the per-sample losses, sum the gradients.
		mse, ferr = tr.reduceStep(s, mse, ferr)
	}
	if ferr != nil {
		return ferr
	}
	return ct.Try(func() {
		grads, numel := tr.store.Grads(s)
		if h := tr.cfg.Hooks.AfterBackward; h != nil {
			h(label, grads)
		}
		lrUsed := tr.lr
		skipped := false
		scale := 1.0
		if tr.cfg.lossScaling() {
			// One host read per step: is the scaled gradient finite?
			var present []*ct.Tensor
			for _, g := range grads {
				if g != nil {
					present = append(present, g)
				}
			}
			if g := ct.NormOf(s, present).Item(); math.IsNaN(g) || math.IsInf(g, 0) {
				tr.lg--
				skipped = true
				fmt.Fprintf(tr.out, "step %d: found NaN/inf gradients, skipped the update; lg_loss_scale now %.3f\n", label, tr.lg)
			}
			scale = math.Exp2(-tr.lg)
		}
		if !skipped {
			if tr.fused == nil || !tr.fused.updated { // else the fused step has applied it
				tr.adamStep++
				tr.sumsq.Zero_()
				// Autograd's gradients as segments (views of the flat buffer
				// on a data-parallel rank, which the update zeroes for the
				// next accumulation); the fused step's one flat buffer.
				fs := ct.FusedStep{Grads: grads, GradNumel: numel, GradScale: scale, EMAs: tr.emas, Rates: tr.cfg.EMARates, SumSq: tr.sumsq}
				var flat *ct.Tensor
				if tr.fused != nil {
					flat, fs.Grads, fs.GradNumel = tr.store.FlatGrads(), nil, nil
				} else {
					fs.ZeroGrad = tr.store.FlatGrads() != nil
				}
				if err := ct.FusedAdamW(tr.store.FlatParams(), flat, tr.m, tr.v, tr.adamStep, tr.adamConfig(), fs); err != nil {
					panic(err)
				}
			}
			tr.win.addNorms(s, tr.sumsq)
			if tr.cfg.lossScaling() {
				tr.lg += tr.cfg.ScaleGrowth
			}
		}
		// Release the gradients; the next backward allocates fresh ones (the
		// fused step overwrites its buffer; a data-parallel rank's flat
		// buffer was zeroed by the update, or is zeroed here if skipped).
		for _, g := range grads {
			g.Free()
		}
		if tr.fused == nil && (skipped || tr.store.FlatGrads() == nil) {
			tr.resetGrads()
		}
		if tr.fusedLog() {
			tr.fused.logAcc.Add_(tr.fused.stepLog)
		} else {
			// The whole batch's losses (gathered from every rank when data-parallel).
			tr.win.addSamples(s, mse, w, t)
		}
		tr.sampler.Update(t, mse)
		// The reference anneals after every step, taken or not:
		// lr = lr0·(1 − S/N) for the next update.
		if n := tr.cfg.LRAnnealSteps; n > 0 {
			tr.lr = tr.cfg.LR * (1 - float64(label)/float64(n))
		}
		if h := tr.cfg.Hooks.AfterStep; h != nil {
			var loss *ct.Tensor
			if tr.fusedLog() {
				loss = tr.fused.batchLoss(s)
			} else {
				loss = mse.Mul(w).Sum().DivScalar(float64(B))
			}
			h(label, StepInfo{Loss: loss, LR: lrUsed, Skipped: skipped, LgScale: tr.lg, Microbatch: tr.mb})
		}
		if label%tr.cfg.LogInterval == 0 {
			tr.dump(label, lrUsed)
		}
	})
}

// adamConfig is the AdamW of the next update (the reference's betas and eps).
func (tr *trainer) adamConfig() ct.AdamWConfig {
	return ct.AdamWConfig{LR: tr.lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: tr.cfg.WeightDecay}
}

// forwardBackward accumulates the batch's gradient over microbatch slices
// and returns the detached per-sample mse [B] (owned by s). On an
// out-of-memory error with OOMRetry it frees the attempt, zeroes the
// gradients and reruns the whole batch with half the microbatch.
func (tr *trainer) forwardBackward(s *ct.Scope, batch, t, w, noise *ct.Tensor) (*ct.Tensor, error) {
	return tr.forwardBackwardRows(s, batch, nil, t, w, noise, false)
}

// forwardBackwardRows is forwardBackward on x0 = data[index] (data itself
// when index is nil; the autograd path takes a batch). With mayUpdate the
// fused step may apply the optimizer step itself (tryFused).
func (tr *trainer) forwardBackwardRows(s *ct.Scope, data, index, t, w, noise *ct.Tensor, mayUpdate bool) (*ct.Tensor, error) {
	for {
		var mse *ct.Tensor
		var err error
		if tr.fused != nil {
			mse, err = tr.tryFused(data, index, t, w, noise, tr.mb, mayUpdate)
		} else {
			mse, err = tr.tryForwardBackward(s, data, t, w, noise, tr.mb)
		}
		if err == nil {
			return mse, nil
		}
		if !errors.Is(err, ct.ErrOutOfMemory) || !tr.cfg.OOMRetry || tr.mb <= 1 {
			return nil, err
		}
		// The fused step overwrites its gradient buffer on the next attempt.
		if zerr := ct.Try(func() {
			if tr.fused == nil {
				tr.resetGrads()
			}
		}); zerr != nil {
			return nil, zerr
		}
		if tr.dev.IsCUDA() {
			_ = ct.EmptyCache()
		}
		from := tr.mb
		tr.mb = (tr.mb + 1) / 2
		how := "batch_size %d unchanged"
		if tr.cfg.SumMicrobatchGrads {
			how += "; --microbatch_sum: every sample keeps the weight of its --microbatch %d chunk, so the summed gradient is unchanged"
			how = fmt.Sprintf(how, tr.cfg.BatchSize, tr.cfg.microbatch())
		} else {
			how = fmt.Sprintf(how, tr.cfg.BatchSize)
		}
		fmt.Fprintf(tr.out, "step %d: out of memory with microbatch %d; retrying the same batch with microbatch %d (%s)\n",
			tr.step, from, tr.mb, how)
		if h := tr.cfg.Hooks.OnOOMRetry; h != nil {
			h(tr.step, from, tr.mb, err)
		}
	}
}

func (tr *trainer) tryForwardBackward(s *ct.Scope, batch, t, w, noise *ct.Tensor, mb int) (*ct.Tensor, error) {
	B := int64(tr.cfg.BatchSize)
	attempt := ct.NewScope()
	defer attempt.Close()
	var parts []*ct.Tensor
	rows := batch.Dim(0) // B, or a data-parallel rank's shard of it
	for off := int64(0); off < rows; off += int64(mb) {
		n := min(int64(mb), rows-off)
		micro := ct.NewScope()
		err := micro.Run(func() error {
			x0 := micro.Adopt(batch.Narrow(0, off, n))
			tj := micro.Adopt(t.Narrow(0, off, n))
			wj := micro.Adopt(w.Narrow(0, off, n))
			nj := micro.Adopt(noise.Narrow(0, off, n))
			var mse *ct.Tensor
			forward := func() { mse = tr.diff.PerSampleMSE(tr.model, x0, tj, nj) }
			switch tr.cfg.Precision {
			case FP16:
				if err := ct.WithAutocast(ct.Float16, forward); err != nil {
					return err
				}
			case BF16:
				if err := ct.WithAutocast(ct.BFloat16, forward); err != nil {
					return err
				}
			default:
				forward()
			}
			weighted := mse.Mul(wj)
			var loss *ct.Tensor
			if tr.cfg.SumMicrobatchGrads {
				loss = tr.summedSliceLoss(weighted, off, n)
			} else {
				loss = weighted.Sum().DivScalar(float64(B)) // slice's share of the batch mean
			}
			if tr.cfg.lossScaling() {
				loss = loss.MulScalar(math.Exp2(tr.lg))
			}
			loss.Backward()
			parts = append(parts, attempt.Adopt(mse.Detach()))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	var all *ct.Tensor
	err := ct.Try(func() {
		if len(parts) == 1 {
			all = s.Adopt(parts[0])
		} else {
			all = s.Adopt(ct.Cat(parts, 0))
		}
	})
	return all, err
}

// summedSliceLoss is the loss of samples [off, off+n) under
// SumMicrobatchGrads. [REF] The reference takes each slice's own mean and
// adds the slices' gradients, so the configured microbatch m is part of the
// mathematics: sample i weighs 1/len(its slice of m). A slice of m is
// exactly that mean; after an out-of-memory retry with a smaller microbatch
// a slice may cover parts of several configured slices, and each part keeps
// its configured weight, so the summed gradient is the configured one.
func (tr *trainer) summedSliceLoss(weighted *ct.Tensor, off, n int64) *ct.Tensor {
	m := int64(tr.cfg.microbatch())
	B := int64(tr.cfg.BatchSize)
	if off%m == 0 && n == min(m, B-off) {
		return weighted.Mean()
	}
	var loss *ct.Tensor
	for lo := off; lo < off+n; {
		start := lo / m * m       // the configured slice holding sample lo
		size := min(m, B-start)   // its length
		hi := min(off+n, start+m) // end of the part inside this slice
		part := weighted.Narrow(0, lo-off, hi-lo).Sum().DivScalar(float64(size))
		if loss == nil {
			loss = part
		} else {
			loss = loss.Add(part)
		}
		lo = hi
	}
	return loss
}

func (tr *trainer) dump(label int, lr float64) {
	kv := tr.win.dump()
	kv["step"] = float64(label)
	kv["samples"] = float64(int64(label+1) * int64(tr.cfg.BatchSize))
	kv["lr"] = lr
	if tr.cfg.lossScaling() {
		kv["lg_loss_scale"] = tr.lg
	}
	fmt.Fprintln(tr.out, formatLine(kv, tr.cfg.lossScaling()))
	if err := tr.progress.row(kv); err != nil {
		fmt.Fprintf(tr.out, "warning: writing progress.csv: %v\n", err)
	}
}

// Prober runs single training steps of a configuration at chosen
// microbatch sizes, for the memory monitor's pre-flight peak prediction.
// It holds a complete trainer (model, optimizer state, EMA); Close it
// before training so the real run starts from the same memory.
type Prober struct {
	tr *trainer
}

// NewProber builds the trainer cfg describes over data. Nothing is written
// to disk (a prober has no progress file and never saves).
func NewProber(cfg Config, data *ct.Tensor) (*Prober, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ResumeCheckpoint = ""
	cfg.Hooks = Hooks{}
	cfg.Out = nil
	cfg.Comm = nil // a probe is a single process
	tr, err := newTrainer(cfg, data)
	if err != nil {
		return nil, err
	}
	return &Prober{tr: tr}, nil
}

// Step runs one full step (forward, backward, optimizer and EMA) with the
// given microbatch. It returns 0: the caller reads the allocator's peak.
func (p *Prober) Step(microbatch int) (int64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.tr.mb = microbatch
	err := p.tr.runStep()
	p.tr.step++
	return 0, err
}

// Close frees the prober's trainer.
func (p *Prober) Close() { p.tr.close() }
