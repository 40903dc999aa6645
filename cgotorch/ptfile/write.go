package ptfile

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"path"
	"strconv"
	"strings"
)

// The writer produces what torch.save (zip format, pickle protocol 2)
// produces for dictionaries of tensors and plain values, so Python's
// torch.load reads the files (and PyTorch optimizers accept an optimizer
// state_dict written this way).

// Dict is an ordered dictionary (a collections.OrderedDict when
// Ordered, else a plain dict). Keys are strings or ints.
type Dict struct {
	Keys    []any
	Values  []any
	Ordered bool
}

// Set appends or replaces key.
func (d *Dict) Set(key, value any) {
	for i, k := range d.Keys {
		if k == key {
			d.Values[i] = value
			return
		}
	}
	d.Keys = append(d.Keys, key)
	d.Values = append(d.Values, value)
}

// Tuple is a Python tuple; a []any is written as a list.
type Tuple []any

var storageClass = map[string]string{
	"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
	"bfloat16": "BFloat16Storage", "int64": "LongStorage", "int32": "IntStorage",
	"int16": "ShortStorage", "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
}

var elemSize = map[string]int{
	"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4,
	"int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}

// Pickle opcodes (protocol 2).
const (
	opProto       = 0x80
	opStop        = '.'
	opMark        = '('
	opEmptyDict   = '}'
	opEmptyList   = ']'
	opEmptyTuple  = ')'
	opTuple       = 't'
	opTuple1      = 0x85
	opTuple2      = 0x86
	opTuple3      = 0x87
	opSetItems    = 'u'
	opAppends     = 'e'
	opGlobal      = 'c'
	opReduce      = 'R'
	opBinPersID   = 'Q'
	opBinInt      = 'J'
	opLong1       = 0x8a
	opBinFloat    = 'G'
	opBinUnicode  = 'X'
	opNewTrue     = 0x88
	opNewFalse    = 0x89
	opNone        = 'N'
	opBinPut      = 'q'
	opLongBinPut  = 'r'
	maxBinIntSize = 1<<31 - 1
)

type pickler struct {
	buf      bytes.Buffer
	storages []Tensor
	memo     int
}

func (p *pickler) op(b ...byte) { p.buf.Write(b) }

func (p *pickler) put() {
	// Memoize nothing we re-use, but keep the protocol shape torch writes.
	if p.memo < 256 {
		p.op(opBinPut, byte(p.memo))
	} else {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(p.memo))
		p.op(opLongBinPut)
		p.buf.Write(b[:])
	}
	p.memo++
}

func (p *pickler) global(module, name string) {
	p.op(opGlobal)
	p.buf.WriteString(module + "\n" + name + "\n")
	p.put()
}

func (p *pickler) str(s string) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(len(s)))
	p.op(opBinUnicode)
	p.buf.Write(b[:])
	p.buf.WriteString(s)
	p.put()
}

func (p *pickler) int(v int64) {
	if v >= -(1<<31) && v <= maxBinIntSize {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(int32(v)))
		p.op(opBinInt)
		p.buf.Write(b[:])
		return
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(v))
	p.op(opLong1, 8)
	p.buf.Write(b[:])
}

func (p *pickler) float(v float64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], math.Float64bits(v))
	p.op(opBinFloat)
	p.buf.Write(b[:])
}

func (p *pickler) tuple(items []any) error {
	switch len(items) {
	case 0:
		p.op(opEmptyTuple)
		return nil
	case 1, 2, 3:
		for _, it := range items {
			if err := p.value(it); err != nil {
				return err
			}
		}
		p.op([]byte{opTuple1, opTuple2, opTuple3}[len(items)-1])
	default:
		p.op(opMark)
		for _, it := range items {
			if err := p.value(it); err != nil {
				return err
			}
		}
		p.op(opTuple)
	}
	p.put()
	return nil
}

func (p *pickler) tensor(t Tensor) error {
	cls, ok := storageClass[t.DType]
	if !ok {
		return fmt.Errorf("ptfile: tensor %q: unsupported dtype %q", t.Name, t.DType)
	}
	numel := int64(1)
	for _, d := range t.Shape {
		numel *= d
	}
	if t.Source == nil && int64(len(t.Data)) != numel*int64(elemSize[t.DType]) {
		return fmt.Errorf("ptfile: tensor %q: %d bytes for shape %v of %s", t.Name, len(t.Data), t.Shape, t.DType)
	}
	key := strconv.Itoa(len(p.storages))
	p.storages = append(p.storages, t)
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.op(opMark)
	// persistent id: ('storage', torch.<X>Storage, key, 'cpu', numel)
	p.op(opMark)
	p.str("storage")
	p.global("torch", cls)
	p.str(key)
	p.str("cpu")
	p.int(numel)
	p.op(opTuple)
	p.put()
	p.op(opBinPersID)
	p.int(0) // storage offset
	shape := make([]any, len(t.Shape))
	stride := make([]any, len(t.Shape))
	st := int64(1)
	for i := len(t.Shape) - 1; i >= 0; i-- {
		shape[i] = t.Shape[i]
		stride[i] = st
		st *= t.Shape[i]
	}
	if err := p.tuple(shape); err != nil {
		return err
	}
	if err := p.tuple(stride); err != nil {
		return err
	}
	p.op(opNewFalse) // requires_grad
	p.global("collections", "OrderedDict")
	p.op(opEmptyTuple)
	p.op(opReduce)
	p.put()
	p.op(opTuple)
	p.put()
	p.op(opReduce)
	p.put()
	return nil
}

func (p *pickler) value(v any) error {
	switch x := v.(type) {
	case nil:
		p.op(opNone)
	case bool:
		if x {
			p.op(opNewTrue)
		} else {
			p.op(opNewFalse)
		}
	case int:
		p.int(int64(x))
	case int64:
		p.int(x)
	case float64:
		p.float(x)
	case float32:
		p.float(float64(x))
	case string:
		p.str(x)
	case Tensor:
		return p.tensor(x)
	case *Dict:
		return p.dict(x)
	case Tuple:
		return p.tuple(x)
	case []any:
		p.op(opEmptyList)
		p.put()
		if len(x) > 0 {
			p.op(opMark)
			for _, it := range x {
				if err := p.value(it); err != nil {
					return err
				}
			}
			p.op(opAppends)
		}
	default:
		return fmt.Errorf("ptfile: cannot pickle a %T", v)
	}
	return nil
}

func (p *pickler) dict(d *Dict) error {
	if len(d.Keys) != len(d.Values) {
		return fmt.Errorf("ptfile: dict has %d keys and %d values", len(d.Keys), len(d.Values))
	}
	if d.Ordered {
		p.global("collections", "OrderedDict")
		p.op(opEmptyTuple)
		p.op(opReduce)
	} else {
		p.op(opEmptyDict)
	}
	p.put()
	if len(d.Keys) == 0 {
		return nil
	}
	p.op(opMark)
	for i, k := range d.Keys {
		switch k.(type) {
		case string, int, int64:
		default:
			return fmt.Errorf("ptfile: dict key of type %T", k)
		}
		if err := p.value(k); err != nil {
			return err
		}
		if err := p.value(d.Values[i]); err != nil {
			return err
		}
	}
	p.op(opSetItems)
	return nil
}

// StateDict builds an OrderedDict of tensors in the given order, as
// module.state_dict() is.
func StateDict(ts []Tensor) *Dict {
	d := &Dict{Ordered: true}
	for _, t := range ts {
		d.Keys = append(d.Keys, t.Name)
		d.Values = append(d.Values, t)
	}
	return d
}

// Write writes obj (a *Dict, Tensor, list, tuple or scalar) in torch.save's
// zip format to w. Record name prefix is archive (torch uses the file stem).
func Write(w io.Writer, archive string, obj any) error {
	if archive == "" || strings.ContainsAny(archive, "/\\") {
		archive = "archive"
	}
	p := &pickler{}
	p.op(opProto, 2)
	if err := p.value(obj); err != nil {
		return err
	}
	p.op(opStop)
	cw := &countingWriter{w: w}
	zw := zip.NewWriter(cw)
	bytesOf := func(b []byte) Tensor {
		return Tensor{DType: "uint8", Shape: []int64{int64(len(b))}, Data: b}
	}
	records := []struct {
		name string
		t    Tensor
	}{{"data.pkl", bytesOf(p.buf.Bytes())}, {"byteorder", bytesOf([]byte("little"))}}
	for i, t := range p.storages {
		records = append(records, struct {
			name string
			t    Tensor
		}{"data/" + strconv.Itoa(i), t})
	}
	records = append(records, struct {
		name string
		t    Tensor
	}{"version", bytesOf([]byte("3\n"))})
	buf := make([]byte, 0)
	for _, r := range records {
		if r.t.Source != nil && len(buf) == 0 {
			buf = make([]byte, streamChunk)
		}
		if err := writeAligned(zw, cw, path.Join(archive, r.name), r.t, buf); err != nil {
			return err
		}
	}
	return zw.Close()
}

// streamChunk is the buffer size for tensors written from a Source.
const streamChunk = 1 << 20

// chunks calls fn for consecutive pieces of t's bytes: Data directly, or a
// Source read into buf.
func chunks(t Tensor, buf []byte, fn func([]byte) error) error {
	if t.Source == nil {
		return fn(t.Data)
	}
	total := t.nbytes()
	for off := int64(0); off < total; off += int64(len(buf)) {
		n := min(int64(len(buf)), total-off)
		if err := t.Source(buf[:n], off); err != nil {
			return err
		}
		if err := fn(buf[:n]); err != nil {
			return err
		}
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// writeAligned stores a record uncompressed with its data at a 64-byte
// boundary, padding the local header's extra field as torch's writer does.
// A streamed tensor is read twice: once for the CRC the header needs, once
// to write it, so only one chunk is ever held.
func writeAligned(zw *zip.Writer, cw *countingWriter, name string, t Tensor, buf []byte) error {
	if err := zw.Flush(); err != nil {
		return err
	}
	size := int64(len(t.Data))
	if t.Source != nil {
		size = t.nbytes()
	}
	h := crc32.NewIEEE()
	if err := chunks(t, buf, func(b []byte) error { _, err := h.Write(b); return err }); err != nil {
		return err
	}
	const headerLen = 30
	off := cw.n + headerLen + int64(len(name)) + 4 // 4 = extra field header
	pad := (64 - off%64) % 64
	extra := make([]byte, 4+pad)
	binary.LittleEndian.PutUint16(extra[0:], 0x4246) // "FB", as PyTorch writes
	binary.LittleEndian.PutUint16(extra[2:], uint16(pad))
	hdr := &zip.FileHeader{Name: name, Method: zip.Store, Extra: extra}
	hdr.SetMode(0o644)
	// No data descriptor: sizes and CRC in the local header.
	hdr.CRC32 = h.Sum32()
	hdr.CompressedSize64 = uint64(size)
	hdr.UncompressedSize64 = uint64(size)
	fw, err := zw.CreateRaw(hdr)
	if err != nil {
		return err
	}
	return chunks(t, buf, func(b []byte) error { _, err := fw.Write(b); return err })
}
