package autoencoder

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

func smallPretrainedConfig() Config {
	return Config{Genes: 50, Hidden: []int64{64, 48, 32}, Latent: 16}
}

// TestLoadPretrained loads testdata/scimilarity (random weights in the
// SCimilarity layout, 70 genes) into a freshly seeded 50-gene model and
// compares every tensor with what the reference's VAE_train.py
// --state_dict does in PyTorch (testdata/make_scimilarity.py).
func TestLoadPretrained(t *testing.T) {
	want, _, err := ct.LoadSafetensors(filepath.Join("testdata", "scimilarity_expected.safetensors"), ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(want)
	if err := ct.ManualSeed(5); err != nil {
		t.Fatal(err)
	}
	st := nn.NewStore(ct.CPU)
	defer st.Close()
	m, err := New(st.Root(), smallPretrainedConfig())
	if err != nil {
		t.Fatal(err)
	}
	init := map[string][]float32{}
	for _, p := range m.Params() {
		if p.T.DType() == ct.Float32 {
			init[p.Name] = p.T.Float32s()
		}
	}
	rep, err := m.LoadPretrained(filepath.Join("testdata", "scimilarity"))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*ct.Tensor{}
	for _, p := range m.Params() {
		byName[p.Name] = p.T
	}
	if len(want) != len(byName) {
		t.Fatalf("model has %d tensors, the reference %d", len(byName), len(want))
	}
	for _, w := range want {
		got, ok := byName[w.Name]
		if !ok {
			t.Fatalf("model lacks %s", w.Name)
		}
		if w.T.DType() == ct.Float32 {
			if !slices.Equal(got.Float32s(), w.T.Float32s()) {
				t.Errorf("%s differs from the reference's --state_dict initialisation", w.Name)
			}
		} else if !slices.Equal(got.Int64s(), w.T.Int64s()) {
			t.Errorf("%s = %v, reference %v", w.Name, got.Int64s(), w.T.Int64s())
		}
	}
	// The semantics spelled out: dropped layers keep the seeded values,
	// the first PReLU comes from the file (the key typo), and the rest.
	kept := []string{"encoder.network.0.1.weight", "encoder.network.0.1.bias", "encoder.network.0.2.weight",
		"encoder.network.0.2.bias", "encoder.network.0.2.running_mean", "encoder.network.0.2.running_var",
		"encoder.network.0.2.num_batches_tracked", "decoder.network.3.weight", "decoder.network.3.bias"}
	if !slices.Equal(rep.Kept, kept) {
		t.Errorf("kept %q, want %q", rep.Kept, kept)
	}
	for _, k := range kept {
		if v, ok := init[k]; ok && !slices.Equal(byName[k].Float32s(), v) {
			t.Errorf("%s changed; the reference drops it", k)
		}
	}
	if !slices.Contains(rep.Loaded, "encoder.network.0.3.weight") || slices.Equal(byName["encoder.network.0.3.weight"].Float32s(), init["encoder.network.0.3.weight"]) {
		t.Error("encoder.network.0.3.weight (first PReLU) not loaded; the reference's key typo lets it through")
	}
	if len(rep.Loaded)+len(rep.Kept) != len(m.Params()) {
		t.Errorf("%d loaded + %d kept != %d tensors", len(rep.Loaded), len(rep.Kept), len(m.Params()))
	}
	if !slices.Equal(rep.Ignored, []string{"encoder.network.99.extra", "decoder.network.99.extra"}) {
		t.Errorf("ignored %q", rep.Ignored)
	}
	if len(rep.GeneOrder) != 70 || rep.GeneOrder[0] != "SCG0" {
		t.Errorf("gene order: %d genes %q...", len(rep.GeneOrder), rep.GeneOrder[:min(3, len(rep.GeneOrder))])
	}
}

func TestLoadPretrainedErrors(t *testing.T) {
	st := nn.NewStore(ct.CPU)
	defer st.Close()
	m, err := New(st.Root(), smallPretrainedConfig())
	if err != nil {
		t.Fatal(err)
	}
	before := m.Params()[5].T.Float32s()
	dir := t.TempDir()
	copyFile := func(name string) {
		b, err := os.ReadFile(filepath.Join("testdata", "scimilarity", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Missing directory, missing decoder, a corrupt file, another width.
	if _, err := m.LoadPretrained(filepath.Join(dir, "nope")); !errors.Is(err, ErrPretrained) {
		t.Errorf("missing directory: %v, want ErrPretrained", err)
	}
	copyFile(PretrainedEncoder)
	if _, err := m.LoadPretrained(dir); err == nil {
		t.Error("missing decoder.ckpt: no error")
	}
	if err := os.WriteFile(filepath.Join(dir, PretrainedDecoder), []byte("not a pickle"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.LoadPretrained(dir); err == nil {
		t.Error("corrupt decoder.ckpt: no error")
	}
	copyFile(PretrainedDecoder)
	st2 := nn.NewStore(ct.CPU)
	defer st2.Close()
	wide, err := New(st2.Root(), Config{Genes: 50, Hidden: []int64{64, 64, 32}, Latent: 16})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wide.LoadPretrained(dir); err == nil {
		t.Error("another hidden width: no shape error")
	}
	if !slices.Equal(m.Params()[5].T.Float32s(), before) {
		t.Error("a failed load changed the model")
	}
}

// TestTrainPretrained: Train with Pretrained starts from the loaded
// weights (its first checkpoint is one AdamW step away from them).
func TestTrainPretrained(t *testing.T) {
	cfg := DefaultTrainConfig(50)
	cfg.Model = smallPretrainedConfig()
	cfg.MaxSteps, cfg.CheckpointFreq, cfg.LogEvery, cfg.BatchSize = 1, 1, 1, 16
	cfg.SaveDir = t.TempDir()
	cfg.Pretrained = filepath.Join("testdata", "scimilarity")
	cfg.Seed = 5
	data := Dense{Data: make([]float32, 32*50), NumCols: 50}
	for i := range data.Data {
		data.Data[i] = float32(i%7) * 0.3
	}
	if _, err := Train(t.Context(), cfg, data); err != nil {
		t.Fatal(err)
	}
	got, err := ct.LoadPT(filepath.Join(cfg.SaveDir, CheckpointName(0, 0)), ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(got)
	want, _, err := ct.LoadSafetensors(filepath.Join("testdata", "scimilarity_expected.safetensors"), ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(want)
	w := map[string]*ct.Tensor{}
	for _, n := range want {
		w[n.Name] = n.T
	}
	for _, n := range got {
		if n.Name != "encoder.network.1.1.weight" {
			continue
		}
		a, b := n.T.Float32s(), w[n.Name].Float32s()
		var worst float64
		for i := range a {
			worst = max(worst, float64(abs32(a[i]-b[i])))
		}
		// AdamW's first step moves each weight by about lr (5e-4).
		if worst > 2e-3 {
			t.Errorf("%s is %.3g from the pretrained value after one step", n.Name, worst)
		}
	}
	cfg.Init = cfg.Pretrained
	if cfg.Validate() == nil {
		t.Error("Init and Pretrained together: no error")
	}
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}
