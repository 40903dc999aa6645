package scdata

import "errors"

// Sentinel errors; every error returned by this package that has one of
// these causes wraps it, so callers can branch with errors.Is.
var (
	// ErrFormat: the input is not a supported single-cell format, or a
	// required group, dataset, attribute or file is missing or malformed
	// (wrong shape, length, index range or encoding).
	ErrFormat = errors.New("unsupported or malformed single-cell data")
	// ErrNoLabels: the requested label column does not exist (or the format
	// carries no cell annotations); the message lists what exists.
	ErrNoLabels = errors.New("label column not found")
	// ErrAmbiguous: a 10x file or folder holds several genomes and
	// OpenOptions.Genome does not pick one; the message lists them.
	ErrAmbiguous = errors.New("several genomes, none selected")
	// ErrBadValue: a count is NaN, infinite, negative or (with
	// PreprocessConfig.RequireIntegerCounts) not an integer.
	ErrBadValue = errors.New("invalid count value")
	// ErrEmpty: nothing is left after filtering.
	ErrEmpty = errors.New("no cells or genes left")
)

// formatError marks an underlying error (typically from package hdf5) as
// ErrFormat without changing its message; errors.Is matches both.
type formatError struct{ err error }

func (e formatError) Error() string   { return e.err.Error() }
func (e formatError) Unwrap() []error { return []error{e.err, ErrFormat} }

// asFormat wraps err as a formatError.
func asFormat(err error) error { return formatError{err} }
