package trainer

import (
	"fmt"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// batcher draws batches from latents held on the device: a device-side
// random permutation per epoch, consecutive slices of it as batches, the
// last incomplete batch dropped (the reference's DataLoader with
// shuffle=True, drop_last=True, repeated forever).
type batcher struct {
	data  *ct.Tensor // [N,D], caller-owned
	n, b  int64
	dev   ct.Device
	gen   *ct.Generator
	perm  *ct.Tensor // [N] int64 on dev, owned; nil before the first epoch
	pos   int64      // next batch within the epoch
	epoch int64

	// A mark (see mark): the position, and the previous epoch's
	// permutation once a new one was drawn after the mark.
	marked             bool
	markPos, markEpoch int64
	markPerm           *ct.Tensor
}

func newBatcher(data *ct.Tensor, batch int64, dev ct.Device, gen *ct.Generator) (*batcher, error) {
	var n int64
	if err := ct.Try(func() { n = data.Dim(0) }); err != nil {
		return nil, err
	}
	if n < batch {
		return nil, fmt.Errorf("trainer: the data has %d cells, fewer than batch_size %d (the last incomplete batch is dropped)", n, batch)
	}
	return &batcher{data: data, n: n, b: batch, dev: dev, gen: gen}, nil
}

// next returns the next batch [B,D], owned by s.
func (bt *batcher) next(s *ct.Scope) *ct.Tensor {
	return bt.data.IndexSelect(0, bt.nextIndex(s))
}

// nextIndex returns the rows of the next batch (int64 [B], a view of the
// epoch's permutation owned by s): next without the gather.
func (bt *batcher) nextIndex(s *ct.Scope) *ct.Tensor { return bt.nextIndexRows(s, 0, bt.b) }

// nextRows returns rows [off, off+n) of the next batch (a data-parallel
// rank's shard), owned by s.
func (bt *batcher) nextRows(s *ct.Scope, off, n int64) *ct.Tensor {
	return bt.data.IndexSelect(0, bt.nextIndexRows(s, off, n))
}

// nextIndexRows returns entries [off, off+n) of the next batch's rows (a
// view of the epoch's permutation owned by s): the permutation and position
// advance exactly as for the whole batch.
func (bt *batcher) nextIndexRows(s *ct.Scope, off, n int64) *ct.Tensor {
	if bt.perm == nil || (bt.pos+1)*bt.b > bt.n {
		if bt.marked && bt.markPerm == nil {
			bt.markPerm = bt.perm // kept for a rewind
		} else {
			bt.perm.Free()
		}
		bt.perm = (*ct.Scope)(nil).RandPerm(bt.n, ct.Options{DType: ct.Int64, Device: bt.dev}, bt.gen)
		bt.pos = 0
		bt.epoch++
	}
	idx := s.Adopt(bt.perm.Narrow(0, bt.pos*bt.b+off, n))
	bt.pos++
	return idx
}

// mark remembers the position (and the permutation, should the next batch
// start an epoch) so that rewind can undo the draws of a failed step.
func (bt *batcher) mark() {
	bt.commit()
	bt.marked, bt.markPos, bt.markEpoch = true, bt.pos, bt.epoch
}

// commit forgets the mark.
func (bt *batcher) commit() {
	if bt.markPerm != nil {
		bt.markPerm.Free()
		bt.markPerm = nil
	}
	bt.marked = false
}

// rewind returns to the mark.
func (bt *batcher) rewind() {
	if !bt.marked {
		return
	}
	if bt.epoch != bt.markEpoch {
		bt.perm.Free()
		bt.perm, bt.markPerm = bt.markPerm, nil
	}
	bt.pos, bt.epoch = bt.markPos, bt.markEpoch
	bt.commit()
}

func (bt *batcher) close() {
	bt.commit()
	bt.perm.Free()
}

// batchesPerEpoch is ⌊N/B⌋.
func (bt *batcher) batchesPerEpoch() int64 { return bt.n / bt.b }
