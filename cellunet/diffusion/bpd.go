package diffusion

import (
	"fmt"
	"math"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Bits-per-dimension evaluation (calc_bpd_loop, spec §2) and its helpers
// from guided-diffusion's losses.py. The helpers are tensor math: they
// panic with *cgotorch.Error on failure and their results join the scope of
// their first owned input.

// NormalKL is KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise,
// ½(−1 + lv2 − lv1 + e^{lv1−lv2} + (m1−m2)²·e^{−lv2}), with broadcasting.
func NormalKL(mean1, logvar1, mean2, logvar2 *ct.Tensor) *ct.Tensor {
	sc := ct.NewScope()
	defer sc.Close()
	m1, lv1, m2, lv2 := mean1.Alias(sc), logvar1.Alias(sc), mean2.Alias(sc), logvar2.Alias(sc)
	a := lv2.AddScalar(-1).Sub(lv1).Add(lv1.Sub(lv2).Exp())
	b := m1.Sub(m2).Square().Mul(lv2.Neg().Exp())
	return a.Add(b).MulScalar(0.5).MoveTo(firstScope(mean1, logvar1, mean2, logvar2))
}

// ApproxStandardNormalCDF is Φ(x) ≈ ½(1 + tanh(√(2/π)(x + 0.044715x³))).
func ApproxStandardNormalCDF(x *ct.Tensor) *ct.Tensor {
	sc := ct.NewScope()
	defer sc.Close()
	xa := x.Alias(sc)
	in := xa.Add(xa.PowScalar(3).MulScalar(0.044715)).MulScalar(math.Sqrt(2 / math.Pi))
	return in.Tanh().AddScalar(1).MulScalar(0.5).MoveTo(x.Scope())
}

// DiscretizedGaussianLogLikelihood is the log-likelihood of x under a
// Gaussian (means, e^{logScales}) discretised into bins of width 2/255, the
// outermost bins (x < −0.999, x > 0.999) open to ±∞; probabilities are
// clamped at 1e-12 before the log. An image-data assumption (spec §2),
// meaningless for latents but kept for calc_bpd parity. Shapes broadcast to
// x's.
func DiscretizedGaussianLogLikelihood(x, means, logScales *ct.Tensor) *ct.Tensor {
	sc := ct.NewScope()
	defer sc.Close()
	xa, ma, la := x.Alias(sc), means.Alias(sc), logScales.Alias(sc)
	centered := xa.Sub(ma)
	invStdv := la.Neg().Exp()
	cdfPlus := ApproxStandardNormalCDF(invStdv.Mul(centered.AddScalar(1.0 / 255.0)))
	cdfMin := ApproxStandardNormalCDF(invStdv.Mul(centered.SubScalar(1.0 / 255.0)))
	logCdfPlus := cdfPlus.ClampMin(1e-12).Log()
	logOneMinusCdfMin := cdfMin.RSub(1).ClampMin(1e-12).Log()
	logDelta := cdfPlus.Sub(cdfMin).ClampMin(1e-12).Log()
	inner := ct.Where(xa.GtScalar(0.999), logOneMinusCdfMin, logDelta)
	return ct.Where(xa.LtScalar(-0.999), logCdfPlus, inner).MoveTo(x.Scope())
}

// MeanFlat averages over every dimension but the first: [B,...] → [B].
func MeanFlat(x *ct.Tensor) *ct.Tensor {
	nd := x.NDim()
	if nd < 2 {
		return x.Clone()
	}
	dims := make([]int64, 0, nd-1)
	for i := 1; i < nd; i++ {
		dims = append(dims, int64(i))
	}
	return x.MeanDims(false, dims...)
}

func firstScope(ts ...*ct.Tensor) *ct.Scope {
	for _, t := range ts {
		if t.Scope() != nil {
			return t.Scope()
		}
	}
	return nil
}

// BPDOptions configure CalcBPDLoop.
type BPDOptions struct {
	// ClipDenoised clamps x̂0 to [−1, 1] (the reference's default is True).
	ClipDenoised bool
	// Generator supplies the fresh ε of every step; nil is the device's default.
	Generator *ct.Generator
	// KeepTerms keeps the per-sample, per-step arrays VB, XStartMSE and MSE
	// ([N,T] each, float32 on the host: 12·N·T bytes in all). Without it
	// only per-sample totals and per-step batch means are kept.
	KeepTerms bool
}

// BPD is CalcBPDLoop's result, on the host. Totals are accumulated in
// float64 and rounded to float32.
type BPD struct {
	// N samples, T steps.
	N, T int
	// TotalBPD = Σ_t VB[:,t] + PriorBPD, and PriorBPD = mean_d KL(q(x_T|x0) ‖ N(0,I))/ln 2, [N].
	TotalBPD, PriorBPD []float32
	// VB, XStartMSE and MSE are [N,T] row-major (element n·T + t) when
	// BPDOptions.KeepTerms, else nil: VB[:,t] is the KL term of step t in
	// bits/dim (the decoder NLL at t = 0), XStartMSE[:,t] = mean_d (x̂0−x0)²
	// and MSE[:,t] = mean_d (ε̂−ε)². Column t is step t; the reference
	// stacks its columns in loop order (its column j is step T−1−j).
	VB, XStartMSE, MSE []float32
	// MeanVB, MeanXStartMSE and MeanMSE [T] are the batch means of those
	// terms per step (always kept).
	MeanVB, MeanXStartMSE, MeanMSE []float32
}

// CalcBPDLoop estimates the variational bound in bits per dimension of x0
// [N,D] float32 (calc_bpd_loop): for t = T−1 … 0 it draws a fresh ε, forms
// x_t = QSample(x0, t, ε) and evaluates the model under no-grad. It costs T
// model calls on the whole batch (chunk large N yourself). Device memory is
// one step's worth, O(N·D) plus the model's activations: each step's tensors
// are freed before the next, and the three [N] per-step terms are copied to
// the host (one synchronisation per step) instead of being stacked into
// [N,T] device tensors. Host memory is 12·N·T bytes with KeepTerms, else
// O(N + T). Tensor failures are returned as errors and leave nothing
// allocated.
func (d *Diffusion) CalcBPDLoop(model Model, x0 *ct.Tensor, o BPDOptions) (*BPD, error) {
	var shape []int64
	if err := ct.Try(func() { shape = x0.Shape() }); err != nil {
		return nil, fmt.Errorf("diffusion: calc_bpd_loop: %w", err)
	}
	if len(shape) < 2 || shape[0] <= 0 {
		return nil, fmt.Errorf("diffusion: calc_bpd_loop: x0 has shape %v, want [N,D...] with N > 0", shape)
	}
	n := int(shape[0])
	T := d.NumSteps()
	r := &BPD{N: n, T: T, MeanVB: make([]float32, T), MeanXStartMSE: make([]float32, T), MeanMSE: make([]float32, T)}
	if o.KeepTerms {
		r.VB, r.XStartMSE, r.MSE = make([]float32, n*T), make([]float32, n*T), make([]float32, n*T)
	}
	total := make([]float64, n)
	err := ct.Try(func() {
		ct.NoGrad(func() {
			for t := T - 1; t >= 0; t-- {
				terms := d.bpdStep(model, x0, t, o) // [3,N]: vb, xstart_mse, mse
				r.record(terms, t, total)
			}
			prior := d.priorBPD(x0)
			r.PriorBPD = prior
			r.TotalBPD = make([]float32, n)
			for i := range total {
				r.TotalBPD[i] = float32(total[i] + float64(prior[i]))
			}
		})
	})
	if err != nil {
		return nil, fmt.Errorf("diffusion: calc_bpd_loop: %w", err)
	}
	return r, nil
}

// record stores one step's [3][N] terms.
func (r *BPD) record(terms []float32, t int, total []float64) {
	n := r.N
	vb, xm, ms := terms[:n], terms[n:2*n], terms[2*n:]
	var svb, sxm, sms float64
	for i := 0; i < n; i++ {
		total[i] += float64(vb[i])
		svb += float64(vb[i])
		sxm += float64(xm[i])
		sms += float64(ms[i])
		if r.VB != nil {
			r.VB[i*r.T+t], r.XStartMSE[i*r.T+t], r.MSE[i*r.T+t] = vb[i], xm[i], ms[i]
		}
	}
	r.MeanVB[t], r.MeanXStartMSE[t], r.MeanMSE[t] = float32(svb/float64(n)), float32(sxm/float64(n)), float32(sms/float64(n))
}

// bpdStep evaluates step t (_vb_terms_bpd plus the two MSEs) in its own
// scope and returns [vb, xstart_mse, mse] ([3·N] on the host).
func (d *Diffusion) bpdStep(model Model, x0In *ct.Tensor, t int, o BPDOptions) []float32 {
	sc := ct.NewScope()
	defer sc.Close()
	x0 := x0In.Alias(sc)
	nd := x0.NDim()
	tt := sc.Full(float64(t), ct.Options{DType: ct.Int64, Device: d.dev}, x0.Dim(0))
	noise := sc.Randn(ct.On(x0.Device()), o.Generator, x0.Shape()...)
	xt := d.QSample(x0, tt, noise)
	mv := d.pMeanVariance(sc, model, xt, tt, o.ClipDenoised)
	var vb *ct.Tensor
	if t == 0 {
		// Decoder NLL; log_scales = ½·ln v broadcast to x's shape.
		ll := DiscretizedGaussianLogLikelihood(x0, mv.Mean, mv.LogVariance.MulScalar(0.5))
		vb = MeanFlat(ll.Neg()).DivScalar(math.Ln2)
	} else {
		trueMean := d.qPosteriorMean(x0, xt, tt)
		trueLogVar := extract(d.posteriorLogVarianceClipped, tt, nd)
		vb = MeanFlat(NormalKL(trueMean, trueLogVar, mv.Mean, mv.LogVariance)).DivScalar(math.Ln2)
	}
	xm := MeanFlat(mv.PredXStart.Sub(x0).Square())
	eps := d.predictEpsFromXStart(xt, tt, mv.PredXStart)
	ms := MeanFlat(eps.Sub(noise).Square())
	return ct.Stack([]*ct.Tensor{vb, xm, ms}, 0).To(ct.CPU, ct.Float32).Float32s()
}

// priorBPD is mean_d KL(N(√ᾱ_{T−1}·x0, 1−ᾱ_{T−1}) ‖ N(0,1))/ln 2 per sample, [N] on the host.
func (d *Diffusion) priorBPD(x0In *ct.Tensor) []float32 {
	sc := ct.NewScope()
	defer sc.Close()
	x0 := x0In.Alias(sc)
	nd := x0.NDim()
	tt := sc.Full(float64(d.NumSteps()-1), ct.Options{DType: ct.Int64, Device: d.dev}, x0.Dim(0))
	mean := extract(d.sqrtAlphasCumprod, tt, nd).Mul(x0)
	logVar := extract(d.logOneMinusAlphasCumprod(sc), tt, nd)
	zero := sc.Zeros(ct.On(x0.Device()))
	kl := NormalKL(mean, logVar, zero, zero)
	return MeanFlat(kl).DivScalar(math.Ln2).To(ct.CPU, ct.Float32).Float32s()
}

// logOneMinusAlphasCumprod uploads ln(1−ᾱ) [T] float32 into sc (the
// Diffusion does not keep it on the device; it is used once per CalcBPDLoop).
func (d *Diffusion) logOneMinusAlphasCumprod(sc *ct.Scope) *ct.Tensor {
	v := d.sched.LogOneMinusAlphasCumprod
	f := make([]float32, len(v))
	for i, x := range v {
		f[i] = float32(x)
	}
	return sc.FromSlice(f).To(d.dev, 0)
}
