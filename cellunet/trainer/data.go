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
func (bt *batcher) nextIndex(s *ct.Scope) *ct.Tensor {
	if bt.perm == nil || (bt.pos+1)*bt.b > bt.n {
		bt.perm.Free()
		bt.perm = (*ct.Scope)(nil).RandPerm(bt.n, ct.Options{DType: ct.Int64, Device: bt.dev}, bt.gen)
		bt.pos = 0
		bt.epoch++
	}
	idx := s.Adopt(bt.perm.Narrow(0, bt.pos*bt.b, bt.b))
	bt.pos++
	return idx
}

func (bt *batcher) close() { bt.perm.Free() }

// batchesPerEpoch is ⌊N/B⌋.
func (bt *batcher) batchesPerEpoch() int64 { return bt.n / bt.b }
