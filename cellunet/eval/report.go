package eval

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

var nan = math.NaN()

// Float is a float64 that encodes NaN and ±Inf as JSON null (a metric
// that cannot be computed, e.g. a correlation with a constant vector).
type Float float64

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return []byte(strconv.FormatFloat(v, 'g', -1, 64)), nil
}

// UnmarshalJSON implements json.Unmarshaler (null reads as NaN).
func (f *Float) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = Float(nan)
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	*f = Float(v)
	return err
}

func jsonFloat(v float64) Float { return Float(v) }

// Report is everything Evaluate measured; it is written as JSON.
type Report struct {
	Real      SetInfo     `json:"real"`
	Generated SetInfo     `json:"generated"`
	Genes     GeneInfo    `json:"genes"`
	GeneMeans Correlation `json:"gene_means"`
	PCA       PCAInfo     `json:"pca"`
	MMD       MMDInfo     `json:"mmd"`
	KNN       KNNInfo     `json:"knn"`
	Forest    ForestInfo  `json:"random_forest"`
	// Classifier is set for conditional generation (labelled generated
	// and real cells).
	Classifier *ClassifierInfo `json:"classifier,omitempty"`
	// Targets are the quality targets and whether they are met.
	Targets []Target `json:"targets"`
	// Seed is the seed of every random choice.
	Seed uint64 `json:"seed"`
	// Timings are the seconds each stage took.
	Timings map[string]float64 `json:"timings_s"`
	Notes   []string           `json:"notes,omitempty"`

	embedding embedding // for Plot
}

// SetInfo describes one input set.
type SetInfo struct {
	Name string `json:"file"`
	// Cells in the input; Used after MaxCells subsampling.
	Cells    int  `json:"cells"`
	Used     int  `json:"cells_used"`
	Labelled bool `json:"labelled"`
}

// GeneInfo counts the genes of both sets and the shared ones.
type GeneInfo struct {
	Real      int `json:"real"`
	Generated int `json:"generated"`
	Shared    int `json:"shared"`
}

// Correlation is the Spearman and Pearson correlation of the per-gene
// mean expression of real and generated cells (the reference's SCC/PCC).
type Correlation struct {
	Spearman Float `json:"spearman"`
	Pearson  Float `json:"pearson"`
	Genes    int   `json:"genes"`
}

// PCAInfo describes the joint PCA of real and generated cells.
type PCAInfo struct {
	Components             int       `json:"components"`
	Cells                  int       `json:"cells"`
	ExplainedVarianceRatio []float64 `json:"explained_variance_ratio"`
}

// MMDInfo is the reference's MMD on the joint PCA.
type MMDInfo struct {
	Value       float64 `json:"value"`
	Bandwidth   float64 `json:"bandwidth"`
	CellsPerSet int     `json:"cells_per_set"`
	Components  int     `json:"components"`
}

// DetectionJSON is a Detection with JSON-safe numbers.
type DetectionJSON struct {
	Accuracy Float `json:"accuracy"`
	AUC      Float `json:"auc"`
	Train    int   `json:"train_cells"`
	Test     int   `json:"test_cells"`
}

func jsonDetection(d Detection) DetectionJSON {
	return DetectionJSON{Accuracy: Float(d.Accuracy), AUC: Float(d.AUC), Train: d.Train, Test: d.Test}
}

// KNNInfo is the kNN real-vs-generated test.
type KNNInfo struct {
	DetectionJSON
	K     int    `json:"k"`
	Space string `json:"space"`
}

// ForestInfo is the random-forest real-vs-generated test.
type ForestInfo struct {
	DetectionJSON
	OOBAccuracy Float `json:"oob_accuracy"`
	Trees       int   `json:"trees"`
	MaxDepth    int   `json:"max_depth"`
	Components  int   `json:"components"`
}

// Target is one quality target of the issue.
type Target struct {
	Metric string `json:"metric"`
	Want   string `json:"want"`
	Value  Float  `json:"value"`
	Met    bool   `json:"met"`
}

func targets(r *Report) []Target {
	t := []Target{
		{Metric: "gene_means.spearman", Want: ">= 0.95", Value: r.GeneMeans.Spearman, Met: float64(r.GeneMeans.Spearman) >= 0.95},
		{Metric: "knn.accuracy", Want: "<= 0.65", Value: r.KNN.Accuracy, Met: float64(r.KNN.Accuracy) <= 0.65},
	}
	if c := r.Classifier; c != nil {
		t = append(t, Target{Metric: "classifier.ratio", Want: ">= 0.8", Value: c.Ratio, Met: float64(c.Ratio) >= 0.8})
	}
	return t
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteSummary prints the report as a table, next to the reference's
// published values (spec §8: Open Problems, unconditional, and Tabula
// Muris for the classifier) and the ideal.
func (r *Report) WriteSummary(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "real:      %s — %d cells (%d used)\n", r.Real.Name, r.Real.Cells, r.Real.Used)
	fmt.Fprintf(&b, "generated: %s — %d cells (%d used)\n", r.Generated.Name, r.Generated.Cells, r.Generated.Used)
	fmt.Fprintf(&b, "genes:     %d shared (real %d, generated %d)\n\n", r.Genes.Shared, r.Genes.Real, r.Genes.Generated)
	row := func(name string, v Float, ref, ideal, target string) {
		fmt.Fprintf(&b, "%-36s %9s %10s %7s %9s\n", name, num(v), ref, ideal, target)
	}
	fmt.Fprintf(&b, "%-36s %9s %10s %7s %9s\n", "metric", "value", "reference", "ideal", "target")
	row("gene-mean Spearman (SCC)", r.GeneMeans.Spearman, "0.9940", "1", ">= 0.95")
	row("gene-mean Pearson (PCC)", r.GeneMeans.Pearson, "0.9991", "1", "")
	row(fmt.Sprintf("MMD (%d PCs, %d+%d cells)", r.MMD.Components, r.MMD.CellsPerSet, r.MMD.CellsPerSet), Float(r.MMD.Value), "0.0322", "0", "")
	row(fmt.Sprintf("kNN accuracy (k=%d)", r.KNN.K), r.KNN.Accuracy, "0.501", "0.5", "<= 0.65")
	row("kNN AUC", r.KNN.AUC, "0.50", "0.5", "")
	row(fmt.Sprintf("random forest accuracy (%d trees)", r.Forest.Trees), r.Forest.Accuracy, "0.705", "0.5", "")
	row("random forest AUC", r.Forest.AUC, "", "0.5", "")
	row("random forest OOB accuracy", r.Forest.OOBAccuracy, "0.710", "0.5", "")
	if c := r.Classifier; c != nil {
		row("classifier: held-out real accuracy", c.RealAccuracy, "", "1", "")
		row("classifier: generated accuracy", c.GeneratedAccuracy, "0.932", "1", "")
		row("classifier: generated / real", c.Ratio, "", "1", ">= 0.8")
		fmt.Fprintf(&b, "\n%-24s %10s %10s %10s %10s %7s\n", "label", "real test", "real acc", "generated", "gen acc", "ratio")
		for _, p := range c.PerLabel {
			fmt.Fprintf(&b, "%-24s %10d %10s %10d %10s %7s\n", clip(p.Label, 24), p.RealCells, num(p.RealAccuracy), p.GeneratedCells, num(p.GeneratedAccuracy), num(p.Ratio))
		}
		unknown := make([]string, 0, len(c.UnknownLabels))
		for l := range c.UnknownLabels {
			unknown = append(unknown, l)
		}
		slices.Sort(unknown)
		for _, l := range unknown {
			fmt.Fprintf(&b, "%-24s %10s %10s %10d %10s %7s\n", clip(l, 24)+" (no real cells)", "-", "-", c.UnknownLabels[l], "-", "-")
		}
	}
	b.WriteString("reference: the published scDiffusion values (Open Problems; the classifier's: Tabula Muris), for scale\n\n")
	for _, t := range r.Targets {
		met := "met"
		if !t.Met {
			met = "NOT met"
		}
		fmt.Fprintf(&b, "target %s %s: %s (%s)\n", t.Metric, t.Want, num(t.Value), met)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func num(v Float) string {
	f := float64(v)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(f, 'f', 4, 64)
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
