package eval

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
)

// ForestConfig configures a random forest of binary classification trees.
// The defaults are the reference's RandomForestClassifier(n_estimators=1000,
// max_depth=5, class_weight="balanced", max_features="sqrt", bootstrap).
type ForestConfig struct {
	// Trees is the number of trees (default 1000).
	Trees int
	// MaxDepth is the depth limit (default 5).
	MaxDepth int
	// MaxFeatures is the number of features drawn at every split (default
	// ⌊√d⌋, at least 1).
	MaxFeatures int
	// Seed seeds the bootstrap samples and the feature draws; tree t uses
	// its own stream, so results do not depend on the number of workers.
	Seed uint64
}

func (c ForestConfig) withDefaults(d int) ForestConfig {
	if c.Trees <= 0 {
		c.Trees = 1000
	}
	if c.MaxDepth <= 0 {
		c.MaxDepth = 5
	}
	if c.MaxFeatures <= 0 {
		c.MaxFeatures = max(1, int(math.Sqrt(float64(d))))
	}
	c.MaxFeatures = min(c.MaxFeatures, d)
	return c
}

// treeNode is a split (feature >= 0) or a leaf (feature < 0, prob = the
// weighted fraction of class 1).
type treeNode struct {
	feature     int
	threshold   float64
	left, right int32
	prob        float64
}

type tree []treeNode

func (t tree) predict(x []float64) float64 {
	i := 0
	for t[i].feature >= 0 {
		if x[t[i].feature] <= t[i].threshold {
			i = int(t[i].left)
		} else {
			i = int(t[i].right)
		}
	}
	return t[i].prob
}

// Forest is a fitted random forest for two classes.
type Forest struct {
	trees []tree
	// OOBAccuracy is the out-of-bag accuracy on the training rows (rows
	// that no tree left out are not counted), sklearn's oob_score_.
	OOBAccuracy float64
}

// FitForest fits a random forest on the rows of x with classes y (false =
// class 0, true = class 1). Every tree is a CART tree grown level by level
// on a bootstrap sample (n draws with replacement), weighted by the
// bootstrap counts times the "balanced" class weights n/(2·n_c) of the
// full training set, splitting on the weighted Gini impurity at exact
// thresholds (midpoints between consecutive distinct values, found by one
// pass over presorted feature columns per level), with MaxFeatures random
// features per node. Nodes stop at MaxDepth or when pure. Trees are built
// in parallel.
func FitForest(x *Dense, y []bool, cfg ForestConfig) (*Forest, error) {
	n, d := x.Rows, x.Cols
	if n < 2 || d < 1 || len(y) != n {
		return nil, fmt.Errorf("random forest: need at least 2 rows and 1 feature with one class per row, got %d × %d and %d classes", n, d, len(y))
	}
	cfg = cfg.withDefaults(d)
	var n1 int
	for _, c := range y {
		if c {
			n1++
		}
	}
	if n1 == 0 || n1 == n {
		return nil, fmt.Errorf("random forest: the training rows hold only one class")
	}
	cw := [2]float64{float64(n) / (2 * float64(n-n1)), float64(n) / (2 * float64(n1))}
	order := make([][]int32, d) // rows sorted by feature value
	for f := 0; f < d; f++ {
		o := make([]int32, n)
		for i := range o {
			o[i] = int32(i)
		}
		sort.SliceStable(o, func(a, b int) bool { return x.Data[int(o[a])*d+f] < x.Data[int(o[b])*d+f] })
		order[f] = o
	}
	fr := &Forest{trees: make([]tree, cfg.Trees)}
	var wg sync.WaitGroup
	nw := workers(cfg.Trees)
	for w := 0; w < nw; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			b := newTreeBuilder(x, y, order, cw, cfg)
			for t := w; t < cfg.Trees; t += nw {
				fr.trees[t] = b.build(treeRand(cfg.Seed, t))
			}
		}(w)
	}
	wg.Wait()
	fr.OOBAccuracy = fr.oob(x, y, cfg.Seed)
	return fr, nil
}

// treeRand is tree t's random stream: its first n draws are its bootstrap.
func treeRand(seed uint64, t int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(t)<<8|streamForest))
}

// bootstrap draws n row indices with replacement into count.
func bootstrap(r *rand.Rand, count []int32) {
	n := len(count)
	for i := range count {
		count[i] = 0
	}
	for k := 0; k < n; k++ {
		count[r.IntN(n)]++
	}
}

// oob is the out-of-bag accuracy: every training row is predicted by the
// trees whose bootstrap left it out (sums in tree order, so the result
// does not depend on the number of workers).
func (fr *Forest) oob(x *Dense, y []bool, seed uint64) float64 {
	n := x.Rows
	sum := make([]float64, n)
	cnt := make([]int32, n)
	count := make([]int32, n)
	for t, tr := range fr.trees {
		bootstrap(treeRand(seed, t), count)
		parallelFor(n, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				if count[i] == 0 {
					sum[i] += tr.predict(x.Row(i))
					cnt[i]++
				}
			}
		})
	}
	var ok, m int
	for i := 0; i < n; i++ {
		if cnt[i] > 0 {
			m++
			if (sum[i]/float64(cnt[i]) > 0.5) == y[i] {
				ok++
			}
		}
	}
	if m == 0 {
		return math.NaN()
	}
	return float64(ok) / float64(m)
}

// PredictProba returns the mean over trees of the leaf probability of
// class 1 for every row of x.
func (fr *Forest) PredictProba(x *Dense) []float64 {
	out := make([]float64, x.Rows)
	parallelFor(x.Rows, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			var s float64
			for _, t := range fr.trees {
				s += t.predict(x.Row(i))
			}
			out[i] = s / float64(len(fr.trees))
		}
	})
	return out
}

// treeBuilder holds one worker's scratch buffers.
type treeBuilder struct {
	x     *Dense
	y     []bool
	order [][]int32
	cw    [2]float64
	cfg   ForestConfig

	count  []int32   // bootstrap multiplicity per row
	w      []float64 // count·class weight
	nodeOf []int32   // active node slot of each row at this level, −1 when settled
}

func newTreeBuilder(x *Dense, y []bool, order [][]int32, cw [2]float64, cfg ForestConfig) *treeBuilder {
	n := x.Rows
	return &treeBuilder{x: x, y: y, order: order, cw: cw, cfg: cfg,
		count: make([]int32, n), w: make([]float64, n), nodeOf: make([]int32, n)}
}

// active is a node of the level being split.
type active struct {
	id       int        // index in the tree
	w        [2]float64 // class weights of its rows
	rows     int        // distinct rows with count > 0
	features []int
	// best split found so far
	gain      float64
	feature   int
	threshold float64
	// scan state for the current feature
	left     [2]float64
	leftRows int
	last     float64
	started  bool
}

func gini(w [2]float64) float64 {
	t := w[0] + w[1]
	if t == 0 {
		return 0
	}
	p0, p1 := w[0]/t, w[1]/t
	return 1 - p0*p0 - p1*p1
}

func (b *treeBuilder) build(r *rand.Rand) tree {
	n, d := b.x.Rows, b.x.Cols
	bootstrap(r, b.count)
	root := &active{id: 0}
	for i := 0; i < n; i++ {
		c := 0
		if b.y[i] {
			c = 1
		}
		b.w[i] = float64(b.count[i]) * b.cw[c]
		if b.count[i] > 0 {
			root.w[c] += b.w[i]
			root.rows++
			b.nodeOf[i] = 0
		} else {
			b.nodeOf[i] = -1
		}
	}
	t := tree{{feature: -1}}
	level := []*active{root}
	perm := make([]int, d)
	for depth := 0; len(level) > 0; depth++ {
		// slot[i]: position in split of level node i (−1: it became a leaf).
		slot := make([]int32, len(level))
		var split []*active
		for i, a := range level {
			slot[i] = -1
			if depth >= b.cfg.MaxDepth || a.rows < 2 || gini(a.w) == 0 {
				t[a.id] = treeNode{feature: -1, prob: a.w[1] / (a.w[0] + a.w[1])}
				continue
			}
			for f := range perm {
				perm[f] = f
			}
			for q := 0; q < b.cfg.MaxFeatures; q++ { // partial Fisher–Yates
				j := q + r.IntN(d-q)
				perm[q], perm[j] = perm[j], perm[q]
			}
			a.features = append(a.features[:0], perm[:b.cfg.MaxFeatures]...)
			a.gain, a.feature = 0, -1
			slot[i] = int32(len(split))
			split = append(split, a)
		}
		if len(split) == 0 {
			break
		}
		users := make([][]int32, d) // feature → split nodes drawing it
		for k, a := range split {
			for _, f := range a.features {
				users[f] = append(users[f], int32(k))
			}
		}
		uses := make([]bool, len(split))
		for f := 0; f < d; f++ {
			if len(users[f]) == 0 {
				continue
			}
			for k := range uses {
				uses[k] = false
			}
			for _, k := range users[f] {
				uses[k] = true
				a := split[k]
				a.left, a.leftRows, a.started = [2]float64{}, 0, false
			}
			for _, i32 := range b.order[f] {
				i := int(i32)
				nd := b.nodeOf[i]
				if nd < 0 {
					continue
				}
				k := slot[nd]
				if k < 0 || !uses[k] {
					continue
				}
				a := split[k]
				v := b.x.Data[i*d+f]
				if a.started && v > a.last {
					// candidate: rows with value <= a.last go left
					right := [2]float64{a.w[0] - a.left[0], a.w[1] - a.left[1]}
					wl, wr := a.left[0]+a.left[1], right[0]+right[1]
					g := (wl+wr)*gini(a.w) - wl*gini(a.left) - wr*gini(right)
					if g > a.gain+1e-12*(wl+wr) {
						a.gain, a.feature = g, f
						a.threshold = a.last/2 + v/2
						if a.threshold == v { // midpoint rounded up to v
							a.threshold = a.last
						}
					}
				}
				c := 0
				if b.y[i] {
					c = 1
				}
				a.left[c] += b.w[i]
				a.leftRows++
				a.last, a.started = v, true
			}
		}
		var next []*active
		childSlot := make([]int32, len(split)*2)
		for k, a := range split {
			if a.feature < 0 {
				t[a.id] = treeNode{feature: -1, prob: a.w[1] / (a.w[0] + a.w[1])}
				childSlot[2*k], childSlot[2*k+1] = -1, -1
				continue
			}
			l, rr := int32(len(t)), int32(len(t)+1)
			t[a.id] = treeNode{feature: a.feature, threshold: a.threshold, left: l, right: rr}
			t = append(t, treeNode{feature: -1}, treeNode{feature: -1})
			childSlot[2*k], childSlot[2*k+1] = int32(len(next)), int32(len(next)+1)
			next = append(next, &active{id: int(l)}, &active{id: int(rr)})
		}
		for i := 0; i < n; i++ {
			nd := b.nodeOf[i]
			if nd < 0 {
				continue
			}
			k := slot[nd]
			if k < 0 || split[k].feature < 0 {
				b.nodeOf[i] = -1
				continue
			}
			a := split[k]
			side := int32(0)
			if b.x.Data[i*d+a.feature] > a.threshold {
				side = 1
			}
			cs := childSlot[2*int(k)+int(side)]
			b.nodeOf[i] = cs
			ch := next[cs]
			c := 0
			if b.y[i] {
				c = 1
			}
			ch.w[c] += b.w[i]
			ch.rows++
		}
		level = next
	}
	return t
}

// ForestDetect fits FitForest on the rows train of x (class real[i]) and
// scores the rows test.
func ForestDetect(x *Dense, real []bool, train, test []int, cfg ForestConfig) (Detection, float64, error) {
	ytr := make([]bool, len(train))
	for k, i := range train {
		ytr[k] = real[i]
	}
	fr, err := FitForest(x.rows(train), ytr, cfg)
	if err != nil {
		return Detection{}, 0, err
	}
	prob := fr.PredictProba(x.rows(test))
	pred := make([]bool, len(test))
	truth := make([]bool, len(test))
	for k, i := range test {
		pred[k] = prob[k] > 0.5
		truth[k] = real[i]
	}
	return Detection{Accuracy: Accuracy(pred, truth), AUC: AUC(prob, truth), Train: len(train), Test: len(test)}, fr.OOBAccuracy, nil
}
