package hdf5

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/internal/fixtures"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

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

func TestWriteReadNumeric(t *testing.T) {
	path := filepath.Join(t.TempDir(), "num.h5")
	f, err := Create(path)
	must(t, err)
	vals := []float64{-3, -1, 0, 1, 2, 3, 100, 127}
	for _, typ := range []Type{Int8, Int16, Int32, Int64, Uint8, Uint16, Uint32, Uint64, Float32, Float64} {
		d, err := f.CreateDataset("m_"+typ.String(), typ, []int64{4, 2}, &DatasetOptions{Gzip: 3})
		must(t, err)
		v := append([]float64(nil), vals...)
		if typ >= Uint8 && typ <= Uint64 {
			for i := range v {
				v[i] = math.Abs(v[i])
			}
		}
		must(t, Write(d, v))
		must(t, d.Close())
	}
	must(t, f.Close())

	f, err = Open(path)
	must(t, err)
	defer func() { must(t, f.Close()) }()
	for _, typ := range []Type{Int8, Int16, Int32, Int64, Uint8, Uint16, Uint32, Uint64, Float32, Float64} {
		d, err := f.OpenDataset("m_" + typ.String())
		must(t, err)
		if d.Rank() != 2 || d.Len() != 4 || d.NumElements() != 8 {
			t.Fatalf("%s: shape %v", typ, d.Shape())
		}
		f32, err := ReadAll[float32](d)
		must(t, err)
		i64, err := ReadAll[int64](d)
		must(t, err)
		for i, v := range vals {
			if typ >= Uint8 && typ <= Uint64 {
				v = math.Abs(v)
			}
			if float64(f32[i]) != v || float64(i64[i]) != v {
				t.Fatalf("%s[%d]: got %v / %v, want %v", typ, i, f32[i], i64[i], v)
			}
		}
		rows, err := ReadRange[int32](d, 1, 2, nil)
		must(t, err)
		if len(rows) != 4 || rows[0] != int32(math.Abs(vals[2])) {
			t.Fatalf("%s: rows 1..2 = %v", typ, rows)
		}
		_, err = ReadRange[int32](d, 3, 2, nil)
		wantErr(t, err, ErrShape, "num.h5", "/m_"+typ.String(), "range [3, 5)")
		_, err = d.ReadStrings()
		wantErr(t, err, ErrType, "does not hold strings")
		must(t, d.Close())
	}
}

func TestExtendableAndStrings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ext.h5")
	f, err := Create(path)
	must(t, err)
	d, err := f.CreateDataset("v", Float32, []int64{0}, &DatasetOptions{Extendable: true, Chunk: []int64{3}, Gzip: 1})
	must(t, err)
	for i := 0; i < 5; i++ {
		must(t, Append(d, []float32{float32(i), float32(i) + 0.5}))
	}
	must(t, Append(d, []float32{}))
	must(t, d.Close())
	s, err := f.CreateDataset("names", String, []int64{0}, &DatasetOptions{Extendable: true})
	must(t, err)
	must(t, s.AppendStrings([]string{"a", "", "ñé"}))
	must(t, s.AppendStrings([]string{"longer string with spaces"}))
	must(t, s.Close())
	g, err := f.CreateGroup("grp")
	must(t, err)
	fixed, err := g.CreateDataset("fixed", String, []int64{2}, nil)
	must(t, err)
	must(t, fixed.WriteStrings([]string{"x", "y"}))
	wantErr(t, fixed.WriteStrings([]string{"x"}), ErrShape, "/grp/fixed", "got 1 strings")
	must(t, fixed.Close())
	must(t, g.Close())
	must(t, f.Close())

	f, err = Open(path)
	must(t, err)
	defer func() { must(t, f.Close()) }()
	d, err = f.OpenDataset("v")
	must(t, err)
	all, err := ReadAll[float64](d)
	must(t, err)
	if len(all) != 10 || all[9] != 4.5 {
		t.Fatalf("appended data %v", all)
	}
	part, err := ReadRange(d, 4, 3, make([]float64, 0, 16))
	must(t, err)
	if len(part) != 3 || part[0] != 2 || part[2] != 3 {
		t.Fatalf("range %v", part)
	}
	must(t, d.Close())
	s, err = f.OpenDataset("names")
	must(t, err)
	got, err := s.ReadStrings()
	must(t, err)
	if strings.Join(got, "|") != "a||ñé|longer string with spaces" {
		t.Fatalf("strings %q", got)
	}
	got, err = s.ReadStringsRange(1, 2)
	must(t, err)
	if strings.Join(got, "|") != "|ñé" {
		t.Fatalf("string range %q", got)
	}
	_, err = ReadAll[float32](s)
	wantErr(t, err, ErrType, "/names", "cannot be read as float32")
	must(t, s.Close())
	kids, err := f.Children()
	must(t, err)
	if strings.Join(kids, ",") != "grp,names,v" {
		t.Fatalf("children %v", kids)
	}
}

func TestAttributes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "attr.h5")
	f, err := Create(path)
	must(t, err)
	must(t, f.WriteAttrString("encoding-type", "anndata"))
	must(t, f.WriteAttrString("encoding-type", "anndata2")) // replaces
	g, err := f.CreateGroup("obs")
	must(t, err)
	must(t, g.WriteAttrStrings("column-order", []string{"a", "celltype"}))
	must(t, g.WriteAttrStrings("empty", nil))
	must(t, g.WriteAttrInt64s("shape", []int64{3, 4}))
	must(t, g.WriteAttrFloat64s("none", []float64{}))
	must(t, g.WriteAttrBool("ordered", true))
	must(t, g.Close())
	must(t, f.Close())

	f, err = Open(path)
	must(t, err)
	defer func() { must(t, f.Close()) }()
	v, err := f.ReadAttrString("encoding-type")
	must(t, err)
	if v != "anndata2" {
		t.Fatalf("root attribute %q", v)
	}
	g, err = f.OpenGroup("obs")
	must(t, err)
	defer func() { must(t, g.Close()) }()
	co, err := g.ReadAttrStrings("column-order")
	must(t, err)
	if strings.Join(co, ",") != "a,celltype" {
		t.Fatalf("column-order %q", co)
	}
	for _, name := range []string{"empty", "none"} {
		e, err := g.ReadAttrStrings(name)
		must(t, err)
		if len(e) != 0 {
			t.Fatalf("%s: %q", name, e)
		}
	}
	sh, err := g.ReadAttrInt64s("shape")
	must(t, err)
	if len(sh) != 2 || sh[0] != 3 || sh[1] != 4 {
		t.Fatalf("shape %v", sh)
	}
	info, err := g.Attr("ordered")
	must(t, err)
	if info.Class != ClassEnum || info.NumElements() != 1 {
		t.Fatalf("ordered: %+v", info)
	}
	_, err = g.ReadAttrString("column-order")
	wantErr(t, err, ErrShape, "attr.h5", "/obs", "holds 2 strings, want 1")
	_, err = g.ReadAttrInt64s("column-order")
	wantErr(t, err, ErrType, "not int64")
	_, err = g.ReadAttrString("missing")
	wantErr(t, err, ErrNotFound, "/obs", "no attribute \"missing\"")
	_, err = g.ReadAttrRef("shape")
	wantErr(t, err, ErrType, "not an object reference")
	ok, err := g.HasAttr("shape")
	must(t, err)
	if !ok {
		t.Fatal("HasAttr(shape) = false")
	}
}

func TestFixtureLayouts(t *testing.T) {
	f, err := Open(fixtures.Path(t, "format_fixtures/anndata_0.7_archives/v0.7.8/adata.h5ad"))
	must(t, err)
	defer func() { must(t, f.Close()) }()
	d, err := f.OpenDataset("obs/obs_cat")
	must(t, err)
	ref, err := d.ReadAttrRef("categories")
	must(t, err)
	if ref != "/obs/__categories/obs_cat" {
		t.Fatalf("reference to %q", ref)
	}
	must(t, d.Close())
	s, err := f.OpenDataset("uns/nested/scalar_str")
	must(t, err)
	v, err := s.ReadStrings()
	must(t, err)
	if len(v) != 1 || s.Rank() != 0 {
		t.Fatalf("scalar string %q rank %d", v, s.Rank())
	}
	must(t, s.Close())
	k, err := f.Kind("raw/varm/sparse/indptr")
	must(t, err)
	if k != KindDataset {
		t.Fatalf("kind %v", k)
	}
	for _, p := range []string{"nothing", "raw/nothing/deeper", "X/data/below"} {
		if k, err := f.Kind(p); err != nil || k != KindNone {
			t.Fatalf("Kind(%q) = %v, %v", p, k, err)
		}
	}
	_, err = f.OpenGroup("X/data")
	wantErr(t, err, ErrType, "/X/data", "is a dataset, not a group")
	_, err = f.OpenDataset("raw/nothing/deeper")
	wantErr(t, err, ErrNotFound, "adata.h5ad", "/raw/nothing/deeper", "no such dataset")

	// Fixed-length strings (10x, PyTables).
	x, err := Open(fixtures.Path(t, "format_fixtures/10x/1.2.0/filtered_gene_bc_matrices_h5.h5"))
	must(t, err)
	defer func() { must(t, x.Close()) }()
	b, err := x.OpenDataset("hg19_chr21/barcodes")
	must(t, err)
	bc, err := b.ReadStrings()
	must(t, err)
	if b.IsVarString() || len(bc) != 12 || bc[0] != "AACACGTGTACGCTGC-1" {
		t.Fatalf("barcodes %q", bc)
	}
	must(t, b.Close())
	lib, err := x.ReadAttrStrings("library_ids")
	must(t, err)
	if len(lib) != 1 || lib[0] != "test" {
		t.Fatalf("library_ids %q", lib)
	}
}

// TestLZFAgainstH5py compares every LZF-compressed numeric dataset of the
// anndata 0.7 archives with what h5py (with its own LZF filter) reads.
func TestLZFAgainstH5py(t *testing.T) {
	for _, rel := range []string{"format_fixtures/anndata_0.7_archives/v0.7.0/adata.h5ad", "format_fixtures/anndata_0.7_archives/v0.7.8/adata.h5ad"} {
		path := fixtures.Path(t, rel)
		if _, err := os.Stat("/usr/bin/python3"); err != nil {
			t.Fatalf("/usr/bin/python3 with h5py is required: %v", err)
		}
		out, err := exec.Command("/usr/bin/python3", "-c", `
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
def visit(name, o):
    if isinstance(o, h5py.Dataset) and o.compression == "lzf" and o.dtype.kind in "iuf":
        v = o[()].astype(np.float64).ravel()
        print(name, v.size, repr(float(v.sum())), repr(float((v * np.arange(1, v.size + 1)).sum())))
f.visititems(visit)
`, path).CombinedOutput()
		if err != nil {
			t.Fatalf("python: %v\n%s", err, out)
		}
		f, err := Open(path)
		must(t, err)
		n := 0
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var name string
			var size int
			var sum, wsum float64
			if _, err := fmt.Sscan(line, &name, &size, &sum, &wsum); err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			d, err := f.OpenDataset(name)
			must(t, err)
			v, err := ReadAll[float64](d)
			must(t, err)
			must(t, d.Close())
			s, ws := 0.0, 0.0
			for i, x := range v {
				s += x
				ws += x * float64(i+1)
			}
			if len(v) != size || math.Abs(s-sum) > 1e-9*math.Max(1, math.Abs(sum)) || math.Abs(ws-wsum) > 1e-9*math.Max(1, math.Abs(wsum)) {
				t.Fatalf("%s %s: %d values sum %v/%v, h5py %d %v/%v", rel, name, len(v), s, ws, size, sum, wsum)
			}
			n++
		}
		must(t, f.Close())
		if n < 10 {
			t.Fatalf("%s: only %d LZF datasets checked", rel, n)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(filepath.Join(dir, "missing.h5"))
	wantErr(t, err, fs.ErrNotExist, "missing.h5")
	txt := filepath.Join(dir, "x.txt")
	must(t, os.WriteFile(txt, []byte("plain text, long enough to hold a signature"), 0o644))
	_, err = Open(txt)
	wantErr(t, err, ErrNotHDF5, "x.txt")
	// A signature followed by garbage: libhdf5's error becomes a Go error.
	bad := filepath.Join(dir, "garbage.h5")
	must(t, os.WriteFile(bad, append(append([]byte{}, hdf5Signature...), make([]byte, 100)...), 0o644))
	_, err = Open(bad)
	wantErr(t, err, ErrLibrary, "garbage.h5", "open")

	// Close order and double close.
	path := filepath.Join(dir, "c.h5")
	f, err := Create(path)
	must(t, err)
	d, err := f.CreateDataset("d", Int64, []int64{2}, nil)
	must(t, err)
	wantErr(t, f.Close(), nil, "still open")
	must(t, d.Close())
	wantErr(t, d.Close(), ErrClosed, "/d")
	must(t, f.Close())
	wantErr(t, f.Close(), ErrClosed, "c.h5")
	_, err = f.OpenDataset("d")
	wantErr(t, err, ErrClosed)
}
