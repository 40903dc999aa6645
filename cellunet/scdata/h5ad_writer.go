package scdata

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/hdf5"
	"github.com/scdiffusion/gotorch-train/cgotorch/atomicfile"
)

// H5ADWriterOptions describes the file an H5ADWriter writes.
type H5ADWriterOptions struct {
	// Genes are the var names (one per column); required.
	Genes []string
	// Classes are the categories of the label column; nil writes no label
	// column. AppendRows then takes class ids into Classes.
	Classes []string
	// LabelKey names the label column; empty means DefaultLabelKey.
	LabelKey string
	// Gzip is the deflate level (1..9) for X, obs and var; 0 writes
	// uncompressed data.
	Gzip int
}

// H5ADWriter streams rows into an AnnData 0.8-compatible .h5ad file
// (anndata's 0.2.0 dataframe encodings): X as csr_matrix (float32 data,
// int32 indices, indptr int32 or int64 as scipy picks), obs with the
// cell names as _index and an optional categorical label column, var with
// the gene names, and the empty uns, obsm, varm, layers, obsp and varp
// groups. Rows go to disk as they arrive; only indptr (8 bytes per row) is
// kept in memory until Close. The file is written under a temporary name
// and renamed by Close, so a crash or Abort never leaves a partial file at
// the destination. Not safe for concurrent use.
type H5ADWriter struct {
	path, tmp string
	opts      H5ADWriterOptions
	labelKey  string
	f         *hdf5.File
	data      *hdf5.Dataset
	indices   *hdf5.Dataset
	names     *hdf5.Dataset
	codes     *hdf5.Dataset
	codeType  hdf5.Type
	indptr    []int64
	rows      int
	err       error // sticky: the first failure
	done      bool
}

// CreateH5AD starts writing an .h5ad file at path.
func CreateH5AD(path string, opts H5ADWriterOptions) (*H5ADWriter, error) {
	if len(opts.Genes) == 0 {
		return nil, fmt.Errorf("%s: h5ad writer: no gene names (H5ADWriterOptions.Genes)", path)
	}
	if opts.Gzip < 0 || opts.Gzip > 9 {
		return nil, fmt.Errorf("%s: h5ad writer: gzip level %d outside 0..9", path, opts.Gzip)
	}
	if opts.Classes != nil {
		seen := map[string]bool{}
		for _, c := range opts.Classes {
			if seen[c] {
				return nil, fmt.Errorf("%s: h5ad writer: class %q given twice", path, c)
			}
			seen[c] = true
		}
	}
	tmp, err := atomicfile.TempName(path)
	if err != nil {
		return nil, err
	}
	w := &H5ADWriter{path: path, tmp: tmp, opts: opts, labelKey: opts.LabelKey, indptr: []int64{0}}
	if w.labelKey == "" {
		w.labelKey = DefaultLabelKey
	}
	if w.f, err = hdf5.Create(tmp); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := w.setup(); err != nil {
		w.closeHandles()
		os.Remove(tmp)
		return nil, fmt.Errorf("%s: h5ad writer: %w", path, err)
	}
	return w, nil
}

// attrs is a list of string attributes.
type attrs [][2]string

type attrWriter interface {
	WriteAttrString(name, v string) error
}

func setAttrs(o attrWriter, a attrs) error {
	for _, kv := range a {
		if err := o.WriteAttrString(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

var (
	encDict      = attrs{{"encoding-type", "dict"}, {"encoding-version", "0.1.0"}}
	encDataFrame = attrs{{"_index", "_index"}, {"encoding-type", "dataframe"}, {"encoding-version", "0.2.0"}}
	encStrings   = attrs{{"encoding-type", "string-array"}, {"encoding-version", "0.2.0"}}
	encArray     = attrs{{"encoding-type", "array"}, {"encoding-version", "0.2.0"}}
)

// group creates a group with string attributes and closes it.
func (w *H5ADWriter) group(name string, a attrs) error {
	g, err := w.f.CreateGroup(name)
	if err != nil {
		return err
	}
	return errors.Join(setAttrs(g, a), g.Close())
}

func (w *H5ADWriter) dsOpts(extendable bool) *hdf5.DatasetOptions {
	return &hdf5.DatasetOptions{Extendable: extendable, Gzip: w.opts.Gzip}
}

func (w *H5ADWriter) setup() error {
	if err := setAttrs(w.f, attrs{{"encoding-type", "anndata"}, {"encoding-version", "0.1.0"}}); err != nil {
		return err
	}
	for _, g := range []string{"layers", "obsm", "obsp", "uns", "varm", "varp"} {
		if err := w.group(g, encDict); err != nil {
			return err
		}
	}
	// var: gene names, no columns.
	if err := w.group("var", encDataFrame); err != nil {
		return err
	}
	if err := w.emptyColumnOrder("var"); err != nil {
		return err
	}
	if err := w.stringArray("var/_index", w.opts.Genes); err != nil {
		return err
	}
	// X: CSR with extendable data and indices.
	if err := w.group("X", attrs{{"encoding-type", "csr_matrix"}, {"encoding-version", "0.1.0"}}); err != nil {
		return err
	}
	var err error
	if w.data, err = w.f.CreateDataset("X/data", hdf5.Float32, []int64{0}, w.dsOpts(true)); err != nil {
		return err
	}
	if w.indices, err = w.f.CreateDataset("X/indices", hdf5.Int32, []int64{0}, w.dsOpts(true)); err != nil {
		return err
	}
	// obs: names (+ categorical labels), written as rows arrive.
	if err := w.group("obs", encDataFrame); err != nil {
		return err
	}
	if w.names, err = w.f.CreateDataset("obs/_index", hdf5.String, []int64{0}, w.dsOpts(true)); err != nil {
		return err
	}
	if err := setAttrs(w.names, encStrings); err != nil {
		return err
	}
	if w.opts.Classes == nil {
		return w.emptyColumnOrder("obs")
	}
	obs, err := w.f.OpenGroup("obs")
	if err != nil {
		return err
	}
	err = obs.WriteAttrStrings("column-order", []string{w.labelKey})
	if err = errors.Join(err, obs.Close()); err != nil {
		return err
	}
	cat := "obs/" + w.labelKey
	if err := w.group(cat, attrs{{"encoding-type", "categorical"}, {"encoding-version", "0.2.0"}}); err != nil {
		return err
	}
	g, err := w.f.OpenGroup(cat)
	if err != nil {
		return err
	}
	if err := errors.Join(g.WriteAttrBool("ordered", false), g.Close()); err != nil {
		return err
	}
	if err := w.stringArray(cat+"/categories", w.opts.Classes); err != nil {
		return err
	}
	// pandas picks the smallest signed integer type for the codes.
	switch k := len(w.opts.Classes); {
	case k <= math.MaxInt8:
		w.codeType = hdf5.Int8
	case k <= math.MaxInt16:
		w.codeType = hdf5.Int16
	default:
		w.codeType = hdf5.Int32
	}
	if w.codes, err = w.f.CreateDataset(cat+"/codes", w.codeType, []int64{0}, w.dsOpts(true)); err != nil {
		return err
	}
	return setAttrs(w.codes, encArray)
}

// emptyColumnOrder writes column-order as anndata does for a dataframe
// without columns: an empty float64 array.
func (w *H5ADWriter) emptyColumnOrder(group string) error {
	g, err := w.f.OpenGroup(group)
	if err != nil {
		return err
	}
	return errors.Join(g.WriteAttrFloat64s("column-order", []float64{}), g.Close())
}

// stringArray writes a complete 1-D string dataset with string-array
// attributes.
func (w *H5ADWriter) stringArray(name string, v []string) error {
	d, err := w.f.CreateDataset(name, hdf5.String, []int64{int64(len(v))}, w.dsOpts(false))
	if err != nil {
		return err
	}
	return errors.Join(d.WriteStrings(v), setAttrs(d, encStrings), d.Close())
}

// AppendRows writes the rows of chunk (Cols must equal len(Genes); the
// structure is validated) with their class ids (len chunk.Rows, values in
// [0, len(Classes)); nil when the writer has no Classes) and cell names
// (nil writes the decimal row number, as anndata's default obs_names).
// After an error the writer is unusable; Close then discards the file.
func (w *H5ADWriter) AppendRows(chunk *CSR, labels []int64, names []string) error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return fmt.Errorf("%s: h5ad writer: AppendRows after Close", w.path)
	}
	w.err = w.appendRows(chunk, labels, names)
	return w.err
}

func (w *H5ADWriter) appendRows(chunk *CSR, labels []int64, names []string) error {
	first := w.rows
	if chunk.Cols != len(w.opts.Genes) {
		return fmt.Errorf("%s: h5ad writer: rows %d..: chunk has %d columns, the file has %d genes", w.path, first, chunk.Cols, len(w.opts.Genes))
	}
	if err := chunk.Validate(); err != nil {
		return fmt.Errorf("%s: h5ad writer: rows %d..%d: %w", w.path, first, first+chunk.Rows, err)
	}
	if (labels != nil) != (w.opts.Classes != nil) || (labels != nil && len(labels) != chunk.Rows) {
		return fmt.Errorf("%s: h5ad writer: rows %d..%d: got %d labels for %d rows with %d classes (labels are required exactly when Classes is set)",
			w.path, first, first+chunk.Rows, len(labels), chunk.Rows, len(w.opts.Classes))
	}
	if names != nil && len(names) != chunk.Rows {
		return fmt.Errorf("%s: h5ad writer: rows %d..%d: got %d names", w.path, first, first+chunk.Rows, len(names))
	}
	for i, l := range labels {
		if l < 0 || l >= int64(len(w.opts.Classes)) {
			return fmt.Errorf("%s: h5ad writer: row %d: label %d outside [0, %d)", w.path, first+i, l, len(w.opts.Classes))
		}
	}
	base := w.indptr[len(w.indptr)-1]
	if err := hdf5.Append(w.data, chunk.Data); err != nil {
		return err
	}
	if err := hdf5.Append(w.indices, chunk.Indices); err != nil {
		return err
	}
	for _, v := range chunk.Indptr[1:] {
		w.indptr = append(w.indptr, base+v)
	}
	if names == nil {
		names = make([]string, chunk.Rows)
		for i := range names {
			names[i] = strconv.Itoa(first + i)
		}
	}
	if err := w.names.AppendStrings(names); err != nil {
		return err
	}
	if labels != nil {
		var err error
		switch w.codeType {
		case hdf5.Int8:
			err = hdf5.Append(w.codes, convert[int8](labels))
		case hdf5.Int16:
			err = hdf5.Append(w.codes, convert[int16](labels))
		default:
			err = hdf5.Append(w.codes, convert[int32](labels))
		}
		if err != nil {
			return err
		}
	}
	w.rows += chunk.Rows
	return nil
}

func convert[T int8 | int16 | int32](v []int64) []T {
	out := make([]T, len(v))
	for i, x := range v {
		out[i] = T(x)
	}
	return out
}

// NumRows returns the number of rows written so far.
func (w *H5ADWriter) NumRows() int { return w.rows }

func (w *H5ADWriter) closeHandles() error {
	var errs []error
	for _, d := range []**hdf5.Dataset{&w.data, &w.indices, &w.names, &w.codes} {
		if *d != nil {
			errs = append(errs, (*d).Close())
			*d = nil
		}
	}
	if w.f != nil {
		errs = append(errs, w.f.Close())
		w.f = nil
	}
	return errors.Join(errs...)
}

// finish writes indptr and the shape attribute.
func (w *H5ADWriter) finish() error {
	nnz := w.indptr[len(w.indptr)-1]
	var err error
	var ptr *hdf5.Dataset
	if nnz <= math.MaxInt32 {
		if ptr, err = w.f.CreateDataset("X/indptr", hdf5.Int32, []int64{int64(len(w.indptr))}, w.dsOpts(false)); err != nil {
			return err
		}
		err = hdf5.Write(ptr, convert[int32](w.indptr))
	} else {
		if ptr, err = w.f.CreateDataset("X/indptr", hdf5.Int64, []int64{int64(len(w.indptr))}, w.dsOpts(false)); err != nil {
			return err
		}
		err = hdf5.Write(ptr, w.indptr)
	}
	if err = errors.Join(err, ptr.Close()); err != nil {
		return err
	}
	x, err := w.f.OpenGroup("X")
	if err != nil {
		return err
	}
	return errors.Join(x.WriteAttrInt64s("shape", []int64{int64(w.rows), int64(len(w.opts.Genes))}), x.Close())
}

// Close completes the file and renames it into place. If an earlier call
// failed, Close discards the temporary file and returns that error.
// Calling Close again returns nil.
func (w *H5ADWriter) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	if w.err == nil {
		w.err = w.finish()
	}
	cerr := w.closeHandles()
	if w.err == nil {
		w.err = cerr
	}
	if w.err != nil {
		os.Remove(w.tmp)
		return w.err
	}
	return atomicfile.Commit(w.tmp, w.path, 0o644)
}

// Abort discards the file being written.
func (w *H5ADWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	if w.err == nil {
		w.err = fmt.Errorf("%s: h5ad writer aborted", w.path)
	}
	err := w.closeHandles()
	os.Remove(w.tmp)
	return err
}
