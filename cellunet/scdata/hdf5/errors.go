package hdf5

import (
	"errors"
	"fmt"
)

// Sentinel errors wrapped by *Error; test with errors.Is.
var (
	// ErrNotFound: the group, dataset or attribute does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNotHDF5: the file is not an HDF5 file (no superblock signature).
	ErrNotHDF5 = errors.New("not an HDF5 file")
	// ErrType: the object has a datatype that cannot be read as requested
	// (for example strings read as numbers).
	ErrType = errors.New("unsupported or mismatched datatype")
	// ErrShape: a rank, range or length does not fit the object's shape.
	ErrShape = errors.New("shape mismatch")
	// ErrTooLarge: the object declares more data than the file can hold.
	ErrTooLarge = errors.New("declared size exceeds what the file can hold")
	// ErrClosed: the File, Group or Dataset was already closed.
	ErrClosed = errors.New("use of closed object")
	// ErrLibrary: libhdf5 reported a failure (details in the message).
	ErrLibrary = errors.New("libhdf5 error")
)

// Error describes a failed operation on an object of an HDF5 file.
type Error struct {
	File   string // file name as given to Open or Create
	Object string // object path inside the file ("/" for the root)
	Op     string // what was attempted, e.g. "read attribute shape"
	Detail string // libhdf5's condensed error stack or our own explanation
	Err    error  // one of the sentinels above
}

// Error formats "file: object: op: detail [sentinel]".
func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %s: %s", e.File, e.Object, e.Op)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil && e.Err != ErrLibrary {
		msg += " [" + e.Err.Error() + "]"
	}
	return msg
}

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Err }
