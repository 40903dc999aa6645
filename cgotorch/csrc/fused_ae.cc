// The fused autoencoder training step (scDiffusion's VAE_train.py): forward,
// MSE reconstruction loss and backward of the whole network written out by
// hand over a workspace allocated once, as fused_unet.cc does for Cell_Unet.
//
// Architecture (../../../shared/spec/scdiffusion.md §5, cellunet/autoencoder):
// G genes, hidden widths H (L of them; the decoder uses them reversed),
// latent width Z.
//
//   encoder block i: a = PReLU_i(BN_i(a·Wᵢᵀ + bᵢ))         (a_0 = x)
//   z = a·W_zᵀ + b_z;  ẑ = z / max(‖z‖₂, 1e-12)            (row-wise)
//   decoder block j: a = PReLU_j(BN_j(a·Wⱼᵀ + bⱼ))         (a_0 = ẑ)
//   out = a·W_oᵀ + b_o;  loss = mean((out − x)²) over n·G
//
// BatchNorm in train mode: batch mean and biased variance (accumulated in
// double, as libtorch's CPU kernel does), running statistics updated with
// momentum and the unbiased variance, num_batches_tracked incremented. PReLU
// has one weight per block. Dropout is not covered (p > 0 uses autograd).
//
// Row-major: activations [rows, width], Linear weights [out, in]. Matrix
// products by the BLAS (fused_common.h); the elementwise passes are
// column passes (BatchNorm statistics and parameter gradients, in parallel
// over features) and row passes, all independent of the thread count.
#include <cmath>
#include <memory>

#include "common.h"
#include "fused_common.h"

using cgt::T;
using cgt::fused::cols_parallel;
using cgt::fused::column_sums_parallel;
using cgt::fused::rows_parallel;

namespace {

constexpr int64_t kCols = 32;  // columns per block of a column pass

// Forward statistics of columns [c0, c1) of H [n, ld]: adds the bias (in
// place), then the batch mean and biased variance in double; writes mean
// and 1/√(var+eps) and updates the running statistics (momentum; unbiased
// variance), as libtorch's batch_norm_cpu does.
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off"))) void bn_stats(
    int64_t n, int64_t ld, int64_t c0, int64_t c1, float *__restrict H, const float *__restrict bias,
    float *__restrict mean, float *__restrict rstd, float *__restrict rm, float *__restrict rv,
    double momentum, double eps) {
  for (int64_t cb = c0; cb < c1; cb += kCols) {
    const int64_t nb = std::min(c1, cb + kCols) - cb;
    double s[kCols] = {0}, v[kCols] = {0}, m[kCols];
    for (int64_t r = 0; r < n; r++) {
      float *h = H + r * ld + cb;
      for (int64_t j = 0; j < nb; j++) {
        const float x = h[j] + bias[cb + j];
        h[j] = x;
        s[j] += x;
      }
    }
    for (int64_t j = 0; j < nb; j++) m[j] = s[j] / static_cast<double>(n);
    for (int64_t r = 0; r < n; r++) {
      const float *h = H + r * ld + cb;
      for (int64_t j = 0; j < nb; j++) {
        const double d = h[j] - m[j];
        v[j] += d * d;
      }
    }
    for (int64_t j = 0; j < nb; j++) {
      const int64_t c = cb + j;
      mean[c] = static_cast<float>(m[j]);
      rstd[c] = static_cast<float>(1.0 / std::sqrt(v[j] / static_cast<double>(n) + eps));
      rm[c] = static_cast<float>(momentum * m[j] + (1 - momentum) * rm[c]);
      rv[c] = static_cast<float>(momentum * (v[j] / static_cast<double>(n - 1)) + (1 - momentum) * rv[c]);
    }
  }
}

// One row of BatchNorm + PReLU after the statistics: x̂ = (h − mean)·rstd
// (stored over h), y = x̂·γ + β, a = y > 0 ? y : α·y.
__attribute__((target_clones("avx512f", "avx2", "default"))) void bn_prelu_row(
    int64_t w, float *__restrict h, const float *__restrict mean, const float *__restrict rstd,
    const float *__restrict gamma, const float *__restrict beta, float alpha, float *__restrict a) {
  for (int64_t c = 0; c < w; c++) {
    const float xh = (h[c] - mean[c]) * rstd[c];
    h[c] = xh;
    const float y = xh * gamma[c] + beta[c];
    a[c] = y > 0.0f ? y : alpha * y;
  }
}

// Backward column pass of PReLU + BatchNorm over columns [c0, c1), from the
// output gradient ga and the saved x̂: with y = x̂·γ + β and
// dy = ga·(y > 0 ? 1 : α), the parameter gradients dβ = Σ dy, dγ = Σ dy·x̂
// (double), the PReLU weight's per-column part Σ ga·y·[y ≤ 0], and the
// constants of the input gradient dh = k1·(dy − k2 − x̂·k3): k1 = rstd·γ,
// k2 = dβ/n, k3 = dγ/n.
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off"))) void bn_prelu_grads(
    int64_t n, int64_t ld, int64_t c0, int64_t c1, const float *__restrict ga,
    const float *__restrict xh, const float *__restrict gamma, const float *__restrict beta,
    const float *__restrict rstd, float alpha, float *__restrict dgamma, float *__restrict dbeta,
    double *__restrict dalpha, float *__restrict k1, float *__restrict k2, float *__restrict k3) {
  for (int64_t cb = c0; cb < c1; cb += kCols) {
    const int64_t nb = std::min(c1, cb + kCols) - cb;
    double sb[kCols] = {0}, sg[kCols] = {0}, sa[kCols] = {0};
    for (int64_t r = 0; r < n; r++) {
      const float *g = ga + r * ld + cb, *x = xh + r * ld + cb;
      for (int64_t j = 0; j < nb; j++) {
        const float y = x[j] * gamma[cb + j] + beta[cb + j];
        const bool pos = y > 0.0f;
        const float dy = pos ? g[j] : alpha * g[j];
        sb[j] += dy;
        sg[j] += static_cast<double>(dy) * x[j];
        sa[j] += pos ? 0.0 : static_cast<double>(g[j]) * y;
      }
    }
    for (int64_t j = 0; j < nb; j++) {
      const int64_t c = cb + j;
      dbeta[c] = static_cast<float>(sb[j]);
      dgamma[c] = static_cast<float>(sg[j]);
      dalpha[c] = sa[j];
      k1[c] = rstd[c] * gamma[c];
      k2[c] = static_cast<float>(sb[j] / static_cast<double>(n));
      k3[c] = static_cast<float>(sg[j] / static_cast<double>(n));
    }
  }
}

// One row of the BatchNorm input gradient: dh = k1·(dy − k2 − x̂·k3).
__attribute__((target_clones("avx512f", "avx2", "default"))) void bn_prelu_input_grad_row(
    int64_t w, const float *__restrict ga, const float *__restrict xh,
    const float *__restrict gamma, const float *__restrict beta, float alpha,
    const float *__restrict k1, const float *__restrict k2, const float *__restrict k3,
    float *__restrict dh) {
  for (int64_t c = 0; c < w; c++) {
    const float y = xh[c] * gamma[c] + beta[c];
    const float dy = y > 0.0f ? ga[c] : alpha * ga[c];
    dh[c] = k1[c] * (dy - k2[c] - xh[c] * k3[c]);
  }
}

// One row of the latent: z += b_z; ẑ = z / max(‖z‖, 1e-12). Returns the
// divisor (the clamped norm) and whether the clamp was inactive.
__attribute__((target_clones("avx512f", "avx2", "default"))) float normalize_row(
    int64_t w, float *__restrict z, const float *__restrict b, float *__restrict zn) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= w; i += 16)
    for (int j = 0; j < 16; j++) {
      const float v = z[i + j] + b[i + j];
      z[i + j] = v;
      acc[j] += v * v;
    }
  for (; i < w; i++) {
    const float v = z[i] + b[i];
    z[i] = v;
    acc[0] += v * v;
  }
  float s = 0;
  for (int j = 0; j < 16; j++) s += acc[j];
  const float d = std::max(std::sqrt(s), 1e-12f);
  for (i = 0; i < w; i++) zn[i] = z[i] / d;
  return d;
}

// One row of the latent's backward: dz = (dẑ − ẑ·(ẑ·dẑ))/d when the norm
// was not clamped, dẑ/d otherwise (in place over dẑ).
__attribute__((target_clones("avx512f", "avx2", "default"))) void normalize_backward_row(
    int64_t w, float *__restrict g, const float *__restrict zn, float d, bool clamped) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= w; i += 16)
    for (int j = 0; j < 16; j++) acc[j] += zn[i + j] * g[i + j];
  for (; i < w; i++) acc[0] += zn[i] * g[i];
  float dot = 0;
  for (int j = 0; j < 16; j++) dot += acc[j];
  if (clamped) dot = 0;
  for (i = 0; i < w; i++) g[i] = (g[i] - zn[i] * dot) / d;
}

// One row of the loss: d = out + b − x; returns Σ d² (float lanes, double
// sum); writes the gradient k·d over out.
__attribute__((target_clones("avx512f", "avx2", "default"))) double mse_row(
    int64_t w, float *__restrict out, const float *__restrict b, const float *__restrict x, float k) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= w; i += 16)
    for (int j = 0; j < 16; j++) {
      const float d = (out[i + j] + b[i + j]) - x[i + j];
      acc[j] += d * d;
      out[i + j] = k * d;
    }
  double s = 0;
  for (; i < w; i++) {
    const float d = (out[i] + b[i]) - x[i];
    s += static_cast<double>(d) * d;
    out[i] = k * d;
  }
  for (int j = 0; j < 16; j++) s += acc[j];
  return s;
}

struct Linear {
  int64_t in, out;
  int32_t w, b;
};

struct Block {
  Linear lin;
  int32_t gamma, beta, alpha;  // parameter indices
  int32_t rm, rv, nbt;         // buffer indices
};

}  // namespace

struct cgt_ae_step_s {
  int64_t G = 0, Z = 0;
  std::vector<int64_t> H;
  double momentum = 0.1, eps = 1e-5;
  std::vector<Block> enc, dec;
  Linear zlin{}, olin{};
  std::vector<at::Tensor> params, grads, buffers;
  cgt::fused::Gemm gemm;
  cgt::fused::Updater upd;
  int64_t max_w = 0, max_numel = 0;

  int64_t rows = 0;
  at::Tensor ws;
  float *x = nullptr, *z = nullptr, *zn = nullptr, *nrm = nullptr, *out = nullptr, *ga = nullptr,
        *gb = nullptr, *gz = nullptr, *dh = nullptr, *mean = nullptr, *k1 = nullptr, *k2 = nullptr,
        *k3 = nullptr, *scratch = nullptr;
  std::vector<float *> xh, act, rstd;  // per block, encoder then decoder
  std::vector<double> dalpha, row_loss;

  float *P(int32_t i) { return params[static_cast<size_t>(i)].data_ptr<float>(); }
  float *G_(int32_t i) { return grads[static_cast<size_t>(i)].data_ptr<float>(); }
};

namespace {

using AE = cgt_ae_step_s;

void layout(AE &s) {
  int32_t k = 0, kb = 0;
  auto lin = [&](int64_t in, int64_t out) {
    Linear l{in, out, k, k + 1};
    k += 2;
    return l;
  };
  auto block = [&](int64_t in, int64_t out) {
    Block b{};
    b.lin = lin(in, out);
    b.gamma = k++;
    b.beta = k++;
    b.alpha = k++;
    b.rm = kb++;
    b.rv = kb++;
    b.nbt = kb++;
    return b;
  };
  const size_t L = s.H.size();
  int64_t in = s.G;
  for (size_t i = 0; i < L; i++) {
    s.enc.push_back(block(in, s.H[i]));
    in = s.H[i];
  }
  s.zlin = lin(in, s.Z);
  in = s.Z;
  for (size_t i = L; i-- > 0;) {
    s.dec.push_back(block(in, s.H[i]));
    in = s.H[i];
  }
  s.olin = lin(in, s.G);
  if (static_cast<size_t>(k) != s.params.size() || static_cast<size_t>(kb) != s.buffers.size())
    throw cgt::invalid("ae_step: " + std::to_string(s.params.size()) + " parameters and " +
                       std::to_string(s.buffers.size()) + " buffers given, the architecture has " +
                       std::to_string(k) + " and " + std::to_string(kb));
  auto chk = [&](const at::Tensor &t, std::initializer_list<int64_t> shape, at::ScalarType st,
                 const std::string &what) {
    if (!t.is_cpu() || !t.is_contiguous() || t.scalar_type() != st || !t.sizes().equals(shape))
      throw cgt::invalid("ae_step: " + what + " must be a contiguous CPU tensor of shape " +
                         c10::str(at::IntArrayRef(shape)) + " and dtype " + c10::toString(st) +
                         ", got " + c10::str(t.sizes()) + " " + c10::toString(t.scalar_type()));
  };
  auto param = [&](int32_t i, std::initializer_list<int64_t> shape) {
    chk(s.params[static_cast<size_t>(i)], shape, at::kFloat, "parameter " + std::to_string(i));
    chk(s.grads[static_cast<size_t>(i)], shape, at::kFloat, "gradient " + std::to_string(i));
  };
  auto lin_chk = [&](const Linear &l) {
    param(l.w, {l.out, l.in});
    param(l.b, {l.out});
  };
  for (const auto *bs : {&s.enc, &s.dec})
    for (const Block &b : *bs) {
      lin_chk(b.lin);
      param(b.gamma, {b.lin.out});
      param(b.beta, {b.lin.out});
      param(b.alpha, {1});
      chk(s.buffers[static_cast<size_t>(b.rm)], {b.lin.out}, at::kFloat, "running_mean");
      chk(s.buffers[static_cast<size_t>(b.rv)], {b.lin.out}, at::kFloat, "running_var");
      chk(s.buffers[static_cast<size_t>(b.nbt)], {}, at::kLong, "num_batches_tracked");
      s.max_w = std::max(s.max_w, b.lin.out);
    }
  lin_chk(s.zlin);
  lin_chk(s.olin);
  s.max_w = std::max(s.max_w, s.Z);
  for (const at::Tensor &p : s.params) s.max_numel = std::max(s.max_numel, p.numel());
}

void reserve(AE &s, int64_t R) {
  s.ws = at::Tensor();
  s.rows = 0;
  const int64_t W = s.max_w;
  at::Tensor ws = cgt::fused::carve_workspace([&](auto take) {
    s.x = take(R * s.G);
    s.out = take(R * s.G);
    s.z = take(R * s.Z);
    s.zn = take(R * s.Z);
    s.nrm = take(R);
    s.ga = take(R * W);
    s.gb = take(R * W);
    s.gz = take(R * s.Z);
    s.dh = take(R * W);
    s.mean = take(W);
    s.k1 = take(W);
    s.k2 = take(W);
    s.k3 = take(W);
    s.scratch = take(std::max(s.max_numel, 2 * W));
    s.xh.clear();
    s.act.clear();
    s.rstd.clear();
    for (const auto *bs : {&s.enc, &s.dec})
      for (const Block &b : *bs) {
        s.xh.push_back(take(R * b.lin.out));
        s.act.push_back(take(R * b.lin.out));
        s.rstd.push_back(take(b.lin.out));
      }
  });
  s.dalpha.resize(static_cast<size_t>(W));
  s.row_loss.resize(static_cast<size_t>(R));
  s.ws = std::move(ws);
  s.rows = R;
}

float *grad_dst(AE &s, int32_t i, int64_t slot = 0) { return s.upd.on ? s.scratch + slot : s.G_(i); }

void grad_ready(AE &s, int32_t i, float *g) {
  if (s.upd.on) s.upd.apply(s.params[static_cast<size_t>(i)], g);
}

// Linear + BatchNorm + PReLU forward of block k (index into xh/act/rstd).
void block_forward(AE &s, const Block &b, size_t k, int64_t n, const float *in) {
  const int64_t w = b.lin.out;
  float *h = s.xh[k];
  s.gemm(false, true, n, w, b.lin.in, in, b.lin.in, s.P(b.lin.w), b.lin.in, 0.0f, h, w);
  float *rm = s.buffers[static_cast<size_t>(b.rm)].data_ptr<float>();
  float *rv = s.buffers[static_cast<size_t>(b.rv)].data_ptr<float>();
  const float *bias = s.P(b.lin.b);
  float *mean = s.mean, *rstd = s.rstd[k];
  cols_parallel(w, n, [&](int64_t c0, int64_t c1) {
    bn_stats(n, w, c0, c1, h, bias, mean, rstd, rm, rv, s.momentum, s.eps);
  });
  s.buffers[static_cast<size_t>(b.nbt)].data_ptr<int64_t>()[0] += 1;
  const float *g = s.P(b.gamma), *be = s.P(b.beta);
  const float alpha = s.P(b.alpha)[0];
  float *a = s.act[k];
  rows_parallel(n, w, [&](int64_t r) { bn_prelu_row(w, h + r * w, mean, rstd, g, be, alpha, a + r * w); });
}

// Backward of block k from its output gradient go; the input gradient goes
// to gin (unless null). Each weight's input gradient is taken before its
// own update.
void block_backward(AE &s, const Block &b, size_t k, int64_t n, const float *in, const float *go,
                    float *gin) {
  const int64_t w = b.lin.out;
  const float *xh = s.xh[k], *rstd = s.rstd[k], *g = s.P(b.gamma), *be = s.P(b.beta);
  const float alpha = s.P(b.alpha)[0];
  float *dgamma = grad_dst(s, b.gamma), *dbeta = grad_dst(s, b.beta, w);
  double *dalpha = s.dalpha.data();
  cols_parallel(w, n, [&](int64_t c0, int64_t c1) {
    bn_prelu_grads(n, w, c0, c1, go, xh, g, be, rstd, alpha, dgamma, dbeta, dalpha, s.k1, s.k2, s.k3);
  });
  double da = 0;
  for (int64_t c = 0; c < w; c++) da += dalpha[c];
  float *dh = s.dh;
  rows_parallel(n, w, [&](int64_t r) {
    bn_prelu_input_grad_row(w, go + r * w, xh + r * w, g, be, alpha, s.k1, s.k2, s.k3, dh + r * w);
  });
  grad_ready(s, b.gamma, dgamma);
  grad_ready(s, b.beta, dbeta);
  float *dal = grad_dst(s, b.alpha);
  dal[0] = static_cast<float>(da);
  grad_ready(s, b.alpha, dal);
  float *db = grad_dst(s, b.lin.b);
  column_sums_parallel(n, w, dh, nullptr, db, nullptr, false);
  grad_ready(s, b.lin.b, db);
  if (gin != nullptr) s.gemm(false, false, n, b.lin.in, w, dh, w, s.P(b.lin.w), b.lin.in, 0.0f, gin, b.lin.in);
  float *dw = grad_dst(s, b.lin.w);
  s.gemm(true, false, w, b.lin.in, n, dh, w, in, b.lin.in, 0.0f, dw, b.lin.in);
  grad_ready(s, b.lin.w, dw);
}

// Linear layer backward (no activation): bias, input and weight gradients.
void linear_backward(AE &s, const Linear &l, int64_t n, const float *in, const float *go, float *gin) {
  float *db = grad_dst(s, l.b);
  column_sums_parallel(n, l.out, go, nullptr, db, nullptr, false);
  grad_ready(s, l.b, db);
  s.gemm(false, false, n, l.in, l.out, go, l.out, s.P(l.w), l.in, 0.0f, gin, l.in);
  float *dw = grad_dst(s, l.w);
  s.gemm(true, false, l.out, l.in, n, go, l.out, in, l.in, 0.0f, dw, l.in);
  grad_ready(s, l.w, dw);
}

double run(AE &s, const float *xin, int64_t n) {
  s.gemm.start_run();
  const int64_t G = s.G, Z = s.Z;
  std::memcpy(s.x, xin, static_cast<size_t>(n * G) * sizeof(float));
  // Encoder.
  const size_t L = s.enc.size();
  const float *a = s.x;
  for (size_t i = 0; i < L; i++) {
    block_forward(s, s.enc[i], i, n, a);
    a = s.act[i];
  }
  s.gemm(false, true, n, Z, s.zlin.in, a, s.zlin.in, s.P(s.zlin.w), s.zlin.in, 0.0f, s.z, Z);
  {
    const float *b = s.P(s.zlin.b);
    rows_parallel(n, Z, [&](int64_t r) { s.nrm[r] = normalize_row(Z, s.z + r * Z, b, s.zn + r * Z); });
  }
  // Decoder.
  a = s.zn;
  for (size_t j = 0; j < L; j++) {
    block_forward(s, s.dec[j], L + j, n, a);
    a = s.act[L + j];
  }
  const int64_t H0 = s.olin.in;
  s.gemm(false, true, n, G, H0, a, H0, s.P(s.olin.w), H0, 0.0f, s.out, G);
  // Loss; its gradient over out.
  const float k = static_cast<float>(2.0 / (static_cast<double>(n) * static_cast<double>(G)));
  {
    const float *b = s.P(s.olin.b);
    rows_parallel(n, G, [&](int64_t r) {
      s.row_loss[static_cast<size_t>(r)] = mse_row(G, s.out + r * G, b, s.x + r * G, k);
    });
  }
  double loss = 0;
  for (int64_t r = 0; r < n; r++) loss += s.row_loss[static_cast<size_t>(r)];
  loss /= static_cast<double>(n) * static_cast<double>(G);
  // ---- backward: ga and gb alternate as the running activation gradient.
  float *go = s.ga, *gi = s.gb;
  linear_backward(s, s.olin, n, a, s.out, go);
  for (size_t j = L; j-- > 0;) {
    const float *in = j == 0 ? s.zn : s.act[L + j - 1];
    float *dst = j == 0 ? s.gz : gi;
    block_backward(s, s.dec[j], L + j, n, in, go, dst);
    std::swap(go, gi);
  }
  rows_parallel(n, Z, [&](int64_t r) {
    normalize_backward_row(Z, s.gz + r * Z, s.zn + r * Z, s.nrm[r], s.nrm[r] <= 1e-12f);
  });
  linear_backward(s, s.zlin, n, s.act[L - 1], s.gz, go);
  for (size_t i = L; i-- > 0;) {
    const float *in = i == 0 ? s.x : s.act[i - 1];
    block_backward(s, s.enc[i], i, n, in, go, i == 0 ? nullptr : gi);
    std::swap(go, gi);
  }
  return loss;
}

}  // namespace

extern "C" {

cgt_status cgt_ae_step_new(int64_t genes, const int64_t *hidden, int32_t nhidden, int64_t latent,
                           const cgt_tensor *params, const cgt_tensor *grads, int32_t nparams,
                           const cgt_tensor *buffers, int32_t nbuffers, double bn_momentum,
                           double bn_eps, cgt_ae_step *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = nullptr;
  if (genes <= 0 || latent <= 0 || hidden == nullptr || nhidden < 1)
    throw cgt::invalid("ae_step: need genes, a latent width and at least one hidden width");
  if (params == nullptr || grads == nullptr || buffers == nullptr || nparams <= 0 || nbuffers <= 0)
    throw cgt::invalid("ae_step: parameters, gradients and buffers are required");
  auto s = std::make_unique<AE>();
  s->G = genes;
  s->Z = latent;
  s->momentum = bn_momentum;
  s->eps = bn_eps;
  for (int32_t i = 0; i < nhidden; i++) {
    if (hidden[i] <= 0) throw cgt::invalid("ae_step: hidden widths must be positive");
    s->H.push_back(hidden[i]);
  }
  for (int32_t i = 0; i < nparams; i++) {
    s->params.push_back(T(params[i], "parameter"));
    s->grads.push_back(T(grads[i], "gradient"));
  }
  for (int32_t i = 0; i < nbuffers; i++) s->buffers.push_back(T(buffers[i], "buffer"));
  layout(*s);
  s->gemm.f = cgt::fused::find_sgemm();
  *out = s.release();
  CGT_CATCH
}

void cgt_ae_step_free(cgt_ae_step s) noexcept { delete s; }

cgt_status cgt_ae_step_reserve(cgt_ae_step s, int64_t rows) noexcept {
  CGT_TRY
  if (s == nullptr) throw cgt::invalid("nil ae_step handle");
  if (rows < 2) throw cgt::invalid("ae_step: train-mode BatchNorm needs at least 2 rows");
  if (s->rows != rows) reserve(*s, rows);
  CGT_CATCH
}

cgt_status cgt_ae_step_run(cgt_ae_step s, const float *x, int64_t n, cgt_tensor loss_acc,
                           const cgt_fused_update *update) noexcept {
  CGT_TRY
  if (s == nullptr) throw cgt::invalid("nil ae_step handle");
  if (x == nullptr) throw cgt::invalid("ae_step: nil input");
  if (n < 2 || n > s->rows)
    throw cgt::invalid("ae_step: " + std::to_string(n) + " rows, the workspace holds " +
                       std::to_string(s->rows) + " (and BatchNorm needs at least 2)");
  at::Tensor acc = cgt::opt(loss_acc);
  if (acc.defined() && (!acc.is_cpu() || acc.scalar_type() != at::kDouble || acc.numel() != 1))
    throw cgt::invalid("ae_step: loss_acc must be a float64 CPU scalar");
  c10::NoGradGuard ng;
  if (update != nullptr) s->upd.prepare(*update, s->params, s->max_numel);
  struct Reset {
    AE &s;
    ~Reset() { s.upd.on = false; }
  } reset{*s};
  const double loss = run(*s, x, n);
  s->upd.finish();
  if (acc.defined()) acc.data_ptr<double>()[0] += loss;
  CGT_CATCH
}

cgt_status cgt_ae_step_info(cgt_ae_step s, cgt_fused_step_stats *out) noexcept {
  CGT_TRY
  if (s == nullptr || out == nullptr) throw cgt::invalid("nil ae_step handle or out pointer");
  out->backend = CGT_FUSED_CPU;
  out->blas = s->gemm.f != nullptr;
  out->rows = s->rows;
  out->workspace_bytes = s->ws.defined() ? static_cast<int64_t>(s->ws.nbytes()) : 0;
  out->table_bytes = 0;
  out->gemms_last_run = s->gemm.calls;
  CGT_CATCH
}

cgt_status cgt_ae_step_replay_gemms(cgt_ae_step s, int64_t reps) noexcept {
  CGT_TRY
  if (s == nullptr) throw cgt::invalid("nil ae_step handle");
  if (s->gemm.trace.empty() || s->rows == 0) throw cgt::invalid("ae_step: replay needs a run first");
  s->gemm.replay(reps);
  CGT_CATCH
}

}  // extern "C"
