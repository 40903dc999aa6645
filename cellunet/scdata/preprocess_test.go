package scdata

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/internal/fixtures"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
)

// golden is one case of testdata/preprocess_golden.npz (written by
// testdata/make_preprocess_golden.py with numpy/scipy/anndata).
type golden struct {
	genes            []string
	geneIndex, cells []int64
	labels           []int64
	classes          []string
	rowNNZ           []int64
	rowSum, rowWSum  []float64
	sRow, sCol       []int64
	sVal             []float32
	hasLabels        bool
}

func loadGolden(t *testing.T, name string) golden {
	t.Helper()
	m, err := npz.Read(filepath.Join("testdata", "preprocess_golden.npz"))
	if err != nil {
		t.Fatal(err)
	}
	get := func(k string) *npz.Array {
		a, ok := m[name+"__"+k]
		if !ok {
			t.Fatalf("golden %s lacks %s", name, k)
		}
		return a
	}
	var g golden
	g.genes, _ = get("genes").Strings()
	g.geneIndex = get("gene_index").Data.([]int64)
	g.cells = get("cells").Data.([]int64)
	g.rowNNZ = get("row_nnz").Data.([]int64)
	g.rowSum = get("row_sum").Data.([]float64)
	g.rowWSum = get("row_wsum").Data.([]float64)
	g.sRow = get("sample_row").Data.([]int64)
	g.sCol = get("sample_col").Data.([]int64)
	g.sVal = get("sample_val").Data.([]float32)
	if _, ok := m[name+"__labels"]; ok {
		g.hasLabels = true
		g.labels = get("labels").Data.([]int64)
		g.classes, _ = get("classes").Strings()
	}
	return g
}

func relClose(a, b, rel float64) bool {
	return math.Abs(a-b) <= rel*math.Max(math.Abs(a), math.Abs(b))+1e-30
}

func TestPreprocessGolden(t *testing.T) {
	dir := fixtures.Dir(t)
	cases := []struct {
		name, golden, path string
		opts               OpenOptions
	}{
		{"synthetic", "synthetic", "testdata/synthetic_counts.h5ad", OpenOptions{}},
		{"pbmc68k_counts_csr", "pbmc68k_counts_csr", filepath.Join(dir, "format_fixtures/anndata_0.8_written/pbmc68k_counts_csr.h5ad"), OpenOptions{LabelKey: "bulk_labels"}},
		{"pbmc68k_counts_csc", "pbmc68k_counts_csr", filepath.Join(dir, "format_fixtures/anndata_0.8_written/pbmc68k_counts_csc.h5ad"), OpenOptions{LabelKey: "bulk_labels"}},
		{"pbmc68k_counts_dense", "pbmc68k_counts_csr", filepath.Join(dir, "format_fixtures/anndata_0.8_written/pbmc68k_counts_dense_gzip.h5ad"), OpenOptions{LabelKey: "bulk_labels"}},
		{"pbmc4k_plain", "pbmc4k_plain", filepath.Join(dir, "pbmc4k_scdcc/10X_PBMC_top2000.h5"), OpenOptions{}},
		{"pbmc4k_h5ad", "pbmc4k_plain", filepath.Join(dir, "format_fixtures/anndata_0.8_written/pbmc4k_top2000_counts_csr_gzip.h5ad"), OpenOptions{}},
		{"tenx_v3", "tenx_v3", filepath.Join(dir, "format_fixtures/10x/3.0.0/filtered_feature_bc_matrix.h5"), OpenOptions{NoLabels: true}},
		{"mex_v3", "tenx_v3", filepath.Join(dir, "format_fixtures/10x/3.0.0/filtered_feature_bc_matrix"), OpenOptions{NoLabels: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := loadGolden(t, c.golden)
			ds, err := Open(c.path, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer ds.Close()
			p, err := Preprocess(ds, PreprocessConfig{ChunkRows: 333})
			if err != nil {
				t.Fatal(err)
			}
			if p.NonIntegerCounts != 0 {
				t.Errorf("%d non-integer counts in a count matrix", p.NonIntegerCounts)
			}
			if !equalStrings(p.Genes, g.genes) {
				t.Fatalf("genes %q..., want %q...", p.Genes[:min(12, len(p.Genes))], g.genes[:min(12, len(g.genes))])
			}
			checkInts(t, "gene index", p.GeneIndex, g.geneIndex)
			checkInts(t, "cells", p.Cells, g.cells)
			if g.hasLabels {
				if !equalStrings(p.Classes, g.classes) {
					t.Fatalf("classes %q, want %q", p.Classes, g.classes)
				}
				checkInts(t, "labels", p.Labels, g.labels)
			} else if p.Labels != nil || p.Classes != nil {
				t.Fatal("labels without a label column")
			}
			if err := p.X.Validate(); err != nil {
				t.Fatal(err)
			}
			if p.X.Rows != len(g.cells) || p.X.Cols != len(g.genes) {
				t.Fatalf("X is %dx%d, want %dx%d", p.X.Rows, p.X.Cols, len(g.cells), len(g.genes))
			}
			for i := 0; i < p.X.Rows; i++ {
				idx, val := p.X.Row(i)
				if int64(len(idx)) != g.rowNNZ[i] {
					t.Fatalf("row %d: %d entries, want %d", i, len(idx), g.rowNNZ[i])
				}
				s, ws := 0.0, 0.0
				for k, v := range val {
					s += float64(v)
					ws += float64(v) * float64(idx[k]+1)
				}
				if !relClose(s, g.rowSum[i], 1e-6) || !relClose(ws, g.rowWSum[i], 1e-6) {
					t.Fatalf("row %d: sum %v weighted %v, want %v %v", i, s, ws, g.rowSum[i], g.rowWSum[i])
				}
			}
			for k := range g.sRow {
				got := p.X.At(int(g.sRow[k]), int(g.sCol[k]))
				if !relClose(float64(got), float64(g.sVal[k]), 1e-6) {
					t.Errorf("X[%d, %d] = %v, want %v", g.sRow[k], g.sCol[k], got, g.sVal[k])
				}
			}
		})
	}
}

func checkInts[T int | int64](t *testing.T, what string, got []T, want []int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if int64(got[i]) != want[i] {
			t.Fatalf("%s[%d] = %d, want %d", what, i, got[i], want[i])
		}
	}
}

func TestMakeUnique(t *testing.T) {
	cases := []struct{ in, want []string }{
		{[]string{"a", "b"}, []string{"a", "b"}},
		{[]string{"a", "a", "a"}, []string{"a", "a-1", "a-2"}},
		{[]string{"a", "a", "a-1"}, []string{"a", "a-2", "a-1"}},
		{[]string{"x", "a", "x", "a", "x"}, []string{"x", "a", "x-1", "a-1", "x-2"}},
		{[]string{"", ""}, []string{"", "-1"}},
	}
	for _, c := range cases {
		if got := MakeUnique(c.in); !equalStrings(got, c.want) {
			t.Errorf("MakeUnique(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
