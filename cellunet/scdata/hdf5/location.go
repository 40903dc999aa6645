package hdf5

/*
#include "shim.h"
*/
import "C"

import (
	"sort"
)

// Group is an open HDF5 group.
type Group struct {
	object
}

// Close releases the group's identifier. Closing twice returns ErrClosed.
func (g *Group) Close() error {
	if g.id < 0 {
		return g.closedErr("close group")
	}
	defer guard()()
	if C.H5Gclose(g.id) < 0 {
		return g.libErr("close group")
	}
	g.id = -1
	return nil
}

// Kind reports whether name (relative to this location, "a/b" allowed)
// is a group, a dataset, another object or nothing.
func (o *object) Kind(name string) (Kind, error) {
	if o.id < 0 {
		return KindNone, o.closedErr("look up " + name)
	}
	defer guard()()
	return o.kind(name)
}

func (o *object) kind(name string) (Kind, error) {
	p := cstr(name)
	defer free(p)
	k := C.sc_kind(o.id, p)
	if k < 0 {
		return KindNone, &Error{File: o.file, Object: joinPath(o.path, name), Op: "look up", Detail: stackMsg(), Err: ErrLibrary}
	}
	return Kind(k), nil
}

// openChild opens the child name, which must be of kind want, with open
// (H5Gopen2 or H5Dopen2); op names the operation in errors.
func (o *object) openChild(name string, want Kind, op string, open func(p *C.char) C.hid_t) (C.hid_t, string, error) {
	full := joinPath(o.path, name)
	if o.id < 0 {
		return -1, full, o.closedErr(op + " " + name)
	}
	k, err := o.kind(name)
	if err != nil {
		return -1, full, err
	}
	switch k {
	case KindNone:
		return -1, full, &Error{File: o.file, Object: full, Op: op, Detail: "no such " + want.String(), Err: ErrNotFound}
	case want:
	default:
		return -1, full, &Error{File: o.file, Object: full, Op: op, Detail: "is a " + k.String() + ", not a " + want.String(), Err: ErrType}
	}
	p := cstr(name)
	defer free(p)
	id := open(p)
	if id < 0 {
		return -1, full, &Error{File: o.file, Object: full, Op: op, Detail: stackMsg(), Err: ErrLibrary}
	}
	return id, full, nil
}

// OpenGroup opens the group at name, relative to this location.
func (o *object) OpenGroup(name string) (*Group, error) {
	defer guard()()
	id, full, err := o.openChild(name, KindGroup, "open group", func(p *C.char) C.hid_t { return C.H5Gopen2(o.id, p, C.H5P_DEFAULT) })
	if err != nil {
		return nil, err
	}
	return &Group{object{id: id, file: o.file, path: full}}, nil
}

// OpenDataset opens the dataset at name, relative to this location, and
// reads its shape and datatype.
func (o *object) OpenDataset(name string) (*Dataset, error) {
	defer guard()()
	id, full, err := o.openChild(name, KindDataset, "open dataset", func(p *C.char) C.hid_t { return C.H5Dopen2(o.id, p, C.H5P_DEFAULT) })
	if err != nil {
		return nil, err
	}
	d := &Dataset{object: object{id: id, file: o.file, path: full}}
	if err := d.describe(); err != nil {
		C.H5Dclose(id)
		return nil, err
	}
	return d, nil
}

// Children returns the names of the links in this group, sorted.
func (o *object) Children() ([]string, error) {
	if o.id < 0 {
		return nil, o.closedErr("list members")
	}
	defer guard()()
	var info C.H5G_info_t
	if C.H5Gget_info(o.id, &info) < 0 {
		return nil, o.libErr("list members")
	}
	if info.nlinks > 1<<24 {
		return nil, o.errorf("list members", ErrTooLarge, "group declares %d links", uint64(info.nlinks))
	}
	dot := cstr(".")
	defer free(dot)
	names := make([]string, 0, int(info.nlinks))
	for i := C.hsize_t(0); i < info.nlinks; i++ {
		n := C.H5Lget_name_by_idx(o.id, dot, C.H5_INDEX_NAME, C.H5_ITER_INC, i, nil, 0, C.H5P_DEFAULT)
		if n < 0 {
			return nil, o.libErr("list members")
		}
		buf := make([]byte, int(n)+1)
		if C.H5Lget_name_by_idx(o.id, dot, C.H5_INDEX_NAME, C.H5_ITER_INC, i, (*C.char)(ptr(buf)), C.size_t(len(buf)), C.H5P_DEFAULT) < 0 {
			return nil, o.libErr("list members")
		}
		names = append(names, string(buf[:n]))
	}
	sort.Strings(names)
	return names, nil
}

// CreateGroup creates a group at name, relative to this location.
func (o *object) CreateGroup(name string) (*Group, error) {
	full := joinPath(o.path, name)
	if o.id < 0 {
		return nil, o.closedErr("create group " + name)
	}
	defer guard()()
	p := cstr(name)
	defer free(p)
	id := C.H5Gcreate2(o.id, p, C.H5P_DEFAULT, C.H5P_DEFAULT, C.H5P_DEFAULT)
	if id < 0 {
		return nil, &Error{File: o.file, Object: full, Op: "create group", Detail: stackMsg(), Err: ErrLibrary}
	}
	return &Group{object{id: id, file: o.file, path: full}}, nil
}
