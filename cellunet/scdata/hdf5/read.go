package hdf5

/*
#include "shim.h"
*/
import "C"

// checkNumeric verifies that d can be read as numbers of type t.
func (d *Dataset) checkNumeric(op string, t Type) error {
	if d.id < 0 {
		return d.closedErr(op)
	}
	if d.class != ClassInt && d.class != ClassFloat {
		return d.errorf(op, ErrType, "dataset %s cannot be read as %s", d.Describe(), t)
	}
	return nil
}

// ReadAll reads the whole dataset (any rank, row-major) converted to T.
func ReadAll[T Numeric](d *Dataset) ([]T, error) {
	t := typeOf[T]()
	op := "read " + t.String()
	if err := d.checkNumeric(op, t); err != nil {
		return nil, err
	}
	defer guard()()
	if err := d.plausible(op); err != nil {
		return nil, err
	}
	n := d.NumElements()
	buf := make([]T, n)
	if n == 0 {
		return buf, nil
	}
	if C.H5Dread(d.id, nativeType(t), C.H5S_ALL, C.H5S_ALL, C.H5P_DEFAULT, ptr(buf)) < 0 {
		return nil, d.libErr(op)
	}
	return buf, nil
}

// ReadRange reads count indices of dimension 0 starting at start (for a
// 2-D dataset: rows start..start+count-1, all columns, row-major) converted
// to T. It reuses dst when its capacity suffices and returns the filled
// slice of length count*(elements per row).
func ReadRange[T Numeric](d *Dataset, start, count int64, dst []T) ([]T, error) {
	t := typeOf[T]()
	op := "read " + t.String() + " range"
	if err := d.checkNumeric(op, t); err != nil {
		return nil, err
	}
	if len(d.shape) == 0 {
		return nil, d.errorf(op, ErrShape, "scalar dataset has no ranges")
	}
	if start < 0 || count < 0 || start > d.shape[0] || count > d.shape[0]-start {
		return nil, d.errorf(op, ErrShape, "range [%d, %d) outside dimension 0 of length %d", start, start+count, d.shape[0])
	}
	defer guard()()
	if err := d.plausible(op); err != nil {
		return nil, err
	}
	n := count * d.rowElems()
	if int64(cap(dst)) >= n {
		dst = dst[:n]
	} else {
		dst = make([]T, n)
	}
	if n == 0 {
		return dst, nil
	}
	dims := make([]C.hsize_t, len(d.shape))
	for i, v := range d.shape {
		dims[i] = C.hsize_t(v)
	}
	fs := C.sc_space_select(d.id, C.int(len(d.shape)), C.hsize_t(start), C.hsize_t(count), &dims[0])
	if fs < 0 {
		return nil, d.libErr(op)
	}
	defer C.H5Sclose(fs)
	ms := C.sc_space_1d(C.hsize_t(n))
	if ms < 0 {
		return nil, d.libErr(op)
	}
	defer C.H5Sclose(ms)
	if C.H5Dread(d.id, nativeType(t), ms, fs, C.H5P_DEFAULT, ptr(dst)) < 0 {
		return nil, d.libErr(op)
	}
	return dst, nil
}
