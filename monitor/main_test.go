package monitor

import (
	"fmt"
	"os"
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

func TestMain(m *testing.M) {
	if _, err := cgotorch.Init(cgotorch.Config{Threads: 1}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
