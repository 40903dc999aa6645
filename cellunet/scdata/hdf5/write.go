package hdf5

/*
#include "shim.h"
*/
import "C"

import (
	"unsafe"
)

// DatasetOptions controls the layout of a new dataset. The zero value (or
// nil) means contiguous, uncompressed, fixed size.
type DatasetOptions struct {
	// Chunk is the chunk shape; nil chooses about 64 Ki elements per chunk
	// when a chunked layout is needed (Extendable or Gzip) and means
	// contiguous otherwise.
	Chunk []int64
	// Extendable makes dimension 0 unlimited, for Append and AppendStrings.
	Extendable bool
	// Gzip is the deflate level 1..9; 0 disables compression.
	Gzip int
}

// fileType returns a new file datatype handle for t (close it).
func fileType(t Type) C.hid_t {
	if t == String {
		return C.sc_vlen_str()
	}
	return C.H5Tcopy(nativeType(t))
}

// CreateDataset creates a dataset of element type t and shape dims
// (dims[0] may be 0 for an extendable dataset that is filled by Append).
func (o *object) CreateDataset(name string, t Type, dims []int64, opts *DatasetOptions) (*Dataset, error) {
	full := joinPath(o.path, name)
	op := "create dataset"
	if o.id < 0 {
		return nil, o.closedErr(op + " " + name)
	}
	if t < Int8 || t > String {
		return nil, &Error{File: o.file, Object: full, Op: op, Detail: "invalid element type " + t.String(), Err: ErrType}
	}
	var opt DatasetOptions
	if opts != nil {
		opt = *opts
	}
	if len(dims) > 32 || (opt.Gzip < 0 || opt.Gzip > 9) {
		return nil, &Error{File: o.file, Object: full, Op: op, Detail: "rank above 32 or gzip level outside 0..9", Err: ErrShape}
	}
	cdims := make([]C.hsize_t, max(len(dims), 1))
	for i, v := range dims {
		if v < 0 {
			return nil, &Error{File: o.file, Object: full, Op: op, Detail: "negative dimension", Err: ErrShape}
		}
		cdims[i] = C.hsize_t(v)
	}
	var chunk []C.hsize_t
	if len(dims) > 0 && (opt.Chunk != nil || opt.Extendable || opt.Gzip > 0) {
		chunk = make([]C.hsize_t, len(dims))
		if opt.Chunk != nil {
			if len(opt.Chunk) != len(dims) {
				return nil, &Error{File: o.file, Object: full, Op: op, Detail: "chunk rank differs from dataset rank", Err: ErrShape}
			}
			for i, v := range opt.Chunk {
				if v <= 0 {
					return nil, &Error{File: o.file, Object: full, Op: op, Detail: "chunk dimensions must be positive", Err: ErrShape}
				}
				chunk[i] = C.hsize_t(v)
			}
		} else {
			rest := int64(1)
			for i := 1; i < len(dims); i++ {
				chunk[i] = C.hsize_t(max(dims[i], 1))
				rest *= max(dims[i], 1)
			}
			rows := max(int64(1), (1<<16)/rest)
			if !opt.Extendable && dims[0] > 0 {
				rows = min(rows, dims[0])
			}
			chunk[0] = C.hsize_t(rows)
		}
	}
	defer guard()()
	ft := fileType(t)
	if ft < 0 {
		return nil, o.libErr(op)
	}
	defer C.H5Tclose(ft)
	p := cstr(name)
	defer free(p)
	ext := C.int(0)
	if opt.Extendable {
		ext = 1
	}
	var cp *C.hsize_t
	if len(chunk) > 0 {
		cp = &chunk[0]
	}
	id := C.sc_create_dataset(o.id, p, ft, C.int(len(dims)), &cdims[0], ext, C.int(len(chunk)), cp, C.int(opt.Gzip))
	if id < 0 {
		return nil, &Error{File: o.file, Object: full, Op: op, Detail: stackMsg(), Err: ErrLibrary}
	}
	d := &Dataset{object: object{id: id, file: o.file, path: full}}
	if err := d.describe(); err != nil {
		C.H5Dclose(id)
		return nil, err
	}
	d.checked = true
	return d, nil
}

// Write writes the whole dataset from data (row-major, converted from T
// to the file type); len(data) must equal NumElements.
func Write[T Numeric](d *Dataset, data []T) error {
	t := typeOf[T]()
	op := "write " + t.String()
	if err := d.checkNumeric(op, t); err != nil {
		return err
	}
	if int64(len(data)) != d.NumElements() {
		return d.errorf(op, ErrShape, "got %d values for dataset %s", len(data), d.Describe())
	}
	if len(data) == 0 {
		return nil
	}
	defer guard()()
	if C.H5Dwrite(d.id, nativeType(t), C.H5S_ALL, C.H5S_ALL, C.H5P_DEFAULT, ptr(data)) < 0 {
		return d.libErr(op)
	}
	return nil
}

// extend grows dimension 0 by rows and returns the file space with the new
// rows selected and a matching memory space; call under guard, close both.
func (d *Dataset) extend(rows int64, op string) (fs, ms C.hid_t, err error) {
	old := d.shape[0]
	dims := make([]C.hsize_t, len(d.shape))
	for i, v := range d.shape {
		dims[i] = C.hsize_t(v)
	}
	dims[0] = C.hsize_t(old + rows)
	if C.H5Dset_extent(d.id, &dims[0]) < 0 {
		return -1, -1, d.libErr(op)
	}
	d.shape[0] = old + rows
	fs = C.sc_space_select(d.id, C.int(len(d.shape)), C.hsize_t(old), C.hsize_t(rows), &dims[0])
	if fs < 0 {
		return -1, -1, d.libErr(op)
	}
	ms = C.sc_space_1d(C.hsize_t(rows * d.rowElems()))
	if ms < 0 {
		C.H5Sclose(fs)
		return -1, -1, d.libErr(op)
	}
	return fs, ms, nil
}

// Append adds data at the end of dimension 0 of an extendable dataset;
// len(data) must be a multiple of the elements per row.
func Append[T Numeric](d *Dataset, data []T) error {
	t := typeOf[T]()
	op := "append " + t.String()
	if err := d.checkNumeric(op, t); err != nil {
		return err
	}
	if len(d.shape) == 0 {
		return d.errorf(op, ErrShape, "cannot append to a scalar")
	}
	per := d.rowElems()
	if per == 0 || int64(len(data))%per != 0 {
		return d.errorf(op, ErrShape, "%d values do not fill whole rows of %d", len(data), per)
	}
	if len(data) == 0 {
		return nil
	}
	defer guard()()
	fs, ms, err := d.extend(int64(len(data))/per, op)
	if err != nil {
		return err
	}
	defer C.H5Sclose(fs)
	defer C.H5Sclose(ms)
	if C.H5Dwrite(d.id, nativeType(t), ms, fs, C.H5P_DEFAULT, ptr(data)) < 0 {
		return d.libErr(op)
	}
	return nil
}

// cStrings copies v into a C array of C strings; free with freeCStrings.
func cStrings(v []string) **C.char {
	arr := (**C.char)(C.calloc(C.size_t(max(len(v), 1)), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	ptrs := unsafe.Slice(arr, len(v))
	for i, s := range v {
		ptrs[i] = C.CString(s)
	}
	return arr
}

func freeCStrings(arr **C.char, n int) {
	for _, p := range unsafe.Slice(arr, n) {
		C.free(unsafe.Pointer(p))
	}
	C.free(unsafe.Pointer(arr))
}

func (d *Dataset) checkStringWrite(op string) error {
	if d.id < 0 {
		return d.closedErr(op)
	}
	if d.class != ClassString || !d.varString {
		return d.errorf(op, ErrType, "dataset %s is not a variable-length string dataset", d.Describe())
	}
	return nil
}

// WriteStrings writes all elements of a variable-length string dataset.
func (d *Dataset) WriteStrings(v []string) error {
	op := "write strings"
	if err := d.checkStringWrite(op); err != nil {
		return err
	}
	if int64(len(v)) != d.NumElements() {
		return d.errorf(op, ErrShape, "got %d strings for dataset %s", len(v), d.Describe())
	}
	if len(v) == 0 {
		return nil
	}
	defer guard()()
	mt := C.sc_vlen_str()
	if mt < 0 {
		return d.libErr(op)
	}
	defer C.H5Tclose(mt)
	arr := cStrings(v)
	defer freeCStrings(arr, len(v))
	if C.H5Dwrite(d.id, mt, C.H5S_ALL, C.H5S_ALL, C.H5P_DEFAULT, unsafe.Pointer(arr)) < 0 {
		return d.libErr(op)
	}
	return nil
}

// AppendStrings adds strings at the end of an extendable 1-D
// variable-length string dataset.
func (d *Dataset) AppendStrings(v []string) error {
	op := "append strings"
	if err := d.checkStringWrite(op); err != nil {
		return err
	}
	if len(d.shape) != 1 {
		return d.errorf(op, ErrShape, "dataset %s is not 1-D", d.Describe())
	}
	if len(v) == 0 {
		return nil
	}
	defer guard()()
	mt := C.sc_vlen_str()
	if mt < 0 {
		return d.libErr(op)
	}
	defer C.H5Tclose(mt)
	fs, ms, err := d.extend(int64(len(v)), op)
	if err != nil {
		return err
	}
	defer C.H5Sclose(fs)
	defer C.H5Sclose(ms)
	arr := cStrings(v)
	defer freeCStrings(arr, len(v))
	if C.H5Dwrite(d.id, mt, ms, fs, C.H5P_DEFAULT, unsafe.Pointer(arr)) < 0 {
		return d.libErr(op)
	}
	return nil
}

// writeAttr replaces attribute name with one of type t, shape dims (nil
// for a scalar), written from buf. Call under guard.
func (o *object) writeAttr(name string, t C.hid_t, dims []int64, buf unsafe.Pointer) error {
	op := "write attribute " + name
	if o.id < 0 {
		return o.closedErr(op)
	}
	ok, err := o.hasAttr(name)
	if err != nil {
		return err
	}
	dot, p := cstr("."), cstr(name)
	defer free(dot)
	defer free(p)
	if ok && C.H5Adelete_by_name(o.id, dot, p, C.H5P_DEFAULT) < 0 {
		return o.libErr(op)
	}
	var space C.hid_t
	if dims == nil {
		space = C.H5Screate(C.H5S_SCALAR)
	} else {
		cd := make([]C.hsize_t, max(len(dims), 1))
		for i, v := range dims {
			cd[i] = C.hsize_t(v)
		}
		space = C.H5Screate_simple(C.int(len(dims)), &cd[0], nil)
	}
	if space < 0 {
		return o.libErr(op)
	}
	defer C.H5Sclose(space)
	a := C.H5Acreate_by_name(o.id, dot, p, t, space, C.H5P_DEFAULT, C.H5P_DEFAULT, C.H5P_DEFAULT)
	if a < 0 {
		return o.libErr(op)
	}
	defer C.H5Aclose(a)
	if buf != nil && C.H5Awrite(a, t, buf) < 0 {
		return o.libErr(op)
	}
	return nil
}

// WriteAttrString writes a scalar variable-length UTF-8 string attribute
// (as h5py does for Python str), replacing an existing one.
func (o *object) WriteAttrString(name, v string) error {
	defer guard()()
	t := C.sc_vlen_str()
	if t < 0 {
		return o.libErr("write attribute " + name)
	}
	defer C.H5Tclose(t)
	arr := cStrings([]string{v})
	defer freeCStrings(arr, 1)
	return o.writeAttr(name, t, nil, unsafe.Pointer(arr))
}

// WriteAttrStrings writes a 1-D variable-length UTF-8 string attribute.
func (o *object) WriteAttrStrings(name string, v []string) error {
	defer guard()()
	t := C.sc_vlen_str()
	if t < 0 {
		return o.libErr("write attribute " + name)
	}
	defer C.H5Tclose(t)
	arr := cStrings(v)
	defer freeCStrings(arr, len(v))
	var buf unsafe.Pointer
	if len(v) > 0 {
		buf = unsafe.Pointer(arr)
	}
	return o.writeAttr(name, t, []int64{int64(len(v))}, buf)
}

// WriteAttrInt64s writes a 1-D int64 attribute.
func (o *object) WriteAttrInt64s(name string, v []int64) error {
	defer guard()()
	return o.writeAttr(name, nativeType(Int64), []int64{int64(len(v))}, ptr(v))
}

// WriteAttrFloat64s writes a 1-D float64 attribute.
func (o *object) WriteAttrFloat64s(name string, v []float64) error {
	defer guard()()
	return o.writeAttr(name, nativeType(Float64), []int64{int64(len(v))}, ptr(v))
}

// WriteAttrBool writes a scalar boolean attribute with the enum type h5py
// uses for numpy.bool_ (int8 base, FALSE = 0, TRUE = 1).
func (o *object) WriteAttrBool(name string, v bool) error {
	defer guard()()
	t := C.sc_bool_enum()
	if t < 0 {
		return o.libErr("write attribute " + name)
	}
	defer C.H5Tclose(t)
	b := C.int8_t(0)
	if v {
		b = 1
	}
	return o.writeAttr(name, t, nil, unsafe.Pointer(&b))
}
