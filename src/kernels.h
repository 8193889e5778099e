/*
 * kernels: the numeric building blocks of the forward pass, and the thread
 * pool that runs them.
 *
 * Weight matrices are row-major, one row per output feature, as Hugging Face
 * stores nn.Linear weights: W (rows = out_features, cols = in_features).
 * A matrix carries its storage dtype; every kernel takes F32 activations and
 * produces F32. New storage formats (an 8-bit block format next) plug in as a
 * new dtype with its row dot-product and its row-to-F32 conversion, nothing
 * else changes.
 *
 * Decode (one token) uses kernels_matvec: rows are split across the pool's
 * threads by index (thread ith of nth takes a contiguous block of rows), and
 * each row is reduced by one thread in a fixed order, so the result does not
 * depend on the number of threads.
 * Prefill (n tokens) uses kernels_matmul: OpenBLAS sgemm, with non-F32
 * weights converted to F32 in row panels first.
 *
 * The pool is process-wide and configured once (kernels_init); only one
 * thread (the node's compute thread) may call the kernels.
 */
#ifndef MDI_KERNELS_H
#define MDI_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DTYPE_F32 = 0,
    DTYPE_F16 = 1,
    DTYPE_BF16 = 2,
    DTYPE_COUNT
} dtype_t;

size_t dtype_size(dtype_t t);           /* bytes per element */
const char *dtype_name(dtype_t t);      /* "f32", "f16", "bf16" */
int dtype_parse(const char *s, dtype_t *out); /* accepts f32/F32/float32, bf16/BF16/bfloat16, f16/F16/float16; 0 or -1 */
/* dst (n,) of dst_t = src (n,) of src_t; narrowing rounds to nearest even.
 * The one conversion loop of the project: loading, chunk writing and the
 * wire all use it. */
void dtype_convert(void *dst, dtype_t dst_t, const void *src, dtype_t src_t, size_t n);

typedef struct {
    dtype_t dtype;
    int rows, cols;
    const void *data; /* borrowed: from an mmap or a buffer the model owns */
} mat_t;

/* One matvec of a batch: out (W.rows,) = W (rows, cols) @ x (cols,) [+ bias]. */
typedef struct {
    float *out;
    const mat_t *w;
    const float *x;
    const float *bias; /* may be NULL */
} matvec_job;

/* Starts the pool with n_threads workers in total (the caller counts as one)
 * and tells OpenBLAS to use as many. Call once before any kernel. */
int kernels_init(int n_threads);
int kernels_n_threads(void);
void kernels_shutdown(void);

/* Runs fn(arg, ith, nth) on every thread of the pool, the caller as ith 0,
 * and returns when all are done. */
typedef void (*kernels_task_fn)(void *arg, int ith, int nth);
void kernels_parallel(kernels_task_fn fn, void *arg);

/* out = W @ x (+ bias) for each job; all jobs share one dispatch so that
 * q/k/v or gate/up cost one synchronisation, not three. */
void kernels_matvec_batch(const matvec_job *jobs, int n_jobs);
void kernels_matvec(float *out, const mat_t *w, const float *x);

/* Y (n, W.rows) = X (n, W.cols) @ W^T (+ bias broadcast over rows).
 * For F32 weights a single sgemm; others are converted to F32 in panels
 * into scratch (owned by the kernels module, grown as needed). */
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

/* The SIMD level chosen at run time: "avx512", "avx2", "neon", "scalar". */
const char *kernels_simd_name(void);

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
