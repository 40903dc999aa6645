package monitor

import (
	"math"
	"slices"
)

// SlopeEstimate is a Theil–Sen slope with its rank-based confidence interval.
type SlopeEstimate struct {
	// Slope is the median of the pairwise slopes (y units per x unit).
	Slope float64
	// Lower and Upper bound the two-sided confidence interval at the
	// requested level (Sen 1968; Hollander & Wolfe, ch. 9), with the
	// variance of Kendall's S corrected for ties in y.
	Lower, Upper float64
	// N is the number of points, Pairs the number of pairwise slopes.
	N, Pairs int
}

// TheilSen estimates the slope of y against x (x strictly increasing) and a
// two-sided confidence interval at level confidence (e.g. 0.99). scratch, if
// large enough, holds the n(n−1)/2 pairwise slopes; the (possibly grown)
// buffer is returned for reuse. With fewer than 3 points the interval is
// infinite.
func TheilSen(x, y []float64, confidence float64, scratch []float64) (SlopeEstimate, []float64) {
	n := len(x)
	est := SlopeEstimate{N: n, Slope: math.NaN(), Lower: math.Inf(-1), Upper: math.Inf(1)}
	if n < 2 || len(y) != n {
		return est, scratch
	}
	np := n * (n - 1) / 2
	if cap(scratch) < np+n { // pairwise slopes, then room to sort y
		scratch = make([]float64, np+n)
	}
	s := scratch[:0]
	for i := 0; i < n; i++ {
		xi, yi := x[i], y[i]
		for j := i + 1; j < n; j++ {
			if dx := x[j] - xi; dx != 0 {
				s = append(s, (y[j]-yi)/dx)
			}
		}
	}
	np = len(s)
	est.Pairs = np
	if np == 0 {
		return est, scratch
	}
	// Median (average of the two middle order statistics when even). After
	// selecting it, the lower bound lies in s[:mid] and the upper in s[mid+1:].
	mid := (np - 1) / 2
	selectKth(s, mid)
	med := s[mid]
	if np%2 == 0 {
		med = (med + minOf(s[mid+1:])) / 2
	}
	est.Slope = med
	if n < 3 {
		return est, scratch
	}
	z := normalQuantile(1 - (1-confidence)/2)
	c := z * math.Sqrt(kendallVariance(y, s[np:np]))
	// 1-based ranks M1 = (N−C)/2 and M2+1 = (N+C)/2 + 1, rounded outwards.
	lo := int(math.Floor((float64(np)-c)/2)) - 1
	hi := int(math.Ceil((float64(np) + c) / 2)) // 0-based index of rank (N+C)/2 + 1
	switch {
	case lo >= 0 && lo < mid:
		selectKth(s[:mid], lo)
		est.Lower = s[lo]
	case lo >= mid:
		est.Lower = med
	}
	switch {
	case hi < np && hi > mid:
		selectKth(s[mid+1:], hi-mid-1)
		est.Upper = s[hi]
	case hi <= mid:
		est.Upper = med
	}
	return est, scratch
}

func minOf(a []float64) float64 {
	m := a[0]
	for _, v := range a[1:] {
		if v < m {
			m = v
		}
	}
	return m
}

// lowerBoundExceeds reports whether the lower bound of TheilSen's
// confidence interval exceeds thr, without storing or ordering the pairwise
// slopes: the bound is the order statistic of rank M1, so it exceeds thr
// exactly when at most M1−1 slopes are ≤ thr. One pass over the pairs, no
// division, no branch; buf is scratch for the tie correction (returned for
// reuse).
func lowerBoundExceeds(x, y []float64, confidence, thr float64, buf []float64) (bool, []float64) {
	n := len(x)
	if n < 3 || len(y) != n {
		return false, buf
	}
	np, le := 0, 0
	for i := 0; i < n; i++ {
		xi, yi := x[i], y[i]
		for j := i + 1; j < n; j++ {
			dx := x[j] - xi
			if dx == 0 {
				continue
			}
			np++
			// The sign bit of thr·dx − dy is 0 when dy ≤ thr·dx.
			le += 1 - int(math.Float64bits(thr*dx-(y[j]-yi))>>63)
		}
	}
	// M1 = (N − C)/2 < N/2 for any variance: with half the slopes or more
	// ≤ thr the bound cannot exceed thr (the usual case, without a sort).
	if 2*le >= np {
		return false, buf
	}
	if cap(buf) < n {
		buf = make([]float64, 0, n)
	}
	z := normalQuantile(1 - (1-confidence)/2)
	c := z * math.Sqrt(kendallVariance(y, buf[:0]))
	lo := int(math.Floor((float64(np)-c)/2)) - 1 // 0-based index of the lower bound
	return lo >= 0 && le <= lo, buf
}

// kendallVariance is Var(S) of Kendall's S under no trend, with the
// correction for tied y values: [n(n−1)(2n+5) − Σ t(t−1)(2t+5)] / 18.
// buf is scratch space (its capacity is reused when large enough).
func kendallVariance(y, buf []float64) float64 {
	n := float64(len(y))
	v := n * (n - 1) * (2*n + 5)
	sorted := append(buf[:0], y...)
	slices.Sort(sorted)
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j] == sorted[i] {
			j++
		}
		if t := float64(j - i); t > 1 {
			v -= t * (t - 1) * (2*t + 5)
		}
		i = j
	}
	return v / 18
}

// selectKth partially orders a so that a[k] is the k-th smallest, every
// element before it is ≤ and every element after it is ≥ (quickselect,
// median-of-three pivots, insertion sort for short ranges).
func selectKth(a []float64, k int) {
	lo, hi := 0, len(a)-1
	for hi > lo {
		if hi-lo < 16 {
			for i := lo + 1; i <= hi; i++ {
				for j := i; j > lo && a[j] < a[j-1]; j-- {
					a[j], a[j-1] = a[j-1], a[j]
				}
			}
			return
		}
		m := lo + (hi-lo)/2
		if a[m] < a[lo] {
			a[m], a[lo] = a[lo], a[m]
		}
		if a[hi] < a[lo] {
			a[hi], a[lo] = a[lo], a[hi]
		}
		if a[hi] < a[m] {
			a[hi], a[m] = a[m], a[hi]
		}
		p := a[m]
		i, j := lo, hi
		for i <= j {
			for a[i] < p {
				i++
			}
			for a[j] > p {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return
		}
	}
}

// normalQuantile is the inverse of the standard normal CDF (Acklam's
// rational approximation refined by one Halley step; |error| < 1e-12).
func normalQuantile(p float64) float64 {
	if p <= 0 {
		return math.Inf(-1)
	}
	if p >= 1 {
		return math.Inf(1)
	}
	a := [...]float64{-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
		1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00}
	b := [...]float64{-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
		6.680131188771972e+01, -1.328068155288572e+01}
	c := [...]float64{-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
		-2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00}
	d := [...]float64{7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
		3.754408661907416e+00}
	const pl = 0.02425
	var x float64
	switch {
	case p < pl:
		q := math.Sqrt(-2 * math.Log(p))
		x = (((((c[0]*q+c[1])*q+c[2])*q+c[3])*q+c[4])*q + c[5]) / ((((d[0]*q+d[1])*q+d[2])*q+d[3])*q + 1)
	case p <= 1-pl:
		q := p - 0.5
		r := q * q
		x = (((((a[0]*r+a[1])*r+a[2])*r+a[3])*r+a[4])*r + a[5]) * q / (((((b[0]*r+b[1])*r+b[2])*r+b[3])*r+b[4])*r + 1)
	default:
		q := math.Sqrt(-2 * math.Log(1-p))
		x = -(((((c[0]*q+c[1])*q+c[2])*q+c[3])*q+c[4])*q + c[5]) / ((((d[0]*q+d[1])*q+d[2])*q+d[3])*q + 1)
	}
	e := 0.5*math.Erfc(-x/math.Sqrt2) - p
	u := e * math.Sqrt(2*math.Pi) * math.Exp(x*x/2)
	return x - u/(1+x*u/2)
}
