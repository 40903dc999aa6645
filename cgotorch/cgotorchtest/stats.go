package cgotorchtest

import (
	"math"
	"slices"
)

// WelchT is Welch's two-sample t statistic for the difference of the means
// of a and b (unequal variances).
func WelchT(a, b []float64) float64 {
	mv := func(x []float64) (m, v float64) {
		for _, y := range x {
			m += y
		}
		m /= float64(len(x))
		for _, y := range x {
			v += (y - m) * (y - m)
		}
		return m, v / float64(len(x)-1)
	}
	ma, va := mv(a)
	mb, vb := mv(b)
	return (ma - mb) / math.Sqrt(va/float64(len(a))+vb/float64(len(b)))
}

// KSStatistic is the two-sample Kolmogorov–Smirnov statistic: the largest
// distance between the empirical distribution functions of a and b. At
// significance α the samples differ when it exceeds c(α)·√((n+m)/(n·m)),
// c(0.001) = 1.949.
func KSStatistic(a, b []float64) float64 {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	var d float64
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		x := min(a[i], b[j])
		for i < len(a) && a[i] == x {
			i++
		}
		for j < len(b) && b[j] == x {
			j++
		}
		d = max(d, math.Abs(float64(i)/float64(len(a))-float64(j)/float64(len(b))))
	}
	return d
}
