package scdata

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/internal/fixtures"
)

// refPython is Debian's python3, which sees python3-anndata, h5py, numpy.
const refPython = "/usr/bin/python3"

// runPython runs a Python snippet with the reference interpreter; a
// missing interpreter or module fails the test (CI installs them).
func runPython(t *testing.T, script string, args ...string) string {
	t.Helper()
	if _, err := os.Stat(refPython); err != nil {
		t.Fatalf("%s is required for the interoperability tests (apt-get install python3-anndata python3-h5py python3-numpy python3-scipy): %v", refPython, err)
	}
	cmd := exec.Command(refPython, append([]string{"-c", script}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python failed: %v\n%s", err, out)
	}
	return string(out)
}

// writePreprocessed writes p through H5ADWriter in chunks of chunk rows.
func writePreprocessed(t *testing.T, path string, p *Preprocessed, chunk, gzip int) {
	t.Helper()
	w, err := CreateH5AD(path, H5ADWriterOptions{Genes: p.Genes, Classes: p.Classes, LabelKey: "cell_type", Gzip: gzip})
	must(t, err)
	for s := 0; s < p.X.Rows; s += chunk {
		e := min(s+chunk, p.X.Rows)
		var labels []int64
		if p.Labels != nil {
			labels = p.Labels[s:e]
		}
		if err := w.AppendRows(p.X.Slice(s, e), labels, p.Barcodes[s:e]); err != nil {
			w.Abort()
			t.Fatal(err)
		}
	}
	must(t, w.Close())
}

func TestH5ADWriterRoundTrip(t *testing.T) {
	src, err := Open(fixtures.Path(t, "format_fixtures/anndata_0.8_written/pbmc68k_counts_csr.h5ad"), OpenOptions{LabelKey: "bulk_labels"})
	must(t, err)
	defer src.Close()
	p, err := Preprocess(src, PreprocessConfig{})
	must(t, err)
	dir := t.TempDir()
	out := filepath.Join(dir, "generated.h5ad")
	writePreprocessed(t, out, p, 128, 4)

	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("folder holds %d entries after Close, want only generated.h5ad", len(entries))
	}

	// Read back with this package.
	d, err := Open(out, OpenOptions{LabelKey: "cell_type"})
	must(t, err)
	defer d.Close()
	if !equalStrings(d.GeneNames(), p.Genes) || !equalStrings(d.Barcodes(), p.Barcodes) {
		t.Fatal("gene or cell names changed")
	}
	for i, l := range d.Labels() {
		if l != p.Classes[p.Labels[i]] {
			t.Fatalf("cell %d: label %q, want %q", i, l, p.Classes[p.Labels[i]])
		}
	}
	m, err := d.ReadCSR()
	must(t, err)
	if csrSHA(m) != csrSHA(p.X) {
		t.Fatal("matrix changed in the round trip")
	}

	// And with anndata (0.8): X, obs labels, var names.
	ref := filepath.Join(dir, "ref.npz")
	must(t, writeRefNPZ(ref, p))
	res := runPython(t, `
import sys, numpy as np, anndata as ad, scipy.sparse as sp
a = ad.read_h5ad(sys.argv[1])
r = np.load(sys.argv[2])
assert sp.issparse(a.X) and a.X.format == "csr" and a.X.dtype == np.float32, (type(a.X), a.X.dtype)
assert a.shape == tuple(r["shape"]), (a.shape, r["shape"])
X = sp.csr_matrix((r["data"], r["indices"], r["indptr"]), shape=tuple(r["shape"]))
assert (a.X != X).nnz == 0
assert list(a.var_names) == list(r["genes"])
assert list(a.obs_names) == list(r["barcodes"])
assert str(a.obs["cell_type"].dtype) == "category"
assert list(a.obs["cell_type"].cat.categories) == list(r["classes"])
assert list(a.obs["cell_type"].astype(str)) == [r["classes"][i] for i in r["labels"]]
print("anndata ok", a.shape)
`, out, ref)
	if !strings.Contains(res, "anndata ok") {
		t.Fatal(res)
	}
}

// writeRefNPZ stores p for the Python check (with this package's npz).
func writeRefNPZ(path string, p *Preprocessed) error {
	return writeNPZ(path, map[string]any{
		"shape": []int64{int64(p.X.Rows), int64(p.X.Cols)}, "indptr": p.X.Indptr, "indices": p.X.Indices, "data": p.X.Data,
		"genes": p.Genes, "barcodes": p.Barcodes, "classes": p.Classes, "labels": p.Labels,
	})
}

func TestH5ADWriterNoLabelsAndErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.h5ad")
	m := &CSR{Rows: 2, Cols: 3, Indptr: []int64{0, 1, 3}, Indices: []int32{2, 0, 1}, Data: []float32{1, 2, 3}}
	w, err := CreateH5AD(path, H5ADWriterOptions{Genes: []string{"a", "b", "c"}})
	must(t, err)
	must(t, w.AppendRows(m, nil, nil))
	must(t, w.AppendRows(&CSR{Rows: 0, Cols: 3, Indptr: []int64{0}}, nil, nil))
	must(t, w.Close())
	res := runPython(t, `
import sys, anndata as ad
a = ad.read_h5ad(sys.argv[1])
assert a.shape == (2, 3) and list(a.obs_names) == ["0", "1"] and a.obs.shape[1] == 0, a
assert a.X.toarray().tolist() == [[0, 0, 1], [2, 3, 0]]
print("ok")
`, path)
	if !strings.Contains(res, "ok") {
		t.Fatal(res)
	}

	// Errors: wrong width, bad structure, labels without classes, label
	// range; after an error the writer refuses rows and Close discards.
	w, err = CreateH5AD(filepath.Join(dir, "bad.h5ad"), H5ADWriterOptions{Genes: []string{"a", "b", "c"}, Classes: []string{"T"}})
	must(t, err)
	wantErr(t, w.AppendRows(m, []int64{0, 1}, nil), nil, "bad.h5ad", "row 1: label 1 outside [0, 1)")
	wantErr(t, w.AppendRows(m, []int64{0, 0}, nil), nil, "label 1 outside")
	if err := w.Close(); err == nil {
		t.Fatal("Close after a failed AppendRows succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.h5ad")); !os.IsNotExist(err) {
		t.Fatal("failed writer left a file at the destination")
	}
	w, err = CreateH5AD(filepath.Join(dir, "bad2.h5ad"), H5ADWriterOptions{Genes: []string{"a", "b"}})
	must(t, err)
	wantErr(t, w.AppendRows(m, nil, nil), nil, "chunk has 3 columns, the file has 2 genes")
	must(t, w.Abort())
	w, err = CreateH5AD(filepath.Join(dir, "bad3.h5ad"), H5ADWriterOptions{Genes: []string{"a", "b", "c"}})
	must(t, err)
	bad := m.Clone()
	bad.Indices[1], bad.Indices[2] = 1, 0
	wantErr(t, w.AppendRows(bad, nil, nil), ErrFormat, "rows 0..2", "not sorted")
	must(t, w.Abort())
	_, err = CreateH5AD(filepath.Join(dir, "bad4.h5ad"), H5ADWriterOptions{})
	wantErr(t, err, nil, "no gene names")
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("left-over files: %v", names)
	}
}
