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

/* ---- the table ---- */

static const dtype_traits traits[DTYPE_COUNT] = {
    [DTYPE_F32] = { "f32", "F32", 1, 4, 1, DTYPE_F32, f32_to_f32, f32_from_f32, f32_vec_dot },
    [DTYPE_F16] = { "f16", "F16", 1, 2, 1, DTYPE_F32, f16_to_f32_row, f16_from_f32_row, f16_vec_dot },
    [DTYPE_BF16] = { "bf16", "BF16", 1, 2, 1, DTYPE_BF16, bf16_to_f32_row, bf16_from_f32_row, bf16_vec_dot },
    [DTYPE_Q8_0] = { "q8_0", "Q8_0", QK8_0, sizeof(block_q8_0), 0, DTYPE_Q8_0, q8_0_to_f32, q8_0_from_f32,
                     q8_0_vec_dot },
    [DTYPE_Q4_0] = { "q4_0", "Q4_0", QK4_0, sizeof(block_q4_0), 0, DTYPE_Q8_0, q4_0_to_f32, q4_0_from_f32,
                     q4_0_vec_dot },
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
    static char buf[128];
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
