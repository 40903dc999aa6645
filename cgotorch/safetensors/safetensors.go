// Package safetensors reads and writes the safetensors format
// (github.com/huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON describing each tensor (dtype, shape and byte
// offsets into the data section) plus optional "__metadata__" strings, then
// the raw little-endian tensor bytes. Files written here are read by Python's
// safetensors; the reader validates every field so a corrupt or hostile file
// gives an error, never a panic or an unbounded allocation.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

// MaxHeaderBytes bounds the JSON header (Python's reader uses 100 MB).
const MaxHeaderBytes = 100 << 20

// ErrFormat is wrapped by every error about malformed content.
var ErrFormat = errors.New("safetensors: malformed file")

// DTypeSize returns the element size of a safetensors dtype name, or 0 if unknown.
func DTypeSize(dtype string) int {
	switch dtype {
	case "F64", "I64", "U64":
		return 8
	case "F32", "I32", "U32":
		return 4
	case "F16", "BF16", "I16", "U16":
		return 2
	case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2":
		return 1
	}
	return 0
}

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name  string
	DType string
	Shape []int64
	// Begin and End are byte offsets into the data section.
	Begin, End int64
}

// Numel is the element count.
func (t TensorInfo) Numel() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Header is a parsed safetensors header.
type Header struct {
	// Tensors in ascending data offset order.
	Tensors  []TensorInfo
	Metadata map[string]string
	// DataStart is the file offset of the data section (8 + N).
	DataStart int64
	index     map[string]int
}

// Lookup returns the tensor called name.
func (h *Header) Lookup(name string) (TensorInfo, bool) {
	i, ok := h.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return h.Tensors[i], true
}

// Names lists the tensor names in data order.
func (h *Header) Names() []string {
	out := make([]string, len(h.Tensors))
	for i, t := range h.Tensors {
		out[i] = t.Name
	}
	return out
}

type rawInfo struct {
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// ReadHeader parses and validates the header of a file of the given size.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, formatErr("file has %d bytes, shorter than the 8-byte header length", size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors: reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderBytes {
		return nil, formatErr("header length %d exceeds the %d-byte limit", n, MaxHeaderBytes)
	}
	if int64(n) > size-8 {
		return nil, formatErr("header length %d exceeds the file size %d", n, size)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 8); err != nil {
		return nil, fmt.Errorf("safetensors: reading header: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(buf, &raw); err != nil {
		return nil, formatErr("header is not a JSON object: %v", err)
	}
	h := &Header{DataStart: 8 + int64(n), index: make(map[string]int, len(raw))}
	dataLen := size - h.DataStart
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &h.Metadata); err != nil {
				return nil, formatErr("__metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		var ri rawInfo
		if err := json.Unmarshal(msg, &ri); err != nil {
			return nil, formatErr("tensor %q: %v", name, err)
		}
		es := DTypeSize(ri.DType)
		if es == 0 {
			return nil, formatErr("tensor %q: unknown dtype %q", name, ri.DType)
		}
		if len(ri.DataOffsets) != 2 {
			return nil, formatErr("tensor %q: data_offsets must have 2 entries, has %d", name, len(ri.DataOffsets))
		}
		numel := int64(1)
		for _, d := range ri.Shape {
			if d < 0 {
				return nil, formatErr("tensor %q: negative dimension in shape %v", name, ri.Shape)
			}
			if d != 0 && numel > math.MaxInt64/d {
				return nil, formatErr("tensor %q: shape %v overflows", name, ri.Shape)
			}
			numel *= d
		}
		if numel > math.MaxInt64/int64(es) {
			return nil, formatErr("tensor %q: shape %v overflows", name, ri.Shape)
		}
		b, e := ri.DataOffsets[0], ri.DataOffsets[1]
		if b < 0 || e < b || e > dataLen {
			return nil, formatErr("tensor %q: data_offsets [%d, %d] outside the %d-byte data section", name, b, e, dataLen)
		}
		if e-b != numel*int64(es) {
			return nil, formatErr("tensor %q: %d bytes for shape %v of %s (want %d)", name, e-b, ri.Shape, ri.DType, numel*int64(es))
		}
		h.Tensors = append(h.Tensors, TensorInfo{Name: name, DType: ri.DType, Shape: ri.Shape, Begin: b, End: e})
	}
	sort.Slice(h.Tensors, func(i, j int) bool {
		if h.Tensors[i].Begin != h.Tensors[j].Begin {
			return h.Tensors[i].Begin < h.Tensors[j].Begin
		}
		return h.Tensors[i].Name < h.Tensors[j].Name
	})
	// As Python's reader: the tensors tile the data section without gaps or overlaps.
	var pos int64
	for i, t := range h.Tensors {
		if t.Begin != pos {
			return nil, formatErr("tensor %q starts at %d, expected %d (gap or overlap)", t.Name, t.Begin, pos)
		}
		pos = t.End
		h.index[t.Name] = i
	}
	if pos != dataLen {
		return nil, formatErr("tensors cover %d bytes of a %d-byte data section", pos, dataLen)
	}
	return h, nil
}

// File is an open safetensors file.
type File struct {
	*Header
	f    *os.File
	path string
}

// Open opens and validates path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	h, err := ReadHeader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{Header: h, f: f, path: path}, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// ReadInto copies tensor name's bytes into dst, which must have exactly its size.
func (f *File) ReadInto(name string, dst []byte) error {
	t, ok := f.Lookup(name)
	if !ok {
		return fmt.Errorf("%s: no tensor %q", f.path, name)
	}
	if int64(len(dst)) != t.End-t.Begin {
		return fmt.Errorf("%s: tensor %q has %d bytes, buffer %d", f.path, name, t.End-t.Begin, len(dst))
	}
	if _, err := f.f.ReadAt(dst, f.DataStart+t.Begin); err != nil {
		return fmt.Errorf("%s: reading %q: %w", f.path, name, err)
	}
	return nil
}

// Entry is one tensor to write. Data is called once, when the writer reaches
// the entry, so only one tensor's bytes need be in Go memory at a time; it
// must return exactly Numel×DTypeSize bytes.
type Entry struct {
	Name  string
	DType string
	Shape []int64
	Data  func() ([]byte, error)
}

func (e Entry) nbytes() int64 {
	n := int64(DTypeSize(e.DType))
	for _, d := range e.Shape {
		n *= d
	}
	return n
}

// Write writes entries (in the given order) and metadata to w.
func Write(w io.Writer, entries []Entry, metadata map[string]string) error {
	header := make(map[string]any, len(entries)+1)
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if e.Name == "" || e.Name == "__metadata__" || seen[e.Name] {
			return fmt.Errorf("safetensors: bad or duplicate tensor name %q", e.Name)
		}
		seen[e.Name] = true
		if DTypeSize(e.DType) == 0 {
			return fmt.Errorf("safetensors: tensor %q: unknown dtype %q", e.Name, e.DType)
		}
		for _, d := range e.Shape {
			if d < 0 {
				return fmt.Errorf("safetensors: tensor %q: negative dimension", e.Name)
			}
		}
		n := e.nbytes()
		shape := e.Shape
		if shape == nil {
			shape = []int64{}
		}
		header[e.Name] = rawInfo{DType: e.DType, Shape: shape, DataOffsets: []int64{off, off + n}}
		off += n
	}
	js, err := json.Marshal(header)
	if err != nil {
		return err
	}
	// Pad with spaces to an 8-byte boundary, as Python's writer does.
	if pad := (8 - len(js)%8) % 8; pad > 0 {
		js = append(js, strings.Repeat(" ", pad)...)
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(js)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err := w.Write(js); err != nil {
		return err
	}
	for _, e := range entries {
		b, err := e.Data()
		if err != nil {
			return fmt.Errorf("safetensors: tensor %q: %w", e.Name, err)
		}
		if int64(len(b)) != e.nbytes() {
			return fmt.Errorf("safetensors: tensor %q: data has %d bytes, shape %v of %s needs %d", e.Name, len(b), e.Shape, e.DType, e.nbytes())
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
