package diffusion_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// TestScheduleAnchors checks the spec's computed anchors of the default
// linear T = 1000 schedule (§2), to the digits the spec gives (rel 1e-4).
func TestScheduleAnchors(t *testing.T) {
	s, err := diffusion.NewSchedule(diffusion.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.ModelVariance(diffusion.FixedLarge)
	cases := []struct {
		name string
		got  float64
		want float64
		rel  float64
	}{
		{"abar_0", s.AlphasCumprod[0], 0.9999, 1e-12},
		{"abar_499", s.AlphasCumprod[499], 0.078587, 1e-5},
		{"abar_600", s.AlphasCumprod[600], 0.025567, 1e-4},
		{"abar_999", s.AlphasCumprod[999], 4.0358e-5, 1e-4},
		{"posterior_var_1", s.PosteriorVariance[1], 5.4532e-5, 1e-4},
		{"posterior_var_0", s.PosteriorVariance[0], 0, 0},
		{"fixed_large_0 = posterior_var_1", v[0], s.PosteriorVariance[1], 0},
		{"fixed_large_1 = beta_1", v[1], s.Betas[1], 0},
		{"fixed_large_999 = beta_999", v[999], 0.02, 1e-15},
		{"abar_prev_0", s.AlphasCumprodPrev[0], 1, 0},
		{"abar_next_999", s.AlphasCumprodNext[999], 0, 0},
		{"log_var_clipped_0 = ln posterior_var_1", s.PosteriorLogVarianceClipped[0], math.Log(s.PosteriorVariance[1]), 0},
	}
	for _, c := range cases {
		if math.Abs(c.got-c.want) > c.rel*math.Abs(c.want) {
			t.Errorf("%s = %.8g, want %.8g (rel %g)", c.name, c.got, c.want, c.rel)
		}
	}
	if n := len(s.Betas); n != 1000 {
		t.Errorf("T = %d, want 1000", n)
	}
}

// TestSpaceTimestepsMatchesPython compares SpaceTimesteps with respace.py's
// space_timesteps (exact), and the strides the spec names.
func TestSpaceTimestepsMatchesPython(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	cases := []struct {
		spec   string
		stride int // 0: not a ddim spec
	}{
		{"ddim50", 20}, {"ddim100", 10}, {"ddim250", 4}, {"ddim10", 100}, {"ddim1000", 1},
		{"10,15,20", 0}, {"1,2,3", 0}, {"333,0,5", 0}, {"7", 0},
	}
	for _, c := range cases {
		t.Run(c.spec, func(t *testing.T) {
			got, err := diffusion.SpaceTimesteps(1000, c.spec)
			if err != nil {
				t.Fatal(err)
			}
			want := f.get(t, "space."+c.spec).Int64s()
			if fmt.Sprint(toInt64(got)) != fmt.Sprint(want) {
				t.Fatalf("SpaceTimesteps(1000, %q) = %v, want %v", c.spec, got, want)
			}
			if c.stride > 0 {
				for i, k := range got {
					if k != i*c.stride {
						t.Fatalf("step %d = %d, want stride %d", i, k, c.stride)
					}
				}
			}
		})
	}
}

func toInt64(v []int) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = int64(x)
	}
	return out
}

// TestSpaceTimestepsErrors: specs the reference rejects are errors here.
func TestSpaceTimestepsErrors(t *testing.T) {
	for _, spec := range []string{"ddim999", "ddim0", "ddimx", "ddim-5", "2000", "abc", "10,,20", "-3"} {
		if got, err := diffusion.SpaceTimesteps(1000, spec); err == nil {
			t.Errorf("SpaceTimesteps(1000, %q) = %v, want an error", spec, got)
		}
	}
	if _, err := diffusion.New(cfgWith("ddim999", diffusion.FixedLarge), ct.CPU); err == nil {
		t.Error("New with respacing ddim999: want an error")
	}
}

// TestRespacedScheduleMatchesPython compares the ddim50 schedule's float64
// host arrays with SpacedDiffusion's (rel 1e-12: the same float64 formulas;
// only summation/library rounding can differ) and its timestep map (exact).
func TestRespacedScheduleMatchesPython(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	d := newDiffusion(t, cfgWith("ddim50", diffusion.FixedLarge))
	sch := d.Schedule()
	if d.NumSteps() != 50 {
		t.Fatalf("NumSteps = %d, want 50", d.NumSteps())
	}
	mv, _ := sch.ModelVariance(diffusion.FixedLarge)
	arrays := map[string][]float64{
		"betas": sch.Betas, "alphas_cumprod": sch.AlphasCumprod,
		"alphas_cumprod_prev": sch.AlphasCumprodPrev, "alphas_cumprod_next": sch.AlphasCumprodNext,
		"sqrt_recip_alphas_cumprod": sch.SqrtRecipAlphasCumprod, "sqrt_recipm1_alphas_cumprod": sch.SqrtRecipm1AlphasCumprod,
		"posterior_variance": sch.PosteriorVariance, "posterior_log_variance_clipped": sch.PosteriorLogVarianceClipped,
		"posterior_mean_coef1": sch.PosteriorMeanCoef1, "posterior_mean_coef2": sch.PosteriorMeanCoef2,
		"model_variance": mv,
	}
	for name, got := range arrays {
		assertClose(t, "ddim50."+name, s.FromSlice(got), f.get(t, "ddim50."+name), 1e-12, 1e-300)
	}
	assertClose(t, "ddim50.timestep_map", s.FromSlice(sch.TimestepMap), f.get(t, "ddim50.timestep_map"), 0, 0)
}
