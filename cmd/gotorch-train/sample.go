package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/classifier"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	"github.com/scdiffusion/gotorch-train/cellunet/generate"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

func newSampleCommand() *cli.Command {
	return &cli.Command{
		Name:  "sample",
		Usage: "generate cells with the backbone, optionally guided by classifiers (cell_sample.py, classifier_sample.py)",
		Description: "Writes the reference's output: {sample_dir}.npz (unconditional) or {sample_dir}{k}.npz (class k), one\n" +
			"key cell_gen float32 [num_samples,128], streamed batch by batch and renamed into place when complete;\n" +
			"with --vae_path also the decoded expression as {sample_dir}[k].h5ad. By default the EMA weights next to\n" +
			"--model_path are used (ema_RATE_NNNNNN.pt; --use_ema False samples the raw weights, as the reference).\n" +
			"Modes: unconditional; --classifier_path with --cell_type K, a class name or all (every class, models\n" +
			"loaded once); --classifier_path1/2 with --cell_type K1,K2 (two conditions); --classifier_path with\n" +
			"--init_cell_path and --cell_type A,B (gradient interpolation from real cells of class A, --weight wA,wB).\n" +
			"Batch i is a pure function of --seed and i: the same seed gives the same bytes. Nothing is written\n" +
			"before every flag, model and input file has been checked.\n\n" + exitStatusHelp,
		Flags: slices.Concat([]cli.Flag{
			&cli.StringFlag{Name: "model_path", Value: "output/checkpoint/backbone/model800000.pt", Usage: "backbone checkpoint `FILE` (train's modelNNNNNN.pt, or a reference one)", EnvVars: env("model_path"), Category: catModel},
			&cli.BoolFlag{Name: "use_ema", Value: true, Usage: "sample from the EMA weights ema_RATE_NNNNNN.pt next to --model_path when present (--use_ema False: the raw weights, as the reference)", EnvVars: env("use_ema"), Category: catModel},
			&cli.StringFlag{Name: "ema_rate", Usage: "which EMA file to use when there are several (e.g. 0.9999)", EnvVars: env("ema_rate"), Category: catModel},
			&cli.StringFlag{Name: "hidden_dim", Value: "512,512,256,128", Usage: "Cell_Unet widths (checked against the checkpoint, which defines them)", EnvVars: env("hidden_dim"), Category: catModel,
				Action: parsedBy("hidden_dim", "positive widths separated by commas, e.g. 512,512,256,128", func(v string) error { _, err := cellunet.ParseHidden(v); return err })},
			&cli.IntFlag{Name: "diffusion_steps", Value: 1000, Usage: "diffusion `T` the backbone was trained with", EnvVars: env("diffusion_steps"), Category: catModel,
				Action: intBetween("diffusion_steps", 1, 100000)},
			&cli.StringFlag{Name: "noise_schedule", Value: "linear", Usage: "linear or cosine", EnvVars: env("noise_schedule"), Category: catModel,
				Action: oneOf("noise_schedule", "linear", "cosine")},
			&cli.StringFlag{Name: "timestep_respacing", Usage: "sample a subset of the steps: ddimN (e.g. ddim50) or comma-separated section counts; empty: all", EnvVars: env("timestep_respacing"), Category: catModel},
			&cli.IntFlag{Name: "num_samples", Value: 12000, Usage: "cells to generate (per class); exactly this many rows are written", EnvVars: env("num_samples"), Category: catTrain,
				Action: intAtLeast("num_samples", 1)},
			&cli.IntFlag{Name: "batch_size", Value: 3000, Usage: "cells sampled at once (memory is bounded by one batch)", EnvVars: env("batch_size"), Category: catMemory,
				Action: intAtLeast("batch_size", 1)},
			&cli.BoolFlag{Name: "use_ddim", Usage: "DDIM instead of ancestral sampling (use with --timestep_respacing ddimN)", EnvVars: env("use_ddim"), Category: catTrain},
			&cli.Float64Flag{Name: "eta", Value: 0, Usage: "DDIM's η (0: deterministic)", EnvVars: env("eta"), Category: catTrain,
				Action: floatAtLeast("eta", 0, false)},
			&cli.BoolFlag{Name: "clip_denoised", Usage: "clamp the predicted x0 to [-1,1] (default False; True when guided, as classifier_sample.py)", EnvVars: env("clip_denoised"), Category: catTrain},
			&cli.Float64Flag{Name: "noise_weight", Value: diffusion.DefaultNoiseWeight, Usage: "ancestral noise exp(w·ln v_t) (0.5: σ_t = √v_t)", EnvVars: env("noise_weight"), Category: catTrain,
				Action: floatAtLeast("noise_weight", 0, true)},
			&cli.StringFlag{Name: "sample_dir", Value: "output/simulated_samples/open_problem", Usage: "output `PREFIX`: PREFIX.npz, PREFIX{k}.npz per class", EnvVars: env("sample_dir"), Category: catData},
			&cli.Uint64Flag{Name: "seed", Value: 1234, Usage: "random seed (batch i draws from a generator seeded from it and i)", EnvVars: env("seed"), Category: catTrain},
			&cli.StringFlag{Name: "precision", Value: "fp32", Usage: "fp32, or bf16 (backbone matrix products in bfloat16: CPUs with AVX512-BF16 or AMX, CUDA)", EnvVars: env("precision"), Category: catMemory,
				Action: oneOf("precision", "fp32", "bf16")},
			// Guidance.
			&cli.StringFlag{Name: "classifier_path", Usage: "classifier `FILE` for one condition or gradient interpolation", EnvVars: env("classifier_path"), Category: catGuide},
			&cli.StringFlag{Name: "classifier_path1", Usage: "first classifier `FILE` of two conditions", EnvVars: env("classifier_path1"), Category: catGuide},
			&cli.StringFlag{Name: "classifier_path2", Usage: "second classifier `FILE` of two conditions", EnvVars: env("classifier_path2"), Category: catGuide},
			&cli.StringFlag{Name: "cell_type", Usage: "target `CLASS`: an index 0..K-1 (as the reference) or a non-numeric name from the classifier's classes.txt; all; or two (A,B) for two conditions or interpolation", EnvVars: env("cell_type"), Category: catGuide},
			&cli.Float64Flag{Name: "classifier_scale", Value: 2, Usage: "guidance scale of one condition", EnvVars: env("classifier_scale"), Category: catGuide,
				Action: finite("classifier_scale")},
			&cli.StringFlag{Name: "weight", Value: "10,10", Usage: "two conditions or interpolation: `W1,W2`, scales W·2/10 (interpolation: 10-i,i)", EnvVars: env("weight"), Category: catGuide,
				Action: parsedBy("weight", "two non-negative numbers separated by a comma, e.g. 7,3", func(v string) error { _, err := parsePair(v); return err })},
			&cli.Float64Flag{Name: "classifier_scale1", Usage: "the first condition's scale", DefaultText: "W1·2/10", EnvVars: env("classifier_scale1"), Category: catGuide,
				Action: finite("classifier_scale1")},
			&cli.Float64Flag{Name: "classifier_scale2", Usage: "the second condition's scale", DefaultText: "W2·2/10", EnvVars: env("classifier_scale2"), Category: catGuide,
				Action: finite("classifier_scale2")},
			&cli.IntFlag{Name: "start_guide_steps", Value: diffusion.DefaultGuidanceStart, Usage: "guide only while the step is below `T` (0: never)", EnvVars: env("start_guide_steps"), Category: catGuide,
				Action: intAtLeast("start_guide_steps", 0)},
			&cli.BoolFlag{Name: "filter", Usage: "keep only cells the classifier assigns to the target at t = 0 (interpolation: probabilities within ±0.15 of W/10)", EnvVars: env("filter"), Category: catGuide},
			&cli.IntFlag{Name: "filter_max_batches", Value: 100, Usage: "with --filter, give up after `N` batches per class", EnvVars: env("filter_max_batches"), Category: catGuide,
				Action: intAtLeast("filter_max_batches", 1)},
			&cli.StringFlag{Name: "init_cell_path", Usage: "interpolation: real cells (.h5ad of raw counts, preprocessed as train-ae) to start from", EnvVars: env("init_cell_path"), Category: catGuide},
			&cli.IntFlag{Name: "init_time", Value: 600, Usage: "interpolation: noise level `T` of the real cells", EnvVars: env("init_time"), Category: catGuide,
				Action: intAtLeast("init_time", 0)},
			&cli.IntFlag{Name: "interp_start", Value: -1, Usage: "interpolation: step the loop starts at (-1: init_time, SDEdit; 999: the reference, which feeds them as x_999)", EnvVars: env("interp_start"), Category: catGuide,
				Action: intAtLeast("interp_start", -1)},
			&cli.StringFlag{Name: "label_key", Value: "celltype", Usage: "obs `COLUMN`: the init cells' labels; the condition column of the .h5ad", EnvVars: env("label_key"), Category: catData},
			&cli.BoolFlag{Name: "use_raw", Usage: "read raw/X of --init_cell_path", EnvVars: env("use_raw"), Category: catData},
			// Decoding.
			&cli.StringFlag{Name: "vae_path", Aliases: []string{"ae_dir"}, Usage: "autoencoder `FILE`: also decode the cells to PREFIX[k].h5ad (and encode --init_cell_path)", EnvVars: env("vae_path"), Category: catModel},
			&cli.IntFlag{Name: "num_gene", Usage: "expected gene count of the autoencoder (the reference's flag; 0: from the checkpoint)", EnvVars: env("num_gene"), Category: catModel,
				Action: intAtLeast("num_gene", 0)},
			&cli.IntFlag{Name: "num_class", Usage: "expected class count of --classifier_path (the reference's flag; 0: from the checkpoint)", EnvVars: env("num_class"), Category: catGuide,
				Action: intAtLeast("num_class", 0)},
			&cli.IntFlag{Name: "num_class1", Usage: "expected class count of --classifier_path1 (0: from the checkpoint)", EnvVars: env("num_class1"), Category: catGuide,
				Action: intAtLeast("num_class1", 0)},
			&cli.IntFlag{Name: "num_class2", Usage: "expected class count of --classifier_path2 (0: from the checkpoint)", EnvVars: env("num_class2"), Category: catGuide,
				Action: intAtLeast("num_class2", 0)},
			&cli.StringFlag{Name: "genes", Usage: "gene names `FILE` for the .h5ad (default: genes.txt next to --vae_path)", EnvVars: env("genes"), Category: catData},
			&cli.StringFlag{Name: "bn_mode", Value: "dataset", Usage: "autoencoder BatchNorm statistics: dataset (of all cells of one output, as the reference) or running", EnvVars: env("bn_mode"), Category: catModel,
				Action: oneOf("bn_mode", "dataset", "running")},
			&cli.StringFlag{Name: "bn_ref", Usage: "latents `FILE` (.npz with cell_gen, e.g. encode's output for the training data) that join every output's latents in the decoder's dataset BatchNorm statistics: a one-label output (--cell_type) then keeps what sets its label apart, as when the reference decodes all generated cells together", EnvVars: env("bn_ref"), Category: catModel},
			&cli.IntFlag{Name: "chunk_rows", Value: 1024, Usage: "cells decoded at once (memory, not results, depends on it)", EnvVars: env("chunk_rows"), Category: catMemory,
				Action: intAtLeast("chunk_rows", 1)},
		}, memoryFlags("the folder of --sample_dir"), runtimeFlags(), distFlags()),
		Action: runSample,
	}
}

const catGuide = "Guidance"

// sampleMode is what sample generates.
type sampleMode int

const (
	modeUncond sampleMode = iota
	modeClass
	modeMulti
	modeInterp
)

// samplePlan is the validated command line.
type samplePlan struct {
	mode         sampleMode
	diff         diffusion.Config
	numSamples   int
	batchSize    int
	ddim         bool
	eta          float64
	clip         bool
	noiseWeight  float64
	seed         uint64
	bf16         bool
	prefix       string
	guideStart   int
	scale        float64
	scales       [2]float64
	weights      [2]float64
	cellTypes    []string // tokens of --cell_type
	filter       bool
	maxBatches   int
	initTime     int
	interpStart  int
	hidden       []int64
	hiddenIsSet  bool
	clsPaths     []string
	clsFlags     []string // the flags naming clsPaths
	decode       bool
	genesPath    string
	decodeBNMode string
	bnRef        string // --bn_ref
}

// planSample checks every flag that needs no file: usage errors only.
func planSample(c *cli.Context) (*samplePlan, error) {
	p := &samplePlan{
		diff:       diffusion.Config{Steps: c.Int("diffusion_steps"), Schedule: c.String("noise_schedule"), Respacing: c.String("timestep_respacing")},
		numSamples: c.Int("num_samples"), batchSize: c.Int("batch_size"),
		ddim: c.Bool("use_ddim"), eta: c.Float64("eta"), clip: c.Bool("clip_denoised"), noiseWeight: c.Float64("noise_weight"),
		seed: c.Uint64("seed"), prefix: c.String("sample_dir"), guideStart: c.Int("start_guide_steps"),
		scale: c.Float64("classifier_scale"), filter: c.Bool("filter"), maxBatches: c.Int("filter_max_batches"),
		initTime: c.Int("init_time"), interpStart: c.Int("interp_start"), hiddenIsSet: c.IsSet("hidden_dim"),
		decode: c.String("vae_path") != "", decodeBNMode: c.String("bn_mode"), bnRef: c.String("bn_ref"),
	}
	// Single values are checked by the flags' validators (cli.go); what is
	// left are the combinations.
	switch {
	case c.String("model_path") == "":
		return nil, usagef("--model_path FILE is required: the backbone checkpoint (train's modelNNNNNN.pt)")
	case p.prefix == "":
		return nil, usagef("--sample_dir PREFIX is required: the output files are PREFIX.npz or PREFIX{k}.npz")
	case p.eta != 0 && !p.ddim:
		return nil, usagef("--eta %v is DDIM's η: give --use_ddim True with it", p.eta)
	case p.bnRef != "" && !p.decode:
		return nil, usagef("--bn_ref only joins the BatchNorm statistics of the decode: give --vae_path with it")
	case p.bnRef != "" && p.decodeBNMode != "dataset":
		return nil, usagef("--bn_ref joins the dataset BatchNorm statistics: it cannot be combined with --bn_mode %s", p.decodeBNMode)
	}
	if _, err := diffusion.NewSchedule(p.diff); err != nil {
		if p.diff.Respacing != "" {
			return nil, usagef("--timestep_respacing %q: %v", p.diff.Respacing, err)
		}
		return nil, usageError{err}
	}
	p.bf16 = c.String("precision") == "bf16"
	var err error
	if p.hidden, err = cellunet.ParseHidden(c.String("hidden_dim")); err != nil {
		return nil, usageError{err}
	}
	if c.String("cell_type") != "" {
		p.cellTypes = strings.Split(c.String("cell_type"), ",")
		for i := range p.cellTypes {
			p.cellTypes[i] = strings.TrimSpace(p.cellTypes[i])
		}
	}
	cls, cls1, cls2 := c.String("classifier_path"), c.String("classifier_path1"), c.String("classifier_path2")
	switch {
	case cls1 != "" || cls2 != "":
		p.mode = modeMulti
		if cls1 == "" || cls2 == "" {
			return nil, usagef("two conditions need both --classifier_path1 and --classifier_path2")
		}
		if cls != "" || c.String("init_cell_path") != "" {
			return nil, usagef("--classifier_path1/2 (two conditions) cannot be combined with --classifier_path or --init_cell_path")
		}
		p.clsPaths, p.clsFlags = []string{cls1, cls2}, []string{"classifier_path1", "classifier_path2"}
	case c.String("init_cell_path") != "":
		p.mode = modeInterp
		if cls == "" {
			return nil, usagef("gradient interpolation (--init_cell_path) needs --classifier_path")
		}
		if !p.decode {
			return nil, usagef("gradient interpolation (--init_cell_path) needs --vae_path to encode the real cells")
		}
		p.clsPaths, p.clsFlags = []string{cls}, []string{"classifier_path"}
	case cls != "":
		p.mode = modeClass
		p.clsPaths, p.clsFlags = []string{cls}, []string{"classifier_path"}
	}
	switch p.mode {
	case modeUncond:
		if len(p.cellTypes) > 0 || p.filter {
			return nil, usagef("--cell_type and --filter need a classifier (--classifier_path)")
		}
	case modeClass:
		if len(p.cellTypes) != 1 {
			return nil, usagef("--cell_type: give one class (an index, a name from classes.txt, or all) for --classifier_path, got %q", c.String("cell_type"))
		}
	case modeMulti, modeInterp:
		if len(p.cellTypes) != 2 || slices.Contains(p.cellTypes, "all") {
			return nil, usagef("--cell_type: give two classes A,B for two conditions or interpolation, got %q", c.String("cell_type"))
		}
		w, err := parsePair(c.String("weight"))
		if err != nil {
			return nil, usagef("--weight %q: %v", c.String("weight"), err)
		}
		p.weights = w
		p.scales = [2]float64{w[0] * 2 / 10, w[1] * 2 / 10}
		if c.IsSet("classifier_scale1") {
			p.scales[0] = c.Float64("classifier_scale1")
		}
		if c.IsSet("classifier_scale2") {
			p.scales[1] = c.Float64("classifier_scale2")
		}
	}
	if p.mode == modeInterp {
		if p.initTime < 0 || p.initTime >= p.diff.Steps {
			return nil, usagef("--init_time must be in 0..%d, got %d", p.diff.Steps-1, p.initTime)
		}
		if p.interpStart == -1 {
			p.interpStart = p.initTime
		}
		if p.interpStart < p.initTime || p.interpStart >= p.diff.Steps {
			return nil, usagef("--interp_start must be -1 or in %d..%d (init_time..T-1), got %d", p.initTime, p.diff.Steps-1, p.interpStart)
		}
	}
	// classifier_sample.py's default clip_denoised is True.
	if p.mode != modeUncond && !c.IsSet("clip_denoised") {
		p.clip = true
	}
	p.genesPath = c.String("genes")
	if p.genesPath == "" && p.decode {
		p.genesPath = filepath.Join(filepath.Dir(c.String("vae_path")), "genes.txt")
	}
	return p, nil
}

// parsePair parses "a,b" into two finite non-negative numbers.
func parsePair(s string) ([2]float64, error) {
	f := strings.Split(s, ",")
	if len(f) != 2 {
		return [2]float64{}, fmt.Errorf("want two numbers separated by a comma")
	}
	var out [2]float64
	for i := range f {
		v, err := strconv.ParseFloat(strings.TrimSpace(f[i]), 64)
		if err != nil || v < 0 || math.IsInf(v, 0) {
			return out, fmt.Errorf("%q is not a non-negative number", f[i])
		}
		out[i] = v
	}
	return out, nil
}

var (
	emaName   = regexp.MustCompile(`^ema_(.+)_(\d+)\.pt$`)
	modelFile = regexp.MustCompile(`^model(\d+)\.pt$`)
)

// backboneWeights picks the file to sample from: the EMA file next to a
// modelNNNNNN.pt when asked and present.
func backboneWeights(path string, useEMA bool, rate string, out func(string)) (string, error) {
	if _, err := os.Stat(path); err != nil {
		return "", dataErr(fmt.Errorf("--model_path %s: %w", path, err))
	}
	base := filepath.Base(path)
	if !useEMA || emaName.MatchString(base) {
		return path, nil
	}
	m := modelFile.FindStringSubmatch(base)
	if m == nil {
		out(fmt.Sprintf("note: %s is not named modelNNNNNN.pt, so no EMA file is looked for; sampling from it as is", path))
		return path, nil
	}
	dir := filepath.Dir(path)
	if rate != "" {
		p := filepath.Join(dir, fmt.Sprintf("ema_%s_%s.pt", rate, m[1]))
		if _, err := os.Stat(p); err != nil {
			return "", dataErr(fmt.Errorf("--ema_rate %s: no %s next to --model_path", rate, filepath.Base(p)))
		}
		return p, nil
	}
	found, _ := filepath.Glob(filepath.Join(dir, "ema_*_"+m[1]+".pt"))
	switch len(found) {
	case 0:
		out(fmt.Sprintf("note: no EMA file ema_RATE_%s.pt next to %s: sampling from the raw weights", m[1], path))
		return path, nil
	case 1:
		return found[0], nil
	}
	var rates []string
	for _, f := range found {
		rates = append(rates, emaName.FindStringSubmatch(filepath.Base(f))[1])
	}
	return "", usagef("several EMA files next to --model_path (rates %s): choose one with --ema_rate", strings.Join(rates, ", "))
}

// guide is a loaded classifier with its class names (classes.txt next to it).
type guide struct {
	path    string
	model   *classifier.Loaded
	classes []string
}

func loadGuide(flag, path string, dev ct.Device) (*guide, error) {
	m, err := classifier.Load(path, dev)
	if err != nil {
		return nil, flagErr(flag, err)
	}
	g := &guide{path: path, model: m}
	if names, err := readLines(filepath.Join(filepath.Dir(path), "classes.txt")); err == nil {
		if int64(len(names)) == m.Config().NumClass {
			g.classes = names
		}
	}
	return g, nil
}

// class resolves a --cell_type token (an index or a class name) for g.
func (g *guide) class(tok string) (int64, error) {
	k := g.model.Config().NumClass
	if v, err := strconv.ParseInt(tok, 10, 64); err == nil {
		if v < 0 || v >= k {
			return 0, usagef("--cell_type %d: the classifier %s has %d classes (0..%d)", v, g.path, k, k-1)
		}
		return v, nil
	}
	if i := slices.Index(g.classes, tok); i >= 0 {
		return int64(i), nil
	}
	if g.classes == nil {
		return 0, usagef("--cell_type %q: not an index, and there is no classes.txt next to %s to look names up", tok, g.path)
	}
	return 0, usagef("--cell_type %q: no such class in %s (classes: %s)", tok, filepath.Join(filepath.Dir(g.path), "classes.txt"), strings.Join(g.classes, ", "))
}

func (g *guide) name(k int64) string {
	if int(k) < len(g.classes) {
		return g.classes[k]
	}
	return strconv.FormatInt(k, 10)
}

// job is one output: a condition, its files and its filter.
type job struct {
	cond generate.Condition
	// classes are the categories of the .h5ad's condition column (nil:
	// unconditional) and labelID this output's category.
	classes []string
	labelID int64
	npzPath string
	filter  generate.Filter
}

func runSample(c *cli.Context) error {
	// Flags, input files and gene names are checked before libtorch starts;
	// models and data are loaded and checked before anything is written.
	plan, err := planSample(c)
	if err != nil {
		return err
	}
	// Under a launcher (torchrun, srun, a PyTorchJob) every process samples
	// its share of the batches and rank 0 writes them; --device cuda
	// becomes this process's GPU.
	dr, err := newDistRun(c, 0)
	if err != nil {
		return err
	}
	raw := io.Writer(c.App.Writer)
	out := dr.logOut(raw) // rank 0 logs; the other ranks print memory lines and errors
	say := func(s string) { fmt.Fprintln(out, s) }
	weights, err := backboneWeights(c.String("model_path"), c.Bool("use_ema"), c.String("ema_rate"), say)
	if err != nil {
		return err
	}
	if err := checkSampleInputs(c, plan, dr.root()); err != nil {
		return err
	}
	var genes []string
	if plan.decode {
		if genes, err = sampleGenes(c, plan); err != nil {
			return err
		}
	}
	dev, err := setup(c)
	if err != nil {
		return err
	}
	printHeader(out)
	if plan.bf16 && !dev.IsCUDA() && !cpuHasBF16() {
		say("warning: this CPU has neither AVX512-BF16 nor AMX: bfloat16 matrix products are emulated and slower than fp32")
	}
	// On a terminal a progress bar (sampling steps) runs between the lines.
	prog := newProgress(out, "sample", 0)
	defer prog.done()
	out = prog
	mem, err := newMemory(c, dev, memoryRun{batchSize: plan.batchSize, bf16: plan.bf16, command: "sample",
		unavailable: []string{"--microbatch", "--use_fp16"}, out: dr.memWriter(out, raw), rank: dr.world.Rank})
	if err != nil {
		return err
	}
	defer mem.close()
	return dr.result(mem.guard(func() error { return sampleRun(c, plan, weights, genes, dev, mem, prog, dr) }))
}

// checkSampleInputs checks that every input file the flags name exists and
// that the output prefix can be written, before anything is loaded. Only
// rank 0 (root) decodes, so only it needs --bn_ref.
func checkSampleInputs(c *cli.Context, plan *samplePlan, root bool) error {
	inputs := [][2]string{{"vae_path", c.String("vae_path")}, {"init_cell_path", c.String("init_cell_path")}, {"genes", c.String("genes")}}
	if root {
		inputs = append(inputs, [2]string{"bn_ref", c.String("bn_ref")})
	}
	for i, p := range plan.clsPaths {
		inputs = append(inputs, [2]string{plan.clsFlags[i], p})
	}
	for _, in := range inputs {
		if in[1] == "" {
			continue
		}
		st, err := os.Stat(in[1])
		if err != nil {
			return flagErr(in[0], err)
		}
		if st.IsDir() && in[0] != "init_cell_path" { // a 10x MEX folder is a valid init_cell_path
			return flagErr(in[0], fmt.Errorf("%s is a directory; want a file", in[1]))
		}
	}
	dir := filepath.Dir(plan.prefix)
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return usagef("--sample_dir %s: %s is a file, not a folder", plan.prefix, dir)
	}
	if st, err := os.Stat(plan.prefix + ".npz"); err == nil && st.IsDir() {
		return usagef("--sample_dir %s: %s.npz is a directory", plan.prefix, plan.prefix)
	}
	return nil
}

// sampleGenes reads the gene names of the decoded .h5ad: --genes, or the
// genes.txt that train-ae wrote next to --vae_path.
func sampleGenes(c *cli.Context, plan *samplePlan) ([]string, error) {
	genes, err := readLines(plan.genesPath)
	switch {
	case err != nil && c.String("genes") != "":
		return nil, flagErr("genes", err)
	case err != nil:
		return nil, flagErr("vae_path", fmt.Errorf("no gene names for the .h5ad: %w (train-ae writes genes.txt next to its checkpoints; or give --genes FILE, one name per line)", err))
	case len(genes) == 0:
		return nil, dataErr(fmt.Errorf("%s lists no genes", plan.genesPath))
	}
	if n := c.Int("num_gene"); n != 0 && n != len(genes) {
		return nil, dataErr(fmt.Errorf("--num_gene %d but %s lists %d genes", n, plan.genesPath, len(genes)))
	}
	return genes, nil
}

// sampleRun loads the models (once for every output), checks them against
// each other and the flags, then starts the memory files and samples every
// output.
func sampleRun(c *cli.Context, plan *samplePlan, weights string, genes []string, dev ct.Device, mem *memory, prog *progress, dr *distRun) error {
	say := func(s string) { fmt.Fprintln(prog, s) }
	bb, err := cellunet.Load(weights, dev)
	if err != nil {
		return flagErr("model_path", err)
	}
	defer bb.Close()
	var backbone diffusion.Model = bb.Model
	if plan.bf16 {
		mx, err := cellunet.NewMixed(bb.Model, ct.BFloat16)
		if err != nil {
			return err
		}
		defer mx.Close()
		backbone = mx
	}
	if bc := bb.Config(); plan.hiddenIsSet && fmt.Sprint(bc.Hidden) != fmt.Sprint(plan.hidden) {
		return flagErr("model_path", fmt.Errorf("%s has hidden widths %v but --hidden_dim is %v", weights, bc.Hidden, plan.hidden))
	}
	d, err := diffusion.New(plan.diff, dev)
	if err != nil {
		return err
	}
	defer d.Close()
	var guides []*guide
	for i, p := range plan.clsPaths {
		flag := plan.clsFlags[i]
		g, err := loadGuide(flag, p, dev)
		if err != nil {
			return err
		}
		defer g.model.Close()
		num := "num_class"
		if plan.mode == modeMulti {
			num = fmt.Sprintf("num_class%d", i+1)
		}
		if k := c.Int(num); k != 0 && int64(k) != g.model.Config().NumClass {
			return dataErr(fmt.Errorf("--%s %d but the classifier %s has %d classes", num, k, p, g.model.Config().NumClass))
		}
		if g.model.Config().InputDim != bb.Config().InputDim {
			return flagErr(flag, fmt.Errorf("%s takes %d-d latents, the backbone %s makes %d-d ones", p, g.model.Config().InputDim, weights, bb.Config().InputDim))
		}
		guides = append(guides, g)
	}
	jobs, err := sampleJobs(plan, guides)
	if err != nil {
		return err
	}
	var ae *autoencoder.Model
	if plan.decode {
		if ae, err = autoencoder.Load(c.String("vae_path"), dev, int64(len(genes))); err != nil {
			return flagErr("vae_path", fmt.Errorf("%w (gene names from %s)", err, plan.genesPath))
		}
		defer ae.Close()
		if lat := ae.Config().Latent; lat != bb.Config().InputDim {
			return flagErr("vae_path", fmt.Errorf("%s has %d-d latents, the backbone %s makes %d-d ones", c.String("vae_path"), lat, weights, bb.Config().InputDim))
		}
	}
	var bnRef []float32
	if plan.bnRef != "" && dr.root() { // only rank 0 decodes
		l, err := npz.ReadLatents(plan.bnRef)
		if err != nil {
			return flagErr("bn_ref", err)
		}
		if lat := int(ae.Config().Latent); l.Dim != lat || l.N == 0 {
			return flagErr("bn_ref", fmt.Errorf("%s holds %d latents of width %d; want at least one of width %d (the autoencoder %s)", plan.bnRef, l.N, l.Dim, lat, c.String("vae_path")))
		}
		bnRef = l.Data
	}
	if plan.mode == modeInterp {
		// The real cells of class A, encoded: the data is read and checked
		// here, before any output is written.
		initLat, err := encodeInitCells(c, guides[0], jobs[0].cond.Terms[0].Class, genes, ae, dev)
		if err != nil {
			return err
		}
		defer initLat.Free()
		ni := generate.IndexAtOrBelow(d, plan.initTime)
		si := generate.IndexAtOrBelow(d, plan.interpStart)
		jobs[0].cond.Start = &generate.Start{Latents: initLat, NoiseIndex: ni, StartIndex: si}
		say(fmt.Sprintf("interpolation: start from %d real cells noised to step %d; the loop starts at step %d",
			initLat.Dim(0), d.Schedule().TimestepMap[ni], d.Schedule().TimestepMap[si]))
	}

	gcfg := generate.Config{Diffusion: d, Model: backbone, DDIM: plan.ddim, Eta: plan.eta, NoiseWeight: plan.noiseWeight,
		ClipDenoised: plan.clip, GuidanceStart: plan.guideStart, Seed: plan.seed, Dim: bb.Config().InputDim}
	if plan.guideStart == 0 { // guide at no step (the library reads 0 as its default, 500)
		for i := range jobs {
			jobs[i].cond.Terms = nil
		}
	}
	algo := fmt.Sprintf("ancestral (noise weight %g)", plan.noiseWeight)
	if plan.ddim {
		algo = fmt.Sprintf("DDIM (η %g)", plan.eta)
	}
	say(fmt.Sprintf("sampling %d cells per output in batches of %d: %s, %d steps, %s weights, precision %s, seed %d; backbone %s",
		plan.numSamples, plan.batchSize, algo, d.NumSteps(), map[bool]string{true: "EMA", false: "raw"}[emaName.MatchString(filepath.Base(weights))],
		c.String("precision"), plan.seed, weights))

	comm, err := dr.join(prog, dev, 0)
	if err != nil {
		return err
	}
	defer comm.Close()
	if comm != nil {
		// A round deals one batch to every process and gathers them.
		if err := comm.Reserve(int64(comm.Size() * roundSlot(plan.batchSize, int(gcfg.Dim)))); err != nil {
			return err
		}
	}
	// Everything is valid and loaded, the processes joined: only now are
	// files created (rank 0's; the other ranks' only an out-of-memory report
	// of their own).
	if err := mem.start(filepath.Dir(plan.prefix), false); err != nil {
		return err
	}
	prog.setTotal(len(jobs) * ceilDiv(ceilDiv(plan.numSamples, plan.batchSize), dr.world.Size) * d.NumSteps())
	r := &sampler{c: c, out: prog, plan: plan, gcfg: gcfg, mem: mem, prog: prog, genes: genes, ae: ae, bnRef: bnRef, comm: comm}
	for _, j := range jobs {
		if err := r.run(j); err != nil {
			return err
		}
	}
	return nil
}

// sampleJobs lists the outputs of the plan.
func sampleJobs(p *samplePlan, guides []*guide) ([]job, error) {
	switch p.mode {
	case modeUncond:
		return []job{{cond: generate.Condition{Key: "uncond"}, npzPath: p.prefix + ".npz"}}, nil
	case modeClass:
		g := guides[0]
		var ks []int64
		if p.cellTypes[0] == "all" {
			for k := range g.model.Config().NumClass {
				ks = append(ks, k)
			}
		} else {
			k, err := g.class(p.cellTypes[0])
			if err != nil {
				return nil, err
			}
			ks = []int64{k}
		}
		var jobs []job
		for _, k := range ks {
			term := generate.Term{Classifier: g.model, Class: k, Scale: p.scale}
			names := g.classes
			if names == nil {
				for i := range g.model.Config().NumClass {
					names = append(names, strconv.FormatInt(i, 10))
				}
			}
			j := job{cond: generate.Condition{Key: fmt.Sprintf("class=%d", k), Terms: []generate.Term{term}},
				classes: names, labelID: k, npzPath: fmt.Sprintf("%s%d.npz", p.prefix, k)}
			if p.filter {
				j.filter = generate.ArgmaxFilter(term)
			}
			jobs = append(jobs, j)
		}
		return jobs, nil
	case modeMulti:
		k1, err := guides[0].class(p.cellTypes[0])
		if err != nil {
			return nil, err
		}
		k2, err := guides[1].class(p.cellTypes[1])
		if err != nil {
			return nil, err
		}
		terms := []generate.Term{{Classifier: guides[0].model, Class: k1, Scale: p.scales[0]}, {Classifier: guides[1].model, Class: k2, Scale: p.scales[1]}}
		name := guides[0].name(k1) + " + " + guides[1].name(k2)
		j := job{cond: generate.Condition{Key: fmt.Sprintf("multi=%d,%d", k1, k2), Terms: terms},
			classes: []string{name}, npzPath: fmt.Sprintf("%s%d_%d.npz", p.prefix, k1, k2)}
		if p.filter {
			j.filter = generate.ArgmaxFilter(terms...)
		}
		return []job{j}, nil
	default: // modeInterp
		g := guides[0]
		a, err := g.class(p.cellTypes[0])
		if err != nil {
			return nil, err
		}
		b, err := g.class(p.cellTypes[1])
		if err != nil {
			return nil, err
		}
		terms := []generate.Term{{Classifier: g.model, Class: a, Scale: p.scales[0]}, {Classifier: g.model, Class: b, Scale: p.scales[1]}}
		name := fmt.Sprintf("%s → %s (weights %g:%g)", g.name(a), g.name(b), p.weights[0], p.weights[1])
		j := job{cond: generate.Condition{Key: fmt.Sprintf("inter=%d,%d", a, b), Terms: terms}, classes: []string{name},
			npzPath: fmt.Sprintf("%s%d_%d_w%g_%g.npz", p.prefix, a, b, p.weights[0], p.weights[1])}
		if p.filter {
			j.filter = generate.WindowFilter(g.model, [2]int64{a, b}, [2]float64{p.weights[0] / 10, p.weights[1] / 10}, 0.15)
		}
		return []job{j}, nil
	}
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// errSampleInterrupted stops sampling at a step boundary on Ctrl-C.
var errSampleInterrupted = errors.New("interrupted")

// sampler runs the jobs.
type sampler struct {
	c     *cli.Context
	out   io.Writer
	plan  *samplePlan
	gcfg  generate.Config
	mem   *memory
	prog  *progress
	genes []string
	ae    *autoencoder.Model // nil without --vae_path
	bnRef []float32          // --bn_ref latents, row-major [N,D]; nil without
	steps int                // sampling steps done (the memory monitor's step counter)
	comm  *dist.Comm         // nil: a single process
}

// run samples one output: batches stream into the .npz (renamed into place
// when complete), then the decoded .h5ad if asked. In a data-parallel run
// the batches are computed a round at a time, one per process, and rank 0
// writes them in order: the output is the single process's, bit for bit
// (a batch depends only on the seed, the output and its index).
func (r *sampler) run(j job) error {
	p := r.plan
	root := r.comm.IsRoot()
	dim := int(r.gcfg.Dim)
	var w *npz.Float32Writer
	var kept []float32 // host copy for decoding (numSamples·D floats)
	if root {
		if err := os.MkdirAll(filepath.Dir(j.npzPath), 0o755); err != nil {
			return err
		}
		var err error
		if w, err = npz.CreateFloat32(j.npzPath, npz.KeyCellGen, p.numSamples, dim); err != nil {
			return err
		}
		defer w.Abort() // no-op after a successful Close
		if p.decode {
			kept = make([]float32, 0, p.numSamples*dim)
		}
	}
	limit := ceilDiv(p.numSamples, p.batchSize) // batches that may be drawn
	if j.filter != nil {
		limit = p.maxBatches
	}
	have, tried := 0, 0
	start := time.Now()
	var queue []sampledBatch
	for i := 0; have < p.numSamples; i++ {
		if i >= limit { // only with --filter
			return dataErr(fmt.Errorf("%s: --filter kept %d of %d cells after %d batches of %d (raise --filter_max_batches or the guidance scale); nothing written",
				j.npzPath, have, p.numSamples, i, p.batchSize))
		}
		if len(queue) == 0 {
			var err error
			if r.comm == nil {
				var b sampledBatch
				b, err = r.sampleBatch(j, i)
				queue = []sampledBatch{b}
			} else {
				queue, err = r.sampleRound(j, i, limit)
			}
			if errors.Is(err, errSampleInterrupted) {
				return fmt.Errorf("interrupted while sampling %s: nothing written", j.npzPath)
			}
			if err != nil {
				return err
			}
		}
		b := queue[0]
		queue = queue[1:]
		n := 0
		for row := 0; row < b.rows && have < p.numSamples; row++ {
			if b.keep != nil && !b.keep[row] {
				continue
			}
			v := b.vals[row*dim : (row+1)*dim]
			if w != nil {
				if err := w.Write(v); err != nil {
					return err
				}
			}
			if p.decode && root {
				kept = append(kept, v...)
			}
			have++
			n++
		}
		tried += b.rows
		el := b.took.Seconds()
		what := fmt.Sprintf("%d cells", b.rows)
		if j.filter != nil {
			what = fmt.Sprintf("%d of %d cells kept by the filter", n, b.rows)
		}
		if r.comm != nil {
			what += fmt.Sprintf(" (rank %d)", b.rank)
		}
		fmt.Fprintf(r.out, "%s batch %d: %s in %.1fs (%.0f cells·steps/s); %d/%d written\n",
			j.npzPath, i, what, el, float64(b.rows)*float64(r.gcfg.Diffusion.NumSteps())/el, have, p.numSamples)
	}
	if !root {
		return nil
	}
	if err := w.Close(); err != nil {
		return err
	}
	el := time.Since(start).Seconds()
	fmt.Fprintf(r.out, "wrote %s: cell_gen [%d,%d] (%d cells sampled in %.1fs)\n", j.npzPath, p.numSamples, dim, tried, el)
	if p.decode {
		return r.decode(j, kept)
	}
	return nil
}

// sampledBatch is one batch of an output on the host.
type sampledBatch struct {
	rows int
	vals []float32 // [rows·D]
	keep []bool    // the filter's verdict per row; nil: every row
	took time.Duration
	rank int // the process that sampled it
}

// rowsOf is the number of cells batch i of output j samples: the batch
// size, or what remains of --num_samples (without a filter every cell is
// kept, so batch i starts at cell i·batch).
func (r *sampler) rowsOf(j job, i int) int {
	if j.filter != nil {
		return r.plan.batchSize
	}
	return min(r.plan.batchSize, r.plan.numSamples-i*r.plan.batchSize)
}

// sampleBatch samples batch i of output j here.
func (r *sampler) sampleBatch(j job, i int) (sampledBatch, error) {
	rows := r.rowsOf(j, i)
	t0 := time.Now()
	x, err := generate.Batch(r.gcfg, j.cond, i, int64(rows), r.onStep)
	if err != nil {
		return sampledBatch{}, err
	}
	vals, keep, err := r.collect(x, j.filter)
	x.Free()
	return sampledBatch{rows: rows, vals: vals, keep: keep, took: time.Since(t0), rank: r.comm.Rank()}, err
}

// roundSlot is the size of one process's slot in a sampling round's
// payload: a batch's B·D values, B filter verdicts and its sampling time.
func roundSlot(batch, dim int) int { return batch*(dim+1) + 1 }

// sampleRound deals batches first, first+1, ... (below limit) to the
// processes, one each (batch first+k on rank k), and gathers them on every
// rank in one agreement (dist.Comm.Exchange): slot k of the payload holds
// batch first+k's values [B·D], which rows the filter kept [B] and the
// seconds it took (roundSlot). Every rank sees every batch, so all count
// the written cells alike and stop at the same batch. A rank's failure or
// Ctrl-C stops every rank after the round.
func (r *sampler) sampleRound(j job, first, limit int) ([]sampledBatch, error) {
	size, rank := r.comm.Size(), r.comm.Rank()
	bs, dim := r.plan.batchSize, int(r.gcfg.Dim)
	slot := roundSlot(bs, dim)
	s := ct.NewScope()
	defer s.Close()
	var mine sampledBatch
	var lerr error
	if first+rank < limit {
		mine, lerr = r.sampleBatch(j, first+rank)
	}
	st := dist.StatusOf(lerr)
	if errors.Is(lerr, errSampleInterrupted) {
		st = dist.StopRequested
	}
	var payload *ct.Tensor
	if lerr == nil && mine.rows > 0 {
		host := make([]float32, slot)
		copy(host, mine.vals)
		for row := range mine.rows {
			if mine.keep == nil || mine.keep[row] {
				host[bs*dim+row] = 1
			}
		}
		host[slot-1] = float32(mine.took.Seconds())
		if lerr = ct.Try(func() {
			payload = s.Zeros(ct.On(r.gcfg.Diffusion.Device()), int64(size*slot))
			s.Adopt(payload.Narrow(0, int64(rank*slot), int64(slot))).Copy_(s.FromSlice(host, int64(slot)))
		}); lerr != nil {
			st, payload = dist.StatusOf(lerr), nil
		}
	}
	ag, err := r.comm.Exchange(s, st, payload, int64(size*slot))
	if err != nil {
		if lerr != nil && !errors.Is(lerr, errSampleInterrupted) {
			return nil, lerr // this rank's own failure comes first
		}
		return nil, fmt.Errorf("gathering the batches of the other processes: %w", r.comm.Explain(err))
	}
	if rk, pst, failed := ag.Failed(); failed {
		if lerr != nil {
			return nil, lerr
		}
		return nil, &dist.PeerError{Rank: rk, Status: pst}
	}
	if ag.StopRequested() {
		return nil, errSampleInterrupted
	}
	var all []float32
	if err := ct.Try(func() {
		h := ag.Payload
		if h.Device() != ct.CPU {
			h = s.Adopt(h.To(ct.CPU, 0))
		}
		all = h.Float32s()
	}); err != nil {
		return nil, err
	}
	var out []sampledBatch
	for k := range size {
		i := first + k
		if i >= limit {
			break
		}
		took := time.Duration(float64(all[(k+1)*slot-1]) * float64(time.Second))
		b := sampledBatch{rows: r.rowsOf(j, i), rank: k, took: took}
		b.vals = all[k*slot : k*slot+b.rows*dim]
		if j.filter != nil {
			b.keep = make([]bool, b.rows)
			for row := range b.rows {
				b.keep[row] = all[k*slot+bs*dim+row] == 1
			}
		}
		out = append(out, b)
	}
	return out, nil
}

// collect copies a batch to the host (float32) and applies the filter.
func (r *sampler) collect(x *ct.Tensor, f generate.Filter) ([]float32, []bool, error) {
	var vals []float32
	var keep []bool
	if f != nil {
		var err error
		if keep, err = f(x); err != nil {
			return nil, nil, err
		}
	}
	err := ct.Try(func() {
		h := x
		if x.Device() != ct.CPU {
			h = x.To(ct.CPU, 0)
			defer h.Free()
		}
		vals = h.Float32s()
	})
	return vals, keep, err
}

// onStep runs after every sampling step: memory monitor, progress bar,
// Ctrl-C.
func (r *sampler) onStep(p diffusion.Progress) error {
	r.mem.afterStep(r.steps)
	r.prog.step(r.steps)
	r.steps++
	if r.c.Context.Err() != nil {
		return errSampleInterrupted
	}
	return nil
}

// cpuHasBF16 reports whether the CPU has native bfloat16 dot products.
func cpuHasBF16() bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	s := string(b)
	return strings.Contains(s, " avx512_bf16") || strings.Contains(s, " amx_bf16")
}
