package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// AdamWConfig holds AdamW's hyper-parameters. Use DefaultAdamWConfig for
// PyTorch's defaults; a zero field means zero (no weight decay, no momentum).
type AdamWConfig struct {
	LR          float64
	Beta1       float64
	Beta2       float64
	Eps         float64
	WeightDecay float64
	AMSGrad     bool
}

// DefaultAdamWConfig returns torch.optim.AdamW's defaults: lr 1e-3,
// betas (0.9, 0.999), eps 1e-8, weight decay 1e-2.
func DefaultAdamWConfig() AdamWConfig {
	return AdamWConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2}
}

func (c AdamWConfig) c() C.cgt_adamw_options {
	return C.cgt_adamw_options{
		lr: C.double(c.LR), beta1: C.double(c.Beta1), beta2: C.double(c.Beta2),
		eps: C.double(c.Eps), weight_decay: C.double(c.WeightDecay), amsgrad: cbool(c.AMSGrad),
	}
}

// AdamW is libtorch's torch::optim::AdamW (decoupled weight decay) over a
// fixed list of leaf parameters. It must be closed.
type AdamW struct {
	h      unsafe.Pointer // C.cgt_optim; swapped to nil atomically by Close
	params []*Tensor
}

// NewAdamW builds an optimizer over params (leaf tensors that require grad;
// they are aliased, so the optimizer updates them in place).
func NewAdamW(params []*Tensor, cfg AdamWConfig) (*AdamW, error) {
	var hs []C.cgt_tensor
	if err := Try(func() { hs = handles("adamw_new", params) }); err != nil {
		return nil, err
	}
	var h C.cgt_optim
	if err := check("adamw_new", C.cgt_adamw_new(listPtr(hs), C.int32_t(len(hs)), cfg.c(), &h)); err != nil {
		return nil, err
	}
	o := &AdamW{params: params}
	o.h = unsafe.Pointer(h)
	return o, nil
}

func (o *AdamW) ptr(op string) (C.cgt_optim, error) {
	p := C.cgt_optim(atomic.LoadPointer(&o.h))
	if p == nil {
		return nil, misuse(op, "use of a closed optimizer")
	}
	return p, nil
}

// Close releases the optimizer and its state. It is idempotent.
func (o *AdamW) Close() {
	if p := atomic.SwapPointer(&o.h, nil); p != nil {
		C.cgt_optim_free(C.cgt_optim(p))
	}
}

// Step applies one update from the current gradients.
func (o *AdamW) Step() error {
	p, err := o.ptr("step")
	if err != nil {
		return err
	}
	return check("step", C.cgt_optim_step(p))
}

// ZeroGrad clears gradients: setToNone resets them to undefined (memory is
// released), otherwise they are zeroed in place. The meaning is the same on
// libtorch 1.13 and 2.x (whose own zero_grad defaults differ).
func (o *AdamW) ZeroGrad(setToNone bool) error {
	p, err := o.ptr("zero_grad")
	if err != nil {
		return err
	}
	return check("zero_grad", C.cgt_optim_zero_grad(p, cbool(setToNone)))
}

// LR returns the learning rate of the first parameter group.
func (o *AdamW) LR() float64 {
	p, err := o.ptr("get_lr")
	if err != nil {
		panic(err)
	}
	var lr C.double
	must("get_lr", C.cgt_optim_get_lr(p, &lr))
	return float64(lr)
}

// SetLR sets the learning rate of every parameter group.
func (o *AdamW) SetLR(lr float64) error {
	p, err := o.ptr("set_lr")
	if err != nil {
		return err
	}
	return check("set_lr", C.cgt_optim_set_lr(p, C.double(lr)))
}

// Params returns the parameters the optimizer updates.
func (o *AdamW) Params() []*Tensor { return o.params }

// AdamWState is the state of one parameter: the number of steps taken and
// the first and second moment estimates (nil before the first step).
type AdamWState struct {
	Step        int64
	ExpAvg      *Tensor
	ExpAvgSq    *Tensor
	MaxExpAvgSq *Tensor // AMSGrad only
}

// State returns parameter i's state. The tensors alias the live state and
// are owned by s (nil: unowned).
func (o *AdamW) State(s *Scope, i int) (AdamWState, error) {
	p, err := o.ptr("get_state")
	if err != nil {
		return AdamWState{}, err
	}
	var step C.int64_t
	var m, v, mx C.cgt_tensor
	if err := check("get_state", C.cgt_adamw_get_state(p, C.int32_t(i), &step, &m, &v, &mx)); err != nil {
		return AdamWState{}, err
	}
	st := AdamWState{Step: int64(step)}
	if m != nil {
		st.ExpAvg = newTensor(m, s)
	}
	if v != nil {
		st.ExpAvgSq = newTensor(v, s)
	}
	if mx != nil {
		st.MaxExpAvgSq = newTensor(mx, s)
	}
	return st, nil
}

// SetState replaces parameter i's state with copies of st's tensors.
func (o *AdamW) SetState(i int, st AdamWState) error {
	p, err := o.ptr("set_state")
	if err != nil {
		return err
	}
	if st.ExpAvg == nil || st.ExpAvgSq == nil {
		return misuse("set_state", "exp_avg and exp_avg_sq are required")
	}
	var m, v, mx C.cgt_tensor
	if err := Try(func() {
		m, v = st.ExpAvg.handle("set_state"), st.ExpAvgSq.handle("set_state")
		mx = optHandle(st.MaxExpAvgSq, "set_state")
	}); err != nil {
		return err
	}
	return check("set_state", C.cgt_adamw_set_state(p, C.int32_t(i), C.int64_t(st.Step), m, v, mx))
}

// StateDict returns the optimizer state as named tensors in PyTorch's
// state_dict layout: "state.{i}.step" (0-dim float32, as torch 1.13 stores
// it), "state.{i}.exp_avg", "state.{i}.exp_avg_sq", and
// "param_groups.0.lr" (0-dim float64). The tensors are copies owned by s.
func (o *AdamW) StateDict(s *Scope) ([]Named, error) {
	var out []Named
	for i := range o.params {
		st, err := o.State(nil, i)
		if err != nil {
			return nil, err
		}
		if st.ExpAvg == nil {
			continue
		}
		err = Try(func() {
			pre := fmt.Sprintf("state.%d.", i)
			out = append(out,
				Named{pre + "step", s.Scalar(float64(st.Step), Of(Float32))},
				Named{pre + "exp_avg", s.Adopt(st.ExpAvg.Clone())},
				Named{pre + "exp_avg_sq", s.Adopt(st.ExpAvgSq.Clone())})
			if st.MaxExpAvgSq != nil {
				out = append(out, Named{pre + "max_exp_avg_sq", s.Adopt(st.MaxExpAvgSq.Clone())})
			}
		})
		st.ExpAvg.Free()
		st.ExpAvgSq.Free()
		st.MaxExpAvgSq.Free()
		if err != nil {
			return nil, err
		}
	}
	var lr *Tensor
	if err := Try(func() { lr = s.Scalar(o.LR(), Of(Float64)) }); err != nil {
		return nil, err
	}
	out = append(out, Named{"param_groups.0.lr", lr})
	return out, nil
}

// LoadStateDict restores what StateDict produced (tensors are copied; the
// learning rate is restored when present).
func (o *AdamW) LoadStateDict(sd []Named) error {
	byName := make(map[string]*Tensor, len(sd))
	for _, n := range sd {
		byName[n.Name] = n.T
	}
	for i, p := range o.params {
		pre := fmt.Sprintf("state.%d.", i)
		m, v := byName[pre+"exp_avg"], byName[pre+"exp_avg_sq"]
		if m == nil && v == nil {
			continue
		}
		if m == nil || v == nil {
			return fmt.Errorf("cgotorch: optimizer state %d: need both %sexp_avg and %sexp_avg_sq: %w", i, pre, pre, ErrInvalidArgument)
		}
		st := AdamWState{ExpAvg: m, ExpAvgSq: v, MaxExpAvgSq: byName[pre+"max_exp_avg_sq"]}
		if step := byName[pre+"step"]; step != nil {
			if err := Try(func() { st.Step = int64(step.Item()) }); err != nil {
				return err
			}
		}
		var same bool
		if err := Try(func() { same = shapeEqual(p.Shape(), m.Shape()) }); err != nil {
			return err
		}
		if !same {
			return fmt.Errorf("cgotorch: optimizer state %d: %sexp_avg has shape %v, parameter has %v: %w", i, pre, m.Shape(), p.Shape(), ErrInvalidArgument)
		}
		if err := o.SetState(i, st); err != nil {
			return err
		}
	}
	if lr := byName["param_groups.0.lr"]; lr != nil {
		var v float64
		if err := Try(func() { v = lr.Item() }); err != nil {
			return err
		}
		return o.SetLR(v)
	}
	return nil
}

func shapeEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FusedStep configures FusedAdamW beyond the AdamW hyper-parameters.
type FusedStep struct {
	// Grads and GradNumel give the gradient as segments laid end to end
	// (per-parameter gradients allocated by autograd, in flat order) when
	// FusedAdamW's g is nil: GradNumel[k] elements each; a nil Grads[k] is a
	// zero gradient.
	Grads     []*Tensor
	GradNumel []int64
	// GradScale multiplies the gradient as it is read (1/loss scale); 0
	// means 1. The gradient tensors are never written (except zeroed with
	// ZeroGrad), on the CPU as on CUDA.
	GradScale float64
	// EMAs are updated after the step: EMAs[k] = Rates[k]·EMAs[k] + (1-Rates[k])·p.
	EMAs  []*Tensor
	Rates []float64
	// ZeroGrad zeroes g after use.
	ZeroGrad bool
	// SumSq, if set (float64 [2] on the parameters' device), accumulates
	// sum(g²) of the scaled gradient and sum(p²) of the parameters before the
	// update: the gradient and parameter norms at no extra pass.
	SumSq *Tensor
}

// FusedAdamW applies one AdamW update to flat buffers in a single pass over
// memory (CPU) or a few whole-buffer kernels (CUDA), with the options of fs.
// cfg.AMSGrad is refused (ErrInvalidArgument). Every tensor written has its
// version counter bumped, as an in-place op would, so autograd rejects a
// graph that saved one of them before the update.
// step is the 1-based update count for bias correction. The arithmetic is
// PyTorch's AdamW; p, m, v and every EMA must be contiguous float tensors
// with the same numel on the same device; the gradient is g (same layout)
// or, if g is nil, fs.Grads.
func FusedAdamW(p, g, m, v *Tensor, step int64, cfg AdamWConfig, fs FusedStep) error {
	emas, rates := fs.EMAs, fs.Rates
	if len(emas) != len(rates) {
		return misuse("fused_adamw", "one rate per EMA buffer")
	}
	var hp, hg, hm, hv, hs C.cgt_tensor
	var he []C.cgt_tensor
	var hgs []C.cgt_tensor
	if g == nil && len(fs.Grads) != len(fs.GradNumel) {
		return misuse("fused_adamw", "one numel per gradient segment")
	}
	if err := Try(func() {
		hp, hm, hv = p.handle("fused_adamw"), m.handle("fused_adamw"), v.handle("fused_adamw")
		hg = optHandle(g, "fused_adamw")
		he = handles("fused_adamw", emas)
		hs = optHandle(fs.SumSq, "fused_adamw")
		if g == nil {
			hgs = make([]C.cgt_tensor, len(fs.Grads))
			for i, t := range fs.Grads {
				hgs[i] = optHandle(t, "fused_adamw")
			}
		}
	}); err != nil {
		return err
	}
	var np *C.int64_t
	if len(fs.GradNumel) > 0 {
		np = (*C.int64_t)(unsafe.Pointer(&fs.GradNumel[0]))
	}
	var rp *C.double
	if len(rates) > 0 {
		rp = (*C.double)(unsafe.Pointer(&rates[0]))
	}
	scale := fs.GradScale
	if scale == 0 {
		scale = 1
	}
	return check("fused_adamw", C.cgt_fused_adamw_(hp, hg, listPtr(hgs), np, C.int32_t(len(hgs)), hm, hv, C.int64_t(step), cfg.c(), C.double(scale), listPtr(he), rp, C.int32_t(len(he)), cbool(fs.ZeroGrad), hs))
}

// EMAUpdate does ema = rate·ema + (1-rate)·p in place, outside autograd.
func EMAUpdate(ema, p *Tensor, rate float64) error {
	var he, hp C.cgt_tensor
	if err := Try(func() { he, hp = ema.handle("ema"), p.handle("ema") }); err != nil {
		return err
	}
	return check("ema", C.cgt_ema_(he, hp, C.double(rate)))
}
