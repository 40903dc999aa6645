package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// FusedBackend selects how a fused training step computes.
type FusedBackend int32

const (
	// FusedAuto is FusedCPU for CPU tensors and FusedATen otherwise.
	FusedAuto FusedBackend = C.CGT_FUSED_AUTO
	// FusedCPU runs hand-written fused loops over a workspace allocated once,
	// with matrix products by the process's BLAS: no allocation and no
	// libtorch op per step. CPU tensors only.
	FusedCPU FusedBackend = C.CGT_FUSED_CPU
	// FusedATen runs the same step as ATen ops on the parameters' device
	// (CUDA, or the CPU for tests): no host synchronisation and no
	// data-dependent shapes, so a CUDA graph can capture it.
	FusedATen FusedBackend = C.CGT_FUSED_ATEN
)

// String returns "auto", "cpu" or "aten".
func (b FusedBackend) String() string {
	switch b {
	case FusedAuto:
		return "auto"
	case FusedCPU:
		return "cpu"
	case FusedATen:
		return "aten"
	}
	return fmt.Sprintf("FusedBackend(%d)", int32(b))
}

// UnetStepConfig describes the Cell_Unet a UnetStep trains.
type UnetStepConfig struct {
	InputDim int64   // D
	Hidden   []int64 // H; H[0] is the time-embedding width
	Backend  FusedBackend
}

// UnetSchedule holds what the step needs of the diffusion schedule: the
// q_sample coefficients √ᾱ_t and √(1−ᾱ_t) (float32 [T]), the model step of
// every schedule step (int64 [T]) and the embedding frequencies (float32
// [E/2], cellunet.Model's). The step copies what it keeps.
type UnetSchedule struct {
	SqrtAlphasCumprod, SqrtOneMinusAlphasCumprod *Tensor
	TimestepMap                                  *Tensor
	Freqs                                        *Tensor
}

// UnetStep is the fused Cell_Unet training step (cgt_unet_step_*): q_sample,
// forward, per-sample ε-MSE and backward written out by hand, gradients
// written straight into the given gradient tensors (views of a flat gradient
// buffer). It takes no optimizer step. Not safe for concurrent use; Close it.
type UnetStep struct {
	h unsafe.Pointer // C.cgt_unet_step; swapped to nil by Close
}

// NewUnetStep builds the step over params and grads: float32 contiguous
// tensors in the Cell_Unet state-dict order (52 for the default
// architecture), aliased, not copied — the step reads the parameters and
// writes the gradients in place on every Run. The step holds its own
// references: the handles may be freed after the call.
func NewUnetStep(cfg UnetStepConfig, params, grads []*Tensor, sched UnetSchedule) (*UnetStep, error) {
	if len(params) != len(grads) || len(params) == 0 {
		return nil, misuse("unet_step_new", "one gradient per parameter")
	}
	if len(cfg.Hidden) == 0 {
		return nil, misuse("unet_step_new", "hidden widths required")
	}
	var hp, hg []C.cgt_tensor
	var fr, ab, bb, tm C.cgt_tensor
	if err := Try(func() {
		hp, hg = handles("unet_step_new", params), handles("unet_step_new", grads)
		fr = sched.Freqs.handle("unet_step_new")
		ab = sched.SqrtAlphasCumprod.handle("unet_step_new")
		bb = sched.SqrtOneMinusAlphasCumprod.handle("unet_step_new")
		tm = sched.TimestepMap.handle("unet_step_new")
	}); err != nil {
		return nil, err
	}
	var h C.cgt_unet_step
	err := check("unet_step_new", C.cgt_unet_step_new(C.int64_t(cfg.InputDim), (*C.int64_t)(unsafe.Pointer(&cfg.Hidden[0])),
		C.int32_t(len(cfg.Hidden)), listPtr(hp), listPtr(hg), C.int32_t(len(hp)), fr, ab, bb, tm, C.int32_t(cfg.Backend), &h))
	runtime.KeepAlive(cfg.Hidden)
	if err != nil {
		return nil, err
	}
	u := &UnetStep{}
	u.h = unsafe.Pointer(h)
	return u, nil
}

func (u *UnetStep) ptr(op string) (C.cgt_unet_step, error) {
	p := C.cgt_unet_step(atomic.LoadPointer(&u.h))
	if p == nil {
		return nil, misuse(op, "use of a closed unet step")
	}
	return p, nil
}

// Close frees the step and its workspace. Idempotent.
func (u *UnetStep) Close() {
	if u == nil {
		return
	}
	if p := atomic.SwapPointer(&u.h, nil); p != nil {
		C.cgt_unet_step_free(C.cgt_unet_step(p))
	}
}

// Reserve sizes the workspace for runs of up to rows samples, releasing the
// old one first (so a smaller workspace fits where a larger one ran out of
// memory). A no-op at the current size. Errors wrap ErrOutOfMemory when the
// allocation fails; the step then holds no workspace.
func (u *UnetStep) Reserve(rows int64) error {
	p, err := u.ptr("unet_step_reserve")
	if err != nil {
		return err
	}
	return check("unet_step_reserve", C.cgt_unet_step_reserve(p, C.int64_t(rows)))
}

// UnetBatch is one Run's input and outputs (all on the parameters' device).
type UnetBatch struct {
	// Data holds x0: Data[Index[r]] for r < n when Index (int64 [n]) is set,
	// else Data is x0 itself ([n,D] float32).
	Data, Index *Tensor
	T           *Tensor // int64 [n]: schedule steps
	Noise       *Tensor // float32 [n,D]: ε
	Weights     *Tensor // float32 [n]: importance weights w
	// MSE (float32 [n]) receives mse_r = mean_d (ε̂ − ε)².
	MSE *Tensor
	// Coef scales the loss whose gradient is computed: coef·Σ_r w_r·mse_r
	// (1/B for the batch mean, times the loss scale).
	Coef float64
	// Accumulate adds to the gradients instead of overwriting them.
	Accumulate bool
	// LogAcc, if set (float64 [15]), gets the log window's sums added (see
	// cgt_unet_step_run in cgotorch.h).
	LogAcc *Tensor
	// Update, if set, makes the run apply that AdamW step to each parameter
	// as soon as its gradient is ready, instead of writing the gradients
	// (CPU backend; not with Accumulate).
	Update *FusedUpdate
}

// FusedUpdate is an AdamW (+ EMA) step applied during a fused step's run: the
// arithmetic of FusedAdamW after a plain run (bit for bit in the
// parameters, moments and EMAs), but each gradient passes through a
// cache-sized scratch buffer straight into the update, saving the passes
// over the flat gradient buffer.
type FusedUpdate struct {
	// Params is the flat parameter buffer the step's parameters view;
	// ExpAvg, ExpAvgSq and every EMA are laid out like it.
	Params, ExpAvg, ExpAvgSq *Tensor
	Step                     int64 // 1-based
	Config                   AdamWConfig
	EMAs                     []*Tensor
	Rates                    []float64
	// SumSq, if set (float64 [2]), accumulates Σg² and Σp² (before the update).
	SumSq *Tensor
}

// c is u for the C ABI (nil for a nil u); the EMA handles and rates it
// points to are pinned with pin until the caller unpins. Panics with *Error.
func (u *FusedUpdate) c(op string, pin *runtime.Pinner) *C.cgt_fused_update {
	if u == nil {
		return nil
	}
	if len(u.EMAs) != len(u.Rates) {
		panic(misuse(op, "one rate per EMA buffer"))
	}
	cu := &C.cgt_fused_update{params: u.Params.handle(op), exp_avg: u.ExpAvg.handle(op), exp_avg_sq: u.ExpAvgSq.handle(op),
		nema: C.int32_t(len(u.EMAs)), sumsq: optHandle(u.SumSq, op), step: C.int64_t(u.Step), opts: u.Config.c()}
	if len(u.EMAs) > 0 {
		he := handles(op, u.EMAs)
		pin.Pin(&he[0])
		pin.Pin(&u.Rates[0])
		cu.emas, cu.rates = &he[0], (*C.double)(unsafe.Pointer(&u.Rates[0]))
	}
	return cu
}

// Run computes one forward/backward over the batch.
func (u *UnetStep) Run(b UnetBatch) error {
	p, err := u.ptr("unet_step_run")
	if err != nil {
		return err
	}
	var hd, hi, ht, hn, hw, hm, hl C.cgt_tensor
	var upd *C.cgt_fused_update
	var pin runtime.Pinner // the EMA handles and rates are Go memory the C struct points to
	defer pin.Unpin()
	if err := Try(func() {
		const op = "unet_step_run"
		hd, hi = b.Data.handle(op), optHandle(b.Index, op)
		ht, hn, hw = b.T.handle(op), b.Noise.handle(op), b.Weights.handle(op)
		hm, hl = b.MSE.handle(op), optHandle(b.LogAcc, op)
		upd = b.Update.c(op, &pin)
	}); err != nil {
		return err
	}
	return check("unet_step_run", C.cgt_unet_step_run(p, hd, hi, ht, hn, hw, C.double(b.Coef), cbool(b.Accumulate), hm, hl, upd))
}

// FusedStepInfo describes a fused step's backend and memory.
type FusedStepInfo struct {
	Backend FusedBackend
	// BLAS is true when matrix products call the BLAS directly (sgemm_).
	BLAS bool
	// Rows is the reserved microbatch; WorkspaceBytes the activations and
	// their gradients for that many rows (allocated once); TableBytes the
	// timestep-embedding table and schedule coefficients.
	Rows, WorkspaceBytes, TableBytes int64
	// GEMMsLastRun counts the matrix products of the last run (CPU backend).
	GEMMsLastRun int64
}

// Info reports the step's backend and buffer sizes.
func (u *UnetStep) Info() (FusedStepInfo, error) {
	p, err := u.ptr("unet_step_info")
	if err != nil {
		return FusedStepInfo{}, err
	}
	var st C.cgt_fused_step_stats
	if err := check("unet_step_info", C.cgt_unet_step_info(p, &st)); err != nil {
		return FusedStepInfo{}, err
	}
	return fusedStepInfo(st), nil
}

func fusedStepInfo(st C.cgt_fused_step_stats) FusedStepInfo {
	return FusedStepInfo{Backend: FusedBackend(st.backend), BLAS: st.blas != 0, Rows: int64(st.rows),
		WorkspaceBytes: int64(st.workspace_bytes), TableBytes: int64(st.table_bytes), GEMMsLastRun: int64(st.gemms_last_run)}
}

// WorkspaceBytes is what Reserve(rows) allocates (CPU backend; 0 for ATen).
func (u *UnetStep) WorkspaceBytes(rows int64) (int64, error) {
	p, err := u.ptr("unet_step_workspace_bytes")
	if err != nil {
		return 0, err
	}
	var b C.int64_t
	err = check("unet_step_workspace_bytes", C.cgt_unet_step_workspace_bytes(p, C.int64_t(rows), &b))
	return int64(b), err
}

// ReplayGEMMs issues the last Run's matrix products again, reps times, on
// the same buffers — for measuring the step's matrix-product floor. It
// overwrites the gradients with garbage. CPU backend, after a Run.
func (u *UnetStep) ReplayGEMMs(reps int) error {
	p, err := u.ptr("unet_step_replay_gemms")
	if err != nil {
		return err
	}
	return check("unet_step_replay_gemms", C.cgt_unet_step_replay_gemms(p, C.int64_t(reps)))
}

// RandomInt_ fills the int64 tensor t with integers drawn uniformly from
// [low, high) — the values Scope.RandInt draws from the same generator
// state — without allocating.
func (t *Tensor) RandomInt_(low, high int64, g *Generator) *Tensor {
	must("random_int_", C.cgt_random_int_(t.handle("random_int_"), C.int64_t(low), C.int64_t(high), g.ptr()))
	return t
}

// OpCounts are libtorch dispatcher ops counted by CountOps.
type OpCounts struct {
	// Ops counts every op call, composite ones and those they call.
	Ops int64
	// Leaf counts ops that called no other op.
	Leaf int64
	// Kernels counts leaf ops that touch data (views, empty, resize and
	// other metadata-only ops excluded): the kernel launches on a GPU.
	Kernels int64
}

// StartOpCounter installs a process-wide RecordFunction observer that
// counts libtorch dispatcher ops on every thread until StopOpCounter. Not
// reentrant; prefer CountOps where the region is one function call.
func StartOpCounter() error { return check("op_counter_start", C.cgt_op_counter_start()) }

// StopOpCounter removes the observer and returns what it counted.
func StopOpCounter() (OpCounts, error) {
	var ops, leaf, kern C.int64_t
	err := check("op_counter_stop", C.cgt_op_counter_stop(&ops, &leaf, &kern))
	return OpCounts{Ops: int64(ops), Leaf: int64(leaf), Kernels: int64(kern)}, err
}

// CountOps runs fn with the op counter installed (StartOpCounter) and
// returns the ops it saw on every thread. Not reentrant.
func CountOps(fn func()) (c OpCounts, err error) {
	if err := StartOpCounter(); err != nil {
		return OpCounts{}, err
	}
	defer func() { // also when fn panics
		var serr error
		if c, serr = StopOpCounter(); serr != nil && err == nil {
			err = serr
		}
	}()
	fn()
	return c, nil
}
