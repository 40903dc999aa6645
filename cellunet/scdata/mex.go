package scdata

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// mexFiles are the three files of a 10x MEX folder.
type mexFiles struct {
	matrix, features, barcodes string
	v3                         bool // features.tsv (three columns) rather than genes.tsv
}

// firstExisting returns the first of names that exists in dir.
func firstExisting(dir string, names ...string) string {
	for _, n := range names {
		p := filepath.Join(dir, n)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// findMEX locates the files of a MEX folder, descending into a genome
// sub-folder (Cell Ranger 2 layout) when the folder has none itself.
func findMEX(dir, genome string) (mexFiles, string, error) {
	m := mexFiles{matrix: firstExisting(dir, "matrix.mtx", "matrix.mtx.gz")}
	if m.matrix == "" {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return m, dir, err
		}
		var subs []string
		for _, e := range entries {
			if e.IsDir() && firstExisting(filepath.Join(dir, e.Name()), "matrix.mtx", "matrix.mtx.gz") != "" {
				subs = append(subs, e.Name())
			}
		}
		sort.Strings(subs)
		switch {
		case len(subs) == 0:
			return m, dir, fmt.Errorf("%s: not a 10x MEX folder: no matrix.mtx or matrix.mtx.gz (and no genome sub-folder with one): %w", dir, ErrFormat)
		case genome != "":
			for _, s := range subs {
				if s == genome {
					return findMEX(filepath.Join(dir, s), "")
				}
			}
			return m, dir, fmt.Errorf("%s: genome %q not found; sub-folders with matrices: %s: %w", dir, genome, listOrNone(subs), ErrFormat)
		case len(subs) == 1:
			return findMEX(filepath.Join(dir, subs[0]), "")
		default:
			return m, dir, fmt.Errorf("%s: genome sub-folders %s; choose one genome: %w", dir, listOrNone(subs), ErrAmbiguous)
		}
	}
	if m.features = firstExisting(dir, "features.tsv.gz", "features.tsv"); m.features != "" {
		m.v3 = true
	} else if m.features = firstExisting(dir, "genes.tsv", "genes.tsv.gz"); m.features == "" {
		return m, dir, fmt.Errorf("%s: 10x MEX folder has %s but no features.tsv(.gz) or genes.tsv(.gz): %w", dir, filepath.Base(m.matrix), ErrFormat)
	}
	if m.barcodes = firstExisting(dir, "barcodes.tsv.gz", "barcodes.tsv"); m.barcodes == "" {
		return m, dir, fmt.Errorf("%s: 10x MEX folder has %s but no barcodes.tsv(.gz): %w", dir, filepath.Base(m.matrix), ErrFormat)
	}
	return m, dir, nil
}

// readTSV reads a (possibly gzipped) tab-separated file into rows of
// fields, skipping a trailing empty line.
func readTSV(name string) ([][]string, error) {
	rc, err := openMaybeGzip(name)()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	var rows [][]string
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimRight(sc.Text(), "\r")
		if t == "" {
			return nil, fmt.Errorf("%s: line %d: empty line: %w", name, line, ErrFormat)
		}
		rows = append(rows, strings.Split(t, "\t"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: line %d: %w", name, line+1, asFormat(err))
	}
	return rows, nil
}

// openMEX opens a 10x MEX folder (matrix is genes x cells; returned as
// cells x genes). Gene names are the second column of genes/features.tsv
// (the first when there is only one), ids the first, and v3 feature types
// the third.
func openMEX(dir string, opts OpenOptions) (*Dataset, error) {
	if !opts.NoLabels {
		return nil, noLabelsErr(dir, "a 10x MEX folder")
	}
	files, dir, err := findMEX(dir, opts.Genome)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		return nil, err
	}
	feats, err := readTSV(files.features)
	if err != nil {
		return nil, err
	}
	bcs, err := readTSV(files.barcodes)
	if err != nil {
		return nil, err
	}
	genes, ids, types := make([]string, len(feats)), make([]string, len(feats)), []string(nil)
	if files.v3 {
		types = make([]string, len(feats))
	}
	for i, f := range feats {
		ids[i], genes[i] = f[0], f[0]
		if len(f) > 1 {
			genes[i] = f[1]
		}
		if types != nil {
			if len(f) > 2 {
				types[i] = f[2]
			} else {
				types[i] = geneExpression
			}
		}
	}
	barcodes := make([]string, len(bcs))
	for i, b := range bcs {
		barcodes[i] = b[0]
	}
	m, err := readMTXTransposed(files.matrix, openMaybeGzip(files.matrix), len(genes), len(barcodes), max(len(genes), len(barcodes)))
	if err != nil {
		return nil, err
	}
	keep, kept, err := featureFilter(dir, filepath.Base(files.features), opts, types, nil)
	if err != nil {
		return nil, err
	}
	if keep != nil {
		if err := m.mapColumns(keep, kept, 0); err != nil {
			return nil, fmt.Errorf("%s: %w", files.matrix, err)
		}
		genes, ids = pick(genes, keep), pick(ids, keep)
	}
	return &Dataset{path: dir, format: FormatMEX, matrix: filepath.Base(files.matrix), rows: m.Rows, cols: m.Cols,
		genes: genes, geneIDs: ids, barcodes: barcodes, src: &memCSR{m: m}}, nil
}
