package diffusion

import (
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// DDIMSample is one DDIM step (ddim_sample, spec §2) with stochasticity eta
// (0: deterministic DDIM, 1: ancestral-like):
//
//  1. x̂0 from the model's ε̂ (clamped if o.ClipDenoised);
//  2. with o.Guidance, condition_score: ε' = ε(x̂0) − √(1−ᾱ_t)·g, x̂0 from ε';
//  3. ε = (√(1/ᾱ_t)·x_t − x̂0)/√(1/ᾱ_t − 1);
//  4. σ_t = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev);
//  5. x_{t−1} = √ᾱ_prev·x̂0 + √(1−ᾱ_prev−σ_t²)·ε + 1[t≠0]·σ_t·z.
//
// x [B,D] float32, t [B] int64 schedule indices. z is drawn (or taken from
// o.Noise) even when eta = 0, as in the reference. The results join x's
// scope (unowned if x is: free them with Step.Free). Panics with
// *cgotorch.Error on tensor failure.
func (d *Diffusion) DDIMSample(model Model, x, t *ct.Tensor, eta float64, o StepOptions) Step {
	sc := ct.NewScope()
	defer sc.Close()
	st := d.ddimSample(sc, model, x.Alias(sc), t.Alias(sc), eta, o)
	return Step{Sample: st.Sample.MoveTo(x.Scope()), PredXStart: st.PredXStart.MoveTo(x.Scope())}
}

// ddimSample is DDIMSample with every result in sc (x and t owned by sc).
func (d *Diffusion) ddimSample(sc *ct.Scope, model Model, x, t *ct.Tensor, eta float64, o StepOptions) Step {
	nd := x.NDim()
	mv := d.pMeanVariance(sc, model, x, t, o.ClipDenoised)
	if o.Guidance != nil {
		mv = d.conditionScore(sc, o.Guidance, mv, x, t)
	}
	eps := d.predictEpsFromXStart(x, t, mv.PredXStart)
	abar := extract(d.alphasCumprod, t, nd)
	abarPrev := extract(d.alphasCumprodPrev, t, nd)
	// σ = η·√((1−ᾱ_prev)/(1−ᾱ))·√(1−ᾱ/ᾱ_prev), in the reference's order.
	sigma := abarPrev.RSub(1).Div(abar.RSub(1)).Sqrt().MulScalar(eta).
		Mul(abar.Div(abarPrev).RSub(1).Sqrt())
	z := stepNoise(sc, x, o)
	a := mv.PredXStart.Mul(abarPrev.Sqrt())
	b := abarPrev.RSub(1).Sub(sigma.Square()).Sqrt().Mul(eps)
	meanPred := a.Add(b)
	noise := nonzeroMask(t, nd).Mul(sigma).Mul(z)
	return Step{Sample: meanPred.Add(noise), PredXStart: mv.PredXStart}
}

// DDIMReverseSample is one step of the deterministic reverse ODE
// (ddim_reverse_sample): x_{t+1} = √ᾱ_next·x̂0 + √(1−ᾱ_next)·ε with
// ε = (√(1/ᾱ_t)·x_t − x̂0)/√(1/ᾱ_t − 1), mapping a sample towards noise.
// The reference asserts eta = 0; this function has no eta at all. x [B,D]
// float32, t [B] int64 schedule indices. The results join x's scope
// (unowned if x is: free them with Step.Free). Panics with *cgotorch.Error
// on tensor failure.
func (d *Diffusion) DDIMReverseSample(model Model, x, t *ct.Tensor, o MeanVarianceOptions) Step {
	sc := ct.NewScope()
	defer sc.Close()
	xa, ta := x.Alias(sc), t.Alias(sc)
	nd := xa.NDim()
	mv := d.pMeanVariance(sc, model, xa, ta, o.ClipDenoised)
	eps := d.predictEpsFromXStart(xa, ta, mv.PredXStart)
	abarNext := extract(d.alphasCumprodNext, ta, nd)
	a := mv.PredXStart.Mul(abarNext.Sqrt())
	b := abarNext.RSub(1).Sqrt().Mul(eps)
	return Step{Sample: a.Add(b).MoveTo(x.Scope()), PredXStart: mv.PredXStart.MoveTo(x.Scope())}
}
