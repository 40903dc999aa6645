package autoencoder

import (
	"errors"
	"fmt"
	"slices"

	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// Data-parallel training (TrainConfig.Comm), as in package trainer: every
// rank draws the same global batch of row indices, densifies and computes
// its shard of B/W rows with BatchNorm over the global batch's statistics,
// scales its loss by its share of the batch, and takes part in one small
// agreement (status and loss) and one all-reduce of the flat gradient
// buffer per step; the update is identical on every rank.

// dpStep is the data-parallel state of the current step.
type dpStep struct {
	off, n                   int
	stopRequested, timeUp    bool // this rank's, before the step
	stopAgreed, timeUpAgreed bool // some rank's, after the agreement
	updating                 bool // past the agreement (the update may have begun)
	pcg                      []byte
	pos, epoch               int
	marked                   bool
	perm                     []int64            // the permutation before a reshuffle within the marked step
	bn                       *nn.BufferSnapshot // BatchNorm running statistics at the mark
	markErr                  error
}

// keepPerm saves the permutation before nextBatch reshuffles it in place.
func (d *dpStep) keepPerm(p []int64) {
	if d.marked && d.perm == nil {
		d.perm = slices.Clone(p)
		if d.perm == nil {
			d.perm = []int64{} // "no permutation yet", as opposed to "not saved"
		}
	}
}

func (d *dpStep) free() { d.bn.Free() }

// setupDist checks the configuration for a data-parallel run and returns
// this rank's rows per step.
func (tr *trainer) setupDist() (int64, error) {
	c := tr.cfg
	if c.Model.Dropout != 0 || c.Model.InputDropout != 0 {
		return 0, fmt.Errorf("autoencoder: data-parallel training needs dropout 0 (got %v and %v)", c.Model.Dropout, c.Model.InputDropout)
	}
	off, n, err := tr.comm.Shard(c.BatchSize)
	if err != nil {
		return 0, err
	}
	tr.dp.off, tr.dp.n = int(off), int(n)
	if err := tr.comm.Reserve(1); err != nil {
		return 0, err
	}
	tr.model.SetBatchNormSync(tr.comm.SumAutograd, int64(c.BatchSize))
	tr.dp.bn, err = nn.NewBufferSnapshot(tr.store)
	return n, err
}

// markStep remembers what a step changes before its agreement (data order,
// BatchNorm running statistics) for rewindStep.
func (tr *trainer) markStep() {
	d := &tr.dp
	d.updating, d.perm = false, nil
	d.pos, d.epoch = tr.pos, tr.epoch
	d.pcg, d.markErr = tr.pcg.MarshalBinary()
	if d.markErr == nil {
		d.markErr = d.bn.Take()
	}
	d.marked = true
}

// rewindStep undoes the current step's draws, statistics and gradients.
func (tr *trainer) rewindStep() error {
	d := &tr.dp
	if !d.marked {
		return nil
	}
	d.marked = false
	if d.perm != nil {
		if len(d.perm) == 0 {
			tr.perm = nil
		} else {
			tr.perm = d.perm
		}
	}
	tr.pos, tr.epoch = d.pos, d.epoch
	if err := tr.pcg.UnmarshalBinary(d.pcg); err != nil {
		return err
	}
	if err := d.bn.Restore(); err != nil {
		return err
	}
	return ct.Try(tr.store.ZeroGrad)
}

// reduceStep is the seam between gradient production and the update: the
// step's agreement (this rank's stop or time-up request, and its loss share
// summed into the global batch's loss) and the gradient all-reduce. It
// returns the global loss (0-dim, owned by s). A rank whose step failed
// cannot take part in the agreement (its peers wait in a BatchNorm
// all-reduce of the step): it aborts the group instead, and the peers'
// collective fails at once (Comm.Explain says why).
func (tr *trainer) reduceStep(s *ct.Scope, loss *ct.Tensor, localErr error) (*ct.Tensor, error) {
	d := &tr.dp
	if localErr == nil {
		localErr = d.markErr
	}
	if localErr != nil {
		if errors.Is(localErr, ct.ErrDistributed) { // a peer is gone
			return nil, tr.comm.Explain(localErr)
		}
		// The peers wait in this step's BatchNorm all-reduces, where no
		// agreement can reach them: leave the group so theirs fail now.
		tr.comm.Abort(localErr)
		return nil, localErr
	}
	st := dist.OK
	if d.stopRequested {
		st = dist.StopRequested
	} else if d.timeUp {
		st = dist.TimeUp
	}
	var payload *ct.Tensor
	if err := ct.Try(func() { payload = s.Adopt(loss.Detach()).Reshape(1) }); err != nil {
		tr.comm.Abort(err)
		return nil, err
	}
	ag, err := tr.comm.Exchange(s, st, payload, 1)
	if err != nil {
		return nil, fmt.Errorf("agreeing on the step with the other processes: %w", tr.comm.Explain(err))
	}
	d.stopAgreed, d.timeUpAgreed = ag.StopRequested(), ag.TimeUp()
	if err := tr.comm.AllReduceSum(tr.store.FlatGrads()); err != nil {
		return nil, fmt.Errorf("summing the gradients over the processes: %w", tr.comm.Explain(err))
	}
	d.updating = true
	var global *ct.Tensor
	err = ct.Try(func() { global = ag.Payload.Reshape() })
	return global, err
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
	if p := tr.lastPath(); p != "" {
		return fmt.Errorf("%w; every rank stopped; resume with --resume_checkpoint %s", cause, p)
	}
	return cause
}

// startDist makes every rank start from rank 0's state (weights, BatchNorm
// statistics, AdamW moments, data order, counters, loss window, Dropout
// generator) after agreeing that rank 0's resume, if any, succeeded and
// that every rank sees a data set of the same shape.
func (tr *trainer) startDist(resumeErr error) error {
	if err := tr.comm.Agree(resumeErr, "could not resume (see its log)"); err != nil {
		return err
	}
	hasPerm := int64(0)
	if tr.perm != nil {
		hasPerm = 1
	}
	rows, cols := int64(tr.data.Rows()), int64(tr.data.Cols())
	iv, err := tr.comm.BroadcastInt64s([]int64{int64(tr.step), tr.adamStep, int64(tr.pos), int64(tr.epoch),
		int64(tr.lossN), int64(tr.lastSaved), hasPerm, rows, cols})
	if err != nil {
		return err
	}
	var dataErr error
	if iv[7] != rows || iv[8] != cols {
		dataErr = fmt.Errorf("autoencoder: rank %d's data has %d cells × %d genes, rank 0's %d × %d: every process must read the same data",
			tr.comm.Rank(), rows, cols, iv[7], iv[8])
	}
	if err := tr.comm.Agree(dataErr, "has other data than rank 0"); err != nil {
		return err
	}
	tr.step, tr.adamStep, tr.pos, tr.epoch, tr.lossN, tr.lastSaved = int(iv[0]), iv[1], int(iv[2]), int(iv[3]), int(iv[4]), int(iv[5])
	pcg, err := tr.pcg.MarshalBinary()
	if err != nil {
		return err
	}
	if pcg, err = tr.comm.BroadcastBytes(pcg); err != nil {
		return err
	}
	if err := tr.pcg.UnmarshalBinary(pcg); err != nil {
		return err
	}
	if iv[6] == 1 {
		if tr.perm == nil {
			tr.perm = make([]int64, rows)
		}
		if tr.perm, err = tr.comm.BroadcastInt64s(tr.perm); err != nil {
			return err
		}
	}
	ts := append([]*ct.Tensor{tr.store.FlatParams(), tr.m, tr.v, tr.lossSum}, tr.dp.bn.Buffers...)
	if err := tr.comm.BroadcastTensors(ts...); err != nil {
		return err
	}
	return tr.comm.BroadcastGenerator(tr.gen)
}
