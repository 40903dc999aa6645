// Package cellunet is the scDiffusion backbone, Cell_Unet: an MLP U-Net over
// 128-d cell latents with a sinusoidal timestep embedding
// (../shared/spec/scdiffusion.md §1). Parameter names equal the reference's
// state_dict keys, so a reference checkpoint loads without renaming.
//
// Legend: B = batch, D = input (latent) width, E = time-embedding width =
// Hidden[0], H = hidden widths.
package cellunet

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// Config describes a Cell_Unet. The zero value is not valid; use
// DefaultConfig, the reference's construction (128, [512,512,256,128], 0).
type Config struct {
	// InputDim is D, the latent width.
	InputDim int64
	// Hidden are the encoder widths H[0..n-1]; the decoder mirrors H[n-2..0].
	// H[0] is also the time-embedding width E. At least two entries.
	Hidden []int64
	// Dropout is the probability of the Dropout after every block's SiLU; the
	// reference hard-codes 0 there (its dropout argument reaches only an
	// unused member), so the default is 0.
	Dropout float64
}

// DefaultConfig is Cell_Unet(input_dim=128, hidden_num=[512,512,256,128],
// dropout=0.0): 3,488,384 parameters in 52 tensors.
func DefaultConfig() Config {
	return Config{InputDim: 128, Hidden: []int64{512, 512, 256, 128}}
}

// ParseHidden parses a comma-separated width list such as "512,512,256,128".
func ParseHidden(s string) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("cellunet: bad hidden width %q in %q (want positive integers separated by commas)", f, s)
		}
		out = append(out, v)
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("cellunet: hidden widths %q: need at least two", s)
	}
	return out, nil
}

// Validate reports configuration errors.
func (c Config) Validate() error {
	if c.InputDim <= 0 {
		return fmt.Errorf("cellunet: input dim must be positive, got %d", c.InputDim)
	}
	if len(c.Hidden) < 2 {
		return fmt.Errorf("cellunet: need at least two hidden widths, got %v", c.Hidden)
	}
	for _, h := range c.Hidden {
		if h <= 0 {
			return fmt.Errorf("cellunet: hidden widths must be positive, got %v", c.Hidden)
		}
	}
	if c.Hidden[0]%2 != 0 {
		return fmt.Errorf("cellunet: time-embedding width H[0]=%d must be even", c.Hidden[0])
	}
	if c.Dropout < 0 || c.Dropout >= 1 {
		return fmt.Errorf("cellunet: dropout must be in [0, 1), got %v", c.Dropout)
	}
	return nil
}

// block is the reference's ResidualBlock (which has no internal shortcut):
// h = SiLU(LayerNorm(fc(x) + emb_layer(emb))), then Dropout.
type block struct {
	fc   *nn.Linear
	norm *nn.LayerNorm
	emb  *nn.Linear // emb_layer.1; emb_layer.0 is the SiLU applied to emb
	drop *nn.Dropout
}

func newBlock(p nn.Path, in, out, embDim int64, dropout float64) *block {
	// Registration order fc, norm, emb_layer = the reference's state_dict order
	// and its order of random draws at initialisation.
	return &block{
		fc:   nn.NewLinear(p.Sub("fc"), in, out, nn.DefaultLinearConfig()),
		norm: nn.NewLayerNorm(p.Sub("norm"), out),
		emb:  nn.NewLinear(p.Sub("emb_layer").At(1), embDim, out, nn.DefaultLinearConfig()),
		drop: nn.NewDropout(dropout),
	}
}

// forward: x [B,in], siluEmb = SiLU(emb) [B,E] → [B,out]. Intermediate
// handles are freed as soon as they are consumed; autograd keeps its own
// references to what backward needs.
func (b *block) forward(x, siluEmb *ct.Tensor) *ct.Tensor {
	h := b.fc.Forward(x)
	e := b.emb.Forward(siluEmb)
	sum := h.Add(e)
	h.Free()
	e.Free()
	n := b.norm.Forward(sum)
	sum.Free()
	out := n.SiLU()
	n.Free()
	if b.drop.P > 0 {
		d := b.drop.Forward(out)
		out.Free()
		out = d
	}
	return out
}

// Model is a Cell_Unet. Its parameters live in the nn.Store given to New.
type Model struct {
	cfg      Config
	te0, te2 *nn.Linear // time_embedding.time_embed.{0,2}
	enc      []*block   // layers.i
	dec      []*block   // reverse_layers.i
	out1     *nn.Linear
	normOut  *nn.LayerNorm
	out2     *nn.Linear
	freqs    *ct.Tensor // [1,E/2] float32 on the store's device, owned by the model
}

// New builds a Cell_Unet under p (normally the store's root) with PyTorch's
// default initialisation. Close the model (frees its constant tensors) and
// the store (frees the parameters) when done.
func New(p nn.Path, cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg}
	h := cfg.Hidden
	e := h[0]
	err := ct.Try(func() {
		te := p.Sub("time_embedding", "time_embed")
		m.te0 = nn.NewLinear(te.At(0), e, e, nn.DefaultLinearConfig())
		m.te2 = nn.NewLinear(te.At(2), e, e, nn.DefaultLinearConfig())
		in := cfg.InputDim
		for i, w := range h {
			m.enc = append(m.enc, newBlock(p.Sub("layers").At(i), in, w, e, cfg.Dropout))
			in = w
		}
		for i := len(h) - 2; i >= 0; i-- {
			k := len(m.dec)
			m.dec = append(m.dec, newBlock(p.Sub("reverse_layers").At(k), h[i+1], h[i], e, cfg.Dropout))
		}
		// The reference sizes the head from H[1] (not H[0]); equal for the defaults.
		m.out1 = nn.NewLinear(p.Sub("out1"), h[0], 2*h[1], nn.DefaultLinearConfig())
		m.normOut = nn.NewLayerNorm(p.Sub("norm_out"), 2*h[1])
		m.out2 = nn.NewLinear(p.Sub("out2"), 2*h[1], cfg.InputDim, nn.DefaultLinearConfig())
		// freq_k = exp(-ln(10000)·k/half), k = 0..half-1, in float32 exactly as
		// guided-diffusion's timestep_embedding computes it.
		half := e / 2
		sc := ct.NewScope()
		defer sc.Close()
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
func (m *Model) Close() { m.freqs.Free() }

// SetTraining switches the blocks' dropout (the only mode-dependent part;
// with the default dropout 0 the mode changes nothing).
func (m *Model) SetTraining(training bool) {
	for _, b := range append(append([]*block{}, m.enc...), m.dec...) {
		b.drop.SetTraining(training)
	}
}

// TimestepEmbedding returns [cos(t·freq), sin(t·freq)] for integer (or
// float) steps t [B]: [B,E] float32, cos half first.
func (m *Model) TimestepEmbedding(t *ct.Tensor) *ct.Tensor {
	tf := t.ToDType(ct.Float32)
	col := tf.Unsqueeze(1)
	tf.Free()
	args := col.Mul(m.freqs)
	col.Free()
	c, s := args.Cos(), args.Sin()
	args.Free()
	emb := ct.Cat([]*ct.Tensor{c, s}, 1)
	c.Free()
	s.Free()
	return emb
}

// Forward predicts the noise ε̂ [B,D] (float32) from x_t [B,D] and the
// diffusion steps t [B] (the original step numbers, not rescaled). All
// results and intermediates join the scope of x (or t). Each skip
// activation is released as soon as the decoder has added it, so under
// no-grad only the current activations are alive; under autograd nothing
// is kept beyond what backward needs.
func (m *Model) Forward(x, t *ct.Tensor) *ct.Tensor {
	xs := x
	if x.DType() != ct.Float32 {
		xs = x.ToDType(ct.Float32)
	}
	// Time embedding, computed once; SiLU(emb) is shared by every block (the
	// reference recomputes it per block — same values, 7× the work).
	siluEmb := m.siluEmbedding(t)

	// Encoder: every block output but the bottleneck is a skip.
	skips := make([]*ct.Tensor, 0, len(m.enc)-1)
	h := xs
	for i, b := range m.enc {
		h = b.forward(h, siluEmb)
		if i < len(m.enc)-1 {
			skips = append(skips, h)
		}
	}
	if xs != x {
		xs.Free()
	}
	// Decoder: add the matching skip after each whole block, then release it.
	for _, b := range m.dec {
		u := b.forward(h, siluEmb)
		h.Free() // the bottleneck or the previous decoder output
		skip := skips[len(skips)-1]
		skips = skips[:len(skips)-1]
		h = u.Add(skip)
		u.Free()
		skip.Free()
	}
	siluEmb.Free()

	o1 := m.out1.Forward(h)
	h.Free()
	n := m.normOut.Forward(o1)
	o1.Free()
	a := n.SiLU()
	n.Free()
	out := m.out2.Forward(a)
	a.Free()
	return out
}
