// A byte-counting CPU allocator. It wraps c10's alloc_cpu/free_cpu (the same
// memory libtorch's default CPU allocator hands out) and keeps a 64-byte header
// with the request size, so freeing needs no table. It gives the CPU flavour
// allocator statistics comparable to the CUDA caching allocator's
// allocated_bytes, and an optional limit that raises c10::OutOfMemoryError
// from inside libtorch's allocation path, exactly where a real allocation
// failure surfaces (used to exercise out-of-memory recovery on CPU).
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include "common.h"

namespace {

constexpr size_t kHeader = 64;  // preserves c10's 64-byte data alignment

std::atomic<int64_t> g_allocated{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_num_allocs{0};
std::atomic<int64_t> g_num_frees{0};
std::atomic<int64_t> g_num_ooms{0};
std::atomic<int64_t> g_limit{0};
std::atomic<int32_t> g_installed{0};

void tracked_delete(void *data) {
  if (data == nullptr) return;
  char *base = static_cast<char *>(data) - kHeader;
  int64_t n = 0;
  std::memcpy(&n, base, sizeof(n));
  g_allocated.fetch_sub(n, std::memory_order_relaxed);
  g_num_frees.fetch_add(1, std::memory_order_relaxed);
  c10::free_cpu(base);
}

void raise_peak(int64_t now) {
  int64_t p = g_peak.load(std::memory_order_relaxed);
  while (now > p && !g_peak.compare_exchange_weak(p, now, std::memory_order_relaxed)) {
  }
}

at::DataPtr tracked_allocate(size_t n) {
  if (n == 0) return at::DataPtr(nullptr, nullptr, &tracked_delete, at::Device(at::kCPU));
  const int64_t want = static_cast<int64_t>(n);
  const int64_t limit = g_limit.load(std::memory_order_relaxed);
  if (limit > 0) {
    const int64_t cur = g_allocated.load(std::memory_order_relaxed);
    if (want < 0 || cur + want > limit) {
      g_num_ooms.fetch_add(1, std::memory_order_relaxed);
      TORCH_CHECK_WITH(OutOfMemoryError, false,
                       "CPU out of memory (cgotorch allocation limit). Tried to allocate ", n,
                       " bytes with ", cur, " bytes in use and a limit of ", limit, " bytes.");
    }
  }
  if (n > static_cast<size_t>(INT64_MAX) - kHeader) {
    g_num_ooms.fetch_add(1, std::memory_order_relaxed);
    TORCH_CHECK_WITH(OutOfMemoryError, false,
                     "DefaultCPUAllocator: can't allocate memory: you tried to allocate ", n,
                     " bytes.");
  }
  void *base = nullptr;
  try {
    base = c10::alloc_cpu(n + kHeader);
  } catch (...) {
    g_num_ooms.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
  std::memcpy(base, &want, sizeof(want));
  const int64_t now = g_allocated.fetch_add(want, std::memory_order_relaxed) + want;
  raise_peak(now);
  g_num_allocs.fetch_add(1, std::memory_order_relaxed);
  void *data = static_cast<char *>(base) + kHeader;
  return at::DataPtr(data, data, &tracked_delete, at::Device(at::kCPU));
}

// allocate() is const in libtorch 1.x and non-const in 2.x: define both
// (only the matching one overrides).
struct TrackedCPUAllocator final : public at::Allocator {
  at::DataPtr allocate(size_t n) const { return tracked_allocate(n); }
  at::DataPtr allocate(size_t n) { return tracked_allocate(n); }
  at::DeleterFnPtr raw_deleter() const override { return &tracked_delete; }
  void copy_data(void *dest, const void *src, std::size_t count) const {
    if (count > 0) std::memcpy(dest, src, count);
  }
};

TrackedCPUAllocator g_tracked;

}  // namespace

extern "C" {

void cgt_cpu_alloc_install(void) noexcept {
  int32_t expected = 0;
  if (g_installed.compare_exchange_strong(expected, 1)) {
    try {
      c10::SetCPUAllocator(&g_tracked, /*priority=*/0);
    } catch (...) {
      g_installed.store(0);
    }
  }
}

void cgt_cpu_alloc_stats_get(cgt_cpu_alloc_stats *out) noexcept {
  if (out == nullptr) return;
  out->allocated_bytes = g_allocated.load(std::memory_order_relaxed);
  out->peak_allocated_bytes = g_peak.load(std::memory_order_relaxed);
  out->num_allocs = g_num_allocs.load(std::memory_order_relaxed);
  out->num_frees = g_num_frees.load(std::memory_order_relaxed);
  out->num_ooms = g_num_ooms.load(std::memory_order_relaxed);
  out->limit_bytes = g_limit.load(std::memory_order_relaxed);
  out->installed = g_installed.load(std::memory_order_relaxed);
}

void cgt_cpu_alloc_reset_peak(void) noexcept {
  g_peak.store(g_allocated.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

void cgt_cpu_alloc_set_limit(int64_t bytes) noexcept {
  g_limit.store(bytes < 0 ? 0 : bytes, std::memory_order_relaxed);
}

}  // extern "C"
