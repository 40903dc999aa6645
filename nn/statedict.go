package nn

import (
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
