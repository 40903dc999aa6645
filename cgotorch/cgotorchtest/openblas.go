package cgotorchtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// kernelEnv marks a child process started by RunUnderOpenBLASKernels; its
// value is the forced kernel family.
const kernelEnv = "GOTORCH_OPENBLAS_KERNEL_CHILD"

// RunUnderOpenBLASKernels reruns the calling test binary's tests matching
// pattern once per OpenBLAS kernel family that other x86-64 CPUs get —
// Prescott (SSE3), Haswell (AVX2) and SkylakeX (AVX-512), each where this
// CPU can execute it — in child processes, because OpenBLAS reads
// OPENBLAS_CORETYPE when it loads. Each child first checks that OpenBLAS
// really runs the forced kernels. In a child, or with -short, or without
// OpenBLAS, it skips.
func RunUnderOpenBLASKernels(t *testing.T, pattern string) {
	t.Helper()
	if want := os.Getenv(kernelEnv); want != "" {
		if got := ct.OpenBLASCore(); !strings.EqualFold(got, want) {
			t.Fatalf("OpenBLAS runs %q kernels, want %q", got, want)
		}
		t.Skipf("child process (OpenBLAS %s)", want)
	}
	if testing.Short() {
		t.Skip("-short")
	}
	if ct.OpenBLASCore() == "" {
		t.Skip("OpenBLAS is not the loaded BLAS")
	}
	info, _ := os.ReadFile("/proc/cpuinfo")
	var flags []string
	for _, line := range strings.Split(string(info), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags = strings.Fields(v)
			break
		}
	}
	has := func(f string) bool {
		for _, x := range flags {
			if x == f {
				return true
			}
		}
		return false
	}
	for _, c := range []struct{ core, needs string }{{"Prescott", ""}, {"Haswell", "avx2"}, {"SkylakeX", "avx512f"}} {
		t.Run(c.core, func(t *testing.T) {
			if c.needs != "" && !has(c.needs) {
				t.Skipf("this CPU has no %s", c.needs)
			}
			// The caller's own test runs first in the child: it checks the kernels.
			cmd := exec.Command(os.Args[0], "-test.run", "^"+t.Name()[:strings.Index(t.Name(), "/")]+"$|"+pattern, "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "OPENBLAS_CORETYPE="+c.core, kernelEnv+"="+c.core)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("with OPENBLAS_CORETYPE=%s: %v\n%s", c.core, err, out)
			}
			if !strings.Contains(string(out), "\nPASS\n") && !strings.HasSuffix(string(out), "PASS\n") {
				t.Fatalf("with OPENBLAS_CORETYPE=%s: no PASS\n%s", c.core, out)
			}
			t.Logf("OPENBLAS_CORETYPE=%s: ok", c.core)
		})
	}
}
