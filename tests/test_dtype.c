/* Tests of the dtype traits table's K-quants (Q4_K, Q5_K, Q6_K, Q8_K):
 * hand-built blocks decoded to known values, round trips within bounds,
 * reference dot products equal to dequantize-then-double dot products. */
#include "dtype.h"
#include "util.h"
#include "test.h"

#include <math.h>

static uint32_t rng_state = 12345;

static float frand(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

static void test_sizes(void)
{
    int ok = dtype_block_size(DTYPE_Q4_K) == 256 && dtype_row_size(DTYPE_Q4_K, 512) == 288 &&
             dtype_row_size(DTYPE_Q5_K, 256) == 176 && dtype_row_size(DTYPE_Q6_K, 256) == 210 &&
             dtype_row_size(DTYPE_Q8_K, 256) == 292 && !dtype_row_ok(DTYPE_Q6_K, 32) &&
             dtype_get(DTYPE_Q4_K)->vec_dot_type == DTYPE_Q8_K && dtype_get(DTYPE_Q6_K)->vec_dot_type == DTYPE_Q8_K;
    dtype_t t;
    ok = ok && dtype_parse("q4_k", &t) == 0 && t == DTYPE_Q4_K && dtype_parse("Q6_K", &t) == 0 && t == DTYPE_Q6_K;
    test_result(ok, "dtype_kquant_sizes", "block sizes or names wrong");
}

/* Q4_K: d = 1, dmin = 0.5; sub-block 0: scale 1, min 5; sub-block 1:
 * scale 2, min 6; sub-block 4: scale 1 | 1 << 4 = 17 (high bits from
 * scales[0] >> 6), min 2. */
static void test_q4_K_known(void)
{
    block_q4_K b;
    memset(&b, 0, sizeof(b));
    b.d = 0x3C00;
    b.dmin = 0x3800;
    const uint8_t sc[12] = { 0x41, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x21, 0x00, 0x00, 0x00 };
    memcpy(b.scales, sc, 12);
    b.qs[0] = 0x3A;   /* value 0: 10 (sub-block 0), value 32: 3 (sub-block 1) */
    b.qs[64] = 0x0F;  /* value 128: 15 (sub-block 4) */
    float y[256];
    dtype_get(DTYPE_Q4_K)->to_f32(&b, y, 256);
    int ok = y[0] == 1 * 10 - 0.5f * 5 && y[32] == 2 * 3 - 0.5f * 6 && y[128] == 17 * 15 - 0.5f * 2 &&
             y[1] == -2.5f && y[160] == 0;
    /* value 160 is sub-block 5: scale (scales[9] & 15) | (scales[1] >> 6) << 4 = 0, min 0 */
    test_result(ok, "dtype_q4_K_known_block", "got %g %g %g %g %g", y[0], y[32], y[128], y[1], y[160]);
}

static void test_q5_K_known(void)
{
    block_q5_K b;
    memset(&b, 0, sizeof(b));
    b.d = 0x3C00;  /* 1 */
    b.dmin = 0x0000;
    b.scales[0] = 1;  /* sub-block 0 scale 1 */
    b.scales[1] = 3;  /* sub-block 1 scale 3 */
    b.scales[2] = 2;  /* sub-block 2 scale 2 */
    b.qs[0] = 0x21;   /* value 0: 1, value 32: 2 */
    b.qs[32] = 0x04;  /* value 64: 4 */
    b.qh[0] = 0x07;   /* bits 0, 1, 2: values 0, 32, 64 gain 16 */
    float y[256];
    dtype_get(DTYPE_Q5_K)->to_f32(&b, y, 256);
    int ok = y[0] == 17 && y[32] == 3 * 18 && y[64] == 2 * 20 && y[1] == 0;
    test_result(ok, "dtype_q5_K_known_block", "got %g %g %g %g", y[0], y[32], y[64], y[1]);
}

/* Q6_K: d = 0.5; value 0 = ql[0] low nibble 1 | qh[0] bits 0-1 (3) << 4 =
 * 49, scale 2 -> 0.5 * 2 * 17; value 32 = 0, scale -3 -> 0.5 * -3 * -32;
 * value 64 = ql[0] high nibble 2, scale 1 -> 0.5 * (2 - 32); value 128 (second
 * half) = ql[64] low nibble 5 | qh[32] bits 0-1 (2) << 4 = 37, scale 4. */
static void test_q6_K_known(void)
{
    block_q6_K b;
    memset(&b, 0, sizeof(b));
    b.d = 0x3800;
    b.scales[0] = 2;
    b.scales[2] = -3;
    b.scales[4] = 1;
    b.scales[8] = 4;
    b.ql[0] = 0x21;
    b.qh[0] = 0x03;
    b.ql[64] = 0x05;
    b.qh[32] = 0x02;
    float y[256];
    dtype_get(DTYPE_Q6_K)->to_f32(&b, y, 256);
    int ok = y[0] == 17 && y[32] == 48 && y[64] == -15 && y[128] == 0.5f * 4 * 5;
    test_result(ok, "dtype_q6_K_known_block", "got %g %g %g %g", y[0], y[32], y[64], y[128]);
}

static void test_q8_K_block(void)
{
    float x[256];
    for (int i = 0; i < 256; i++)
        x[i] = frand();
    x[7] = -1.5f; /* the largest magnitude: d = max / -127 > 0, q = -127 */
    block_q8_K b;
    dtype_get(DTYPE_Q8_K)->from_f32(x, &b, 256);
    int ok = b.qs[7] == -127 && fabsf(b.d * 127 - 1.5f) < 1e-6f;
    for (int j = 0; j < 16 && ok; j++) {
        int s = 0;
        for (int i = 0; i < 16; i++)
            s += b.qs[16 * j + i];
        ok = s == b.bsums[j];
    }
    test_result(ok, "dtype_q8_K_block_bsums", "qs[7] %d d %g", b.qs[7], (double)b.d);
}

static void test_round_trip(dtype_t t, double bound)
{
    enum { N = 4096 };
    static float x[N], y[N];
    static char q[N * 2];
    for (int i = 0; i < N; i++)
        x[i] = frand() * (i % 256 < 128 ? 1.0f : 0.01f) + (i % 512 < 256 ? 0.3f : 0.0f);
    const dtype_traits *tr = dtype_get(t);
    tr->from_f32(x, q, N);
    tr->to_f32(q, y, N);
    double worst = 0;
    for (int b = 0; b < N / 256; b++) {
        double e = 0, r = 0;
        for (int i = 0; i < 256; i++) {
            double d = (double)x[b * 256 + i] - y[b * 256 + i];
            e += d * d;
            r += (double)x[b * 256 + i] * x[b * 256 + i];
        }
        double rel = sqrt(e / r);
        worst = rel > worst ? rel : worst;
    }
    char name[64];
    snprintf(name, sizeof(name), "dtype_%s_round_trip", tr->name);
    test_result(worst < bound, name, "relative rms error %.4f over a super-block, bound %.4f", worst, bound);
}

static void test_vec_dot(dtype_t t)
{
    enum { N = 1024 };
    static float w[N], x[N], wf[N], xf[N];
    static char wq[N * 2], xq[N * 2];
    const dtype_traits *tr = dtype_get(t), *xt = dtype_get(tr->vec_dot_type);
    int ok = 1;
    double worst = 0;
    for (int trial = 0; trial < 20 && ok; trial++) {
        for (int i = 0; i < N; i++) {
            w[i] = frand() * (trial % 3 == 0 ? 100.0f : 1.0f);
            x[i] = frand() + (trial % 2 ? 0.5f : 0.0f);
        }
        tr->from_f32(w, wq, N);
        xt->from_f32(x, xq, N);
        tr->to_f32(wq, wf, N);
        xt->to_f32(xq, xf, N);
        double ref = 0, mag = 0;
        for (int i = 0; i < N; i++) {
            ref += (double)wf[i] * xf[i];
            mag += fabs((double)wf[i] * xf[i]);
        }
        double got = tr->vec_dot(N, wq, xq);
        double err = fabs(got - ref) / (mag > 0 ? mag : 1);
        worst = err > worst ? err : worst;
        ok = err < 1e-5;
    }
    char name[64];
    snprintf(name, sizeof(name), "dtype_%s_vec_dot", tr->name);
    test_result(ok, name, "dot differs from the dequantized double dot by %.3g of sum |w x|", worst);
}

/* All-zero and constant inputs quantize without NaNs. */
static void test_degenerate(dtype_t t)
{
    float x[256], y[256];
    char q[512];
    const dtype_traits *tr = dtype_get(t);
    int ok = 1;
    for (int c = 0; c < 3 && ok; c++) {
        for (int i = 0; i < 256; i++)
            x[i] = c == 0 ? 0.0f : c == 1 ? 0.75f : -2.0f;
        tr->from_f32(x, q, 256);
        tr->to_f32(q, y, 256);
        for (int i = 0; i < 256 && ok; i++)
            ok = isfinite(y[i]) && fabsf(y[i] - x[i]) <= 0.05f * fabsf(x[i]) + 1e-6f;
    }
    char name[64];
    snprintf(name, sizeof(name), "dtype_%s_constant_blocks", tr->name);
    test_result(ok, name, "zero or constant block decoded wrongly");
}

int main(void)
{
    test_sizes();
    test_q4_K_known();
    test_q5_K_known();
    test_q6_K_known();
    test_q8_K_block();
    test_round_trip(DTYPE_Q4_K, 0.12);
    test_round_trip(DTYPE_Q5_K, 0.06);
    test_round_trip(DTYPE_Q6_K, 0.03);
    test_round_trip(DTYPE_Q8_K, 0.01);
    const dtype_t kq[] = { DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K, DTYPE_Q8_K };
    for (int i = 0; i < 4; i++) {
        test_vec_dot(kq[i]);
        test_degenerate(kq[i]);
    }
    return test_failures;
}
