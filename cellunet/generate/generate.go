// Package generate produces cells with a trained diffusion backbone the way
// the reference's sampling scripts do (cell_sample.py, classifier_sample.py;
// ../shared/spec/scdiffusion.md §2, §6, §7): batches of latents by
// ancestral (DDPM) or DDIM sampling, unguided or guided by one or two
// noisy-latent classifiers, optionally started from noised real cells
// (gradient interpolation), and filtered by a classifier afterwards.
//
// Batch i of a condition is a pure function of (seed, condition key, i,
// batch rows) and the models: it draws every random number from its own
// generator seeded with BatchSeed, so batches can be computed in any
// order, on any rank, and a run is reproducible bit for bit on the same
// device and build.
//
// Legend: B = batch rows, D = latent width (128), K = classes.
package generate

import (
	"fmt"
	"hash/fnv"

	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Config is how batches are sampled.
type Config struct {
	// Diffusion is the (possibly respaced) schedule on the sampling device;
	// Model the backbone (cellunet.Model, or anything predicting ε̂). Both
	// are the caller's.
	Diffusion *diffusion.Diffusion
	Model     diffusion.Model
	// DDIM samples with DDIM and η = Eta; otherwise ancestral sampling with
	// noise weight NoiseWeight (0: the reference's 0.5).
	DDIM        bool
	Eta         float64
	NoiseWeight float64
	// ClipDenoised clamps x̂0 to [−1, 1] at every step.
	ClipDenoised bool
	// GuidanceStart: classifier guidance only while the model step is
	// below it (the reference's start_guide_steps, 500; 0 means 500).
	GuidanceStart int
	// Seed is the run's seed; every batch derives its own from it.
	Seed uint64
	// Dim is D, the latent width.
	Dim int64
}

// Term is one classifier's pull towards a class: Scale·∇_x log p(Class | x_t, t).
type Term struct {
	Classifier diffusion.Classifier // in evaluation mode
	Class      int64
	Scale      float64
}

// Start begins sampling from noised real cells instead of pure noise
// (classifier_sample.py's gradient interpolation; SDEdit).
type Start struct {
	// Latents are the real cells' latents [M,D] float32 on the sampling
	// device (the caller's). A batch of B rows takes the first B of them,
	// or repeats them whole and then the first B mod M, as the reference
	// tiles its start_x.
	Latents *ct.Tensor
	// NoiseIndex is the schedule index whose noise level the start gets:
	// x_init = q_sample(z, NoiseIndex) (the reference's init_time).
	NoiseIndex int
	// StartIndex is the schedule index the loop starts at: NoiseIndex for
	// SDEdit semantics (ours), the last index to reproduce the reference,
	// which feeds x_init as x_999.
	StartIndex int
}

// Condition is what to generate.
type Condition struct {
	// Key names the condition in the per-batch seeds ("uncond", "class=3",
	// ...): different conditions of one run draw different noise.
	Key string
	// Terms are summed into the guidance gradient (none: unguided).
	Terms []Term
	// Start, when set, starts every batch from noised real cells.
	Start *Start
}

// BatchSeed is the seed of batch i of the condition with the given key
// (splitmix64 of the run seed, the key's FNV-1a hash and i).
func BatchSeed(seed uint64, key string, i int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return mix(mix(seed^mix(h.Sum64())) + uint64(i))
}

func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Batch samples batch i of condition c: rows latents [rows,D] float32 on
// the sampling device, unowned (the caller frees the result). progress,
// if non-nil, is called after every step (see diffusion.SampleOptions).
// Only the current sample and one step's temporaries are alive while it
// runs; errors leave nothing allocated.
func Batch(cfg Config, c Condition, i int, rows int64, progress func(diffusion.Progress) error) (*ct.Tensor, error) {
	if rows <= 0 {
		return nil, fmt.Errorf("generate: batch %d: %d rows", i, rows)
	}
	d := cfg.Diffusion
	gen, err := ct.NewGenerator(d.Device(), BatchSeed(cfg.Seed, c.Key, i))
	if err != nil {
		return nil, err
	}
	defer gen.Close()
	o := diffusion.SampleOptions{
		Generator: gen, ClipDenoised: cfg.ClipDenoised, GuidanceStart: cfg.GuidanceStart,
		Eta: cfg.Eta, NoiseWeight: cfg.NoiseWeight, Progress: progress,
	}
	sc := ct.NewScope()
	defer sc.Close()
	err = ct.Try(func() {
		if len(c.Terms) > 0 {
			terms := make([]diffusion.ClassifierTerm, len(c.Terms))
			for k, t := range c.Terms {
				y := sc.Full(float64(t.Class), ct.Options{DType: ct.Int64, Device: d.Device()}, rows)
				terms[k] = diffusion.ClassifierTerm{Classifier: t.Classifier, Labels: y, Scale: t.Scale}
			}
			o.Guidance = diffusion.ClassifierGuidance(terms...)
		}
		if s := c.Start; s != nil {
			o.Noise = startNoise(sc, d, s, rows, gen)
			o.StartTime = s.StartIndex + 1
		}
	})
	if err != nil {
		return nil, fmt.Errorf("generate: batch %d: %w", i, err)
	}
	shape := []int64{rows, cfg.Dim}
	if cfg.DDIM {
		return d.DDIMSampleLoop(cfg.Model, shape, o)
	}
	return d.PSampleLoop(cfg.Model, shape, o)
}

// startNoise is q_sample(tile(s.Latents, rows), s.NoiseIndex, z), with z
// the generator's first draw, owned by sc.
func startNoise(sc *ct.Scope, d *diffusion.Diffusion, s *Start, rows int64, gen *ct.Generator) *ct.Tensor {
	m := s.Latents.Dim(0)
	var x0 *ct.Tensor
	if m >= rows {
		x0 = sc.Adopt(s.Latents.Narrow(0, 0, rows))
	} else {
		parts := make([]*ct.Tensor, 0, rows/m+1)
		for k := int64(0); k < rows/m; k++ {
			parts = append(parts, s.Latents)
		}
		if r := rows % m; r > 0 {
			parts = append(parts, sc.Adopt(s.Latents.Narrow(0, 0, r)))
		}
		x0 = sc.Adopt(ct.Cat(parts, 0))
	}
	z := sc.Randn(ct.On(d.Device()), gen, x0.Shape()...)
	t := sc.Full(float64(s.NoiseIndex), ct.Options{DType: ct.Int64, Device: d.Device()}, rows)
	return sc.Adopt(d.QSample(x0, t, z))
}

// IndexAtOrBelow is the largest schedule index whose base step is at most
// step (the respaced index of a base step such as init_time); -1 if none.
func IndexAtOrBelow(d *diffusion.Diffusion, step int) int {
	tm := d.Schedule().TimestepMap
	idx := -1
	for i, s := range tm {
		if s <= int64(step) {
			idx = i
		}
	}
	return idx
}

// Filter reports which rows of x0 [B,D] (final samples) to keep.
type Filter func(x0 *ct.Tensor) ([]bool, error)

// ArgmaxFilter keeps the rows every term's classifier assigns to the
// term's class at t = 0 (classifier_sample.py's filter for one and for two
// conditions).
func ArgmaxFilter(terms ...Term) Filter {
	return func(x0 *ct.Tensor) ([]bool, error) {
		var keep []bool
		err := classify(x0, func(s *ct.Scope, x, t *ct.Tensor) {
			var all *ct.Tensor
			for _, term := range terms {
				hit := s.Adopt(term.Classifier.Forward(x, t)).Argmax(1, false).EqScalar(float64(term.Class))
				if all == nil {
					all = hit
				} else {
					all = all.LogicalAnd(hit)
				}
			}
			keep = all.Bools()
		})
		return keep, err
	}
}

// WindowFilter keeps the rows whose class probabilities at t = 0 lie
// strictly within ±tol of the targets (classifier_sample.py's filter for
// gradient interpolation: targets weight/10, tol 0.15).
func WindowFilter(c diffusion.Classifier, classes [2]int64, targets [2]float64, tol float64) Filter {
	return func(x0 *ct.Tensor) ([]bool, error) {
		var keep []bool
		err := classify(x0, func(s *ct.Scope, x, t *ct.Tensor) {
			p := s.Adopt(c.Forward(x, t)).Softmax(-1)
			var all *ct.Tensor
			for k := range 2 {
				pk := p.Narrow(1, classes[k], 1).View(-1)
				in := pk.GtScalar(targets[k] - tol).LogicalAnd(pk.LtScalar(targets[k] + tol))
				if all == nil {
					all = in
				} else {
					all = all.LogicalAnd(in)
				}
			}
			keep = all.Bools()
		})
		return keep, err
	}
}

// classify runs fn under no-grad on an alias of x0 owned by a scope of its
// own (so every result joins it) and t = 0 [B].
func classify(x0 *ct.Tensor, fn func(s *ct.Scope, x, t *ct.Tensor)) error {
	s := ct.NewScope()
	defer s.Close()
	return ct.Try(func() {
		ct.NoGrad(func() {
			x := x0.Alias(s)
			t := s.Zeros(ct.Options{DType: ct.Int64, Device: x.Device()}, x.Dim(0))
			fn(s, x, t)
		})
	})
}
