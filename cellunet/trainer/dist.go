package trainer

import (
	"fmt"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Data-parallel training (Config.Comm). Every rank holds the whole model,
// optimizer and EMA state and the whole data set; a step is
//
//  1. local: draw the global batch's indices, timesteps, weights and noise
//     (the same draws on every rank, from the same generators), compute
//     forward and backward on this rank's shard of B/W rows, each slice's
//     loss scaled by 1/B (the global batch), accumulating into the flat
//     gradient buffer;
//  2. agreement (dist.Comm.Exchange): one small all-reduce of every rank's
//     status and its per-sample losses placed in its rows of a [B] vector
//     (so every rank sees the whole batch's losses for the log window and
//     the loss-aware sampler); if a rank failed, every rank undoes the
//     step's draws and stops; if one asked to stop, every rank finishes
//     this step and stops;
//  3. one all-reduce (sum) of the flat gradient buffer: the gradient of the
//     global batch's mean loss, as a single process computes it;
//  4. the fused AdamW + EMA update, identical on every rank.
//
// Rank 0 writes checkpoints and progress.csv; resuming, rank 0 reads the
// checkpoint and broadcasts the state, so the world size may change between
// runs.

// dpStep is the data-parallel state of the current step.
type dpStep struct {
	off, n        int64 // this rank's rows of the global batch
	stopRequested bool  // the context was cancelled before this step
	stopAgreed    bool  // some rank asked to stop: every rank stops after this step
	updating      bool  // the step got past the agreement (the update may have begun)
	// The generators' states at the start of the step (markStep), so a
	// failed step can be undone before the checkpoint.
	dataGen, noiseGen []byte
	markErr           error
}

// rows is this process's rows [off, off+n) of the global batch: all of it
// for a single process.
func (tr *trainer) rows() (off, n int64) {
	if tr.comm == nil {
		return 0, int64(tr.cfg.BatchSize)
	}
	return tr.dp.off, tr.dp.n
}

// flatten makes the flat parameter buffer and, for the fused step and for
// data-parallel ranks, the flat gradient buffer, and checks the batch split.
func (tr *trainer) flatten() error {
	if tr.comm == nil {
		if tr.cfg.useFused() {
			return tr.store.FlattenForWriters()
		}
		return tr.store.FlattenParams()
	}
	off, n, err := tr.comm.Shard(tr.cfg.BatchSize)
	if err != nil {
		return err
	}
	tr.dp.off, tr.dp.n = off, n
	tr.mb = min(tr.mb, int(n)) // the microbatch is per process
	if err := tr.comm.Reserve(int64(tr.cfg.BatchSize)); err != nil {
		return err
	}
	if tr.cfg.SumMicrobatchGrads && (tr.cfg.Microbatch <= 0 || int(n)%tr.cfg.Microbatch != 0) {
		// The reference's sum of slice means depends on the slices: they must
		// be the ones a single process would use.
		return fmt.Errorf("trainer: --microbatch_sum with %d processes needs a --microbatch that divides each process's %d rows of --batch_size %d",
			tr.comm.Size(), n, tr.cfg.BatchSize)
	}
	if tr.cfg.useFused() {
		return tr.store.FlattenForWriters() // the fused step overwrites every gradient
	}
	return tr.store.Flatten()
}

// resetGrads discards accumulated gradients (before an out-of-memory retry).
func (tr *trainer) resetGrads() {
	if tr.store.FlatGrads() != nil {
		tr.store.ZeroGrad() // the flat buffer stays; autograd keeps accumulating into it
		return
	}
	tr.store.ClearGrads()
}

// markStep remembers what the step's draws change (data position and
// permutation, generator states) for rewindStep.
func (tr *trainer) markStep() {
	tr.dp.updating = false
	tr.data.mark()
	var err error
	if tr.dp.dataGen, err = tr.dataGen.State(); err == nil {
		tr.dp.noiseGen, err = tr.noiseGen.State()
	}
	tr.dp.markErr = err
}

// rewindStep undoes the current step's draws and gradients.
func (tr *trainer) rewindStep() error {
	tr.data.rewind()
	if err := tr.dataGen.SetState(tr.dp.dataGen); err != nil {
		return err
	}
	if err := tr.noiseGen.SetState(tr.dp.noiseGen); err != nil {
		return err
	}
	return ct.Try(tr.resetGrads)
}

// reduceStep is the seam between gradient production and the optimizer on
// a data-parallel rank: the step's agreement (with the local error, if any)
// and the gradient all-reduce. It returns the whole batch's per-sample
// losses [B] (mse is this rank's [n]).
func (tr *trainer) reduceStep(s *ct.Scope, mse *ct.Tensor, localErr error) (*ct.Tensor, error) {
	if localErr == nil {
		localErr = tr.dp.markErr
	}
	st := dist.StatusOf(localErr)
	if st == dist.OK && tr.dp.stopRequested {
		st = dist.StopRequested
	}
	var payload *ct.Tensor
	if localErr == nil {
		localErr = ct.Try(func() {
			payload = s.Zeros(ct.On(tr.dev), int64(tr.cfg.BatchSize))
			ct.NoGrad(func() { s.Adopt(payload.Narrow(0, tr.dp.off, tr.dp.n)).Copy_(mse) })
		})
		if localErr != nil {
			st, payload = dist.StatusOf(localErr), nil
		}
	}
	ag, err := tr.comm.Exchange(s, st, payload, int64(tr.cfg.BatchSize))
	if err != nil {
		return nil, fmt.Errorf("agreeing on the step with the other processes: %w", tr.comm.Explain(err))
	}
	if r, pst, failed := ag.Failed(); failed {
		if localErr != nil {
			return nil, localErr
		}
		return nil, &dist.PeerError{Rank: r, Status: pst}
	}
	tr.dp.stopAgreed = ag.StopRequested()
	if err := tr.comm.AllReduceSum(tr.store.FlatGrads()); err != nil {
		return nil, fmt.Errorf("summing the gradients over the processes: %w", tr.comm.Explain(err))
	}
	tr.dp.updating = true
	return ag.Payload, nil
}

// stopOnFailure ends a data-parallel run after a failed step (this rank's
// or another's, or a lost peer): every rank undoes the step's draws, rank 0
// writes a checkpoint of the last completed step, and the error says where
// to resume.
func (tr *trainer) stopOnFailure(res Result, first int, start time.Time, cause error) (Result, error) {
	label := tr.step
	res.Steps, res.NextStep, res.Microbatch, res.Duration = tr.step-first, tr.step, tr.mb, time.Since(start)
	if tr.dp.updating {
		// The update may have begun: the state is not a step boundary.
		return res, fmt.Errorf("step %d: %w", label, cause)
	}
	if err := tr.rewindStep(); err != nil {
		return res, fmt.Errorf("step %d: %w (undoing the step failed: %v)", label, cause, err)
	}
	if tr.step > first && tr.lastSaved != tr.step-1 {
		if err := tr.save(tr.step-1, tr.step); err != nil {
			return res, fmt.Errorf("step %d: %w (writing the checkpoint failed: %v)", label, cause, err)
		}
	}
	if tr.lastSaved >= 0 {
		res.Checkpoint = modelFile(tr.cfg.SaveDir, tr.lastSaved)
	}
	if res.Checkpoint != "" {
		return res, fmt.Errorf("step %d: %w; checkpoint %s (resume with --resume_checkpoint %s)", label, cause, res.Checkpoint, tr.cfg.SaveDir)
	}
	return res, fmt.Errorf("step %d: %w", label, cause)
}

// startDist makes every rank start from rank 0's state: rank 0's resume
// outcome is agreed on first (a failed resume stops every rank), then its
// counters, generator states, data order, weights, optimizer and EMA state,
// log window and sampler history are broadcast. The data sets must agree
// (size and a fingerprint of the values).
func (tr *trainer) startDist(data *ct.Tensor, resumeErr error) error {
	if err := tr.comm.Agree(resumeErr, "could not resume (see its log)"); err != nil {
		return err
	}
	fp, err := dist.Fingerprint(data)
	if err != nil {
		return err
	}
	hasPerm := int64(0)
	if tr.data.perm != nil {
		hasPerm = 1
	}
	iv, err := tr.comm.BroadcastInt64s([]int64{int64(tr.step), tr.adamStep, tr.data.pos, tr.data.epoch, hasPerm, tr.data.n, int64(fp)})
	if err != nil {
		return err
	}
	fv, err := tr.comm.BroadcastFloat64s([]float64{tr.lr, tr.lg})
	if err != nil {
		return err
	}
	var dataErr error
	if iv[5] != tr.data.n || uint64(iv[6]) != fp {
		dataErr = fmt.Errorf("trainer: rank %d's latents (%d cells, fingerprint %016x) differ from rank 0's (%d cells, %016x): every process must read the same data",
			tr.comm.Rank(), tr.data.n, fp, iv[5], uint64(iv[6]))
	}
	if err := tr.comm.Agree(dataErr, "has other latents than rank 0"); err != nil {
		return err
	}
	tr.step, tr.adamStep, tr.data.pos, tr.data.epoch = int(iv[0]), iv[1], iv[2], iv[3]
	tr.lr, tr.lg = fv[0], fv[1]
	if iv[4] == 1 && tr.data.perm == nil {
		if err := ct.Try(func() { tr.data.perm = ct.Zeros(ct.Options{DType: ct.Int64, Device: tr.dev}, tr.data.n) }); err != nil {
			return err
		}
	}
	s := ct.NewScope()
	defer s.Close()
	bufs := append([]*ct.Tensor{tr.store.FlatParams(), tr.m, tr.v, tr.win.acc}, tr.emas...)
	if tr.data.perm != nil {
		bufs = append(bufs, tr.data.perm)
	}
	for _, n := range tr.sampler.State(s) {
		bufs = append(bufs, n.T)
	}
	if err := tr.comm.BroadcastTensors(bufs...); err != nil {
		return err
	}
	if err := tr.comm.BroadcastGenerator(tr.dataGen); err != nil {
		return err
	}
	return tr.comm.BroadcastGenerator(tr.noiseGen)
}
