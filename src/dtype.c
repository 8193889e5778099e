/* dtype: the traits table of the number formats; see dtype.h. */
#include "dtype.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- float types ---- */

static void f32_to_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f32_from_f32(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void bf16_to_f32_row(const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(s[i]);
}

static void bf16_from_f32_row(const float *src, void *dst, int64_t n)
{
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++)
        d[i] = f32_to_bf16(src[i]);
}

static void f16_to_f32_row(const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = f16_to_f32(s[i]);
}

static void f16_from_f32_row(const float *src, void *dst, int64_t n)
{
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++)
        d[i] = f32_to_f16(src[i]);
}

/* Four partial sums over columns i mod 4, then the tail into the first:
 * the order the SIMD kernels' results are compared against. */
#define SCALAR_DOT(LOAD)                                     \
    do {                                                     \
        int i = 0;                                           \
        for (; i + 4 <= n; i += 4) {                         \
            a0 += LOAD(i) * x[i];                            \
            a1 += LOAD(i + 1) * x[i + 1];                    \
            a2 += LOAD(i + 2) * x[i + 2];                    \
            a3 += LOAD(i + 3) * x[i + 3];                    \
        }                                                    \
        for (; i < n; i++)                                   \
            a0 += LOAD(i) * x[i];                            \
    } while (0)

static float f32_vec_dot(int n, const void *row, const void *xv)
{
    const float *w = row, *x = xv;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#define LOAD_F32(i) w[i]
    SCALAR_DOT(LOAD_F32);
#undef LOAD_F32
    return (a0 + a1) + (a2 + a3);
}

/* x is BF16 too (BF16's vec_dot_type): each product of two BF16 values is
 * exact in F32 (8-bit significands), so only the additions round, as in
 * the CPUs' BF16 dot-product instructions (AVX512_BF16 vdpbf16ps, ARM
 * BFDOT). */
static float bf16_vec_dot(int n, const void *row, const void *xv)
{
    const uint16_t *w = row, *xh = xv;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += bf16_to_f32(w[i]) * bf16_to_f32(xh[i]);
        a1 += bf16_to_f32(w[i + 1]) * bf16_to_f32(xh[i + 1]);
        a2 += bf16_to_f32(w[i + 2]) * bf16_to_f32(xh[i + 2]);
        a3 += bf16_to_f32(w[i + 3]) * bf16_to_f32(xh[i + 3]);
    }
    for (; i < n; i++)
        a0 += bf16_to_f32(w[i]) * bf16_to_f32(xh[i]);
    return (a0 + a1) + (a2 + a3);
}

static float f16_vec_dot(int n, const void *row, const void *xv)
{
    const uint16_t *w = row;
    const float *x = xv;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#define LOAD_F16(i) f16_to_f32(w[i])
    SCALAR_DOT(LOAD_F16);
#undef LOAD_F16
    return (a0 + a1) + (a2 + a3);
}

/* ---- Q8_0 ---- */

static void q8_0_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q8_0 *b = src;
    for (int64_t k = 0; k < n / QK8_0; k++) {
        float d = f16_to_f32(b[k].d);
        for (int j = 0; j < QK8_0; j++)
            dst[k * QK8_0 + j] = d * (float)b[k].qs[j];
    }
}

/* As ggml's quantize_row_q8_0_ref: d = amax / 127, q = round(x / d). */
static void q8_0_from_f32(const float *src, void *dst, int64_t n)
{
    block_q8_0 *b = dst;
    for (int64_t k = 0; k < n / QK8_0; k++) {
        const float *x = src + k * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[k].d = f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++)
            b[k].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* Per block: the integer sum of products, times both scales; blocks summed
 * in order. Every SIMD path computes the integer sums exactly and must
 * agree with this up to the order of the float additions. */
static float q8_0_vec_dot(int n, const void *row, const void *xv)
{
    const block_q8_0 *w = row, *x = xv;
    float sum = 0.0f;
    for (int k = 0; k < n / QK8_0; k++) {
        int32_t s = 0;
        for (int j = 0; j < QK8_0; j++)
            s += (int32_t)w[k].qs[j] * (int32_t)x[k].qs[j];
        sum += (float)s * (f16_to_f32(w[k].d) * f16_to_f32(x[k].d));
    }
    return sum;
}

/* ---- Q4_0 ---- */

static void q4_0_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q4_0 *b = src;
    for (int64_t k = 0; k < n / QK4_0; k++) {
        float d = f16_to_f32(b[k].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[k * QK4_0 + j] = d * (float)((b[k].qs[j] & 0x0f) - 8);
            dst[k * QK4_0 + j + QK4_0 / 2] = d * (float)((b[k].qs[j] >> 4) - 8);
        }
    }
}

/* As ggml's quantize_row_q4_0_ref: the value of largest magnitude maps to
 * -8, d = max / -8, q = clamp(trunc(x / d + 8.5), 0, 15). */
static void q4_0_from_f32(const float *src, void *dst, int64_t n)
{
    block_q4_0 *b = dst;
    for (int64_t k = 0; k < n / QK4_0; k++) {
        const float *x = src + k * QK4_0;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        float d = max / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[k].d = f32_to_f16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            float x0 = x[j] * id + 8.5f, x1 = x[j + QK4_0 / 2] * id + 8.5f;
            uint8_t q0 = (uint8_t)(x0 < 15.0f ? (int)x0 : 15);
            uint8_t q1 = (uint8_t)(x1 < 15.0f ? (int)x1 : 15);
            b[k].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static float q4_0_vec_dot(int n, const void *row, const void *xv)
{
    const block_q4_0 *w = row;
    const block_q8_0 *x = xv;
    float sum = 0.0f;
    for (int k = 0; k < n / QK4_0; k++) {
        int32_t s = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            s += ((w[k].qs[j] & 0x0f) - 8) * (int32_t)x[k].qs[j];
            s += ((w[k].qs[j] >> 4) - 8) * (int32_t)x[k].qs[j + QK4_0 / 2];
        }
        sum += (float)s * (f16_to_f32(w[k].d) * f16_to_f32(x[k].d));
    }
    return sum;
}


/* ---- K-quants ---- */

/* Round to nearest, ties to even, as ggml's nearest_int: adding 1.5 * 2^23
 * leaves the rounded integer in the low mantissa bits (|v| < 2^22). */
static int round_nearest(float v)
{
    float f = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &f, sizeof(i));
    return (i & 0x007fffff) - 0x00400000;
}

static int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Sub-block j's 6-bit scale and min from a Q4_K/Q5_K scales[12]. */
static void kq_scale_min(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* The inverse of kq_scale_min for 8 scales and mins (each 0..63). */
static void kq_pack_scales(uint8_t *q, const uint8_t *ls, const uint8_t *lm)
{
    memset(q, 0, K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            q[j] |= ls[j];
            q[j + 4] |= lm[j];
        } else {
            q[j + 4] = (uint8_t)((ls[j] & 15) | ((lm[j] & 15) << 4));
            q[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            q[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Scale and min of n values x as levels 0..nmax with x ~ scale * l - min,
 * as ggml's make_qkx2_quants: start from the range, then try nstep + 1
 * nearby scales and keep the least weighted squared error, each trial
 * refitting scale and min by weighted least squares. Returns the scale,
 * *neg_min = the min (>= 0); the levels in L. */
static float kq_fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min,
                              float rmin, float rdelta, int nstep)
{
    uint8_t trial[32];
    float lo = x[0], hi = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (lo > 0)
        lo = 0;
    if (hi == lo) {
        memset(L, 0, (size_t)n);
        *neg_min = -lo;
        return 0.0f;
    }
    float iscale = nmax / (hi - lo), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clamp_int(round_nearest(iscale * (x[i] - lo)), 0, nmax);
        float diff = scale * L[i] + lo - x[i];
        best += w[i] * diff * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (hi - lo);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(round_nearest(iscale * (x[i] - lo)), 0, nmax);
            trial[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float det = sum_w * sum_l2 - sum_l * sum_l;
        if (det > 0) {
            float s = (sum_w * sum_xl - sum_x * sum_l) / det;
            float mn = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if (mn > 0) {
                mn = 0;
                s = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) {
                float diff = s * trial[i] + mn - x[i];
                err += w[i] * diff * diff;
            }
            if (err < best) {
                memcpy(L, trial, (size_t)n);
                best = err;
                scale = s;
                lo = mn;
            }
        }
    }
    *neg_min = -lo;
    return scale;
}

/* Q4_K and Q5_K share their scales: 8 sub-blocks of 32 fitted with
 * kq_fit_scale_min (weights |x| + rms), the 8 scales and 8 mins quantized
 * to 6 bits against the largest of each, then the levels recomputed with
 * the scales as stored. As ggml's quantize_row_q4_K_ref / q5_K_ref. */
static void kq_quantize_levels(const float *x, int nmax, float rmin, int nstep, uint16_t *d_out, uint16_t *dmin_out,
                               uint8_t *scales, uint8_t *L)
{
    float sc[8], mn[8], w[32], max_sc = 0, max_mn = 0;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += xs[l] * xs[l];
        float av = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            w[l] = av + fabsf(xs[l]);
        sc[j] = kq_fit_scale_min(32, nmax, xs, w, L + 32 * j, &mn[j], rmin, 0.1f, nstep);
        max_sc = sc[j] > max_sc ? sc[j] : max_sc;
        max_mn = mn[j] > max_mn ? mn[j] : max_mn;
    }
    float inv_sc = max_sc > 0 ? 63.0f / max_sc : 0.0f, inv_mn = max_mn > 0 ? 63.0f / max_mn : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        /* ggml stores the rounded value in a uint8_t before clamping to 63 */
        ls[j] = (uint8_t)round_nearest(inv_sc * sc[j]);
        lm[j] = (uint8_t)round_nearest(inv_mn * mn[j]);
        ls[j] = ls[j] < 63 ? ls[j] : 63;
        lm[j] = lm[j] < 63 ? lm[j] : 63;
    }
    kq_pack_scales(scales, ls, lm);
    *d_out = f32_to_f16(max_sc / 63.0f);
    *dmin_out = f32_to_f16(max_mn / 63.0f);
    for (int j = 0; j < 8; j++) {
        int s, m;
        kq_scale_min(j, scales, &s, &m);
        float d = f16_to_f32(*d_out) * s;
        if (d == 0.0f)
            continue;
        float dm = f16_to_f32(*dmin_out) * m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)clamp_int(round_nearest((x[32 * j + l] + dm) / d), 0, nmax);
    }
}

static void q4_K_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q4_K *b = src;
    for (int64_t k = 0; k < n / QK_K; k++, dst += QK_K) {
        float d = f16_to_f32(b[k].d), dmin = f16_to_f32(b[k].dmin);
        for (int c = 0; c < 4; c++) {
            int s0, m0, s1, m1;
            kq_scale_min(2 * c, b[k].scales, &s0, &m0);
            kq_scale_min(2 * c + 1, b[k].scales, &s1, &m1);
            const uint8_t *q = b[k].qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                dst[64 * c + l] = d * s0 * (q[l] & 15) - dmin * m0;
                dst[64 * c + 32 + l] = d * s1 * (q[l] >> 4) - dmin * m1;
            }
        }
    }
}

static void q4_K_from_f32(const float *src, void *dst, int64_t n)
{
    block_q4_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t k = 0; k < n / QK_K; k++) {
        kq_quantize_levels(src + k * QK_K, 15, -1.0f, 20, &b[k].d, &b[k].dmin, b[k].scales, L);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[k].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

/* Q4_K/Q5_K . Q8_K per super-block: sum_j sc_j * (q_j . x_j) in integers,
 * minus sum_j m_j * (the sum of x_j, from bsums), each times its scales. */
static float kq_dot_finish(const int32_t *dots, const uint8_t *scales, uint16_t d, uint16_t dmin,
                           const block_q8_K *x)
{
    int32_t sum_q = 0, sum_m = 0;
    for (int j = 0; j < 8; j++) {
        int s, m;
        kq_scale_min(j, scales, &s, &m);
        sum_q += s * dots[j];
        sum_m += m * (x->bsums[2 * j] + x->bsums[2 * j + 1]);
    }
    return f16_to_f32(d) * x->d * (float)sum_q - f16_to_f32(dmin) * x->d * (float)sum_m;
}

static float q4_K_vec_dot(int n, const void *row, const void *xv)
{
    const block_q4_K *w = row;
    const block_q8_K *x = xv;
    float sum = 0.0f;
    for (int k = 0; k < n / QK_K; k++) {
        int32_t dots[8];
        for (int c = 0; c < 4; c++) {
            int32_t lo = 0, hi = 0;
            const uint8_t *q = w[k].qs + 32 * c;
            const int8_t *a = x[k].qs + 64 * c;
            for (int l = 0; l < 32; l++) {
                lo += (q[l] & 15) * a[l];
                hi += (q[l] >> 4) * a[32 + l];
            }
            dots[2 * c] = lo;
            dots[2 * c + 1] = hi;
        }
        sum += kq_dot_finish(dots, w[k].scales, w[k].d, w[k].dmin, &x[k]);
    }
    return sum;
}

static void q5_K_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q5_K *b = src;
    for (int64_t k = 0; k < n / QK_K; k++, dst += QK_K) {
        float d = f16_to_f32(b[k].d), dmin = f16_to_f32(b[k].dmin);
        for (int c = 0; c < 4; c++) {
            int s0, m0, s1, m1;
            kq_scale_min(2 * c, b[k].scales, &s0, &m0);
            kq_scale_min(2 * c + 1, b[k].scales, &s1, &m1);
            const uint8_t *q = b[k].qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                int q0 = (q[l] & 15) | ((b[k].qh[l] >> (2 * c)) & 1) << 4;
                int q1 = (q[l] >> 4) | ((b[k].qh[l] >> (2 * c + 1)) & 1) << 4;
                dst[64 * c + l] = d * s0 * q0 - dmin * m0;
                dst[64 * c + 32 + l] = d * s1 * q1 - dmin * m1;
            }
        }
    }
}

static void q5_K_from_f32(const float *src, void *dst, int64_t n)
{
    block_q5_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t k = 0; k < n / QK_K; k++) {
        kq_quantize_levels(src + k * QK_K, 31, -0.5f, 15, &b[k].d, &b[k].dmin, b[k].scales, L);
        memset(b[k].qh, 0, sizeof(b[k].qh));
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                int l0 = L[64 * c + l], l1 = L[64 * c + 32 + l];
                b[k].qh[l] |= (uint8_t)(((l0 >> 4) << (2 * c)) | ((l1 >> 4) << (2 * c + 1)));
                b[k].qs[32 * c + l] = (uint8_t)((l0 & 15) | ((l1 & 15) << 4));
            }
        }
    }
}

static float q5_K_vec_dot(int n, const void *row, const void *xv)
{
    const block_q5_K *w = row;
    const block_q8_K *x = xv;
    float sum = 0.0f;
    for (int k = 0; k < n / QK_K; k++) {
        int32_t dots[8];
        for (int c = 0; c < 4; c++) {
            int32_t lo = 0, hi = 0;
            const uint8_t *q = w[k].qs + 32 * c;
            const int8_t *a = x[k].qs + 64 * c;
            for (int l = 0; l < 32; l++) {
                lo += ((q[l] & 15) | ((w[k].qh[l] >> (2 * c)) & 1) << 4) * a[l];
                hi += ((q[l] >> 4) | ((w[k].qh[l] >> (2 * c + 1)) & 1) << 4) * a[32 + l];
            }
            dots[2 * c] = lo;
            dots[2 * c + 1] = hi;
        }
        sum += kq_dot_finish(dots, w[k].scales, w[k].d, w[k].dmin, &x[k]);
    }
    return sum;
}

/* The 256 levels of a Q6_K block, minus 32: q[v] in -32..31. Each half
 * of 128 values takes 64 bytes of ql and 32 of qh, 32 values per quarter. */
static void q6_K_levels(const block_q6_K *b, int8_t *q)
{
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int8_t *o = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            o[l] = (int8_t)(((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32);
            o[l + 32] = (int8_t)(((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32);
            o[l + 64] = (int8_t)(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
            o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
        }
    }
}

static void q6_K_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q6_K *b = src;
    int8_t q[QK_K];
    for (int64_t k = 0; k < n / QK_K; k++, dst += QK_K) {
        float d = f16_to_f32(b[k].d);
        q6_K_levels(&b[k], q);
        for (int v = 0; v < QK_K; v++)
            dst[v] = d * b[k].scales[v / 16] * q[v];
    }
}

/* Scale of n values as signed levels -nmax..nmax-1 (x ~ scale * l), as
 * ggml's make_qx_quants with weights x^2: start from the value of largest
 * magnitude mapped to -nmax, refit by least squares, try 18 nearby scales. */
static float kq_fit_scale(int n, int nmax, const float *x, int8_t *L)
{
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -nmax / max, sum_lx = 0, sum_l2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sum_lx += w * x[i] * l;
        sum_l2 += w * l * l;
    }
    float scale = sum_l2 ? sum_lx / sum_l2 : 0.0f, best = scale * sum_lx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sum_lx = sum_l2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sum_lx += w * x[i] * l;
            sum_l2 += w * l * l;
        }
        if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1));
            scale = sum_lx / sum_l2;
            best = scale * sum_lx;
        }
    }
    return scale;
}

/* As ggml's quantize_row_q6_K_ref: 16 sub-blocks of 16 fitted with
 * kq_fit_scale, their scales quantized to int8 against the one of largest
 * magnitude (mapped to -128), then the levels recomputed. */
static void q6_K_from_f32(const float *src, void *dst, int64_t n)
{
    block_q6_K *b = dst;
    int8_t L[QK_K];
    for (int64_t k = 0; k < n / QK_K; k++) {
        const float *x = src + k * QK_K;
        float sc[16], max_abs = 0, max_sc = 0;
        for (int j = 0; j < 16; j++) {
            sc[j] = kq_fit_scale(16, 32, x + 16 * j, L + 16 * j);
            if (fabsf(sc[j]) > max_abs) {
                max_abs = fabsf(sc[j]);
                max_sc = sc[j];
            }
        }
        memset(&b[k], 0, sizeof(b[k]));
        if (max_abs < 1e-15f)
            continue;
        float iscale = -128.0f / max_sc;
        b[k].d = f32_to_f16(1 / iscale);
        for (int j = 0; j < 16; j++) {
            int v = round_nearest(iscale * sc[j]);
            b[k].scales[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < 16; j++) {
            float d = f16_to_f32(b[k].d) * b[k].scales[j];
            if (d == 0.0f)
                continue;
            for (int i = 0; i < 16; i++)
                L[16 * j + i] = (int8_t)(clamp_int(round_nearest(x[16 * j + i] / d), -32, 31) + 32);
        }
        for (int h = 0; h < 2; h++) {
            uint8_t *ql = b[k].ql + 64 * h, *qh = b[k].qh + 32 * h;
            const int8_t *Lh = L + 128 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 15) | ((Lh[l + 64] & 15) << 4));
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 15) | ((Lh[l + 96] & 15) << 4));
                qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                                  ((Lh[l + 96] >> 4) << 6));
            }
        }
    }
}

/* Per sub-block of 16: scale times the integer dot of (q - 32) with x. */
static float q6_K_vec_dot(int n, const void *row, const void *xv)
{
    const block_q6_K *w = row;
    const block_q8_K *x = xv;
    float sum = 0.0f;
    int8_t q[QK_K];
    for (int k = 0; k < n / QK_K; k++) {
        int32_t total = 0;
        q6_K_levels(&w[k], q);
        for (int j = 0; j < 16; j++) {
            int32_t s = 0;
            for (int i = 0; i < 16; i++)
                s += q[16 * j + i] * x[k].qs[16 * j + i];
            total += w[k].scales[j] * s;
        }
        sum += f16_to_f32(w[k].d) * x[k].d * (float)total;
    }
    return sum;
}

static void q8_K_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q8_K *b = src;
    for (int64_t k = 0; k < n / QK_K; k++)
        for (int j = 0; j < QK_K; j++)
            dst[k * QK_K + j] = b[k].d * b[k].qs[j];
}

/* As ggml's quantize_row_q8_K_ref: the value of largest magnitude maps to
 * -127 (d = max / -127, kept as f32), bsums filled. */
static void q8_K_from_f32(const float *src, void *dst, int64_t n)
{
    block_q8_K *b = dst;
    for (int64_t k = 0; k < n / QK_K; k++) {
        const float *x = src + k * QK_K;
        float amax = 0, max = 0;
        for (int j = 0; j < QK_K; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        memset(&b[k], 0, sizeof(b[k]));
        if (amax == 0.0f)
            continue;
        float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = round_nearest(iscale * x[j]);
            b[k].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++)
                s += b[k].qs[16 * j + i];
            b[k].bsums[j] = (int16_t)s;
        }
        b[k].d = 1 / iscale;
    }
}

/* Q8_K is an activation type; as a weight (--dtype q8_k) it dots with
 * itself, so that every type in the table can hold a matrix. */
static float q8_K_vec_dot(int n, const void *row, const void *xv)
{
    const block_q8_K *w = row, *x = xv;
    float sum = 0.0f;
    for (int k = 0; k < n / QK_K; k++) {
        int32_t s = 0;
        for (int j = 0; j < QK_K; j++)
            s += w[k].qs[j] * x[k].qs[j];
        sum += w[k].d * x[k].d * (float)s;
    }
    return sum;
}

/* ---- the table ---- */

static const dtype_traits traits[DTYPE_COUNT] = {
    [DTYPE_F32] = { "f32", "F32", 1, 4, 1, DTYPE_F32, f32_to_f32, f32_from_f32, f32_vec_dot },
    [DTYPE_F16] = { "f16", "F16", 1, 2, 1, DTYPE_F32, f16_to_f32_row, f16_from_f32_row, f16_vec_dot },
    [DTYPE_BF16] = { "bf16", "BF16", 1, 2, 1, DTYPE_BF16, bf16_to_f32_row, bf16_from_f32_row, bf16_vec_dot },
    [DTYPE_Q8_0] = { "q8_0", "Q8_0", QK8_0, sizeof(block_q8_0), 0, DTYPE_Q8_0, q8_0_to_f32, q8_0_from_f32,
                     q8_0_vec_dot },
    [DTYPE_Q4_0] = { "q4_0", "Q4_0", QK4_0, sizeof(block_q4_0), 0, DTYPE_Q8_0, q4_0_to_f32, q4_0_from_f32,
                     q4_0_vec_dot },
    [DTYPE_Q4_K] = { "q4_k", "Q4_K", QK_K, sizeof(block_q4_K), 0, DTYPE_Q8_K, q4_K_to_f32, q4_K_from_f32,
                     q4_K_vec_dot },
    [DTYPE_Q5_K] = { "q5_k", "Q5_K", QK_K, sizeof(block_q5_K), 0, DTYPE_Q8_K, q5_K_to_f32, q5_K_from_f32,
                     q5_K_vec_dot },
    [DTYPE_Q6_K] = { "q6_k", "Q6_K", QK_K, sizeof(block_q6_K), 0, DTYPE_Q8_K, q6_K_to_f32, q6_K_from_f32,
                     q6_K_vec_dot },
    [DTYPE_Q8_K] = { "q8_k", "Q8_K", QK_K, sizeof(block_q8_K), 0, DTYPE_Q8_K, q8_K_to_f32, q8_K_from_f32,
                     q8_K_vec_dot },
};

const dtype_traits *dtype_get(dtype_t t)
{
    CHECK((unsigned)t < DTYPE_COUNT);
    return &traits[t];
}

const char *dtype_name(dtype_t t)
{
    return (unsigned)t < DTYPE_COUNT ? traits[t].name : "?";
}

int dtype_parse(const char *s, dtype_t *out)
{
    static const struct { const char *name; dtype_t t; } aliases[] = {
        { "float32", DTYPE_F32 }, { "bfloat16", DTYPE_BF16 }, { "float16", DTYPE_F16 },
    };
    if (!s)
        return -1;
    for (int t = 0; t < DTYPE_COUNT; t++) {
        if (strcmp(s, traits[t].name) == 0 || strcmp(s, traits[t].st_name) == 0) {
            if (out)
                *out = (dtype_t)t;
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++) {
        if (strcmp(s, aliases[i].name) == 0) {
            if (out)
                *out = aliases[i].t;
            return 0;
        }
    }
    return -1;
}

const char *dtype_names(void)
{
    static char buf[256];
    if (!buf[0]) {
        size_t off = 0;
        for (int t = 0; t < DTYPE_COUNT; t++)
            off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s", t ? ", " : "", traits[t].name);
    }
    return buf;
}

int dtype_is_block(dtype_t t)
{
    return dtype_get(t)->block_size > 1;
}

int dtype_block_size(dtype_t t)
{
    return dtype_get(t)->block_size;
}

int dtype_row_ok(dtype_t t, int64_t n)
{
    return n >= 0 && n % dtype_get(t)->block_size == 0;
}

size_t dtype_row_size(dtype_t t, int64_t n)
{
    const dtype_traits *tr = dtype_get(t);
    CHECK(n >= 0 && n % tr->block_size == 0);
    return (size_t)(n / tr->block_size) * tr->block_bytes;
}

size_t dtype_matrix_size(dtype_t t, int64_t rows, int64_t cols)
{
    return (size_t)rows * dtype_row_size(t, cols);
}

/* Values converted per step between two non-F32 types: a multiple of every
 * block size. */
#define CONVERT_STEP 256

void dtype_convert(void *dst, dtype_t dst_t, const void *src, dtype_t src_t, size_t n)
{
    const dtype_traits *d = dtype_get(dst_t), *s = dtype_get(src_t);
    if (dst_t == src_t) {
        memcpy(dst, src, dtype_row_size(dst_t, (int64_t)n));
    } else if (dst_t == DTYPE_F32) {
        s->to_f32(src, dst, (int64_t)n);
    } else if (src_t == DTYPE_F32) {
        d->from_f32(src, dst, (int64_t)n);
    } else { /* through F32, a step at a time */
        float tmp[CONVERT_STEP];
        size_t done = 0;
        while (done < n) {
            size_t k = n - done < CONVERT_STEP ? n - done : CONVERT_STEP;
            s->to_f32((const char *)src + dtype_row_size(src_t, (int64_t)done), tmp, (int64_t)k);
            d->from_f32(tmp, (char *)dst + dtype_row_size(dst_t, (int64_t)done), (int64_t)k);
            done += k;
        }
    }
}
