package autoencoder_test

import (
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/nn"
)

// fp32 parity with PyTorch where the math is the same (≤1e-5 relative).
const (
	rtol = 1e-5
	atol = 1e-6
)

func TestMain(m *testing.M) { cgotorchtest.Main(m) }

// smallConfig is the architecture of testdata/small.pt and the small goldens.
func smallConfig() autoencoder.Config {
	return autoencoder.Config{Genes: 50, Hidden: []int64{64, 48, 32}, Latent: 16}
}

// newModel builds cfg on the CPU after ManualSeed(seed); the store is closed
// at the end of the test.
func newModel(t testing.TB, cfg autoencoder.Config, seed uint64) (*nn.Store, *autoencoder.Model) {
	t.Helper()
	if err := ct.ManualSeed(seed); err != nil {
		t.Fatal(err)
	}
	st := nn.NewStore(ct.CPU)
	m, err := autoencoder.New(st.Root(), cfg)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st, m
}

// smallPT loads testdata/small.pt into a fresh small model.
func smallPT(t testing.TB) *autoencoder.Model {
	t.Helper()
	_, m := newModel(t, smallConfig(), 99)
	if err := m.LoadCheckpoint("testdata/small.pt"); err != nil {
		t.Fatal(err)
	}
	return m
}

// smallGolden loads the small goldens into s.
func smallGolden(t testing.TB, s *ct.Scope) map[string]*ct.Tensor {
	t.Helper()
	return cgotorchtest.Golden(t, s, "testdata/small_golden.safetensors")
}

// goldenCSR is the golden expression matrix X [150,50] as an in-memory CSR.
func goldenCSR(t testing.TB, g map[string]*ct.Tensor) *autoencoder.CSR {
	t.Helper()
	x := g["X"]
	csr, err := autoencoder.CSRFromDense(x.Float32s(), int(x.Dim(0)), int(x.Dim(1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.Validate(); err != nil {
		t.Fatal(err)
	}
	return csr
}

// assertSlice compares a host result with a golden tensor of shape [rows, cols].
func assertSlice(t testing.TB, name string, got []float32, want *ct.Tensor, rt, at float64) {
	t.Helper()
	s := ct.NewScope()
	defer s.Close()
	w := want.Shape()
	cgotorchtest.AssertClose(t, name, s.FromSlice(got, w...), want, rt, at)
}
