package autoencoder

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// Files of an SCimilarity model directory (zenodo record 8286452, e.g.
// annotation_model_v1) that VAE_train.py's --state_dict reads.
const (
	PretrainedEncoder   = "encoder.ckpt"
	PretrainedDecoder   = "decoder.ckpt"
	PretrainedGeneOrder = "gene_order.tsv"
)

// ErrPretrained is wrapped by every LoadPretrained error: the directory
// is missing, unreadable, or holds another architecture.
var ErrPretrained = errors.New("unusable pretrained model")

// The keys the reference deletes before its non-strict load (VAE_model.py
// Encoder.load_state / Decoder.load_state). The encoder list ends with the
// typo 'network.0.3.weight]', which matches no key: the first PReLU slope
// network.0.3.weight is loaded.
var (
	pretrainedEncoderDropped = []string{"network.0.1.weight", "network.0.1.bias", "network.0.2.weight", "network.0.2.bias",
		"network.0.2.running_mean", "network.0.2.running_var", "network.0.2.num_batches_tracked", "network.0.3.weight]"}
	pretrainedDecoderDropped = []string{"network.3.weight", "network.3.bias"}
)

// PretrainedLoad reports what LoadPretrained took from a directory.
type PretrainedLoad struct {
	// Loaded are the model keys set from the files; Kept the model keys
	// left at their initial values (dropped by the reference, or absent
	// from the files); Ignored the file keys the model does not have.
	Loaded, Kept, Ignored []string
	// GeneOrder is gene_order.tsv (nil when absent). As in the reference it
	// is not used: the first encoder layer and the last decoder layer,
	// the only gene-indexed ones, are not loaded.
	GeneOrder []string
}

// LoadPretrained initialises the model from an SCimilarity-style
// directory exactly as VAE_train.py --state_dict DIR does: DIR/encoder.ckpt
// and DIR/decoder.ckpt are torch.save files of {"state_dict": …} (read by
// the pure-Go unpickler); from the encoder's the first Linear
// (network.0.1.*) and first BatchNorm (network.0.2.*, running statistics
// included) are deleted, from the decoder's the output Linear
// (network.3.*); the rest is loaded non-strictly into encoder.* and
// decoder.*: keys the model lacks are ignored, model keys the files lack
// keep their values, a shape mismatch is an error (as load_state_dict
// with strict=False raises). Because of the reference's key typo the first
// encoder PReLU slope (network.0.3.weight) is loaded. Genes are not
// aligned: only the inner layers are reused. On error the model is
// unchanged.
func (m *Model) LoadPretrained(dir string) (PretrainedLoad, error) {
	rep, err := m.loadPretrained(dir)
	if err != nil {
		return PretrainedLoad{}, pretrainedError{err}
	}
	return rep, nil
}

// pretrainedError keeps the message of err and matches ErrPretrained.
type pretrainedError struct{ err error }

func (e pretrainedError) Error() string        { return e.err.Error() }
func (e pretrainedError) Unwrap() error        { return e.err }
func (e pretrainedError) Is(target error) bool { return target == ErrPretrained }

func (m *Model) loadPretrained(dir string) (PretrainedLoad, error) {
	var rep PretrainedLoad
	if st, err := os.Stat(dir); err != nil {
		return rep, fmt.Errorf("autoencoder: pretrained model directory %s: %w", dir, errors.Unwrap(err))
	} else if !st.IsDir() {
		return rep, fmt.Errorf("autoencoder: pretrained model directory %s: not a directory (want an SCimilarity model directory with %s and %s)", dir, PretrainedEncoder, PretrainedDecoder)
	}
	own := make(map[string]*nn.Param, len(m.params))
	for _, p := range m.params {
		own[m.relName(p.Name)] = p
	}
	type pending struct {
		p *nn.Param
		t *ct.Tensor
	}
	var load []pending
	var files [][]ct.Named
	defer func() {
		for _, sd := range files {
			ct.FreeAll(sd)
		}
	}()
	for _, part := range []struct {
		prefix, file string
		dropped      []string
	}{
		{"encoder.", PretrainedEncoder, pretrainedEncoderDropped},
		{"decoder.", PretrainedDecoder, pretrainedDecoderDropped},
	} {
		path := filepath.Join(dir, part.file)
		sd, err := ct.LoadPT(path, ct.CPU)
		if err != nil {
			return rep, fmt.Errorf("autoencoder: pretrained model: %w", err)
		}
		files = append(files, sd)
		n := 0
		for _, e := range sd {
			key, ok := strings.CutPrefix(e.Name, "state_dict.")
			if !ok {
				continue // hyper_parameters, optimizer states, ...
			}
			n++
			if slices.Contains(part.dropped, key) {
				continue
			}
			p, ok := own[part.prefix+key]
			if !ok {
				rep.Ignored = append(rep.Ignored, part.prefix+key)
				continue
			}
			if ws, gs := p.T.Shape(), e.T.Shape(); !slices.Equal(ws, gs) {
				return rep, fmt.Errorf("autoencoder: pretrained model %s: %s has shape %v but the model's %s%s is %v (another architecture: the reference's autoencoder has hidden widths %v and latent %d)",
					path, key, gs, part.prefix, key, ws, m.cfg.Hidden, m.cfg.Latent)
			}
			load = append(load, pending{p, e.T})
		}
		if n == 0 {
			return rep, fmt.Errorf("autoencoder: pretrained model %s: no \"state_dict\" entry with tensors (want torch.save({\"state_dict\": module.state_dict()}))", path)
		}
	}
	loaded := map[string]bool{}
	err := ct.Try(func() {
		ct.NoGrad(func() {
			for _, l := range load {
				l.p.T.Copy_(l.t)
				loaded[m.relName(l.p.Name)] = true
			}
		})
	})
	if err != nil {
		return PretrainedLoad{}, fmt.Errorf("autoencoder: pretrained model %s: %w", dir, err)
	}
	for _, p := range m.params {
		if name := m.relName(p.Name); loaded[name] {
			rep.Loaded = append(rep.Loaded, name)
		} else {
			rep.Kept = append(rep.Kept, name)
		}
	}
	if genes, err := readLinesFile(filepath.Join(dir, PretrainedGeneOrder)); err == nil {
		rep.GeneOrder = genes
	} else if !errors.Is(err, os.ErrNotExist) {
		return rep, fmt.Errorf("autoencoder: pretrained model: %w", err)
	}
	return rep, nil
}

// readLinesFile returns the non-empty lines of a text file (first
// tab-separated field of each).
func readLinesFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		l, _, _ = strings.Cut(strings.TrimRight(l, "\r"), "\t")
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

// loadPretrained runs LoadPretrained for Train and prints what it loaded.
func (tr *trainer) loadPretrained(dir string) error {
	rep, err := tr.model.LoadPretrained(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(tr.out, "initialised from %s as the reference's --state_dict: %d tensors loaded, %d kept from the seeded initialisation (%s), %d file entries ignored\n",
		dir, len(rep.Loaded), len(rep.Kept), strings.Join(rep.Kept, ", "), len(rep.Ignored))
	if rep.GeneOrder != nil {
		fmt.Fprintf(tr.out, "%s lists %d genes; as in the reference they are not aligned with the data's %d: the gene-indexed layers are trained from scratch\n",
			PretrainedGeneOrder, len(rep.GeneOrder), tr.cfg.Model.Genes)
	}
	return nil
}
