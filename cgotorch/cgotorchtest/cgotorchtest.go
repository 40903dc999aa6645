// Package cgotorchtest holds test helpers shared by the packages built on
// cgotorch: golden-file loading, tolerance comparison of tensors, the
// process's resident set size and the location of the shared real data.
package cgotorchtest

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Golden loads a safetensors golden file into tensors owned by s, by name.
func Golden(tb testing.TB, s *ct.Scope, path string) map[string]*ct.Tensor {
	tb.Helper()
	ns, _, err := ct.LoadSafetensors(path, ct.CPU)
	if err != nil {
		tb.Fatal(err)
	}
	m := make(map[string]*ct.Tensor, len(ns))
	for _, n := range ns {
		m[n.Name] = s.Adopt(n.T)
	}
	return m
}

// AssertClose checks that got and want have the same shape and dtype and
// that |got-want| <= atol + rtol·|want| elementwise (NaN must meet NaN,
// infinities must be equal). It reports up to five differing elements.
func AssertClose(tb testing.TB, name string, got, want *ct.Tensor, rtol, atol float64) {
	tb.Helper()
	if got == nil || want == nil {
		tb.Fatalf("%s: missing tensor (got %v, want %v)", name, got, want)
	}
	gs, ws := got.Shape(), want.Shape()
	if fmt.Sprint(gs) != fmt.Sprint(ws) {
		tb.Fatalf("%s: shape %v, want %v", name, gs, ws)
	}
	if got.DType() != want.DType() {
		tb.Fatalf("%s: dtype %s, want %s", name, got.DType(), want.DType())
	}
	g, w := Float64s(got), Float64s(want)
	bad := 0
	for i := range w {
		if !Close(g[i], w[i], rtol, atol) {
			if bad < 5 {
				tb.Errorf("%s[%d] = %.9g, want %.9g", name, i, g[i], w[i])
			}
			bad++
		}
	}
	if bad > 0 {
		tb.Errorf("%s: %d of %d elements differ beyond rtol %g atol %g", name, bad, len(w), rtol, atol)
	}
}

// RNGTolerance is the tolerance for comparing values drawn by libtorch's
// random functions with goldens made by PyTorch 1.13: exact on libtorch
// 1.x; on 2.x uniform_ and normal_ round the final scaling differently (a
// few ulps), so rtol 1e-5 and atol 1e-8.
func RNGTolerance() (rtol, atol float64) {
	if strings.HasPrefix(ct.Build().TorchVersion, "1.") {
		return 0, 0
	}
	return 1e-5, 1e-8
}

// Close reports whether g is within atol + rtol·|w| of w (NaN matches NaN).
func Close(g, w, rtol, atol float64) bool {
	switch {
	case math.IsNaN(w):
		return math.IsNaN(g)
	case math.IsInf(w, 0):
		return g == w
	}
	return math.Abs(g-w) <= atol+rtol*math.Abs(w)
}

// Float64s copies any tensor's elements to float64 (via a float64 copy for
// other floating types).
func Float64s(x *ct.Tensor) []float64 {
	switch x.DType() {
	case ct.Float64:
		return x.Float64s()
	case ct.Int64:
		v := x.Int64s()
		out := make([]float64, len(v))
		for i, e := range v {
			out[i] = float64(e)
		}
		return out
	case ct.Bool:
		v := x.Bools()
		out := make([]float64, len(v))
		for i, e := range v {
			if e {
				out[i] = 1
			}
		}
		return out
	}
	s := ct.NewScope()
	defer s.Close()
	return s.Adopt(x.ToDType(ct.Float64)).Float64s()
}

// LoadPT reads every tensor of a .pt file (a state dict or checkpoint) as
// float64 values, by name.
func LoadPT(tb testing.TB, path string) map[string][]float64 {
	tb.Helper()
	sd, err := ct.LoadPT(path, ct.CPU)
	if err != nil {
		tb.Fatal(err)
	}
	defer ct.FreeAll(sd)
	out := map[string][]float64{}
	if err := ct.Try(func() {
		for _, n := range sd {
			out[n.Name] = Float64s(n.T)
		}
	}); err != nil {
		tb.Fatal(err)
	}
	return out
}

// RSS is this process's resident set size in bytes (/proc/self/statm).
func RSS(tb testing.TB) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		tb.Fatal(err)
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		tb.Fatal(err)
	}
	return resident * int64(os.Getpagesize())
}

// DataDir is the shared real-data directory: $GOTORCH_TESTDATA_DIR, else
// ../shared/data beside the repository root (the directory with go.mod).
// It fails the test if the directory does not exist.
func DataDir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("GOTORCH_TESTDATA_DIR")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			tb.Fatal(err)
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "..", "shared", "data")
				break
			}
			if filepath.Dir(d) == d {
				tb.Fatalf("no go.mod above %s and GOTORCH_TESTDATA_DIR unset", wd)
			}
		}
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		tb.Fatalf("shared data directory %s not found (set GOTORCH_TESTDATA_DIR)", dir)
	}
	return dir
}
