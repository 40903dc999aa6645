package eval

import (
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/floats"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
)

// Dense is a row-major float64 matrix.
type Dense struct {
	Rows, Cols int
	Data       []float64 // len Rows·Cols, row i at Data[i·Cols:(i+1)·Cols]
}

func newDense(r, c int) *Dense { return &Dense{Rows: r, Cols: c, Data: make([]float64, r*c)} }

// Row returns row i (aliases m).
func (m *Dense) Row(i int) []float64 { return m.Data[i*m.Cols : (i+1)*m.Cols] }

func (m *Dense) general() blas64.General {
	return blas64.General{Rows: m.Rows, Cols: m.Cols, Stride: max(m.Cols, 1), Data: m.Data}
}

// rows returns a new matrix of the given rows of m.
func (m *Dense) rows(idx []int) *Dense {
	out := newDense(len(idx), m.Cols)
	for k, i := range idx {
		copy(out.Row(k), m.Row(i))
	}
	return out
}

// workers is the number of goroutines for the parallel kernels.
func workers(n int) int {
	return max(1, min(runtime.GOMAXPROCS(0), n))
}

// parallelFor runs fn over [0, n) split into contiguous ranges, one per
// worker, and waits.
func parallelFor(n int, fn func(lo, hi int)) {
	w := workers(n)
	if w <= 1 || n < 64 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for k := 0; k < w; k++ {
		lo, hi := k*n/w, (k+1)*n/w
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// mulCSR returns x·b for a CSR x [n, G] and a dense b [G, l]: row i of the
// result is Σ_k x[i,k]·b[k,:], summed in a fixed order.
func mulCSR(x *scdata.CSR, b *Dense) *Dense {
	out := newDense(x.Rows, b.Cols)
	parallelFor(x.Rows, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst := out.Row(i)
			idx, val := x.Row(i)
			for k, j := range idx {
				floats.AddScaled(dst, float64(val[k]), b.Row(int(j)))
			}
		}
	})
	return out
}

// transposeCSR returns xᵀ as a CSR matrix [G, n] (column indices sorted
// within each row): the products xᵀ·q then run row by row, each output
// row summed in a fixed order whatever the number of workers.
func transposeCSR(x *scdata.CSR) *scdata.CSR {
	t := &scdata.CSR{Rows: x.Cols, Cols: x.Rows, Indptr: make([]int64, x.Cols+1),
		Indices: make([]int32, x.Indptr[x.Rows]), Data: make([]float32, x.Indptr[x.Rows])}
	for _, j := range x.Indices[:x.Indptr[x.Rows]] {
		t.Indptr[j+1]++
	}
	for j := 0; j < x.Cols; j++ {
		t.Indptr[j+1] += t.Indptr[j]
	}
	next := append([]int64(nil), t.Indptr[:x.Cols]...)
	for i := 0; i < x.Rows; i++ {
		c, v := x.Row(i)
		for k, j := range c {
			p := next[j]
			t.Indices[p], t.Data[p] = int32(i), v[k]
			next[j]++
		}
	}
	return t
}

// gemm returns a·b (transA: aᵀ·b) with gonum's BLAS.
func gemm(transA bool, a, b *Dense) *Dense {
	ta, r := blas.NoTrans, a.Rows
	if transA {
		ta, r = blas.Trans, a.Cols
	}
	out := newDense(r, b.Cols)
	blas64.Gemm(ta, blas.NoTrans, 1, a.general(), b.general(), 0, out.general())
	return out
}

// gemmNT returns a·bᵀ.
func gemmNT(a, b *Dense) *Dense {
	out := newDense(a.Rows, b.Rows)
	blas64.Gemm(blas.NoTrans, blas.Trans, 1, a.general(), b.general(), 0, out.general())
	return out
}

// subRow subtracts the row vector v from every row of m.
func subRow(m *Dense, v []float64) {
	for i := 0; i < m.Rows; i++ {
		floats.Sub(m.Row(i), v)
	}
}

// colSums returns the column sums of m.
func colSums(m *Dense) []float64 {
	s := make([]float64, m.Cols)
	for i := 0; i < m.Rows; i++ {
		floats.Add(s, m.Row(i))
	}
	return s
}

// rowNorms2 returns ‖row‖² of every row of m.
func rowNorms2(m *Dense) []float64 {
	out := make([]float64, m.Rows)
	for i := range out {
		r := m.Row(i)
		out[i] = floats.Dot(r, r)
	}
	return out
}

// csrRowNorms2 returns ‖row‖² of every row of a CSR matrix.
func csrRowNorms2(x *scdata.CSR) []float64 {
	out := make([]float64, x.Rows)
	for i := range out {
		_, val := x.Row(i)
		var s float64
		for _, v := range val {
			s += float64(v) * float64(v)
		}
		out[i] = s
	}
	return out
}

// selectRows returns the rows idx of x as a new CSR matrix (copies).
func selectRows(x *scdata.CSR, idx []int) *scdata.CSR {
	nnz := 0
	for _, i := range idx {
		nnz += int(x.Indptr[i+1] - x.Indptr[i])
	}
	out := &scdata.CSR{Rows: len(idx), Cols: x.Cols, Indptr: make([]int64, 1, len(idx)+1),
		Indices: make([]int32, 0, nnz), Data: make([]float32, 0, nnz)}
	for _, i := range idx {
		c, v := x.Row(i)
		out.Indices = append(out.Indices, c...)
		out.Data = append(out.Data, v...)
		out.Indptr = append(out.Indptr, int64(len(out.Data)))
	}
	return out
}

// vstack stacks CSR matrices with the same column count.
func vstack(ms ...*scdata.CSR) *scdata.CSR {
	out := &scdata.CSR{Cols: ms[0].Cols, Indptr: []int64{0}}
	for _, m := range ms {
		base := int64(len(out.Data))
		out.Indices = append(out.Indices, m.Indices[:m.Indptr[m.Rows]]...)
		out.Data = append(out.Data, m.Data[:m.Indptr[m.Rows]]...)
		for _, p := range m.Indptr[1 : m.Rows+1] {
			out.Indptr = append(out.Indptr, base+p)
		}
		out.Rows += m.Rows
	}
	return out
}

// denseRows returns rows idx of x as a dense float64 matrix.
func denseRows(x *scdata.CSR, idx []int) *Dense {
	out := newDense(len(idx), x.Cols)
	for k, i := range idx {
		dst := out.Row(k)
		c, v := x.Row(i)
		for t, j := range c {
			dst[j] = float64(v[t])
		}
	}
	return out
}
