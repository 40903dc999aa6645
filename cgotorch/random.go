package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

import (
	"sync/atomic"
	"unsafe"
)

// Generator is a libtorch random number generator. Random functions take a
// *Generator; nil means the device's default generator. A Generator must be
// closed.
type Generator struct {
	h unsafe.Pointer // C.cgt_generator; swapped to nil atomically by Close
}

func (g *Generator) ptr() C.cgt_generator {
	if g == nil {
		return nil
	}
	p := C.cgt_generator(atomic.LoadPointer(&g.h))
	if p == nil {
		panic(misuse("generator", "use of a closed generator"))
	}
	return p
}

// NewGenerator returns a private generator for dev seeded with seed.
func NewGenerator(dev Device, seed uint64) (*Generator, error) {
	var h C.cgt_generator
	if err := check("generator_new", C.cgt_generator_new(dev.c(), C.uint64_t(seed), &h)); err != nil {
		return nil, err
	}
	g := &Generator{}
	g.h = unsafe.Pointer(h)
	return g, nil
}

// DefaultGenerator returns a handle to dev's default generator (the one used
// when nil is passed). Closing the handle does not affect the generator.
func DefaultGenerator(dev Device) (*Generator, error) {
	var h C.cgt_generator
	if err := check("generator_default", C.cgt_generator_default(dev.c(), &h)); err != nil {
		return nil, err
	}
	g := &Generator{}
	g.h = unsafe.Pointer(h)
	return g, nil
}

// Close releases the handle. It is idempotent.
func (g *Generator) Close() {
	if g == nil {
		return
	}
	if p := atomic.SwapPointer(&g.h, nil); p != nil {
		C.cgt_generator_free(C.cgt_generator(p))
	}
}

// Seed reseeds g.
func (g *Generator) Seed(seed uint64) error {
	return check("generator_seed", C.cgt_generator_set_seed(g.ptr(), C.uint64_t(seed)))
}

// State returns g's full state (to save in a checkpoint).
func (g *Generator) State() ([]byte, error) {
	var out C.cgt_tensor
	if err := check("generator_get_state", C.cgt_generator_get_state(g.ptr(), &out)); err != nil {
		return nil, err
	}
	t := newTensor(out, nil)
	defer t.Free()
	var b []byte
	err := Try(func() { b = t.Bytes() })
	return b, err
}

// SetState restores a state returned by State.
func (g *Generator) SetState(state []byte) error {
	var t *Tensor
	if err := Try(func() { t = FromSlice(state) }); err != nil {
		return err
	}
	defer t.Free()
	return check("generator_set_state", C.cgt_generator_set_state(g.ptr(), t.h))
}

// ManualSeed seeds libtorch's default CPU generator and every CUDA one
// (torch.manual_seed).
func ManualSeed(seed uint64) error {
	return check("manual_seed", C.cgt_manual_seed(C.uint64_t(seed)))
}

// Randn returns standard normal samples.
func (s *Scope) Randn(o Options, g *Generator, shape ...int64) *Tensor {
	sp, nd := shapePtr(shape)
	var out C.cgt_tensor
	must("randn", C.cgt_randn(sp, nd, C.int32_t(o.DType.orDefault()), o.Device.c(), g.ptr(), &out))
	return newTensor(out, s)
}

// Rand returns samples uniform in [0, 1).
func (s *Scope) Rand(o Options, g *Generator, shape ...int64) *Tensor {
	sp, nd := shapePtr(shape)
	var out C.cgt_tensor
	must("rand", C.cgt_rand(sp, nd, C.int32_t(o.DType.orDefault()), o.Device.c(), g.ptr(), &out))
	return newTensor(out, s)
}

// RandInt returns integers uniform in [low, high). A zero o.DType means int64.
func (s *Scope) RandInt(low, high int64, o Options, g *Generator, shape ...int64) *Tensor {
	if o.DType == 0 {
		o.DType = Int64
	}
	sp, nd := shapePtr(shape)
	var out C.cgt_tensor
	must("randint", C.cgt_randint(C.int64_t(low), C.int64_t(high), sp, nd, C.int32_t(o.DType), o.Device.c(), g.ptr(), &out))
	return newTensor(out, s)
}

// RandPerm returns a random permutation of 0..n-1. A zero o.DType means int64.
func (s *Scope) RandPerm(n int64, o Options, g *Generator) *Tensor {
	if o.DType == 0 {
		o.DType = Int64
	}
	var out C.cgt_tensor
	must("randperm", C.cgt_randperm(C.int64_t(n), C.int32_t(o.DType), o.Device.c(), g.ptr(), &out))
	return newTensor(out, s)
}

// Uniform_ fills t with samples from U(low, high).
func (t *Tensor) Uniform_(low, high float64, g *Generator) *Tensor {
	must("uniform_", C.cgt_uniform_(t.handle("uniform_"), C.double(low), C.double(high), g.ptr()))
	return t
}

// Normal_ fills t with samples from N(mean, std²).
func (t *Tensor) Normal_(mean, std float64, g *Generator) *Tensor {
	must("normal_", C.cgt_normal_(t.handle("normal_"), C.double(mean), C.double(std), g.ptr()))
	return t
}

// Bernoulli_ fills t with 1 with probability p, else 0.
func (t *Tensor) Bernoulli_(p float64, g *Generator) *Tensor {
	must("bernoulli_", C.cgt_bernoulli_(t.handle("bernoulli_"), C.double(p), g.ptr()))
	return t
}

// Multinomial draws n indices from the categorical distribution with
// non-negative weights t ([K] or [R,K]).
func (t *Tensor) Multinomial(n int64, replacement bool, g *Generator) *Tensor {
	var out C.cgt_tensor
	must("multinomial", C.cgt_multinomial(t.handle("multinomial"), C.int64_t(n), cbool(replacement), g.ptr(), &out))
	return newTensor(out, t.scope)
}
