// Package classifier is scDiffusion's noisy-latent classifier,
// Cell_classifier (../shared/spec/scdiffusion.md §6): an MLP over 128-d
// cell latents x_t and the diffusion step t that predicts the cell's class,
// trained on noised latents (t < 500) and used, in evaluation mode, to
// guide sampling with ∇_x log p(y | x_t, t). Parameter names equal the
// reference's state_dict keys, so checkpoints load in both directions.
//
// Legend: B = batch, D = input (latent) width, E = time-embedding width =
// Hidden[0], K = number of classes.
package classifier

import (
	"fmt"
	"math"
	"strings"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// Config describes a Cell_classifier. The zero value is not valid; use
// DefaultConfig.
type Config struct {
	// InputDim is D, the latent width (128).
	InputDim int64
	// Hidden are the widths [E, H1, H2, ...]: fc1 D→E, fc2 E→H1, fc3
	// H1→H2. Entries after the third are unused (the reference passes
	// [512,512,256,128] and never reads 128). At least three entries.
	Hidden []int64
	// NumClass is K, the number of logits.
	NumClass int64
	// Dropout is the probability of the Dropout after every SiLU in
	// training mode (reference 0.1).
	Dropout float64
}

// DefaultConfig is create_classifier(128, [512,512,256,128], numClass,
// dropout=0.1): 1,647,628 parameters for 12 classes, including the unused
// emb_layers3.
func DefaultConfig(numClass int64) Config {
	return Config{InputDim: 128, Hidden: []int64{512, 512, 256, 128}, NumClass: numClass, Dropout: 0.1}
}

// Validate reports configuration errors.
func (c Config) Validate() error {
	switch {
	case c.InputDim <= 0:
		return fmt.Errorf("classifier: input dim must be positive, got %d", c.InputDim)
	case len(c.Hidden) < 3:
		return fmt.Errorf("classifier: need at least three hidden widths, got %v", c.Hidden)
	case c.NumClass < 1:
		return fmt.Errorf("classifier: need at least one class, got %d", c.NumClass)
	case c.Dropout < 0 || c.Dropout >= 1:
		return fmt.Errorf("classifier: dropout must be in [0, 1), got %v", c.Dropout)
	}
	for _, h := range c.Hidden {
		if h <= 0 {
			return fmt.Errorf("classifier: hidden widths must be positive, got %v", c.Hidden)
		}
	}
	if c.Hidden[0]%2 != 0 {
		return fmt.Errorf("classifier: time-embedding width Hidden[0]=%d must be even", c.Hidden[0])
	}
	return nil
}

// NumParams is the number of parameters, the unused emb_layers3 included
// (BatchNorm running statistics excluded), as the reference counts them.
func (c Config) NumParams() int64 {
	e, h1, h2 := c.Hidden[0], c.Hidden[1], c.Hidden[2]
	lin := func(in, out int64) int64 { return in*out + out }
	return 2*lin(e, e) + lin(c.InputDim, e) + lin(e, e) + 2*e + lin(e, h1) + lin(e, h1) + 2*h1 +
		lin(h1, h2) + lin(e, h2) + 2*h2 + lin(h2, c.NumClass)
}

// Model is a Cell_classifier. Its tensors live in the nn.Store given to New.
type Model struct {
	cfg          Config
	te0, te2     *nn.Linear // time_embed.{0,2}
	fc1, fc2     *nn.Linear
	emb1, emb2   *nn.Linear // emb_layers{1,2}.1 (emb_layers*.0 is SiLU)
	fc3, out     *nn.Linear
	norm1, norm2 *nn.BatchNorm1d
	norm3        *nn.BatchNorm1d
	drop         *nn.Dropout
	freqs        *ct.Tensor // [1,E/2] float32, owned by the model

	// Data-parallel training (SetDataParallel): the global batch's
	// BatchNorm statistics, and this rank's rows [dropOff, dropOff+n) of
	// Dropout masks drawn for dropTotal rows.
	sync               *nn.BatchNormSync
	dropTotal, dropOff int64
}

// unusedPrefix names the reference's emb_layers3: created (the reference
// registers it, so it is in every checkpoint and in the order of random
// draws at initialisation) but never used in forward. It is stored as a
// frozen tensor, so no optimizer touches it, as PyTorch's AdamW skips
// parameters without a gradient.
const unusedPrefix = "emb_layers3."

// IsUnused reports whether the state-dict key name belongs to emb_layers3,
// a parameter of the reference that never receives a gradient.
func IsUnused(name string) bool { return strings.HasPrefix(name, unusedPrefix) }

// New builds a Cell_classifier under p (normally the store's root) with
// PyTorch's default initialisation, drawn from the default CPU generator in
// the reference's registration order (so cgotorch.ManualSeed(s) then New
// gives the weights torch.manual_seed(s) then Cell_classifier(...) gives).
// The model starts in training mode. Close the model (its constant
// tensors) and the store (the parameters) when done.
func New(p nn.Path, cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg, drop: nn.NewDropout(cfg.Dropout)}
	e, h := cfg.Hidden[0], cfg.Hidden
	lin := nn.DefaultLinearConfig()
	err := ct.Try(func() {
		m.te0 = nn.NewLinear(p.Sub("time_embed").At(0), e, e, lin)
		m.te2 = nn.NewLinear(p.Sub("time_embed").At(2), e, e, lin)
		m.fc1 = nn.NewLinear(p.Sub("fc1"), cfg.InputDim, e, lin)
		m.emb1 = nn.NewLinear(p.Sub("emb_layers1").At(1), e, e, lin)
		m.norm1 = nn.NewBatchNorm1d(p.Sub("norm1"), e)
		m.fc2 = nn.NewLinear(p.Sub("fc2"), e, h[1], lin)
		m.emb2 = nn.NewLinear(p.Sub("emb_layers2").At(1), e, h[1], lin)
		m.norm2 = nn.NewBatchNorm1d(p.Sub("norm2"), h[1])
		m.fc3 = nn.NewLinear(p.Sub("fc3"), h[1], h[2], lin)
		// emb_layers3.1: a Linear(E, H2)'s weight and bias with its
		// initialisation, as frozen tensors.
		u := p.Sub("emb_layers3").At(1)
		u.Buffer("weight", ct.Float32, nn.KaimingUniform(math.Sqrt(5), e), h[2], e)
		u.Buffer("bias", ct.Float32, nn.LinearBiasInit(e), h[2])
		m.norm3 = nn.NewBatchNorm1d(p.Sub("norm3"), h[2])
		m.out = nn.NewLinear(p.Sub("out"), h[2], cfg.NumClass, lin)
		sc := ct.NewScope()
		defer sc.Close()
		half := e / 2
		f := sc.Arange(0, float64(half), 1, ct.Options{}).MulScalar(-math.Log(10000)).DivScalar(float64(half)).Exp()
		m.freqs = sc.Keep(f.Unsqueeze(0).To(p.Store().Device(), 0))
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Config returns the model's configuration.
func (m *Model) Config() Config { return m.cfg }

// Close frees the model's constant tensors (not the parameters, which the
// store owns). Idempotent.
func (m *Model) Close() {
	m.freqs.Free()
	m.freqs = nil
}

// SetTraining switches BatchNorm (batch statistics and running-statistics
// updates vs running statistics) and Dropout. Guidance and filtering use
// evaluation mode, as the reference's classifier.eval().
func (m *Model) SetTraining(training bool) {
	for _, b := range []*nn.BatchNorm1d{m.norm1, m.norm2, m.norm3} {
		b.SetTraining(training)
	}
	m.drop.SetTraining(training)
}

// SetDropoutGenerator makes Dropout draw its masks from g (nil: libtorch's
// default generator), so training is reproducible and resumable.
func (m *Model) SetDropoutGenerator(g *ct.Generator) { m.drop.Gen = g }

// SetDataParallel makes training-mode forward passes compute one rank's
// rows of a data-parallel global batch of total rows starting at row off:
// BatchNorm normalises with the global batch's statistics (sync, as
// nn.BatchNorm1d.ForwardSynced), and Dropout draws the masks of all total
// rows from its generator and applies rows [off, off+n), so that the ranks
// together use exactly the masks one process draws for the whole batch
// (every rank's generator is in the same state). total 0 restores the
// single-process behaviour.
func (m *Model) SetDataParallel(sync *nn.BatchNormSync, total, off int64) {
	m.sync, m.dropTotal, m.dropOff = sync, total, off
	if total == 0 {
		m.sync, m.dropOff = nil, 0
	}
}

// Forward returns the logits [B,K] float32 for x_t [B,D] float32 and the
// diffusion steps t [B] (integer or float; the original step numbers). All
// results join the scope of x. In training mode the BatchNorm running
// statistics are updated (under no-grad) and Dropout is active.
func (m *Model) Forward(x, t *ct.Tensor) *ct.Tensor {
	// emb = Linear → SiLU → Linear of [cos(t·f), sin(t·f)].
	tf := t.ToDType(ct.Float32)
	col := tf.Unsqueeze(1)
	tf.Free()
	args := col.Mul(m.freqs)
	col.Free()
	c, s := args.Cos(), args.Sin()
	args.Free()
	sin := ct.Cat([]*ct.Tensor{c, s}, 1)
	c.Free()
	s.Free()
	h0 := m.te0.Forward(sin)
	sin.Free()
	h1 := h0.SiLU()
	h0.Free()
	emb := m.te2.Forward(h1)
	h1.Free()
	siluEmb := emb.SiLU()
	emb.Free()

	h := m.stage(x, m.fc1, m.emb1, m.norm1, siluEmb)
	h2 := m.stage(h, m.fc2, m.emb2, m.norm2, siluEmb)
	h.Free()
	siluEmb.Free()
	h3 := m.stage(h2, m.fc3, nil, m.norm3, nil) // no time term
	h2.Free()
	out := m.out.Forward(h3)
	h3.Free()
	return out
}

// stage is fc(x) [+ emb(SiLU(emb))] → BatchNorm → SiLU → Dropout.
func (m *Model) stage(x *ct.Tensor, fc, embL *nn.Linear, bn *nn.BatchNorm1d, siluEmb *ct.Tensor) *ct.Tensor {
	h := fc.Forward(x)
	if embL != nil {
		e := embL.Forward(siluEmb)
		sum := h.Add(e)
		h.Free()
		e.Free()
		h = sum
	}
	var n *ct.Tensor
	if m.sync != nil && bn.Training {
		n = bn.ForwardSynced(h, m.sync)
	} else {
		n = bn.Forward(h)
	}
	h.Free()
	a := n.SiLU()
	n.Free()
	if m.drop.P > 0 && m.drop.Training {
		var d *ct.Tensor
		if m.dropTotal > 0 {
			d = m.dropRows(a)
		} else {
			d = m.drop.Forward(a)
		}
		a.Free()
		a = d
	}
	return a
}

// dropRows is Dropout for rows [dropOff, dropOff+n) of a batch of
// dropTotal rows: the mask of the whole batch is drawn as cgotorch's
// Dropout draws it for a [dropTotal, C] input (Bernoulli(1−p) in row-major
// order, divided by 1−p), and a's rows take their part of it. The result
// joins a's scope.
func (m *Model) dropRows(a *ct.Tensor) *ct.Tensor {
	sc := ct.NewScope()
	defer sc.Close()
	p := m.drop.P
	mask := sc.Empty(ct.Options{DType: a.DType(), Device: a.Device()}, m.dropTotal, a.Dim(1))
	ct.NoGrad(func() { mask.Bernoulli_(1-p, m.drop.Gen).DivScalar_(1 - p) })
	return sc.Keep(a.Mul(sc.Adopt(mask.Narrow(0, m.dropOff, a.Dim(0))))) // a's scope, or the caller's
}

// ConfigFromStateDict infers the architecture from a checkpoint's shapes
// (dropout set to the reference's 0.1; it only matters for training).
func ConfigFromStateDict(sd []ct.Named) (Config, error) {
	byName := make(map[string]*ct.Tensor, len(sd))
	for _, n := range sd {
		byName[n.Name] = n.T
	}
	need := []string{"time_embed.0.weight", "fc1.weight", "fc2.weight", "fc3.weight", "out.weight"}
	for _, k := range need {
		if w, ok := byName[k]; !ok || w.NDim() != 2 {
			return Config{}, fmt.Errorf("classifier: not a Cell_classifier state_dict: no 2-D %s", k)
		}
	}
	fc1, fc2, fc3, out := byName["fc1.weight"], byName["fc2.weight"], byName["fc3.weight"], byName["out.weight"]
	cfg := Config{
		InputDim: fc1.Dim(1),
		Hidden:   []int64{fc1.Dim(0), fc2.Dim(0), fc3.Dim(0)},
		NumClass: out.Dim(0),
		Dropout:  0.1,
	}
	return cfg, cfg.Validate()
}

// Load builds a model on dev from a checkpoint (a state_dict in a .pt
// written by torch.save or train-classifier, or .safetensors), inferring
// the architecture from its shapes, and loads it strictly. The model is in
// evaluation mode (as the reference's classifier.eval() before guiding).
// (Building the model first draws New's initialisation from the default CPU
// generator; the load then overwrites it.) Close the result.
func Load(path string, dev ct.Device) (*Loaded, error) {
	m, st, err := nn.LoadModel(path, dev, "classifier", ConfigFromStateDict, New)
	if err != nil {
		return nil, err
	}
	return &Loaded{Model: m, Store: st}, nil
}

// Loaded is a model read by Load together with the store that owns its
// tensors.
type Loaded struct {
	*Model
	Store *nn.Store
}

// Close frees the model and its store. Idempotent.
func (l *Loaded) Close() {
	l.Model.Close()
	l.Store.Close()
}
