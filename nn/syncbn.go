package nn

import (
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// BatchNormSync describes the global batch of a data-parallel run to
// BatchNorm1d.ForwardSynced (PyTorch's SyncBatchNorm).
type BatchNormSync struct {
	// Sum adds a tensor over the ranks, differentiably (for example
	// dist.Comm.SumAutograd); it panics with *cgotorch.Error on failure.
	Sum func(*ct.Tensor) *ct.Tensor
	// Rows is the global batch size: the rows of every rank together.
	Rows int64
}

// ForwardSynced is training-mode BatchNorm over a data-parallel global
// batch: the per-feature Σx and Σx² of every rank's rows are summed over the
// ranks in float64 (as at::batch_norm accumulates on the CPU), giving the
// global mean and biased variance; y = x·α + β with α = w/√(var+eps),
// β = b − mean·α (at::batch_norm's CPU form); running_mean and running_var
// (unbiased, N−1) move by Momentum and num_batches_tracked counts the step,
// identically on every rank. It makes one all-reduce of 2·C values forward
// and one backward. x is [n, C], this rank's rows; the result joins x's
// scope (the caller owns it when x has none).
func (l *BatchNorm1d) ForwardSynced(x *ct.Tensor, s *BatchNormSync) *ct.Tensor {
	sc := ct.NewScope()
	defer sc.Close()
	c := x.Dim(1)
	n := float64(s.Rows)
	xd := sc.Adopt(x.ToDType(ct.Float64))
	local := sc.Adopt(ct.Cat([]*ct.Tensor{sc.Adopt(xd.SumDims(false, 0)), sc.Adopt(xd.Square()).SumDims(false, 0)}, 0))
	tot := sc.Adopt(s.Sum(local))
	mean := sc.Adopt(tot.Narrow(0, 0, c)).DivScalar(n)
	variance := sc.Adopt(tot.Narrow(0, c, c)).DivScalar(n).Sub(mean.Square())
	invstd := variance.AddScalar(l.Eps).Rsqrt()
	alpha := invstd.ToDType(ct.Float32).Mul(l.W.T)
	beta := sc.Adopt(l.B.T.Sub(mean.ToDType(ct.Float32).Mul(alpha)))
	ya := x.Mul(alpha)
	y := sc.Keep(ya.Add(beta)) // x's scope, or sc's (then kept) when x has none
	ya.Free()
	ct.NoGrad(func() {
		m := l.Momentum
		rm, rv := l.RunningMean.T, l.RunningVar.T
		rm.Copy_(sc.Adopt(rm.MulScalar(1 - m)).Add(mean.Detach().MulScalar(m).ToDType(ct.Float32)))
		unbiased := variance.Detach().MulScalar(n / (n - 1))
		rv.Copy_(sc.Adopt(rv.MulScalar(1 - m)).Add(unbiased.MulScalar(m).ToDType(ct.Float32)))
		l.NumBatchesTracked.T.AddScalar_(1)
	})
	return y
}
