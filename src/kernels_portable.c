/*
 * kernels_portable: the C kernels every build has, for every dtype through
 * its traits (dtype.c), and the table the SIMD levels start from.
 */
#include "kernels_impl.h"
#include "util.h"

#include <string.h>

/* Each (row, activation row) pair is one call of the type's reference dot
 * product: the same operations whatever the split or the batch. */
static void portable_rows(const mat_t *w, int r0, int r1, const void *x, size_t x_stride, int n_x, float *out,
                          size_t out_stride)
{
    const dtype_traits *t = dtype_get(w->dtype);
    size_t row_bytes = dtype_row_size(w->dtype, w->cols);
    const char *base = w->data;
    for (int r = r0; r < r1; r++) {
        const char *row = base + (size_t)r * row_bytes;
        for (int k = 0; k < n_x; k++)
            out[(size_t)k * out_stride + r] = t->vec_dot(w->cols, row, (const char *)x + (size_t)k * x_stride);
    }
}

static float portable_dot_f32(const float *a, const float *b, int n)
{
    return dtype_get(DTYPE_F32)->vec_dot(n, a, b);
}

static void portable_axpy_f32(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

static float portable_dot_f32_f16(const float *a, const uint16_t *b, int n)
{
    return dtype_get(DTYPE_F16)->vec_dot(n, b, a);
}

static void portable_axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * f16_to_f32(x[i]);
}

static double portable_sum_bytes(const char *p, size_t n)
{
    const uint64_t *u = (const uint64_t *)p;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (size_t i = 0; i + 4 <= n / 8; i += 4) {
        a0 += u[i];
        a1 += u[i + 1];
        a2 += u[i + 2];
        a3 += u[i + 3];
    }
    return (double)(a0 ^ a1 ^ a2 ^ a3);
}

void kernels_portable_register(kernels_isa *k)
{
    memset(k, 0, sizeof(*k));
    k->name = "scalar";
    for (int t = 0; t < DTYPE_COUNT; t++) {
        k->rows[t] = portable_rows;
        k->to_f32[t] = dtype_get((dtype_t)t)->to_f32;
        k->from_f32[t] = dtype_get((dtype_t)t)->from_f32;
    }
    k->dot_f32 = portable_dot_f32;
    k->axpy_f32 = portable_axpy_f32;
    k->dot_f32_f16 = portable_dot_f32_f16;
    k->axpy_f16 = portable_axpy_f16;
    k->sum_bytes = portable_sum_bytes;
}
