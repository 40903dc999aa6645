package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

import (
	"fmt"
	"strconv"
	"strings"
)

// DType is a tensor element type.
type DType int32

// Element types. The zero DType means Float32 wherever an Options is taken.
const (
	Float32  DType = C.CGT_F32
	Float64  DType = C.CGT_F64
	Float16  DType = C.CGT_F16
	BFloat16 DType = C.CGT_BF16
	Int64    DType = C.CGT_I64
	Int32    DType = C.CGT_I32
	Uint8    DType = C.CGT_U8
	Bool     DType = C.CGT_BOOL
)

// Size is the element size in bytes.
func (d DType) Size() int {
	switch d {
	case Float64, Int64:
		return 8
	case Float32, Int32:
		return 4
	case Float16, BFloat16:
		return 2
	case Uint8, Bool:
		return 1
	}
	return 0
}

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool {
	return d == Float32 || d == Float64 || d == Float16 || d == BFloat16
}

func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	case Float16:
		return "float16"
	case BFloat16:
		return "bfloat16"
	case Int64:
		return "int64"
	case Int32:
		return "int32"
	case Uint8:
		return "uint8"
	case Bool:
		return "bool"
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// ParseDType accepts the names String returns.
func ParseDType(s string) (DType, error) {
	for _, d := range []DType{Float32, Float64, Float16, BFloat16, Int64, Int32, Uint8, Bool} {
		if s == d.String() {
			return d, nil
		}
	}
	return 0, fmt.Errorf("cgotorch: unknown dtype %q (want float32, float64, float16, bfloat16, int64, int32, uint8 or bool)", s)
}

func (d DType) orDefault() DType {
	if d == 0 {
		return Float32
	}
	return d
}

// DeviceKind is CPU or CUDA.
type DeviceKind int32

// Device kinds.
const (
	KindCPU  DeviceKind = 0
	KindCUDA DeviceKind = 1
)

// Device is where a tensor lives. The zero value is the CPU.
type Device struct {
	Kind  DeviceKind
	Index int
}

// CPU is the host device.
var CPU = Device{}

// CUDA returns CUDA device i.
func CUDA(i int) Device { return Device{Kind: KindCUDA, Index: i} }

// IsCUDA reports whether d is a CUDA device.
func (d Device) IsCUDA() bool { return d.Kind == KindCUDA }

func (d Device) String() string {
	if d.Kind == KindCUDA {
		return "cuda:" + strconv.Itoa(d.Index)
	}
	return "cpu"
}

// ParseDevice accepts "cpu", "cuda" (device 0) and "cuda:N".
func ParseDevice(s string) (Device, error) {
	switch {
	case s == "cpu":
		return CPU, nil
	case s == "cuda":
		return CUDA(0), nil
	case strings.HasPrefix(s, "cuda:"):
		i, err := strconv.Atoi(s[len("cuda:"):])
		if err == nil && i >= 0 {
			return CUDA(i), nil
		}
	}
	return CPU, fmt.Errorf("cgotorch: bad device %q (want cpu, cuda or cuda:N)", s)
}

func (d Device) c() C.cgt_device {
	return C.cgt_device{kind: C.int32_t(d.Kind), index: C.int32_t(d.Index)}
}

func deviceFromC(d C.cgt_device) Device {
	return Device{Kind: DeviceKind(d.kind), Index: int(d.index)}
}

// Options selects dtype and device for a new tensor. The zero value is
// float32 on the CPU.
type Options struct {
	DType  DType
	Device Device
}

// On returns float32 options on dev.
func On(dev Device) Options { return Options{DType: Float32, Device: dev} }

// Of returns options for dtype d on the CPU.
func Of(d DType) Options { return Options{DType: d} }

// WithDType returns o with its dtype replaced.
func (o Options) WithDType(d DType) Options { o.DType = d; return o }
