package autoencoder_test

import (
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/nn"
)

// Parity with PyTorch follows the rule in cgotorch/cgotorchtest
// (tolerance.go) with the accumulation lengths below. A block is
// Linear(in) → BatchNorm1d → PReLU: in, the statistics' mean and variance
// over the rows they are computed from (2·rows; fixed statistics, as in
// Running mode, 2), and 3 elementwise roundings.
func bnK(rows int) int {
	if rows <= 1 {
		return 2
	}
	return 2 * rows
}

// encodeK: the encoder blocks, the final Linear and the L2 normalisation
// of the latent.
func encodeK(cfg autoencoder.Config, rows int) int {
	k, in := 0, cfg.Genes
	for _, h := range cfg.Hidden {
		k += int(in) + bnK(rows) + 3
		in = h
	}
	return k + int(in) + 2*int(cfg.Latent)
}

// decodeK: the decoder blocks (the hidden widths reversed), the final
// Linear and the ReLU.
func decodeK(cfg autoencoder.Config, rows int) int {
	k, in := 0, cfg.Latent
	for i := len(cfg.Hidden) - 1; i >= 0; i-- {
		k += int(in) + bnK(rows) + 3
		in = cfg.Hidden[i]
	}
	return k + int(in) + 1
}

// assertK compares under the rule with accumulation length k.
func assertK(t testing.TB, name string, got, want *ct.Tensor, k int) {
	t.Helper()
	cgotorchtest.AssertFP32(t, name, got, want, cgotorchtest.FP32{K: k})
}

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

// assertSlice compares a host result with a golden tensor of shape
// [rows, cols] under the rule with accumulation length k.
func assertSlice(t testing.TB, name string, got []float32, want *ct.Tensor, k int) {
	t.Helper()
	s := ct.NewScope()
	defer s.Close()
	w := want.Shape()
	assertK(t, name, s.FromSlice(got, w...), want, k)
}
