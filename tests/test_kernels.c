/*
 * test_kernels: every kernel against a naive double-precision loop.
 *
 * Error measure: max |y - ref| / (max |ref| + 1e-30) over the output, where
 * ref is computed in double from the same (already rounded) weights that the
 * kernel sees, so BF16/F16 cases measure the kernel and not the rounding.
 * Bound 1e-5 for every float-accumulated result (F32 has 24 bits, sums of at
 * most a few thousand terms lose well under that).
 *
 * Decode with BF16 weights multiplies them with the activation rounded to
 * BF16 (BF16's vec_dot_type): there the reference takes the rounded
 * activation too, with the same 1e-5 bound, and a test of its own bounds
 * the rounding: |y - x.w| <= 2^-8 * sum |w x| (+ 1e-5 of max |ref|), 2^-8
 * being BF16's unit roundoff (round to nearest, 8-bit significand).
 *
 * Thread-count independence is checked bit for bit: a matvec with 1, 2 and 3
 * threads, and a batch against single calls, must give identical floats.
 */
#include "kernels.h"
#include "kernels_impl.h" /* the table of the SIMD level, for the conversions */
#include "util.h"
#include "test.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#define BOUND 1e-5

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float rand_uniform(void) /* [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

static void fill_uniform(float *v, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        v[i] = rand_uniform() * scale;
}

static double max_abs(const double *v, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(v[i]) > m)
            m = fabs(v[i]);
    return m;
}

/* Normalised error of y against ref. */
static double norm_err(const float *y, const double *ref, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)y[i] - ref[i]);
        if (d > e || isnan(d))
            e = isnan(d) ? INFINITY : d;
    }
    return e / (max_abs(ref, n) + 1e-30);
}

static double norm_err_f(const float *y, const float *ref, size_t n)
{
    double *r = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        r[i] = ref[i];
    double e = norm_err(y, r, n);
    free(r);
    return e;
}

/* A random matrix stored as dtype, plus its exact F32 values. */
typedef struct {
    mat_t m;
    void *storage;
    float *values; /* (rows, cols): what the stored weights mean */
} test_mat;

static void test_mat_make(test_mat *t, dtype_t dt, int rows, int cols)
{
    size_t n = (size_t)rows * (size_t)cols;
    t->values = malloc((n ? n : 1) * sizeof(float));
    t->storage = malloc(n ? dtype_row_size(dt, (int64_t)n) : 4);
    fill_uniform(t->values, n, 1.0f);
    for (size_t i = 0; i < n; i++) {
        if (dt == DTYPE_BF16) {
            uint16_t h = f32_to_bf16(t->values[i]);
            ((uint16_t *)t->storage)[i] = h;
            t->values[i] = bf16_to_f32(h);
        } else if (dt == DTYPE_F16) {
            uint16_t h = f32_to_f16(t->values[i]);
            ((uint16_t *)t->storage)[i] = h;
            t->values[i] = f16_to_f32(h);
        } else {
            ((float *)t->storage)[i] = t->values[i];
        }
    }
    t->m.dtype = dt;
    t->m.rows = rows;
    t->m.cols = cols;
    t->m.data = t->storage;
}

static void test_mat_free(test_mat *t)
{
    free(t->values);
    free(t->storage);
}

/* ref (n, rows) = X (n, cols) @ W^T (+ bias), in double. */
static void naive_matmul(double *ref, const test_mat *t, const float *x, int n, const float *bias)
{
    int rows = t->m.rows, cols = t->m.cols;
    for (int i = 0; i < n; i++)
        for (int r = 0; r < rows; r++) {
            double s = bias ? bias[r] : 0.0;
            for (int c = 0; c < cols; c++)
                s += (double)t->values[(size_t)r * cols + c] * (double)x[(size_t)i * cols + c];
            ref[(size_t)i * rows + r] = s;
        }
}

/* The activation row a decode kernel for t's weights sees: x rounded to
 * the weights' vec_dot_type when that is a float type other than F32. */
static float *kernel_x(const test_mat *t, const float *x)
{
    int cols = t->m.cols;
    float *xr = malloc((size_t)(cols ? cols : 1) * sizeof(float));
    dtype_t vt = dtype_get(t->m.dtype)->vec_dot_type;
    memcpy(xr, x, (size_t)cols * sizeof(float));
    if (vt != DTYPE_F32 && dtype_get(vt)->is_float) {
        void *tmp = malloc(dtype_row_size(vt, cols ? cols : 1));
        dtype_get(vt)->from_f32(x, tmp, cols);
        dtype_get(vt)->to_f32(tmp, xr, cols);
        free(tmp);
    }
    return xr;
}

/* naive_matmul of one activation row as a decode kernel sees it. */
static void naive_matvec(double *ref, const test_mat *t, const float *x, const float *bias)
{
    float *xr = kernel_x(t, x);
    naive_matmul(ref, t, xr, 1, bias);
    free(xr);
}

/* Scratch for the activations of BF16 rows, big enough for every case. */
static kernels_scratch mv_scratch;

/* ---- conversions ---- */

static int same_bits(float a, float b)
{
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub;
}

/* The SIMD level's F32 to BF16 conversion (activations of BF16 rows)
 * against f32_to_bf16, bit for bit: random bit patterns (NaNs, infinities,
 * subnormals among them) and exact ties, at lengths that leave tails. */
static void test_bf16_activation_conversion(void)
{
    enum { N = 1 << 16 };
    float *src = malloc(N * sizeof(float));
    uint16_t *got = malloc(N * sizeof(uint16_t));
    int bad = -1;
    for (int round = 0; round < 16 && bad < 0; round++) {
        for (int i = 0; i < N; i++) {
            uint32_t u = (uint32_t)(rng_state >> 32);
            (void)rand_uniform();
            if (i % 7 == 0)
                u = (u & 0xffff0000u) | 0x8000u; /* tie */
            memcpy(&src[i], &u, 4);
        }
        int n = N - round; /* tails of every length */
        kernels_isa_get()->from_f32[DTYPE_BF16](src, got, n);
        for (int i = 0; i < n && bad < 0; i++)
            if (got[i] != f32_to_bf16(src[i]))
                bad = i;
    }
    uint32_t ub = 0;
    if (bad >= 0)
        memcpy(&ub, &src[bad], 4);
    test_result(bad < 0, "bf16 activation conversion (SIMD) equals f32_to_bf16", "differs at 0x%08x", ub);
    free(src);
    free(got);
}

static void test_conversions(void)
{
    /* bf16 special values */
    int ok = f32_to_bf16(0.0f) == 0x0000 && f32_to_bf16(-0.0f) == 0x8000 &&
             f32_to_bf16(INFINITY) == 0x7f80 && f32_to_bf16(-INFINITY) == 0xff80 &&
             isnan(bf16_to_f32(f32_to_bf16(NAN))) && f32_to_bf16(1.0f) == 0x3f80;
    test_result(ok, "bf16 zero/inf/nan", "0x%04x 0x%04x 0x%04x", f32_to_bf16(-0.0f),
                f32_to_bf16(INFINITY), f32_to_bf16(NAN));
    /* 1 + 2^-8 is half-way between 1 and 1 + 2^-7: ties go to the even 1.
     * 1 + 3*2^-8 is half-way between 1 + 2^-7 and 1 + 2^-6: goes to the
     * latter, whose last mantissa bit is 0. */
    ok = f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80 && f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82 &&
         f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81;
    test_result(ok, "bf16 round to nearest even", "0x%04x 0x%04x", f32_to_bf16(1.0f + 0x1p-8f),
                f32_to_bf16(1.0f + 3 * 0x1p-8f));
    float sub = 0x1p-130f; /* an F32 subnormal that bf16 holds exactly */
    test_result(same_bits(bf16_to_f32(f32_to_bf16(sub)), sub), "bf16 subnormal", "got %g",
                (double)bf16_to_f32(f32_to_bf16(sub)));
    int bad = -1;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((uint16_t)h);
        if (isnan(f) ? !isnan(bf16_to_f32(f32_to_bf16(f))) : f32_to_bf16(f) != h) {
            bad = (int)h;
            break;
        }
    }
    test_result(bad < 0, "bf16 round trip of all 65536 values", "fails at 0x%04x", bad);

    /* f16 */
    ok = f32_to_f16(0.0f) == 0x0000 && f32_to_f16(-0.0f) == 0x8000 && f32_to_f16(INFINITY) == 0x7c00 &&
         f32_to_f16(-INFINITY) == 0xfc00 && isnan(f16_to_f32(f32_to_f16(NAN))) &&
         f32_to_f16(65504.0f) == 0x7bff && f16_to_f32(0x7bff) == 65504.0f &&
         f32_to_f16(65519.0f) == 0x7bff && f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(1e6f) == 0x7c00;
    test_result(ok, "f16 zero/inf/nan/65504", "65504->0x%04x 65520->0x%04x", f32_to_f16(65504.0f),
                f32_to_f16(65520.0f));
    ok = f32_to_f16(0x1p-24f) == 0x0001 && f16_to_f32(0x0001) == 0x1p-24f &&
         f32_to_f16(0x1p-25f) == 0x0000 &&          /* tie between 0 and 1 ulp: even 0 */
         f32_to_f16(3 * 0x1p-25f) == 0x0002 &&      /* tie between 1 and 2 ulp: even 2 */
         f32_to_f16(0x1p-25f * 1.0001f) == 0x0001 && /* just above the tie */
         f32_to_f16(0x1p-14f) == 0x0400 && f16_to_f32(0x03ff) == 0x3ffp-24f;
    test_result(ok, "f16 subnormals", "2^-24->0x%04x 2^-25->0x%04x 3*2^-25->0x%04x", f32_to_f16(0x1p-24f),
                f32_to_f16(0x1p-25f), f32_to_f16(3 * 0x1p-25f));
    ok = f32_to_f16(1.0f + 0x1p-11f) == 0x3c00 && f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02;
    test_result(ok, "f16 round to nearest even", "0x%04x 0x%04x", f32_to_f16(1.0f + 0x1p-11f),
                f32_to_f16(1.0f + 3 * 0x1p-11f));
    bad = -1;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32((uint16_t)h);
        if (isnan(f) ? !isnan(f16_to_f32(f32_to_f16(f))) : f32_to_f16(f) != h) {
            bad = (int)h;
            break;
        }
    }
    test_result(bad < 0, "f16 round trip of all 65536 values", "fails at 0x%04x", bad);

    /* The SIMD widening (get_row) agrees with the portable one on every
     * 16-bit pattern; NaNs only need to stay NaN. */
    uint16_t *all = malloc(65536 * sizeof(uint16_t));
    float *row = malloc(65536 * sizeof(float));
    for (uint32_t h = 0; h < 65536; h++)
        all[h] = (uint16_t)h;
    for (int d = 0; d < 2; d++) {
        dtype_t dt = d ? DTYPE_F16 : DTYPE_BF16;
        mat_t m = { dt, 1, 65536, all };
        kernels_get_row(row, &m, 0);
        bad = -1;
        for (uint32_t h = 0; h < 65536 && bad < 0; h++) {
            float want = dt == DTYPE_F16 ? f16_to_f32((uint16_t)h) : bf16_to_f32((uint16_t)h);
            if (isnan(want) ? !isnan(row[h]) : !same_bits(row[h], want))
                bad = (int)h;
        }
        char name[64];
        snprintf(name, sizeof(name), "get_row %s widening of all 65536 values", dtype_name(dt));
        test_result(bad < 0, name, "fails at 0x%04x", bad);
    }
    free(all);
    free(row);
}

static void test_dtypes(void)
{
    dtype_t t;
    int ok = dtype_row_size(DTYPE_F32, 3) == 12 && dtype_row_size(DTYPE_BF16, 3) == 6 &&
             dtype_row_size(DTYPE_F16, 5) == 10 && dtype_row_size(DTYPE_Q8_0, 64) == 68 &&
             dtype_row_size(DTYPE_Q4_0, 64) == 36 && dtype_row_ok(DTYPE_Q8_0, 172) == 0 &&
             dtype_row_ok(DTYPE_Q4_0, 96) == 1 && dtype_row_ok(DTYPE_BF16, 172) == 1 &&
             strcmp(dtype_name(DTYPE_BF16), "bf16") == 0 && strcmp(dtype_name(DTYPE_F16), "f16") == 0 &&
             strcmp(dtype_name(DTYPE_F32), "f32") == 0;
    ok = ok && dtype_parse("bfloat16", &t) == 0 && t == DTYPE_BF16 && dtype_parse("F16", &t) == 0 &&
         t == DTYPE_F16 && dtype_parse("float32", &t) == 0 && t == DTYPE_F32 && dtype_parse("BF16", &t) == 0 &&
         t == DTYPE_BF16 && dtype_parse("q8", &t) == -1 && dtype_parse("", &t) == -1 &&
         dtype_parse("q4_0", &t) == 0 && t == DTYPE_Q4_0 && dtype_parse("Q8_0", &t) == 0 && t == DTYPE_Q8_0;
    test_result(ok, "dtype size/name/parse", "mismatch");
}

/* ---- thread pool ---- */

typedef struct {
    atomic_int visits[8];
    atomic_int bad_nth;
    int expect_nth;
} pool_probe;

static void pool_probe_run(void *p, int ith, int nth)
{
    pool_probe *t = p;
    if (nth != t->expect_nth || ith < 0 || ith >= 8)
        atomic_fetch_add(&t->bad_nth, 1);
    else
        atomic_fetch_add(&t->visits[ith], 1);
}

static void empty_task(void *p, int ith, int nth)
{
    (void)p, (void)ith, (void)nth;
}

static void test_pool(int nt)
{
    char name[96];
    int rc = kernels_init(nt);
    snprintf(name, sizeof(name), "pool init %d threads", nt);
    test_result(rc == 0 && kernels_n_threads() == nt, name, "rc %d n_threads %d", rc, kernels_n_threads());

    pool_probe probe;
    memset(&probe, 0, sizeof(probe));
    probe.expect_nth = nt;
    int rounds = 20000;
    for (int i = 0; i < rounds; i++) {
        kernels_parallel(pool_probe_run, &probe);
        if (i % 5000 == 4999)
            usleep(20000); /* long enough for the workers to go to sleep */
    }
    int ok = atomic_load(&probe.bad_nth) == 0;
    for (int i = 0; i < nt; i++)
        ok = ok && atomic_load(&probe.visits[i]) == rounds;
    snprintf(name, sizeof(name), "pool %d threads: every thread runs every dispatch once", nt);
    test_result(ok, name, "thread 0 ran %d of %d, bad nth %d", atomic_load(&probe.visits[0]), rounds,
                atomic_load(&probe.bad_nth));

    double t0 = time_now();
    int n = 10000;
    for (int i = 0; i < n; i++)
        kernels_parallel(empty_task, NULL);
    printf("info: dispatch latency with %d threads: %.2f us\n", nt, (time_now() - t0) / n * 1e6);
}

/* ---- matvec ---- */

static const int mv_cols[] = { 1, 7, 64, 257, 1000 };
static const int mv_rows[] = { 1, 3, 17, 300 };
#define N_MV_COLS (int)(sizeof(mv_cols) / sizeof(mv_cols[0]))
#define N_MV_ROWS (int)(sizeof(mv_rows) / sizeof(mv_rows[0]))
/* the float types: any column count (block types are tested apart) */
#define N_FLOAT_TYPES 3
#define N_MV_CASES (N_FLOAT_TYPES * N_MV_COLS * N_MV_ROWS)

static test_mat mv_mats[N_MV_CASES];
static float *mv_x[N_MV_CASES];
static float *mv_bias[N_MV_CASES];
static float *mv_first[N_MV_CASES]; /* result with 1 thread */

static void matvec_setup(void)
{
    mv_scratch.bytes = kernels_scratch_bytes(KERNELS_MAX_JOBS, 1, mv_cols[N_MV_COLS - 1]);
    mv_scratch.data = malloc(mv_scratch.bytes);
    int k = 0;
    for (int d = 0; d < N_FLOAT_TYPES; d++)
        for (int c = 0; c < N_MV_COLS; c++)
            for (int r = 0; r < N_MV_ROWS; r++, k++) {
                test_mat_make(&mv_mats[k], (dtype_t)d, mv_rows[r], mv_cols[c]);
                mv_x[k] = malloc((size_t)mv_cols[c] * sizeof(float));
                fill_uniform(mv_x[k], (size_t)mv_cols[c], 1.0f);
                mv_bias[k] = malloc((size_t)mv_rows[r] * sizeof(float));
                fill_uniform(mv_bias[k], (size_t)mv_rows[r], 1.0f);
                mv_first[k] = malloc((size_t)mv_rows[r] * sizeof(float));
            }
}

static void matvec_teardown(void)
{
    free(mv_scratch.data);
    mv_scratch.data = NULL;
    for (int k = 0; k < N_MV_CASES; k++) {
        test_mat_free(&mv_mats[k]);
        free(mv_x[k]);
        free(mv_bias[k]);
        free(mv_first[k]);
    }
}

static void test_matvec_threads(int nt)
{
    kernels_init(nt);
    double worst[N_FLOAT_TYPES] = { 0 };
    int differ[N_FLOAT_TYPES] = { 0 };
    for (int k = 0; k < N_MV_CASES; k++) {
        test_mat *t = &mv_mats[k];
        int rows = t->m.rows;
        float *y = malloc((size_t)rows * sizeof(float));
        double *ref = malloc((size_t)rows * sizeof(double));
        kernels_matvec(y, &t->m, mv_x[k], &mv_scratch);
        naive_matvec(ref, t, mv_x[k], NULL);
        double e = norm_err(y, ref, (size_t)rows);
        if (e > worst[t->m.dtype])
            worst[t->m.dtype] = e;
        if (nt == 1)
            memcpy(mv_first[k], y, (size_t)rows * sizeof(float));
        else if (memcmp(mv_first[k], y, (size_t)rows * sizeof(float)) != 0)
            differ[t->m.dtype]++;
        free(y);
        free(ref);
    }
    for (int d = 0; d < N_FLOAT_TYPES; d++) {
        char name[96];
        snprintf(name, sizeof(name), "matvec %s %d threads vs naive (err %.2e)", dtype_name((dtype_t)d), nt,
                 worst[d]);
        test_result(worst[d] <= BOUND, name, "normalised error %.3e > %.0e", worst[d], BOUND);
        if (nt > 1) {
            snprintf(name, sizeof(name), "matvec %s %d threads bit-identical to 1 thread", dtype_name((dtype_t)d),
                     nt);
            test_result(differ[d] == 0, name, "%d of %d shapes differ", differ[d], N_MV_CASES / N_FLOAT_TYPES);
        }
    }
}

/* A batch mixing every dtype and shape, with biases, against single calls. */
static void test_matvec_batch(int nt)
{
    kernels_init(nt);
    matvec_job jobs[N_MV_CASES];
    float *outs[N_MV_CASES];
    for (int k = 0; k < N_MV_CASES; k++) {
        outs[k] = malloc((size_t)mv_mats[k].m.rows * sizeof(float));
        jobs[k] = (matvec_job){ outs[k], &mv_mats[k].m, mv_x[k], (k % 2) ? mv_bias[k] : NULL };
    }
    for (int k = 0; k < N_MV_CASES; k += KERNELS_MAX_JOBS)
        kernels_matvec_batch(jobs + k, N_MV_CASES - k < KERNELS_MAX_JOBS ? N_MV_CASES - k : KERNELS_MAX_JOBS, 1,
                             &mv_scratch);
    int differ = 0;
    double worst = 0;
    for (int k = 0; k < N_MV_CASES; k++) {
        int rows = mv_mats[k].m.rows;
        float *y = malloc((size_t)rows * sizeof(float));
        double *ref = malloc((size_t)rows * sizeof(double));
        kernels_matvec(y, &mv_mats[k].m, mv_x[k], &mv_scratch);
        if (jobs[k].bias)
            for (int r = 0; r < rows; r++)
                y[r] += jobs[k].bias[r];
        if (memcmp(y, outs[k], (size_t)rows * sizeof(float)) != 0)
            differ++;
        naive_matvec(ref, &mv_mats[k], mv_x[k], jobs[k].bias);
        double e = norm_err(outs[k], ref, (size_t)rows);
        if (e > worst)
            worst = e;
        free(y);
        free(ref);
        free(outs[k]);
    }
    char name[96];
    snprintf(name, sizeof(name), "matvec_batch %d threads bit-identical to single calls", nt);
    test_result(differ == 0, name, "%d of %d jobs differ", differ, N_MV_CASES);
    snprintf(name, sizeof(name), "matvec_batch %d threads with bias vs naive (err %.2e)", nt, worst);
    test_result(worst <= BOUND, name, "normalised error %.3e", worst);
}

/* Batched decode of the float types: n_x = 1..9 and 17 activation rows in
 * one call equal n_x single calls bit for bit, with 1, 2 and 3 threads
 * (the row kernels' tiles of weight rows x activation rows, their tails in
 * both directions and every split of rows; AMX's tiles of 8 and 16
 * activation rows and its passes of 16), and each row within 2 BOUND of
 * the naive loop (sums of up to 2048 products, twice the other tests').
 * Columns cover every step of the SIMD kernels: full blocks, one more
 * vector, a tail, and all three. */
static void test_matvec_float_batches(void)
{
    static const int cols_list[] = { 1, 7, 16, 33, 64, 100, 257, 2048 };
    static const int rows_list[] = { 1, 3, 4, 5, 17, 64, 300 };
    static const int batches[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 17 };
    enum { NX = 17 };
    for (int d = 0; d < N_FLOAT_TYPES; d++) {
        dtype_t dt = (dtype_t)d;
        int differ = 0, cases = 0;
        double worst = 0;
        for (size_t ci = 0; ci < sizeof(cols_list) / sizeof(cols_list[0]); ci++)
            for (size_t ri = 0; ri < sizeof(rows_list) / sizeof(rows_list[0]); ri++) {
                int rows = rows_list[ri], cols = cols_list[ci];
                test_mat m;
                test_mat_make(&m, dt, rows, cols);
                float *x = malloc((size_t)NX * cols * sizeof(float));
                fill_uniform(x, (size_t)NX * cols, 1.0f);
                float *y1 = malloc((size_t)NX * rows * sizeof(float)), *y = malloc((size_t)NX * rows * sizeof(float));
                kernels_scratch sc = { NULL, kernels_scratch_bytes(1, NX, cols) };
                sc.data = malloc(sc.bytes);
                kernels_init(1);
                double *ref = malloc((size_t)rows * sizeof(double));
                for (int k = 0; k < NX; k++) {
                    kernels_matvec(y1 + (size_t)k * rows, &m.m, x + (size_t)k * cols, &sc);
                    naive_matvec(ref, &m, x + (size_t)k * cols, NULL);
                    double e = norm_err(y1 + (size_t)k * rows, ref, (size_t)rows);
                    worst = e > worst ? e : worst;
                }
                free(ref);
                for (int nt = 1; nt <= 3; nt++) {
                    kernels_init(nt);
                    for (size_t bi = 0; bi < sizeof(batches) / sizeof(batches[0]); bi++) {
                        int b = batches[bi];
                        matvec_job job = { y, &m.m, x, NULL };
                        memset(y, 0, (size_t)b * rows * sizeof(float));
                        kernels_matvec_batch(&job, 1, b, &sc);
                        differ += memcmp(y, y1, (size_t)b * rows * sizeof(float)) != 0;
                        cases++;
                    }
                }
                free(sc.data);
                free(x);
                free(y);
                free(y1);
                test_mat_free(&m);
            }
        char name[128];
        snprintf(name, sizeof(name),
                 "matvec %s %s batches of 1..9 and 17 rows, 1-3 threads, bit-identical to single calls",
                 dtype_name(dt), kernels_simd_features());
        test_result(differ == 0, name, "%d of %d batches differ", differ, cases);
        snprintf(name, sizeof(name), "matvec %s %s rows of the batches vs naive (err %.2e)", dtype_name(dt),
                 kernels_simd_features(), worst);
        test_result(worst <= 2 * BOUND, name, "normalised error %.3e > %.0e", worst, 2 * BOUND);
    }
}

/* The portable path against the SIMD path, on the same inputs. */
static void test_matvec_scalar_vs_simd(void)
{
    kernels_init(2);
    double worst = 0;
    double worst_ref = 0;
    for (int k = 0; k < N_MV_CASES; k++) {
        int rows = mv_mats[k].m.rows;
        float *ys = malloc((size_t)rows * sizeof(float));
        double *ref = malloc((size_t)rows * sizeof(double));
        kernels_force_scalar(1);
        kernels_matvec(ys, &mv_mats[k].m, mv_x[k], &mv_scratch);
        kernels_force_scalar(0);
        double e = norm_err_f(ys, mv_first[k], (size_t)rows);
        if (e > worst)
            worst = e;
        naive_matvec(ref, &mv_mats[k], mv_x[k], NULL);
        e = norm_err(ys, ref, (size_t)rows);
        if (e > worst_ref)
            worst_ref = e;
        free(ys);
        free(ref);
    }
    char name[128];
    snprintf(name, sizeof(name), "matvec %s vs scalar path (err %.2e)", kernels_simd_name(), worst);
    test_result(worst <= BOUND, name, "normalised difference %.3e", worst);
    snprintf(name, sizeof(name), "matvec scalar path vs naive (err %.2e)", worst_ref);
    test_result(worst_ref <= BOUND, name, "normalised error %.3e", worst_ref);
}

/* BF16 weights meet the activation rounded to BF16: against the exact
 * activation, the error stays within BF16's unit roundoff of sum |w x|. */
static void test_matvec_bf16_rounding(void)
{
    kernels_init(1);
    double worst = 0;
    for (int k = 0; k < N_MV_CASES; k++) {
        const test_mat *t = &mv_mats[k];
        if (t->m.dtype != DTYPE_BF16)
            continue;
        int rows = t->m.rows, cols = t->m.cols;
        float *y = malloc((size_t)rows * sizeof(float));
        double *ref = malloc((size_t)rows * sizeof(double));
        kernels_matvec(y, &t->m, mv_x[k], &mv_scratch);
        naive_matmul(ref, t, mv_x[k], 1, NULL);
        double big = max_abs(ref, (size_t)rows);
        for (int r = 0; r < rows; r++) {
            double mag = 0;
            for (int c = 0; c < cols; c++)
                mag += fabs((double)t->values[(size_t)r * cols + c] * mv_x[k][c]);
            double e = fabs((double)y[r] - ref[r]) / (0x1p-8 * mag + 1e-5 * big + 1e-30);
            if (e > worst || isnan(e))
                worst = isnan(e) ? INFINITY : e;
        }
        free(y);
        free(ref);
    }
    char name[128];
    snprintf(name, sizeof(name), "matvec bf16 with the activation rounded to bf16: within 2^-8 sum|wx| (%.2f of it)",
             worst);
    test_result(worst <= 1.0, name, "error %.3f times the bound", worst);
}

/* ---- matmul ---- */

static void test_matmul(void)
{
    static const int ns[] = { 1, 5, 33 };
    static const int shapes[][2] = { { 300, 257 }, { 4500, 1000 } }; /* the second spans 3 panels of 2096 rows */
    kernels_init(2);
    for (int d = 0; d < N_FLOAT_TYPES; d++)
        for (int s = 0; s < 2; s++) {
            test_mat t;
            int rows = shapes[s][0], cols = shapes[s][1];
            test_mat_make(&t, (dtype_t)d, rows, cols);
            float *bias = malloc((size_t)rows * sizeof(float));
            fill_uniform(bias, (size_t)rows, 1.0f);
            for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
                int n = ns[ni];
                float *x = malloc((size_t)n * cols * sizeof(float));
                float *y = malloc((size_t)n * rows * sizeof(float));
                double *ref = malloc((size_t)n * rows * sizeof(double));
                fill_uniform(x, (size_t)n * cols, 1.0f);
                /* X as the kernels see it: rounded to BF16 for BF16 weights, as in decode */
                float *xr = malloc((size_t)n * cols * sizeof(float));
                for (int i = 0; i < n; i++) {
                    float *row = kernel_x(&t, x + (size_t)i * cols);
                    memcpy(xr + (size_t)i * cols, row, (size_t)cols * sizeof(float));
                    free(row);
                }
                for (int b = 0; b < 2; b++) {
                    const float *bp = b ? bias : NULL;
                    kernels_matmul(y, &t.m, x, n, bp);
                    naive_matmul(ref, &t, xr, n, bp);
                    double e = norm_err(y, ref, (size_t)n * rows);
                    char name[128];
                    snprintf(name, sizeof(name), "matmul %s n=%d %dx%d%s (err %.2e)", dtype_name((dtype_t)d), n,
                             rows, cols, b ? " +bias" : "", e);
                    test_result(e <= BOUND, name, "normalised error %.3e", e);
                }
                free(x);
                free(xr);
                free(y);
                free(ref);
            }
            free(bias);
            test_mat_free(&t);
        }
}

/* BF16 prefill on a level with prefill_rows_cols (AMX): every row of the
 * chunk's product is bit for bit that token's decode matvec. */
static void test_matmul_bf16_rows(void)
{
    static const int ns[] = { 1, 5, 16, 33 };
    int max_cols = kernels_isa_get()->prefill_rows_cols[DTYPE_BF16];
    if (max_cols <= 0) {
        test_skip("matmul bf16 by rows", "this level converts BF16 panels for sgemm");
        return;
    }
    kernels_init(2);
    test_mat t;
    int rows = 300, cols = 512;
    test_mat_make(&t, DTYPE_BF16, rows, cols);
    kernels_scratch sc = { NULL, kernels_scratch_bytes(1, 1, cols) };
    sc.data = malloc(sc.bytes);
    for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
        int n = ns[ni];
        float *x = malloc((size_t)n * cols * sizeof(float));
        float *y = malloc((size_t)n * rows * sizeof(float));
        float *y1 = malloc((size_t)rows * sizeof(float));
        fill_uniform(x, (size_t)n * cols, 1.0f);
        kernels_matmul(y, &t.m, x, n, NULL);
        int same = 1;
        for (int i = 0; i < n && same; i++) {
            kernels_matvec(y1, &t.m, x + (size_t)i * cols, &sc);
            same = memcmp(y1, y + (size_t)i * rows, (size_t)rows * sizeof(float)) == 0;
        }
        char name[96];
        snprintf(name, sizeof(name), "matmul bf16 n=%d %dx%d: each row as its decode matvec", n, rows, cols);
        test_result(same, name, "rows differ");
        free(x);
        free(y);
        free(y1);
    }
    free(sc.data);
    test_mat_free(&t);
}

/* ---- element-wise ---- */

static void test_rmsnorm(void)
{
    int n = 2048;
    float *x = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    fill_uniform(x, n, 3.0f);
    fill_uniform(w, n, 1.0f);
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; i++)
        ref[i] = w[i] * (x[i] * inv);
    kernels_rmsnorm(y, x, w, n, 1e-5f);
    double e = norm_err(y, ref, n);
    test_result(e <= BOUND, "rmsnorm vs naive", "normalised error %.3e", e);
    kernels_rmsnorm(x, x, w, n, 1e-5f); /* in place */
    test_result(memcmp(x, y, n * sizeof(float)) == 0, "rmsnorm in place", "differs from out of place");
    free(x);
    free(w);
    free(y);
    free(ref);
}

static void test_softmax(void)
{
    int sizes[] = { 1, 7, 100, 4096 };
    for (int s = 0; s < 4; s++) {
        int n = sizes[s];
        float *x = malloc(n * sizeof(float));
        double *ref = malloc(n * sizeof(double));
        fill_uniform(x, n, 20.0f);
        x[n / 2] = 1000.0f; /* would overflow expf without the max subtraction */
        double max = x[0], sum = 0;
        for (int i = 0; i < n; i++)
            max = x[i] > max ? x[i] : max;
        for (int i = 0; i < n; i++)
            sum += ref[i] = exp(x[i] - max);
        for (int i = 0; i < n; i++)
            ref[i] /= sum;
        kernels_softmax(x, n);
        double total = 0;
        for (int i = 0; i < n; i++)
            total += x[i];
        double e = norm_err(x, ref, n);
        char name[64];
        snprintf(name, sizeof(name), "softmax n=%d vs naive, sums to 1", n);
        test_result(e <= BOUND && fabs(total - 1.0) <= 1e-5, name, "error %.3e, sum %.8f", e, total);
        free(x);
        free(ref);
    }
    int n = 64;
    float x[64];
    for (int i = 0; i < n; i++)
        x[i] = 5.0f;
    kernels_softmax(x, n);
    int ok = 1;
    for (int i = 0; i < n; i++)
        ok = ok && fabsf(x[i] - 1.0f / 64) < 1e-7f;
    test_result(ok, "softmax of equal values is uniform", "x[0] %g", (double)x[0]);
}

static void test_swiglu(void)
{
    int n = 5632;
    float *g = malloc(n * sizeof(float)), *u = malloc(n * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    fill_uniform(g, n, 8.0f);
    fill_uniform(u, n, 2.0f);
    g[0] = -100.0f; /* expf(100) is inf: silu must give -0, not NaN */
    for (int i = 0; i < n; i++)
        ref[i] = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    kernels_swiglu(g, u, n);
    double e = norm_err(g, ref, n);
    test_result(e <= BOUND && !isnan(g[0]), "swiglu vs naive", "normalised error %.3e g[0] %g", e, (double)g[0]);
    free(g);
    free(u);
    free(ref);
}

static void test_get_row(void)
{
    for (int d = 0; d < N_FLOAT_TYPES; d++) {
        test_mat t;
        test_mat_make(&t, (dtype_t)d, 5, 259);
        float row[259];
        int ok = 1;
        for (int r = 0; r < 5; r++) {
            kernels_get_row(row, &t.m, r);
            ok = ok && memcmp(row, t.values + (size_t)r * 259, sizeof(row)) == 0;
        }
        char name[64];
        snprintf(name, sizeof(name), "get_row %s exact", dtype_name((dtype_t)d));
        test_result(ok, name, "row differs");
        test_mat_free(&t);
    }
}

static void test_dot_axpy(void)
{
    int sizes[] = { 0, 1, 7, 16, 33, 64, 100, 1000 };
    double worst_dot = 0, worst_axpy = 0, worst_scalar = 0;
    for (int s = 0; s < 8; s++) {
        int n = sizes[s];
        float a[1000], b[1000], y[1000], ys[1000];
        double ref[1000];
        fill_uniform(a, n, 1.0f);
        fill_uniform(b, n, 1.0f);
        fill_uniform(y, n, 1.0f);
        double dref = 0;
        for (int i = 0; i < n; i++)
            dref += (double)a[i] * b[i];
        float d = kernels_dot_f32(a, b, n);
        kernels_force_scalar(1);
        float dscalar = kernels_dot_f32(a, b, n);
        kernels_force_scalar(0);
        /* A single dot can cancel to almost nothing; scale by the sum of |a*b|. */
        double mag = 1e-30;
        for (int i = 0; i < n; i++)
            mag += fabs((double)a[i] * b[i]);
        double e = fabs(d - dref) / mag;
        if (e > worst_dot)
            worst_dot = e;
        e = fabs((double)d - dscalar) / mag;
        if (e > worst_scalar)
            worst_scalar = e;

        memcpy(ys, y, sizeof(float) * n);
        for (int i = 0; i < n; i++)
            ref[i] = y[i] + 0.37 * a[i];
        kernels_axpy_f32(y, 0.37f, a, n);
        e = n ? norm_err(y, ref, n) : 0;
        if (e > worst_axpy)
            worst_axpy = e;
        kernels_force_scalar(1);
        kernels_axpy_f32(ys, 0.37f, a, n);
        kernels_force_scalar(0);
        e = n ? norm_err_f(ys, y, n) : 0;
        if (e > worst_scalar)
            worst_scalar = e;
    }
    test_result(worst_dot <= BOUND, "dot_f32 vs naive", "error %.3e", worst_dot);
    test_result(worst_axpy <= BOUND, "axpy_f32 vs naive", "error %.3e", worst_axpy);
    test_result(worst_scalar <= BOUND, "dot/axpy SIMD vs scalar", "error %.3e", worst_scalar);
}

/* The F16 KV cache kernels: dot(F32 q, F16 k) and y += a * F16 v, against
 * double precision over the F16 values as stored (so the bound is the F32
 * accumulation's, BOUND), and the SIMD path against the portable one. Sizes
 * cover every tail (head sizes are 64 or 128 in practice; 8 in stories260K). */
static void test_dot_axpy_f16(void)
{
    int sizes[] = { 0, 1, 7, 8, 16, 33, 64, 100, 128, 1000 };
    double worst_dot = 0, worst_axpy = 0, worst_scalar = 0;
    for (int s = 0; s < 10; s++) {
        int n = sizes[s];
        float a[1000], bf[1000], y[1000], ys[1000];
        uint16_t b[1000];
        double ref[1000];
        fill_uniform(a, n, 1.0f);
        fill_uniform(bf, n, 2.0f);
        fill_uniform(y, n, 1.0f);
        dtype_convert(b, DTYPE_F16, bf, DTYPE_F32, (size_t)n);
        double dref = 0, mag = 1e-30;
        for (int i = 0; i < n; i++) {
            dref += (double)a[i] * f16_to_f32(b[i]);
            mag += fabs((double)a[i] * f16_to_f32(b[i]));
        }
        float d = kernels_dot_f32_f16(a, b, n);
        kernels_force_scalar(1);
        float dscalar = kernels_dot_f32_f16(a, b, n);
        kernels_force_scalar(0);
        double e = fabs(d - dref) / mag;
        if (e > worst_dot)
            worst_dot = e;
        e = fabs((double)d - dscalar) / mag;
        if (e > worst_scalar)
            worst_scalar = e;

        memcpy(ys, y, sizeof(float) * n);
        for (int i = 0; i < n; i++)
            ref[i] = y[i] + 0.37 * f16_to_f32(b[i]);
        kernels_axpy_f16(y, 0.37f, b, n);
        e = n ? norm_err(y, ref, n) : 0;
        if (e > worst_axpy)
            worst_axpy = e;
        kernels_force_scalar(1);
        kernels_axpy_f16(ys, 0.37f, b, n);
        kernels_force_scalar(0);
        e = n ? norm_err_f(ys, y, n) : 0;
        if (e > worst_scalar)
            worst_scalar = e;
    }
    test_result(worst_dot <= BOUND, "dot_f32_f16 vs naive", "error %.3e", worst_dot);
    test_result(worst_axpy <= BOUND, "axpy_f16 vs naive", "error %.3e", worst_axpy);
    test_result(worst_scalar <= BOUND, "dot_f32_f16/axpy_f16 SIMD vs scalar", "error %.3e", worst_scalar);
}

/* ==== block types: Q8_0, Q4_0 and the K-quants Q4_K, Q5_K, Q6_K ====
 *
 * The formats against hand-computed blocks (bytes known from the
 * definitions in dtype.h), the SIMD conversions bit for bit against the
 * portable ones, and the row kernels against a double-precision dot of the
 * dequantized weights and the dequantized (quantized) activations.
 *
 * Bound: the integer sums per block are exact and each block's scale
 * product dw * dx is rounded once, so a kernel's result differs from the
 * exact sum of its blocks by at most (nb + 16) * 2^-24 * M, M = sum |w x|
 * over the row (nb blocks, the float additions in whatever order the path
 * uses). For the largest rows here (nb = 129) that is under 1e-5 * M:
 * QBOUND. The same bound, relative to M, holds for prefill by integer tiles
 * (against the same quantized X) and by dequantized sgemm (against X).
 * The K-quants' SIMD kernels form the portable path's integer totals per
 * super-block and its float operations in the same order, so they are also
 * checked equal to it bit for bit.
 */
#define QBOUND 1e-5

static const dtype_t qtypes[] = { DTYPE_Q8_0, DTYPE_Q4_0, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K };
#define NQTYPES ((int)(sizeof(qtypes) / sizeof(qtypes[0])))

static void test_q_formats(void)
{
    /* Q8_0 quantize: amax 127 gives d = 1 (f16 0x3c00), q = roundf(x):
     * ties go away from zero as in ggml (2.5 -> 3, -2.5 -> -3). */
    float x[32];
    int8_t want[32];
    for (int j = 0; j < 32; j++) {
        x[j] = (float)(j - 16);
        want[j] = (int8_t)(j - 16);
    }
    x[31] = 127.0f, want[31] = 127;
    x[1] = 2.5f, want[1] = 3;
    x[2] = -2.5f, want[2] = -3;
    x[3] = 0.5f, want[3] = 1;
    x[4] = -0.5f, want[4] = -1;
    x[5] = 0.49999997f, want[5] = 0;
    x[6] = 3.5f, want[6] = 4;
    for (int p = 0; p < 2; p++) {
        unsigned char blk[34];
        if (p)
            kernels_isa_get()->from_f32[DTYPE_Q8_0](x, blk, 32);
        else
            dtype_get(DTYPE_Q8_0)->from_f32(x, blk, 32);
        int ok = blk[0] == 0x00 && blk[1] == 0x3c && memcmp(blk + 2, want, 32) == 0;
        char name[96];
        snprintf(name, sizeof(name), "q8_0 quantize of a known block (%s): d 0x3c00, ties away from zero",
                 p ? kernels_simd_name() : "portable");
        test_result(ok, name, "d 0x%02x%02x q[1] %d q[2] %d q[5] %d", blk[1], blk[0], (int8_t)blk[3],
                    (int8_t)blk[4], (int8_t)blk[7]);
    }
    /* Q8_0 dequantize: d = 0.5 (0x3800), q[j] = j - 16 -> 0.5 * (j - 16) */
    unsigned char q8[34] = { 0x00, 0x38 };
    for (int j = 0; j < 32; j++)
        q8[2 + j] = (unsigned char)(int8_t)(j - 16);
    /* Q4_0 dequantize: d = 2 (0x4000), byte j = j | (15 - j) << 4: value j is
     * 2 * (j - 8), value 16 + j is 2 * (7 - j) */
    unsigned char q4[18] = { 0x00, 0x40 };
    for (int j = 0; j < 16; j++)
        q4[2 + j] = (unsigned char)(j | (15 - j) << 4);
    float y[32];
    for (int p = 0; p < 2; p++) {
        int ok8 = 1, ok4 = 1;
        mat_t m8 = { DTYPE_Q8_0, 1, 32, q8 }, m4 = { DTYPE_Q4_0, 1, 32, q4 };
        if (p)
            kernels_get_row(y, &m8, 0);
        else
            dtype_get(DTYPE_Q8_0)->to_f32(q8, y, 32);
        for (int j = 0; j < 32; j++)
            ok8 = ok8 && y[j] == 0.5f * (float)(j - 16);
        if (p)
            kernels_get_row(y, &m4, 0);
        else
            dtype_get(DTYPE_Q4_0)->to_f32(q4, y, 32);
        for (int j = 0; j < 16; j++)
            ok4 = ok4 && y[j] == 2.0f * (float)(j - 8) && y[16 + j] == 2.0f * (float)(7 - j);
        char name[96];
        snprintf(name, sizeof(name), "q8_0 dequantize of a known block (%s)", p ? kernels_simd_name() : "portable");
        test_result(ok8, name, "y[0] %g y[31] %g", (double)y[0], (double)y[31]);
        snprintf(name, sizeof(name), "q4_0 dequantize of a known block, low nibbles first (%s)",
                 p ? kernels_simd_name() : "portable");
        test_result(ok4, name, "y[0] %g y[16] %g", (double)y[0], (double)y[16]);
    }
    /* Q4_0 quantize: x[0] = -8 has the largest magnitude: d = -8 / -8 = 1,
     * q = trunc(x + 8.5) capped at 15: x[j] = j - 8 -> j, x[16 + j] = 7 - j
     * -> 15 - j, so byte j = j | (15 - j) << 4 (the block above, d 1). */
    for (int j = 0; j < 16; j++) {
        x[j] = (float)(j - 8);
        x[16 + j] = (float)(7 - j);
    }
    unsigned char blk4[18];
    dtype_get(DTYPE_Q4_0)->from_f32(x, blk4, 32);
    int ok = blk4[0] == 0x00 && blk4[1] == 0x3c && memcmp(blk4 + 2, q4 + 2, 16) == 0;
    test_result(ok, "q4_0 quantize of a known block: d 0x3c00, byte j = q[j] | q[j+16] << 4", "d 0x%02x%02x byte0 0x%02x",
                blk4[1], blk4[0], blk4[2]);
    /* a round trip is exact for values the format holds */
    dtype_get(DTYPE_Q4_0)->to_f32(blk4, y, 32);
    test_result(memcmp(x, y, sizeof(y)) == 0, "q4_0 round trip of representable values", "differs");
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16) * 0.25f;
    x[7] = 127 * 0.25f;
    unsigned char blk8[34];
    dtype_get(DTYPE_Q8_0)->from_f32(x, blk8, 32);
    dtype_get(DTYPE_Q8_0)->to_f32(blk8, y, 32);
    test_result(memcmp(x, y, sizeof(y)) == 0, "q8_0 round trip of representable values", "differs");
}

/* The SIMD conversions equal the portable ones bit for bit, on random rows
 * at several scales and on rows full of ties (x = n + 0.5 with d = 1). */
static void test_q_conversions(void)
{
    /* 67 blocks of 32; the K-quants take the first 9 super-blocks */
    int n = 32 * 67, nk = QK_K * 9;
    float *x = malloc((size_t)nk * sizeof(float)), *a = malloc((size_t)nk * sizeof(float)),
          *b = malloc((size_t)nk * sizeof(float));
    size_t qbytes = dtype_row_size(DTYPE_Q8_K, nk) > dtype_row_size(DTYPE_Q8_0, n) ? dtype_row_size(DTYPE_Q8_K, nk)
                                                                                   : dtype_row_size(DTYPE_Q8_0, n);
    void *qa = malloc(qbytes), *qb = malloc(qbytes);
    int bad_q = 0, bad_qk = 0, bad_d[NQTYPES] = { 0 };
    static const float scales[] = { 1e-3f, 1.0f, 37.0f, 1e4f };
    for (int s = 0; s < 5; s++) {
        if (s < 4) {
            fill_uniform(x, (size_t)nk, scales[s]);
        } else {
            for (int i = 0; i < nk; i++) {
                int v = (int)(rand_uniform() * 126.0f);
                x[i] = (float)v + (v < 0 ? -0.5f : 0.5f);
                if (i % 32 == 9)
                    x[i] = (i / 32) % 2 ? 127.0f : -127.0f;
            }
        }
        for (int i = 0; i < nk; i += 97)
            x[i] = 0.0f;
        memset(x + 32, 0, 32 * sizeof(float)); /* an all-zero block: d 0 */
        memset(x + 2 * QK_K, 0, QK_K * sizeof(float)); /* an all-zero super-block */
        dtype_get(DTYPE_Q8_0)->from_f32(x, qa, n);
        kernels_isa_get()->from_f32[DTYPE_Q8_0](x, qb, n);
        bad_q += memcmp(qa, qb, dtype_row_size(DTYPE_Q8_0, n)) != 0;
        dtype_get(DTYPE_Q8_K)->from_f32(x, qa, nk);
        kernels_isa_get()->from_f32[DTYPE_Q8_K](x, qb, nk);
        bad_qk += memcmp(qa, qb, dtype_row_size(DTYPE_Q8_K, nk)) != 0;
        for (int t = 0; t < NQTYPES; t++) {
            dtype_t dt = qtypes[t];
            int len = dtype_block_size(dt) == QK_K ? nk : n;
            dtype_get(dt)->from_f32(x, qa, len);
            mat_t m = { dt, 1, len, qa };
            dtype_get(dt)->to_f32(qa, a, len);
            kernels_get_row(b, &m, 0);
            bad_d[t] += memcmp(a, b, (size_t)len * sizeof(float)) != 0;
        }
    }
    char name[96];
    snprintf(name, sizeof(name), "q8_0 quantize %s bit-identical to portable (ties included)", kernels_simd_name());
    test_result(bad_q == 0, name, "%d of 5 rows differ", bad_q);
    snprintf(name, sizeof(name), "q8_k quantize %s bit-identical to portable", kernels_simd_name());
    test_result(bad_qk == 0, name, "%d of 5 rows differ", bad_qk);
    for (int t = 0; t < NQTYPES; t++) {
        snprintf(name, sizeof(name), "%s dequantize %s bit-identical to portable", dtype_name(qtypes[t]),
                 kernels_simd_name());
        test_result(bad_d[t] == 0, name, "%d of 5 rows differ", bad_d[t]);
    }
    free(x);
    free(a);
    free(b);
    free(qa);
    free(qb);
}

/* A weight matrix of a block type: random values quantized by the
 * portable reference, and what the stored blocks mean. */
static void test_qmat_make(test_mat *t, dtype_t dt, int rows, int cols)
{
    size_t n = (size_t)rows * (size_t)cols;
    t->values = malloc((n ? n : 1) * sizeof(float));
    t->storage = malloc(dtype_matrix_size(dt, rows, cols) + 1);
    fill_uniform(t->values, n, 1.0f);
    dtype_convert(t->storage, dt, t->values, DTYPE_F32, n);
    dtype_convert(t->values, DTYPE_F32, t->storage, dt, n);
    t->m = (mat_t){ dt, rows, cols, t->storage };
}

/* ref (n, rows) and mag = sum |w x| from the dequantized weights and X as
 * the kernels see it: quantized to the vec_dot_type (Q8_0, Q8_K) and back
 * when quant_x. */
static void naive_qmatmul(double *ref, double *mag, const test_mat *t, const float *x, int n, int quant_x)
{
    int cols = t->m.cols;
    dtype_t vt = dtype_get(t->m.dtype)->vec_dot_type;
    float *xd = malloc((size_t)n * cols * sizeof(float));
    void *xq = malloc(dtype_row_size(vt, (int64_t)n * cols));
    if (quant_x) {
        dtype_convert(xq, vt, x, DTYPE_F32, (size_t)n * cols);
        dtype_convert(xd, DTYPE_F32, xq, vt, (size_t)n * cols);
    } else {
        memcpy(xd, x, (size_t)n * cols * sizeof(float));
    }
    for (int i = 0; i < n; i++)
        for (int r = 0; r < t->m.rows; r++) {
            double s = 0, a = 0;
            for (int c = 0; c < cols; c++) {
                double p = (double)t->values[(size_t)r * cols + c] * (double)xd[(size_t)i * cols + c];
                s += p;
                a += fabs(p);
            }
            ref[(size_t)i * t->m.rows + r] = s;
            mag[(size_t)i * t->m.rows + r] = a;
        }
    free(xd);
    free(xq);
}

static double q_err(const float *y, const double *ref, const double *mag, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)y[i] - ref[i]) / (mag[i] + 1e-30);
        if (d > e || isnan(d))
            e = isnan(d) ? INFINITY : d;
    }
    return e;
}

static const int q_cols[] = { 32, 64, 96, 2048, 4128 };
static const int qk_cols[] = { 256, 512, 768, 2048, 4352 };
static const int q_rows[] = { 1, 3, 17, 300 };

/* Every shape with 1, 2 and 3 threads (bit-identical to 1 thread), the
 * SIMD and the portable path each against the double reference, a batch
 * of n_x = 1..9 activation rows equal to n_x single calls, and jobs that
 * share one quantized activation (q/k/v) equal to single calls. */
static void test_q_matvec(void)
{
    for (int t = 0; t < NQTYPES; t++) {
        dtype_t dt = qtypes[t];
        int kq = dtype_block_size(dt) == QK_K;
        double worst[2] = { 0, 0 };
        int differ_threads = 0, differ_batch = 0, differ_shared = 0, differ_portable = 0, cases = 0;
        for (size_t ci = 0; ci < sizeof(q_cols) / sizeof(q_cols[0]); ci++)
            for (size_t ri = 0; ri < sizeof(q_rows) / sizeof(q_rows[0]); ri++) {
                int rows = q_rows[ri], cols = kq ? qk_cols[ci] : q_cols[ci], nx = 9;
                test_mat m;
                test_qmat_make(&m, dt, rows, cols);
                float *x = malloc((size_t)nx * cols * sizeof(float));
                fill_uniform(x, (size_t)nx * cols, 2.0f);
                float *y1 = malloc((size_t)nx * rows * sizeof(float)), *y = malloc((size_t)nx * rows * sizeof(float));
                double *ref = malloc((size_t)nx * rows * sizeof(double)), *mag = malloc((size_t)nx * rows * sizeof(double));
                kernels_scratch sc = { NULL, kernels_scratch_bytes(3, nx, cols) };
                sc.data = malloc(sc.bytes);
                naive_qmatmul(ref, mag, &m, x, 1, 1);
                for (int p = 0; p < 2; p++) {
                    kernels_force_scalar(p);
                    kernels_init(1);
                    kernels_matvec(p ? y1 : y, &m.m, x, &sc);
                    double e = q_err(p ? y1 : y, ref, mag, (size_t)rows);
                    worst[p] = e > worst[p] ? e : worst[p];
                }
                differ_portable += memcmp(y, y1, (size_t)rows * sizeof(float)) != 0;
                kernels_force_scalar(0);
                kernels_init(1);
                kernels_matvec(y1, &m.m, x, &sc);
                for (int nt = 2; nt <= 3; nt++) {
                    kernels_init(nt);
                    kernels_matvec(y, &m.m, x, &sc);
                    differ_threads += memcmp(y, y1, (size_t)rows * sizeof(float)) != 0;
                }
                /* n_x single calls, then batches of 1..9 */
                for (int k = 0; k < nx; k++)
                    kernels_matvec(y1 + (size_t)k * rows, &m.m, x + (size_t)k * cols, &sc);
                for (int b = 1; b <= nx; b++) {
                    matvec_job job = { y, &m.m, x, NULL };
                    kernels_matvec_batch(&job, 1, b, &sc);
                    differ_batch += memcmp(y, y1, (size_t)b * rows * sizeof(float)) != 0;
                }
                /* three jobs reading one activation batch of 5 rows */
                float *ys[3];
                matvec_job jobs[3];
                for (int j = 0; j < 3; j++) {
                    ys[j] = malloc((size_t)5 * rows * sizeof(float));
                    jobs[j] = (matvec_job){ ys[j], &m.m, x, NULL };
                }
                kernels_matvec_batch(jobs, 3, 5, &sc);
                for (int j = 0; j < 3; j++) {
                    differ_shared += memcmp(ys[j], y1, (size_t)5 * rows * sizeof(float)) != 0;
                    free(ys[j]);
                }
                cases++;
                free(sc.data);
                free(x);
                free(y);
                free(y1);
                free(ref);
                free(mag);
                test_mat_free(&m);
            }
        char name[128];
        snprintf(name, sizeof(name), "matvec %s %s vs dequantized double dot (err %.2e of sum|wx|)", dtype_name(dt),
                 kernels_simd_name(), worst[0]);
        test_result(worst[0] <= QBOUND, name, "error %.3e > %.0e", worst[0], QBOUND);
        snprintf(name, sizeof(name), "matvec %s portable vs dequantized double dot (err %.2e of sum|wx|)",
                 dtype_name(dt), worst[1]);
        test_result(worst[1] <= QBOUND, name, "error %.3e > %.0e", worst[1], QBOUND);
        if (kq) {
            snprintf(name, sizeof(name), "matvec %s %s bit-identical to portable", dtype_name(dt),
                     kernels_simd_name());
            test_result(differ_portable == 0, name, "%d of %d runs differ", differ_portable, cases);
        }
        snprintf(name, sizeof(name), "matvec %s 2 and 3 threads bit-identical to 1 thread", dtype_name(dt));
        test_result(differ_threads == 0, name, "%d of %d runs differ", differ_threads, 2 * cases);
        snprintf(name, sizeof(name), "matvec %s batches of 1..9 rows bit-identical to single calls", dtype_name(dt));
        test_result(differ_batch == 0, name, "%d of %d batches differ", differ_batch, 9 * cases);
        snprintf(name, sizeof(name), "matvec %s jobs sharing one quantized batch equal single calls", dtype_name(dt));
        test_result(differ_shared == 0, name, "%d of %d jobs differ", differ_shared, 3 * cases);
    }
}

/* Prefill of block types by both paths: dequantized sgemm against X,
 * integer tiles against X quantized; the integer tiles' rows equal to
 * matvec calls bit for bit, and independent of the thread count. Where the
 * level has a GEMM kernel (AVX-512 VNNI) the integer path is that kernel:
 * token counts not a multiple of its 4-token tiles (5, 7, 18, 33; K-quants
 * take it from 8 or 16 tokens on, kernels_matmul.c), rows not a
 * multiple of its 4-row tiles (301), rows not a multiple of the block
 * group (224 columns: 7 blocks, Q4_0 groups of 4 and Q8_0 pairs), several
 * weight panels per thread (1100 rows). The MDI_SIMD reruns check the row
 * tiles the same way. */
/* The K-quant GEMM packs its per-lane sums as int16: weight blocks at the
 * extremes of their levels and scales, against activations all of one
 * sign at full scale, keep it equal to matvec bit for bit. */
static void test_kq_extremes(void)
{
    static const dtype_t kt[] = { DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K };
    int rows = 9, cols = 512, n = 19;
    for (int t = 0; t < 3; t++)
        for (int sign = 0; sign < 2; sign++) {
            dtype_t dt = kt[t];
            size_t bytes = dtype_matrix_size(dt, rows, cols);
            uint8_t *w = malloc(bytes);
            size_t bs = dtype_get(dt)->block_bytes;
            for (size_t o = 0; o < bytes; o += bs) {
                uint8_t *b = w + o;
                memset(b, 0xff, bs);
                if (dt == DTYPE_Q6_K) {
                    block_q6_K *q = (block_q6_K *)b; /* levels 0: q - 32 = -32 */
                    memset(q->ql, 0, sizeof(q->ql));
                    memset(q->qh, 0, sizeof(q->qh));
                    memset(q->scales, sign ? 0x80 : 0x7f, sizeof(q->scales));
                    q->d = 0x3c00;
                } else {
                    block_q4_K *q = (block_q4_K *)b; /* levels 15 (Q5_K: 31), scales and mins 63 */
                    q->d = 0x3c00;
                    q->dmin = 0x3800;
                }
            }
            mat_t m = { dt, rows, cols, w };
            float *x = malloc((size_t)n * cols * sizeof(float));
            float *y = malloc((size_t)n * rows * sizeof(float)), *y2 = malloc((size_t)rows * sizeof(float));
            for (size_t i = 0; i < (size_t)n * cols; i++)
                x[i] = sign ? -1.0f : 1.0f;
            kernels_scratch sc = { NULL, kernels_scratch_bytes(1, 1, cols) };
            sc.data = malloc(sc.bytes);
            kernels_init(1);
            kernels_matmul_with(y, &m, x, n, NULL, MATMUL_INT8);
            int differ = 0;
            for (int i = 0; i < n; i++) {
                kernels_matvec(y2, &m, x + (size_t)i * cols, &sc);
                differ += memcmp(y2, y + (size_t)i * rows, (size_t)rows * sizeof(float)) != 0;
            }
            char name[96];
            snprintf(name, sizeof(name), "matmul %s int8 path at extreme levels (x %s): rows equal matvec",
                     dtype_name(dt), sign ? "-1" : "+1");
            test_result(differ == 0, name, "%d differ (%g vs %g)", differ, (double)y[0], (double)y2[0]);
            free(sc.data);
            free(x);
            free(y);
            free(y2);
            free(w);
        }
}

static void test_q_matmul(void)
{
    static const int ns[] = { 1, 5, 7, 18, 33 };
    static const int shapes[][2] = { { 300, 256 }, { 1100, 512 }, { 301, 224 } };
    static const int kshapes[][2] = { { 300, 256 }, { 1100, 512 }, { 301, 768 } };
    const cpu_features *f = kernels_cpu_features();
    int want_gemm = f->level == SIMD_AVX512 && f->avx512vnni;
    for (int t = 0; t < NQTYPES; t++) {
        int has = kernels_isa_get()->gemm[qtypes[t]] != NULL;
        char name[96];
        snprintf(name, sizeof(name), "prefill GEMM kernel for %s %s (AVX-512 VNNI only)", dtype_name(qtypes[t]),
                 has ? "present" : "absent");
        test_result(has == want_gemm, name, "has %d, want %d", has, want_gemm);
    }
    for (int t = 0; t < NQTYPES; t++)
        for (int s = 0; s < 3; s++) {
            dtype_t dt = qtypes[t];
            int kq = dtype_block_size(dt) == QK_K;
            int rows = kq ? kshapes[s][0] : shapes[s][0], cols = kq ? kshapes[s][1] : shapes[s][1];
            test_mat m;
            test_qmat_make(&m, dt, rows, cols);
            for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
                int n = ns[ni];
                float *x = malloc((size_t)n * cols * sizeof(float));
                float *y = malloc((size_t)n * rows * sizeof(float)), *y2 = malloc((size_t)n * rows * sizeof(float));
                double *ref = malloc((size_t)n * rows * sizeof(double)), *mag = malloc((size_t)n * rows * sizeof(double));
                kernels_scratch sc = { NULL, kernels_scratch_bytes(1, 1, cols) };
                sc.data = malloc(sc.bytes);
                fill_uniform(x, (size_t)n * cols, 1.0f);
                char name[128];
                kernels_init(2);
                kernels_matmul_with(y, &m.m, x, n, NULL, MATMUL_SGEMM);
                naive_qmatmul(ref, mag, &m, x, n, 0);
                double e = q_err(y, ref, mag, (size_t)n * rows);
                snprintf(name, sizeof(name), "matmul %s dequant+sgemm n=%d %dx%d (err %.2e of sum|wx|)", dtype_name(dt), n,
                         rows, cols, e);
                test_result(e <= QBOUND, name, "error %.3e", e);
                kernels_matmul_with(y, &m.m, x, n, NULL, MATMUL_INT8);
                naive_qmatmul(ref, mag, &m, x, n, 1);
                e = q_err(y, ref, mag, (size_t)n * rows);
                snprintf(name, sizeof(name), "matmul %s int8 tiles n=%d %dx%d (err %.2e of sum|wx|)", dtype_name(dt), n,
                         rows, cols, e);
                test_result(e <= QBOUND, name, "error %.3e", e);
                int differ = 0;
                for (int i = 0; i < n; i++) {
                    kernels_matvec(y2, &m.m, x + (size_t)i * cols, &sc);
                    differ += memcmp(y2, y + (size_t)i * rows, (size_t)rows * sizeof(float)) != 0;
                }
                kernels_init(3);
                kernels_matmul_with(y2, &m.m, x, n, NULL, MATMUL_INT8);
                differ += memcmp(y2, y, (size_t)n * rows * sizeof(float)) != 0;
                snprintf(name, sizeof(name), "matmul %s int8 tiles n=%d %dx%d: rows equal matvec, 3 threads equal 2",
                         dtype_name(dt), n, rows, cols);
                test_result(differ == 0, name, "%d differ", differ);
                kernels_matmul(y2, &m.m, x, n, NULL);
                snprintf(name, sizeof(name), "matmul %s default path n=%d %dx%d is one of the two", dtype_name(dt), n,
                         rows, cols);
                kernels_init(2);
                kernels_matmul_with(y, &m.m, x, n, NULL, MATMUL_SGEMM);
                int same_sgemm = memcmp(y, y2, (size_t)n * rows * sizeof(float)) == 0;
                kernels_matmul_with(y, &m.m, x, n, NULL, MATMUL_INT8);
                int same_int8 = memcmp(y, y2, (size_t)n * rows * sizeof(float)) == 0;
                test_result(same_sgemm || same_int8, name, "neither");
                free(sc.data);
                free(x);
                free(y);
                free(y2);
                free(ref);
                free(mag);
            }
            test_mat_free(&m);
        }
}

/* ==== end of the block types ==== */

static void test_bandwidth(void)
{
    kernels_init(2);
    double bw = kernels_measure_bandwidth((size_t)64 << 20);
    printf("info: read bandwidth (64 MiB, 2 threads): %.1f GB/s\n", bw / 1e9);
    test_result(bw > 1e8 && bw < 1e13, "measure_bandwidth gives a plausible figure", "%.3g B/s", bw);
}

/* kernels_fix_openblas_coretype (called first in main) leaves OpenBLAS on
 * kernels of the CPU's ISA level, whatever the vendor: on an AVX-512 CPU an
 * AVX-512 core, not the Haswell or Prescott that Debian's build may pick. */
static void test_blas_core(void)
{
    const char *set = getenv("OPENBLAS_CORETYPE");
    if (strcmp(kernels_simd_name(), "avx512") != 0) {
        printf("SKIP: %sOpenBLAS core of an AVX-512 CPU: simd %s\n", test_name_prefix, kernels_simd_name());
        return;
    }
    if (set && !getenv("MDI_BLAS_REEXEC")) {
        printf("SKIP: %sOpenBLAS core of an AVX-512 CPU: OPENBLAS_CORETYPE=%s set by the caller\n",
               test_name_prefix, set);
        return;
    }
    const char *core = kernels_blas_core();
    int ok = strcasecmp(core, "SkylakeX") == 0 || strcasecmp(core, "Cooperlake") == 0 ||
             strcasecmp(core, "SapphireRapids") == 0;
    test_result(ok, "OpenBLAS runs an AVX-512 core on this AVX-512 CPU", "core %s", core);
}

/* Runs this program again with the SIMD level capped at cap (MDI_SIMD); its
 * PASS/FAIL lines go to the same stdout. Returns its failure count. */
static int rerun_with(char **argv, const char *cap)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        setenv("MDI_SIMD", cap, 1);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
        return 1;
    return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
    (void)argc;
    kernels_fix_openblas_coretype(argv);
    const char *cap = getenv("MDI_SIMD");
    if (cap && strcmp(cap, "avx2") == 0)
        test_name_prefix = "[avx2] ";
    if (cap && strcmp(cap, "avx512bw") == 0)
        test_name_prefix = "[avx512bw] ";
    /* AVX-512 without AMX: only the BF16 row kernel differs */
    int no_amx = cap && strcmp(cap, "avx512") == 0;
    if (no_amx)
        test_name_prefix = "[avx512] ";
    /* plain NEON on a CPU with the BF16 extension (tests/e2e_arm64.sh runs
     * it so): only the row kernels differ, and under emulation the whole
     * program is slow */
    int rows_only = (cap && strcmp(cap, "neon") == 0) || no_amx;
    if (rows_only && !no_amx)
        test_name_prefix = "[neon] ";
    printf("info: %ssimd %s, blas core %s\n", test_name_prefix, kernels_simd_features(), kernels_blas_core());
    printf("info: %sfeatures %s\n", test_name_prefix, kernels_simd_features());
    kernels_force_scalar(1);
    test_result(strcmp(kernels_simd_name(), "scalar") == 0, "force_scalar selects the portable path", "%s",
                kernels_simd_name());
    kernels_force_scalar(0);

    if (!rows_only) {
        test_dtypes();
        test_conversions();
        for (int nt = 1; nt <= 3; nt++)
            test_pool(nt);
    }
    test_bf16_activation_conversion();
    if (!cap)
        test_blas_core();

    matvec_setup();
    for (int nt = 1; nt <= 3; nt++)
        test_matvec_threads(nt);
    for (int nt = 1; nt <= 3; nt++)
        test_matvec_batch(nt);
    test_matvec_scalar_vs_simd();
    test_matvec_bf16_rounding();
    matvec_teardown();
    test_matvec_float_batches();

    if (rows_only) {
        test_q_conversions();
        test_q_matvec();
        kernels_shutdown();
        return test_failures;
    }
    test_matmul();
    test_matmul_bf16_rows();
    test_rmsnorm();
    test_softmax();
    test_swiglu();
    test_get_row();
    test_dot_axpy();
    test_dot_axpy_f16();
    test_q_formats();
    test_q_conversions();
    test_q_matvec();
    test_q_matmul();
    test_kq_extremes();
    test_bandwidth();

    kernels_shutdown();
    if (strcmp(kernels_simd_name(), "avx512") == 0 && !cap) {
        /* the AVX-512 kernels without the BF16/FP16/VNNI instructions */
        if (strstr(kernels_simd_features(), " amx")) {
            printf("info: running again with MDI_SIMD=avx512\n");
            test_failures += rerun_with(argv, "avx512");
        }
        if (strcmp(kernels_simd_features(), "avx512") != 0) {
            printf("info: running again with MDI_SIMD=avx512bw\n");
            test_failures += rerun_with(argv, "avx512bw");
        }
        printf("info: running again with MDI_SIMD=avx2\n");
        test_failures += rerun_with(argv, "avx2");
    }

    return test_failures;
}
