package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// CUDAIsAvailable reports whether libtorch sees a usable CUDA device (always
// false in the CPU flavour).
func CUDAIsAvailable() bool { return C.cgt_cuda_is_available() != 0 }

// CUDADeviceCount is the number of CUDA devices libtorch sees.
func CUDADeviceCount() int { return int(C.cgt_cuda_device_count()) }

// CUDAInit initialises the CUDA context and caching allocator of device dev
// by allocating one element. Set PYTORCH_CUDA_ALLOC_CONF (Config.AllocConf)
// before the first call.
func CUDAInit(dev int) error { return check("cuda_init", C.cgt_cuda_init(C.int32_t(dev))) }

// CUDASynchronize waits for all work on device dev.
func CUDASynchronize(dev int) error {
	return check("cuda_synchronize", C.cgt_cuda_synchronize(C.int32_t(dev)))
}

// CUDAManualSeedAll seeds the default generator of every CUDA device.
func CUDAManualSeedAll(seed uint64) error {
	return check("cuda_manual_seed_all", C.cgt_cuda_manual_seed_all(C.uint64_t(seed)))
}

// EmptyCache returns the caching allocator's unoccupied cached blocks to the
// driver (torch.cuda.empty_cache). It synchronises and is slow: use it
// between phases or after an out-of-memory error, never every step.
// The CPU flavour returns ErrNoCUDA.
func EmptyCache() error { return check("cuda_empty_cache", C.cgt_cuda_empty_cache()) }

// CUDAMemStats are the CUDA caching allocator's statistics for one device
// (aggregate pool), as in torch.cuda.memory_stats.
type CUDAMemStats struct {
	AllocatedBytes, PeakAllocatedBytes         int64 // live tensor blocks
	ReservedBytes, PeakReservedBytes           int64 // obtained from CUDA, in use or cached
	ActiveBytes, PeakActiveBytes               int64
	InactiveSplitBytes, PeakInactiveSplitBytes int64 // unusable free parts of split blocks
	NumAllocRetries                            int64 // cudaMalloc failed, cache flushed, retried
	NumOOMs                                    int64
	LargestFreeBlock                           int64 // -1 unless requested with a snapshot
	NumSegments                                int64 // -1 unless requested with a snapshot
}

// CUDAMemoryStats reads the allocator's statistics for device dev. With
// snapshot, it also walks the allocator's segments for the largest free block
// (slower; use at an out-of-memory report, not every step).
func CUDAMemoryStats(dev int, snapshot bool) (CUDAMemStats, error) {
	var s C.cgt_cuda_mem_stats
	if err := check("cuda_memory_stats", C.cgt_cuda_memory_stats(C.int32_t(dev), cbool(snapshot), &s)); err != nil {
		return CUDAMemStats{}, err
	}
	return CUDAMemStats{
		AllocatedBytes: int64(s.allocated_current), PeakAllocatedBytes: int64(s.allocated_peak),
		ReservedBytes: int64(s.reserved_current), PeakReservedBytes: int64(s.reserved_peak),
		ActiveBytes: int64(s.active_current), PeakActiveBytes: int64(s.active_peak),
		InactiveSplitBytes: int64(s.inactive_split_current), PeakInactiveSplitBytes: int64(s.inactive_split_peak),
		NumAllocRetries: int64(s.num_alloc_retries), NumOOMs: int64(s.num_ooms),
		LargestFreeBlock: int64(s.largest_free_block), NumSegments: int64(s.num_segments),
	}, nil
}

// CUDAResetPeakStats resets every peak statistic of device dev.
func CUDAResetPeakStats(dev int) error {
	return check("cuda_reset_peak_stats", C.cgt_cuda_reset_peak_stats(C.int32_t(dev)))
}

// CUDAMemGetInfo returns the device's free and total memory (cudaMemGetInfo).
func CUDAMemGetInfo(dev int) (free, total int64, err error) {
	var f, t C.int64_t
	err = check("cuda_mem_get_info", C.cgt_cuda_mem_get_info(C.int32_t(dev), &f, &t))
	return int64(f), int64(t), err
}

// CUDASetMemoryFraction caps the caching allocator of dev at fraction of the
// device's memory; allocations beyond it fail with ErrOutOfMemory.
func CUDASetMemoryFraction(dev int, fraction float64) error {
	return check("cuda_set_memory_fraction", C.cgt_cuda_set_memory_fraction(C.int32_t(dev), C.double(fraction)))
}

// CUDAPCIBusID returns the PCI bus id of CUDA device dev, to match NVML devices.
func CUDAPCIBusID(dev int) (string, error) {
	var p *C.char
	if err := check("cuda_pci_bus_id", C.cgt_cuda_pci_bus_id(C.int32_t(dev), &p)); err != nil {
		return "", err
	}
	defer C.cgt_free(unsafe.Pointer(p))
	return C.GoString(p), nil
}

// WithAutocast runs fn with CUDA autocast to dt (Float16 or BFloat16) on the
// calling OS thread (locked for the duration), restoring the previous state
// afterwards even on panic. The CPU flavour returns ErrNoCUDA.
func WithAutocast(dt DType, fn func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var prevOn, prevDT C.int32_t
	if err := check("autocast", C.cgt_autocast_set(1, C.int32_t(dt), &prevOn, &prevDT)); err != nil {
		return err
	}
	defer func() {
		C.cgt_autocast_set(prevOn, prevDT, nil, nil)
		C.cgt_autocast_clear_cache()
	}()
	fn()
	return nil
}

// CPUAllocStats are the byte counts of cgotorch's tracking CPU allocator
// (installed by Init unless Config.UntrackedCPUAllocator).
type CPUAllocStats struct {
	Installed          bool
	AllocatedBytes     int64
	PeakAllocatedBytes int64
	NumAllocs          int64
	NumFrees           int64
	NumOOMs            int64
	LimitBytes         int64 // 0: no limit
}

// CPUAllocatorStats reads the CPU allocator's counters.
func CPUAllocatorStats() CPUAllocStats {
	var s C.cgt_cpu_alloc_stats
	C.cgt_cpu_alloc_stats_get(&s)
	return CPUAllocStats{
		Installed: s.installed != 0, AllocatedBytes: int64(s.allocated_bytes), PeakAllocatedBytes: int64(s.peak_allocated_bytes),
		NumAllocs: int64(s.num_allocs), NumFrees: int64(s.num_frees), NumOOMs: int64(s.num_ooms), LimitBytes: int64(s.limit_bytes),
	}
}

// ResetCPUPeak sets the CPU allocator's peak to its current value.
func ResetCPUPeak() { C.cgt_cpu_alloc_reset_peak() }

// SetCPUAllocLimit makes CPU tensor allocations that would exceed bytes in
// use fail with ErrOutOfMemory, raised inside libtorch like a real allocation
// failure; 0 removes the limit. For tests and memory budgets.
func SetCPUAllocLimit(bytes int64) { C.cgt_cpu_alloc_set_limit(C.int64_t(bytes)) }
