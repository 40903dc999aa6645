package diffusion

import (
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// The reverse process (spec §2): p_mean_variance, ancestral and DDIM steps,
// classifier guidance. Step functions are tensor math: like cgotorch's ops
// they panic with *cgotorch.Error on failure (wrap them in cgotorch.Try);
// the loops (loop.go) return errors. Each step builds its intermediates in a
// private scope that it closes before returning, so only the documented
// results survive; those join the scope of the input x (unowned if x is
// unowned, then the caller frees them).
//
// Every step takes x [B,D...] float32 and t [B] int64 schedule indices
// 0..NumSteps()−1 on the Diffusion's device. The model (and guidance) are
// called with the original base-schedule step numbers (ModelSteps), so
// respaced schedules work unchanged.

// MeanVarianceOptions configure PMeanVariance.
type MeanVarianceOptions struct {
	// ClipDenoised clamps the predicted x̂0 to [−1, 1] (the reference's
	// clip_denoised; False in cell_sample.py, True in classifier_sample.py).
	ClipDenoised bool
}

// MeanVariance is p_mean_variance's output for x [B,D] at t [B]. All
// tensors are float32 on the Diffusion's device and belong to x's scope.
type MeanVariance struct {
	// Mean is μ_θ(x_t, t) = coef1_t·x̂0 + coef2_t·x_t, [B,D].
	Mean *ct.Tensor
	// Variance and LogVariance are the fixed model variance v_t and ln v_t
	// (FIXED_LARGE or FIXED_SMALL per Config.Variance), [B,1,...]: rank of
	// x, broadcastable against it (the reference expands them to x's shape).
	Variance, LogVariance *ct.Tensor
	// PredXStart is x̂0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε̂, clamped if asked, [B,D].
	PredXStart *ct.Tensor
	// Eps is the model output ε̂, [B,D].
	Eps *ct.Tensor
}

// Free releases every tensor of m (for unowned results). Nil-safe.
func (m MeanVariance) Free() {
	for _, t := range []*ct.Tensor{m.Mean, m.Variance, m.LogVariance, m.PredXStart, m.Eps} {
		t.Free()
	}
}

func (m MeanVariance) moveTo(s *ct.Scope) MeanVariance {
	for _, t := range []*ct.Tensor{m.Mean, m.Variance, m.LogVariance, m.PredXStart, m.Eps} {
		t.MoveTo(s)
	}
	return m
}

// Step is the output of one sampling step: the next sample and the x̂0 it
// was derived from, [B,D] float32 on the Diffusion's device, in x's scope.
type Step struct {
	Sample, PredXStart *ct.Tensor
}

// Free releases both tensors of s (for unowned results). Nil-safe.
func (s Step) Free() {
	s.Sample.Free()
	s.PredXStart.Free()
}

// GuidanceFunc returns the guidance gradient g(x_t, t) [B,D] float32,
// already scaled (for a classifier, s·∇_x log p(y | x_t, t)). x [B,D] is
// the current sample (do not modify it) and t [B] int64 are the ORIGINAL
// base-schedule steps (the classifier's training steps), as respace.py's
// wrapped cond_fn receives them. It is called under no-grad; a gradient
// needs autograd re-enabled (cgotorch.WithGradMode), as ClassifierGuidance
// does. The sampler takes ownership of the returned tensor and frees it,
// so return a new tensor. Errors are reported by panicking with
// *cgotorch.Error (tensor ops do so already); the loops turn that into an
// error.
type GuidanceFunc func(x, t *ct.Tensor) *ct.Tensor

// StepOptions configure one ancestral or DDIM step.
type StepOptions struct {
	// ClipDenoised clamps x̂0 to [−1, 1].
	ClipDenoised bool
	// Guidance, when non-nil, is applied unconditionally: condition_mean
	// for PSample, condition_score for DDIMSample. (The loops gate it with
	// SampleOptions.GuidanceStart.)
	Guidance GuidanceFunc
	// Noise is z [B,D] for this step; nil draws z ~ N(0,I) from Generator.
	// It is read, never modified or freed. z is used (and, when drawn,
	// drawn) even where t = 0, where it is masked out, as in the reference,
	// so one step always consumes one [B,D] normal draw.
	Noise *ct.Tensor
	// Generator supplies z when Noise is nil; nil is the device's default.
	Generator *ct.Generator
	// NoiseWeight is the reference's nw: PSample adds exp(nw·ln v_t)·z, so
	// 0.5 (the default, also meant by 0) gives the usual σ_t = √v_t.
	NoiseWeight float64
}

// DefaultNoiseWeight is p_sample's nw: the noise scale is exp(0.5·ln v_t) = √v_t.
const DefaultNoiseWeight = 0.5

func (o StepOptions) noiseWeight() float64 {
	if o.NoiseWeight == 0 {
		return DefaultNoiseWeight
	}
	return o.NoiseWeight
}

// PMeanVariance computes p_θ(x_{t−1} | x_t)'s mean and fixed variance with
// an ε-predicting model (spec §2). x [B,D...] float32, t [B] int64 schedule
// indices; the model receives ModelSteps(t). The results join x's scope
// (unowned if x is: free them with MeanVariance.Free). Panics with
// *cgotorch.Error on tensor failure.
func (d *Diffusion) PMeanVariance(model Model, x, t *ct.Tensor, o MeanVarianceOptions) MeanVariance {
	sc := ct.NewScope()
	defer sc.Close()
	mv := d.pMeanVariance(sc, model, x.Alias(sc), t.Alias(sc), o.ClipDenoised)
	return mv.moveTo(x.Scope())
}

// pMeanVariance is PMeanVariance with every result in sc; x and t must be
// owned by sc.
func (d *Diffusion) pMeanVariance(sc *ct.Scope, model Model, x, t *ct.Tensor, clip bool) MeanVariance {
	nd := x.NDim()
	steps := d.ModelSteps(t)
	eps := sc.Adopt(model.Forward(x, steps))
	x0 := d.predictXStartFromEps(x, t, eps)
	if clip {
		x0 = x0.Clamp(-1, 1)
	}
	return MeanVariance{
		Mean:        d.qPosteriorMean(x0, x, t),
		Variance:    extract(d.modelVariance, t, nd),
		LogVariance: extract(d.modelLogVariance, t, nd),
		PredXStart:  x0,
		Eps:         eps,
	}
}

// predictXStartFromEps is x̂0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε, in x's scope.
func (d *Diffusion) predictXStartFromEps(x, t, eps *ct.Tensor) *ct.Tensor {
	nd := x.NDim()
	a := extract(d.sqrtRecipAlphasCumprod, t, nd).Mul(x)
	b := extract(d.sqrtRecipm1AlphasCumprod, t, nd).Mul(eps)
	return a.Sub(b)
}

// predictEpsFromXStart is ε = (√(1/ᾱ_t)·x_t − x̂0)/√(1/ᾱ_t − 1), in x's scope.
func (d *Diffusion) predictEpsFromXStart(x, t, x0 *ct.Tensor) *ct.Tensor {
	nd := x.NDim()
	a := extract(d.sqrtRecipAlphasCumprod, t, nd).Mul(x).Sub(x0)
	return a.Div(extract(d.sqrtRecipm1AlphasCumprod, t, nd))
}

// qPosteriorMean is μ̃_t(x_t, x0) = coef1_t·x0 + coef2_t·x_t, in x0's scope.
func (d *Diffusion) qPosteriorMean(x0, x, t *ct.Tensor) *ct.Tensor {
	nd := x.NDim()
	a := extract(d.posteriorMeanCoef1, t, nd).Mul(x0)
	b := extract(d.posteriorMeanCoef2, t, nd).Mul(x)
	return a.Add(b)
}

// nonzeroMask is 1[t ≠ 0] as float32 [B,1,...] of rank nd, in t's scope.
func nonzeroMask(t *ct.Tensor, nd int) *ct.Tensor {
	shape := make([]int64, nd)
	shape[0] = -1
	for i := 1; i < nd; i++ {
		shape[i] = 1
	}
	return t.EqScalar(0).LogicalNot().ToDType(ct.Float32).View(shape...)
}

// stepNoise returns o.Noise (aliased into sc) or a fresh N(0,I) draw shaped
// like x, owned by sc.
func stepNoise(sc *ct.Scope, x *ct.Tensor, o StepOptions) *ct.Tensor {
	if o.Noise != nil {
		return o.Noise.Alias(sc)
	}
	return sc.Randn(ct.On(x.Device()), o.Generator, x.Shape()...)
}

// guidance calls g with x and the model steps of t and adopts its result into sc.
func (d *Diffusion) guidance(sc *ct.Scope, g GuidanceFunc, x, t *ct.Tensor) *ct.Tensor {
	return sc.Adopt(g(x, d.ModelSteps(t)))
}

// conditionMean is guided-diffusion's condition_mean: μ' = μ + v_t·g(x_t, t),
// in sc (x and t owned by sc).
func (d *Diffusion) conditionMean(sc *ct.Scope, g GuidanceFunc, mv MeanVariance, x, t *ct.Tensor) *ct.Tensor {
	grad := d.guidance(sc, g, x, t)
	return mv.Mean.Add(mv.Variance.Mul(grad))
}

// conditionScore is guided-diffusion's condition_score (Song et al.):
// ε' = ε(x̂0) − √(1−ᾱ_t)·g, x̂0' from ε' (not re-clamped), μ' from x̂0'. The
// returned MeanVariance shares Variance, LogVariance and Eps with mv.
func (d *Diffusion) conditionScore(sc *ct.Scope, g GuidanceFunc, mv MeanVariance, x, t *ct.Tensor) MeanVariance {
	abar := extract(d.alphasCumprod, t, x.NDim())
	eps := d.predictEpsFromXStart(x, t, mv.PredXStart)
	eps = eps.Sub(abar.RSub(1).Sqrt().Mul(d.guidance(sc, g, x, t)))
	out := mv
	out.PredXStart = d.predictXStartFromEps(x, t, eps)
	out.Mean = d.qPosteriorMean(out.PredXStart, x, t)
	return out
}

// ConditionMean applies classifier guidance to a PMeanVariance result the
// way ancestral sampling does (condition_mean): it returns μ + v_t·g(x_t, t)
// [B,D] in x's scope. mv must come from PMeanVariance at the same x and t.
// Panics with *cgotorch.Error on tensor failure.
func (d *Diffusion) ConditionMean(g GuidanceFunc, mv MeanVariance, x, t *ct.Tensor) *ct.Tensor {
	sc := ct.NewScope()
	defer sc.Close()
	return d.conditionMean(sc, g, mv, x.Alias(sc), t.Alias(sc)).MoveTo(x.Scope())
}

// ConditionScore applies guidance the way DDIM does (condition_score): it
// returns the guided x̂0' and mean μ' [B,D] in x's scope (the variance is
// unchanged). mv must come from PMeanVariance at the same x and t. Panics
// with *cgotorch.Error on tensor failure.
func (d *Diffusion) ConditionScore(g GuidanceFunc, mv MeanVariance, x, t *ct.Tensor) (mean, predXStart *ct.Tensor) {
	sc := ct.NewScope()
	defer sc.Close()
	out := d.conditionScore(sc, g, mv, x.Alias(sc), t.Alias(sc))
	return out.Mean.MoveTo(x.Scope()), out.PredXStart.MoveTo(x.Scope())
}

// PSample is one ancestral step (p_sample): x_{t−1} = μ' + 1[t≠0]·√v_t·z
// (exp(nw·ln v_t)·z with o.NoiseWeight nw),
// with μ' the (optionally guided) mean. x [B,D] float32, t [B] int64
// schedule indices. The results join x's scope (unowned if x is: free
// them with Step.Free). Panics with *cgotorch.Error on tensor failure.
func (d *Diffusion) PSample(model Model, x, t *ct.Tensor, o StepOptions) Step {
	sc := ct.NewScope()
	defer sc.Close()
	xa, ta := x.Alias(sc), t.Alias(sc)
	st := d.pSample(sc, model, xa, ta, o)
	return Step{Sample: st.Sample.MoveTo(x.Scope()), PredXStart: st.PredXStart.MoveTo(x.Scope())}
}

// pSample is PSample with every result in sc (x and t owned by sc).
func (d *Diffusion) pSample(sc *ct.Scope, model Model, x, t *ct.Tensor, o StepOptions) Step {
	mv := d.pMeanVariance(sc, model, x, t, o.ClipDenoised)
	z := stepNoise(sc, x, o)
	mean := mv.Mean
	if o.Guidance != nil {
		mean = d.conditionMean(sc, o.Guidance, mv, x, t)
	}
	// exp(nw·ln v) (nw = 0.5: √v), computed as the reference does.
	std := mv.LogVariance.MulScalar(o.noiseWeight()).Exp()
	noise := nonzeroMask(t, x.NDim()).Mul(std).Mul(z)
	return Step{Sample: mean.Add(noise), PredXStart: mv.PredXStart}
}
