package eval

import (
	"math"
	"math/rand/v2"
	"slices"
)

// Streams of the seeded random generator: every consumer of randomness
// has its own stream, so adding or skipping one metric never changes
// another's draws.
const (
	streamSubsampleReal = iota + 1
	streamSubsampleGen
	streamPCA
	streamMMD
	streamKNN
	streamForest
	streamClassifier
	streamClassifierPCA
	streamPlot
)

// newRand returns the generator of one stream of seed.
func newRand(seed uint64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15^stream))
}

// subsample returns k of the indices 0..n-1, drawn without replacement
// and returned in increasing order; all of them (in order) when k <= 0 or
// k >= n.
func subsample(r *rand.Rand, n, k int) []int {
	if k <= 0 || k >= n {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	p := r.Perm(n)[:k]
	slices.Sort(p)
	return p
}

// split shuffles 0..n-1 and returns the train part and the test part of
// ⌈testFrac·n⌉ indices (sklearn's train_test_split sizes; at least 1 and
// at most n−1).
func split(r *rand.Rand, n int, testFrac float64) (train, test []int) {
	p := r.Perm(n)
	nt := int(math.Ceil(testFrac * float64(n)))
	nt = max(1, min(nt, n-1))
	test, train = p[:nt], p[nt:]
	return train, test
}
