package cellunet

import (
	"fmt"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// ForwardAt is Forward for a batch whose rows all sit at the same
// diffusion step (every step of a sampling loop): ε̂ [B,D] float32 for
// x_t [B,D].
//
// The time embedding depends on the step only, so it is computed for one
// row, and each block's time term emb_layer(SiLU(emb)) [1,out] is folded
// into its fc bias: h = x·Wᵀ + (b + emb_layer(SiLU(emb))) is a single
// matrix product with a bias, with no per-row embedding. Per row this
// skips the time embedding's and the emb_layers' matrix products (55 % of
// the default model's multiply-adds) and one elementwise pass per block.
// Values equal Forward's up to float rounding (a few ulps).
//
// Under no-grad each LayerNorm and SiLU run as one fused in-place pass
// (cgotorch's LayerNormSiLU_) and the skips are added in place; with grad
// enabled it is differentiable like Forward.
// Results and intermediates join the scope of x.
func (m *Model) ForwardAt(x *ct.Tensor, step int64) *ct.Tensor {
	return m.forwardAt(x, step, plainMatmul)
}

// matmul computes x·Wᵀ + bias for the batch-sized products of ForwardAt
// (bias nil: the layer's own), returning float32.
type matmul func(l *nn.Linear, x, bias *ct.Tensor) *ct.Tensor

func plainMatmul(l *nn.Linear, x, bias *ct.Tensor) *ct.Tensor {
	if bias == nil {
		return l.Forward(x)
	}
	return x.Linear(l.W.T, bias)
}

func (m *Model) forwardAt(x *ct.Tensor, step int64, mm matmul) *ct.Tensor {
	dev := m.te0.W.T.Device()
	inPlace := !ct.IsGradEnabled()
	xs := x
	if x.DType() != ct.Float32 {
		xs = x.ToDType(ct.Float32)
	}
	// One row of time embedding, [1,E], in x's scope, so that everything
	// derived from it is freed with that scope if an operation fails.
	tt := x.Scope().Full(float64(step), ct.Options{DType: ct.Int64, Device: dev}, 1)
	siluEmb := m.siluEmbedding(tt)
	tt.Free()

	skips := make([]*ct.Tensor, 0, len(m.enc)-1)
	h := xs
	for i, b := range m.enc {
		h = b.forwardAt(h, siluEmb, inPlace, mm)
		if i < len(m.enc)-1 {
			skips = append(skips, h)
		}
	}
	if xs != x {
		xs.Free()
	}
	for _, b := range m.dec {
		u := b.forwardAt(h, siluEmb, inPlace, mm)
		h.Free()
		skip := skips[len(skips)-1]
		skips = skips[:len(skips)-1]
		if inPlace {
			h = u.Add_(skip)
		} else {
			h = u.Add(skip)
			u.Free()
		}
		skip.Free()
	}
	siluEmb.Free()

	o1 := mm(m.out1, h, nil)
	h.Free()
	a := normSiLU(m.normOut, o1, inPlace)
	out := mm(m.out2, a, nil)
	a.Free()
	return out
}

// siluEmbedding is SiLU(emb) for steps t [B]: emb = Linear → SiLU → Linear
// of the sinusoidal features, [B,E], the input of every block's emb_layer.
func (m *Model) siluEmbedding(t *ct.Tensor) *ct.Tensor {
	sin := m.TimestepEmbedding(t)
	h0 := m.te0.Forward(sin)
	sin.Free()
	h1 := h0.SiLU()
	h0.Free()
	emb := m.te2.Forward(h1)
	h1.Free()
	siluEmb := emb.SiLU()
	emb.Free()
	return siluEmb
}

// forwardAt is block.forward with the time term of a shared step folded
// into the fc bias: x [B,in], siluEmb [1,E] → [B,out].
func (b *block) forwardAt(x, siluEmb *ct.Tensor, inPlace bool, mm matmul) *ct.Tensor {
	e := b.emb.Forward(siluEmb) // [1,out]
	row := e.View(-1)
	e.Free()
	bias := row.Add(b.fc.B.T)
	row.Free()
	h := mm(b.fc, x, bias)
	bias.Free()
	out := normSiLU(b.norm, h, inPlace)
	if b.drop.P > 0 {
		d := b.drop.Forward(out)
		out.Free()
		out = d
	}
	return out
}

// normSiLU returns SiLU(LayerNorm(h)), consuming h: in place with the
// fused one-pass kernel under no-grad (inPlace), else as libtorch's two
// differentiable ops.
func normSiLU(ln *nn.LayerNorm, h *ct.Tensor, inPlace bool) *ct.Tensor {
	if inPlace {
		return h.LayerNormSiLU_(ln.W.T, ln.B.T, ln.Eps)
	}
	n := ln.Forward(h)
	h.Free()
	a := n.SiLU()
	n.Free()
	return a
}

// Mixed runs a Model's ForwardAt with the batch-sized matrix products (fc,
// out1, out2) in a lower precision, as CUDA autocast does: the input of
// each product is cast to DType, the weights are cast once (copies held by
// Mixed), and the product is cast back to float32, so LayerNorm, SiLU, the
// skip additions, the one-row time embedding and the result stay float32.
// (Running the whole model in bfloat16 instead is slower on CPUs:
// libtorch's bfloat16 LayerNorm is not vectorised.) Forward is the
// model's float32 one. Mixed is meant for no-grad sampling.
type Mixed struct {
	*Model
	dt     ct.DType
	copies map[*nn.Linear][2]*ct.Tensor // weight, bias in dt
}

// NewMixed prepares m's matrix products in dt (BFloat16 or Float16; the
// latter needs a CUDA device). Close frees the weight copies, not m.
func NewMixed(m *Model, dt ct.DType) (*Mixed, error) {
	if dt != ct.BFloat16 && dt != ct.Float16 {
		return nil, fmt.Errorf("cellunet: mixed precision needs bfloat16 or float16, not %s", dt)
	}
	mx := &Mixed{Model: m, dt: dt, copies: map[*nn.Linear][2]*ct.Tensor{}}
	ls := []*nn.Linear{m.out1, m.out2}
	for _, b := range append(append([]*block{}, m.enc...), m.dec...) {
		ls = append(ls, b.fc)
	}
	err := ct.Try(func() {
		ct.NoGrad(func() {
			for _, l := range ls {
				mx.copies[l] = [2]*ct.Tensor{l.W.T.ToDType(dt), l.B.T.ToDType(dt)}
			}
		})
	})
	if err != nil {
		mx.Close()
		return nil, err
	}
	return mx, nil
}

// DType is the precision of the matrix products.
func (mx *Mixed) DType() ct.DType { return mx.dt }

// ForwardAt is Model.ForwardAt with the matrix products in DType; the
// result is float32.
func (mx *Mixed) ForwardAt(x *ct.Tensor, step int64) *ct.Tensor {
	return mx.forwardAt(x, step, mx.matmul)
}

func (mx *Mixed) matmul(l *nn.Linear, x, bias *ct.Tensor) *ct.Tensor {
	c := mx.copies[l]
	xl := x.ToDType(mx.dt)
	b := c[1]
	if bias != nil {
		b = bias.ToDType(mx.dt)
	}
	y := xl.Linear(c[0], b)
	xl.Free()
	if bias != nil {
		b.Free()
	}
	out := y.ToDType(ct.Float32)
	y.Free()
	return out
}

// Close frees the weight copies (not the model). Idempotent.
func (mx *Mixed) Close() {
	for l, c := range mx.copies {
		c[0].Free()
		c[1].Free()
		delete(mx.copies, l)
	}
}
