package diffusion_test

import (
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	"github.com/scdiffusion/gotorch-train/cellunet/internal/unettest"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/nn"
)

// goldenPath is written by testdata/make_golden.py (PyTorch 1.13).
const goldenPath = "testdata/golden.safetensors"

// Tolerances against PyTorch follow the rule in cgotorch/cgotorchtest
// (tolerance.go), with these accumulation lengths:
var (
	// kModel: the small Cell_Unet's forward pass (unettest.ForwardK).
	kModel = unettest.ForwardK(cellunet.Config{InputDim: 16, Hidden: []int64{32, 32, 16, 8}})
	// kPMV: p_mean_variance, the model plus the x̂0/ε and posterior
	// formulas (a few elementwise roundings each).
	kPMV = kModel + 12
	// kGuide: a toy classifier's gradient: Linear 16→24, SiLU, Linear
	// 24→3, log-softmax over 3 classes, and back again.
	kGuide = 2*(16+24+3+3) + 4
	// kStep: one reverse step, guided or not.
	kStep = kPMV + kGuide + 10
	// kElem: the bits-per-dim helpers' elementwise formulas (normal_kl,
	// the tanh approximation of Φ, the discretized log-likelihood).
	kElem = 24
)

func TestMain(m *testing.M) { cgotorchtest.Main(m) }

var assertClose = cgotorchtest.AssertClose

// assertK compares got with want under the tolerance rule with
// accumulation length k.
func assertK(t testing.TB, name string, got, want *ct.Tensor, k int) {
	t.Helper()
	cgotorchtest.AssertFP32(t, name, got, want, cgotorchtest.FP32{K: k})
}

// fixture is the golden file plus the small Cell_Unet (input 16, hidden
// [32,32,16,8]) and the two toy classifiers whose weights it holds.
type fixture struct {
	g          map[string]*ct.Tensor
	model      *cellunet.Model
	store      *nn.Store
	cls1, cls2 *toyClassifier
}

// newFixture loads the golden file into s and builds the models; the
// weights are owned by s or the store, both released at cleanup.
func newFixture(t testing.TB, s *ct.Scope) *fixture {
	t.Helper()
	g := cgotorchtest.Golden(t, s, goldenPath)
	f := &fixture{g: g, store: nn.NewStore(ct.CPU)}
	m, err := cellunet.New(f.store.Root(), cellunet.Config{InputDim: 16, Hidden: []int64{32, 32, 16, 8}})
	if err != nil {
		t.Fatal(err)
	}
	f.model = m
	var sd []ct.Named
	for name, v := range g {
		if k, ok := strings.CutPrefix(name, "unet."); ok {
			sd = append(sd, ct.Named{Name: k, T: v})
		}
	}
	if err := f.store.LoadStateDict(sd, true); err != nil {
		t.Fatal(err)
	}
	f.store.SetRequiresGrad(false)
	t.Cleanup(func() {
		f.model.Close()
		f.store.Close()
	})
	f.cls1 = newToyClassifier(s, g, "cls1")
	f.cls2 = newToyClassifier(s, g, "cls2")
	return f
}

func (f *fixture) get(t testing.TB, name string) *ct.Tensor {
	t.Helper()
	v, ok := f.g[name]
	if !ok {
		t.Fatalf("golden tensor %q missing (rerun testdata/make_golden.py)", name)
	}
	return v
}

// toyClassifier mirrors make_golden.py's ToyClassifier:
// logits = W2·SiLU(W1·x + b1 + (t/1000)·wt) + b2.
type toyClassifier struct {
	w1, b1, wtRow, w2, b2 *ct.Tensor
}

func newToyClassifier(s *ct.Scope, g map[string]*ct.Tensor, p string) *toyClassifier {
	return &toyClassifier{
		w1: g[p+".l1.weight"], b1: g[p+".l1.bias"],
		wtRow: s.Adopt(g[p+".wt"].Unsqueeze(0)),
		w2:    g[p+".l2.weight"], b2: g[p+".l2.bias"],
	}
}

// Forward implements diffusion.Classifier; every intermediate is freed and
// the result joins x's scope.
func (c *toyClassifier) Forward(x, t *ct.Tensor) *ct.Tensor {
	h := x.Linear(c.w1, c.b1)
	tf := t.ToDType(ct.Float32)
	ts := tf.DivScalar(1000)
	tf.Free()
	col := ts.Unsqueeze(1)
	ts.Free()
	te := col.Mul(c.wtRow)
	col.Free()
	sum := h.Add(te)
	h.Free()
	te.Free()
	a := sum.SiLU()
	sum.Free()
	out := a.Linear(c.w2, c.b2)
	a.Free()
	return out
}

// newDiffusion builds a CPU Diffusion and closes it at cleanup.
func newDiffusion(t testing.TB, cfg diffusion.Config) *diffusion.Diffusion {
	t.Helper()
	d, err := diffusion.New(cfg, ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func cfgWith(respacing string, v diffusion.VarianceType) diffusion.Config {
	c := diffusion.DefaultConfig()
	c.Respacing = respacing
	c.Variance = v
	return c
}

// expandLike broadcasts a [B,1] variance to x's shape for comparison.
func expandLike(v, x *ct.Tensor) *ct.Tensor { return v.Expand(x.Shape()...).Contiguous() }
