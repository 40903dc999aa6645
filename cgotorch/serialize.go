package cgotorch

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/scdiffusion/gotorch-train/cgotorch/atomicfile"
	"github.com/scdiffusion/gotorch-train/cgotorch/ptfile"
	"github.com/scdiffusion/gotorch-train/cgotorch/safetensors"
)

var safetensorsDType = map[DType]string{
	Float32: "F32", Float64: "F64", Float16: "F16", BFloat16: "BF16",
	Int64: "I64", Int32: "I32", Uint8: "U8", Bool: "BOOL",
}

func dtypeFromSafetensors(s string) (DType, bool) {
	for d, name := range safetensorsDType {
		if name == s {
			return d, true
		}
	}
	return 0, false
}

// WriteSafetensors writes ts (copied to the host one at a time) and metadata
// to w in the safetensors format.
func WriteSafetensors(w io.Writer, ts []Named, metadata map[string]string) error {
	entries := make([]safetensors.Entry, len(ts))
	for i, n := range ts {
		var dt DType
		var shape []int64
		if err := Try(func() { dt, shape = n.T.DType(), n.T.Shape() }); err != nil {
			return fmt.Errorf("tensor %q: %w", n.Name, err)
		}
		name, ok := safetensorsDType[dt]
		if !ok {
			return fmt.Errorf("tensor %q: dtype %s has no safetensors name", n.Name, dt)
		}
		t := n.T
		entries[i] = safetensors.Entry{Name: n.Name, DType: name, Shape: shape, Data: func() (b []byte, err error) {
			err = Try(func() { b = t.Bytes() })
			return b, err
		}}
	}
	return safetensors.Write(w, entries, metadata)
}

// SaveSafetensors writes ts to path atomically (temporary file, fsync,
// rename): a crash leaves either the previous file or the complete new one.
func SaveSafetensors(path string, ts []Named, metadata map[string]string) error {
	return atomicfile.WriteFile(path, 0o644, func(w io.Writer) error {
		return WriteSafetensors(w, ts, metadata)
	})
}

// LoadSafetensors reads every tensor of a safetensors file into new unowned
// tensors on dev (the caller frees them, e.g. with FreeAll), in file order.
func LoadSafetensors(path string, dev Device) ([]Named, map[string]string, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	out := make([]Named, 0, len(f.Tensors))
	for _, ti := range f.Tensors {
		dt, ok := dtypeFromSafetensors(ti.DType)
		if !ok {
			FreeAll(out)
			return nil, nil, fmt.Errorf("%s: tensor %q: dtype %s is not supported by cgotorch", path, ti.Name, ti.DType)
		}
		buf := make([]byte, ti.End-ti.Begin)
		if err := f.ReadInto(ti.Name, buf); err != nil {
			FreeAll(out)
			return nil, nil, err
		}
		var t *Tensor
		if err := Try(func() { t = (*Scope)(nil).FromBytes(buf, Options{DType: dt, Device: dev}, ti.Shape...) }); err != nil {
			FreeAll(out)
			return nil, nil, fmt.Errorf("%s: tensor %q: %w", path, ti.Name, err)
		}
		out = append(out, Named{Name: ti.Name, T: t})
	}
	return out, f.Metadata, nil
}

var ptDType = map[string]DType{
	"float32": Float32, "float64": Float64, "float16": Float16, "bfloat16": BFloat16,
	"int64": Int64, "int32": Int32, "uint8": Uint8, "bool": Bool,
}

// LoadPT reads the tensors of a checkpoint written by Python's torch.save
// (e.g. a state_dict) into new unowned tensors on dev, named by their dotted
// dictionary paths in file order. int16 and int8 tensors are widened to int32.
func LoadPT(path string, dev Device) ([]Named, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	pts, err := ptfile.Load(path)
	if err != nil {
		return nil, err
	}
	return ptToTensors(path, pts, dev)
}

func ptToTensors(path string, pts []ptfile.Tensor, dev Device) ([]Named, error) {
	out := make([]Named, 0, len(pts))
	for _, p := range pts {
		var t *Tensor
		err := Try(func() {
			switch p.DType {
			case "int16", "int8":
				t = widenInts(p, dev)
			default:
				dt, ok := ptDType[p.DType]
				if !ok {
					panic(misuse("load_pt", "unsupported dtype "+p.DType))
				}
				t = (*Scope)(nil).FromBytes(p.Data, Options{DType: dt, Device: dev}, p.Shape...)
			}
		})
		if err != nil {
			FreeAll(out)
			return nil, fmt.Errorf("%s: tensor %q: %w", path, p.Name, err)
		}
		out = append(out, Named{Name: p.Name, T: t})
	}
	return out, nil
}

func widenInts(p ptfile.Tensor, dev Device) *Tensor {
	n := numelOf(p.Shape)
	b := make([]byte, 4*n)
	for i := int64(0); i < n; i++ {
		var v int32
		if p.DType == "int8" {
			v = int32(int8(p.Data[i]))
		} else {
			v = int32(int16(binary.LittleEndian.Uint16(p.Data[2*i:])))
		}
		binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
	}
	return (*Scope)(nil).FromBytes(b, Options{DType: Int32, Device: dev}, p.Shape...)
}

var ptDTypeName = map[DType]string{
	Float32: "float32", Float64: "float64", Float16: "float16", BFloat16: "bfloat16",
	Int64: "int64", Int32: "int32", Uint8: "uint8", Bool: "bool",
}

// PTTensor copies t to the host as a ptfile.Tensor named name, for
// building torch.save-compatible objects (see SavePT).
func PTTensor(name string, t *Tensor) (ptfile.Tensor, error) {
	var pt ptfile.Tensor
	err := Try(func() {
		dt := t.DType()
		pt = ptfile.Tensor{Name: name, DType: ptDTypeName[dt], Shape: t.Shape(), Data: t.Bytes()}
	})
	return pt, err
}

// SavePT writes obj (built from ptfile.Dict, ptfile.Tuple, []any, scalars and
// ptfile.Tensor values) to path in torch.save's zip format, atomically, so
// Python's torch.load reads it.
func SavePT(path string, obj any) error {
	return atomicfile.WriteFile(path, 0o644, func(w io.Writer) error {
		stem := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		return ptfile.Write(w, stem, obj)
	})
}

// PTTensorStream describes t as a ptfile.Tensor whose bytes are copied to
// the writer in chunks when the file is written, so saving holds no full
// host copy of it. The helper handles it needs belong to s, which must stay
// open until the file is written.
func PTTensorStream(s *Scope, name string, t *Tensor) (ptfile.Tensor, error) {
	var pt ptfile.Tensor
	err := Try(func() {
		dt := t.DType()
		es := int64(dt.Size())
		pt = ptfile.Tensor{Name: name, DType: ptDTypeName[dt], Shape: t.Shape()}
		d := t.Detach()
		c := d.Contiguous()
		flat := s.Adopt(c.Reshape(-1))
		d.Free()
		c.Free()
		pt.Source = func(dst []byte, off int64) error {
			return Try(func() {
				part := flat.Narrow(0, off/es, int64(len(dst))/es)
				part.CopyBytes(dst)
				part.Free()
			})
		}
	})
	return pt, err
}

// SaveStateDictPT writes ts as a state_dict (an OrderedDict of tensors, in
// order) that torch.load and Module.load_state_dict accept, streaming each
// tensor in 1 MiB chunks.
func SaveStateDictPT(path string, ts []Named) error {
	s := NewScope()
	defer s.Close()
	pts := make([]ptfile.Tensor, len(ts))
	for i, n := range ts {
		pt, err := PTTensorStream(s, n.Name, n.T)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", n.Name, err)
		}
		pts[i] = pt
	}
	return SavePT(path, ptfile.StateDict(pts))
}

// LoadPTContents is LoadPT plus the checkpoint's plain values (numbers,
// strings, booleans) by dotted name.
func LoadPTContents(path string, dev Device) ([]Named, map[string]any, error) {
	c, err := ptfile.LoadContents(path)
	if err != nil {
		return nil, nil, err
	}
	ts, err := ptToTensors(path, c.Tensors, dev)
	return ts, c.Scalars, err
}
