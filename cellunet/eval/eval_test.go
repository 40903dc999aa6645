package eval

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
)

// synth returns n cells × g genes of log-expression-like values: a sparse
// non-negative matrix whose rows come from one of three "cell types"
// (returned as labels), shifted by shift.
func synth(seed uint64, n, g int, shift float32) (*scdata.CSR, []string) {
	r := rand.New(rand.NewPCG(seed, 7))
	centres := make([][]float64, 3)
	cr := rand.New(rand.NewPCG(99, 1)) // the same types for every seed
	for c := range centres {
		centres[c] = make([]float64, g)
		for j := range centres[c] {
			centres[c][j] = math.Max(0, cr.NormFloat64()*1.2+0.5)
		}
	}
	x := &scdata.CSR{Rows: n, Cols: g, Indptr: []int64{0}}
	labels := make([]string, n)
	for i := 0; i < n; i++ {
		c := r.IntN(3)
		labels[i] = []string{"B cell", "T cell", "monocyte"}[c]
		for j := 0; j < g; j++ {
			v := centres[c][j] + r.NormFloat64()*0.4
			if v > 0.3 {
				x.Indices = append(x.Indices, int32(j))
				x.Data = append(x.Data, float32(v)+shift)
			}
		}
		x.Indptr = append(x.Indptr, int64(len(x.Data)))
	}
	return x, labels
}

func geneNames(g int) []string {
	out := make([]string, g)
	for j := range out {
		out[j] = "G" + string(rune('A'+j%26)) + strings.Repeat("x", j/26)
	}
	return out
}

func fastConfig() Config {
	c := DefaultConfig()
	c.PCs = 10
	c.Forest.Trees = 100
	return c
}

func TestSpearmanPearsonEdges(t *testing.T) {
	if v := Spearman([]float64{1, 2, 2, 3}, []float64{1, 3, 3, 5}); math.Abs(v-1) > 1e-15 {
		t.Errorf("monotone with ties: Spearman %v, want 1", v)
	}
	if v := Spearman([]float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}); math.Abs(v+1) > 1e-15 {
		t.Errorf("reversed: Spearman %v, want -1", v)
	}
	for _, c := range [][2][]float64{
		{{1, 1, 1}, {1, 2, 3}}, // a constant gene-mean vector
		{{1, 2, 3}, {0, 0, 0}},
		{{1}, {1}},
	} {
		if v := Pearson(c[0], c[1]); !math.IsNaN(v) {
			t.Errorf("Pearson(%v, %v) = %v, want NaN (undefined)", c[0], c[1], v)
		}
		if v := Spearman(c[0], c[1]); !math.IsNaN(v) {
			t.Errorf("Spearman(%v, %v) = %v, want NaN (undefined)", c[0], c[1], v)
		}
	}
	b, err := Float(math.NaN()).MarshalJSON()
	if err != nil || string(b) != "null" {
		t.Errorf("NaN marshals as %s, want null", b)
	}
	if v := AUC([]float64{0.1, 0.2}, []bool{true, true}); !math.IsNaN(v) {
		t.Errorf("AUC with one class = %v, want NaN", v)
	}
	if v := AUC([]float64{0.5, 0.5, 0.5, 0.5}, []bool{true, false, true, false}); v != 0.5 {
		t.Errorf("AUC of all-tied scores = %v, want 0.5", v)
	}
}

func TestMMDEdges(t *testing.T) {
	x, _ := synth(1, 300, 8, 0)
	d := denseRows(x, subsample(nil, 300, 0))
	if r, err := MMD(d, d); err != nil || math.Abs(r.MMD) > 1e-12 {
		t.Errorf("MMD of a set with itself = %v (%v), want 0", r.MMD, err)
	}
	// Shifting one set far away: every cross kernel value vanishes while
	// the within-set values stay, so the MMD approaches its maximum.
	far := denseRows(x, subsample(nil, 300, 0))
	for i := range far.Data {
		far.Data[i] += 100
	}
	r, err := MMD(d, far)
	if err != nil || r.MMD < 1 {
		t.Errorf("MMD of disjoint sets = %v (%v), want > 1", r.MMD, err)
	}
	same := newDense(4, 3)
	if r, err := MMD(same, same); err != nil || r.MMD != 0 {
		t.Errorf("MMD of coincident points = %v (%v), want 0", r.MMD, err)
	}
	if _, err := MMD(newDense(3, 2), newDense(4, 2)); err == nil {
		t.Error("MMD of sets of different sizes: no error")
	}
	// The result does not depend on the number of workers.
	y, _ := synth(2, 300, 8, 0.2)
	dy := denseRows(y, subsample(nil, 300, 0))
	a, _ := MMD(d, dy)
	prev := runtime.GOMAXPROCS(1)
	b, _ := MMD(d, dy)
	runtime.GOMAXPROCS(prev)
	if a != b {
		t.Errorf("MMD with %d workers %v, with 1 worker %v", prev, a, b)
	}
}

// sets returns a real set and a generated set built by gen from it.
func sets(n, g int, shift float32, seedGen uint64) (*Cells, *Cells) {
	rx, rl := synth(1, n, g, 0)
	gx, gl := synth(seedGen, n, g, shift)
	genes := geneNames(g)
	return &Cells{X: rx, Genes: genes, Labels: rl, Name: "real"}, &Cells{X: gx, Genes: genes, Labels: gl, Name: "gen"}
}

func TestEvaluateSameDistribution(t *testing.T) {
	// Different cells from the same distribution: nothing tells them apart.
	real, gen := sets(800, 40, 0, 2)
	rep, err := Evaluate(real, gen, fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	if rep.GeneMeans.Spearman < 0.99 || rep.GeneMeans.Pearson < 0.99 {
		t.Errorf("gene means: Spearman %v Pearson %v, want ~1", rep.GeneMeans.Spearman, rep.GeneMeans.Pearson)
	}
	for _, m := range []struct {
		name string
		v    Float
	}{{"kNN accuracy", rep.KNN.Accuracy}, {"kNN AUC", rep.KNN.AUC}, {"forest accuracy", rep.Forest.Accuracy}, {"forest AUC", rep.Forest.AUC}} {
		if math.Abs(float64(m.v)-0.5) > 0.07 {
			t.Errorf("%s %v, want ≈ 0.5", m.name, m.v)
		}
	}
	if rep.MMD.Value > 0.02 {
		t.Errorf("MMD %v, want ≈ 0", rep.MMD.Value)
	}
	c := rep.Classifier
	if c == nil || c.RealAccuracy < 0.95 || math.Abs(float64(c.Ratio)-1) > 0.05 {
		t.Errorf("classifier %+v: want real accuracy ≈ 1 and ratio ≈ 1", c)
	}
	for _, tg := range rep.Targets {
		if !tg.Met {
			t.Errorf("target %s %s not met by same-distribution cells (%v)", tg.Metric, tg.Want, tg.Value)
		}
	}
}

// TestEvaluateSmallGeneratedSet: a generated set much smaller than the
// real one, from the same distribution, is still indistinguishable for
// kNN (the sets are subsampled to the same size, so chance is 0.5, not the
// larger set's share).
func TestEvaluateSmallGeneratedSet(t *testing.T) {
	real, gen := sets(800, 40, 0, 2)
	keep := make([]int, 150)
	for i := range keep {
		keep[i] = i
	}
	small := &Cells{X: selectRows(gen.X, keep), Genes: gen.Genes, Labels: gen.Labels[:150], Name: "gen (150 cells)"}
	rep, err := Evaluate(real, small, fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(rep.KNN.Accuracy)-0.5) > 0.1 {
		t.Errorf("kNN accuracy %v with 800 real and 150 generated cells of one distribution, want ≈ 0.5", rep.KNN.Accuracy)
	}
	if rep.KNN.Train+rep.KNN.Test != 300 {
		t.Errorf("kNN used %d + %d cells, want 150 from each set", rep.KNN.Train, rep.KNN.Test)
	}
}

func TestEvaluateIdenticalCells(t *testing.T) {
	real, _ := sets(600, 30, 0, 2)
	gen := &Cells{X: real.X, Genes: real.Genes, Name: "copy"}
	rep, err := Evaluate(real, gen, fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	if rep.GeneMeans.Spearman != 1 || rep.GeneMeans.Pearson != 1 || math.Abs(rep.MMD.Value) > 1e-12 {
		t.Errorf("identical cells: Spearman %v Pearson %v MMD %v, want 1, 1, 0", rep.GeneMeans.Spearman, rep.GeneMeans.Pearson, rep.MMD.Value)
	}
	// A held-out cell's copy in the training split is labelled with the
	// other source and sits at distance 0 (kNN) or in the same leaf
	// (forest), so both do worse than chance; the report says why.
	if rep.KNN.Accuracy > 0.45 || rep.Forest.Accuracy > 0.45 {
		t.Errorf("identical cells: kNN accuracy %v, forest %v, want below chance", rep.KNN.Accuracy, rep.Forest.Accuracy)
	}
	if len(rep.Notes) == 0 || !strings.Contains(rep.Notes[0], "copies") {
		t.Errorf("no note on below-chance detection: %q", rep.Notes)
	}
	if rep.Classifier != nil {
		t.Error("classifier report without generated labels")
	}
}

func TestEvaluateDisjoint(t *testing.T) {
	real, gen := sets(600, 30, 3, 2) // every expressed value +3
	rep, err := Evaluate(real, gen, fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		name string
		v    Float
	}{{"kNN accuracy", rep.KNN.Accuracy}, {"kNN AUC", rep.KNN.AUC}, {"forest accuracy", rep.Forest.Accuracy}, {"forest AUC", rep.Forest.AUC}, {"forest OOB", rep.Forest.OOBAccuracy}} {
		if m.v < 0.99 {
			t.Errorf("%s %v, want ≈ 1 for disjoint sets", m.name, m.v)
		}
	}
	if rep.MMD.Value < 0.5 {
		t.Errorf("MMD %v, want large", rep.MMD.Value)
	}
	if rep.Targets[1].Met {
		t.Error("kNN target met by disjoint sets")
	}
}

func TestEvaluateLabelsAndGenes(t *testing.T) {
	real, gen := sets(600, 30, 0, 2)
	// Generated cells labelled with a wrong label: the classifier sees it.
	bad := &Cells{X: gen.X, Genes: gen.Genes, Labels: make([]string, gen.X.Rows), Name: "mislabelled"}
	for i, l := range gen.Labels {
		bad.Labels[i] = map[string]string{"B cell": "T cell", "T cell": "monocyte", "monocyte": "B cell"}[l]
	}
	bad.Labels[0] = "platelet" // a label no real cell has
	rep, err := Evaluate(real, bad, fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	c := rep.Classifier
	if c == nil || c.GeneratedAccuracy > 0.1 || c.Ratio > 0.1 || c.UnknownLabels["platelet"] != 1 || c.GeneratedCells != gen.X.Rows-1 {
		t.Errorf("mislabelled cells: classifier %+v", c)
	}
	if len(c.PerLabel) != 3 || c.PerLabel[0].Label != "B cell" {
		t.Errorf("per-label rows %+v", c.PerLabel)
	}

	// Labels of another vocabulary (class ids instead of names): said so.
	ids := &Cells{X: gen.X, Genes: gen.Genes, Labels: make([]string, gen.X.Rows), Name: "ids"}
	for i := range ids.Labels {
		ids.Labels[i] = string(rune('0' + i%3))
	}
	rep, err = Evaluate(real, ids, fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Notes) == 0 || !strings.Contains(rep.Notes[len(rep.Notes)-1], "no generated label is a label of the real cells") {
		t.Errorf("no note on unmatched labels: %q", rep.Notes)
	}

	// Genes matched by name: permuting the generated columns and adding
	// genes the real set lacks changes nothing.
	g := gen.X.Cols
	perm := rand.New(rand.NewPCG(5, 5)).Perm(g)
	names := make([]string, g+2)
	cols := make([]int32, g)
	for j, p := range perm {
		cols[j] = int32(p)
		names[p] = gen.Genes[j]
	}
	names[g], names[g+1] = "EXTRA1", "EXTRA2"
	all := make([]int, gen.X.Rows)
	for i := range all {
		all[i] = i
	}
	px := restrict(gen.X, all, cols, g+2)
	shuffled := &Cells{X: px, Genes: names, Labels: gen.Labels, Name: "gen"}
	a, err := Evaluate(real, gen, fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Evaluate(real, shuffled, fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	var ja, jb bytes.Buffer
	a.Timings, b.Timings = nil, nil
	b.Genes = a.Genes
	if err := a.WriteJSON(&ja); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteJSON(&jb); err != nil {
		t.Fatal(err)
	}
	if ja.String() != jb.String() {
		t.Errorf("permuted generated genes change the report:\n%s\nvs\n%s", ja.String(), jb.String())
	}

	// No shared gene.
	other := &Cells{X: gen.X, Genes: make([]string, g), Name: "other"}
	for j := range other.Genes {
		other.Genes[j] = "Z" + gen.Genes[j]
	}
	if _, err := Evaluate(real, other, fastConfig()); !errors.Is(err, ErrNoSharedGenes) {
		t.Errorf("no shared genes: %v, want ErrNoSharedGenes", err)
	}
}

func TestEvaluateDeterministic(t *testing.T) {
	real, gen := sets(500, 25, 0.3, 2)
	cfg := fastConfig()
	run := func() string {
		rep, err := Evaluate(real, gen, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rep.Timings = nil
		var b bytes.Buffer
		if err := rep.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		var svg bytes.Buffer
		if err := rep.Plot(&svg, 200); err != nil {
			t.Fatal(err)
		}
		return b.String() + svg.String()
	}
	a := run()
	prev := runtime.GOMAXPROCS(1)
	b := run()
	runtime.GOMAXPROCS(prev)
	if a != b {
		t.Error("the report or the picture depends on the number of workers")
	}
	if a != run() {
		t.Error("two runs with the same seed differ")
	}
	cfg.Seed++
	if a == run() {
		t.Error("another seed gives the same report")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []func(*Config){
		func(c *Config) { c.PCs = 1 },
		func(c *Config) { c.KNNK = 0 },
		func(c *Config) { c.KNNTest = 1 },
		func(c *Config) { c.ForestTest = 0 },
		func(c *Config) { c.ClassifierTest = math.NaN() },
		func(c *Config) { c.MaxCells = -1 },
		func(c *Config) { c.Forest.Trees = 0 },
		func(c *Config) { c.ClassifierC = 0 },
	} {
		cfg := DefaultConfig()
		c(&cfg)
		if cfg.Validate() == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Error(err)
	}
}

func TestSummaryAndPlot(t *testing.T) {
	real, gen := sets(400, 20, 0.5, 2)
	rep, err := Evaluate(real, gen, fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	var s bytes.Buffer
	if err := rep.WriteSummary(&s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"gene-mean Spearman", "MMD (10 PCs", "kNN accuracy (k=5)", "random forest accuracy", "classifier: generated / real", "monocyte", "target knn.accuracy <= 0.65"} {
		if !strings.Contains(s.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, s.String())
		}
	}
	var svg bytes.Buffer
	if err := rep.Plot(&svg, 0); err != nil {
		t.Fatal(err)
	}
	out := svg.String()
	if !strings.HasPrefix(out, "<svg") || strings.Count(out, "<circle") < 2*800 || !strings.Contains(out, "PC1 (") || !strings.Contains(out, "T cell") {
		t.Errorf("picture: %d circles, %d bytes", strings.Count(out, "<circle"), len(out))
	}
}
