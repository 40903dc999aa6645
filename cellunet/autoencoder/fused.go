package autoencoder

import (
	"errors"
	"fmt"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// ErrFusedUnsupported is wrapped when a configuration has no fused training
// step (the autograd path covers it).
var ErrFusedUnsupported = errors.New("autoencoder: no fused training step for this configuration")

// fusedReason says why the fused step does not cover the model on dev
// ("" if it does).
func (c Config) fusedReason(dev ct.Device) string {
	switch {
	case dev.IsCUDA():
		return "a CUDA device (the fused autoencoder step runs on the CPU)"
	case c.Dropout > 0 || c.InputDropout > 0:
		return fmt.Sprintf("dropout %v / input dropout %v", c.Dropout, c.InputDropout)
	}
	return ""
}

// NewFusedStep builds the hand-written training step of this model
// (cgotorch.AEStep): Training-mode forward, MSE(mean) reconstruction loss
// and backward, writing each parameter's gradient into its .grad — which
// must exist, as a view of the store's flat gradient buffer (Store.Flatten)
// — and updating the BatchNorm running statistics in place. The caller
// closes the step. Dropout and CUDA are not covered (ErrFusedUnsupported).
func (m *Model) NewFusedStep() (*ct.AEStep, error) {
	if r := m.cfg.fusedReason(m.Device()); r != "" {
		return nil, fmt.Errorf("%w: %s", ErrFusedUnsupported, r)
	}
	var params, buffers []*ct.Tensor
	add := func(b *block) {
		params = append(params, b.lin.W.T, b.lin.B.T, b.bn.W.T, b.bn.B.T, b.act.W.T)
		buffers = append(buffers, b.bn.RunningMean.T, b.bn.RunningVar.T, b.bn.NumBatchesTracked.T)
	}
	for _, b := range m.enc.blocks {
		add(b)
	}
	params = append(params, m.enc.out.W.T, m.enc.out.B.T)
	for _, b := range m.dec.blocks {
		add(b)
	}
	params = append(params, m.dec.out.W.T, m.dec.out.B.T)
	s := ct.NewScope()
	var step *ct.AEStep
	err := s.Run(func() error {
		grads := make([]*ct.Tensor, len(params))
		for i, p := range params {
			if grads[i] = p.Grad(s); grads[i] == nil {
				return fmt.Errorf("autoencoder: fused step: parameter %d has no gradient buffer (flatten the store with gradients first)", i)
			}
		}
		var err error
		step, err = ct.NewAEStep(ct.AEStepConfig{Genes: m.cfg.Genes, Hidden: m.cfg.Hidden, Latent: m.cfg.Latent,
			BNMomentum: bnMomentum, BNEps: bnEps}, params, grads, buffers)
		return err
	})
	return step, err
}
