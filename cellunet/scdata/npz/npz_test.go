package npz

import (
	"bytes"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// sameArrays are the arrays of testdata/numpy_same.npz, in its key order.
func sameArrays() []Named {
	cg := make([]float32, 3*128)
	for i := range cg {
		cg[i] = float32(i) / 7
	}
	return []Named{
		{"cell_gen", &Array{Shape: []int{3, 128}, Data: cg}},
		{"labels", &Array{Shape: []int{3}, Data: []int64{2, 0, 1}}},
		{"classes", &Array{Shape: []int{3}, Data: []string{"B cell", "CD14+ Monocyte", "Ä β 😀"}}},
		{"f8", &Array{Shape: []int{5}, Data: []float64{-1, -0.5, 0, 0.5, 1}}},
		{"i4", &Array{Shape: []int{2, 3}, Data: []int32{0, 1, 2, 3, 4, 5}}},
		{"empty", &Array{Shape: []int{0, 128}, Data: []float32{}}},
		{"scalar", &Array{Shape: []int{}, Data: []float64{2.5}}},
	}
}

func TestReadNumpyFiles(t *testing.T) {
	m, err := Read("testdata/numpy_same.npz")
	must(t, err)
	for _, want := range sameArrays() {
		got, ok := m[want.Key]
		if !ok {
			t.Fatalf("missing %s", want.Key)
		}
		if !reflect.DeepEqual(got.Shape, want.Array.Shape) {
			t.Fatalf("%s: shape %v, want %v", want.Key, got.Shape, want.Array.Shape)
		}
		if want.Key == "cell_gen" {
			g, _ := got.Float32s()
			w := want.Array.Data.([]float32)
			for i := range w {
				// numpy divides in float32 after an int64 -> float64 step; allow 1 ulp
				if math.Abs(float64(g[i]-w[i])) > 1e-6*math.Abs(float64(w[i])) {
					t.Fatalf("cell_gen[%d] = %v, want %v", i, g[i], w[i])
				}
			}
			continue
		}
		if !reflect.DeepEqual(got.Data, want.Array.Data) {
			t.Fatalf("%s: %v, want %v", want.Key, got.Data, want.Array.Data)
		}
	}
	mixed, err := Read("testdata/numpy_mixed.npz")
	must(t, err)
	if f := mixed["fortran"]; !reflect.DeepEqual(f.Data, []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}) || !reflect.DeepEqual(f.Shape, []int{3, 4}) {
		t.Fatalf("fortran array read as %v %v", f.Shape, f.Data)
	}
	if b := mixed["big"]; !reflect.DeepEqual(b.Data, []float64{0, 1, 2, 3}) {
		t.Fatalf("big-endian float64 %v", b.Data)
	}
	if b := mixed["big_i4"]; !reflect.DeepEqual(b.Data, []int32{0, 1, 2, 3}) {
		t.Fatalf("big-endian int32 %v", b.Data)
	}
	if z := mixed["zero_d"]; len(z.Shape) != 0 || !reflect.DeepEqual(z.Data, []int64{7}) {
		t.Fatalf("0-d %v %v", z.Shape, z.Data)
	}
	if s := mixed["longstr"]; !reflect.DeepEqual(s.Data, []string{strings.Repeat("x", 300), ""}) {
		t.Fatal("long strings differ")
	}
	l, err := ReadLatents("testdata/numpy_compressed.npz")
	must(t, err)
	if l.N != 50 || l.Dim != 128 || l.Data[6399] != 0.25 || len(l.Labels) != 50 || l.Labels[49] != 49 || l.Classes != nil {
		t.Fatalf("compressed latents %d x %d", l.N, l.Dim)
	}
}

// TestMatchesNumpyBytes: the Go writer reproduces np.savez byte for byte.
func TestMatchesNumpyBytes(t *testing.T) {
	want, err := os.ReadFile("testdata/numpy_same.npz")
	must(t, err)
	// Use numpy's own float32 values for cell_gen.
	m, err := Read("testdata/numpy_same.npz")
	must(t, err)
	arrays := sameArrays()
	arrays[0].Array = m["cell_gen"]
	path := filepath.Join(t.TempDir(), "go.npz")
	must(t, Write(path, arrays...))
	got, err := os.ReadFile(path)
	must(t, err)
	if !bytes.Equal(got, want) {
		n := 0
		for n < min(len(got), len(want)) && got[n] == want[n] {
			n++
		}
		t.Fatalf("Go npz differs from np.savez at byte %d (sizes %d, %d)", n, len(got), len(want))
	}
}

func TestHeaderEncode(t *testing.T) {
	// Headers numpy 1.24 writes (checked against format.write_array).
	cases := []struct {
		h    Header
		want string
	}{
		{Header{Descr: "<f4", Shape: []int{5, 128}}, "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 128), }"},
		{Header{Descr: "<i8", Shape: []int{}}, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }"},
		{Header{Descr: "<U3", Shape: []int{7}, FortranOrder: true}, "{'descr': '<U3', 'fortran_order': True, 'shape': (7,), }"},
	}
	for _, c := range cases {
		b := c.h.Encode()
		if len(b)%64 != 0 || b[len(b)-1] != '\n' || string(b[:8]) != "\x93NUMPY\x01\x00" {
			t.Fatalf("%v: bad framing %q", c.h, b)
		}
		dict := string(b[10 : len(b)-1])
		if strings.TrimRight(dict, " ") != strings.TrimRight(c.want, " ") {
			t.Fatalf("dict %q, want %q", dict, c.want)
		}
		h, n, err := ReadHeader(bytes.NewReader(b))
		must(t, err)
		if n != len(b) || h.Descr != c.h.Descr || !reflect.DeepEqual(h.Shape, c.h.Shape) {
			t.Fatalf("reparse %+v (%d bytes)", h, n)
		}
	}
	// A header above 64 KiB switches to version 2.0 (as numpy does).
	big := Header{Descr: strings.Repeat("x", 70000), Shape: []int{1}}
	b := big.Encode()
	if b[6] != 2 || len(b)%64 != 0 {
		t.Fatalf("70 kB header: version %d, length %d", b[6], len(b))
	}
	h, n, err := ReadHeader(bytes.NewReader(b))
	must(t, err)
	if n != len(b) || h.Descr != big.Descr {
		t.Fatal("version 2.0 header does not read back")
	}
}

func TestParseHeaderDict(t *testing.T) {
	good := map[string]Header{
		"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 128), }":   {"<f4", false, []int{3, 128}},
		"{'shape': (3,), 'fortran_order': True, 'descr': '>i8'}":          {">i8", true, []int{3}},
		"{\"descr\": \"<U7\", \"fortran_order\": False, \"shape\": ()}  ": {"<U7", false, []int{}},
		"{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 3L), }":   {"<f8", false, []int{2, 3}},
	}
	for s, want := range good {
		h, err := ParseHeaderDict(s)
		must(t, err)
		if !reflect.DeepEqual(h, want) {
			t.Fatalf("%q: %+v, want %+v", s, h, want)
		}
	}
	bad := map[string]error{
		"":                 ErrFormat,
		"{'descr': '<f4'}": ErrFormat,
		"{'descr': '<f4', 'fortran_order': False, 'shape': (3), }":                   ErrFormat,
		"{'descr': '<f4', 'fortran_order': 0, 'shape': (3,), }":                      ErrFormat,
		"{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }":                 ErrFormat,
		"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}":            ErrFormat,
		"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,)}":           ErrUnsupported,
		"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,)}":    ErrFormat,
		"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}": ErrFormat,
	}
	for s, want := range bad {
		if _, err := ParseHeaderDict(s); !errors.Is(err, want) {
			t.Fatalf("%q: err %v, want %v", s, err, want)
		}
	}
}

func TestBadArrays(t *testing.T) {
	good := (&Array{Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}})
	var buf bytes.Buffer
	buf.Write(good.header().Encode())
	must(t, good.writeData(&buf))
	b := buf.Bytes()
	if _, err := ReadArray(bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		data  []byte
		total int64
		want  error
	}{
		"short data":     {b[:len(b)-1], int64(len(b) - 1), ErrFormat},
		"size mismatch":  {b, int64(len(b) + 4), ErrFormat},
		"header only":    {b[:20], 20, ErrFormat},
		"no magic":       {append([]byte("XNUMPY"), b[6:]...), int64(len(b)), ErrFormat},
		"version 9":      {append([]byte("\x93NUMPY\x09\x00"), b[8:]...), int64(len(b)), ErrUnsupported},
		"huge shape":     {append((Header{Descr: "<f4", Shape: []int{1 << 40, 1 << 20}}).Encode(), 0, 0, 0, 0), 4 + 128, ErrFormat},
		"unknown dtype":  {append((Header{Descr: "<c8", Shape: []int{1}}).Encode(), make([]byte, 8)...), 64 + 8, ErrUnsupported},
		"bad code point": {append((Header{Descr: "<U1", Shape: []int{1}}).Encode(), 0xff, 0xff, 0xff, 0x7f), 64 + 4, ErrFormat},
	}
	for name, c := range cases {
		if _, err := ReadArray(bytes.NewReader(c.data), c.total); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", name, err, c.want)
		}
	}
}

func TestLatentsAndErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "open_problem.npz")
	lat := []float32{0.1, -0.2, 0.3, 0.4, 0.5, -0.6}
	must(t, WriteLatents(path, lat, 3, 2, []int64{1, 0, 1}, []string{"a", "b"}))
	l, err := ReadLatents(path)
	must(t, err)
	if l.N != 3 || l.Dim != 2 || !reflect.DeepEqual(l.Data, lat) || !reflect.DeepEqual(l.Labels, []int64{1, 0, 1}) || !reflect.DeepEqual(l.Classes, []string{"a", "b"}) {
		t.Fatalf("latents %+v", l)
	}
	// Only cell_gen, as the reference writes.
	must(t, WriteLatents(path, lat, 3, 2, nil, nil))
	m, err := Read(path)
	must(t, err)
	if len(m) != 1 || m[KeyCellGen] == nil {
		t.Fatalf("keys %v", m)
	}
	if err := WriteLatents(path, lat, 4, 2, nil, nil); err == nil {
		t.Fatal("wrong n accepted")
	}
	if err := WriteLatents(path, lat, 3, 2, []int64{0, 2, 0}, []string{"a", "b"}); err == nil || !strings.Contains(err.Error(), "label 2 of row 1") {
		t.Fatalf("label range: %v", err)
	}
	if err := Write(path, Named{"x", &Array{Shape: []int{2}, Data: []float32{1}}}); err == nil {
		t.Fatal("shape mismatch accepted")
	}
	if err := Write(path, Named{"a/b", &Array{Shape: []int{1}, Data: []float32{1}}}); err == nil {
		t.Fatal("slash in key accepted")
	}
	// No temporary files left behind by failed or successful writes.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("%d files in the folder", len(entries))
	}
	// Truncated archives and non-zip files.
	full, err := os.ReadFile(path)
	must(t, err)
	for _, n := range []int{0, 10, len(full) / 2, len(full) - 1} {
		cut := filepath.Join(dir, "cut.npz")
		must(t, os.WriteFile(cut, full[:n], 0o644))
		if _, err := ReadLatents(cut); err == nil || !strings.Contains(err.Error(), "cut.npz") {
			t.Fatalf("truncated at %d: %v", n, err)
		}
	}
	other := filepath.Join(dir, "other.npz")
	must(t, Write(other, Named{"x", &Array{Shape: []int{1}, Data: []float32{1}}}))
	_, err = ReadLatents(other)
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "cell_gen") {
		t.Fatalf("missing key: %v", err)
	}
}

func TestZip64Headers(t *testing.T) {
	e := zipEntry{name: "cell_gen.npy", size: 3 << 30, offset: 5 << 30, crc: 1}
	lh := localHeader(e)
	if lh[4] != 45 || !bytes.Equal(lh[18:26], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
		t.Fatalf("local header for 3 GiB: %x", lh[:30])
	}
	cd := centralHeader(e)
	extra := cd[46+len(e.name):]
	if cd[6] != 45 || len(extra) != 4+24 || extra[0] != 1 || extra[2] != 24 {
		t.Fatalf("central header zip64 extra %x", extra)
	}
	small := centralHeader(zipEntry{name: "a.npy", size: 10})
	if small[6] != 20 || len(small) != 46+5 {
		t.Fatalf("small central header %x", small)
	}
}

// TestPythonInterop: numpy reads what Go writes (np.load) and Go reads what
// numpy writes, via /usr/bin/python3.
func TestPythonInterop(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Fatalf("/usr/bin/python3 with numpy is required: %v", err)
	}
	dir := t.TempDir()
	goFile := filepath.Join(dir, "go.npz")
	n, dim := 1000, 128
	lat := make([]float32, n*dim)
	for i := range lat {
		lat[i] = float32(math.Sin(float64(i)))
	}
	labels := make([]int64, n)
	for i := range labels {
		labels[i] = int64(i % 3)
	}
	must(t, WriteLatents(goFile, lat, n, dim, labels, []string{"B", "T cell", "Ä"}))
	pyFile := filepath.Join(dir, "py.npz")
	out, err := exec.Command("/usr/bin/python3", "-c", `
import sys, numpy as np
z = np.load(sys.argv[1])
assert z.files == ["cell_gen", "labels", "classes"], z.files
c = z["cell_gen"]
assert c.dtype == np.float32 and c.shape == (1000, 128), (c.dtype, c.shape)
assert np.array_equal(c.ravel(), np.sin(np.arange(128000, dtype=np.float64)).astype(np.float32))
assert z["labels"].dtype == np.int64 and z["labels"].tolist() == [i % 3 for i in range(1000)]
assert z["classes"].dtype == np.dtype("<U6") and z["classes"].tolist() == ["B", "T cell", "\u00c4"]
np.savez(sys.argv[2], cell_gen=c * 2, labels=z["labels"][::-1].copy(), classes=z["classes"][::-1])
print("numpy ok")
`, goFile, pyFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "numpy ok") {
		t.Fatalf("python: %v\n%s", err, out)
	}
	l, err := ReadLatents(pyFile)
	must(t, err)
	if l.N != n || l.Dim != dim || l.Data[12345] != lat[12345]*2 || l.Labels[0] != labels[n-1] || !reflect.DeepEqual(l.Classes, []string{"Ä", "T cell", "B"}) {
		t.Fatalf("read back %d x %d, classes %v", l.N, l.Dim, l.Classes)
	}
}
