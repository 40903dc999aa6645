package scdata

import (
	"fmt"
	"strconv"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/hdf5"
)

// plainLabelKey is the label dataset of plain HDF5 files (scDCC layout).
const plainLabelKey = "Y"

// openPlain opens a plain HDF5 file with a dense /X (cells x genes).
func openPlain(f *hdf5.File, path string, opts OpenOptions) (*Dataset, error) {
	x, err := f.OpenDataset("X")
	if err != nil {
		return nil, err
	}
	if x.Rank() != 2 || (x.Class() != hdf5.ClassFloat && x.Class() != hdf5.ClassInt) {
		x.Close()
		return nil, fmt.Errorf("%s: /X: is %s, want a 2-D numeric array (cells x genes): %w", path, x.Describe(), ErrFormat)
	}
	sh := x.Shape()
	if sh[0] > maxDim || sh[1] > maxDim {
		x.Close()
		return nil, fmt.Errorf("%s: /X: shape %v too large: %w", path, sh, ErrFormat)
	}
	d := &Dataset{path: path, format: FormatPlainHDF5, matrix: "/X", rows: int(sh[0]), cols: int(sh[1]), file: f}
	d.src = &h5Dense{x: x, cols: d.cols}
	if d.genes, err = firstNames(f, path, []string{"gene_names", "var_names"}, d.cols); err != nil {
		return d, err
	}
	if d.genes == nil {
		d.genes = synthNames("gene", d.cols)
	}
	if d.barcodes, err = firstNames(f, path, []string{"barcodes", "obs_names", "cell_names"}, d.rows); err != nil {
		return d, err
	}
	if d.barcodes == nil {
		d.barcodes = synthNames("cell", d.rows)
	}
	if opts.NoLabels {
		return d, nil
	}
	key := opts.LabelKey
	if key == "" {
		key = plainLabelKey
	}
	if k, err := f.Kind(key); err != nil {
		return d, err
	} else if k != hdf5.KindDataset {
		kids, _ := f.Children()
		return d, fmt.Errorf("%s: /%s: no label dataset %q in this plain HDF5 file; root holds %s (choose the label dataset, or read no labels): %w",
			path, key, key, listOrNone(kids), ErrNoLabels)
	}
	if d.labels, err = readColumn(f, path, key, d.rows); err != nil {
		return d, err
	}
	if d.labelsNumeric, err = columnIsNumeric(f, key); err != nil {
		return d, err
	}
	d.labelKey = key
	return d, nil
}

// firstNames reads the first existing dataset of candidates (n strings).
func firstNames(f *hdf5.File, path string, candidates []string, n int) ([]string, error) {
	for _, c := range candidates {
		if k, err := f.Kind(c); err != nil {
			return nil, err
		} else if k == hdf5.KindDataset {
			return readValues(f, path, c, n)
		}
	}
	return nil, nil
}

func synthNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}
