package eval

import (
	"fmt"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
)

// LabelAccuracy is the classifier's accuracy for one label.
type LabelAccuracy struct {
	Label string `json:"label"`
	// RealCells held-out real cells of this label; RealAccuracy the
	// fraction of them predicted as it (recall).
	RealCells    int   `json:"real_test_cells"`
	RealAccuracy Float `json:"real_accuracy"`
	// GeneratedCells generated for this label; GeneratedAccuracy the
	// fraction predicted as it.
	GeneratedCells    int   `json:"generated_cells"`
	GeneratedAccuracy Float `json:"generated_accuracy"`
	// Ratio is GeneratedAccuracy / RealAccuracy.
	Ratio Float `json:"ratio"`
}

// ClassifierInfo reports the independent classifier of conditional
// generation: trained on labelled real cells only, it annotates held-out
// real cells and the generated cells; a generated cell counts as correct
// when it is annotated with the label it was generated for (the
// reference's CellTypist check).
type ClassifierInfo struct {
	Model     string `json:"model"`
	Classes   int    `json:"classes"`
	RealTrain int    `json:"real_train_cells"`
	RealTest  int    `json:"real_test_cells"`
	// RealAccuracy is the accuracy on the held-out real cells;
	// GeneratedAccuracy on all generated cells with a known label; Ratio
	// their quotient (the target: >= 0.8).
	RealAccuracy      Float `json:"real_accuracy"`
	GeneratedCells    int   `json:"generated_cells"`
	GeneratedAccuracy Float `json:"generated_accuracy"`
	Ratio             Float `json:"ratio"`
	// PerLabel lists every class of the real cells.
	PerLabel []LabelAccuracy `json:"per_label"`
	// UnknownLabels counts generated cells whose label no real cell has
	// (excluded from the accuracies).
	UnknownLabels map[string]int `json:"unknown_labels,omitempty"`
}

func classify(rx *scdata.CSR, rLab []string, gx *scdata.CSR, gLab []string, given []string, cfg Config) (*ClassifierInfo, error) {
	present := map[string]bool{}
	for _, l := range rLab {
		present[l] = true
	}
	var classes []string
	for _, c := range classOrder(given, rLab) {
		if present[c] {
			classes = append(classes, c)
		}
	}
	if len(classes) < 2 {
		return nil, fmt.Errorf("classifier: the real cells hold %d label(s), at least 2 are needed: %w", len(classes), ErrTooFewCells)
	}
	id := make(map[string]int, len(classes))
	for i, c := range classes {
		id[c] = i
	}
	r := newRand(cfg.Seed, streamClassifier)
	tr, te := split(r, rx.Rows, cfg.ClassifierTest)
	xtr, xte := selectRows(rx, tr), selectRows(rx, te)
	pca, err := FitPCA(xtr, PCAOptions{Components: cfg.PCs, Seed: cfg.Seed ^ streamClassifierPCA})
	if err != nil {
		return nil, fmt.Errorf("classifier: %w", err)
	}
	st := FitStandardizer(pca.Scores)
	ytr := make([]int, len(tr))
	for k, i := range tr {
		ytr[k] = id[rLab[i]]
	}
	lr, err := FitLogReg(st.Apply(pca.Scores), ytr, len(classes), cfg.ClassifierC)
	if err != nil {
		return nil, fmt.Errorf("classifier: %w", err)
	}
	info := &ClassifierInfo{
		Model: fmt.Sprintf("multinomial logistic regression (L2, C=%g) on %d standardised PCs of the real training cells",
			cfg.ClassifierC, pca.NumComponents()),
		Classes: len(classes), RealTrain: len(tr), RealTest: len(te),
	}
	per := make([]LabelAccuracy, len(classes))
	var realOK, genOK [2]int // [correct, total]
	realOK = [2]int{}
	for k, p := range lr.Predict(st.Apply(pca.Transform(xte))) {
		c := id[rLab[te[k]]]
		per[c].RealCells++
		realOK[1]++
		if p == c {
			per[c].RealAccuracy++
			realOK[0]++
		}
	}
	pred := lr.Predict(st.Apply(pca.Transform(gx)))
	for i, l := range gLab {
		c, ok := id[l]
		if !ok {
			if info.UnknownLabels == nil {
				info.UnknownLabels = map[string]int{}
			}
			info.UnknownLabels[l]++
			continue
		}
		per[c].GeneratedCells++
		genOK[1]++
		if pred[i] == c {
			per[c].GeneratedAccuracy++
			genOK[0]++
		}
	}
	for c := range per {
		p := &per[c]
		p.Label = classes[c]
		p.RealAccuracy = frac(float64(p.RealAccuracy), p.RealCells)
		p.GeneratedAccuracy = frac(float64(p.GeneratedAccuracy), p.GeneratedCells)
		p.Ratio = Float(float64(p.GeneratedAccuracy) / float64(p.RealAccuracy))
	}
	info.PerLabel = per
	info.RealAccuracy = frac(float64(realOK[0]), realOK[1])
	info.GeneratedCells = genOK[1]
	info.GeneratedAccuracy = frac(float64(genOK[0]), genOK[1])
	info.Ratio = Float(float64(info.GeneratedAccuracy) / float64(info.RealAccuracy))
	return info, nil
}

// frac is a/b, NaN when b is 0.
func frac(a float64, b int) Float {
	if b == 0 {
		return Float(nan)
	}
	return Float(a / float64(b))
}
