package cgotorch

// Named pairs a tensor with its state-dict name (e.g. "layers.0.fc.weight").
type Named struct {
	Name string
	T    *Tensor
}

// FreeAll frees every tensor in ns.
func FreeAll(ns []Named) {
	for _, n := range ns {
		n.T.Free()
	}
}
