package classifier_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/classifier"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/nn"
)

// Parity with PyTorch follows the rule in cgotorch/cgotorchtest
// (tolerance.go), with the accumulation lengths of forwardK and gradK;
// random initialisation and dropout masks are exact on libtorch 1.x
// (RNGTolerance).

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

// assertSummaries compares per-tensor float64 sums and sums of squares of
// values that are the same up to rt (RNGTolerance): only the order of the
// additions differs (cgotorchtest.SumsClose).
func assertSummaries(t *testing.T, what string, ts []*ct.Tensor, gotSum, gotSq []float64, want map[string]*ct.Tensor, prefix string, names []string, rt float64) {
	t.Helper()
	ws, wq := want[prefix+".sum"].Float64s(), want[prefix+".sumsq"].Float64s()
	if len(ws) != len(gotSum) {
		t.Fatalf("%s: %d tensors, want %d", what, len(gotSum), len(ws))
	}
	for i := range ws {
		if !cgotorchtest.SumsClose(int(ts[i].Numel()), gotSum[i], gotSq[i], ws[i], wq[i], rt) {
			t.Errorf("%s %s: sum %.17g sumsq %.17g, want %.17g %.17g", what, names[i], gotSum[i], gotSq[i], ws[i], wq[i])
		}
	}
}

// forwardK is the accumulation length of the classifier's logits under
// the rule: the time embedding (sin/cos, then two Linear layers of width
// E = hidden[0] with a SiLU between); stage 1 adds fc1 (input_dim terms) or
// emb_layers1 (SiLU, E terms, after the embedding), whichever chain is
// longer, then BatchNorm (batch statistics, batch > 0: a mean and a
// variance over the batch; running statistics: elementwise) and SiLU;
// stage 2 the same with fc2 (hidden[0] terms); stage 3 fc3 (hidden[1]
// terms), BatchNorm and SiLU; out (hidden[2] terms).
func forwardK(c classifier.Config, batch int) int {
	e := int(c.Hidden[0])
	emb := 2 + 2*e + 1
	bn := 2
	if batch > 0 {
		bn += 2 * batch
	}
	k := max(int(c.InputDim), emb+1+e) + 1 + bn + 1
	k = max(k+int(c.Hidden[0]), emb+1+e) + 1 + bn + 1
	k += int(c.Hidden[1]) + bn + 1
	return k + int(c.Hidden[2])
}

// lossK adds the mean cross-entropy: a log-sum-exp over the classes and
// the mean over the batch.
func lossK(c classifier.Config, batch int) int { return forwardK(c, batch) + int(c.NumClass) + batch }

// gradK is the accumulation length of a parameter gradient of the mean
// cross-entropy: the backward pass retraces the forward chain after the
// loss, and a weight gradient sums over the batch.
func gradK(c classifier.Config, batch int) int { return 2*forwardK(c, batch) + int(c.NumClass) + batch }

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
	rt, _ := cgotorchtest.RNGTolerance() // exact on libtorch 1.x
	assertSummaries(t, "init", ts, sum, sq, want, "init", names, rt)
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
	cfg := m.Config()
	batch := int(xt.Dim(0))

	m.SetTraining(false)
	cgotorchtest.AssertFP32(t, "eval logits", s.Adopt(m.Forward(xt, tt)), g["eval_logits"], cgotorchtest.FP32{K: forwardK(cfg, 0)})

	// Train mode with dropout: the masks come from the default generator
	// after the same seed, as in Python (exact on libtorch 1.x; on 2.x the
	// same masks, and the rule covers the sums).
	m.SetTraining(true)
	if err := ct.ManualSeed(5); err != nil {
		t.Fatal(err)
	}
	cgotorchtest.AssertFP32(t, "train logits (dropout)", s.Adopt(m.Forward(xt, tt)), g["train_dropout_logits"], cgotorchtest.FP32{K: forwardK(cfg, batch)})

	// A training step's forward and backward without dropout, on a fresh
	// model with the same initial weights.
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
	cgotorchtest.AssertFP32(t, "train logits", logits, g["train_logits"], cgotorchtest.FP32{K: forwardK(cfg, batch)})
	loss := logits.CrossEntropy(y, ct.ReduceMean)
	cgotorchtest.AssertFP32(t, "loss", loss.Reshape(1), g["loss"], cgotorchtest.FP32{K: lossK(cfg, batch)})
	loss.Backward()
	kg := gradK(cfg, batch)
	checked := 0
	for _, p := range st3.All() {
		if p.Buffer && !classifier.IsUnused(p.Name) {
			continue
		}
		grad := p.T.Grad(s)
		if grad == nil {
			grad = s.Zeros(ct.Options{}, 1) // the unused emb_layers3: no gradient, as in PyTorch
		}
		if full, ok := g["grad.full."+p.Name]; ok {
			// Zero in exact arithmetic (a bias before a train-mode
			// BatchNorm): rounding noise, bounded by its terms' magnitudes.
			cgotorchtest.AssertFP32Elementwise(t, "grad "+p.Name, grad, full, g["grad.scale."+p.Name], kg)
			checked++
			continue
		}
		st := g["grad.stats."+p.Name]
		if st == nil {
			t.Fatalf("no golden gradient for %s", p.Name)
		}
		stats := st.Float64s()
		want := cgotorchtest.Summary{SumSq: stats[0], AbsSum: stats[1], AbsMax: stats[2]}
		cgotorchtest.AssertSummary(t, "grad "+p.Name, grad, want, kg)
		head := g["grad.head."+p.Name]
		cgotorchtest.AssertFP32(t, "grad head "+p.Name, grad.Reshape(-1).Narrow(0, 0, head.Dim(0)), head, cgotorchtest.FP32{K: kg, Scale: want.AbsMax})
		checked++
	}
	if checked != 24 { // 22 trained tensors and the unused emb_layers3's weight and bias
		t.Errorf("checked %d gradients, want 24", checked)
	}
	// The running statistics the step leaves: a mean and a variance over
	// the batch of each BatchNorm's input.
	for _, k := range []string{"norm1.running_mean", "norm2.running_var", "norm3.running_var", "norm3.num_batches_tracked"} {
		p, _ := st3.Lookup(k)
		cgotorchtest.AssertFP32(t, "after the step "+k, p.T, g["after."+k], cgotorchtest.FP32{K: forwardK(cfg, batch)})
	}

	// Guidance gradient in eval mode with the running statistics the step
	// left: s·∇_x Σ log softmax[y], s = 2 (forward, log-softmax, backward).
	m3.SetTraining(false)
	gf := diffusion.ClassifierGuidance(diffusion.ClassifierTerm{Classifier: m3, Labels: y, Scale: 2})
	var grad *ct.Tensor
	ct.NoGrad(func() { grad = s.Adopt(gf(xt, tt)) })
	cgotorchtest.AssertFP32(t, "guidance gradient", grad, g["guidance_grad"], cgotorchtest.FP32{K: 2*forwardK(cfg, 0) + int(cfg.NumClass)})
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
	cgotorchtest.AssertFP32(t, "eval logits", s.Adopt(m.Forward(g["x"], g["t"])), g["eval_logits"], cgotorchtest.FP32{K: forwardK(c, 0)})
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
