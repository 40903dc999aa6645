// Package ptfile reads PyTorch checkpoints written by torch.save (the zip
// format, and the legacy format gopickle understands) without libtorch:
// libtorch's own torch::pickle_load rejects a state_dict's OrderedDict with
// its _metadata attribute. It returns every tensor of the (possibly nested)
// dictionary as contiguous little-endian bytes, named by dotted paths in the
// file's order, e.g. "layers.0.fc.weight" or "state_dict.network.0.1.bias".
package ptfile

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"

	"github.com/nlpodyssey/gopickle/pytorch"
	"github.com/nlpodyssey/gopickle/types"
)

// ErrFormat is wrapped by errors about content this package cannot interpret.
var ErrFormat = errors.New("ptfile: unsupported content")

// Tensor is one tensor of a checkpoint.
type Tensor struct {
	Name string
	// DType is "float32", "float64", "float16", "bfloat16", "int64", "int32",
	// "int16", "int8", "uint8" or "bool".
	DType string
	Shape []int64
	// Data holds the elements in row-major order, little-endian.
	Data []byte
	// Source, if set (Data nil), supplies the elements to the writer in
	// chunks: it fills dst with the bytes starting at byte offset off. The
	// writer then streams a tensor without holding a copy of it.
	Source func(dst []byte, off int64) error
}

// nbytes is the tensor's size in bytes.
func (t Tensor) nbytes() int64 {
	n := int64(elemSize[t.DType])
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Contents is everything Load found: tensors in file order and plain
// values (int64, float64, string, bool; nil for None) by dotted name.
type Contents struct {
	Tensors []Tensor
	Scalars map[string]any
}

// Load reads every tensor of the checkpoint at path. Non-tensor values
// (numbers, strings) are skipped; LoadContents returns them too.
func Load(path string) ([]Tensor, error) {
	c, err := LoadContents(path)
	if err != nil {
		return nil, err
	}
	return c.Tensors, nil
}

// LoadContents reads every tensor and plain value of the checkpoint at path.
// An object it cannot interpret (a storage, a big integer, a set, ...) is an
// error naming its key, never silently skipped: a skipped object could hold
// tensors the caller expects.
func LoadContents(path string) (*Contents, error) {
	if err := sniff(path); err != nil {
		return nil, err
	}
	obj, err := pytorch.Load(path)
	if err != nil {
		return nil, fmt.Errorf("%s: not a readable PyTorch checkpoint (torch.save format): %w", path, err)
	}
	c := &Contents{Scalars: map[string]any{}}
	if err := walk("", obj, c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func walk(prefix string, obj any, out *Contents) error {
	switch v := obj.(type) {
	case *pytorch.Tensor:
		t, err := convert(prefix, v)
		if err != nil {
			return err
		}
		out.Tensors = append(out.Tensors, t)
	case int:
		out.Scalars[prefix] = int64(v)
	case int64:
		out.Scalars[prefix] = v
	case float64:
		out.Scalars[prefix] = v
	case string:
		out.Scalars[prefix] = v
	case bool:
		out.Scalars[prefix] = v
	case nil:
		out.Scalars[prefix] = nil
	case *types.OrderedDict:
		for e := v.List.Front(); e != nil; e = e.Next() {
			entry := e.Value.(*types.OrderedDictEntry)
			key, err := keyString(entry.Key)
			if err != nil {
				return err
			}
			if err := walk(join(prefix, key), entry.Value, out); err != nil {
				return err
			}
		}
	case *types.Dict:
		for _, entry := range *v {
			key, err := keyString(entry.Key)
			if err != nil {
				return err
			}
			if err := walk(join(prefix, key), entry.Value, out); err != nil {
				return err
			}
		}
	case *types.List:
		for i, x := range *v {
			if err := walk(join(prefix, fmt.Sprint(i)), x, out); err != nil {
				return err
			}
		}
	case *types.Tuple:
		for i := 0; i < v.Len(); i++ {
			if err := walk(join(prefix, fmt.Sprint(i)), v.Get(i), out); err != nil {
				return err
			}
		}
	default:
		key := prefix
		if key == "" {
			key = "(the top-level object)"
		}
		return fmt.Errorf("%w: %q holds a %s, which this reader cannot interpret (tensors, numbers, strings, None and dicts, lists and tuples of them are supported)",
			ErrFormat, key, describe(obj))
	}
	return nil
}

// describe names a value gopickle produced in Python's terms where it can.
func describe(obj any) string {
	switch v := obj.(type) {
	case pytorch.StorageInterface:
		return "bare storage (torch.save of a tensor's .storage())"
	case *big.Int:
		return "integer beyond 64 bits"
	case *types.GenericObject:
		return fmt.Sprintf("%s.%s object", v.Class.Module, v.Class.Name)
	}
	return fmt.Sprintf("%T value", obj)
}

// sniff rejects files that cannot be a torch.save checkpoint before the
// unpickler turns them into an obscure opcode error: torch.save writes a zip
// archive (PK\x03\x04) or, in the legacy format, a pickle (0x80 PROTO).
func sniff(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return notCheckpoint(path + ": is a directory, not a PyTorch checkpoint file")
	}
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case n == 0:
		return notCheckpoint(path + ": empty file, not a PyTorch checkpoint")
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		r, err := zip.OpenReader(path)
		if err != nil {
			return notCheckpoint(fmt.Sprintf("%s: a damaged or truncated zip archive, not a readable PyTorch checkpoint (%v)", path, err))
		}
		return r.Close()
	case head[0] == 0x80:
		return nil
	}
	return notCheckpoint(fmt.Sprintf("%s: not a PyTorch checkpoint: torch.save writes a zip archive or a pickle, this file starts with %q", path, head))
}

// notCheckpoint is an error wrapping ErrFormat whose text is msg alone.
type notCheckpoint string

func (e notCheckpoint) Error() string { return string(e) }
func (e notCheckpoint) Unwrap() error { return ErrFormat }

func keyString(k any) (string, error) {
	switch v := k.(type) {
	case string:
		return v, nil
	case int:
		return fmt.Sprint(v), nil
	}
	return "", fmt.Errorf("%w: dictionary key of type %T", ErrFormat, k)
}

// convert gathers a (possibly strided) tensor view into contiguous bytes.
func convert(name string, t *pytorch.Tensor) (Tensor, error) {
	out := Tensor{Name: name, Shape: make([]int64, len(t.Size))}
	if len(t.Stride) != len(t.Size) {
		return out, fmt.Errorf("%w: tensor %q has %d sizes and %d strides", ErrFormat, name, len(t.Size), len(t.Stride))
	}
	numel := 1
	for i, d := range t.Size {
		if d < 0 {
			return out, fmt.Errorf("%w: tensor %q has a negative size", ErrFormat, name)
		}
		out.Shape[i] = int64(d)
		numel *= d
	}
	var n int
	var es int
	var put func(dst []byte, i int)
	switch s := t.Source.(type) {
	case *pytorch.FloatStorage:
		out.DType, es, n = "float32", 4, len(s.Data)
		put = func(dst []byte, i int) { binary.LittleEndian.PutUint32(dst, math.Float32bits(s.Data[i])) }
	case *pytorch.DoubleStorage:
		out.DType, es, n = "float64", 8, len(s.Data)
		put = func(dst []byte, i int) { binary.LittleEndian.PutUint64(dst, math.Float64bits(s.Data[i])) }
	case *pytorch.HalfStorage: // gopickle widens to float32 exactly
		out.DType, es, n = "float16", 2, len(s.Data)
		put = func(dst []byte, i int) { binary.LittleEndian.PutUint16(dst, float32ToHalf(s.Data[i])) }
	case *pytorch.BFloat16Storage:
		out.DType, es, n = "bfloat16", 2, len(s.Data)
		put = func(dst []byte, i int) { binary.LittleEndian.PutUint16(dst, uint16(math.Float32bits(s.Data[i])>>16)) }
	case *pytorch.LongStorage:
		out.DType, es, n = "int64", 8, len(s.Data)
		put = func(dst []byte, i int) { binary.LittleEndian.PutUint64(dst, uint64(s.Data[i])) }
	case *pytorch.IntStorage:
		out.DType, es, n = "int32", 4, len(s.Data)
		put = func(dst []byte, i int) { binary.LittleEndian.PutUint32(dst, uint32(s.Data[i])) }
	case *pytorch.ShortStorage:
		out.DType, es, n = "int16", 2, len(s.Data)
		put = func(dst []byte, i int) { binary.LittleEndian.PutUint16(dst, uint16(s.Data[i])) }
	case *pytorch.CharStorage:
		out.DType, es, n = "int8", 1, len(s.Data)
		put = func(dst []byte, i int) { dst[0] = byte(s.Data[i]) }
	case *pytorch.ByteStorage:
		out.DType, es, n = "uint8", 1, len(s.Data)
		put = func(dst []byte, i int) { dst[0] = s.Data[i] }
	case *pytorch.BoolStorage:
		out.DType, es, n = "bool", 1, len(s.Data)
		put = func(dst []byte, i int) {
			dst[0] = 0
			if s.Data[i] {
				dst[0] = 1
			}
		}
	default:
		return out, fmt.Errorf("%w: tensor %q has storage type %T", ErrFormat, name, t.Source)
	}
	out.Data = make([]byte, numel*es)
	if numel == 0 {
		return out, nil
	}
	// Walk the view's indices in row-major order, checking every offset.
	idx := make([]int, len(t.Size))
	for k := 0; k < numel; k++ {
		off := t.StorageOffset
		for d := range idx {
			off += idx[d] * t.Stride[d]
		}
		if off < 0 || off >= n {
			return out, fmt.Errorf("%w: tensor %q reads element %d of a %d-element storage", ErrFormat, name, off, n)
		}
		put(out.Data[k*es:], off)
		for d := len(idx) - 1; d >= 0; d-- {
			idx[d]++
			if idx[d] < t.Size[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out, nil
}

// float32ToHalf converts a float32 that is exactly representable in IEEE
// half precision (as gopickle's widened half storages are) back to its bits.
func float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int((b >> 23) & 0xff)
	mant := b & 0x7fffff
	switch {
	case exp == 0xff: // inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp == 0 && mant == 0:
		return sign
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 { // subnormal half
		if e < -10 {
			return sign
		}
		m := (mant | 0x800000) >> uint(14-e)
		return sign | uint16(m)
	}
	return sign | uint16(e)<<10 | uint16(mant>>13)
}
