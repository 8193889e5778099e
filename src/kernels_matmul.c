/*
 * kernels_matmul: prefill, Y (n, rows) = X (n, cols) @ W^T, by OpenBLAS
 * sgemm. F32 weights go to sgemm as they are; any other dtype is converted
 * to F32 a panel of rows at a time by the pool's threads (the dtype's
 * fastest to_f32 kernel), each panel multiplied as soon as it is ready.
 * X is first rounded to the weights' vec_dot_type where that is a float
 * type other than F32 (BF16 for BF16 weights), so that prefill and decode
 * multiply the same values.
 *
 * Block types have a second path, integer tiles: X quantized to its
 * vec_dot_type (Q8_0, or Q8_K for the K-quants) once,
 * then the decode row kernels with all n activation rows at once (each
 * weight block read once for every token), weight rows split across the
 * pool. Where the SIMD level has a GEMM kernel for the type (AVX-512 VNNI),
 * X is also repacked once and the kernel runs instead of the row kernels,
 * repacking panels of weight rows per thread (kernels_avx512.c). Either
 * way, row k of the result is bit for bit what a matvec of x_k gives.
 * Which path is faster is measured by bin/bench_kernels (matmul_int8 and
 * matmul_dequant_sgemm rows); MATMUL_AUTO takes the faster one measured here:
 * integer tiles for short prompts, sgemm for long ones (matmul_pick).
 *
 * BF16 on a level whose rows kernel runs on AMX tiles (prefill_rows_cols)
 * skips sgemm: the rows kernel takes the whole chunk (16 activation rows a
 * tile), far ahead of converted panels at any length, and each row of Y is
 * then bit for bit that token's decode matvec.
 */
#include "kernels_impl.h"
#include "util.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>

static float *matmul_scratch;
static void *matmul_xq; /* X quantized for the integer tiles */
static size_t matmul_xq_cap; /* bytes */
static size_t matmul_scratch_cap; /* floats */
static float *matmul_xr;          /* X rounded to the vec_dot_type */
static size_t matmul_xr_cap;      /* floats */
static void *matmul_xp, *matmul_panels; /* the GEMM's repacked X, weight panels per thread */
static size_t matmul_xp_cap, matmul_panels_cap;
static kernels_scratch matmul_rows_scratch; /* X rounded for the rows kernel (matmul_rows) */

void kernels_matmul_release(void)
{
    free(matmul_scratch);
    matmul_scratch = NULL;
    matmul_scratch_cap = 0;
    free(matmul_xr);
    matmul_xr = NULL;
    matmul_xr_cap = 0;
    free(matmul_xq);
    matmul_xq = NULL;
    matmul_xq_cap = 0;
    free(matmul_xp);
    matmul_xp = NULL;
    matmul_xp_cap = 0;
    free(matmul_panels);
    matmul_panels = NULL;
    matmul_panels_cap = 0;
    free(matmul_rows_scratch.data);
    matmul_rows_scratch.data = NULL;
    matmul_rows_scratch.bytes = 0;
}

/* Grows *buf to hold need floats. */
static float *scratch_reserve(float **buf, size_t *cap, size_t need)
{
    if (need > *cap) {
        float *s = realloc(*buf, need * sizeof(float));
        CHECK(s != NULL);
        *buf = s;
        *cap = need;
    }
    return *buf;
}

typedef struct {
    const float *x;
    float *dst;
    int n, cols;
    dtype_t vt;
} round_task;

/* dst = x rounded to vt and back, rows of X split across the threads. */
static void round_task_run(void *p, int ith, int nth)
{
    const round_task *t = p;
    const kernels_isa *isa = kernels_isa_get();
    enum { STEP = 512 };
    uint16_t tmp[STEP]; /* a 2-byte float type: CHECKed by the caller */
    int lo = (int)((int64_t)t->n * ith / nth), hi = (int)((int64_t)t->n * (ith + 1) / nth);
    for (int i = lo; i < hi; i++) {
        const float *src = t->x + (size_t)i * t->cols;
        float *dst = t->dst + (size_t)i * t->cols;
        for (int c = 0; c < t->cols; c += STEP) {
            int k = t->cols - c < STEP ? t->cols - c : STEP;
            isa->from_f32[t->vt](src + c, tmp, k);
            isa->to_f32[t->vt](tmp, dst + c, k);
        }
    }
}

/* Rows of W converted per panel: about 8 MiB of F32. Each panel costs a
 * dispatch of our pool and a wake-up of OpenBLAS's threads, which take
 * turns on the same cores; 2 MiB panels left BF16 prefill of a 1.1B model
 * at ~72 tok/s on 2 threads, 8 MiB ones reach ~86 (16 and 64 MiB no more). */
static int panel_rows_for(int cols)
{
    int p = (int)((2048u * 1024u) / (unsigned)(cols > 0 ? cols : 1));
    if (p < 64)
        p = 64;
    return p & ~15;
}

typedef struct {
    const mat_t *w;
    int p0, pr;
    float *dst; /* (pr, cols) */
} convert_task;

static void convert_task_run(void *p, int ith, int nth)
{
    const convert_task *t = p;
    int lo = (int)kernels_split_rows(t->pr, ith, nth), hi = (int)kernels_split_rows(t->pr, ith + 1, nth);
    size_t row_bytes = dtype_row_size(t->w->dtype, t->w->cols);
    to_f32_fn to_f32 = kernels_isa_get()->to_f32[t->w->dtype];
    const char *base = (const char *)t->w->data + (size_t)t->p0 * row_bytes;
    for (int r = lo; r < hi; r++)
        to_f32(base + (size_t)r * row_bytes, t->dst + (size_t)r * (size_t)t->w->cols, t->w->cols);
}

/* ---- integer tiles for block types ---- */

typedef struct {
    const mat_t *w;
    rows_fn rows;
    const void *xq;
    size_t xq_stride;
    int n;
    float *y;
} int8_task;

static void int8_task_run(void *p, int ith, int nth)
{
    const int8_task *t = p;
    int lo = (int)kernels_split_rows(t->w->rows, ith, nth), hi = (int)kernels_split_rows(t->w->rows, ith + 1, nth);
    if (lo < hi)
        t->rows(t->w, lo, hi, t->xq, t->xq_stride, t->n, t->y, (size_t)t->w->rows);
}

/* Grows *buf to need bytes. */
static void *bytes_reserve(void **buf, size_t *cap, size_t need)
{
    if (need > *cap) {
        void *s = realloc(*buf, need);
        CHECK(s != NULL);
        *buf = s;
        *cap = need;
    }
    return *buf;
}

typedef struct {
    const float *x;
    int n, cols;
    from_f32_fn quant;
    char *xq;
    size_t row;
    const gemm_kernel *gemm; /* NULL: no repacking */
    char *xp;
    size_t xp_row;
} quant_task;

/* X quantized (and repacked for the GEMM), rows of X split across the
 * threads. */
static void quant_task_run(void *p, int ith, int nth)
{
    const quant_task *t = p;
    int lo = (int)((int64_t)t->n * ith / nth), hi = (int)((int64_t)t->n * (ith + 1) / nth);
    for (int i = lo; i < hi; i++) {
        char *q = t->xq + (size_t)i * t->row;
        t->quant(t->x + (size_t)i * t->cols, q, t->cols);
        if (t->gemm)
            t->gemm->pack_x(q, t->xp + (size_t)i * t->xp_row, t->cols);
    }
}

typedef struct {
    const mat_t *w;
    const gemm_kernel *gemm;
    const void *xp;
    size_t xp_row;
    int n;
    float *y;
    char *panels;
    size_t panel_bytes;
} gemm_task;

static void gemm_task_run(void *p, int ith, int nth)
{
    const gemm_task *t = p;
    int lo = (int)kernels_split_rows(t->w->rows, ith, nth), hi = (int)kernels_split_rows(t->w->rows, ith + 1, nth);
    if (lo < hi)
        t->gemm->run(t->w, lo, hi, t->xp, t->xp_row, t->n, t->y, (size_t)t->w->rows,
                     t->panels + (size_t)ith * t->panel_bytes);
}

/* Fewest tokens for which the GEMM kernel beats the row tiles: its weight
 * panels cost about what a K-quant GEMM computes for 10 tokens (Q4_K) or
 * 15 (Q6_K). Measured here (one thread, 5632x2048, thread CPU time): q4_k
 * 8 tokens 1.8 ms both ways, 16: 2.6 against 3.7; q6_k 16 tokens 3.7 ms
 * against 3.6, 32: 6.1 against 7.1. Both give the rows kernel's results. */
static int matmul_gemm_from(dtype_t t)
{
    if (t == DTYPE_Q4_K || t == DTYPE_Q5_K)
        return 8;
    if (t == DTYPE_Q6_K)
        return 16;
    return 1;
}

static void matmul_int8(float *y, const mat_t *w, const float *x, int n)
{
    const kernels_isa *isa = kernels_isa_get();
    dtype_t vt = dtype_get(w->dtype)->vec_dot_type;
    const gemm_kernel *gemm = n >= matmul_gemm_from(w->dtype) ? isa->gemm[w->dtype] : NULL;
    size_t row = dtype_row_size(vt, w->cols);
    quant_task q = { x, n, w->cols, isa->from_f32[vt], bytes_reserve(&matmul_xq, &matmul_xq_cap, row * (size_t)n),
                     row, gemm, NULL, 0 };
    if (gemm) {
        q.xp_row = gemm->x_bytes(w->cols);
        q.xp = bytes_reserve(&matmul_xp, &matmul_xp_cap, q.xp_row * (size_t)n);
    }
    kernels_parallel(quant_task_run, &q);
    if (gemm) {
        int nth = kernels_n_threads();
        size_t pb = gemm->panel_bytes(w->cols);
        gemm_task g = { w, gemm, q.xp, q.xp_row, n, y,
                        bytes_reserve(&matmul_panels, &matmul_panels_cap, pb * (size_t)(nth > 0 ? nth : 1)), pb };
        kernels_parallel(gemm_task_run, &g);
    } else {
        int8_task t = { w, isa->rows[w->dtype], matmul_xq, row, n, y };
        kernels_parallel(int8_task_run, &t);
    }
}

/* Below this many tokens, integer tiles; from it on, dequantized panels and
 * sgemm: sgemm's cost per token falls as the prompt grows, the tiles' does
 * not. Measured here (AVX-512 VNNI, OpenBLAS SkylakeX, TinyLlama shapes,
 * one thread, a noisy shared machine; bin/bench_kernels: matmul_int8 and
 * matmul_dequant_sgemm):
 *   q8_0, 5632x2048: 4 tokens 2 ms against 47 (the panels cost a pass over
 *     the whole matrix), 16: 10 against 35, 48: 45 against 61, 128 tokens
 *     on the three shapes: 20-41 ms against 15-38
 *   q4_0 (four blocks per vector, a third of the float work of q8_0):
 *     128 tokens 9-34 ms against 10-44 (7 cases of 9, 1 and 2 threads),
 *     256 tokens 21-92 against 17-85, 512: sgemm ahead everywhere.
 *   q4_k, q6_k (row tiles of 4 x 4, panels dequantized by the AVX-512
 *     kernels; load average above 10, so only the order holds): 128 tokens
 *     on the three shapes 23-39 GFLOP/s against 9-29 for q4_k and 17-31
 *     against 10-35 for q6_k (10 cases of 12 to the tiles), 256 tokens mixed. */
static int matmul_int8_below(dtype_t t)
{
    if (t == DTYPE_Q4_0 || t == DTYPE_Q4_K || t == DTYPE_Q5_K || t == DTYPE_Q6_K)
        return 192;
    return 64;
}

int kernels_int8_prefill_below(dtype_t t)
{
    if (!dtype_is_block(t))
        return 0;
    return kernels_isa_get()->gemm[t] ? INT_MAX : matmul_int8_below(t);
}

/* The path MATMUL_AUTO takes for a block type. Where the level has a GEMM
 * kernel (AVX-512 VNNI), integer tiles at every length: measured here (one
 * thread, thread CPU time, best of 9, TinyLlama shapes) 59-89 GMAC/s at 128
 * and 512 tokens for q4_0 and q8_0, against 13-15 for dequantized panels and
 * sgemm, and 44-56 for the row tiles; q4_k and q6_k (bin/bench_kernels, one
 * thread, a shared machine) 130-220 GFLOP/s from 16 to 256 tokens against
 * 30-135 for dequantized panels and sgemm (the GEMM kernel from 8 or 16
 * tokens on, the row tiles below: matmul_gemm_from). */
static int matmul_pick(const mat_t *w, int n)
{
    return n < kernels_int8_prefill_below(w->dtype) ? MATMUL_INT8 : MATMUL_SGEMM;
}

/* The rows kernel over a whole prefill chunk (prefill_rows_cols): each
 * row of Y is then what decode gives for that token. */
static int matmul_by_rows(const mat_t *w)
{
    int max_cols = kernels_isa_get()->prefill_rows_cols[w->dtype];
    return max_cols > 0 && w->cols % 32 == 0 && w->cols <= max_cols;
}

static void matmul_rows(float *y, const mat_t *w, const float *x, int n, const float *bias)
{
    size_t need = kernels_scratch_bytes(1, n, w->cols);
    matmul_rows_scratch.data = bytes_reserve(&matmul_rows_scratch.data, &matmul_rows_scratch.bytes, need);
    matvec_job j = { y, w, x, bias };
    kernels_matvec_batch(&j, 1, n, &matmul_rows_scratch);
}

void kernels_matmul(float *y, const mat_t *w, const float *x, int n, const float *bias)
{
    kernels_matmul_with(y, w, x, n, bias, MATMUL_AUTO);
}

void kernels_matmul_with(float *y, const mat_t *w, const float *x, int n, const float *bias, int path)
{
    int rows = w->rows, cols = w->cols;
    if (n <= 0 || rows <= 0)
        return;
    if (path == MATMUL_AUTO && !dtype_is_block(w->dtype) && matmul_by_rows(w)) {
        matmul_rows(y, w, x, n, bias);
        return;
    }
    if (path == MATMUL_AUTO)
        path = dtype_is_block(w->dtype) ? matmul_pick(w, n) : MATMUL_SGEMM;
    if (path == MATMUL_INT8 && dtype_is_block(w->dtype)) {
        matmul_int8(y, w, x, n);
    } else if (w->dtype == DTYPE_F32) {
        /* Y (n, rows) = X (n, cols) @ W^T (cols, rows) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, cols, 1.0f, x, cols,
                    (const float *)w->data, cols, 0.0f, y, rows);
    } else {
        dtype_t vt = dtype_get(w->dtype)->vec_dot_type;
        if (vt != DTYPE_F32 && dtype_get(vt)->is_float) {
            CHECK(dtype_row_size(vt, 1) == sizeof(uint16_t));
            round_task rt = { x, scratch_reserve(&matmul_xr, &matmul_xr_cap, (size_t)n * (size_t)cols), n, cols,
                              vt };
            kernels_parallel(round_task_run, &rt);
            x = matmul_xr;
        }
        int panel = panel_rows_for(cols);
        if (panel > rows)
            panel = rows;
        scratch_reserve(&matmul_scratch, &matmul_scratch_cap, (size_t)panel * (size_t)cols);
        for (int p0 = 0; p0 < rows; p0 += panel) {
            int pr = rows - p0 < panel ? rows - p0 : panel;
            convert_task t = { w, p0, pr, matmul_scratch };
            kernels_parallel(convert_task_run, &t);
            /* Y[:, p0:p0+pr] (n, pr) = X (n, cols) @ panel^T (cols, pr) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, pr, cols, 1.0f, x, cols,
                        matmul_scratch, cols, 0.0f, y + p0, rows);
        }
    }
    if (bias)
        for (int i = 0; i < n; i++)
            for (int r = 0; r < rows; r++)
                y[(size_t)i * rows + r] += bias[r];
}

