package diffusion

import (
	"fmt"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Model predicts the noise ε̂ [B,D] float32 from x_t [B,D] and the original
// (base-schedule) step numbers t [B] int64.
type Model interface {
	Forward(x, t *ct.Tensor) *ct.Tensor
}

// Diffusion is a schedule's arrays as float32 tensors on one device (held
// for the Diffusion's lifetime; Close frees them).
type Diffusion struct {
	cfg   Config
	sched *Schedule
	dev   ct.Device

	// [T] float32 on dev
	betas, alphasCumprod, alphasCumprodPrev, alphasCumprodNext *ct.Tensor
	sqrtAlphasCumprod, sqrtOneMinusAlphasCumprod               *ct.Tensor
	sqrtRecipAlphasCumprod, sqrtRecipm1AlphasCumprod           *ct.Tensor
	posteriorVariance, posteriorLogVarianceClipped             *ct.Tensor
	posteriorMeanCoef1, posteriorMeanCoef2                     *ct.Tensor
	modelVariance, modelLogVariance                            *ct.Tensor
	timestepMap                                                *ct.Tensor // [T] int64
	owned                                                      []*ct.Tensor
}

// New computes cfg's schedule and uploads it to dev once.
func New(cfg Config, dev ct.Device) (*Diffusion, error) {
	s, err := NewSchedule(cfg)
	if err != nil {
		return nil, err
	}
	d := &Diffusion{cfg: cfg, sched: s, dev: dev}
	mv, mlv := s.ModelVariance(cfg.Variance)
	err = ct.Try(func() {
		up := func(v []float64) *ct.Tensor {
			f := make([]float32, len(v))
			for i, x := range v {
				f[i] = float32(x)
			}
			host := ct.FromSlice(f)
			t := host
			if dev.IsCUDA() {
				t = host.To(dev, 0)
				host.Free()
			}
			d.owned = append(d.owned, t)
			return t
		}
		d.betas = up(s.Betas)
		d.alphasCumprod = up(s.AlphasCumprod)
		d.alphasCumprodPrev = up(s.AlphasCumprodPrev)
		d.alphasCumprodNext = up(s.AlphasCumprodNext)
		d.sqrtAlphasCumprod = up(s.SqrtAlphasCumprod)
		d.sqrtOneMinusAlphasCumprod = up(s.SqrtOneMinusAlphasCumprod)
		d.sqrtRecipAlphasCumprod = up(s.SqrtRecipAlphasCumprod)
		d.sqrtRecipm1AlphasCumprod = up(s.SqrtRecipm1AlphasCumprod)
		d.posteriorVariance = up(s.PosteriorVariance)
		d.posteriorLogVarianceClipped = up(s.PosteriorLogVarianceClipped)
		d.posteriorMeanCoef1 = up(s.PosteriorMeanCoef1)
		d.posteriorMeanCoef2 = up(s.PosteriorMeanCoef2)
		d.modelVariance = up(mv)
		d.modelLogVariance = up(mlv)
		tm := ct.FromSlice(s.TimestepMap)
		d.timestepMap = tm
		if dev.IsCUDA() {
			d.timestepMap = tm.To(dev, 0)
			tm.Free()
		}
		d.owned = append(d.owned, d.timestepMap)
	})
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("diffusion: uploading the schedule: %w", err)
	}
	return d, nil
}

// Close frees the schedule tensors. Idempotent.
func (d *Diffusion) Close() {
	for _, t := range d.owned {
		t.Free()
	}
	d.owned = nil
}

// Config returns the configuration.
func (d *Diffusion) Config() Config { return d.cfg }

// Schedule returns the host float64 arrays.
func (d *Diffusion) Schedule() *Schedule { return d.sched }

// NumSteps is T, the number of steps of this (possibly respaced) schedule.
func (d *Diffusion) NumSteps() int { return len(d.sched.Betas) }

// Device is where the schedule tensors live.
func (d *Diffusion) Device() ct.Device { return d.dev }

// extract gathers arr[t] for t [B] and shapes it [B,1,...] to broadcast
// against a tensor of rank ndim. The result joins t's scope.
func extract(arr, t *ct.Tensor, ndim int) *ct.Tensor {
	shape := make([]int64, ndim)
	shape[0] = -1
	for i := 1; i < ndim; i++ {
		shape[i] = 1
	}
	g := arr.IndexSelect(0, t)
	v := g.View(shape...)
	g.Free()
	return v
}

// QSample is x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε for x0, noise [B,D] float32 and t [B] int64.
func (d *Diffusion) QSample(x0, t, noise *ct.Tensor) *ct.Tensor {
	a := extract(d.sqrtAlphasCumprod, t, 2)
	b := extract(d.sqrtOneMinusAlphasCumprod, t, 2)
	ax := a.Mul(x0)
	bn := b.Mul(noise)
	a.Free()
	b.Free()
	out := ax.Add(bn)
	ax.Free()
	bn.Free()
	return out
}

// ModelSteps maps schedule indices t [B] to the base-schedule step numbers
// the model was trained with (identity without respacing). The result is a
// new tensor in t's scope.
func (d *Diffusion) ModelSteps(t *ct.Tensor) *ct.Tensor {
	return d.timestepMap.IndexSelect(0, t)
}

// PerSampleMSE returns mse_i = mean_d (ε − ε̂(x_t, t))² [B] float32 with
// x_t = QSample(x0, t, noise): the ε-prediction loss of each sample.
// Intermediates are freed; the result joins x0's scope.
func (d *Diffusion) PerSampleMSE(model Model, x0, t, noise *ct.Tensor) *ct.Tensor {
	xt := d.QSample(x0, t, noise)
	steps := d.ModelSteps(t)
	eps := model.Forward(xt, steps)
	xt.Free()
	steps.Free()
	sq := eps.MSELoss(noise, ct.ReduceNone)
	eps.Free()
	out := sq.MeanDims(false, 1)
	sq.Free()
	return out
}
