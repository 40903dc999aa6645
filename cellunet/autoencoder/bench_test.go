package autoencoder_test

import (
	"fmt"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// BenchmarkEncodeAll encodes 4,096 cells × 13,431 genes (~10% nonzero)
// with the reference architecture in each BatchNorm mode; ns/op is one
// whole EncodeAll.
func BenchmarkEncodeAll(b *testing.B) {
	const n, g = 4096, 13431
	_, m := newModel(b, autoencoder.DefaultConfig(g), 0)
	csr := randomSparse(n, g, 0.1, 1)
	for _, o := range []autoencoder.InferOptions{
		{Mode: autoencoder.Running, ChunkRows: 1024},
		{Mode: autoencoder.Dataset, ChunkRows: 1024},
		{Mode: autoencoder.Dataset, ChunkRows: 1024, CacheActivations: true},
	} {
		b.Run(fmt.Sprintf("%s/cache=%v", o.Mode, o.CacheActivations), func(b *testing.B) {
			ct.ResetCPUPeak()
			a0 := ct.CPUAllocatorStats().AllocatedBytes
			for b.Loop() {
				if _, err := m.EncodeAll(csr, o); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(ct.CPUAllocatorStats().PeakAllocatedBytes-a0)/1e6, "peakMB")
		})
	}
}

// BenchmarkTrainStep times reference-size training steps (batch 128,
// 13,431 genes); ns/op is one step.
func BenchmarkTrainStep(b *testing.B) {
	const g = 13431
	csr := randomSparse(1024, g, 0.1, 2)
	cfg := autoencoder.DefaultTrainConfig(g)
	cfg.SaveDir = b.TempDir()
	cfg.MaxSteps = b.N
	cfg.CheckpointFreq = 1 << 30
	cfg.SaveState = false
	b.ResetTimer()
	if _, err := autoencoder.Train(b.Context(), cfg, csr); err != nil {
		b.Fatal(err)
	}
}

// randomSparse is an n×g CSR with the given density of log1p-like values.
func randomSparse(n, g int, density float64, seed uint64) *autoencoder.CSR {
	return randomCSRDensity(n, g, density, seed)
}
