package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

func encodeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "vae_path", Usage: "autoencoder checkpoint `FILE` (train-ae's model_seed=S_step=N.pt, or a reference one)", EnvVars: env("vae_path"), Category: catModel},
		&cli.StringFlag{Name: "bn_mode", Value: "dataset", Usage: "encoder BatchNorm statistics: dataset (exact statistics of all cells, as the reference) or running", EnvVars: env("bn_mode"), Category: catModel,
			Action: oneOf("bn_mode", "dataset", "running")},
		&cli.IntFlag{Name: "chunk_rows", Value: 1024, Usage: "cells encoded at once (memory, not results, depends on it)", EnvVars: env("chunk_rows"), Category: catMemory,
			Action: intAtLeast("chunk_rows", 1)},
	}
}

func newEncodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "encode",
		Usage: "encode cells to 128-d latents (.npz with key cell_gen, labels and classes)",
		Description: "Preprocesses --data_dir like the reference and encodes it with the autoencoder in chunks under\n" +
			"no-grad. The output is np.savez-compatible: cell_gen float32 [N,128], labels int64 [N], classes.\n\n" + exitStatusHelp,
		Flags: slices.Concat(dataFlags(), encodeFlags(), []cli.Flag{
			&cli.StringFlag{Name: "output", Value: "latents.npz", Usage: "output `FILE`", EnvVars: env("output"), Category: catData},
		}, runtimeFlags()),
		Action: runEncode,
	}
}

func runEncode(c *cli.Context) error {
	out := c.App.Writer
	if err := needDataDir(c); err != nil {
		return err
	}
	if c.String("vae_path") == "" {
		return usagef("--vae_path FILE is required: the autoencoder checkpoint (train-ae's model_seed=S_step=N.pt, or a reference one)")
	}
	output := c.String("output")
	if st, err := os.Stat(output); err == nil && st.IsDir() {
		return usagef("--output %s is a directory; want the .npz file to write", output)
	}
	dev, err := setup(c)
	if err != nil {
		return err
	}
	vae, err := openVAE(c, dev) // before the data: a bad checkpoint fails at once
	if err != nil {
		return err
	}
	pp, err := loadData(c, out)
	if err != nil {
		vae.Close()
		return err
	}
	lat, err := encodeLatents(c, out, dev, pp, vae)
	if err != nil {
		return err
	}
	n := len(lat) / 128
	if err := npz.WriteLatents(output, lat, n, 128, pp.Labels, pp.Classes); err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	fmt.Fprintf(out, "wrote %s: cell_gen [%d,128]\n", output, n)
	return nil
}

// encodeLatents encodes every preprocessed cell with the autoencoder m (from
// openVAE) and closes it (and empties the CUDA cache) before returning
// [N·128] latents.
func encodeLatents(c *cli.Context, out io.Writer, dev ct.Device, pp *scdata.Preprocessed, m *autoencoder.Model) ([]float32, error) {
	defer func() {
		m.Close()
		if dev.IsCUDA() {
			_ = ct.EmptyCache() // the encoder's cache is not needed for training
		}
	}()
	mode, err := autoencoder.ParseBNMode(c.String("bn_mode"))
	if err != nil || mode == autoencoder.Training {
		return nil, usagef("--bn_mode %q: want dataset or running", c.String("bn_mode"))
	}
	if err := checkGenes(c.String("vae_path"), pp.Genes); err != nil {
		return nil, err
	}
	if g := m.Config().Genes; g != int64(pp.X.Cols) {
		return nil, flagErr("vae_path", fmt.Errorf("%s was trained on %d genes but the preprocessed --data_dir has %d", c.String("vae_path"), g, pp.X.Cols))
	}
	opts := autoencoder.DefaultInferOptions()
	opts.Mode, opts.ChunkRows = mode, c.Int("chunk_rows")
	start := time.Now()
	n := pp.X.Rows
	// The matrix is not needed after encoding: the encoder may drop it
	// once it has read it (then pp.X is nil).
	lat, err := m.EncodeAll(&releasingSource{CSR: rowSource(pp.X), pp: pp}, opts)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "encoded %d cells in %.2fs (BatchNorm: %s statistics, chunks of %d)\n", n, time.Since(start).Seconds(), mode, opts.ChunkRows)
	return lat, nil
}
