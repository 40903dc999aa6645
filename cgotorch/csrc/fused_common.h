// Shared machinery of the fused training steps (fused_unet.cc, fused_ae.cc):
// matrix products straight into preallocated buffers through the process's
// BLAS, column reductions and parallel loops whose results do not depend on
// the thread count, and the AdamW (+ EMA) update applied to each parameter
// as soon as its gradient is ready.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "adamw_kernel.h"
#include "common.h"

namespace cgt::fused {

// The Fortran sgemm_ of the BLAS libtorch is linked with (Debian: OpenBLAS
// through libblas.so.3; LP64). Found only when OpenBLAS is that BLAS, so
// the integer width is known; null otherwise.
using sgemm_fn = void (*)(const char *, const char *, const int *, const int *, const int *,
                          const float *, const float *, const int *, const float *, const int *,
                          const float *, float *, const int *);
sgemm_fn find_sgemm();

// Row-major C[M,N] = A'·B' + beta·C with A' = A or Aᵀ (ta), B' likewise;
// lda/ldb/ldc are row strides; beta 0 never reads C. Calls sgemm_ directly
// when found, libtorch's mm_out on views of the buffers otherwise.
struct Gemm {
  sgemm_fn f = nullptr;
  int64_t calls = 0;  // matrix products issued (per-run statistics)
  // The last run's products, for measuring a step's matrix-product floor
  // (replay); the capacity is kept across runs.
  struct Call {
    bool ta, tb;
    int64_t M, N, K;
    const float *A;
    int64_t lda;
    const float *B;
    int64_t ldb;
    float beta;
    float *C;
    int64_t ldc;
  };
  std::vector<Call> trace;
  bool recording = true;

  void operator()(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
  void start_run() {
    calls = 0;
    trace.clear();
  }
  // Issues the last run's products reps more times (benchmarks).
  void replay(int64_t reps);
};

// Column sums over rows of a [rows, ld] block, columns [c0, c1): out[c] (+)=
// Σ_r X[r,c]; with Y, out2[c] (+)= Σ_r X[r,c]·Y[r,c]. Summed in row order per
// column, without FMA contraction, so that a column's sum does not depend on
// how the columns are split between threads.
void column_sums(int64_t rows, int64_t ld, int64_t c0, int64_t c1, const float *X, const float *Y,
                 float *out, float *out2, bool accumulate);

// Rows in parallel, with a grain that keeps small passes on one thread.
template <class F>
void rows_parallel(int64_t rows, int64_t width, const F &f) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(width, 1));
  at::parallel_for(0, rows, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) f(r);
  });
}

// Column ranges in parallel.
template <class F>
void cols_parallel(int64_t cols, int64_t rows, const F &f) {
  const int64_t grain = std::max<int64_t>(64, 32768 / std::max<int64_t>(rows, 1));
  at::parallel_for(0, cols, grain, [&](int64_t b, int64_t e) { f(b, e); });
}

// Column sums of X (and of X·Y) over rows, in parallel over columns.
inline void column_sums_parallel(int64_t rows, int64_t cols, const float *X, const float *Y,
                                 float *out, float *out2, bool accumulate) {
  cols_parallel(cols, rows, [&](int64_t c0, int64_t c1) {
    column_sums(rows, cols, c0, c1, X, Y, out, out2, accumulate);
  });
}

// Allocates one float32 workspace and carves it into buffers: layout(take)
// assigns its buffers with take(n), which hands out n floats starting on a
// 64-byte boundary. layout runs twice, first only counting (take returns
// null), then on the allocation, which is returned.
// workspace_floats runs layout only counting: the workspace's size.
template <class F>
int64_t workspace_floats(const F &layout, float *base = nullptr) {
  int64_t used = 0;
  auto take = [&](int64_t n) {
    float *q = base != nullptr ? base + used : nullptr;
    used += (n + 15) / 16 * 16;
    return q;
  };
  layout(take);
  return used;
}

template <class F>
at::Tensor carve_workspace(const F &layout) {
  at::Tensor ws = at::empty({workspace_floats(layout)}, at::TensorOptions().dtype(at::kFloat));
  workspace_floats(layout, ws.data_ptr<float>());
  return ws;
}

// An AdamW (+ EMA) step applied parameter by parameter during a run, as each
// gradient is ready (cgt_fused_update): the arithmetic of cgt_fused_adamw_
// (the same kernel, bit-identical results), with the gradient read from a
// cache-sized scratch buffer instead of the flat gradient buffer.
struct Updater {
  bool on = false;
  AdamWChunk adamw{};
  const float *base = nullptr;  // the flat parameter buffer
  int64_t numel = 0;
  std::vector<float *> emas;
  std::vector<float> rates, omr;
  bool norms = false;
  std::vector<double> part_g, part_p;
  double sum_g = 0, sum_p = 0;
  at::Tensor sumsq;

  // Checks u against the step's parameters (views of u.params) and sets up
  // the step; max_numel is the largest parameter's size.
  void prepare(const cgt_fused_update &u, const std::vector<at::Tensor> &params, int64_t max_numel);
  // Parameter p (a view of the flat buffer) has gradient g: update it now.
  void apply(const at::Tensor &p, float *g);
  // Adds the norms to sumsq and switches off.
  void finish();
};

}  // namespace cgt::fused
