package scdata

import (
	"fmt"
	"strconv"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/hdf5"
)

// readColumn reads a per-cell (or per-gene) column as strings: a string
// dataset, a numeric dataset (decimal strings), an AnnData 0.8+
// categorical group (categories + codes) or an AnnData 0.7 categorical
// (integer codes with a "categories" object-reference attribute). It must
// have n entries; missing categorical values (code -1) are an error.
func readColumn(f *hdf5.File, path, obj string, n int) ([]string, error) {
	k, err := f.Kind(obj)
	if err != nil {
		return nil, err
	}
	switch k {
	case hdf5.KindGroup:
		return readCategoricalGroup(f, path, obj, n)
	case hdf5.KindDataset:
	default:
		return nil, fmt.Errorf("%s: /%s: is a %s, want a dataset or a categorical group: %w", path, obj, k, ErrFormat)
	}
	d, err := f.OpenDataset(obj)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if d.Rank() != 1 || d.Len() != int64(n) {
		return nil, fmt.Errorf("%s: /%s: has shape %v, want %d entries (one per row of the matrix): %w", path, obj, d.Shape(), n, ErrFormat)
	}
	if ok, err := d.HasAttr("categories"); err != nil {
		return nil, err
	} else if ok {
		ref, err := d.ReadAttrRef("categories")
		if err != nil {
			return nil, asFormat(err)
		}
		cats, err := readValues(f, path, ref, -1)
		if err != nil {
			return nil, err
		}
		codes, err := hdf5.ReadAll[int64](d)
		if err != nil {
			return nil, err
		}
		return decodeCategorical(path, obj, cats, codes)
	}
	return valuesAsStrings(path, d)
}

// columnIsNumeric reports whether a column that readColumn reads holds
// numbers (integers, floats, or a categorical whose categories are
// numbers) rather than strings: pandas keeps such a column numeric, so
// sklearn's LabelEncoder sorts its values numerically.
func columnIsNumeric(f *hdf5.File, obj string) (bool, error) {
	k, err := f.Kind(obj)
	if err != nil {
		return false, err
	}
	cats := obj
	if k == hdf5.KindGroup { // AnnData 0.8+ categorical
		cats = obj + "/categories"
	} else {
		d, err := f.OpenDataset(obj)
		if err != nil {
			return false, err
		}
		ok, err := d.HasAttr("categories") // AnnData 0.7 categorical
		if err == nil && ok {
			cats, err = d.ReadAttrRef("categories")
		}
		d.Close()
		if err != nil {
			return false, asFormat(err)
		}
	}
	d, err := f.OpenDataset(cats)
	if err != nil {
		return false, asFormat(err)
	}
	defer d.Close()
	c := d.Class()
	return c == hdf5.ClassInt || c == hdf5.ClassFloat, nil
}

// readValues reads a 1-D dataset of strings or numbers as strings; n < 0
// accepts any length.
func readValues(f *hdf5.File, path, obj string, n int) ([]string, error) {
	d, err := f.OpenDataset(obj)
	if err != nil {
		return nil, asFormat(err)
	}
	defer d.Close()
	if d.Rank() != 1 || (n >= 0 && d.Len() != int64(n)) {
		return nil, fmt.Errorf("%s: %s: has shape %v, want a 1-D array of %d entries: %w", path, d.Path(), d.Shape(), n, ErrFormat)
	}
	return valuesAsStrings(path, d)
}

// valuesAsStrings reads a 1-D string or numeric dataset as strings.
func valuesAsStrings(path string, d *hdf5.Dataset) ([]string, error) {
	switch d.Class() {
	case hdf5.ClassString:
		return d.ReadStrings()
	case hdf5.ClassInt:
		v, err := hdf5.ReadAll[int64](d)
		if err != nil {
			return nil, err
		}
		out := make([]string, len(v))
		for i, x := range v {
			out[i] = strconv.FormatInt(x, 10)
		}
		return out, nil
	case hdf5.ClassFloat:
		v, err := hdf5.ReadAll[float64](d)
		if err != nil {
			return nil, err
		}
		out := make([]string, len(v))
		for i, x := range v {
			out[i] = strconv.FormatFloat(x, 'g', -1, 64)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: %s: %s values cannot be used as names or labels (want strings, integers or floats): %w", path, d.Path(), d.Describe(), ErrFormat)
}

// readCategoricalGroup reads an AnnData 0.8+ categorical group.
func readCategoricalGroup(f *hdf5.File, path, obj string, n int) ([]string, error) {
	g, err := f.OpenGroup(obj)
	if err != nil {
		return nil, err
	}
	enc := ""
	if ok, err := g.HasAttr("encoding-type"); err == nil && ok {
		enc, _ = g.ReadAttrString("encoding-type")
	}
	g.Close()
	if enc != "categorical" {
		return nil, fmt.Errorf("%s: /%s: group with encoding-type %q, want \"categorical\" (or a plain array): %w", path, obj, enc, ErrFormat)
	}
	cats, err := readValues(f, path, obj+"/categories", -1)
	if err != nil {
		return nil, err
	}
	cd, err := f.OpenDataset(obj + "/codes")
	if err != nil {
		return nil, asFormat(err)
	}
	defer cd.Close()
	if cd.Rank() != 1 || cd.Len() != int64(n) || cd.Class() != hdf5.ClassInt {
		return nil, fmt.Errorf("%s: /%s/codes: is %s, want %d integer codes (one per row of the matrix): %w", path, obj, cd.Describe(), n, ErrFormat)
	}
	codes, err := hdf5.ReadAll[int64](cd)
	if err != nil {
		return nil, err
	}
	return decodeCategorical(path, obj, cats, codes)
}

func decodeCategorical(path, obj string, cats []string, codes []int64) ([]string, error) {
	out := make([]string, len(codes))
	for i, c := range codes {
		if c < 0 {
			return nil, fmt.Errorf("%s: /%s: row %d has no value (categorical code %d); drop unlabelled cells or read no labels: %w", path, obj, i, c, ErrFormat)
		}
		if c >= int64(len(cats)) {
			return nil, fmt.Errorf("%s: /%s: row %d has code %d but there are only %d categories: %w", path, obj, i, c, len(cats), ErrFormat)
		}
		out[i] = cats[c]
	}
	return out, nil
}
