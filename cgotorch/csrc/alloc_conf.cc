// The CUDA caching allocator's settings as libtorch parsed them
// (cgt_alloc_conf_readback) and the CUDA runtime and driver API versions
// (cgt_cuda_versions), for the run header and the out-of-memory report.
// Only public, header-inline accessors of the allocator configuration are
// used; the CPU flavour answers "not applicable" and libtorch before 2.2
// "unavailable" (its configuration class is private to the allocator).
#include "common.h"

#include <cstdint>
#include <limits>
#include <sstream>

#ifdef CGT_WITH_CUDA
#include <dlfcn.h>
#if CGT_TORCH_AT_LEAST(2, 2) && __has_include(<c10/cuda/CUDAAllocatorConfig.h>)
#define CGT_ALLOC_CONF_READBACK 1
// c10_cuda is compiled with this definition on Linux (privately, so it is not
// in the installed headers); without it the header's inline
// expandable_segments() always answers false.
#ifndef PYTORCH_C10_DRIVER_API_SUPPORTED
#define PYTORCH_C10_DRIVER_API_SUPPORTED 1
#endif
#include <c10/cuda/CUDAAllocatorConfig.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif
#endif

namespace {

char *dup_string(const std::string &s) {
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p == nullptr) throw std::bad_alloc();
  std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

#ifdef CGT_ALLOC_CONF_READBACK
// CUDAAllocatorConfig's accessors, in every release from 2.2: its own
// settings up to 2.8; from 2.9 deprecated forwarders to
// c10::CachingAllocator::AcceleratorAllocatorConfig, which now holds the
// device-independent keys (the deprecation warning is silenced here). Going
// through CUDAAllocatorConfig reads what the CUDA allocator uses in each.
namespace cfg {
using C = c10::cuda::CUDACachingAllocator::CUDAAllocatorConfig;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
size_t max_split_size() { return C::max_split_size(); }
double gc_threshold() { return C::garbage_collection_threshold(); }
std::vector<size_t> roundup() { return C::roundup_power2_divisions(); }
std::string last() { return C::last_allocator_settings(); }
#pragma GCC diagnostic pop
bool expandable() { return C::expandable_segments(); }
}  // namespace cfg

std::string readback() {
  std::ostringstream os;
  auto *a = c10::cuda::CUDACachingAllocator::get();
  os << "backend:" << (a != nullptr ? a->name() : std::string("unknown"));
  os << ",expandable_segments:" << (cfg::expandable() ? "True" : "False");
  const size_t split = cfg::max_split_size();
  os << ",max_split_size_mb:";
  if (split == std::numeric_limits<size_t>::max()) os << "unlimited";
  else os << (split >> 20);
  os << ",garbage_collection_threshold:" << cfg::gc_threshold();
  os << ",roundup_power2_divisions:";
  const std::vector<size_t> r = cfg::roundup();
  bool any = false;
  for (size_t d : r) any = any || d != 0;
  if (!any) {
    os << "off";
  } else {
    os << "[";
    for (size_t i = 0; i < r.size(); i++) os << (i ? "," : "") << r[i];
    os << "]";
  }
  os << ";parsed from \"" << cfg::last() << "\"";
  return os.str();
}
#endif

}  // namespace

extern "C" {

cgt_status cgt_alloc_conf_readback(char **out, int32_t *state) noexcept {
  CGT_TRY
  if (out == nullptr || state == nullptr) throw cgt::invalid("nil out pointer");
#if defined(CGT_ALLOC_CONF_READBACK)
  std::string s = readback();
  *out = dup_string(s);
  *state = CGT_ALLOC_CONF_READ;
#elif defined(CGT_WITH_CUDA)
  *out = dup_string("not available: libtorch " TORCH_VERSION
                    " keeps the caching allocator's parsed settings private (readable from 2.2)");
  *state = CGT_ALLOC_CONF_UNAVAILABLE;
#else
  *out = dup_string("not applicable: CPU flavour, no CUDA caching allocator");
  *state = CGT_ALLOC_CONF_NOT_APPLICABLE;
#endif
  CGT_CATCH
}

cgt_status cgt_cuda_versions(int32_t *runtime, int32_t *driver) noexcept {
  CGT_TRY
  if (runtime == nullptr || driver == nullptr) throw cgt::invalid("nil out pointer");
#ifdef CGT_WITH_CUDA
  // Looked up in the libcudart libtorch_cuda loaded (no link-time dependency
  // on a versioned libcudart, as in cuda_mem.cc); cudaError_t is an int enum.
  using fn = int (*)(int *);
  int v = 0;
  *runtime = *driver = 0;
  if (auto f = reinterpret_cast<fn>(dlsym(RTLD_DEFAULT, "cudaRuntimeGetVersion")); f && f(&v) == 0)
    *runtime = v;
  v = 0;
  if (auto f = reinterpret_cast<fn>(dlsym(RTLD_DEFAULT, "cudaDriverGetVersion")); f && f(&v) == 0)
    *driver = v;
#else
  *runtime = *driver = 0;
  throw cgt::no_cuda("this libcgotorch is the CPU flavour");
#endif
  CGT_CATCH
}

}  // extern "C"
