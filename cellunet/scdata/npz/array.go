package npz

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Array is an n-dimensional array in C (row-major) order. Data is one of
// []float32, []float64, []int64, []int32 or []string (numpy "<U" unicode
// strings), with len(Data) equal to the product of Shape (1 for a scalar).
type Array struct {
	Shape []int // dimensions; empty for a 0-d array
	Data  any   // []float32, []float64, []int64, []int32 or []string
}

// NewArray checks that data has a supported type and len(data) matches
// shape, and returns the Array. With no shape, data is 1-D; for a 0-d
// array use &Array{Shape: []int{}, Data: ...} directly.
func NewArray(data any, shape ...int) (*Array, error) {
	n, err := dataLen(data)
	if err != nil {
		return nil, err
	}
	if len(shape) == 0 {
		shape = []int{n}
	}
	a := &Array{Shape: append([]int(nil), shape...), Data: data}
	if err := a.check(); err != nil {
		return nil, err
	}
	return a, nil
}

// check verifies the element type and that Data fills Shape (an empty
// Shape is a 0-d array of one element).
func (a *Array) check() error {
	n, err := dataLen(a.Data)
	if err != nil {
		return err
	}
	want := 1
	for _, v := range a.Shape {
		if v < 0 {
			return fmt.Errorf("npz: negative dimension in shape %v", a.Shape)
		}
		want *= v
	}
	if want != n {
		return fmt.Errorf("npz: %d values do not fill shape %v", n, a.Shape)
	}
	return nil
}

func dataLen(data any) (int, error) {
	switch v := data.(type) {
	case []float32:
		return len(v), nil
	case []float64:
		return len(v), nil
	case []int64:
		return len(v), nil
	case []int32:
		return len(v), nil
	case []string:
		return len(v), nil
	}
	return 0, fmt.Errorf("npz: unsupported element type %T (want []float32, []float64, []int64, []int32 or []string)", data)
}

// Len returns the number of elements.
func (a *Array) Len() int {
	n, _ := dataLen(a.Data)
	return n
}

// Descr returns the numpy dtype string the array is written with.
func (a *Array) Descr() string {
	switch v := a.Data.(type) {
	case []float32:
		return "<f4"
	case []float64:
		return "<f8"
	case []int64:
		return "<i8"
	case []int32:
		return "<i4"
	case []string:
		return "<U" + strconv.Itoa(unicodeWidth(v))
	}
	return ""
}

// unicodeWidth is numpy's itemsize in characters for a <U array: the
// longest string in code points, at least 1.
func unicodeWidth(v []string) int {
	w := 1
	for _, s := range v {
		w = max(w, utf8.RuneCountInString(s))
	}
	return w
}

// Float32s returns the data as []float32, or false for another type.
func (a *Array) Float32s() ([]float32, bool) { v, ok := a.Data.([]float32); return v, ok }

// Int64s returns the data as []int64, or false for another type.
func (a *Array) Int64s() ([]int64, bool) { v, ok := a.Data.([]int64); return v, ok }

// Strings returns the data as []string, or false for another type.
func (a *Array) Strings() ([]string, bool) { v, ok := a.Data.([]string); return v, ok }

// header returns the NPY header for the array.
func (a *Array) header() Header {
	return Header{Descr: a.Descr(), Shape: a.Shape}
}

// writeData writes the elements little-endian (strings as UTF-32LE padded
// with NULs to the array's width).
func (a *Array) writeData(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	var b [8]byte
	switch v := a.Data.(type) {
	case []float32:
		for _, x := range v {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
			bw.Write(b[:4])
		}
	case []float64:
		for _, x := range v {
			binary.LittleEndian.PutUint64(b[:], math.Float64bits(x))
			bw.Write(b[:])
		}
	case []int64:
		for _, x := range v {
			binary.LittleEndian.PutUint64(b[:], uint64(x))
			bw.Write(b[:])
		}
	case []int32:
		for _, x := range v {
			binary.LittleEndian.PutUint32(b[:], uint32(x))
			bw.Write(b[:4])
		}
	case []string:
		width := unicodeWidth(v)
		for _, s := range v {
			n := 0
			for _, r := range s {
				binary.LittleEndian.PutUint32(b[:], uint32(r))
				bw.Write(b[:4])
				n++
			}
			for ; n < width; n++ {
				bw.Write([]byte{0, 0, 0, 0})
			}
		}
	default:
		return fmt.Errorf("npz: unsupported element type %T", a.Data)
	}
	return bw.Flush()
}

// dtype describes a supported descr.
type dtype struct {
	kind      byte // 'f', 'i' or 'U'
	size      int  // bytes per element
	bigEndian bool
	chars     int // characters per element for 'U'
}

func parseDescr(d string) (dtype, error) {
	if len(d) < 3 {
		return dtype{}, fmt.Errorf("%w: dtype %q", ErrUnsupported, d)
	}
	var t dtype
	switch d[0] {
	case '<', '=', '|':
	case '>':
		t.bigEndian = true
	default:
		return t, fmt.Errorf("%w: dtype %q", ErrUnsupported, d)
	}
	t.kind = d[1]
	n, err := strconv.Atoi(d[2:])
	if err != nil || n <= 0 {
		return t, fmt.Errorf("%w: dtype %q", ErrUnsupported, d)
	}
	switch {
	case t.kind == 'f' && (n == 4 || n == 8), t.kind == 'i' && (n == 4 || n == 8):
		t.size = n
	case t.kind == 'U' && n <= 1<<20:
		t.chars, t.size = n, 4*n
	default:
		return t, fmt.Errorf("%w: dtype %q (want <f4, <f8, <i4, <i8 or <U)", ErrUnsupported, d)
	}
	return t, nil
}

// checkedBytes returns prod(shape)*size, or an error on overflow or above
// limit.
func checkedBytes(shape []int, size int, limit int64) (int64, int64, error) {
	n := int64(1)
	for _, v := range shape {
		if v < 0 {
			return 0, 0, fmt.Errorf("%w: negative dimension in shape %v", ErrFormat, shape)
		}
		if v != 0 && n > limit/int64(v) {
			return 0, 0, fmt.Errorf("%w: shape %v exceeds the %d bytes the member holds", ErrFormat, shape, limit)
		}
		n *= int64(v)
	}
	if n > limit/int64(size) {
		return 0, 0, fmt.Errorf("%w: shape %v of %d-byte elements exceeds the %d bytes the member holds", ErrFormat, shape, size, limit)
	}
	return n, n * int64(size), nil
}

// ReadArray reads one NPY array (header and data) from r. totalBytes is
// the exact size of the NPY stream (known from the container); the
// declared shape must account for exactly the bytes after the header, so a
// corrupt header cannot cause a large allocation. Fortran-ordered 2-D
// arrays are returned in C order.
func ReadArray(r io.Reader, totalBytes int64) (*Array, error) {
	h, hdrLen, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	t, err := parseDescr(h.Descr)
	if err != nil {
		return nil, err
	}
	dataBytes := totalBytes - int64(hdrLen)
	if dataBytes < 0 {
		return nil, fmt.Errorf("%w: header longer than the member", ErrFormat)
	}
	n, nbytes, err := checkedBytes(h.Shape, t.size, dataBytes)
	if err != nil {
		return nil, err
	}
	if nbytes != dataBytes {
		return nil, fmt.Errorf("%w: shape %v of %s needs %d bytes but the member has %d after the header", ErrFormat, h.Shape, h.Descr, nbytes, dataBytes)
	}
	if h.FortranOrder && len(h.Shape) > 2 {
		return nil, fmt.Errorf("%w: Fortran-ordered array of rank %d", ErrUnsupported, len(h.Shape))
	}
	raw := make([]byte, nbytes)
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, fmt.Errorf("%w: array data cut short: %v", ErrFormat, err)
	}
	var order binary.ByteOrder = binary.LittleEndian
	if t.bigEndian {
		order = binary.BigEndian
	}
	a := &Array{Shape: append([]int{}, h.Shape...)}
	switch {
	case t.kind == 'f' && t.size == 4:
		v := make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(order.Uint32(raw[4*i:]))
		}
		a.Data = v
	case t.kind == 'f':
		v := make([]float64, n)
		for i := range v {
			v[i] = math.Float64frombits(order.Uint64(raw[8*i:]))
		}
		a.Data = v
	case t.kind == 'i' && t.size == 4:
		v := make([]int32, n)
		for i := range v {
			v[i] = int32(order.Uint32(raw[4*i:]))
		}
		a.Data = v
	case t.kind == 'i':
		v := make([]int64, n)
		for i := range v {
			v[i] = int64(order.Uint64(raw[8*i:]))
		}
		a.Data = v
	default:
		v := make([]string, n)
		var sb strings.Builder
		for i := range v {
			sb.Reset()
			rec := raw[int64(i)*int64(t.size):]
			for c := 0; c < t.chars; c++ {
				r := rune(order.Uint32(rec[4*c:]))
				if r == 0 {
					break
				}
				if !utf8.ValidRune(r) {
					return nil, fmt.Errorf("%w: element %d: invalid code point %#x", ErrFormat, i, uint32(r))
				}
				sb.WriteRune(r)
			}
			v[i] = sb.String()
		}
		a.Data = v
	}
	if h.FortranOrder && len(h.Shape) == 2 {
		a.Data = transpose(a.Data, h.Shape[0], h.Shape[1])
	}
	return a, nil
}

// transpose turns column-major [rows, cols] data into row-major.
func transpose(data any, rows, cols int) any {
	switch v := data.(type) {
	case []float32:
		return transposeT(v, rows, cols)
	case []float64:
		return transposeT(v, rows, cols)
	case []int32:
		return transposeT(v, rows, cols)
	case []int64:
		return transposeT(v, rows, cols)
	case []string:
		return transposeT(v, rows, cols)
	}
	return data
}

func transposeT[T any](v []T, rows, cols int) []T {
	out := make([]T, len(v))
	for j := 0; j < cols; j++ {
		for i := 0; i < rows; i++ {
			out[i*cols+j] = v[j*rows+i]
		}
	}
	return out
}
