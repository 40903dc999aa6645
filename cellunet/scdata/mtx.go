package scdata

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// opener opens a stream from its start; MatrixMarket parsing reads the
// matrix twice (count, then fill) so that only the final CSR is allocated.
type opener func() (io.ReadCloser, error)

// openMaybeGzip returns an opener for a file that may be gzip-compressed
// (detected from the magic bytes, not the name).
func openMaybeGzip(name string) opener {
	return func() (io.ReadCloser, error) {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		br := bufio.NewReaderSize(f, 1<<16)
		magic, _ := br.Peek(2)
		if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
			zr, err := gzip.NewReader(br)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: gzip: %w", name, err)
			}
			return readCloser{zr, func() error { return errors.Join(zr.Close(), f.Close()) }}, nil
		}
		return readCloser{br, f.Close}, nil
	}
}

type readCloser struct {
	io.Reader
	closeFn func() error
}

func (r readCloser) Close() error { return r.closeFn() }

// mtxHeader is the banner and size line of a coordinate MatrixMarket file.
type mtxHeader struct {
	field           string // integer, real or pattern
	rows, cols, nnz int64
	line            int // line number of the size line
}

// lineReader yields lines without the trailing newline, with line numbers;
// lines longer than maxLine are an error unless they are comments.
type lineReader struct {
	br   *bufio.Reader
	line int
	name string
}

const mtxMaxLine = 1 << 16

func (l *lineReader) next() ([]byte, error) {
	l.line++
	b, err := l.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		if len(b) > 0 && b[0] == '%' {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = l.br.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%s: line %d: %w", l.name, l.line, err)
			}
			return []byte("%"), nil
		}
		return nil, fmt.Errorf("%s: line %d: longer than %d bytes: %w", l.name, l.line, mtxMaxLine, ErrFormat)
	}
	if err != nil && !(errors.Is(err, io.EOF) && len(b) > 0) {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("%s: line %d: %w", l.name, l.line, err)
	}
	return bytes.TrimRight(b, "\r\n"), nil
}

// fields splits on spaces and tabs into at most len(dst) fields and
// returns how many there were (counting beyond len(dst)).
func fields(b []byte, dst [][]byte) int {
	n := 0
	for i := 0; i < len(b); {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		if i == len(b) {
			break
		}
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != '\t' {
			j++
		}
		if n < len(dst) {
			dst[n] = b[i:j]
		}
		n++
		i = j
	}
	return n
}

// parseInt parses a decimal integer without allocating.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	neg := false
	if b[0] == '-' || b[0] == '+' {
		neg = b[0] == '-'
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

// readMTXHeader parses the banner, comments and size line.
func readMTXHeader(l *lineReader) (mtxHeader, error) {
	var h mtxHeader
	b, err := l.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return h, fmt.Errorf("%s: empty file, want a MatrixMarket header: %w", l.name, ErrFormat)
		}
		return h, err
	}
	var f [6][]byte
	if n := fields(b, f[:]); n != 5 || !bytes.EqualFold(f[0], []byte("%%MatrixMarket")) || !bytes.EqualFold(f[1], []byte("matrix")) {
		return h, fmt.Errorf("%s: line 1: want \"%%%%MatrixMarket matrix coordinate <field> general\", got %.80q: %w", l.name, b, ErrFormat)
	}
	if !bytes.EqualFold(f[2], []byte("coordinate")) {
		return h, fmt.Errorf("%s: line 1: %q MatrixMarket format is not supported (want coordinate): %w", l.name, f[2], ErrFormat)
	}
	switch field := string(bytes.ToLower(f[3])); field {
	case "integer", "pattern":
		h.field = field
	case "real", "double":
		h.field = "real"
	default:
		return h, fmt.Errorf("%s: line 1: field %q is not supported (want integer, real or pattern): %w", l.name, f[3], ErrFormat)
	}
	if !bytes.EqualFold(f[4], []byte("general")) {
		return h, fmt.Errorf("%s: line 1: symmetry %q is not supported (want general): %w", l.name, f[4], ErrFormat)
	}
	for {
		b, err := l.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return h, fmt.Errorf("%s: no size line (rows cols entries) after the header: %w", l.name, ErrFormat)
			}
			return h, err
		}
		if len(b) == 0 || b[0] == '%' || len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		var v [3]int64
		var ok [3]bool
		if n := fields(b, f[:]); n == 3 {
			for i := range v {
				v[i], ok[i] = parseInt(f[i])
			}
		}
		if !ok[0] || !ok[1] || !ok[2] || v[0] < 0 || v[1] < 0 || v[2] < 0 {
			return h, fmt.Errorf("%s: line %d: want the size line \"rows cols entries\" with three non-negative integers, got %.80q: %w", l.name, l.line, b, ErrFormat)
		}
		h.rows, h.cols, h.nnz, h.line = v[0], v[1], v[2], l.line
		return h, nil
	}
}

// mtxEntry is one parsed coordinate line (0-based).
type mtxEntry struct {
	row, col int64
	val      float32
}

// scanMTX parses the entries of the file, calling fn for each. It checks
// ranges and the entry count against the header.
func scanMTX(name string, open opener, check func(mtxHeader) error, fn func(mtxEntry) error) (mtxHeader, error) {
	rc, err := open()
	if err != nil {
		return mtxHeader{}, err
	}
	defer rc.Close()
	l := &lineReader{br: bufio.NewReaderSize(rc, mtxMaxLine), name: name}
	h, err := readMTXHeader(l)
	if err != nil {
		return h, err
	}
	if err := check(h); err != nil {
		return h, err
	}
	want := 3
	if h.field == "pattern" {
		want = 2
	}
	var f [4][]byte
	count := int64(0)
	for {
		b, err := l.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return h, err
		}
		if len(b) == 0 || b[0] == '%' {
			continue
		}
		n := fields(b, f[:])
		if n == 0 {
			continue
		}
		if n != want {
			return h, fmt.Errorf("%s: line %d: want %d fields (row col%s), got %d: %.80q: %w", name, l.line, want, map[bool]string{true: " value", false: ""}[want == 3], n, b, ErrFormat)
		}
		r, ok1 := parseInt(f[0])
		c, ok2 := parseInt(f[1])
		if !ok1 || !ok2 {
			return h, fmt.Errorf("%s: line %d: row and column must be integers: %.80q: %w", name, l.line, b, ErrFormat)
		}
		if r < 1 || r > h.rows || c < 1 || c > h.cols {
			return h, fmt.Errorf("%s: line %d: entry (%d, %d) outside the declared %d x %d matrix (indices are 1-based): %w", name, l.line, r, c, h.rows, h.cols, ErrFormat)
		}
		e := mtxEntry{row: r - 1, col: c - 1, val: 1}
		switch h.field {
		case "integer":
			v, ok := parseInt(f[2])
			if !ok {
				return h, fmt.Errorf("%s: line %d: value %q is not an integer (the header says integer): %w", name, l.line, f[2], ErrFormat)
			}
			e.val = float32(v)
		case "real":
			v, err := strconv.ParseFloat(string(f[2]), 64)
			if err != nil {
				return h, fmt.Errorf("%s: line %d: value %q is not a number: %w", name, l.line, f[2], ErrFormat)
			}
			e.val = float32(v)
		}
		count++
		if count > h.nnz {
			return h, fmt.Errorf("%s: line %d: more entries than the %d declared on line %d: %w", name, l.line, h.nnz, h.line, ErrFormat)
		}
		if err := fn(e); err != nil {
			return h, err
		}
	}
	if count != h.nnz {
		return h, fmt.Errorf("%s: %d entries, but line %d declares %d (truncated file?): %w", name, count, h.line, h.nnz, ErrFormat)
	}
	return h, nil
}

// readMTXTransposed parses a coordinate MatrixMarket file of genes x cells
// (10x MEX) and returns its transpose, cells x genes, as canonical CSR.
// wantRows/wantCols (>= 0) must match the header (the gene and barcode
// counts of the folder); both must be at most maxDim. Allocation follows
// the entries actually present, never the declared count alone.
func readMTXTransposed(name string, open opener, wantRows, wantCols, maxDim int) (*CSR, error) {
	check := func(h mtxHeader) error {
		if wantRows >= 0 && h.rows != int64(wantRows) {
			return fmt.Errorf("%s: line %d: declares %d rows (genes) but the features file lists %d: %w", name, h.line, h.rows, wantRows, ErrFormat)
		}
		if wantCols >= 0 && h.cols != int64(wantCols) {
			return fmt.Errorf("%s: line %d: declares %d columns (cells) but the barcodes file lists %d: %w", name, h.line, h.cols, wantCols, ErrFormat)
		}
		if h.rows > int64(maxDim) || h.cols > int64(maxDim) {
			return fmt.Errorf("%s: line %d: declared %d x %d matrix exceeds the limit of %d: %w", name, h.line, h.rows, h.cols, maxDim, ErrFormat)
		}
		return nil
	}
	var counts []int64
	h, err := scanMTX(name, open, func(h mtxHeader) error {
		if err := check(h); err != nil {
			return err
		}
		counts = make([]int64, h.cols+1)
		return nil
	}, func(e mtxEntry) error {
		counts[e.col+1]++
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := int64(0); i < h.cols; i++ {
		counts[i+1] += counts[i]
	}
	nnz := counts[h.cols]
	out := &CSR{Rows: int(h.cols), Cols: int(h.rows), Indptr: counts, Indices: make([]int32, nnz), Data: make([]float32, nnz)}
	next := make([]int64, h.cols)
	copy(next, counts[:h.cols])
	_, err = scanMTX(name, open, func(h2 mtxHeader) error {
		if h2.rows != h.rows || h2.cols != h.cols || h2.nnz != h.nnz {
			return fmt.Errorf("%s: header changed between reads: %w", name, ErrFormat)
		}
		return nil
	}, func(e mtxEntry) error {
		p := next[e.col]
		if p >= counts[e.col+1] {
			return fmt.Errorf("%s: entries changed between reads: %w", name, ErrFormat)
		}
		out.Indices[p], out.Data[p] = int32(e.row), e.val
		next[e.col] = p + 1
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := out.canonicalize(0); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}
