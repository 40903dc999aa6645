// Autograd: requires_grad, backward, grads, grad mode and gradient norms.
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include "common.h"

using cgt::set_out;
using cgt::T;

namespace {

std::vector<at::Tensor> list(const cgt_tensor *ts, int32_t n) {
  if (n < 0 || (n > 0 && ts == nullptr)) throw cgt::invalid("bad tensor list");
  std::vector<at::Tensor> v;
  v.reserve(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; i++) v.push_back(T(ts[i]));
  return v;
}

}  // namespace

extern "C" {

cgt_status cgt_set_requires_grad(cgt_tensor t, int32_t on) noexcept {
  CGT_TRY
  T(t).set_requires_grad(on != 0);
  CGT_CATCH
}

cgt_status cgt_requires_grad(cgt_tensor t, int32_t *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = T(t).requires_grad() ? 1 : 0;
  CGT_CATCH
}

cgt_status cgt_is_leaf(cgt_tensor t, int32_t *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = T(t).is_leaf() ? 1 : 0;
  CGT_CATCH
}

cgt_status cgt_backward(cgt_tensor t, cgt_tensor grad, int32_t retain_graph) noexcept {
  CGT_TRY
  at::Tensor &y = T(t);
  if (!y.requires_grad()) throw cgt::invalid("backward on a tensor that does not require grad");
  c10::optional<bool> keep;
  if (retain_graph) keep = true;
  y.backward(cgt::opt(grad), keep, /*create_graph=*/false);
  CGT_CATCH
}

cgt_status cgt_grad(cgt_tensor t, cgt_tensor *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  const at::Tensor &g = T(t).grad();
  *out = g.defined() ? cgt::wrap(g) : nullptr;
  CGT_CATCH
}

cgt_status cgt_set_grad(cgt_tensor t, cgt_tensor g) noexcept {
  CGT_TRY
  at::Tensor &x = T(t);
  if (g == nullptr) {
    x.mutable_grad().reset();
  } else {
    at::Tensor &gt = T(g, "grad");
    if (!gt.sizes().equals(x.sizes()) || gt.scalar_type() != x.scalar_type() ||
        gt.device() != x.device())
      throw cgt::invalid("grad must match the tensor's shape, dtype and device");
    x.mutable_grad() = gt;
  }
  CGT_CATCH
}

cgt_status cgt_detach(cgt_tensor t, cgt_tensor *out) noexcept {
  CGT_TRY
  set_out(out, T(t).detach());
  CGT_CATCH
}

int32_t cgt_set_grad_enabled(int32_t on) noexcept {
  bool prev = c10::GradMode::is_enabled();
  c10::GradMode::set_enabled(on != 0);
  return prev ? 1 : 0;
}

int32_t cgt_is_grad_enabled(void) noexcept { return c10::GradMode::is_enabled() ? 1 : 0; }

cgt_status cgt_autograd_grad(cgt_tensor y, cgt_tensor x, cgt_tensor *out) noexcept {
  CGT_TRY
  at::Tensor &yy = T(y, "output");
  at::Tensor &xx = T(x, "input");
  at::Tensor s = yy.dim() == 0 ? yy : yy.sum();
  auto g = torch::autograd::grad({s}, {xx}, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                 /*create_graph=*/false, /*allow_unused=*/true);
  at::Tensor r = g[0].defined() ? g[0] : at::zeros_like(xx);
  set_out(out, std::move(r));
  CGT_CATCH
}

cgt_status cgt_grad_norm(const cgt_tensor *params, int32_t n, cgt_tensor *out) noexcept {
  CGT_TRY
  c10::NoGradGuard ng;
  auto ps = list(params, n);
  if (ps.empty()) throw cgt::invalid("grad_norm of no parameters");
  std::vector<at::Tensor> sq;
  sq.reserve(ps.size());
  for (auto &p : ps) {
    const at::Tensor &g = p.grad();
    if (g.defined()) sq.push_back(at::linalg_vector_norm(g, 2, c10::nullopt, false, at::kFloat));
  }
  at::Tensor total = sq.empty() ? at::zeros({}, ps[0].options().dtype(at::kFloat))
                                : at::linalg_vector_norm(at::stack(sq), 2, c10::nullopt, false, c10::nullopt);
  set_out(out, std::move(total));
  CGT_CATCH
}

cgt_status cgt_clip_grad_norm_(const cgt_tensor *params, int32_t n, double max_norm,
                               double *total_norm) noexcept {
  CGT_TRY
  c10::NoGradGuard ng;
  auto ps = list(params, n);
  // Same computation as torch::nn::utils::clip_grad_norm_ (norm_type 2).
  std::vector<at::Tensor> norms;
  for (auto &p : ps)
    if (p.grad().defined()) norms.push_back(p.grad().norm(2));
  double total = 0;
  if (!norms.empty()) {
    at::Tensor t = at::stack(norms).norm(2);
    total = t.item<double>();
    double coef = max_norm / (total + 1e-6);
    if (coef < 1) {
      for (auto &p : ps)
        if (p.grad().defined()) p.mutable_grad().mul_(coef);
    }
  }
  if (total_norm != nullptr) *total_norm = total;
  CGT_CATCH
}

cgt_status cgt_norm_of(const cgt_tensor *ts, int32_t n, cgt_tensor *out) noexcept {
  CGT_TRY
  c10::NoGradGuard ng;
  auto xs = list(ts, n);
  if (xs.empty()) throw cgt::invalid("norm of no tensors");
  std::vector<at::Tensor> sq;
  sq.reserve(xs.size());
  for (auto &x : xs) sq.push_back(at::linalg_vector_norm(x, 2, c10::nullopt, false, at::kFloat));
  set_out(out, at::linalg_vector_norm(at::stack(sq), 2, c10::nullopt, false, c10::nullopt));
  CGT_CATCH
}

}  // extern "C"
