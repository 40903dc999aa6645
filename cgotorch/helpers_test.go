package cgotorch_test

import (
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// Tolerances for parity with PyTorch. The golden files come from the same
// libtorch line on the CPU (1.13), where most results are bit-identical; the
// stated bound also covers libtorch 2.x, whose kernels may round differently.
const (
	rtol = 1e-5
	atol = 1e-6
)

func TestMain(m *testing.M) { cgotorchtest.Main(m) }

var (
	golden      = cgotorchtest.Golden
	assertClose = cgotorchtest.AssertClose
	rssBytes    = cgotorchtest.RSS
)
