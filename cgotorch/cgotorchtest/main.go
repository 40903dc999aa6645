package cgotorchtest

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// ThreadsEnv names the environment variable that sets the intra-op thread
// count of the tests (libtorch and OpenBLAS): 1 when unset. CI runs the
// optimizer, determinism and exact-resume tests at 1 and 2 threads with it
// (.ci/run); the OpenBLAS kernel family is chosen the usual way, with
// OPENBLAS_CORETYPE, which OpenBLAS reads when it loads.
const ThreadsEnv = "GOTORCH_TEST_THREADS"

// Threads is the intra-op thread count the tests run with: $GOTORCH_TEST_THREADS,
// else 1. An invalid value is an error, not a silent default.
func Threads() (int, error) {
	v := os.Getenv(ThreadsEnv)
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s=%q: want a positive integer (intra-op threads for the tests)", ThreadsEnv, v)
	}
	return n, nil
}

// Main is the TestMain of the packages built on cgotorch: it initialises
// libtorch with Threads() intra-op threads (1 unless GOTORCH_TEST_THREADS
// says otherwise), states the thread count and OpenBLAS kernels on stderr
// when they are not the defaults, and exits with the tests' status.
func Main(m *testing.M) {
	n, err := Threads()
	if err == nil {
		_, err = ct.Init(ct.Config{Threads: n})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if n != 1 || os.Getenv("OPENBLAS_CORETYPE") != "" {
		fmt.Fprintf(os.Stderr, "cgotorchtest: %d intra-op thread(s), OpenBLAS %s kernels\n", ct.NumThreads(), ct.OpenBLASCore())
	}
	os.Exit(m.Run())
}
