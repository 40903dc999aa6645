package scdata

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/internal/fixtures"
)

// expectedCase mirrors one entry of testdata/expected.json (written by
// testdata/make_expected.py with h5py/scipy).
type expectedCase struct {
	Name        string            `json:"name"`
	Path        string            `json:"path"`
	Format      string            `json:"format"`
	LabelKey    string            `json:"label_key"`
	UseRaw      bool              `json:"use_raw"`
	Genome      string            `json:"genome"`
	NoLabels    bool              `json:"no_labels"`
	Shape       [2]int            `json:"shape"`
	NNZ         int               `json:"nnz"`
	GenesHead   []string          `json:"genes_head"`
	GenesTail   []string          `json:"genes_tail"`
	GenesSHA    string            `json:"genes_sha"`
	GeneIDsSHA  string            `json:"gene_ids_sha"`
	BarHead     []string          `json:"barcodes_head"`
	BarTail     []string          `json:"barcodes_tail"`
	BarSHA      string            `json:"barcodes_sha"`
	RowNNZSHA   string            `json:"row_nnz_sha"`
	RowNNZHead  []int64           `json:"row_nnz_head"`
	RowSumHead  []float64         `json:"row_sum_head"`
	DataSHA     string            `json:"data_sha"`
	Samples     [][3]float64      `json:"samples"`
	TotalSum    float64           `json:"total_sum"`
	LabelsHead  []string          `json:"labels_head"`
	LabelsTail  []string          `json:"labels_tail"`
	LabelsSHA   string            `json:"labels_sha"`
	LabelCounts map[string]int    `json:"label_counts"`
	Extra       map[string]string `json:"-"`
}

func loadExpected(t testing.TB) []expectedCase {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []expectedCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	return cases
}

func (c expectedCase) options() OpenOptions {
	return OpenOptions{LabelKey: c.LabelKey, UseRaw: c.UseRaw, Genome: c.Genome, NoLabels: c.NoLabels}
}

func shaStrings(v []string) string {
	h := sha256.Sum256([]byte(strings.Join(v, "\n")))
	return hex.EncodeToString(h[:])
}

// csrSHA hashes indptr (int64 LE), indices (int32 LE), data (float32 LE).
func csrSHA(m *CSR) string {
	h := sha256.New()
	b := make([]byte, 8)
	for _, v := range m.Indptr {
		binary.LittleEndian.PutUint64(b, uint64(v))
		h.Write(b)
	}
	for _, v := range m.Indices {
		binary.LittleEndian.PutUint32(b, uint32(v))
		h.Write(b[:4])
	}
	for _, v := range m.Data {
		binary.LittleEndian.PutUint32(b, math.Float32bits(v))
		h.Write(b[:4])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func headTail(v []string) ([]string, []string) {
	return v[:min(3, len(v))], v[max(0, len(v)-3):]
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReadFixtures(t *testing.T) {
	dir := fixtures.Dir(t)
	for _, c := range loadExpected(t) {
		t.Run(c.Name, func(t *testing.T) {
			d, err := Open(filepath.Join(dir, filepath.FromSlash(c.Path)), c.options())
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := d.Close(); err != nil {
					t.Error(err)
				}
			}()
			if d.Format().String() != c.Format {
				t.Errorf("format %s, want %s", d.Format(), c.Format)
			}
			if d.NumCells() != c.Shape[0] || d.NumGenes() != c.Shape[1] {
				t.Fatalf("shape (%d, %d), want %v", d.NumCells(), d.NumGenes(), c.Shape)
			}
			checkNames(t, "genes", d.GeneNames(), c.GenesHead, c.GenesTail, c.GenesSHA)
			checkNames(t, "barcodes", d.Barcodes(), c.BarHead, c.BarTail, c.BarSHA)
			if c.GeneIDsSHA != "" && shaStrings(d.GeneIDs()) != c.GeneIDsSHA {
				t.Errorf("gene ids differ")
			}
			if c.LabelsSHA != "" {
				checkNames(t, "labels", d.Labels(), c.LabelsHead, c.LabelsTail, c.LabelsSHA)
				counts := map[string]int{}
				for _, l := range d.Labels() {
					counts[l]++
				}
				if len(counts) != len(c.LabelCounts) {
					t.Errorf("%d label values, want %d", len(counts), len(c.LabelCounts))
				}
				for k, v := range c.LabelCounts {
					if counts[k] != v {
						t.Errorf("label %q: %d cells, want %d", k, counts[k], v)
					}
				}
			} else if d.Labels() != nil {
				t.Errorf("labels read although none expected")
			}
			m, err := d.ReadCSR()
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			if m.NNZ() != c.NNZ {
				t.Errorf("nnz %d, want %d", m.NNZ(), c.NNZ)
			}
			rowNNZ := make([]byte, 0, 8*m.Rows)
			for i := 0; i < m.Rows; i++ {
				rowNNZ = binary.LittleEndian.AppendUint64(rowNNZ, uint64(m.Indptr[i+1]-m.Indptr[i]))
			}
			if h := sha256.Sum256(rowNNZ); hex.EncodeToString(h[:]) != c.RowNNZSHA {
				t.Errorf("per-row nnz differ (first rows %v, want %v)", m.Indptr[:min(11, len(m.Indptr))], c.RowNNZHead)
			}
			for i, want := range c.RowSumHead {
				_, val := m.Row(i)
				s := 0.0
				for _, v := range val {
					s += float64(v)
				}
				if math.Abs(s-want) > 1e-9*math.Max(1, math.Abs(want)) {
					t.Errorf("row %d sum %v, want %v", i, s, want)
				}
			}
			for _, s := range c.Samples {
				if got := m.At(int(s[0]), int(s[1])); float64(got) != s[2] {
					t.Errorf("X[%d, %d] = %v, want %v", int(s[0]), int(s[1]), got, s[2])
				}
			}
			if got := csrSHA(m); got != c.DataSHA {
				t.Errorf("CSR checksum %s, want %s", got, c.DataSHA)
			}
			// Streaming in odd chunk sizes yields the same rows. (Single rows
			// only for small sets: row-by-row reads of a gzip-chunked dense
			// matrix decompress every chunk once per row.)
			sizes := []int{97, 1000}
			if m.Rows <= 1000 {
				sizes = append(sizes, 1)
			}
			for _, chunkRows := range sizes {
				checkChunks(t, d, m, chunkRows)
			}
		})
	}
}

func checkNames(t *testing.T, what string, got, head, tail []string, sha string) {
	t.Helper()
	h, tl := headTail(got)
	if !equalStrings(h, head) || !equalStrings(tl, tail) {
		t.Errorf("%s: head %q tail %q, want %q %q", what, h, tl, head, tail)
	}
	if shaStrings(got) != sha {
		t.Errorf("%s: checksum differs", what)
	}
}

func checkChunks(t *testing.T, d *Dataset, whole *CSR, chunkRows int) {
	t.Helper()
	next := 0
	err := d.Rows(chunkRows, func(start int, c *CSR) error {
		if start != next || c.Cols != whole.Cols || c.Indptr[0] != 0 {
			t.Fatalf("chunk at %d (want %d), cols %d, indptr[0] %d", start, next, c.Cols, c.Indptr[0])
		}
		want := whole.Slice(start, start+c.Rows)
		if csrSHA(c) != csrSHA(want) {
			t.Fatalf("chunk %d..%d (size %d) differs from the whole read", start, start+c.Rows, chunkRows)
		}
		next += c.Rows
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != whole.Rows {
		t.Fatalf("chunks covered %d rows, want %d", next, whole.Rows)
	}
}
