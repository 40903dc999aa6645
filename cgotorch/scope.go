package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Tensor is a handle to a libtorch tensor. Its memory (host or device) is
// released deterministically: by Free, or by Close of the Scope that owns it.
// Go's garbage collector never frees tensors.
//
// Ownership: a tensor created through a Scope belongs to that scope. The
// result of an operation joins the scope of its first input that has one; if
// no input is owned (for example an op on parameters alone), the result is
// unowned too and the caller must Free it or hand it to a scope with Adopt.
//
// A Tensor is not safe for concurrent mutation; read-only use from several
// goroutines is fine. Use *Tensor only: a copied Tensor value would hold
// the same handle, and freeing both frees it twice (`go vet` reports copies).
type Tensor struct {
	_     noCopy
	h     C.cgt_tensor
	scope *Scope
}

// noCopy makes `go vet` (its copylocks check) report any copy of the struct
// that embeds it; it has no other effect. See sync.noCopy.
type noCopy struct{}

// Lock and Unlock are no-ops, there for go vet.
func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

func newTensor(h C.cgt_tensor, s *Scope) *Tensor {
	t := &Tensor{h: h}
	if s != nil {
		s.add(t)
	}
	return t
}

func (t *Tensor) handle(op string) C.cgt_tensor {
	if t == nil || t.h == nil {
		panic(misuse(op, "use of a nil or freed tensor"))
	}
	return t.h
}

// optHandle maps a nil *Tensor to a NULL handle (an absent optional argument).
func optHandle(t *Tensor, op string) C.cgt_tensor {
	if t == nil {
		return nil
	}
	return t.handle(op)
}

// Valid reports whether t holds a live handle.
func (t *Tensor) Valid() bool { return t != nil && t.h != nil }

// Scope returns the scope that owns t, or nil.
func (t *Tensor) Scope() *Scope { return t.scope }

// Free releases t now, whether or not a scope owns it (the scope then skips
// it). Free is idempotent and nil-safe.
func (t *Tensor) Free() {
	if t == nil || t.h == nil {
		return
	}
	C.cgt_tensor_free(t.h)
	t.h = nil
	t.scope = nil
}

// Scope owns the tensors created in it and frees them all in one call to
// Close. Use one scope per step (an arena) and Keep what must outlive it:
//
//	s := cgotorch.NewScope()
//	defer s.Close()
//
// A Scope belongs to one goroutine. Close is idempotent and the scope may be
// reused after it. The zero value is ready to use. A nil *Scope is accepted
// by the creation methods and means "unowned".
type Scope struct {
	ts  []*Tensor
	buf []C.cgt_tensor
}

// NewScope returns an empty scope.
func NewScope() *Scope { return &Scope{} }

func (s *Scope) add(t *Tensor) {
	t.scope = s
	s.ts = append(s.ts, t)
}

// Len is the number of tensors the scope currently owns (freed ones excluded).
func (s *Scope) Len() int {
	n := 0
	for _, t := range s.ts {
		if t.h != nil && t.scope == s {
			n++
		}
	}
	return n
}

// Close frees every tensor the scope still owns, in a single C call. Read any
// values you need (Item, Float32s) before closing.
func (s *Scope) Close() {
	if s == nil || len(s.ts) == 0 {
		return
	}
	s.buf = s.buf[:0]
	for _, t := range s.ts {
		if t.h != nil && t.scope == s {
			s.buf = append(s.buf, t.h)
			t.h = nil
			t.scope = nil
		}
	}
	if len(s.buf) > 0 {
		C.cgt_tensor_free_many((*C.cgt_tensor)(unsafe.Pointer(&s.buf[0])), C.int64_t(len(s.buf)))
	}
	clear(s.ts)
	s.ts = s.ts[:0]
}

// Keep removes t from s, so it survives s.Close; the caller now owns it.
// It returns t for chaining.
func (s *Scope) Keep(t *Tensor) *Tensor {
	if t != nil && t.scope == s {
		t.scope = nil
	}
	return t
}

// Adopt makes s the owner of t (taking it from any other scope) and returns t.
func (s *Scope) Adopt(t *Tensor) *Tensor {
	if t == nil || t.h == nil {
		return t
	}
	if s == nil {
		t.scope = nil
		return t
	}
	if t.scope != s {
		s.add(t)
	}
	return t
}

// MoveTo transfers t to scope dst (nil: unowned) and returns t.
func (t *Tensor) MoveTo(dst *Scope) *Tensor { return dst.Adopt(t) }

// Run runs fn, closes the scope, and returns fn's error or the *Error a
// tensor operation panicked with. Other panics propagate (after Close).
func (s *Scope) Run(fn func() error) (err error) {
	defer s.Close()
	perr := Try(func() { err = fn() })
	if perr != nil {
		return perr
	}
	return err
}

// String describes t briefly (shape, dtype, device) without copying data.
func (t *Tensor) String() string {
	if !t.Valid() {
		return "Tensor(freed)"
	}
	return fmt.Sprintf("Tensor(%v, %s, %s)", t.Shape(), t.DType(), t.Device())
}
