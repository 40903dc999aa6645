package cgotorch_test

import (
	"fmt"
	"math"
	"os"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Tolerances for parity with PyTorch. The golden files come from the same
// libtorch line on the CPU (1.13), where most results are bit-identical; the
// stated bound also covers libtorch 2.x, whose kernels may round differently.
const (
	rtol = 1e-5
	atol = 1e-6
)

func TestMain(m *testing.M) {
	if _, err := ct.Init(ct.Config{Threads: 1}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// golden loads a safetensors golden file into s.
func golden(t testing.TB, s *ct.Scope, path string) map[string]*ct.Tensor {
	t.Helper()
	ns, _, err := ct.LoadSafetensors(path, ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]*ct.Tensor, len(ns))
	for _, n := range ns {
		m[n.Name] = s.Adopt(n.T)
	}
	return m
}

// assertClose checks shape, dtype and |got-want| <= atol + rtol*|want|
// elementwise (NaNs must match NaNs; infinities must be equal).
func assertClose(t testing.TB, name string, got, want *ct.Tensor, rt, at float64) {
	t.Helper()
	if got == nil || want == nil {
		t.Fatalf("%s: missing tensor (got %v, want %v)", name, got, want)
	}
	gs, ws := got.Shape(), want.Shape()
	if fmt.Sprint(gs) != fmt.Sprint(ws) {
		t.Fatalf("%s: shape %v, want %v", name, gs, ws)
	}
	if got.DType() != want.DType() {
		t.Fatalf("%s: dtype %s, want %s", name, got.DType(), want.DType())
	}
	g := toF64(got)
	w := toF64(want)
	bad := 0
	for i := range w {
		if !closeEnough(g[i], w[i], rt, at) {
			if bad < 5 {
				t.Errorf("%s[%d] = %.9g, want %.9g", name, i, g[i], w[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements differ beyond rtol %g atol %g", name, bad, len(w), rt, at)
	}
}

func closeEnough(g, w, rt, at float64) bool {
	switch {
	case math.IsNaN(w):
		return math.IsNaN(g)
	case math.IsInf(w, 0):
		return g == w
	}
	return math.Abs(g-w) <= at+rt*math.Abs(w)
}

func toF64(x *ct.Tensor) []float64 {
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

// rssBytes is the resident set size of this process, from /proc.
func rssBytes(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		t.Fatal(err)
	}
	return resident * int64(os.Getpagesize())
}
