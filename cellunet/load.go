package cellunet

import (
	"fmt"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// ConfigFromStateDict infers the architecture (input width and hidden
// widths) from a Cell_Unet state_dict's shapes: layers.i.fc.weight is
// [H[i], in]. Dropout is the reference's 0.
func ConfigFromStateDict(sd []ct.Named) (Config, error) {
	byName := make(map[string]*ct.Tensor, len(sd))
	for _, n := range sd {
		byName[n.Name] = n.T
	}
	var cfg Config
	for i := 0; ; i++ {
		w, ok := byName[fmt.Sprintf("layers.%d.fc.weight", i)]
		if !ok {
			break
		}
		if w.NDim() != 2 {
			return Config{}, fmt.Errorf("cellunet: layers.%d.fc.weight has shape %v, want 2-D", i, w.Shape())
		}
		if i == 0 {
			cfg.InputDim = w.Dim(1)
		}
		cfg.Hidden = append(cfg.Hidden, w.Dim(0))
	}
	if len(cfg.Hidden) == 0 {
		return Config{}, fmt.Errorf("cellunet: not a Cell_Unet state_dict (no layers.0.fc.weight)")
	}
	return cfg, cfg.Validate()
}

// Loaded is a model read from a checkpoint with the store that owns its
// parameters.
type Loaded struct {
	*Model
	Store *nn.Store
}

// Close frees the model and its store. Idempotent.
func (l *Loaded) Close() {
	l.Model.Close()
	l.Store.Close()
}

// Load builds a Cell_Unet on dev from a state_dict file (.pt written by
// torch.save or gotorch-train, or .safetensors), inferring the
// architecture from its shapes, and loads it strictly. The model is in
// evaluation mode. (Building it first draws the default initialisation
// from the default CPU generator; the load overwrites it.)
func Load(path string, dev ct.Device) (*Loaded, error) {
	m, st, err := nn.LoadModel(path, dev, "cellunet", ConfigFromStateDict, New)
	if err != nil {
		return nil, err
	}
	return &Loaded{Model: m, Store: st}, nil
}
