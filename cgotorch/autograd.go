package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

import "runtime"

// SetRequiresGrad marks t as a leaf whose gradient autograd accumulates.
func (t *Tensor) SetRequiresGrad(on bool) *Tensor {
	must("requires_grad_", C.cgt_set_requires_grad(t.handle("requires_grad_"), cbool(on)))
	return t
}

// RequiresGrad reports whether autograd tracks t.
func (t *Tensor) RequiresGrad() bool {
	var v C.int32_t
	must("requires_grad", C.cgt_requires_grad(t.handle("requires_grad"), &v))
	return v != 0
}

// IsLeaf reports whether t is an autograd leaf.
func (t *Tensor) IsLeaf() bool {
	var v C.int32_t
	must("is_leaf", C.cgt_is_leaf(t.handle("is_leaf"), &v))
	return v != 0
}

// Backward computes gradients of the scalar t into the .grad of every leaf
// it depends on, then frees the graph.
func (t *Tensor) Backward() {
	must("backward", C.cgt_backward(t.handle("backward"), nil, 0))
}

// BackwardWith back-propagates grad (same shape as t); retain keeps the graph.
func (t *Tensor) BackwardWith(grad *Tensor, retain bool) {
	must("backward", C.cgt_backward(t.handle("backward"), optHandle(grad, "backward"), cbool(retain)))
}

// Grad returns a new handle to t's gradient, owned by s (nil: unowned), or
// nil if t has none yet. The handle aliases the live gradient.
func (t *Tensor) Grad(s *Scope) *Tensor {
	var out C.cgt_tensor
	must("grad", C.cgt_grad(t.handle("grad"), &out))
	if out == nil {
		return nil
	}
	return newTensor(out, s)
}

// SetGrad makes g (aliased, not copied) t's gradient; nil clears it.
// Autograd then accumulates into g in place, which lets parameters share
// one flat gradient buffer.
func (t *Tensor) SetGrad(g *Tensor) {
	must("set_grad", C.cgt_set_grad(t.handle("set_grad"), optHandle(g, "set_grad")))
}

// Detach returns a new handle sharing t's data, outside autograd.
func (t *Tensor) Detach() *Tensor {
	var out C.cgt_tensor
	must("detach", C.cgt_detach(t.handle("detach"), &out))
	return newTensor(out, t.scope)
}

// GradOf returns ∂sum(y)/∂x without touching x.Grad (torch.autograd.grad);
// the graph of y is freed. The result joins y's scope.
func GradOf(y, x *Tensor) *Tensor {
	var out C.cgt_tensor
	must("autograd_grad", C.cgt_autograd_grad(y.handle("autograd_grad"), x.handle("autograd_grad"), &out))
	return newTensor(out, pick(y, x))
}

// NoGrad runs fn with gradient tracking disabled and restores the previous
// mode afterwards, even if fn panics. libtorch's grad mode belongs to the OS
// thread, so the goroutine is locked to its thread for the duration; fn must
// not hand tensor work to other goroutines.
func NoGrad(fn func()) { WithGradMode(false, fn) }

// WithGradMode runs fn with grad mode set to enabled (see NoGrad).
func WithGradMode(enabled bool, fn func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	prev := C.cgt_set_grad_enabled(cbool(enabled))
	defer C.cgt_set_grad_enabled(prev)
	fn()
}

// IsGradEnabled reports the grad mode of the calling OS thread. It is only
// meaningful inside NoGrad/WithGradMode or on a locked thread.
func IsGradEnabled() bool { return C.cgt_is_grad_enabled() != 0 }

// GradNorm returns the L2 norm over the gradients of params as a 0-dim
// float32 tensor on their device, owned by s; no host synchronisation.
// Parameters without a gradient count as zero.
func GradNorm(s *Scope, params []*Tensor) *Tensor {
	hs := handles("grad_norm", params)
	var out C.cgt_tensor
	must("grad_norm", C.cgt_grad_norm(listPtr(hs), C.int32_t(len(hs)), &out))
	return newTensor(out, s)
}

// NormOf returns the L2 norm over all elements of ts as a 0-dim float32
// tensor owned by s; no host synchronisation.
func NormOf(s *Scope, ts []*Tensor) *Tensor {
	hs := handles("norm_of", ts)
	var out C.cgt_tensor
	must("norm_of", C.cgt_norm_of(listPtr(hs), C.int32_t(len(hs)), &out))
	return newTensor(out, s)
}

// ClipGradNorm scales the gradients of params so their total L2 norm is at
// most maxNorm (torch.nn.utils.clip_grad_norm_) and returns the norm before
// clipping.
func ClipGradNorm(params []*Tensor, maxNorm float64) (float64, error) {
	hs := handles("clip_grad_norm_", params)
	var total C.double
	err := check("clip_grad_norm_", C.cgt_clip_grad_norm_(listPtr(hs), C.int32_t(len(hs)), C.double(maxNorm), &total))
	return float64(total), err
}
