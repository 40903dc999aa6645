// Package cgotorch is a Go binding over libtorch through a small C++ shim,
// libcgotorch.so, with a pure-C ABI (cgotorch.h). It is the only package of
// gotorch-train that uses cgo for libtorch.
//
// # Flavours
//
// The same Go binary runs on either build of the shim, chosen at run time by
// the dynamic loader: the CPU flavour (cgotorch/build/cpu, Debian's libtorch
// 1.13, found through the binary's RUNPATH) or the CUDA flavour
// (cgotorch/build/cuda, the libtorch of a pip torch 2.x wheel, selected with
// LD_LIBRARY_PATH). Init verifies the shim's ABI version; Build reports the
// flavour and libtorch version.
//
// # Memory
//
// Tensor memory is released deterministically, never by Go's garbage
// collector (which cannot see host or device memory held by libtorch). A
// Scope is an arena: tensors created in it, and results of operations on
// them, are freed together by Scope.Close. Long-lived tensors (parameters,
// optimizer and EMA state) are unowned and freed with Free. LiveTensors
// counts live handles on the C side for leak tests, and CPUAllocatorStats /
// CUDAMemoryStats report allocator bytes.
//
// # Errors
//
// No C++ exception crosses into Go: every shim function returns a status.
// Tensor math panics with *Error (like gonum's mat for shape misuse); Try
// and Scope.Run convert such a panic back into an error. I/O, device and
// optimizer calls return errors. errors.Is(err, ErrOutOfMemory) and
// errors.Is(err, ErrNoCUDA) classify failures.
//
// # Threads
//
// libtorch's grad mode, autocast state and OpenMP thread count belong to the
// OS thread. NoGrad and WithAutocast lock the goroutine to its thread for
// their duration and restore the previous state even on panic; the thread
// count set by Init or SetNumThreads is applied to every thread that enters
// the shim.
//
// # Fused training steps
//
// UnetStep and AEStep are the Cell_Unet and autoencoder training steps
// written out by hand in the shim (llm.c style): forward, loss and backward
// over a workspace allocated once, matrix products by the BLAS straight into
// it and into the gradients, no autograd graph, no tensor allocation and no
// libtorch op per step on the CPU; UnetStep also runs as ATen ops on CUDA
// (FusedATen). A run either writes the gradients (for FusedAdamW, or a
// reduction across processes first) or applies a FusedUpdate itself as each
// gradient is ready. CountOps counts libtorch dispatcher ops for comparing
// implementations.
//
// PYTORCH_CUDA_ALLOC_CONF is read by the CUDA caching allocator when it
// first initialises, so it must be set (in the environment, or through
// Config.AllocConf) before the first CUDA allocation.
package cgotorch
