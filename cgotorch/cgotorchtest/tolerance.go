package cgotorchtest

import (
	"fmt"
	"math"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// The tolerance rule of every parity test (stated here, once).
//
// A golden file holds what PyTorch computed on the machine that ran
// `make fixtures`; a test recomputes it here, on another CPU, OpenBLAS kernel
// family (OPENBLAS_CORETYPE Prescott, Haswell, Zen, SkylakeX, Cooperlake),
// thread count or libtorch version. Both results are correct floating-point
// evaluations of the same formula; they differ only in how they round:
//
//   - An elementwise function (add, exp, silu, ...) is within a few ulps of
//     the exact value on every implementation (vectorised or scalar), so two
//     implementations agree to ElemUlps·u relative.
//   - A sum of K terms t_1..t_K (a dot product inside a matrix product, a
//     mean, a variance, a norm) is added up in an order that depends on the
//     kernel's blocking and vector width and on the thread count. In any
//     order the computed sum ŝ satisfies |ŝ − s| ≤ γ_K·Σ|t_i|, with
//     γ_K = K·u/(1 − K·u) and u the unit roundoff (2⁻²⁴ for float32; Higham,
//     Accuracy and Stability of Numerical Algorithms, 2nd ed., §3.1, §4.2).
//     Two correct results therefore differ by at most 2·γ_K·Σ|t_i|.
//
// So a test compares elementwise
//
//	|got − want| ≤ 2·γ_K·S + ElemUlps·u·|want|
//
// where K is the accumulation length: the number of roundings along the
// longest chain that produces one element (a sum or dot product of n terms
// counts n, an elementwise op 1; for a chain of layers, forward and backward,
// the lengths add up; for n steps of an iteration that does not expand
// errors, n times the length of one step). S is Σ|t_i| of that element when
// the test can compute it (AssertFP32Elementwise), else the largest |want|
// of the tensor (AssertFP32): a normwise bound, which is first order for
// chains of well-conditioned layers (normalised activations). A sum whose
// terms cancel (a gradient that is zero in exact arithmetic, such as the bias
// of a Linear before a train-mode BatchNorm) has no such scale in its result:
// its golden script records Σ|t_i|. It is a worst-case bound:
// observed differences are typically √K times smaller, and the assertions log
// the fraction of the bound used (go test -v). A wrong formula (a missing
// term, a wrong constant, a swapped operand) changes results by O(S), far
// beyond it.
//
// What the bound does not cover is amplification: an optimizer step whose
// gradient element is at rounding-noise level (Adam's first update is ±lr
// whatever the noise's sign), or a long chaotic trajectory. Those are tested
// on identical inputs (PyTorch's gradients from the golden file fed to our
// AdamW, or gradients both sides draw from the same seeded generator), over
// short stable horizons, or against a reference computed at test time on the
// same machine, libtorch, kernels and thread count (LiveReference), where
// the results must be bit-identical.

// ElemUlps is the slack for elementwise functions, in units of u: two
// implementations (vectorised or scalar, libtorch 1.x or 2.x) each within a
// few ulps of the exact value (1 ulp ≤ 2u relative; SLEEF's functions are
// within 1 ulp, its fast variants 3.5), plus the roundings inside
// composite functions (silu, gelu, sigmoid): 32u ≈ 1.9e-6 relative.
const ElemUlps = 32

// UnitRoundoff is u for a floating dtype: 2⁻²⁴ (float32), 2⁻⁵³ (float64),
// 2⁻¹¹ (float16), 2⁻⁸ (bfloat16); 0 for integer and bool tensors, which
// must match exactly.
func UnitRoundoff(dt ct.DType) float64 {
	switch dt {
	case ct.Float32:
		return 0x1p-24
	case ct.Float64:
		return 0x1p-53
	case ct.Float16:
		return 0x1p-11
	case ct.BFloat16:
		return 0x1p-8
	}
	return 0
}

// Gamma is γ_k = k·u/(1 − k·u), the bound on the relative error of a sum of
// k terms (relative to the sum of their magnitudes). It is +Inf when k·u ≥ 1.
func Gamma(k int, u float64) float64 {
	if k < 1 {
		k = 1
	}
	ku := float64(k) * u
	if ku >= 1 {
		return math.Inf(1)
	}
	return ku / (1 - ku)
}

// FP32 is a comparison under the rule above with a normwise scale.
type FP32 struct {
	// K is the accumulation length (see the rule); 1 for an elementwise op.
	K int
	// Scale is S, the magnitude of the summed terms; 0 means the largest
	// |want| of the tensor.
	Scale float64
}

// Bound is the absolute part of the tolerance, 2·γ_K·S, for a tensor whose
// elements are want (in its dtype with unit roundoff u).
func (f FP32) Bound(want []float64, u float64) float64 {
	s := f.Scale
	if s == 0 {
		s = MaxAbs(want)
	}
	return 2 * Gamma(f.K, u) * s
}

// AssertFP32 compares got with want (same shape and dtype) under the rule:
// |got − want| ≤ 2·γ_K·S + ElemUlps·u·|want| elementwise, S = f.Scale or the
// largest |want|. Integer and bool tensors must be equal. It reports up to
// five offending elements and logs the largest fraction of the bound used.
func AssertFP32(tb testing.TB, name string, got, want *ct.Tensor, f FP32) {
	tb.Helper()
	g, w := sameShape(tb, name, got, want)
	if g == nil {
		return
	}
	u := UnitRoundoff(want.DType())
	atol := f.Bound(w, u)
	assertBound(tb, name, g, w, func(int) float64 { return atol }, u, fmt.Sprintf("K=%d, 2γ_K·S=%.3g", f.K, atol))
}

// AssertFP32Elementwise is AssertFP32 with a per-element scale: scale holds
// Σ|t_i| for each element of want (e.g. |x|·|W|ᵀ + |b| for a linear layer),
// the sharpest form of the rule.
func AssertFP32Elementwise(tb testing.TB, name string, got, want, scale *ct.Tensor, k int) {
	tb.Helper()
	g, w := sameShape(tb, name, got, want)
	if g == nil {
		return
	}
	sc := Float64s(scale)
	if len(sc) != len(w) {
		tb.Fatalf("%s: scale has %d elements, want %d", name, len(sc), len(w))
	}
	u := UnitRoundoff(want.DType())
	gam := 2 * Gamma(k, u)
	assertBound(tb, name, g, w, func(i int) float64 { return gam * sc[i] }, u, fmt.Sprintf("K=%d, 2γ_K=%.3g per unit of Σ|t|", k, gam))
}

func sameShape(tb testing.TB, name string, got, want *ct.Tensor) (g, w []float64) {
	tb.Helper()
	if got == nil || want == nil {
		tb.Fatalf("%s: missing tensor (got %v, want %v)", name, got, want)
	}
	if fmt.Sprint(got.Shape()) != fmt.Sprint(want.Shape()) {
		tb.Fatalf("%s: shape %v, want %v", name, got.Shape(), want.Shape())
	}
	if got.DType() != want.DType() {
		tb.Fatalf("%s: dtype %s, want %s", name, got.DType(), want.DType())
	}
	return Float64s(got), Float64s(want)
}

// assertBound checks |g_i − w_i| ≤ atol(i) + ElemUlps·u·|w_i| (exact match
// when u is 0; NaN must meet NaN and infinities must be equal).
func assertBound(tb testing.TB, name string, g, w []float64, atol func(int) float64, u float64, rule string) {
	tb.Helper()
	bad, worst := 0, 0.0
	for i := range w {
		lim := atol(i) + ElemUlps*u*math.Abs(w[i])
		ok := Close(g[i], w[i], 0, lim)
		if ok && lim > 0 && !math.IsNaN(w[i]) && !math.IsInf(w[i], 0) {
			worst = math.Max(worst, math.Abs(g[i]-w[i])/lim)
		}
		if !ok {
			if bad < 5 {
				tb.Errorf("%s[%d] = %.9g, want %.9g (|diff| %.3g > bound %.3g)", name, i, g[i], w[i], math.Abs(g[i]-w[i]), lim)
			}
			bad++
		}
	}
	if bad > 0 {
		tb.Errorf("%s: %d of %d elements beyond the bound (%s; rule in cgotorchtest/tolerance.go)", name, bad, len(w), rule)
		return
	}
	tb.Logf("%s: largest difference %.2g%% of the bound (%s)", name, 100*worst, rule)
}

// Summary describes a tensor too large for a golden file by three numbers:
// Σx², Σ|x| and max|x| (float64).
type Summary struct{ SumSq, AbsSum, AbsMax float64 }

// Summarize computes the Summary of x.
func Summarize(x *ct.Tensor) Summary {
	var s Summary
	for _, v := range Float64s(x) {
		s.SumSq += v * v
		s.AbsSum += math.Abs(v)
		s.AbsMax = math.Max(s.AbsMax, math.Abs(v))
	}
	return s
}

// AssertSummary compares the summary of got with want's under the rule: each
// of the n elements may differ by δ = (2·γ_K + ElemUlps·u)·max|want|, so
// max|x| by δ, Σ|x| by n·δ and Σx² by 2δ·Σ|x| + n·δ².
func AssertSummary(tb testing.TB, name string, got *ct.Tensor, want Summary, k int) {
	tb.Helper()
	u := UnitRoundoff(got.DType())
	n := float64(got.Numel())
	d := (2*Gamma(k, u) + ElemUlps*u) * want.AbsMax
	g := Summarize(got)
	worst := 0.0
	for _, c := range []struct {
		what      string
		got, want float64
		bound     float64
	}{
		{"max|x|", g.AbsMax, want.AbsMax, d},
		{"Σ|x|", g.AbsSum, want.AbsSum, n * d},
		{"Σx²", g.SumSq, want.SumSq, 2*d*want.AbsSum + n*d*d},
	} {
		diff := math.Abs(c.got - c.want)
		if !(diff <= c.bound) {
			tb.Errorf("%s: %s = %.9g, want %.9g (|diff| %.3g > bound %.3g; K=%d, rule in cgotorchtest/tolerance.go)", name, c.what, c.got, c.want, diff, c.bound, k)
			continue
		}
		if c.bound > 0 {
			worst = math.Max(worst, diff/c.bound)
		}
	}
	tb.Logf("%s: summary within %.2g%% of the bound (K=%d)", name, 100*worst, k)
}

// SumsClose reports whether the float64 sum and sum of squares of n values
// agree with wantSum and wantSq, when the values are the same and only the
// order of the float64 additions differs (libtorch's reductions split the
// work by thread count): the rule with u = 2⁻⁵³ and K = n, using
// Σ|x| ≤ √(n·Σx²) for the sum. rtol widens both bounds relative to the same
// scales, for values that may differ slightly (RNGTolerance on libtorch 2.x).
func SumsClose(n int, gotSum, gotSq, wantSum, wantSq, rtol float64) bool {
	g := 2*Gamma(n, UnitRoundoff(ct.Float64)) + rtol
	abs := math.Sqrt(float64(n) * wantSq)
	return math.Abs(gotSum-wantSum) <= g*abs && math.Abs(gotSq-wantSq) <= g*wantSq
}

// MaxAbs is the largest |x_i| (0 for an empty slice; NaN and Inf ignored).
func MaxAbs(x []float64) float64 {
	m := 0.0
	for _, v := range x {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			m = math.Max(m, math.Abs(v))
		}
	}
	return m
}

// AbsLinearScale is Σ|t_i| of every output element of x·Wᵀ + b (the
// per-element scale of AssertFP32Elementwise for a matrix product or linear
// layer): |x|·|W|ᵀ + |b|, computed in float64. b may be nil; x may have
// leading batch dimensions.
func AbsLinearScale(s *ct.Scope, x, w, b *ct.Tensor) *ct.Tensor {
	ax := s.Adopt(x.Detach()).ToDType(ct.Float64).Abs()
	aw := s.Adopt(w.Detach()).ToDType(ct.Float64).Abs()
	var ab *ct.Tensor
	if b != nil {
		ab = s.Adopt(b.Detach()).ToDType(ct.Float64).Abs()
	}
	return ax.Linear(aw, ab)
}
