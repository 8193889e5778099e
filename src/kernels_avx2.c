/*
 * kernels_avx2: x86 AVX2 + FMA (+ F16C) kernels. Compiled on every build of
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
 */
#include "kernels_impl.h"
#include "util.h"

#include <string.h>

#if defined(KERNELS_X86)
#include <immintrin.h>

#define ATTR_AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE_AVX2 static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Zero-padded tail: n (< width) elements of a float-type row as F32. */
static inline void tail_load(dtype_t dt, const void *row, int i, int n, float *dst)
{
    dtype_get(dt)->to_f32((const char *)row + dtype_row_size(dt, i), dst, n);
}

INLINE_AVX2 __m256 avx2_load(dtype_t dt, const void *row, int i)
{
    if (dt == DTYPE_BF16) {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    if (dt == DTYPE_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    return _mm256_loadu_ps((const float *)row + i);
}

INLINE_AVX2 float avx2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE_AVX2 void avx2_dot_block(dtype_t dt, dtype_t xt, const char *w, size_t row_bytes, int cols,
                                const void *x, float *out, const int nr)
{
    __m256 acc0[4], acc1[4];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        acc0[r] = _mm256_setzero_ps();
        acc1[r] = _mm256_setzero_ps();
    }
    int i = 0;
    for (; i + 16 <= cols; i += 16) {
        __m256 x0 = avx2_load(xt, x, i);
        __m256 x1 = avx2_load(xt, x, i + 8);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *row = w + (size_t)r * row_bytes;
            /* the same columns of the next group of rows (kernels_avx512.c) */
            if (nr == 4 && dt != DTYPE_F32)
                _mm_prefetch((const char *)((const uint16_t *)(row + 4 * row_bytes) + i), _MM_HINT_T0);
            acc0[r] = _mm256_fmadd_ps(avx2_load(dt, row, i), x0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(avx2_load(dt, row, i + 8), x1, acc1[r]);
        }
    }
    if (i + 8 <= cols) {
        __m256 x0 = avx2_load(xt, x, i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++)
            acc0[r] = _mm256_fmadd_ps(avx2_load(dt, w + (size_t)r * row_bytes, i), x0, acc0[r]);
        i += 8;
    }
    if (i < cols) {
        float xtail[8] = { 0 };
        tail_load(xt, x, i, cols - i, xtail);
        __m256 x0 = _mm256_loadu_ps(xtail);
        for (int r = 0; r < nr; r++) {
            float wt[8] = { 0 };
            tail_load(dt, w + (size_t)r * row_bytes, i, cols - i, wt);
            acc1[r] = _mm256_fmadd_ps(_mm256_loadu_ps(wt), x0, acc1[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        out[r] = avx2_hsum(_mm256_add_ps(acc0[r], acc1[r]));
}

INLINE_AVX2 void avx2_rows(dtype_t dt, const mat_t *m, int r0, int r1, const void *x, size_t x_stride,
                                int n_x, float *out, size_t out_stride)
{
    dtype_t xt = dtype_get(dt)->vec_dot_type;
    size_t row_bytes = dtype_row_size(dt, m->cols);
    const char *base = m->data;
    int r = r0;
    /* groups of four rows; each activation row in turn while they are in cache */
    for (; r + 4 <= r1; r += 4)
        for (int k = 0; k < n_x; k++)
            avx2_dot_block(dt, xt, base + (size_t)r * row_bytes, row_bytes, m->cols,
                             (const char *)x + (size_t)k * x_stride, out + (size_t)k * out_stride + r, 4);
    for (; r < r1; r++)
        for (int k = 0; k < n_x; k++)
            avx2_dot_block(dt, xt, base + (size_t)r * row_bytes, row_bytes, m->cols,
                             (const char *)x + (size_t)k * x_stride, out + (size_t)k * out_stride + r, 1);
}

static ATTR_AVX2 void avx2_rows_f32(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    avx2_rows(DTYPE_F32, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static ATTR_AVX2 void avx2_rows_bf16(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    avx2_rows(DTYPE_BF16, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static ATTR_AVX2 void avx2_rows_f16(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    avx2_rows(DTYPE_F16, m, r0, r1, x, x_stride, n_x, out, out_stride);
}

static ATTR_AVX2 void avx2_convert(dtype_t dt, const void *src, float *dst, int64_t n)
{
    int64_t i = 0;
    if (dt == DTYPE_BF16) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, avx2_load(DTYPE_BF16, src, i));
    } else if (dt == DTYPE_F16) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, avx2_load(DTYPE_F16, src, i));
    }
    dtype_get(dt)->to_f32((const char *)src + dtype_row_size(dt, i), dst + i, n - i);
}
static ATTR_AVX2 void avx2_bf16_to_f32(const void *src, float *dst, int64_t n)
{
    avx2_convert(DTYPE_BF16, src, dst, n);
}
static ATTR_AVX2 void avx2_f16_to_f32(const void *src, float *dst, int64_t n)
{
    avx2_convert(DTYPE_F16, src, dst, n);
}

/* F32 to BF16 rounding to nearest even, NaN kept quiet: bit for bit
 * f32_to_bf16 (util.c), 8 values at a time. */
static ATTR_AVX2 void avx2_f32_to_bf16(const float *src, void *dst, int64_t n)
{
    uint16_t *d = dst;
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i quiet = _mm256_set1_epi32(0x40);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_castps_si256(_mm256_loadu_ps(src + i));
        __m256i r = _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one));
        __m256i h = _mm256_srli_epi32(_mm256_add_epi32(u, r), 16);
        /* |u| > inf as signed compare: both operands are below 2^31 */
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        h = _mm256_blendv_epi8(h, _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet), nan);
        __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        _mm_storeu_si128((__m128i *)(d + i), packed);
    }
    dtype_get(DTYPE_BF16)->from_f32(src + i, d + i, n - i);
}

static ATTR_AVX2 float avx2_dot_f32(const float *a, const float *b, int n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    if (i + 8 <= n) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        i += 8;
    }
    float s = avx2_hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static ATTR_AVX2 void avx2_axpy_f32(float *y, float a, const float *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* F16 KV rows (F16C): as avx2_dot_f32 and avx2_axpy_f32 with b, x widened. */
static ATTR_AVX2 float avx2_dot_f32_f16(const float *a, const uint16_t *b, int n)
{
#define LOAD_H(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), LOAD_H(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), LOAD_H(b + i + 8), acc1);
    }
    if (i + 8 <= n) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), LOAD_H(b + i), acc0);
        i += 8;
    }
    float s = avx2_hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        s += a[i] * f16_to_f32(b[i]);
    return s;
}

static ATTR_AVX2 void avx2_axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, LOAD_H(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * f16_to_f32(x[i]);
#undef LOAD_H
}

static ATTR_AVX2 double avx2_sum_bytes(const char *p, size_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *f = (const float *)p;
    size_t nf = n / sizeof(float);
    for (size_t i = 0; i + 32 <= nf; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(f + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(f + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(f + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(f + i + 24));
    }
    return avx2_hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

void kernels_avx2_register(kernels_isa *k, const cpu_features *f)
{
    k->name = "avx2";
    k->rows[DTYPE_F32] = avx2_rows_f32;
    k->rows[DTYPE_BF16] = avx2_rows_bf16;
    k->to_f32[DTYPE_BF16] = avx2_bf16_to_f32;
    k->from_f32[DTYPE_BF16] = avx2_f32_to_bf16;
    if (f->f16c) {
        k->rows[DTYPE_F16] = avx2_rows_f16;
        k->to_f32[DTYPE_F16] = avx2_f16_to_f32;
        k->dot_f32_f16 = avx2_dot_f32_f16;
        k->axpy_f16 = avx2_axpy_f16;
    }
    k->dot_f32 = avx2_dot_f32;
    k->axpy_f32 = avx2_axpy_f32;
    k->sum_bytes = avx2_sum_bytes;
}

#endif /* KERNELS_X86 */
