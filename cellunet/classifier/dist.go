package classifier

import (
	"errors"
	"fmt"

	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// Data-parallel training (TrainConfig.Comm), as in packages trainer and
// autoencoder: every rank holds the whole model, optimizer state and data,
// and a step is
//
//  1. local: draw the global batch, its timesteps and noise (the same draws
//     on every rank, from generators in the same state); forward and
//     backward on this rank's B/W rows, with BatchNorm over the global
//     batch's statistics (one all-reduce of 2·C values per layer forward
//     and one backward) and Dropout masks cut from the global batch's
//     masks; the loss is this rank's share of the global batch's mean;
//  2. agreement (dist.Comm.Exchange): every rank's status, and its rows of
//     the per-sample losses and hits, gathered into the global batch's [2B]
//     (rank 0 logs the whole batch); a rank whose step failed cannot take
//     part (its peers wait in a BatchNorm all-reduce): it aborts the group,
//     which ends the peers' collective at once;
//  3. one all-reduce (sum) of the flat gradient buffer;
//  4. the fused AdamW update, identical on every rank.
//
// So a step is the single process's step on the whole batch: only the
// order of some float sums differs (BatchNorm's statistics in float64, the
// weight gradients as W partial matrix products added). Rank 0 reads a
// checkpoint to resume from and broadcasts its state, and alone writes
// checkpoints and progress.csv; the world size may change between runs.

// dpStep is the data-parallel state of the current step.
type dpStep struct {
	off, n        int64 // this rank's rows of the global batch
	stopRequested bool  // this rank's context was cancelled before the step
	stopAgreed    bool  // some rank asked to stop: every rank stops after this step
	updating      bool  // past the agreement (the update may have begun)
	// What a step changes before its agreement, for rewindStep: generator
	// states and BatchNorm running statistics at the mark (the batchers
	// keep their own).
	gens    [][]byte
	bn      *nn.BufferSnapshot
	markErr error
}

func (d *dpStep) free() { d.bn.Free() }

// setupDist checks the configuration for a data-parallel run, makes the
// flat gradient buffer the all-reduce sums and sets the model's
// data-parallel forward.
func (tr *trainer) setupDist() error {
	c := tr.cfg
	off, n, err := tr.comm.Shard(c.BatchSize)
	if err != nil {
		return err
	}
	if c.Microbatch > 0 && int64(c.Microbatch) < n {
		return fmt.Errorf("classifier: a data-parallel process computes its %d rows of batch_size %d in one pass; microbatch %d is not supported with %d processes",
			n, c.BatchSize, c.Microbatch, tr.comm.Size())
	}
	tr.dp.off, tr.dp.n = off, n
	if err := tr.comm.Reserve(2 * int64(c.BatchSize)); err != nil {
		return err
	}
	if err := tr.store.Flatten(); err != nil {
		return err
	}
	tr.model.SetDataParallel(&nn.BatchNormSync{Sum: tr.comm.SumAutograd, Rows: int64(c.BatchSize)}, int64(c.BatchSize), off)
	tr.dp.bn, err = nn.NewBufferSnapshot(tr.store)
	return err
}

// stepGenerators are the generators a training step draws from.
func (tr *trainer) stepGenerators() []*ct.Generator {
	return []*ct.Generator{tr.dataGen, tr.noiseGen, tr.dropGen}
}

// markStep remembers what a step changes before its agreement. The
// BatchNorm statistics are taken first: rewindStep restores them whatever
// else failed.
func (tr *trainer) markStep() {
	d := &tr.dp
	d.updating, d.gens = false, d.gens[:0]
	tr.train.mark()
	if d.markErr = d.bn.Take(); d.markErr != nil {
		return
	}
	for _, g := range tr.stepGenerators() {
		st, err := g.State()
		if err != nil {
			d.markErr = err
			return
		}
		d.gens = append(d.gens, st)
	}
}

// rewindStep undoes the current step's draws, statistics and gradients.
func (tr *trainer) rewindStep() error {
	d := &tr.dp
	tr.train.rewind()
	if len(d.gens) == len(tr.stepGenerators()) {
		for i, g := range tr.stepGenerators() {
			if err := g.SetState(d.gens[i]); err != nil {
				return err
			}
		}
	}
	if err := d.bn.Restore(); err != nil {
		return err
	}
	return ct.Try(tr.store.ZeroGrad)
}

// reduceStep is the seam between gradient production and the update: the
// step's agreement (with this rank's stop request or error) and the
// gradient all-reduce. loss and hit are this rank's per-sample losses and
// hits [n]; it returns the global batch's [B] (float32 views, valid until
// the next step).
func (tr *trainer) reduceStep(s *ct.Scope, loss, hit *ct.Tensor, localErr error) (gLoss, gHit *ct.Tensor, err error) {
	d := &tr.dp
	if localErr == nil {
		localErr = d.markErr
	}
	if localErr != nil {
		if errors.Is(localErr, ct.ErrDistributed) { // a peer is gone
			return nil, nil, tr.comm.Explain(localErr)
		}
		// The peers wait in this step's BatchNorm all-reduces, where no
		// agreement can reach them: leave the group so theirs fail now.
		tr.comm.Abort(localErr)
		return nil, nil, localErr
	}
	st := dist.OK
	if d.stopRequested {
		st = dist.StopRequested
	}
	B := int64(tr.cfg.BatchSize)
	var payload *ct.Tensor
	if err := ct.Try(func() {
		payload = s.Zeros(ct.On(tr.cfg.Device), 2*B)
		ct.NoGrad(func() {
			s.Adopt(payload.Narrow(0, d.off, d.n)).Copy_(loss)
			s.Adopt(payload.Narrow(0, B+d.off, d.n)).Copy_(hit)
		})
	}); err != nil {
		tr.comm.Abort(err)
		return nil, nil, err
	}
	ag, err := tr.comm.Exchange(s, st, payload, 2*B)
	if err != nil {
		return nil, nil, fmt.Errorf("agreeing on the step with the other processes: %w", tr.comm.Explain(err))
	}
	d.stopAgreed = ag.StopRequested()
	if err := tr.comm.AllReduceSum(tr.store.FlatGrads()); err != nil {
		return nil, nil, fmt.Errorf("summing the gradients over the processes: %w", tr.comm.Explain(err))
	}
	d.updating = true
	err = ct.Try(func() { gLoss, gHit = s.Adopt(ag.Payload.Narrow(0, 0, B)), s.Adopt(ag.Payload.Narrow(0, B, B)) })
	return gLoss, gHit, err
}

// stopOnFailure undoes a failed step on every rank; rank 0 writes a
// checkpoint of the last completed step (if it has progressed since the
// last one), so the run resumes there.
func (tr *trainer) stopOnFailure(cause error, first int) error {
	if tr.dp.updating {
		return cause // the update may have begun: not a step boundary
	}
	if err := tr.rewindStep(); err != nil {
		return fmt.Errorf("%w (undoing the step failed: %v)", cause, err)
	}
	if tr.step > first && tr.lastSaved != tr.step-1 {
		if err := tr.save(tr.step - 1); err != nil {
			return fmt.Errorf("%w (writing the checkpoint failed: %v)", cause, err)
		}
	}
	if tr.lastSaved >= 0 {
		return fmt.Errorf("%w; every rank stopped; resume with --resume_checkpoint %s", cause, tr.cfg.SaveDir)
	}
	return cause
}

// startDist makes every rank start from rank 0's state (counters, learning
// rate, weights, BatchNorm statistics, AdamW moments, data order, log
// window, generators) after agreeing that rank 0's resume, if any,
// succeeded and that every rank holds the same data.
func (tr *trainer) startDist(resumeErr error) error {
	if err := tr.comm.Agree(resumeErr, "could not resume (see its log)"); err != nil {
		return err
	}
	fp, err := dist.Fingerprint(tr.train.d.Latents, tr.train.d.Labels)
	if err != nil {
		return err
	}
	valN, valPos, valEpoch, valPerm := int64(-1), int64(0), int64(0), int64(0)
	if tr.val != nil {
		valN, valPos, valEpoch = tr.val.n, tr.val.pos, tr.val.epoch
		if tr.val.perm != nil {
			valPerm = 1
		}
	}
	trainPerm := int64(0)
	if tr.train.perm != nil {
		trainPerm = 1
	}
	local := []int64{int64(tr.step), tr.adamStep, int64(tr.lastSaved), tr.train.n, int64(fp),
		tr.train.pos, tr.train.epoch, trainPerm, valN, valPos, valEpoch, valPerm}
	iv, err := tr.comm.BroadcastInt64s(local)
	if err != nil {
		return err
	}
	var dataErr error
	if iv[3] != tr.train.n || iv[4] != int64(fp) || iv[8] != valN {
		dataErr = fmt.Errorf("classifier: rank %d's data (%d cells, fingerprint %016x, %d validation cells) differs from rank 0's (%d, %016x, %d): every process must read the same data",
			tr.comm.Rank(), tr.train.n, fp, valN, iv[3], uint64(iv[4]), iv[8])
	}
	if err := tr.comm.Agree(dataErr, "has other data than rank 0"); err != nil {
		return err
	}
	tr.step, tr.adamStep, tr.lastSaved = int(iv[0]), iv[1], int(iv[2])
	fv, err := tr.comm.BroadcastFloat64s([]float64{tr.lr})
	if err != nil {
		return err
	}
	tr.lr = fv[0]
	ts := append([]*ct.Tensor{tr.store.FlatParams(), tr.m, tr.v, tr.win.acc}, tr.dp.bn.Buffers...)
	for _, b := range []struct {
		bt              *batcher
		pos, epoch, has int64
	}{{tr.train, iv[5], iv[6], iv[7]}, {tr.val, iv[9], iv[10], iv[11]}} {
		if b.bt == nil {
			continue
		}
		b.bt.pos, b.bt.epoch = b.pos, b.epoch
		if b.has == 0 {
			b.bt.perm.Free()
			b.bt.perm = nil
			continue
		}
		if b.bt.perm == nil {
			if err := ct.Try(func() { b.bt.perm = ct.Zeros(ct.Options{DType: ct.Int64, Device: tr.cfg.Device}, b.bt.n) }); err != nil {
				return err
			}
		}
		ts = append(ts, b.bt.perm)
	}
	if err := tr.comm.BroadcastTensors(ts...); err != nil {
		return err
	}
	for _, g := range []*ct.Generator{tr.dataGen, tr.noiseGen, tr.dropGen, tr.valGen} {
		if err := tr.comm.BroadcastGenerator(g); err != nil {
			return err
		}
	}
	return nil
}

// mark remembers the batcher's position, epoch and permutation, so that
// rewind can undo the batches drawn since (a reshuffle included).
func (bt *batcher) mark() {
	bt.commit()
	bt.mk = batchMark{on: true, pos: bt.pos, epoch: bt.epoch, perm: bt.perm}
}

// rewind returns to the mark.
func (bt *batcher) rewind() {
	if !bt.mk.on {
		return
	}
	if bt.perm != bt.mk.perm {
		bt.perm.Free()
		bt.perm = bt.mk.perm
	}
	bt.pos, bt.epoch = bt.mk.pos, bt.mk.epoch
	bt.mk = batchMark{}
}

// commit forgets the mark (freeing a permutation replaced since).
func (bt *batcher) commit() {
	if bt.mk.on && bt.mk.perm != bt.perm {
		bt.mk.perm.Free()
	}
	bt.mk = batchMark{}
}

// batchMark is a batcher's state at a mark.
type batchMark struct {
	on         bool
	pos, epoch int64
	perm       *ct.Tensor // the permutation at the mark (kept if a reshuffle replaces it)
}
