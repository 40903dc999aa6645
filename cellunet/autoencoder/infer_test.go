package autoencoder_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// buffers copies every BatchNorm buffer of m.
func buffers(m *autoencoder.Model) map[string][]float64 {
	out := map[string][]float64{}
	for _, p := range m.Params() {
		if p.Buffer {
			out[p.Name] = cgotorchtest.Float64s(p.T)
		}
	}
	return out
}

func assertBuffersUnchanged(t *testing.T, m *autoencoder.Model, before map[string][]float64) {
	t.Helper()
	for name, v := range buffers(m) {
		if fmt.Sprint(v) != fmt.Sprint(before[name]) {
			t.Errorf("buffer %s changed during inference", name)
		}
	}
}

// TestEncodeAllDatasetEqualsFullBatch: the chunked Dataset-mode encode
// equals the reference's single train-mode pass over all 150 rows in
// PyTorch, for chunk sizes that do and do not divide N, with and without
// the host activation cache, and leaves the running statistics alone.
func TestEncodeAllDatasetEqualsFullBatch(t *testing.T) {
	m := smallPT(t)
	s := ct.NewScope()
	defer s.Close()
	g := smallGolden(t, s)
	csr := goldenCSR(t, g)
	before := buffers(m)
	var first []float32
	for _, chunk := range []int{7, 64, 150, 1000} {
		for _, cache := range []bool{false, true} {
			name := fmt.Sprintf("chunk %d cache %v", chunk, cache)
			z, err := m.EncodeAll(csr, autoencoder.InferOptions{Mode: autoencoder.Dataset, ChunkRows: chunk, CacheActivations: cache})
			if err != nil {
				t.Fatal(err)
			}
			assertSlice(t, name, z, g["ds.z"], encodeK(m.Config(), 150))
			if first == nil {
				first = z
			} else {
				// Chunks change only the matrix products' row counts and
				// the order the statistics are summed in: the rule again.
				assertSlice(t, name+" vs chunk 7", z, s.FromSlice(first, 150, 16), encodeK(m.Config(), 150))
			}
			for r := 0; r < 150; r++ {
				var n float64
				for _, v := range z[r*16 : (r+1)*16] {
					n += float64(v) * float64(v)
				}
				// L2-normalised rows: one norm over 16 terms, then a division.
				if math.Abs(math.Sqrt(n)-1) > 2*cgotorchtest.Gamma(16+2, cgotorchtest.UnitRoundoff(ct.Float32)) {
					t.Fatalf("%s: row %d has norm %g", name, r, math.Sqrt(n))
				}
			}
		}
	}
	// The tensor-level Dataset mode on the whole matrix is the same thing.
	var z *ct.Tensor
	ct.NoGrad(func() { z = m.Encode(g["X"], autoencoder.Dataset) })
	assertK(t, "Encode(Dataset)", z, g["ds.z"], encodeK(m.Config(), 150))
	assertBuffersUnchanged(t, m, before)
}

// TestEncodeAllRunningEqualsEval: Running mode equals PyTorch's eval mode,
// row by row, whatever the chunk size.
func TestEncodeAllRunningEqualsEval(t *testing.T) {
	m := smallPT(t)
	s := ct.NewScope()
	defer s.Close()
	g := smallGolden(t, s)
	csr := goldenCSR(t, g)
	before := buffers(m)
	for _, chunk := range []int{1, 7, 150} {
		for _, cache := range []bool{false, true} { // the cache is a Dataset-mode option
			z, err := m.EncodeAll(csr, autoencoder.InferOptions{Mode: autoencoder.Running, ChunkRows: chunk, CacheActivations: cache})
			if err != nil {
				t.Fatal(err)
			}
			assertSlice(t, fmt.Sprintf("running chunk %d", chunk), z, g["run.z"], encodeK(m.Config(), 0))
		}
	}
	var z *ct.Tensor
	ct.NoGrad(func() { z = m.Encode(g["X"], autoencoder.Running) })
	assertK(t, "Encode(Running)", z, g["run.z"], encodeK(m.Config(), 0))
	assertBuffersUnchanged(t, m, before)
}

// collect runs DecodeAll and concatenates the streamed chunks, checking
// that they arrive in order and cover every row once.
func collect(t *testing.T, m *autoencoder.Model, lat, ref []float32, opts autoencoder.InferOptions, relu bool) []float32 {
	t.Helper()
	var out []float32
	next := 0
	err := m.DecodeAll(lat, ref, opts, relu, func(start, n int, rows []float32) error {
		if start != next || len(rows) != n*int(m.Config().Genes) || n > opts.ChunkRows {
			return fmt.Errorf("chunk start %d n %d len %d; expected start %d", start, n, len(rows), next)
		}
		next += n
		out = append(out, rows...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDecodeAll: Dataset-mode decode equals PyTorch's train-mode decode of
// all requested latents in one pass; with bnRef it equals the decode of
// the union with only the requested rows returned; Running equals eval
// mode; relu=false returns the raw decoder output. Chunk sizes 7 and 64
// (neither divides 40 + 110 rows), with and without the cache.
func TestDecodeAll(t *testing.T) {
	m := smallPT(t)
	s := ct.NewScope()
	defer s.Close()
	g := smallGolden(t, s)
	lat, ref := g["dec.latents"].Float32s(), g["dec.ref"].Float32s()
	runLat := s.Adopt(g["run.z"].Narrow(0, 0, 40)).Contiguous().Float32s()
	before := buffers(m)
	cases := []struct {
		name     string
		mode     autoencoder.BNMode
		lat, ref []float32
		relu     bool
		want     string
		statRows int // rows of the BatchNorm statistics
	}{
		{"dataset", autoencoder.Dataset, lat, nil, true, "ds.dec", 40},
		{"dataset raw", autoencoder.Dataset, lat, nil, false, "ds.dec_raw", 40},
		{"dataset with bnRef", autoencoder.Dataset, lat, ref, true, "ds.dec_union", 150},
		{"running", autoencoder.Running, runLat, nil, true, "run.dec", 0},
		{"running raw", autoencoder.Running, runLat, nil, false, "run.dec_raw", 0},
		{"running ignores bnRef", autoencoder.Running, runLat, ref, true, "run.dec", 0},
	}
	for _, c := range cases {
		for _, chunk := range []int{7, 64} {
			for _, cache := range []bool{false, true} {
				opts := autoencoder.InferOptions{Mode: c.mode, ChunkRows: chunk, CacheActivations: cache}
				got := collect(t, m, c.lat, c.ref, opts, c.relu)
				assertSlice(t, fmt.Sprintf("%s chunk %d cache %v", c.name, chunk, cache), got, g[c.want], decodeK(m.Config(), c.statRows))
			}
		}
	}
	assertBuffersUnchanged(t, m, before)
}

// TestInferenceErrors: Training mode, too few rows for batch statistics,
// ragged latents and callback errors are reported, not panicked.
func TestInferenceErrors(t *testing.T) {
	m := smallPT(t)
	one := make([]float32, 16)
	one[0] = 1
	if err := m.DecodeAll(one, nil, autoencoder.InferOptions{Mode: autoencoder.Training}, true, nil); err == nil {
		t.Error("DecodeAll in Training mode succeeded")
	}
	if err := m.DecodeAll(one, nil, autoencoder.InferOptions{}, true, func(int, int, []float32) error { return nil }); err == nil {
		t.Error("Dataset-mode decode of one row succeeded")
	}
	if err := m.DecodeAll(one, one, autoencoder.InferOptions{}, true, func(int, int, []float32) error { return nil }); err != nil {
		t.Errorf("one row plus one reference row: %v", err)
	}
	if err := m.DecodeAll(one[:15], nil, autoencoder.InferOptions{}, true, nil); err == nil {
		t.Error("ragged latents accepted")
	}
	stop := errors.New("disk full")
	base := ct.LiveTensors()
	two := append(append([]float32{}, one...), one...)
	err := m.DecodeAll(append(two, two...), nil, autoencoder.InferOptions{ChunkRows: 2}, true, func(start, n int, rows []float32) error {
		if start > 0 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("callback error: %v", err)
	}
	if d := ct.LiveTensors() - base; d != 0 {
		t.Errorf("%d handles leaked on the error path", d)
	}
}

// randomCSR is a sparse log1p-like matrix n×g with ~30% nonzeros.
func randomCSR(n, g int, seed uint64) *autoencoder.CSR { return randomCSRDensity(n, g, 0.3, seed) }

func randomCSRDensity(n, g int, density float64, seed uint64) *autoencoder.CSR {
	r := rand.New(rand.NewPCG(seed, 1))
	m := &autoencoder.CSR{NumRows: n, NumCols: g, Indptr: make([]int64, n+1)}
	for i := 0; i < n; i++ {
		for j := 0; j < g; j++ {
			if r.Float64() < density {
				m.Indices = append(m.Indices, int32(j))
				m.Data = append(m.Data, float32(math.Log1p(r.ExpFloat64()*5)))
			}
		}
		m.Indptr[i+1] = int64(len(m.Data))
	}
	return m
}

// TestInferenceMemory: EncodeAll and DecodeAll free every handle, keep RSS
// flat over many chunks, and hold tensor memory bounded by the chunk, not
// by N: a 2,048×2,000 matrix (16.4 MB dense) is encoded with a tensor peak
// below a quarter of that.
func TestInferenceMemory(t *testing.T) {
	const n, g = 2048, 2000
	_, m := newModel(t, autoencoder.Config{Genes: g, Hidden: []int64{64, 64, 64}, Latent: 16}, 5)
	csr := randomCSR(n, g, 3)
	run := func(opts autoencoder.InferOptions) {
		z, err := m.EncodeAll(csr, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.DecodeAll(z[:200*16], z[200*16:], opts, true, func(int, int, []float32) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	opts := []autoencoder.InferOptions{
		{Mode: autoencoder.Dataset, ChunkRows: 64},
		{Mode: autoencoder.Dataset, ChunkRows: 64, CacheActivations: true},
		{Mode: autoencoder.Running, ChunkRows: 64},
	}
	for _, o := range opts { // warm-up
		run(o)
	}
	base, rss0 := ct.LiveTensors(), cgotorchtest.RSS(t)
	alloc0 := ct.CPUAllocatorStats().AllocatedBytes
	ct.ResetCPUPeak()
	for i := 0; i < 4; i++ {
		for _, o := range opts {
			run(o)
		}
	}
	st := ct.CPUAllocatorStats()
	if d := ct.LiveTensors() - base; d != 0 {
		t.Errorf("%d tensor handles leaked", d)
	}
	if st.AllocatedBytes != alloc0 {
		t.Errorf("tensor bytes in use %d, before %d", st.AllocatedBytes, alloc0)
	}
	dense := int64(n * g * 4)
	if peak := st.PeakAllocatedBytes - alloc0; peak > dense/4 {
		t.Errorf("tensor peak %d bytes above the weights, dense matrix is %d", peak, dense)
	} else {
		t.Logf("tensor peak above the weights: %.2f MB (dense matrix %.1f MB; one 64-row input chunk %.2f MB)",
			float64(peak)/1e6, float64(dense)/1e6, float64(64*g*4)/1e6)
	}
	if grow := cgotorchtest.RSS(t) - rss0; grow > 8<<20 {
		t.Errorf("RSS grew by %d bytes over 12 encode+decode runs of 32+ chunks each", grow)
	}
}
