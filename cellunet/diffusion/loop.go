package diffusion

import (
	"fmt"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// DefaultGuidanceStart is the reference's start_guide_steps: guidance is
// applied only while the model step is below it (the classifier is trained
// on t < 500 only).
const DefaultGuidanceStart = 500

// SampleOptions configure PSampleLoop and DDIMSampleLoop. The zero value
// samples from pure noise over every step of the schedule, unguided, with
// the device's default generator.
type SampleOptions struct {
	// Noise is the starting sample [B,D...] float32 on the Diffusion's
	// device, of the requested shape; nil draws x ~ N(0,I) from Generator.
	// It is read, never modified or freed.
	Noise *ct.Tensor
	// Generator supplies every random draw (the start when Noise is nil,
	// then one [B,D] normal per step); nil is the device's default. A
	// fixed seed reproduces a sample exactly on the same device and build.
	Generator *ct.Generator
	// ClipDenoised clamps x̂0 to [−1, 1] at every step.
	ClipDenoised bool
	// StartTime is the reference's start_time: the loop runs schedule
	// indices StartTime−1, …, 0, treating the input as x_{StartTime−1}.
	// 0 means NumSteps() (from pure noise). For SDEdit-style interpolation
	// from init_time k, pass Noise = QSample(x0, k, ε) and StartTime = k+1
	// (k a schedule index). Must not exceed NumSteps().
	StartTime int
	// Guidance, when non-nil, is applied (condition_mean for ancestral,
	// condition_score for DDIM) at every step whose ORIGINAL model step is
	// below GuidanceStart.
	Guidance GuidanceFunc
	// GuidanceStart gates Guidance on the model step: guided while
	// ModelStep < GuidanceStart. 0 means DefaultGuidanceStart (500); to
	// guide at every step, set it to the base schedule length
	// (Config.Steps) or more. Negative values are an error. [REF] compares
	// the respaced index instead, which is the same without respacing.
	GuidanceStart int
	// Eta is DDIM's η (DDIMSampleLoop only; 0 is deterministic DDIM).
	Eta float64
	// NoiseWeight is the ancestral step's nw (PSampleLoop only): noise
	// exp(nw·ln v_t)·z; 0 means DefaultNoiseWeight (0.5, σ_t = √v_t).
	NoiseWeight float64
	// Progress, when non-nil, is called after every step, once that
	// step's temporaries are freed (only the current sample is alive). A
	// non-nil error stops the loop, which returns it. It runs on the
	// sampling goroutine under no-grad; it must not keep p.Sample.
	Progress func(p Progress) error
}

// Progress describes the state after one sampling step.
type Progress struct {
	// Index is the schedule index just processed; ModelStep its base step.
	Index, ModelStep int
	// Done steps out of Total.
	Done, Total int
	// Guided reports whether guidance was applied in this step.
	Guided bool
	// LiveTensors is cgotorch.LiveTensors() now minus its value when the
	// loop started (memory.md U12's periodic live-handle check): 1, the
	// current sample, unless other goroutines allocate meanwhile. A value
	// that grows with Done is a leak.
	LiveTensors int64
	// Sample is x_{Index−1}, owned by the loop: valid only during the call.
	Sample *ct.Tensor
}

// stepFunc runs one reverse step with model m; its results must join x's
// scope sc.
type stepFunc func(sc *ct.Scope, m Model, x, t *ct.Tensor, o StepOptions) Step

// StepModel is a Model that can also predict ε̂ for a batch whose rows all
// share one (base-schedule) step, as every step of a sampling loop does;
// the loops use ForwardAt when the model has it (cellunet.Model does: it
// computes the time embedding once instead of once per row). ForwardAt
// must equal Forward with t filled with step, up to rounding, and may
// return another floating dtype (the loops cast ε̂ to float32).
type StepModel interface {
	Model
	ForwardAt(x *ct.Tensor, step int64) *ct.Tensor
}

// atStep adapts a StepModel to Model for one loop step.
type atStep struct {
	m    StepModel
	step int64
}

func (a atStep) Forward(x, _ *ct.Tensor) *ct.Tensor {
	eps := a.m.ForwardAt(x, a.step)
	if eps.DType() != ct.Float32 {
		f := eps.ToDType(ct.Float32)
		eps.Free()
		eps = f
	}
	return eps
}

// PSampleLoop runs ancestral sampling (p_sample_loop) from StartTime−1 down
// to 0 and returns the final sample [shape...] float32 on the Diffusion's
// device. The caller owns the result and must Free it. The loop runs under
// no-grad (guidance re-enables autograd for its gradient only), keeps no
// trajectory, and frees each step's tensors before the next step: at any
// time only the current sample and one step's temporaries are alive.
// Tensor failures (including a panicking model or guidance) are returned as
// errors and leave nothing allocated.
func (d *Diffusion) PSampleLoop(model Model, shape []int64, o SampleOptions) (*ct.Tensor, error) {
	return d.sampleLoop(model, shape, o, func(sc *ct.Scope, m Model, x, t *ct.Tensor, so StepOptions) Step {
		return d.pSample(sc, m, x, t, so)
	})
}

// DDIMSampleLoop runs DDIM sampling (ddim_sample_loop) with o.Eta from
// StartTime−1 down to 0; use a respaced schedule ("ddim50", "ddim100", …)
// for fewer steps. Result, ownership, memory and errors as PSampleLoop.
func (d *Diffusion) DDIMSampleLoop(model Model, shape []int64, o SampleOptions) (*ct.Tensor, error) {
	eta := o.Eta
	return d.sampleLoop(model, shape, o, func(sc *ct.Scope, m Model, x, t *ct.Tensor, so StepOptions) Step {
		return d.ddimSample(sc, m, x, t, eta, so)
	})
}

// loopPlan validates o against shape and returns the start time and the
// guidance threshold.
func (d *Diffusion) loopPlan(shape []int64, o SampleOptions) (start, guideStart int, err error) {
	if len(shape) < 1 || shape[0] <= 0 {
		return 0, 0, fmt.Errorf("diffusion: sample shape %v needs a positive batch dimension", shape)
	}
	for _, s := range shape {
		if s <= 0 {
			return 0, 0, fmt.Errorf("diffusion: sample shape %v has a non-positive dimension", shape)
		}
	}
	start = o.StartTime
	if start == 0 {
		start = d.NumSteps()
	}
	if start < 0 || start > d.NumSteps() {
		return 0, 0, fmt.Errorf("diffusion: start time %d outside 1..%d", o.StartTime, d.NumSteps())
	}
	guideStart = o.GuidanceStart
	if guideStart == 0 {
		guideStart = DefaultGuidanceStart
	}
	if guideStart < 0 {
		return 0, 0, fmt.Errorf("diffusion: guidance start %d is negative", o.GuidanceStart)
	}
	if o.Noise != nil {
		var ns []int64
		var dev ct.Device
		if err := ct.Try(func() { ns, dev = o.Noise.Shape(), o.Noise.Device() }); err != nil {
			return 0, 0, fmt.Errorf("diffusion: starting noise: %w", err)
		}
		if fmt.Sprint(ns) != fmt.Sprint(shape) {
			return 0, 0, fmt.Errorf("diffusion: starting noise has shape %v, want %v", ns, shape)
		}
		if dev != d.dev {
			return 0, 0, fmt.Errorf("diffusion: starting noise is on %s, the schedule on %s", dev, d.dev)
		}
	}
	return start, guideStart, nil
}

// sampleLoop is the loop shared by PSampleLoop and DDIMSampleLoop.
func (d *Diffusion) sampleLoop(model Model, shape []int64, o SampleOptions, step stepFunc) (*ct.Tensor, error) {
	start, guideStart, err := d.loopPlan(shape, o)
	if err != nil {
		return nil, err
	}
	var x *ct.Tensor // the current sample, unowned between steps
	var cbErr error
	cur := start // the step being run; start = drawing the initial sample
	baseLive := ct.LiveTensors()
	err = ct.Try(func() {
		ct.NoGrad(func() {
			if o.Noise != nil {
				x = o.Noise.Alias(nil) // never modified in place: the caller's tensor is safe
			} else {
				x = (*ct.Scope)(nil).Randn(ct.On(d.dev), o.Generator, shape...)
			}
			for i := start - 1; i >= 0; i-- {
				cur = i
				guided := o.Guidance != nil && d.sched.TimestepMap[i] < int64(guideStart)
				x = d.loopStep(model, x, i, guided, o, step)
				if o.Progress != nil {
					p := Progress{Index: i, ModelStep: int(d.sched.TimestepMap[i]), Done: start - i,
						Total: start, Guided: guided, LiveTensors: ct.LiveTensors() - baseLive, Sample: x}
					if cbErr = o.Progress(p); cbErr != nil {
						return
					}
				}
			}
		})
	})
	switch {
	case err != nil && cur == start:
		err = fmt.Errorf("diffusion: drawing the initial sample: %w", err)
	case err != nil:
		err = fmt.Errorf("diffusion: sampling step %d (model step %d): %w", cur, d.sched.TimestepMap[cur], err)
	default:
		err = cbErr // returned as is
	}
	if err != nil {
		x.Free()
		return nil, err
	}
	return x, nil
}

// loopStep runs step i on x inside one scope that owns x and every
// temporary; only the new sample survives (unowned). On panic the scope
// still closes, freeing x.
func (d *Diffusion) loopStep(model Model, x *ct.Tensor, i int, guided bool, o SampleOptions, step stepFunc) *ct.Tensor {
	sc := ct.NewScope()
	defer sc.Close()
	sc.Adopt(x)
	t := sc.Full(float64(i), ct.Options{DType: ct.Int64, Device: d.dev}, x.Dim(0))
	so := StepOptions{ClipDenoised: o.ClipDenoised, Generator: o.Generator, NoiseWeight: o.NoiseWeight}
	if guided {
		so.Guidance = o.Guidance
	}
	if sm, ok := model.(StepModel); ok {
		model = atStep{sm, d.sched.TimestepMap[i]}
	}
	st := step(sc, model, x, t, so)
	return sc.Keep(st.Sample)
}
