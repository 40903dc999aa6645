package scdata

import (
	"fmt"
	"sort"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/hdf5"
)

// geneExpression is the 10x v3 feature type kept by default.
const geneExpression = "Gene Expression"

// read10xShape reads the 10x shape dataset, (genes, cells).
func read10xShape(f *hdf5.File, path, obj string) ([]int64, error) {
	d, err := f.OpenDataset(obj)
	if err != nil {
		return nil, asFormat(err)
	}
	defer d.Close()
	if d.Rank() != 1 || d.Len() != 2 || d.Class() != hdf5.ClassInt {
		return nil, fmt.Errorf("%s: %s: is %s, want 2 integers (genes, cells): %w", path, d.Path(), d.Describe(), ErrFormat)
	}
	return hdf5.ReadAll[int64](d)
}

// open10x opens the CSC-over-barcodes matrix in group (genes x cells on
// disk, i.e. CSR of cells x genes) with the given feature filter.
func open10x(f *hdf5.File, path, group string, opts OpenOptions, genes, ids, types, genomes []string) (*Dataset, error) {
	shape, err := read10xShape(f, path, group+"/shape")
	if err != nil {
		return nil, err
	}
	if len(genes) != int(shape[0]) {
		return nil, fmt.Errorf("%s: /%s: %d gene names but shape says %d genes: %w", path, group, len(genes), shape[0], ErrFormat)
	}
	// Cells x genes: the stored indptr runs over barcodes.
	data, indices, indptr, rows, cols, err := sparseArrays(f, path, group, []int64{shape[1], shape[0]}, false)
	if err != nil {
		return nil, err
	}
	src := &h5CSR{what: path + ": /" + group, entries: h5Entries{data: data, idx: indices}, indptr: indptr, cols: cols}
	d := &Dataset{path: path, format: Format10xH5, matrix: "/" + group, rows: rows, cols: cols, src: src, file: f}
	if d.barcodes, err = readValues(f, path, group+"/barcodes", rows); err != nil {
		return d, err
	}
	keep, kept, err := featureFilter(path, group, opts, types, genomes)
	if err != nil {
		return d, err
	}
	d.genes, d.geneIDs = genes, ids
	if keep != nil {
		src.colMap, src.cols, d.cols = keep, kept, kept
		d.genes, d.geneIDs = pick(genes, keep), pick(ids, keep)
	}
	return d, nil
}

// featureFilter returns nil (keep all) or a column map keeping the
// features of the selected genome and (unless AllFeatureTypes) type
// "Gene Expression".
func featureFilter(path, what string, opts OpenOptions, types, genomes []string) ([]int32, int, error) {
	if opts.Genome != "" && genomes != nil {
		found := false
		for _, g := range genomes {
			if g == opts.Genome {
				found = true
				break
			}
		}
		if !found {
			return nil, 0, fmt.Errorf("%s: %s: genome %q not found; the features list genomes %s: %w", path, what, opts.Genome, listOrNone(uniqueSorted(genomes)), ErrFormat)
		}
	}
	if opts.Genome == "" && genomes != nil {
		if u := uniqueSorted(genomes); len(u) > 1 {
			return nil, 0, fmt.Errorf("%s: %s: features come from genomes %s; choose one genome: %w", path, what, listOrNone(u), ErrAmbiguous)
		}
	}
	n := max(len(types), len(genomes))
	if n == 0 {
		return nil, 0, nil
	}
	keep := make([]int32, n)
	kept, all := 0, true
	for j := range keep {
		ok := (opts.AllFeatureTypes || types == nil || types[j] == geneExpression) &&
			(opts.Genome == "" || genomes == nil || genomes[j] == opts.Genome)
		if ok {
			keep[j] = int32(kept)
			kept++
		} else {
			keep[j] = -1
			all = false
		}
	}
	if all {
		return nil, 0, nil
	}
	if kept == 0 {
		return nil, 0, fmt.Errorf("%s: %s: no feature of type %q (set AllFeatureTypes to keep the others): %w", path, what, geneExpression, ErrEmpty)
	}
	return keep, kept, nil
}

func pick(v []string, keep []int32) []string {
	if v == nil {
		return nil
	}
	var out []string
	for j, k := range keep {
		if k >= 0 {
			out = append(out, v[j])
		}
	}
	return out
}

func uniqueSorted(v []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range v {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// optionalValues reads obj if it exists (nil otherwise).
func optionalValues(f *hdf5.File, path, obj string, n int) ([]string, error) {
	if k, err := f.Kind(obj); err != nil || k == hdf5.KindNone {
		return nil, err
	}
	return readValues(f, path, obj, n)
}

// open10xV3 opens a Cell Ranger 3+ file (/matrix with features/).
func open10xV3(f *hdf5.File, path string, opts OpenOptions) (*Dataset, error) {
	if !opts.NoLabels {
		return nil, noLabelsErr(path, "a 10x HDF5 file")
	}
	shape, err := read10xShape(f, path, "matrix/shape")
	if err != nil {
		return nil, err
	}
	if shape[0] < 0 || shape[0] > maxDim {
		return nil, fmt.Errorf("%s: /matrix/shape: %d genes is out of range: %w", path, shape[0], ErrFormat)
	}
	n := int(shape[0])
	names, err := readValues(f, path, "matrix/features/name", n)
	if err != nil {
		return nil, err
	}
	ids, err := optionalValues(f, path, "matrix/features/id", n)
	if err != nil {
		return nil, err
	}
	types, err := optionalValues(f, path, "matrix/features/feature_type", n)
	if err != nil {
		return nil, err
	}
	genomes, err := optionalValues(f, path, "matrix/features/genome", n)
	if err != nil {
		return nil, err
	}
	return open10x(f, path, "matrix", opts, names, ids, types, genomes)
}

// open10xV2 opens a Cell Ranger 1.x/2.x file (one group per genome).
func open10xV2(f *hdf5.File, path string, genomes []string, opts OpenOptions) (*Dataset, error) {
	if !opts.NoLabels {
		return nil, noLabelsErr(path, "a 10x HDF5 file")
	}
	g := ""
	switch {
	case opts.Genome != "":
		for _, c := range genomes {
			if c == opts.Genome {
				g = c
			}
		}
		if g == "" {
			return nil, fmt.Errorf("%s: genome %q not found; the file holds %s: %w", path, opts.Genome, listOrNone(genomes), ErrFormat)
		}
	case len(genomes) == 1:
		g = genomes[0]
	default:
		return nil, fmt.Errorf("%s: the file holds genomes %s; choose one genome: %w", path, listOrNone(genomes), ErrAmbiguous)
	}
	shape, err := read10xShape(f, path, g+"/shape")
	if err != nil {
		return nil, err
	}
	if shape[0] < 0 || shape[0] > maxDim {
		return nil, fmt.Errorf("%s: /%s/shape: %d genes is out of range: %w", path, g, shape[0], ErrFormat)
	}
	n := int(shape[0])
	names, err := readValues(f, path, g+"/gene_names", n)
	if err != nil {
		return nil, err
	}
	ids, err := optionalValues(f, path, g+"/genes", n)
	if err != nil {
		return nil, err
	}
	return open10x(f, path, g, opts, names, ids, nil, nil)
}
