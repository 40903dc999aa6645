package hdf5

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// object is the identifier, file and path shared by File, Group and Dataset.
type object struct {
	id   C.hid_t
	file string // file name for messages
	path string // object path for messages
}

// Path returns the object's path inside its file ("/" for a File).
func (o *object) Path() string { return o.path }

// FileName returns the name of the file the object belongs to.
func (o *object) FileName() string { return o.file }

func (o *object) errorf(op string, sentinel error, format string, args ...any) error {
	return &Error{File: o.file, Object: o.path, Op: op, Detail: fmt.Sprintf(format, args...), Err: sentinel}
}

// libErr wraps the current libhdf5 error stack; call under guard.
func (o *object) libErr(op string) error {
	return &Error{File: o.file, Object: o.path, Op: op, Detail: stackMsg(), Err: ErrLibrary}
}

func (o *object) closedErr(op string) error {
	return &Error{File: o.file, Object: o.path, Op: op, Err: ErrClosed}
}

// File is an open HDF5 file. It is also the root group: the location
// methods (OpenGroup, OpenDataset, Kind, Children, CreateGroup,
// CreateDataset) and attribute methods act on "/".
type File struct {
	object
	writable bool
}

// hdf5Signature is the superblock signature; it sits at byte 0 or at a
// power-of-two offset from 512 when the file has a user block.
var hdf5Signature = []byte{0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'}

// IsHDF5 reports whether the file at path starts with (or, with a user
// block, carries at 512, 1024, 2048, ... bytes) the HDF5 signature.
func IsHDF5(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var buf [8]byte
	for off := int64(0); ; {
		n, err := f.ReadAt(buf[:], off)
		if n < len(buf) {
			if err == nil || errors.Is(err, io.EOF) {
				return false, nil
			}
			return false, err
		}
		if string(buf[:]) == string(hdf5Signature) {
			return true, nil
		}
		if off == 0 {
			off = 512
		} else {
			off *= 2
		}
		if off > 1<<30 {
			return false, nil
		}
	}
}

// Open opens an existing HDF5 file read-only. A missing file gives an
// error wrapping fs.ErrNotExist; a file without the HDF5 signature one
// wrapping ErrNotHDF5.
func Open(name string) (*File, error) {
	ok, err := IsHDF5(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &Error{File: name, Object: "/", Op: "open", Detail: "no such file", Err: fs.ErrNotExist}
		}
		return nil, &Error{File: name, Object: "/", Op: "open", Detail: err.Error(), Err: err}
	}
	if !ok {
		return nil, &Error{File: name, Object: "/", Op: "open", Detail: "no HDF5 superblock signature", Err: ErrNotHDF5}
	}
	defer guard()()
	if err := registerLZF(name); err != nil {
		return nil, err
	}
	p := cstr(name)
	defer free(p)
	id := C.sc_open_file(p)
	if id < 0 {
		return nil, &Error{File: name, Object: "/", Op: "open", Detail: stackMsg(), Err: ErrLibrary}
	}
	return &File{object: object{id: id, file: name, path: "/"}}, nil
}

// Create creates an HDF5 file for writing, truncating an existing one.
func Create(name string) (*File, error) {
	defer guard()()
	if err := registerLZF(name); err != nil {
		return nil, err
	}
	p := cstr(name)
	defer free(p)
	id := C.sc_create_file(p)
	if id < 0 {
		return nil, &Error{File: name, Object: "/", Op: "create", Detail: stackMsg(), Err: ErrLibrary}
	}
	return &File{object: object{id: id, file: name, path: "/"}, writable: true}, nil
}

// Flush writes buffered data of a writable file to the operating system.
func (f *File) Flush() error {
	if f.id < 0 {
		return f.closedErr("flush")
	}
	defer guard()()
	if C.H5Fflush(f.id, C.H5F_SCOPE_LOCAL) < 0 {
		return f.libErr("flush")
	}
	return nil
}

// Close closes the file. It fails (and leaves the file open) while groups
// or datasets of the file are still open. Closing twice returns ErrClosed.
func (f *File) Close() error {
	if f.id < 0 {
		return f.closedErr("close")
	}
	defer guard()()
	if n := C.H5Fget_obj_count(f.id, C.H5F_OBJ_DATASET|C.H5F_OBJ_GROUP|C.H5F_OBJ_DATATYPE|C.H5F_OBJ_ATTR); n > 0 {
		return f.errorf("close", ErrLibrary, "%d groups, datasets or attributes of this file are still open", int(n))
	}
	if C.H5Fclose(f.id) < 0 {
		return f.libErr("close")
	}
	f.id = -1
	return nil
}
