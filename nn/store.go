// Package nn builds neural-network modules on cgotorch with PyTorch's
// parameter names, initialisation and state-dict conventions.
//
// Parameters live in a Store (like tch-rs's VarStore) and are named by
// paths: store.Root().Sub("layers").At(0).Sub("fc") gives parameters named
// "layers.0.fc.weight" and "layers.0.fc.bias" — the keys of the
// corresponding PyTorch state_dict, so checkpoints load without renaming.
// Modules hold *Param pointers into the store; the store owns the tensors
// and frees them in Close.
//
// Initialisation follows PyTorch's defaults and draws from libtorch's
// default CPU generator in creation order, so after cgotorch.ManualSeed(s)
// a model built here has bit-identical weights to the same model built in
// Python after torch.manual_seed(s). Parameters are initialised on the CPU
// and then moved to the store's device, as Python code does with .to().
//
// Shapes in doc comments: B = batch, In/Out = feature widths.
package nn

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// ErrStateDict is wrapped by every state-dict mismatch error.
var ErrStateDict = errors.New("nn: state dict mismatch")

// Param is a named tensor of a Store: a trainable parameter or a buffer
// (such as BatchNorm's running statistics).
type Param struct {
	// Name is the full dotted state-dict name.
	Name string
	// T is the tensor; the Store owns it. Flatten may replace it with a view.
	T *ct.Tensor
	// Buffer marks a non-trainable tensor (no gradient, not optimised).
	Buffer bool
}

// Store holds the parameters and buffers of one model on one device.
type Store struct {
	device  ct.Device
	dtype   ct.DType
	params  []*Param // creation order = PyTorch state_dict order
	byName  map[string]*Param
	flat    *ct.Tensor // set by Flatten: all trainable params, contiguous
	flatGr  *ct.Tensor // set by Flatten: all gradients, contiguous
	flatOff []int64
}

// NewStore returns an empty store whose parameters will live on dev as
// float32.
func NewStore(dev ct.Device) *Store {
	return &Store{device: dev, dtype: ct.Float32, byName: map[string]*Param{}}
}

// NewStoreDType is NewStore with another floating-point parameter dtype
// (e.g. float64 for gradient checks).
func NewStoreDType(dev ct.Device, dt ct.DType) *Store {
	s := NewStore(dev)
	s.dtype = dt
	return s
}

// Device is where the store's tensors live.
func (s *Store) Device() ct.Device { return s.device }

// DType is the dtype of the store's floating-point parameters.
func (s *Store) DType() ct.DType { return s.dtype }

// Root is the empty path.
func (s *Store) Root() Path { return Path{store: s} }

// Path names a position in a Store's hierarchy.
type Path struct {
	store  *Store
	prefix string
}

// Sub descends into child modules. A name containing '.' panics (a
// programming error, as in tch-rs).
func (p Path) Sub(names ...string) Path {
	for _, n := range names {
		if n == "" || strings.Contains(n, ".") {
			panic(fmt.Sprintf("nn: bad path component %q", n))
		}
		p.prefix = p.join(n)
	}
	return p
}

// At descends into the i-th child (as in nn.Sequential or nn.ModuleList).
func (p Path) At(i int) Path { return p.Sub(fmt.Sprint(i)) }

// Store returns the store p belongs to.
func (p Path) Store() *Store { return p.store }

// Name returns the dotted name of p (empty for the root).
func (p Path) Name() string { return p.prefix }

func (p Path) join(n string) string {
	if p.prefix == "" {
		return n
	}
	return p.prefix + "." + n
}

// Param creates a trainable parameter named p.name of the given shape,
// filled on the CPU by init, then moved to the store's device.
func (p Path) Param(name string, init Init, shape ...int64) *Param {
	return p.add(name, false, ct.Float32, init, shape)
}

// Buffer creates a non-trainable tensor (float32 unless dt is non-zero).
func (p Path) Buffer(name string, dt ct.DType, init Init, shape ...int64) *Param {
	return p.add(name, true, dt, init, shape)
}

func (p Path) add(name string, buffer bool, dt ct.DType, init Init, shape []int64) *Param {
	s := p.store
	if strings.Contains(name, ".") || name == "" {
		panic(fmt.Sprintf("nn: bad parameter name %q", name))
	}
	full := p.join(name)
	if _, dup := s.byName[full]; dup {
		panic(fmt.Sprintf("nn: parameter %q defined twice", full))
	}
	if s.flat != nil {
		panic("nn: cannot add parameters after Flatten")
	}
	if !buffer || dt == 0 {
		dt = ct.Float32
	}
	t := ct.Zeros(ct.Options{DType: dt}, shape...)
	if init != nil {
		ct.NoGrad(func() { init(t) })
	}
	// Floating-point tensors take the store's dtype; all move to its device.
	target := dt
	if dt.IsFloat() {
		target = s.dtype
	}
	t = convert(t, s.device, target)
	if !buffer {
		t.SetRequiresGrad(true)
	}
	prm := &Param{Name: full, T: t, Buffer: buffer}
	s.params = append(s.params, prm)
	s.byName[full] = prm
	return prm
}

// convert moves t to dev/dt, freeing the original if a copy was made.
func convert(t *ct.Tensor, dev ct.Device, dt ct.DType) *ct.Tensor {
	if dev == ct.CPU && dt == t.DType() {
		return t
	}
	u := t.To(dev, dt)
	t.Free()
	return u
}

// All returns every parameter and buffer in state-dict order.
func (s *Store) All() []*Param { return s.params }

// Params returns the trainable parameters in state-dict order.
func (s *Store) Params() []*Param {
	var out []*Param
	for _, p := range s.params {
		if !p.Buffer {
			out = append(out, p)
		}
	}
	return out
}

// Tensors returns the trainable parameters' tensors (for an optimizer).
func (s *Store) Tensors() []*ct.Tensor {
	ps := s.Params()
	out := make([]*ct.Tensor, len(ps))
	for i, p := range ps {
		out[i] = p.T
	}
	return out
}

// Lookup finds a parameter or buffer by its full name.
func (s *Store) Lookup(name string) (*Param, bool) {
	p, ok := s.byName[name]
	return p, ok
}

// NumParams counts the elements of all trainable parameters.
func (s *Store) NumParams() int64 {
	var n int64
	for _, p := range s.Params() {
		n += p.T.Numel()
	}
	return n
}

// ParamBytes is the memory held by trainable parameters.
func (s *Store) ParamBytes() int64 { return s.NumParams() * int64(s.dtype.Size()) }

// Close frees every tensor of the store (including flat buffers). The store
// must not be used afterwards. Close is idempotent.
func (s *Store) Close() {
	for _, p := range s.params {
		p.T.Free()
	}
	s.flat.Free()
	s.flatGr.Free()
	s.flat, s.flatGr = nil, nil
}

// StateDict returns the store's tensors in state-dict order as new handles
// owned by sc that alias the live tensors (detached from autograd). Copy
// them if they must not change.
func (s *Store) StateDict(sc *ct.Scope) []ct.Named {
	out := make([]ct.Named, len(s.params))
	for i, p := range s.params {
		out[i] = ct.Named{Name: p.Name, T: sc.Adopt(p.T.Detach())}
	}
	return out
}

// LoadStateDict copies the values of sd into the store's tensors (converted
// to their dtype and device). With strict, every store entry must be present
// and sd must have no other entries; shapes must always match. On error the
// store is unchanged.
func (s *Store) LoadStateDict(sd []ct.Named, strict bool) error {
	byName := make(map[string]*ct.Tensor, len(sd))
	for _, n := range sd {
		byName[n.Name] = n.T
	}
	var missing, unexpected, badShape []string
	for _, p := range s.params {
		t, ok := byName[p.Name]
		if !ok {
			missing = append(missing, p.Name)
			continue
		}
		var ws, gs []int64
		if err := ct.Try(func() { ws, gs = p.T.Shape(), t.Shape() }); err != nil {
			return err
		}
		if fmt.Sprint(ws) != fmt.Sprint(gs) {
			badShape = append(badShape, fmt.Sprintf("%s: file has %v, model needs %v", p.Name, gs, ws))
		}
	}
	for _, n := range sd {
		if _, ok := s.byName[n.Name]; !ok {
			unexpected = append(unexpected, n.Name)
		}
	}
	var problems []string
	if len(badShape) > 0 {
		problems = append(problems, "shape mismatch: "+strings.Join(badShape, "; "))
	}
	if strict && len(missing) > 0 {
		problems = append(problems, "missing: "+strings.Join(missing, ", "))
	}
	if strict && len(unexpected) > 0 {
		sort.Strings(unexpected)
		problems = append(problems, "unexpected: "+strings.Join(unexpected, ", "))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrStateDict, strings.Join(problems, "; "))
	}
	// Stage every value as a new tensor on its destination's device and
	// dtype first: every allocation or conversion that can fail happens
	// here, before the store is touched, and no staged value aliases the
	// store (a source overlapping a parameter would make copy_ fail half-way).
	// The copies then run between same-shape, same-dtype, same-device,
	// non-overlapping tensors. The cost is one transient copy of sd.
	sc := ct.NewScope()
	defer sc.Close()
	staged := make([]*ct.Tensor, len(s.params))
	err := ct.Try(func() {
		for i, p := range s.params {
			t, ok := byName[p.Name]
			if !ok {
				continue
			}
			dev, dt := p.T.Device(), p.T.DType()
			v := sc.Adopt(t.To(dev, dt))
			if t.Device() == dev && t.DType() == dt {
				v = sc.Adopt(v.Clone()) // To returned an alias of t
			}
			staged[i] = v
		}
	})
	if err != nil {
		return fmt.Errorf("%w: staging the values (store unchanged): %w", ErrStateDict, err)
	}
	return ct.Try(func() {
		ct.NoGrad(func() {
			for i, p := range s.params {
				if staged[i] != nil {
					p.T.Copy_(staged[i])
				}
			}
		})
	})
}

// Load reads a state dict from a .safetensors file or a PyTorch .pt/.pth/.ckpt
// file (torch.save) and loads it (see LoadStateDict). The error names the file.
func (s *Store) Load(path string, strict bool) error {
	var sd []ct.Named
	var err error
	switch strings.ToLower(filepath.Ext(path)) {
	case ".safetensors":
		sd, _, err = ct.LoadSafetensors(path, ct.CPU)
	default:
		sd, err = ct.LoadPT(path, ct.CPU)
	}
	if err != nil {
		return err
	}
	defer ct.FreeAll(sd)
	if err := s.LoadStateDict(sd, strict); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Save writes the state dict to path as safetensors, atomically.
func (s *Store) Save(path string, metadata map[string]string) error {
	sc := ct.NewScope()
	defer sc.Close()
	var sd []ct.Named
	if err := ct.Try(func() { sd = s.StateDict(sc) }); err != nil {
		return err
	}
	return ct.SaveSafetensors(path, sd, metadata)
}

// SetRequiresGrad turns gradient tracking of every trainable parameter on
// or off (off freezes the model, e.g. a frozen autoencoder).
func (s *Store) SetRequiresGrad(on bool) {
	for _, p := range s.Params() {
		p.T.SetRequiresGrad(on)
	}
}
