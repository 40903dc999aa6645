package scdata

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/hdf5"
)

// Format identifies the on-disk layout of a Dataset.
type Format int

// Supported formats.
const (
	FormatH5AD      Format = iota + 1 // AnnData .h5ad (0.7 and 0.8+ encodings)
	Format10xH5                       // 10x Genomics .h5 (v2 per-genome groups, v3 /matrix)
	FormatMEX                         // 10x MEX folder (matrix.mtx, genes/features.tsv, barcodes.tsv)
	FormatPlainHDF5                   // plain HDF5 with dense /X (cells x genes) and optional /Y
)

// String returns the format's short name ("h5ad", "10x-h5", ...).
func (f Format) String() string {
	switch f {
	case FormatH5AD:
		return "h5ad"
	case Format10xH5:
		return "10x-h5"
	case FormatMEX:
		return "10x-mex"
	case FormatPlainHDF5:
		return "plain-hdf5"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// DefaultLabelKey is the obs column the reference reads labels from.
const DefaultLabelKey = "celltype"

// DefaultChunkRows is the row-chunk size used when 0 is given.
const DefaultChunkRows = 4096

// OpenOptions selects what Open reads. The zero value reads X with labels
// from obs["celltype"].
type OpenOptions struct {
	// LabelKey is the per-cell label column. Empty means DefaultLabelKey
	// ("celltype") for AnnData and the root dataset "Y" for plain HDF5
	// files. A missing column is an error wrapping ErrNoLabels that lists
	// the available columns.
	LabelKey string
	// NoLabels reads no labels (Labels returns nil). 10x files and folders
	// carry no cell annotations, so they need NoLabels.
	NoLabels bool
	// UseRaw reads raw/X and raw/var of an AnnData file instead of X and
	// var (obs is shared).
	UseRaw bool
	// Genome picks the genome of a 10x file or folder with several
	// (v2: the group or sub-folder name; v3: the features/genome value).
	// Empty means the only one; several without a choice is ErrAmbiguous.
	Genome string
	// AllFeatureTypes keeps every 10x v3 feature; by default only
	// "Gene Expression" features are kept (as scanpy's gex_only=True).
	AllFeatureTypes bool
}

// rowSource reads row ranges of a matrix as canonical CSR.
type rowSource interface {
	// read fills dst with rows [start, end); dst's slices may be reused.
	read(start, end int, dst *CSR) error
	close() error
}

// Dataset is an opened single-cell matrix, cells x genes, with names and
// labels held in memory and the matrix read on demand in row chunks.
// A Dataset is not safe for concurrent use; Close it when done.
type Dataset struct {
	path     string
	format   Format
	matrix   string // object path of the matrix, for messages
	rows     int
	cols     int
	genes    []string
	geneIDs  []string
	barcodes []string
	labels   []string
	labelKey string
	// labelsNumeric: the label column holds numbers (LabelEncoder sorts
	// them numerically).
	labelsNumeric bool
	src           rowSource
	file          *hdf5.File // nil for MEX
}

// Path returns the file given to Open, or for a MEX folder the folder that
// holds the matrix (the genome sub-folder when one was chosen).
func (d *Dataset) Path() string { return d.path }

// Format returns the detected format.
func (d *Dataset) Format() Format { return d.format }

// MatrixPath returns the object path of the matrix inside the file (for
// example "/X", "/raw/X", "/matrix", "/hg19_chr21") or the matrix file
// name of a MEX folder ("matrix.mtx.gz").
func (d *Dataset) MatrixPath() string { return d.matrix }

// NumCells returns the number of rows (cells).
func (d *Dataset) NumCells() int { return d.rows }

// NumGenes returns the number of columns (genes).
func (d *Dataset) NumGenes() int { return d.cols }

// GeneNames returns the gene names (var index; 10x gene symbols;
// "gene0", "gene1", ... for plain HDF5 files without names). They are not
// made unique; Preprocess does that. The slice is shared: do not modify.
func (d *Dataset) GeneNames() []string { return d.genes }

// GeneIDs returns the 10x gene ids (Ensembl ids), or nil for other formats.
func (d *Dataset) GeneIDs() []string { return d.geneIDs }

// Barcodes returns the cell names (obs index; 10x barcodes; "cell0",
// "cell1", ... for plain HDF5 files without names). Shared: do not modify.
func (d *Dataset) Barcodes() []string { return d.barcodes }

// Labels returns one label string per cell, or nil when opened with
// NoLabels. Numeric label columns are formatted as decimal strings (plain
// HDF5 /Y = 1 reads as "1"). Shared: do not modify.
func (d *Dataset) Labels() []string { return d.labels }

// LabelsNumeric reports whether the label column holds numbers (an integer
// or float column, or a categorical with numeric categories), whose
// classes sort by value, as sklearn's LabelEncoder sorts a numeric array:
// 2 before 10. String columns sort by code point ("10" before "2").
func (d *Dataset) LabelsNumeric() bool { return d.labelsNumeric }

// LabelKey returns the column the labels came from ("" without labels).
func (d *Dataset) LabelKey() string { return d.labelKey }

// Close releases the file. It is safe to call more than once.
func (d *Dataset) Close() error {
	var errs []error
	if d.src != nil {
		errs = append(errs, d.src.close())
		d.src = nil
	}
	if d.file != nil {
		errs = append(errs, d.file.Close())
		d.file = nil
	}
	return errors.Join(errs...)
}

// Rows streams the matrix in chunks of chunkRows rows (DefaultChunkRows
// when chunkRows <= 0): fn receives the index of the chunk's first row and
// the rows as CSR with Cols == NumGenes, sorted unique column indices and
// Indptr[0] == 0. The chunk and its slices are reused for the next chunk:
// fn must not keep or modify them (Clone what you keep). An error from fn
// stops the iteration and is returned as is. Peak memory is one chunk
// (for dense sources also chunkRows x NumGenes float32 of read buffer).
func (d *Dataset) Rows(chunkRows int, fn func(start int, chunk *CSR) error) error {
	if d.src == nil {
		return fmt.Errorf("%s: %s: dataset is closed", d.path, d.matrix)
	}
	if chunkRows <= 0 {
		chunkRows = DefaultChunkRows
	}
	var chunk CSR
	for start := 0; start < d.rows; start += chunkRows {
		end := min(start+chunkRows, d.rows)
		if err := d.src.read(start, end, &chunk); err != nil {
			return err
		}
		if err := fn(start, &chunk); err != nil {
			return err
		}
	}
	return nil
}

// ReadRows returns rows [start, end) as a new CSR that the caller owns.
func (d *Dataset) ReadRows(start, end int) (*CSR, error) {
	if d.src == nil {
		return nil, fmt.Errorf("%s: %s: dataset is closed", d.path, d.matrix)
	}
	if start < 0 || end < start || end > d.rows {
		return nil, fmt.Errorf("%s: %s: rows [%d, %d) outside [0, %d)", d.path, d.matrix, start, end, d.rows)
	}
	var c CSR
	if err := d.src.read(start, end, &c); err != nil {
		return nil, err
	}
	return c.Clone(), nil
}

// ReadCSR returns the whole matrix as one CSR (nnz x 8 bytes plus 8 bytes
// per cell). Prefer Rows for large data.
func (d *Dataset) ReadCSR() (*CSR, error) {
	out := &CSR{Rows: d.rows, Cols: d.cols, Indptr: make([]int64, 1, d.rows+1)}
	err := d.Rows(0, func(_ int, c *CSR) error {
		base := int64(len(out.Data))
		out.Indices = append(out.Indices, c.Indices...)
		out.Data = append(out.Data, c.Data...)
		for _, v := range c.Indptr[1:] {
			out.Indptr = append(out.Indptr, base+v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Open opens a single-cell dataset, detecting the format:
//
//   - a folder (or a matrix.mtx[.gz] file in one) is a 10x MEX folder;
//     a folder with one sub-folder per genome needs Genome when there are
//     several;
//   - an HDF5 file with a /matrix group is 10x v3, one whose root groups hold
//     indptr/indices/data/shape is 10x v2 (one group per genome);
//   - an HDF5 file with X and obs or var is AnnData (.h5ad): X dense,
//     csr_matrix or csc_matrix (CSC is converted to CSR in memory, without a
//     dense intermediate); 0.7 categorical columns (codes with a
//     "categories" object-reference attribute) and 0.8+ categorical groups;
//     obs/var index from the "_index" attribute or an "_index"/"index"
//     dataset;
//   - an HDF5 file with a 2-D /X dataset and no obs/var is plain HDF5:
//     X is dense cells x genes, labels come from the 1-D dataset Y (or
//     LabelKey) and become the decimal strings of its values; gene and cell
//     names come from "gene_names"/"var_names" and "barcodes"/"obs_names"
//     datasets when present and are synthesised as "gene0".., "cell0"..
//     otherwise.
//
// 10x matrices (genes x cells on disk) are returned as cells x genes.
func Open(path string, opts OpenOptions) (*Dataset, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file or folder: %w", path, err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if fi.IsDir() {
		return openMEX(path, opts)
	}
	base := strings.ToLower(filepath.Base(path))
	if base == "matrix.mtx" || base == "matrix.mtx.gz" {
		return openMEX(filepath.Dir(path), opts)
	}
	isH5, err := hdf5.IsHDF5(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !isH5 {
		return nil, fmt.Errorf("%s: not an HDF5 file (no HDF5 signature) and not a 10x MEX folder: %w", path, ErrFormat)
	}
	f, err := hdf5.Open(path)
	if err != nil {
		return nil, err
	}
	d, err := openHDF5(f, path, opts)
	if err != nil {
		if d != nil {
			d.Close()
		} else {
			f.Close()
		}
		return nil, err
	}
	return d, nil
}

// openHDF5 classifies an open HDF5 file and opens it. On error the caller
// closes f (or the returned partial Dataset).
func openHDF5(f *hdf5.File, path string, opts OpenOptions) (*Dataset, error) {
	kids, err := f.Children()
	if err != nil {
		return nil, err
	}
	has := func(name string, want hdf5.Kind) bool {
		k, err := f.Kind(name)
		return err == nil && k == want
	}
	switch {
	case has("matrix", hdf5.KindGroup) && has("matrix/indptr", hdf5.KindDataset):
		return open10xV3(f, path, opts)
	case has("X", hdf5.KindGroup) || has("obs", hdf5.KindGroup) || has("var", hdf5.KindGroup):
		return openH5AD(f, path, opts)
	case has("X", hdf5.KindDataset):
		return openPlain(f, path, opts)
	}
	var genomes []string
	for _, k := range kids {
		if has(k+"/indptr", hdf5.KindDataset) && has(k+"/barcodes", hdf5.KindDataset) {
			genomes = append(genomes, k)
		}
	}
	if len(genomes) > 0 {
		return open10xV2(f, path, genomes, opts)
	}
	return nil, fmt.Errorf("%s: /: unknown HDF5 layout: no X (AnnData or plain), /matrix (10x v3) or genome groups (10x v2); root holds %s: %w",
		path, listOrNone(kids), ErrFormat)
}

func listOrNone(v []string) string {
	if len(v) == 0 {
		return "nothing"
	}
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// noLabelsErr explains that a format carries no cell annotations.
func noLabelsErr(path, what string) error {
	return fmt.Errorf("%s: %s carries no cell annotations, so there is no label column: read it without labels: %w", path, what, ErrNoLabels)
}
