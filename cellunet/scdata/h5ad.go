package scdata

import (
	"fmt"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/hdf5"
)

// sparseEncoding returns "csr_matrix" or "csc_matrix" for an AnnData
// sparse group (encoding-type attribute, or the pre-0.7 h5sparse_format)
// and its shape attribute.
func sparseEncoding(f *hdf5.File, path, group string) (enc string, shape []int64, err error) {
	g, err := f.OpenGroup(group)
	if err != nil {
		return "", nil, err
	}
	defer g.Close()
	what := path + ": " + g.Path()
	shapeAttr := "shape"
	if ok, err := g.HasAttr("encoding-type"); err != nil {
		return "", nil, err
	} else if ok {
		if enc, err = g.ReadAttrString("encoding-type"); err != nil {
			return "", nil, err
		}
	} else if ok, err := g.HasAttr("h5sparse_format"); err != nil {
		return "", nil, err
	} else if ok {
		old, err := g.ReadAttrString("h5sparse_format")
		if err != nil {
			return "", nil, err
		}
		enc, shapeAttr = old+"_matrix", "h5sparse_shape"
	} else {
		return "", nil, fmt.Errorf("%s: group has no encoding-type attribute (want csr_matrix or csc_matrix): %w", what, ErrFormat)
	}
	if enc != "csr_matrix" && enc != "csc_matrix" {
		return "", nil, fmt.Errorf("%s: encoding-type %q is not a supported matrix (want csr_matrix, csc_matrix or a dense array): %w", what, enc, ErrFormat)
	}
	if ok, err := g.HasAttr(shapeAttr); err != nil {
		return "", nil, err
	} else if !ok {
		return "", nil, fmt.Errorf("%s: %s has no %q attribute: %w", what, enc, shapeAttr, ErrFormat)
	}
	if shape, err = g.ReadAttrInt64s(shapeAttr); err != nil {
		return "", nil, asFormat(err)
	}
	return enc, shape, nil
}

// openH5AD opens an AnnData file; on error the caller closes f or the
// returned partial Dataset.
func openH5AD(f *hdf5.File, path string, opts OpenOptions) (*Dataset, error) {
	xPath, varPath := "X", "var"
	if opts.UseRaw {
		if k, err := f.Kind("raw"); err != nil {
			return nil, err
		} else if k != hdf5.KindGroup {
			return nil, fmt.Errorf("%s: /raw: UseRaw is set but the file has no raw group: %w", path, ErrFormat)
		}
		xPath, varPath = "raw/X", "raw/var"
	}
	d := &Dataset{path: path, format: FormatH5AD, matrix: "/" + xPath}
	k, err := f.Kind(xPath)
	if err != nil {
		return nil, err
	}
	switch k {
	case hdf5.KindNone:
		return nil, fmt.Errorf("%s: /%s: missing (AnnData without a matrix): %w", path, xPath, ErrFormat)
	case hdf5.KindDataset:
		x, err := f.OpenDataset(xPath)
		if err != nil {
			return nil, err
		}
		if x.Rank() != 2 || (x.Class() != hdf5.ClassFloat && x.Class() != hdf5.ClassInt) {
			x.Close()
			return nil, fmt.Errorf("%s: /%s: dense X is %s, want a 2-D numeric array: %w", path, xPath, x.Describe(), ErrFormat)
		}
		sh := x.Shape()
		if sh[0] > maxDim || sh[1] > maxDim {
			x.Close()
			return nil, fmt.Errorf("%s: /%s: shape %v too large: %w", path, xPath, sh, ErrFormat)
		}
		d.rows, d.cols = int(sh[0]), int(sh[1])
		d.src = &h5Dense{x: x, cols: d.cols}
	case hdf5.KindGroup:
		enc, shape, err := sparseEncoding(f, path, xPath)
		if err != nil {
			return nil, err
		}
		csc := enc == "csc_matrix"
		data, indices, indptr, rows, cols, err := sparseArrays(f, path, xPath, shape, csc)
		if err != nil {
			return nil, err
		}
		d.rows, d.cols = rows, cols
		what := path + ": /" + xPath
		src := &h5CSR{what: what, entries: h5Entries{data: data, idx: indices}, indptr: indptr, cols: cols}
		d.src = src
		if csc {
			// Converted below, once the obs and var indexes have confirmed
			// the shape (the conversion allocates per row).
			src.cols = -1
		}
	default:
		return nil, fmt.Errorf("%s: /%s: is a %s, want a dataset or a sparse group: %w", path, xPath, k, ErrFormat)
	}
	d.file = f
	if d.barcodes, err = readIndex(f, path, "obs", d.rows, "X rows"); err != nil {
		return d, err
	}
	if d.genes, err = readIndex(f, path, varPath, d.cols, "X columns"); err != nil {
		return d, err
	}
	if !opts.NoLabels {
		key := opts.LabelKey
		if key == "" {
			key = DefaultLabelKey
		}
		if d.labels, err = readLabelColumn(f, path, "obs", key, d.rows); err != nil {
			return d, err
		}
		if d.labelsNumeric, err = columnIsNumeric(f, "obs/"+key); err != nil {
			return d, err
		}
		d.labelKey = key
	}
	if src, ok := d.src.(*h5CSR); ok && src.cols < 0 {
		m, err := cscToCSR(src.what, src.entries, src.indptr, d.rows, d.cols)
		if cerr := src.close(); err == nil {
			err = cerr
		}
		d.src = nil
		if err != nil {
			return d, err
		}
		d.src = &memCSR{m: m}
	}
	return d, nil
}

// indexName returns the name of a dataframe group's index dataset: the
// "_index" attribute, else an existing "_index" or "index" dataset.
func indexName(f *hdf5.File, path, group string) (string, error) {
	k, err := f.Kind(group)
	if err != nil {
		return "", err
	}
	switch k {
	case hdf5.KindNone:
		return "", fmt.Errorf("%s: /%s: dataframe missing: %w", path, group, ErrFormat)
	case hdf5.KindDataset:
		return "", fmt.Errorf("%s: /%s: is a dataset (the pre-0.7 AnnData layout with structured arrays), not supported; re-save with anndata >= 0.7: %w", path, group, ErrFormat)
	case hdf5.KindOther:
		return "", fmt.Errorf("%s: /%s: is not a group: %w", path, group, ErrFormat)
	}
	g, err := f.OpenGroup(group)
	if err != nil {
		return "", err
	}
	defer g.Close()
	if ok, err := g.HasAttr("_index"); err != nil {
		return "", err
	} else if ok {
		name, err := g.ReadAttrString("_index")
		if err != nil {
			return "", asFormat(err)
		}
		return name, nil
	}
	for _, name := range []string{"_index", "index"} {
		if k, err := g.Kind(name); err != nil {
			return "", err
		} else if k == hdf5.KindDataset {
			return name, nil
		}
	}
	return "", fmt.Errorf("%s: /%s: dataframe has no _index attribute and no _index or index dataset: %w", path, group, ErrFormat)
}

// readIndex reads the index (names) of the dataframe group and checks that
// it has n entries.
func readIndex(f *hdf5.File, path, group string, n int, against string) ([]string, error) {
	name, err := indexName(f, path, group)
	if err != nil {
		return nil, err
	}
	obj := group + "/" + name
	if k, err := f.Kind(obj); err != nil {
		return nil, err
	} else if k != hdf5.KindDataset {
		return nil, fmt.Errorf("%s: /%s: index dataset missing (named by the _index attribute): %w", path, obj, ErrFormat)
	}
	names, err := readColumn(f, path, obj, n)
	if err != nil {
		return nil, err
	}
	return names, nil
}

// readLabelColumn reads obs column key, or explains what columns exist.
func readLabelColumn(f *hdf5.File, path, obs, key string, n int) ([]string, error) {
	obj := obs + "/" + key
	k, err := f.Kind(obj)
	if err != nil {
		return nil, err
	}
	if k == hdf5.KindNone || key == "__categories" {
		cols, err := obsColumns(f, path, obs)
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s: /%s: no label column %q; available obs columns: %s (choose one of them as the label column, or read no labels): %w",
			path, obs, key, listOrNone(cols), ErrNoLabels)
	}
	return readColumn(f, path, obj, n)
}

// obsColumns lists the columns of a dataframe group (its members except
// the index and the 0.7 __categories group).
func obsColumns(f *hdf5.File, path, group string) ([]string, error) {
	g, err := f.OpenGroup(group)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	kids, err := g.Children()
	if err != nil {
		return nil, err
	}
	idx, _ := indexName(f, path, group)
	var cols []string
	for _, k := range kids {
		if k != idx && k != "__categories" {
			cols = append(cols, k)
		}
	}
	return cols, nil
}
