package cgotorch_test

import (
	"os"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

func TestOpenBLASAdvice(t *testing.T) {
	core := ct.OpenBLASCore()
	t.Logf("OpenBLAS core %q, OPENBLAS_CORETYPE=%q", core, os.Getenv("OPENBLAS_CORETYPE"))
	if core == "" {
		t.Skip("OpenBLAS is not libtorch's BLAS here")
	}
	if os.Getenv("OPENBLAS_CORETYPE") != "" {
		t.Skip("OPENBLAS_CORETYPE is set: no advice by design")
	}
	cases := []struct {
		name, cpuinfo string
		want          string
	}{
		{"no simd info", "vendor_id : GenuineIntel\nflags : fpu sse2\n", ""},
		{"avx2 intel", "vendor_id : GenuineIntel\nflags : fpu sse2 avx avx2 fma\n", "Haswell"},
		{"avx2 amd", "vendor_id : AuthenticAMD\nflags : fpu sse2 avx avx2 fma\n", "Zen"},
		{"avx512", "vendor_id : GenuineIntel\nflags : avx2 fma avx512f avx512vl avx512bw avx512dq\n", "SkylakeX"},
		{"avx512 bf16", "vendor_id : GenuineIntel\nflags : avx2 fma avx512f avx512vl avx512bw avx512dq avx512_bf16\n", "Cooperlake"},
	}
	rank := map[string]int{"Haswell": 2, "Zen": 2, "SkylakeX": 3, "Cooperlake": 4}
	for _, tc := range cases {
		_, got := ct.OpenBLASAdvice(tc.cpuinfo)
		// Advice is only given when the CPU supports more than OpenBLAS chose.
		if got != "" && got != tc.want {
			t.Errorf("%s: advice %q, want %q or none", tc.name, got, tc.want)
		}
		if tc.want == "" && got != "" {
			t.Errorf("%s: advice %q for a CPU without AVX2", tc.name, got)
		}
		if got == "" && tc.want != "" && core == "Prescott" {
			t.Errorf("%s: no advice although OpenBLAS uses %s (rank %d kernels available)", tc.name, core, rank[tc.want])
		}
	}
}
