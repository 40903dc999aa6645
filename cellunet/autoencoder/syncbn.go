package autoencoder

import (
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// SetBatchNormSync makes Training-mode BatchNorm (the training loss) use the
// mean and variance of the global batch of a data-parallel run (PyTorch's
// SyncBatchNorm, nn.BatchNorm1d.ForwardSynced): sum adds a tensor over the
// ranks and autograd differentiates through it (dist.Comm.SumAutograd), rows
// is the global batch size. Each layer then makes one all-reduce of 2·C
// values forward and one backward. nil restores the statistics of the rows
// at hand.
func (m *Model) SetBatchNormSync(sum func(*ct.Tensor) *ct.Tensor, rows int64) {
	var s *nn.BatchNormSync
	if sum != nil {
		s = &nn.BatchNormSync{Sum: sum, Rows: rows}
	}
	for _, b := range append(append([]*block(nil), m.enc.blocks...), m.dec.blocks...) {
		b.sync = s
	}
}
