package diffusion_test

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

func newGen(t testing.TB, seed uint64) *ct.Generator {
	t.Helper()
	g, err := ct.NewGenerator(ct.CPU, seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// TestSampleLoopsMatchPython replays whole loops against PyTorch with the
// same seeded generator (one start draw, then one draw per step):
// ancestral on ddim10 and DDIM η = 0.5 with clipping and guidance on ddim10
// (guided only while the model step < 500, i.e. the last 5 steps).
// Tolerance: the rule with K = steps · kStep (each step adds its rounding;
// over 10 steps the reverse process does not expand earlier errors). The
// 1000-step loop is TestGuidedLoopMatchesLivePyTorch's.
func TestSampleLoopsMatchPython(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	d10 := newDiffusion(t, cfgWith("ddim10", diffusion.FixedLarge))
	g1 := diffusion.ClassifierGuidance(diffusion.ClassifierTerm{Classifier: f.cls1, Labels: f.get(t, "in.y1"), Scale: 2})
	shape := []int64{6, 16}
	cases := []struct {
		key   string
		run   func() (*ct.Tensor, error)
		steps int
	}{
		{"loop.psample.ddim10", func() (*ct.Tensor, error) {
			return d10.PSampleLoop(forwardOnly{f.model}, shape, diffusion.SampleOptions{Generator: newGen(t, 11)})
		}, 10},
		// The loops call the model's ForwardAt when it has one (the time
		// terms folded into the biases): other sums, the same rule.
		{"loop.psample.ddim10.forwardat", func() (*ct.Tensor, error) {
			return d10.PSampleLoop(f.model, shape, diffusion.SampleOptions{Generator: newGen(t, 11)})
		}, 10},
		{"loop.ddim.ddim10", func() (*ct.Tensor, error) {
			return d10.DDIMSampleLoop(f.model, shape, diffusion.SampleOptions{Generator: newGen(t, 12),
				ClipDenoised: true, Guidance: g1, Eta: 0.5})
		}, 10},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			got, err := c.run()
			if err != nil {
				t.Fatal(err)
			}
			if got.Scope() != nil {
				t.Error("loop result is owned by a scope")
			}
			assertK(t, c.key, s.Adopt(got), f.get(t, strings.TrimSuffix(c.key, ".forwardat")), c.steps*kStep)
		})
	}
}

// TestGuidedLoopMatchesLivePyTorch: the full 1000-step guided ancestral
// loop (FIXED_LARGE, classifier scale 2 below step 500, generator seed 13)
// equals testdata/make_golden.py's guided_loop_t1000 run at test time on this
// machine (testdata/loop_reference.py via cgotorchtest.LiveReference). The
// untrained model makes the samples grow to |x| ~ 500, so 1000 steps of
// rounding bound nothing useful across CPUs; on the same libtorch, kernels
// and thread count both sides run the same operations on the same operands:
// bit-identical.
func TestGuidedLoopMatchesLivePyTorch(t *testing.T) {
	ref := filepath.Join(t.TempDir(), "loop.safetensors")
	cgotorchtest.LiveReference(t, "testdata/loop_reference.py", ref)
	s := ct.NewScope()
	defer s.Close()
	want := cgotorchtest.Golden(t, s, ref)
	f := newFixture(t, s)
	dl := newDiffusion(t, cfgWith("", diffusion.FixedLarge))
	g1 := diffusion.ClassifierGuidance(diffusion.ClassifierTerm{Classifier: f.cls1, Labels: f.get(t, "in.y1"), Scale: 2})
	got, err := dl.PSampleLoop(forwardOnly{f.model}, []int64{6, 16}, diffusion.SampleOptions{Generator: newGen(t, 13), Guidance: g1})
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, "loop.psample.t1000", s.Adopt(got), want["loop.psample.t1000"], 0, 0)
}

// finiteAndShaped fails unless x is float32 of the given shape with finite values.
func finiteAndShaped(t *testing.T, x *ct.Tensor, shape []int64) {
	t.Helper()
	if fmt.Sprint(x.Shape()) != fmt.Sprint(shape) || x.DType() != ct.Float32 {
		t.Fatalf("sample is %v, want shape %v float32", x, shape)
	}
	for i, v := range x.Float32s() {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("sample[%d] = %v is not finite", i, v)
		}
	}
}

// TestSampleLoopsEndToEnd: a full ddim50 DDIM loop and a full 1000-step
// ancestral loop (the reference's default sampler, FIXED_LARGE) on the
// small Cell_Unet return finite samples of the right shape, are bitwise
// deterministic for a fixed seed, keep the live-handle count bounded
// during the loop (checked in the progress callback: only the current
// sample is alive between steps) and return it to the baseline afterwards.
func TestSampleLoopsEndToEnd(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	g1 := diffusion.ClassifierGuidance(diffusion.ClassifierTerm{Classifier: f.cls1, Labels: s.FromSlice([]int64{0, 1, 2, 0, 1, 2, 0, 1}), Scale: 2})
	shape := []int64{8, 16}
	cases := []struct {
		name      string
		respacing string
		ddim      bool
		steps     int
		guidance  diffusion.GuidanceFunc
		guided    int // expected guided steps
	}{
		{"ddim50", "ddim50", true, 50, nil, 0},
		{"ddim100 guided", "ddim100", true, 100, g1, 50},
		{"ddim250", "ddim250", false, 250, nil, 0},
		{"ancestral 1000 guided", "", false, 1000, g1, 500},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := newDiffusion(t, cfgWith(c.respacing, diffusion.FixedLarge))
			if d.NumSteps() != c.steps {
				t.Fatalf("NumSteps = %d, want %d", d.NumSteps(), c.steps)
			}
			run := func(seed uint64, check bool) []float32 {
				base := ct.LiveTensors()
				maxLive, calls, guided, last := int64(0), 0, 0, -1
				o := diffusion.SampleOptions{Generator: newGen(t, seed), Eta: 0.3, Guidance: c.guidance,
					Progress: func(p diffusion.Progress) error {
						if l := ct.LiveTensors() - base; l > maxLive {
							maxLive = l
						}
						if last >= 0 && p.Index != last-1 || p.Done != calls+1 || p.Total != c.steps {
							return fmt.Errorf("progress out of order: %+v after index %d", p, last)
						}
						if p.ModelStep != int(d.Schedule().TimestepMap[p.Index]) {
							return fmt.Errorf("model step %d for index %d", p.ModelStep, p.Index)
						}
						if p.LiveTensors != 1 {
							return fmt.Errorf("progress reports %d live handles, want 1", p.LiveTensors)
						}
						if p.Guided {
							guided++
						}
						last = p.Index
						calls++
						return nil
					}}
				var x *ct.Tensor
				var err error
				if c.ddim {
					x, err = d.DDIMSampleLoop(f.model, shape, o)
				} else {
					x, err = d.PSampleLoop(f.model, shape, o)
				}
				if err != nil {
					t.Fatal(err)
				}
				defer x.Free()
				if check {
					finiteAndShaped(t, x, shape)
					if calls != c.steps || last != 0 || guided != c.guided {
						t.Errorf("%d progress calls ending at index %d, %d guided; want %d ending at 0, %d guided", calls, last, guided, c.steps, c.guided)
					}
					// Between steps only the current sample is alive.
					if maxLive != 1 {
						t.Errorf("live handles during the loop reached base+%d, want base+1", maxLive)
					}
				}
				out := x.Float32s()
				x.Free()
				if got := ct.LiveTensors(); got != base {
					t.Errorf("live handles %d after the loop, want baseline %d", got, base)
				}
				return out
			}
			a, b, other := run(5, true), run(5, false), run(6, false)
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Error("same seed, different samples")
			}
			if fmt.Sprint(a) == fmt.Sprint(other) {
				t.Error("different seeds, same sample")
			}
		})
	}
}

// TestSampleLoopStartTimeAndNoise: SDEdit-style start from a noised input
// at init time k runs k+1 steps, leaves the caller's noise untouched, and
// equals stepping PSample by hand with the same generator.
func TestSampleLoopStartTimeAndNoise(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	d := newDiffusion(t, cfgWith("ddim50", diffusion.FixedLarge))
	const k = 30 // schedule index (base step 600)
	x0 := f.get(t, "in.x0")
	tk := s.Full(k, ct.Options{DType: ct.Int64}, 6)
	init := d.QSample(x0, tk, f.get(t, "in.z"))
	before := init.Float32s()
	steps := 0
	// Forward only (the model's ForwardAt rounds differently), so the loop
	// must equal the hand-stepped PSample bit for bit.
	got, err := d.PSampleLoop(forwardOnly{f.model}, []int64{6, 16}, diffusion.SampleOptions{Noise: init, StartTime: k + 1,
		Generator: newGen(t, 3), Progress: func(diffusion.Progress) error { steps++; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	s.Adopt(got)
	if steps != k+1 {
		t.Errorf("%d steps, want %d", steps, k+1)
	}
	if fmt.Sprint(init.Float32s()) != fmt.Sprint(before) {
		t.Error("the starting noise was modified")
	}
	gen := newGen(t, 3)
	x := init
	for i := k; i >= 0; i-- {
		x = d.PSample(f.model, x, s.Full(float64(i), ct.Options{DType: ct.Int64}, 6), diffusion.StepOptions{Generator: gen}).Sample
	}
	assertClose(t, "loop vs steps", got, x, 0, 0)
}

// forwardOnly hides a model's ForwardAt from the sampling loops.
type forwardOnly struct{ m diffusion.Model }

func (f forwardOnly) Forward(x, t *ct.Tensor) *ct.Tensor { return f.m.Forward(x, t) }

// TestSampleLoopErrors: bad options are errors; a failing guidance or
// progress callback stops the loop with an error and leaks nothing.
func TestSampleLoopErrors(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	d := newDiffusion(t, cfgWith("ddim10", diffusion.FixedLarge))
	badShape := func(x, t *ct.Tensor) *ct.Tensor { return x.Narrow(1, 0, 3).Clone() }
	stop := errors.New("stop")
	cases := []struct {
		name  string
		shape []int64
		o     diffusion.SampleOptions
		want  error
	}{
		{"start beyond T", []int64{2, 16}, diffusion.SampleOptions{StartTime: 11}, nil},
		{"negative start", []int64{2, 16}, diffusion.SampleOptions{StartTime: -1}, nil},
		{"negative guidance start", []int64{2, 16}, diffusion.SampleOptions{GuidanceStart: -1}, nil},
		{"empty shape", nil, diffusion.SampleOptions{}, nil},
		{"zero batch", []int64{0, 16}, diffusion.SampleOptions{}, nil},
		{"noise shape", []int64{2, 16}, diffusion.SampleOptions{Noise: s.Zeros(ct.Options{}, 3, 16)}, nil},
		{"wrong model width", []int64{2, 8}, diffusion.SampleOptions{}, nil},
		{"bad guidance", []int64{2, 16}, diffusion.SampleOptions{Guidance: badShape, GuidanceStart: 1000}, nil},
		{"progress error", []int64{2, 16}, diffusion.SampleOptions{Progress: func(p diffusion.Progress) error {
			if p.Done == 3 {
				return stop
			}
			return nil
		}}, stop},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, ddim := range []bool{false, true} {
				base := ct.LiveTensors()
				var x *ct.Tensor
				var err error
				if ddim {
					x, err = d.DDIMSampleLoop(f.model, c.shape, c.o)
				} else {
					x, err = d.PSampleLoop(f.model, c.shape, c.o)
				}
				if err == nil {
					x.Free()
					t.Fatalf("ddim=%v: no error", ddim)
				}
				t.Logf("ddim=%v: %v", ddim, err)
				if c.want != nil && !errors.Is(err, c.want) {
					t.Errorf("ddim=%v: error %v, want %v", ddim, err, c.want)
				}
				if got := ct.LiveTensors(); got != base {
					t.Errorf("ddim=%v: live handles %d after the error, want %d", ddim, got, base)
				}
			}
		})
	}
}
