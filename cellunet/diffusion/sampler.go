package diffusion

import (
	"fmt"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Sampler draws training timesteps and their importance weights
// (resample.py's ScheduleSampler), entirely on the device: no host sync.
type Sampler interface {
	// Sample draws n timesteps t (int64 [n]) and weights w (float32 [n]),
	// owned by s, on the sampler's device, from gen (nil: default generator).
	Sample(s *ct.Scope, n int64, gen *ct.Generator) (t, w *ct.Tensor)
	// Update records the detached per-sample losses [n] observed at t [n].
	Update(t, losses *ct.Tensor)
	// State returns the sampler's state for a checkpoint (aliases, owned by s).
	State(s *ct.Scope) []ct.Named
	// LoadState restores what State returned.
	LoadState(st []ct.Named) error
	// Close frees the sampler's tensors.
	Close()
}

// NewSampler returns the sampler named "uniform" or "loss-second-moment"
// over the first steps timesteps (the reference's start_guide_time: 1000 for
// the backbone, 500 for the classifier), on dev.
func NewSampler(name string, steps int, dev ct.Device) (Sampler, error) {
	switch name {
	case "uniform", "":
		return &UniformSampler{Steps: steps, Device: dev}, nil
	case "loss-second-moment":
		return NewLossSecondMomentSampler(steps, dev)
	}
	return nil, fmt.Errorf("diffusion: unknown schedule sampler %q (want uniform or loss-second-moment)", name)
}

// UniformSampler draws t uniformly from 0..Steps-1 with weight 1.
type UniformSampler struct {
	Steps  int
	Device ct.Device
}

// Sample implements Sampler.
func (u *UniformSampler) Sample(s *ct.Scope, n int64, gen *ct.Generator) (t, w *ct.Tensor) {
	t = s.RandInt(0, int64(u.Steps), ct.Options{DType: ct.Int64, Device: u.Device}, gen, n)
	w = s.Ones(ct.On(u.Device), n)
	return t, w
}

// Update implements Sampler (no state).
func (u *UniformSampler) Update(t, losses *ct.Tensor) {}

// State implements Sampler (no state).
func (u *UniformSampler) State(s *ct.Scope) []ct.Named { return nil }

// LoadState implements Sampler (no state).
func (u *UniformSampler) LoadState(st []ct.Named) error { return nil }

// Close implements Sampler.
func (u *UniformSampler) Close() {}

// historyPerTerm and uniformProb are the reference's LossSecondMomentResampler constants.
const (
	historyPerTerm = 10
	uniformProb    = 0.001
)

// LossSecondMomentSampler keeps the last 10 losses of every timestep and,
// once every timestep has 10, draws t with p_t ∝ √(mean loss²_t), mixed with
// 0.1% uniform; w = 1/(T·p_t). Until then it is uniform with weight 1.
// The history is a [T,10] ring buffer on the device: the set of the last 10
// losses per step (all the formula uses) equals the reference's shifted list.
type LossSecondMomentSampler struct {
	steps   int
	dev     ct.Device
	history *ct.Tensor // [T,10] float32
	count   *ct.Tensor // [T] int64: losses recorded per step (saturating use: min(count,10))
}

// NewLossSecondMomentSampler returns an empty loss-aware sampler on dev.
func NewLossSecondMomentSampler(steps int, dev ct.Device) (*LossSecondMomentSampler, error) {
	l := &LossSecondMomentSampler{steps: steps, dev: dev}
	err := ct.Try(func() {
		l.history = ct.Zeros(ct.On(dev), int64(steps), historyPerTerm)
		l.count = ct.Zeros(ct.Options{DType: ct.Int64, Device: dev}, int64(steps))
	})
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// probabilities returns p [T] (uniform until warmed up), owned by s.
func (l *LossSecondMomentSampler) probabilities(s *ct.Scope) *ct.Tensor {
	T := float64(l.steps)
	h := s.Adopt(l.history.Alias(s))
	w := h.Square().MeanDims(false, 1).Sqrt()
	p := w.Div(w.Sum()).MulScalar(1 - uniformProb).AddScalar(uniformProb / T)
	warm := s.Adopt(l.count.Alias(s)).GeScalar(historyPerTerm).All()
	uni := s.Full(1/T, ct.On(l.dev), int64(l.steps))
	return ct.Where(warm, p, uni)
}

// Sample implements Sampler.
func (l *LossSecondMomentSampler) Sample(s *ct.Scope, n int64, gen *ct.Generator) (t, w *ct.Tensor) {
	inner := ct.NewScope()
	defer inner.Close()
	p := l.probabilities(inner)
	t = s.Adopt(p.Multinomial(n, true, gen))
	w = s.Adopt(p.IndexSelect(0, t).MulScalar(float64(l.steps)).Reciprocal())
	return t, w
}

// Update implements Sampler: each loss goes to the next ring slot of its
// step; repeated steps within one batch take consecutive slots.
func (l *LossSecondMomentSampler) Update(t, losses *ct.Tensor) {
	s := ct.NewScope()
	defer s.Close()
	tt := s.Adopt(t.Alias(s))
	n := tt.Numel()
	ar := s.Arange(0, float64(n), 1, ct.Options{DType: ct.Int64, Device: l.dev})
	// k_i = #{j < i : t_j = t_i}
	same := tt.Unsqueeze(1).Eq(tt.Unsqueeze(0))
	earlier := ar.Unsqueeze(0).Lt(ar.Unsqueeze(1))
	k := same.LogicalAnd(earlier).SumDims(false, 1)
	slot := s.Adopt(l.count.Alias(s)).IndexSelect(0, tt).Add(k).Remainder(s.Full(historyPerTerm, ct.Options{DType: ct.Int64, Device: l.dev}))
	flat := tt.MulScalar(historyPerTerm).Add(slot)
	vals := losses.Detach().To(l.dev, ct.Float32)
	s.Adopt(vals)
	ct.NoGrad(func() {
		hv := s.Adopt(l.history.View(-1))
		hv.IndexCopy_(0, flat, vals)
		l.count.IndexAdd_(0, tt, s.Ones(ct.Options{DType: ct.Int64, Device: l.dev}, n))
	})
}

// State implements Sampler: "sampler.loss_history" [T,10] and "sampler.loss_counts" [T].
func (l *LossSecondMomentSampler) State(s *ct.Scope) []ct.Named {
	return []ct.Named{
		{Name: "sampler.loss_history", T: l.history.Alias(s)},
		{Name: "sampler.loss_counts", T: l.count.Alias(s)},
	}
}

// LoadState implements Sampler.
func (l *LossSecondMomentSampler) LoadState(st []ct.Named) error {
	var h, c *ct.Tensor
	for _, n := range st {
		switch n.Name {
		case "sampler.loss_history":
			h = n.T
		case "sampler.loss_counts":
			c = n.T
		}
	}
	if h == nil || c == nil {
		return fmt.Errorf("diffusion: loss-second-moment sampler state needs sampler.loss_history and sampler.loss_counts")
	}
	return ct.Try(func() {
		if hs := h.Shape(); len(hs) != 2 || hs[0] != int64(l.steps) || hs[1] != historyPerTerm {
			panic(&ct.Error{Code: ct.CodeInvalidArgument, Op: "sampler state", Msg: fmt.Sprintf("loss history has shape %v, want [%d %d]", hs, l.steps, historyPerTerm)})
		}
		ct.NoGrad(func() {
			l.history.Copy_(h)
			l.count.Copy_(c)
		})
	})
}

// Close implements Sampler.
func (l *LossSecondMomentSampler) Close() {
	l.history.Free()
	l.count.Free()
}
