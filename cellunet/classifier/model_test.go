package classifier_test

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/classifier"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/nn"
)

// fp32 parity with PyTorch where the math is the same (≤1e-5 relative).
const (
	rtol = 1e-5
	atol = 1e-6
)

func TestMain(m *testing.M) { cgotorchtest.Main(m) }

// newDefault builds the golden's classifier (12 classes) after ManualSeed(seed).
func newDefault(t *testing.T, seed uint64) (*nn.Store, *classifier.Model) {
	t.Helper()
	if err := ct.ManualSeed(seed); err != nil {
		t.Fatal(err)
	}
	st := nn.NewStore(ct.CPU)
	m, err := classifier.New(st.Root(), classifier.DefaultConfig(12))
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); st.Close() })
	return st, m
}

func summaries(s *ct.Scope, ts []*ct.Tensor) (sum, sumsq []float64) {
	for _, x := range ts {
		d := s.Adopt(x.Detach()).ToDType(ct.Float64)
		sum = append(sum, d.Sum().Item())
		sumsq = append(sumsq, d.Square().Sum().Item())
	}
	return sum, sumsq
}

// assertSummaries compares per-tensor sums and sums of squares; a sum's
// absolute tolerance scales with the tensor's norm.
func assertSummaries(t *testing.T, what string, gotSum, gotSq []float64, want map[string]*ct.Tensor, prefix string, names []string, rt float64) {
	t.Helper()
	ws, wq := want[prefix+".sum"].Float64s(), want[prefix+".sumsq"].Float64s()
	if len(ws) != len(gotSum) {
		t.Fatalf("%s: %d tensors, want %d", what, len(gotSum), len(ws))
	}
	for i := range ws {
		if !cgotorchtest.Close(gotSum[i], ws[i], 0, 1e-6+rt*math.Sqrt(wq[i])) || !cgotorchtest.Close(gotSq[i], wq[i], rt, 1e-9) {
			t.Errorf("%s %s: sum %.9g sumsq %.9g, want %.9g %.9g", what, names[i], gotSum[i], gotSq[i], ws[i], wq[i])
		}
	}
}

// TestDefaultArchitecture: the reference's key names, shapes and order
// (including the unused emb_layers3 and the BatchNorm buffers), 1,647,628
// parameters for 12 classes, and the same initial values after the same seed.
func TestDefaultArchitecture(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	want := cgotorchtest.Golden(t, s, "testdata/default_golden.safetensors")
	_, meta, err := ct.LoadSafetensors("testdata/default_golden.safetensors", ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	var keys [][2]json.RawMessage
	if err := json.Unmarshal([]byte(meta["keys"]), &keys); err != nil {
		t.Fatal(err)
	}
	st, _ := newDefault(t, 0)
	all := st.All()
	if len(all) != len(keys) {
		t.Fatalf("%d tensors, reference %d", len(all), len(keys))
	}
	var names []string
	var ts []*ct.Tensor
	var params int64
	for i, p := range all {
		var name string
		var shape []int64
		_ = json.Unmarshal(keys[i][0], &name)
		_ = json.Unmarshal(keys[i][1], &shape)
		if p.Name != name || fmt.Sprint(p.T.Shape()) != fmt.Sprint(shape) {
			t.Errorf("tensor %d: %s %v, reference %s %v", i, p.Name, p.T.Shape(), name, shape)
		}
		if !p.Buffer || classifier.IsUnused(p.Name) {
			params += p.T.Numel()
		}
		names = append(names, p.Name)
		ts = append(ts, p.T)
	}
	if params != 1647628 || classifier.DefaultConfig(12).NumParams() != 1647628 {
		t.Errorf("parameters %d (Config.NumParams %d), want 1,647,628", params, classifier.DefaultConfig(12).NumParams())
	}
	if n := classifier.DefaultConfig(22).NumParams(); n != 1650198 {
		t.Errorf("22 classes: %d parameters, want 1,650,198", n)
	}
	sum, sq := summaries(s, ts)
	rt, _ := cgotorchtest.RNGTolerance()
	assertSummaries(t, "init", sum, sq, want, "init", names, rt)
}

// TestForwardTrainStepAndGuidanceMatchPyTorch: eval-mode logits, train-mode
// logits with dropout masks from the same seed, the forward and backward of
// a training step (loss, gradients, the running statistics it leaves) and
// the guidance gradient all match PyTorch.
func TestForwardTrainStepAndGuidanceMatchPyTorch(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	g := cgotorchtest.Golden(t, s, "testdata/default_golden.safetensors")
	_, m := newDefault(t, 0)
	xt, tt, y := g["x_t"], g["t"], g["y"]

	m.SetTraining(false)
	cgotorchtest.AssertClose(t, "eval logits", s.Adopt(m.Forward(xt, tt)), g["eval_logits"], rtol, atol)

	// Train mode with dropout: the masks come from the default generator
	// after the same seed, as in Python.
	m.SetTraining(true)
	if err := ct.ManualSeed(5); err != nil {
		t.Fatal(err)
	}
	rt, at := cgotorchtest.RNGTolerance()
	cgotorchtest.AssertClose(t, "train logits (dropout)", s.Adopt(m.Forward(xt, tt)), g["train_dropout_logits"], max(rt, rtol), max(at, atol))

	// A training step's forward and backward without dropout, on a fresh
	// model with the same initial weights.
	cfg := m.Config()
	cfg.Dropout = 0
	if err := ct.ManualSeed(0); err != nil {
		t.Fatal(err)
	}
	st3 := nn.NewStore(ct.CPU)
	defer st3.Close()
	m3, err := classifier.New(st3.Root(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m3.Close()
	logits := s.Adopt(m3.Forward(xt, tt))
	cgotorchtest.AssertClose(t, "train logits", logits, g["train_logits"], rtol, atol)
	loss := logits.CrossEntropy(y, ct.ReduceMean)
	cgotorchtest.AssertClose(t, "loss", loss.Reshape(1), g["loss"], rtol, atol)
	loss.Backward()
	var grads []*ct.Tensor
	for _, p := range st3.All() {
		if p.Buffer && !classifier.IsUnused(p.Name) {
			continue
		}
		gr := p.T.Grad(s)
		if gr == nil {
			gr = s.Zeros(ct.Options{}, 1) // the unused emb_layers3: no gradient, as in PyTorch
		}
		grads = append(grads, gr)
	}
	var gnames []string
	for _, p := range st3.All() {
		if !p.Buffer || classifier.IsUnused(p.Name) {
			gnames = append(gnames, p.Name)
		}
	}
	gs, gq := summaries(s, grads)
	assertSummaries(t, "grad", gs, gq, g, "grad", gnames, 1e-4)
	for _, k := range []string{"norm1.running_mean", "norm2.running_var", "norm3.running_var", "norm3.num_batches_tracked"} {
		p, _ := st3.Lookup(k)
		cgotorchtest.AssertClose(t, "after the step "+k, p.T, g["after."+k], 1e-5, 1e-6)
	}

	// Guidance gradient in eval mode with the running statistics the step
	// left: s·∇_x Σ log softmax[y], s = 2.
	m3.SetTraining(false)
	gf := diffusion.ClassifierGuidance(diffusion.ClassifierTerm{Classifier: m3, Labels: y, Scale: 2})
	var grad *ct.Tensor
	ct.NoGrad(func() { grad = s.Adopt(gf(xt, tt)) })
	cgotorchtest.AssertClose(t, "guidance gradient", grad, g["guidance_grad"], 1e-4, 1e-6)
}

// TestReferenceCheckpointLoads: a state_dict written by torch.save loads
// (architecture inferred from its shapes), in evaluation mode with its
// running statistics, and gives PyTorch's logits.
func TestReferenceCheckpointLoads(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	g := cgotorchtest.Golden(t, s, "testdata/small_golden.safetensors")
	m, err := classifier.Load("testdata/small.pt", ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Config()
	if c.InputDim != 16 || fmt.Sprint(c.Hidden) != "[32 32 16]" || c.NumClass != 5 {
		t.Errorf("inferred config %+v", c)
	}
	cgotorchtest.AssertClose(t, "eval logits", s.Adopt(m.Forward(g["x"], g["t"])), g["eval_logits"], rtol, atol)
}

func TestConfigAndLoadErrors(t *testing.T) {
	bad := []classifier.Config{
		{InputDim: 0, Hidden: []int64{8, 8, 8}, NumClass: 2},
		{InputDim: 4, Hidden: []int64{8, 8}, NumClass: 2},
		{InputDim: 4, Hidden: []int64{7, 8, 8}, NumClass: 2},
		{InputDim: 4, Hidden: []int64{8, 8, 8}, NumClass: 0},
		{InputDim: 4, Hidden: []int64{8, 8, 8}, NumClass: 2, Dropout: 1},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	// A Cell_Unet checkpoint is not a classifier.
	if _, err := classifier.Load("../testdata/small.pt", ct.CPU); err == nil {
		t.Error("loading a Cell_Unet checkpoint as a classifier: no error")
	}
	if _, err := classifier.Load("testdata/nope.pt", ct.CPU); err == nil {
		t.Error("missing file: no error")
	}
}
