package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

func shapePtr(shape []int64) (*C.int64_t, C.int32_t) {
	if len(shape) == 0 {
		return nil, 0
	}
	return (*C.int64_t)(unsafe.Pointer(&shape[0])), C.int32_t(len(shape))
}

func numelOf(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// ------------------------------------------------------------- metadata

// Shape returns the sizes of t's dimensions.
func (t *Tensor) Shape() []int64 {
	var buf [C.CGT_MAX_DIMS]C.int64_t
	var nd C.int32_t
	must("shape", C.cgt_shape(t.handle("shape"), &buf[0], &nd))
	s := make([]int64, int(nd))
	for i := range s {
		s[i] = int64(buf[i])
	}
	return s
}

// Dim returns the size of dimension d (negative counts from the end).
func (t *Tensor) Dim(d int) int64 {
	s := t.Shape()
	if d < 0 {
		d += len(s)
	}
	if d < 0 || d >= len(s) {
		panic(misuse("dim", fmt.Sprintf("dimension %d out of range for shape %v", d, s)))
	}
	return s[d]
}

// NDim is t's rank.
func (t *Tensor) NDim() int {
	var n C.int32_t
	must("ndim", C.cgt_ndim(t.handle("ndim"), &n))
	return int(n)
}

// Numel is t's element count.
func (t *Tensor) Numel() int64 {
	var n C.int64_t
	must("numel", C.cgt_numel(t.handle("numel"), &n))
	return int64(n)
}

// DType is t's element type.
func (t *Tensor) DType() DType {
	var d C.int32_t
	must("dtype", C.cgt_dtype(t.handle("dtype"), &d))
	return DType(d)
}

// Device is where t lives.
func (t *Tensor) Device() Device {
	var d C.cgt_device
	must("device", C.cgt_device_of(t.handle("device"), &d))
	return deviceFromC(d)
}

// Options returns t's dtype and device.
func (t *Tensor) Options() Options { return Options{DType: t.DType(), Device: t.Device()} }

// IsContiguous reports whether t is laid out densely in row-major order.
func (t *Tensor) IsContiguous() bool {
	var c C.int32_t
	must("is_contiguous", C.cgt_is_contiguous(t.handle("is_contiguous"), &c))
	return c != 0
}

// StorageBytes is the size of t's storage (shared by its views).
func (t *Tensor) StorageBytes() int64 {
	var n C.int64_t
	must("storage_nbytes", C.cgt_storage_nbytes(t.handle("storage_nbytes"), &n))
	return int64(n)
}

// ------------------------------------------------------------- creation

// FromBytes copies raw little-endian element bytes of dtype dt into a new
// tensor of the given shape on dev.
func (s *Scope) FromBytes(data []byte, o Options, shape ...int64) *Tensor {
	dt := o.DType.orDefault()
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	sp, nd := shapePtr(shape)
	var out C.cgt_tensor
	must("from_data", C.cgt_from_data(p, C.int64_t(len(data)), sp, nd, C.int32_t(dt), o.Device.c(), &out))
	return newTensor(out, s)
}

// fromPtr copies n elements of dt at p.
func (s *Scope) fromPtr(p unsafe.Pointer, nbytes int, dt DType, dev Device, shape []int64) *Tensor {
	sp, nd := shapePtr(shape)
	var out C.cgt_tensor
	must("from_data", C.cgt_from_data(p, C.int64_t(nbytes), sp, nd, C.int32_t(dt), dev.c(), &out))
	return newTensor(out, s)
}

// FromSlice copies a Go slice ([]float32, []float64, []int64, []int32,
// []uint8 or []bool) into a new CPU tensor of the given shape. With no shape,
// the tensor is 1-D.
func (s *Scope) FromSlice(data any, shape ...int64) *Tensor {
	var p unsafe.Pointer
	var n int
	var dt DType
	switch v := data.(type) {
	case []float32:
		n, dt = len(v), Float32
		if n > 0 {
			p = unsafe.Pointer(&v[0])
		}
	case []float64:
		n, dt = len(v), Float64
		if n > 0 {
			p = unsafe.Pointer(&v[0])
		}
	case []int64:
		n, dt = len(v), Int64
		if n > 0 {
			p = unsafe.Pointer(&v[0])
		}
	case []int32:
		n, dt = len(v), Int32
		if n > 0 {
			p = unsafe.Pointer(&v[0])
		}
	case []uint8:
		n, dt = len(v), Uint8
		if n > 0 {
			p = unsafe.Pointer(&v[0])
		}
	case []bool:
		n, dt = len(v), Bool
		if n > 0 {
			p = unsafe.Pointer(&v[0])
		}
	default:
		panic(misuse("from_slice", fmt.Sprintf("unsupported slice type %T", data)))
	}
	if len(shape) == 0 {
		shape = []int64{int64(n)}
	}
	return s.fromPtr(p, n*dt.Size(), dt, CPU, shape)
}

// Scalar returns a 0-dim tensor holding v.
func (s *Scope) Scalar(v float64, o Options) *Tensor { return s.Full(v, o) }

// Full returns a tensor filled with v.
func (s *Scope) Full(v float64, o Options, shape ...int64) *Tensor {
	sp, nd := shapePtr(shape)
	var out C.cgt_tensor
	must("full", C.cgt_full(sp, nd, C.double(v), C.int32_t(o.DType.orDefault()), o.Device.c(), &out))
	return newTensor(out, s)
}

// Zeros returns a zero-filled tensor.
func (s *Scope) Zeros(o Options, shape ...int64) *Tensor { return s.Full(0, o, shape...) }

// Ones returns a tensor of ones.
func (s *Scope) Ones(o Options, shape ...int64) *Tensor { return s.Full(1, o, shape...) }

// Empty returns an uninitialised tensor.
func (s *Scope) Empty(o Options, shape ...int64) *Tensor {
	sp, nd := shapePtr(shape)
	var out C.cgt_tensor
	must("empty", C.cgt_empty(sp, nd, C.int32_t(o.DType.orDefault()), o.Device.c(), &out))
	return newTensor(out, s)
}

// Arange returns [start, start+step, ...) up to end (exclusive).
func (s *Scope) Arange(start, end, step float64, o Options) *Tensor {
	var out C.cgt_tensor
	must("arange", C.cgt_arange(C.double(start), C.double(end), C.double(step), C.int32_t(o.DType.orDefault()), o.Device.c(), &out))
	return newTensor(out, s)
}

// Linspace returns steps values evenly spaced over [start, end].
func (s *Scope) Linspace(start, end float64, steps int64, o Options) *Tensor {
	var out C.cgt_tensor
	must("linspace", C.cgt_linspace(C.double(start), C.double(end), C.int64_t(steps), C.int32_t(o.DType.orDefault()), o.Device.c(), &out))
	return newTensor(out, s)
}

// Package-level constructors for unowned tensors (the caller frees them).

// FromSlice is (*Scope)(nil).FromSlice: an unowned CPU tensor.
func FromSlice(data any, shape ...int64) *Tensor { return (*Scope)(nil).FromSlice(data, shape...) }

// Zeros is (*Scope)(nil).Zeros: an unowned tensor.
func Zeros(o Options, shape ...int64) *Tensor { return (*Scope)(nil).Zeros(o, shape...) }

// Full is (*Scope)(nil).Full: an unowned tensor.
func Full(v float64, o Options, shape ...int64) *Tensor { return (*Scope)(nil).Full(v, o, shape...) }

// ------------------------------------------------------- copies to Go

// CopyBytes copies t's elements (moved to the CPU, row-major) into dst,
// whose length must equal Numel()*DType().Size().
func (t *Tensor) CopyBytes(dst []byte) {
	var p unsafe.Pointer
	if len(dst) > 0 {
		p = unsafe.Pointer(&dst[0])
	}
	must("copy_to_host", C.cgt_copy_to_host(t.handle("copy_to_host"), p, C.int64_t(len(dst))))
}

// Bytes returns a copy of t's raw element bytes in row-major order.
func (t *Tensor) Bytes() []byte {
	b := make([]byte, int(t.Numel())*t.DType().Size())
	t.CopyBytes(b)
	return b
}

func (t *Tensor) copyOut(p unsafe.Pointer, nbytes int, want DType, op string) {
	if dt := t.DType(); dt != want {
		panic(misuse(op, fmt.Sprintf("tensor is %s, not %s (convert with To)", dt, want)))
	}
	must(op, C.cgt_copy_to_host(t.handle(op), p, C.int64_t(nbytes)))
}

// Float32s returns a copy of a float32 tensor's elements.
func (t *Tensor) Float32s() []float32 {
	v := make([]float32, t.Numel())
	var p unsafe.Pointer
	if len(v) > 0 {
		p = unsafe.Pointer(&v[0])
	}
	t.copyOut(p, 4*len(v), Float32, "float32s")
	return v
}

// CopyFloat32s copies a float32 tensor's elements into dst (len = Numel).
func (t *Tensor) CopyFloat32s(dst []float32) {
	var p unsafe.Pointer
	if len(dst) > 0 {
		p = unsafe.Pointer(&dst[0])
	}
	t.copyOut(p, 4*len(dst), Float32, "copy_float32s")
}

// Float64s returns a copy of a float64 tensor's elements.
func (t *Tensor) Float64s() []float64 {
	v := make([]float64, t.Numel())
	var p unsafe.Pointer
	if len(v) > 0 {
		p = unsafe.Pointer(&v[0])
	}
	t.copyOut(p, 8*len(v), Float64, "float64s")
	return v
}

// Int64s returns a copy of an int64 tensor's elements.
func (t *Tensor) Int64s() []int64 {
	v := make([]int64, t.Numel())
	var p unsafe.Pointer
	if len(v) > 0 {
		p = unsafe.Pointer(&v[0])
	}
	t.copyOut(p, 8*len(v), Int64, "int64s")
	return v
}

// Int32s returns a copy of an int32 tensor's elements.
func (t *Tensor) Int32s() []int32 {
	v := make([]int32, t.Numel())
	var p unsafe.Pointer
	if len(v) > 0 {
		p = unsafe.Pointer(&v[0])
	}
	t.copyOut(p, 4*len(v), Int32, "int32s")
	return v
}

// Bools returns a copy of a bool tensor's elements.
func (t *Tensor) Bools() []bool {
	v := make([]bool, t.Numel())
	var p unsafe.Pointer
	if len(v) > 0 {
		p = unsafe.Pointer(&v[0])
	}
	t.copyOut(p, len(v), Bool, "bools")
	return v
}

// Item returns the value of a one-element tensor (a device sync on CUDA).
func (t *Tensor) Item() float64 {
	var v C.double
	must("item", C.cgt_item(t.handle("item"), &v))
	return float64(v)
}
