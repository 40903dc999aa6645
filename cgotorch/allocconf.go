package cgotorch

/*
#include <stdlib.h>
#include "cgotorch.h"
*/
import "C"

import (
	"fmt"
	"os"
	"unsafe"
)

// AllocConfEnv are the environment variables libtorch's CUDA caching
// allocator reads its settings from. Releases disagree on which one wins
// when both are set (PYTORCH_CUDA_ALLOC_CONF first up to 2.8 and again in
// later releases, PYTORCH_ALLOC_CONF first in between), so Init exports
// Config.AllocConf into both.
var AllocConfEnv = [...]string{"PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"}

// exportAllocConf sets every variable of AllocConfEnv to conf.
func exportAllocConf(conf string) error {
	for _, name := range AllocConfEnv {
		if err := os.Setenv(name, conf); err != nil {
			return err
		}
	}
	return nil
}

// AllocConfState says where AllocConfReadback's text comes from.
type AllocConfState int

// AllocConfReadback states.
const (
	// AllocConfRead: the settings were read back from libtorch's CUDA
	// caching allocator configuration.
	AllocConfRead AllocConfState = C.CGT_ALLOC_CONF_READ
	// AllocConfNotApplicable: the CPU flavour has no CUDA caching allocator.
	AllocConfNotApplicable AllocConfState = C.CGT_ALLOC_CONF_NOT_APPLICABLE
	// AllocConfUnavailable: this libtorch (before 2.2) keeps the parsed
	// settings private.
	AllocConfUnavailable AllocConfState = C.CGT_ALLOC_CONF_UNAVAILABLE
)

// AllocConfReadback returns the CUDA caching allocator's settings as
// libtorch parsed them ("backend:native,expandable_segments:True,
// max_split_size_mb:unlimited,...;parsed from "..."") when state is
// AllocConfRead, else a sentence saying why they cannot be read. Reading
// parses the environment if the allocator has not done so yet, as it would
// itself: call it after Init.
func AllocConfReadback() (text string, state AllocConfState, err error) {
	var p *C.char
	var st C.int32_t
	if err := check("alloc_conf_readback", C.cgt_alloc_conf_readback(&p, &st)); err != nil {
		return "", AllocConfUnavailable, err
	}
	defer C.cgt_free(unsafe.Pointer(p))
	return C.GoString(p), AllocConfState(st), nil
}

// CUDAVersions are the CUDA runtime and driver API versions of the loaded
// CUDA libraries (1000·major + 10·minor, e.g. 12040; 0 where unknown). The
// CPU flavour returns ErrNoCUDA.
func CUDAVersions() (runtime, driver int, err error) {
	var r, d C.int32_t
	if err := check("cuda_versions", C.cgt_cuda_versions(&r, &d)); err != nil {
		return 0, 0, err
	}
	return int(r), int(d), nil
}

// FormatCUDAVersion renders 12040 as "12.4" (0 as "unknown").
func FormatCUDAVersion(v int) string {
	if v <= 0 {
		return "unknown"
	}
	s := fmt.Sprintf("%d.%d", v/1000, (v%1000)/10)
	if p := v % 10; p != 0 {
		s += fmt.Sprintf(".%d", p)
	}
	return s
}

// failNthHandleAlloc arms the shim's test hook: the n-th tensor handle the
// calling OS thread creates from now on fails as an out-of-memory `new`
// would (n <= 0 disarms). Tests lock the OS thread around it.
func failNthHandleAlloc(n int) { C.cgt_debug_fail_handle_alloc(C.int32_t(n)) }
