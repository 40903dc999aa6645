// Package scdata reads single-cell count matrices (AnnData .h5ad, 10x
// Genomics .h5 and MEX folders, plain HDF5 with X/Y), preprocesses them
// exactly as scDiffusion's training loader does (filter genes, filter
// cells, unique gene names, label encoding, normalize_total, log1p) and
// writes generated expression as .h5ad.
//
// Matrices are handled as CSR (type CSR), cells x genes, streamed in row
// chunks (Dataset.Rows); the whole matrix is never densified. HDF5 access
// goes through libhdf5 via cgo (package hdf5); .npz latents live in package
// npz.
//
// Errors name the file and the object path and wrap the sentinels ErrFormat,
// ErrNoLabels, ErrAmbiguous, ErrBadValue and ErrEmpty (and, from the HDF5
// layer, hdf5.ErrNotFound, hdf5.ErrNotHDF5, ...), so callers can branch with
// errors.Is.
package scdata
