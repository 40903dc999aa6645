package diffusion_test

import (
	"fmt"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// TestPMeanVarianceMatchesPython: p_mean_variance for FIXED_LARGE and
// FIXED_SMALL, with and without clipping, at t = 0, 1, 250, 499, 500, 999,
// and on the ddim50 respaced schedule (the model then receives the original
// steps). Tolerance: the rule with K = kPMV (variances: float64 schedule
// values rounded once).
func TestPMeanVarianceMatchesPython(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	x, tt := f.get(t, "in.x"), f.get(t, "in.t")
	cases := []struct {
		key  string
		cfg  diffusion.Config
		t    *ct.Tensor
		clip bool
		eps  bool
	}{
		{"pmv.large.clip0", cfgWith("", diffusion.FixedLarge), tt, false, true},
		{"pmv.large.clip1", cfgWith("", diffusion.FixedLarge), tt, true, true},
		{"pmv.small.clip0", cfgWith("", diffusion.FixedSmall), tt, false, true},
		{"pmv.small.clip1", cfgWith("", diffusion.FixedSmall), tt, true, true},
		{"pmv.ddim50", cfgWith("ddim50", diffusion.FixedLarge), f.get(t, "in.t50"), true, false},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			d := newDiffusion(t, c.cfg)
			mv := d.PMeanVariance(f.model, x, c.t, diffusion.MeanVarianceOptions{ClipDenoised: c.clip})
			if got := mv.Variance.Shape(); fmt.Sprint(got) != "[6 1]" {
				t.Errorf("variance shape %v, want [6 1]", got)
			}
			assertK(t, "mean", mv.Mean, f.get(t, c.key+".mean"), kPMV)
			assertK(t, "variance", expandLike(mv.Variance, x), f.get(t, c.key+".variance"), 1)
			assertK(t, "log_variance", expandLike(mv.LogVariance, x), f.get(t, c.key+".log_variance"), 1)
			assertK(t, "pred_xstart", mv.PredXStart, f.get(t, c.key+".pred_xstart"), kPMV)
			if c.eps {
				assertK(t, "eps", mv.Eps, f.get(t, c.key+".eps"), kPMV)
			}
		})
	}
}

// TestStepsMatchPython: one p_sample step (fixed noise z, clip on/off,
// FIXED_SMALL, guided by condition_mean), one ddim_sample step (η = 0 and
// 0.5; guided by condition_score with two classifiers; on ddim50), and
// ddim_reverse_sample. Tolerance: the rule with K = kStep.
func TestStepsMatchPython(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	x, tt, z := f.get(t, "in.x"), f.get(t, "in.t"), f.get(t, "in.z")
	large := newDiffusion(t, cfgWith("", diffusion.FixedLarge))
	small := newDiffusion(t, cfgWith("", diffusion.FixedSmall))
	d50 := newDiffusion(t, cfgWith("ddim50", diffusion.FixedLarge))
	g1 := diffusion.ClassifierGuidance(diffusion.ClassifierTerm{Classifier: f.cls1, Labels: f.get(t, "in.y1"), Scale: 2})
	gm := diffusion.ClassifierGuidance(
		diffusion.ClassifierTerm{Classifier: f.cls1, Labels: f.get(t, "in.y1"), Scale: 2},
		diffusion.ClassifierTerm{Classifier: f.cls2, Labels: f.get(t, "in.y2"), Scale: 0.6})
	cases := []struct {
		key string
		run func() diffusion.Step
	}{
		{"psample.clip0", func() diffusion.Step {
			return large.PSample(f.model, x, tt, diffusion.StepOptions{Noise: z})
		}},
		{"psample.clip1", func() diffusion.Step {
			return large.PSample(f.model, x, tt, diffusion.StepOptions{Noise: z, ClipDenoised: true})
		}},
		{"psample.small", func() diffusion.Step {
			return small.PSample(f.model, x, tt, diffusion.StepOptions{Noise: z})
		}},
		{"psample.guided", func() diffusion.Step {
			return large.PSample(f.model, x, tt, diffusion.StepOptions{Noise: z, Guidance: g1})
		}},
		{"ddim.eta0.0.sample", func() diffusion.Step {
			return large.DDIMSample(f.model, x, tt, 0, diffusion.StepOptions{Noise: z})
		}},
		{"ddim.eta0.5.sample", func() diffusion.Step {
			return large.DDIMSample(f.model, x, tt, 0.5, diffusion.StepOptions{Noise: z})
		}},
		{"ddim.guided", func() diffusion.Step {
			return large.DDIMSample(f.model, x, tt, 0.5, diffusion.StepOptions{Noise: z, ClipDenoised: true, Guidance: gm})
		}},
		{"ddim50.sample", func() diffusion.Step {
			return d50.DDIMSample(f.model, x, f.get(t, "in.t50"), 0.5, diffusion.StepOptions{Noise: z, ClipDenoised: true})
		}},
		{"ddimrev.sample", func() diffusion.Step {
			return large.DDIMReverseSample(f.model, x, tt, diffusion.MeanVarianceOptions{})
		}},
		{"ddimrev.clip1", func() diffusion.Step {
			return large.DDIMReverseSample(f.model, x, tt, diffusion.MeanVarianceOptions{ClipDenoised: true})
		}},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			var st diffusion.Step
			if err := ct.Try(func() { st = c.run() }); err != nil {
				t.Fatal(err)
			}
			if st.Sample.Scope() != s || st.PredXStart.Scope() != s {
				t.Error("step results do not join x's scope")
			}
			assertK(t, c.key, st.Sample, f.get(t, c.key), kStep)
		})
	}
	// The x̂0 outputs of the unguided DDIM and the reverse step.
	st := large.DDIMSample(f.model, x, tt, 0.5, diffusion.StepOptions{Noise: z})
	assertK(t, "ddim pred_xstart", st.PredXStart, f.get(t, "ddim.eta0.5.pred_xstart"), kPMV)
	rv := large.DDIMReverseSample(f.model, x, tt, diffusion.MeanVarianceOptions{})
	assertK(t, "ddimrev pred_xstart", rv.PredXStart, f.get(t, "ddimrev.pred_xstart"), kPMV)
}

// TestConditionMeanAndScoreMatchPython: condition_mean (μ + v·g) and
// condition_score (ε − √(1−ᾱ)·g → x̂0', μ') with the toy classifier at
// scale 2. Tolerance: the rule with K = kPMV + kGuide.
func TestConditionMeanAndScoreMatchPython(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	x, tt := f.get(t, "in.x"), f.get(t, "in.t")
	d := newDiffusion(t, cfgWith("", diffusion.FixedLarge))
	g1 := diffusion.ClassifierGuidance(diffusion.ClassifierTerm{Classifier: f.cls1, Labels: f.get(t, "in.y1"), Scale: 2})
	mv := d.PMeanVariance(f.model, x, tt, diffusion.MeanVarianceOptions{})
	assertK(t, "condition_mean", d.ConditionMean(g1, mv, x, tt), f.get(t, "cond.mean"), kPMV+kGuide)
	mean, x0 := d.ConditionScore(g1, mv, x, tt)
	assertK(t, "condition_score mean", mean, f.get(t, "cond.score.mean"), kPMV+kGuide)
	assertK(t, "condition_score pred_xstart", x0, f.get(t, "cond.score.pred_xstart"), kPMV+kGuide)
}

// TestStepsUnownedResultsAndNoLeak: with unowned inputs the results are
// unowned, and freeing them (plus the inputs) returns the live count to
// its baseline; intermediates never outlive a step.
func TestStepsUnownedResultsAndNoLeak(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	d := newDiffusion(t, cfgWith("", diffusion.FixedLarge))
	g1 := diffusion.ClassifierGuidance(diffusion.ClassifierTerm{Classifier: f.cls1, Labels: f.get(t, "in.y1"), Scale: 2})
	base := ct.LiveTensors()
	x := f.get(t, "in.x").Clone().MoveTo(nil)
	tt := f.get(t, "in.t").Clone().MoveTo(nil)
	mv := d.PMeanVariance(f.model, x, tt, diffusion.MeanVarianceOptions{ClipDenoised: true})
	if mv.Mean.Scope() != nil {
		t.Error("PMeanVariance result of unowned x is owned")
	}
	if got := ct.LiveTensors() - base; got != 2+5 {
		t.Errorf("live handles after PMeanVariance = base+%d, want base+7 (x, t and 5 results)", got)
	}
	mv.Free()
	for _, run := range []func() diffusion.Step{
		func() diffusion.Step { return d.PSample(f.model, x, tt, diffusion.StepOptions{Guidance: g1}) },
		func() diffusion.Step { return d.DDIMSample(f.model, x, tt, 0.3, diffusion.StepOptions{Guidance: g1}) },
		func() diffusion.Step { return d.DDIMReverseSample(f.model, x, tt, diffusion.MeanVarianceOptions{}) },
	} {
		st := run()
		if got := ct.LiveTensors() - base; got != 4 {
			t.Errorf("live handles after a step = base+%d, want base+4", got)
		}
		st.Free()
	}
	x.Free()
	tt.Free()
	if got := ct.LiveTensors(); got != base {
		t.Errorf("live handles %d, want baseline %d", got, base)
	}
}
