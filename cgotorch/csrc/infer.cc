// Fused kernels for inference (the sampling loop): what libtorch computes
// in two passes over memory, done in one. Declared in the misc section of
// cgotorch.h.
#include <ATen/Parallel.h>

#include <cmath>

#include "common.h"

namespace {

// Vectorising floor and the clamped selects needs -fno-trapping-math (which
// libtorch itself is built with); only these kernels get it.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

// exp(x) for float x, clamped to [-87.3, 80] (results are normal floats,
// at most 5.6e34): Cephes' expf polynomial (as sse_mathfun), relative
// error below 2e-7. Written with operations GCC vectorises (floor, int
// conversion, shifts), so the loops below become SIMD code.
__attribute__((always_inline)) inline float exp_clamped(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 80.0f ? 80.0f : x;
  float fx = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  x = x - fx * 0.693359375f;
  x = x + fx * 2.12194440e-4f;
  float z = x * x;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  int32_t n = (static_cast<int32_t>(fx) + 127) << 23;
  return y * __builtin_bit_cast(float, n);
}

// 1/d for a normal float d >= 1 without a division (a vector divide costs
// as much as the rest of SiLU): a bit-level first guess, then three
// Newton steps r = r(2 − d·r), relative error below 1e-7.
__attribute__((always_inline)) inline float recip(float d) {
  float r = __builtin_bit_cast(float, 0x7EF311C3 - __builtin_bit_cast(int32_t, d));
  r = r * (2.0f - d * r);
  r = r * (2.0f - d * r);
  return r * (2.0f - d * r);
}

// ln_silu_rows normalises rows [r0, r1) of x [rows, C] over their C values
// (mean, biased variance, as torch.nn.LayerNorm), applies the affine w, b
// and SiLU, in place. A row (at most a few KiB) stays in L1 between its
// three passes, so memory sees one read and one write.
__attribute__((target_clones("avx512f", "avx2", "default"))) void ln_silu_rows(
    float *x, const float *w, const float *b, int64_t r0, int64_t r1, int64_t C, float eps) {
  for (int64_t r = r0; r < r1; r++) {
    float *row = x + r * C;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < C; j++) sum += row[j];
    const float mean = sum / static_cast<float>(C);
    float ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < C; j++) {
      float d = row[j] - mean;
      ss += d * d;
    }
    const float rstd = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
#pragma omp simd
    for (int64_t j = 0; j < C; j++) {
      float y = (row[j] - mean) * rstd * w[j] + b[j];
      // SiLU: y·σ(y) = y / (1 + e^−y). For y < −80 the clamp makes the
      // result y·1.8e-35 instead of ~0: below 1e-32 either way.
      row[j] = y * recip(1.0f + exp_clamped(-y));
    }
  }
}

#pragma GCC pop_options

}  // namespace

cgt_status cgt_layer_norm_silu_(cgt_tensor x, cgt_tensor w, cgt_tensor b, double eps) noexcept {
  CGT_TRY
  at::Tensor &X = cgt::T(x, "input");
  at::Tensor &W = cgt::T(w, "weight");
  at::Tensor &B = cgt::T(b, "bias");
  if (X.dim() < 1) throw cgt::invalid("layer_norm_silu_: the input needs at least one dimension");
  const int64_t C = X.size(-1);
  if (W.numel() != C || B.numel() != C)
    throw cgt::invalid("layer_norm_silu_: weight and bias must have the input's last dimension (" +
                       std::to_string(C) + ") elements");
  if (c10::GradMode::is_enabled() && (X.requires_grad() || W.requires_grad() || B.requires_grad()))
    throw cgt::invalid("layer_norm_silu_ is an inference kernel: call it under no-grad");
  const bool fast = X.is_cpu() && X.scalar_type() == at::kFloat && X.is_contiguous() && W.is_cpu() &&
                    W.scalar_type() == at::kFloat && W.is_contiguous() && B.is_cpu() &&
                    B.scalar_type() == at::kFloat && B.is_contiguous();
  if (!fast) {
    // Other devices and layouts: libtorch's two ops, the same result.
    at::Tensor y = at::layer_norm(X, {C}, W, B, eps, /*cudnn_enable=*/true);
    X.copy_(at::silu_(y));
  } else if (C > 0) {
    float *px = X.data_ptr<float>();
    const float *pw = W.data_ptr<float>(), *pb = B.data_ptr<float>();
    const int64_t rows = X.numel() / C;
    const float e = static_cast<float>(eps);
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / C);
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) { ln_silu_rows(px, pw, pb, r0, r1, C, e); });
  }
  CGT_CATCH
}
