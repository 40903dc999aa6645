package lzf

import (
	"bytes"
	"testing"
)

// FuzzDecompress feeds arbitrary bytes to Decompress (it must not panic or
// write past the buffer) and checks that streams from the test encoder
// round-trip.
func FuzzDecompress(f *testing.F) {
	f.Add([]byte{2, 'a', 'b', 'c'}, uint16(16))
	f.Add([]byte{1, 'a', 'b', 1 << 5, 1}, uint16(5))
	f.Add([]byte{0, 'x', 7 << 5, 3, 0}, uint16(13))
	f.Add(compress(bytes.Repeat([]byte("AnnData LZF chunk "), 40)), uint16(720))
	f.Fuzz(func(t *testing.T, in []byte, size uint16) {
		dst := make([]byte, int(size)+8)
		guard := dst[size:]
		for i := range guard {
			guard[i] = 0xA5
		}
		n, err := Decompress(dst[:size], in)
		if n < 0 || n > int(size) {
			t.Fatalf("n = %d outside [0, %d]", n, size)
		}
		for _, b := range guard {
			if b != 0xA5 {
				t.Fatal("wrote past the end of dst")
			}
		}
		_ = err
		// Round trip: whatever the input, compress/decompress restores it.
		comp := compress(in)
		out := make([]byte, len(in))
		m, err := Decompress(out, comp)
		if err != nil || m != len(in) || !bytes.Equal(out, in) {
			t.Fatalf("round trip failed: m=%d err=%v", m, err)
		}
	})
}
