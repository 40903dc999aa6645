// Shared machinery of the fused training steps; see fused_common.h.
#include "fused_common.h"

#include <dlfcn.h>

namespace cgt::fused {

sgemm_fn find_sgemm() {
  if (dlsym(RTLD_DEFAULT, "openblas_get_corename") == nullptr) return nullptr;
  return reinterpret_cast<sgemm_fn>(dlsym(RTLD_DEFAULT, "sgemm_"));
}

void Gemm::operator()(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  calls++;
  if (recording) trace.push_back(Call{ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc});
  if (M == 0 || N == 0) return;
  if (f != nullptr && std::max({M, N, K, lda, ldb, ldc}) < (int64_t{1} << 31)) {
    // Column-major view: Cᵀ[N,M] = B'ᵀ·A'ᵀ.
    const char tra = tb ? 'T' : 'N', trb = ta ? 'T' : 'N';
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
    const float one = 1.0f;
    f(&tra, &trb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
    return;
  }
  auto opt = at::TensorOptions().dtype(at::kFloat);
  at::Tensor a = ta ? at::from_blob(const_cast<float *>(A), {K, M}, {lda, 1}, opt).t()
                    : at::from_blob(const_cast<float *>(A), {M, K}, {lda, 1}, opt);
  at::Tensor b = tb ? at::from_blob(const_cast<float *>(B), {N, K}, {ldb, 1}, opt).t()
                    : at::from_blob(const_cast<float *>(B), {K, N}, {ldb, 1}, opt);
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opt);
  if (beta == 0.0f) {
    at::mm_out(c, a, b);
  } else {
    c.addmm_(a, b, beta, 1.0f);
  }
}

void Gemm::replay(int64_t reps) {
  recording = false;
  const std::vector<Call> calls_ = trace;
  for (int64_t r = 0; r < reps; r++)
    for (const Call &c : calls_) (*this)(c.ta, c.tb, c.M, c.N, c.K, c.A, c.lda, c.B, c.ldb, c.beta, c.C, c.ldc);
  recording = true;
}

__attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off"))) void column_sums(
    int64_t rows, int64_t ld, int64_t c0, int64_t c1, const float *__restrict X,
    const float *__restrict Y, float *__restrict out, float *__restrict out2, bool accumulate) {
  constexpr int64_t kB = 64;
  for (int64_t cb = c0; cb < c1; cb += kB) {
    const int64_t ce = std::min(c1, cb + kB), nb = ce - cb;
    float s[kB] = {0}, s2[kB] = {0};
    for (int64_t r = 0; r < rows; r++) {
      const float *x = X + r * ld + cb;
      for (int64_t j = 0; j < nb; j++) s[j] += x[j];
      if (Y != nullptr) {
        const float *y = Y + r * ld + cb;
        for (int64_t j = 0; j < nb; j++) s2[j] += x[j] * y[j];
      }
    }
    for (int64_t j = 0; j < nb; j++) out[cb + j] = accumulate ? out[cb + j] + s[j] : s[j];
    if (Y != nullptr)
      for (int64_t j = 0; j < nb; j++) out2[cb + j] = accumulate ? out2[cb + j] + s2[j] : s2[j];
  }
}

void Updater::prepare(const cgt_fused_update &u, const std::vector<at::Tensor> &params,
                      int64_t max_numel) {
  if (u.step < 1) throw invalid("fused update: the AdamW step is 1-based");
  if (u.nema < 0 || (u.nema > 0 && (u.emas == nullptr || u.rates == nullptr)))
    throw invalid("fused update: bad EMA list");
  const at::Tensor &p = T(u.params, "params");
  auto flat = [&](const at::Tensor &t, const char *what) {
    if (!t.is_cpu() || t.scalar_type() != at::kFloat || !t.is_contiguous() || t.numel() != p.numel())
      throw invalid(std::string("fused update: ") + what +
                    " must be contiguous float32 CPU tensors of the parameters' numel");
  };
  flat(p, "params");
  flat(T(u.exp_avg, "exp_avg"), "exp_avg");
  flat(T(u.exp_avg_sq, "exp_avg_sq"), "exp_avg_sq");
  base = p.data_ptr<float>();
  numel = p.numel();
  for (size_t i = 0; i < params.size(); i++) {
    const float *q = params[i].data_ptr<float>();
    if (q < base || q + params[i].numel() > base + numel)
      throw invalid("fused update: parameter " + std::to_string(i) + " is not a view of the flat parameters");
  }
  emas.clear();
  rates.clear();
  omr.clear();
  for (int32_t k = 0; k < u.nema; k++) {
    const at::Tensor &e = T(u.emas[k], "ema");
    flat(e, "EMA buffers");
    emas.push_back(e.data_ptr<float>());
    rates.push_back(static_cast<float>(u.rates[k]));
    omr.push_back(static_cast<float>(1 - u.rates[k]));
  }
  norms = u.sumsq != nullptr;
  sumsq = at::Tensor();
  if (norms) {
    sumsq = T(u.sumsq, "sumsq");
    if (!sumsq.is_cpu() || sumsq.scalar_type() != at::kDouble || sumsq.numel() != 2 || !sumsq.is_contiguous())
      throw invalid("fused update: sumsq must be a contiguous float64 [2] CPU tensor");
    const size_t nc = static_cast<size_t>((max_numel + kAdamWChunk - 1) / kAdamWChunk);
    part_g.resize(nc);
    part_p.resize(nc);
  }
  adamw = adamw_chunk_args(p.data_ptr<float>(), T(u.exp_avg).data_ptr<float>(),
                           T(u.exp_avg_sq).data_ptr<float>(), u.step, u.opts, 1.0, false,
                           emas.data(), rates.data(), omr.data(), emas.size());
  sum_g = sum_p = 0;
  on = true;
}

void Updater::apply(const at::Tensor &p, float *g) {
  const int64_t off = p.data_ptr<float>() - base, n = p.numel();
  const int64_t nc = (n + kAdamWChunk - 1) / kAdamWChunk;
  at::parallel_for(0, nc, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; c++) {
      const int64_t b = c * kAdamWChunk, e = std::min(n, b + kAdamWChunk);
      adamw_chunk(adamw, g + b, off + b, off + e, norms ? &part_g[static_cast<size_t>(c)] : nullptr,
                  norms ? &part_p[static_cast<size_t>(c)] : nullptr);
    }
  });
  if (norms)
    for (int64_t c = 0; c < nc; c++) {
      sum_g += part_g[static_cast<size_t>(c)];
      sum_p += part_p[static_cast<size_t>(c)];
    }
}

void Updater::finish() {
  if (on && norms) {
    double *S = sumsq.data_ptr<double>();
    S[0] += sum_g;
    S[1] += sum_p;
  }
  on = false;
}

}  // namespace cgt::fused
