package cellunet

import (
	"errors"
	"fmt"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// ErrFusedUnsupported is wrapped when a configuration has no fused step
// (the autograd path covers it).
var ErrFusedUnsupported = errors.New("cellunet: no fused training step for this configuration")

// FusedSchedule is what the fused step needs of the diffusion schedule, as
// host arrays of length T (diffusion.Schedule's fields of the same names).
type FusedSchedule struct {
	SqrtAlphasCumprod, SqrtOneMinusAlphasCumprod []float64
	TimestepMap                                  []int64
}

// TrainableParams returns the model's parameters in state-dict order — the
// order of the fused step's parameter list.
func (m *Model) TrainableParams() []*nn.Param {
	var ps []*nn.Param
	lin := func(l *nn.Linear) { ps = append(ps, l.W, l.B) }
	lin(m.te0)
	lin(m.te2)
	for _, b := range append(append([]*block{}, m.enc...), m.dec...) {
		lin(b.fc)
		ps = append(ps, b.norm.W, b.norm.B)
		lin(b.emb)
	}
	lin(m.out1)
	ps = append(ps, m.normOut.W, m.normOut.B)
	lin(m.out2)
	return ps
}

// NewFusedStep builds the hand-written training step of this model
// (cgotorch.UnetStep): forward, the ε-MSE of every sample and backward,
// writing each parameter's gradient into its .grad — which must exist, as a
// view of the store's flat gradient buffer (call Store.Flatten first). The
// caller closes the step. Dropout > 0 is not covered (ErrFusedUnsupported).
func (m *Model) NewFusedStep(sched FusedSchedule, backend ct.FusedBackend) (*ct.UnetStep, error) {
	if m.cfg.Dropout > 0 {
		return nil, fmt.Errorf("%w: dropout %v (the fused step has none)", ErrFusedUnsupported, m.cfg.Dropout)
	}
	n := len(sched.SqrtAlphasCumprod)
	if n == 0 || len(sched.SqrtOneMinusAlphasCumprod) != n || len(sched.TimestepMap) != n {
		return nil, fmt.Errorf("cellunet: fused step: the schedule arrays must have one entry per step")
	}
	ps := m.TrainableParams()
	s := ct.NewScope()
	var step *ct.UnetStep
	err := s.Run(func() error {
		params := make([]*ct.Tensor, len(ps))
		grads := make([]*ct.Tensor, len(ps))
		for i, p := range ps {
			params[i] = p.T
			if grads[i] = p.T.Grad(s); grads[i] == nil {
				return fmt.Errorf("cellunet: fused step: %s has no gradient buffer (flatten the store with gradients first)", p.Name)
			}
		}
		dev := m.freqs.Device()
		f32 := func(v []float64) *ct.Tensor {
			f := make([]float32, len(v))
			for i, x := range v {
				f[i] = float32(x) // as diffusion.New uploads them
			}
			return s.FromSlice(f).To(dev, 0)
		}
		sc := ct.UnetSchedule{
			SqrtAlphasCumprod:         f32(sched.SqrtAlphasCumprod),
			SqrtOneMinusAlphasCumprod: f32(sched.SqrtOneMinusAlphasCumprod),
			TimestepMap:               s.FromSlice(sched.TimestepMap).To(dev, 0),
			Freqs:                     m.freqs,
		}
		var err error
		step, err = ct.NewUnetStep(ct.UnetStepConfig{InputDim: m.cfg.InputDim, Hidden: m.cfg.Hidden, Backend: backend}, params, grads, sc)
		return err
	})
	if err != nil {
		return nil, err
	}
	return step, nil
}
