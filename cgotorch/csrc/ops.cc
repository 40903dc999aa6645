// Tensor operations: elementwise, reductions, shape/index ops and nn functions.
#include <cmath>

#include "common.h"

using cgt::set_out;
using cgt::T;

namespace {

at::Tensor unary(int32_t op, const at::Tensor &a) {
  switch (op) {
    case CGT_UOP_NEG: return at::neg(a);
    case CGT_UOP_EXP: return at::exp(a);
    case CGT_UOP_LOG: return at::log(a);
    case CGT_UOP_LOG1P: return at::log1p(a);
    case CGT_UOP_EXPM1: return at::expm1(a);
    case CGT_UOP_SQRT: return at::sqrt(a);
    case CGT_UOP_RSQRT: return at::rsqrt(a);
    case CGT_UOP_SIN: return at::sin(a);
    case CGT_UOP_COS: return at::cos(a);
    case CGT_UOP_ABS: return at::abs(a);
    case CGT_UOP_SILU: return at::silu(a);
    case CGT_UOP_RELU: return at::relu(a);
    case CGT_UOP_SIGMOID: return at::sigmoid(a);
    case CGT_UOP_TANH: return at::tanh(a);
    case CGT_UOP_SQUARE: return at::square(a);
    case CGT_UOP_RECIPROCAL: return at::reciprocal(a);
    case CGT_UOP_ISFINITE: return at::isfinite(a);
    case CGT_UOP_ISNAN: return at::isnan(a);
    case CGT_UOP_LOGICAL_NOT: return at::logical_not(a);
    case CGT_UOP_FLOOR: return at::floor(a);
    case CGT_UOP_SIGN: return at::sign(a);
    case CGT_UOP_GELU: return at::gelu(a);
  }
  throw cgt::invalid("unknown unary op " + std::to_string(op));
}

void unary_(int32_t op, at::Tensor &a) {
  switch (op) {
    case CGT_UOP_NEG: a.neg_(); return;
    case CGT_UOP_EXP: a.exp_(); return;
    case CGT_UOP_LOG: a.log_(); return;
    case CGT_UOP_LOG1P: a.log1p_(); return;
    case CGT_UOP_EXPM1: a.expm1_(); return;
    case CGT_UOP_SQRT: a.sqrt_(); return;
    case CGT_UOP_RSQRT: a.rsqrt_(); return;
    case CGT_UOP_SIN: a.sin_(); return;
    case CGT_UOP_COS: a.cos_(); return;
    case CGT_UOP_ABS: a.abs_(); return;
    case CGT_UOP_SILU: at::silu_(a); return;
    case CGT_UOP_RELU: a.relu_(); return;
    case CGT_UOP_SIGMOID: a.sigmoid_(); return;
    case CGT_UOP_TANH: a.tanh_(); return;
    case CGT_UOP_SQUARE: a.square_(); return;
    case CGT_UOP_RECIPROCAL: a.reciprocal_(); return;
    case CGT_UOP_FLOOR: a.floor_(); return;
    case CGT_UOP_SIGN: a.sign_(); return;
  }
  throw cgt::invalid("unary op " + std::to_string(op) + " has no in-place form");
}

at::Tensor binary(int32_t op, const at::Tensor &a, const at::Tensor &b) {
  switch (op) {
    case CGT_BOP_ADD: return at::add(a, b);
    case CGT_BOP_SUB: return at::sub(a, b);
    case CGT_BOP_MUL: return at::mul(a, b);
    case CGT_BOP_DIV: return at::div(a, b);
    case CGT_BOP_POW: return at::pow(a, b);
    case CGT_BOP_MAXIMUM: return at::maximum(a, b);
    case CGT_BOP_MINIMUM: return at::minimum(a, b);
    case CGT_BOP_EQ: return at::eq(a, b);
    case CGT_BOP_NE: return at::ne(a, b);
    case CGT_BOP_LT: return at::lt(a, b);
    case CGT_BOP_LE: return at::le(a, b);
    case CGT_BOP_GT: return at::gt(a, b);
    case CGT_BOP_GE: return at::ge(a, b);
    case CGT_BOP_LOGICAL_AND: return at::logical_and(a, b);
    case CGT_BOP_LOGICAL_OR: return at::logical_or(a, b);
    case CGT_BOP_REMAINDER: return at::remainder(a, b);
  }
  throw cgt::invalid("unknown binary op " + std::to_string(op));
}

void binary_(int32_t op, at::Tensor &a, const at::Tensor &b) {
  switch (op) {
    case CGT_BOP_ADD: a.add_(b); return;
    case CGT_BOP_SUB: a.sub_(b); return;
    case CGT_BOP_MUL: a.mul_(b); return;
    case CGT_BOP_DIV: a.div_(b); return;
    case CGT_BOP_POW: a.pow_(b); return;
    case CGT_BOP_MAXIMUM: a.copy_(at::maximum(a, b)); return;
    case CGT_BOP_MINIMUM: a.copy_(at::minimum(a, b)); return;
    case CGT_BOP_REMAINDER: a.remainder_(b); return;
  }
  throw cgt::invalid("binary op " + std::to_string(op) + " has no in-place form");
}

at::Tensor binary_scalar(int32_t op, const at::Tensor &a, const at::Scalar &s) {
  switch (op) {
    case CGT_BOP_ADD: return at::add(a, s);
    case CGT_BOP_SUB: return at::sub(a, s);
    case CGT_BOP_MUL: return at::mul(a, s);
    case CGT_BOP_DIV: return at::div(a, s);
    case CGT_BOP_POW: return at::pow(a, s);
    case CGT_BOP_MAXIMUM: return at::clamp_min(a, s);
    case CGT_BOP_MINIMUM: return at::clamp_max(a, s);
    case CGT_BOP_EQ: return at::eq(a, s);
    case CGT_BOP_NE: return at::ne(a, s);
    case CGT_BOP_LT: return at::lt(a, s);
    case CGT_BOP_LE: return at::le(a, s);
    case CGT_BOP_GT: return at::gt(a, s);
    case CGT_BOP_GE: return at::ge(a, s);
    case CGT_BOP_REMAINDER: return at::remainder(a, s);
  }
  throw cgt::invalid("binary op " + std::to_string(op) + " has no scalar form");
}

at::Tensor scalar_binary(int32_t op, const at::Scalar &s, const at::Tensor &a) {
  switch (op) {
    case CGT_BOP_ADD: return at::add(a, s);
    case CGT_BOP_SUB: return at::rsub(a, s);  // s - a
    case CGT_BOP_MUL: return at::mul(a, s);
    case CGT_BOP_DIV: return at::mul(at::reciprocal(a), s);
    case CGT_BOP_POW: return at::pow(s, a);
    case CGT_BOP_MAXIMUM: return at::clamp_min(a, s);
    case CGT_BOP_MINIMUM: return at::clamp_max(a, s);
  }
  throw cgt::invalid("binary op " + std::to_string(op) + " has no reversed scalar form");
}

void binary_scalar_(int32_t op, at::Tensor &a, const at::Scalar &s) {
  switch (op) {
    case CGT_BOP_ADD: a.add_(s); return;
    case CGT_BOP_SUB: a.sub_(s); return;
    case CGT_BOP_MUL: a.mul_(s); return;
    case CGT_BOP_DIV: a.div_(s); return;
    case CGT_BOP_POW: a.pow_(s); return;
    case CGT_BOP_MAXIMUM: a.clamp_min_(s); return;
    case CGT_BOP_MINIMUM: a.clamp_max_(s); return;
    case CGT_BOP_REMAINDER: a.remainder_(s); return;
  }
  throw cgt::invalid("binary op " + std::to_string(op) + " has no in-place scalar form");
}

// A Go float64 scalar as the Scalar PyTorch would use: an integer for
// integer tensors when the value is whole (so int tensors stay int).
at::Scalar scalar_for(const at::Tensor &a, double s) {
  if (at::isIntegralType(a.scalar_type(), /*includeBool=*/false) && std::floor(s) == s &&
      std::abs(s) < 9.007199254740992e15)
    return at::Scalar(static_cast<int64_t>(s));
  return at::Scalar(s);
}

std::vector<at::Tensor> tensor_list(const cgt_tensor *ts, int32_t n) {
  if (n <= 0) throw cgt::invalid("empty tensor list");
  if (ts == nullptr) throw cgt::invalid("nil tensor list");
  std::vector<at::Tensor> v;
  v.reserve(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; i++) v.push_back(T(ts[i]));
  return v;
}

int64_t reduction_code(int32_t r) {
  switch (r) {
    case CGT_REDUCTION_NONE: return at::Reduction::None;
    case CGT_REDUCTION_MEAN: return at::Reduction::Mean;
    case CGT_REDUCTION_SUM: return at::Reduction::Sum;
  }
  throw cgt::invalid("unknown reduction " + std::to_string(r));
}

}  // namespace

extern "C" {

cgt_status cgt_unary(int32_t op, cgt_tensor a, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, unary(op, T(a)));
  CGT_CATCH
}

cgt_status cgt_unary_(int32_t op, cgt_tensor a) noexcept {
  CGT_TRY
  unary_(op, T(a));
  CGT_CATCH
}

cgt_status cgt_binary(int32_t op, cgt_tensor a, cgt_tensor b, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, binary(op, T(a), T(b)));
  CGT_CATCH
}

cgt_status cgt_binary_(int32_t op, cgt_tensor a, cgt_tensor b) noexcept {
  CGT_TRY
  binary_(op, T(a), T(b));
  CGT_CATCH
}

cgt_status cgt_binary_scalar(int32_t op, cgt_tensor a, double s, int32_t reversed,
                             cgt_tensor *out) noexcept {
  CGT_TRY
  at::Tensor &x = T(a);
  at::Scalar v = scalar_for(x, s);
  set_out(out, reversed ? scalar_binary(op, v, x) : binary_scalar(op, x, v));
  CGT_CATCH
}

cgt_status cgt_binary_scalar_(int32_t op, cgt_tensor a, double s) noexcept {
  CGT_TRY
  at::Tensor &x = T(a);
  binary_scalar_(op, x, scalar_for(x, s));
  CGT_CATCH
}

cgt_status cgt_add_scaled(cgt_tensor a, cgt_tensor b, double alpha, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::add(T(a), T(b), alpha));
  CGT_CATCH
}

cgt_status cgt_add_scaled_(cgt_tensor a, cgt_tensor b, double alpha) noexcept {
  CGT_TRY
  T(a).add_(T(b), alpha);
  CGT_CATCH
}

cgt_status cgt_copy_(cgt_tensor dst, cgt_tensor src) noexcept {
  CGT_TRY
  T(dst).copy_(T(src));
  CGT_CATCH
}

cgt_status cgt_fill_(cgt_tensor t, double value) noexcept {
  CGT_TRY
  T(t).fill_(value);
  CGT_CATCH
}

cgt_status cgt_zero_(cgt_tensor t) noexcept {
  CGT_TRY
  T(t).zero_();
  CGT_CATCH
}

cgt_status cgt_clamp(cgt_tensor a, double min, int32_t has_min, double max, int32_t has_max,
                     cgt_tensor *out) noexcept {
  CGT_TRY
  if (!has_min && !has_max) throw cgt::invalid("clamp needs a bound");
  at::Tensor &x = T(a);
  c10::optional<at::Scalar> lo, hi;
  if (has_min) lo = scalar_for(x, min);
  if (has_max) hi = scalar_for(x, max);
  set_out(out, at::clamp(x, lo, hi));
  CGT_CATCH
}

cgt_status cgt_clamp_(cgt_tensor a, double min, int32_t has_min, double max,
                      int32_t has_max) noexcept {
  CGT_TRY
  if (!has_min && !has_max) throw cgt::invalid("clamp needs a bound");
  at::Tensor &x = T(a);
  c10::optional<at::Scalar> lo, hi;
  if (has_min) lo = scalar_for(x, min);
  if (has_max) hi = scalar_for(x, max);
  at::clamp_(x, lo, hi);
  CGT_CATCH
}

cgt_status cgt_where(cgt_tensor cond, cgt_tensor a, cgt_tensor b, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::where(T(cond, "condition"), T(a), T(b)));
  CGT_CATCH
}

// ------------------------------------------------------------ reductions

cgt_status cgt_reduce(int32_t op, cgt_tensor a, const int64_t *dims, int32_t ndims,
                      int32_t keepdim, cgt_tensor *out) noexcept {
  CGT_TRY
  at::Tensor &x = T(a);
  auto d = cgt::shape_vec(dims, ndims);
  const bool all = d.empty();
  const bool kd = keepdim != 0;
  at::Tensor r;
  switch (op) {
    case CGT_RED_SUM: r = all ? at::sum(x) : at::sum(x, d, kd); break;
    case CGT_RED_MEAN: r = all ? at::mean(x) : at::mean(x, d, kd); break;
    case CGT_RED_AMAX: r = all ? at::amax(x, at::IntArrayRef{}) : at::amax(x, d, kd); break;
    case CGT_RED_AMIN: r = all ? at::amin(x, at::IntArrayRef{}) : at::amin(x, d, kd); break;
    case CGT_RED_VAR:
      r = all ? at::var(x, /*unbiased=*/true) : at::var(x, d, /*unbiased=*/true, kd);
      break;
    case CGT_RED_VAR_BIASED:
      r = all ? at::var(x, /*unbiased=*/false) : at::var(x, d, /*unbiased=*/false, kd);
      break;
    case CGT_RED_NORM2:
      r = all ? at::norm(x) : at::norm(x, 2, d, kd);
      break;
    case CGT_RED_ALL:
      if (all) r = at::all(x);
      else if (d.size() == 1) r = at::all(x, d[0], kd);
      else throw cgt::invalid("all() over several dims is not supported");
      break;
    case CGT_RED_ANY:
      if (all) r = at::any(x);
      else if (d.size() == 1) r = at::any(x, d[0], kd);
      else throw cgt::invalid("any() over several dims is not supported");
      break;
    default: throw cgt::invalid("unknown reduction op " + std::to_string(op));
  }
  set_out(out, std::move(r));
  CGT_CATCH
}

cgt_status cgt_max_dim(cgt_tensor a, int64_t dim, int32_t keepdim, cgt_tensor *values,
                       cgt_tensor *indices) noexcept {
  CGT_TRY
  if (values == nullptr || indices == nullptr) throw cgt::invalid("nil out pointer");
  auto r = at::max(T(a), dim, keepdim != 0);
  cgt::owned v(cgt::wrap(std::get<0>(r)));
  cgt::owned i(cgt::wrap(std::get<1>(r)));  // if this throws, v is freed
  *values = v.release();
  *indices = i.release();
  CGT_CATCH
}

cgt_status cgt_argmax(cgt_tensor a, int64_t dim, int32_t keepdim, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::argmax(T(a), dim, keepdim != 0));
  CGT_CATCH
}

cgt_status cgt_cumsum(cgt_tensor a, int64_t dim, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::cumsum(T(a), dim));
  CGT_CATCH
}

// ------------------------------------------------------- shape and index

cgt_status cgt_view(cgt_tensor a, const int64_t *shape, int32_t ndim, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(a).view(cgt::shape_vec(shape, ndim)));
  CGT_CATCH
}

cgt_status cgt_reshape(cgt_tensor a, const int64_t *shape, int32_t ndim,
                       cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(a).reshape(cgt::shape_vec(shape, ndim)));
  CGT_CATCH
}

cgt_status cgt_expand(cgt_tensor a, const int64_t *shape, int32_t ndim, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(a).expand(cgt::shape_vec(shape, ndim)));
  CGT_CATCH
}

cgt_status cgt_permute(cgt_tensor a, const int64_t *dims, int32_t ndim, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(a).permute(cgt::shape_vec(dims, ndim)));
  CGT_CATCH
}

cgt_status cgt_unsqueeze(cgt_tensor a, int64_t dim, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(a).unsqueeze(dim));
  CGT_CATCH
}

cgt_status cgt_squeeze(cgt_tensor a, int64_t dim, int32_t all, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, all ? T(a).squeeze() : T(a).squeeze(dim));
  CGT_CATCH
}

cgt_status cgt_transpose(cgt_tensor a, int64_t d0, int64_t d1, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(a).transpose(d0, d1));
  CGT_CATCH
}

cgt_status cgt_narrow(cgt_tensor a, int64_t dim, int64_t start, int64_t length,
                      cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(a).narrow(dim, start, length));
  CGT_CATCH
}

cgt_status cgt_index_select(cgt_tensor a, int64_t dim, cgt_tensor index,
                            cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::index_select(T(a), dim, T(index, "index")));
  CGT_CATCH
}

cgt_status cgt_gather(cgt_tensor a, int64_t dim, cgt_tensor index, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::gather(T(a), dim, T(index, "index")));
  CGT_CATCH
}

cgt_status cgt_index_add_(cgt_tensor a, int64_t dim, cgt_tensor index, cgt_tensor src) noexcept {
  CGT_TRY
  T(a).index_add_(dim, T(index, "index"), T(src, "source"));
  CGT_CATCH
}

cgt_status cgt_index_copy_(cgt_tensor a, int64_t dim, cgt_tensor index, cgt_tensor src) noexcept {
  CGT_TRY
  T(a).index_copy_(dim, T(index, "index"), T(src, "source"));
  CGT_CATCH
}

cgt_status cgt_cat(const cgt_tensor *ts, int32_t n, int64_t dim, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::cat(tensor_list(ts, n), dim));
  CGT_CATCH
}

cgt_status cgt_stack(const cgt_tensor *ts, int32_t n, int64_t dim, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::stack(tensor_list(ts, n), dim));
  CGT_CATCH
}

cgt_status cgt_contiguous(cgt_tensor a, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(a).contiguous());
  CGT_CATCH
}

cgt_status cgt_clone(cgt_tensor a, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(a).clone());
  CGT_CATCH
}

cgt_status cgt_alias(cgt_tensor a, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(a));
  CGT_CATCH
}

cgt_status cgt_to(cgt_tensor a, cgt_device dev, int32_t dtype, cgt_tensor *out) noexcept {
  CGT_TRY
  at::Tensor &x = T(a);
  auto d = cgt::device(dev);
  auto st = dtype == 0 ? x.scalar_type() : cgt::scalar_type(dtype);
  set_out(out, x.to(d, st));
  CGT_CATCH
}

// --------------------------------------------------------------- nn ops

cgt_status cgt_linear(cgt_tensor x, cgt_tensor w, cgt_tensor b, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::linear(T(x, "input"), T(w, "weight"), cgt::opt(b)));
  CGT_CATCH
}

cgt_status cgt_matmul(cgt_tensor a, cgt_tensor b, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::matmul(T(a), T(b)));
  CGT_CATCH
}

cgt_status cgt_layer_norm(cgt_tensor x, const int64_t *shape, int32_t nshape, cgt_tensor w,
                          cgt_tensor b, double eps, cgt_tensor *out) noexcept {
  CGT_TRY
  auto s = cgt::shape_vec(shape, nshape);
  set_out(out, at::layer_norm(T(x, "input"), s, cgt::opt(w), cgt::opt(b), eps,
                              /*cudnn_enable=*/true));
  CGT_CATCH
}

cgt_status cgt_batch_norm(cgt_tensor x, cgt_tensor w, cgt_tensor b, cgt_tensor running_mean,
                          cgt_tensor running_var, int32_t training, double momentum, double eps,
                          cgt_tensor *out) noexcept {
  CGT_TRY
  at::Tensor rm = cgt::opt(running_mean), rv = cgt::opt(running_var);
  if (!training && (!rm.defined() || !rv.defined()))
    throw cgt::invalid("batch_norm in eval mode needs running_mean and running_var");
  set_out(out, at::batch_norm(T(x, "input"), cgt::opt(w), cgt::opt(b), rm, rv, training != 0,
                              momentum, eps, /*cudnn_enabled=*/true));
  CGT_CATCH
}

cgt_status cgt_prelu(cgt_tensor x, cgt_tensor w, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::prelu(T(x, "input"), T(w, "weight")));
  CGT_CATCH
}

cgt_status cgt_softmax(cgt_tensor x, int64_t dim, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::softmax(T(x), dim));
  CGT_CATCH
}

cgt_status cgt_log_softmax(cgt_tensor x, int64_t dim, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::log_softmax(T(x), dim));
  CGT_CATCH
}

cgt_status cgt_dropout(cgt_tensor x, double p, int32_t training, cgt_generator gen,
                       cgt_tensor *out) noexcept {
  CGT_TRY
  if (p < 0 || p > 1) throw cgt::invalid("dropout probability must be in [0, 1]");
  at::Tensor &in = T(x, "input");
  if (!training || p == 0) {
    set_out(out, in);
  } else if (p == 1) {
    set_out(out, in * 0);
  } else {
    // Same scheme as at::dropout (keep with probability 1-p, scale by 1/(1-p)),
    // drawn from the given generator so runs are reproducible.
    at::Tensor mask = at::empty_like(in, at::MemoryFormat::Contiguous);
    {
      c10::NoGradGuard ng;
      mask.bernoulli_(1 - p, cgt::gen(gen)).div_(1 - p);
    }
    set_out(out, in * mask);
  }
  CGT_CATCH
}

cgt_status cgt_normalize(cgt_tensor x, double p, int64_t dim, double eps,
                         cgt_tensor *out) noexcept {
  CGT_TRY
  // torch.nn.functional.normalize: x / clamp_min(norm(x, p, dim, keepdim), eps).expand_as(x)
  at::Tensor &in = T(x, "input");
  at::Tensor denom = at::norm(in, p, {dim}, /*keepdim=*/true).clamp_min(eps).expand_as(in);
  set_out(out, in / denom);
  CGT_CATCH
}

cgt_status cgt_mse_loss(cgt_tensor input, cgt_tensor target, int32_t reduction,
                        cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::mse_loss(T(input, "input"), T(target, "target"), reduction_code(reduction)));
  CGT_CATCH
}

cgt_status cgt_cross_entropy(cgt_tensor logits, cgt_tensor target, int32_t reduction,
                             cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, at::cross_entropy_loss(T(logits, "logits"), T(target, "target"), {},
                                      reduction_code(reduction), /*ignore_index=*/-100,
                                      /*label_smoothing=*/0.0));
  CGT_CATCH
}

}  // extern "C"
