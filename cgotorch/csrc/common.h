// Shared internals of the shim: handle structs, the status builder, the one
// catch macro, dtype/device mapping. Included by every translation unit.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "../cgotorch.h"

#define CGT_TORCH_AT_LEAST(ma, mi) \
  (TORCH_VERSION_MAJOR > (ma) || (TORCH_VERSION_MAJOR == (ma) && TORCH_VERSION_MINOR >= (mi)))

struct cgt_tensor_s {
  at::Tensor t;
};

struct cgt_generator_s {
  at::Generator g;
};

namespace cgt {

extern std::atomic<int64_t> g_live_tensors;
extern std::atomic<int> g_num_threads;
extern thread_local int tl_num_threads;

// apply_threads makes the calling OS thread use the configured intra-op
// thread count (libtorch's count is a per-thread OpenMP value).
void apply_threads_slow(int want);
inline void apply_threads() {
  int want = g_num_threads.load(std::memory_order_relaxed);
  if (want > 0 && tl_num_threads != want) apply_threads_slow(want);
}

// status builds a cgt_status; it never throws (static fallback message).
cgt_status status(int32_t code, const char *msg) noexcept;
inline cgt_status ok() noexcept { return cgt_status{CGT_OK, nullptr}; }

// is_oom_message recognises out-of-memory conditions raised as plain errors.
bool is_oom_message(const char *m) noexcept;

// invalid is thrown by argument checks before libtorch is entered.
struct invalid : std::exception {
  std::string msg;
  explicit invalid(std::string m) : msg(std::move(m)) {}
  const char *what() const noexcept override { return msg.c_str(); }
};
struct no_cuda : std::exception {
  std::string msg;
  explicit no_cuda(std::string m) : msg(std::move(m)) {}
  const char *what() const noexcept override { return msg.c_str(); }
};
// dist_error carries a classified distributed failure (CGT_ERR_DIST or
// CGT_ERR_DIST_TIMEOUT) through libtorch, e.g. out of an autograd backward.
struct dist_error : std::exception {
  int32_t code;
  std::string msg;
  dist_error(int32_t c, std::string m) : code(c), msg(std::move(m)) {}
  const char *what() const noexcept override { return msg.c_str(); }
};

// Fault injection for tests of the error paths (cgt_debug_fail_handle_alloc):
// while positive, it counts down handle creations on this thread, and the one
// that brings it to zero throws std::bad_alloc as a failed `new` would.
extern thread_local int tl_fail_wrap;

inline cgt_tensor wrap(at::Tensor t) {
  if (C10_UNLIKELY(tl_fail_wrap > 0) && --tl_fail_wrap == 0) throw std::bad_alloc();
  auto *h = new cgt_tensor_s{std::move(t)};
  g_live_tensors.fetch_add(1, std::memory_order_relaxed);
  return h;
}

// owned holds a new handle until release(): a function with several tensor
// outputs creates them all first and publishes them only when every one
// exists, so a failure part-way frees the ones already made instead of
// leaking them behind an error status.
class owned {
 public:
  owned() = default;
  explicit owned(cgt_tensor h) : h_(h) {}
  owned(const owned &) = delete;
  owned &operator=(const owned &) = delete;
  ~owned() { cgt_tensor_free(h_); }
  cgt_tensor release() noexcept {
    cgt_tensor h = h_;
    h_ = nullptr;
    return h;
  }

 private:
  cgt_tensor h_ = nullptr;
};

inline at::Tensor &T(cgt_tensor h, const char *what = "tensor") {
  if (h == nullptr) throw invalid(std::string("nil ") + what + " handle");
  if (!h->t.defined()) throw invalid(std::string("undefined ") + what);
  return h->t;
}

// Optional tensor: NULL handle -> undefined tensor.
inline at::Tensor opt(cgt_tensor h) { return h == nullptr ? at::Tensor() : h->t; }

c10::ScalarType scalar_type(int32_t dtype);
int32_t dtype_code(c10::ScalarType st);
c10::Device device(cgt_device d);  // throws no_cuda / invalid
cgt_device device_code(const c10::Device &d);
std::vector<int64_t> shape_vec(const int64_t *shape, int32_t ndim);

inline c10::optional<at::Generator> gen(cgt_generator g) {
  if (g == nullptr) return c10::nullopt;
  return g->g;
}

inline void set_out(cgt_tensor *out, at::Tensor t) {
  if (out == nullptr) throw invalid("nil out pointer");
  *out = wrap(std::move(t));
}

}  // namespace cgt

// The one catch block, in the order of binding.md §2.3. Every exported
// function body is CGT_TRY { ... } CGT_CATCH.
#define CGT_TRY              \
  try {                      \
    ::cgt::apply_threads();
#define CGT_CATCH                                                                      \
  }                                                                                    \
  catch (const c10::OutOfMemoryError &e) {                                             \
    return ::cgt::status(CGT_ERR_OUT_OF_MEMORY, e.what_without_backtrace());           \
  }                                                                                    \
  catch (const c10::Error &e) {                                                        \
    const char *m = e.what_without_backtrace();                                        \
    return ::cgt::status(::cgt::is_oom_message(m) ? CGT_ERR_OUT_OF_MEMORY : CGT_ERR_TORCH, m); \
  }                                                                                    \
  catch (const ::cgt::invalid &e) {                                                    \
    return ::cgt::status(CGT_ERR_INVALID_ARGUMENT, e.what());                          \
  }                                                                                    \
  catch (const ::cgt::no_cuda &e) {                                                    \
    return ::cgt::status(CGT_ERR_NO_CUDA, e.what());                                   \
  }                                                                                    \
  catch (const ::cgt::dist_error &e) {                                                 \
    return ::cgt::status(e.code, e.what());                                            \
  }                                                                                    \
  catch (const std::bad_alloc &e) {                                                    \
    return ::cgt::status(CGT_ERR_OUT_OF_MEMORY, e.what());                             \
  }                                                                                    \
  catch (const std::exception &e) {                                                    \
    return ::cgt::status(::cgt::is_oom_message(e.what()) ? CGT_ERR_OUT_OF_MEMORY : CGT_ERR_STD, \
                         e.what());                                                    \
  }                                                                                    \
  catch (...) {                                                                        \
    return ::cgt::status(CGT_ERR_UNKNOWN, "unknown C++ exception");                    \
  }                                                                                    \
  return ::cgt::ok();
