package hdf5

/*
#include "shim.h"
*/
import "C"

import (
	"unsafe"
)

// maxAttrElems bounds attribute arrays (attributes live in object headers
// and are small; anndata's largest is column-order).
const maxAttrElems = 1 << 24

// AttrInfo describes an attribute.
type AttrInfo struct {
	Class     Class   // datatype class
	Shape     []int64 // empty for a scalar
	ElemSize  int     // bytes per element of the file datatype
	VarString bool    // variable-length string
}

// NumElements returns the product of the dimensions (1 for a scalar).
func (a AttrInfo) NumElements() int64 {
	n := int64(1)
	for _, v := range a.Shape {
		n *= v
	}
	return n
}

// HasAttr reports whether the object has an attribute called name.
func (o *object) HasAttr(name string) (bool, error) {
	if o.id < 0 {
		return false, o.closedErr("look up attribute " + name)
	}
	defer guard()()
	return o.hasAttr(name)
}

func (o *object) hasAttr(name string) (bool, error) {
	dot, p := cstr("."), cstr(name)
	defer free(dot)
	defer free(p)
	r := C.H5Aexists_by_name(o.id, dot, p, C.H5P_DEFAULT)
	if r < 0 {
		return false, o.libErr("look up attribute " + name)
	}
	return r > 0, nil
}

// openAttr opens an attribute and describes it; call under guard and close
// the returned id.
func (o *object) openAttr(name, op string) (C.hid_t, AttrInfo, error) {
	var info AttrInfo
	if o.id < 0 {
		return -1, info, o.closedErr(op)
	}
	ok, err := o.hasAttr(name)
	if err != nil {
		return -1, info, err
	}
	if !ok {
		return -1, info, o.errorf(op, ErrNotFound, "no attribute %q", name)
	}
	dot, p := cstr("."), cstr(name)
	defer free(dot)
	defer free(p)
	a := C.H5Aopen_by_name(o.id, dot, p, C.H5P_DEFAULT, C.H5P_DEFAULT)
	if a < 0 {
		return -1, info, o.libErr(op)
	}
	fail := func(err error) (C.hid_t, AttrInfo, error) {
		C.H5Aclose(a)
		return -1, info, err
	}
	space := C.H5Aget_space(a)
	if space < 0 {
		return fail(o.libErr(op))
	}
	var dims [32]C.hsize_t
	rank := C.sc_space_dims(space, 32, &dims[0])
	C.H5Sclose(space)
	if rank < 0 {
		return fail(o.errorf(op, ErrShape, "attribute %q has an unreadable dataspace", name))
	}
	info.Shape = make([]int64, int(rank))
	total := int64(1)
	for i := range info.Shape {
		info.Shape[i] = int64(dims[i])
		if dims[i] > maxAttrElems {
			return fail(o.errorf(op, ErrTooLarge, "attribute %q declares %d elements", name, uint64(dims[i])))
		}
		total *= int64(dims[i])
		if total > maxAttrElems {
			return fail(o.errorf(op, ErrTooLarge, "attribute %q declares %d elements", name, total))
		}
	}
	t := C.H5Aget_type(a)
	if t < 0 {
		return fail(o.libErr(op))
	}
	var size C.size_t
	var vlen, signed C.int
	cls := C.sc_type_info(t, &size, &vlen, &signed)
	C.H5Tclose(t)
	if cls < 0 {
		return fail(o.libErr(op))
	}
	info.Class, info.ElemSize, info.VarString = Class(cls), int(size), vlen != 0
	return a, info, nil
}

// Attr describes the attribute called name.
func (o *object) Attr(name string) (AttrInfo, error) {
	defer guard()()
	a, info, err := o.openAttr(name, "describe attribute "+name)
	if err != nil {
		return info, err
	}
	C.H5Aclose(a)
	return info, nil
}

// ReadAttrStrings reads a string attribute (scalar or 1-D, fixed or
// variable length). An empty numeric array (anndata writes an empty
// column-order as float64[0]) reads as an empty slice.
func (o *object) ReadAttrStrings(name string) ([]string, error) {
	op := "read attribute " + name
	defer guard()()
	a, info, err := o.openAttr(name, op)
	if err != nil {
		return nil, err
	}
	defer C.H5Aclose(a)
	n := info.NumElements()
	if info.Class != ClassString {
		if n == 0 {
			return []string{}, nil
		}
		return nil, o.errorf(op, ErrType, "attribute holds %s values, not strings", info.Class)
	}
	if len(info.Shape) > 1 {
		return nil, o.errorf(op, ErrShape, "attribute has rank %d, want a scalar or 1-D", len(info.Shape))
	}
	if n == 0 {
		return []string{}, nil
	}
	ft := C.H5Aget_type(a)
	if ft < 0 {
		return nil, o.libErr(op)
	}
	defer C.H5Tclose(ft)
	if info.VarString {
		mt := C.sc_vlen_str_like(ft)
		if mt < 0 {
			return nil, o.libErr(op)
		}
		defer C.H5Tclose(mt)
		buf := (**C.char)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
		if buf == nil {
			return nil, o.errorf(op, ErrTooLarge, "cannot allocate %d string pointers", n)
		}
		defer C.free(unsafe.Pointer(buf))
		if C.H5Aread(a, mt, unsafe.Pointer(buf)) < 0 {
			return nil, o.libErr(op)
		}
		out := make([]string, n)
		for i, p := range unsafe.Slice(buf, n) {
			if p != nil {
				out[i] = C.GoString(p)
			}
		}
		space := C.H5Aget_space(a)
		if space < 0 {
			return nil, o.libErr(op)
		}
		defer C.H5Sclose(space)
		if C.sc_vlen_reclaim(mt, space, unsafe.Pointer(buf)) < 0 {
			return nil, o.libErr(op)
		}
		return out, nil
	}
	if info.ElemSize <= 0 || int64(info.ElemSize)*n > 1<<30 {
		return nil, o.errorf(op, ErrTooLarge, "fixed string attribute of %d x %d bytes", n, info.ElemSize)
	}
	raw := make([]byte, int64(info.ElemSize)*n)
	if C.H5Aread(a, ft, ptr(raw)) < 0 {
		return nil, o.libErr(op)
	}
	return splitFixed(raw, info.ElemSize, C.H5Tget_strpad(ft) == C.H5T_STR_SPACEPAD), nil
}

// ReadAttrString reads a string attribute holding exactly one value.
func (o *object) ReadAttrString(name string) (string, error) {
	v, err := o.ReadAttrStrings(name)
	if err != nil {
		return "", err
	}
	if len(v) != 1 {
		return "", o.errorf("read attribute "+name, ErrShape, "attribute holds %d strings, want 1", len(v))
	}
	return v[0], nil
}

func readAttrNumbers[T Numeric](o *object, name string) ([]T, error) {
	t := typeOf[T]()
	op := "read attribute " + name
	defer guard()()
	a, info, err := o.openAttr(name, op)
	if err != nil {
		return nil, err
	}
	defer C.H5Aclose(a)
	if info.Class != ClassInt && info.Class != ClassFloat {
		return nil, o.errorf(op, ErrType, "attribute holds %s values, not %s", info.Class, t)
	}
	out := make([]T, info.NumElements())
	if len(out) == 0 {
		return out, nil
	}
	if C.H5Aread(a, nativeType(t), ptr(out)) < 0 {
		return nil, o.libErr(op)
	}
	return out, nil
}

// ReadAttrInt64s reads a numeric attribute (scalar or array, row-major)
// converted to int64.
func (o *object) ReadAttrInt64s(name string) ([]int64, error) { return readAttrNumbers[int64](o, name) }

// ReadAttrFloat64s reads a numeric attribute converted to float64.
func (o *object) ReadAttrFloat64s(name string) ([]float64, error) {
	return readAttrNumbers[float64](o, name)
}

// ReadAttrRef reads an attribute holding one object reference (anndata
// 0.7's "categories" attribute) and returns the absolute path of the
// referenced object.
func (o *object) ReadAttrRef(name string) (string, error) {
	op := "read reference attribute " + name
	defer guard()()
	a, info, err := o.openAttr(name, op)
	if err != nil {
		return "", err
	}
	defer C.H5Aclose(a)
	if info.Class != ClassReference {
		return "", o.errorf(op, ErrType, "attribute holds %s values, not an object reference", info.Class)
	}
	if info.NumElements() != 1 || info.ElemSize != int(unsafe.Sizeof(C.hobj_ref_t(0))) {
		return "", o.errorf(op, ErrShape, "want one object reference, attribute holds %d of %d bytes", info.NumElements(), info.ElemSize)
	}
	var ref C.hobj_ref_t
	if C.H5Aread(a, C.sc_ref_obj_type(), unsafe.Pointer(&ref)) < 0 {
		return "", o.libErr(op)
	}
	target := C.sc_deref(o.id, unsafe.Pointer(&ref))
	if target < 0 {
		return "", o.errorf(op, ErrNotFound, "dangling object reference: %s", stackMsg())
	}
	defer C.H5Oclose(target)
	n := C.H5Iget_name(target, nil, 0)
	if n <= 0 {
		return "", o.errorf(op, ErrNotFound, "referenced object has no name")
	}
	buf := make([]byte, int(n)+1)
	if C.H5Iget_name(target, (*C.char)(ptr(buf)), C.size_t(len(buf))) < 0 {
		return "", o.libErr(op)
	}
	return string(buf[:n]), nil
}
