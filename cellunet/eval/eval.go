package eval

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
)

// ErrNoSharedGenes is returned when the real and generated cells have no
// gene name in common.
var ErrNoSharedGenes = errors.New("no shared genes")

// ErrTooFewCells is returned when a set has too few cells for a metric
// that cannot be skipped (PCA, the detection tests).
var ErrTooFewCells = errors.New("too few cells")

// Cells is one set of cells: log1p-normalised expression, cells × genes.
type Cells struct {
	// X holds the expression, X.Cols == len(Genes).
	X *scdata.CSR
	// Genes are the column names (genes are matched by name).
	Genes []string
	// Labels, if non-nil, hold one label per cell (conditional generation:
	// the condition a generated cell was sampled for).
	Labels []string
	// Classes optionally orders the labels (e.g. the training classes.txt);
	// labels outside it are appended in sorted order.
	Classes []string
	// Name names the set in messages and the report (usually the file).
	Name string
}

func (c *Cells) validate(what string) error {
	if c.X == nil || c.X.Rows == 0 {
		return fmt.Errorf("%s %s: no cells: %w", what, c.Name, ErrTooFewCells)
	}
	if c.X.Cols != len(c.Genes) {
		return fmt.Errorf("%s %s: %d columns but %d gene names", what, c.Name, c.X.Cols, len(c.Genes))
	}
	if c.Labels != nil && len(c.Labels) != c.X.Rows {
		return fmt.Errorf("%s %s: %d labels for %d cells", what, c.Name, len(c.Labels), c.X.Rows)
	}
	return nil
}

// Pool concatenates sets of cells with the same genes (e.g. the files of
// one model, one per label); all or none must be labelled.
func Pool(parts ...*Cells) (*Cells, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("pool: no sets")
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	first := parts[0]
	names := make([]string, len(parts))
	xs := make([]*scdata.CSR, len(parts))
	var labels []string
	for k, p := range parts {
		if err := p.validate("generated"); err != nil {
			return nil, err
		}
		names[k], xs[k] = p.Name, p.X
		if !slices.Equal(p.Genes, first.Genes) {
			return nil, fmt.Errorf("%s and %s have different genes; pool the files of one model", first.Name, p.Name)
		}
		if (p.Labels == nil) != (first.Labels == nil) {
			return nil, fmt.Errorf("%s is labelled and %s is not; pool files of one kind", first.Name, p.Name)
		}
		labels = append(labels, p.Labels...)
	}
	pooled := &Cells{X: vstack(xs...), Genes: first.Genes, Name: strings.Join(names, ",")}
	if first.Labels != nil {
		pooled.Labels = labels
	}
	return pooled, nil
}

// Config configures Evaluate. The zero value is not valid; start from
// DefaultConfig.
type Config struct {
	// Seed seeds every random choice (subsamples, splits, PCA start,
	// forest); the report is a deterministic function of the inputs and
	// the seed.
	Seed uint64
	// MaxCells, if > 0, subsamples each set to at most this many cells
	// before anything else (memory and time scale with it).
	MaxCells int
	// PCs is the number of principal components of the joint PCA (MMD,
	// random forest, picture) and of the classifier's PCA (scanpy's 50).
	PCs int
	// MMDCells caps the equal-size sets of the MMD (the reference used the
	// first 10,000 of each); the MMD's cost is quadratic in it. 0: all.
	MMDCells int
	// KNNCells caps each set for the kNN test (the reference: ≤ 1,000 real
	// + 1,000 generated cells); KNNK is k (5), KNNTest the held-out
	// fraction (0.3).
	KNNCells int
	KNNK     int
	KNNTest  float64
	// Forest configures the random forest on the joint PCA; ForestTest is
	// its held-out fraction (the reference's 0.25).
	Forest     ForestConfig
	ForestTest float64
	// ClassifierTest is the fraction of labelled real cells held out to
	// score the independent classifier (0.3); ClassifierC its inverse L2
	// strength (1, sklearn's default).
	ClassifierTest float64
	ClassifierC    float64
	// PlotCells caps the points drawn per set in the picture (5,000).
	PlotCells int
	// Out receives one progress line per stage; nil discards them.
	Out io.Writer
}

// DefaultConfig is the reference's evaluation: 50 PCs, MMD on up to
// 10,000 cells per set, kNN (k = 5) on up to 1,000 cells per set (as many
// from each) with 30 % held out, a 1,000-tree depth-5 balanced random
// forest with 25 % held out, a logistic-regression classifier with 30 % of
// the real cells held out; seed 1234; at most 20,000 cells per set.
func DefaultConfig() Config {
	return Config{
		Seed: 1234, MaxCells: 20000, PCs: 50, MMDCells: 10000,
		KNNCells: 1000, KNNK: 5, KNNTest: 0.3,
		Forest: ForestConfig{Trees: 1000, MaxDepth: 5}, ForestTest: 0.25,
		ClassifierTest: 0.3, ClassifierC: 1, PlotCells: 5000,
	}
}

// Validate reports configuration errors in the command's terms.
func (c Config) Validate() error {
	frac := func(name string, v float64) error {
		if !(v > 0 && v < 1) {
			return fmt.Errorf("%s must be in (0, 1), got %v", name, v)
		}
		return nil
	}
	switch {
	case c.MaxCells < 0:
		return fmt.Errorf("max_cells must be >= 0 (0: all), got %d", c.MaxCells)
	case c.PCs < 2:
		return fmt.Errorf("n_pcs must be at least 2, got %d", c.PCs)
	case c.MMDCells < 0:
		return fmt.Errorf("mmd_cells must be >= 0 (0: all), got %d", c.MMDCells)
	case c.KNNCells < 0:
		return fmt.Errorf("knn_cells must be >= 0 (0: all), got %d", c.KNNCells)
	case c.KNNK < 1:
		return fmt.Errorf("knn_k must be at least 1, got %d", c.KNNK)
	case c.Forest.Trees < 1 || c.Forest.MaxDepth < 1:
		return fmt.Errorf("rf_trees and rf_depth must be at least 1, got %d and %d", c.Forest.Trees, c.Forest.MaxDepth)
	case c.ClassifierC <= 0:
		return fmt.Errorf("classifier_c must be positive, got %v", c.ClassifierC)
	case c.PlotCells < 0:
		return fmt.Errorf("plot_cells must be >= 0, got %d", c.PlotCells)
	}
	for _, f := range []struct {
		n string
		v float64
	}{{"knn_test", c.KNNTest}, {"rf_test", c.ForestTest}, {"classifier_test", c.ClassifierTest}} {
		if err := frac(f.n, f.v); err != nil {
			return err
		}
	}
	return nil
}

// Evaluate compares generated cells with real cells (genes matched by
// name) and returns the report; Plot draws its picture. Both sets must
// hold log1p-normalised expression.
func Evaluate(real, gen *Cells, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := real.validate("real"); err != nil {
		return nil, err
	}
	if err := gen.validate("generated"); err != nil {
		return nil, err
	}
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	rep := &Report{Seed: cfg.Seed, Timings: map[string]float64{}}
	stage := func(name string, start time.Time) {
		rep.Timings[name] = math.Round(time.Since(start).Seconds()*1000) / 1000
	}

	// Genes.
	t0 := time.Now()
	rcols, gcols, shared := alignGenes(real.Genes, gen.Genes)
	if len(shared) == 0 {
		return nil, fmt.Errorf("real %s (%d genes, e.g. %s) and generated %s (%d genes, e.g. %s): %w",
			real.Name, len(real.Genes), examples(real.Genes), gen.Name, len(gen.Genes), examples(gen.Genes), ErrNoSharedGenes)
	}
	rep.Genes = GeneInfo{Real: len(real.Genes), Generated: len(gen.Genes), Shared: len(shared)}
	if len(shared) < len(real.Genes) || len(shared) < len(gen.Genes) {
		fmt.Fprintf(out, "genes: %d shared of %d real and %d generated; metrics use the shared genes\n", len(shared), len(real.Genes), len(gen.Genes))
	}
	rIdx := subsample(newRand(cfg.Seed, streamSubsampleReal), real.X.Rows, cfg.MaxCells)
	gIdx := subsample(newRand(cfg.Seed, streamSubsampleGen), gen.X.Rows, cfg.MaxCells)
	rx := restrict(real.X, rIdx, rcols, len(shared))
	gx := restrict(gen.X, gIdx, gcols, len(shared))
	rLab, gLab := pick(real.Labels, rIdx), pick(gen.Labels, gIdx)
	rep.Real = SetInfo{Name: real.Name, Cells: real.X.Rows, Used: rx.Rows, Labelled: real.Labels != nil}
	rep.Generated = SetInfo{Name: gen.Name, Cells: gen.X.Rows, Used: gx.Rows, Labelled: gen.Labels != nil}
	if rx.Rows < 2 || gx.Rows < 2 {
		return nil, fmt.Errorf("real %s has %d cells and generated %s %d: at least 2 each are needed: %w", real.Name, rx.Rows, gen.Name, gx.Rows, ErrTooFewCells)
	}
	stage("align", t0)

	// Gene means.
	t0 = time.Now()
	rm, gm := GeneMeans(rx), GeneMeans(gx)
	rep.GeneMeans = Correlation{Spearman: jsonFloat(Spearman(rm, gm)), Pearson: jsonFloat(Pearson(rm, gm)), Genes: len(shared)}
	stage("gene_means", t0)
	fmt.Fprintf(out, "gene means: Spearman %.4f, Pearson %.4f over %d genes\n", rep.GeneMeans.Spearman, rep.GeneMeans.Pearson, len(shared))

	// Joint PCA.
	t0 = time.Now()
	all := vstack(rx, gx)
	pca, err := FitPCA(all, PCAOptions{Components: cfg.PCs, Seed: cfg.Seed})
	if err != nil {
		return nil, err
	}
	k := pca.NumComponents()
	rep.PCA = PCAInfo{Components: k, Cells: all.Rows, ExplainedVarianceRatio: varianceRatios(pca, all)}
	stage("pca", t0)
	fmt.Fprintf(out, "joint PCA: %d components of %d cells × %d genes in %.1fs\n", k, all.Rows, all.Cols, time.Since(t0).Seconds())
	nr := rx.Rows
	isReal := make([]bool, all.Rows)
	for i := 0; i < nr; i++ {
		isReal[i] = true
	}

	// MMD on equal-size subsets of the PCA coordinates.
	t0 = time.Now()
	n := min(nr, gx.Rows)
	if cfg.MMDCells > 0 {
		n = min(n, cfg.MMDCells)
	}
	mr := newRand(cfg.Seed, streamMMD)
	xi, yi := subsample(mr, nr, n), subsample(mr, gx.Rows, n)
	for i := range yi {
		yi[i] += nr
	}
	mmd, err := MMD(pca.Scores.rows(xi), pca.Scores.rows(yi))
	if err != nil {
		return nil, err
	}
	rep.MMD = MMDInfo{Value: mmd.MMD, Bandwidth: mmd.Bandwidth, CellsPerSet: n, Components: k}
	stage("mmd", t0)
	fmt.Fprintf(out, "MMD: %.4f (%d + %d cells, %d PCs) in %.1fs\n", mmd.MMD, n, n, k, time.Since(t0).Seconds())

	// kNN real vs generated on the expression matrix.
	t0 = time.Now()
	kr := newRand(cfg.Seed, streamKNN)
	// The same number of cells from each set, so that chance is 0.5 (with
	// unequal sets a classifier that always answers the larger set scores
	// its share, and the ≤ 0.65 target would mean nothing).
	kn := min(nr, gx.Rows)
	if cfg.KNNCells > 0 { // 0: every cell
		kn = min(kn, cfg.KNNCells)
	}
	kri := subsample(kr, nr, kn)
	kgi := subsample(kr, gx.Rows, kn)
	kx := vstack(selectRows(rx, kri), selectRows(gx, kgi))
	kReal := make([]bool, kx.Rows)
	for i := range kri {
		kReal[i] = true
	}
	ktr, kte := split(kr, kx.Rows, cfg.KNNTest)
	if cfg.KNNK > len(ktr) {
		return nil, fmt.Errorf("kNN: k = %d but only %d training cells: %w", cfg.KNNK, len(ktr), ErrTooFewCells)
	}
	knn, err := KNNDetect(kx, kReal, ktr, kte, cfg.KNNK)
	if err != nil {
		return nil, err
	}
	rep.KNN = KNNInfo{DetectionJSON: jsonDetection(knn), K: cfg.KNNK, Space: "expression"}
	stage("knn", t0)
	fmt.Fprintf(out, "kNN (k=%d) real vs generated: accuracy %.3f, AUC %.3f on %d held-out cells\n", cfg.KNNK, knn.Accuracy, knn.AUC, knn.Test)

	// Random forest on the joint PCA.
	t0 = time.Now()
	fcfg := cfg.Forest
	fcfg.Seed = cfg.Seed
	ftr, fte := split(newRand(cfg.Seed, streamForest), all.Rows, cfg.ForestTest)
	rf, oob, err := ForestDetect(pca.Scores, isReal, ftr, fte, fcfg)
	if err != nil {
		return nil, err
	}
	fcfg = fcfg.withDefaults(k)
	rep.Forest = ForestInfo{DetectionJSON: jsonDetection(rf), OOBAccuracy: jsonFloat(oob), Trees: fcfg.Trees, MaxDepth: fcfg.MaxDepth, Components: k}
	stage("random_forest", t0)
	fmt.Fprintf(out, "random forest (%d trees, depth %d) real vs generated: accuracy %.3f, AUC %.3f in %.1fs\n",
		fcfg.Trees, fcfg.MaxDepth, rf.Accuracy, rf.AUC, time.Since(t0).Seconds())

	// The independent classifier, for conditional generation.
	if gLab != nil && rLab != nil {
		t0 = time.Now()
		cl, err := classify(rx, rLab, gx, gLab, real.Classes, cfg)
		if err != nil {
			return nil, err
		}
		rep.Classifier = cl
		if cl.GeneratedCells == 0 {
			var some []string
			for l := range cl.UnknownLabels {
				some = append(some, l)
			}
			slices.Sort(some)
			rep.Notes = append(rep.Notes, fmt.Sprintf("no generated label is a label of the real cells (generated: %s; real: %s): check --label_key and --gen_label_key",
				examples(some), examples(classOrder(real.Classes, rLab))))
		}
		stage("classifier", t0)
		fmt.Fprintf(out, "classifier: held-out real accuracy %.3f, generated accuracy %.3f (%.2f×)\n",
			cl.RealAccuracy, cl.GeneratedAccuracy, cl.Ratio)
	} else if gLab != nil {
		rep.Notes = append(rep.Notes, "the generated cells carry labels but the real cells do not: no classifier accuracy")
	}
	if rep.KNN.Accuracy < 0.4 || rep.Forest.Accuracy < 0.4 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("real-vs-generated accuracy well below chance (kNN %s, random forest %s): "+
			"generated cells are near-copies of real cells (memorised?), whose copies in the training split vote for the other source",
			num(rep.KNN.Accuracy), num(rep.Forest.Accuracy)))
	}
	rep.embedding = embedding{scores: pca.Scores, nReal: nr, realLabels: rLab, genLabels: gLab,
		var1: rep.PCA.ExplainedVarianceRatio[0], var2: rep.PCA.ExplainedVarianceRatio[1]}
	rep.Targets = targets(rep)
	return rep, nil
}

// alignGenes matches gene names: shared lists the real genes (in real
// order) that the generated set also has; rcols[j] / gcols[j] is the new
// column of real / generated column j, or −1. A name that occurs twice
// in the generated set matches its first occurrence.
func alignGenes(real, gen []string) (rcols, gcols []int32, shared []string) {
	gpos := make(map[string]int, len(gen))
	for j, g := range gen {
		if _, ok := gpos[g]; !ok {
			gpos[g] = j
		}
	}
	rcols = make([]int32, len(real))
	gcols = make([]int32, len(gen))
	for j := range gcols {
		gcols[j] = -1
	}
	used := map[string]bool{}
	for j, g := range real {
		rcols[j] = -1
		if p, ok := gpos[g]; ok && !used[g] {
			used[g] = true
			rcols[j] = int32(len(shared))
			gcols[p] = int32(len(shared))
			shared = append(shared, g)
		}
	}
	return rcols, gcols, shared
}

// restrict returns the rows idx of x with columns mapped by cols (−1:
// dropped), sorted within each row.
func restrict(x *scdata.CSR, idx []int, cols []int32, ncols int) *scdata.CSR {
	out := &scdata.CSR{Rows: len(idx), Cols: ncols, Indptr: make([]int64, 1, len(idx)+1)}
	type ent struct {
		c int32
		v float32
	}
	var row []ent
	for _, i := range idx {
		c, v := x.Row(i)
		row = row[:0]
		sorted := true
		for k, j := range c {
			if n := cols[j]; n >= 0 && v[k] != 0 {
				if len(row) > 0 && n < row[len(row)-1].c {
					sorted = false
				}
				row = append(row, ent{n, v[k]})
			}
		}
		if !sorted {
			sort.Slice(row, func(a, b int) bool { return row[a].c < row[b].c })
		}
		for _, e := range row {
			out.Indices = append(out.Indices, e.c)
			out.Data = append(out.Data, e.v)
		}
		out.Indptr = append(out.Indptr, int64(len(out.Data)))
	}
	return out
}

func pick(labels []string, idx []int) []string {
	if labels == nil {
		return nil
	}
	out := make([]string, len(idx))
	for k, i := range idx {
		out[k] = labels[i]
	}
	return out
}

func examples(genes []string) string {
	n := min(3, len(genes))
	s := fmt.Sprintf("%q", genes[:n])
	if len(genes) > n {
		s = s[:len(s)-1] + " ...]"
	}
	return s
}

// varianceRatios is each component's variance over the total variance of
// the centred data (sklearn's explained_variance_ratio_).
func varianceRatios(p *PCA, x *scdata.CSR) []float64 {
	n := float64(x.Rows)
	var total float64 // Σ_j var_j = (Σ x² − n·Σ mean²)/(n−1)
	for _, v := range x.Data {
		total += float64(v) * float64(v)
	}
	for _, m := range p.Mean {
		total -= n * m * m
	}
	total /= n - 1
	out := make([]float64, len(p.ExplainedVariance))
	for i, v := range p.ExplainedVariance {
		out[i] = v / total
	}
	return out
}

// classOrder returns the classes of labels: the given order first, then
// any others sorted.
func classOrder(given []string, labels ...[]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range given {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	var extra []string
	for _, ls := range labels {
		for _, l := range ls {
			if !seen[l] {
				seen[l] = true
				extra = append(extra, l)
			}
		}
	}
	slices.Sort(extra)
	return append(out, extra...)
}
