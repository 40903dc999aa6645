package hdf5

/*
#include "shim.h"
*/
import "C"

import (
	"bytes"
	"unsafe"
)

// ReadStrings reads a scalar or 1-D string dataset (variable-length or
// fixed-length; fixed-length values lose their NUL or space padding).
func (d *Dataset) ReadStrings() ([]string, error) {
	return d.readStrings(0, d.Len(), "read strings")
}

// ReadStringsRange reads count strings of a 1-D string dataset from start.
func (d *Dataset) ReadStringsRange(start, count int64) ([]string, error) {
	op := "read string range"
	if len(d.shape) != 1 {
		return nil, d.errorf(op, ErrShape, "dataset %s is not 1-D", d.Describe())
	}
	if start < 0 || count < 0 || start > d.shape[0] || count > d.shape[0]-start {
		return nil, d.errorf(op, ErrShape, "range [%d, %d) outside length %d", start, start+count, d.shape[0])
	}
	return d.readStrings(start, count, op)
}

func (d *Dataset) readStrings(start, count int64, op string) ([]string, error) {
	if d.id < 0 {
		return nil, d.closedErr(op)
	}
	if d.class != ClassString {
		return nil, d.errorf(op, ErrType, "dataset %s does not hold strings", d.Describe())
	}
	if len(d.shape) > 1 {
		return nil, d.errorf(op, ErrShape, "dataset %s is not 1-D", d.Describe())
	}
	defer guard()()
	if err := d.plausible(op); err != nil {
		return nil, err
	}
	if count == 0 {
		return []string{}, nil
	}
	ft := C.H5Dget_type(d.id)
	if ft < 0 {
		return nil, d.libErr(op)
	}
	defer C.H5Tclose(ft)
	var fs C.hid_t = C.H5S_ALL
	ms := C.hid_t(C.H5S_ALL)
	if len(d.shape) == 1 {
		dims := []C.hsize_t{C.hsize_t(d.shape[0])}
		fs = C.sc_space_select(d.id, 1, C.hsize_t(start), C.hsize_t(count), &dims[0])
		if fs < 0 {
			return nil, d.libErr(op)
		}
		defer C.H5Sclose(fs)
		ms = C.sc_space_1d(C.hsize_t(count))
		if ms < 0 {
			return nil, d.libErr(op)
		}
		defer C.H5Sclose(ms)
	}
	if d.varString {
		return d.readVarStrings(ft, ms, fs, count, op)
	}
	return d.readFixedStrings(ft, ms, fs, count, op)
}

func (d *Dataset) readVarStrings(ft, ms, fs C.hid_t, count int64, op string) ([]string, error) {
	mt := C.sc_vlen_str_like(ft)
	if mt < 0 {
		return nil, d.libErr(op)
	}
	defer C.H5Tclose(mt)
	buf := (**C.char)(C.calloc(C.size_t(count), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	if buf == nil {
		return nil, d.errorf(op, ErrTooLarge, "cannot allocate %d string pointers", count)
	}
	defer C.free(unsafe.Pointer(buf))
	if C.H5Dread(d.id, mt, ms, fs, C.H5P_DEFAULT, unsafe.Pointer(buf)) < 0 {
		return nil, d.libErr(op)
	}
	ptrs := unsafe.Slice(buf, count)
	out := make([]string, count)
	for i, p := range ptrs {
		if p != nil {
			out[i] = C.GoString(p)
		}
	}
	// Reclaim with a memory space that describes buf.
	rs := ms
	if rs == C.H5S_ALL {
		rs = C.H5Dget_space(d.id)
		if rs < 0 {
			return nil, d.libErr(op)
		}
		defer C.H5Sclose(rs)
	}
	if C.sc_vlen_reclaim(mt, rs, unsafe.Pointer(buf)) < 0 {
		return nil, d.libErr(op)
	}
	return out, nil
}

func (d *Dataset) readFixedStrings(ft, ms, fs C.hid_t, count int64, op string) ([]string, error) {
	size := int64(d.elemSize)
	if size <= 0 {
		return nil, d.errorf(op, ErrType, "fixed-length string of size %d", size)
	}
	mt := C.H5Tcopy(ft)
	if mt < 0 {
		return nil, d.libErr(op)
	}
	defer C.H5Tclose(mt)
	raw := make([]byte, count*size)
	if C.H5Dread(d.id, mt, ms, fs, C.H5P_DEFAULT, ptr(raw)) < 0 {
		return nil, d.libErr(op)
	}
	spacePad := C.H5Tget_strpad(ft) == C.H5T_STR_SPACEPAD
	return splitFixed(raw, int(size), spacePad), nil
}

// splitFixed cuts fixed-size records and strips their padding.
func splitFixed(raw []byte, size int, spacePad bool) []string {
	out := make([]string, len(raw)/size)
	for i := range out {
		rec := raw[i*size : (i+1)*size]
		if j := bytes.IndexByte(rec, 0); j >= 0 {
			rec = rec[:j]
		}
		if spacePad {
			rec = bytes.TrimRight(rec, " ")
		}
		out[i] = string(rec)
	}
	return out
}
