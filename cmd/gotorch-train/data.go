package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/atomicfile"
)

func dataFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "data_dir", Usage: "input `FILE`: .h5ad (raw counts), 10x .h5 or MEX folder, or plain HDF5 with X/Y", EnvVars: env("data_dir"), Category: catData},
		&cli.StringFlag{Name: "label_key", Usage: "`COLUMN` (dataset) with the cell labels (default: celltype in an .h5ad, as the reference hard-codes; Y in a plain HDF5 file)", EnvVars: env("label_key"), Category: catData},
		&cli.BoolFlag{Name: "no_labels", Usage: "read no labels (10x inputs carry none)", EnvVars: env("no_labels"), Category: catData},
		&cli.BoolFlag{Name: "use_raw", Usage: "read raw/X and raw/var of an .h5ad instead of X", EnvVars: env("use_raw"), Category: catData},
		&cli.StringFlag{Name: "genome", Usage: "`GENOME` of a 10x file with several", EnvVars: env("genome"), Category: catData},
	}
}

// needDataDir is the usage error of a command that reads --data_dir.
func needDataDir(c *cli.Context) error {
	if c.String("data_dir") == "" {
		return usagef("--data_dir FILE is required (an .h5ad of raw counts, a 10x .h5 or MEX folder, or a plain HDF5 file with X/Y)")
	}
	return nil
}

// loadData opens and preprocesses the --data_dir input exactly as the
// reference (filter genes/cells, unique names, labels, normalize_total,
// log1p), streaming rows; the result is a CSR matrix. Errors name the flag
// and the file, and the flag that fixes them.
func loadData(c *cli.Context, out io.Writer) (*scdata.Preprocessed, error) {
	if err := needDataDir(c); err != nil {
		return nil, err
	}
	path := c.String("data_dir")
	start := time.Now()
	ds, err := scdata.Open(path, scdata.OpenOptions{
		LabelKey: c.String("label_key"), NoLabels: c.Bool("no_labels"),
		UseRaw: c.Bool("use_raw"), Genome: c.String("genome"),
	})
	if err != nil {
		return nil, flagErr("data_dir", dataHint(err))
	}
	defer ds.Close()
	fmt.Fprintf(out, "data: %s (%s), %d cells × %d genes\n", path, ds.Format(), ds.NumCells(), ds.NumGenes())
	pp, err := scdata.Preprocess(ds, scdata.PreprocessConfig{})
	if err != nil {
		return nil, flagErr("data_dir", err)
	}
	fmt.Fprintf(out, "preprocessed in %.1fs: %d cells × %d genes kept (of %d × %d), %d non-zeros, %d classes\n",
		time.Since(start).Seconds(), pp.X.Rows, pp.X.Cols, pp.CellsIn, pp.GenesIn, pp.X.NNZ(), len(pp.Classes))
	// Preprocessing's transient buffers (the raw counts) are garbage now:
	// hand them back before the model and the activations are allocated.
	debug.FreeOSMemory()
	if pp.NonIntegerCounts > 0 {
		fmt.Fprintf(out, "warning: %d stored values are not whole numbers: is X already normalised? scDiffusion expects raw counts\n", pp.NonIntegerCounts)
	}
	return pp, nil
}

// dataHint adds the flag that resolves an input error.
func dataHint(err error) error {
	switch {
	case errors.Is(err, scdata.ErrNoLabels):
		return fmt.Errorf("%w; name the label column with --label_key, or read none with --no_labels", err)
	case errors.Is(err, scdata.ErrAmbiguous) && strings.Contains(err.Error(), "genome"):
		return fmt.Errorf("%w; choose one with --genome", err)
	}
	return err
}

// openVAE loads the --vae_path autoencoder (opened and parsed, the
// architecture read from its shapes) before any data is read, so a bad
// checkpoint fails at once. genes 0 skips the gene-count check.
func openVAE(c *cli.Context, dev ct.Device) (*autoencoder.Model, error) {
	path := c.String("vae_path")
	if path == "" {
		return nil, usagef("--vae_path FILE is required: the autoencoder checkpoint (train-ae's model_seed=S_step=N.pt, or a reference one)")
	}
	m, err := autoencoder.Load(path, dev, 0)
	if err != nil {
		return nil, flagErr("vae_path", fmt.Errorf("%w (want an autoencoder checkpoint: train-ae's model_seed=S_step=N.pt or the reference's, torch.save or .safetensors)", err))
	}
	if m.Config().Latent != 128 {
		lat := m.Config().Latent
		m.Close()
		return nil, flagErr("vae_path", fmt.Errorf("%s: latent width %d, Cell_Unet expects 128", path, lat))
	}
	return m, nil
}

// rowSource adapts the preprocessed CSR matrix (no copy) to the
// autoencoder's RowSource.
func rowSource(x *scdata.CSR) *autoencoder.CSR {
	return &autoencoder.CSR{NumRows: x.Rows, NumCols: x.Cols, Indptr: x.Indptr, Indices: x.Indices, Data: x.Data}
}

// releasingSource is a row source over the preprocessed matrix that lets
// the encoder drop the matrix after its last read (autoencoder.Releaser):
// the CSR arrays are released and the Go heap handed back to the system.
type releasingSource struct {
	*autoencoder.CSR
	pp *scdata.Preprocessed
}

func (r *releasingSource) Release() {
	r.pp.X = nil
	r.CSR.Indptr, r.CSR.Indices, r.CSR.Data = nil, nil, nil
	debug.FreeOSMemory()
}

// writeLines writes one name per line, atomically (genes.txt, classes.txt).
func writeLines(path string, lines []string) error {
	return atomicfile.WriteFile(path, 0o644, func(w io.Writer) error {
		_, err := io.WriteString(w, strings.Join(lines, "\n")+"\n")
		return err
	})
}

// readLines reads a genes.txt / classes.txt file.
func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, "\n"), nil
}

// checkGenes compares the data's kept genes with the genes.txt written next
// to an autoencoder checkpoint, when there is one.
func checkGenes(vaePath string, genes []string) error {
	path := filepath.Join(filepath.Dir(vaePath), "genes.txt")
	want, err := readLines(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return flagErr("vae_path", err)
	}
	if len(want) != len(genes) {
		return flagErr("vae_path", fmt.Errorf("%s lists %d genes but the preprocessed --data_dir has %d: the autoencoder was trained on other data", path, len(want), len(genes)))
	}
	for i := range want {
		if want[i] != genes[i] {
			return flagErr("vae_path", fmt.Errorf("%s: gene %d is %q but the --data_dir has %q: the autoencoder was trained on other genes", path, i, want[i], genes[i]))
		}
	}
	return nil
}
