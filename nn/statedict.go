package nn

import (
	"fmt"
	"path/filepath"
	"strings"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// ReadStateDict reads a state dict onto the CPU from a .safetensors file or
// a PyTorch .pt/.pth/.ckpt file (torch.save), by extension; the caller
// frees the tensors (cgotorch.FreeAll). Use it to inspect a checkpoint
// (e.g. infer an architecture from its shapes) before building a model.
func ReadStateDict(path string) ([]ct.Named, error) {
	if strings.EqualFold(filepath.Ext(path), ".safetensors") {
		sd, _, err := ct.LoadSafetensors(path, ct.CPU)
		return sd, err
	}
	return ct.LoadPT(path, ct.CPU)
}

// Model is what LoadModel builds: a module with constant tensors of its own
// (Close) and a training/evaluation mode.
type Model interface {
	Close()
	SetTraining(training bool)
}

// LoadModel builds a model on dev from a state-dict file: it reads the file
// (ReadStateDict), infers the configuration from its shapes (infer), builds
// the model in a new store (build, which draws the default initialisation)
// and loads the state dict strictly over it. The model is in evaluation
// mode; the caller closes the model and the store. Errors name the file and
// start with pkg (e.g. "cellunet").
func LoadModel[C any, M Model](path string, dev ct.Device, pkg string, infer func([]ct.Named) (C, error), build func(Path, C) (M, error)) (M, *Store, error) {
	var zero M
	sd, err := ReadStateDict(path)
	if err != nil {
		return zero, nil, fmt.Errorf("%s: %w", pkg, err)
	}
	defer ct.FreeAll(sd)
	var cfg C
	if perr := ct.Try(func() { cfg, err = infer(sd) }); perr != nil {
		return zero, nil, fmt.Errorf("%s: %s: %w", pkg, path, perr)
	}
	if err != nil {
		return zero, nil, fmt.Errorf("%w (checkpoint %s)", err, path)
	}
	st := NewStore(dev)
	m, err := build(st.Root(), cfg)
	if err != nil {
		st.Close()
		return zero, nil, err
	}
	if err := st.LoadStateDict(sd, true); err != nil {
		m.Close()
		st.Close()
		return zero, nil, fmt.Errorf("%s: checkpoint %s: %w", pkg, path, err)
	}
	m.SetTraining(false)
	return m, st, nil
}
