package cgotorch_test

import (
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// Parity with PyTorch follows the tolerance rule of cgotorchtest
// (tolerance.go): assertFP32 with each computation's accumulation length.

func TestMain(m *testing.M) { cgotorchtest.Main(m) }

var (
	golden      = cgotorchtest.Golden
	assertClose = cgotorchtest.AssertClose
	assertFP32  = cgotorchtest.AssertFP32
	rssBytes    = cgotorchtest.RSS
)
