package eval

import (
	"math"
	"sort"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
)

// GeneMeans returns the mean of every column of x over its rows (float64
// accumulation; absent entries count as zeros), as numpy's
// X.mean(axis=0).
func GeneMeans(x *scdata.CSR) []float64 {
	sum := make([]float64, x.Cols)
	for k, j := range x.Indices {
		sum[j] += float64(x.Data[k])
	}
	if x.Rows > 0 {
		inv := 1 / float64(x.Rows)
		for j := range sum {
			sum[j] *= inv
		}
	}
	return sum
}

// Pearson is the Pearson correlation of a and b (equal lengths, computed
// in float64 with centred sums, as numpy.corrcoef). It is NaN when either
// vector is constant or there are fewer than two values — there is no
// correlation to report, and the caller says so.
func Pearson(a, b []float64) float64 {
	n := len(a)
	if n != len(b) || n < 2 {
		return math.NaN()
	}
	var ma, mb float64
	for i := range a {
		ma += a[i]
		mb += b[i]
	}
	ma /= float64(n)
	mb /= float64(n)
	var sab, saa, sbb float64
	for i := range a {
		da, db := a[i]-ma, b[i]-mb
		sab += da * db
		saa += da * da
		sbb += db * db
	}
	if saa == 0 || sbb == 0 {
		return math.NaN()
	}
	r := sab / math.Sqrt(saa*sbb)
	return math.Max(-1, math.Min(1, r))
}

// Ranks returns the 1-based ranks of v with ties given their average rank
// (scipy.stats.rankdata's "average" method).
func Ranks(v []float64) []float64 {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return v[idx[a]] < v[idx[b]] })
	r := make([]float64, len(v))
	for i := 0; i < len(idx); {
		j := i + 1
		for j < len(idx) && v[idx[j]] == v[idx[i]] {
			j++
		}
		avg := float64(i+j+1) / 2 // mean of ranks i+1 .. j
		for k := i; k < j; k++ {
			r[idx[k]] = avg
		}
		i = j
	}
	return r
}

// Spearman is the Spearman rank correlation of a and b: the Pearson
// correlation of their average ranks (scipy.stats.spearmanr). NaN when
// either vector is constant. Values must not be NaN.
func Spearman(a, b []float64) float64 {
	if len(a) != len(b) || len(a) < 2 {
		return math.NaN()
	}
	return Pearson(Ranks(a), Ranks(b))
}

// AUC is the area under the ROC curve of scores for the positives
// (positive[i] true) against the negatives, with ties counted half — the
// Mann–Whitney U statistic over n₊·n₋, equal to sklearn's roc_auc_score
// (trapezoidal ROC). NaN when one class is empty.
func AUC(scores []float64, positive []bool) float64 {
	r := Ranks(scores)
	var np, sum float64
	for i, p := range positive {
		if p {
			np++
			sum += r[i]
		}
	}
	nn := float64(len(scores)) - np
	if np == 0 || nn == 0 {
		return math.NaN()
	}
	return (sum - np*(np+1)/2) / (np * nn)
}

// Accuracy is the fraction of equal entries of pred and truth.
func Accuracy[T comparable](pred, truth []T) float64 {
	if len(pred) == 0 {
		return math.NaN()
	}
	ok := 0
	for i := range pred {
		if pred[i] == truth[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(pred))
}
