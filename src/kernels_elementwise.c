/*
 * kernels_elementwise: the small F32 operations of the forward pass. Norms,
 * softmax and SwiGLU are plain loops (a small share of a token's time);
 * dot and axpy, called per cached position by attention, go to the SIMD
 * table.
 */
#include "kernels_impl.h"

#include <math.h>

void kernels_rmsnorm(float *out, const float *x, const float *weight, int n, float eps)
{
    float ss = 0.0f;
    for (int j = 0; j < n; j++)
        ss += x[j] * x[j];
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < n; j++)
        out[j] = weight[j] * (ss * x[j]);
}

void kernels_softmax(float *x, int n)
{
    if (n <= 0)
        return;
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max)
            max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

void kernels_swiglu(float *gate, const float *up, int n)
{
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

float kernels_dot_f32(const float *a, const float *b, int n)
{
    return kernels_isa_get()->dot_f32(a, b, n);
}

void kernels_axpy_f32(float *y, float a, const float *x, int n)
{
    kernels_isa_get()->axpy_f32(y, a, x, n);
}

float kernels_dot_f32_f16(const float *a, const uint16_t *b, int n)
{
    return kernels_isa_get()->dot_f32_f16(a, b, n);
}

void kernels_axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    kernels_isa_get()->axpy_f16(y, a, x, n);
}
