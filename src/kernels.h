/*
 * kernels: the numeric building blocks of the forward pass, and the thread
 * pool that runs them. The implementation is split by concern:
 *
 *   kernels_pool.c        the thread pool (kernels_init, kernels_parallel)
 *   kernels_cpu.c         CPU features, SIMD level, OpenBLAS core type, bandwidth
 *   kernels_dispatch.c    the row kernel of each (dtype, SIMD level); matvec
 *   kernels_portable.c    portable C row kernels, any dtype through its traits
 *   kernels_avx512.c      x86 AVX-512 kernels     kernels_avx2.c  AVX2 + FMA
 *   kernels_neon.c        ARM NEON kernels
 *   kernels_matmul.c      prefill: sgemm (block types dequantized in panels)
 *                         or, for short prompts, integer tiles of block types
 *   kernels_elementwise.c rmsnorm, softmax, swiglu, dot, axpy
 *
 * Weight matrices are row-major, one row per output feature, as Hugging Face
 * stores nn.Linear weights: W (rows = out_features, cols = in_features).
 * A matrix carries its storage dtype (dtype.h); every kernel takes F32
 * activations and produces F32. A new storage format plugs in as a row of
 * the dtype traits table and its row kernels; nothing else changes.
 *
 * Decode uses kernels_matvec_batch: rows are split across the pool's threads
 * by index (thread ith of nth takes a contiguous block of rows), and each
 * row is reduced by one thread in a fixed order, so the result does not
 * depend on the number of threads. Weights of a block type are multiplied
 * with the activation quantized to their vec_dot_type, once per activation
 * row for all the jobs of a batch that read it, into scratch the caller owns.
 * Several activation rows (a small batch of sequences) are multiplied with
 * each weight row while it is in cache, each row's result identical to a
 * call with that activation row alone.
 * Prefill (n tokens) uses kernels_matmul: OpenBLAS sgemm, with non-F32
 * weights converted to F32 in row panels first; block-type weights with
 * few tokens (q8_0 below 64, q4_0 below 192) take the decode row kernels
 * with all n activation rows at once instead (faster here below that; see
 * kernels_matmul.c).
 *
 * The pool is process-wide and configured once (kernels_init); only one
 * thread (the node's compute thread) may call the kernels.
 */
#ifndef MDI_KERNELS_H
#define MDI_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "dtype.h"

typedef struct {
    dtype_t dtype;
    int rows, cols;
    const void *data; /* borrowed: from an mmap or a buffer the model owns */
} mat_t;

/* Jobs one kernels_matvec_batch call may take. */
#define KERNELS_MAX_JOBS 8

/* One matvec of a batch: out (n_x, W.rows) = x (n_x, W.cols) @ W^T [+ bias],
 * n_x given to kernels_matvec_batch. */
typedef struct {
    float *out;
    const mat_t *w;
    const float *x;
    const float *bias; /* may be NULL */
} matvec_job;

/* Scratch for activations quantized to a weight type's vec_dot_type, owned by
 * the caller's run state (the hot path allocates nothing). */
typedef struct {
    void *data;
    size_t bytes;
} kernels_scratch;

/* Bytes of scratch a batch of n_jobs jobs with n_x activation rows of at most
 * max_cols values needs, whatever the weights' dtypes. */
size_t kernels_scratch_bytes(int n_jobs, int n_x, int max_cols);

/* Starts the pool with n_threads workers in total (the caller counts as one)
 * and tells OpenBLAS to use as many. Call once before any kernel. */
int kernels_init(int n_threads);
int kernels_n_threads(void);
void kernels_shutdown(void);

/* Runs fn(arg, ith, nth) on every thread of the pool, the caller as ith 0,
 * and returns when all are done. */
typedef void (*kernels_task_fn)(void *arg, int ith, int nth);
void kernels_parallel(kernels_task_fn fn, void *arg);

/* out = x @ W^T (+ bias) for each job and each of the n_x activation rows;
 * all jobs share one dispatch so that q/k/v or gate/up cost one
 * synchronisation, not three. Jobs whose x is the same pointer share one
 * quantized copy of it. scratch may be NULL when every weight is a float
 * type; otherwise it must hold kernels_scratch_bytes(n_jobs, n_x, cols). */
void kernels_matvec_batch(const matvec_job *jobs, int n_jobs, int n_x, kernels_scratch *scratch);
/* One job, one activation row; scratch as above. */
void kernels_matvec(float *out, const mat_t *w, const float *x, kernels_scratch *scratch);

/* Y (n, W.rows) = X (n, W.cols) @ W^T (+ bias broadcast over rows).
 * For F32 weights a single sgemm; others are converted to F32 in panels
 * into scratch (owned by the kernels module, grown as needed), or, block
 * types with few tokens, X is quantized into such scratch and multiplied by
 * integer tiles (each row of Y then equals a kernels_matvec of that token). */
void kernels_matmul(float *y, const mat_t *w, const float *x, int n, const float *bias);

/* Row r of W as F32 into out (W.cols,): embedding lookups. */
void kernels_get_row(float *out, const mat_t *w, int r);

/* out (n,) = x / rms(x) * weight, rms over n with eps. out may alias x. */
void kernels_rmsnorm(float *out, const float *x, const float *weight, int n, float eps);

/* In-place softmax over n. */
void kernels_softmax(float *x, int n);

/* h (n,) = silu(gate) * up, in place into gate. */
void kernels_swiglu(float *gate, const float *up, int n);

/* Dot product of two F32 vectors (SIMD where available). */
float kernels_dot_f32(const float *a, const float *b, int n);
/* y += a * x */
void kernels_axpy_f32(float *y, float a, const float *x, int n);

/* The same with the second vector stored as F16 (a KV cache row). */
float kernels_dot_f32_f16(const float *a, const uint16_t *b, int n);
void kernels_axpy_f16(float *y, float a, const uint16_t *x, int n);

/* The SIMD level chosen at run time: "avx512", "avx2", "neon", "scalar",
 * and the CPU features its kernels use, e.g. "avx512 (vnni bf16)". */
const char *kernels_simd_name(void);
const char *kernels_simd_features(void);

/* Prefill of block type t (Q8_0, Q4_0) with fewer tokens than this runs as
 * integer tiles (activations quantized to Q8_0, as in decode), longer ones
 * as dequantized panels and sgemm (F32 activations): INT_MAX where the SIMD
 * level has a GEMM kernel for t, 0 for other types. */
int kernels_int8_prefill_below(dtype_t t);

/* Forces the portable C path (tests compare it with the SIMD path). */
void kernels_force_scalar(int on);

/* Debian's OpenBLAS may detect a recent CPU as an old core ("Prescott") and
 * run sgemm several times slower. This reads the CPU's features and, if
 * OPENBLAS_CORETYPE is unset, sets it and re-executes the program once so
 * that the library picks the right kernels when it loads. Call first thing
 * in main(). */
void kernels_fix_openblas_coretype(char **argv);
/* openblas_get_corename(), e.g. "SkylakeX". */
const char *kernels_blas_core(void);

/* Read bandwidth of main memory in bytes/s, measured with the pool's
 * threads summing a buffer of `bytes` (0: 1 GiB), best of several runs.
 * Allocates and frees its buffer; not for the hot path. The decode bound of
 * a model is its weight bytes per token divided by this. */
double kernels_measure_bandwidth(size_t bytes);

#endif
