package safetensors

import (
	"bytes"
	"errors"
	"testing"
)

func entries() []Entry {
	return []Entry{
		{Name: "w", DType: "F32", Shape: []int64{2, 2}, Data: func() ([]byte, error) { return make([]byte, 16), nil }},
		{Name: "n", DType: "I64", Shape: nil, Data: func() ([]byte, error) { return []byte{7, 0, 0, 0, 0, 0, 0, 0}, nil }},
	}
}

func TestWriteReadHeader(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, entries(), map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if (h.DataStart-8)%8 != 0 {
		t.Errorf("header not padded to 8 bytes: %d", h.DataStart-8)
	}
	w, ok := h.Lookup("w")
	if !ok || w.End-w.Begin != 16 || h.Metadata["k"] != "v" {
		t.Errorf("header %+v", h)
	}
}

func TestMalformed(t *testing.T) {
	var good bytes.Buffer
	if err := Write(&good, entries(), nil); err != nil {
		t.Fatal(err)
	}
	b := good.Bytes()
	cases := map[string][]byte{
		"short":         b[:5],
		"huge header":   append([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, b[8:]...),
		"truncated":     b[:len(b)-3],
		"trailing data": append(append([]byte{}, b...), 1, 2, 3),
		"not json":      append(append([]byte{}, b[:8]...), bytes.Repeat([]byte("x"), len(b)-8)...),
	}
	for name, data := range cases {
		if _, err := ReadHeader(bytes.NewReader(data), int64(len(data))); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		}
	}
}

// FuzzReadHeader: no input panics or allocates beyond what the file holds.
func FuzzReadHeader(f *testing.F) {
	var good bytes.Buffer
	if err := Write(&good, entries(), map[string]string{"a": "b"}); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadHeader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for _, ti := range h.Tensors {
			if ti.End > int64(len(data))-h.DataStart || ti.Begin < 0 {
				t.Fatalf("accepted offsets outside the file: %+v", ti)
			}
		}
	})
}
