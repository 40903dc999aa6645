package lzf

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestDecompressHandmade(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want []byte
		err  error
	}{
		{"empty", nil, []byte{}, nil},
		{"literal", []byte{2, 'a', 'b', 'c'}, []byte("abc"), nil},
		// "ab" then a back-reference of length 1+2 at distance 2: "ababa"
		{"overlap", []byte{1, 'a', 'b', 1 << 5, 1}, []byte("ababa"), nil},
		// run of one byte: literal "x", reference length 7+3+2 = 12 at distance 1
		{"long run", []byte{0, 'x', 7 << 5, 3, 0}, bytes.Repeat([]byte("x"), 13), nil},
		{"literal cut", []byte{5, 'a'}, nil, ErrCorrupt},
		{"ref before start", []byte{0, 'a', 1 << 5, 5}, nil, ErrCorrupt},
		{"ref cut", []byte{0, 'a', 1 << 5}, nil, ErrCorrupt},
		{"long ref cut", []byte{0, 'a', 7 << 5}, nil, ErrCorrupt},
		{"long ref cut 2", []byte{0, 'a', 7 << 5, 1}, nil, ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := make([]byte, 64)
			n, err := Decompress(dst, c.in)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst[:n], c.want) {
				t.Fatalf("got %q, want %q", dst[:n], c.want)
			}
		})
	}
}

func TestShortBuffer(t *testing.T) {
	src := bytes.Repeat([]byte("hello world "), 100)
	comp := compress(src)
	for _, size := range []int{0, 1, 11, len(src) - 1} {
		if _, err := Decompress(make([]byte, size), comp); !errors.Is(err, ErrShortBuffer) {
			t.Fatalf("size %d: err = %v, want ErrShortBuffer", size, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		n := r.IntN(20000)
		src := make([]byte, n)
		alphabet := 1 + r.IntN(255)
		for i := range src {
			if i > 8 && r.IntN(4) == 0 {
				src[i] = src[i-1-r.IntN(8)]
			} else {
				src[i] = byte(r.IntN(alphabet))
			}
		}
		comp := compress(src)
		dst := make([]byte, n)
		m, err := Decompress(dst, comp)
		if err != nil || m != n || !bytes.Equal(dst, src) {
			t.Fatalf("trial %d (n=%d): m=%d err=%v equal=%v", trial, n, m, err, bytes.Equal(dst[:m], src))
		}
	}
}

// TestH5pyChunks decodes real LZF chunks that h5py wrote (the anndata 0.7
// fixtures; extracted into the fuzz corpus by read_direct_chunk) to
// exactly their chunk size.
func TestH5pyChunks(t *testing.T) {
	files, err := filepath.Glob("testdata/fuzz/FuzzDecompress/fixture_*")
	if err != nil || len(files) < 4 {
		t.Fatalf("fixture chunks missing: %v %v", files, err)
	}
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasPrefix(lines[2], "uint16(") {
			t.Fatalf("%s: unexpected corpus format", name)
		}
		in, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		size, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(lines[2], "uint16("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		dst := make([]byte, size)
		n, err := Decompress(dst, []byte(in))
		if err != nil || n != size {
			t.Fatalf("%s: decoded %d of %d bytes: %v", name, n, size, err)
		}
		// One byte less of room must be reported, not overrun.
		if _, err := Decompress(dst[:size-1], []byte(in)); !errors.Is(err, ErrShortBuffer) {
			t.Fatalf("%s: short buffer: %v", name, err)
		}
	}
}
