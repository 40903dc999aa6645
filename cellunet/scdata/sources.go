package scdata

import (
	"errors"
	"fmt"
	"math"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/hdf5"
)

// maxDim bounds rows and columns: column indices are int32.
const maxDim = math.MaxInt32

// sparseDecl is what an HDF5 sparse matrix group declares about itself
// before any of its arrays is read.
type sparseDecl struct {
	what    string  // "<file>: <object>" for messages
	shape   []int64 // the shape attribute or dataset (rows, cols)
	csc     bool    // compressed along columns
	ptrLen  int64   // length of indptr
	dataLen int64   // length of data
	idxLen  int64   // length of indices
}

// check validates the declaration and returns the matrix shape. Nothing is
// allocated from the declared sizes before this passes.
func (s sparseDecl) check() (rows, cols int, err error) {
	if len(s.shape) != 2 {
		return 0, 0, fmt.Errorf("%s: shape has %d entries, want 2 (rows, cols): %w", s.what, len(s.shape), ErrFormat)
	}
	for i, v := range s.shape {
		if v < 0 || v > maxDim {
			return 0, 0, fmt.Errorf("%s: shape[%d] = %d outside [0, %d]: %w", s.what, i, v, maxDim, ErrFormat)
		}
	}
	major, kind := s.shape[0], "rows"
	if s.csc {
		major, kind = s.shape[1], "columns"
	}
	if s.ptrLen != major+1 {
		return 0, 0, fmt.Errorf("%s: indptr has %d entries but shape %v needs %s+1 = %d: %w", s.what, s.ptrLen, s.shape, kind, major+1, ErrFormat)
	}
	if s.dataLen != s.idxLen {
		return 0, 0, fmt.Errorf("%s: data has %d entries but indices has %d: %w", s.what, s.dataLen, s.idxLen, ErrFormat)
	}
	return int(s.shape[0]), int(s.shape[1]), nil
}

// sparseArrays opens data, indices and indptr under group (relative to f),
// checks the declaration and reads indptr. On error nothing stays open.
func sparseArrays(f *hdf5.File, path, group string, shape []int64, csc bool) (data, indices *hdf5.Dataset, indptr []int64, rows, cols int, err error) {
	what := path + ": /" + group
	var opened []*hdf5.Dataset
	defer func() {
		if err != nil {
			for _, d := range opened {
				d.Close()
			}
		}
	}()
	open := func(name string) (*hdf5.Dataset, error) {
		d, err := f.OpenDataset(group + "/" + name)
		if err != nil {
			return nil, asFormat(err)
		}
		opened = append(opened, d)
		if d.Rank() != 1 || (d.Class() != hdf5.ClassInt && d.Class() != hdf5.ClassFloat) {
			return nil, fmt.Errorf("%s/%s: is %s, want a 1-D numeric array: %w", what, name, d.Describe(), ErrFormat)
		}
		return d, nil
	}
	if data, err = open("data"); err != nil {
		return
	}
	if indices, err = open("indices"); err != nil {
		return
	}
	ptr, err := open("indptr")
	if err != nil {
		return
	}
	if indices.Class() != hdf5.ClassInt || ptr.Class() != hdf5.ClassInt {
		err = fmt.Errorf("%s: indices and indptr must be integers, got %s and %s: %w", what, indices.Describe(), ptr.Describe(), ErrFormat)
		return
	}
	decl := sparseDecl{what: what, shape: shape, csc: csc, ptrLen: ptr.Len(), dataLen: data.Len(), idxLen: indices.Len()}
	if rows, cols, err = decl.check(); err != nil {
		return
	}
	if indptr, err = hdf5.ReadAll[int64](ptr); err != nil {
		return
	}
	major := rows
	if csc {
		major = cols
	}
	if err = checkIndptr(what, indptr, major, data.Len()); err != nil {
		return
	}
	opened = opened[:2]
	err = ptr.Close()
	return
}

// entryReader reads ranges of the stored entries (indices and values) of
// a compressed sparse matrix.
type entryReader interface {
	indices(lo, n int64, dst []int32) ([]int32, error)
	values(lo, n int64, dst []float32) ([]float32, error)
	close() error
}

// h5Entries reads entries from the data and indices datasets.
type h5Entries struct{ data, idx *hdf5.Dataset }

func (e h5Entries) indices(lo, n int64, dst []int32) ([]int32, error) {
	return hdf5.ReadRange(e.idx, lo, n, dst)
}

func (e h5Entries) values(lo, n int64, dst []float32) ([]float32, error) {
	return hdf5.ReadRange(e.data, lo, n, dst)
}

func (e h5Entries) close() error { return errors.Join(e.data.Close(), e.idx.Close()) }

// h5CSR streams rows of a CSR matrix stored in HDF5 (AnnData csr_matrix,
// 10x CSC-over-barcodes, which is CSR of cells x genes).
type h5CSR struct {
	what    string
	entries entryReader
	indptr  []int64
	cols    int     // columns after colMap
	colMap  []int32 // nil, or file column -> kept column (-1 drops it)
}

func (s *h5CSR) read(start, end int, dst *CSR) error {
	lo, hi := s.indptr[start], s.indptr[end]
	var err error
	if dst.Data, err = s.entries.values(lo, hi-lo, dst.Data); err != nil {
		return err
	}
	if dst.Indices, err = s.entries.indices(lo, hi-lo, dst.Indices); err != nil {
		return err
	}
	dst.Rows, dst.Cols = end-start, s.cols
	dst.Indptr = dst.Indptr[:0]
	for _, v := range s.indptr[start : end+1] {
		dst.Indptr = append(dst.Indptr, v-lo)
	}
	if s.colMap != nil {
		if err := dst.mapColumns(s.colMap, s.cols, start); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	if err := dst.canonicalize(start); err != nil {
		return fmt.Errorf("%s: %w", s.what, err)
	}
	return nil
}

func (s *h5CSR) close() error { return s.entries.close() }

// mapColumns renumbers columns through colMap (file column -> new column,
// -1 drops the entry) in place, checking the file column range first.
func (m *CSR) mapColumns(colMap []int32, newCols, firstRow int) error {
	w := int64(0)
	for i := 0; i < m.Rows; i++ {
		lo, hi := m.Indptr[i], m.Indptr[i+1]
		m.Indptr[i] = w
		for k := lo; k < hi; k++ {
			j := m.Indices[k]
			if j < 0 || int(j) >= len(colMap) {
				return fmt.Errorf("%w: row %d: column index %d outside [0, %d)", ErrFormat, firstRow+i, j, len(colMap))
			}
			if nj := colMap[j]; nj >= 0 {
				m.Indices[w], m.Data[w] = nj, m.Data[k]
				w++
			}
		}
	}
	m.Indptr[m.Rows] = w
	m.Indices, m.Data, m.Cols = m.Indices[:w], m.Data[:w], newCols
	return nil
}

// h5Dense streams rows of a dense 2-D dataset (cells x genes), keeping
// the non-zero values (NaN counts as non-zero, so validation sees it).
type h5Dense struct {
	x    *hdf5.Dataset
	cols int
	buf  []float32
}

func (s *h5Dense) read(start, end int, dst *CSR) error {
	var err error
	if s.buf, err = hdf5.ReadRange(s.x, int64(start), int64(end-start), s.buf); err != nil {
		return err
	}
	dst.Rows, dst.Cols = end-start, s.cols
	dst.Indptr = append(dst.Indptr[:0], 0)
	dst.Indices, dst.Data = dst.Indices[:0], dst.Data[:0]
	for i := 0; i < end-start; i++ {
		for j, v := range s.buf[i*s.cols : (i+1)*s.cols] {
			if v != 0 {
				dst.Indices = append(dst.Indices, int32(j))
				dst.Data = append(dst.Data, v)
			}
		}
		dst.Indptr = append(dst.Indptr, int64(len(dst.Data)))
	}
	return nil
}

func (s *h5Dense) close() error { return s.x.Close() }

// memCSR serves rows of a matrix held in memory (converted CSC, MEX).
type memCSR struct{ m *CSR }

func (s *memCSR) read(start, end int, dst *CSR) error {
	s.m.sliceInto(start, end, dst)
	return nil
}

func (s *memCSR) close() error { return nil }

// cscBlockEntries is how many stored entries one CSC conversion read
// covers (8 MiB of indices and data).
const cscBlockEntries = 1 << 20

// cscToCSR converts a CSC matrix stored in HDF5 to an in-memory CSR in
// two passes over column blocks (count entries per row, then scatter), so
// peak memory is the CSR itself (nnz x 8 bytes + rows x 8 bytes) plus one
// block; no dense intermediate. Columns are visited in order, so rows come
// out sorted; a row index repeated within a column is rejected.
func cscToCSR(what string, entries entryReader, indptr []int64, rows, cols int) (*CSR, error) {
	nnz := indptr[cols]
	counts := make([]int64, rows+1)
	var idx []int32
	var val []float32
	var err error
	// blocks yields column ranges [c0, c1) covering about cscBlockEntries.
	blocks := func(fn func(c0, c1 int) error) error {
		for c0 := 0; c0 < cols; {
			c1 := c0 + 1
			for c1 < cols && indptr[c1+1]-indptr[c0] <= cscBlockEntries {
				c1++
			}
			if err := fn(c0, c1); err != nil {
				return err
			}
			c0 = c1
		}
		return nil
	}
	err = blocks(func(c0, c1 int) error {
		lo, hi := indptr[c0], indptr[c1]
		if idx, err = entries.indices(lo, hi-lo, idx); err != nil {
			return err
		}
		for k, r := range idx {
			if r < 0 || int(r) >= rows {
				c := c0
				for indptr[c+1] <= lo+int64(k) {
					c++
				}
				return fmt.Errorf("%s: column %d: row index %d outside [0, %d): %w", what, c, r, rows, ErrFormat)
			}
			counts[r+1]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := 0; i < rows; i++ {
		counts[i+1] += counts[i]
	}
	out := &CSR{Rows: rows, Cols: cols, Indptr: counts, Indices: make([]int32, nnz), Data: make([]float32, nnz)}
	next := make([]int64, rows)
	copy(next, counts[:rows])
	err = blocks(func(c0, c1 int) error {
		lo, hi := indptr[c0], indptr[c1]
		if idx, err = entries.indices(lo, hi-lo, idx); err != nil {
			return err
		}
		if val, err = entries.values(lo, hi-lo, val); err != nil {
			return err
		}
		for c := c0; c < c1; c++ {
			for k := indptr[c] - lo; k < indptr[c+1]-lo; k++ {
				r := idx[k]
				p := next[r]
				if p >= counts[r+1] {
					return fmt.Errorf("%s: column %d: row indices changed between passes: %w", what, c, ErrFormat)
				}
				out.Indices[p], out.Data[p] = int32(c), val[k]
				next[r] = p + 1
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := out.canonicalize(0); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
