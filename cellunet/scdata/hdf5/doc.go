// Package hdf5 is a small binding to libhdf5 (Debian's libhdf5-dev, the
// serial thread-safe 1.10 build) through cgo, covering what single-cell
// readers and the h5ad writer need: files, groups, datasets (whole,
// hyperslab row ranges of 1-D and 2-D datasets, numeric conversion to the
// requested Go type), attributes (strings, numbers, object references) and
// variable-length string datasets, plus writing groups, chunked, optionally
// gzip-compressed and extendable datasets and attributes.
//
// # Errors
//
// libhdf5 prints its error stack to stderr by default. Every call in this
// package first turns that printing off for the calling thread
// (H5Eset_auto2) and, when a call fails, condenses the thread's error stack
// into an *Error that names the file, the object path and the operation.
// Errors wrap sentinels usable with errors.Is: ErrNotFound, ErrNotHDF5,
// ErrType, ErrShape, ErrTooLarge and ErrClosed.
//
// # Threads
//
// libhdf5 keeps its error stack per OS thread, so each operation runs on a
// locked OS thread for its duration. The library itself serialises calls
// (thread-safe build); values of this package are not safe for concurrent
// use by several goroutines without external locking.
//
// # Handles
//
// Every File, Group and Dataset owns one libhdf5 identifier and must be
// closed; temporary identifiers (dataspaces, datatypes, property lists,
// attributes) are closed before each method returns. Files are opened with
// the H5F_CLOSE_SEMI close degree, so File.Close fails while a Group or
// Dataset of that file is still open. OpenObjectCount reports the number
// of identifiers still open in the process, for leak tests.
//
// # LZF
//
// h5py writes datasets with the LZF filter (id 32000), which libhdf5 does
// not ship. Open and Create register a decoder for it (package lzf) unless
// a filter with that id is already available, so such datasets read like
// any other. Writing LZF is not supported.
package hdf5
