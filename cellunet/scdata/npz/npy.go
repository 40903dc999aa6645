package npz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ErrFormat marks malformed NPY or NPZ data.
var ErrFormat = errors.New("malformed npy/npz data")

// ErrUnsupported marks valid NPY data of a kind this package does not
// handle (other dtypes, structured arrays, Fortran order above 2-D).
var ErrUnsupported = errors.New("unsupported npy data")

// magic is the NPY file signature.
const magic = "\x93NUMPY"

// maxHeaderLen bounds the header dictionary of NPY 2.0/3.0 files.
const maxHeaderLen = 1 << 20

// Header is the parsed NPY header dictionary.
type Header struct {
	Descr        string // numpy dtype string, e.g. "<f4", "<U12"
	FortranOrder bool   // column-major data
	Shape        []int  // dimensions; empty for a 0-d array
}

// pyRepr formats the shape as Python's repr of a tuple.
func shapeRepr(shape []int) string {
	switch len(shape) {
	case 0:
		return "()"
	case 1:
		return "(" + strconv.Itoa(shape[0]) + ",)"
	}
	parts := make([]string, len(shape))
	for i, v := range shape {
		parts[i] = strconv.Itoa(v)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// Encode returns the full NPY preamble (magic, version, header length,
// dictionary, padding) byte-for-byte as numpy 1.24's format.write_array
// writes it: version 1.0 unless the header needs 2.0, keys sorted, spare
// spaces for growing the first axis, padded with spaces and a newline to a
// multiple of 64 bytes.
func (h Header) Encode() []byte {
	fortran := "False"
	if h.FortranOrder {
		fortran = "True"
	}
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': %s, 'shape': %s, }", h.Descr, fortran, shapeRepr(h.Shape))
	if len(h.Shape) > 0 {
		axis := h.Shape[0]
		if h.FortranOrder {
			axis = h.Shape[len(h.Shape)-1]
		}
		const growthAxisMaxDigits = 21
		dict += strings.Repeat(" ", max(0, growthAxisMaxDigits-len(strconv.Itoa(axis))))
	}
	for _, v := range []struct {
		major   byte
		lenSize int
	}{{1, 2}, {2, 4}} {
		hlen := len(dict) + 1
		pad := 64 - (len(magic)+2+v.lenSize+hlen)%64
		total := hlen + pad
		if v.lenSize == 2 && total > 0xFFFF {
			continue
		}
		var b bytes.Buffer
		b.WriteString(magic)
		b.WriteByte(v.major)
		b.WriteByte(0)
		if v.lenSize == 2 {
			binary.Write(&b, binary.LittleEndian, uint16(total))
		} else {
			binary.Write(&b, binary.LittleEndian, uint32(total))
		}
		b.WriteString(dict)
		b.WriteString(strings.Repeat(" ", pad))
		b.WriteByte('\n')
		return b.Bytes()
	}
	panic("unreachable")
}

// ReadHeader reads an NPY preamble from r and returns the header and the
// number of bytes consumed (the offset of the array data).
func ReadHeader(r io.Reader) (Header, int, error) {
	var pre [10]byte
	if _, err := io.ReadFull(r, pre[:8]); err != nil {
		return Header{}, 0, fmt.Errorf("%w: short NPY preamble: %v", ErrFormat, err)
	}
	if string(pre[:6]) != magic {
		return Header{}, 0, fmt.Errorf("%w: missing NPY magic \\x93NUMPY", ErrFormat)
	}
	major := pre[6]
	var hlen, n int
	switch major {
	case 1:
		if _, err := io.ReadFull(r, pre[8:10]); err != nil {
			return Header{}, 0, fmt.Errorf("%w: short NPY preamble: %v", ErrFormat, err)
		}
		hlen, n = int(binary.LittleEndian.Uint16(pre[8:10])), 10
	case 2, 3:
		var l [4]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return Header{}, 0, fmt.Errorf("%w: short NPY preamble: %v", ErrFormat, err)
		}
		v := binary.LittleEndian.Uint32(l[:])
		if v > maxHeaderLen {
			return Header{}, 0, fmt.Errorf("%w: NPY header length %d above %d", ErrFormat, v, maxHeaderLen)
		}
		hlen, n = int(v), 12
	default:
		return Header{}, 0, fmt.Errorf("%w: NPY version %d.%d", ErrUnsupported, major, pre[7])
	}
	buf := make([]byte, hlen)
	if _, err := io.ReadFull(r, buf); err != nil {
		return Header{}, 0, fmt.Errorf("%w: NPY header cut short (%d bytes declared): %v", ErrFormat, hlen, err)
	}
	h, err := ParseHeaderDict(string(buf))
	if err != nil {
		return Header{}, 0, err
	}
	return h, n + hlen, nil
}

// ParseHeaderDict parses the Python dict literal of an NPY header:
// exactly the keys 'descr' (a string), 'fortran_order' (True/False) and
// 'shape' (a tuple of non-negative integers), in any order, with optional
// trailing commas and whitespace.
func ParseHeaderDict(s string) (Header, error) {
	p := &dictParser{s: s}
	var h Header
	seen := map[string]bool{}
	p.space()
	if !p.eat('{') {
		return h, p.errorf("want '{'")
	}
	for {
		p.space()
		if p.eat('}') {
			break
		}
		key, err := p.str()
		if err != nil {
			return h, err
		}
		p.space()
		if !p.eat(':') {
			return h, p.errorf("want ':' after key %q", key)
		}
		p.space()
		if seen[key] {
			return h, p.errorf("duplicate key %q", key)
		}
		seen[key] = true
		switch key {
		case "descr":
			if p.peek() == '[' {
				return h, fmt.Errorf("%w: structured dtype (descr is a list)", ErrUnsupported)
			}
			if h.Descr, err = p.str(); err != nil {
				return h, err
			}
		case "fortran_order":
			switch {
			case p.word("True"):
				h.FortranOrder = true
			case p.word("False"):
				h.FortranOrder = false
			default:
				return h, p.errorf("fortran_order must be True or False")
			}
		case "shape":
			if h.Shape, err = p.tuple(); err != nil {
				return h, err
			}
		default:
			return h, p.errorf("unexpected key %q", key)
		}
		p.space()
		if p.eat(',') {
			continue
		}
		p.space()
		if !p.eat('}') {
			return h, p.errorf("want ',' or '}'")
		}
		break
	}
	p.space()
	if p.i != len(p.s) {
		return h, p.errorf("trailing data after the dictionary")
	}
	for _, k := range []string{"descr", "fortran_order", "shape"} {
		if !seen[k] {
			return h, fmt.Errorf("%w: NPY header lacks %q", ErrFormat, k)
		}
	}
	return h, nil
}

type dictParser struct {
	s string
	i int
}

func (p *dictParser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: NPY header at byte %d: %s", ErrFormat, p.i, fmt.Sprintf(format, args...))
}

func (p *dictParser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *dictParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *dictParser) eat(c byte) bool {
	if p.peek() == c {
		p.i++
		return true
	}
	return false
}

func (p *dictParser) word(w string) bool {
	if strings.HasPrefix(p.s[p.i:], w) {
		p.i += len(w)
		return true
	}
	return false
}

// str parses a quoted string without escapes (dtype strings never have
// any).
func (p *dictParser) str() (string, error) {
	q := p.peek()
	if q != '\'' && q != '"' {
		return "", p.errorf("want a quoted string")
	}
	j := strings.IndexByte(p.s[p.i+1:], q)
	if j < 0 {
		return "", p.errorf("unterminated string")
	}
	v := p.s[p.i+1 : p.i+1+j]
	if strings.IndexByte(v, '\\') >= 0 {
		return "", p.errorf("escapes in strings are not supported")
	}
	p.i += j + 2
	return v, nil
}

// tuple parses "(a, b, ...)" with an optional trailing comma; integers may
// carry Python 2's L suffix.
func (p *dictParser) tuple() ([]int, error) {
	if !p.eat('(') {
		return nil, p.errorf("shape must be a tuple")
	}
	shape := []int{}
	for {
		p.space()
		if p.eat(')') {
			return shape, nil
		}
		j := p.i
		for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			j++
		}
		if j == p.i {
			return nil, p.errorf("shape entries must be non-negative integers")
		}
		v, err := strconv.ParseInt(p.s[p.i:j], 10, 64)
		if err != nil || v > 1<<53 {
			return nil, p.errorf("shape entry %q out of range", p.s[p.i:j])
		}
		shape = append(shape, int(v))
		if len(shape) > 32 {
			return nil, p.errorf("more than 32 dimensions")
		}
		p.i = j
		if p.peek() == 'L' || p.peek() == 'l' {
			p.i++
		}
		p.space()
		if p.eat(',') {
			continue
		}
		p.space()
		if p.eat(')') {
			if len(shape) == 1 {
				// (3) is the integer 3 in Python, not a tuple.
				return nil, p.errorf("1-D shape needs a trailing comma")
			}
			return shape, nil
		}
		return nil, p.errorf("want ',' or ')' in shape")
	}
}
