package nn

import (
	"fmt"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Flatten moves every trainable parameter into one contiguous buffer and
// gives each a gradient that is a view of one contiguous gradient buffer
// (zero-filled). Each parameter stays a leaf tensor of its own shape, so the
// model code is unchanged, while whole-model operations — AdamW, EMA,
// zeroing, norms — become a few passes over two buffers (as llm.c does).
// Autograd accumulates into the gradient views in place; zero them with
// ZeroGrad (never set them to none, which would detach them from the
// buffer). Parameters must share one floating dtype and device; call
// Flatten once, after building the model and before creating an optimizer.
func (s *Store) Flatten() error { return s.flatten(true, true) }

// FlattenForWriters is Flatten with the gradient buffer left uninitialised,
// for gradient producers that write every element before anything reads it
// (the fused training steps, which overwrite rather than accumulate on their
// first microbatch). Its memory is paged in only when first written, so a
// step that never writes it (a fused step applying the optimizer update
// itself) costs no resident memory for it. Not for autograd, which adds
// into the buffer.
func (s *Store) FlattenForWriters() error { return s.flatten(true, false) }

// FlattenParams is Flatten without the gradient buffer: each parameter's
// gradient stays its own tensor, which autograd allocates in the first
// backward after ClearGrads and then owns, so no zeroing pass and no copy
// into a buffer are needed (the first accumulation takes the new gradient
// as it is). Use Grads to read them and ClearGrads after the update.
func (s *Store) FlattenParams() error { return s.flatten(false, false) }

func (s *Store) flatten(withGrads, zeroGrads bool) error {
	if s.flat != nil {
		return nil
	}
	ps := s.Params()
	if len(ps) == 0 {
		return fmt.Errorf("nn: Flatten: store has no parameters")
	}
	return ct.Try(func() {
		var total int64
		s.flatOff = make([]int64, len(ps)+1)
		for i, p := range ps {
			s.flatOff[i] = total
			total += p.T.Numel()
		}
		s.flatOff[len(ps)] = total
		o := ct.Options{DType: s.dtype, Device: s.device}
		flat := ct.Zeros(o, total)
		var grad *ct.Tensor
		switch {
		case withGrads && zeroGrads:
			grad = ct.Zeros(o, total)
		case withGrads:
			grad = (*ct.Scope)(nil).Empty(o, total)
		}
		ct.NoGrad(func() {
			for i, p := range ps {
				shape := p.T.Shape()
				n := s.flatOff[i+1] - s.flatOff[i]
				sc := ct.NewScope()
				view := sc.Adopt(flat.Narrow(0, s.flatOff[i], n)).View(shape...)
				view.Copy_(p.T)
				leaf := sc.Keep(view.Detach()).SetRequiresGrad(true)
				if grad != nil {
					gview := sc.Adopt(grad.Narrow(0, s.flatOff[i], n)).View(shape...)
					leaf.SetGrad(gview)
				}
				sc.Close()
				p.T.Free()
				p.T = leaf
			}
		})
		s.flat, s.flatGr = flat, grad
	})
}

// FlatParams is the contiguous buffer behind all trainable parameters (nil
// before Flatten). It is owned by the store; do not free it.
func (s *Store) FlatParams() *ct.Tensor { return s.flat }

// FlatGrads is the contiguous buffer behind all gradients (nil before
// Flatten, and after FlattenParams).
func (s *Store) FlatGrads() *ct.Tensor { return s.flatGr }

// FlatOffsets returns the start of each trainable parameter in the flat
// buffers, plus the total, in Params() order.
func (s *Store) FlatOffsets() []int64 { return s.flatOff }

// ZeroGrad zeroes all gradients in place (one pass over the flat gradient
// buffer after Flatten; per parameter otherwise, where undefined gradients
// stay undefined).
func (s *Store) ZeroGrad() {
	if s.flatGr != nil {
		s.flatGr.Zero_()
		return
	}
	sc := ct.NewScope()
	defer sc.Close()
	for _, p := range s.Params() {
		if g := p.T.Grad(sc); g != nil {
			g.Zero_()
		}
	}
}

// ViewsOf slices a flat buffer shaped like FlatParams into one named view per
// trainable parameter (e.g. to export an EMA copy as a state dict). The
// views are owned by sc and alias buf.
func (s *Store) ViewsOf(sc *ct.Scope, buf *ct.Tensor) []ct.Named {
	ps := s.Params()
	out := make([]ct.Named, len(ps))
	for i, p := range ps {
		n := s.flatOff[i+1] - s.flatOff[i]
		out[i] = ct.Named{Name: p.Name, T: sc.Adopt(buf.Narrow(0, s.flatOff[i], n)).View(p.T.Shape()...)}
	}
	return out
}

// Grads returns the current gradient of every trainable parameter (handles
// owned by sc aliasing the live gradients; nil where a parameter has none)
// and each parameter's element count, in Params() order: the segments
// cgotorch.FusedAdamW takes after FlattenParams.
func (s *Store) Grads(sc *ct.Scope) (grads []*ct.Tensor, numel []int64) {
	ps := s.Params()
	grads, numel = make([]*ct.Tensor, len(ps)), make([]int64, len(ps))
	for i, p := range ps {
		grads[i] = p.T.Grad(sc)
		numel[i] = p.T.Numel()
	}
	return grads, numel
}

// ClearGrads resets every gradient to none, releasing its memory (after
// FlattenParams; after Flatten use ZeroGrad, which keeps the buffer).
func (s *Store) ClearGrads() {
	for _, p := range s.Params() {
		p.T.SetGrad(nil)
	}
}
