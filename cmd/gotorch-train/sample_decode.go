package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// decode writes the .h5ad next to the job's .npz: ReLU(decoder(latents))
// in chunks under no-grad with the chosen BatchNorm statistics (dataset:
// those of all of this output's cells, as the reference's one-pass decode,
// joined by the --bn_ref latents when given),
// stored sparse (ReLU zeros are not stored), with the gene names and, for a
// conditional output, the condition as a categorical obs column.
func (r *sampler) decode(j job, lat []float32) error {
	path := strings.TrimSuffix(j.npzPath, ".npz") + ".h5ad"
	mode, _ := autoencoder.ParseBNMode(r.plan.decodeBNMode)
	opts := autoencoder.DefaultInferOptions()
	opts.Mode, opts.ChunkRows = mode, r.c.Int("chunk_rows")
	w, err := scdata.CreateH5AD(path, scdata.H5ADWriterOptions{Genes: r.genes, Classes: j.classes, LabelKey: r.c.String("label_key")})
	if err != nil {
		return err
	}
	start := time.Now()
	g := len(r.genes)
	var chunk scdata.CSR
	var labels []int64
	err = r.ae.DecodeAll(lat, r.bnRef, opts, true, func(_, n int, rows []float32) error {
		denseToCSR(rows, n, g, &chunk)
		labels = labels[:0]
		if j.classes != nil {
			for range n {
				labels = append(labels, j.labelID)
			}
		} else {
			labels = nil
		}
		return w.AppendRows(&chunk, labels, nil)
	})
	if err != nil {
		w.Abort()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	stats := mode.String() + " statistics"
	if r.bnRef != nil {
		stats += fmt.Sprintf(" with the %d latents of --bn_ref", len(r.bnRef)/int(r.gcfg.Dim))
	}
	fmt.Fprintf(r.out, "wrote %s: %d cells × %d genes decoded in %.1fs (BatchNorm: %s)\n", path, len(lat)/int(r.gcfg.Dim), g, time.Since(start).Seconds(), stats)
	return nil
}

// denseToCSR stores the non-zeros of a row-major [n,g] block in dst,
// reusing its slices.
func denseToCSR(rows []float32, n, g int, dst *scdata.CSR) {
	dst.Rows, dst.Cols = n, g
	dst.Indptr = append(dst.Indptr[:0], 0)
	dst.Indices, dst.Data = dst.Indices[:0], dst.Data[:0]
	for i := range n {
		for k, v := range rows[i*g : (i+1)*g] {
			if v != 0 {
				dst.Indices = append(dst.Indices, int32(k))
				dst.Data = append(dst.Data, v)
			}
		}
		dst.Indptr = append(dst.Indptr, int64(len(dst.Data)))
	}
}

// encodeInitCells reads --init_cell_path, preprocesses it as train-ae does,
// keeps the cells of class k (by name through the classifier's classes.txt,
// else by index into the file's sorted labels) and encodes them with the
// autoencoder: latents [M,D] on dev (the caller frees them). In dataset mode
// the BatchNorm statistics are those of these cells, as the reference's
// one-pass encode of its start_x.
func encodeInitCells(c *cli.Context, g *guide, k int64, genes []string, ae *autoencoder.Model, dev ct.Device) (*ct.Tensor, error) {
	path := c.String("init_cell_path")
	ds, err := scdata.Open(path, scdata.OpenOptions{LabelKey: c.String("label_key"), UseRaw: c.Bool("use_raw")})
	if err != nil {
		return nil, flagErr("init_cell_path", dataHint(err))
	}
	pp, err := scdata.Preprocess(ds, scdata.PreprocessConfig{})
	ds.Close()
	if err != nil {
		return nil, dataErr(fmt.Errorf("--init_cell_path: %w", err))
	}
	if !slices.Equal(pp.Genes, genes) {
		return nil, dataErr(fmt.Errorf("--init_cell_path %s: its %d genes after filtering are not the autoencoder's %d (genes.txt): give the data the autoencoder was trained on", path, len(pp.Genes), len(genes)))
	}
	id := int(k)
	if g.classes != nil {
		id = slices.Index(pp.Classes, g.classes[k])
		if id < 0 {
			return nil, dataErr(fmt.Errorf("--init_cell_path %s has no cells of class %q (--label_key %s; classes: %s)", path, g.classes[k], c.String("label_key"), strings.Join(pp.Classes, ", ")))
		}
	} else if id >= len(pp.Classes) {
		return nil, dataErr(fmt.Errorf("--init_cell_path %s has %d classes, no class %d", path, len(pp.Classes), k))
	}
	sub := &autoencoder.CSR{NumCols: pp.X.Cols, Indptr: []int64{0}}
	for i, y := range pp.Labels {
		if int(y) != id {
			continue
		}
		cols, vals := pp.X.Row(i)
		sub.Indices = append(sub.Indices, cols...)
		sub.Data = append(sub.Data, vals...)
		sub.Indptr = append(sub.Indptr, int64(len(sub.Data)))
		sub.NumRows++
	}
	if sub.NumRows == 0 {
		return nil, dataErr(fmt.Errorf("--init_cell_path %s has no cells of class %s", path, pp.Classes[id]))
	}
	mode, _ := autoencoder.ParseBNMode(c.String("bn_mode"))
	opts := autoencoder.DefaultInferOptions()
	opts.Mode, opts.ChunkRows = mode, c.Int("chunk_rows")
	lat, err := ae.EncodeAll(sub, opts)
	if err != nil {
		return nil, dataErr(fmt.Errorf("--init_cell_path: %w", err))
	}
	fmt.Fprintf(c.App.Writer, "init cells: %d cells of class %s from %s encoded\n", sub.NumRows, pp.Classes[id], path)
	d := int64(ae.Config().Latent)
	var t *ct.Tensor
	err = ct.Try(func() {
		h := ct.FromSlice(lat, int64(sub.NumRows), d)
		t = h
		if dev.IsCUDA() {
			t = h.To(dev, 0)
			h.Free()
		}
	})
	return t, err
}
