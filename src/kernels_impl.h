/*
 * kernels_impl: what the kernels_*.c files share and nothing outside them
 * uses: the CPU's features, the table of kernels each SIMD level fills in,
 * and the row-kernel contract.
 *
 * Row kernel contract (rows_fn): for r in [r0, r1) and k in [0, n_x)
 *
 *   out[k * out_stride + r] = row r of W . x_k,   x_k = x + k * x_stride bytes,
 *
 * x_k stored in W's vec_dot_type. Each (r, k) result is computed with one
 * fixed sequence of operations that depends only on the column count and
 * the kernel, never on r0, r1, n_x or the thread: results are identical for
 * any split of rows and any batch size.
 *
 * Each level starts from the portable table and replaces the entries it has
 * faster kernels for (kernels_<isa>_register); a dtype without a kernel at
 * some level keeps the one below it. Adding a dtype means its traits row
 * (dtype.c) and, for speed, its kernels and their register lines here.
 */
#ifndef MDI_KERNELS_IMPL_H
#define MDI_KERNELS_IMPL_H

#include "kernels.h"
#include "util.h"

#include <string.h>

#if defined(__x86_64__)
#define KERNELS_X86 1
#endif
#if defined(__aarch64__)
#define KERNELS_NEON 1
#endif

enum { SIMD_SCALAR, SIMD_AVX2, SIMD_AVX512, SIMD_NEON };

typedef struct {
    int level;          /* SIMD_* */
    /* x86 */
    int avx2, fma, f16c;
    int avx512f, avx512bw, avx512vl, avx512dq;
    int avx512vnni, avx512bf16, avx512fp16, avxvnni;
    int amx_bf16;       /* AMX-TILE and AMX-BF16, the tile state granted by the OS */
    /* aarch64 */
    int neon, dotprod, arm_bf16, arm_fp16;
} cpu_features;

/* The features the kernels may use, after MDI_SIMD (see kernels_cpu.c). */
const cpu_features *kernels_cpu_features(void);

typedef void (*rows_fn)(const mat_t *w, int r0, int r1, const void *x, size_t x_stride, int n_x,
                        float *out, size_t out_stride);
/* As the traits' conversions (dtype.h), faster. */
typedef dtype_to_f32_fn to_f32_fn;
typedef dtype_from_f32_fn from_f32_fn;

/* Prefill GEMM for a block type, where a level has one: X, quantized to
 * the type's vec_dot_type (Q8_0, Q8_K), is repacked once a row at a time
 * (pack_x: x_bytes(cols) bytes per row), then run computes
 * out[k * out_stride + r] for r in [r0, r1) and all n packed rows,
 * repacking weight rows a panel at a time into panel (panel_bytes(cols),
 * one per thread). Each (r, k) result is bit for bit what the level's rows
 * kernel gives. */
typedef struct {
    size_t (*x_bytes)(int cols);
    size_t (*panel_bytes)(int cols);
    void (*pack_x)(const void *xq, void *xp, int cols);
    void (*run)(const mat_t *w, int r0, int r1, const void *xp, size_t xp_stride, int n, float *out,
                size_t out_stride, void *panel);
} gemm_kernel;

typedef struct {
    const char *name;                 /* "avx512", "avx2", "neon", "scalar" */
    rows_fn rows[DTYPE_COUNT];
    const gemm_kernel *gemm[DTYPE_COUNT]; /* NULL: prefill uses rows */
    /* > 0: for weights of this float type whose columns are a multiple of
     * 32 and at most this many, prefill runs the rows kernel over the whole
     * chunk (kernels_matvec_batch) instead of converting panels to F32 for
     * sgemm: BF16 on AMX, whose tiles outrun sgemm at any prompt length */
    int prefill_rows_cols[DTYPE_COUNT];
    to_f32_fn to_f32[DTYPE_COUNT];    /* weights to F32: embedding rows, prefill panels */
    from_f32_fn from_f32[DTYPE_COUNT]; /* activations to a vec_dot_type */
    float (*dot_f32)(const float *a, const float *b, int n);
    void (*axpy_f32)(float *y, float a, const float *x, int n);
    /* F16 KV cache rows: a (n,) F32 . b (n,) F16, and y += a * x (n,) F16 */
    float (*dot_f32_f16)(const float *a, const uint16_t *b, int n);
    void (*axpy_f16)(float *y, float a, const uint16_t *x, int n);
    double (*sum_bytes)(const char *p, size_t n); /* bandwidth probe */
} kernels_isa;

/* The table in use: the portable one when kernels_force_scalar is on. */
const kernels_isa *kernels_isa_get(void);

void kernels_portable_register(kernels_isa *k);
#if defined(KERNELS_X86)
void kernels_avx2_register(kernels_isa *k, const cpu_features *f);
void kernels_avx512_register(kernels_isa *k, const cpu_features *f);
#endif
#if defined(KERNELS_NEON)
void kernels_neon_register(kernels_isa *k, const cpu_features *f);
#endif

/* Start of thread ith's share of total rows, rounded down to 16 rows so
 * that two threads rarely write the same cache line of out. */
static inline int64_t kernels_split_rows(int64_t total, int ith, int nth)
{
    if (ith >= nth)
        return total;
    return (total * ith / nth) & ~(int64_t)15;
}

/* kernels_matmul with the path chosen: MATMUL_AUTO as kernels_matmul,
 * MATMUL_SGEMM (block types dequantized to F32 panels, then sgemm) or
 * MATMUL_INT8 (block types only: X quantized to Q8_0, integer row tiles;
 * other types take sgemm). For tests and bin/bench_kernels. */
enum { MATMUL_AUTO, MATMUL_SGEMM, MATMUL_INT8 };
void kernels_matmul_with(float *y, const mat_t *w, const float *x, int n, const float *bias, int path);

/* Element i of a row of F32 or F16 values, as F32: the scalar tails of the
 * SIMD kernels that take either. */
static inline float kernels_elem_f32(dtype_t dt, const void *row, int i)
{
    return dt == DTYPE_F16 ? f16_to_f32(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

/* The 8 six-bit scales and 8 mins of a Q4_K/Q5_K super-block (dtype.h)
 * as bytes: byte j of *sc is sub-block j's scale, of *mn its min. The
 * layout read four sub-blocks at a time (little-endian):
 *   a, b, c = scales[0..3], [4..7], [8..11]
 *   scales 0-3: a & 63 per byte;  4-7: (c & 15) | (a >> 6) << 4
 *   mins   0-3: b & 63 per byte;  4-7: (c >> 4) | (b >> 6) << 4 */
static inline void kernels_kq_scales(const uint8_t *s, uint64_t *sc, uint64_t *mn)
{
    uint32_t a, b, c;
    memcpy(&a, s, 4);
    memcpy(&b, s + 4, 4);
    memcpy(&c, s + 8, 4);
    uint32_t s_lo = a & 0x3f3f3f3fu, s_hi = (c & 0x0f0f0f0fu) | ((a >> 2) & 0x30303030u);
    uint32_t m_lo = b & 0x3f3f3f3fu, m_hi = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 2) & 0x30303030u);
    *sc = s_lo | (uint64_t)s_hi << 32;
    *mn = m_lo | (uint64_t)m_hi << 32;
}

/* Frees the prefill panel scratch (kernels_shutdown). */
void kernels_matmul_release(void);

#endif
