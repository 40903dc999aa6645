package autoencoder

import (
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// bnSync makes Training-mode BatchNorm normalise with the statistics of a
// data-parallel global batch instead of this process's rows.
type bnSync struct {
	// sum adds a tensor over the ranks, differentiably
	// (dist.Comm.SumAutograd).
	sum func(*ct.Tensor) *ct.Tensor
	// rows is the global batch size.
	rows int64
}

// SetBatchNormSync makes Training-mode BatchNorm (the training loss) use the
// mean and variance of the global batch of a data-parallel run (PyTorch's
// SyncBatchNorm): sum adds a tensor over the ranks and autograd
// differentiates through it (dist.Comm.SumAutograd), rows is the global
// batch size. Each layer then makes one all-reduce of 2·C values forward and
// one backward. nil restores the statistics of the rows at hand.
func (m *Model) SetBatchNormSync(sum func(*ct.Tensor) *ct.Tensor, rows int64) {
	var s *bnSync
	if sum != nil {
		s = &bnSync{sum: sum, rows: rows}
	}
	for _, b := range append(append([]*block(nil), m.enc.blocks...), m.dec.blocks...) {
		b.sync = s
	}
}

// syncBatchNorm is train-mode BatchNorm1d over the global batch: the
// per-feature Σx and Σx² of every rank's rows are summed over the ranks in
// float64 (as at::batch_norm accumulates on the CPU), giving the global mean
// and biased variance; y = x·α + β with α = w/√(var+eps), β = b − mean·α (at::batch_norm's
// CPU form); running_mean and running_var (unbiased, N−1) move by momentum.
// a is [n, C]; the result joins a's scope.
func (b *block) syncBatchNorm(a *ct.Tensor, s *bnSync) *ct.Tensor {
	bn := b.bn
	sc := ct.NewScope()
	defer sc.Close()
	c := a.Dim(1)
	n := float64(s.rows)
	xd := sc.Adopt(a.ToDType(ct.Float64))
	local := sc.Adopt(ct.Cat([]*ct.Tensor{sc.Adopt(xd.SumDims(false, 0)), sc.Adopt(xd.Square()).SumDims(false, 0)}, 0))
	tot := sc.Adopt(s.sum(local))
	mean := sc.Adopt(tot.Narrow(0, 0, c)).DivScalar(n)
	variance := sc.Adopt(tot.Narrow(0, c, c)).DivScalar(n).Sub(mean.Square())
	invstd := variance.AddScalar(bnEps).Rsqrt()
	alpha := invstd.ToDType(ct.Float32).Mul(bn.W.T)
	beta := sc.Adopt(bn.B.T.Sub(mean.ToDType(ct.Float32).Mul(alpha)))
	ya := a.Mul(alpha)
	y := ya.Add(beta) // joins a's scope
	ya.Free()
	ct.NoGrad(func() {
		m := bnMomentum
		rm, rv := bn.RunningMean.T, bn.RunningVar.T
		rm.Copy_(sc.Adopt(rm.MulScalar(1 - m)).Add(mean.Detach().MulScalar(m).ToDType(ct.Float32)))
		unbiased := variance.Detach().MulScalar(n / (n - 1))
		rv.Copy_(sc.Adopt(rv.MulScalar(1 - m)).Add(unbiased.MulScalar(m).ToDType(ct.Float32)))
	})
	return y
}
