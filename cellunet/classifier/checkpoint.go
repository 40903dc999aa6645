package classifier

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/ptfile"
)

// Checkpoint files of step label S in SaveDir, with classifier_train.py's
// names:
//
//	model{S:06d}.pt           the state_dict (parameters, the unused
//	                          emb_layers3, BatchNorm buffers), torch.save format
//	opt{S:06d}.pt             torch.optim.AdamW's state_dict over the
//	                          reference's parameter list (no state for
//	                          emb_layers3, which never has a gradient)
//	state{S:06d}.safetensors  the rest of an exact resume: RNG states, data
//	                          permutation and position, log window, counters
//	                          (the AdamW moments are exact in the opt file)
//
// Each file is written atomically and the state file last, so a checkpoint
// without it is incomplete (resuming from a directory skips it).

// ModelFile is the path of checkpoint S's model file in dir.
func ModelFile(dir string, s int) string { return modelFile(dir, s) }

func modelFile(dir string, s int) string { return filepath.Join(dir, fmt.Sprintf("model%06d.pt", s)) }
func optFile(dir string, s int) string   { return filepath.Join(dir, fmt.Sprintf("opt%06d.pt", s)) }
func stateFile(dir string, s int) string {
	return filepath.Join(dir, fmt.Sprintf("state%06d.safetensors", s))
}

// state is the scalar part of the state file (its JSON metadata).
type state struct {
	Version   int     `json:"version"`
	Label     int     `json:"label"`
	AdamStep  int64   `json:"adam_step"`
	LR        float64 `json:"lr"`
	DataPos   int64   `json:"data_pos"`
	DataEpoch int64   `json:"data_epoch"`
	DataRows  int64   `json:"data_rows"`
	ValPos    int64   `json:"val_pos"`
	ValEpoch  int64   `json:"val_epoch"`
	Params    int64   `json:"params"`
}

const stateKey = "classifier_train_state"

// torchIndices maps each trainable parameter (Params() order) to its index
// in the reference's parameter list, which also holds emb_layers3.
func (tr *trainer) torchIndices() []int {
	var out []int
	k := 0
	for _, p := range tr.store.All() {
		switch {
		case !p.Buffer:
			out = append(out, k)
			k++
		case IsUnused(p.Name):
			k++
		}
	}
	return out
}

func (tr *trainer) numTorchParams() int {
	n := 0
	for _, p := range tr.store.All() {
		if !p.Buffer || IsUnused(p.Name) {
			n++
		}
	}
	return n
}

// save writes checkpoint label (the weights after label+1 updates).
func (tr *trainer) save(label int) error {
	if !tr.comm.IsRoot() { // data-parallel ranks hold identical state: rank 0 writes it
		tr.lastSaved = label
		return nil
	}
	dir := tr.cfg.SaveDir
	s := ct.NewScope()
	defer s.Close()
	var sd []ct.Named
	if err := ct.Try(func() { sd = tr.store.StateDict(s) }); err != nil {
		return err
	}
	if err := ct.SaveStateDictPT(modelFile(dir, label), sd); err != nil {
		return fmt.Errorf("classifier: saving checkpoint %d: %w", label, err)
	}
	if err := tr.saveOpt(s, optFile(dir, label)); err != nil {
		return fmt.Errorf("classifier: saving checkpoint %d: %w", label, err)
	}
	if err := tr.saveState(s, stateFile(dir, label), label); err != nil {
		return fmt.Errorf("classifier: saving checkpoint %d: %w", label, err)
	}
	tr.lastSaved = label
	fmt.Fprintf(tr.out, "saved %s\n", modelFile(dir, label))
	return nil
}

// saveOpt writes the AdamW state in torch.optim.AdamW.state_dict() layout
// (torch 1.13: per-parameter step as a float32 tensor).
func (tr *trainer) saveOpt(s *ct.Scope, path string) error {
	ms, vs := tr.store.ViewsOf(s, tr.m), tr.store.ViewsOf(s, tr.v)
	idx := tr.torchIndices()
	state := &ptfile.Dict{}
	if tr.adamStep > 0 {
		for i := range ms {
			m, err := ct.PTTensorStream(s, "", ms[i].T)
			if err != nil {
				return err
			}
			v, err := ct.PTTensorStream(s, "", vs[i].T)
			if err != nil {
				return err
			}
			b := make([]byte, 4)
			binary.LittleEndian.PutUint32(b, math.Float32bits(float32(tr.adamStep)))
			step := ptfile.Tensor{DType: "float32", Data: b}
			state.Set(idx[i], &ptfile.Dict{Keys: []any{"step", "exp_avg", "exp_avg_sq"}, Values: []any{step, m, v}})
		}
	}
	params := make([]any, tr.numTorchParams())
	for i := range params {
		params[i] = i
	}
	group := &ptfile.Dict{
		Keys: []any{"lr", "betas", "eps", "weight_decay", "amsgrad", "foreach", "maximize", "capturable", "params"},
		Values: []any{tr.lr, ptfile.Tuple{0.9, 0.999}, 1e-8, tr.cfg.WeightDecay, false, nil, false, false,
			params},
	}
	return ct.SavePT(path, &ptfile.Dict{Keys: []any{"state", "param_groups"}, Values: []any{state, []any{group}}})
}

func (tr *trainer) saveState(s *ct.Scope, path string, label int) error {
	st := state{Version: 1, Label: label, AdamStep: tr.adamStep, LR: tr.lr,
		DataPos: tr.train.pos, DataEpoch: tr.train.epoch, DataRows: tr.train.n, Params: tr.store.NumParams()}
	if tr.val != nil {
		st.ValPos, st.ValEpoch = tr.val.pos, tr.val.epoch
	}
	meta, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var ts []ct.Named
	for _, g := range tr.generators() {
		b, err := g.gen.State()
		if err != nil {
			return err
		}
		var t *ct.Tensor
		if err := ct.Try(func() { t = s.FromSlice(b) }); err != nil {
			return err
		}
		ts = append(ts, ct.Named{Name: g.name, T: t})
	}
	if tr.train.perm != nil {
		ts = append(ts, ct.Named{Name: "data.perm", T: tr.train.perm})
	}
	if tr.val != nil && tr.val.perm != nil {
		ts = append(ts, ct.Named{Name: "val.perm", T: tr.val.perm})
	}
	ts = append(ts, ct.Named{Name: "log.window", T: tr.win.acc})
	return ct.SaveSafetensors(path, ts, map[string]string{stateKey: string(meta)})
}

type namedGen struct {
	name string
	gen  *ct.Generator
}

func (tr *trainer) generators() []namedGen {
	return []namedGen{{"rng.data", tr.dataGen}, {"rng.noise", tr.noiseGen}, {"rng.dropout", tr.dropGen}, {"rng.val", tr.valGen}}
}

var modelName = regexp.MustCompile(`^model(\d+)\.pt$`)

// resumePoint finds the checkpoint to resume from: a directory (its newest
// complete checkpoint) or a model file modelNNNNNN.pt.
func resumePoint(path string) (dir string, label int, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", 0, fmt.Errorf("classifier: resume checkpoint: %w", err)
	}
	if st.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return "", 0, err
		}
		var labels []int
		for _, e := range entries {
			m := modelName.FindStringSubmatch(e.Name())
			if m == nil {
				continue
			}
			l, _ := strconv.Atoi(m[1])
			if _, err := os.Stat(stateFile(path, l)); err == nil {
				labels = append(labels, l)
			}
		}
		if len(labels) == 0 {
			return "", 0, fmt.Errorf("classifier: resume checkpoint %s: no complete checkpoint (model, opt and state files of one step)", path)
		}
		sort.Ints(labels)
		return path, labels[len(labels)-1], nil
	}
	m := modelName.FindStringSubmatch(filepath.Base(path))
	if m == nil {
		return "", 0, fmt.Errorf("classifier: resume checkpoint %s: expected a directory or a file named modelNNNNNN.pt", path)
	}
	label, err = strconv.Atoi(m[1])
	return filepath.Dir(path), label, err
}

// resume loads a checkpoint; training continues at its label + 1.
func (tr *trainer) resume(path string) error {
	dir, label, err := resumePoint(path)
	if err != nil {
		return err
	}
	if label+1 > tr.cfg.Iterations {
		return fmt.Errorf("classifier: resume checkpoint %s is step %d, at or past the last step %d of --iterations %d",
			modelFile(dir, label), label, tr.cfg.Iterations-1, tr.cfg.Iterations)
	}
	if err := tr.store.Load(modelFile(dir, label), true); err != nil {
		return fmt.Errorf("classifier: resume: %w", err)
	}
	tr.step, tr.lastSaved = label+1, label
	if _, err := os.Stat(optFile(dir, label)); err == nil {
		if err := tr.loadOpt(optFile(dir, label)); err != nil {
			return fmt.Errorf("classifier: resume: %w", err)
		}
	}
	sf := stateFile(dir, label)
	if _, err := os.Stat(sf); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(tr.out, "resuming after %s without a state file (a reference checkpoint): weights and optimizer restored; data order, noise and dropout start fresh\n", modelFile(dir, label))
		return nil
	}
	if err := tr.loadState(sf, label); err != nil {
		return fmt.Errorf("classifier: resume: %w", err)
	}
	fmt.Fprintf(tr.out, "resumed from %s at step %d\n", modelFile(dir, label), tr.step)
	return nil
}

// loadOpt restores AdamW moments, step and learning rate from a
// torch.optim.AdamW state_dict file (ours or the reference's).
func (tr *trainer) loadOpt(path string) error {
	ts, scalars, err := ct.LoadPTContents(path, ct.CPU)
	if err != nil {
		return err
	}
	defer ct.FreeAll(ts)
	byName := map[string]*ct.Tensor{}
	for _, n := range ts {
		byName[n.Name] = n.T
	}
	if lr, ok := scalars["param_groups.0.lr"].(float64); ok && !tr.cfg.AnnealLR {
		tr.lr = lr
	}
	s := ct.NewScope()
	defer s.Close()
	ms, vs := tr.store.ViewsOf(s, tr.m), tr.store.ViewsOf(s, tr.v)
	idx := tr.torchIndices()
	return ct.Try(func() {
		for i := range ms {
			pre := "state." + strconv.Itoa(idx[i]) + "."
			m, v := byName[pre+"exp_avg"], byName[pre+"exp_avg_sq"]
			if m == nil || v == nil {
				if i == 0 {
					tr.adamStep = 0
					return // an optimizer that has not stepped
				}
				panic(&ct.Error{Code: ct.CodeInvalidArgument, Op: "load", Msg: fmt.Sprintf("%s: no state for parameter %d", path, idx[i])})
			}
			if fmt.Sprint(m.Shape()) != fmt.Sprint(ms[i].T.Shape()) {
				panic(&ct.Error{Code: ct.CodeInvalidArgument, Op: "load", Msg: fmt.Sprintf("%s: %sexp_avg has shape %v, the parameter %v", path, pre, m.Shape(), ms[i].T.Shape())})
			}
			ct.NoGrad(func() {
				ms[i].T.Copy_(m)
				vs[i].T.Copy_(v)
			})
			if i == 0 {
				switch st := scalars[pre+"step"].(type) {
				case int64:
					tr.adamStep = st
				case float64:
					tr.adamStep = int64(st)
				default:
					if t := byName[pre+"step"]; t != nil {
						tr.adamStep = int64(t.Item())
					}
				}
			}
		}
	})
}

func (tr *trainer) loadState(path string, label int) error {
	ts, meta, err := ct.LoadSafetensors(path, tr.cfg.Device)
	if err != nil {
		return err
	}
	defer ct.FreeAll(ts)
	var st state
	if err := json.Unmarshal([]byte(meta[stateKey]), &st); err != nil || st.Version != 1 || st.Label != label {
		return fmt.Errorf("%s: not the state of step %d (metadata %q)", path, label, meta[stateKey])
	}
	if st.Params != tr.store.NumParams() || st.DataRows != tr.train.n {
		return fmt.Errorf("%s was written for %d parameters and %d cells; this run has %d and %d",
			path, st.Params, st.DataRows, tr.store.NumParams(), tr.train.n)
	}
	byName := map[string]*ct.Tensor{}
	for _, n := range ts {
		byName[n.Name] = n.T
	}
	for _, g := range tr.generators() {
		t := byName[g.name]
		if t == nil {
			return fmt.Errorf("%s: missing %s", path, g.name)
		}
		var b []byte
		if err := ct.Try(func() { b = t.Bytes() }); err != nil {
			return err
		}
		if err := g.gen.SetState(b); err != nil {
			return fmt.Errorf("%s: %s: %w", path, g.name, err)
		}
	}
	tr.adamStep, tr.lr = st.AdamStep, st.LR
	tr.train.pos, tr.train.epoch = st.DataPos, st.DataEpoch
	if tr.val != nil {
		tr.val.pos, tr.val.epoch = st.ValPos, st.ValEpoch
	}
	return ct.Try(func() {
		if p := byName["data.perm"]; p != nil {
			tr.train.perm.Free()
			tr.train.perm = p.Clone()
		}
		if p := byName["val.perm"]; p != nil && tr.val != nil && p.Numel() == tr.val.n {
			tr.val.perm.Free()
			tr.val.perm = p.Clone()
		} else if tr.val != nil {
			tr.val.perm.Free()
			tr.val.perm, tr.val.pos = nil, 0
		}
		if w := byName["log.window"]; w != nil {
			ct.NoGrad(func() { tr.win.acc.Copy_(w) })
		}
	})
}

// CheckResume reports, without reading any tensor, whether path names a
// checkpoint Train could resume from: a directory with a complete
// checkpoint, or an existing modelNNNNNN.pt.
func CheckResume(path string) error {
	dir, label, err := resumePoint(path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(modelFile(dir, label)); err != nil {
		return fmt.Errorf("classifier: resume checkpoint: %w", err)
	}
	return nil
}
