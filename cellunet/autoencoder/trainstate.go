package autoencoder

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// trainState is the scalar part of the sidecar (its JSON metadata).
type trainState struct {
	Version   int    `json:"version"`
	Step      int    `json:"step"`
	AdamStep  int64  `json:"adam_step"`
	DataPos   int    `json:"data_pos"`
	DataEpoch int    `json:"data_epoch"`
	DataRows  int    `json:"data_rows"`
	PCG       []byte `json:"pcg"`
	LossN     int    `json:"loss_n"`
	Genes     int64  `json:"genes"`
	Params    int64  `json:"params"`
}

const stateKey = "autoencoder_train_state"

func (tr *trainer) saveState(label int) error {
	pcg, err := tr.pcg.MarshalBinary()
	if err != nil {
		return err
	}
	meta, err := json.Marshal(trainState{
		Version: 1, Step: label, AdamStep: tr.adamStep, DataPos: tr.pos, DataEpoch: tr.epoch,
		DataRows: tr.data.Rows(), PCG: pcg, LossN: tr.lossN, Genes: tr.cfg.Model.Genes, Params: tr.store.NumParams(),
	})
	if err != nil {
		return err
	}
	gen, err := tr.gen.State()
	if err != nil {
		return err
	}
	s := ct.NewScope()
	defer s.Close()
	var ts []ct.Named
	err = ct.Try(func() {
		ts = []ct.Named{
			{Name: "adam.exp_avg", T: tr.m},
			{Name: "adam.exp_avg_sq", T: tr.v},
			{Name: "rng.dropout", T: s.FromSlice(gen)},
			{Name: "log.loss_sum", T: tr.lossSum},
		}
		if tr.perm != nil {
			ts = append(ts, ct.Named{Name: "data.perm", T: s.FromSlice(tr.perm)})
		}
	})
	if err != nil {
		return err
	}
	path := filepath.Join(tr.cfg.SaveDir, stateName(tr.cfg.FileSeed, label))
	return ct.SaveSafetensors(path, ts, map[string]string{stateKey: string(meta)})
}

// resume loads checkpoint path and, when present, its sidecar; training
// continues at the checkpoint's step + 1.
func (tr *trainer) resume(path string) error {
	seed, label, ok := ParseCheckpointName(path)
	if !ok {
		return fmt.Errorf("autoencoder: resume: %s is not named model_seed={seed}_step={step}.pt", path)
	}
	if err := tr.model.LoadCheckpoint(path); err != nil {
		return fmt.Errorf("autoencoder: resume: %w", err)
	}
	tr.step = label + 1
	tr.lastSaved = label
	sidecar := filepath.Join(filepath.Dir(path), stateName(seed, label))
	if _, err := os.Stat(sidecar); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(tr.out, "resume: %s has no sidecar %s; continuing at step %d with fresh AdamW moments and data order\n",
			path, filepath.Base(sidecar), tr.step)
		return nil
	}
	ts, meta, err := ct.LoadSafetensors(sidecar, tr.cfg.Device)
	if err != nil {
		return fmt.Errorf("autoencoder: resume: %w", err)
	}
	defer ct.FreeAll(ts)
	var st trainState
	if err := json.Unmarshal([]byte(meta[stateKey]), &st); err != nil {
		return fmt.Errorf("autoencoder: resume: %s: bad state metadata: %w", sidecar, err)
	}
	if st.Version != 1 || st.Step != label {
		return fmt.Errorf("autoencoder: resume: %s: version %d step %d, want version 1 step %d", sidecar, st.Version, st.Step, label)
	}
	if st.Genes != tr.cfg.Model.Genes || st.Params != tr.store.NumParams() {
		return fmt.Errorf("autoencoder: resume: %s was written for %d genes and %d parameters, the model has %d genes and %d parameters",
			sidecar, st.Genes, st.Params, tr.cfg.Model.Genes, tr.store.NumParams())
	}
	if st.DataRows != tr.data.Rows() {
		return fmt.Errorf("autoencoder: resume: %s was written for %d cells, the data has %d", sidecar, st.DataRows, tr.data.Rows())
	}
	byName := map[string]*ct.Tensor{}
	for _, n := range ts {
		byName[n.Name] = n.T
	}
	for _, k := range []string{"adam.exp_avg", "adam.exp_avg_sq", "rng.dropout", "log.loss_sum"} {
		if byName[k] == nil {
			return fmt.Errorf("autoencoder: resume: %s lacks %s", sidecar, k)
		}
	}
	if err := tr.pcg.UnmarshalBinary(st.PCG); err != nil {
		return fmt.Errorf("autoencoder: resume: %s: %w", sidecar, err)
	}
	var genState []byte
	err = ct.Try(func() {
		ct.NoGrad(func() {
			tr.m.Copy_(byName["adam.exp_avg"])
			tr.v.Copy_(byName["adam.exp_avg_sq"])
			tr.lossSum.Copy_(byName["log.loss_sum"])
		})
		genState = byName["rng.dropout"].Bytes()
		if p := byName["data.perm"]; p != nil {
			tr.perm = p.Int64s()
		}
	})
	if err != nil {
		return fmt.Errorf("autoencoder: resume: %s: %w", sidecar, err)
	}
	if err := tr.gen.SetState(genState); err != nil {
		return fmt.Errorf("autoencoder: resume: %w", err)
	}
	tr.adamStep, tr.pos, tr.epoch, tr.lossN = st.AdamStep, st.DataPos, st.DataEpoch, st.LossN
	return nil
}
