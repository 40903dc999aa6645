package monitor

import (
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

func TestMain(m *testing.M) { cgotorchtest.Main(m) }
