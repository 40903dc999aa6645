package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// AEStepConfig describes the autoencoder an AEStep trains.
type AEStepConfig struct {
	Genes  int64   // G, the input and output width
	Hidden []int64 // the encoder's block widths; the decoder uses them reversed
	Latent int64
	// BNMomentum and BNEps are BatchNorm1d's (0.1 and 1e-5 in the reference).
	BNMomentum, BNEps float64
}

// AEStep is the fused training step of scDiffusion's autoencoder
// (cgt_ae_step_*, CPU): forward (Linear → BatchNorm1d in train mode →
// PReLU blocks, L2-normalised latent), MSE(mean) reconstruction loss and
// backward written out by hand over a workspace allocated once, with the
// BatchNorm running statistics updated in place. Not safe for concurrent
// use; Close it.
type AEStep struct {
	h unsafe.Pointer // C.cgt_ae_step; swapped to nil by Close
}

// NewAEStep builds the step over params and grads (float32, CPU, in the
// order cgotorch.h gives for cgt_ae_step_new) and the BatchNorm buffers,
// aliased: runs read the parameters and write the gradients and buffers in
// place. The step holds its own references.
func NewAEStep(cfg AEStepConfig, params, grads, buffers []*Tensor) (*AEStep, error) {
	if len(params) != len(grads) || len(params) == 0 || len(buffers) == 0 || len(cfg.Hidden) == 0 {
		return nil, misuse("ae_step_new", "one gradient per parameter, buffers and hidden widths required")
	}
	var hp, hg, hb []C.cgt_tensor
	if err := Try(func() {
		hp, hg, hb = handles("ae_step_new", params), handles("ae_step_new", grads), handles("ae_step_new", buffers)
	}); err != nil {
		return nil, err
	}
	var h C.cgt_ae_step
	err := check("ae_step_new", C.cgt_ae_step_new(C.int64_t(cfg.Genes), (*C.int64_t)(unsafe.Pointer(&cfg.Hidden[0])), C.int32_t(len(cfg.Hidden)),
		C.int64_t(cfg.Latent), listPtr(hp), listPtr(hg), C.int32_t(len(hp)), listPtr(hb), C.int32_t(len(hb)),
		C.double(cfg.BNMomentum), C.double(cfg.BNEps), &h))
	runtime.KeepAlive(cfg.Hidden)
	if err != nil {
		return nil, err
	}
	a := &AEStep{}
	a.h = unsafe.Pointer(h)
	return a, nil
}

func (a *AEStep) ptr(op string) (C.cgt_ae_step, error) {
	p := C.cgt_ae_step(atomic.LoadPointer(&a.h))
	if p == nil {
		return nil, misuse(op, "use of a closed autoencoder step")
	}
	return p, nil
}

// Close frees the step and its workspace. Idempotent.
func (a *AEStep) Close() {
	if a == nil {
		return
	}
	if p := atomic.SwapPointer(&a.h, nil); p != nil {
		C.cgt_ae_step_free(C.cgt_ae_step(p))
	}
}

// Reserve sizes the workspace for batches of up to rows cells (≥ 2).
func (a *AEStep) Reserve(rows int64) error {
	p, err := a.ptr("ae_step_reserve")
	if err != nil {
		return err
	}
	return check("ae_step_reserve", C.cgt_ae_step_reserve(p, C.int64_t(rows)))
}

// Run trains on the n cells of x (row-major [n, genes], copied in): it
// adds the batch's loss to lossAcc (a float64 scalar; nil: not reported)
// and writes the gradients — or, with upd, applies that AdamW step to each
// parameter as soon as its gradient is ready (bit-identical to FusedAdamW
// after a plain run).
func (a *AEStep) Run(x []float32, n int64, lossAcc *Tensor, upd *FusedUpdate) error {
	p, err := a.ptr("ae_step_run")
	if err != nil {
		return err
	}
	if n <= 0 || int64(len(x)) < n {
		return misuse("ae_step_run", "x holds fewer than n rows")
	}
	var hl C.cgt_tensor
	var cu *C.cgt_fused_update
	var pin runtime.Pinner
	defer pin.Unpin()
	if err := Try(func() {
		hl = optHandle(lossAcc, "ae_step_run")
		cu = upd.c("ae_step_run", &pin)
	}); err != nil {
		return err
	}
	err = check("ae_step_run", C.cgt_ae_step_run(p, (*C.float)(unsafe.Pointer(&x[0])), C.int64_t(n), hl, cu))
	runtime.KeepAlive(x)
	return err
}

// Info reports the step's buffer sizes and its last run's matrix products.
func (a *AEStep) Info() (FusedStepInfo, error) {
	p, err := a.ptr("ae_step_info")
	if err != nil {
		return FusedStepInfo{}, err
	}
	var st C.cgt_fused_step_stats
	if err := check("ae_step_info", C.cgt_ae_step_info(p, &st)); err != nil {
		return FusedStepInfo{}, err
	}
	return fusedStepInfo(st), nil
}

// ReplayGEMMs issues the last Run's matrix products again, reps times (the
// step's matrix-product floor, for benchmarks); it overwrites gradients
// and activations with garbage.
func (a *AEStep) ReplayGEMMs(reps int) error {
	p, err := a.ptr("ae_step_replay_gemms")
	if err != nil {
		return err
	}
	return check("ae_step_replay_gemms", C.cgt_ae_step_replay_gemms(p, C.int64_t(reps)))
}
