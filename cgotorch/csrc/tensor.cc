// Tensor handles: lifetime, creation, host copies, metadata, generators and
// random creation.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <torch/csrc/api/include/torch/utils.h>

#include "common.h"

using cgt::T;

namespace {

at::TensorOptions topts(int32_t dtype, cgt_device dev) {
  return at::TensorOptions().dtype(cgt::scalar_type(dtype)).device(cgt::device(dev));
}

void check_shape(const std::vector<int64_t> &s) {
  for (int64_t d : s)
    if (d < 0) throw cgt::invalid("negative dimension in shape");
}

}  // namespace

extern "C" {

void cgt_tensor_free(cgt_tensor t) noexcept {
  if (t == nullptr) return;
  delete t;
  cgt::g_live_tensors.fetch_sub(1, std::memory_order_relaxed);
}

void cgt_tensor_free_many(cgt_tensor *ts, int64_t n) noexcept {
  if (ts == nullptr) return;
  for (int64_t i = 0; i < n; i++) cgt_tensor_free(ts[i]);
}

cgt_status cgt_from_data(const void *data, int64_t nbytes, const int64_t *shape, int32_t ndim,
                         int32_t dtype, cgt_device dev, cgt_tensor *out) noexcept {
  CGT_TRY
  auto s = cgt::shape_vec(shape, ndim);
  check_shape(s);
  auto st = cgt::scalar_type(dtype);
  int64_t numel = 1;
  for (int64_t d : s) numel *= d;
  const int64_t want = numel * static_cast<int64_t>(c10::elementSize(st));
  if (want != nbytes)
    throw cgt::invalid("data has " + std::to_string(nbytes) + " bytes, shape needs " +
                       std::to_string(want));
  if (numel > 0 && data == nullptr) throw cgt::invalid("nil data");
  at::Tensor t = at::empty(s, at::TensorOptions().dtype(st));
  if (numel > 0) std::memcpy(t.data_ptr(), data, static_cast<size_t>(nbytes));
  auto d = cgt::device(dev);
  if (!d.is_cpu()) t = t.to(d);
  cgt::set_out(out, std::move(t));
  CGT_CATCH
}

cgt_status cgt_copy_to_host(cgt_tensor h, void *dst, int64_t nbytes) noexcept {
  CGT_TRY
  at::Tensor t = T(h).detach();
  if (!t.is_cpu()) t = t.to(at::kCPU);
  t = t.contiguous();
  const int64_t have = t.numel() * static_cast<int64_t>(t.element_size());
  if (have != nbytes)
    throw cgt::invalid("tensor has " + std::to_string(have) + " bytes, destination " +
                       std::to_string(nbytes));
  if (have > 0) {
    if (dst == nullptr) throw cgt::invalid("nil destination");
    std::memcpy(dst, t.data_ptr(), static_cast<size_t>(have));
  }
  CGT_CATCH
}

cgt_status cgt_item(cgt_tensor h, double *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  at::Tensor &t = T(h);
  if (t.numel() != 1)
    throw cgt::invalid("item() needs a one-element tensor, got " + std::to_string(t.numel()));
  *out = t.item<double>();
  CGT_CATCH
}

cgt_status cgt_ndim(cgt_tensor h, int32_t *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = static_cast<int32_t>(T(h).dim());
  CGT_CATCH
}

cgt_status cgt_shape(cgt_tensor h, int64_t *shape, int32_t *ndim) noexcept {
  CGT_TRY
  if (shape == nullptr || ndim == nullptr) throw cgt::invalid("nil out pointer");
  at::Tensor &t = T(h);
  if (t.dim() > CGT_MAX_DIMS) throw cgt::invalid("tensor rank exceeds CGT_MAX_DIMS");
  for (int64_t i = 0; i < t.dim(); i++) shape[i] = t.size(i);
  *ndim = static_cast<int32_t>(t.dim());
  CGT_CATCH
}

cgt_status cgt_dtype(cgt_tensor h, int32_t *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = cgt::dtype_code(T(h).scalar_type());
  CGT_CATCH
}

cgt_status cgt_device_of(cgt_tensor h, cgt_device *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = cgt::device_code(T(h).device());
  CGT_CATCH
}

cgt_status cgt_numel(cgt_tensor h, int64_t *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = T(h).numel();
  CGT_CATCH
}

cgt_status cgt_is_contiguous(cgt_tensor h, int32_t *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = T(h).is_contiguous() ? 1 : 0;
  CGT_CATCH
}

cgt_status cgt_storage_nbytes(cgt_tensor h, int64_t *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = static_cast<int64_t>(T(h).storage().nbytes());
  CGT_CATCH
}

cgt_status cgt_full(const int64_t *shape, int32_t ndim, double value, int32_t dtype,
                    cgt_device dev, cgt_tensor *out) noexcept {
  CGT_TRY
  auto s = cgt::shape_vec(shape, ndim);
  check_shape(s);
  cgt::set_out(out, at::full(s, value, topts(dtype, dev)));
  CGT_CATCH
}

cgt_status cgt_empty(const int64_t *shape, int32_t ndim, int32_t dtype, cgt_device dev,
                     cgt_tensor *out) noexcept {
  CGT_TRY
  auto s = cgt::shape_vec(shape, ndim);
  check_shape(s);
  cgt::set_out(out, at::empty(s, topts(dtype, dev)));
  CGT_CATCH
}

cgt_status cgt_arange(double start, double end, double step, int32_t dtype, cgt_device dev,
                      cgt_tensor *out) noexcept {
  CGT_TRY
  cgt::set_out(out, at::arange(start, end, step, topts(dtype, dev)));
  CGT_CATCH
}

cgt_status cgt_linspace(double start, double end, int64_t steps, int32_t dtype, cgt_device dev,
                        cgt_tensor *out) noexcept {
  CGT_TRY
  if (steps < 0) throw cgt::invalid("negative step count");
  cgt::set_out(out, at::linspace(start, end, steps, topts(dtype, dev)));
  CGT_CATCH
}

// ----------------------------------------------------------- generators

cgt_status cgt_generator_new(cgt_device dev, uint64_t seed, cgt_generator *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  auto d = cgt::device(dev);
  at::Generator g;
  if (d.is_cpu()) {
    g = at::make_generator<at::CPUGeneratorImpl>(seed);
  } else {
    // A private CUDA generator: clone the device default and reseed it.
    auto &ctx = at::globalContext();
    at::Generator def = ctx.defaultGenerator(d);
    g = def.clone();
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_current_seed(seed);
  }
  *out = new cgt_generator_s{std::move(g)};
  CGT_CATCH
}

void cgt_generator_free(cgt_generator g) noexcept { delete g; }

cgt_status cgt_generator_default(cgt_device dev, cgt_generator *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  auto d = cgt::device(dev);
  *out = new cgt_generator_s{at::globalContext().defaultGenerator(d)};
  CGT_CATCH
}

cgt_status cgt_generator_set_seed(cgt_generator g, uint64_t seed) noexcept {
  CGT_TRY
  if (g == nullptr) throw cgt::invalid("nil generator");
  std::lock_guard<std::mutex> lock(g->g.mutex());
  g->g.set_current_seed(seed);
  CGT_CATCH
}

cgt_status cgt_generator_get_state(cgt_generator g, cgt_tensor *out) noexcept {
  CGT_TRY
  if (g == nullptr) throw cgt::invalid("nil generator");
  std::lock_guard<std::mutex> lock(g->g.mutex());
  cgt::set_out(out, g->g.get_state());
  CGT_CATCH
}

cgt_status cgt_generator_set_state(cgt_generator g, cgt_tensor state) noexcept {
  CGT_TRY
  if (g == nullptr) throw cgt::invalid("nil generator");
  at::Tensor s = T(state, "state");
  if (s.scalar_type() != at::kByte || !s.is_cpu())
    throw cgt::invalid("generator state must be a uint8 CPU tensor");
  std::lock_guard<std::mutex> lock(g->g.mutex());
  g->g.set_state(s);
  CGT_CATCH
}

cgt_status cgt_manual_seed(uint64_t seed) noexcept {
  CGT_TRY
  torch::manual_seed(seed);
  CGT_CATCH
}

cgt_status cgt_randn(const int64_t *shape, int32_t ndim, int32_t dtype, cgt_device dev,
                     cgt_generator gen, cgt_tensor *out) noexcept {
  CGT_TRY
  auto s = cgt::shape_vec(shape, ndim);
  check_shape(s);
  cgt::set_out(out, at::randn(s, cgt::gen(gen), topts(dtype, dev)));
  CGT_CATCH
}

cgt_status cgt_rand(const int64_t *shape, int32_t ndim, int32_t dtype, cgt_device dev,
                    cgt_generator gen, cgt_tensor *out) noexcept {
  CGT_TRY
  auto s = cgt::shape_vec(shape, ndim);
  check_shape(s);
  cgt::set_out(out, at::rand(s, cgt::gen(gen), topts(dtype, dev)));
  CGT_CATCH
}

cgt_status cgt_randint(int64_t low, int64_t high, const int64_t *shape, int32_t ndim,
                       int32_t dtype, cgt_device dev, cgt_generator gen,
                       cgt_tensor *out) noexcept {
  CGT_TRY
  if (high <= low) throw cgt::invalid("randint: high must exceed low");
  auto s = cgt::shape_vec(shape, ndim);
  check_shape(s);
  cgt::set_out(out, at::randint(low, high, s, cgt::gen(gen), topts(dtype, dev)));
  CGT_CATCH
}

cgt_status cgt_randperm(int64_t n, int32_t dtype, cgt_device dev, cgt_generator gen,
                        cgt_tensor *out) noexcept {
  CGT_TRY
  if (n < 0) throw cgt::invalid("randperm: negative n");
  cgt::set_out(out, at::randperm(n, cgt::gen(gen), topts(dtype, dev)));
  CGT_CATCH
}

cgt_status cgt_uniform_(cgt_tensor t, double low, double high, cgt_generator gen) noexcept {
  CGT_TRY
  c10::NoGradGuard ng;
  T(t).uniform_(low, high, cgt::gen(gen));
  CGT_CATCH
}

cgt_status cgt_normal_(cgt_tensor t, double mean, double std, cgt_generator gen) noexcept {
  CGT_TRY
  c10::NoGradGuard ng;
  T(t).normal_(mean, std, cgt::gen(gen));
  CGT_CATCH
}

cgt_status cgt_bernoulli_(cgt_tensor t, double p, cgt_generator gen) noexcept {
  CGT_TRY
  c10::NoGradGuard ng;
  T(t).bernoulli_(p, cgt::gen(gen));
  CGT_CATCH
}

cgt_status cgt_multinomial(cgt_tensor w, int64_t n, int32_t replacement, cgt_generator gen,
                           cgt_tensor *out) noexcept {
  CGT_TRY
  cgt::set_out(out, at::multinomial(T(w), n, replacement != 0, cgt::gen(gen)));
  CGT_CATCH
}

}  // extern "C"
