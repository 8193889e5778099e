/*
 * kernels_neon: ARM NEON (aarch64) kernels. Compiled on every build of
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
 * is F32 for F32 and F16 weights, BF16 for BF16 weights (dtype.c,
 * vec_dot_type). Where the CPU has the BF16 extension
 * (cpu_features.arm_bf16), BF16 rows use BFDOT.
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

#if defined(KERNELS_NEON)
#include <arm_neon.h>

/* Zero-padded tail: n (< width) elements of a float-type row as F32. */
static inline void tail_load(dtype_t dt, const void *row, int i, int n, float *dst)
{
    dtype_get(dt)->to_f32((const char *)row + dtype_row_size(dt, i), dst, n);
}

static inline float32x4_t neon_load(dtype_t dt, const void *row, int i)
{
    if (dt == DTYPE_BF16)
        return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)row + i), 16));
    if (dt == DTYPE_F16)
        return vcvt_f32_f16(vld1_f16((const float16_t *)row + i));
    return vld1q_f32((const float *)row + i);
}

/* A tile: nr consecutive weight rows (row_bytes apart; 1 or 4) times nx
 * activation rows (x_stride bytes apart; 1 or 2), each weight vector
 * loaded (and converted) once for the nx activation rows;
 * out[k * out_stride + r] = row r . x_k. Every (r, k) pair runs the
 * sequence of the header whatever the tile. */
static inline __attribute__((always_inline)) void neon_tile(dtype_t dt, dtype_t xt, const char *w, size_t row_bytes,
                                                            int cols, const char *x, size_t x_stride, float *out,
                                                            size_t out_stride, const int nr, const int nx)
{
    float32x4_t acc0[4][2], acc1[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            acc0[r][k] = vdupq_n_f32(0.0f);
            acc1[r][k] = vdupq_n_f32(0.0f);
        }
    int i = 0;
    for (; i + 8 <= cols; i += 8) {
        float32x4_t x0[2], x1[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            x0[k] = neon_load(xt, x + (size_t)k * x_stride, i);
            x1[k] = neon_load(xt, x + (size_t)k * x_stride, i + 4);
        }
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *row = w + (size_t)r * row_bytes;
            float32x4_t w0 = neon_load(dt, row, i), w1 = neon_load(dt, row, i + 4);
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++) {
                acc0[r][k] = vfmaq_f32(acc0[r][k], w0, x0[k]);
                acc1[r][k] = vfmaq_f32(acc1[r][k], w1, x1[k]);
            }
        }
    }
    if (i + 4 <= cols) {
        float32x4_t x0[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            x0[k] = neon_load(xt, x + (size_t)k * x_stride, i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            float32x4_t w0 = neon_load(dt, w + (size_t)r * row_bytes, i);
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++)
                acc0[r][k] = vfmaq_f32(acc0[r][k], w0, x0[k]);
        }
        i += 4;
    }
    if (i < cols) {
        float32x4_t x0[2];
        for (int k = 0; k < nx; k++) {
            float xtail[4] = { 0 };
            tail_load(xt, x + (size_t)k * x_stride, i, cols - i, xtail);
            x0[k] = vld1q_f32(xtail);
        }
        for (int r = 0; r < nr; r++) {
            float wt[4] = { 0 };
            tail_load(dt, w + (size_t)r * row_bytes, i, cols - i, wt);
            float32x4_t w0 = vld1q_f32(wt);
            for (int k = 0; k < nx; k++)
                acc1[r][k] = vfmaq_f32(acc1[r][k], w0, x0[k]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            out[(size_t)k * out_stride + r] = vaddvq_f32(vaddq_f32(acc0[r][k], acc1[r][k]));
}

/* Groups of four weight rows, each against the activation rows two at a
 * time while the group is in cache, then the rows left one at a time. */
static inline __attribute__((always_inline)) void neon_rows(dtype_t dt, const mat_t *m, int r0, int r1,
                                                            const void *xv, size_t x_stride, int n_x, float *out,
                                                            size_t out_stride)
{
    dtype_t xt = dtype_get(dt)->vec_dot_type;
    size_t row_bytes = dtype_row_size(dt, m->cols);
    const char *base = m->data, *x = xv;
    int cols = m->cols, r = r0;
    for (; r + 4 <= r1; r += 4) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            neon_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                      out + (size_t)k * out_stride + r, out_stride, 4, 2);
        if (k < n_x)
            neon_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                      out + (size_t)k * out_stride + r, out_stride, 4, 1);
    }
    for (; r < r1; r++) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            neon_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                      out + (size_t)k * out_stride + r, out_stride, 1, 2);
        if (k < n_x)
            neon_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                      out + (size_t)k * out_stride + r, out_stride, 1, 1);
    }
}

static void neon_rows_f32(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    neon_rows(DTYPE_F32, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static void neon_rows_bf16(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    neon_rows(DTYPE_BF16, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static void neon_rows_f16(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    neon_rows(DTYPE_F16, m, r0, r1, x, x_stride, n_x, out, out_stride);
}

/* ---- BF16 rows with the BF16 extension (BFDOT) ---- */

#define ATTR_NEON_BF16 __attribute__((target("arch=armv8.2-a+bf16")))

/* As neon_tile for BF16 rows and BF16 x: BFDOT adds the products of
 * 8 BF16 pairs into 4 F32 lanes (V = 8 values, the same sequence). */
static inline __attribute__((always_inline, target("arch=armv8.2-a+bf16"))) void
neon_bf16dot_tile(const uint16_t *w, size_t row_len, int cols, const char *x, size_t x_stride, float *out,
                  size_t out_stride, const int nr, const int nx)
{
    float32x4_t acc0[4][2], acc1[4][2];
    const uint16_t *xk[2];
#pragma GCC unroll 2
    for (int k = 0; k < nx; k++)
        xk[k] = (const uint16_t *)(x + (size_t)k * x_stride);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            acc0[r][k] = vdupq_n_f32(0.0f);
            acc1[r][k] = vdupq_n_f32(0.0f);
        }
    int i = 0;
    for (; i + 16 <= cols; i += 16) {
        bfloat16x8_t x0[2], x1[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            x0[k] = vreinterpretq_bf16_u16(vld1q_u16(xk[k] + i));
            x1[k] = vreinterpretq_bf16_u16(vld1q_u16(xk[k] + i + 8));
        }
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const uint16_t *row = w + (size_t)r * row_len;
            bfloat16x8_t w0 = vreinterpretq_bf16_u16(vld1q_u16(row + i));
            bfloat16x8_t w1 = vreinterpretq_bf16_u16(vld1q_u16(row + i + 8));
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++) {
                acc0[r][k] = vbfdotq_f32(acc0[r][k], w0, x0[k]);
                acc1[r][k] = vbfdotq_f32(acc1[r][k], w1, x1[k]);
            }
        }
    }
    if (i + 8 <= cols) {
        bfloat16x8_t x0[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            x0[k] = vreinterpretq_bf16_u16(vld1q_u16(xk[k] + i));
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            bfloat16x8_t w0 = vreinterpretq_bf16_u16(vld1q_u16(w + (size_t)r * row_len + i));
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++)
                acc0[r][k] = vbfdotq_f32(acc0[r][k], w0, x0[k]);
        }
        i += 8;
    }
    if (i < cols) {
        bfloat16x8_t x0[2];
        for (int k = 0; k < nx; k++) {
            uint16_t xt[8] = { 0 };
            memcpy(xt, xk[k] + i, (size_t)(cols - i) * sizeof(uint16_t));
            x0[k] = vreinterpretq_bf16_u16(vld1q_u16(xt));
        }
        for (int r = 0; r < nr; r++) {
            uint16_t wt[8] = { 0 };
            memcpy(wt, w + (size_t)r * row_len + i, (size_t)(cols - i) * sizeof(uint16_t));
            bfloat16x8_t w0 = vreinterpretq_bf16_u16(vld1q_u16(wt));
            for (int k = 0; k < nx; k++)
                acc1[r][k] = vbfdotq_f32(acc1[r][k], w0, x0[k]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            out[(size_t)k * out_stride + r] = vaddvq_f32(vaddq_f32(acc0[r][k], acc1[r][k]));
}

/* The tiles in the order of neon_rows. */
static ATTR_NEON_BF16 void neon_bf16dot_rows_bf16(const mat_t *m, int r0, int r1, const void *xv, size_t x_stride,
                                                  int n_x, float *out, size_t out_stride)
{
    size_t row_len = (size_t)m->cols; /* BF16 values per row */
    const uint16_t *base = m->data;
    const char *x = xv;
    int cols = m->cols, r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint16_t *w = base + (size_t)r * row_len;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            neon_bf16dot_tile(w, row_len, cols, x + (size_t)k * x_stride, x_stride, out + (size_t)k * out_stride + r,
                              out_stride, 4, 2);
        if (k < n_x)
            neon_bf16dot_tile(w, row_len, cols, x + (size_t)k * x_stride, x_stride, out + (size_t)k * out_stride + r,
                              out_stride, 4, 1);
    }
    for (; r < r1; r++) {
        const uint16_t *w = base + (size_t)r * row_len;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            neon_bf16dot_tile(w, row_len, cols, x + (size_t)k * x_stride, x_stride, out + (size_t)k * out_stride + r,
                              out_stride, 1, 2);
        if (k < n_x)
            neon_bf16dot_tile(w, row_len, cols, x + (size_t)k * x_stride, x_stride, out + (size_t)k * out_stride + r,
                              out_stride, 1, 1);
    }
}

static void neon_convert(dtype_t dt, const void *src, float *dst, int64_t n)
{
    int64_t i = 0;
    if (dt != DTYPE_F32)
        for (; i + 4 <= n; i += 4)
            vst1q_f32(dst + i, neon_load(dt, src, i));
    dtype_get(dt)->to_f32((const char *)src + dtype_row_size(dt, i), dst + i, n - i);
}
static void neon_bf16_to_f32(const void *src, float *dst, int64_t n)
{
    neon_convert(DTYPE_BF16, src, dst, n);
}
static void neon_f16_to_f32(const void *src, float *dst, int64_t n)
{
    neon_convert(DTYPE_F16, src, dst, n);
}

/* F32 to BF16 rounding to nearest even, NaN kept quiet: bit for bit
 * f32_to_bf16 (util.c), 4 values at a time. */
static void neon_f32_to_bf16(const float *src, void *dst, int64_t n)
{
    uint16_t *d = dst;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32x4_t u = vreinterpretq_u32_f32(vld1q_f32(src + i));
        uint32x4_t r = vaddq_u32(vdupq_n_u32(0x7fff), vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1)));
        uint32x4_t h = vshrq_n_u32(vaddq_u32(u, r), 16);
        uint32x4_t nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fffffff)), vdupq_n_u32(0x7f800000));
        h = vbslq_u32(nan, vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40)), h);
        vst1_u16(d + i, vmovn_u32(h));
    }
    dtype_get(DTYPE_BF16)->from_f32(src + i, d + i, n - i);
}

/* a (n,) . b (n,) with b F32, or F16 (the rows of an F16 KV cache). */
static inline __attribute__((always_inline)) float neon_dot(dtype_t bt, const float *a, const void *b, int n)
{
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), neon_load(bt, b, i));
        acc1 = vfmaq_f32(acc1, vld1q_f32(a + i + 4), neon_load(bt, b, i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (; i < n; i++)
        s += a[i] * kernels_elem_f32(bt, b, i);
    return s;
}

/* y (n,) += a * x (n,), x F32 or F16. */
static inline __attribute__((always_inline)) void neon_axpy(dtype_t xt, float *y, float a, const void *x, int n)
{
    int i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), neon_load(xt, x, i), a));
    for (; i < n; i++)
        y[i] += a * kernels_elem_f32(xt, x, i);
}

static float neon_dot_f32(const float *a, const float *b, int n)
{
    return neon_dot(DTYPE_F32, a, b, n);
}
static void neon_axpy_f32(float *y, float a, const float *x, int n)
{
    neon_axpy(DTYPE_F32, y, a, x, n);
}
static float neon_dot_f32_f16(const float *a, const uint16_t *b, int n)
{
    return neon_dot(DTYPE_F16, a, b, n);
}
static void neon_axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    neon_axpy(DTYPE_F16, y, a, x, n);
}

/* ==== Block types: Q8_0 and Q4_0 weights times Q8_0 activations ====
 *
 * A block is two int8x16 (Q4_0: the nibbles 0..15, low nibbles the first
 * 16 values). Per block and per (weight row r, activation row k):
 *
 *   I = int32x4 sums of w * x_k: vdotq_s32 with the dot-product extension
 *       (chosen at run time, cpu_features.dotprod), else vmull_s8 + vpadalq_s16;
 *       for Q4_0 starting from C_k = -8 * (sums of x_k), computed once per
 *       activation block for all rows, instead of subtracting 8 per weight
 *   acc_rk = acc_rk + float(I) * (dw * dx)     (vfmaq_n_f32)
 *
 * and the row's result is the sum of acc_rk's lanes. The integer sums are
 * exact: the result differs from the portable path only in the order of the
 * float additions, by less than (nb + 4) * 2^-24 * sum_b |dw_b dx_b I_b| for
 * nb blocks (the two variants group products into lanes differently, so
 * they may differ from each other by as much). Tiles of 4 weight rows x 4
 * activation rows; each (r, k) pair runs the same operations whatever its
 * tile. The tile is written once as a macro and instantiated for each dot
 * product, so that the base variant is compiled without the extension.
 */
static inline float neon_q_half(const void *p)
{
    __fp16 h;
    memcpy(&h, p, sizeof(h));
    return (float)h;
}

static inline __attribute__((always_inline)) int32x4_t neon_q_dot_base(int32x4_t acc, int8x16_t a, int8x16_t b)
{
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
}

#define NEON_DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))

static inline __attribute__((always_inline)) NEON_DOTPROD_TARGET int32x4_t neon_q_dot_sdot(int32x4_t acc, int8x16_t a,
                                                                                          int8x16_t b)
{
    return vdotq_s32(acc, a, b);
}

/* The two int8x16 halves of block b of a weight row; Q4_0's nibbles less
 * 8 when minus8, else as they are (0..15). prefetch_stride: bytes ahead to
 * prefetch (four rows on: rows are streams too short for the hardware
 * prefetcher, see q512_prefetch in kernels_avx512.c), or 0. */
static inline __attribute__((always_inline)) void neon_q_load(const int q4, const int minus8, const char *row, int b,
                                                              size_t prefetch_stride, int8x16_t *lo, int8x16_t *hi,
                                                              float *d)
{
    if (q4) {
        const block_q4_0 *wb = (const block_q4_0 *)row + b;
        if (prefetch_stride)
            __builtin_prefetch((const char *)wb + prefetch_stride);
        uint8x16_t q = vld1q_u8(wb->qs);
        *lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
        *hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
        if (minus8) {
            *lo = vsubq_s8(*lo, vdupq_n_s8(8));
            *hi = vsubq_s8(*hi, vdupq_n_s8(8));
        }
        *d = neon_q_half(&wb->d);
    } else {
        const block_q8_0 *wb = (const block_q8_0 *)row + b;
        if (prefetch_stride)
            __builtin_prefetch((const char *)wb + prefetch_stride);
        *lo = vld1q_s8(wb->qs);
        *hi = vld1q_s8(wb->qs + 16);
        *d = neon_q_half(&wb->d);
    }
}

#define NEON_Q_TILE(NAME, ATTR, DOT)                                                                                \
    static inline __attribute__((always_inline)) ATTR void NAME(const int q4, const char *w, size_t row_bytes,    \
                                                                int nb, const char *x, size_t x_stride,            \
                                                                const int nr, const int nx, float *out,            \
                                                                size_t out_stride)                                 \
    {                                                                                                               \
        float32x4_t acc[4][4];                                                                                      \
        _Pragma("GCC unroll 4") for (int r = 0; r < nr; r++)                                                        \
            _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++) acc[r][k] = vdupq_n_f32(0.0f);                    \
        for (int b = 0; b < nb; b++) {                                                                              \
            int8x16_t xl[4], xh[4];                                                                                 \
            int32x4_t c[4];                                                                                         \
            float dx[4];                                                                                            \
            _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++)                                                    \
            {                                                                                                       \
                const block_q8_0 *xb = (const block_q8_0 *)(x + (size_t)k * x_stride) + b;                          \
                xl[k] = vld1q_s8(xb->qs);                                                                           \
                xh[k] = vld1q_s8(xb->qs + 16);                                                                      \
                dx[k] = neon_q_half(&xb->d);                                                                        \
                c[k] = vdupq_n_s32(0);                                                                              \
                if (q4) /* -8 * (sums of x), lane by lane as DOT groups them */                                     \
                    c[k] = vmulq_n_s32(DOT(DOT(c[k], vdupq_n_s8(1), xl[k]), vdupq_n_s8(1), xh[k]), -8);             \
            }                                                                                                       \
            _Pragma("GCC unroll 4") for (int r = 0; r < nr; r++)                                                    \
            {                                                                                                       \
                int8x16_t wl, wh;                                                                                   \
                float dw;                                                                                           \
                neon_q_load(q4, 0, w + (size_t)r * row_bytes, b, 4 * row_bytes, &wl, &wh, &dw);                     \
                _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++)                                                \
                {                                                                                                   \
                    int32x4_t I = DOT(DOT(c[k], wl, xl[k]), wh, xh[k]);                                             \
                    acc[r][k] = vfmaq_n_f32(acc[r][k], vcvtq_f32_s32(I), dw * dx[k]);                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
        _Pragma("GCC unroll 4") for (int r = 0; r < nr; r++)                                                        \
            _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++) out[(size_t)k * out_stride + r] =                 \
                vaddvq_f32(acc[r][k]);                                                                              \
    }

NEON_Q_TILE(neon_q_tile_base, , neon_q_dot_base)
NEON_Q_TILE(neon_q_tile_sdot, NEON_DOTPROD_TARGET, neon_q_dot_sdot)

/* Rows [r0, r1) in tiles of 4 x 4, 4 x 1, 1 x 4 and 1 x 1. */
#define NEON_Q_ROWS(NAME, ATTR, TILE)                                                                               \
    static inline __attribute__((always_inline)) ATTR void NAME(const int q4, const mat_t *m, int r0, int r1,     \
                                                                const void *xv, size_t x_stride, int n_x,          \
                                                                float *out, size_t out_stride)                     \
    {                                                                                                               \
        size_t row_bytes = dtype_row_size(m->dtype, m->cols);                                                       \
        int nb = m->cols / QK8_0;                                                                                   \
        const char *base = m->data, *x = xv;                                                                        \
        for (int r = r0; r < r1;) {                                                                                 \
            const char *w = base + (size_t)r * row_bytes;                                                           \
            int four = r + 4 <= r1, k = 0;                                                                          \
            for (; k + 4 <= n_x; k += 4) {                                                                          \
                if (four)                                                                                           \
                    TILE(q4, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 4,                            \
                         out + (size_t)k * out_stride + r, out_stride);                                             \
                else                                                                                                \
                    TILE(q4, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 4,                            \
                         out + (size_t)k * out_stride + r, out_stride);                                             \
            }                                                                                                       \
            for (; k < n_x; k++) {                                                                                  \
                if (four)                                                                                           \
                    TILE(q4, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 1,                            \
                         out + (size_t)k * out_stride + r, out_stride);                                             \
                else                                                                                                \
                    TILE(q4, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 1,                            \
                         out + (size_t)k * out_stride + r, out_stride);                                             \
            }                                                                                                       \
            r += four ? 4 : 1;                                                                                      \
        }                                                                                                           \
    }

NEON_Q_ROWS(neon_q_rows_base, , neon_q_tile_base)
NEON_Q_ROWS(neon_q_rows_sdot, NEON_DOTPROD_TARGET, neon_q_tile_sdot)

static void neon_rows_q8_0(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x, float *out,
                           size_t out_stride)
{
    neon_q_rows_base(0, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static void neon_rows_q4_0(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x, float *out,
                           size_t out_stride)
{
    neon_q_rows_base(1, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static NEON_DOTPROD_TARGET void neon_rows_q8_0_dot(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                               float *out, size_t out_stride)
{
    neon_q_rows_sdot(0, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static NEON_DOTPROD_TARGET void neon_rows_q4_0_dot(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                               float *out, size_t out_stride)
{
    neon_q_rows_sdot(1, m, r0, r1, x, x_stride, n_x, out, out_stride);
}

/* As q8_0_from_f32 (dtype.c), bit for bit: vcvtaq rounds half away from
 * zero as roundf does; the f16 conversion rounds to nearest even. */
static void neon_q8_0_from_f32(const float *src, void *dst, int64_t n)
{
    block_q8_0 *b = dst;
    for (int64_t k = 0; k < n / QK8_0; k++) {
        float32x4_t v[8];
        for (int j = 0; j < 8; j++)
            v[j] = vld1q_f32(src + k * QK8_0 + 4 * j);
        float32x4_t m = vabsq_f32(v[0]);
        for (int j = 1; j < 8; j++)
            m = vmaxq_f32(m, vabsq_f32(v[j]));
        float amax = vmaxvq_f32(m);
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        __fp16 h = (__fp16)d;
        memcpy(&b[k].d, &h, sizeof(h));
        for (int j = 0; j < 8; j += 2) {
            int32x4_t q0 = vcvtaq_s32_f32(vmulq_n_f32(v[j], id));
            int32x4_t q1 = vcvtaq_s32_f32(vmulq_n_f32(v[j + 1], id));
            int16x8_t q = vcombine_s16(vmovn_s32(q0), vmovn_s32(q1));
            vst1_s8(b[k].qs + 4 * j, vmovn_s16(q));
        }
    }
}

static void neon_q8_0_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q8_0 *b = src;
    for (int64_t k = 0; k < n / QK8_0; k++) {
        float d = neon_q_half(&b[k].d);
        for (int j = 0; j < 32; j += 16) {
            int8x16_t q = vld1q_s8(b[k].qs + j);
            int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_high_s8(q);
            float *o = dst + k * QK8_0 + j;
            vst1q_f32(o, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d));
            vst1q_f32(o + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), d));
            vst1q_f32(o + 8, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d));
            vst1q_f32(o + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), d));
        }
    }
}

static void neon_q4_0_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q4_0 *b = src;
    for (int64_t k = 0; k < n / QK4_0; k++) {
        float d;
        int8x16_t half[2];
        neon_q_load(1, 1, (const char *)(b + k), 0, 0, &half[0], &half[1], &d);
        for (int j = 0; j < 2; j++) {
            int16x8_t lo = vmovl_s8(vget_low_s8(half[j])), hi = vmovl_high_s8(half[j]);
            float *o = dst + k * QK4_0 + 16 * j;
            vst1q_f32(o, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d));
            vst1q_f32(o + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), d));
            vst1q_f32(o + 8, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d));
            vst1q_f32(o + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), d));
        }
    }
}

/* ==== K-quants: Q4_K, Q5_K and Q6_K weights times Q8_K activations ====
 *
 * Per sub-block j of a super-block (dtype.h: Q4_K/Q5_K 8 of 32 values,
 * Q6_K 16 of 16) and per (weight row r, activation row k), in exact int32
 * lanes: D = the dot products of the sub-block's levels (Q4_K 0..15, Q5_K
 * 0..31, Q6_K q - 32 in -32..31, all fitting int8) with x_k's values, by
 * vdotq_s32 or vmull_s8 + vpadalq_s16, then A_rk += D * scale_j
 * (vmlaq_n_s32). Per super-block the integer totals and the float
 * operations are those of the portable vec_dot (dtype.c), in its order:
 *   Q4_K/Q5_K: s += d * dx * float(sum(A_rk)) - dmin * dx * float(sum_j m_j * (bsums[2j] + bsums[2j+1]))
 *   Q6_K:      s += d * dx * float(sum(A_rk))
 * so each result is bit for bit the portable path's, whatever the tile
 * (4 weight rows x 4 activation rows), the split or the batch.
 * Dequantization (the prefill panels) is the portable path's bit for bit too.
 */

/* Levels of sub-block j of a weight super-block: two int8x16 (Q4_K, Q5_K)
 * or one (Q6_K, in *a). */
static inline __attribute__((always_inline)) void neon_k_levels(const int type, const char *blk, int j, int8x16_t *a,
                                                                int8x16_t *b)
{
    if (type == 6) {
        const block_q6_K *q = (const block_q6_K *)blk;
        int h = j >> 3, quarter = (j & 7) >> 1, l0 = 16 * (j & 1);
        uint8x16_t L = vld1q_u8(q->ql + 64 * h + 32 * (quarter & 1) + l0);
        uint8x16_t H = vld1q_u8(q->qh + 32 * h + l0);
        uint8x16_t lv = quarter >= 2 ? vshrq_n_u8(L, 4) : vandq_u8(L, vdupq_n_u8(0x0f));
        uint8x16_t hv = vandq_u8(vshlq_u8(H, vdupq_n_s8((int8_t)(4 - 2 * quarter))), vdupq_n_u8(0x30));
        *a = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lv, hv)), vdupq_n_s8(32));
        return;
    }
    const uint8_t *qs = type == 5 ? ((const block_q5_K *)blk)->qs : ((const block_q4_K *)blk)->qs;
    uint8x16_t q0 = vld1q_u8(qs + 32 * (j >> 1)), q1 = vld1q_u8(qs + 32 * (j >> 1) + 16);
    if (j & 1) {
        q0 = vshrq_n_u8(q0, 4);
        q1 = vshrq_n_u8(q1, 4);
    } else {
        q0 = vandq_u8(q0, vdupq_n_u8(0x0f));
        q1 = vandq_u8(q1, vdupq_n_u8(0x0f));
    }
    if (type == 5) {
        const block_q5_K *q = (const block_q5_K *)blk;
        uint8x16_t bit = vdupq_n_u8((uint8_t)(1u << j)), sixteen = vdupq_n_u8(16);
        q0 = vorrq_u8(q0, vandq_u8(vtstq_u8(vld1q_u8(q->qh), bit), sixteen));
        q1 = vorrq_u8(q1, vandq_u8(vtstq_u8(vld1q_u8(q->qh + 16), bit), sixteen));
    }
    *a = vreinterpretq_s8_u8(q0);
    *b = vreinterpretq_s8_u8(q1);
}

#define NEON_K_TILE(NAME, ATTR, DOT)                                                                                \
    static inline __attribute__((always_inline)) ATTR void NAME(const int type, const char *w, size_t row_bytes,  \
                                                                int nb, const char *x, size_t x_stride,            \
                                                                const int nr, const int nx, float *out,            \
                                                                size_t out_stride)                                 \
    {                                                                                                               \
        const size_t wb = type == 6 ? sizeof(block_q6_K) : type == 5 ? sizeof(block_q5_K) : sizeof(block_q4_K);    \
        const int nsub = type == 6 ? 16 : 8;                                                                        \
        float sum[4][4];                                                                                            \
        _Pragma("GCC unroll 4") for (int r = 0; r < nr; r++)                                                        \
            _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++) sum[r][k] = 0.0f;                                 \
        for (int b = 0; b < nb; b++) {                                                                              \
            const char *wr[4];                                                                                      \
            const block_q8_K *xb[4];                                                                                \
            int8_t sc[4][16];                                                                                       \
            int32_t mn[4][8];                                                                                       \
            int32x4_t A[4][4];                                                                                      \
            _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++) xb[k] = (const block_q8_K *)(x + (size_t)k * x_stride) + b; \
            _Pragma("GCC unroll 4") for (int r = 0; r < nr; r++)                                                    \
            {                                                                                                       \
                wr[r] = w + (size_t)r * row_bytes + (size_t)b * wb;                                                 \
                __builtin_prefetch(wr[r] + 4 * row_bytes);                                                          \
                __builtin_prefetch(wr[r] + 4 * row_bytes + 64);                                                     \
                __builtin_prefetch(wr[r] + 4 * row_bytes + 128);                                                    \
                __builtin_prefetch(wr[r] + 4 * row_bytes + wb - 1);                                                 \
                if (type == 6) {                                                                                    \
                    memcpy(sc[r], ((const block_q6_K *)wr[r])->scales, 16);                                         \
                } else {                                                                                            \
                    uint64_t s64, m64;                                                                              \
                    kernels_kq_scales(((const block_q4_K *)wr[r])->scales, &s64, &m64);                             \
                    for (int i = 0; i < 8; i++) {                                                                   \
                        sc[r][i] = (int8_t)(s64 >> (8 * i));                                                        \
                        mn[r][i] = (int32_t)((m64 >> (8 * i)) & 0xff);                                              \
                    }                                                                                               \
                }                                                                                                   \
                _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++) A[r][k] = vdupq_n_s32(0);                     \
            }                                                                                                       \
            for (int j = 0; j < nsub; j++) {                                                                        \
                int8x16_t xa[4], xc[4];                                                                             \
                _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++)                                                \
                {                                                                                                   \
                    xa[k] = vld1q_s8(xb[k]->qs + (type == 6 ? 16 : 32) * j);                                        \
                    xc[k] = type == 6 ? xa[k] : vld1q_s8(xb[k]->qs + 32 * j + 16);                                  \
                }                                                                                                   \
                _Pragma("GCC unroll 4") for (int r = 0; r < nr; r++)                                                \
                {                                                                                                   \
                    int8x16_t wa, wc = vdupq_n_s8(0);                                                               \
                    neon_k_levels(type, wr[r], j, &wa, &wc);                                                        \
                    _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++)                                            \
                    {                                                                                               \
                        int32x4_t D = DOT(vdupq_n_s32(0), wa, xa[k]);                                               \
                        if (type != 6)                                                                              \
                            D = DOT(D, wc, xc[k]);                                                                  \
                        A[r][k] = vmlaq_n_s32(A[r][k], D, sc[r][j]);                                                \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
            _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++)                                                    \
            {                                                                                                       \
                float dx = xb[k]->d;                                                                                \
                _Pragma("GCC unroll 4") for (int r = 0; r < nr; r++)                                                \
                {                                                                                                   \
                    int32_t iq = vaddvq_s32(A[r][k]);                                                               \
                    if (type == 6) {                                                                                \
                        sum[r][k] += neon_q_half(&((const block_q6_K *)wr[r])->d) * dx * (float)iq;                 \
                    } else {                                                                                        \
                        const block_q4_K *q = (const block_q4_K *)wr[r];                                            \
                        int32_t im = 0;                                                                             \
                        for (int i = 0; i < 8; i++)                                                                 \
                            im += mn[r][i] * (xb[k]->bsums[2 * i] + xb[k]->bsums[2 * i + 1]);                       \
                        float d = neon_q_half(&q->d), dmin = neon_q_half(&q->dmin);                                 \
                        sum[r][k] += d * dx * (float)iq - dmin * dx * (float)im;                                    \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
        _Pragma("GCC unroll 4") for (int r = 0; r < nr; r++)                                                        \
            _Pragma("GCC unroll 4") for (int k = 0; k < nx; k++) out[(size_t)k * out_stride + r] = sum[r][k];      \
    }

NEON_K_TILE(neon_k_tile_base, , neon_q_dot_base)
NEON_K_TILE(neon_k_tile_sdot, NEON_DOTPROD_TARGET, neon_q_dot_sdot)

/* As NEON_Q_ROWS over super-blocks. */
#define NEON_K_ROWS(NAME, ATTR, TILE)                                                                               \
    static inline __attribute__((always_inline)) ATTR void NAME(const int type, const mat_t *m, int r0, int r1,   \
                                                                const void *xv, size_t x_stride, int n_x,          \
                                                                float *out, size_t out_stride)                     \
    {                                                                                                               \
        size_t row_bytes = dtype_row_size(m->dtype, m->cols);                                                       \
        int nb = m->cols / QK_K;                                                                                    \
        const char *base = m->data, *x = xv;                                                                        \
        for (int r = r0; r < r1;) {                                                                                 \
            const char *w = base + (size_t)r * row_bytes;                                                           \
            int four = r + 4 <= r1, k = 0;                                                                          \
            for (; k + 4 <= n_x; k += 4) {                                                                          \
                if (four)                                                                                           \
                    TILE(type, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 4,                          \
                         out + (size_t)k * out_stride + r, out_stride);                                             \
                else                                                                                                \
                    TILE(type, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 4,                          \
                         out + (size_t)k * out_stride + r, out_stride);                                             \
            }                                                                                                       \
            for (; k < n_x; k++) {                                                                                  \
                if (four)                                                                                           \
                    TILE(type, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 1,                          \
                         out + (size_t)k * out_stride + r, out_stride);                                             \
                else                                                                                                \
                    TILE(type, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 1,                          \
                         out + (size_t)k * out_stride + r, out_stride);                                             \
            }                                                                                                       \
            r += four ? 4 : 1;                                                                                      \
        }                                                                                                           \
    }

NEON_K_ROWS(neon_k_rows_base, , neon_k_tile_base)
NEON_K_ROWS(neon_k_rows_sdot, NEON_DOTPROD_TARGET, neon_k_tile_sdot)

#define NEON_K_ENTRY(NAME, ATTR, ROWS, TYPE)                                                                        \
    static ATTR void NAME(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x, float *out,     \
                          size_t out_stride)                                                                        \
    {                                                                                                               \
        ROWS(TYPE, m, r0, r1, x, x_stride, n_x, out, out_stride);                                                   \
    }
NEON_K_ENTRY(neon_rows_q4_K, , neon_k_rows_base, 4)
NEON_K_ENTRY(neon_rows_q5_K, , neon_k_rows_base, 5)
NEON_K_ENTRY(neon_rows_q6_K, , neon_k_rows_base, 6)
NEON_K_ENTRY(neon_rows_q4_K_dot, NEON_DOTPROD_TARGET, neon_k_rows_sdot, 4)
NEON_K_ENTRY(neon_rows_q5_K_dot, NEON_DOTPROD_TARGET, neon_k_rows_sdot, 5)
NEON_K_ENTRY(neon_rows_q6_K_dot, NEON_DOTPROD_TARGET, neon_k_rows_sdot, 6)

/* Q4_K/Q5_K/Q6_K to F32 with the portable path's float operations
 * (dtype.c), 4 values at a time: bit for bit its results. */
static inline __attribute__((always_inline)) void neon_k_store16(int8x16_t q, float s, float m, float *o)
{
    int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_high_s8(q);
    int32x4_t v[4] = { vmovl_s16(vget_low_s16(lo)), vmovl_high_s16(lo), vmovl_s16(vget_low_s16(hi)),
                       vmovl_high_s16(hi) };
    for (int i = 0; i < 4; i++)
        vst1q_f32(o + 4 * i, vsubq_f32(vmulq_n_f32(vcvtq_f32_s32(v[i]), s), vdupq_n_f32(m)));
}

static inline __attribute__((always_inline)) void neon_k_to_f32(const int type, const void *src, float *dst, int64_t n)
{
    const size_t bw = type == 6 ? sizeof(block_q6_K) : type == 5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    for (int64_t k = 0; k < n / QK_K; k++, dst += QK_K) {
        const char *blk = (const char *)src + (size_t)k * bw;
        if (type == 6) {
            const block_q6_K *b = (const block_q6_K *)blk;
            float d = neon_q_half(&b->d);
            for (int j = 0; j < 16; j++) {
                int8x16_t q, unused;
                neon_k_levels(6, blk, j, &q, &unused);
                /* (d * sc) * q - 0: the subtraction of +0 changes no value */
                neon_k_store16(q, d * b->scales[j], 0.0f, dst + 16 * j);
            }
        } else {
            const block_q4_K *b = (const block_q4_K *)blk;
            float d = neon_q_half(&b->d), dmin = neon_q_half(&b->dmin);
            uint64_t sc, mn;
            kernels_kq_scales(b->scales, &sc, &mn);
            for (int j = 0; j < 8; j++) {
                int8x16_t q0, q1;
                neon_k_levels(type, blk, j, &q0, &q1);
                float s = d * (float)(int)((sc >> (8 * j)) & 0xff), m = dmin * (float)(int)((mn >> (8 * j)) & 0xff);
                neon_k_store16(q0, s, m, dst + 32 * j);
                neon_k_store16(q1, s, m, dst + 32 * j + 16);
            }
        }
    }
}
static void neon_q4_K_to_f32(const void *src, float *dst, int64_t n)
{
    neon_k_to_f32(4, src, dst, n);
}
static void neon_q5_K_to_f32(const void *src, float *dst, int64_t n)
{
    neon_k_to_f32(5, src, dst, n);
}
static void neon_q6_K_to_f32(const void *src, float *dst, int64_t n)
{
    neon_k_to_f32(6, src, dst, n);
}

static void neon_register_blocks(kernels_isa *k, const cpu_features *f)
{
    k->rows[DTYPE_Q8_0] = f->dotprod ? neon_rows_q8_0_dot : neon_rows_q8_0;
    k->rows[DTYPE_Q4_0] = f->dotprod ? neon_rows_q4_0_dot : neon_rows_q4_0;
    k->from_f32[DTYPE_Q8_0] = neon_q8_0_from_f32;
    k->to_f32[DTYPE_Q8_0] = neon_q8_0_to_f32;
    k->to_f32[DTYPE_Q4_0] = neon_q4_0_to_f32;
    k->rows[DTYPE_Q4_K] = f->dotprod ? neon_rows_q4_K_dot : neon_rows_q4_K;
    k->rows[DTYPE_Q5_K] = f->dotprod ? neon_rows_q5_K_dot : neon_rows_q5_K;
    k->rows[DTYPE_Q6_K] = f->dotprod ? neon_rows_q6_K_dot : neon_rows_q6_K;
    k->to_f32[DTYPE_Q4_K] = neon_q4_K_to_f32;
    k->to_f32[DTYPE_Q5_K] = neon_q5_K_to_f32;
    k->to_f32[DTYPE_Q6_K] = neon_q6_K_to_f32;
}

/* ==== end of the block types ==== */

void kernels_neon_register(kernels_isa *k, const cpu_features *f)
{
    k->name = "neon";
    k->rows[DTYPE_F32] = neon_rows_f32;
    k->rows[DTYPE_BF16] = f->arm_bf16 ? neon_bf16dot_rows_bf16 : neon_rows_bf16;
    k->rows[DTYPE_F16] = neon_rows_f16;
    k->to_f32[DTYPE_BF16] = neon_bf16_to_f32;
    k->to_f32[DTYPE_F16] = neon_f16_to_f32;
    k->from_f32[DTYPE_BF16] = neon_f32_to_bf16;
    k->dot_f32 = neon_dot_f32;
    k->axpy_f32 = neon_axpy_f32;
    k->dot_f32_f16 = neon_dot_f32_f16;
    k->axpy_f16 = neon_axpy_f16;
    neon_register_blocks(k, f);
}

#endif /* KERNELS_NEON */
