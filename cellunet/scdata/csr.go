package scdata

import (
	"fmt"
	"sort"
)

// CSR is a compressed sparse row matrix of float32 values: row i holds the
// entries Data[Indptr[i]:Indptr[i+1]] in the columns
// Indices[Indptr[i]:Indptr[i+1]]. Readers in this package always return
// column indices sorted and unique within each row, in [0, Cols), with
// len(Indptr) == Rows+1, Indptr[0] == 0 and len(Indices) == len(Data) ==
// Indptr[Rows].
type CSR struct {
	Rows, Cols int       // shape: cells x genes
	Indptr     []int64   // row offsets into Indices and Data, length Rows+1
	Indices    []int32   // column of each stored entry
	Data       []float32 // value of each stored entry
}

// NNZ returns the number of stored entries.
func (m *CSR) NNZ() int { return len(m.Data) }

// Row returns the column indices and values of row i (aliases m).
func (m *CSR) Row(i int) ([]int32, []float32) {
	lo, hi := m.Indptr[i], m.Indptr[i+1]
	return m.Indices[lo:hi], m.Data[lo:hi]
}

// Slice returns rows [start, end): Indices and Data alias m's arrays, and
// Indptr is a new, rebased slice.
func (m *CSR) Slice(start, end int) *CSR {
	s := &CSR{Rows: end - start, Cols: m.Cols}
	m.sliceInto(start, end, s)
	return s
}

// sliceInto makes dst rows [start, end) of m, reusing dst.Indptr.
func (m *CSR) sliceInto(start, end int, dst *CSR) {
	lo, hi := m.Indptr[start], m.Indptr[end]
	dst.Rows, dst.Cols = end-start, m.Cols
	dst.Indptr = dst.Indptr[:0]
	for _, v := range m.Indptr[start : end+1] {
		dst.Indptr = append(dst.Indptr, v-lo)
	}
	dst.Indices, dst.Data = m.Indices[lo:hi], m.Data[lo:hi]
}

// Clone returns a deep copy.
func (m *CSR) Clone() *CSR {
	return &CSR{Rows: m.Rows, Cols: m.Cols, Indptr: append([]int64(nil), m.Indptr...),
		Indices: append([]int32(nil), m.Indices...), Data: append([]float32(nil), m.Data...)}
}

// DenseRows writes rows [start, end) into dst as a row-major dense
// [end-start, Cols] block (dst must hold that many values; it is zeroed
// first). Use it to densify one batch at a time.
func (m *CSR) DenseRows(start, end int, dst []float32) {
	n := (end - start) * m.Cols
	dst = dst[:n]
	clear(dst)
	for i := start; i < end; i++ {
		idx, val := m.Row(i)
		row := dst[(i-start)*m.Cols:]
		for k, j := range idx {
			row[j] = val[k]
		}
	}
}

// At returns entry (i, j) (binary search; rows must be sorted).
func (m *CSR) At(i, j int) float32 {
	idx, val := m.Row(i)
	k := sort.Search(len(idx), func(k int) bool { return int(idx[k]) >= j })
	if k < len(idx) && int(idx[k]) == j {
		return val[k]
	}
	return 0
}

// Validate checks the structure of m: array lengths, monotone Indptr
// within the data, column indices in [0, Cols), sorted and unique within
// each row. The error names what is wrong, with the row.
func (m *CSR) Validate() error {
	if m.Rows < 0 || m.Cols < 0 {
		return fmt.Errorf("%w: negative shape (%d, %d)", ErrFormat, m.Rows, m.Cols)
	}
	if len(m.Indptr) != m.Rows+1 {
		return fmt.Errorf("%w: indptr has %d entries, want rows+1 = %d", ErrFormat, len(m.Indptr), m.Rows+1)
	}
	if len(m.Indices) != len(m.Data) {
		return fmt.Errorf("%w: %d indices but %d values", ErrFormat, len(m.Indices), len(m.Data))
	}
	if m.Indptr[0] != 0 {
		return fmt.Errorf("%w: indptr starts at %d, want 0", ErrFormat, m.Indptr[0])
	}
	if m.Indptr[m.Rows] != int64(len(m.Data)) {
		return fmt.Errorf("%w: indptr ends at %d, want %d stored entries", ErrFormat, m.Indptr[m.Rows], len(m.Data))
	}
	for i := 0; i < m.Rows; i++ {
		if m.Indptr[i+1] < m.Indptr[i] {
			return fmt.Errorf("%w: indptr decreases at row %d (%d > %d)", ErrFormat, i, m.Indptr[i], m.Indptr[i+1])
		}
	}
	for i := 0; i < m.Rows; i++ {
		idx, _ := m.Row(i)
		for k, j := range idx {
			if j < 0 || int(j) >= m.Cols {
				return fmt.Errorf("%w: row %d: column index %d outside [0, %d)", ErrFormat, i, j, m.Cols)
			}
			if k > 0 && j <= idx[k-1] {
				return fmt.Errorf("%w: row %d: column indices not sorted and unique (%d after %d)", ErrFormat, i, j, idx[k-1])
			}
		}
	}
	return nil
}

// rowSorter sorts the entries of one row by column index.
type rowSorter struct {
	idx []int32
	val []float32
}

func (s *rowSorter) Len() int           { return len(s.idx) }
func (s *rowSorter) Less(a, b int) bool { return s.idx[a] < s.idx[b] }
func (s *rowSorter) Swap(a, b int) {
	s.idx[a], s.idx[b] = s.idx[b], s.idx[a]
	s.val[a], s.val[b] = s.val[b], s.val[a]
}

// canonicalize checks the column range of every entry, sorts each row by
// column and rejects duplicate columns. firstRow numbers rows in messages.
func (m *CSR) canonicalize(firstRow int) error {
	var s rowSorter
	for i := 0; i < m.Rows; i++ {
		idx, val := m.Row(i)
		sorted := true
		for k, j := range idx {
			if j < 0 || int(j) >= m.Cols {
				return fmt.Errorf("%w: row %d: column index %d outside [0, %d)", ErrFormat, firstRow+i, j, m.Cols)
			}
			if k > 0 && j < idx[k-1] {
				sorted = false
			}
		}
		if !sorted {
			s.idx, s.val = idx, val
			sort.Sort(&s)
		}
		for k := 1; k < len(idx); k++ {
			if idx[k] == idx[k-1] {
				return fmt.Errorf("%w: row %d: column %d stored twice", ErrFormat, firstRow+i, idx[k])
			}
		}
	}
	return nil
}

// checkIndptr validates an index pointer read from a file: length
// rows+1, first entry 0, non-decreasing, last entry equal to the number of
// stored entries nnz. what names the object in messages.
func checkIndptr(what string, indptr []int64, rows int, nnz int64) error {
	if len(indptr) != rows+1 {
		return fmt.Errorf("%w: %s: indptr has %d entries, want rows+1 = %d", ErrFormat, what, len(indptr), rows+1)
	}
	if indptr[0] != 0 {
		return fmt.Errorf("%w: %s: indptr starts at %d, want 0", ErrFormat, what, indptr[0])
	}
	for i := 0; i < rows; i++ {
		if indptr[i+1] < indptr[i] {
			return fmt.Errorf("%w: %s: indptr decreases at row %d (%d > %d)", ErrFormat, what, i, indptr[i], indptr[i+1])
		}
	}
	if indptr[rows] != nnz {
		return fmt.Errorf("%w: %s: indptr ends at %d but data and indices hold %d entries", ErrFormat, what, indptr[rows], nnz)
	}
	return nil
}
