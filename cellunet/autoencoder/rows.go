package autoencoder

import (
	"fmt"
	"unsafe"
)

// RowSource is a read-only matrix of Rows() cells × Cols() genes of
// log1p-normalised expression, read a few rows at a time. The autoencoder
// never densifies a whole source: training densifies one batch per step,
// EncodeAll one chunk at a time.
//
// Dense writes the rows named by idx (0-based, in that order, repeats
// allowed) densely and row-major into dst[:len(idx)*Cols()]: row idx[k]
// goes to dst[k*Cols() : (k+1)*Cols()]. It must write every one of those
// elements (zeros included; dst holds stale data) and must not keep dst or
// idx. It is called from one goroutine at a time. A CSR matrix implements it
// by clearing each destination row and scattering the row's nonzeros (see
// CSR).
type RowSource interface {
	Rows() int
	Cols() int
	Dense(idx []int64, dst []float32) error
}

// CSR is an in-memory compressed-sparse-row matrix implementing RowSource
// (the layout of scipy.sparse.csr_matrix and AnnData's X): the nonzeros of
// row i are Data[Indptr[i]:Indptr[i+1]] at columns Indices[...]. Column
// indices need not be sorted; duplicates are summed.
type CSR struct {
	NumRows, NumCols int
	Indptr           []int64   // len NumRows+1, Indptr[0] = 0, non-decreasing
	Indices          []int32   // len nnz, each in [0, NumCols)
	Data             []float32 // len nnz
}

// Rows is the number of rows.
func (m *CSR) Rows() int { return m.NumRows }

// Cols is the number of columns.
func (m *CSR) Cols() int { return m.NumCols }

// Validate checks the structure (lengths, Indptr monotonicity, column range).
func (m *CSR) Validate() error {
	if m.NumRows < 0 || m.NumCols < 0 {
		return fmt.Errorf("autoencoder: CSR has negative shape %d×%d", m.NumRows, m.NumCols)
	}
	if len(m.Indptr) != m.NumRows+1 {
		return fmt.Errorf("autoencoder: CSR indptr has %d entries, want rows+1 = %d", len(m.Indptr), m.NumRows+1)
	}
	if m.Indptr[0] != 0 || m.Indptr[m.NumRows] != int64(len(m.Indices)) || len(m.Indices) != len(m.Data) {
		return fmt.Errorf("autoencoder: CSR indptr [%d..%d] does not match %d indices and %d values",
			m.Indptr[0], m.Indptr[m.NumRows], len(m.Indices), len(m.Data))
	}
	for i := 0; i < m.NumRows; i++ {
		if m.Indptr[i+1] < m.Indptr[i] {
			return fmt.Errorf("autoencoder: CSR indptr decreases at row %d", i)
		}
	}
	for k, j := range m.Indices {
		if j < 0 || int(j) >= m.NumCols {
			return fmt.Errorf("autoencoder: CSR column index %d at position %d is outside [0, %d)", j, k, m.NumCols)
		}
	}
	return nil
}

// Dense implements RowSource.
func (m *CSR) Dense(idx []int64, dst []float32) error {
	g := m.NumCols
	if len(dst) < len(idx)*g {
		return fmt.Errorf("autoencoder: CSR.Dense: dst holds %d values, %d rows × %d columns need %d", len(dst), len(idx), g, len(idx)*g)
	}
	for k, i := range idx {
		if i < 0 || i >= int64(m.NumRows) {
			return fmt.Errorf("autoencoder: CSR.Dense: row %d outside [0, %d)", i, m.NumRows)
		}
		row := dst[k*g : (k+1)*g]
		clear(row)
		lo, hi := m.Indptr[i], m.Indptr[i+1]
		for p := lo; p < hi; p++ {
			row[m.Indices[p]] += m.Data[p]
		}
	}
	return nil
}

// CSRFromDense builds a CSR from a dense row-major matrix, keeping the
// nonzeros (a helper for tests and small inputs).
func CSRFromDense(data []float32, rows, cols int) (*CSR, error) {
	if len(data) != rows*cols {
		return nil, fmt.Errorf("autoencoder: CSRFromDense: %d values for %d×%d", len(data), rows, cols)
	}
	m := &CSR{NumRows: rows, NumCols: cols, Indptr: make([]int64, rows+1)}
	for i := 0; i < rows; i++ {
		for j, v := range data[i*cols : (i+1)*cols] {
			if v != 0 {
				m.Indices = append(m.Indices, int32(j))
				m.Data = append(m.Data, v)
			}
		}
		m.Indptr[i+1] = int64(len(m.Data))
	}
	return m, nil
}

// Dense is a dense row-major float32 matrix implementing RowSource, e.g.
// latents [N,Latent] for DecodeAll's inputs.
type Dense struct {
	Data []float32 // len NumRows·NumCols
	// NumCols is the row width.
	NumCols int
}

// Rows is len(Data)/NumCols.
func (d Dense) Rows() int {
	if d.NumCols == 0 {
		return 0
	}
	return len(d.Data) / d.NumCols
}

// Cols is NumCols.
func (d Dense) Cols() int { return d.NumCols }

// Dense implements RowSource.
func (d Dense) Dense(idx []int64, dst []float32) error {
	c := d.NumCols
	n := int64(d.Rows())
	if len(dst) < len(idx)*c {
		return fmt.Errorf("autoencoder: Dense: dst holds %d values, %d rows need %d", len(dst), len(idx), len(idx)*c)
	}
	for k, i := range idx {
		if i < 0 || i >= n {
			return fmt.Errorf("autoencoder: Dense: row %d outside [0, %d)", i, n)
		}
		copy(dst[k*c:(k+1)*c], d.Data[i*int64(c):(i+1)*int64(c)])
	}
	return nil
}

// concat stacks two sources with the same column count (a's rows first).
type concat struct{ a, b RowSource }

func (c concat) Rows() int { return c.a.Rows() + c.b.Rows() }
func (c concat) Cols() int { return c.a.Cols() }

func (c concat) Dense(idx []int64, dst []float32) error {
	na, w := int64(c.a.Rows()), c.a.Cols()
	// Split idx into maximal runs from one side, keeping the order.
	for k := 0; k < len(idx); {
		e := k
		inA := idx[k] < na
		for e < len(idx) && (idx[e] < na) == inA {
			e++
		}
		run := idx[k:e]
		var err error
		if inA {
			err = c.a.Dense(run, dst[k*w:e*w])
		} else {
			shifted := make([]int64, len(run))
			for j, i := range run {
				shifted[j] = i - na
			}
			err = c.b.Dense(shifted, dst[k*w:e*w])
		}
		if err != nil {
			return err
		}
		k = e
	}
	return nil
}

// f32bytes views a float32 slice as bytes (no copy).
func f32bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}
