/*
 * kernels_avx2: x86 AVX2 + FMA (+ F16C) kernels. Compiled on every build of
 * the architecture with target attributes and chosen at run time
 * (kernels_dispatch.c), so one binary runs on any CPU of the family.
 *
 * Float rows:
 * Row dot products: every (weight row, activation row) pair is reduced by
 * one thread with one fixed sequence of operations, whether it is computed
 * alone or in a tile of several weight rows and activation rows sharing
 * their loads (each weight vector read once for the batch). That sequence
 * depends only on the column count and the SIMD level, so results are
 * identical for any number of threads, any split of rows and any batch. x
 * is F32 for F32 and F16 weights, BF16 for BF16 weights (dtype.c, vec_dot_type).
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

/* A tile: nr consecutive weight rows (row_bytes apart; 1, 2 or 4) times nx
 * activation rows (x_stride bytes apart; 1 or 2; nr * nx <= 4, the
 * accumulators of sixteen registers), each weight vector loaded (and
 * converted) once for the nx activation rows; out[k * out_stride + r] =
 * row r . x_k. Every (r, k) pair runs the sequence of the header whatever
 * the tile. pf: prefetch the same columns four rows on (kernels_avx512.c). */
INLINE_AVX2 void avx2_tile(dtype_t dt, dtype_t xt, const char *w, size_t row_bytes, int cols, const char *x,
                           size_t x_stride, float *out, size_t out_stride, const int nr, const int nx, const int pf)
{
    __m256 acc0[4][2], acc1[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            acc0[r][k] = _mm256_setzero_ps();
            acc1[r][k] = _mm256_setzero_ps();
        }
    int i = 0;
    for (; i + 16 <= cols; i += 16) {
        __m256 x0[2], x1[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            x0[k] = avx2_load(xt, x + (size_t)k * x_stride, i);
            x1[k] = avx2_load(xt, x + (size_t)k * x_stride, i + 8);
        }
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *row = w + (size_t)r * row_bytes;
            if (pf && dt != DTYPE_F32)
                _mm_prefetch((const char *)((const uint16_t *)(row + 4 * row_bytes) + i), _MM_HINT_T0);
            __m256 w0 = avx2_load(dt, row, i), w1 = avx2_load(dt, row, i + 8);
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++) {
                acc0[r][k] = _mm256_fmadd_ps(w0, x0[k], acc0[r][k]);
                acc1[r][k] = _mm256_fmadd_ps(w1, x1[k], acc1[r][k]);
            }
        }
    }
    if (i + 8 <= cols) {
        __m256 x0[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            x0[k] = avx2_load(xt, x + (size_t)k * x_stride, i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            __m256 w0 = avx2_load(dt, w + (size_t)r * row_bytes, i);
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++)
                acc0[r][k] = _mm256_fmadd_ps(w0, x0[k], acc0[r][k]);
        }
        i += 8;
    }
    if (i < cols) {
        __m256 x0[2];
        for (int k = 0; k < nx; k++) {
            float xtail[8] = { 0 };
            tail_load(xt, x + (size_t)k * x_stride, i, cols - i, xtail);
            x0[k] = _mm256_loadu_ps(xtail);
        }
        for (int r = 0; r < nr; r++) {
            float wt[8] = { 0 };
            tail_load(dt, w + (size_t)r * row_bytes, i, cols - i, wt);
            __m256 w0 = _mm256_loadu_ps(wt);
            for (int k = 0; k < nx; k++)
                acc1[r][k] = _mm256_fmadd_ps(w0, x0[k], acc1[r][k]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            out[(size_t)k * out_stride + r] = avx2_hsum(_mm256_add_ps(acc0[r][k], acc1[r][k]));
}

/* Groups of four weight rows: two activation rows at a time against two
 * rows of the group, then the other two, while the group is in cache (the
 * first tiles of a group prefetch the next), and an odd activation row (or
 * every one, for F32) against all four; the rows left one at a time. */
INLINE_AVX2 void avx2_rows(dtype_t dt, const mat_t *m, int r0, int r1, const void *xv, size_t x_stride, int n_x,
                           float *out, size_t out_stride)
{
    dtype_t xt = dtype_get(dt)->vec_dot_type;
    size_t row_bytes = dtype_row_size(dt, m->cols);
    const char *base = m->data, *x = xv;
    int cols = m->cols, r = r0;
    for (; r + 4 <= r1; r += 4) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        /* F32 rows are loaded as the multiplications' memory operands:
         * there the 4 x 1 tile is faster (fewer registers, four streams) */
        for (; dt != DTYPE_F32 && k + 2 <= n_x; k += 2) {
            const char *xk = x + (size_t)k * x_stride;
            float *o = out + (size_t)k * out_stride + r;
            if (k == 0) {
                avx2_tile(dt, xt, w, row_bytes, cols, xk, x_stride, o, out_stride, 2, 2, 1);
                avx2_tile(dt, xt, w + 2 * row_bytes, row_bytes, cols, xk, x_stride, o + 2, out_stride, 2, 2, 1);
            } else {
                avx2_tile(dt, xt, w, row_bytes, cols, xk, x_stride, o, out_stride, 2, 2, 0);
                avx2_tile(dt, xt, w + 2 * row_bytes, row_bytes, cols, xk, x_stride, o + 2, out_stride, 2, 2, 0);
            }
        }
        for (; k < n_x; k++)
            avx2_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                      out + (size_t)k * out_stride + r, out_stride, 4, 1, k == 0);
    }
    for (; r < r1; r++) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            avx2_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                      out + (size_t)k * out_stride + r, out_stride, 1, 2, 0);
        if (k < n_x)
            avx2_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                      out + (size_t)k * out_stride + r, out_stride, 1, 1, 0);
    }
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

/* a (n,) . b (n,) with b F32, or F16 (the rows of an F16 KV cache). */
INLINE_AVX2 float avx2_dot(dtype_t bt, const float *a, const void *b, int n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), avx2_load(bt, b, i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), avx2_load(bt, b, i + 8), acc1);
    }
    if (i + 8 <= n) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), avx2_load(bt, b, i), acc0);
        i += 8;
    }
    float s = avx2_hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        s += a[i] * kernels_elem_f32(bt, b, i);
    return s;
}

/* y (n,) += a * x (n,), x F32 or F16. */
INLINE_AVX2 void avx2_axpy(dtype_t xt, float *y, float a, const void *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, avx2_load(xt, x, i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * kernels_elem_f32(xt, x, i);
}

static ATTR_AVX2 float avx2_dot_f32(const float *a, const float *b, int n)
{
    return avx2_dot(DTYPE_F32, a, b, n);
}
static ATTR_AVX2 void avx2_axpy_f32(float *y, float a, const float *x, int n)
{
    avx2_axpy(DTYPE_F32, y, a, x, n);
}
/* (F16C: registered only where the CPU has it) */
static ATTR_AVX2 float avx2_dot_f32_f16(const float *a, const uint16_t *b, int n)
{
    return avx2_dot(DTYPE_F16, a, b, n);
}
static ATTR_AVX2 void avx2_axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    avx2_axpy(DTYPE_F16, y, a, x, n);
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

/* ==== Block types: Q8_0 and Q4_0 weights times Q8_0 activations ====
 *
 * Per step and per (weight row r, activation row k), in exact int32 lanes:
 *
 *   Q8_0, one block per ymm: I = madd16(maddubs(|w|, sign(x_k, w)), 1)
 *   Q4_0, two blocks per ymm, 128-bit lane j = block b + j:
 *         I = C_k + madd16(maddubs(lo nibbles, x_k first halves)
 *                          + maddubs(hi nibbles, x_k second halves), 1)
 *         C_k = -8 * (sums of x_k)
 *
 * (maddubs cannot saturate: |w| <= 128 and |x| <= 127, or nibbles <= 15),
 * then acc_rk = fma(float(I), dw * dx, acc_rk) and the row's result is the
 * sum of acc_rk's lanes. The integer sums are exact: the result differs
 * from the portable path only in the order of the float additions, by less
 * than (nb + 8) * 2^-24 * sum_b |dw_b dx_b I_b| for nb blocks. Tiles of 4
 * weight rows x 2 activation rows; each (r, k) pair runs the same
 * operations whatever its tile. Each step prefetches the place four rows
 * on (see q512_prefetch in kernels_avx512.c).
 */
#define ATTR_Q256 __attribute__((target("avx2,fma,f16c")))
#define INLINE_Q256 static inline __attribute__((always_inline, target("avx2,fma,f16c")))

INLINE_Q256 float q256_half(const void *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof(h));
    return _cvtsh_ss(h);
}

/* [d0, d1] (f16 at p0 and, when p1, at p1; else 0) spread over the lanes
 * by idx. */
INLINE_Q256 __m256 q256_scales2(const void *p0, const void *p1, __m256i idx)
{
    uint16_t h0, h1 = 0;
    memcpy(&h0, p0, sizeof(h0));
    if (p1)
        memcpy(&h1, p1, sizeof(h1));
    __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)h0 | (uint32_t)h1 << 16)));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(d), idx);
}

INLINE_Q256 __m256i q256_madd(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Q4_0, a pair of blocks at block b (two = 0: the last, single block):
 * nibbles [lo_b | lo_b+1] and [hi_b | hi_b+1] against x's first and second
 * halves; the two maddubs results add in int16 (|sum| <= 7680) before
 * madd16. int32 lanes 0..3 are block b, 4..7 block b + 1. */
INLINE_Q256 void q256_step_q4(const int two, int b, const char *w, size_t row_bytes, const char *x,
                              size_t x_stride, const int nr, const int nx, __m256 acc[4][2])
{
    const __m256i idx = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256i mask = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    __m256i XL[2], XH[2], C[2];
    __m256 DX[2];
#pragma GCC unroll 2
    for (int k = 0; k < nx; k++) {
        const block_q8_0 *xb = (const block_q8_0 *)(x + (size_t)k * x_stride) + b;
        __m256i x0 = _mm256_loadu_si256((const __m256i *)xb[0].qs);
        __m256i x1 = two ? _mm256_loadu_si256((const __m256i *)xb[1].qs) : _mm256_setzero_si256();
        XL[k] = _mm256_permute2x128_si256(x0, x1, 0x20);
        XH[k] = _mm256_permute2x128_si256(x0, x1, 0x31);
        DX[k] = q256_scales2(&xb[0].d, two ? &xb[1].d : NULL, idx);
        __m256i eight = _mm256_set1_epi8(8);
        __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(eight, XL[k]), _mm256_maddubs_epi16(eight, XH[k]));
        C[k] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(s16, ones));
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        const block_q4_0 *wb = (const block_q4_0 *)(w + (size_t)r * row_bytes) + b;
        _mm_prefetch((const char *)wb + 4 * row_bytes, _MM_HINT_T0);
        __m128i q0 = _mm_loadu_si128((const __m128i *)wb[0].qs);
        __m128i q1 = two ? _mm_loadu_si128((const __m128i *)wb[1].qs) : _mm_setzero_si128();
        __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
        __m256i lo = _mm256_and_si256(q, mask), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
        __m256 DW = q256_scales2(&wb[0].d, two ? &wb[1].d : NULL, idx);
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, XL[k]), _mm256_maddubs_epi16(hi, XH[k]));
            __m256i I = _mm256_add_epi32(C[k], _mm256_madd_epi16(s16, ones));
            acc[r][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I), _mm256_mul_ps(DW, DX[k]), acc[r][k]);
        }
    }
}

INLINE_Q256 void q256_tile(const int q4, const char *w, size_t row_bytes, int nb, const char *x, size_t x_stride,
                           const int nr, const int nx, float *out, size_t out_stride)
{
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            acc[r][k] = _mm256_setzero_ps();
    if (q4) {
        int b = 0;
        for (; b + 2 <= nb; b += 2)
            q256_step_q4(1, b, w, row_bytes, x, x_stride, nr, nx, acc);
        if (b < nb)
            q256_step_q4(0, b, w, row_bytes, x, x_stride, nr, nx, acc);
    }
    for (int b = 0; !q4 && b < nb; b++) {
        __m256i X[2], C[2];
        __m256 DX[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            const block_q8_0 *xb = (const block_q8_0 *)(x + (size_t)k * x_stride) + b;
            X[k] = _mm256_loadu_si256((const __m256i *)xb->qs);
            DX[k] = _mm256_set1_ps(q256_half(&xb->d));
            if (q4)
                C[k] = _mm256_sub_epi32(_mm256_setzero_si256(), q256_madd(_mm256_set1_epi8(8), X[k]));
        }
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *row = w + (size_t)r * row_bytes;
            __m256i W, Q = _mm256_setzero_si256();
            __m256 DW;
            if (q4) {
                const block_q4_0 *wb = (const block_q4_0 *)row + b;
                __m128i q = _mm_loadu_si128((const __m128i *)wb->qs);
                W = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
                W = _mm256_and_si256(W, _mm256_set1_epi8(0x0f));
                DW = _mm256_set1_ps(q256_half(&wb->d));
            } else {
                const block_q8_0 *wb = (const block_q8_0 *)row + b;
                _mm_prefetch((const char *)wb + 4 * row_bytes, _MM_HINT_T0);
                Q = _mm256_loadu_si256((const __m256i *)wb->qs);
                W = _mm256_abs_epi8(Q);
                DW = _mm256_set1_ps(q256_half(&wb->d));
            }
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++) {
                __m256i I = q4 ? _mm256_add_epi32(C[k], q256_madd(W, X[k])) : q256_madd(W, _mm256_sign_epi8(X[k], Q));
                acc[r][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I), _mm256_mul_ps(DW, DX[k]), acc[r][k]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[r][k]), _mm256_extractf128_ps(acc[r][k], 1));
            s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            s = _mm_add_ss(s, _mm_movehdup_ps(s));
            out[(size_t)k * out_stride + r] = _mm_cvtss_f32(s);
        }
}

INLINE_Q256 void q256_rows(const int q4, const mat_t *m, int r0, int r1, const void *xv, size_t x_stride, int n_x,
                           float *out, size_t out_stride)
{
    size_t row_bytes = dtype_row_size(m->dtype, m->cols);
    int nb = m->cols / QK8_0;
    const char *base = m->data, *x = xv;
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            q256_tile(q4, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 2,
                      out + (size_t)k * out_stride + r, out_stride);
        for (; k < n_x; k++)
            q256_tile(q4, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 1,
                      out + (size_t)k * out_stride + r, out_stride);
    }
    for (; r < r1; r++) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            q256_tile(q4, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 2,
                      out + (size_t)k * out_stride + r, out_stride);
        for (; k < n_x; k++)
            q256_tile(q4, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 1,
                      out + (size_t)k * out_stride + r, out_stride);
    }
}

static ATTR_Q256 void avx2_rows_q8_0(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                     float *out, size_t out_stride)
{
    q256_rows(0, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static ATTR_Q256 void avx2_rows_q4_0(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                     float *out, size_t out_stride)
{
    q256_rows(1, m, r0, r1, x, x_stride, n_x, out, out_stride);
}

/* roundf, half away from zero (see kernels_avx512.c). */
INLINE_Q256 __m256 q256_round(__m256 p)
{
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(p, t));
    __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 one = _mm256_or_ps(_mm256_and_ps(p, sign), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(up, one));
}

/* As q8_0_from_f32 (dtype.c), bit for bit. */
static ATTR_Q256 void avx2_q8_0_from_f32(const float *src, void *dst, int64_t n)
{
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    block_q8_0 *b = dst;
    for (int64_t k = 0; k < n / QK8_0; k++) {
        __m256 v[4];
        for (int j = 0; j < 4; j++)
            v[j] = _mm256_loadu_ps(src + k * QK8_0 + 8 * j);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        memcpy(&b[k].d, &h, sizeof(h));
        __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int j = 0; j < 4; j++)
            q[j] = _mm256_cvttps_epi32(q256_round(_mm256_mul_ps(v[j], vid)));
        /* packs work within 128-bit lanes: put the dwords back in order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)b[k].qs, p);
    }
}

static ATTR_Q256 void avx2_q8_0_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q8_0 *b = src;
    for (int64_t k = 0; k < n / QK8_0; k++) {
        __m256 d = _mm256_set1_ps(q256_half(&b[k].d));
        for (int j = 0; j < 4; j++) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b[k].qs + 8 * j)));
            _mm256_storeu_ps(dst + k * QK8_0 + 8 * j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
        }
    }
}

static ATTR_Q256 void avx2_q4_0_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q4_0 *b = src;
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m256i eight = _mm256_set1_epi32(8);
    for (int64_t k = 0; k < n / QK4_0; k++) {
        __m256 d = _mm256_set1_ps(q256_half(&b[k].d));
        __m128i q = _mm_loadu_si128((const __m128i *)b[k].qs);
        __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        __m128i part[4] = { lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8) };
        for (int j = 0; j < 4; j++) {
            __m256i v = _mm256_sub_epi32(_mm256_cvtepu8_epi32(part[j]), eight);
            _mm256_storeu_ps(dst + k * QK4_0 + 8 * j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(v)));
        }
    }
}

/* ==== K-quants: Q4_K, Q5_K and Q6_K weights times Q8_K activations ====
 *
 * As the AVX-512 kernels (kernels_avx512.c, where the layouts are drawn),
 * 32 values per step (s = 0..7 over a super-block): x_k's qs[32s ..] against
 * the weights' levels in the same order, then per (weight row r,
 * activation row k) in exact int32 lanes
 *   D = madd16(maddubs(levels, x_k), 1),  A_rk += madd16(D, scale)
 * with each lane's sub-block scale in its low 16 bits (Q4_K/Q5_K: one
 * sub-block of 32 per step; Q6_K: two of 16, lanes 0..3 and 4..7). Per
 * super-block the integer totals and the float operations are the portable
 * vec_dot's (dtype.c), in its order: results bit for bit the portable
 * path's. Tiles of 4 weight rows x 2 activation rows. Dequantization (the
 * prefill panels) is the portable path's bit for bit too.
 */
INLINE_Q256 int32_t q256_hsum(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* The levels of step s (values 32s .. 32s + 31) of a weight super-block. */
INLINE_Q256 __m256i q256_klevels(const int type, const char *blk, const int s)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    if (type == 6) {
        const block_q6_K *b = (const block_q6_K *)blk;
        int h = s >> 2, odd = (s >> 1) & 1, half = s & 1;
        __m256i L = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * half));
        __m256i H = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        __m256i lv = odd ? _mm256_and_si256(_mm256_srli_epi16(L, 4), m4) : _mm256_and_si256(L, m4);
        __m256i hv = !odd ? (half ? _mm256_slli_epi16(H, 2) : _mm256_slli_epi16(H, 4))
                          : (half ? _mm256_srli_epi16(H, 2) : H);
        return _mm256_or_si256(lv, _mm256_and_si256(hv, _mm256_set1_epi8(0x30)));
    }
    const uint8_t *qs = type == 5 ? ((const block_q5_K *)blk)->qs : ((const block_q4_K *)blk)->qs;
    __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * (s >> 1)));
    __m256i W = (s & 1) ? _mm256_and_si256(_mm256_srli_epi16(q, 4), m4) : _mm256_and_si256(q, m4);
    if (type == 5) {
        const __m256i bit = _mm256_set1_epi8((char)(1 << s));
        __m256i H = _mm256_loadu_si256((const __m256i *)((const block_q5_K *)blk)->qh);
        __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(H, bit), bit);
        W = _mm256_add_epi8(W, _mm256_and_si256(set, _mm256_set1_epi8(16)));
    }
    return W;
}

INLINE_Q256 void q256_ktile(const int type, const char *w, size_t row_bytes, int nb, const char *x, size_t x_stride,
                            const int nr, const int nx, float *out, size_t out_stride)
{
    const size_t wb = type == 6 ? sizeof(block_q6_K) : type == 5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const __m256i ones = _mm256_set1_epi16(1);
    float sum[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            sum[r][k] = 0.0f;
    for (int b = 0; b < nb; b++) {
        const char *wr[4];
        const block_q8_K *xb[2];
        uint8_t sc[4][16]; /* per row: Q4_K/Q5_K the 8 scales, Q6_K the 16 (as bytes) */
        __m256i SM[4];     /* per row: Q4_K/Q5_K mins, each twice, int16; Q6_K scales int16 */
        __m256i A[4][2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            xb[k] = (const block_q8_K *)(x + (size_t)k * x_stride) + b;
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            wr[r] = w + (size_t)r * row_bytes + (size_t)b * wb;
            const char *p = wr[r] + 4 * row_bytes;
            _mm_prefetch(p, _MM_HINT_T0);
            _mm_prefetch(p + 64, _MM_HINT_T0);
            _mm_prefetch(p + 128, _MM_HINT_T0);
            _mm_prefetch(p + wb - 1, _MM_HINT_T0);
            if (type == 6) {
                __m128i s8 = _mm_loadu_si128((const __m128i *)((const block_q6_K *)wr[r])->scales);
                _mm_storeu_si128((__m128i *)sc[r], s8);
                SM[r] = _mm256_cvtepi8_epi16(s8);
            } else {
                uint64_t s64, m64;
                kernels_kq_scales(((const block_q4_K *)wr[r])->scales, &s64, &m64);
                memcpy(sc[r], &s64, 8);
                __m128i m = _mm_cvtsi64_si128((long long)m64);
                SM[r] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
            }
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++)
                A[r][k] = _mm256_setzero_si256();
        }
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            __m256i X[2];
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++)
                X[k] = _mm256_loadu_si256((const __m256i *)(xb[k]->qs + 32 * s));
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                __m256i W = q256_klevels(type, wr[r], s);
                __m256i S = type == 6 ? _mm256_set_m128i(_mm_set1_epi32((uint16_t)(int16_t)(int8_t)sc[r][2 * s + 1]),
                                                         _mm_set1_epi32((uint16_t)(int16_t)(int8_t)sc[r][2 * s]))
                                      : _mm256_set1_epi32(sc[r][s]);
#pragma GCC unroll 2
                for (int k = 0; k < nx; k++) {
                    __m256i D = _mm256_madd_epi16(_mm256_maddubs_epi16(W, X[k]), ones);
                    A[r][k] = _mm256_add_epi32(A[r][k], _mm256_madd_epi16(D, S));
                }
            }
        }
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            __m256i bs = _mm256_loadu_si256((const __m256i *)xb[k]->bsums);
            float dx = xb[k]->d;
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                int32_t iq = q256_hsum(A[r][k]);
                int32_t im = q256_hsum(_mm256_madd_epi16(bs, SM[r]));
                if (type == 6) {
                    sum[r][k] += q256_half(&((const block_q6_K *)wr[r])->d) * dx * (float)(iq - 32 * im);
                } else {
                    const block_q4_K *q = (const block_q4_K *)wr[r];
                    float d = q256_half(&q->d), dmin = q256_half(&q->dmin);
                    sum[r][k] += d * dx * (float)iq - dmin * dx * (float)im;
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            out[(size_t)k * out_stride + r] = sum[r][k];
}

INLINE_Q256 void q256_krows(const int type, const mat_t *m, int r0, int r1, const void *xv, size_t x_stride,
                            int n_x, float *out, size_t out_stride)
{
    size_t row_bytes = dtype_row_size(m->dtype, m->cols);
    int nb = m->cols / QK_K;
    const char *base = m->data, *x = xv;
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            q256_ktile(type, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 2,
                       out + (size_t)k * out_stride + r, out_stride);
        for (; k < n_x; k++)
            q256_ktile(type, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 1,
                       out + (size_t)k * out_stride + r, out_stride);
    }
    for (; r < r1; r++) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            q256_ktile(type, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 2,
                       out + (size_t)k * out_stride + r, out_stride);
        for (; k < n_x; k++)
            q256_ktile(type, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 1,
                       out + (size_t)k * out_stride + r, out_stride);
    }
}

#define Q256_KROWS(NAME, TYPE)                                                                                     \
    static ATTR_Q256 void NAME(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x, float *out, \
                               size_t out_stride)                                                                  \
    {                                                                                                              \
        q256_krows(TYPE, m, r0, r1, x, x_stride, n_x, out, out_stride);                                            \
    }
Q256_KROWS(avx2_rows_q4_K, 4)
Q256_KROWS(avx2_rows_q5_K, 5)
Q256_KROWS(avx2_rows_q6_K, 6)

/* Q4_K/Q5_K/Q6_K to F32 with the portable path's float operations
 * (dtype.c), 8 values at a time: bit for bit its results. */
INLINE_Q256 void q256_k_to_f32(const int type, const void *src, float *dst, int64_t n)
{
    const size_t bw = type == 6 ? sizeof(block_q6_K) : type == 5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    for (int64_t k = 0; k < n / QK_K; k++, dst += QK_K) {
        const char *blk = (const char *)src + (size_t)k * bw;
        const block_q4_K *b4 = (const block_q4_K *)blk;
        const block_q6_K *b6 = (const block_q6_K *)blk;
        float d = q256_half(type == 6 ? (const void *)&b6->d : (const void *)&b4->d);
        float dmin = type == 6 ? 0.0f : q256_half(&b4->dmin);
        uint64_t sc = 0, mn = 0;
        if (type != 6)
            kernels_kq_scales(b4->scales, &sc, &mn);
        for (int s = 0; s < 8; s++) {
            uint8_t lv[32];
            _mm256_storeu_si256((__m256i *)lv, q256_klevels(type, blk, s));
            for (int j = 0; j < 4; j++) {
                __m128i part = _mm_loadl_epi64((const __m128i *)(lv + 8 * j));
                float *o = dst + 32 * s + 8 * j;
                if (type == 6) {
                    __m256 q = _mm256_cvtepi32_ps(
                        _mm256_sub_epi32(_mm256_cvtepu8_epi32(part), _mm256_set1_epi32(32)));
                    _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_set1_ps(d * b6->scales[2 * s + j / 2]), q));
                } else {
                    float sv = d * (float)(int)((sc >> (8 * s)) & 0xff);
                    float mv = dmin * (float)(int)((mn >> (8 * s)) & 0xff);
                    __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part));
                    _mm256_storeu_ps(o, _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(sv), q), _mm256_set1_ps(mv)));
                }
            }
        }
    }
}
static ATTR_Q256 void avx2_q4_K_to_f32(const void *src, float *dst, int64_t n)
{
    q256_k_to_f32(4, src, dst, n);
}
static ATTR_Q256 void avx2_q5_K_to_f32(const void *src, float *dst, int64_t n)
{
    q256_k_to_f32(5, src, dst, n);
}
static ATTR_Q256 void avx2_q6_K_to_f32(const void *src, float *dst, int64_t n)
{
    q256_k_to_f32(6, src, dst, n);
}

static void avx2_register_blocks(kernels_isa *k, const cpu_features *f)
{
    if (!f->f16c)
        return;
    k->rows[DTYPE_Q8_0] = avx2_rows_q8_0;
    k->rows[DTYPE_Q4_0] = avx2_rows_q4_0;
    k->from_f32[DTYPE_Q8_0] = avx2_q8_0_from_f32;
    k->to_f32[DTYPE_Q8_0] = avx2_q8_0_to_f32;
    k->to_f32[DTYPE_Q4_0] = avx2_q4_0_to_f32;
    k->rows[DTYPE_Q4_K] = avx2_rows_q4_K;
    k->rows[DTYPE_Q5_K] = avx2_rows_q5_K;
    k->rows[DTYPE_Q6_K] = avx2_rows_q6_K;
    k->to_f32[DTYPE_Q4_K] = avx2_q4_K_to_f32;
    k->to_f32[DTYPE_Q5_K] = avx2_q5_K_to_f32;
    k->to_f32[DTYPE_Q6_K] = avx2_q6_K_to_f32;
}

/* ==== end of the block types ==== */

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
    avx2_register_blocks(k, f);
}

#endif /* KERNELS_X86 */
