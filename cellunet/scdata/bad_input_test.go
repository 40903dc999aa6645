package scdata

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/hdf5"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/internal/fixtures"
)

// h5adSpec describes a small h5ad-like file written with package hdf5, so
// tests can break one thing at a time.
type h5adSpec struct {
	encoding string // X encoding-type; "" writes no attribute, "dense" a dataset
	shape    []int64
	indptr   []int64
	indices  []int32
	data     []float32
	noShape  bool
	obs      []string
	vars     []string
	cats     []string
	codes    []int64
	noX      bool
	noObs    bool
}

// goodSpec is a valid 3 x 4 CSR matrix with labels.
func goodSpec() h5adSpec {
	return h5adSpec{
		encoding: "csr_matrix", shape: []int64{3, 4},
		indptr: []int64{0, 2, 3, 5}, indices: []int32{0, 2, 1, 0, 3}, data: []float32{1, 2, 3, 4, 5},
		obs: []string{"c0", "c1", "c2"}, vars: []string{"g0", "g1", "g2", "g3"},
		cats: []string{"T", "B"}, codes: []int64{0, 1, 0},
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeSpec(t *testing.T, s h5adSpec) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bad.h5ad")
	f, err := hdf5.Create(path)
	must(t, err)
	defer func() { must(t, f.Close()) }()
	ds := func(loc interface {
		CreateDataset(string, hdf5.Type, []int64, *hdf5.DatasetOptions) (*hdf5.Dataset, error)
	}, name string, write func(d *hdf5.Dataset) error, typ hdf5.Type, dims []int64) {
		d, err := loc.CreateDataset(name, typ, dims, nil)
		must(t, err)
		must(t, write(d))
		must(t, d.Close())
	}
	if !s.noX {
		if s.encoding == "dense" {
			ds(f, "X", func(d *hdf5.Dataset) error { return hdf5.Write(d, s.data) }, hdf5.Float32, s.shape)
		} else {
			g, err := f.CreateGroup("X")
			must(t, err)
			if s.encoding != "" {
				must(t, g.WriteAttrString("encoding-type", s.encoding))
			}
			if !s.noShape {
				must(t, g.WriteAttrInt64s("shape", s.shape))
			}
			ds(g, "indptr", func(d *hdf5.Dataset) error { return hdf5.Write(d, s.indptr) }, hdf5.Int64, []int64{int64(len(s.indptr))})
			ds(g, "indices", func(d *hdf5.Dataset) error { return hdf5.Write(d, s.indices) }, hdf5.Int32, []int64{int64(len(s.indices))})
			ds(g, "data", func(d *hdf5.Dataset) error { return hdf5.Write(d, s.data) }, hdf5.Float32, []int64{int64(len(s.data))})
			must(t, g.Close())
		}
	}
	frame := func(name string, index []string) *hdf5.Group {
		g, err := f.CreateGroup(name)
		must(t, err)
		must(t, g.WriteAttrString("_index", "_index"))
		ds(g, "_index", func(d *hdf5.Dataset) error { return d.WriteStrings(index) }, hdf5.String, []int64{int64(len(index))})
		return g
	}
	if !s.noObs {
		g := frame("obs", s.obs)
		if s.cats != nil {
			c, err := g.CreateGroup("celltype")
			must(t, err)
			must(t, c.WriteAttrString("encoding-type", "categorical"))
			ds(c, "categories", func(d *hdf5.Dataset) error { return d.WriteStrings(s.cats) }, hdf5.String, []int64{int64(len(s.cats))})
			ds(c, "codes", func(d *hdf5.Dataset) error { return hdf5.Write(d, s.codes) }, hdf5.Int8, []int64{int64(len(s.codes))})
			must(t, c.Close())
		}
		must(t, g.Close())
	}
	must(t, frame("var", s.vars).Close())
	return path
}

// wantErr checks errors.Is and that the message names every fragment.
func wantErr(t *testing.T, err, target error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", target)
	}
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("error %q does not wrap %v", err, target)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Fatalf("error %q does not mention %q", err, f)
		}
	}
}

// openAndRead opens, streams every row and closes; it returns the first
// error.
func openAndRead(path string, opts OpenOptions) error {
	d, err := Open(path, opts)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Rows(2, func(int, *CSR) error { return nil })
}

func TestBadH5AD(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*h5adSpec)
		opts   OpenOptions
		target error
		frags  []string
	}{
		{"good", func(*h5adSpec) {}, OpenOptions{}, nil, nil},
		{"no X", func(s *h5adSpec) { s.noX = true }, OpenOptions{}, ErrFormat, []string{"bad.h5ad", "/X", "missing"}},
		{"no encoding", func(s *h5adSpec) { s.encoding = "" }, OpenOptions{}, ErrFormat, []string{"/X", "encoding-type"}},
		{"unknown encoding", func(s *h5adSpec) { s.encoding = "coo_matrix" }, OpenOptions{}, ErrFormat, []string{"coo_matrix"}},
		{"no shape", func(s *h5adSpec) { s.noShape = true }, OpenOptions{}, ErrFormat, []string{"/X", "shape"}},
		{"shape rank", func(s *h5adSpec) { s.shape = []int64{3} }, OpenOptions{}, ErrFormat, []string{"/X", "shape has 1 entries"}},
		{"indptr length", func(s *h5adSpec) { s.indptr = []int64{0, 2, 5} }, OpenOptions{}, ErrFormat, []string{"/X", "indptr has 3 entries", "rows+1 = 4"}},
		{"shape rows vs indptr", func(s *h5adSpec) { s.shape = []int64{4, 4} }, OpenOptions{}, ErrFormat, []string{"indptr has 4 entries", "rows+1 = 5"}},
		{"indptr start", func(s *h5adSpec) { s.indptr = []int64{1, 2, 3, 5} }, OpenOptions{}, ErrFormat, []string{"indptr starts at 1"}},
		{"indptr decreasing", func(s *h5adSpec) { s.indptr = []int64{0, 4, 3, 5} }, OpenOptions{}, ErrFormat, []string{"decreases at row 1"}},
		{"indptr end", func(s *h5adSpec) { s.indptr = []int64{0, 2, 3, 4} }, OpenOptions{}, ErrFormat, []string{"ends at 4", "5 entries"}},
		{"data vs indices", func(s *h5adSpec) { s.data = s.data[:4]; s.indptr[3] = 4 }, OpenOptions{}, ErrFormat, []string{"data has 4 entries but indices has 5"}},
		{"index out of range", func(s *h5adSpec) { s.indices[4] = 4 }, OpenOptions{}, ErrFormat, []string{"/X", "row 2", "column index 4 outside [0, 4)"}},
		{"negative index", func(s *h5adSpec) { s.indices[0] = -1 }, OpenOptions{}, ErrFormat, []string{"row 0", "column index -1"}},
		{"duplicate index", func(s *h5adSpec) { s.indices[1] = 0 }, OpenOptions{}, ErrFormat, []string{"row 0", "stored twice"}},
		{"obs length", func(s *h5adSpec) { s.obs = s.obs[:2] }, OpenOptions{}, ErrFormat, []string{"/obs/_index", "want 3 entries"}},
		{"var length", func(s *h5adSpec) { s.vars = append(s.vars, "g4") }, OpenOptions{}, ErrFormat, []string{"/var/_index", "want 4 entries"}},
		{"no obs", func(s *h5adSpec) { s.noObs = true }, OpenOptions{}, ErrFormat, []string{"/obs", "dataframe missing"}},
		{"label key", func(s *h5adSpec) {}, OpenOptions{LabelKey: "cell_type"}, ErrNoLabels, []string{"no label column \"cell_type\"", "\"celltype\""}},
		{"no labels at all", func(s *h5adSpec) { s.cats = nil }, OpenOptions{}, ErrNoLabels, []string{"available obs columns: nothing"}},
		{"no labels wanted", func(s *h5adSpec) { s.cats = nil }, OpenOptions{NoLabels: true}, nil, nil},
		{"missing label", func(s *h5adSpec) { s.codes[1] = -1 }, OpenOptions{}, ErrFormat, []string{"/obs/celltype", "row 1", "code -1"}},
		{"code range", func(s *h5adSpec) { s.codes[2] = 2 }, OpenOptions{}, ErrFormat, []string{"row 2", "only 2 categories"}},
		{"codes length", func(s *h5adSpec) { s.codes = s.codes[:2] }, OpenOptions{}, ErrFormat, []string{"/obs/celltype/codes", "want 3"}},
		{"no raw", func(s *h5adSpec) {}, OpenOptions{UseRaw: true}, ErrFormat, []string{"/raw", "UseRaw"}},
		{"dense", func(s *h5adSpec) {
			s.encoding = "dense"
			s.data = []float32{1, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0, 5}
		}, OpenOptions{}, nil, nil},
		{"dense rank", func(s *h5adSpec) { s.encoding = "dense"; s.shape = []int64{5}; s.data = s.data[:5] }, OpenOptions{}, ErrFormat, []string{"/X", "2-D"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := goodSpec()
			c.mutate(&s)
			err := openAndRead(writeSpec(t, s), c.opts)
			if c.target == nil && c.frags == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantErr(t, err, c.target, c.frags...)
		})
	}
}

func TestBadValues(t *testing.T) {
	for _, c := range []struct {
		name string
		v    float32
		frag string
	}{
		{"nan", float32(math.NaN()), "value NaN"},
		{"inf", float32(math.Inf(1)), "value +Inf"},
		{"negative", -2, "value -2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := goodSpec()
			s.data[3] = c.v
			d, err := Open(writeSpec(t, s), OpenOptions{})
			must(t, err)
			defer d.Close()
			_, err = Preprocess(d, PreprocessConfig{MinCells: -1, MinGenes: -1})
			wantErr(t, err, ErrBadValue, "bad.h5ad: /X: row 2 (cell \"c2\")", "gene 0 (\"g0\")", c.frag)
		})
	}
	t.Run("non-integer", func(t *testing.T) {
		s := goodSpec()
		s.data[1] = 2.5
		d, err := Open(writeSpec(t, s), OpenOptions{})
		must(t, err)
		defer d.Close()
		p, err := Preprocess(d, PreprocessConfig{MinCells: -1, MinGenes: -1})
		must(t, err)
		if p.NonIntegerCounts != 1 {
			t.Fatalf("NonIntegerCounts = %d, want 1", p.NonIntegerCounts)
		}
		_, err = Preprocess(d, PreprocessConfig{MinCells: -1, MinGenes: -1, RequireIntegerCounts: true})
		wantErr(t, err, ErrBadValue, "row 0", "gene 2", "value 2.5", "integers")
	})
	t.Run("scaled pbmc68k X", func(t *testing.T) {
		d, err := Open(fixtures.Path(t, "pbmc68k_reduced/10x_pbmc68k_reduced.h5ad"), OpenOptions{LabelKey: "bulk_labels"})
		must(t, err)
		defer d.Close()
		_, err = Preprocess(d, PreprocessConfig{})
		wantErr(t, err, ErrBadValue, "10x_pbmc68k_reduced.h5ad: /X: row 0 (cell \"AAAGCCTGGCTAAC-1\")", "non-negative")
	})
}

func TestNothingLeft(t *testing.T) {
	d, err := Open(writeSpec(t, goodSpec()), OpenOptions{})
	must(t, err)
	defer d.Close()
	_, err = Preprocess(d, PreprocessConfig{})
	wantErr(t, err, ErrEmpty, "filter_genes(min_cells=3) kept 0 of 4 genes", "3 cells")
	_, err = Preprocess(d, PreprocessConfig{MinCells: 1})
	wantErr(t, err, ErrEmpty, "filter_cells(min_genes=10) kept 0 of 3 cells", "kept 4 of 4 genes")
	// The 10x v2 MEX fixture (12 cells, one count each) filters to nothing.
	m, err := Open(fixtures.Path(t, "format_fixtures/10x/1.2.0/filtered_gene_bc_matrices"), OpenOptions{NoLabels: true})
	must(t, err)
	defer m.Close()
	_, err = Preprocess(m, PreprocessConfig{})
	wantErr(t, err, ErrEmpty, "matrix.mtx", "kept 0 of 343 genes")
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.h5ad")
	must(t, os.WriteFile(text, []byte("this is not HDF5\n"), 0o644))
	_, err := Open(text, OpenOptions{})
	wantErr(t, err, ErrFormat, "notes.h5ad", "not an HDF5 file")

	_, err = Open(filepath.Join(dir, "missing.h5ad"), OpenOptions{})
	wantErr(t, err, fs.ErrNotExist, "missing.h5ad")

	empty := filepath.Join(dir, "empty.h5")
	must(t, os.WriteFile(empty, nil, 0o644))
	_, err = Open(empty, OpenOptions{})
	wantErr(t, err, ErrFormat, "empty.h5")

	// Truncated copies of a real file: every cut must give an error, never
	// a panic or a silent success.
	src, err := os.ReadFile(fixtures.Path(t, "format_fixtures/anndata_0.8_written/pbmc68k_counts_csr_gzip.h5ad"))
	must(t, err)
	for _, frac := range []float64{0.001, 0.01, 0.3, 0.6, 0.95, 0.9999} {
		cut := filepath.Join(dir, "truncated.h5ad")
		must(t, os.WriteFile(cut, src[:int(float64(len(src))*frac)], 0o644))
		err := openAndRead(cut, OpenOptions{LabelKey: "bulk_labels"})
		if err == nil {
			t.Fatalf("truncated to %.4f: no error", frac)
		}
		if !strings.Contains(err.Error(), "truncated.h5ad") {
			t.Fatalf("truncated to %.4f: error does not name the file: %v", frac, err)
		}
	}

	// An HDF5 file that is none of the known layouts.
	other := filepath.Join(dir, "other.h5")
	f, err := hdf5.Create(other)
	must(t, err)
	g, err := f.CreateGroup("stuff")
	must(t, err)
	must(t, g.Close())
	must(t, f.Close())
	_, err = Open(other, OpenOptions{})
	wantErr(t, err, ErrFormat, "other.h5", "unknown HDF5 layout", "\"stuff\"")
}

func TestBad10x(t *testing.T) {
	multi := fixtures.Path(t, "format_fixtures/10x/1.2.0/multiple_genomes.h5")
	_, err := Open(multi, OpenOptions{NoLabels: true})
	wantErr(t, err, ErrAmbiguous, "multiple_genomes.h5", "\"another_genome\", \"hg19_chr21\"", "choose one genome")
	_, err = Open(multi, OpenOptions{NoLabels: true, Genome: "mm10"})
	wantErr(t, err, ErrFormat, "genome \"mm10\" not found")
	_, err = Open(multi, OpenOptions{Genome: "hg19_chr21"})
	wantErr(t, err, ErrNoLabels, "multiple_genomes.h5", "without labels")
	v3 := fixtures.Path(t, "format_fixtures/10x/3.0.0/filtered_feature_bc_matrix.h5")
	_, err = Open(v3, OpenOptions{NoLabels: true, Genome: "mm10"})
	wantErr(t, err, ErrFormat, "genome \"mm10\" not found", "GRCh38_chr21")
	_, err = Open(fixtures.Path(t, "format_fixtures/10x/3.0.0/filtered_feature_bc_matrix"), OpenOptions{})
	wantErr(t, err, ErrNoLabels, "MEX")
}

// writeMEX writes a MEX folder with the given matrix text.
func writeMEX(t *testing.T, mtx string, genes, barcodes int) string {
	t.Helper()
	dir := t.TempDir()
	var g, b strings.Builder
	for i := 0; i < genes; i++ {
		g.WriteString("ENSG" + string(rune('A'+i)) + "\tG" + string(rune('A'+i)) + "\n")
	}
	for i := 0; i < barcodes; i++ {
		b.WriteString("BC" + string(rune('A'+i)) + "-1\n")
	}
	must(t, os.WriteFile(filepath.Join(dir, "genes.tsv"), []byte(g.String()), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "barcodes.tsv"), []byte(b.String()), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "matrix.mtx"), []byte(mtx), 0o644))
	return dir
}

func TestBadMEX(t *testing.T) {
	const head = "%%MatrixMarket matrix coordinate integer general\n%comment\n"
	cases := []struct {
		name  string
		mtx   string
		frags []string
	}{
		{"rows vs genes", head + "4 2 1\n1 1 5\n", []string{"matrix.mtx", "line 3", "4 rows (genes)", "lists 3"}},
		{"cols vs barcodes", head + "3 3 1\n1 1 5\n", []string{"3 columns (cells)", "lists 2"}},
		{"truncated", head + "3 2 3\n1 1 5\n2 2 1\n", []string{"2 entries", "declares 3", "truncated"}},
		{"too many", head + "3 2 1\n1 1 5\n2 2 1\n", []string{"line 5", "more entries than the 1 declared"}},
		{"out of range", head + "3 2 1\n4 1 5\n", []string{"line 4", "entry (4, 1) outside the declared 3 x 2"}},
		{"zero index", head + "3 2 1\n0 1 5\n", []string{"entry (0, 1)", "1-based"}},
		{"not integer", head + "3 2 1\n1 1 2.5\n", []string{"value \"2.5\" is not an integer"}},
		{"fields", head + "3 2 1\n1 1\n", []string{"line 4", "want 3 fields"}},
		{"banner", "%%MatrixMarket matrix array real general\n3 2\n", []string{"line 1", "\"array\"", "coordinate"}},
		{"symmetric", "%%MatrixMarket matrix coordinate real symmetric\n3 2 0\n", []string{"symmetry"}},
		{"no banner", "3 2 1\n1 1 1\n", []string{"line 1", "%%MatrixMarket"}},
		{"no size", head, []string{"no size line"}},
		{"duplicate", head + "3 2 2\n1 1 5\n1 1 2\n", []string{"row 0", "column 0 stored twice"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(writeMEX(t, c.mtx, 3, 2), OpenOptions{NoLabels: true})
			wantErr(t, err, ErrFormat, c.frags...)
		})
	}
	// Entries in any order; the folder's genes x cells become cells x genes.
	d, err := Open(writeMEX(t, head+"3 2 3\n3 1 2\n1 1 5\n2 2 1\n", 3, 2), OpenOptions{NoLabels: true})
	must(t, err)
	defer d.Close()
	m, err := d.ReadCSR()
	must(t, err)
	if m.At(0, 0) != 5 || m.At(0, 2) != 2 || m.At(1, 1) != 1 || m.NNZ() != 3 {
		t.Fatalf("MEX transposed wrongly: %+v", m)
	}
}
