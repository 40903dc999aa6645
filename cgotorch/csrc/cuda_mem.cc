// CUDA runtime, caching-allocator statistics and autocast. The same source
// builds both flavours: without CGT_WITH_CUDA every allocator call answers
// CGT_ERR_NO_CUDA (never zeros).
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>

#include "common.h"

#ifdef CGT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace {

#ifdef CGT_WITH_CUDA
namespace alloc = c10::cuda::CUDACachingAllocator;

c10::DeviceIndex cuda_index(int32_t device) {
  if (!torch::cuda::is_available()) throw cgt::no_cuda("no CUDA device is available");
  const int32_t n = static_cast<int32_t>(torch::cuda::device_count());
  if (device < 0 || device >= n)
    throw cgt::invalid("CUDA device " + std::to_string(device) + " out of range (have " +
                       std::to_string(n) + ")");
  return static_cast<c10::DeviceIndex>(device);
}

// The shim links the CUDA runtime that libtorch_cuda loads (the probe reads
// its name from libtorch_cuda's DT_NEEDED and its place from its RUNPATH):
// c10's inline CUDA checks call cudaGetLastError/cudaGetErrorString anyway,
// so the runtime API is called directly.
void check_cuda(cudaError_t e, const char *what) {
  if (e != cudaSuccess) {
    std::string m = std::string(what) + ": " + cudaGetErrorString(e);
    (void)cudaGetLastError();  // clear a non-sticky error before libtorch's next launch check
    if (e == cudaErrorMemoryAllocation) throw std::runtime_error(m + " (out of memory)");
    throw std::runtime_error(m);
  }
}

// The largest free block and the number of segments of device d in the
// default pool, from an allocator snapshot. The snapshot's types moved
// between releases (SnapshotInfo::segments since 2.0; SegmentInfo::device an
// int64_t, then a DeviceIndex; BlockInfo::size an int64_t, then a size_t), so
// they are only spelled through auto. Segments owned by a private pool (a
// CUDA graph's) are skipped: their free blocks serve only that graph.
// Under expandable_segments a snapshot reports each contiguous mapped range
// of an expandable segment as a segment, so num_segments counts mapped
// ranges, and the largest free block is still the largest request the cache
// can serve as it stands; but there the allocator unmaps free pages and maps
// them again behind a segment's end before it fails, so a small largest free
// block is no sign of fragmentation as it is with fixed segments.
template <class Snapshot>
void largest_free_block(const Snapshot &snap, c10::DeviceIndex d, int64_t *largest, int64_t *nseg) {
  *largest = 0;
  *nseg = 0;
  for (const auto &seg : snap.segments) {
    if (seg.device != d) continue;
    if (seg.owner_private_pool_id.first != 0 || seg.owner_private_pool_id.second != 0) continue;
    (*nseg)++;
    for (const auto &b : seg.blocks)
      if (!b.allocated && !b.active && static_cast<int64_t>(b.size) > *largest)
        *largest = static_cast<int64_t>(b.size);
  }
}
#endif  // CGT_WITH_CUDA

[[noreturn]] void no_cuda_build() {
  throw cgt::no_cuda("libcgotorch was built without CUDA (CPU flavour)");
}

}  // namespace

extern "C" {

int32_t cgt_cuda_is_available(void) noexcept {
  try {
    return torch::cuda::is_available() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

int32_t cgt_cuda_device_count(void) noexcept {
  try {
    return static_cast<int32_t>(torch::cuda::device_count());
  } catch (...) {
    return 0;
  }
}

cgt_status cgt_cuda_init(int32_t device) noexcept {
  CGT_TRY
#ifdef CGT_WITH_CUDA
  auto d = cuda_index(device);
  // Allocating one element initialises the context and the allocator in every version.
  at::empty({1}, at::TensorOptions().device(c10::Device(c10::kCUDA, d)));
#else
  (void)device;
  no_cuda_build();
#endif
  CGT_CATCH
}

cgt_status cgt_cuda_synchronize(int32_t device) noexcept {
  CGT_TRY
#ifdef CGT_WITH_CUDA
  torch::cuda::synchronize(cuda_index(device));
#else
  (void)device;
  no_cuda_build();
#endif
  CGT_CATCH
}

cgt_status cgt_cuda_manual_seed_all(uint64_t seed) noexcept {
  CGT_TRY
#ifdef CGT_WITH_CUDA
  if (!torch::cuda::is_available()) throw cgt::no_cuda("no CUDA device is available");
  torch::cuda::manual_seed_all(seed);
#else
  (void)seed;
  no_cuda_build();
#endif
  CGT_CATCH
}

cgt_status cgt_cuda_empty_cache(void) noexcept {
  CGT_TRY
#ifdef CGT_WITH_CUDA
  if (!torch::cuda::is_available()) throw cgt::no_cuda("no CUDA device is available");
  alloc::emptyCache();
#else
  no_cuda_build();
#endif
  CGT_CATCH
}

cgt_status cgt_cuda_memory_stats(int32_t device, int32_t with_snapshot,
                                 cgt_cuda_mem_stats *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
#ifdef CGT_WITH_CUDA
  auto d = cuda_index(device);
  auto s = alloc::getDeviceStats(d);
  // Index 0 is the aggregate pool in every version; StatType is never spelled.
  out->allocated_current = s.allocated_bytes[0].current;
  out->allocated_peak = s.allocated_bytes[0].peak;
  out->reserved_current = s.reserved_bytes[0].current;
  out->reserved_peak = s.reserved_bytes[0].peak;
  out->active_current = s.active_bytes[0].current;
  out->active_peak = s.active_bytes[0].peak;
  out->inactive_split_current = s.inactive_split_bytes[0].current;
  out->inactive_split_peak = s.inactive_split_bytes[0].peak;
  out->num_alloc_retries = s.num_alloc_retries;
  out->num_ooms = s.num_ooms;
  out->largest_free_block = -1;
  out->num_segments = -1;
  if (with_snapshot) {
    int64_t largest = 0, nseg = 0;
    largest_free_block(alloc::snapshot(), d, &largest, &nseg);
    out->largest_free_block = largest;
    out->num_segments = nseg;
  }
#else
  (void)device;
  (void)with_snapshot;
  no_cuda_build();
#endif
  CGT_CATCH
}

cgt_status cgt_cuda_reset_peak_stats(int32_t device) noexcept {
  CGT_TRY
#ifdef CGT_WITH_CUDA
  alloc::resetPeakStats(cuda_index(device));
#else
  (void)device;
  no_cuda_build();
#endif
  CGT_CATCH
}

cgt_status cgt_cuda_mem_get_info(int32_t device, int64_t *free_bytes,
                                 int64_t *total_bytes) noexcept {
  CGT_TRY
  if (free_bytes == nullptr || total_bytes == nullptr) throw cgt::invalid("nil out pointer");
#ifdef CGT_WITH_CUDA
  c10::cuda::CUDAGuard guard(cuda_index(device));
  size_t f = 0, t = 0;
  check_cuda(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
  *free_bytes = static_cast<int64_t>(f);
  *total_bytes = static_cast<int64_t>(t);
#else
  (void)device;
  no_cuda_build();
#endif
  CGT_CATCH
}

cgt_status cgt_cuda_set_memory_fraction(int32_t device, double fraction) noexcept {
  CGT_TRY
  if (!(fraction > 0 && fraction <= 1)) throw cgt::invalid("memory fraction must be in (0, 1]");
#ifdef CGT_WITH_CUDA
  alloc::setMemoryFraction(fraction, cuda_index(device));
#else
  (void)device;
  no_cuda_build();
#endif
  CGT_CATCH
}

cgt_status cgt_cuda_pci_bus_id(int32_t device, char **out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
#ifdef CGT_WITH_CUDA
  char buf[64] = {0};
  check_cuda(cudaDeviceGetPCIBusId(buf, sizeof(buf), static_cast<int>(cuda_index(device))),
             "cudaDeviceGetPCIBusId");
  size_t n = std::strlen(buf);
  char *p = static_cast<char *>(std::malloc(n + 1));
  if (p == nullptr) throw std::bad_alloc();
  std::memcpy(p, buf, n + 1);
  *out = p;
#else
  (void)device;
  no_cuda_build();
#endif
  CGT_CATCH
}

cgt_status cgt_autocast_set(int32_t enabled, int32_t dtype, int32_t *prev_enabled,
                            int32_t *prev_dtype) noexcept {
  CGT_TRY
#ifdef CGT_WITH_CUDA
  auto st = cgt::scalar_type(dtype);
  if (st != at::kHalf && st != at::kBFloat16)
    throw cgt::invalid("autocast dtype must be float16 or bfloat16");
#if CGT_TORCH_AT_LEAST(2, 4)
  const bool was = at::autocast::is_autocast_enabled(at::kCUDA);
  const auto was_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  at::autocast::set_autocast_dtype(at::kCUDA, st);
  at::autocast::set_autocast_enabled(at::kCUDA, enabled != 0);
#else
  const bool was = at::autocast::is_enabled();
  const auto was_dtype = at::autocast::get_autocast_gpu_dtype();
  at::autocast::set_autocast_gpu_dtype(st);
  at::autocast::set_enabled(enabled != 0);
#endif
  if (prev_enabled != nullptr) *prev_enabled = was ? 1 : 0;
  if (prev_dtype != nullptr) *prev_dtype = cgt::dtype_code(was_dtype);
#else
  (void)enabled;
  (void)dtype;
  (void)prev_enabled;
  (void)prev_dtype;
  no_cuda_build();
#endif
  CGT_CATCH
}

cgt_status cgt_autocast_clear_cache(void) noexcept {
  CGT_TRY
  at::autocast::clear_cache();
  CGT_CATCH
}

}  // extern "C"
