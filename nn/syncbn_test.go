package nn_test

import (
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/nn"
)

// TestBatchNormForwardSynced checks the data-parallel BatchNorm against
// libtorch's on the whole batch: one rank of a world of one (Sum the
// identity), and one rank of two whose peer's statistics are added by
// Sum, as the all-reduce would. Outputs, running statistics and the step
// count agree within the rounding of the two formulations: at::batch_norm
// and ForwardSynced both accumulate the batch's sums over 2·B terms, then
// scale once (tolerance rule with K = 2·B + 4).
func TestBatchNormForwardSynced(t *testing.T) {
	const b, c = 48, 24
	for _, tc := range []struct {
		name      string
		off, rows int64 // this rank's rows of the batch
	}{
		{"world of one", 0, b},
		{"rank 1 of two", b / 2, b / 2},
		{"rank 0 of three", 0, b / 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.NewScope()
			defer s.Close()
			g, err := ct.NewGenerator(ct.CPU, 7)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			x := s.Randn(ct.Options{}, g, b, c).MulScalar(3).AddScalar(1.5)
			build := func() *nn.BatchNorm1d {
				st := nn.NewStore(ct.CPU)
				t.Cleanup(st.Close)
				bn := nn.NewBatchNorm1d(st.Root(), c)
				ct.NoGrad(func() {
					bn.W.T.Copy_(s.Randn(ct.Options{}, g, c).AddScalar(1))
					bn.B.T.Copy_(s.Randn(ct.Options{}, g, c))
				})
				return bn
			}
			whole, part := build(), build()
			ct.NoGrad(func() { part.W.T.Copy_(whole.W.T); part.B.T.Copy_(whole.B.T) })
			want := whole.Forward(x)

			mine := x.Narrow(0, tc.off, tc.rows)
			// The peers' rows: everything but this rank's.
			var peers []*ct.Tensor
			if tc.off > 0 {
				peers = append(peers, x.Narrow(0, 0, tc.off))
			}
			if end := tc.off + tc.rows; end < b {
				peers = append(peers, x.Narrow(0, end, b-end))
			}
			sum := func(local *ct.Tensor) *ct.Tensor {
				out := local
				for _, p := range peers {
					pd := p.ToDType(ct.Float64)
					out = out.Add(ct.Cat([]*ct.Tensor{pd.SumDims(false, 0), pd.Square().SumDims(false, 0)}, 0))
				}
				return out.MulScalar(1)
			}
			got := part.ForwardSynced(mine, &nn.BatchNormSync{Sum: sum, Rows: b})
			k := 2*b + 4
			cgotorchtest.AssertFP32(t, "output rows", got, want.Narrow(0, tc.off, tc.rows), cgotorchtest.FP32{K: k})
			cgotorchtest.AssertFP32(t, "running_mean", part.RunningMean.T, whole.RunningMean.T, cgotorchtest.FP32{K: k})
			cgotorchtest.AssertFP32(t, "running_var", part.RunningVar.T, whole.RunningVar.T, cgotorchtest.FP32{K: k})
			if n, w := part.NumBatchesTracked.T.Item(), whole.NumBatchesTracked.T.Item(); n != w {
				t.Errorf("num_batches_tracked %v, want %v", n, w)
			}
		})
	}
}
