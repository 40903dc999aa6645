// Command gotorch-synth writes a synthetic raw-count .h5ad of the
// reference's Open Problems shape (69,249 cells × 13,431 genes, ~10%
// non-zero, 22 classes) for scripts/bench-data.sh:
//
//	gotorch-synth FILE
package main

import (
	"fmt"
	"os"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gotorch-synth FILE")
		os.Exit(2)
	}
	if err := scdata.WriteSyntheticH5AD(os.Args[1], scdata.SyntheticConfig{Seed: 1}); err != nil {
		fmt.Fprintln(os.Stderr, "gotorch-synth:", err)
		os.Exit(1)
	}
}
