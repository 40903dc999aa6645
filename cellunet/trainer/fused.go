package trainer

import (
	"fmt"
	"math"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// StepImpl selects how forward and backward are computed.
type StepImpl string

// Step implementations.
const (
	// StepAuto (the default, also "") uses the fused step wherever it
	// applies — fp32 and no dropout — and autograd otherwise.
	StepAuto StepImpl = "auto"
	// StepFused requires the fused step: the hand-written Cell_Unet forward
	// and backward (cellunet.Model.NewFusedStep) over buffers allocated once;
	// on the CPU no tensor is allocated per step. Gradients are written into
	// one flat buffer that the fused AdamW + EMA pass then reads.
	StepFused StepImpl = "fused"
	// StepGeneric forces the autograd path (the reference implementation;
	// it also covers fp16/bf16 autocast and dropout).
	StepGeneric StepImpl = "generic"
)

// ParseStepImpl parses "auto", "fused" or "generic".
func ParseStepImpl(s string) (StepImpl, error) {
	switch StepImpl(s) {
	case StepAuto, "":
		return StepAuto, nil
	case StepFused, StepGeneric:
		return StepImpl(s), nil
	}
	return "", fmt.Errorf("trainer: unknown train_step %q (want auto, fused or generic)", s)
}

// fusedReason says why the fused step does not cover cfg ("" if it does).
func (c *Config) fusedReason() string {
	switch {
	case c.Precision != FP32 && c.Precision != "":
		return fmt.Sprintf("precision %s (autocast)", c.Precision)
	case c.Model.Dropout > 0:
		return fmt.Sprintf("dropout %v", c.Model.Dropout)
	case c.SumMicrobatchGrads:
		// An out-of-memory retry under the reference's summed slices must
		// keep every sample's weight from its configured slice
		// (summedSliceLoss), which the fused step's one coefficient per
		// slice cannot express.
		return "--microbatch_sum (summed slice gradients)"
	}
	return ""
}

// useFused reports whether the run uses the fused step.
func (c *Config) useFused() bool { return c.Step != StepGeneric && c.fusedReason() == "" }

// fusedState is the fused path's step and its per-step tensors, allocated
// once: with the uniform sampler a step allocates no tensor at all.
type fusedState struct {
	step    *ct.UnetStep
	t       *ct.Tensor // int64 [B]: timesteps, drawn in place
	w       *ct.Tensor // float32 [B]: importance weights (1 for uniform)
	noise   *ct.Tensor // float32 [B,D]: ε, drawn in place
	mse     *ct.Tensor // float32 [B]: per-sample losses
	stepLog *ct.Tensor // float64 [15]: this step's log-window sums (added once the step succeeded)
	logAcc  *ct.Tensor // view of the log window's first 15 sums
	loss    *ct.Tensor // float32 []: the batch loss for Hooks.AfterStep
	invB    *ct.Tensor // float32 [] = 1/B
	uniform bool       // draw t in place (UniformSampler)
	cpu     bool       // the CPU backend (which can apply the update itself)
	updated bool       // the last run applied this step's AdamW + EMA
	// shardMSE is a data-parallel rank's per-sample losses (a view of the
	// first n rows of mse; nil for a single process).
	shardMSE *ct.Tensor
}

func (f *fusedState) close() {
	if f == nil {
		return
	}
	f.step.Close()
	for _, t := range []*ct.Tensor{f.t, f.w, f.noise, f.mse, f.stepLog, f.logAcc, f.loss, f.invB, f.shardMSE} {
		t.Free()
	}
}

// newFused builds the fused step over the flattened store (after any
// resume, so it aliases the restored parameters).
func (tr *trainer) newFused() error {
	sched := tr.diff.Schedule()
	step, err := tr.model.NewFusedStep(cellunet.FusedSchedule{SqrtAlphasCumprod: sched.SqrtAlphasCumprod,
		SqrtOneMinusAlphasCumprod: sched.SqrtOneMinusAlphasCumprod, TimestepMap: sched.TimestepMap}, tr.cfg.fusedBackend)
	if err != nil {
		return err
	}
	f := &fusedState{step: step}
	tr.fused = f
	if info, err := step.Info(); err == nil {
		f.cpu = info.Backend == ct.FusedCPU
	}
	_, f.uniform = tr.sampler.(*diffusion.UniformSampler)
	B, D := int64(tr.cfg.BatchSize), tr.cfg.Model.InputDim
	return ct.Try(func() {
		o := ct.On(tr.dev)
		f.t = ct.Zeros(ct.Options{DType: ct.Int64, Device: tr.dev}, B)
		f.w = ct.Full(1, o, B)
		f.noise = ct.Zeros(o, B, D)
		f.mse = ct.Zeros(o, B)
		f.stepLog = ct.Zeros(ct.Options{DType: ct.Float64, Device: tr.dev}, 15)
		f.logAcc = tr.win.acc.Narrow(0, 0, 15)
		f.loss = ct.Zeros(o)
		f.invB = ct.Full(1/float64(B), o)
		if tr.comm != nil {
			f.shardMSE = f.mse.Narrow(0, 0, tr.dp.n)
		}
	})
}

// batchLoss is the step's mean weighted loss Σ w·mse / B (a 0-dim float32
// handle in s on the fused state's buffer), from the step's log sums:
// computed without allocating.
func (f *fusedState) batchLoss(s *ct.Scope) *ct.Tensor {
	sum := s.Adopt(s.Adopt(f.stepLog.Narrow(0, 0, 1)).View())
	return f.loss.Copy_(sum).Mul_(f.invB).Alias(s)
}

// fusedDraw draws the step's batch rows, timesteps, weights and noise in the
// order and from the generators of the autograd path (same values), into
// the preallocated tensors where the sampler allows. index is rows
// [off, off+n) of the batch (this rank's shard); t, w and noise cover the
// whole batch, drawn alike on every rank.
func (tr *trainer) fusedDraw(s *ct.Scope, off, n int64) (index, t, w, noise *ct.Tensor) {
	f := tr.fused
	index = tr.data.nextIndexRows(s, off, n)
	if f.uniform {
		t, w = f.t, f.w
		t.RandomInt_(0, int64(tr.diff.NumSteps()), tr.noiseGen)
	} else {
		t, w = tr.sampler.Sample(s, int64(tr.cfg.BatchSize), tr.noiseGen)
	}
	noise = f.noise.Normal_(0, 1, tr.noiseGen)
	return index, t, w, noise
}

// fusedUpdate is the AdamW + EMA step for the fused step to apply as it
// goes — when nothing needs the gradients between backward and update: the
// CPU backend, one slice, no loss scaling, no AfterBackward hook, a single
// process (a data-parallel rank all-reduces the gradient first, then runs
// the separate FusedAdamW + EMA pass like every other rank) — else nil. The
// result is bit-identical to a separate FusedAdamW pass.
func (tr *trainer) fusedUpdate(mb int) *ct.FusedUpdate {
	if !tr.fused.cpu || mb < tr.cfg.BatchSize || tr.cfg.lossScaling() || tr.cfg.Hooks.AfterBackward != nil || tr.comm != nil {
		return nil
	}
	return &ct.FusedUpdate{Params: tr.store.FlatParams(), ExpAvg: tr.m, ExpAvgSq: tr.v, Step: tr.adamStep + 1,
		Config: tr.adamConfig(), EMAs: tr.emas, Rates: tr.cfg.EMARates, SumSq: tr.sumsq}
}

// tryFused runs the fused step over the batch in slices of mb rows,
// accumulating the gradients in the flat buffer — or applying the update
// itself (fusedUpdate) — with x0 = data[index] (data itself when index is
// nil). It returns the per-sample mse [B], owned by the fused state (valid
// until the next step), and leaves the step's log-window sums in
// fused.stepLog (runStep adds them once the step has succeeded, so a
// retried attempt is not counted twice). A data-parallel rank passes its
// shard's n rows (index, t, w, noise) and gets their mse [n]: every slice's
// loss is still scaled by 1/B, B the global batch, so that the all-reduced
// sum of the ranks' gradients is the global batch's.
func (tr *trainer) tryFused(data, index, t, w, noise *ct.Tensor, mb int, mayUpdate bool) (*ct.Tensor, error) {
	f := tr.fused
	f.updated = false
	if err := f.step.Reserve(int64(mb)); err != nil {
		return nil, err
	}
	var upd *ct.FusedUpdate
	if mayUpdate {
		upd = tr.fusedUpdate(mb)
	}
	B := int64(tr.cfg.BatchSize)
	_, rows := tr.rows()
	mse := f.mse
	if f.shardMSE != nil {
		mse = f.shardMSE
	}
	micro := ct.NewScope()
	defer micro.Close()
	err := ct.Try(func() {
		f.stepLog.Zero_()
		if upd != nil {
			tr.sumsq.Zero_()
		}
		for off := int64(0); off < rows; off += int64(mb) {
			n := min(int64(mb), rows-off)
			coef := 1 / float64(B) // the slice's share of the batch mean
			if tr.cfg.SumMicrobatchGrads {
				coef = 1 / float64(n) // [REF] each slice's own mean; slice gradients add up
			}
			if tr.cfg.lossScaling() {
				coef *= math.Exp2(tr.lg)
			}
			b := ct.UnetBatch{Data: data, Index: index, T: t, Noise: noise, Weights: w, MSE: mse,
				Coef: coef, Accumulate: off > 0, LogAcc: f.stepLog, Update: upd}
			if n < rows {
				if index != nil {
					b.Index = micro.Adopt(index.Narrow(0, off, n))
				} else {
					b.Data = micro.Adopt(data.Narrow(0, off, n))
				}
				b.T, b.Weights = micro.Adopt(t.Narrow(0, off, n)), micro.Adopt(w.Narrow(0, off, n))
				b.Noise, b.MSE = micro.Adopt(noise.Narrow(0, off, n)), micro.Adopt(mse.Narrow(0, off, n))
			}
			if err := f.step.Run(b); err != nil {
				panic(err)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if upd != nil {
		tr.adamStep++
		f.updated = true
	}
	return mse, nil
}

// fusedLog reports whether the fused step's own log-window sums are the
// step's (a single process); a data-parallel rank's cover only its shard,
// so it logs from the whole batch's gathered losses instead.
func (tr *trainer) fusedLog() bool { return tr.fused != nil && tr.comm == nil }

// fusedInfo is the announce line of the fused path.
func (tr *trainer) fusedInfo() string {
	if tr.fused == nil {
		if tr.cfg.Step == StepGeneric {
			return "training step: autograd (forced)"
		}
		return "training step: autograd (the fused step does not cover " + tr.cfg.fusedReason() + ")"
	}
	info, err := tr.fused.step.Info()
	if err != nil {
		return "training step: fused"
	}
	const mib = 1 << 20
	gemm := "libtorch mm"
	if info.BLAS {
		gemm = "BLAS sgemm"
	}
	if info.Backend == ct.FusedATen {
		return fmt.Sprintf("training step: fused (ATen ops on %s; no host synchronisation)", tr.dev)
	}
	ws, err := tr.fused.step.WorkspaceBytes(int64(tr.mb))
	if err != nil {
		return "training step: fused"
	}
	if tr.comm != nil {
		// The rank's shard views and the step's agreement allocate a few
		// small tensors per step.
		return fmt.Sprintf("training step: fused (CPU kernels, %s) on this process's %d rows of the batch: activations %.1f MiB for microbatch %d + embedding table %.1f MiB, allocated once; the flat gradient all-reduced, then AdamW + EMA",
			gemm, tr.dp.n, float64(ws)/mib, tr.mb, float64(info.TableBytes)/mib)
	}
	return fmt.Sprintf("training step: fused (CPU kernels, %s): activations %.1f MiB for microbatch %d + embedding table %.1f MiB, allocated once; 0 tensor allocations per step",
		gemm, float64(ws)/mib, tr.mb, float64(info.TableBytes)/mib)
}
