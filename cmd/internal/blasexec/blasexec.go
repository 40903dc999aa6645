// Package blasexec restarts a command with the runtime settings that
// libraries read only when they load, where the environment leaves them to
// defaults that are slow: OPENBLAS_CORETYPE (OpenBLAS's kernel family) and
// OMP_WAIT_POLICY (what libgomp's idle threads do). It is for main packages
// only: it may replace the process.
package blasexec

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

const (
	// setEnv, in the restarted process, lists what Reexec set:
	// "OPENBLAS_CORETYPE:<OpenBLAS's own choice>" and/or "OMP_WAIT_POLICY".
	// It also marks the process as restarted.
	setEnv = "GOTORCH_REEXEC_SET"
	// optOut keeps the environment exactly as it is.
	optOut = "GOTORCH_NO_BLAS_REEXEC"
	// waitPolicy is the OMP_WAIT_POLICY Reexec sets.
	waitPolicy = "PASSIVE"
)

// Reexec replaces the process with itself plus the settings it lacks:
//
//   - OPENBLAS_CORETYPE, when cgotorch.OpenBLASAdvice has advice (Debian 12's
//     OpenBLAS 0.3.21 falls back to its SSE3 kernels on CPU models newer than
//     itself: matrix products 4× slower on AVX-512 machines);
//   - OMP_WAIT_POLICY=PASSIVE, when neither OMP_WAIT_POLICY nor
//     GOMP_SPINCOUNT is set: libgomp's default keeps idle worker threads
//     spinning, which on a machine with few (virtual) cores takes the cores
//     from the threads doing the work (training ran 3× slower on 2 vCPUs,
//     most of the time in the kernel); sleeping workers cost a wake-up per
//     parallel region, which BENCHMARKS.md's "as a user runs it" table
//     measures against the alternatives.
//
// Both are read by the libraries when they load, hence the new process; it
// costs one more load of libtorch, about 0.3 s of CPU (restarting earlier,
// from the executable's .preinit_array, saves nothing measurable: loading
// and relocating the libraries is the cost, and a setenv there is undone by
// libc's initialiser, which runs after it and before libgomp's). A
// variable the user set is never changed; GOTORCH_NO_BLAS_REEXEC=1 keeps the
// whole environment as it is. If the restart fails, Reexec says so on
// stderr and returns: the program runs with the libraries' own choices.
// Header describes the outcome.
func Reexec(stderr io.Writer) {
	if os.Getenv(setEnv) != "" || os.Getenv(optOut) != "" {
		return
	}
	var add, set []string
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if current, suggested := ct.OpenBLASAdvice(string(info)); suggested != "" {
			add = append(add, "OPENBLAS_CORETYPE="+suggested)
			set = append(set, "OPENBLAS_CORETYPE:"+current)
		}
	}
	if _, ok := os.LookupEnv("OMP_WAIT_POLICY"); !ok && os.Getenv("GOMP_SPINCOUNT") == "" {
		add = append(add, "OMP_WAIT_POLICY="+waitPolicy)
		set = append(set, "OMP_WAIT_POLICY")
	}
	if len(add) == 0 {
		return
	}
	exe, err := os.Executable()
	if err == nil {
		env := append(os.Environ(), add...)
		env = append(env, setEnv+"="+strings.Join(set, ","))
		err = syscall.Exec(exe, os.Args, env)
	}
	fmt.Fprintf(stderr, "note: could not restart with %s (%v); running with the libraries' defaults\n", strings.Join(add, " "), err)
}

// Header is the line a command prints before it starts work: the intra-op
// thread count, the OpenMP wait policy and the OpenBLAS kernels in use,
// saying which of them gotorch-train set and how to choose otherwise.
func Header(threads int) string {
	setCore, setWait := "", false
	for _, s := range strings.Split(os.Getenv(setEnv), ",") {
		if k, v, ok := strings.Cut(s, ":"); ok && k == "OPENBLAS_CORETYPE" {
			setCore = v
		} else if s == "OMP_WAIT_POLICY" {
			setWait = true
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "runtime: %d intra-op thread(s)", threads)
	wait := os.Getenv("OMP_WAIT_POLICY")
	switch {
	case setWait:
		fmt.Fprintf(&b, ", OMP_WAIT_POLICY=%s (set by gotorch-train)", wait)
	case wait != "":
		fmt.Fprintf(&b, ", OMP_WAIT_POLICY=%s (yours)", wait)
	case os.Getenv("GOMP_SPINCOUNT") != "":
		fmt.Fprintf(&b, ", GOMP_SPINCOUNT=%s (yours)", os.Getenv("GOMP_SPINCOUNT"))
	default:
		b.WriteString(", OpenMP wait policy: libgomp's default")
	}
	if core := ct.OpenBLASCore(); core != "" {
		switch {
		case setCore != "":
			fmt.Fprintf(&b, ", OpenBLAS %s kernels (set by gotorch-train; OpenBLAS chose %s)", core, setCore)
		case os.Getenv("OPENBLAS_CORETYPE") != "":
			fmt.Fprintf(&b, ", OpenBLAS %s kernels (OPENBLAS_CORETYPE yours)", core)
		default:
			fmt.Fprintf(&b, ", OpenBLAS %s kernels", core)
		}
	}
	if setCore != "" || setWait {
		fmt.Fprintf(&b, " (export OMP_WAIT_POLICY, OPENBLAS_CORETYPE to choose; %s=1 keeps the environment)", optOut)
	}
	return b.String()
}
