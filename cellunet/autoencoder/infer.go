package autoencoder

import (
	"fmt"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// DefaultChunkRows is the default number of rows per chunk of EncodeAll and
// DecodeAll: 4,096 rows of 13,431 genes are a 220 MB float32 input chunk.
const DefaultChunkRows = 4096

// InferOptions configures EncodeAll and DecodeAll. The zero value is
// usable: Dataset mode, DefaultChunkRows, no activation cache.
type InferOptions struct {
	// Mode is Dataset (the reference's semantics; default) or Running.
	// Training is rejected: inference never updates running statistics.
	Mode BNMode
	// ChunkRows is the number of rows processed at once; <= 0 means
	// DefaultChunkRows. Results do not depend on it (up to float rounding
	// in the Dataset statistics, ~1e-7 relative).
	ChunkRows int
	// CacheActivations (Dataset mode) keeps each layer's pre-BatchNorm
	// activations of all rows on the host, float32 [N,H], so every layer
	// is computed once instead of re-running the earlier layers (and
	// re-reading the input) in every statistics pass. Costs N·H·4 bytes of
	// host memory (284 MB for 69,249 cells × 1,024), twice that while two
	// consecutive layers differ in width.
	CacheActivations bool
}

// DefaultInferOptions is Dataset mode, DefaultChunkRows rows per chunk, with
// the host activation cache.
func DefaultInferOptions() InferOptions {
	return InferOptions{Mode: Dataset, ChunkRows: DefaultChunkRows, CacheActivations: true}
}

func (o InferOptions) chunkRows() int {
	if o.ChunkRows <= 0 {
		return DefaultChunkRows
	}
	return o.ChunkRows
}

func (o InferOptions) validate() error {
	switch o.Mode {
	case Dataset, Running:
		return nil
	case Training:
		return fmt.Errorf("autoencoder: BatchNorm mode %s is for training only; inference uses %s or %s", Training, Dataset, Running)
	}
	return fmt.Errorf("autoencoder: unknown BatchNorm mode %d", int(o.Mode))
}

// ChunkFunc receives rows [start, start+n) of a DecodeAll result as a
// row-major float32 host buffer rows[:n·G]. The buffer is reused after the
// call returns; copy what must be kept. A non-nil error stops DecodeAll,
// which returns it.
type ChunkFunc func(start, n int, rows []float32) error

// EncodeAll encodes every row of src (log1p expression, Cols() = Genes) to
// unit-L2 latents, returned as a row-major float32 host slice [N·Latent].
// It runs under no-grad in chunks of opts.ChunkRows rows on the model's
// device and never densifies more than one chunk. In Dataset mode every
// BatchNorm uses the exact mean and biased variance over all N rows (as
// the reference's single train-mode pass over the whole matrix), computed
// by one statistics pass per layer; in Running mode every row is encoded
// independently with the running statistics. Running statistics are never
// updated.
func (m *Model) EncodeAll(src RowSource, opts InferOptions) ([]float32, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if g := src.Cols(); int64(g) != m.cfg.Genes {
		return nil, fmt.Errorf("autoencoder: EncodeAll: the data has %d genes (columns) but the model has %d genes", g, m.cfg.Genes)
	}
	n, lat := src.Rows(), int(m.cfg.Latent)
	out := make([]float32, n*lat)
	err := m.run(&m.enc, src, n, opts,
		func(y *ct.Tensor) *ct.Tensor {
			z := y.Normalize(2, 1, normEps)
			y.Free()
			return z
		},
		func(start, k int, z *ct.Tensor) error {
			z.CopyFloat32s(out[start*lat : (start+k)*lat])
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("autoencoder: EncodeAll: %w", err)
	}
	return out, nil
}

// DecodeAll decodes latents (row-major float32 [N·Latent]) to log1p
// expression [N,G], streamed to emit in chunks of opts.ChunkRows rows, in
// order. With relu the output is ReLU(decoder(z)) (the reference's decode,
// ReLU applied in place); without, the raw decoder output. In Dataset mode
// every BatchNorm uses the statistics of all N latents plus the optional
// reference latents bnRef [M·Latent] — the reference's practice of mixing
// real-cell latents into a decode batch "to balance the batchnorm" — and
// only the N requested rows are emitted. bnRef is ignored in Running mode.
func (m *Model) DecodeAll(latents, bnRef []float32, opts InferOptions, relu bool, emit ChunkFunc) error {
	if err := opts.validate(); err != nil {
		return err
	}
	lat, g := int(m.cfg.Latent), int(m.cfg.Genes)
	if len(latents)%lat != 0 || len(bnRef)%lat != 0 {
		return fmt.Errorf("autoencoder: DecodeAll: latents (%d values) and bnRef (%d values) must be whole rows of %d", len(latents), len(bnRef), lat)
	}
	var src RowSource = Dense{Data: latents, NumCols: lat}
	if len(bnRef) > 0 && opts.Mode == Dataset {
		src = concat{src, Dense{Data: bnRef, NumCols: lat}}
	}
	n := len(latents) / lat
	buf := make([]float32, min(opts.chunkRows(), max(n, 1))*g)
	err := m.run(&m.dec, src, n, opts,
		func(y *ct.Tensor) *ct.Tensor {
			if relu {
				y.ReLU_()
			}
			return y
		},
		func(start, k int, y *ct.Tensor) error {
			rows := buf[:k*g]
			y.CopyFloat32s(rows)
			return emit(start, k, rows)
		})
	if err != nil {
		return fmt.Errorf("autoencoder: DecodeAll: %w", err)
	}
	return nil
}

// run evaluates stack st on rows [0, nOut) of src under no-grad, chunk by
// chunk, applying finish (which consumes its argument) and handing each
// chunk's result to emit. In Dataset mode the BatchNorm statistics are
// those of all src.Rows() rows (src may hold extra reference rows after the
// first nOut).
func (m *Model) run(st *stack, src RowSource, nOut int, opts InferOptions,
	finish func(*ct.Tensor) *ct.Tensor, emit func(start, n int, y *ct.Tensor) error) (err error) {
	r := &runner{m: m, st: st, src: src, nOut: nOut, chunk: opts.chunkRows()}
	if nOut == 0 {
		return nil
	}
	if opts.Mode == Dataset && src.Rows() < 2 {
		return fmt.Errorf("%s BatchNorm statistics need at least 2 rows, got %d (PyTorch's train mode fails the same way); use %s mode or add reference rows",
			Dataset, src.Rows(), Running)
	}
	ct.NoGrad(func() {
		if perr := ct.Try(func() {
			defer r.free()
			if opts.Mode == Dataset {
				if opts.CacheActivations {
					err = r.statsCached(finish, emit)
					return
				}
				if err = r.statsRecompute(); err != nil {
					return
				}
			}
			err = r.final(finish, emit)
		}); perr != nil {
			err = perr
		}
	})
	return err
}

// Releaser is implemented by a RowSource that can drop its data once a call
// has read it for the last time. EncodeAll in Dataset mode with
// CacheActivations reads the input only in its first pass and then calls
// Release, so the caller's matrix and the activation cache are never both
// held (for Open Problems: 0.74 GB of CSR against 0.28 GB of cache).
type Releaser interface {
	Release()
}

// runner holds the state of one EncodeAll/DecodeAll call.
type runner struct {
	m     *Model
	st    *stack
	src   RowSource
	nOut  int
	chunk int
	stats []bnStats // fixed statistics of blocks [0, len(stats))
	idx   []int64
	host  []float32 // input staging buffer [chunk·Cols]
}

func (r *runner) free() {
	for _, s := range r.stats {
		s.free()
	}
	r.stats = nil
}

// forChunks calls fn for consecutive chunks of [0, n) with a fresh scope
// that is closed after each call (also on panic).
func (r *runner) forChunks(n int, fn func(s *ct.Scope, start, k int) error) error {
	for start := 0; start < n; start += r.chunk {
		k := min(r.chunk, n-start)
		if err := func() error {
			s := ct.NewScope()
			defer s.Close()
			return fn(s, start, k)
		}(); err != nil {
			return err
		}
	}
	return nil
}

// load densifies rows [start, start+k) of src and uploads them: float32
// [k,Cols] on the model's device, owned by s.
func (r *runner) load(s *ct.Scope, start, k int) (*ct.Tensor, error) {
	c := r.src.Cols()
	if r.host == nil {
		r.host = make([]float32, min(r.chunk, r.src.Rows())*c)
	}
	r.idx = r.idx[:0]
	for i := start; i < start+k; i++ {
		r.idx = append(r.idx, int64(i))
	}
	buf := r.host[:k*c]
	if err := r.src.Dense(r.idx, buf); err != nil {
		return nil, fmt.Errorf("reading rows %d..%d: %w", start, start+k-1, err)
	}
	return r.upload(s, buf, k, c), nil
}

// upload copies a row-major host block [k,c] to the model's device.
func (r *runner) upload(s *ct.Scope, buf []float32, k, c int) *ct.Tensor {
	return s.FromBytes(f32bytes(buf), ct.Options{DType: ct.Float32, Device: r.m.Device()}, int64(k), int64(c))
}

// prefix runs blocks [0, k) with the fixed statistics and returns the
// input of block k (x itself when k = 0).
func (r *runner) prefix(x *ct.Tensor, k int) *ct.Tensor {
	h := x
	for j := 0; j < k; j++ {
		b := r.st.blocks[j]
		a := b.pre(h, Dataset, nil)
		if h != x {
			h.Free()
		}
		h = b.post(a, Dataset, &r.stats[j])
	}
	return h
}

// statsRecompute fixes the statistics block by block: pass k reads every
// row again and recomputes blocks [0, k) with the statistics already fixed.
func (r *runner) statsRecompute() error {
	n := r.src.Rows()
	for k, b := range r.st.blocks {
		var mo moments
		err := r.forChunks(n, func(s *ct.Scope, start, c int) error {
			x, err := r.load(s, start, c)
			if err != nil {
				return err
			}
			h := r.prefix(x, k)
			mo.add(s, b.pre(h, Dataset, nil))
			return nil
		})
		if err != nil {
			mo.free()
			return err
		}
		r.stats = append(r.stats, mo.finish())
	}
	return nil
}

// final runs the whole stack on the output rows with the fixed statistics
// (Dataset) or the running statistics (Running, r.stats empty).
func (r *runner) final(finish func(*ct.Tensor) *ct.Tensor, emit func(int, int, *ct.Tensor) error) error {
	mode := Running
	var stats []bnStats
	if len(r.stats) > 0 {
		mode, stats = Dataset, r.stats
	}
	return r.forChunks(r.nOut, func(s *ct.Scope, start, k int) error {
		x, err := r.load(s, start, k)
		if err != nil {
			return err
		}
		return emit(start, k, finish(r.st.forward(x, mode, stats, nil)))
	})
}

// statsCached fixes the statistics layer by layer from host-cached
// pre-BatchNorm activations: the input is read once, every layer computed
// once, then the output rows are finished from the last cache.
func (r *runner) statsCached(finish func(*ct.Tensor) *ct.Tensor, emit func(int, int, *ct.Tensor) error) error {
	n := r.src.Rows()
	var cache []float32
	width := 0
	for k, b := range r.st.blocks {
		out := int(b.lin.Out)
		next := cache
		if k == 0 || out != width {
			next = make([]float32, n*out)
		}
		var mo moments
		err := r.forChunks(n, func(s *ct.Scope, start, c int) error {
			var h *ct.Tensor
			if k == 0 {
				x, err := r.load(s, start, c)
				if err != nil {
					return err
				}
				h = x
			} else {
				a := r.upload(s, cache[start*width:(start+c)*width], c, width)
				h = r.st.blocks[k-1].post(a, Dataset, &r.stats[k-1])
			}
			a := b.pre(h, Dataset, nil)
			h.Free()
			// Rows [start, start+c) of the cache were read above, so
			// overwriting them in place (same width) is safe.
			a.CopyFloat32s(next[start*out : (start+c)*out])
			mo.add(s, a)
			return nil
		})
		if err != nil {
			mo.free()
			return err
		}
		r.stats = append(r.stats, mo.finish())
		cache, width = next, out
		if k == 0 {
			// The input is never read again: let the source drop it.
			if rel, ok := r.src.(Releaser); ok {
				r.host = nil
				rel.Release()
			}
		}
	}
	last := len(r.st.blocks) - 1
	return r.forChunks(r.nOut, func(s *ct.Scope, start, c int) error {
		a := r.upload(s, cache[start*width:(start+c)*width], c, width)
		h := r.st.blocks[last].post(a, Dataset, &r.stats[last])
		y := r.st.out.Forward(h)
		h.Free()
		return emit(start, c, finish(y))
	})
}

// moments accumulates per-feature mean and sum of squared deviations (M2)
// over row chunks in float64 on the device, merging chunks with Chan et
// al.'s parallel update (mean += δ·n_b/n, M2 += M2_b + δ²·n_a·n_b/n). Unlike
// raw sum and sum of squares it does not lose precision when a feature's
// mean is large relative to its spread; per chunk it is PyTorch's own
// two-pass CPU computation (mean, then Σ(x−mean)² in double).
type moments struct {
	n        int64
	mean, m2 *ct.Tensor // float64 [C], unowned
}

// add merges the rows of a [k,C] (float32, in scope s; consumed).
func (mo *moments) add(s *ct.Scope, a *ct.Tensor) {
	nb := a.Dim(0)
	x := a.ToDType(ct.Float64)
	a.Free()
	mb := x.MeanDims(false, 0)
	d := x.Sub(mb)
	x.Free()
	sq := d.Square()
	d.Free()
	m2b := sq.SumDims(false, 0)
	sq.Free()
	if mo.n == 0 {
		mo.mean, mo.m2, mo.n = s.Keep(mb), s.Keep(m2b), nb
		return
	}
	tot := mo.n + nb
	delta := mb.Sub(mo.mean)
	mo.mean.AddScaled_(delta, float64(nb)/float64(tot))
	mo.m2.Add_(m2b)
	dd := delta.Square()
	mo.m2.AddScaled_(dd, float64(mo.n)*float64(nb)/float64(tot))
	mb.Free()
	m2b.Free()
	delta.Free()
	dd.Free()
	mo.n = tot
}

// finish returns the mean and biased variance as float32 (unowned) and
// frees the accumulators.
func (mo *moments) finish() bnStats {
	v := mo.m2.DivScalar(float64(mo.n))
	st := bnStats{mean: mo.mean.ToDType(ct.Float32), variance: v.ToDType(ct.Float32)}
	v.Free()
	mo.free()
	return st
}

func (mo *moments) free() {
	mo.mean.Free()
	mo.m2.Free()
	mo.mean, mo.m2, mo.n = nil, nil, 0
}
