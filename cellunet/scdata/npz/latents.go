package npz

import (
	"fmt"
)

// Keys of a latent file. KeyCellGen is the reference's only key
// (np.savez(sample_dir, cell_gen=arr)); the others are optional extras.
const (
	KeyCellGen = "cell_gen" // float32 [N, dim]
	KeyLabels  = "labels"   // int64 [N], class id per row
	KeyClasses = "classes"  // <U [K], class id -> label string
)

// Latents is the content of a latent .npz file.
type Latents struct {
	N, Dim  int       // rows and latent width
	Data    []float32 // row-major [N, Dim]
	Labels  []int64   // nil when the file has none
	Classes []string  // nil when the file has none
}

// WriteLatents writes latents (row-major [n, dim] float32) to path as
// cell_gen, plus labels (int64 [n]) and classes (<U [K]) when non-nil,
// atomically. Labels must lie in [0, len(classes)) when classes is given.
func WriteLatents(path string, latents []float32, n, dim int, labels []int64, classes []string) error {
	if n < 0 || dim < 0 || len(latents) != n*dim {
		return fmt.Errorf("%s: %d latent values do not fill [%d, %d]", path, len(latents), n, dim)
	}
	arrays := []Named{{KeyCellGen, &Array{Shape: []int{n, dim}, Data: latents}}}
	if labels != nil {
		if len(labels) != n {
			return fmt.Errorf("%s: %d labels for %d rows", path, len(labels), n)
		}
		if classes != nil {
			for i, l := range labels {
				if l < 0 || l >= int64(len(classes)) {
					return fmt.Errorf("%s: label %d of row %d outside [0, %d) classes", path, l, i, len(classes))
				}
			}
		}
		arrays = append(arrays, Named{KeyLabels, &Array{Shape: []int{n}, Data: labels}})
	}
	if classes != nil {
		arrays = append(arrays, Named{KeyClasses, &Array{Shape: []int{len(classes)}, Data: classes}})
	}
	return Write(path, arrays...)
}

// ReadLatents reads a latent file: cell_gen must be a 2-D float32 array
// (float64 is converted); labels and classes are read when present.
func ReadLatents(path string) (*Latents, error) {
	m, err := Read(path)
	if err != nil {
		return nil, err
	}
	a, ok := m[KeyCellGen]
	if !ok {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		return nil, fmt.Errorf("%s: no %q array (keys: %v): %w", path, KeyCellGen, keys, ErrFormat)
	}
	if len(a.Shape) != 2 {
		return nil, fmt.Errorf("%s: %s has shape %v, want [N, dim]: %w", path, KeyCellGen, a.Shape, ErrFormat)
	}
	l := &Latents{N: a.Shape[0], Dim: a.Shape[1]}
	switch v := a.Data.(type) {
	case []float32:
		l.Data = v
	case []float64:
		l.Data = make([]float32, len(v))
		for i, x := range v {
			l.Data[i] = float32(x)
		}
	default:
		return nil, fmt.Errorf("%s: %s has dtype %s, want float32: %w", path, KeyCellGen, a.Descr(), ErrFormat)
	}
	if b, ok := m[KeyLabels]; ok {
		switch v := b.Data.(type) {
		case []int64:
			l.Labels = v
		case []int32:
			l.Labels = make([]int64, len(v))
			for i, x := range v {
				l.Labels[i] = int64(x)
			}
		default:
			return nil, fmt.Errorf("%s: %s has dtype %s, want int64: %w", path, KeyLabels, b.Descr(), ErrFormat)
		}
		if len(b.Shape) != 1 || len(l.Labels) != l.N {
			return nil, fmt.Errorf("%s: %s has shape %v, want [%d]: %w", path, KeyLabels, b.Shape, l.N, ErrFormat)
		}
	}
	if c, ok := m[KeyClasses]; ok {
		v, ok := c.Strings()
		if !ok || len(c.Shape) != 1 {
			return nil, fmt.Errorf("%s: %s is %s%v, want a 1-D unicode array: %w", path, KeyClasses, c.Descr(), c.Shape, ErrFormat)
		}
		l.Classes = v
	}
	return l, nil
}
