package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/eval"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
	"github.com/scdiffusion/gotorch-train/cgotorch/atomicfile"
)

const catEval = "Evaluation"

func newEvalCommand() *cli.Command {
	d := eval.DefaultConfig()
	return &cli.Command{
		Name:  "eval",
		Usage: "judge generated cells against real cells: gene-mean correlation, MMD, kNN and random-forest detectability, classifier accuracy",
		Description: "Compares --generated cells with --real cells, genes matched by name, and writes the metrics as JSON\n" +
			"(--output), a picture of both sets in one PCA embedding (--plot, SVG) and a summary table.\n" +
			"--real: an .h5ad, 10x .h5 or MEX folder, or plain HDF5 of raw counts (preprocessed as for training)\n" +
			"or of log1p-normalised expression (--real_values). --generated: an .h5ad of decoded expression\n" +
			"(sample --vae_path writes one; labels from obs --gen_label_key), or an .npz of latents (cell_gen,\n" +
			"optional labels/classes) decoded with --vae_path. Repeat --generated to pool several files.\n" +
			"Metrics (spec §8): Spearman/Pearson of per-gene means; the reference's MMD on a joint 50-PC PCA;\n" +
			"kNN (k=5, 30 % held out) and random-forest (1000 trees, depth 5, 25 % held out) real-vs-generated\n" +
			"accuracy and AUC (0.5: indistinguishable); for labelled generated cells, a logistic-regression\n" +
			"classifier trained on real cells only, scored on held-out real cells and on the generated cells.\n\n" + exitStatusHelp,
		Flags: slices.Concat([]cli.Flag{
			&cli.StringFlag{Name: "real", Usage: "real cells `FILE`: .h5ad, 10x .h5 or MEX folder, or plain HDF5", EnvVars: env("real"), Category: catData},
			&cli.StringFlag{Name: "real_values", Value: "auto", Usage: "what --real holds: counts (preprocessed as for training), log1p (used as is) or auto (counts when every value is a whole number)", EnvVars: env("real_values"), Category: catData},
			&cli.StringFlag{Name: "label_key", Value: scdata.DefaultLabelKey, Usage: "obs `COLUMN` with the real cells' labels (unlabelled when the default column is absent)", EnvVars: env("label_key"), Category: catData},
			&cli.BoolFlag{Name: "no_labels", Usage: "read no labels from --real", EnvVars: env("no_labels"), Category: catData},
			&cli.BoolFlag{Name: "use_raw", Usage: "read raw/X and raw/var of the real .h5ad", EnvVars: env("use_raw"), Category: catData},
			&cli.StringFlag{Name: "genome", Usage: "`GENOME` of a 10x file with several", EnvVars: env("genome"), Category: catData},
			&cli.StringSliceFlag{Name: "generated", Usage: "generated cells `FILE`: .h5ad of decoded expression or .npz of latents (with --vae_path); repeatable", EnvVars: env("generated"), Category: catData},
			&cli.StringFlag{Name: "gen_label_key", Usage: "obs `COLUMN` with the generated cells' labels (default: --label_key; none when absent)", EnvVars: env("gen_label_key"), Category: catData},
			&cli.StringFlag{Name: "vae_path", Usage: "autoencoder checkpoint `FILE` that decodes .npz latents (genes.txt and classes.txt are read next to it)", EnvVars: env("vae_path"), Category: catModel},
			&cli.StringFlag{Name: "bn_mode", Value: "dataset", Usage: "decoder BatchNorm statistics: dataset (all latents of a file, as the reference) or running", EnvVars: env("bn_mode"), Category: catModel},
			&cli.IntFlag{Name: "chunk_rows", Value: 1024, Usage: "latents decoded at once (memory, not results, depends on it)", EnvVars: env("chunk_rows"), Category: catMemory},
			&cli.StringFlag{Name: "output", Value: "metrics.json", Usage: "metrics `FILE` (JSON)", EnvVars: env("output"), Category: catEval},
			&cli.StringFlag{Name: "plot", Usage: "picture `FILE` (SVG; default: --output with .svg)", EnvVars: env("plot"), Category: catEval},
			&cli.Uint64Flag{Name: "seed", Value: d.Seed, Usage: "random seed of every subsample, split and the forest", EnvVars: env("seed"), Category: catEval},
			&cli.IntFlag{Name: "max_cells", Value: d.MaxCells, Usage: "subsample each set to at most `N` cells first (0: all)", EnvVars: env("max_cells"), Category: catEval},
			&cli.IntFlag{Name: "n_pcs", Value: d.PCs, Usage: "principal components of the joint PCA (scanpy's 50)", EnvVars: env("n_pcs"), Category: catEval},
			&cli.IntFlag{Name: "mmd_cells", Value: d.MMDCells, Usage: "cells per set for the MMD (time grows with the square; 0: all)", EnvVars: env("mmd_cells"), Category: catEval},
			&cli.IntFlag{Name: "knn_cells", Value: d.KNNCells, Usage: "cells per set for the kNN test (the reference's 1,000; 0: all; as many from each set, so the larger one is subsampled to the smaller)", EnvVars: env("knn_cells"), Category: catEval},
			&cli.IntFlag{Name: "knn_k", Value: d.KNNK, Usage: "neighbours of the kNN test", EnvVars: env("knn_k"), Category: catEval},
			&cli.IntFlag{Name: "rf_trees", Value: d.Forest.Trees, Usage: "trees of the random forest (the reference's 1,000)", EnvVars: env("rf_trees"), Category: catEval},
			&cli.IntFlag{Name: "rf_depth", Value: d.Forest.MaxDepth, Usage: "depth limit of the forest's trees", EnvVars: env("rf_depth"), Category: catEval},
			&cli.IntFlag{Name: "plot_cells", Value: d.PlotCells, Usage: "cells per set drawn in the picture (0: all)", EnvVars: env("plot_cells"), Category: catEval},
		}, runtimeFlags()),
		Action: runEval,
	}
}

// evalArgs are the validated flags of eval.
type evalArgs struct {
	real, realValues, labelKey, genKey string
	generated                          []string
	vaePath, output, plot              string
	bnMode                             autoencoder.BNMode
	chunkRows                          int
	cfg                                eval.Config
}

// parseEvalArgs checks every flag and input path before anything is read
// or written.
func parseEvalArgs(c *cli.Context) (*evalArgs, error) {
	a := &evalArgs{real: c.String("real"), realValues: c.String("real_values"), labelKey: c.String("label_key"),
		genKey: c.String("gen_label_key"), generated: c.StringSlice("generated"), vaePath: c.String("vae_path"),
		output: c.String("output"), plot: c.String("plot"), chunkRows: c.Int("chunk_rows")}
	if a.real == "" {
		return nil, usagef("--real is required: the real cells (.h5ad, 10x .h5 or MEX folder, or plain HDF5)")
	}
	if len(a.generated) == 0 {
		return nil, usagef("--generated is required: the generated cells (.h5ad of decoded expression, or .npz of latents with --vae_path)")
	}
	switch a.realValues {
	case "auto", "counts", "log1p":
	default:
		return nil, usagef("--real_values %q: want auto, counts or log1p", a.realValues)
	}
	if a.genKey == "" {
		a.genKey = a.labelKey
	}
	mode, err := autoencoder.ParseBNMode(c.String("bn_mode"))
	if err != nil || mode == autoencoder.Training {
		return nil, usagef("--bn_mode %q: want dataset or running", c.String("bn_mode"))
	}
	a.bnMode = mode
	if a.chunkRows < 1 {
		return nil, usagef("--chunk_rows must be at least 1, got %d", a.chunkRows)
	}
	if a.output == "" {
		return nil, usagef("--output must name a file")
	}
	if a.plot == "" {
		a.plot = strings.TrimSuffix(a.output, filepath.Ext(a.output)) + ".svg"
	}
	if !strings.EqualFold(filepath.Ext(a.plot), ".svg") {
		return nil, usagef("--plot %q: the picture is written as SVG, give a .svg file name", a.plot)
	}
	if a.plot == a.output {
		return nil, usagef("--plot and --output are the same file %q", a.output)
	}
	cfg := eval.DefaultConfig()
	cfg.Seed = c.Uint64("seed")
	for _, f := range []struct {
		name string
		dst  *int
		min  int
	}{
		{"max_cells", &cfg.MaxCells, 0}, {"n_pcs", &cfg.PCs, 2}, {"mmd_cells", &cfg.MMDCells, 0}, {"knn_cells", &cfg.KNNCells, 0},
		{"knn_k", &cfg.KNNK, 1}, {"rf_trees", &cfg.Forest.Trees, 1}, {"rf_depth", &cfg.Forest.MaxDepth, 1}, {"plot_cells", &cfg.PlotCells, 0},
	} {
		v := c.Int(f.name)
		if v < f.min {
			return nil, usagef("--%s must be at least %d, got %d", f.name, f.min, v)
		}
		*f.dst = v
	}
	if cfg.MaxCells > 0 && cfg.MaxCells < 2*cfg.KNNK+2 {
		return nil, usagef("--max_cells %d is too small for --knn_k %d", cfg.MaxCells, cfg.KNNK)
	}
	if err := cfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	a.cfg = cfg
	needVAE := false
	for _, g := range a.generated {
		if isNPZ(g) {
			needVAE = true
		}
	}
	if needVAE && a.vaePath == "" {
		return nil, usagef("--generated %s holds latents (.npz): give --vae_path, the autoencoder that decodes them", strings.Join(npzFiles(a.generated), ", "))
	}
	if !needVAE && a.vaePath != "" {
		return nil, usagef("--vae_path is only used to decode .npz latents, and no --generated file is an .npz")
	}
	inputs := append([]string{a.real}, a.generated...)
	if a.vaePath != "" {
		inputs = append(inputs, a.vaePath)
	}
	for _, p := range inputs {
		if _, err := os.Stat(p); err != nil {
			return nil, dataErr(fmt.Errorf("%s: %w", p, errors.Unwrap(err)))
		}
	}
	return a, nil
}

func isNPZ(p string) bool { return strings.EqualFold(filepath.Ext(p), ".npz") }

func npzFiles(ps []string) []string {
	var out []string
	for _, p := range ps {
		if isNPZ(p) {
			out = append(out, p)
		}
	}
	return out
}

func runEval(c *cli.Context) error {
	out := c.App.Writer
	a, err := parseEvalArgs(c)
	if err != nil {
		return err
	}
	if n := c.Int("threads"); n > 0 {
		runtime.GOMAXPROCS(n) // the metrics run on Go's threads
	} else if n < 0 {
		return usagef("--threads must be >= 0, got %d", n)
	}
	start := time.Now()
	real, err := loadRealCells(c, a, out)
	if err != nil {
		return err
	}
	gen, err := loadGeneratedCells(c, a, real, out)
	if err != nil {
		return err
	}
	a.cfg.Out = out
	rep, err := eval.Evaluate(real, gen, a.cfg)
	if errors.Is(err, eval.ErrNoSharedGenes) || errors.Is(err, eval.ErrTooFewCells) {
		return dataErr(err)
	}
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(a.output, 0o644, rep.WriteJSON); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(a.plot, 0o644, func(w io.Writer) error { return rep.Plot(w, a.cfg.PlotCells) }); err != nil {
		return err
	}
	fmt.Fprintln(out)
	if err := rep.WriteSummary(out); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s and %s in %.1fs\n", a.output, a.plot, time.Since(start).Seconds())
	return nil
}

// openLabelled opens path (given as --flag) with labels from key; when
// the column is absent and the user did not ask for it (explicit false),
// it reopens without labels and says so.
func openLabelled(path string, opts scdata.OpenOptions, explicit bool, flag string, out io.Writer) (*scdata.Dataset, error) {
	ds, err := scdata.Open(path, opts)
	if errors.Is(err, scdata.ErrNoLabels) && !explicit && !opts.NoLabels {
		opts.NoLabels = true
		ds, err = scdata.Open(path, opts)
		if err == nil {
			fmt.Fprintf(out, "%s %s: no label column %q, the cells are unlabelled\n", flag, path, opts.LabelKey)
		}
	}
	if err != nil {
		hint := ""
		if flag == "--generated" && errors.Is(err, scdata.ErrFormat) {
			hint = "; --generated takes an .h5ad of decoded expression or an .npz of latents"
		}
		return nil, dataErr(fmt.Errorf("%s %w%s", flag, err, hint))
	}
	return ds, nil
}

// loadRealCells reads --real: raw counts preprocessed exactly as for
// training, or log1p-normalised expression used as it is.
func loadRealCells(c *cli.Context, a *evalArgs, out io.Writer) (*eval.Cells, error) {
	ds, err := openLabelled(a.real, scdata.OpenOptions{LabelKey: a.labelKey, NoLabels: c.Bool("no_labels"),
		UseRaw: c.Bool("use_raw"), Genome: c.String("genome")}, c.IsSet("label_key"), "--real", out)
	if err != nil {
		return nil, err
	}
	defer ds.Close()
	values := a.realValues
	if values == "auto" {
		whole, err := allWholeNumbers(ds)
		if err != nil {
			return nil, dataErr(err)
		}
		values = map[bool]string{true: "counts", false: "log1p"}[whole]
	}
	cells := &eval.Cells{Name: a.real}
	if values == "counts" {
		pp, err := scdata.Preprocess(ds, scdata.PreprocessConfig{})
		if err != nil {
			return nil, dataErr(err)
		}
		cells.X, cells.Genes, cells.Classes = pp.X, pp.Genes, pp.Classes
		if pp.Labels != nil {
			cells.Labels = make([]string, len(pp.Labels))
			for i, l := range pp.Labels {
				cells.Labels[i] = pp.Classes[l]
			}
		}
		fmt.Fprintf(out, "real: %s, raw counts preprocessed as for training: %d cells × %d genes kept (of %d × %d), %d labels\n",
			a.real, pp.X.Rows, pp.X.Cols, pp.CellsIn, pp.GenesIn, len(pp.Classes))
		return cells, nil
	}
	x, err := ds.ReadCSR()
	if err != nil {
		return nil, dataErr(err)
	}
	if err := checkExpression(a.real, x, "--real"); err != nil {
		return nil, err
	}
	cells.X, cells.Genes = x, scdata.MakeUnique(ds.GeneNames())
	if l := ds.Labels(); l != nil {
		cells.Labels = l
		_, cells.Classes = scdata.EncodeLabels(l, ds.LabelsNumeric())
	}
	fmt.Fprintf(out, "real: %s, log1p-normalised expression: %d cells × %d genes, %d labels\n", a.real, x.Rows, x.Cols, len(cells.Classes))
	return cells, nil
}

// allWholeNumbers reports whether every stored value of ds is a whole
// number (raw counts).
func allWholeNumbers(ds *scdata.Dataset) (bool, error) {
	whole := true
	errStop := errors.New("stop")
	err := ds.Rows(0, func(_ int, m *scdata.CSR) error {
		for _, v := range m.Data {
			if float64(v) != math.Trunc(float64(v)) {
				whole = false
				return errStop
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return false, err
	}
	return whole, nil
}

// checkExpression rejects values that cannot be log1p-normalised
// expression (negative, NaN, infinite).
func checkExpression(path string, x *scdata.CSR, flag string) error {
	for i := 0; i < x.Rows; i++ {
		_, v := x.Row(i)
		for _, e := range v {
			if e < 0 || e != e || math.IsInf(float64(e), 0) {
				return dataErr(fmt.Errorf("%s %s: cell %d has the value %v; log1p-normalised expression is finite and >= 0 (is this scaled data? use the raw counts or raw/X with --use_raw)", flag, path, i, e))
			}
		}
	}
	return nil
}

// loadGeneratedCells reads and pools the --generated files.
func loadGeneratedCells(c *cli.Context, a *evalArgs, real *eval.Cells, out io.Writer) (*eval.Cells, error) {
	var parts []*eval.Cells
	var dec *decoder
	defer func() {
		if dec != nil {
			dec.close()
		}
	}()
	for _, p := range a.generated {
		var cells *eval.Cells
		var err error
		if isNPZ(p) {
			if dec == nil {
				if dec, err = newDecoder(c, a, real, out); err != nil {
					return nil, err
				}
			}
			cells, err = dec.decode(p, out)
		} else {
			cells, err = readGeneratedH5AD(c, a, p, out)
		}
		if err != nil {
			return nil, err
		}
		parts = append(parts, cells)
	}
	pooled, err := eval.Pool(parts...)
	if err != nil {
		return nil, dataErr(err)
	}
	return pooled, nil
}

// readGeneratedH5AD reads decoded expression (cells × genes) and labels.
func readGeneratedH5AD(c *cli.Context, a *evalArgs, path string, out io.Writer) (*eval.Cells, error) {
	ds, err := openLabelled(path, scdata.OpenOptions{LabelKey: a.genKey}, c.IsSet("gen_label_key"), "--generated", out)
	if err != nil {
		return nil, err
	}
	defer ds.Close()
	x, err := ds.ReadCSR()
	if err != nil {
		return nil, dataErr(err)
	}
	if err := checkExpression(path, x, "--generated"); err != nil {
		return nil, err
	}
	cells := &eval.Cells{X: x, Genes: scdata.MakeUnique(ds.GeneNames()), Labels: ds.Labels(), Name: path}
	fmt.Fprintf(out, "generated: %s, %d cells × %d genes%s\n", path, x.Rows, x.Cols, labelNote(cells.Labels))
	return cells, nil
}

func labelNote(labels []string) string {
	if labels == nil {
		return ", unlabelled"
	}
	n := map[string]bool{}
	for _, l := range labels {
		n[l] = true
	}
	return fmt.Sprintf(", %d labels", len(n))
}

// decoder decodes .npz latents with the --vae_path autoencoder.
type decoder struct {
	m              *autoencoder.Model
	genes, classes []string
	opts           autoencoder.InferOptions
	path           string
}

func newDecoder(c *cli.Context, a *evalArgs, real *eval.Cells, out io.Writer) (*decoder, error) {
	dev, err := setup(c)
	if err != nil {
		return nil, err
	}
	m, err := autoencoder.Load(a.vaePath, dev, 0)
	if err != nil {
		return nil, flagErr("vae_path", err)
	}
	d := &decoder{m: m, path: a.vaePath, opts: autoencoder.DefaultInferOptions()}
	d.opts.Mode, d.opts.ChunkRows = a.bnMode, a.chunkRows
	g := int(m.Config().Genes)
	dir := filepath.Dir(a.vaePath)
	switch genes, err := readLines(filepath.Join(dir, "genes.txt")); {
	case err == nil && len(genes) == g:
		d.genes = genes
	case err == nil:
		m.Close()
		return nil, dataErr(fmt.Errorf("%s lists %d genes but the autoencoder %s has %d", filepath.Join(dir, "genes.txt"), len(genes), a.vaePath, g))
	case !os.IsNotExist(err):
		m.Close()
		return nil, dataErr(err)
	case len(real.Genes) == g:
		d.genes = real.Genes
		fmt.Fprintf(out, "note: no genes.txt next to %s; its %d genes are taken to be the real data's, in order\n", a.vaePath, g)
	default:
		m.Close()
		return nil, dataErr(fmt.Errorf("no genes.txt next to %s, and its %d genes do not match the %d genes of --real: the decoded genes cannot be named", a.vaePath, g, len(real.Genes)))
	}
	if cl, err := readLines(filepath.Join(dir, "classes.txt")); err == nil {
		d.classes = cl
	} else {
		d.classes = real.Classes
	}
	return d, nil
}

func (d *decoder) close() { d.m.Close() }

// decode reads latents and decodes them (ReLU, the --bn_mode statistics
// over all latents of the file) to a CSR matrix.
func (d *decoder) decode(path string, out io.Writer) (*eval.Cells, error) {
	l, err := npz.ReadLatents(path)
	if err != nil {
		return nil, dataErr(fmt.Errorf("--generated %w", err))
	}
	if lat := int(d.m.Config().Latent); l.Dim != lat {
		return nil, dataErr(fmt.Errorf("%s: latents are %d-wide but the autoencoder %s has %d-wide latents", path, l.Dim, d.path, lat))
	}
	if l.N == 0 {
		return nil, dataErr(fmt.Errorf("%s: no latents (cell_gen has 0 rows)", path))
	}
	cells := &eval.Cells{Genes: d.genes, Name: path}
	if l.Labels != nil {
		classes := l.Classes
		if classes == nil {
			classes = d.classes
		}
		cells.Labels = make([]string, l.N)
		for i, id := range l.Labels {
			if id < 0 || int(id) >= len(classes) {
				return nil, dataErr(fmt.Errorf("%s: row %d has label %d but there are %d classes (classes.txt next to --vae_path, or the file's classes)", path, i, id, len(classes)))
			}
			cells.Labels[i] = classes[id]
		}
	}
	g := len(d.genes)
	x := &scdata.CSR{Cols: g, Indptr: []int64{0}}
	start := time.Now()
	err = d.m.DecodeAll(l.Data, nil, d.opts, true, func(_, n int, rows []float32) error {
		for i := 0; i < n; i++ {
			for j, v := range rows[i*g : (i+1)*g] {
				if v != 0 {
					x.Indices = append(x.Indices, int32(j))
					x.Data = append(x.Data, v)
				}
			}
			x.Indptr = append(x.Indptr, int64(len(x.Data)))
			x.Rows++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	cells.X = x
	fmt.Fprintf(out, "generated: %s, %d latents decoded to %d genes in %.1fs (BatchNorm: %s statistics)%s\n",
		path, l.N, g, time.Since(start).Seconds(), d.opts.Mode, labelNote(cells.Labels))
	return cells, nil
}
