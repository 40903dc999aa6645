package scdata

import (
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSyntheticH5AD(t *testing.T) {
	path := filepath.Join(t.TempDir(), "synthetic.h5ad")
	cfg := SyntheticConfig{Cells: 1500, Genes: 700, Density: 0.1, Classes: 5, Seed: 3, ChunkRows: 256}
	must(t, WriteSyntheticH5AD(path, cfg))
	d, err := Open(path, OpenOptions{})
	must(t, err)
	defer d.Close()
	m, err := d.ReadCSR()
	must(t, err)
	density := float64(m.NNZ()) / float64(m.Rows*m.Cols)
	if m.Rows != 1500 || m.Cols != 700 || math.Abs(density-0.1) > 0.005 {
		t.Fatalf("%d x %d with density %.4f", m.Rows, m.Cols, density)
	}
	p, err := Preprocess(d, PreprocessConfig{RequireIntegerCounts: true})
	must(t, err)
	if len(p.Classes) != 5 || p.X.Rows != 1500 {
		t.Fatalf("preprocessed %d cells, %d classes", p.X.Rows, len(p.Classes))
	}
	// Deterministic.
	path2 := filepath.Join(t.TempDir(), "again.h5ad")
	must(t, WriteSyntheticH5AD(path2, cfg))
	d2, err := Open(path2, OpenOptions{})
	must(t, err)
	defer d2.Close()
	m2, err := d2.ReadCSR()
	must(t, err)
	if csrSHA(m) != csrSHA(m2) {
		t.Fatal("synthetic data is not deterministic")
	}
}

// peakRSS returns the process's peak resident set size (VmHWM) in bytes.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	return 0
}

// BenchmarkPreprocessSynthetic preprocesses a synthetic CSR h5ad. By
// default it uses a 10,000 x 13,431 matrix; SCDATA_BENCH_FULL=1 uses the
// Open Problems shape (69,249 x 13,431, ~93 M non-zeros; the file is
// generated in the benchmark's temporary folder, ~750 MB). It reports the
// process's peak RSS (VmHWM, which includes generating the file).
func BenchmarkPreprocessSynthetic(b *testing.B) {
	cfg := SyntheticConfig{Cells: 10000, Seed: 1}
	if os.Getenv("SCDATA_BENCH_FULL") == "1" {
		cfg.Cells = 0
	}
	path := filepath.Join(b.TempDir(), "synthetic.h5ad")
	t0 := time.Now()
	if err := WriteSyntheticH5AD(path, cfg); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %s in %v", path, time.Since(t0))
	runtime.GC()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := Open(path, OpenOptions{})
		if err != nil {
			b.Fatal(err)
		}
		p, err := Preprocess(d, PreprocessConfig{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(p.X.NNZ()), "nnz")
		d.Close()
	}
	b.ReportMetric(peakRSS()/1e6, "peakRSS-MB")
}
