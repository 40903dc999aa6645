package main

import (
	"fmt"
	"io"
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
		&cli.StringFlag{Name: "bn_mode", Value: "dataset", Usage: "encoder BatchNorm statistics: dataset (exact statistics of all cells, as the reference) or running", EnvVars: env("bn_mode"), Category: catModel},
		&cli.IntFlag{Name: "chunk_rows", Value: 1024, Usage: "cells encoded at once (memory, not results, depends on it)", EnvVars: env("chunk_rows"), Category: catMemory},
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
		Action: func(c *cli.Context) error {
			dev, err := setup(c)
			if err != nil {
				return err
			}
			pp, err := loadData(c, c.App.Writer)
			if err != nil {
				return err
			}
			lat, err := encodeLatents(c, c.App.Writer, dev, pp)
			if err != nil {
				return err
			}
			n := len(lat) / 128
			if err := npz.WriteLatents(c.String("output"), lat, n, 128, pp.Labels, pp.Classes); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "wrote %s: cell_gen [%d,128]\n", c.String("output"), n)
			return nil
		},
	}
}

// encodeLatents loads the autoencoder, encodes every preprocessed cell and
// releases the model (and the CUDA cache) before returning [N·128] latents.
func encodeLatents(c *cli.Context, out io.Writer, dev ct.Device, pp *scdata.Preprocessed) ([]float32, error) {
	path := c.String("vae_path")
	if path == "" {
		return nil, usagef("--vae_path is required")
	}
	mode, err := autoencoder.ParseBNMode(c.String("bn_mode"))
	if err != nil || mode == autoencoder.Training {
		return nil, usagef("--bn_mode %q: want dataset or running", c.String("bn_mode"))
	}
	if err := checkGenes(path, pp.Genes); err != nil {
		return nil, err
	}
	m, err := autoencoder.Load(path, dev, int64(pp.X.Cols))
	if err != nil {
		return nil, dataErr(err)
	}
	defer func() {
		m.Close()
		if dev.IsCUDA() {
			_ = ct.EmptyCache() // the encoder's cache is not needed for training
		}
	}()
	if m.Config().Latent != 128 {
		return nil, dataErr(fmt.Errorf("%s: latent width %d, Cell_Unet expects 128", path, m.Config().Latent))
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
