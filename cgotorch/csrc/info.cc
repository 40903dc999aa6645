// Build identity, thread control, status construction and dtype/device mapping.
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>

#include <algorithm>
#include <climits>

#include "common.h"

namespace cgt {

std::atomic<int64_t> g_live_tensors{0};
std::atomic<int> g_num_threads{0};
thread_local int tl_num_threads = 0;

void apply_threads_slow(int want) {
  // at::set_num_threads only reaches the calling OS thread's OpenMP value.
  at::set_num_threads(want);
  tl_num_threads = want;
}

static const char kStaticOOM[] = "out of memory while building the error message";

cgt_status status(int32_t code, const char *msg) noexcept {
  cgt_status s{code, nullptr};
  if (msg == nullptr) msg = "";
  size_t n = std::strlen(msg);
  char *p = static_cast<char *>(std::malloc(n + 1));
  if (p == nullptr) {
    // Never throw from here: hand back a copy-free static message marker.
    p = static_cast<char *>(std::malloc(sizeof(kStaticOOM)));
    if (p != nullptr) std::memcpy(p, kStaticOOM, sizeof(kStaticOOM));
    s.msg = p;
    return s;
  }
  std::memcpy(p, msg, n + 1);
  s.msg = p;
  return s;
}

bool is_oom_message(const char *m) noexcept {
  if (m == nullptr) return false;
  static const char *const needles[] = {
      "out of memory",        "Out of memory",     "CUBLAS_STATUS_ALLOC_FAILED",
      "CUDNN_STATUS_ALLOC_FAILED", "DefaultCPUAllocator: can't allocate memory",
      "not enough memory",
  };
  for (const char *n : needles)
    if (std::strstr(m, n) != nullptr) return true;
  return false;
}

c10::ScalarType scalar_type(int32_t dtype) {
  switch (dtype) {
    case CGT_F32: return at::kFloat;
    case CGT_F64: return at::kDouble;
    case CGT_F16: return at::kHalf;
    case CGT_BF16: return at::kBFloat16;
    case CGT_I64: return at::kLong;
    case CGT_I32: return at::kInt;
    case CGT_U8: return at::kByte;
    case CGT_BOOL: return at::kBool;
  }
  throw invalid("unknown dtype code " + std::to_string(dtype));
}

int32_t dtype_code(c10::ScalarType st) {
  switch (st) {
    case at::kFloat: return CGT_F32;
    case at::kDouble: return CGT_F64;
    case at::kHalf: return CGT_F16;
    case at::kBFloat16: return CGT_BF16;
    case at::kLong: return CGT_I64;
    case at::kInt: return CGT_I32;
    case at::kByte: return CGT_U8;
    case at::kBool: return CGT_BOOL;
    default: break;
  }
  throw invalid(std::string("dtype not supported by cgotorch: ") + c10::toString(st));
}

c10::Device device(cgt_device d) {
  if (d.kind == 0) return c10::Device(c10::kCPU);
  if (d.kind == 1) {
#ifndef CGT_WITH_CUDA
    throw no_cuda("CUDA device requested but libcgotorch was built without CUDA (CPU flavour)");
#else
    if (!at::hasCUDA()) throw no_cuda("CUDA device requested but no CUDA device is available");
    if (d.index < 0) throw invalid("negative CUDA device index");
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(d.index));
#endif
  }
  throw invalid("unknown device kind " + std::to_string(d.kind));
}

cgt_device device_code(const c10::Device &d) {
  if (d.is_cuda()) return cgt_device{1, d.has_index() ? d.index() : 0};
  if (d.is_cpu()) return cgt_device{0, 0};
  throw invalid("device type not supported by cgotorch: " + d.str());
}

std::vector<int64_t> shape_vec(const int64_t *shape, int32_t ndim) {
  if (ndim < 0 || ndim > CGT_MAX_DIMS) throw invalid("rank out of range: " + std::to_string(ndim));
  if (ndim > 0 && shape == nullptr) throw invalid("nil shape");
  std::vector<int64_t> v(shape, shape + ndim);
  return v;
}

}  // namespace cgt

extern "C" {

int32_t cgt_abi_version(void) noexcept { return CGT_ABI_VERSION; }

const char *cgt_torch_version(void) noexcept { return TORCH_VERSION; }

int32_t cgt_built_with_cuda(void) noexcept {
#ifdef CGT_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

int64_t cgt_live_tensors(void) noexcept {
  return cgt::g_live_tensors.load(std::memory_order_relaxed);
}

void cgt_free(void *p) noexcept { std::free(p); }

cgt_status cgt_set_num_threads(int32_t n) noexcept {
  CGT_TRY
  if (n > 0) {
    cgt::g_num_threads.store(n, std::memory_order_relaxed);
    cgt::apply_threads_slow(n);
    // OpenBLAS keeps its own pool, untouched by at::set_num_threads.
    using setfn = void (*)(int);
    if (auto f = reinterpret_cast<setfn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(n);
  }
  CGT_CATCH
}

int32_t cgt_get_num_threads(void) noexcept {
  try {
    cgt::apply_threads();
    return at::get_num_threads();
  } catch (...) {
    return -1;
  }
}

void cgt_malloc_tune(int64_t mmap_threshold, int64_t trim_threshold) noexcept {
  if (mmap_threshold > 0) mallopt(M_MMAP_THRESHOLD, static_cast<int>(std::min<int64_t>(mmap_threshold, INT32_MAX)));
  if (trim_threshold > 0) mallopt(M_TRIM_THRESHOLD, static_cast<int>(std::min<int64_t>(trim_threshold, INT32_MAX)));
}

int32_t cgt_malloc_trim(void) noexcept { return malloc_trim(0) ? 1 : 0; }

const char *cgt_openblas_corename(void) noexcept {
  using fn = char *(*)();
  if (auto f = reinterpret_cast<fn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"))) {
    const char *c = f();
    return c != nullptr ? c : "";
  }
  return "";
}

cgt_status cgt_parallel_info(char **out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  std::string s = at::get_parallel_info();
  using getfn = char *(*)();
  if (auto f = reinterpret_cast<getfn>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
    s += "OpenBLAS: ";
    s += f();
    s += "\n";
  }
  using numfn = int (*)();
  if (auto f = reinterpret_cast<numfn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) {
    s += "OpenBLAS threads: " + std::to_string(f()) + "\n";
  }
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p == nullptr) throw std::bad_alloc();
  std::memcpy(p, s.c_str(), s.size() + 1);
  *out = p;
  CGT_CATCH
}

}  // extern "C"
