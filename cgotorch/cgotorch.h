/*
 * cgotorch.h: the pure-C ABI of libcgotorch.so, a small C++ shim over libtorch.
 *
 * Rules (see ../../shared/spec/binding.md, mirrored in cgotorch/doc.go):
 *   - Handles are distinct incomplete struct types; they are never void*.
 *   - Every fallible function returns a cgt_status by value. On success .code is
 *     CGT_OK and .msg is NULL. On failure .msg is malloc'd: free it with cgt_free.
 *   - Results come back through out-parameters that the caller owns; a new tensor
 *     handle must be released with cgt_tensor_free (or cgt_tensor_free_many).
 *   - Every function is noexcept: no C++ exception ever crosses this boundary.
 *   - dtype and device are this header's own enums, never c10::ScalarType numbers.
 *   - Any change to this header bumps CGT_ABI_VERSION; Go checks it against the
 *     loaded library at Init.
 */
#ifndef CGOTORCH_H
#define CGOTORCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define CGT_NOEXCEPT noexcept
#define CGT_EXPORT extern "C" __attribute__((visibility("default")))
#else
#define CGT_NOEXCEPT
#define CGT_EXPORT
#endif

#define CGT_ABI_VERSION 9

typedef struct cgt_tensor_s *cgt_tensor;
typedef struct cgt_optim_s *cgt_optim;
typedef struct cgt_generator_s *cgt_generator;

/* Error codes. */
enum {
  CGT_OK = 0,
  CGT_ERR_TORCH = 1,
  CGT_ERR_OUT_OF_MEMORY = 2,
  CGT_ERR_NO_CUDA = 3,
  CGT_ERR_INVALID_ARGUMENT = 4,
  CGT_ERR_STD = 5,
  CGT_ERR_UNKNOWN = 6
};

typedef struct {
  int32_t code;
  char *msg;
} cgt_status;

/* Element types. */
enum {
  CGT_F32 = 1,
  CGT_F64 = 2,
  CGT_F16 = 3,
  CGT_BF16 = 4,
  CGT_I64 = 5,
  CGT_I32 = 6,
  CGT_U8 = 7,
  CGT_BOOL = 8
};

/* kind 0 = CPU, 1 = CUDA; index is the CUDA ordinal (ignored for CPU). */
typedef struct {
  int32_t kind;
  int32_t index;
} cgt_device;

#define CGT_MAX_DIMS 16

/* ------------------------------------------------------------------ info */

CGT_EXPORT int32_t cgt_abi_version(void) CGT_NOEXCEPT;
/* TORCH_VERSION baked in at build time, e.g. "1.13.0"; static storage. */
CGT_EXPORT const char *cgt_torch_version(void) CGT_NOEXCEPT;
/* 1 when the library was built with CUDA support (the CUDA flavour). */
CGT_EXPORT int32_t cgt_built_with_cuda(void) CGT_NOEXCEPT;
/* Number of live tensor handles (created and not yet freed). */
CGT_EXPORT int64_t cgt_live_tensors(void) CGT_NOEXCEPT;
/* Frees a cgt_status.msg (or any buffer this library malloc'd for the caller). */
CGT_EXPORT void cgt_free(void *p) CGT_NOEXCEPT;

/*
 * Intra-op threads. The count is applied lazily on every OS thread that enters
 * the library (libtorch's thread count is a per-OS-thread OpenMP value and Go
 * moves goroutines between OS threads). It also sets OpenBLAS's pool when that
 * BLAS is loaded. n <= 0 leaves libtorch's default.
 */
CGT_EXPORT cgt_status cgt_set_num_threads(int32_t n) CGT_NOEXCEPT;
CGT_EXPORT int32_t cgt_get_num_threads(void) CGT_NOEXCEPT;
/* Human-readable parallel backend description (at::get_parallel_info). */
CGT_EXPORT cgt_status cgt_parallel_info(char **out) CGT_NOEXCEPT;

/*
 * glibc malloc tuning for tensor memory: allocations below mmap_threshold
 * come from the heap and freed memory below trim_threshold stays there for
 * reuse, instead of being unmapped and page-faulted in again every step
 * (measured: ~2,600 page faults and ~5 ms per Cell_Unet step otherwise).
 * Values <= 0 leave that setting alone. cgt_malloc_trim returns free heap
 * memory to the system (malloc_trim(0)); 1 if some was released.
 */
CGT_EXPORT void cgt_malloc_tune(int64_t mmap_threshold, int64_t trim_threshold) CGT_NOEXCEPT;
CGT_EXPORT int32_t cgt_malloc_trim(void) CGT_NOEXCEPT;
/* OpenBLAS's selected kernel family ("Haswell", "Prescott", ...), or "" when
 * OpenBLAS is not the loaded BLAS. Static storage. */
CGT_EXPORT const char *cgt_openblas_corename(void) CGT_NOEXCEPT;

/* ------------------------------------------------- CPU allocator (tracked) */
/*
 * cgt_cpu_alloc_install replaces libtorch's CPU allocator with one that wraps
 * c10's alloc_cpu/free_cpu and counts bytes, so the CPU side has the same
 * "allocated bytes" statistics as the CUDA caching allocator, and an optional
 * byte limit (0 = none) whose overflow throws c10::OutOfMemoryError, exactly
 * like a failed allocation. Idempotent.
 */
typedef struct {
  int64_t allocated_bytes;
  int64_t peak_allocated_bytes;
  int64_t num_allocs;
  int64_t num_frees;
  int64_t num_ooms;
  int64_t limit_bytes;
  int32_t installed;
} cgt_cpu_alloc_stats;
CGT_EXPORT void cgt_cpu_alloc_install(void) CGT_NOEXCEPT;
CGT_EXPORT void cgt_cpu_alloc_stats_get(cgt_cpu_alloc_stats *out) CGT_NOEXCEPT;
CGT_EXPORT void cgt_cpu_alloc_reset_peak(void) CGT_NOEXCEPT;
CGT_EXPORT void cgt_cpu_alloc_set_limit(int64_t bytes) CGT_NOEXCEPT;

/* ---------------------------------------------------------------- tensors */

CGT_EXPORT void cgt_tensor_free(cgt_tensor t) CGT_NOEXCEPT;
/* NULL-safe for every element; never fails. */
CGT_EXPORT void cgt_tensor_free_many(cgt_tensor *ts, int64_t n) CGT_NOEXCEPT;

/* Copies nbytes from data (row-major, dtype, shape) into a new tensor on dev. */
CGT_EXPORT cgt_status cgt_from_data(const void *data, int64_t nbytes, const int64_t *shape,
                                    int32_t ndim, int32_t dtype, cgt_device dev,
                                    cgt_tensor *out) CGT_NOEXCEPT;
/* Copies the tensor's elements (converted to CPU, contiguous, same dtype) into dst. */
CGT_EXPORT cgt_status cgt_copy_to_host(cgt_tensor t, void *dst, int64_t nbytes) CGT_NOEXCEPT;
/* Value of a one-element tensor as double (a device sync for CUDA tensors). */
CGT_EXPORT cgt_status cgt_item(cgt_tensor t, double *out) CGT_NOEXCEPT;

CGT_EXPORT cgt_status cgt_ndim(cgt_tensor t, int32_t *out) CGT_NOEXCEPT;
/* Writes up to CGT_MAX_DIMS sizes into shape and the rank into ndim. */
CGT_EXPORT cgt_status cgt_shape(cgt_tensor t, int64_t *shape, int32_t *ndim) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_dtype(cgt_tensor t, int32_t *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_device_of(cgt_tensor t, cgt_device *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_numel(cgt_tensor t, int64_t *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_is_contiguous(cgt_tensor t, int32_t *out) CGT_NOEXCEPT;
/* Bytes of the tensor's storage (shared by views). */
CGT_EXPORT cgt_status cgt_storage_nbytes(cgt_tensor t, int64_t *out) CGT_NOEXCEPT;

/* Creation. full: every element = value. */
CGT_EXPORT cgt_status cgt_full(const int64_t *shape, int32_t ndim, double value, int32_t dtype,
                               cgt_device dev, cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_empty(const int64_t *shape, int32_t ndim, int32_t dtype,
                                cgt_device dev, cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_arange(double start, double end, double step, int32_t dtype,
                                 cgt_device dev, cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_linspace(double start, double end, int64_t steps, int32_t dtype,
                                   cgt_device dev, cgt_tensor *out) CGT_NOEXCEPT;

/* ------------------------------------------------------------- generators */
/* gen may be NULL wherever a generator is accepted: libtorch's default one. */

CGT_EXPORT cgt_status cgt_generator_new(cgt_device dev, uint64_t seed,
                                        cgt_generator *out) CGT_NOEXCEPT;
CGT_EXPORT void cgt_generator_free(cgt_generator g) CGT_NOEXCEPT;
/* The default generator of a device, as a new handle that aliases it. */
CGT_EXPORT cgt_status cgt_generator_default(cgt_device dev, cgt_generator *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_generator_set_seed(cgt_generator g, uint64_t seed) CGT_NOEXCEPT;
/* State as a new uint8 CPU tensor, and back. */
CGT_EXPORT cgt_status cgt_generator_get_state(cgt_generator g, cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_generator_set_state(cgt_generator g, cgt_tensor state) CGT_NOEXCEPT;
/* torch::manual_seed: seeds the default CPU generator and every CUDA one. */
CGT_EXPORT cgt_status cgt_manual_seed(uint64_t seed) CGT_NOEXCEPT;

CGT_EXPORT cgt_status cgt_randn(const int64_t *shape, int32_t ndim, int32_t dtype, cgt_device dev,
                                cgt_generator gen, cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_rand(const int64_t *shape, int32_t ndim, int32_t dtype, cgt_device dev,
                               cgt_generator gen, cgt_tensor *out) CGT_NOEXCEPT;
/* Integers uniform in [low, high). */
CGT_EXPORT cgt_status cgt_randint(int64_t low, int64_t high, const int64_t *shape, int32_t ndim,
                                  int32_t dtype, cgt_device dev, cgt_generator gen,
                                  cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_randperm(int64_t n, int32_t dtype, cgt_device dev, cgt_generator gen,
                                   cgt_tensor *out) CGT_NOEXCEPT;
/* In place: t ~ U(low, high), N(mean, std), Bernoulli(p). */
CGT_EXPORT cgt_status cgt_uniform_(cgt_tensor t, double low, double high,
                                   cgt_generator gen) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_normal_(cgt_tensor t, double mean, double std,
                                  cgt_generator gen) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_bernoulli_(cgt_tensor t, double p, cgt_generator gen) CGT_NOEXCEPT;
/* Draws from the categorical distribution given by the non-negative weights w ([K] or [R,K]). */
CGT_EXPORT cgt_status cgt_multinomial(cgt_tensor w, int64_t n, int32_t replacement,
                                      cgt_generator gen, cgt_tensor *out) CGT_NOEXCEPT;

/* ---------------------------------------------------------- elementwise */

enum {
  CGT_UOP_NEG = 1,
  CGT_UOP_EXP,
  CGT_UOP_LOG,
  CGT_UOP_LOG1P,
  CGT_UOP_EXPM1,
  CGT_UOP_SQRT,
  CGT_UOP_RSQRT,
  CGT_UOP_SIN,
  CGT_UOP_COS,
  CGT_UOP_ABS,
  CGT_UOP_SILU,
  CGT_UOP_RELU,
  CGT_UOP_SIGMOID,
  CGT_UOP_TANH,
  CGT_UOP_SQUARE,
  CGT_UOP_RECIPROCAL,
  CGT_UOP_ISFINITE,
  CGT_UOP_ISNAN,
  CGT_UOP_LOGICAL_NOT,
  CGT_UOP_FLOOR,
  CGT_UOP_SIGN,
  CGT_UOP_GELU
};
CGT_EXPORT cgt_status cgt_unary(int32_t op, cgt_tensor a, cgt_tensor *out) CGT_NOEXCEPT;
/* In place (not for ISFINITE/ISNAN, which change dtype). */
CGT_EXPORT cgt_status cgt_unary_(int32_t op, cgt_tensor a) CGT_NOEXCEPT;

enum {
  CGT_BOP_ADD = 1,
  CGT_BOP_SUB,
  CGT_BOP_MUL,
  CGT_BOP_DIV,
  CGT_BOP_POW,
  CGT_BOP_MAXIMUM,
  CGT_BOP_MINIMUM,
  CGT_BOP_EQ,
  CGT_BOP_NE,
  CGT_BOP_LT,
  CGT_BOP_LE,
  CGT_BOP_GT,
  CGT_BOP_GE,
  CGT_BOP_LOGICAL_AND,
  CGT_BOP_LOGICAL_OR,
  CGT_BOP_REMAINDER
};
/* out = a op b (broadcasting). */
CGT_EXPORT cgt_status cgt_binary(int32_t op, cgt_tensor a, cgt_tensor b,
                                 cgt_tensor *out) CGT_NOEXCEPT;
/* a = a op b, in place (ADD..MINIMUM). */
CGT_EXPORT cgt_status cgt_binary_(int32_t op, cgt_tensor a, cgt_tensor b) CGT_NOEXCEPT;
/* out = a op s, or s op a when reversed != 0. */
CGT_EXPORT cgt_status cgt_binary_scalar(int32_t op, cgt_tensor a, double s, int32_t reversed,
                                        cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_binary_scalar_(int32_t op, cgt_tensor a, double s) CGT_NOEXCEPT;
/* out = a + alpha*b; and the in-place a += alpha*b. */
CGT_EXPORT cgt_status cgt_add_scaled(cgt_tensor a, cgt_tensor b, double alpha,
                                     cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_add_scaled_(cgt_tensor a, cgt_tensor b, double alpha) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_copy_(cgt_tensor dst, cgt_tensor src) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_fill_(cgt_tensor t, double value) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_zero_(cgt_tensor t) CGT_NOEXCEPT;
/* Clamp with optional bounds (has_min/has_max). */
CGT_EXPORT cgt_status cgt_clamp(cgt_tensor a, double min, int32_t has_min, double max,
                                int32_t has_max, cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_clamp_(cgt_tensor a, double min, int32_t has_min, double max,
                                 int32_t has_max) CGT_NOEXCEPT;
/* out = where(cond, a, b). */
CGT_EXPORT cgt_status cgt_where(cgt_tensor cond, cgt_tensor a, cgt_tensor b,
                                cgt_tensor *out) CGT_NOEXCEPT;

/* ------------------------------------------------------------ reductions */

enum {
  CGT_RED_SUM = 1,
  CGT_RED_MEAN,
  CGT_RED_AMAX,
  CGT_RED_AMIN,
  CGT_RED_VAR,        /* unbiased (N-1) */
  CGT_RED_VAR_BIASED, /* population (N) */
  CGT_RED_NORM2,      /* L2 norm */
  CGT_RED_ALL,        /* logical and */
  CGT_RED_ANY
};
/* ndims == 0 reduces over every element (keepdim ignored). */
CGT_EXPORT cgt_status cgt_reduce(int32_t op, cgt_tensor a, const int64_t *dims, int32_t ndims,
                                 int32_t keepdim, cgt_tensor *out) CGT_NOEXCEPT;
/* max over one dim: values and int64 indices. */
CGT_EXPORT cgt_status cgt_max_dim(cgt_tensor a, int64_t dim, int32_t keepdim, cgt_tensor *values,
                                  cgt_tensor *indices) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_argmax(cgt_tensor a, int64_t dim, int32_t keepdim,
                                 cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_cumsum(cgt_tensor a, int64_t dim, cgt_tensor *out) CGT_NOEXCEPT;

/* -------------------------------------------------------- shape and index */

CGT_EXPORT cgt_status cgt_view(cgt_tensor a, const int64_t *shape, int32_t ndim,
                               cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_reshape(cgt_tensor a, const int64_t *shape, int32_t ndim,
                                  cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_expand(cgt_tensor a, const int64_t *shape, int32_t ndim,
                                 cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_permute(cgt_tensor a, const int64_t *dims, int32_t ndim,
                                  cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_unsqueeze(cgt_tensor a, int64_t dim, cgt_tensor *out) CGT_NOEXCEPT;
/* all != 0: squeeze every size-1 dim (dim ignored). */
CGT_EXPORT cgt_status cgt_squeeze(cgt_tensor a, int64_t dim, int32_t all,
                                  cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_transpose(cgt_tensor a, int64_t d0, int64_t d1,
                                    cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_narrow(cgt_tensor a, int64_t dim, int64_t start, int64_t length,
                                 cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_index_select(cgt_tensor a, int64_t dim, cgt_tensor index,
                                       cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_gather(cgt_tensor a, int64_t dim, cgt_tensor index,
                                 cgt_tensor *out) CGT_NOEXCEPT;
/* In place: a[dim][index[i]] += src[i] (index_add_). */
CGT_EXPORT cgt_status cgt_index_add_(cgt_tensor a, int64_t dim, cgt_tensor index,
                                     cgt_tensor src) CGT_NOEXCEPT;
/* In place: a[dim][index[i]] = src[i] (index_copy_; duplicate indices: one wins). */
CGT_EXPORT cgt_status cgt_index_copy_(cgt_tensor a, int64_t dim, cgt_tensor index,
                                      cgt_tensor src) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_cat(const cgt_tensor *ts, int32_t n, int64_t dim,
                              cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_stack(const cgt_tensor *ts, int32_t n, int64_t dim,
                                cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_contiguous(cgt_tensor a, cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_clone(cgt_tensor a, cgt_tensor *out) CGT_NOEXCEPT;
/* A new handle to the same tensor (shares storage and autograd identity). */
CGT_EXPORT cgt_status cgt_alias(cgt_tensor a, cgt_tensor *out) CGT_NOEXCEPT;
/* Converts device and dtype; dtype 0 keeps it. Returns a new handle even when nothing changes. */
CGT_EXPORT cgt_status cgt_to(cgt_tensor a, cgt_device dev, int32_t dtype,
                             cgt_tensor *out) CGT_NOEXCEPT;

/* -------------------------------------------------------------- nn ops */

/* y = x w^T + b; b may be NULL. */
CGT_EXPORT cgt_status cgt_linear(cgt_tensor x, cgt_tensor w, cgt_tensor b,
                                 cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_matmul(cgt_tensor a, cgt_tensor b, cgt_tensor *out) CGT_NOEXCEPT;
/* Over the last nshape dims; w and b may be NULL. */
CGT_EXPORT cgt_status cgt_layer_norm(cgt_tensor x, const int64_t *shape, int32_t nshape,
                                     cgt_tensor w, cgt_tensor b, double eps,
                                     cgt_tensor *out) CGT_NOEXCEPT;
/*
 * Batch norm over dim 1 of [N,C] or [N,C,L]. w, b, running_mean, running_var
 * may be NULL. training != 0 uses batch statistics and, when the running
 * buffers are given, updates them in place with momentum.
 */
CGT_EXPORT cgt_status cgt_batch_norm(cgt_tensor x, cgt_tensor w, cgt_tensor b,
                                     cgt_tensor running_mean, cgt_tensor running_var,
                                     int32_t training, double momentum, double eps,
                                     cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_prelu(cgt_tensor x, cgt_tensor w, cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_softmax(cgt_tensor x, int64_t dim, cgt_tensor *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_log_softmax(cgt_tensor x, int64_t dim, cgt_tensor *out) CGT_NOEXCEPT;
/* Dropout with probability p when training; identity otherwise. */
CGT_EXPORT cgt_status cgt_dropout(cgt_tensor x, double p, int32_t training, cgt_generator gen,
                                  cgt_tensor *out) CGT_NOEXCEPT;
/* Row-wise Lp normalisation: x / max(||x||_p, eps) along dim. */
CGT_EXPORT cgt_status cgt_normalize(cgt_tensor x, double p, int64_t dim, double eps,
                                    cgt_tensor *out) CGT_NOEXCEPT;

enum { CGT_REDUCTION_NONE = 0, CGT_REDUCTION_MEAN = 1, CGT_REDUCTION_SUM = 2 };
CGT_EXPORT cgt_status cgt_mse_loss(cgt_tensor input, cgt_tensor target, int32_t reduction,
                                   cgt_tensor *out) CGT_NOEXCEPT;
/* logits [N,C], target int64 [N]. */
CGT_EXPORT cgt_status cgt_cross_entropy(cgt_tensor logits, cgt_tensor target, int32_t reduction,
                                        cgt_tensor *out) CGT_NOEXCEPT;

/* -------------------------------------------------------------- autograd */

CGT_EXPORT cgt_status cgt_set_requires_grad(cgt_tensor t, int32_t on) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_requires_grad(cgt_tensor t, int32_t *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_is_leaf(cgt_tensor t, int32_t *out) CGT_NOEXCEPT;
/* grad may be NULL for a scalar t. */
CGT_EXPORT cgt_status cgt_backward(cgt_tensor t, cgt_tensor grad, int32_t retain_graph) CGT_NOEXCEPT;
/* *out is NULL when t has no gradient. */
CGT_EXPORT cgt_status cgt_grad(cgt_tensor t, cgt_tensor *out) CGT_NOEXCEPT;
/* Sets t.grad to g (which is aliased, not copied); g NULL resets it to undefined. */
CGT_EXPORT cgt_status cgt_set_grad(cgt_tensor t, cgt_tensor g) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_detach(cgt_tensor t, cgt_tensor *out) CGT_NOEXCEPT;
/* Per-OS-thread grad mode; returns the previous mode. */
CGT_EXPORT int32_t cgt_set_grad_enabled(int32_t on) CGT_NOEXCEPT;
CGT_EXPORT int32_t cgt_is_grad_enabled(void) CGT_NOEXCEPT;
/* Gradient of sum(y) w.r.t. x without touching x.grad (torch.autograd.grad). */
CGT_EXPORT cgt_status cgt_autograd_grad(cgt_tensor y, cgt_tensor x, cgt_tensor *out) CGT_NOEXCEPT;

/* L2 norm over all gradients of params (missing grads count 0); a 0-dim float32 tensor on the params' device. */
CGT_EXPORT cgt_status cgt_grad_norm(const cgt_tensor *params, int32_t n,
                                    cgt_tensor *out) CGT_NOEXCEPT;
/* torch::nn::utils::clip_grad_norm_ (L2): scales grads in place; writes the total norm before clipping. */
CGT_EXPORT cgt_status cgt_clip_grad_norm_(const cgt_tensor *params, int32_t n, double max_norm,
                                          double *total_norm) CGT_NOEXCEPT;
/* L2 norm over all given tensors, as a 0-dim float32 tensor, no host sync. */
CGT_EXPORT cgt_status cgt_norm_of(const cgt_tensor *ts, int32_t n, cgt_tensor *out) CGT_NOEXCEPT;

/* ------------------------------------------------------------- optimizer */

typedef struct {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  int32_t amsgrad;
} cgt_adamw_options;

/* torch::optim::AdamW over the given leaf tensors (aliased, not copied). */
CGT_EXPORT cgt_status cgt_adamw_new(const cgt_tensor *params, int32_t n, cgt_adamw_options opts,
                                    cgt_optim *out) CGT_NOEXCEPT;
CGT_EXPORT void cgt_optim_free(cgt_optim o) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_optim_step(cgt_optim o) CGT_NOEXCEPT;
/* Same semantics on every libtorch: set_to_none != 0 resets grads to undefined, else zeroes in place. */
CGT_EXPORT cgt_status cgt_optim_zero_grad(cgt_optim o, int32_t set_to_none) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_optim_get_lr(cgt_optim o, double *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_optim_set_lr(cgt_optim o, double lr) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_optim_num_params(cgt_optim o, int32_t *out) CGT_NOEXCEPT;
/*
 * State of parameter i: step count and new handles to exp_avg, exp_avg_sq
 * (aliases of the live state; NULL when the parameter has no state yet).
 */
CGT_EXPORT cgt_status cgt_adamw_get_state(cgt_optim o, int32_t i, int64_t *step,
                                          cgt_tensor *exp_avg, cgt_tensor *exp_avg_sq,
                                          cgt_tensor *max_exp_avg_sq) CGT_NOEXCEPT;
/* Replaces the state of parameter i with copies of the given tensors. */
CGT_EXPORT cgt_status cgt_adamw_set_state(cgt_optim o, int32_t i, int64_t step,
                                          cgt_tensor exp_avg, cgt_tensor exp_avg_sq,
                                          cgt_tensor max_exp_avg_sq) CGT_NOEXCEPT;

/*
 * One fused AdamW update over flat float32 buffers (decoupled weight decay,
 * bias correction with the given 1-based step), exactly PyTorch's AdamW
 * formula, followed by optional EMA updates ema[k] = rate[k]*ema[k] +
 * (1-rate[k])*p and, if zero_grad != 0, g = 0. One pass over memory on CPU.
 * The gradient is either the flat tensor g, or (g NULL) nseg segments laid
 * end to end with seg_numel[k] elements each: grads[k] contiguous, or NULL
 * for a zero gradient (per-parameter gradients autograd allocated itself).
 * grad_scale multiplies the gradient as it is read (1/loss_scale); the
 * gradient tensors are never written, except zeroed by zero_grad. Version
 * counters of every tensor written are bumped (autograd sees the update).
 * opts.amsgrad is refused (CGT_ERR_INVALID_ARGUMENT): this kernel has no
 * max_exp_avg_sq.
 * If sumsq is not NULL (float64 [2] on the same device), sum(g'^2) and
 * sum(p^2) over the scaled gradient and the parameters before the update
 * are added to sumsq[0] and sumsq[1]: the norms come with no extra pass.
 * p, m, v and the EMAs are contiguous, with the same numel and device.
 */
CGT_EXPORT cgt_status cgt_fused_adamw_(cgt_tensor p, cgt_tensor g, const cgt_tensor *grads,
                                       const int64_t *seg_numel, int32_t nseg, cgt_tensor m,
                                       cgt_tensor v, int64_t step, cgt_adamw_options opts,
                                       double grad_scale, const cgt_tensor *emas,
                                       const double *rates, int32_t nema, int32_t zero_grad,
                                       cgt_tensor sumsq) CGT_NOEXCEPT;
/* ema = rate*ema + (1-rate)*p for each pair, under no-grad. */
CGT_EXPORT cgt_status cgt_ema_(cgt_tensor ema, cgt_tensor p, double rate) CGT_NOEXCEPT;

/* ----------------------------------------------------------------- CUDA */

CGT_EXPORT int32_t cgt_cuda_is_available(void) CGT_NOEXCEPT;
CGT_EXPORT int32_t cgt_cuda_device_count(void) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_cuda_init(int32_t device) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_cuda_synchronize(int32_t device) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_cuda_manual_seed_all(uint64_t seed) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_cuda_empty_cache(void) CGT_NOEXCEPT;

typedef struct {
  int64_t allocated_current, allocated_peak;
  int64_t reserved_current, reserved_peak;
  int64_t active_current, active_peak;
  int64_t inactive_split_current, inactive_split_peak;
  int64_t num_alloc_retries;
  int64_t num_ooms;
  /* Largest cached free block (from the allocator snapshot); -1 if unknown. */
  int64_t largest_free_block;
  int64_t num_segments;
} cgt_cuda_mem_stats;
CGT_EXPORT cgt_status cgt_cuda_memory_stats(int32_t device, int32_t with_snapshot,
                                            cgt_cuda_mem_stats *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_cuda_reset_peak_stats(int32_t device) CGT_NOEXCEPT;
/* cudaMemGetInfo for the device. */
CGT_EXPORT cgt_status cgt_cuda_mem_get_info(int32_t device, int64_t *free_bytes,
                                            int64_t *total_bytes) CGT_NOEXCEPT;
/* Caps this process's share of device memory (CUDACachingAllocator::setMemoryFraction). */
CGT_EXPORT cgt_status cgt_cuda_set_memory_fraction(int32_t device, double fraction) CGT_NOEXCEPT;
/* PCI bus id ("0000:65:00.0") of a CUDA ordinal, for matching NVML devices. */
CGT_EXPORT cgt_status cgt_cuda_pci_bus_id(int32_t device, char **out) CGT_NOEXCEPT;

/* ----------------------------------------------------------- autocast */
/* bf16/fp16 autocast for the calling OS thread (CUDA only); returns previous state in *prev. */
CGT_EXPORT cgt_status cgt_autocast_set(int32_t enabled, int32_t dtype, int32_t *prev_enabled,
                                       int32_t *prev_dtype) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_autocast_clear_cache(void) CGT_NOEXCEPT;

/* ------------------------------------------------- fused training steps */
/* Hand-written forward/backward of fixed networks over preallocated buffers. */

/* Backends of the fused steps: see cgt_unet_step_new. */
enum { CGT_FUSED_AUTO = 0, CGT_FUSED_CPU = 1, CGT_FUSED_ATEN = 2 };
/*
 * An AdamW (+ EMA) step for a fused step's run to apply as it goes: params,
 * exp_avg, exp_avg_sq and each EMA are flat float32 CPU buffers (the step's
 * parameter tensors must be views of params); step is 1-based; sumsq
 * (optional, float64 [2]) gets sum g^2 and sum p^2 added, as cgt_fused_adamw_.
 */
typedef struct {
  cgt_tensor params, exp_avg, exp_avg_sq;
  const cgt_tensor *emas;
  const double *rates;
  int32_t nema;
  cgt_tensor sumsq;
  int64_t step;
  cgt_adamw_options opts;
} cgt_fused_update;
/* What a fused step holds and did. */
typedef struct {
  int32_t backend;         /* CGT_FUSED_CPU or CGT_FUSED_ATEN */
  int32_t blas;            /* 1: matrix products call sgemm_ directly */
  int64_t rows;            /* reserved rows */
  int64_t workspace_bytes; /* activations, their gradients and the scratch buffer */
  int64_t table_bytes;     /* constant tables (Cell_Unet: embedding table, schedule) */
  int64_t gemms_last_run;  /* matrix products in the last run (CPU backend) */
} cgt_fused_step_stats;

/*
 * The Cell_Unet training step (cgotorch/csrc/fused_unet.cc): q_sample, the
 * network's forward, the per-sample ε-MSE and the whole backward, with every
 * parameter gradient written into caller-owned gradient tensors (views of
 * the flat gradient buffer the fused AdamW reads). No optimizer step: the
 * caller runs cgt_fused_adamw_ afterwards (or reduces the gradients first).
 *
 * Backends: CPU = hand-written fused loops over a workspace allocated once by
 * cgt_unet_step_reserve, matrix products by the process's BLAS (OpenBLAS
 * sgemm_), no allocation and no libtorch op per run; ATEN = the same step as
 * ATen ops on the parameters' device (CUDA, or CPU for tests), free of host
 * synchronisation and data-dependent shapes; AUTO = CPU for CPU tensors,
 * ATEN otherwise.
 */
typedef struct cgt_unet_step_s *cgt_unet_step;
/*
 * params and grads: nparams float32 contiguous tensors in the Cell_Unet
 * state-dict order (time_embedding.time_embed.{0,2}.{weight,bias}; per block,
 * encoder then decoder: fc.{weight,bias}, norm.{weight,bias},
 * emb_layer.1.{weight,bias}; out1, norm_out, out2), aliased (not copied).
 * freqs: the E/2 embedding frequencies; sqrt_ab, sqrt_1m_ab: float [T]
 * q_sample coefficients; timestep_map: int64 [T] model step of each schedule step.
 */
CGT_EXPORT cgt_status cgt_unet_step_new(int64_t input_dim, const int64_t *hidden, int32_t nhidden,
                                        const cgt_tensor *params, const cgt_tensor *grads,
                                        int32_t nparams, cgt_tensor freqs, cgt_tensor sqrt_ab,
                                        cgt_tensor sqrt_1m_ab, cgt_tensor timestep_map,
                                        int32_t backend, cgt_unet_step *out) CGT_NOEXCEPT;
CGT_EXPORT void cgt_unet_step_free(cgt_unet_step s) CGT_NOEXCEPT;
/* Sizes the workspace for runs of up to rows samples (the old one is released
 * first; out of memory leaves none). A no-op when already that size. */
CGT_EXPORT cgt_status cgt_unet_step_reserve(cgt_unet_step s, int64_t rows) CGT_NOEXCEPT;
/*
 * One forward/backward over n samples: x0 = data[index] (index int64 [n]; NULL:
 * data is x0 [n,D]), t int64 [n] schedule steps, noise float32 [n,D], weights
 * float32 [n]. Writes mse[r] = mean_d(eps_hat - noise)^2 and the gradients of
 * coef * sum_r weights[r]*mse[r]; accumulate != 0 adds to the gradients instead
 * of overwriting them (microbatch slices). log_acc (optional, float64 [15]) gets
 * the trainer's window sums added: [0] sum w*mse, [1] sum mse, [2] n, then per
 * quartile q = min(floor(4t/T),3): [3+3q] sum w*mse, [4+3q] sum mse, [5+3q] count.
 * update (optional; CPU backend, accumulate 0): instead of writing the gradient
 * tensors, apply that AdamW step to each parameter as soon as its gradient is
 * ready (the gradient passes through a cache-sized scratch buffer) — the same
 * arithmetic as cgt_fused_adamw_ after a plain run, with fewer passes over memory.
 */
CGT_EXPORT cgt_status cgt_unet_step_run(cgt_unet_step s, cgt_tensor data, cgt_tensor index,
                                        cgt_tensor t, cgt_tensor noise, cgt_tensor weights,
                                        double coef, int32_t accumulate, cgt_tensor mse,
                                        cgt_tensor log_acc,
                                        const cgt_fused_update *update) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_unet_step_info(cgt_unet_step s, cgt_fused_step_stats *out) CGT_NOEXCEPT;
/* The workspace a reserve of rows would allocate (CPU backend; 0 for ATen). */
CGT_EXPORT cgt_status cgt_unet_step_workspace_bytes(cgt_unet_step s, int64_t rows,
                                                    int64_t *bytes) CGT_NOEXCEPT;
/* Benchmarks: issues the last run's matrix products again, reps times, on the
 * same buffers (gradients are overwritten with garbage): the step's
 * matrix-product floor. CPU backend, after a run. */
CGT_EXPORT cgt_status cgt_unet_step_replay_gemms(cgt_unet_step s, int64_t reps) CGT_NOEXCEPT;

/*
 * The autoencoder training step (cgotorch/csrc/fused_ae.cc; CPU): forward,
 * MSE(mean) reconstruction loss and backward of scDiffusion's autoencoder
 * (Linear, BatchNorm1d in train mode, PReLU blocks; L2-normalised latent;
 * no dropout) over a workspace allocated once. params and grads: float32
 * tensors in this order — per encoder block, then the latent Linear, per
 * decoder block, then the output Linear: a block is linear weight [h,in],
 * bias [h], batchnorm weight [h], bias [h], prelu weight [1]; a Linear is
 * weight, bias. buffers: per block running_mean, running_var (float32 [h]),
 * num_batches_tracked (int64 scalar), updated in place by every run.
 */
typedef struct cgt_ae_step_s *cgt_ae_step;
CGT_EXPORT cgt_status cgt_ae_step_new(int64_t genes, const int64_t *hidden, int32_t nhidden,
                                      int64_t latent, const cgt_tensor *params,
                                      const cgt_tensor *grads, int32_t nparams,
                                      const cgt_tensor *buffers, int32_t nbuffers,
                                      double bn_momentum, double bn_eps,
                                      cgt_ae_step *out) CGT_NOEXCEPT;
CGT_EXPORT void cgt_ae_step_free(cgt_ae_step s) CGT_NOEXCEPT;
/* Sizes the workspace for batches of up to rows cells (at least 2). */
CGT_EXPORT cgt_status cgt_ae_step_reserve(cgt_ae_step s, int64_t rows) CGT_NOEXCEPT;
/*
 * One step on n cells: x is host float32 [n, genes], copied in. Adds the
 * loss to loss_acc (optional float64 scalar) and writes the gradients, or,
 * with update, applies that AdamW step as each gradient is ready (as
 * cgt_unet_step_run).
 */
CGT_EXPORT cgt_status cgt_ae_step_run(cgt_ae_step s, const float *x, int64_t n,
                                      cgt_tensor loss_acc,
                                      const cgt_fused_update *update) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_ae_step_info(cgt_ae_step s, cgt_fused_step_stats *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_ae_step_replay_gemms(cgt_ae_step s, int64_t reps) CGT_NOEXCEPT;

/* In place: t.random_(low, high, gen), the values at::randint(low, high, shape, gen)
 * draws, for allocation-free steps (int64 t). */
CGT_EXPORT cgt_status cgt_random_int_(cgt_tensor t, int64_t low, int64_t high,
                                      cgt_generator gen) CGT_NOEXCEPT;

/*
 * Op counting through libtorch's RecordFunction (process-wide): between start
 * and stop, every dispatcher op (RecordScope::FUNCTION) on any thread is
 * counted; leaf_ops = ops that called no other op; kernels = leaf ops that
 * touch data (views, empty, resize and other metadata-only ops excluded).
 */
CGT_EXPORT cgt_status cgt_op_counter_start(void) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_op_counter_stop(int64_t *ops, int64_t *leaf_ops,
                                          int64_t *kernels) CGT_NOEXCEPT;

/* (end of fused training steps) */

/* --------------------------------------------------- distributed (c10d) */
/* Stores, process groups and collectives over libtorch's c10d. */

/*
 * A store is a c10d::TCPStore (optionally behind a PrefixStore); a process
 * group is a c10d Gloo (CPU tensors) or NCCL (CUDA flavour, CUDA tensors)
 * backend over a store. Both are distinct handles, freed with their own
 * *_free call; cgt_dist_live_handles counts the live ones for leak tests.
 * Every operation is bounded by the timeout given at creation: a peer that
 * exits, or stops answering, ends the call with CGT_ERR_DIST or
 * CGT_ERR_DIST_TIMEOUT instead of blocking forever. After such an error the
 * group is unusable (free it).
 */
typedef struct cgt_store_s *cgt_store;
typedef struct cgt_process_group_s *cgt_process_group;

/* Error codes of distributed calls (beyond the CGT_ERR_* above). */
enum {
  CGT_ERR_DIST = 7,        /* a peer closed its connection, or the store or network failed */
  CGT_ERR_DIST_TIMEOUT = 8 /* a store or collective operation exceeded its timeout */
};

typedef struct {
  const char *host;   /* the server's address (for the server itself: where clients connect) */
  int32_t port;       /* 0 with is_server: pick a free port (cgt_store_port reads it) */
  int32_t is_server;  /* host the store in this process */
  int32_t world_size; /* processes of the job, the server's included (0: unknown) */
  int32_t wait_workers; /* with world_size: every process registers itself, and the
                           server returns once all have (PyTorch's wait_for_workers) */
  int64_t timeout_ms; /* connect, get and wait timeout */
  const char *prefix; /* NULL or "": none; else every key is prefixed (c10d::PrefixStore) */
} cgt_tcp_store_options;

CGT_EXPORT cgt_status cgt_tcp_store_new(cgt_tcp_store_options opts, cgt_store *out) CGT_NOEXCEPT;
CGT_EXPORT void cgt_store_free(cgt_store s) CGT_NOEXCEPT;
/* The TCP port of the underlying TCPStore. */
CGT_EXPORT cgt_status cgt_store_port(cgt_store s, int32_t *out) CGT_NOEXCEPT;
CGT_EXPORT cgt_status cgt_store_set(cgt_store s, const char *key, const void *value,
                                    int64_t n) CGT_NOEXCEPT;
/* Blocks until key exists (or the timeout); *value is malloc'd (cgt_free), *n its length. */
CGT_EXPORT cgt_status cgt_store_get(cgt_store s, const char *key, void **value,
                                    int64_t *n) CGT_NOEXCEPT;
/* Atomically adds delta to the counter key and returns the new value. */
CGT_EXPORT cgt_status cgt_store_add(cgt_store s, const char *key, int64_t delta,
                                    int64_t *out) CGT_NOEXCEPT;

enum { CGT_BACKEND_GLOO = 1, CGT_BACKEND_NCCL = 2 };
/* 1 when this build of the library can create that backend. */
CGT_EXPORT int32_t cgt_dist_backend_available(int32_t backend) CGT_NOEXCEPT;

typedef struct {
  int32_t backend;    /* CGT_BACKEND_* */
  int32_t rank;       /* 0 <= rank < size */
  int32_t size;
  int64_t timeout_ms; /* every collective, and the rendezvous through the store */
  cgt_device device;  /* where the group's tensors live: CPU for Gloo, CUDA:i for NCCL */
  const char *iface;  /* Gloo: NULL or "": this host's name's address, else a network interface */
} cgt_process_group_options;

/* Joins the group: blocks until every rank has connected through the store. */
CGT_EXPORT cgt_status cgt_process_group_new(cgt_store s, cgt_process_group_options opts,
                                            cgt_process_group *out) CGT_NOEXCEPT;
CGT_EXPORT void cgt_process_group_free(cgt_process_group g) CGT_NOEXCEPT;

enum { CGT_REDUCE_SUM = 0, CGT_REDUCE_AVG = 1 };
/* In place, on every rank: t = op over ranks of t (contiguous, on the group's device). */
CGT_EXPORT cgt_status cgt_all_reduce_(cgt_process_group g, cgt_tensor t, int32_t op) CGT_NOEXCEPT;
/* In place: every rank's t becomes root's t. */
CGT_EXPORT cgt_status cgt_broadcast_(cgt_process_group g, cgt_tensor t, int32_t root) CGT_NOEXCEPT;
/* Returns once every rank has entered the barrier (the host waits). */
CGT_EXPORT cgt_status cgt_barrier(cgt_process_group g) CGT_NOEXCEPT;
/*
 * out = the sum over ranks of x, as a new tensor that autograd differentiates
 * through: its backward sums the incoming gradients over ranks the same way
 * (every rank must run that backward). For statistics of a data-parallel
 * batch, e.g. synchronised BatchNorm.
 */
CGT_EXPORT cgt_status cgt_all_reduce_sum_autograd(cgt_process_group g, cgt_tensor x,
                                                  cgt_tensor *out) CGT_NOEXCEPT;
/* Live store and process-group handles (created and not yet freed). */
CGT_EXPORT int64_t cgt_dist_live_handles(void) CGT_NOEXCEPT;

/* (end of distributed) */

/* ------------------------------------------------------------- misc */

/* Allocator settings as the CUDA caching allocator parsed them (not the
 * environment text): *out is "key:value,..." (free with cgt_free) and
 * *state says where it came from: CGT_ALLOC_CONF_READ (read back from
 * libtorch's allocator configuration), CGT_ALLOC_CONF_NOT_APPLICABLE (CPU
 * flavour: there is no CUDA caching allocator; *out explains) or
 * CGT_ALLOC_CONF_UNAVAILABLE (libtorch older than 2.1 keeps the parsed
 * settings private; *out explains). Reading the settings parses the
 * environment if the allocator has not yet done so, as it would itself. */
enum {
  CGT_ALLOC_CONF_READ = 1,
  CGT_ALLOC_CONF_NOT_APPLICABLE = 0,
  CGT_ALLOC_CONF_UNAVAILABLE = -1
};
CGT_EXPORT cgt_status cgt_alloc_conf_readback(char **out, int32_t *state) CGT_NOEXCEPT;

/* CUDA runtime and driver API versions (1000*major + 10*minor, e.g. 12040)
 * of the loaded CUDA libraries; 0 where the call is unavailable.
 * CGT_ERR_NO_CUDA on the CPU flavour. */
CGT_EXPORT cgt_status cgt_cuda_versions(int32_t *runtime, int32_t *driver) CGT_NOEXCEPT;

/* Test hook for the error paths: the n-th tensor handle created from now on
 * by the calling OS thread fails as if `new` ran out of memory (the call
 * returns CGT_ERR_OUT_OF_MEMORY); n <= 0 disarms it. */
CGT_EXPORT void cgt_debug_fail_handle_alloc(int32_t n) CGT_NOEXCEPT;

/* x = SiLU(LayerNorm(x) over its last dimension with weight w and bias b),
   in place, in one pass over memory for contiguous float32 CPU tensors
   (other devices and dtypes: libtorch's layer_norm then silu_). Inference
   only: fails if grad mode is on and an input requires grad. */
CGT_EXPORT cgt_status cgt_layer_norm_silu_(cgt_tensor x, cgt_tensor w, cgt_tensor b,
                                           double eps) CGT_NOEXCEPT;

/* (end of misc) */

#endif /* CGOTORCH_H */
