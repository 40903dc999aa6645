package hdf5

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"strings"
)

// Class is the class of a dataset's or attribute's datatype.
type Class int

// Datatype classes.
const (
	ClassOther     Class = iota // time, bitfield, opaque, array, vlen sequence
	ClassInt                    // signed or unsigned integer
	ClassFloat                  // floating point
	ClassString                 // fixed or variable-length string
	ClassReference              // object or region reference
	ClassEnum                   // enumeration (h5py writes numpy bool as one)
	ClassCompound               // compound (numpy structured array)
)

// String returns the class name ("integer", "float", ...).
func (c Class) String() string {
	switch c {
	case ClassInt:
		return "integer"
	case ClassFloat:
		return "float"
	case ClassString:
		return "string"
	case ClassReference:
		return "reference"
	case ClassEnum:
		return "enum"
	case ClassCompound:
		return "compound"
	}
	return "other"
}

// MaxDeclaredBytes caps what one dataset may declare (1 TiB); larger
// shapes are treated as corrupt before any allocation happens.
const MaxDeclaredBytes = 1 << 40

// maxFilterRatio bounds decompressed/stored bytes for filtered datasets
// (deflate cannot exceed about 1032:1, LZF about 90:1).
const maxFilterRatio = 4096

// plausibilitySlack is added to every bound, so small datasets with
// unallocated storage (all fill value) still read.
const plausibilitySlack = 64 << 20

// Dataset is an open HDF5 dataset with its shape and datatype.
type Dataset struct {
	object
	shape     []int64
	class     Class
	elemSize  int
	varString bool
	signed    bool
	checked   bool // storage plausibility verified
}

// describe reads shape and datatype; call under guard.
func (d *Dataset) describe() error {
	space := C.H5Dget_space(d.id)
	if space < 0 {
		return d.libErr("get dataspace")
	}
	defer C.H5Sclose(space)
	var dims [32]C.hsize_t
	rank := C.sc_space_dims(space, 32, &dims[0])
	if rank == -2 {
		return d.errorf("get dataspace", ErrShape, "rank above 32")
	}
	if rank < 0 {
		return d.libErr("get dataspace")
	}
	d.shape = make([]int64, int(rank))
	total := uint64(1)
	for i := range d.shape {
		v := uint64(dims[i])
		if v > MaxDeclaredBytes {
			return d.errorf("get dataspace", ErrTooLarge, "dimension %d is %d", i, v)
		}
		d.shape[i] = int64(v)
		total *= v
		if total > MaxDeclaredBytes {
			return d.errorf("get dataspace", ErrTooLarge, "shape %v declares more than %d elements", d.shape, int64(MaxDeclaredBytes))
		}
	}
	t := C.H5Dget_type(d.id)
	if t < 0 {
		return d.libErr("get datatype")
	}
	defer C.H5Tclose(t)
	var size C.size_t
	var vlen, signed C.int
	cls := C.sc_type_info(t, &size, &vlen, &signed)
	if cls < 0 {
		return d.libErr("get datatype")
	}
	d.class, d.elemSize, d.varString, d.signed = Class(cls), int(size), vlen != 0, signed != 0
	return nil
}

// Close releases the dataset's identifier. Closing twice returns ErrClosed.
func (d *Dataset) Close() error {
	if d.id < 0 {
		return d.closedErr("close dataset")
	}
	defer guard()()
	if C.H5Dclose(d.id) < 0 {
		return d.libErr("close dataset")
	}
	d.id = -1
	return nil
}

// Shape returns a copy of the dataset's dimensions; empty for a scalar.
func (d *Dataset) Shape() []int64 { return append([]int64(nil), d.shape...) }

// Rank returns the number of dimensions (0 for a scalar).
func (d *Dataset) Rank() int { return len(d.shape) }

// Len returns the length of dimension 0 (1 for a scalar).
func (d *Dataset) Len() int64 {
	if len(d.shape) == 0 {
		return 1
	}
	return d.shape[0]
}

// NumElements returns the product of the dimensions (1 for a scalar).
func (d *Dataset) NumElements() int64 {
	n := int64(1)
	for _, v := range d.shape {
		n *= v
	}
	return n
}

// rowElems is the number of elements per index of dimension 0.
func (d *Dataset) rowElems() int64 {
	n := int64(1)
	for _, v := range d.shape[min(1, len(d.shape)):] {
		n *= v
	}
	return n
}

// Class returns the class of the dataset's datatype.
func (d *Dataset) Class() Class { return d.class }

// ElemSize returns the size in bytes of one element of the file datatype.
func (d *Dataset) ElemSize() int { return d.elemSize }

// IsVarString reports whether the dataset holds variable-length strings.
func (d *Dataset) IsVarString() bool { return d.varString }

// Describe returns a short description such as "float32[700,765]" for
// messages.
func (d *Dataset) Describe() string {
	dims := make([]string, len(d.shape))
	for i, v := range d.shape {
		dims[i] = fmt.Sprint(v)
	}
	kind := d.class.String()
	switch d.class {
	case ClassInt:
		if d.signed {
			kind = fmt.Sprintf("int%d", 8*d.elemSize)
		} else {
			kind = fmt.Sprintf("uint%d", 8*d.elemSize)
		}
	case ClassFloat:
		kind = fmt.Sprintf("float%d", 8*d.elemSize)
	case ClassString:
		if d.varString {
			kind = "vlen-string"
		} else {
			kind = fmt.Sprintf("string%d", d.elemSize)
		}
	}
	return kind + "[" + strings.Join(dims, ",") + "]"
}

// plausible rejects datasets whose declared size cannot come from the
// bytes the file actually stores, so a corrupt dataspace cannot make a
// reader allocate without bound. Call under guard.
func (d *Dataset) plausible(op string) error {
	if d.checked {
		return nil
	}
	declared := uint64(d.NumElements()) * uint64(max(d.elemSize, 1))
	if declared <= plausibilitySlack {
		d.checked = true
		return nil
	}
	stored := uint64(C.H5Dget_storage_size(d.id))
	var fsize C.hsize_t
	if C.sc_get_filesize(d.id, &fsize) < 0 {
		return d.libErr(op)
	}
	stored = min(stored, uint64(fsize))
	ratio := uint64(1)
	nf := C.sc_has_filters(d.id)
	if nf < 0 {
		return d.libErr(op)
	}
	if nf > 0 {
		ratio = maxFilterRatio
	}
	if declared > stored*ratio+plausibilitySlack {
		return d.errorf(op, ErrTooLarge, "dataset %s declares %d bytes but the file stores only %d bytes for it", d.Describe(), declared, stored)
	}
	d.checked = true
	return nil
}
