package cgotorch

/*
#include <stdlib.h>
#include "cgotorch.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// Code classifies a failure reported by libcgotorch.
type Code int32

// Codes mirror the CGT_ERR_* values of cgotorch.h.
const (
	CodeTorch           Code = C.CGT_ERR_TORCH
	CodeOutOfMemory     Code = C.CGT_ERR_OUT_OF_MEMORY
	CodeNoCUDA          Code = C.CGT_ERR_NO_CUDA
	CodeInvalidArgument Code = C.CGT_ERR_INVALID_ARGUMENT
	CodeStd             Code = C.CGT_ERR_STD
	CodeUnknown         Code = C.CGT_ERR_UNKNOWN
)

func (c Code) String() string {
	switch c {
	case CodeTorch:
		return "torch error"
	case CodeOutOfMemory:
		return "out of memory"
	case CodeNoCUDA:
		return "no CUDA"
	case CodeInvalidArgument:
		return "invalid argument"
	case CodeStd:
		return "C++ exception"
	case CodeUnknown:
		return "unknown error"
	case CodeDist:
		return "distributed error"
	case CodeDistTimeout:
		return "distributed timeout"
	}
	return fmt.Sprintf("code %d", int32(c))
}

// Sentinel errors; an *Error matches the one for its code with errors.Is.
var (
	ErrTorch           = errors.New("cgotorch: torch error")
	ErrOutOfMemory     = errors.New("cgotorch: out of memory")
	ErrNoCUDA          = errors.New("cgotorch: no CUDA")
	ErrInvalidArgument = errors.New("cgotorch: invalid argument")
)

// Error is a failure reported by libcgotorch: the code, the operation and
// libtorch's message (without its C++ backtrace).
type Error struct {
	Code Code
	Op   string
	Msg  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("cgotorch: %s: %s: %s", e.Op, e.Code, e.Msg)
}

// Is makes errors.Is(err, ErrOutOfMemory) (and the other sentinels) work.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrOutOfMemory:
		return e.Code == CodeOutOfMemory
	case ErrNoCUDA:
		return e.Code == CodeNoCUDA
	case ErrInvalidArgument:
		return e.Code == CodeInvalidArgument
	case ErrTorch:
		return e.Code == CodeTorch || e.Code == CodeStd || e.Code == CodeUnknown
	case ErrDistributed:
		return e.Code == CodeDist || e.Code == CodeDistTimeout
	case ErrDistTimeout:
		return e.Code == CodeDistTimeout
	}
	return false
}

// check converts a cgt_status into an error, freeing its message.
func check(op string, s C.cgt_status) error {
	if s.code == C.CGT_OK {
		return nil
	}
	msg := ""
	if s.msg != nil {
		msg = C.GoString(s.msg)
		C.cgt_free(unsafe.Pointer(s.msg))
	}
	return &Error{Code: Code(s.code), Op: op, Msg: msg}
}

// must panics with the *Error of a failed status. Tensor math uses it, as
// gonum's mat does for dimension errors; Try turns the panic back into an error.
func must(op string, s C.cgt_status) {
	if s.code != C.CGT_OK {
		panic(check(op, s))
	}
}

func misuse(op, msg string) *Error {
	return &Error{Code: CodeInvalidArgument, Op: op, Msg: msg}
}

// Try runs fn and returns the *Error that a tensor operation inside it
// panicked with (out of memory, bad shape, ...). Any other panic propagates.
func Try(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(*Error); ok {
				err = e
				return
			}
			panic(r)
		}
	}()
	fn()
	return nil
}
