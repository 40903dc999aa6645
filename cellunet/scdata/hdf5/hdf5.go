package hdf5

/*
#cgo pkg-config: hdf5-serial
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

// guard locks the goroutine to its OS thread and silences libhdf5's
// automatic error printing on that thread. Use as `defer guard()()`.
func guard() func() {
	runtime.LockOSThread()
	C.sc_quiet()
	return runtime.UnlockOSThread
}

// stackMsg condenses and clears the calling thread's libhdf5 error stack.
// Call it under guard, right after the failing call.
func stackMsg() string {
	var buf [1024]C.char
	n := C.sc_errmsg(&buf[0], C.size_t(len(buf)))
	return C.GoStringN(&buf[0], C.int(n))
}

// Type is an HDF5 element type used for creating datasets and attributes.
type Type int

// Element types. String is a variable-length UTF-8 string.
const (
	Int8 Type = iota + 1
	Int16
	Int32
	Int64
	Uint8
	Uint16
	Uint32
	Uint64
	Float32
	Float64
	String
)

var typeNames = [...]string{"invalid", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64", "string"}

// String returns the type name ("float32", "string", ...).
func (t Type) String() string {
	if t < 0 || int(t) >= len(typeNames) {
		return fmt.Sprintf("Type(%d)", int(t))
	}
	return typeNames[t]
}

// Numeric is the set of Go element types that reads and writes convert to
// and from; libhdf5 converts between any integer and float file types.
type Numeric interface {
	int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64 | float32 | float64
}

// typeOf maps a Go element type to its Type.
func typeOf[T Numeric]() Type {
	var z T
	switch any(z).(type) {
	case int8:
		return Int8
	case int16:
		return Int16
	case int32:
		return Int32
	case int64:
		return Int64
	case uint8:
		return Uint8
	case uint16:
		return Uint16
	case uint32:
		return Uint32
	case uint64:
		return Uint64
	case float32:
		return Float32
	case float64:
		return Float64
	}
	return 0
}

// nativeType returns libhdf5's native type for t (not to be closed).
func nativeType(t Type) C.hid_t {
	if t < Int8 || t > Float64 {
		return -1
	}
	return C.sc_native(C.int(t))
}

// Kind says what a path names.
type Kind int

// Object kinds.
const (
	KindNone    Kind = iota // nothing at that path
	KindGroup               // a group
	KindDataset             // a dataset
	KindOther               // a named datatype or another object
)

// String returns "none", "group", "dataset" or "other".
func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindGroup:
		return "group"
	case KindDataset:
		return "dataset"
	}
	return "other"
}

// joinPath joins an object path and a relative name for messages.
func joinPath(base, name string) string {
	if strings.HasPrefix(name, "/") {
		return name
	}
	if base == "" || base == "/" {
		return "/" + name
	}
	return base + "/" + name
}

// OpenObjectCount returns the number of libhdf5 file, group, dataset,
// datatype and attribute identifiers open in the process, across all files
// (H5Fget_obj_count with H5F_OBJ_ALL). Leak tests compare it to a baseline.
func OpenObjectCount() (int, error) {
	defer guard()()
	n := C.H5Fget_obj_count(C.H5F_OBJ_ALL, C.H5F_OBJ_ALL)
	if n < 0 {
		return 0, &Error{File: "(all files)", Object: "/", Op: "count open objects", Detail: stackMsg(), Err: ErrLibrary}
	}
	return int(n), nil
}

// cstr allocates a C string; free it with C.free.
func cstr(s string) *C.char { return C.CString(s) }

func free(p *C.char) { C.free(unsafe.Pointer(p)) }

// ptr returns a pointer to the first element of s, or nil when s is empty.
func ptr[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}
