package autoencoder

import (
	"fmt"
	"strings"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// BNMode selects the statistics every BatchNorm layer normalises with.
type BNMode int

const (
	// Dataset normalises with the exact mean and biased variance of all rows
	// of the logical call — the reference's behaviour, which never calls
	// .eval(). For the tensor-level Encode/Decode the call is the tensor;
	// for EncodeAll the whole data set; for DecodeAll all requested latents
	// plus the reference latents. Running statistics are never updated. The
	// default.
	Dataset BNMode = iota
	// Running normalises with the checkpoint's running_mean/running_var
	// (PyTorch eval mode): every row is processed independently.
	Running
	// Training is PyTorch's train mode, for training only: batch
	// statistics, running statistics and num_batches_tracked updated in
	// place (momentum 0.1, unbiased variance), Dropout active.
	Training
)

// String returns "dataset", "running" or "training".
func (m BNMode) String() string {
	switch m {
	case Dataset:
		return "dataset"
	case Running:
		return "running"
	case Training:
		return "training"
	}
	return fmt.Sprintf("BNMode(%d)", int(m))
}

// ParseBNMode parses "dataset" or "running" (the inference modes; also
// "training").
func ParseBNMode(s string) (BNMode, error) {
	for _, m := range []BNMode{Dataset, Running, Training} {
		if strings.EqualFold(s, m.String()) {
			return m, nil
		}
	}
	return 0, fmt.Errorf("autoencoder: unknown BatchNorm mode %q (want dataset or running)", s)
}

// bnEps is BatchNorm1d's eps; bnMomentum its momentum.
const (
	bnEps      = 1e-5
	bnMomentum = 0.1
	normEps    = 1e-12 // F.normalize
)

// block is one nn.Sequential of the reference's network ModuleList:
// [Dropout →] Linear → BatchNorm1d → PReLU.
type block struct {
	dropP float64 // 0 also when the block has no Dropout module
	lin   *nn.Linear
	bn    *nn.BatchNorm1d
	act   *nn.PReLU
	sync  *nn.BatchNormSync // data-parallel BatchNorm statistics (SetBatchNormSync)
}

// bnStats are fixed per-feature statistics for one BatchNorm layer:
// float32 [C] on the model's device, owned by whoever computed them.
type bnStats struct{ mean, variance *ct.Tensor }

func (s bnStats) free() {
	s.mean.Free()
	s.variance.Free()
}

// pre returns the pre-BatchNorm activation Linear(Dropout(x)); x is kept.
func (b *block) pre(x *ct.Tensor, mode BNMode, gen *ct.Generator) *ct.Tensor {
	if mode == Training && b.dropP > 0 {
		d := x.Dropout(b.dropP, true, gen)
		a := b.lin.Forward(d)
		d.Free()
		return a
	}
	return b.lin.Forward(x)
}

// post returns PReLU(BatchNorm(a)) and frees a. With st non-nil the layer
// uses those statistics (whatever the mode); with b.sync (Training mode)
// those of a data-parallel global batch.
func (b *block) post(a *ct.Tensor, mode BNMode, st *bnStats) *ct.Tensor {
	bn := b.bn
	var n *ct.Tensor
	switch {
	case st != nil:
		n = a.BatchNorm(bn.W.T, bn.B.T, st.mean, st.variance, false, 0, bnEps)
	case mode == Training && b.sync != nil:
		n = bn.ForwardSynced(a, b.sync)
	case mode == Training:
		n = a.BatchNorm(bn.W.T, bn.B.T, bn.RunningMean.T, bn.RunningVar.T, true, bnMomentum, bnEps)
		bn.NumBatchesTracked.T.AddScalar_(1)
	case mode == Running:
		n = a.BatchNorm(bn.W.T, bn.B.T, bn.RunningMean.T, bn.RunningVar.T, false, 0, bnEps)
	default: // Dataset on one tensor: batch statistics, buffers untouched
		n = a.BatchNorm(bn.W.T, bn.B.T, nil, nil, true, 0, bnEps)
	}
	a.Free()
	out := n.PReLU(b.act.W.T)
	n.Free()
	return out
}

// stack is the reference's Encoder or Decoder network: blocks then a Linear.
type stack struct {
	blocks []*block
	out    *nn.Linear
}

// forward returns the stack's output (before normalisation or ReLU). stats,
// if non-nil, fixes every block's BatchNorm statistics. x is kept.
func (s *stack) forward(x *ct.Tensor, mode BNMode, stats []bnStats, gen *ct.Generator) *ct.Tensor {
	h := x
	for i, b := range s.blocks {
		var st *bnStats
		if stats != nil {
			st = &stats[i]
		}
		a := b.pre(h, mode, gen)
		if h != x {
			h.Free()
		}
		h = b.post(a, mode, st)
	}
	y := s.out.Forward(h)
	if h != x {
		h.Free()
	}
	return y
}

// Model is the scDiffusion autoencoder (VAE_model.py's VAE: a deterministic
// encoder/decoder pair). Its parameters and buffers live in an nn.Store under
// the path given to New, named exactly as the reference's state_dict.
type Model struct {
	cfg    Config
	enc    stack
	dec    stack
	store  *nn.Store
	owned  bool        // Close closes the store (models made by Load)
	prefix string      // the path's name + "." ("" at the root)
	params []*nn.Param // this model's tensors in state_dict order
	gen    *ct.Generator
}

// New builds the autoencoder under p (normally a store's root), creating
// its tensors in the reference's registration order, so that
//
//   - the names are the reference's state_dict keys: encoder.network.{i}.{1,2,3}.*
//     for the encoder blocks (.0 is the parameter-free Dropout),
//     encoder.network.{L}.* for the latent Linear, decoder.network.0.{0,1,2}.*,
//     decoder.network.{i>0}.{1,2,3}.*, decoder.network.{L}.*; each BatchNorm has
//     weight, bias, running_mean, running_var, num_batches_tracked;
//   - after cgotorch.ManualSeed(s) the weights equal those of
//     torch.manual_seed(s); VAE(...) in Python (PyTorch's default
//     initialisation: Linear U(±1/√fan_in), BatchNorm weight 1 bias 0,
//     running stats 0/1, PReLU 0.25).
//
// The store owns the tensors: close it when done (Model.Close does nothing
// for a model made by New).
func New(p nn.Path, cfg Config) (*Model, error) { return build(p, cfg, true) }

// build creates the model; without init the Linear layers start at zero
// instead of drawing from the default generator (Load overwrites every
// value, and must not disturb the caller's random stream).
func build(p nn.Path, cfg Config, init bool) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg, store: p.Store()}
	if p.Name() != "" {
		m.prefix = p.Name() + "."
	}
	before := len(m.store.All())
	linear := func(p nn.Path, in, out int64) *nn.Linear {
		if init {
			return nn.NewLinear(p, in, out, nn.DefaultLinearConfig())
		}
		return &nn.Linear{W: p.Param("weight", nil, out, in), B: p.Param("bias", nil, out), In: in, Out: out}
	}
	err := ct.Try(func() {
		e := p.Sub("encoder", "network")
		in := cfg.Genes
		for i, h := range cfg.Hidden {
			bp := e.At(i)
			drop := cfg.Dropout
			if i == 0 {
				drop = cfg.InputDropout
			}
			m.enc.blocks = append(m.enc.blocks, &block{
				dropP: drop,
				lin:   linear(bp.At(1), in, h),
				bn:    nn.NewBatchNorm1d(bp.At(2), h),
				act:   nn.NewPReLU(bp.At(3)),
			})
			in = h
		}
		m.enc.out = linear(e.At(len(cfg.Hidden)), in, cfg.Latent)

		d := p.Sub("decoder", "network")
		in = cfg.Latent
		for i, h := range cfg.decoderHidden() {
			bp := d.At(i)
			b := &block{}
			if i == 0 { // Linear, BN, PReLU at .0 .1 .2 (no Dropout module)
				b.lin = linear(bp.At(0), in, h)
				b.bn = nn.NewBatchNorm1d(bp.At(1), h)
				b.act = nn.NewPReLU(bp.At(2))
			} else {
				b.dropP = cfg.Dropout
				b.lin = linear(bp.At(1), in, h)
				b.bn = nn.NewBatchNorm1d(bp.At(2), h)
				b.act = nn.NewPReLU(bp.At(3))
			}
			m.dec.blocks = append(m.dec.blocks, b)
			in = h
		}
		m.dec.out = linear(d.At(len(cfg.Hidden)), in, cfg.Genes)
	})
	if err != nil {
		return nil, err
	}
	m.params = append([]*nn.Param(nil), m.store.All()[before:]...)
	return m, nil
}

// Config returns the model's architecture.
func (m *Model) Config() Config { return m.cfg }

// Store is the store holding the model's tensors.
func (m *Model) Store() *nn.Store { return m.store }

// Device is where the model's tensors live.
func (m *Model) Device() ct.Device { return m.store.Device() }

// Close frees the store if the model owns it (a model returned by Load);
// for a model made by New it does nothing. Idempotent.
func (m *Model) Close() {
	if m.owned && m.store != nil {
		m.store.Close()
		m.store = nil
	}
}

// SetDropoutGenerator sets the generator Training-mode Dropout draws from
// (nil: libtorch's default generator of the device). The caller keeps
// ownership.
func (m *Model) SetDropoutGenerator(g *ct.Generator) { m.gen = g }

// Params returns the model's parameters and buffers in state_dict order,
// with names relative to the model (the reference's keys).
func (m *Model) Params() []*nn.Param { return m.params }

// relName strips the model's path prefix from a store name.
func (m *Model) relName(full string) string { return strings.TrimPrefix(full, m.prefix) }

// Encode maps log1p expression x [B,G] (float32, on the model's device) to
// unit-L2 latents [B,Latent] (F.normalize, eps 1e-12), with the BatchNorm
// statistics of mode: Dataset = the batch statistics of x without touching
// the running buffers (B ≥ 2), Running = eval mode, Training = train mode
// (updates the running buffers, applies Dropout). The result joins x's
// scope; intermediates are freed. Tensor errors panic with *cgotorch.Error.
func (m *Model) Encode(x *ct.Tensor, mode BNMode) *ct.Tensor {
	y := m.enc.forward(x, mode, nil, m.gen)
	z := y.Normalize(2, 1, normEps)
	y.Free()
	return z
}

// Decode maps latents z [B,Latent] to the raw decoder output [B,G] (no
// ReLU; apply ReLU_ for expression, as the reference's decode does). BN
// modes as in Encode. The result joins z's scope.
func (m *Model) Decode(z *ct.Tensor, mode BNMode) *ct.Tensor {
	return m.dec.forward(z, mode, nil, m.gen)
}

// Loss is the reference's training objective for a batch x [B,G]:
// MSE(mean over B·G) between the raw reconstruction Decode(Encode(x)) and
// x, in Training mode (running statistics updated). It returns a 0-dim
// float32 tensor in x's scope, differentiable with respect to the
// parameters.
func (m *Model) Loss(x *ct.Tensor) *ct.Tensor {
	z := m.Encode(x, Training)
	r := m.Decode(z, Training)
	z.Free()
	l := r.MSELoss(x, ct.ReduceMean)
	r.Free()
	return l
}
