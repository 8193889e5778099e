/*
 * kernels_neon: ARM NEON (aarch64) kernels. Compiled on every build of
 * the architecture with target attributes and chosen at run time
 * (kernels_dispatch.c), so one binary runs on any CPU of the family.
 *
 * Float rows:
 * Row dot products: every row is reduced by one thread with one fixed
 * sequence of operations, whether it is computed alone or in a group of
 * four rows sharing the loads of x. That sequence depends only on the
 * column count and the SIMD level, so results are identical for any number
 * of threads and any split of rows. x is F32 for F32 and F16 weights, BF16
 * for BF16 weights (dtype.c, vec_dot_type). Where the CPU has the BF16
 * extension (cpu_features.arm_bf16), BF16 rows use BFDOT.
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

static inline __attribute__((always_inline)) void neon_dot_block(dtype_t dt, dtype_t xt, const char *w,
                                                                 size_t row_bytes, int cols, const void *x,
                                                                 float *out, const int nr)
{
    float32x4_t acc0[4], acc1[4];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        acc0[r] = vdupq_n_f32(0.0f);
        acc1[r] = vdupq_n_f32(0.0f);
    }
    int i = 0;
    for (; i + 8 <= cols; i += 8) {
        float32x4_t x0 = neon_load(xt, x, i);
        float32x4_t x1 = neon_load(xt, x, i + 4);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *row = w + (size_t)r * row_bytes;
            acc0[r] = vfmaq_f32(acc0[r], neon_load(dt, row, i), x0);
            acc1[r] = vfmaq_f32(acc1[r], neon_load(dt, row, i + 4), x1);
        }
    }
    if (i + 4 <= cols) {
        float32x4_t x0 = neon_load(xt, x, i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++)
            acc0[r] = vfmaq_f32(acc0[r], neon_load(dt, w + (size_t)r * row_bytes, i), x0);
        i += 4;
    }
    if (i < cols) {
        float xtail[4] = { 0 };
        tail_load(xt, x, i, cols - i, xtail);
        float32x4_t x0 = vld1q_f32(xtail);
        for (int r = 0; r < nr; r++) {
            float wt[4] = { 0 };
            tail_load(dt, w + (size_t)r * row_bytes, i, cols - i, wt);
            acc1[r] = vfmaq_f32(acc1[r], vld1q_f32(wt), x0);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        out[r] = vaddvq_f32(vaddq_f32(acc0[r], acc1[r]));
}

static inline __attribute__((always_inline)) void neon_rows(dtype_t dt, const mat_t *m, int r0, int r1, const void *x, size_t x_stride,
                                int n_x, float *out, size_t out_stride)
{
    dtype_t xt = dtype_get(dt)->vec_dot_type;
    size_t row_bytes = dtype_row_size(dt, m->cols);
    const char *base = m->data;
    int r = r0;
    /* groups of four rows; each activation row in turn while they are in cache */
    for (; r + 4 <= r1; r += 4)
        for (int k = 0; k < n_x; k++)
            neon_dot_block(dt, xt, base + (size_t)r * row_bytes, row_bytes, m->cols,
                             (const char *)x + (size_t)k * x_stride, out + (size_t)k * out_stride + r, 4);
    for (; r < r1; r++)
        for (int k = 0; k < n_x; k++)
            neon_dot_block(dt, xt, base + (size_t)r * row_bytes, row_bytes, m->cols,
                             (const char *)x + (size_t)k * x_stride, out + (size_t)k * out_stride + r, 1);
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

/* As neon_dot_block for BF16 rows and BF16 x: BFDOT adds the products of
 * 8 BF16 pairs into 4 F32 lanes (V = 8 values, the same sequence). */
static inline __attribute__((always_inline, target("arch=armv8.2-a+bf16"))) void
neon_bf16dot_block(const uint16_t *w, size_t row_len, int cols, const uint16_t *x, float *out, const int nr)
{
    float32x4_t acc0[4], acc1[4];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        acc0[r] = vdupq_n_f32(0.0f);
        acc1[r] = vdupq_n_f32(0.0f);
    }
    int i = 0;
    for (; i + 16 <= cols; i += 16) {
        bfloat16x8_t x0 = vreinterpretq_bf16_u16(vld1q_u16(x + i));
        bfloat16x8_t x1 = vreinterpretq_bf16_u16(vld1q_u16(x + i + 8));
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const uint16_t *row = w + (size_t)r * row_len;
            acc0[r] = vbfdotq_f32(acc0[r], vreinterpretq_bf16_u16(vld1q_u16(row + i)), x0);
            acc1[r] = vbfdotq_f32(acc1[r], vreinterpretq_bf16_u16(vld1q_u16(row + i + 8)), x1);
        }
    }
    if (i + 8 <= cols) {
        bfloat16x8_t x0 = vreinterpretq_bf16_u16(vld1q_u16(x + i));
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++)
            acc0[r] = vbfdotq_f32(acc0[r], vreinterpretq_bf16_u16(vld1q_u16(w + (size_t)r * row_len + i)), x0);
        i += 8;
    }
    if (i < cols) {
        uint16_t xt[8] = { 0 };
        memcpy(xt, x + i, (size_t)(cols - i) * sizeof(uint16_t));
        bfloat16x8_t x0 = vreinterpretq_bf16_u16(vld1q_u16(xt));
        for (int r = 0; r < nr; r++) {
            uint16_t wt[8] = { 0 };
            memcpy(wt, w + (size_t)r * row_len + i, (size_t)(cols - i) * sizeof(uint16_t));
            acc1[r] = vbfdotq_f32(acc1[r], vreinterpretq_bf16_u16(vld1q_u16(wt)), x0);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        out[r] = vaddvq_f32(vaddq_f32(acc0[r], acc1[r]));
}

static ATTR_NEON_BF16 void neon_bf16dot_rows_bf16(const mat_t *m, int r0, int r1, const void *x, size_t x_stride,
                                                  int n_x, float *out, size_t out_stride)
{
    size_t row_len = (size_t)m->cols; /* BF16 values per row */
    const uint16_t *base = m->data;
    int r = r0;
    for (; r + 4 <= r1; r += 4)
        for (int k = 0; k < n_x; k++)
            neon_bf16dot_block(base + (size_t)r * row_len, row_len, m->cols,
                               (const uint16_t *)((const char *)x + (size_t)k * x_stride),
                               out + (size_t)k * out_stride + r, 4);
    for (; r < r1; r++)
        for (int k = 0; k < n_x; k++)
            neon_bf16dot_block(base + (size_t)r * row_len, row_len, m->cols,
                               (const uint16_t *)((const char *)x + (size_t)k * x_stride),
                               out + (size_t)k * out_stride + r, 1);
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

static float neon_dot_f32(const float *a, const float *b, int n)
{
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vld1q_f32(b + i));
        acc1 = vfmaq_f32(acc1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void neon_axpy_f32(float *y, float a, const float *x, int n)
{
    int i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* F16 KV rows: as neon_dot_f32 and neon_axpy_f32 with b, x widened. */
static float neon_dot_f32_f16(const float *a, const uint16_t *b, int n)
{
#define LOAD_H(p) vcvt_f32_f16(vld1_f16((const float16_t *)(p)))
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), LOAD_H(b + i));
        acc1 = vfmaq_f32(acc1, vld1q_f32(a + i + 4), LOAD_H(b + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (; i < n; i++)
        s += a[i] * f16_to_f32(b[i]);
    return s;
}

static void neon_axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    int i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), LOAD_H(x + i), a));
    for (; i < n; i++)
        y[i] += a * f16_to_f32(x[i]);
#undef LOAD_H
}

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
}

#endif /* KERNELS_NEON */
