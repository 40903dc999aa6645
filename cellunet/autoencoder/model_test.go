package autoencoder_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/nn"
)

// summaries returns per-tensor sum and sum of squares in float64.
func summaries(s *ct.Scope, ps []*nn.Param) (sum, sumsq []float64) {
	for _, p := range ps {
		d := s.Adopt(p.T.Detach()).ToDType(ct.Float64)
		sum = append(sum, d.Sum().Item())
		sumsq = append(sumsq, d.Square().Sum().Item())
	}
	return sum, sumsq
}

// checkKeysAndInit compares names, shapes (golden metadata "keys") and the
// per-tensor sums of the initialisation with PyTorch's.
func checkKeysAndInit(t *testing.T, m *autoencoder.Model, golden string) {
	t.Helper()
	s := ct.NewScope()
	defer s.Close()
	g := cgotorchtest.Golden(t, s, golden)
	_, meta, err := ct.LoadSafetensors(golden, ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	var keys [][2]json.RawMessage
	if err := json.Unmarshal([]byte(meta["keys"]), &keys); err != nil {
		t.Fatal(err)
	}
	ps := m.Params()
	if len(ps) != len(keys) {
		t.Fatalf("%d tensors, reference %d", len(ps), len(keys))
	}
	for i, p := range ps {
		var name string
		var shape []int64
		_ = json.Unmarshal(keys[i][0], &name)
		_ = json.Unmarshal(keys[i][1], &shape)
		if p.Name != name || fmt.Sprint(p.T.Shape()) != fmt.Sprint(shape) {
			t.Errorf("tensor %d: %s %v, reference %s %v", i, p.Name, p.T.Shape(), name, shape)
		}
	}
	sum, sq := summaries(s, ps)
	ws, wq := g["init.sum"].Float64s(), g["init.sumsq"].Float64s()
	for i := range ws {
		// Bit-identical values summed by the same libtorch kernel.
		if sum[i] != ws[i] || sq[i] != wq[i] {
			t.Errorf("init %s: sum %.17g sumsq %.17g, PyTorch %.17g %.17g", ps[i].Name, sum[i], sq[i], ws[i], wq[i])
		}
	}
}

// TestDefaultArchitecture: the reference's VAE(13431) — 31,995,133
// parameters, state_dict names, order and shapes, and the seeded
// initialisation equal PyTorch's.
func TestDefaultArchitecture(t *testing.T) {
	cfg := autoencoder.DefaultConfig(13431)
	if n := cfg.NumParams(); n != 31995133 {
		t.Errorf("Config.NumParams = %d, want 31,995,133", n)
	}
	st, m := newModel(t, cfg, 0)
	if n := st.NumParams(); n != 31995133 {
		t.Errorf("allocated model has %d parameters, want 31,995,133", n)
	}
	s := ct.NewScope()
	defer s.Close()
	g := cgotorchtest.Golden(t, s, "testdata/default_golden.safetensors")
	if want := g["num_params"].Int64s()[0]; want != 31995133 {
		t.Errorf("PyTorch counts %d parameters", want)
	}
	if len(m.Params()) != 2*(3*8+2) {
		t.Errorf("%d state_dict entries, want 52", len(m.Params()))
	}
	checkKeysAndInit(t, m, "testdata/default_golden.safetensors")
}

func TestNumParams(t *testing.T) {
	cases := []struct {
		cfg  autoencoder.Config
		want int64
	}{
		{autoencoder.DefaultConfig(13431), 31995133}, // Open Problems (spec §5)
		{autoencoder.DefaultConfig(18996), 43397818}, // Tabula Muris
		{smallConfig(), 0},                           // checked against the allocation below
		{autoencoder.Config{Genes: 7, Hidden: []int64{5}, Latent: 3}, (7*5 + 5 + 10 + 1) + (5*3 + 3) + (3*5 + 5 + 10 + 1) + (5*7 + 7)},
	}
	for _, c := range cases {
		st, _ := newModel(t, c.cfg, 0)
		if got := st.NumParams(); c.cfg.Genes < 13431 && got != c.cfg.NumParams() {
			t.Errorf("%+v: allocated %d, computed %d", c.cfg, got, c.cfg.NumParams())
		}
		if c.want != 0 && c.cfg.NumParams() != c.want {
			t.Errorf("%+v: NumParams %d, want %d", c.cfg, c.cfg.NumParams(), c.want)
		}
	}
}

// TestTrainStepMatchesPyTorch: for a seeded small model (hidden [64,48,32]
// exercises the decoder's reversed widths) the init, one train-mode forward
// (latents, reconstruction, loss, updated running statistics), the
// gradients and one fused AdamW update (lr 5e-4, wd 0.01) equal PyTorch's.
func TestTrainStepMatchesPyTorch(t *testing.T) {
	st, m := newModel(t, smallConfig(), 1)
	checkKeysAndInit(t, m, "testdata/small_golden.safetensors")
	if err := st.Flatten(); err != nil {
		t.Fatal(err)
	}
	s := ct.NewScope()
	defer s.Close()
	g := smallGolden(t, s)
	x := s.Adopt(g["X"].Narrow(0, 0, 32)).Contiguous()
	z := m.Encode(x, autoencoder.Training)
	recon := m.Decode(z, autoencoder.Training)
	loss := recon.MSELoss(x, ct.ReduceMean)
	cgotorchtest.AssertClose(t, "latent", z.Detach(), g["train.z"], rtol, atol)
	cgotorchtest.AssertClose(t, "reconstruction", recon.Detach(), g["train.recon"], rtol, atol)
	cgotorchtest.AssertClose(t, "loss", loss.Detach().Reshape(1), g["train.loss"], rtol, 0)
	for _, p := range m.Params() {
		if w, ok := g["train.buf."+p.Name]; ok {
			cgotorchtest.AssertClose(t, p.Name, p.T, w, rtol, atol)
		} else if p.Buffer {
			t.Errorf("no golden for buffer %s", p.Name)
		}
	}
	loss.Backward()
	// The bias of a Linear followed by train-mode BatchNorm has a zero
	// gradient in exact arithmetic (BN removes the mean); both sides get
	// rounding noise there (|g| ~ 1e-9), and AdamW's first step moves such
	// an element by up to ±lr whatever the noise's sign.
	assertGradsMatchGolden(t, s, st, g)
	// The AdamW step is checked on PyTorch's own gradients: where a gradient
	// is at rounding-noise level (the exactly-zero pre-BatchNorm biases, or a
	// stray element elsewhere), Adam's first step is ±lr depending on the
	// noise's sign, so feeding our own gradients would compare noise.
	ct.NoGrad(func() {
		for _, p := range st.Params() {
			p.T.Grad(s).Copy_(g["grad."+p.Name])
		}
	})
	m1, v1 := s.Zeros(ct.Options{}, st.NumParams()), s.Zeros(ct.Options{}, st.NumParams())
	err := ct.FusedAdamW(st.FlatParams(), st.FlatGrads(), m1, v1, 1, ct.AdamWConfig{LR: 5e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}, ct.FusedStep{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Params() {
		cgotorchtest.AssertClose(t, "after AdamW "+p.Name, p.T.Detach(), g["step1."+p.Name], rtol, atol)
	}
}

// TestReferenceCheckpointLoads: a state_dict written by torch.save loads
// strictly, the architecture is inferred from it, and a checkpoint saved
// here loads back identically.
func TestReferenceCheckpointLoads(t *testing.T) {
	m, err := autoencoder.Load("testdata/small.pt", ct.CPU, 50)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if c := m.Config(); fmt.Sprint(c) != fmt.Sprint(smallConfig()) {
		t.Errorf("inferred config %+v, want %+v", c, smallConfig())
	}
	path := filepath.Join(t.TempDir(), autoencoder.CheckpointName(0, 150000))
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	m2, err := autoencoder.Load(path, ct.CPU, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	s := ct.NewScope()
	defer s.Close()
	a, b := m.StateDict(s), m2.StateDict(s)
	for i := range a {
		if a[i].Name != b[i].Name {
			t.Fatalf("entry %d: %s vs %s", i, a[i].Name, b[i].Name)
		}
		cgotorchtest.AssertClose(t, a[i].Name, b[i].T, a[i].T, 0, 0)
	}
	// Loading draws no random numbers: the caller's seeded stream is intact.
	draw := func() []float32 {
		s := ct.NewScope()
		defer s.Close()
		return s.Randn(ct.Options{}, nil, 4).Float32s()
	}
	if err := ct.ManualSeed(5); err != nil {
		t.Fatal(err)
	}
	want := draw()
	if err := ct.ManualSeed(5); err != nil {
		t.Fatal(err)
	}
	m3, err := autoencoder.Load(path, ct.CPU, 50)
	if err != nil {
		t.Fatal(err)
	}
	m3.Close()
	if got := draw(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Load changed the default generator's stream: %v, want %v", got, want)
	}
	// A model under a sub-path keeps the reference's names in its state_dict.
	st := nn.NewStore(ct.CPU)
	defer st.Close()
	sub, err := autoencoder.New(st.Root().Sub("ae"), smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.LoadCheckpoint("testdata/small.pt"); err != nil {
		t.Fatal(err)
	}
	if n := sub.StateDict(s)[0].Name; n != "encoder.network.0.1.weight" || sub.Params()[0].Name != "ae.encoder.network.0.1.weight" {
		t.Errorf("sub-path names: state_dict %s, store %s", n, sub.Params()[0].Name)
	}
	if seed, step, ok := autoencoder.ParseCheckpointName(path); !ok || seed != 0 || step != 150000 {
		t.Errorf("ParseCheckpointName(%s) = %d, %d, %v", path, seed, step, ok)
	}
}

// TestGeneCountMismatch: checkpoints, data and models of different gene
// counts are rejected with both numbers in the error.
func TestGeneCountMismatch(t *testing.T) {
	_, m := newModel(t, autoencoder.Config{Genes: 60, Hidden: []int64{64, 48, 32}, Latent: 16}, 0)
	err := m.LoadCheckpoint("testdata/small.pt")
	if err == nil || !strings.Contains(err.Error(), "50 genes") || !strings.Contains(err.Error(), "60 genes") {
		t.Errorf("LoadCheckpoint: %v", err)
	}
	if _, err := autoencoder.Load("testdata/small.pt", ct.CPU, 51); err == nil || !strings.Contains(err.Error(), "50 genes") || !strings.Contains(err.Error(), "51 genes") {
		t.Errorf("Load: %v", err)
	}
	_, m2 := newModel(t, smallConfig(), 0)
	csr := &autoencoder.CSR{NumRows: 3, NumCols: 49, Indptr: make([]int64, 4)}
	if _, err := m2.EncodeAll(csr, autoencoder.DefaultInferOptions()); err == nil || !strings.Contains(err.Error(), "49 genes") || !strings.Contains(err.Error(), "50 genes") {
		t.Errorf("EncodeAll: %v", err)
	}
	cfg := autoencoder.DefaultTrainConfig(50)
	cfg.Model = smallConfig()
	cfg.SaveDir = t.TempDir()
	if _, err := autoencoder.Train(t.Context(), cfg, csr); err == nil || !strings.Contains(err.Error(), "49 genes") || !strings.Contains(err.Error(), "50 genes") {
		t.Errorf("Train: %v", err)
	}
	// A missing tensor is a strict-load error.
	_, m3 := newModel(t, autoencoder.Config{Genes: 50, Hidden: []int64{64, 48}, Latent: 16}, 0)
	if err := m3.LoadCheckpoint("testdata/small.pt"); !errors.Is(err, nn.ErrStateDict) {
		t.Errorf("loading a deeper checkpoint: %v", err)
	}
	if _, err := os.Stat("testdata/small.pt"); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		cfg autoencoder.Config
		ok  bool
	}{
		{autoencoder.DefaultConfig(13431), true},
		{smallConfig(), true},
		{autoencoder.Config{Genes: 0, Hidden: []int64{4}, Latent: 2}, false},
		{autoencoder.Config{Genes: 5, Hidden: nil, Latent: 2}, false},
		{autoencoder.Config{Genes: 5, Hidden: []int64{4, 0}, Latent: 2}, false},
		{autoencoder.Config{Genes: 5, Hidden: []int64{4}, Latent: 0}, false},
		{autoencoder.Config{Genes: 5, Hidden: []int64{4}, Latent: 2, Dropout: 1}, false},
		{autoencoder.Config{Genes: 5, Hidden: []int64{4}, Latent: 2, InputDropout: -0.1}, false},
	}
	for _, c := range cases {
		if err := c.cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: Validate() = %v", c.cfg, err)
		}
	}
	for _, s := range []string{"dataset", "Running", "training"} {
		if _, err := autoencoder.ParseBNMode(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := autoencoder.ParseBNMode("eval"); err == nil {
		t.Error("ParseBNMode(eval) succeeded")
	}
}
