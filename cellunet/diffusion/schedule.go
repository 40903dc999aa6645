// Package diffusion is the Gaussian diffusion of scDiffusion
// (../shared/spec/scdiffusion.md §2): noise schedules, the forward process
// and ε-prediction loss, timestep samplers, and the reverse process
// (ancestral and DDIM sampling, respacing, bits-per-dimension evaluation).
//
// Every schedule array is computed once in float64 on the host and uploaded
// once as a float32 tensor on the model's device; per-step lookups gather on
// the device (the reference re-uploads a float64 array on every call).
//
// Legend: T = number of diffusion steps (after respacing), B = batch, D =
// latent width. Timesteps t are int64 indices 0..T-1 into this schedule.
package diffusion

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// VarianceType selects the reverse-process variance (σ is not learned).
type VarianceType int

// Variance types. FixedLarge is the reference's (sigma_small=False).
const (
	FixedLarge VarianceType = iota
	FixedSmall
)

// Config describes a diffusion process. The zero value is not valid; use
// DefaultConfig.
type Config struct {
	// Steps is the number of steps of the base schedule (the reference's T = 1000).
	Steps int
	// Schedule is "linear" (β from 1e-4·s to 0.02·s, s = 1000/T) or "cosine".
	Schedule string
	// Respacing keeps a subset of the base steps: "" keeps all, "ddimN" the
	// evenly strided N steps, or a comma list of per-section counts (spec §2).
	Respacing string
	// Variance is the reverse-process variance type.
	Variance VarianceType
}

// DefaultConfig is the reference's: 1000 linear steps, no respacing, FIXED_LARGE.
func DefaultConfig() Config { return Config{Steps: 1000, Schedule: "linear"} }

// Schedule holds the host float64 arrays of a (possibly respaced) schedule.
type Schedule struct {
	Betas, Alphas, AlphasCumprod, AlphasCumprodPrev, AlphasCumprodNext     []float64
	SqrtAlphasCumprod, SqrtOneMinusAlphasCumprod, LogOneMinusAlphasCumprod []float64
	SqrtRecipAlphasCumprod, SqrtRecipm1AlphasCumprod                       []float64
	PosteriorVariance, PosteriorLogVarianceClipped                         []float64
	PosteriorMeanCoef1, PosteriorMeanCoef2                                 []float64
	// TimestepMap[i] is the base step a respaced step i stands for; the model
	// is called with these original step numbers.
	TimestepMap []int64
}

// BaseBetas returns the base schedule's β (float64) for name "linear" or "cosine".
func BaseBetas(name string, steps int) ([]float64, error) {
	if steps <= 0 {
		return nil, fmt.Errorf("diffusion: steps must be positive, got %d", steps)
	}
	b := make([]float64, steps)
	switch name {
	case "linear", "":
		scale := 1000 / float64(steps)
		lo, hi := scale*0.0001, scale*0.02
		// numpy.linspace: lo + i·step, with the last value exactly hi.
		if steps == 1 {
			b[0] = lo
			break
		}
		step := (hi - lo) / float64(steps-1)
		for i := range b {
			b[i] = lo + float64(i)*step
		}
		b[steps-1] = hi
	case "cosine":
		abar := func(u float64) float64 {
			c := math.Cos((u/float64(steps) + 0.008) / 1.008 * math.Pi / 2)
			return c * c
		}
		for i := range b {
			b[i] = math.Min(1-abar(float64(i+1))/abar(float64(i)), 0.999)
		}
	default:
		return nil, fmt.Errorf("diffusion: unknown noise schedule %q (want linear or cosine)", name)
	}
	return b, nil
}

// SpaceTimesteps returns the sorted base steps kept by a respacing spec
// (spec §2, respace.py's space_timesteps).
func SpaceTimesteps(steps int, spec string) ([]int, error) {
	if spec == "" {
		out := make([]int, steps)
		for i := range out {
			out[i] = i
		}
		return out, nil
	}
	if n, ok := strings.CutPrefix(spec, "ddim"); ok {
		want, err := strconv.Atoi(n)
		if err != nil || want <= 0 {
			return nil, fmt.Errorf("diffusion: bad respacing %q (want ddimN with N > 0)", spec)
		}
		for stride := 1; stride < steps; stride++ {
			if (steps+stride-1)/stride == want {
				out := make([]int, 0, want)
				for i := 0; i < steps; i += stride {
					out = append(out, i)
				}
				return out, nil
			}
		}
		return nil, fmt.Errorf("diffusion: cannot create exactly %d steps with an integer stride from %d", want, steps)
	}
	var counts []int
	for _, f := range strings.Split(spec, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 0 {
			return nil, fmt.Errorf("diffusion: bad respacing %q (want ddimN or comma-separated counts)", spec)
		}
		counts = append(counts, c)
	}
	sizePer := steps / len(counts)
	extra := steps % len(counts)
	start := 0
	kept := map[int]bool{}
	for i, c := range counts {
		size := sizePer
		if i < extra {
			size++
		}
		if size < c {
			return nil, fmt.Errorf("diffusion: cannot divide a section of %d steps into %d", size, c)
		}
		var frac float64
		if c <= 1 {
			frac = 1
		} else {
			frac = float64(size-1) / float64(c-1)
		}
		cur := 0.0
		for j := 0; j < c; j++ {
			kept[start+int(math.RoundToEven(cur))] = true // Python's round: half to even
			cur += frac
		}
		start += size
	}
	out := make([]int, 0, len(kept))
	for k := range kept {
		out = append(out, k)
	}
	sort.Ints(out)
	return out, nil
}

// NewSchedule computes every array of cfg's schedule in float64.
func NewSchedule(cfg Config) (*Schedule, error) {
	base, err := BaseBetas(cfg.Schedule, cfg.Steps)
	if err != nil {
		return nil, err
	}
	kept, err := SpaceTimesteps(cfg.Steps, cfg.Respacing)
	if err != nil {
		return nil, err
	}
	betas := base
	tmap := make([]int64, len(kept))
	for i, k := range kept {
		tmap[i] = int64(k)
	}
	if cfg.Respacing != "" {
		// β'_i = 1 − ᾱ_{k_i}/ᾱ_{k_{i−1}}, ᾱ_{k_{−1}} = 1.
		abar := 1.0
		cum := make([]float64, len(base))
		for i, b := range base {
			abar *= 1 - b
			cum[i] = abar
		}
		betas = make([]float64, len(kept))
		last := 1.0
		for i, k := range kept {
			betas[i] = 1 - cum[k]/last
			last = cum[k]
		}
	}
	return fromBetas(betas, tmap), nil
}

func fromBetas(betas []float64, tmap []int64) *Schedule {
	n := len(betas)
	mk := func() []float64 { return make([]float64, n) }
	s := &Schedule{Betas: betas, TimestepMap: tmap}
	s.Alphas, s.AlphasCumprod, s.AlphasCumprodPrev, s.AlphasCumprodNext = mk(), mk(), mk(), mk()
	s.SqrtAlphasCumprod, s.SqrtOneMinusAlphasCumprod, s.LogOneMinusAlphasCumprod = mk(), mk(), mk()
	s.SqrtRecipAlphasCumprod, s.SqrtRecipm1AlphasCumprod = mk(), mk()
	s.PosteriorVariance, s.PosteriorLogVarianceClipped = mk(), mk()
	s.PosteriorMeanCoef1, s.PosteriorMeanCoef2 = mk(), mk()
	cum := 1.0
	for i, b := range betas {
		s.Alphas[i] = 1 - b
		cum *= 1 - b // numpy.cumprod order
		s.AlphasCumprod[i] = cum
	}
	for i := range betas {
		ac := s.AlphasCumprod[i]
		if i == 0 {
			s.AlphasCumprodPrev[i] = 1
		} else {
			s.AlphasCumprodPrev[i] = s.AlphasCumprod[i-1]
		}
		if i == n-1 {
			s.AlphasCumprodNext[i] = 0
		} else {
			s.AlphasCumprodNext[i] = s.AlphasCumprod[i+1]
		}
		prev := s.AlphasCumprodPrev[i]
		s.SqrtAlphasCumprod[i] = math.Sqrt(ac)
		s.SqrtOneMinusAlphasCumprod[i] = math.Sqrt(1 - ac)
		s.LogOneMinusAlphasCumprod[i] = math.Log(1 - ac)
		s.SqrtRecipAlphasCumprod[i] = math.Sqrt(1 / ac)
		s.SqrtRecipm1AlphasCumprod[i] = math.Sqrt(1/ac - 1)
		s.PosteriorVariance[i] = betas[i] * (1 - prev) / (1 - ac)
		s.PosteriorMeanCoef1[i] = betas[i] * math.Sqrt(prev) / (1 - ac)
		s.PosteriorMeanCoef2[i] = (1 - prev) * math.Sqrt(s.Alphas[i]) / (1 - ac)
	}
	for i := range betas {
		v := s.PosteriorVariance[i]
		if i == 0 && n > 1 {
			v = s.PosteriorVariance[1]
		}
		s.PosteriorLogVarianceClipped[i] = math.Log(v)
	}
	return s
}

// ModelVariance returns the reverse-process variance and its log for the
// variance type: FIXED_LARGE uses [σ̃²_1, β_1, …, β_{T−1}], FIXED_SMALL the
// posterior variance (log clipped).
func (s *Schedule) ModelVariance(v VarianceType) (variance, logVariance []float64) {
	n := len(s.Betas)
	variance, logVariance = make([]float64, n), make([]float64, n)
	for i := range s.Betas {
		switch v {
		case FixedSmall:
			variance[i] = s.PosteriorVariance[i]
			logVariance[i] = s.PosteriorLogVarianceClipped[i]
		default:
			x := s.Betas[i]
			if i == 0 && n > 1 {
				x = s.PosteriorVariance[1]
			}
			variance[i] = x
			logVariance[i] = math.Log(x)
		}
	}
	return variance, logVariance
}
