// The CPU kernel of the fused AdamW (+ EMA) pass, shared by cgt_fused_adamw_
// (optim.cc) and the fused training steps, which apply it to each parameter
// as soon as its gradient is ready (fused_unet.cc).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../cgotorch.h"

namespace cgt {

// One AdamW step over one chunk [begin, end) of the flat buffers; G points at
// the chunk's gradient values (G[0] belongs to index begin) or is null for a
// zero gradient. Built for AVX-512, AVX2 and baseline x86-64 (the loader
// picks one at run time) with -fno-math-errno so sqrt and division
// vectorise; the norms use 8 independent double accumulators (vectorisable,
// and a fixed order, so the result does not depend on the thread count).
struct AdamWChunk {
  float *__restrict P, *__restrict M, *__restrict V;
  float decay, b1, omb1, b2, omb2, nss, bc2s, eps, gs;
  bool scaled, zero;
  float *const *E;
  const float *R, *OMR;
  size_t ne;
};

// The constants of one step of PyTorch's AdamW (decoupled weight decay,
// single-tensor algorithm) for adamw_chunk: step is 1-based; the gradient is
// multiplied by grad_scale first; zero_grad clears it after use; E, R and OMR
// are the ne EMA buffers, their rates and 1 - rate.
AdamWChunk adamw_chunk_args(float *P, float *M, float *V, int64_t step,
                            const cgt_adamw_options &o, double grad_scale, bool zero_grad,
                            float *const *E, const float *R, const float *OMR, size_t ne);

// Applies the step to [begin, end); with sg/sp set, writes Σg² and Σp² (the
// parameters before the update) of the chunk.
void adamw_chunk(const AdamWChunk &a, float *G, int64_t begin, int64_t end, double *sg,
                 double *sp);

// Chunk length for parallel loops over the flat buffers (fixed, so that the
// norms' partial sums combine in the same order at any thread count).
constexpr int64_t kAdamWChunk = 1 << 15;

}  // namespace cgt
