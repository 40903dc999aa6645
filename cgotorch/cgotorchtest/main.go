package cgotorchtest

import (
	"fmt"
	"os"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Main is the TestMain of the packages built on cgotorch: it initialises
// libtorch with one intra-op thread (deterministic and comparable runs) and
// exits with the tests' status.
func Main(m *testing.M) {
	if _, err := ct.Init(ct.Config{Threads: 1}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
