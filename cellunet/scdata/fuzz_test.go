package scdata

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/hdf5"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/internal/fixtures"
)

// bytesOpener serves the same bytes for every pass.
func bytesOpener(b []byte) opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// FuzzMatrixMarket feeds arbitrary bytes to the MEX matrix parser: no
// panics, no allocation beyond the 4096-dimension limit and the entries
// present, and any accepted matrix is canonical CSR.
func FuzzMatrixMarket(f *testing.F) {
	f.Add([]byte("%%MatrixMarket matrix coordinate integer general\n%\n3 2 3\n3 1 2\n1 1 5\n2 2 1\n"))
	f.Add([]byte("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 0.5\r\n2 2 -1e3\n"))
	f.Add([]byte("%%MatrixMarket matrix coordinate pattern general\n2 3 2\n1 1\n2 3\n"))
	f.Add([]byte("%%MatrixMarket matrix coordinate integer general\n1 1 1\n1 1 5\n1 1 5\n"))
	for _, rel := range []string{
		"format_fixtures/10x/1.2.0/filtered_gene_bc_matrices/hg19_chr21/matrix.mtx",
	} {
		if b, err := os.ReadFile(fixtures.Path(f, rel)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := readMTXTransposed("fuzz.mtx", bytesOpener(data), -1, -1, 4096)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted a matrix that does not validate: %v", err)
		}
	})
}

// memEntries is an in-memory entryReader.
type memEntries struct {
	idx []int32
	val []float32
}

func (m memEntries) indices(lo, n int64, dst []int32) ([]int32, error) {
	if lo < 0 || n < 0 || lo+n > int64(len(m.idx)) {
		return nil, fmt.Errorf("range [%d, %d) outside %d indices", lo, lo+n, len(m.idx))
	}
	return append(dst[:0], m.idx[lo:lo+n]...), nil
}

func (m memEntries) values(lo, n int64, dst []float32) ([]float32, error) {
	if lo < 0 || n < 0 || lo+n > int64(len(m.val)) {
		return nil, fmt.Errorf("range [%d, %d) outside %d values", lo, lo+n, len(m.val))
	}
	return append(dst[:0], m.val[lo:lo+n]...), nil
}

func (m memEntries) close() error { return nil }

// decodeInts reads little-endian int32 (indptr) or int16 (indices) values.
func decodeInts(b []byte, size int) []int64 {
	out := make([]int64, 0, len(b)/size)
	for i := 0; i+size <= len(b); i += size {
		if size == 4 {
			out = append(out, int64(int32(binary.LittleEndian.Uint32(b[i:]))))
		} else {
			out = append(out, int64(int16(binary.LittleEndian.Uint16(b[i:]))))
		}
	}
	return out
}

func encodeInts[T int32 | int64](v []T, size int) []byte {
	var b []byte
	for _, x := range v {
		if size == 4 {
			b = binary.LittleEndian.AppendUint32(b, uint32(int32(x)))
		} else {
			b = binary.LittleEndian.AppendUint16(b, uint16(int16(x)))
		}
	}
	return b
}

// FuzzSparseDecl checks the validation of what an HDF5 sparse group
// declares (shape, indptr, indices, data length) and the CSR and CSC row
// paths behind it: no panics, and whatever passes streams as canonical CSR.
func FuzzSparseDecl(f *testing.F) {
	f.Add(false, int64(3), int64(4), encodeInts([]int64{0, 2, 3, 5}, 4), encodeInts([]int32{0, 2, 1, 0, 3}, 2), int64(5))
	f.Add(true, int64(4), int64(3), encodeInts([]int64{0, 2, 3, 5}, 4), encodeInts([]int32{0, 2, 1, 0, 3}, 2), int64(5))
	f.Add(false, int64(2), int64(2), encodeInts([]int64{0, 2, 1}, 4), encodeInts([]int32{1, 0}, 2), int64(2))
	f.Add(true, int64(1<<30), int64(1), encodeInts([]int64{0, 1}, 4), encodeInts([]int32{7}, 2), int64(1))
	// Seeds from the anndata 0.7 fixture's X (CSR, LZF) and raw/X.
	if file, err := hdf5.Open(fixtures.Path(f, "format_fixtures/anndata_0.7_archives/v0.7.8/adata.h5ad")); err == nil {
		for _, g := range []string{"X", "raw/X"} {
			_, shape, err1 := sparseEncoding(file, "seed", g)
			data, indices, indptr, _, _, err2 := sparseArrays(file, "seed", g, shape, false)
			if err1 != nil || err2 != nil {
				continue
			}
			idx, _ := hdf5.ReadAll[int32](indices)
			f.Add(false, shape[0], shape[1], encodeInts(indptr, 4), encodeInts(idx, 2), data.Len())
			f.Add(true, shape[1], shape[0], encodeInts(indptr, 4), encodeInts(idx, 2), data.Len())
			data.Close()
			indices.Close()
		}
		file.Close()
	}
	f.Fuzz(func(t *testing.T, csc bool, r, c int64, ptrBytes, idxBytes []byte, dataLen int64) {
		indptr := decodeInts(ptrBytes, 4)
		idx64 := decodeInts(idxBytes, 2)
		decl := sparseDecl{what: "fuzz", shape: []int64{r, c}, csc: csc, ptrLen: int64(len(indptr)), dataLen: dataLen, idxLen: int64(len(idx64))}
		rows, cols, err := decl.check()
		if err != nil {
			return
		}
		major := rows
		if csc {
			major = cols
		}
		if err := checkIndptr("fuzz", indptr, major, dataLen); err != nil {
			return
		}
		// The real reader bounds rows and columns by the obs/var indexes;
		// keep the fuzzer's allocations small the same way.
		if rows > 1<<16 || cols > 1<<16 {
			return
		}
		e := memEntries{idx: make([]int32, len(idx64)), val: make([]float32, len(idx64))}
		for i, v := range idx64 {
			e.idx[i], e.val[i] = int32(v), float32(i+1)
		}
		var src rowSource
		if csc {
			m, err := cscToCSR("fuzz", e, indptr, rows, cols)
			if err != nil {
				return
			}
			if err := m.Validate(); err != nil {
				t.Fatalf("CSC conversion accepted invalid data: %v", err)
			}
			src = &memCSR{m: m}
		} else {
			src = &h5CSR{what: "fuzz", entries: e, indptr: indptr, cols: cols}
		}
		ds := &Dataset{path: "fuzz", rows: rows, cols: cols, src: src}
		_ = ds.Rows(7, func(start int, chunk *CSR) error {
			if err := chunk.Validate(); err != nil {
				t.Fatalf("rows %d..: streamed an invalid chunk: %v", start, err)
			}
			return nil
		})
	})
}
