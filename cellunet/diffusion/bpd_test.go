package diffusion_test

import (
	"math"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// TestBPDHelpersMatchPython: normal_kl, approx_standard_normal_cdf and
// discretized_gaussian_log_likelihood (inputs on both open edge bins) against
// losses.py. Tolerance: the rule with K = kElem (elementwise formulas).
func TestBPDHelpersMatchPython(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	m1, m2, lv1, lv2 := f.get(t, "bpd.m1"), f.get(t, "bpd.m2"), f.get(t, "bpd.lv1"), f.get(t, "bpd.lv2")
	x0 := f.get(t, "in.x0")
	assertK(t, "normal_kl", diffusion.NormalKL(m1, lv1, m2, lv2), f.get(t, "bpd.normal_kl"), kElem)
	assertK(t, "cdf", diffusion.ApproxStandardNormalCDF(f.get(t, "bpd.u")), f.get(t, "bpd.cdf"), kElem)
	means := m1.MulScalar(0.1).Add(x0)
	got := diffusion.DiscretizedGaussianLogLikelihood(x0, means, f.get(t, "bpd.log_scales"))
	assertK(t, "discretized_gaussian_log_likelihood", got, f.get(t, "bpd.dgll"), kElem)
	if v := diffusion.MeanFlat(s.Ones(ct.Options{}, 3, 4, 5)).Shape(); len(v) != 1 || v[0] != 3 {
		t.Errorf("MeanFlat shape %v, want [3]", v)
	}
	// KL of a distribution with itself is 0; Φ(0) = ½.
	if v := diffusion.NormalKL(m1, lv1, m1, lv1).Abs().Max().Item(); v > 1e-6 {
		t.Errorf("KL(p‖p) = %v, want 0", v)
	}
	if v := diffusion.ApproxStandardNormalCDF(s.Zeros(ct.Options{}, 1)).Item(); v != 0.5 {
		t.Errorf("Φ(0) = %v, want 0.5", v)
	}
}

// TestCalcBPDLoopMatchesPython runs calc_bpd_loop on the ddim10 schedule
// with a generator seeded as in make_golden.py (libtorch's CPU generator
// replays PyTorch's stream exactly), clip_denoised = True. Each step's terms
// start afresh from x0 (q_sample), so nothing accumulates across steps:
// per-step terms have K = kPMV + kElem + 16 (the mean over 16 dimensions);
// prior_bpd K = kElem + 16; total_bpd adds the 10 steps and the prior
// (in float64 here, float32 in torch.sum).
func TestCalcBPDLoopMatchesPython(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f := newFixture(t, s)
	d := newDiffusion(t, cfgWith("ddim10", diffusion.FixedLarge))
	gen, err := ct.NewGenerator(ct.CPU, 14)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	x0 := f.get(t, "in.x0")
	base := ct.LiveTensors()
	r, err := d.CalcBPDLoop(f.model, x0, diffusion.BPDOptions{ClipDenoised: true, Generator: gen, KeepTerms: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := ct.LiveTensors(); got != base {
		t.Errorf("live handles %d after CalcBPDLoop, want %d", got, base)
	}
	n, T := int64(r.N), int64(r.T)
	if n != 6 || T != 10 {
		t.Fatalf("N, T = %d, %d; want 6, 10", n, T)
	}
	kTerm := kPMV + kElem + 16
	assertK(t, "vb", s.FromSlice(r.VB, n, T), f.get(t, "calcbpd.vb"), kTerm)
	assertK(t, "xstart_mse", s.FromSlice(r.XStartMSE, n, T), f.get(t, "calcbpd.xstart_mse"), kTerm)
	assertK(t, "mse", s.FromSlice(r.MSE, n, T), f.get(t, "calcbpd.mse"), kTerm)
	assertK(t, "prior_bpd", s.FromSlice(r.PriorBPD), f.get(t, "calcbpd.prior_bpd"), kElem+16)
	assertK(t, "total_bpd", s.FromSlice(r.TotalBPD), f.get(t, "calcbpd.total_bpd"), kTerm+11)
	// Per-step means are the column means of the kept terms.
	vb := r.VB
	for tt := 0; tt < r.T; tt++ {
		var sum float64
		for i := 0; i < r.N; i++ {
			sum += float64(vb[i*r.T+tt])
		}
		if m := sum / float64(r.N); math.Abs(m-float64(r.MeanVB[tt])) > 1e-5*math.Abs(m)+1e-6 {
			t.Errorf("MeanVB[%d] = %v, want %v", tt, r.MeanVB[tt], m)
		}
	}
	// Without KeepTerms, only the totals and means are returned; same seed, same totals.
	if err := gen.Seed(14); err != nil {
		t.Fatal(err)
	}
	r2, err := d.CalcBPDLoop(f.model, x0, diffusion.BPDOptions{ClipDenoised: true, Generator: gen})
	if err != nil {
		t.Fatal(err)
	}
	if r2.VB != nil || r2.MSE != nil || r2.XStartMSE != nil {
		t.Error("per-step arrays kept without KeepTerms")
	}
	for i := range r.TotalBPD {
		if r.TotalBPD[i] != r2.TotalBPD[i] {
			t.Errorf("total_bpd[%d] = %v, then %v with the same seed", i, r.TotalBPD[i], r2.TotalBPD[i])
		}
	}
	if _, err := d.CalcBPDLoop(f.model, f.get(t, "in.t"), diffusion.BPDOptions{}); err == nil {
		t.Error("CalcBPDLoop on a [N] tensor: want an error")
	}
}
