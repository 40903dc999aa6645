package hdf5

/*
#include <stddef.h>
int sc_register_lzf(void);
*/
import "C"

import (
	"errors"
	"unsafe"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/lzf"
)

// LZFFilterID is the HDF5 filter id h5py uses for LZF.
const LZFFilterID = 32000

// registerLZF makes filter 32000 available; call under guard.
func registerLZF(file string) error {
	if C.sc_register_lzf() < 0 {
		return &Error{File: file, Object: "/", Op: "register LZF filter", Detail: stackMsg(), Err: ErrLibrary}
	}
	return nil
}

// scdataLZFDecompress is called by the C filter (lzf_filter.c). It returns
// the decompressed size, -2 when dst is too small, -1 on corrupt input.
//
//export scdataLZFDecompress
func scdataLZFDecompress(src unsafe.Pointer, srcLen C.size_t, dst unsafe.Pointer, dstCap C.size_t) C.longlong {
	in := unsafe.Slice((*byte)(src), int(srcLen))
	out := unsafe.Slice((*byte)(dst), int(dstCap))
	n, err := lzf.Decompress(out, in)
	switch {
	case err == nil:
		return C.longlong(n)
	case errors.Is(err, lzf.ErrShortBuffer):
		return -2
	default:
		return -1
	}
}
