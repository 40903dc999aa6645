// The fused Cell_Unet training step: forward, ε-prediction MSE and backward
// of the whole network written out by hand, in the spirit of llm.c — no
// autograd graph, every activation and gradient in buffers allocated once
// (cgt_unet_step_reserve) and reused every step, parameter gradients written
// straight into the caller's flat gradient buffer (the one the fused AdamW +
// EMA pass reads).
//
// Architecture and formulas: ../../../shared/spec/scdiffusion.md §1–§3 and
// cellunet/model.go. With D = input width, H = hidden widths (n of them),
// E = H[0] (time-embedding width), F = 2·H[1] (head width):
//
//   x_t   = sqrt_ab[t]·x0 + sqrt_1m_ab[t]·ε
//   sin   = [cos(s·freq), sin(s·freq)],  s = timestep_map[t]   (a [T,E] table)
//   emb   = te2(SiLU(te0(sin))),  semb = SiLU(emb)
//   Blk_k(x) = SiLU(LN_k(x·Wfcᵀ + bfc + semb·Weᵀ + be))
//   encoder h_i = Blk(h_{i-1}), i < n;  decoder u = Blk(u) + h_i, i = n-2 … 0
//   ε̂    = out2(SiLU(LN_out(out1(u))))
//   mse_r = mean_d (ε̂ − ε)²;  loss = coef · Σ_r w_r·mse_r
//
// Two backends compute the same step:
//   CPU  — the llm.c way: sgemm into preallocated buffers (OpenBLAS, found
//          in the process with dlsym; libtorch's mm_out otherwise) and one
//          hand-written pass per block that fuses bias + embedding add +
//          LayerNorm + SiLU (+ skip) forward, and one for their backward.
//          No allocation and no dispatcher op per step.
//   ATen — the same step as ATen ops on device tensors (matrix products
//          into preallocated buffers and straight into the gradient buffer,
//          native_layer_norm(+_backward), silu(_backward)); it runs on CUDA
//          (no host synchronisation, static shapes: capturable in a CUDA
//          graph) and on the CPU (where the tests check it).
//
// Row-major everywhere: activations [rows, width], Linear weights [out, in].
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <sstream>

#include "common.h"
#include "fused_common.h"

using cgt::T;
using cgt::fused::cols_parallel;
using cgt::fused::column_sums;
using cgt::fused::column_sums_parallel;
using cgt::fused::rows_parallel;

namespace {

// ------------------------------------------------- elementwise kernels (CPU)
//
// Built for AVX-512, AVX2 and baseline x86-64 (picked at load time), with
// -fno-math-errno; reductions use 16 independent accumulators so that they
// vectorise and their order does not depend on the thread count.

constexpr int kLanes = 16;
constexpr float kLnEps = 1e-5f;

// exp(x) by Cephes' single-precision polynomial, within 2 ulp of the
// correctly rounded value on [-87, 88]; x is clamped to [-88, 88] first
// (exp(-88) comes out as 0, exp(88) as 1.65e38; NaN stays NaN). Branch-free
// so that it vectorises: the clamp selects on the bit pattern, because GCC
// does not if-convert a float compare that could trap (-ftrapping-math).
inline float exp_clamped(float x) {
  const int32_t bits = __builtin_bit_cast(int32_t, x), mag = bits & 0x7FFFFFFF;
  const int32_t lim = 0x42B00000;  // 88.0f
  x = __builtin_bit_cast(float, mag > lim && mag <= 0x7F800000 ? (bits & ~0x7FFFFFFF) | lim : bits);
  const float shift = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + shift;
  const float n = t - shift;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = (__builtin_bit_cast(int32_t, t) - 0x4B400000 + 127) << 23;
  return p * __builtin_bit_cast(float, e);
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_clamped(-x)); }

// The time-embedding MLP's elementwise parts, over one row block:
// pre = c + b (kept for backward), act = SiLU(pre).
__attribute__((target_clones("avx512f", "avx2", "default"))) void bias_silu(
    int64_t n, const float *c, const float *__restrict b, float *pre, float *__restrict act) {
  for (int64_t i = 0; i < n; i++) {
    const float v = c[i] + b[i];
    pre[i] = v;
    act[i] = v * sigmoid(v);
  }
}

// g = gy · SiLU'(pre), in place allowed (g may alias gy).
__attribute__((target_clones("avx512f", "avx2", "default"))) void silu_backward(
    int64_t n, const float *gy, const float *__restrict pre, float *g) {
  for (int64_t i = 0; i < n; i++) {
    const float x = pre[i], s = sigmoid(x);
    g[i] = gy[i] * (s * (1.0f + x * (1.0f - s)));
  }
}

inline float sum16(const float *a) {
  float s = 0;
  for (int j = 0; j < kLanes; j++) s += a[j];
  return s;
}

// One row of a block's forward after its matrix products: h = c + b1 (+ b2),
// LayerNorm over the row (biased variance, eps 1e-5), n = x̂·γ + β,
// y = SiLU(n) (+ skip). c is overwritten with x̂; rstd gets 1/√(var+eps).
__attribute__((target_clones("avx512f", "avx2", "default"))) void ln_silu_forward_row(
    int64_t w, float *__restrict c, const float *__restrict b1, const float *__restrict b2,
    const float *__restrict gamma, const float *__restrict beta, const float *__restrict skip,
    float *__restrict y, float *__restrict rstd_out) {
  float acc[kLanes] = {0};
  int64_t i = 0;
  if (b2 != nullptr) {
    for (; i + kLanes <= w; i += kLanes)
      for (int j = 0; j < kLanes; j++) {
        const float v = c[i + j] + b1[i + j] + b2[i + j];
        c[i + j] = v;
        acc[j] += v;
      }
    for (; i < w; i++) {
      c[i] = c[i] + b1[i] + b2[i];
      acc[0] += c[i];
    }
  } else {
    for (; i + kLanes <= w; i += kLanes)
      for (int j = 0; j < kLanes; j++) {
        const float v = c[i + j] + b1[i + j];
        c[i + j] = v;
        acc[j] += v;
      }
    for (; i < w; i++) {
      c[i] = c[i] + b1[i];
      acc[0] += c[i];
    }
  }
  const float mean = sum16(acc) / static_cast<float>(w);
  float acc2[kLanes] = {0};
  for (i = 0; i + kLanes <= w; i += kLanes)
    for (int j = 0; j < kLanes; j++) {
      const float d = c[i + j] - mean;
      acc2[j] += d * d;
    }
  for (; i < w; i++) {
    const float d = c[i] - mean;
    acc2[0] += d * d;
  }
  const float var = sum16(acc2) / static_cast<float>(w);
  const float rstd = 1.0f / std::sqrt(var + kLnEps);
  *rstd_out = rstd;
  if (skip != nullptr) {
    for (i = 0; i < w; i++) {
      const float xh = (c[i] - mean) * rstd;
      c[i] = xh;
      const float n = xh * gamma[i] + beta[i];
      y[i] = n * sigmoid(n) + skip[i];
    }
  } else {
    for (i = 0; i < w; i++) {
      const float xh = (c[i] - mean) * rstd;
      c[i] = xh;
      const float n = xh * gamma[i] + beta[i];
      y[i] = n * sigmoid(n);
    }
  }
}

// One row of a block's backward through SiLU and LayerNorm: from the output
// gradient gy and the saved x̂, rstd: dn = gy·SiLU'(n) (kept for γ and β's
// gradients) and dh = rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dn·γ.
__attribute__((target_clones("avx512f", "avx2", "default"))) void ln_silu_backward_row(
    int64_t w, const float *__restrict gy, const float *__restrict xh, float rstd,
    const float *__restrict gamma, const float *__restrict beta, float *__restrict dn,
    float *__restrict dh) {
  float a1[kLanes] = {0}, a2[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= w; i += kLanes)
    for (int j = 0; j < kLanes; j++) {
      const int64_t k = i + j;
      const float n = xh[k] * gamma[k] + beta[k];
      const float s = sigmoid(n);
      const float d = gy[k] * (s * (1.0f + n * (1.0f - s)));
      dn[k] = d;
      const float g = d * gamma[k];
      a1[j] += g;
      a2[j] += g * xh[k];
    }
  for (; i < w; i++) {
    const float n = xh[i] * gamma[i] + beta[i];
    const float s = sigmoid(n);
    const float d = gy[i] * (s * (1.0f + n * (1.0f - s)));
    dn[i] = d;
    const float g = d * gamma[i];
    a1[0] += g;
    a2[0] += g * xh[i];
  }
  const float inv = 1.0f / static_cast<float>(w);
  const float m1 = sum16(a1) * inv, m2 = sum16(a2) * inv;
  for (i = 0; i < w; i++) dh[i] = rstd * (dn[i] * gamma[i] - m1 - xh[i] * m2);
}

// One row of the loss: d = ε̂ + b − ε; mse = mean(d²); grad = scale·d
// (scale = coef·w_r·2/D). Returns mse.
__attribute__((target_clones("avx512f", "avx2", "default"))) float mse_row(
    int64_t w, const float *__restrict c, const float *__restrict b,
    const float *__restrict noise, float scale, float *__restrict grad) {
  float acc[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= w; i += kLanes)
    for (int j = 0; j < kLanes; j++) {
      const float d = (c[i + j] + b[i + j]) - noise[i + j];
      acc[j] += d * d;
      grad[i + j] = scale * d;
    }
  for (; i < w; i++) {
    const float d = (c[i] + b[i]) - noise[i];
    acc[0] += d * d;
    grad[i] = scale * d;
  }
  return sum16(acc) / static_cast<float>(w);
}

// ----------------------------------------------------------------- model

struct Linear {
  int64_t in, out;
  int32_t w, b;  // parameter indices
};

struct Block {
  Linear fc, emb;
  int32_t gamma, beta;
  int64_t in, out;
  int32_t input;  // index of the block whose output is the input; -1: x_t
  int32_t skip;   // encoder block added after the block (decoder), else -1
  int32_t grad_out;  // gradient buffer of the output (see Workspace)
  int32_t grad_in;   // gradient buffer the input's gradient goes to; -1: none (x_t)
  bool grad_in_accumulates;  // add onto grad_in (it already holds a skip's gradient)
};

}  // namespace

struct cgt_unet_step_s {
  int64_t D = 0, E = 0, F = 0, T = 0;
  std::vector<int64_t> H;
  std::vector<Block> blocks;  // encoder 0..n-1, then decoder
  Linear te0{}, te2{}, out1{}, out2{};
  int32_t norm_out_g = 0, norm_out_b = 0;
  std::vector<at::Tensor> params, grads;  // views of the flat buffers, in state-dict order
  at::Tensor table;                       // [T,E] sinusoidal embedding of each schedule step
  at::Tensor sqrt_ab, sqrt_1m_ab;         // [T] float32
  bool cpu = true;                        // backend: CPU kernels, else ATen ops
  cgt::fused::Gemm gemm;

  // Workspace (CPU backend): one allocation, carved into the buffers below.
  int64_t rows = 0;
  at::Tensor ws;
  float *xt = nullptr, *sin = nullptr, *a0 = nullptr, *s0 = nullptr, *emb = nullptr,
        *semb = nullptr;
  std::vector<float *> xh, y, rstd, gy;  // per block: x̂, output, 1/σ; per encoder block: ∂output
  float *xh_o = nullptr, *rstd_o = nullptr, *act_o = nullptr, *eps = nullptr, *deps = nullptr,
        *da = nullptr, *dn = nullptr, *dh = nullptr, *dsemb = nullptr, *ds0 = nullptr;
  float *scratch = nullptr;  // one parameter's gradient when updating (below)
  int64_t max_w = 0, max_numel = 0;

  // Updating runs apply AdamW + EMA to each parameter as soon as its
  // gradient is ready, the gradient passing through the scratch buffer
  // (which stays in cache) instead of the flat gradient buffer.
  cgt::fused::Updater upd;

  // ATen backend: activations kept between forward and backward (reused).
  struct AtenSaved {
    at::Tensor h, mean, rstd, n, y;
  };
  std::vector<AtenSaved> saved;

  float *P(int32_t i) { return params[static_cast<size_t>(i)].data_ptr<float>(); }
  float *G(int32_t i) { return grads[static_cast<size_t>(i)].data_ptr<float>(); }
};

namespace {

using Step = cgt_unet_step_s;

void check_param(const at::Tensor &t, std::initializer_list<int64_t> shape, const char *what,
                 size_t i, const at::Device &dev) {
  if (!t.is_contiguous() || t.scalar_type() != at::kFloat || t.device() != dev ||
      !t.sizes().equals(shape)) {
    std::ostringstream os;
    os << "unet_step: " << what << " tensor " << i << " must be contiguous float32 of shape "
       << at::IntArrayRef(shape) << " on " << dev << ", got " << t.sizes() << " "
       << t.scalar_type() << " on " << t.device();
    throw cgt::invalid(os.str());
  }
}

// Builds the layer table and checks every parameter and gradient.
void layout(Step &s) {
  const int64_t n = static_cast<int64_t>(s.H.size());
  int32_t k = 0;
  auto lin = [&](int64_t in, int64_t out) {
    Linear l{in, out, k, k + 1};
    k += 2;
    return l;
  };
  s.te0 = lin(s.E, s.E);
  s.te2 = lin(s.E, s.E);
  // A block's parameters in state-dict order: fc, norm, emb_layer.1.
  auto block = [&](int64_t in, int64_t out) {
    Block b{};
    b.in = in;
    b.out = out;
    b.fc = lin(in, out);
    b.gamma = k++;
    b.beta = k++;
    b.emb = lin(s.E, out);
    return b;
  };
  // Gradient buffers: one per encoder block output; a decoder block's output
  // shares the buffer of the encoder output it adds (u = Blk(·) + h_i has
  // ∂u = ∂h_i from that path), so the encoder's backward adds onto it.
  for (int64_t i = 0; i < n; i++) {
    Block b = block(i == 0 ? s.D : s.H[static_cast<size_t>(i - 1)], s.H[static_cast<size_t>(i)]);
    b.input = static_cast<int32_t>(i - 1);
    b.skip = -1;
    b.grad_out = static_cast<int32_t>(i);
    b.grad_in = static_cast<int32_t>(i - 1);
    b.grad_in_accumulates = i >= 1;  // every encoder output but the last is a skip
    s.blocks.push_back(b);
  }
  for (int64_t i = n - 2; i >= 0; i--) {
    Block b = block(s.H[static_cast<size_t>(i + 1)], s.H[static_cast<size_t>(i)]);
    b.input = static_cast<int32_t>(s.blocks.size() - 1);
    b.skip = static_cast<int32_t>(i);
    b.grad_out = static_cast<int32_t>(i);
    b.grad_in = static_cast<int32_t>(i + 1);
    b.grad_in_accumulates = false;
    s.blocks.push_back(b);
  }
  s.out1 = lin(s.H[0], s.F);
  s.norm_out_g = k++;
  s.norm_out_b = k++;
  s.out2 = lin(s.F, s.D);
  if (static_cast<size_t>(k) != s.params.size())
    throw cgt::invalid("unet_step: " + std::to_string(s.params.size()) +
                       " parameters given, the architecture has " + std::to_string(k));
  const at::Device dev = s.params[0].device();
  auto chk = [&](int32_t i, std::initializer_list<int64_t> shape) {
    check_param(s.params[static_cast<size_t>(i)], shape, "parameter", static_cast<size_t>(i), dev);
    check_param(s.grads[static_cast<size_t>(i)], shape, "gradient", static_cast<size_t>(i), dev);
  };
  auto chk_lin = [&](const Linear &l) {
    chk(l.w, {l.out, l.in});
    chk(l.b, {l.out});
  };
  chk_lin(s.te0);
  chk_lin(s.te2);
  for (const Block &b : s.blocks) {
    chk_lin(b.fc);
    chk(b.gamma, {b.out});
    chk(b.beta, {b.out});
    chk_lin(b.emb);
  }
  chk_lin(s.out1);
  chk(s.norm_out_g, {s.F});
  chk(s.norm_out_b, {s.F});
  chk_lin(s.out2);
  s.max_w = std::max(s.E, s.F);
  for (int64_t h : s.H) s.max_w = std::max(s.max_w, h);
  for (const at::Tensor &p : s.params) s.max_numel = std::max(s.max_numel, p.numel());
}

// The CPU backend's buffers for R rows, as a layout for carve_workspace.
auto workspace_layout(Step &s, int64_t R) {
  const int64_t E = s.E, D = s.D, F = s.F, W = s.max_w;
  return [&s, R, E, D, F, W](auto take) {
    s.xt = take(R * D);
    s.sin = take(R * E);
    s.a0 = take(R * E);
    s.s0 = take(R * E);
    s.emb = take(R * E);
    s.semb = take(R * E);
    s.dsemb = take(R * E);
    s.ds0 = take(R * E);
    s.xh.clear();
    s.y.clear();
    s.rstd.clear();
    s.gy.clear();
    for (const Block &b : s.blocks) {
      s.xh.push_back(take(R * b.out));
      s.y.push_back(take(R * b.out));
      s.rstd.push_back(take(R));
    }
    for (int64_t h : s.H) s.gy.push_back(take(R * h));
    s.xh_o = take(R * F);
    s.rstd_o = take(R);
    s.act_o = take(R * F);
    s.da = take(R * F);
    s.eps = take(R * D);
    s.deps = take(R * D);
    s.dn = take(R * W);
    s.dh = take(R * W);
    s.scratch = take(std::max(s.max_numel, 3 * W));
  };
}

void reserve_cpu(Step &s, int64_t R) {
  // Release first: after an out-of-memory retry the smaller workspace must
  // fit where the larger one did not.
  s.ws = at::Tensor();
  s.rows = 0;
  s.ws = cgt::fused::carve_workspace(workspace_layout(s, R));
  s.rows = R;
}

// The workspace bytes of R rows, without touching s's buffers (the layout
// runs on a copy of the shape fields it reads).
int64_t workspace_bytes(const Step &s, int64_t R) {
  Step shape;
  shape.E = s.E;
  shape.D = s.D;
  shape.F = s.F;
  shape.H = s.H;
  shape.blocks = s.blocks;
  shape.max_w = s.max_w;
  shape.max_numel = s.max_numel;
  return cgt::fused::workspace_floats(workspace_layout(shape, R)) * static_cast<int64_t>(sizeof(float));
}

// Inputs of one run, validated.
struct Batch {
  int64_t n = 0;
  at::Tensor data, index, t, noise, w, mse, log;
  double coef = 0;
  bool accumulate = false;
};

// ------------------------------------------------------------ CPU backend

void block_forward(Step &s, size_t k, int64_t n, const float *x) {
  const Block &b = s.blocks[k];
  float *c = s.xh[k];
  s.gemm(false, true, n, b.out, b.in, x, b.in, s.P(b.fc.w), b.in, 0.0f, c, b.out);
  s.gemm(false, true, n, b.out, s.E, s.semb, s.E, s.P(b.emb.w), s.E, 1.0f, c, b.out);
  const float *b1 = s.P(b.fc.b), *b2 = s.P(b.emb.b), *g = s.P(b.gamma), *be = s.P(b.beta);
  const float *skip = b.skip >= 0 ? s.y[static_cast<size_t>(b.skip)] : nullptr;
  float *y = s.y[k], *rs = s.rstd[k];
  const int64_t w = b.out;
  rows_parallel(n, w, [&](int64_t r) {
    ln_silu_forward_row(w, c + r * w, b1, b2, g, be, skip ? skip + r * w : nullptr, y + r * w,
                        rs + r);
  });
}

// Where parameter i's gradient is written: its gradient tensor, or, when
// updating, a slot of the scratch buffer (then handed to grad_ready).
float *grad_dst(Step &s, int32_t i, int64_t slot = 0) {
  return s.upd.on ? s.scratch + slot : s.G(i);
}

// Parameter i's gradient g is complete: when updating, apply AdamW + EMA to
// the parameter now.
void grad_ready(Step &s, int32_t i, float *g) {
  if (s.upd.on) s.upd.apply(s.params[static_cast<size_t>(i)], g);
}

// Backward of block k from its output gradient: parameter gradients, the
// embedding's gradient (into dsemb) and the input's gradient. Each weight's
// input gradient is taken before its own gradient is finished, so that an
// updating run may change the weight right after.
void block_backward(Step &s, size_t k, int64_t n, const float *x, bool acc, bool &dsemb_set) {
  const Block &b = s.blocks[k];
  const int64_t w = b.out;
  const float *gy = s.gy[static_cast<size_t>(b.grad_out)], *xh = s.xh[k], *rs = s.rstd[k];
  const float *g = s.P(b.gamma), *be = s.P(b.beta);
  float *dn = s.dn, *dh = s.dh;
  rows_parallel(n, w, [&](int64_t r) {
    ln_silu_backward_row(w, gy + r * w, xh + r * w, rs[r], g, be, dn + r * w, dh + r * w);
  });
  float *dbe = grad_dst(s, b.beta), *dg = grad_dst(s, b.gamma, w), *db = grad_dst(s, b.fc.b, 2 * w);
  cols_parallel(w, n, [&](int64_t c0, int64_t c1) {
    column_sums(n, w, c0, c1, dn, xh, dbe, dg, acc);
    column_sums(n, w, c0, c1, dh, nullptr, db, nullptr, acc);
  });
  // Both biases enter the same sum: the same gradient.
  if (s.upd.on) {
    grad_ready(s, b.beta, dbe);
    grad_ready(s, b.gamma, dg);
    grad_ready(s, b.fc.b, db);
    grad_ready(s, b.emb.b, db);
  } else {
    std::memcpy(s.G(b.emb.b), db, static_cast<size_t>(w) * sizeof(float));
  }
  const float beta = acc ? 1.0f : 0.0f;
  s.gemm(false, false, n, s.E, w, dh, w, s.P(b.emb.w), s.E, dsemb_set ? 1.0f : 0.0f, s.dsemb, s.E);
  dsemb_set = true;
  float *gwe = grad_dst(s, b.emb.w);
  s.gemm(true, false, w, s.E, n, dh, w, s.semb, s.E, beta, gwe, s.E);
  grad_ready(s, b.emb.w, gwe);
  if (b.grad_in >= 0)
    s.gemm(false, false, n, b.in, w, dh, w, s.P(b.fc.w), b.in, b.grad_in_accumulates ? 1.0f : 0.0f,
           s.gy[static_cast<size_t>(b.grad_in)], b.in);
  float *gwf = grad_dst(s, b.fc.w);
  s.gemm(true, false, w, b.in, n, dh, w, x, b.in, beta, gwf, b.in);
  grad_ready(s, b.fc.w, gwf);
}

void run_cpu(Step &s, const Batch &in) {
  const int64_t n = in.n, D = s.D, E = s.E, F = s.F;
  const bool acc = in.accumulate;
  s.gemm.start_run();
  // Inputs: x_t and the embedding rows, gathered by t.
  {
    const float *data = in.data.data_ptr<float>();
    const int64_t *idx = in.index.defined() ? in.index.data_ptr<int64_t>() : nullptr;
    const int64_t *t = in.t.data_ptr<int64_t>();
    const float *noise = in.noise.data_ptr<float>();
    const float *ab = s.sqrt_ab.data_ptr<float>(), *bb = s.sqrt_1m_ab.data_ptr<float>();
    const float *table = s.table.data_ptr<float>();
    const int64_t N = in.data.size(0);
    for (int64_t r = 0; r < n; r++) {
      const int64_t tr = t[r], row = idx ? idx[r] : r;
      if (tr < 0 || tr >= s.T) throw cgt::invalid("unet_step: timestep out of range");
      if (row < 0 || row >= N) throw cgt::invalid("unet_step: data index out of range");
    }
    rows_parallel(n, D + E, [&](int64_t r) {
      const int64_t tr = t[r], row = idx ? idx[r] : r;
      const float a = ab[tr], b = bb[tr];
      const float *x0 = data + row * D, *nz = noise + r * D;
      float *xt = s.xt + r * D;
      for (int64_t i = 0; i < D; i++) xt[i] = a * x0[i] + b * nz[i];
      std::memcpy(s.sin + r * E, table + tr * E, static_cast<size_t>(E) * sizeof(float));
    });
  }
  // Time embedding.
  s.gemm(false, true, n, E, E, s.sin, E, s.P(s.te0.w), E, 0.0f, s.a0, E);
  {
    const float *b0 = s.P(s.te0.b);
    rows_parallel(n, E, [&](int64_t r) { bias_silu(E, s.a0 + r * E, b0, s.a0 + r * E, s.s0 + r * E); });
  }
  s.gemm(false, true, n, E, E, s.s0, E, s.P(s.te2.w), E, 0.0f, s.emb, E);
  {
    const float *b2 = s.P(s.te2.b);
    rows_parallel(n, E, [&](int64_t r) { bias_silu(E, s.emb + r * E, b2, s.emb + r * E, s.semb + r * E); });
  }
  // Blocks.
  for (size_t k = 0; k < s.blocks.size(); k++) {
    const Block &b = s.blocks[k];
    block_forward(s, k, n, b.input < 0 ? s.xt : s.y[static_cast<size_t>(b.input)]);
  }
  // Head.
  const float *u = s.y.back();
  const int64_t H0 = s.H[0];
  s.gemm(false, true, n, F, H0, u, H0, s.P(s.out1.w), H0, 0.0f, s.xh_o, F);
  {
    const float *b1 = s.P(s.out1.b), *g = s.P(s.norm_out_g), *be = s.P(s.norm_out_b);
    rows_parallel(n, F, [&](int64_t r) {
      ln_silu_forward_row(F, s.xh_o + r * F, b1, nullptr, g, be, nullptr, s.act_o + r * F, s.rstd_o + r);
    });
  }
  s.gemm(false, true, n, D, F, s.act_o, F, s.P(s.out2.w), F, 0.0f, s.eps, D);
  // Loss and its gradient.
  {
    const float *b = s.P(s.out2.b), *noise = in.noise.data_ptr<float>(), *w = in.w.data_ptr<float>();
    float *mse = in.mse.data_ptr<float>();
    const float k2 = static_cast<float>(in.coef * 2.0 / static_cast<double>(D));
    rows_parallel(n, D, [&](int64_t r) {
      mse[r] = mse_row(D, s.eps + r * D, b, noise + r * D, k2 * w[r], s.deps + r * D);
    });
    if (in.log.defined()) {
      // The trainer's log window (see cgotorch.h): sums in float64.
      double *L = in.log.data_ptr<double>();
      const int64_t *t = in.t.data_ptr<int64_t>();
      for (int64_t r = 0; r < n; r++) {
        const double m = mse[r], l = m * static_cast<double>(w[r]);
        const int64_t q = std::min<int64_t>(static_cast<int64_t>(std::floor(
                                                static_cast<double>(t[r]) * 4.0 / static_cast<double>(s.T))),
                                            3);
        L[0] += l;
        L[1] += m;
        L[2] += 1;
        L[3 + 3 * q] += l;
        L[4 + 3 * q] += m;
        L[5 + 3 * q] += 1;
      }
    }
  }
  // ---- backward (each weight's input gradient before its own gradient)
  const float beta = acc ? 1.0f : 0.0f;
  auto bias_grad = [&](int64_t w, const float *d, int32_t i) {
    float *db = grad_dst(s, i);
    cols_parallel(w, n, [&](int64_t c0, int64_t c1) { column_sums(n, w, c0, c1, d, nullptr, db, nullptr, acc); });
    grad_ready(s, i, db);
  };
  // out2
  s.gemm(false, false, n, F, D, s.deps, D, s.P(s.out2.w), F, 0.0f, s.da, F);
  {
    float *gw = grad_dst(s, s.out2.w);
    s.gemm(true, false, D, F, n, s.deps, D, s.act_o, F, beta, gw, F);
    grad_ready(s, s.out2.w, gw);
  }
  bias_grad(D, s.deps, s.out2.b);
  // norm_out + SiLU
  {
    const float *g = s.P(s.norm_out_g), *be = s.P(s.norm_out_b);
    rows_parallel(n, F, [&](int64_t r) {
      ln_silu_backward_row(F, s.da + r * F, s.xh_o + r * F, s.rstd_o[r], g, be, s.dn + r * F, s.dh + r * F);
    });
    float *dbe = grad_dst(s, s.norm_out_b), *dg = grad_dst(s, s.norm_out_g, F);
    cols_parallel(F, n, [&](int64_t c0, int64_t c1) { column_sums(n, F, c0, c1, s.dn, s.xh_o, dbe, dg, acc); });
    grad_ready(s, s.norm_out_b, dbe);
    grad_ready(s, s.norm_out_g, dg);
  }
  bias_grad(F, s.dh, s.out1.b);
  // out1: its input is the last decoder output, whose gradient buffer is gy[0].
  s.gemm(false, false, n, H0, F, s.dh, F, s.P(s.out1.w), H0, 0.0f, s.gy[0], H0);
  {
    float *gw = grad_dst(s, s.out1.w);
    s.gemm(true, false, F, H0, n, s.dh, F, u, H0, beta, gw, H0);
    grad_ready(s, s.out1.w, gw);
  }
  // Blocks in reverse.
  bool dsemb_set = false;
  for (size_t k = s.blocks.size(); k-- > 0;) {
    const Block &b = s.blocks[k];
    block_backward(s, k, n, b.input < 0 ? s.xt : s.y[static_cast<size_t>(b.input)], acc, dsemb_set);
  }
  // Time embedding.
  rows_parallel(n, E, [&](int64_t r) { silu_backward(E, s.dsemb + r * E, s.emb + r * E, s.dsemb + r * E); });
  bias_grad(E, s.dsemb, s.te2.b);
  s.gemm(false, false, n, E, E, s.dsemb, E, s.P(s.te2.w), E, 0.0f, s.ds0, E);
  {
    float *gw = grad_dst(s, s.te2.w);
    s.gemm(true, false, E, E, n, s.dsemb, E, s.s0, E, beta, gw, E);
    grad_ready(s, s.te2.w, gw);
  }
  rows_parallel(n, E, [&](int64_t r) { silu_backward(E, s.ds0 + r * E, s.a0 + r * E, s.ds0 + r * E); });
  bias_grad(E, s.ds0, s.te0.b);
  {
    float *gw = grad_dst(s, s.te0.w);
    s.gemm(true, false, E, E, n, s.ds0, E, s.sin, E, beta, gw, E);
    grad_ready(s, s.te0.w, gw);
  }
}

// ----------------------------------------------------------- ATen backend

// g (+)= v for a parameter gradient.
void put(at::Tensor &g, const at::Tensor &v, bool acc) {
  if (acc) {
    g.add_(v);
  } else {
    g.copy_(v);
  }
}

// g (+)= Σ_rows d straight into the gradient buffer (a bias).
void put_sum(at::Tensor &g, const at::Tensor &d, bool acc) {
  if (acc) {
    g.add_(d.sum(0));
  } else {
    at::sum_out(g, d, {0});
  }
}

// g (+)= aᵀ·b straight into the gradient buffer.
void put_mm_t(at::Tensor &g, const at::Tensor &a, const at::Tensor &b, bool acc) {
  if (acc) {
    g.addmm_(a.t(), b);
  } else {
    at::mm_out(g, a.t(), b);
  }
}

void run_aten(Step &s, const Batch &in) {
  const int64_t D = s.D;
  const bool acc = in.accumulate;
  auto &P = s.params;
  auto &G = s.grads;
  auto p = [&](int32_t i) -> const at::Tensor & { return P[static_cast<size_t>(i)]; };
  auto g = [&](int32_t i) -> at::Tensor & { return G[static_cast<size_t>(i)]; };
  at::Tensor x0 = in.index.defined() ? in.data.index_select(0, in.index) : in.data;
  at::Tensor a = s.sqrt_ab.index_select(0, in.t).unsqueeze(1);
  at::Tensor bcoef = s.sqrt_1m_ab.index_select(0, in.t).unsqueeze(1);
  at::Tensor xt = at::addcmul(a * x0, bcoef, in.noise);
  at::Tensor sin = s.table.index_select(0, in.t);
  at::Tensor a0 = at::addmm(p(s.te0.b), sin, p(s.te0.w).t());
  at::Tensor s0 = at::silu(a0);
  at::Tensor emb = at::addmm(p(s.te2.b), s0, p(s.te2.w).t());
  at::Tensor semb = at::silu(emb);
  const size_t nb = s.blocks.size();
  s.saved.resize(nb);
  auto input_of = [&](const Block &b) -> const at::Tensor & {
    return b.input < 0 ? xt : s.saved[static_cast<size_t>(b.input)].y;
  };
  for (size_t k = 0; k < nb; k++) {
    const Block &b = s.blocks[k];
    at::Tensor h = at::addmm(p(b.fc.b), input_of(b), p(b.fc.w).t());
    h.addmm_(semb, p(b.emb.w).t()).add_(p(b.emb.b));
    auto ln = at::native_layer_norm(h, {b.out}, p(b.gamma), p(b.beta), kLnEps);
    at::Tensor y = at::silu(std::get<0>(ln));
    if (b.skip >= 0) y.add_(s.saved[static_cast<size_t>(b.skip)].y);
    s.saved[k] = {h, std::get<1>(ln), std::get<2>(ln), std::get<0>(ln), y};
  }
  const at::Tensor &u = s.saved.back().y;
  at::Tensor o1 = at::addmm(p(s.out1.b), u, p(s.out1.w).t());
  auto lno = at::native_layer_norm(o1, {s.F}, p(s.norm_out_g), p(s.norm_out_b), kLnEps);
  at::Tensor no = std::get<0>(lno);
  at::Tensor act = at::silu(no);
  at::Tensor diff = at::addmm(p(s.out2.b), act, p(s.out2.w).t()).sub_(in.noise);
  at::Tensor mse_out = in.mse;
  at::mean_out(mse_out, diff.square(), {1});
  if (in.log.defined()) {
    at::Tensor m = in.mse.to(at::kDouble);
    at::Tensor l = m * in.w;
    at::Tensor cols = at::stack({l, m, at::ones_like(m)}, 1);
    in.log.narrow(0, 0, 3).add_(cols.sum(0));
    at::Tensor q = in.t.mul(4).div(s.T, "floor").clamp_max(3);  // int64
    in.log.narrow(0, 3, 12).view({4, 3}).index_add_(0, q, cols);
  }
  // backward
  at::Tensor deps = diff.mul_(in.w.mul(in.coef * 2.0 / static_cast<double>(D)).unsqueeze(1));
  put_mm_t(g(s.out2.w), deps, act, acc);
  put_sum(g(s.out2.b), deps, acc);
  at::Tensor dact = deps.mm(p(s.out2.w));
  at::Tensor dno = at::silu_backward(dact, no);
  auto bo = at::native_layer_norm_backward(dno, o1, {s.F}, std::get<1>(lno), std::get<2>(lno),
                                           p(s.norm_out_g), p(s.norm_out_b), {true, true, true});
  at::Tensor do1 = std::get<0>(bo);
  put(g(s.norm_out_g), std::get<1>(bo), acc);
  put(g(s.norm_out_b), std::get<2>(bo), acc);
  put_mm_t(g(s.out1.w), do1, u, acc);
  put_sum(g(s.out1.b), do1, acc);
  // Output gradients per encoder-output buffer (decoder outputs share them).
  std::vector<at::Tensor> gy(s.H.size());
  gy[0] = do1.mm(p(s.out1.w));
  at::Tensor dsemb;
  for (size_t k = nb; k-- > 0;) {
    const Block &b = s.blocks[k];
    const auto &sv = s.saved[k];
    at::Tensor dn = at::silu_backward(gy[static_cast<size_t>(b.grad_out)], sv.n);
    auto bw = at::native_layer_norm_backward(dn, sv.h, {b.out}, sv.mean, sv.rstd, p(b.gamma),
                                             p(b.beta), {true, true, true});
    at::Tensor dh = std::get<0>(bw);
    put(g(b.gamma), std::get<1>(bw), acc);
    put(g(b.beta), std::get<2>(bw), acc);
    put_sum(g(b.fc.b), dh, acc);
    if (acc) {
      put_sum(g(b.emb.b), dh, acc);
    } else {
      g(b.emb.b).copy_(g(b.fc.b));  // both biases enter the same sum
    }
    put_mm_t(g(b.fc.w), dh, input_of(b), acc);
    put_mm_t(g(b.emb.w), dh, semb, acc);
    if (dsemb.defined()) {
      dsemb.addmm_(dh, p(b.emb.w));
    } else {
      dsemb = dh.mm(p(b.emb.w));
    }
    if (b.grad_in >= 0) {
      at::Tensor &dst = gy[static_cast<size_t>(b.grad_in)];
      if (b.grad_in_accumulates) {
        dst.addmm_(dh, p(b.fc.w));
      } else {
        dst = dh.mm(p(b.fc.w));
      }
    }
  }
  at::Tensor demb = at::silu_backward(dsemb, emb);
  put_mm_t(g(s.te2.w), demb, s0, acc);
  put_sum(g(s.te2.b), demb, acc);
  at::Tensor da0 = at::silu_backward(demb.mm(p(s.te2.w)), a0);
  put_mm_t(g(s.te0.w), da0, sin, acc);
  put_sum(g(s.te0.b), da0, acc);
  s.saved.clear();
}

// ----------------------------------------------------------- op counting

std::atomic<int64_t> g_ops{0}, g_leaf{0}, g_kernels{0};
std::atomic<uint64_t> g_handle{0};
thread_local std::vector<char> tl_has_child;

bool metadata_only(const char *name) {
  static const char *const kNames[] = {
      "aten::empty",       "aten::empty_strided", "aten::empty_like", "aten::view",
      "aten::as_strided",  "aten::t",             "aten::transpose",  "aten::narrow",
      "aten::slice",       "aten::select",        "aten::unsqueeze",  "aten::squeeze",
      "aten::expand",      "aten::reshape",       "aten::_reshape_alias", "aten::resize_",
      "aten::detach",      "aten::alias",         "aten::permute",    "aten::contiguous",
      "aten::lift_fresh",  "aten::_unsafe_view",  "aten::result_type", "aten::is_nonzero",
      "aten::size",        "aten::stride",        "aten::numel",      "aten::dim",
      "aten::item",        "aten::_local_scalar_dense", "aten::set_",  "aten::detach_",
      "aten::requires_grad_", "aten::view_as",    "aten::expand_as",  "aten::to",
      "aten::_to_copy_noop", "aten::chunk",       "aten::split",      "aten::unbind",
      "aten::split_with_sizes", "aten::flatten",  "aten::_has_compatible_shallow_copy_type",
  };
  for (const char *k : kNames)
    if (std::strcmp(name, k) == 0) return true;
  return false;
}

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction &) {
  g_ops.fetch_add(1, std::memory_order_relaxed);
  if (!tl_has_child.empty()) tl_has_child.back() = 1;
  tl_has_child.push_back(0);
  return nullptr;
}

void on_exit(const at::RecordFunction &fn, at::ObserverContext *) {
  if (tl_has_child.empty()) return;
  const bool leaf = tl_has_child.back() == 0;
  tl_has_child.pop_back();
  if (leaf) {
    g_leaf.fetch_add(1, std::memory_order_relaxed);
    if (!metadata_only(fn.name())) g_kernels.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace

extern "C" {

cgt_status cgt_unet_step_new(int64_t input_dim, const int64_t *hidden, int32_t nhidden,
                             const cgt_tensor *params, const cgt_tensor *grads, int32_t nparams,
                             cgt_tensor freqs, cgt_tensor sqrt_ab, cgt_tensor sqrt_1m_ab,
                             cgt_tensor timestep_map, int32_t backend,
                             cgt_unet_step *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = nullptr;
  if (input_dim <= 0 || hidden == nullptr || nhidden < 2)
    throw cgt::invalid("unet_step: need an input width and at least two hidden widths");
  if (params == nullptr || grads == nullptr || nparams <= 0)
    throw cgt::invalid("unet_step: parameters and gradients are required");
  if (backend < CGT_FUSED_AUTO || backend > CGT_FUSED_ATEN)
    throw cgt::invalid("unet_step: unknown backend " + std::to_string(backend));
  auto s = std::make_unique<Step>();
  s->D = input_dim;
  for (int32_t i = 0; i < nhidden; i++) {
    if (hidden[i] <= 0) throw cgt::invalid("unet_step: hidden widths must be positive");
    s->H.push_back(hidden[i]);
  }
  s->E = s->H[0];
  s->F = 2 * s->H[1];
  if (s->E % 2 != 0) throw cgt::invalid("unet_step: the time-embedding width must be even");
  for (int32_t i = 0; i < nparams; i++) {
    s->params.push_back(T(params[i], "parameter"));
    s->grads.push_back(T(grads[i], "gradient"));
  }
  layout(*s);
  const at::Device dev = s->params[0].device();
  at::Tensor fr = T(freqs, "freqs"), ab = T(sqrt_ab, "sqrt_ab"), bb = T(sqrt_1m_ab, "sqrt_1m_ab"),
             tm = T(timestep_map, "timestep_map");
  if (fr.numel() != s->E / 2 || ab.dim() != 1 || !ab.sizes().equals(bb.sizes()) ||
      !ab.sizes().equals(tm.sizes()) || ab.numel() == 0)
    throw cgt::invalid("unet_step: freqs must have E/2 entries and the schedule arrays one per step");
  {
    c10::NoGradGuard ng;
    s->T = ab.numel();
    s->sqrt_ab = ab.to(dev, at::kFloat).contiguous();
    s->sqrt_1m_ab = bb.to(dev, at::kFloat).contiguous();
    // The embedding of every schedule step, computed as the autograd path
    // computes it (cellunet.Model.TimestepEmbedding), on the device.
    at::Tensor args = tm.to(dev, at::kFloat).unsqueeze(1).mul(fr.to(dev, at::kFloat).reshape({1, -1}));
    s->table = at::cat({args.cos(), args.sin()}, 1).contiguous();
  }
  const bool want_cpu = backend == CGT_FUSED_CPU || (backend == CGT_FUSED_AUTO && dev.is_cpu());
  if (want_cpu && !dev.is_cpu())
    throw cgt::invalid("unet_step: the CPU backend needs CPU tensors; use the ATen backend on " +
                       dev.str());
  s->cpu = want_cpu;
  if (s->cpu) s->gemm.f = cgt::fused::find_sgemm();
  *out = s.release();
  CGT_CATCH
}

void cgt_unet_step_free(cgt_unet_step s) noexcept { delete s; }

cgt_status cgt_unet_step_reserve(cgt_unet_step s, int64_t rows) noexcept {
  CGT_TRY
  if (s == nullptr) throw cgt::invalid("nil unet_step handle");
  if (rows <= 0) throw cgt::invalid("unet_step: rows must be positive");
  if (!s->cpu) {
    s->rows = rows;  // the ATen backend allocates as it goes
    return cgt::ok();
  }
  if (s->rows == rows) return cgt::ok();
  reserve_cpu(*s, rows);
  CGT_CATCH
}

cgt_status cgt_unet_step_run(cgt_unet_step s, cgt_tensor data, cgt_tensor index, cgt_tensor t,
                             cgt_tensor noise, cgt_tensor weights, double coef,
                             int32_t accumulate, cgt_tensor mse, cgt_tensor log_acc,
                             const cgt_fused_update *update) noexcept {
  CGT_TRY
  if (s == nullptr) throw cgt::invalid("nil unet_step handle");
  c10::NoGradGuard ng;
  Batch b;
  b.data = T(data, "data");
  b.index = cgt::opt(index);
  b.t = T(t, "t");
  b.noise = T(noise, "noise");
  b.w = T(weights, "weights");
  b.mse = T(mse, "mse");
  b.log = cgt::opt(log_acc);
  b.coef = coef;
  b.accumulate = accumulate != 0;
  b.n = b.t.numel();
  const at::Device dev = s->params[0].device();
  auto bad = [&](const at::Tensor &x, at::ScalarType st, std::initializer_list<int64_t> shape) {
    return x.device() != dev || x.scalar_type() != st || !x.is_contiguous() || !x.sizes().equals(shape);
  };
  if (b.n <= 0 || b.t.dim() != 1) throw cgt::invalid("unet_step: t must be a non-empty int64 [n]");
  if (b.data.dim() != 2 || b.data.size(1) != s->D || b.data.device() != dev ||
      b.data.scalar_type() != at::kFloat || !b.data.is_contiguous())
    throw cgt::invalid("unet_step: data must be contiguous float32 [N," + std::to_string(s->D) +
                       "] on the parameters' device");
  if (b.index.defined() ? bad(b.index, at::kLong, {b.n}) : b.data.size(0) != b.n)
    throw cgt::invalid("unet_step: index must be int64 [n] (or absent with data [n,D])");
  if (bad(b.t, at::kLong, {b.n}) || bad(b.noise, at::kFloat, {b.n, s->D}) ||
      bad(b.w, at::kFloat, {b.n}) || bad(b.mse, at::kFloat, {b.n}))
    throw cgt::invalid("unet_step: t int64 [n], noise float32 [n,D], weights and mse float32 [n], "
                       "contiguous on the parameters' device");
  if (b.log.defined() && (b.log.device() != dev || b.log.scalar_type() != at::kDouble ||
                          b.log.numel() != 15 || !b.log.is_contiguous()))
    throw cgt::invalid("unet_step: log_acc must be contiguous float64 [15]");
  if (update != nullptr) {
    if (!s->cpu) throw cgt::invalid("unet_step: updating runs need the CPU backend");
    if (b.accumulate) throw cgt::invalid("unet_step: an updating run cannot accumulate gradients");
    s->upd.prepare(*update, s->params, s->max_numel);
  }
  struct Reset {  // an interrupted run adds no norms and leaves the updater off
    Step &s;
    ~Reset() { s.upd.on = false; }
  } reset{*s};
  if (s->cpu) {
    if (s->rows < b.n)
      throw cgt::invalid("unet_step: " + std::to_string(b.n) + " rows but the workspace holds " +
                         std::to_string(s->rows) + " (call reserve)");
    run_cpu(*s, b);
  } else {
    run_aten(*s, b);
  }
  s->upd.finish();
  CGT_CATCH
}

cgt_status cgt_unet_step_info(cgt_unet_step s, cgt_fused_step_stats *out) noexcept {
  CGT_TRY
  if (s == nullptr || out == nullptr) throw cgt::invalid("nil unet_step handle or out pointer");
  out->backend = s->cpu ? CGT_FUSED_CPU : CGT_FUSED_ATEN;
  out->rows = s->rows;
  out->workspace_bytes = s->ws.defined() ? static_cast<int64_t>(s->ws.nbytes()) : 0;
  out->table_bytes = static_cast<int64_t>(s->table.nbytes() + s->sqrt_ab.nbytes() + s->sqrt_1m_ab.nbytes());
  out->blas = s->cpu && s->gemm.f != nullptr;
  out->gemms_last_run = s->gemm.calls;
  CGT_CATCH
}

cgt_status cgt_unet_step_workspace_bytes(cgt_unet_step s, int64_t rows, int64_t *bytes) noexcept {
  CGT_TRY
  if (s == nullptr || bytes == nullptr) throw cgt::invalid("nil unet_step handle or out pointer");
  if (rows <= 0) throw cgt::invalid("unet_step: rows must be positive");
  *bytes = s->cpu ? workspace_bytes(*s, rows) : 0;
  CGT_CATCH
}

cgt_status cgt_unet_step_replay_gemms(cgt_unet_step s, int64_t reps) noexcept {
  CGT_TRY
  if (s == nullptr) throw cgt::invalid("nil unet_step handle");
  if (!s->cpu || s->gemm.trace.empty())
    throw cgt::invalid("unet_step: replay needs a run of the CPU backend first");
  if (s->rows == 0) throw cgt::invalid("unet_step: no workspace");
  s->gemm.replay(reps);
  CGT_CATCH
}

cgt_status cgt_random_int_(cgt_tensor t, int64_t low, int64_t high, cgt_generator gen) noexcept {
  CGT_TRY
  if (high <= low) throw cgt::invalid("random_int_: need low < high");
  c10::NoGradGuard ng;
  T(t, "tensor").random_(low, high, cgt::gen(gen));
  CGT_CATCH
}

cgt_status cgt_op_counter_start(void) noexcept {
  CGT_TRY
  if (g_handle.load() != 0) throw cgt::invalid("op counter already running");
  g_ops = 0;
  g_leaf = 0;
  g_kernels = 0;
  auto h = at::addGlobalCallback(
      at::RecordFunctionCallback(&on_enter, &on_exit).scopes({at::RecordScope::FUNCTION}));
  g_handle.store(static_cast<uint64_t>(h));
  CGT_CATCH
}

cgt_status cgt_op_counter_stop(int64_t *ops, int64_t *leaf_ops, int64_t *kernels) noexcept {
  CGT_TRY
  const uint64_t h = g_handle.exchange(0);
  if (h == 0) throw cgt::invalid("op counter not running");
  at::removeCallback(static_cast<at::CallbackHandle>(h));
  if (ops) *ops = g_ops.load();
  if (leaf_ops) *leaf_ops = g_leaf.load();
  if (kernels) *kernels = g_kernels.load();
  CGT_CATCH
}

}  // extern "C"
