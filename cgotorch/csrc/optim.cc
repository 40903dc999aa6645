// Optimizers: torch::optim::AdamW behind a version-independent C surface, and a
// fused single-pass AdamW(+EMA) over flat parameter buffers.
#include <ATen/Parallel.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <sstream>
#include <type_traits>

#include "adamw_kernel.h"
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

namespace cgt {

AdamWChunk adamw_chunk_args(float *P, float *M, float *V, int64_t step,
                            const cgt_adamw_options &o, double grad_scale, bool zero_grad,
                            float *const *E, const float *R, const float *OMR, size_t ne) {
  const double bc1 = 1 - std::pow(o.beta1, static_cast<double>(step));
  const double bc2 = 1 - std::pow(o.beta2, static_cast<double>(step));
  return AdamWChunk{P, M, V,
                    static_cast<float>(1 - o.lr * o.weight_decay), static_cast<float>(o.beta1),
                    static_cast<float>(1 - o.beta1), static_cast<float>(o.beta2),
                    static_cast<float>(1 - o.beta2), static_cast<float>(-(o.lr / bc1)),
                    static_cast<float>(std::sqrt(bc2)), static_cast<float>(o.eps),
                    static_cast<float>(grad_scale), grad_scale != 1.0, zero_grad,
                    E, R, OMR, ne};
}

// One pass over [0, n) of the chunk: the gradient (scaled, and written back
// scaled or zeroed when asked), the norms' partial sums (float lanes within
// blocks of 256 elements, then double), the update of P, M and V. No FMA
// contraction (see adamw_chunk).
template <bool kHasG, bool kNorms, bool kWriteG>
inline __attribute__((always_inline)) void adamw_pass(const AdamWChunk &a, float *__restrict G,
                                                      float *__restrict P, float *__restrict M,
                                                      float *__restrict V, int64_t n, double *sg,
                                                      double *sp) {
  constexpr int kLanes = 16;
  constexpr int64_t kBlock = 256;
  const float gs = a.scaled ? a.gs : 1.0f, gw = a.zero ? 0.0f : 1.0f;
  const float decay = a.decay, b1 = a.b1, omb1 = a.omb1, b2 = a.b2, omb2 = a.omb2;
  const float nss = a.nss, bc2s = a.bc2s, eps = a.eps;
  double tg = 0, tp = 0;
  float ag[kLanes], ap[kLanes];
  auto one = [&](int64_t k, int lane) {
    const float g = kHasG ? G[k] * gs : 0.0f;
    const float p = P[k];
    if (kNorms) {
      ag[lane] += g * g;
      ap[lane] += p * p;
    }
    const float mi = M[k] * b1 + omb1 * g;
    const float vi = V[k] * b2 + omb2 * g * g;
    const float denom = std::sqrt(vi) / bc2s + eps;
    P[k] = p * decay + (nss * mi) / denom;
    M[k] = mi;
    V[k] = vi;
    if (kWriteG) G[k] = g * gw;
  };
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    for (int j = 0; j < kLanes; j++) ag[j] = ap[j] = 0;
    int64_t i = b;
    for (; i + kLanes <= e; i += kLanes)
      for (int j = 0; j < kLanes; j++) one(i + j, j);
    for (; i < e; i++) one(i, 0);
    if (kNorms)
      for (int j = 0; j < kLanes; j++) {
        tg += ag[j];
        tp += ap[j];
      }
  }
  if (kNorms) {
    *sg = tg;
    *sp = tp;
  }
}

// No FMA contraction: an element gets the same result whether the vector
// body or the scalar tail handles it, so any split of the buffers into
// chunks (whole flat buffers, gradient segments, one parameter at a time)
// updates every element bit-identically. One pass over the gradient,
// parameters and moments (the norms ride along), then one per EMA over the
// chunk's fresh parameters (still in cache).
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off"))) void adamw_chunk(
    const AdamWChunk &a, float *__restrict G, int64_t begin, int64_t end, double *sg,
    double *sp) {
  float *__restrict P = a.P + begin, *__restrict M = a.M + begin, *__restrict V = a.V + begin;
  const int64_t n = end - begin;
  // The caller's gradient is never modified (it is scaled as it is read),
  // on the CPU as on CUDA, except that zero_grad zeroes it.
  const bool norms = sg != nullptr, writeg = G != nullptr && a.zero;
  if (G == nullptr) {
    if (norms) {
      adamw_pass<false, true, false>(a, G, P, M, V, n, sg, sp);
    } else {
      adamw_pass<false, false, false>(a, G, P, M, V, n, sg, sp);
    }
  } else if (norms) {
    if (writeg) {
      adamw_pass<true, true, true>(a, G, P, M, V, n, sg, sp);
    } else {
      adamw_pass<true, true, false>(a, G, P, M, V, n, sg, sp);
    }
  } else if (writeg) {
    adamw_pass<true, false, true>(a, G, P, M, V, n, sg, sp);
  } else {
    adamw_pass<true, false, false>(a, G, P, M, V, n, sg, sp);
  }
  for (size_t k = 0; k < a.ne; k++) {
    float *__restrict e = a.E[k] + begin;
    const float r = a.R[k], omr = a.OMR[k];
    for (int64_t i = 0; i < n; i++) e[i] = e[i] * r + omr * P[i];
  }
}

}  // namespace cgt

namespace {

using cgt::AdamWChunk;
using cgt::adamw_chunk;

// One unit of work: [begin, end) of the flat buffers with its gradient.
struct Span {
  int64_t begin, end;
  float *g;
};

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
    // All handles or none: a failure part-way frees those already made.
    cgt::owned m(cgt::wrap(s.exp_avg()));
    cgt::owned v(cgt::wrap(s.exp_avg_sq()));
    cgt::owned mx(s.max_exp_avg_sq().defined() ? cgt::wrap(s.max_exp_avg_sq()) : nullptr);
    *step = s.step();
    *exp_avg = m.release();
    *exp_avg_sq = v.release();
    *max_exp_avg_sq = mx.release();
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

cgt_status cgt_fused_adamw_(cgt_tensor hp, cgt_tensor hg, const cgt_tensor *grads,
                            const int64_t *seg_numel, int32_t nseg, cgt_tensor hm, cgt_tensor hv,
                            int64_t step, cgt_adamw_options o, double grad_scale,
                            const cgt_tensor *emas, const double *rates, int32_t nema,
                            int32_t zero_grad, cgt_tensor hsumsq) noexcept {
  CGT_TRY
  c10::NoGradGuard ng;
  at::Tensor &p = T(hp, "param"), &m = T(hm, "exp_avg"), &v = T(hv, "exp_avg_sq");
  if (step < 1) throw cgt::invalid("fused_adamw: step is 1-based");
  if (o.amsgrad)
    throw cgt::invalid("fused_adamw: amsgrad is not supported (use the AdamW optimizer, NewAdamW)");
  if (nema < 0 || (nema > 0 && (emas == nullptr || rates == nullptr)))
    throw cgt::invalid("fused_adamw: bad EMA list");
  if (!p.is_contiguous()) throw cgt::invalid("fused_adamw: param must be contiguous");
  check_flat(m, p, "exp_avg");
  check_flat(v, p, "exp_avg_sq");
  const int64_t n = p.numel();
  // The gradient: one flat tensor, or segments laid end to end (a null
  // segment is a zero gradient).
  at::Tensor g;
  std::vector<at::Tensor> segs;
  std::vector<int64_t> seg_len;
  if (hg != nullptr) {
    g = T(hg, "grad");
    check_flat(g, p, "grad");
  } else {
    if (nseg <= 0 || grads == nullptr || seg_numel == nullptr)
      throw cgt::invalid("fused_adamw: need a flat gradient or gradient segments");
    int64_t total = 0;
    for (int32_t k = 0; k < nseg; k++) {
      at::Tensor t = cgt::opt(grads[k]);
      if (t.defined() && (!t.is_contiguous() || t.numel() != seg_numel[k] ||
                          t.scalar_type() != p.scalar_type() || t.device() != p.device()))
        throw cgt::invalid("fused_adamw: gradient segment " + std::to_string(k) +
                           " must be contiguous with the parameter's numel, dtype and device");
      segs.push_back(t);
      seg_len.push_back(seg_numel[k]);
      total += seg_numel[k];
    }
    if (total != n) throw cgt::invalid("fused_adamw: gradient segments do not cover the parameters");
  }
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
    std::vector<float *> E;
    std::vector<float> R, OMR;
    for (int32_t k = 0; k < nema; k++) {
      E.push_back(es[static_cast<size_t>(k)].data_ptr<float>());
      R.push_back(static_cast<float>(rates[k]));
      OMR.push_back(static_cast<float>(1 - rates[k]));
    }
    const AdamWChunk args = cgt::adamw_chunk_args(
        p.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), step, o, grad_scale,
        zero_grad != 0, E.data(), R.data(), OMR.data(), E.size());
    // Fixed chunks within each segment; per-chunk norm partial sums are
    // combined in order, so the norms do not depend on the thread count.
    constexpr int64_t kChunk = cgt::kAdamWChunk;
    std::vector<Span> spans;
    auto add_spans = [&](int64_t off, int64_t len, float *gp) {
      for (int64_t b = 0; b < len; b += kChunk)
        spans.push_back(Span{off + b, off + std::min(len, b + kChunk), gp ? gp + b : nullptr});
    };
    if (g.defined()) {
      add_spans(0, n, g.data_ptr<float>());
    } else {
      int64_t off = 0;
      for (size_t k = 0; k < segs.size(); k++) {
        add_spans(off, seg_len[k], segs[k].defined() ? segs[k].data_ptr<float>() : nullptr);
        off += seg_len[k];
      }
    }
    const int64_t ns = static_cast<int64_t>(spans.size());
    std::vector<double> gsq(sumsq.defined() ? ns : 0), psq(sumsq.defined() ? ns : 0);
    at::parallel_for(0, ns, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; c++) {
        const Span &sp = spans[static_cast<size_t>(c)];
        adamw_chunk(args, sp.g, sp.begin, sp.end, sumsq.defined() ? &gsq[c] : nullptr,
                    sumsq.defined() ? &psq[c] : nullptr);
      }
    });
    if (sumsq.defined()) {
      double sg = 0, sp = 0;
      for (int64_t c = 0; c < ns; c++) {
        sg += gsq[c];
        sp += psq[c];
      }
      double *S = sumsq.data_ptr<double>();
      S[0] += sg;
      S[1] += sp;
    }
    // The kernel wrote through raw pointers: bump the version counters as
    // an in-place ATen op would, so autograd refuses a graph that saved one
    // of these tensors before the update instead of using stale values.
    for (at::Tensor *t : {&p, &m, &v}) t->unsafeGetTensorImpl()->bump_version();
    for (auto &e : es) e.unsafeGetTensorImpl()->bump_version();
    if (sumsq.defined()) sumsq.unsafeGetTensorImpl()->bump_version();
    if (zero_grad) {
      if (g.defined()) g.unsafeGetTensorImpl()->bump_version();
      for (auto &t : segs)
        if (t.defined()) t.unsafeGetTensorImpl()->bump_version();
    }
  } else {
    // Whole-buffer ATen ops (CUDA, or a CPU dtype other than float32); the
    // scaled gradient is a copy, never the caller's buffer.
    at::Tensor gf = g;
    if (!gf.defined()) {
      std::vector<at::Tensor> parts;
      for (size_t k = 0; k < segs.size(); k++)
        parts.push_back(segs[k].defined() ? segs[k].reshape({-1}) : at::zeros({seg_len[k]}, p.options()));
      gf = at::cat(parts);  // a new buffer
      if (grad_scale != 1.0) gf.mul_(grad_scale);
    } else if (grad_scale != 1.0) {
      gf = gf.mul(grad_scale);
    }
    if (sumsq.defined()) {
      sumsq.select(0, 0).add_(at::linalg_vector_norm(gf, 2, c10::nullopt, false, at::kDouble).square());
      sumsq.select(0, 1).add_(at::linalg_vector_norm(p, 2, c10::nullopt, false, at::kDouble).square());
    }
    p.mul_(1 - o.lr * o.weight_decay);
    m.mul_(o.beta1).add_(gf, 1 - o.beta1);
    v.mul_(o.beta2).addcmul_(gf, gf, 1 - o.beta2);
    at::Tensor denom = (v.sqrt() / bc2_sqrt).add_(o.eps);
    p.addcdiv_(m, denom, -step_size);
    for (int32_t k = 0; k < nema; k++) es[static_cast<size_t>(k)].mul_(rates[k]).add_(p, 1 - rates[k]);
    if (zero_grad) {
      if (g.defined()) g.zero_();
      for (auto &t : segs)
        if (t.defined()) t.zero_();
    }
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
