package trainer

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
	"strings"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/ptfile"
)

// Checkpoint files of step label S in SaveDir, with the reference's names:
//
//	model{S:06d}.pt         Cell_Unet state_dict (52 tensors)
//	ema_{rate}_{S:06d}.pt   the same keys holding an EMA
//	opt{S:06d}.pt           torch.optim.AdamW state_dict
//	state{S:06d}.safetensors  everything else needed to continue exactly:
//	                        RNG states, data permutation and position,
//	                        sampler history, log window, loss scale, counters
//
// Every file is written atomically (temporary file, fsync, rename) and the
// state file last, so a checkpoint without its state file is incomplete and
// resuming from a directory skips it. An in-loop checkpoint S holds the
// parameters after S+1 updates; the final one (S = total) after S updates.
func modelFile(dir string, s int) string { return filepath.Join(dir, fmt.Sprintf("model%06d.pt", s)) }
func optFile(dir string, s int) string   { return filepath.Join(dir, fmt.Sprintf("opt%06d.pt", s)) }
func stateFile(dir string, s int) string {
	return filepath.Join(dir, fmt.Sprintf("state%06d.safetensors", s))
}
func emaFile(dir, rate string, s int) string {
	return filepath.Join(dir, fmt.Sprintf("ema_%s_%06d.pt", rate, s))
}

// trainerState is the scalar part of the state file (its JSON metadata).
type trainerState struct {
	Version     int     `json:"version"`
	Label       int     `json:"label"`
	NextStep    int     `json:"next_step"`
	AdamStep    int64   `json:"adam_step"`
	LR          float64 `json:"lr"`
	LgLossScale float64 `json:"lg_loss_scale"`
	Microbatch  int     `json:"microbatch"`
	DataPos     int64   `json:"data_pos"`
	DataEpoch   int64   `json:"data_epoch"`
	Params      int64   `json:"params"`
	Config      string  `json:"config"`
	SaveBase    int     `json:"save_base,omitempty"`
}

func (tr *trainer) write(path string, fn func() error) error {
	if tr.cfg.Hooks.BeforeSave != nil {
		if err := tr.cfg.Hooks.BeforeSave(path); err != nil {
			return err
		}
	}
	return fn()
}

// save writes checkpoint label; next is the step a resumed run starts at.
// Data-parallel ranks hold identical state: rank 0 alone writes it.
func (tr *trainer) save(label, next int) error {
	if !tr.comm.IsRoot() {
		tr.lastSaved = label
		return nil
	}
	dir := tr.cfg.SaveDir
	s := ct.NewScope()
	defer s.Close()
	var model []ct.Named
	var emas [][]ct.Named
	err := ct.Try(func() {
		model = tr.store.ViewsOf(s, tr.store.FlatParams())
		for _, e := range tr.emas {
			emas = append(emas, tr.store.ViewsOf(s, e))
		}
	})
	if err != nil {
		return err
	}
	if err := tr.write(modelFile(dir, label), func() error { return ct.SaveStateDictPT(modelFile(dir, label), model) }); err != nil {
		return fmt.Errorf("saving checkpoint %d: %w", label, err)
	}
	for k, e := range emas {
		p := emaFile(dir, tr.cfg.emaName(k), label)
		if err := tr.write(p, func() error { return ct.SaveStateDictPT(p, e) }); err != nil {
			return fmt.Errorf("saving checkpoint %d: %w", label, err)
		}
	}
	if err := tr.write(optFile(dir, label), func() error { return tr.saveOpt(s, optFile(dir, label)) }); err != nil {
		return fmt.Errorf("saving checkpoint %d: %w", label, err)
	}
	if err := tr.write(stateFile(dir, label), func() error { return tr.saveState(s, stateFile(dir, label), label, next) }); err != nil {
		return fmt.Errorf("saving checkpoint %d: %w", label, err)
	}
	tr.lastSaved = label
	return nil
}

// saveOpt writes the AdamW state in torch.optim.AdamW.state_dict() layout,
// so Python can load it into an optimizer over Cell_Unet's parameters.
func (tr *trainer) saveOpt(s *ct.Scope, path string) error {
	ms, vs := tr.store.ViewsOf(s, tr.m), tr.store.ViewsOf(s, tr.v)
	state := &ptfile.Dict{}
	params := make([]any, len(ms))
	for i := range ms {
		params[i] = i
		if tr.adamStep == 0 {
			continue
		}
		m, err := ct.PTTensorStream(s, "", ms[i].T)
		if err != nil {
			return err
		}
		v, err := ct.PTTensorStream(s, "", vs[i].T)
		if err != nil {
			return err
		}
		step := ptfile.Tensor{DType: "float32", Data: float32Bytes(float32(tr.adamStep))}
		state.Set(i, &ptfile.Dict{Keys: []any{"step", "exp_avg", "exp_avg_sq"}, Values: []any{step, m, v}})
	}
	group := &ptfile.Dict{
		Keys: []any{"lr", "betas", "eps", "weight_decay", "amsgrad", "foreach", "maximize", "capturable", "params"},
		Values: []any{tr.lr, ptfile.Tuple{0.9, 0.999}, 1e-8, tr.cfg.WeightDecay, false, nil, false, false,
			params},
	}
	return ct.SavePT(path, &ptfile.Dict{Keys: []any{"state", "param_groups"}, Values: []any{state, []any{group}}})
}

func float32Bytes(f float32) []byte {
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, math.Float32bits(f))
	return b
}

func (tr *trainer) saveState(s *ct.Scope, path string, label, next int) error {
	cfgJSON, err := json.Marshal(tr.cfg.public())
	if err != nil {
		return err
	}
	st := trainerState{
		Version: 1, Label: label, NextStep: next, AdamStep: tr.adamStep, LR: tr.lr,
		LgLossScale: tr.lg, Microbatch: tr.mb, DataPos: tr.data.pos, DataEpoch: tr.data.epoch,
		Params: tr.store.NumParams(), Config: string(cfgJSON), SaveBase: tr.saveBase,
	}
	meta, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var ts []ct.Named
	for _, g := range []struct {
		name string
		gen  *ct.Generator
	}{{"rng.data", tr.dataGen}, {"rng.noise", tr.noiseGen}} {
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
	if tr.data.perm != nil {
		ts = append(ts, ct.Named{Name: "data.perm", T: tr.data.perm})
	}
	ts = append(ts, ct.Named{Name: "log.window", T: tr.win.acc})
	ts = append(ts, tr.sampler.State(s)...)
	return ct.SaveSafetensors(path, ts, map[string]string{"trainer_state": string(meta)})
}

// resumePoint finds the checkpoint to resume from: a directory (its newest
// complete checkpoint) or a model file modelNNNNNN.pt.
func resumePoint(path string) (dir string, label int, complete bool, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", 0, false, fmt.Errorf("resume checkpoint: %w", err)
	}
	if st.IsDir() {
		labels, err := completeLabels(path)
		if err != nil {
			return "", 0, false, err
		}
		if len(labels) == 0 {
			return "", 0, false, fmt.Errorf("resume checkpoint %s: no complete checkpoint (model, opt and state files of one step)", path)
		}
		return path, labels[len(labels)-1], true, nil
	}
	label, ok := parseLabel(filepath.Base(path))
	if !ok {
		return "", 0, false, fmt.Errorf("resume checkpoint %s: expected a directory or a file named modelNNNNNN.pt", path)
	}
	dir = filepath.Dir(path)
	_, serr := os.Stat(stateFile(dir, label))
	return dir, label, serr == nil, nil
}

// CheckResume reports, without reading any checkpoint, whether path can be
// resumed from: a directory holding a complete checkpoint, or an existing
// file named modelNNNNNN.pt. Train checks the contents; this cheap check
// lets a caller refuse a bad path before it loads the data.
func CheckResume(path string) error {
	dir, label, _, err := resumePoint(path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(modelFile(dir, label)); err != nil {
		return fmt.Errorf("resume checkpoint: %w", err)
	}
	return nil
}

var modelName = regexp.MustCompile(`^model(\d+)\.pt$`)

// parseLabel: the integer after "model" and before ".pt" (the reference's
// parse_resume_step_from_filename, restricted to our names).
func parseLabel(base string) (int, bool) {
	m := modelName.FindStringSubmatch(base)
	if m == nil {
		return 0, false
	}
	v, err := strconv.Atoi(m[1])
	return v, err == nil
}

func completeLabels(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		label, ok := parseLabel(e.Name())
		if !ok {
			continue
		}
		if _, err := os.Stat(stateFile(dir, label)); err != nil {
			continue
		}
		if _, err := os.Stat(optFile(dir, label)); err != nil {
			continue
		}
		out = append(out, label)
	}
	sort.Ints(out)
	return out, nil
}

// restore loads checkpoint label from dir. Without a state file (a
// checkpoint written by the reference) it restores weights, EMA and
// optimizer and, as the reference does, continues at step label, saving
// when (step − label) % save_interval == 0. From label 0 it loads, as the
// reference (whose `if self.resume_step:` is false for 0), the weights
// only: fresh AdamW moments and EMA = the loaded weights.
func (tr *trainer) restore(dir string, label int, complete bool) error {
	if err := tr.store.Load(modelFile(dir, label), true); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	refZero := !complete && label == 0
	flat := tr.store.FlatParams()
	for k, e := range tr.emas {
		p := emaFile(dir, tr.cfg.emaName(k), label)
		if _, err := os.Stat(p); refZero || errors.Is(err, os.ErrNotExist) {
			if err := ct.Try(func() { ct.NoGrad(func() { e.Copy_(flat) }) }); err != nil {
				return err
			}
			continue
		}
		if err := tr.loadFlat(p, e); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
	}
	if _, err := os.Stat(optFile(dir, label)); err == nil && !refZero {
		if err := tr.loadOpt(optFile(dir, label)); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
	} else if complete {
		return fmt.Errorf("resume: %s is missing", optFile(dir, label))
	}
	tr.step = label
	if !complete {
		tr.saveBase = label
		what := "weights, EMA and optimizer restored"
		if refZero {
			what = "weights restored; from step 0 the reference loads neither the optimizer nor the EMA (EMA = the weights)"
		}
		fmt.Fprintf(tr.out, "resuming from %s without a state file (reference checkpoint): %s; RNG, data order and sampler start fresh\n", modelFile(dir, label), what)
		return nil
	}
	return tr.loadState(stateFile(dir, label))
}

// loadFlat copies a state-dict file into a flat buffer shaped like the params.
func (tr *trainer) loadFlat(path string, dst *ct.Tensor) error {
	sd, err := ct.LoadPT(path, ct.CPU)
	if err != nil {
		return err
	}
	defer ct.FreeAll(sd)
	byName := map[string]*ct.Tensor{}
	for _, n := range sd {
		byName[n.Name] = n.T
	}
	s := ct.NewScope()
	defer s.Close()
	return ct.Try(func() {
		for _, v := range tr.store.ViewsOf(s, dst) {
			src, ok := byName[v.Name]
			if !ok {
				panic(&ct.Error{Code: ct.CodeInvalidArgument, Op: "load", Msg: fmt.Sprintf("%s: missing %s", path, v.Name)})
			}
			if fmt.Sprint(src.Shape()) != fmt.Sprint(v.T.Shape()) {
				panic(&ct.Error{Code: ct.CodeInvalidArgument, Op: "load", Msg: fmt.Sprintf("%s: %s has shape %v, model needs %v", path, v.Name, src.Shape(), v.T.Shape())})
			}
			ct.NoGrad(func() { v.T.Copy_(src) })
		}
	})
}

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
	if lr, ok := scalars["param_groups.0.lr"].(float64); ok {
		tr.lr = lr
	}
	s := ct.NewScope()
	defer s.Close()
	ms, vs := tr.store.ViewsOf(s, tr.m), tr.store.ViewsOf(s, tr.v)
	return ct.Try(func() {
		for i := range ms {
			pre := "state." + strconv.Itoa(i) + "."
			m, v := byName[pre+"exp_avg"], byName[pre+"exp_avg_sq"]
			if m == nil || v == nil {
				if i == 0 {
					tr.adamStep = 0
					return // an optimizer that has not stepped yet
				}
				panic(&ct.Error{Code: ct.CodeInvalidArgument, Op: "load", Msg: fmt.Sprintf("%s: no state for parameter %d", path, i)})
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

func (tr *trainer) loadState(path string) error {
	ts, meta, err := ct.LoadSafetensors(path, tr.dev)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	defer ct.FreeAll(ts)
	var st trainerState
	if err := json.Unmarshal([]byte(meta["trainer_state"]), &st); err != nil || st.Version != 1 {
		return fmt.Errorf("resume: %s: bad trainer_state metadata: %v", path, err)
	}
	if st.Params != tr.store.NumParams() {
		return fmt.Errorf("resume: %s was written for %d parameters, this model has %d", path, st.Params, tr.store.NumParams())
	}
	byName := map[string]*ct.Tensor{}
	for _, n := range ts {
		byName[n.Name] = n.T
	}
	tr.step, tr.adamStep, tr.lr, tr.lg = st.NextStep, st.AdamStep, st.LR, st.LgLossScale
	tr.saveBase = st.SaveBase
	// A microbatch reduced by an out-of-memory retry stays reduced; a smaller
	// configured one wins.
	if st.Microbatch > 0 && st.Microbatch < tr.mb {
		tr.mb = st.Microbatch
	}
	tr.data.pos, tr.data.epoch = st.DataPos, st.DataEpoch
	for _, g := range []struct {
		name string
		gen  *ct.Generator
	}{{"rng.data", tr.dataGen}, {"rng.noise", tr.noiseGen}} {
		t := byName[g.name]
		if t == nil {
			return fmt.Errorf("resume: %s: missing %s", path, g.name)
		}
		var b []byte
		if err := ct.Try(func() { b = t.Bytes() }); err != nil {
			return err
		}
		if err := g.gen.SetState(b); err != nil {
			return fmt.Errorf("resume: %s: %s: %w", path, g.name, err)
		}
	}
	return ct.Try(func() {
		if p := byName["data.perm"]; p != nil {
			tr.data.perm.Free()
			tr.data.perm = p.Clone()
		}
		if w := byName["log.window"]; w != nil {
			ct.NoGrad(func() { tr.win.acc.Copy_(w) })
		}
		var samplerState []ct.Named
		for _, n := range ts {
			if strings.HasPrefix(n.Name, "sampler.") {
				samplerState = append(samplerState, n)
			}
		}
		if len(samplerState) > 0 {
			if err := tr.sampler.LoadState(samplerState); err != nil {
				panic(&ct.Error{Code: ct.CodeInvalidArgument, Op: "resume", Msg: err.Error()})
			}
		}
	})
}
