package cellunet

import (
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// ForwardAt is Forward for a batch whose rows all sit at the same
// diffusion step (every step of a sampling loop): ε̂ [B,D] for x_t [B,D].
//
// The time embedding depends on the step only, so it is computed for one
// row, and each block's time term emb_layer(SiLU(emb)) [1,out] is folded
// into its fc bias: h = x·Wᵀ + (b + emb_layer(SiLU(emb))) is a single
// matrix product with a bias, with no per-row embedding. Per row this
// skips the time embedding's and the emb_layers' matrix products (55 % of
// the default model's multiply-adds) and one elementwise pass per block.
// Values equal Forward's up to float rounding (a few ulps).
//
// The computation runs in the parameters' dtype: with a bfloat16 store
// (nn.NewStoreDType) x is cast to bfloat16 on entry and the result is
// bfloat16; the sinusoidal features are computed in float32 first. Under
// no-grad the activations are updated in place where autograd does not
// need them; with grad enabled it is differentiable like Forward. Results
// and intermediates join the scope of x.
func (m *Model) ForwardAt(x *ct.Tensor, step int64) *ct.Tensor {
	dt := m.te0.W.T.DType()
	dev := m.te0.W.T.Device()
	inPlace := !ct.IsGradEnabled()
	xs := x
	if x.DType() != dt {
		xs = x.ToDType(dt)
	}
	// One row of time embedding: [1,E].
	// In x's scope, so that everything derived from it is freed with that
	// scope if an operation fails midway.
	tt := x.Scope().Full(float64(step), ct.Options{DType: ct.Int64, Device: dev}, 1)
	sin := m.TimestepEmbedding(tt)
	tt.Free()
	if dt != ct.Float32 {
		c := sin.ToDType(dt)
		sin.Free()
		sin = c
	}
	h0 := m.te0.Forward(sin)
	sin.Free()
	h1 := h0.SiLU()
	h0.Free()
	emb := m.te2.Forward(h1)
	h1.Free()
	siluEmb := emb.SiLU()
	emb.Free()

	skips := make([]*ct.Tensor, 0, len(m.enc)-1)
	h := xs
	for i, b := range m.enc {
		h = b.forwardAt(h, siluEmb, inPlace)
		if i < len(m.enc)-1 {
			skips = append(skips, h)
		}
	}
	if xs != x {
		xs.Free()
	}
	for _, b := range m.dec {
		u := b.forwardAt(h, siluEmb, inPlace)
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

	o1 := m.out1.Forward(h)
	h.Free()
	n := m.normOut.Forward(o1)
	o1.Free()
	a := silu(n, inPlace)
	out := m.out2.Forward(a)
	a.Free()
	return out
}

// forwardAt is block.forward with the time term of a shared step folded
// into the fc bias: x [B,in], siluEmb [1,E] → [B,out].
func (b *block) forwardAt(x, siluEmb *ct.Tensor, inPlace bool) *ct.Tensor {
	e := b.emb.Forward(siluEmb) // [1,out]
	row := e.View(-1)
	e.Free()
	bias := row.Add(b.fc.B.T)
	row.Free()
	h := x.Linear(b.fc.W.T, bias)
	bias.Free()
	n := b.norm.Forward(h)
	h.Free()
	out := silu(n, inPlace)
	if b.drop.P > 0 {
		d := b.drop.Forward(out)
		out.Free()
		out = d
	}
	return out
}

// silu returns SiLU(x), in place (consuming x's handle into the result)
// when inPlace, else a new tensor (x is freed).
func silu(x *ct.Tensor, inPlace bool) *ct.Tensor {
	if inPlace {
		return x.SiLU_()
	}
	a := x.SiLU()
	x.Free()
	return a
}
