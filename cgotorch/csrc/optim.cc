// Optimizers: torch::optim::AdamW behind a version-independent C surface, and a
// fused single-pass AdamW(+EMA) over flat parameter buffers.
#include <ATen/Parallel.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <sstream>
#include <type_traits>

#include "common.h"

using cgt::T;

struct cgt_optim_s {
  std::unique_ptr<torch::optim::AdamW> opt;
  std::vector<at::Tensor> params;  // in the order given at construction
};

namespace {

// The state map is keyed by a string in libtorch 1.x and by void* in 2.x.
template <class Map>
typename Map::key_type state_key(const Map &, const at::Tensor &p) {
  using K = typename Map::key_type;
  if constexpr (std::is_same_v<K, std::string>) {
    // What c10::guts::to_string (1.x) does: stream the TensorImpl pointer.
    std::ostringstream os;
    os << p.unsafeGetTensorImpl();
    return os.str();
  } else {
    return static_cast<K>(p.unsafeGetTensorImpl());
  }
}

cgt_optim_s &O(cgt_optim o) {
  if (o == nullptr || !o->opt) throw cgt::invalid("nil optimizer handle");
  return *o;
}

const at::Tensor &param_at(cgt_optim_s &o, int32_t i) {
  if (i < 0 || static_cast<size_t>(i) >= o.params.size())
    throw cgt::invalid("parameter index out of range: " + std::to_string(i));
  return o.params[static_cast<size_t>(i)];
}

void check_flat(const at::Tensor &t, const at::Tensor &ref, const char *name) {
  if (!t.is_contiguous() || t.numel() != ref.numel() || t.scalar_type() != ref.scalar_type() ||
      t.device() != ref.device())
    throw cgt::invalid(std::string("fused_adamw: ") + name +
                       " must be contiguous and match the parameters' numel, dtype and device");
}

}  // namespace

extern "C" {

cgt_status cgt_adamw_new(const cgt_tensor *params, int32_t n, cgt_adamw_options o,
                         cgt_optim *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  if (n <= 0 || params == nullptr) throw cgt::invalid("AdamW needs at least one parameter");
  std::vector<at::Tensor> ps;
  ps.reserve(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; i++) {
    at::Tensor &p = T(params[i], "parameter");
    if (!p.is_leaf() || !p.requires_grad())
      throw cgt::invalid("AdamW parameter " + std::to_string(i) +
                         " must be a leaf tensor that requires grad");
    ps.push_back(p);
  }
  auto opts = torch::optim::AdamWOptions(o.lr)
                  .betas(std::make_tuple(o.beta1, o.beta2))
                  .eps(o.eps)
                  .weight_decay(o.weight_decay)
                  .amsgrad(o.amsgrad != 0);
  auto h = std::make_unique<cgt_optim_s>();
  h->opt = std::make_unique<torch::optim::AdamW>(ps, opts);
  h->params = std::move(ps);
  *out = h.release();
  CGT_CATCH
}

void cgt_optim_free(cgt_optim o) noexcept { delete o; }

cgt_status cgt_optim_step(cgt_optim o) noexcept {
  CGT_TRY
  O(o).opt->step();
  CGT_CATCH
}

cgt_status cgt_optim_zero_grad(cgt_optim o, int32_t set_to_none) noexcept {
  CGT_TRY
  // Our own loop: 1.13's zero_grad() zeroes, 2.x's defaults to set_to_none.
  for (auto &group : O(o).opt->param_groups()) {
    for (auto &p : group.params()) {
      at::Tensor &g = p.mutable_grad();
      if (!g.defined()) continue;
      if (set_to_none) {
        g.reset();
      } else {
        if (g.grad_fn()) g = g.detach();
        else g.requires_grad_(false);
        g.zero_();
      }
    }
  }
  CGT_CATCH
}

cgt_status cgt_optim_get_lr(cgt_optim o, double *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = O(o).opt->param_groups().at(0).options().get_lr();
  CGT_CATCH
}

cgt_status cgt_optim_set_lr(cgt_optim o, double lr) noexcept {
  CGT_TRY
  if (!(lr >= 0)) throw cgt::invalid("learning rate must be >= 0");
  for (auto &group : O(o).opt->param_groups()) group.options().set_lr(lr);
  CGT_CATCH
}

cgt_status cgt_optim_num_params(cgt_optim o, int32_t *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = static_cast<int32_t>(O(o).params.size());
  CGT_CATCH
}

cgt_status cgt_adamw_get_state(cgt_optim o, int32_t i, int64_t *step, cgt_tensor *exp_avg,
                               cgt_tensor *exp_avg_sq, cgt_tensor *max_exp_avg_sq) noexcept {
  CGT_TRY
  if (step == nullptr || exp_avg == nullptr || exp_avg_sq == nullptr || max_exp_avg_sq == nullptr)
    throw cgt::invalid("nil out pointer");
  auto &h = O(o);
  const at::Tensor &p = param_at(h, i);
  auto &state = h.opt->state();
  auto it = state.find(state_key(state, p));
  *step = 0;
  *exp_avg = *exp_avg_sq = *max_exp_avg_sq = nullptr;
  if (it != state.end()) {
    auto &s = static_cast<torch::optim::AdamWParamState &>(*it->second);
    *step = s.step();
    *exp_avg = cgt::wrap(s.exp_avg());
    *exp_avg_sq = cgt::wrap(s.exp_avg_sq());
    if (s.max_exp_avg_sq().defined()) *max_exp_avg_sq = cgt::wrap(s.max_exp_avg_sq());
  }
  CGT_CATCH
}

cgt_status cgt_adamw_set_state(cgt_optim o, int32_t i, int64_t step, cgt_tensor exp_avg,
                               cgt_tensor exp_avg_sq, cgt_tensor max_exp_avg_sq) noexcept {
  CGT_TRY
  auto &h = O(o);
  const at::Tensor &p = param_at(h, i);
  at::Tensor m = T(exp_avg, "exp_avg"), v = T(exp_avg_sq, "exp_avg_sq");
  if (!m.sizes().equals(p.sizes()) || !v.sizes().equals(p.sizes()))
    throw cgt::invalid("AdamW state " + std::to_string(i) + " does not match the parameter shape");
  if (step < 0) throw cgt::invalid("negative AdamW step");
  c10::NoGradGuard ng;
  auto s = std::make_unique<torch::optim::AdamWParamState>();
  s->step(step);
  s->exp_avg(m.to(p.device(), p.scalar_type()).clone());
  s->exp_avg_sq(v.to(p.device(), p.scalar_type()).clone());
  if (max_exp_avg_sq != nullptr)
    s->max_exp_avg_sq(T(max_exp_avg_sq).to(p.device(), p.scalar_type()).clone());
  auto &state = h.opt->state();
  state[state_key(state, p)] = std::move(s);
  CGT_CATCH
}

cgt_status cgt_fused_adamw_(cgt_tensor hp, cgt_tensor hg, cgt_tensor hm, cgt_tensor hv,
                            int64_t step, cgt_adamw_options o, double grad_scale,
                            const cgt_tensor *emas, const double *rates, int32_t nema,
                            int32_t zero_grad, cgt_tensor hsumsq) noexcept {
  CGT_TRY
  c10::NoGradGuard ng;
  at::Tensor &p = T(hp, "param"), &g = T(hg, "grad"), &m = T(hm, "exp_avg"),
             &v = T(hv, "exp_avg_sq");
  if (step < 1) throw cgt::invalid("fused_adamw: step is 1-based");
  if (nema < 0 || (nema > 0 && (emas == nullptr || rates == nullptr)))
    throw cgt::invalid("fused_adamw: bad EMA list");
  if (!p.is_contiguous()) throw cgt::invalid("fused_adamw: param must be contiguous");
  check_flat(g, p, "grad");
  check_flat(m, p, "exp_avg");
  check_flat(v, p, "exp_avg_sq");
  at::Tensor sumsq = cgt::opt(hsumsq);
  if (sumsq.defined() && (sumsq.scalar_type() != at::kDouble || sumsq.numel() != 2 ||
                          sumsq.device() != p.device() || !sumsq.is_contiguous()))
    throw cgt::invalid("fused_adamw: sumsq must be a contiguous float64 [2] tensor on the params' device");
  std::vector<at::Tensor> es;
  for (int32_t k = 0; k < nema; k++) {
    es.push_back(T(emas[k], "ema"));
    check_flat(es.back(), p, "ema");
  }
  // PyTorch's AdamW (single-tensor path), step by step:
  //   p *= 1 - lr*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
  //   p += -(lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
  const double bc1 = 1 - std::pow(o.beta1, static_cast<double>(step));
  const double bc2 = 1 - std::pow(o.beta2, static_cast<double>(step));
  const double step_size = o.lr / bc1;
  const double bc2_sqrt = std::sqrt(bc2);
  if (p.is_cpu() && p.scalar_type() == at::kFloat) {
    float *P = p.data_ptr<float>(), *G = g.data_ptr<float>(), *M = m.data_ptr<float>(),
          *V = v.data_ptr<float>();
    const float decay = static_cast<float>(1 - o.lr * o.weight_decay);
    const float b1 = static_cast<float>(o.beta1), omb1 = static_cast<float>(1 - o.beta1);
    const float b2 = static_cast<float>(o.beta2), omb2 = static_cast<float>(1 - o.beta2);
    const float nss = static_cast<float>(-step_size), bc2s = static_cast<float>(bc2_sqrt);
    const float eps = static_cast<float>(o.eps);
    std::vector<float *> E;
    std::vector<float> R, OMR;
    for (int32_t k = 0; k < nema; k++) {
      E.push_back(es[static_cast<size_t>(k)].data_ptr<float>());
      R.push_back(static_cast<float>(rates[k]));
      OMR.push_back(static_cast<float>(1 - rates[k]));
    }
    const bool zero = zero_grad != 0;
    const float gs = static_cast<float>(grad_scale);
    const bool scaled = grad_scale != 1.0;
    const int64_t n = p.numel();
    // Partial sums per fixed chunk, combined in chunk order afterwards, so the
    // norms are deterministic for any thread count.
    constexpr int64_t kChunk = 1 << 15;
    const int64_t nchunks = (n + kChunk - 1) / kChunk;
    std::vector<double> gsq(sumsq.defined() ? nchunks : 0), psq(sumsq.defined() ? nchunks : 0);
    at::parallel_for(0, nchunks, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; c++) {
        const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
        if (sumsq.defined()) {
          double sg = 0, sp = 0;
          for (int64_t i = begin; i < end; i++) {
            const float gi = scaled ? G[i] * gs : G[i];
            sg += static_cast<double>(gi) * gi;
            sp += static_cast<double>(P[i]) * P[i];
          }
          gsq[c] = sg;
          psq[c] = sp;
        }
        for (int64_t i = begin; i < end; i++) {
          const float gi = scaled ? G[i] * gs : G[i];
          const float mi = M[i] * b1 + omb1 * gi;
          const float vi = V[i] * b2 + omb2 * gi * gi;
          const float denom = std::sqrt(vi) / bc2s + eps;
          const float pi = P[i] * decay + (nss * mi) / denom;
          M[i] = mi;
          V[i] = vi;
          P[i] = pi;
        }
        for (size_t k = 0; k < E.size(); k++) {
          float *e = E[k];
          const float r = R[k], omr = OMR[k];
          for (int64_t i = begin; i < end; i++) e[i] = e[i] * r + omr * P[i];
        }
        if (zero) std::memset(G + begin, 0, static_cast<size_t>(end - begin) * sizeof(float));
      }
    });
    if (sumsq.defined()) {
      double sg = 0, sp = 0;
      for (int64_t c = 0; c < nchunks; c++) {
        sg += gsq[c];
        sp += psq[c];
      }
      double *S = sumsq.data_ptr<double>();
      S[0] += sg;
      S[1] += sp;
    }
  } else {
    if (grad_scale != 1.0) g.mul_(grad_scale);
    if (sumsq.defined()) {
      sumsq.select(0, 0).add_(at::linalg_vector_norm(g, 2, c10::nullopt, false, at::kDouble).square());
      sumsq.select(0, 1).add_(at::linalg_vector_norm(p, 2, c10::nullopt, false, at::kDouble).square());
    }
    p.mul_(1 - o.lr * o.weight_decay);
    m.mul_(o.beta1).add_(g, 1 - o.beta1);
    v.mul_(o.beta2).addcmul_(g, g, 1 - o.beta2);
    at::Tensor denom = (v.sqrt() / bc2_sqrt).add_(o.eps);
    p.addcdiv_(m, denom, -step_size);
    for (int32_t k = 0; k < nema; k++) es[static_cast<size_t>(k)].mul_(rates[k]).add_(p, 1 - rates[k]);
    if (zero_grad) g.zero_();
  }
  CGT_CATCH
}

cgt_status cgt_ema_(cgt_tensor ema, cgt_tensor p, double rate) noexcept {
  CGT_TRY
  c10::NoGradGuard ng;
  T(ema, "ema").mul_(rate).add_(T(p, "param"), 1 - rate);
  CGT_CATCH
}

}  // extern "C"
