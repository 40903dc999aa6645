package npz

import (
	"bytes"
	"testing"
)

// FuzzParseHeaderDict: arbitrary header text must not panic, and what
// parses must re-encode to a header that parses to the same value.
func FuzzParseHeaderDict(f *testing.F) {
	f.Add("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 128), }")
	f.Add("{'shape': (3,), 'fortran_order': True, 'descr': '>i8'}")
	f.Add("{\"descr\": \"<U7\", \"fortran_order\": False, \"shape\": ()}")
	f.Add("{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 3L), }")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHeaderDict(s)
		if err != nil {
			return
		}
		for _, v := range h.Shape {
			if v < 0 {
				t.Fatalf("negative dimension accepted: %v", h.Shape)
			}
		}
		if len(h.Descr) > 1000 || bytes.ContainsAny([]byte(h.Descr), "'\"") {
			return
		}
		h2, _, err := ReadHeader(bytes.NewReader(h.Encode()))
		if err != nil || h2.Descr != h.Descr || h2.FortranOrder != h.FortranOrder || len(h2.Shape) != len(h.Shape) {
			t.Fatalf("re-encoded header %+v reads back as %+v, %v", h, h2, err)
		}
	})
}

// FuzzReadArray: arbitrary NPY bytes must not panic or allocate beyond the
// member size; seeds are the members of the numpy-written fixtures.
func FuzzReadArray(f *testing.F) {
	for _, name := range []string{"testdata/numpy_same.npz", "testdata/numpy_mixed.npz"} {
		m, err := Read(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, a := range m {
			var b bytes.Buffer
			b.Write(a.header().Encode())
			if err := a.writeData(&b); err == nil {
				f.Add(b.Bytes())
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ReadArray(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if err := a.check(); err != nil {
			t.Fatalf("accepted an inconsistent array: %v", err)
		}
	})
}
