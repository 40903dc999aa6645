package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// evalFast are flags that keep an eval run short in tests.
var evalFast = []string{"--max_cells", "1200", "--n_pcs", "10", "--rf_trees", "40", "--knn_cells", "400", "--threads", "2"}

// writeGeneratedH5AD writes cells as a generated .h5ad (what sample
// --vae_path writes: CSR X, var names, obs/celltype when labelled).
func writeGeneratedH5AD(t *testing.T, path string, x *scdata.CSR, genes, classes []string, labels []int64) {
	t.Helper()
	w, err := scdata.CreateH5AD(path, scdata.H5ADWriterOptions{Genes: genes, Classes: classes})
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, x.Rows)
	for i := range names {
		names[i] = "gen" + string(rune('a'+i%26))
	}
	if err := w.AppendRows(x, labels, names); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// preprocessedPBMC is the bundled PBMC 4k h5ad preprocessed as for training.
func preprocessedPBMC(t *testing.T) *scdata.Preprocessed {
	t.Helper()
	ds, err := scdata.Open(pbmc(t), scdata.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	pp, err := scdata.Preprocess(ds, scdata.PreprocessConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return pp
}

// oddRows returns the odd rows of x (cells the real half does not hold)
// with every third gene scaled by 1.2 in count space, and their labels.
func oddRows(pp *scdata.Preprocessed) (*scdata.CSR, []int64) {
	x := &scdata.CSR{Cols: pp.X.Cols, Indptr: []int64{0}}
	var labels []int64
	for i := 1; i < pp.X.Rows; i += 2 {
		c, v := pp.X.Row(i)
		for k, j := range c {
			val := v[k]
			if j%3 == 0 {
				val = float32(math.Log1p(math.Expm1(float64(val)) * 1.2))
			}
			x.Indices = append(x.Indices, j)
			x.Data = append(x.Data, val)
		}
		x.Indptr = append(x.Indptr, int64(len(x.Data)))
		x.Rows++
		labels = append(labels, pp.Labels[i])
	}
	return x, labels
}

type evalJSON struct {
	Real, Generated struct {
		Cells    int
		Used     int `json:"cells_used"`
		Labelled bool
	}
	GeneMeans struct{ Spearman, Pearson float64 } `json:"gene_means"`
	MMD       struct{ Value float64 }
	KNN       struct{ Accuracy, AUC float64 }
	Forest    struct {
		Accuracy, AUC float64
		Trees         int
	} `json:"random_forest"`
	Classifier *struct {
		RealAccuracy      float64                  `json:"real_accuracy"`
		GeneratedAccuracy float64                  `json:"generated_accuracy"`
		PerLabel          []struct{ Label string } `json:"per_label"`
	}
	Targets []struct {
		Metric string
		Met    bool
	}
}

func readEvalJSON(t *testing.T, path string) evalJSON {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r evalJSON
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	return r
}

// TestEvalH5AD: raw-count real cells against a labelled generated .h5ad.
func TestEvalH5AD(t *testing.T) {
	dir := t.TempDir()
	pp := preprocessedPBMC(t)
	x, labels := oddRows(pp)
	gen := filepath.Join(dir, "gen.h5ad")
	writeGeneratedH5AD(t, gen, x, pp.Genes, pp.Classes, labels)
	out := filepath.Join(dir, "eval", "m.json")
	code, text := run(t, context.Background(), append([]string{"eval", "--real", pbmc(t), "--generated", gen, "--output", out}, evalFast...)...)
	if code != exitOK {
		t.Fatalf("eval exit %d:\n%s", code, text)
	}
	r := readEvalJSON(t, out)
	if r.Real.Used != 1200 || r.Generated.Used != 1200 || !r.Generated.Labelled {
		t.Errorf("sets: %+v %+v", r.Real, r.Generated)
	}
	if r.GeneMeans.Spearman < 0.95 || r.GeneMeans.Spearman > 1 || r.Forest.Trees != 40 {
		t.Errorf("gene-mean Spearman %v, trees %d", r.GeneMeans.Spearman, r.Forest.Trees)
	}
	if c := r.Classifier; c == nil || c.RealAccuracy < 0.7 || c.GeneratedAccuracy < 0.6 || len(c.PerLabel) != 8 {
		t.Errorf("classifier %+v", c)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "eval", "m.svg"))
	if err != nil || !strings.HasPrefix(string(svg), "<svg") {
		t.Errorf("picture: %v", err)
	}
	for _, want := range []string{"gene-mean Spearman (SCC)", "kNN accuracy (k=5)", "classifier: generated / real", "target knn.accuracy"} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
}

// writeAE writes an untrained autoencoder checkpoint for genes (with
// genes.txt and classes.txt beside it, as train-ae does).
func writeAE(t *testing.T, dir string, genes, classes []string) string {
	t.Helper()
	if err := ct.ManualSeed(3); err != nil {
		t.Fatal(err)
	}
	st := nn.NewStore(ct.CPU)
	defer st.Close()
	m, err := autoencoder.New(st.Root(), autoencoder.Config{Genes: int64(len(genes)), Hidden: []int64{64, 64}, Latent: 128})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, autoencoder.CheckpointName(0, 9))
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := writeLines(filepath.Join(dir, "genes.txt"), genes); err != nil {
		t.Fatal(err)
	}
	if err := writeLines(filepath.Join(dir, "classes.txt"), classes); err != nil {
		t.Fatal(err)
	}
	return path
}

// unitLatents returns n deterministic unit-norm 128-d rows and labels.
func unitLatents(n, k int) ([]float32, []int64) {
	z := make([]float32, n*128)
	labels := make([]int64, n)
	for i := 0; i < n; i++ {
		var s float64
		for j := 0; j < 128; j++ {
			v := math.Sin(float64(i*131+j*17)) + float64((i%k)*(j%5))*0.1
			z[i*128+j] = float32(v)
			s += v * v
		}
		for j := 0; j < 128; j++ {
			z[i*128+j] /= float32(math.Sqrt(s))
		}
		labels[i] = int64(i % k)
	}
	return z, labels
}

// TestEvalNPZ: generated latents decoded with --vae_path, pooled from two
// files (one per label, as conditional sampling writes them).
func TestEvalNPZ(t *testing.T) {
	dir := t.TempDir()
	pp := preprocessedPBMC(t)
	ae := writeAE(t, filepath.Join(dir, "ae"), pp.Genes, pp.Classes)
	var files []string
	for k := 0; k < 2; k++ {
		z, _ := unitLatents(300, 1)
		labels := make([]int64, 300)
		for i := range labels {
			labels[i] = int64(k)
		}
		f := filepath.Join(dir, "gen"+string(rune('0'+k))+".npz")
		if err := npz.WriteLatents(f, z, 300, 128, labels, nil); err != nil {
			t.Fatal(err)
		}
		files = append(files, "--generated", f)
	}
	out := filepath.Join(dir, "m.json")
	args := append(append([]string{"eval", "--real", pbmc(t), "--vae_path", ae, "--output", out}, files...), evalFast...)
	code, text := run(t, context.Background(), args...)
	if code != exitOK {
		t.Fatalf("eval exit %d:\n%s", code, text)
	}
	r := readEvalJSON(t, out)
	if r.Generated.Cells != 600 || !r.Generated.Labelled || r.Classifier == nil {
		t.Errorf("generated %+v, classifier %v", r.Generated, r.Classifier)
	}
	// An untrained decoder's cells are easy to tell from real ones.
	if r.Forest.Accuracy < 0.9 || r.KNN.Accuracy < 0.9 {
		t.Errorf("untrained decoder: forest %v kNN %v, want ≈ 1", r.Forest.Accuracy, r.KNN.Accuracy)
	}
	if !strings.Contains(text, "600 latents") && !strings.Contains(text, "300 latents decoded") {
		t.Errorf("no decode line:\n%s", text)
	}
}

// TestEvalBadInput: bad flags and bad files give one clear line, the
// documented exit status, and no output file.
func TestEvalBadInput(t *testing.T) {
	dir := t.TempDir()
	pp := preprocessedPBMC(t)
	small := &scdata.CSR{Rows: 3, Cols: 3, Indptr: []int64{0, 1, 2, 3}, Indices: []int32{0, 1, 2}, Data: []float32{1, 2, 3}}
	otherGenes := filepath.Join(dir, "other.h5ad")
	writeGeneratedH5AD(t, otherGenes, small, []string{"X1", "X2", "X3"}, nil, nil)
	x, _ := oddRows(pp)
	good := filepath.Join(dir, "good.h5ad")
	writeGeneratedH5AD(t, good, x, pp.Genes, nil, nil)
	garbage := filepath.Join(dir, "garbage.h5ad")
	os.WriteFile(garbage, []byte("not an hdf5 file"), 0o644)
	textFile := filepath.Join(dir, "cells.csv")
	os.WriteFile(textFile, []byte("a,b\n1,2\n"), 0o644)
	noKey := filepath.Join(dir, "nokey.npz")
	a, _ := npz.NewArray(make([]float32, 4), 2, 2)
	if err := npz.Write(noKey, npz.Named{Key: "latents", Array: a}); err != nil {
		t.Fatal(err)
	}
	narrow := filepath.Join(dir, "narrow.npz")
	if err := npz.WriteLatents(narrow, make([]float32, 10*16), 10, 16, nil, nil); err != nil {
		t.Fatal(err)
	}
	ae := writeAE(t, filepath.Join(dir, "ae"), pp.Genes, pp.Classes)
	scaled := filepath.Join(cgotorchDataDir(t), "pbmc68k_reduced", "10x_pbmc68k_reduced.h5ad")
	out := filepath.Join(dir, "out", "m.json")
	base := []string{"eval", "--real", pbmc(t), "--output", out}
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no flags", []string{"eval"}, exitUsage, "--real is required"},
		{"no generated", []string{"eval", "--real", pbmc(t)}, exitUsage, "--generated is required"},
		{"missing real", []string{"eval", "--real", filepath.Join(dir, "nope.h5ad"), "--generated", good}, exitData, "nope.h5ad: no such file"},
		{"missing generated", append(base, "--generated", filepath.Join(dir, "gone.h5ad")), exitData, "gone.h5ad: no such file"},
		{"npz without vae", append(base, "--generated", narrow), exitUsage, "give --vae_path"},
		{"vae without npz", append(base, "--generated", good, "--vae_path", ae), exitUsage, "only used to decode .npz"},
		{"missing vae", append(base, "--generated", narrow, "--vae_path", filepath.Join(dir, "none.pt")), exitData, "none.pt: no such file"},
		{"corrupt generated", append(base, "--generated", garbage), exitData, "garbage.h5ad"},
		{"csv generated", append(base, "--generated", textFile), exitData, "not an HDF5 file"},
		{"npz without cell_gen", append(base, "--generated", noKey, "--vae_path", ae), exitData, "no \"cell_gen\""},
		{"latent width", append(base, "--generated", narrow, "--vae_path", ae), exitData, "16-wide"},
		{"no shared genes", append(base, "--generated", otherGenes), exitData, "no shared genes"},
		{"scaled real", []string{"eval", "--real", scaled, "--real_values", "log1p", "--label_key", "bulk_labels", "--generated", good, "--output", out}, exitData, "is this scaled data"},
		{"real label key", append(base, "--generated", good, "--label_key", "cell_type"), exitData, "cell_type"},
		{"gen label key", append(base, "--generated", good, "--gen_label_key", "condition"), exitData, "condition"},
		{"knn_k", append(base, "--generated", good, "--knn_k", "0"), exitUsage, "--knn_k must be at least 1"},
		{"n_pcs", append(base, "--generated", good, "--n_pcs", "1"), exitUsage, "--n_pcs must be at least 2"},
		{"max_cells", append(base, "--generated", good, "--max_cells", "-5"), exitUsage, "--max_cells must be at least 0"},
		{"rf_trees", append(base, "--generated", good, "--rf_trees", "0"), exitUsage, "--rf_trees"},
		{"real_values", append(base, "--generated", good, "--real_values", "tpm"), exitUsage, "--real_values \"tpm\""},
		{"bn_mode", append(base, "--generated", good, "--bn_mode", "training"), exitUsage, "--bn_mode"},
		{"png plot", append(base, "--generated", good, "--plot", "p.png"), exitUsage, "SVG"},
		{"not a number", append(base, "--generated", good, "--mmd_cells", "many"), exitUsage, "mmd_cells"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, text := run(t, context.Background(), tc.args...)
			lines := strings.Split(strings.TrimSpace(text), "\n")
			last := lines[len(lines)-1]
			if code != tc.code || !strings.Contains(last, tc.msg) || !strings.HasPrefix(last, "gotorch-train: ") {
				t.Errorf("exit %d (want %d), last line %q, want one line mentioning %q; output:\n%s", code, tc.code, last, tc.msg, text)
			}
			if strings.Contains(text, "goroutine ") || strings.Contains(text, "panic") {
				t.Errorf("stack trace in the output:\n%s", text)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("%s was written", out)
			}
		})
	}
}

func cgotorchDataDir(t *testing.T) string {
	return filepath.Dir(filepath.Dir(filepath.Dir(pbmc(t))))
}
