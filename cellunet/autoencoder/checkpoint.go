package autoencoder

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// CheckpointName is the reference's checkpoint file name,
// "model_seed={seed}_step={step}.pt" (VAE_train.py). The file holds the
// full state_dict (parameters and BatchNorm buffers) after step+1 updates.
func CheckpointName(seed, step int) string {
	return fmt.Sprintf("model_seed=%d_step=%d.pt", seed, step)
}

// stateName is the resumable sidecar next to a checkpoint.
func stateName(seed, step int) string {
	return fmt.Sprintf("state_seed=%d_step=%d.safetensors", seed, step)
}

var checkpointRE = regexp.MustCompile(`^model_seed=(-?\d+)_step=(\d+)\.pt$`)

// ParseCheckpointName extracts seed and step from a path whose base name is
// CheckpointName(seed, step).
func ParseCheckpointName(path string) (seed, step int, ok bool) {
	m := checkpointRE.FindStringSubmatch(filepath.Base(path))
	if m == nil {
		return 0, 0, false
	}
	seed, err1 := strconv.Atoi(m[1])
	step, err2 := strconv.Atoi(m[2])
	return seed, step, err1 == nil && err2 == nil
}

// StateDict returns the model's parameters and buffers in the reference's
// state_dict order and names, as handles owned by s aliasing the live
// tensors (detached from autograd).
func (m *Model) StateDict(s *ct.Scope) []ct.Named {
	out := make([]ct.Named, len(m.params))
	for i, p := range m.params {
		out[i] = ct.Named{Name: m.relName(p.Name), T: s.Adopt(p.T.Detach())}
	}
	return out
}

// Save writes the state_dict to path in torch.save's format (a .pt file
// that torch.load and VAE.load_state_dict accept), atomically.
func (m *Model) Save(path string) error {
	s := ct.NewScope()
	defer s.Close()
	var sd []ct.Named
	if err := ct.Try(func() { sd = m.StateDict(s) }); err != nil {
		return err
	}
	if err := ct.SaveStateDictPT(path, sd); err != nil {
		return fmt.Errorf("autoencoder: saving %s: %w", path, err)
	}
	return nil
}

// readStateDict reads a .pt (torch.save) or .safetensors state_dict onto
// the CPU; the caller frees the tensors.
func readStateDict(path string) ([]ct.Named, error) {
	if strings.EqualFold(filepath.Ext(path), ".safetensors") {
		sd, _, err := ct.LoadSafetensors(path, ct.CPU)
		return sd, err
	}
	return ct.LoadPT(path, ct.CPU)
}

// LoadCheckpoint loads a reference-format state_dict (.pt written by
// torch.save or by Save, or .safetensors) strictly: every key present, no
// others, same shapes. A checkpoint for another gene count is rejected
// with an error naming both counts. On error the model is unchanged.
func (m *Model) LoadCheckpoint(path string) error {
	sd, err := readStateDict(path)
	if err != nil {
		return fmt.Errorf("autoencoder: %w", err)
	}
	defer ct.FreeAll(sd)
	if err := m.loadStateDict(sd); err != nil {
		return fmt.Errorf("autoencoder: checkpoint %s: %w", path, err)
	}
	return nil
}

func (m *Model) loadStateDict(sd []ct.Named) error {
	byName := make(map[string]*ct.Tensor, len(sd))
	for _, n := range sd {
		byName[n.Name] = n.T
	}
	if g, err := genesOf(byName); err == nil && g != m.cfg.Genes {
		return fmt.Errorf("it has %d genes but the model has %d genes", g, m.cfg.Genes)
	}
	var missing, unexpected, badShape []string
	for _, p := range m.params {
		name := m.relName(p.Name)
		t, ok := byName[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		if ws, gs := p.T.Shape(), t.Shape(); !slices.Equal(ws, gs) {
			badShape = append(badShape, fmt.Sprintf("%s: file %v, model %v", name, gs, ws))
		}
	}
	own := make(map[string]bool, len(m.params))
	for _, p := range m.params {
		own[m.relName(p.Name)] = true
	}
	for _, n := range sd {
		if !own[n.Name] {
			unexpected = append(unexpected, n.Name)
		}
	}
	var problems []string
	if len(badShape) > 0 {
		problems = append(problems, "shape mismatch: "+strings.Join(badShape, "; "))
	}
	if len(missing) > 0 {
		problems = append(problems, "missing: "+strings.Join(missing, ", "))
	}
	if len(unexpected) > 0 {
		slices.Sort(unexpected)
		problems = append(problems, "unexpected: "+strings.Join(unexpected, ", "))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", nn.ErrStateDict, strings.Join(problems, "; "))
	}
	return ct.Try(func() {
		ct.NoGrad(func() {
			for _, p := range m.params {
				p.T.Copy_(byName[m.relName(p.Name)])
			}
		})
	})
}

// genesOf reads G from the first encoder Linear's weight [H0, G].
func genesOf(sd map[string]*ct.Tensor) (int64, error) {
	w, ok := sd["encoder.network.0.1.weight"]
	if !ok || w.NDim() != 2 {
		return 0, fmt.Errorf("no 2-D encoder.network.0.1.weight")
	}
	return w.Dim(1), nil
}

// ConfigFromStateDict infers the architecture (genes, hidden widths,
// latent width) from a checkpoint's tensor shapes; dropout is 0.
func ConfigFromStateDict(sd []ct.Named) (Config, error) {
	byName := make(map[string]*ct.Tensor, len(sd))
	for _, n := range sd {
		byName[n.Name] = n.T
	}
	g, err := genesOf(byName)
	if err != nil {
		return Config{}, fmt.Errorf("autoencoder: not an autoencoder state_dict: %w", err)
	}
	cfg := Config{Genes: g}
	for i := 0; ; i++ {
		w, ok := byName[fmt.Sprintf("encoder.network.%d.1.weight", i)]
		if !ok {
			out, ok := byName[fmt.Sprintf("encoder.network.%d.weight", i)]
			if !ok || out.NDim() != 2 {
				return Config{}, fmt.Errorf("autoencoder: state_dict has no encoder output layer encoder.network.%d.weight", i)
			}
			cfg.Latent = out.Dim(0)
			break
		}
		cfg.Hidden = append(cfg.Hidden, w.Dim(0))
	}
	return cfg, cfg.Validate()
}

// Load builds a model on dev from a checkpoint (.pt or .safetensors),
// inferring the architecture from its shapes, and loads it strictly. The
// model owns its store: Close it when done. Loading draws no random
// numbers. If genes > 0 it must equal the
// checkpoint's gene count (e.g. the data's column count); the error names
// both numbers.
func Load(path string, dev ct.Device, genes int64) (*Model, error) {
	sd, err := readStateDict(path)
	if err != nil {
		return nil, fmt.Errorf("autoencoder: %w", err)
	}
	defer ct.FreeAll(sd)
	var cfg Config
	if err := ct.Try(func() { cfg, err = ConfigFromStateDict(sd) }); err != nil {
		return nil, fmt.Errorf("autoencoder: checkpoint %s: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (checkpoint %s)", err, path)
	}
	if genes > 0 && genes != cfg.Genes {
		return nil, fmt.Errorf("autoencoder: checkpoint %s has %d genes but the data has %d genes", path, cfg.Genes, genes)
	}
	st := nn.NewStore(dev)
	m, err := build(st.Root(), cfg, false)
	if err != nil {
		st.Close()
		return nil, err
	}
	m.owned = true
	if err := m.loadStateDict(sd); err != nil {
		m.Close()
		return nil, fmt.Errorf("autoencoder: checkpoint %s: %w", path, err)
	}
	return m, nil
}
