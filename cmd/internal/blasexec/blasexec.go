// Package blasexec restarts a command with OPENBLAS_CORETYPE set when
// OpenBLAS chose weaker kernels than the CPU supports. It is for main
// packages only: it may replace the process.
package blasexec

import (
	"fmt"
	"io"
	"os"
	"syscall"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Reexec replaces the process with itself plus OPENBLAS_CORETYPE when
// cgotorch.OpenBLASAdvice has advice (Debian 12's OpenBLAS 0.3.21 falls back
// to its SSE3 kernels on CPU models newer than itself: matrix products 4×
// slower on AVX-512 machines). OpenBLAS reads the variable only when it
// loads, hence the new process. In the new process it prints a note to
// stderr and returns. Setting OPENBLAS_CORETYPE, or GOTORCH_NO_BLAS_REEXEC,
// keeps the user's choice. On any failure it returns and the program runs
// with OpenBLAS's own choice.
func Reexec(stderr io.Writer) {
	if note := os.Getenv("GOTORCH_BLAS_NOTE"); note != "" {
		fmt.Fprintf(stderr, "note: OpenBLAS chose its %s kernels for this CPU; running with OPENBLAS_CORETYPE=%s (set OPENBLAS_CORETYPE or GOTORCH_NO_BLAS_REEXEC=1 to choose yourself)\n",
			note, os.Getenv("OPENBLAS_CORETYPE"))
		os.Unsetenv("GOTORCH_BLAS_NOTE")
		return
	}
	if os.Getenv("GOTORCH_NO_BLAS_REEXEC") != "" {
		return
	}
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return
	}
	current, suggested := ct.OpenBLASAdvice(string(info))
	if suggested == "" {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	env := append(os.Environ(), "OPENBLAS_CORETYPE="+suggested, "GOTORCH_BLAS_NOTE="+current)
	_ = syscall.Exec(exe, os.Args, env)
}
