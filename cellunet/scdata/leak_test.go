package scdata

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/hdf5"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/internal/fixtures"
)

var errStop = errors.New("stop")

// TestNoHandleLeaks opens and reads every fixture (and walks the main
// error paths and the writer) 200 times, then checks that libhdf5's count
// of open identifiers is back at its baseline.
func TestNoHandleLeaks(t *testing.T) {
	iters := 200
	if testing.Short() {
		iters = 20
	}
	dir := fixtures.Dir(t)
	cases := loadExpected(t)
	base, err := hdf5.OpenObjectCount()
	must(t, err)
	start := time.Now()
	tmp := t.TempDir()
	for it := 0; it < iters; it++ {
		for _, c := range cases {
			d, err := Open(filepath.Join(dir, filepath.FromSlash(c.Path)), c.options())
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Rows(64, func(int, *CSR) error { return errStop }); err != errStop {
				t.Fatal(err)
			}
			if _, err := d.ReadRows(d.NumCells()-min(5, d.NumCells()), d.NumCells()); err != nil {
				t.Fatal(err)
			}
			must(t, d.Close())
		}
		// Error paths every 5th iteration (a leak there shows up as well).
		for _, bad := range []struct {
			path string
			opts OpenOptions
		}{
			{"format_fixtures/anndata_0.8_written/pbmc68k_counts_csc.h5ad", OpenOptions{LabelKey: "nope"}},
			{"format_fixtures/anndata_0.8_written/pbmc68k_counts_csr.h5ad", OpenOptions{UseRaw: true}},
			{"format_fixtures/10x/1.2.0/multiple_genomes.h5", OpenOptions{NoLabels: true}},
			{"format_fixtures/10x/3.0.0/filtered_feature_bc_matrix.h5", OpenOptions{}},
			{"pbmc4k_scdcc/10X_PBMC_top2000.h5", OpenOptions{LabelKey: "Z"}},
			{"pbmc68k_reduced/10x_pbmc68k_reduced.h5ad", OpenOptions{}},
		} {
			if it%5 != 0 {
				break
			}
			if d, err := Open(filepath.Join(dir, bad.path), bad.opts); err == nil {
				d.Close()
				t.Fatalf("%s %+v: no error", bad.path, bad.opts)
			}
		}
		if it%20 == 0 {
			m := &CSR{Rows: 1, Cols: 2, Indptr: []int64{0, 1}, Indices: []int32{1}, Data: []float32{3}}
			w, err := CreateH5AD(filepath.Join(tmp, "w.h5ad"), H5ADWriterOptions{Genes: []string{"a", "b"}, Classes: []string{"x"}})
			must(t, err)
			must(t, w.AppendRows(m, []int64{0}, nil))
			must(t, w.Close())
			w, err = CreateH5AD(filepath.Join(tmp, "v.h5ad"), H5ADWriterOptions{Genes: []string{"a", "b"}})
			must(t, err)
			if w.AppendRows(m, []int64{0}, nil) == nil {
				t.Fatal("labels without classes accepted")
			}
			if w.Close() == nil {
				t.Fatal("Close after error succeeded")
			}
		}
		if n, err := hdf5.OpenObjectCount(); err != nil || n != base {
			t.Fatalf("iteration %d: %d libhdf5 identifiers open, baseline %d (%v)", it, n, base, err)
		}
	}
	t.Logf("%d iterations over %d fixtures in %v", iters, len(cases), time.Since(start))
}
