/*
 * kernels_avx512: x86 AVX-512 (F, BW, VL, DQ) kernels. Compiled on every build of
 * the architecture with target attributes and chosen at run time
 * (kernels_dispatch.c), so one binary runs on any CPU of the family.
 *
 * Float rows:
 * Row dot products: every row is reduced by one thread with one fixed
 * sequence of operations, whether it is computed alone or in a group of
 * four rows sharing the loads of x. That sequence depends only on the
 * column count and the SIMD level, so results are identical for any number
 * of threads and any split of rows. x is F32 for F32 and F16 weights, BF16
 * for BF16 weights (dtype.c, vec_dot_type).
 *
 *   per row, SIMD width V (16 avx512, 8 avx2, 4 neon):
 *   acc0 += w[i..i+V) * x[i..i+V)      for each full block of 2V columns
 *   acc1 += w[i+V..i+2V) * x[...]
 *   acc0 += one more block of V        if at least V columns remain
 *   acc1 += zero-padded tail (< V)     if any columns remain
 *   dot  = horizontal_sum(acc0 + acc1)
 *
 * With AVX512_BF16, BF16 rows use vdpbf16ps, which adds the products of 32
 * BF16 pairs into 16 F32 lanes (V = 32 values, same sequence as above).
 *
 * While a group of four rows is read, the same columns of the next group
 * are prefetched: rows of 2-byte types are only 4 KiB at TinyLlama's
 * shapes, too short for the hardware prefetcher to ramp up on, and without
 * it the BF16/F16 kernels read DRAM at about 55-75% of its bandwidth (with
 * it, and vdpbf16ps, about 90%).
 */
#include "kernels_impl.h"
#include "util.h"

#include <string.h>

#if defined(KERNELS_X86)
#include <immintrin.h>

#define ATTR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define INLINE_AVX512 static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512dq")))

/* Zero-padded tail: n (< width) elements of a float-type row as F32. */
static inline void tail_load(dtype_t dt, const void *row, int i, int n, float *dst)
{
    dtype_get(dt)->to_f32((const char *)row + dtype_row_size(dt, i), dst, n);
}

INLINE_AVX512 __m512 avx512_load(dtype_t dt, const void *row, int i)
{
    if (dt == DTYPE_BF16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    if (dt == DTYPE_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i)));
    return _mm512_loadu_ps((const float *)row + i);
}

/* Columns [i, i + 32) of the row of a 2-byte type four rows below, on
 * their way to L1 (F32 rows are long enough for the hardware prefetcher). */
INLINE_AVX512 void avx512_prefetch_next(const char *row, size_t row_bytes, int i)
{
    _mm_prefetch((const char *)((const uint16_t *)(row + 4 * row_bytes) + i), _MM_HINT_T0);
}

/* out[0..nr) = nr consecutive rows (row_bytes apart) . x; nr is 1 or 4;
 * x in xt (F32, or BF16 for BF16 rows). */
INLINE_AVX512 void avx512_dot_block(dtype_t dt, dtype_t xt, const char *w, size_t row_bytes, int cols,
                                    const void *x, float *out, const int nr)
{
    __m512 acc0[4], acc1[4];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        acc0[r] = _mm512_setzero_ps();
        acc1[r] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + 32 <= cols; i += 32) {
        __m512 x0 = avx512_load(xt, x, i);
        __m512 x1 = avx512_load(xt, x, i + 16);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *row = w + (size_t)r * row_bytes;
            if (nr == 4 && dt != DTYPE_F32)
                avx512_prefetch_next(row, row_bytes, i);
            acc0[r] = _mm512_fmadd_ps(avx512_load(dt, row, i), x0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(avx512_load(dt, row, i + 16), x1, acc1[r]);
        }
    }
    if (i + 16 <= cols) {
        __m512 x0 = avx512_load(xt, x, i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++)
            acc0[r] = _mm512_fmadd_ps(avx512_load(dt, w + (size_t)r * row_bytes, i), x0, acc0[r]);
        i += 16;
    }
    if (i < cols) {
        float xtail[16] = { 0 };
        tail_load(xt, x, i, cols - i, xtail);
        __m512 x0 = _mm512_loadu_ps(xtail);
        for (int r = 0; r < nr; r++) {
            float wt[16] = { 0 };
            tail_load(dt, w + (size_t)r * row_bytes, i, cols - i, wt);
            acc1[r] = _mm512_fmadd_ps(_mm512_loadu_ps(wt), x0, acc1[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
}

INLINE_AVX512 void avx512_rows(dtype_t dt, const mat_t *m, int r0, int r1, const void *x, size_t x_stride,
                                int n_x, float *out, size_t out_stride)
{
    dtype_t xt = dtype_get(dt)->vec_dot_type;
    size_t row_bytes = dtype_row_size(dt, m->cols);
    const char *base = m->data;
    int r = r0;
    /* groups of four rows; each activation row in turn while they are in cache */
    for (; r + 4 <= r1; r += 4)
        for (int k = 0; k < n_x; k++)
            avx512_dot_block(dt, xt, base + (size_t)r * row_bytes, row_bytes, m->cols,
                             (const char *)x + (size_t)k * x_stride, out + (size_t)k * out_stride + r, 4);
    for (; r < r1; r++)
        for (int k = 0; k < n_x; k++)
            avx512_dot_block(dt, xt, base + (size_t)r * row_bytes, row_bytes, m->cols,
                             (const char *)x + (size_t)k * x_stride, out + (size_t)k * out_stride + r, 1);
}

static ATTR_AVX512 void avx512_rows_f32(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    avx512_rows(DTYPE_F32, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static ATTR_AVX512 void avx512_rows_bf16(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    avx512_rows(DTYPE_BF16, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static ATTR_AVX512 void avx512_rows_f16(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    avx512_rows(DTYPE_F16, m, r0, r1, x, x_stride, n_x, out, out_stride);
}

/* ---- BF16 rows with AVX512_BF16 (vdpbf16ps) ---- */

#define ATTR_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define INLINE_AVX512BF16 \
    static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

INLINE_AVX512BF16 __m512bh bf16x32_load(const uint16_t *p)
{
    return (__m512bh)_mm512_loadu_si512((const void *)p);
}

/* As avx512_dot_block for BF16 rows and BF16 x, 32 values per step. */
INLINE_AVX512BF16 void avx512bf16_dot_block(const uint16_t *w, size_t row_len, int cols, const uint16_t *x,
                                            float *out, const int nr)
{
    __m512 acc0[4], acc1[4];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        acc0[r] = _mm512_setzero_ps();
        acc1[r] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + 64 <= cols; i += 64) {
        __m512bh x0 = bf16x32_load(x + i);
        __m512bh x1 = bf16x32_load(x + i + 32);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const uint16_t *row = w + (size_t)r * row_len;
            if (nr == 4) {
                _mm_prefetch((const char *)(row + 4 * row_len + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(row + 4 * row_len + i + 32), _MM_HINT_T0);
            }
            acc0[r] = _mm512_dpbf16_ps(acc0[r], bf16x32_load(row + i), x0);
            acc1[r] = _mm512_dpbf16_ps(acc1[r], bf16x32_load(row + i + 32), x1);
        }
    }
    if (i + 32 <= cols) {
        __m512bh x0 = bf16x32_load(x + i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++)
            acc0[r] = _mm512_dpbf16_ps(acc0[r], bf16x32_load(w + (size_t)r * row_len + i), x0);
        i += 32;
    }
    if (i < cols) {
        __mmask32 k = (__mmask32)((1ull << (cols - i)) - 1);
        __m512bh x0 = (__m512bh)_mm512_maskz_loadu_epi16(k, x + i);
        for (int r = 0; r < nr; r++)
            acc1[r] = _mm512_dpbf16_ps(acc1[r], (__m512bh)_mm512_maskz_loadu_epi16(k, w + (size_t)r * row_len + i),
                                       x0);
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
}

static ATTR_AVX512BF16 void avx512bf16_rows_bf16(const mat_t *m, int r0, int r1, const void *x, size_t x_stride,
                                                 int n_x, float *out, size_t out_stride)
{
    size_t row_len = (size_t)m->cols; /* BF16 values per row */
    const uint16_t *base = m->data;
    int r = r0;
    for (; r + 4 <= r1; r += 4)
        for (int k = 0; k < n_x; k++)
            avx512bf16_dot_block(base + (size_t)r * row_len, row_len, m->cols,
                                 (const uint16_t *)((const char *)x + (size_t)k * x_stride),
                                 out + (size_t)k * out_stride + r, 4);
    for (; r < r1; r++)
        for (int k = 0; k < n_x; k++)
            avx512bf16_dot_block(base + (size_t)r * row_len, row_len, m->cols,
                                 (const uint16_t *)((const char *)x + (size_t)k * x_stride),
                                 out + (size_t)k * out_stride + r, 1);
}

static ATTR_AVX512 void avx512_convert(dtype_t dt, const void *src, float *dst, int64_t n)
{
    int64_t i = 0;
    if (dt == DTYPE_BF16) {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, avx512_load(DTYPE_BF16, src, i));
    } else if (dt == DTYPE_F16) {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, avx512_load(DTYPE_F16, src, i));
    }
    dtype_get(dt)->to_f32((const char *)src + dtype_row_size(dt, i), dst + i, n - i);
}
static ATTR_AVX512 void avx512_bf16_to_f32(const void *src, float *dst, int64_t n)
{
    avx512_convert(DTYPE_BF16, src, dst, n);
}
static ATTR_AVX512 void avx512_f16_to_f32(const void *src, float *dst, int64_t n)
{
    avx512_convert(DTYPE_F16, src, dst, n);
}

/* F32 to BF16 rounding to nearest even, NaN kept quiet: bit for bit
 * f32_to_bf16 (util.c), 16 values at a time. */
static ATTR_AVX512 void avx512_f32_to_bf16(const float *src, void *dst, int64_t n)
{
    uint16_t *d = dst;
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i quiet = _mm512_set1_epi32(0x40);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_castps_si512(_mm512_loadu_ps(src + i));
        __m512i r = _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one));
        __m512i h = _mm512_srli_epi32(_mm512_add_epi32(u, r), 16);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        h = _mm512_mask_or_epi32(h, nan, _mm512_srli_epi32(u, 16), quiet);
        _mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtepi32_epi16(h));
    }
    dtype_get(DTYPE_BF16)->from_f32(src + i, d + i, n - i);
}

static ATTR_AVX512 float avx512_dot_f32(const float *a, const float *b, int n)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    if (i + 16 <= n) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        i += 16;
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), acc1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

static ATTR_AVX512 void avx512_axpy_f32(float *y, float a, const float *x, int n)
{
    __m512 av = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 yv = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, y + i));
        _mm512_mask_storeu_ps(y + i, k, yv);
    }
}

/* F16 KV rows: as avx512_dot_f32 and avx512_axpy_f32 with b, x widened. */
static ATTR_AVX512 float avx512_dot_f32_f16(const float *a, const uint16_t *b, int n)
{
#define LOAD_H(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define LOAD_H_TAIL(k, p) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((k), (p)))
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), LOAD_H(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), LOAD_H(b + i + 16), acc1);
    }
    if (i + 16 <= n) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), LOAD_H(b + i), acc0);
        i += 16;
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), LOAD_H_TAIL(k, b + i), acc1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

static ATTR_AVX512 void avx512_axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    __m512 av = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, LOAD_H(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(av, LOAD_H_TAIL(k, x + i), _mm512_maskz_loadu_ps(k, y + i)));
    }
#undef LOAD_H
#undef LOAD_H_TAIL
}

static ATTR_AVX512 double avx512_sum_bytes(const char *p, size_t n)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *f = (const float *)p;
    size_t nf = n / sizeof(float);
    for (size_t i = 0; i + 64 <= nf; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(f + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(f + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(f + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(f + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

void kernels_avx512_register(kernels_isa *k, const cpu_features *f)
{
    k->name = "avx512";
    k->rows[DTYPE_F32] = avx512_rows_f32;
    k->rows[DTYPE_BF16] = avx512_rows_bf16;
    k->rows[DTYPE_F16] = avx512_rows_f16;
    if (f->avx512bf16)
        k->rows[DTYPE_BF16] = avx512bf16_rows_bf16;
    k->to_f32[DTYPE_BF16] = avx512_bf16_to_f32;
    k->to_f32[DTYPE_F16] = avx512_f16_to_f32;
    k->from_f32[DTYPE_BF16] = avx512_f32_to_bf16;
    k->dot_f32 = avx512_dot_f32;
    k->axpy_f32 = avx512_axpy_f32;
    k->dot_f32_f16 = avx512_dot_f32_f16;
    k->axpy_f16 = avx512_axpy_f16;
    k->sum_bytes = avx512_sum_bytes;
}

#endif /* KERNELS_X86 */
