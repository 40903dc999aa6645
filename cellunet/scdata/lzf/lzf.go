// Package lzf decompresses LZF data, the format of Marc Lehmann's liblzf
// that h5py uses for HDF5 filter 32000. It is written from the format
// description, in pure Go.
//
// An LZF stream is a sequence of items, each starting with a control byte
// c:
//
//   - c < 32: a literal run; the next c+1 bytes are copied to the output.
//   - c >= 32: a back-reference. Its length code is L = c>>5 (1..7); when
//     L == 7 one more byte follows and is added to L. The distance is
//     ((c&31)<<8) + (next byte) + 1 bytes back from the current end of the
//     output, and L+2 bytes are copied from there one at a time, so a
//     reference may overlap the bytes it produces (run-length encoding).
//
// The stream carries no length header and no checksum; the caller knows
// (or bounds) the decompressed size.
package lzf

import (
	"errors"
	"fmt"
)

// ErrShortBuffer means the output buffer is too small for the data.
var ErrShortBuffer = errors.New("lzf: output buffer too small")

// ErrCorrupt means the input is not a valid LZF stream.
var ErrCorrupt = errors.New("lzf: corrupt input")

// Decompress decodes src into dst and returns the number of bytes
// written. It never writes beyond len(dst): when the output would not fit
// it returns ErrShortBuffer, and on malformed input (a literal run or
// back-reference cut short, or a reference before the start of the output)
// an error wrapping ErrCorrupt with the input offset.
func Decompress(dst, src []byte) (int, error) {
	ip, op := 0, 0
	for ip < len(src) {
		ctrl := int(src[ip])
		at := ip
		ip++
		if ctrl < 32 {
			n := ctrl + 1
			if n > len(src)-ip {
				return op, fmt.Errorf("%w: literal run of %d bytes at offset %d passes the end of the input", ErrCorrupt, n, at)
			}
			if n > len(dst)-op {
				return op, ErrShortBuffer
			}
			copy(dst[op:], src[ip:ip+n])
			ip += n
			op += n
			continue
		}
		n := ctrl >> 5
		if n == 7 {
			if ip >= len(src) {
				return op, fmt.Errorf("%w: back-reference at offset %d cut short", ErrCorrupt, at)
			}
			n += int(src[ip])
			ip++
		}
		if ip >= len(src) {
			return op, fmt.Errorf("%w: back-reference at offset %d cut short", ErrCorrupt, at)
		}
		dist := (ctrl&31)<<8 + int(src[ip]) + 1
		ip++
		n += 2
		ref := op - dist
		if ref < 0 {
			return op, fmt.Errorf("%w: back-reference at offset %d points %d bytes before the output start", ErrCorrupt, at, -ref)
		}
		if n > len(dst)-op {
			return op, ErrShortBuffer
		}
		if dist >= n {
			copy(dst[op:op+n], dst[ref:ref+n])
		} else {
			for i := 0; i < n; i++ {
				dst[op+i] = dst[ref+i]
			}
		}
		op += n
	}
	return op, nil
}
