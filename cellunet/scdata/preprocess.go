package scdata

import (
	"fmt"
	"math"
	"sort"
	"strconv"
)

// Defaults of the reference loader (scDiffusion cell_datasets_loader.py).
const (
	DefaultMinCells  = 3   // filter_genes(min_cells=3)
	DefaultMinGenes  = 10  // filter_cells(min_genes=10)
	DefaultTargetSum = 1e4 // normalize_total(target_sum=1e4)
)

// PreprocessConfig holds the preprocessing parameters. The zero value is
// the reference's configuration.
type PreprocessConfig struct {
	// MinCells keeps genes with a positive count in at least MinCells
	// cells. 0 means DefaultMinCells (3); negative disables the filter.
	MinCells int
	// MinGenes keeps cells with a positive count in at least MinGenes of
	// the kept genes. 0 means DefaultMinGenes (10); negative disables it.
	MinGenes int
	// TargetSum is the per-cell total after normalisation. 0 means
	// DefaultTargetSum (1e4); negative is an error.
	TargetSum float64
	// ChunkRows is the streaming chunk size; 0 means DefaultChunkRows.
	ChunkRows int
	// RequireIntegerCounts turns non-integer counts into an ErrBadValue
	// error. By default they are allowed, as in scanpy (the reference does
	// not check), and counted in Preprocessed.NonIntegerCounts so the
	// caller can warn: non-integer input usually means the matrix is
	// already normalised or log-transformed.
	RequireIntegerCounts bool
}

// Preprocessed is the training matrix and its metadata.
type Preprocessed struct {
	// X is log1p(normalize_total(counts)), cells x kept genes, float32,
	// sorted column indices, zeros not stored.
	X *CSR
	// Genes are the kept gene names after var_names_make_unique.
	Genes []string
	// GeneIndex[j] is the source column of kept gene j.
	GeneIndex []int
	// Cells[i] is the source row of kept cell i.
	Cells []int
	// Barcodes are the kept cells' names.
	Barcodes []string
	// Labels[i] is the class id of kept cell i (an index into Classes);
	// nil when the Dataset has no labels.
	Labels []int64
	// Classes maps class id to label string: the sorted unique labels of
	// the kept cells, as sklearn's LabelEncoder orders them: by value for a
	// numeric label column (Dataset.LabelsNumeric: 2 before 10), else in
	// byte order (sort.Strings: "10" before "2").
	Classes []string
	// NonIntegerCounts is the number of stored values that are not whole
	// numbers (0 for raw UMI counts).
	NonIntegerCounts int64
	// GenesIn and CellsIn are the matrix shape before filtering.
	GenesIn, CellsIn int
}

// Preprocess applies the reference's steps 2-7 (scDiffusion spec §4) to
// the counts of ds:
//
//  2. filter_genes(min_cells): keep genes with a count > 0 in >= MinCells cells;
//  3. filter_cells(min_genes): keep cells with a count > 0 in >= MinGenes of
//     the kept genes (genes are not re-filtered);
//  4. var_names_make_unique on the kept genes (MakeUnique);
//  5. labels: ids = rank of each kept cell's label among the sorted unique
//     labels of the kept cells;
//  6. normalize_total: x_ij * TargetSum / sum_j x_ij over the kept genes;
//  7. log1p (natural).
//
// Steps 6-7 are computed in float64 and rounded once to float32 (scanpy
// works in float32; results agree to a few float32 ulps).
//
// Input values must be finite and non-negative: the first violation is an
// ErrBadValue error naming the file, matrix, row, cell, gene and value.
// Nothing left after a filter is an ErrEmpty error with the counts before
// and after.
//
// It reads ds twice (Rows). Peak memory: the output CSR (8 bytes per kept
// non-zero, preallocated from the positive-count total of the first pass,
// which bounds it tightly) + 8 bytes per cell + 8 bytes per gene + one read
// chunk (for dense sources also ChunkRows x genes float32) + the names and
// labels. A Dataset opened from a CSC h5ad or a MEX folder additionally
// holds its CSR copy (8 bytes per stored entry) until it is closed.
func Preprocess(ds *Dataset, cfg PreprocessConfig) (*Preprocessed, error) {
	minCells, minGenes, target := cfg.MinCells, cfg.MinGenes, cfg.TargetSum
	if minCells == 0 {
		minCells = DefaultMinCells
	}
	if minGenes == 0 {
		minGenes = DefaultMinGenes
	}
	if target == 0 {
		target = DefaultTargetSum
	}
	if target < 0 || math.IsNaN(target) || math.IsInf(target, 0) {
		return nil, fmt.Errorf("preprocess: TargetSum %v must be positive", cfg.TargetSum)
	}
	G, N := ds.NumGenes(), ds.NumCells()
	genes, barcodes := ds.GeneNames(), ds.Barcodes()
	where := ds.Path() + ": " + ds.MatrixPath()

	// Pass 1: validate and count, per gene, the cells with a positive value.
	geneCells := make([]int64, G)
	var positives, nonInt int64
	err := ds.Rows(cfg.ChunkRows, func(start int, c *CSR) error {
		for i := 0; i < c.Rows; i++ {
			idx, val := c.Row(i)
			for k, v := range val {
				if v != v || math.IsInf(float64(v), 0) || v < 0 {
					return badValue(where, start+i, barcodes, int(idx[k]), genes, v, "counts must be finite and non-negative")
				}
				if v != float32(math.Trunc(float64(v))) {
					if cfg.RequireIntegerCounts {
						return badValue(where, start+i, barcodes, int(idx[k]), genes, v, "counts must be integers (RequireIntegerCounts)")
					}
					nonInt++
				}
				if v > 0 {
					geneCells[idx[k]]++
					positives++
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Step 2: filter genes.
	colMap := make([]int32, G)
	var geneIndex []int
	for j, n := range geneCells {
		if minCells < 0 || n >= int64(minCells) {
			colMap[j] = int32(len(geneIndex))
			geneIndex = append(geneIndex, j)
		} else {
			colMap[j] = -1
		}
	}
	if len(geneIndex) == 0 {
		return nil, fmt.Errorf("%s: filter_genes(min_cells=%d) kept 0 of %d genes (%d cells, %d positive counts): %w",
			where, minCells, G, N, positives, ErrEmpty)
	}

	// Pass 2: filter cells, normalise and log-transform the kept rows.
	out := &CSR{Cols: len(geneIndex), Indptr: make([]int64, 1, N+1),
		Indices: make([]int32, 0, positives), Data: make([]float32, 0, positives)}
	var cells []int
	err = ds.Rows(cfg.ChunkRows, func(start int, c *CSR) error {
		for i := 0; i < c.Rows; i++ {
			idx, val := c.Row(i)
			n, sum := 0, 0.0
			for k, v := range val {
				if colMap[idx[k]] >= 0 && v > 0 {
					n++
					sum += float64(v)
				}
			}
			if minGenes >= 0 && n < minGenes {
				continue
			}
			for k, v := range val {
				if j := colMap[idx[k]]; j >= 0 && v > 0 {
					out.Indices = append(out.Indices, j)
					out.Data = append(out.Data, float32(math.Log1p(float64(v)*target/sum)))
				}
			}
			out.Indptr = append(out.Indptr, int64(len(out.Data)))
			cells = append(cells, start+i)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(cells) == 0 {
		return nil, fmt.Errorf("%s: filter_cells(min_genes=%d) kept 0 of %d cells (after filter_genes(min_cells=%d) kept %d of %d genes): %w",
			where, minGenes, N, minCells, len(geneIndex), G, ErrEmpty)
	}
	out.Rows = len(cells)

	p := &Preprocessed{X: out, GeneIndex: geneIndex, Cells: cells, NonIntegerCounts: nonInt, GenesIn: G, CellsIn: N}
	kept := make([]string, len(geneIndex))
	for j, g := range geneIndex {
		kept[j] = genes[g]
	}
	p.Genes = MakeUnique(kept)
	p.Barcodes = make([]string, len(cells))
	for i, c := range cells {
		p.Barcodes[i] = barcodes[c]
	}
	if labels := ds.Labels(); labels != nil {
		p.Labels, p.Classes = encodeLabels(labels, cells, ds.LabelsNumeric())
	}
	return p, nil
}

// encodeLabels is sklearn's LabelEncoder on the labels of the kept cells.
func encodeLabels(labels []string, cells []int, numeric bool) ([]int64, []string) {
	set := map[string]int64{}
	for _, c := range cells {
		set[labels[c]] = 0
	}
	classes := make([]string, 0, len(set))
	for s := range set {
		classes = append(classes, s)
	}
	SortClasses(classes, numeric)
	for i, s := range classes {
		set[s] = int64(i)
	}
	ids := make([]int64, len(cells))
	for i, c := range cells {
		ids[i] = set[labels[c]]
	}
	return ids, classes
}

// EncodeLabels is sklearn's LabelEncoder.fit_transform: ids index the
// sorted unique labels (SortClasses with numeric).
func EncodeLabels(labels []string, numeric bool) (ids []int64, classes []string) {
	cells := make([]int, len(labels))
	for i := range cells {
		cells[i] = i
	}
	return encodeLabels(labels, cells, numeric)
}

// SortClasses sorts class names as LabelEncoder (np.unique) orders them:
// numerically when numeric (the decimal strings of an integer or float
// column, integers compared exactly, NaN last), else in byte order.
func SortClasses(classes []string, numeric bool) {
	if !numeric {
		sort.Strings(classes)
		return
	}
	sort.SliceStable(classes, func(a, b int) bool { return numLess(classes[a], classes[b]) })
}

// numLess compares two decimal strings by value: as int64 when both are
// integers, else as float64 with NaN after every number; unparsable
// strings (not written by this package) sort after numbers, bytewise.
func numLess(a, b string) bool {
	ia, ea := strconv.ParseInt(a, 10, 64)
	ib, eb := strconv.ParseInt(b, 10, 64)
	if ea == nil && eb == nil {
		return ia < ib
	}
	fa, ea := strconv.ParseFloat(a, 64)
	fb, eb := strconv.ParseFloat(b, 64)
	switch {
	case ea != nil || eb != nil:
		if (ea == nil) != (eb == nil) {
			return ea == nil
		}
		return a < b
	case math.IsNaN(fa) || math.IsNaN(fb):
		return !math.IsNaN(fa) && math.IsNaN(fb)
	}
	return fa < fb
}

// badValue builds the ErrBadValue error for entry (row, gene).
func badValue(where string, row int, barcodes []string, gene int, genes []string, v float32, why string) error {
	return fmt.Errorf("%s: row %d (cell %q), gene %d (%q): value %v: %s: %w",
		where, row, barcodes[row], gene, genes[gene], v, why, ErrBadValue)
}
