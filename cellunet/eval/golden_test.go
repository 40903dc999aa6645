package eval

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
)

// golden holds testdata/golden.npz, written by testdata/make_golden.py
// with numpy/scipy/scikit-learn/torch.
type golden map[string]*npz.Array

func loadGolden(t *testing.T) golden {
	t.Helper()
	m, err := npz.Read(filepath.Join("testdata", "golden.npz"))
	if err != nil {
		t.Fatal(err)
	}
	return golden(m)
}

func (g golden) arr(t *testing.T, key string) *npz.Array {
	t.Helper()
	a, ok := g[key]
	if !ok {
		t.Fatalf("golden.npz lacks %s", key)
	}
	return a
}

func (g golden) f64(t *testing.T, key string) []float64 {
	t.Helper()
	switch v := g.arr(t, key).Data.(type) {
	case []float64:
		return v
	case []float32:
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	case []int64:
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	t.Fatalf("%s: unexpected dtype %s", key, g.arr(t, key).Descr())
	return nil
}

func (g golden) scalar(t *testing.T, key string) float64 { return g.f64(t, key)[0] }

func (g golden) ints(t *testing.T, key string) []int {
	t.Helper()
	v := g.arr(t, key).Data.([]int64)
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// bools reads a 0/1 array as booleans.
func (g golden) bools(t *testing.T, key string) []bool {
	t.Helper()
	v := g.ints(t, key)
	out := make([]bool, len(v))
	for i, x := range v {
		out[i] = x == 1
	}
	return out
}

func (g golden) dense(t *testing.T, key string) *Dense {
	t.Helper()
	a := g.arr(t, key)
	if len(a.Shape) != 2 {
		t.Fatalf("%s: shape %v", key, a.Shape)
	}
	return &Dense{Rows: a.Shape[0], Cols: a.Shape[1], Data: g.f64(t, key)}
}

func relErr(got, want float64) float64 {
	return math.Abs(got-want) / math.Max(math.Abs(want), 1e-300)
}

func TestGoldenStats(t *testing.T) {
	g := loadGolden(t)
	a, b := g.f64(t, "stats__a"), g.f64(t, "stats__b")
	ranks := Ranks(a)
	for i, want := range g.f64(t, "stats__ranks_a") {
		if ranks[i] != want {
			t.Fatalf("rank %d = %v, scipy %v", i, ranks[i], want)
		}
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"spearman", Spearman(a, b), g.scalar(t, "stats__spearman")},
		{"pearson", Pearson(a, b), g.scalar(t, "stats__pearson")},
	} {
		if relErr(c.got, c.want) > 1e-12 {
			t.Errorf("%s = %.15g, scipy %.15g", c.name, c.got, c.want)
		}
	}
	if got, want := AUC(g.f64(t, "stats__scores"), g.bools(t, "stats__labels")), g.scalar(t, "stats__auc"); relErr(got, want) > 1e-12 {
		t.Errorf("AUC = %.15g, sklearn %.15g", got, want)
	}
}

func TestGoldenPCA(t *testing.T) {
	g := loadGolden(t)
	shape := g.ints(t, "pca__shape")
	x := &scdata.CSR{Rows: shape[0], Cols: shape[1], Indptr: g.arr(t, "pca__indptr").Data.([]int64),
		Indices: g.arr(t, "pca__indices").Data.([]int32), Data: g.arr(t, "pca__data").Data.([]float32)}
	want := g.dense(t, "pca__scores")
	p, err := FitPCA(x, PCAOptions{Components: want.Cols, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Scores, components, singular values and variance ratios match
	// ARPACK (via sklearn) to 1e-6 of the largest value, signs included.
	check := func(what string, got, want []float64) {
		t.Helper()
		var scale, worst float64
		for _, v := range want {
			scale = math.Max(scale, math.Abs(v))
		}
		for i := range want {
			worst = math.Max(worst, math.Abs(got[i]-want[i]))
		}
		if len(got) != len(want) || worst > 1e-6*scale {
			t.Errorf("%s: max deviation %.3g (scale %.3g)", what, worst, scale)
		}
	}
	check("scores", p.Scores.Data, want.Data)
	check("components", p.Components.Data, g.f64(t, "pca__components"))
	check("singular values", p.SingularValues, g.f64(t, "pca__singular"))
	check("mean", p.Mean, g.f64(t, "pca__mean"))
	check("variance ratio", varianceRatios(p, x), g.f64(t, "pca__ratio"))
	// Transform of the fitted rows gives the scores again.
	check("transform", p.Transform(x).Data, want.Data)
}

func TestGoldenMMD(t *testing.T) {
	g := loadGolden(t)
	res, err := MMD(g.dense(t, "mmd__x"), g.dense(t, "mmd__y"))
	if err != nil {
		t.Fatal(err)
	}
	if relErr(res.MMD, g.scalar(t, "mmd__mmd")) > 1e-10 || relErr(res.Bandwidth, g.scalar(t, "mmd__bandwidth")) > 1e-12 {
		t.Errorf("MMD %.15g bandwidth %.15g, reference code %.15g %.15g", res.MMD, res.Bandwidth, g.scalar(t, "mmd__mmd"), g.scalar(t, "mmd__bandwidth"))
	}
}

// denseCSR converts a dense matrix to CSR (zeros dropped).
func denseCSR(m *Dense) *scdata.CSR {
	out := &scdata.CSR{Rows: m.Rows, Cols: m.Cols, Indptr: []int64{0}}
	for i := 0; i < m.Rows; i++ {
		for j, v := range m.Row(i) {
			if v != 0 {
				out.Indices = append(out.Indices, int32(j))
				out.Data = append(out.Data, float32(v))
			}
		}
		out.Indptr = append(out.Indptr, int64(len(out.Data)))
	}
	return out
}

func TestGoldenKNN(t *testing.T) {
	g := loadGolden(t)
	x := g.dense(t, "knn__x")
	// float32 storage as for expression data; sklearn saw float64.
	real := g.bools(t, "knn__real")
	d, err := KNNDetect(denseCSR(x), real, g.ints(t, "knn__train"), g.ints(t, "knn__test"), 5)
	if err != nil {
		t.Fatal(err)
	}
	if d.Accuracy != g.scalar(t, "knn__accuracy") || relErr(d.AUC, g.scalar(t, "knn__auc")) > 1e-12 {
		t.Errorf("kNN accuracy %v AUC %v, sklearn %v %v", d.Accuracy, d.AUC, g.scalar(t, "knn__accuracy"), g.scalar(t, "knn__auc"))
	}
}

func TestGoldenForest(t *testing.T) {
	g := loadGolden(t)
	x := g.dense(t, "forest__x")
	real := g.bools(t, "forest__real")
	// An independent implementation draws other bootstraps and features,
	// so single runs differ by a few test cells (sklearn's own accuracy
	// ranges over 0.68–0.71 across random_state 1..8): compare the means
	// over seeds. Chance would be 0.5 and a perfect split 1.
	mean := func(v []float64) float64 {
		var s float64
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	var acc, auc, oob []float64
	for seed := uint64(1); seed <= 4; seed++ {
		d, o, err := ForestDetect(x, real, g.ints(t, "forest__train"), g.ints(t, "forest__test"), ForestConfig{Trees: 1000, MaxDepth: 5, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		acc, auc, oob = append(acc, d.Accuracy), append(auc, d.AUC), append(oob, o)
	}
	wa, wu, wo := mean(g.f64(t, "forest__accuracy")), mean(g.f64(t, "forest__auc")), mean(g.f64(t, "forest__oob"))
	t.Logf("forest accuracy %.3f AUC %.4f OOB %.3f; sklearn %.3f %.4f %.3f (means over seeds)", mean(acc), mean(auc), mean(oob), wa, wu, wo)
	if math.Abs(mean(acc)-wa) > 0.02 || math.Abs(mean(auc)-wu) > 0.005 || math.Abs(mean(oob)-wo) > 0.015 {
		t.Errorf("forest accuracy %.3f AUC %.4f OOB %.3f; sklearn %.3f %.4f %.3f", mean(acc), mean(auc), mean(oob), wa, wu, wo)
	}
}

func TestGoldenLogReg(t *testing.T) {
	g := loadGolden(t)
	x := g.dense(t, "logreg__x")
	y := g.ints(t, "logreg__y")
	m, err := FitLogReg(x, y, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	coef, icpt := g.f64(t, "logreg__coef"), g.f64(t, "logreg__intercept")
	// Our optimum is at least as low as sklearn's (lbfgs stops at its
	// ftol, ~4e-10 relative above the minimum here), and the parameters
	// and probabilities agree to that precision. Multinomial weights are
	// identifiable only up to a per-feature constant over classes; the L2
	// penalty fixes it (weights sum to 0 over classes); intercepts are
	// unpenalised, so they are compared centred.
	fo, fs := logregObjective(x, y, 4, m.W, m.B), logregObjective(x, y, 4, coef, icpt)
	if fo > fs+1e-12*math.Abs(fs) {
		t.Errorf("objective %.15g, sklearn reaches %.15g", fo, fs)
	}
	var worst float64
	for i := range coef {
		worst = math.Max(worst, math.Abs(m.W[i]-coef[i]))
	}
	var mg, mw float64
	for c := range icpt {
		mg += m.B[c] / 4
		mw += icpt[c] / 4
	}
	for c := range icpt {
		worst = math.Max(worst, math.Abs((m.B[c]-mg)-(icpt[c]-mw)))
	}
	if worst > 2e-4 {
		t.Errorf("logistic regression parameters deviate from sklearn's by %.3g", worst)
	}
	p := m.Proba(x)
	var pw float64
	for i, v := range g.f64(t, "logreg__proba") {
		pw = math.Max(pw, math.Abs(p.Data[i]-v))
	}
	if pw > 1e-4 {
		t.Errorf("probabilities deviate from sklearn's by %.3g", pw)
	}
	t.Logf("objective %.15g (sklearn %.15g); parameters within %.2g, probabilities within %.2g", fo, fs, worst, pw)
}

// logregObjective is Σ_i −log softmax(W·x_i + b)[y_i] + ½‖W‖² (C = 1),
// written out independently of FitLogReg.
func logregObjective(x *Dense, y []int, k int, w, b []float64) float64 {
	d := x.Cols
	f := 0.0
	for _, v := range w {
		f += v * v / 2
	}
	for i := 0; i < x.Rows; i++ {
		z := make([]float64, k)
		mx := math.Inf(-1)
		for c := range z {
			for j, v := range x.Row(i) {
				z[c] += w[c*d+j] * v
			}
			z[c] += b[c]
			mx = math.Max(mx, z[c])
		}
		var s float64
		for _, v := range z {
			s += math.Exp(v - mx)
		}
		f += math.Log(s) + mx - z[y[i]]
	}
	return f
}

// dataDir is the shared data folder ($GOTORCH_TESTDATA_DIR or
// <repo>/../shared/data).
func dataDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("GOTORCH_TESTDATA_DIR"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "..", "shared", "data")
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s and GOTORCH_TESTDATA_DIR unset", wd)
		}
	}
}

// pbmcSets builds the pbmc case of make_golden.py: the preprocessed PBMC
// 4k data, even rows "real", odd rows "generated" with every third gene
// scaled by 1.3 in count space.
func pbmcSets(t *testing.T) (real, gen *scdata.CSR, genes []string) {
	t.Helper()
	ds, err := scdata.Open(filepath.Join(dataDir(t), "pbmc4k_scdcc", "10X_PBMC_top2000.h5"), scdata.OpenOptions{NoLabels: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	pp, err := scdata.Preprocess(ds, scdata.PreprocessConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var even, odd []int
	for i := 0; i < pp.X.Rows; i++ {
		if i%2 == 0 {
			even = append(even, i)
		} else {
			odd = append(odd, i)
		}
	}
	real, gen = selectRows(pp.X, even), selectRows(pp.X, odd)
	for k, j := range gen.Indices {
		if j%3 == 0 {
			gen.Data[k] = float32(math.Log1p(math.Expm1(float64(gen.Data[k])) * 1.3))
		}
	}
	return real, gen, pp.Genes
}

func TestGoldenPBMC(t *testing.T) {
	g := loadGolden(t)
	real, gen, _ := pbmcSets(t)
	if real.Rows != int(g.scalar(t, "pbmc__n_real")) || gen.Rows != int(g.scalar(t, "pbmc__n_gen")) || real.Cols != int(g.scalar(t, "pbmc__genes")) {
		t.Fatalf("sets %d and %d cells × %d genes, golden %v %v %v", real.Rows, gen.Rows, real.Cols,
			g.scalar(t, "pbmc__n_real"), g.scalar(t, "pbmc__n_gen"), g.scalar(t, "pbmc__genes"))
	}
	rm, gm := GeneMeans(real), GeneMeans(gen)
	if s, p := Spearman(rm, gm), Pearson(rm, gm); relErr(s, g.scalar(t, "pbmc__spearman")) > 1e-9 || relErr(p, g.scalar(t, "pbmc__pearson")) > 1e-9 {
		t.Errorf("gene means: Spearman %.12g Pearson %.12g, scipy %.12g %.12g", s, p, g.scalar(t, "pbmc__spearman"), g.scalar(t, "pbmc__pearson"))
	}
	all := vstack(real, gen)
	p, err := FitPCA(all, PCAOptions{Components: 50, Seed: 1234})
	if err != nil {
		t.Fatal(err)
	}
	sv, ratio := g.f64(t, "pbmc__singular"), g.f64(t, "pbmc__ratio")
	got := varianceRatios(p, all)
	var worstS, worstR float64
	for i := range sv {
		worstS = math.Max(worstS, relErr(p.SingularValues[i], sv[i]))
		worstR = math.Max(worstR, relErr(got[i], ratio[i]))
	}
	t.Logf("PCA vs ARPACK: singular values within %.2g, variance ratios within %.2g (relative)", worstS, worstR)
	// Randomized subspace iteration vs ARPACK: the trailing components of
	// this slowly decaying spectrum (σ₄₆..σ₅₀ within 1 %) converge to
	// ~1e-4; the MMD, a function of the whole 50-D subspace, to ~1e-3.
	if worstS > 2e-4 || worstR > 2e-4 {
		t.Errorf("PCA singular values deviate by %.3g, variance ratios by %.3g (relative) from ARPACK", worstS, worstR)
	}
	n := int(g.scalar(t, "pbmc__mmd_n"))
	xi, yi := make([]int, n), make([]int, n)
	for i := range xi {
		xi[i], yi[i] = i, real.Rows+i
	}
	m, err := MMD(p.Scores.rows(xi), p.Scores.rows(yi))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MMD %.6g bandwidth %.6g; reference formula on ARPACK scores %.6g %.6g", m.MMD, m.Bandwidth, g.scalar(t, "pbmc__mmd"), g.scalar(t, "pbmc__bandwidth"))
	if relErr(m.MMD, g.scalar(t, "pbmc__mmd")) > 2e-3 || relErr(m.Bandwidth, g.scalar(t, "pbmc__bandwidth")) > 1e-4 {
		t.Errorf("MMD %.6g bandwidth %.6g, reference %.6g %.6g", m.MMD, m.Bandwidth, g.scalar(t, "pbmc__mmd"), g.scalar(t, "pbmc__bandwidth"))
	}
}
