package cellunet_test

import (
	"fmt"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/internal/unettest"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// TestLoadInfersConfig: a reference state_dict loads without being told its
// architecture and reproduces PyTorch's forward; other files are refused.
func TestLoadInfersConfig(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	g := cgotorchtest.Golden(t, s, "testdata/small_golden.safetensors")
	m, err := cellunet.Load("testdata/small.pt", ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if c := m.Config(); c.InputDim != 16 || fmt.Sprint(c.Hidden) != "[32 32 16 8]" {
		t.Errorf("inferred %+v", c)
	}
	cgotorchtest.AssertFP32(t, "forward", s.Adopt(m.Forward(g["x"], g["t"])), g["forward"], cgotorchtest.FP32{K: unettest.ForwardK(m.Config())})
	for _, bad := range []string{"testdata/nope.pt", "autoencoder/testdata/small.pt", "model_test.go"} {
		if l, err := cellunet.Load(bad, ct.CPU); err == nil {
			l.Close()
			t.Errorf("%s: no error", bad)
		}
	}
}
