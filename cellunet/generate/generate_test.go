package generate_test

import (
	"math"
	"os"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/classifier"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	"github.com/scdiffusion/gotorch-train/cellunet/generate"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

func TestMain(m *testing.M) { cgotorchtest.Main(m) }

// models: the small reference Cell_Unet (D = 16) and the small reference
// classifier (5 classes) of the parity tests.
func models(t *testing.T, respacing string) (generate.Config, *classifier.Loaded) {
	t.Helper()
	m, err := cellunet.Load("../testdata/small.pt", ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	c, err := classifier.Load("../classifier/testdata/small.pt", ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	dc := diffusion.DefaultConfig()
	dc.Respacing = respacing
	d, err := diffusion.New(dc, ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return generate.Config{Diffusion: d, Model: m, Seed: 7, Dim: 16}, c
}

func batch(t *testing.T, cfg generate.Config, c generate.Condition, i int, rows int64) []float32 {
	t.Helper()
	x, err := generate.Batch(cfg, c, i, rows, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Free()
	var out []float32
	if err := ct.Try(func() {
		h := x.To(ct.CPU, 0)
		out = h.Float32s()
		h.Free()
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBatchIsAPureFunction: a batch depends only on (seed, condition key,
// index, rows): recomputing it, or computing it after other batches, gives
// the same bits; other indices, keys and seeds give other cells. Holds for
// ancestral, DDIM, guided and interpolation batches, and nothing leaks.
func TestBatchIsAPureFunction(t *testing.T) {
	cfg, cls := models(t, "ddim25")
	s := ct.NewScope()
	defer s.Close()
	g, _ := ct.NewGenerator(ct.CPU, 1)
	defer g.Close()
	start := &generate.Start{Latents: s.Randn(ct.Options{}, g, 3, 16).Normalize(2, 1, 1e-12), NoiseIndex: 15, StartIndex: 15}
	conds := []generate.Condition{
		{Key: "uncond"},
		{Key: "class=2", Terms: []generate.Term{{Classifier: cls, Class: 2, Scale: 2}}},
		{Key: "multi", Terms: []generate.Term{{Classifier: cls, Class: 1, Scale: 1.2}, {Classifier: cls, Class: 3, Scale: 0.8}}},
		{Key: "inter", Terms: []generate.Term{{Classifier: cls, Class: 0, Scale: 1.4}, {Classifier: cls, Class: 4, Scale: 0.6}}, Start: start},
	}
	base := ct.LiveTensors()
	for _, ddim := range []bool{false, true} {
		cfg.DDIM = ddim
		for _, c := range conds {
			b1 := batch(t, cfg, c, 1, 6)
			batch(t, cfg, c, 0, 6)
			if again := batch(t, cfg, c, 1, 6); !equal(b1, again) {
				t.Errorf("ddim=%v %s: batch 1 differs when recomputed", ddim, c.Key)
			}
			if other := batch(t, cfg, c, 2, 6); equal(b1, other) {
				t.Errorf("ddim=%v %s: batches 1 and 2 are equal", ddim, c.Key)
			}
			for _, v := range b1 {
				if math.IsNaN(float64(v)) {
					t.Fatalf("ddim=%v %s: NaN", ddim, c.Key)
				}
			}
		}
	}
	cfg.DDIM = false
	other := cfg
	other.Seed = 8
	if equal(batch(t, cfg, conds[0], 0, 4), batch(t, other, conds[0], 0, 4)) {
		t.Error("seeds 7 and 8 give the same batch")
	}
	if equal(batch(t, cfg, conds[0], 0, 4), batch(t, cfg, generate.Condition{Key: "class=0"}, 0, 4)) {
		t.Error("two condition keys give the same noise")
	}
	if d := ct.LiveTensors() - base; d != 0 {
		t.Errorf("%d tensor handles leaked", d)
	}
}

// TestBatchIsTheReferenceLoop: an unguided ancestral batch is
// p_sample_loop from the batch generator's first draw, with the noise
// weight and clipping passed through.
func TestBatchIsTheReferenceLoop(t *testing.T) {
	cfg, _ := models(t, "")
	cfg.NoiseWeight = 0.4
	cfg.ClipDenoised = true
	got := batch(t, cfg, generate.Condition{Key: "uncond"}, 3, 5)
	gen, err := ct.NewGenerator(ct.CPU, generate.BatchSeed(7, "uncond", 3))
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	x, err := cfg.Diffusion.PSampleLoop(cfg.Model, []int64{5, 16}, diffusion.SampleOptions{Generator: gen, NoiseWeight: 0.4, ClipDenoised: true})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Free()
	if !equal(got, x.Float32s()) {
		t.Error("Batch differs from PSampleLoop with the batch generator")
	}
}

func TestIndexAtOrBelowAndFilters(t *testing.T) {
	cfg, cls := models(t, "ddim50") // base steps 0, 20, ..., 980
	for _, c := range [][2]int{{600, 30}, {610, 30}, {999, 49}, {0, 0}} {
		if got := generate.IndexAtOrBelow(cfg.Diffusion, c[0]); got != c[1] {
			t.Errorf("IndexAtOrBelow(%d) = %d, want %d", c[0], got, c[1])
		}
	}
	s := ct.NewScope()
	defer s.Close()
	g, _ := ct.NewGenerator(ct.CPU, 5)
	defer g.Close()
	x := s.Randn(ct.Options{}, g, 64, 16)
	var pred []int64
	var probs []float32
	ct.NoGrad(func() {
		logits := s.Adopt(cls.Forward(x, s.Zeros(ct.Options{DType: ct.Int64}, 64)))
		pred = logits.Argmax(1, false).Int64s()
		probs = logits.Softmax(-1).Float32s()
	})
	keep, err := generate.ArgmaxFilter(generate.Term{Classifier: cls, Class: pred[0]})(x)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keep {
		if keep[i] != (pred[i] == pred[0]) {
			t.Fatalf("argmax filter row %d: keep %v, class %d", i, keep[i], pred[i])
		}
	}
	targets := [2]float64{float64(probs[0]), float64(probs[4])}
	keep, err = generate.WindowFilter(cls, [2]int64{0, 4}, targets, 0.15)(x)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keep {
		p0, p4 := float64(probs[i*5]), float64(probs[i*5+4])
		want := math.Abs(p0-targets[0]) < 0.15 && math.Abs(p4-targets[1]) < 0.15
		if keep[i] != want {
			t.Fatalf("window filter row %d: keep %v, probabilities %.3f %.3f", i, keep[i], p0, p4)
		}
	}
	if !keep[0] {
		t.Error("window filter dropped the row that defines the targets")
	}
}

// TestBatchOnCUDA: batches are drawn and guided on the models' device and
// are reproducible there (CUDA machines only; CGOTORCH_REQUIRE_CUDA makes a
// missing device a failure).
func TestBatchOnCUDA(t *testing.T) {
	if !ct.Build().CUDA || ct.CUDADeviceCount() == 0 {
		if os.Getenv("CGOTORCH_REQUIRE_CUDA") != "" {
			t.Fatalf("CGOTORCH_REQUIRE_CUDA is set but no CUDA device is available (%s)", ct.Build())
		}
		t.Skip("no CUDA device")
	}
	dev := ct.CUDA(0)
	m, err := cellunet.Load("../testdata/small.pt", dev)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c, err := classifier.Load("../classifier/testdata/small.pt", dev)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := diffusion.New(diffusion.DefaultConfig(), dev)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	mx, err := cellunet.NewMixed(m.Model, ct.BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	defer mx.Close()
	cond := generate.Condition{Key: "class=1", Terms: []generate.Term{{Classifier: c, Class: 1, Scale: 2}}}
	for _, model := range []diffusion.Model{m.Model, mx} {
		cfg := generate.Config{Diffusion: d, Model: model, Seed: 3, Dim: 16}
		a, b := batch(t, cfg, cond, 0, 8), batch(t, cfg, cond, 0, 8)
		if !equal(a, b) {
			t.Error("a CUDA batch differs when recomputed")
		}
		for _, v := range a {
			if math.IsNaN(float64(v)) {
				t.Fatal("NaN")
			}
		}
	}
}
