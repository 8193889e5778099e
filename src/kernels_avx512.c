/*
 * kernels_avx512: x86 AVX-512 (F, BW, VL, DQ) kernels. Compiled on every build of
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
 *
 * With AVX512_BF16, BF16 rows use vdpbf16ps, which adds the products of 32
 * BF16 pairs into 16 F32 lanes (V = 32 values, same sequence as above).
 *
 * While a group of four rows is read, the same columns of the next group
 * are prefetched: rows of 2-byte types are only 4 KiB at TinyLlama's
 * shapes, too short for the hardware prefetcher to ramp up on, and without
 * it the BF16/F16 kernels read DRAM at about 55-75% of its bandwidth (with
 * it, and vdpbf16ps, about 90%).
 */
#include "kernels_impl.h"
#include "util.h"

#include <string.h>

#if defined(KERNELS_X86)
#include <immintrin.h>

#define ATTR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define INLINE_AVX512 static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512dq")))

/* Zero-padded tail: n (< width) elements of a float-type row as F32. */
static inline void tail_load(dtype_t dt, const void *row, int i, int n, float *dst)
{
    dtype_get(dt)->to_f32((const char *)row + dtype_row_size(dt, i), dst, n);
}

INLINE_AVX512 __m512 avx512_load(dtype_t dt, const void *row, int i)
{
    if (dt == DTYPE_BF16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    if (dt == DTYPE_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i)));
    return _mm512_loadu_ps((const float *)row + i);
}

/* Columns [i, i + 32) of the row of a 2-byte type four rows below, on
 * their way to L1 (F32 rows are long enough for the hardware prefetcher). */
INLINE_AVX512 void avx512_prefetch_next(const char *row, size_t row_bytes, int i)
{
    _mm_prefetch((const char *)((const uint16_t *)(row + 4 * row_bytes) + i), _MM_HINT_T0);
}

/* A tile: nr consecutive weight rows (row_bytes apart; nr 1 or 4) times nx
 * activation rows (x_stride bytes apart; nx 1 or 2), each weight vector
 * loaded (and converted) once for the nx activation rows;
 * out[k * out_stride + r] = row r . x_k. Every (r, k) pair runs the
 * sequence of the header whatever nr and nx: the tiles only interleave
 * independent pairs. x in xt (F32, or BF16 for BF16 rows). pf: prefetch
 * the same columns of the next group of rows (the first tile of a group;
 * the others find them on their way). */
INLINE_AVX512 void avx512_tile(dtype_t dt, dtype_t xt, const char *w, size_t row_bytes, int cols, const char *x,
                               size_t x_stride, float *out, size_t out_stride, const int nr, const int nx,
                               const int pf)
{
    __m512 acc0[4][2], acc1[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            acc0[r][k] = _mm512_setzero_ps();
            acc1[r][k] = _mm512_setzero_ps();
        }
    int i = 0;
    for (; i + 32 <= cols; i += 32) {
        __m512 x0[2], x1[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            x0[k] = avx512_load(xt, x + (size_t)k * x_stride, i);
            x1[k] = avx512_load(xt, x + (size_t)k * x_stride, i + 16);
        }
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *row = w + (size_t)r * row_bytes;
            if (pf && nr == 4 && dt != DTYPE_F32)
                avx512_prefetch_next(row, row_bytes, i);
            __m512 w0 = avx512_load(dt, row, i), w1 = avx512_load(dt, row, i + 16);
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++) {
                acc0[r][k] = _mm512_fmadd_ps(w0, x0[k], acc0[r][k]);
                acc1[r][k] = _mm512_fmadd_ps(w1, x1[k], acc1[r][k]);
            }
        }
    }
    if (i + 16 <= cols) {
        __m512 x0[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            x0[k] = avx512_load(xt, x + (size_t)k * x_stride, i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            __m512 w0 = avx512_load(dt, w + (size_t)r * row_bytes, i);
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++)
                acc0[r][k] = _mm512_fmadd_ps(w0, x0[k], acc0[r][k]);
        }
        i += 16;
    }
    if (i < cols) {
        __m512 x0[2];
        for (int k = 0; k < nx; k++) {
            float xtail[16] = { 0 };
            tail_load(xt, x + (size_t)k * x_stride, i, cols - i, xtail);
            x0[k] = _mm512_loadu_ps(xtail);
        }
        for (int r = 0; r < nr; r++) {
            float wt[16] = { 0 };
            tail_load(dt, w + (size_t)r * row_bytes, i, cols - i, wt);
            __m512 w0 = _mm512_loadu_ps(wt);
            for (int k = 0; k < nx; k++)
                acc1[r][k] = _mm512_fmadd_ps(w0, x0[k], acc1[r][k]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            out[(size_t)k * out_stride + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r][k], acc1[r][k]));
}

/* Groups of four weight rows, each against the activation rows two at a
 * time while the group is in cache (the group's first tile prefetches the
 * next group), then the rows left one at a time. */
INLINE_AVX512 void avx512_rows(dtype_t dt, const mat_t *m, int r0, int r1, const void *xv, size_t x_stride,
                               int n_x, float *out, size_t out_stride)
{
    dtype_t xt = dtype_get(dt)->vec_dot_type;
    size_t row_bytes = dtype_row_size(dt, m->cols);
    const char *base = m->data, *x = xv;
    int cols = m->cols, r = r0;
    for (; r + 4 <= r1; r += 4) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        if (n_x >= 2) {
            avx512_tile(dt, xt, w, row_bytes, cols, x, x_stride, out + r, out_stride, 4, 2, 1);
            for (k = 2; k + 2 <= n_x; k += 2)
                avx512_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                            out + (size_t)k * out_stride + r, out_stride, 4, 2, 0);
        }
        if (k < n_x)
            avx512_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                        out + (size_t)k * out_stride + r, out_stride, 4, 1, k == 0);
    }
    for (; r < r1; r++) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            avx512_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                        out + (size_t)k * out_stride + r, out_stride, 1, 2, 0);
        if (k < n_x)
            avx512_tile(dt, xt, w, row_bytes, cols, x + (size_t)k * x_stride, x_stride,
                        out + (size_t)k * out_stride + r, out_stride, 1, 1, 0);
    }
}

static ATTR_AVX512 void avx512_rows_f32(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    avx512_rows(DTYPE_F32, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static ATTR_AVX512 void avx512_rows_bf16(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    avx512_rows(DTYPE_BF16, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static ATTR_AVX512 void avx512_rows_f16(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    avx512_rows(DTYPE_F16, m, r0, r1, x, x_stride, n_x, out, out_stride);
}

/* ---- BF16 rows with AVX512_BF16 (vdpbf16ps) ---- */

#define ATTR_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define INLINE_AVX512BF16 \
    static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

INLINE_AVX512BF16 __m512bh bf16x32_load(const uint16_t *p)
{
    return (__m512bh)_mm512_loadu_si512((const void *)p);
}

/* As avx512_tile for BF16 rows and BF16 x, 32 values per step. */
INLINE_AVX512BF16 void avx512bf16_tile(const uint16_t *w, size_t row_len, int cols, const char *x, size_t x_stride,
                                       float *out, size_t out_stride, const int nr, const int nx, const int pf)
{
    __m512 acc0[4][2], acc1[4][2];
    const uint16_t *xk[2];
#pragma GCC unroll 2
    for (int k = 0; k < nx; k++)
        xk[k] = (const uint16_t *)(x + (size_t)k * x_stride);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            acc0[r][k] = _mm512_setzero_ps();
            acc1[r][k] = _mm512_setzero_ps();
        }
    int i = 0;
    for (; i + 64 <= cols; i += 64) {
        __m512bh x0[2], x1[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++) {
            x0[k] = bf16x32_load(xk[k] + i);
            x1[k] = bf16x32_load(xk[k] + i + 32);
        }
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const uint16_t *row = w + (size_t)r * row_len;
            if (pf && nr == 4) {
                _mm_prefetch((const char *)(row + 4 * row_len + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(row + 4 * row_len + i + 32), _MM_HINT_T0);
            }
            __m512bh w0 = bf16x32_load(row + i), w1 = bf16x32_load(row + i + 32);
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++) {
                acc0[r][k] = _mm512_dpbf16_ps(acc0[r][k], w0, x0[k]);
                acc1[r][k] = _mm512_dpbf16_ps(acc1[r][k], w1, x1[k]);
            }
        }
    }
    if (i + 32 <= cols) {
        __m512bh x0[2];
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            x0[k] = bf16x32_load(xk[k] + i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            __m512bh w0 = bf16x32_load(w + (size_t)r * row_len + i);
#pragma GCC unroll 2
            for (int k = 0; k < nx; k++)
                acc0[r][k] = _mm512_dpbf16_ps(acc0[r][k], w0, x0[k]);
        }
        i += 32;
    }
    if (i < cols) {
        __mmask32 m = (__mmask32)((1ull << (cols - i)) - 1);
        __m512bh x0[2];
        for (int k = 0; k < nx; k++)
            x0[k] = (__m512bh)_mm512_maskz_loadu_epi16(m, xk[k] + i);
        for (int r = 0; r < nr; r++) {
            __m512bh w0 = (__m512bh)_mm512_maskz_loadu_epi16(m, w + (size_t)r * row_len + i);
            for (int k = 0; k < nx; k++)
                acc1[r][k] = _mm512_dpbf16_ps(acc1[r][k], w0, x0[k]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 2
        for (int k = 0; k < nx; k++)
            out[(size_t)k * out_stride + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r][k], acc1[r][k]));
}

/* The tiles in the order of avx512_rows. */
static ATTR_AVX512BF16 void avx512bf16_rows_bf16(const mat_t *m, int r0, int r1, const void *xv, size_t x_stride,
                                                 int n_x, float *out, size_t out_stride)
{
    size_t row_len = (size_t)m->cols; /* BF16 values per row */
    const uint16_t *base = m->data;
    const char *x = xv;
    int cols = m->cols, r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint16_t *w = base + (size_t)r * row_len;
        int k = 0;
        if (n_x >= 2) {
            avx512bf16_tile(w, row_len, cols, x, x_stride, out + r, out_stride, 4, 2, 1);
            for (k = 2; k + 2 <= n_x; k += 2)
                avx512bf16_tile(w, row_len, cols, x + (size_t)k * x_stride, x_stride,
                                out + (size_t)k * out_stride + r, out_stride, 4, 2, 0);
        }
        if (k < n_x)
            avx512bf16_tile(w, row_len, cols, x + (size_t)k * x_stride, x_stride, out + (size_t)k * out_stride + r,
                            out_stride, 4, 1, k == 0);
    }
    for (; r < r1; r++) {
        const uint16_t *w = base + (size_t)r * row_len;
        int k = 0;
        for (; k + 2 <= n_x; k += 2)
            avx512bf16_tile(w, row_len, cols, x + (size_t)k * x_stride, x_stride, out + (size_t)k * out_stride + r,
                            out_stride, 1, 2, 0);
        if (k < n_x)
            avx512bf16_tile(w, row_len, cols, x + (size_t)k * x_stride, x_stride, out + (size_t)k * out_stride + r,
                            out_stride, 1, 1, 0);
    }
}

/* ---- BF16 rows with AMX (TDPBF16PS) ----
 *
 * Where the CPU has AMX-BF16 and the OS grants the tile state
 * (kernels_cpu.c), BF16 rows whose column count is a multiple of 32 (and
 * at most AMX_MAX_COLS) are multiplied a tile at a time:
 *
 *   C (16 weight rows x N activation rows, F32) += A (16 weight rows x 32
 *   columns, BF16, loaded in place from the matrix) . B (the 32 columns of
 *   the N activation rows, in pairs: B[p][2n + j] = x_n[32 kk + 2p + j])
 *
 * for each group of 32 columns kk in order. N is 8, or 16 for more than 8
 * activation rows (more than 16 go in passes of 16). Each (r, k) result is
 * its own chain of TDPBF16PS steps over the columns in order: it depends on
 * row r and x_k only, not on the other rows of either tile, so it is the
 * same whatever the split of rows, the batch or N. The multiplications are
 * the tiles' (about 1024 BF16 products per cycle), so a batch of 8 or 16
 * activation rows costs about what the weights' memory traffic costs, as a
 * single row does. The sums differ from the AVX-512 kernels' in their order
 * (one chain per result against 32 lanes summed at the end): AMX is a
 * level of its own, as AVX-512 is beside AVX2.
 *
 * x is packed into B's layout once per call, on the stack (AMX_MAX_COLS *
 * 32 bytes at most: 256 KiB; threads here have the default 8 MiB stacks).
 * The tile configuration is loaded at each call and released at its end,
 * so nothing of it outlives the call. */

#define ATTR_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#define AMX_MAX_COLS 8192

typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

/* Tiles: 0, 5 C of two groups of 16 rows; 1, 6 their A; 2 B; 3, 4 C and A
 * of the last rows (fewer than 16). */
static ATTR_AMX void amx_config(int n, int rem)
{
    amx_tilecfg c;
    memset(&c, 0, sizeof(c));
    c.palette = 1;
    c.rows[0] = c.rows[1] = c.rows[5] = c.rows[6] = 16;
    c.colsb[0] = c.colsb[5] = (uint16_t)(4 * n);
    c.colsb[1] = c.colsb[6] = 64;
    c.rows[2] = 16;
    c.colsb[2] = (uint16_t)(4 * n);
    if (rem) {
        c.rows[3] = c.rows[4] = (uint8_t)rem;
        c.colsb[3] = (uint16_t)(4 * n);
        c.colsb[4] = 64;
    }
    _tile_loadconfig(&c);
}

/* out[k * out_stride + r0 + m] = C[m][k] for the nr rows, nx columns. */
static inline void amx_store(const float *c, int n, int nr, int nx, float *out, size_t out_stride)
{
    for (int m = 0; m < nr; m++)
        for (int k = 0; k < nx; k++)
            out[(size_t)k * out_stride + m] = c[m * n + k];
}

static ATTR_AMX void amx_rows_pass(const mat_t *m, int r0, int r1, const char *x, size_t x_stride, int nx,
                                   float *out, size_t out_stride, uint32_t *xp)
{
    int cols = m->cols, steps = cols / 32, n = nx <= 8 ? 8 : 16;
    size_t row_bytes = (size_t)cols * sizeof(uint16_t);
    /* B of step kk at xp + kk * 16 * n: row p holds the pairs 16 kk + p of
     * every activation row, zeros past nx */
    for (int kk = 0; kk < steps; kk++)
        for (int p = 0; p < 16; p++) {
            uint32_t *dst = xp + ((size_t)kk * 16 + (size_t)p) * (size_t)n;
            for (int k = 0; k < n; k++) {
                uint32_t v = 0;
                if (k < nx)
                    memcpy(&v, x + (size_t)k * x_stride + ((size_t)kk * 16 + (size_t)p) * 4, 4);
                dst[k] = v;
            }
        }
    int rem = (r1 - r0) % 16;
    amx_config(n, rem);
    float c[16 * 16] __attribute__((aligned(64)));
    const char *base = (const char *)m->data;
    size_t bstride = (size_t)n * 4;
    int r = r0;
    for (; r + 32 <= r1; r += 32) {
        const char *w = base + (size_t)r * row_bytes;
        _tile_zero(0);
        _tile_zero(5);
        for (int kk = 0; kk < steps; kk++) {
            _tile_loadd(2, xp + (size_t)kk * 16 * n, bstride);
            _tile_loadd(1, w + (size_t)kk * 64, row_bytes);
            _tile_loadd(6, w + 16 * row_bytes + (size_t)kk * 64, row_bytes);
            _tile_dpbf16ps(0, 1, 2);
            _tile_dpbf16ps(5, 6, 2);
        }
        _tile_stored(0, c, bstride);
        amx_store(c, n, 16, nx, out + r, out_stride);
        _tile_stored(5, c, bstride);
        amx_store(c, n, 16, nx, out + r + 16, out_stride);
    }
    for (; r + 16 <= r1; r += 16) {
        const char *w = base + (size_t)r * row_bytes;
        _tile_zero(0);
        for (int kk = 0; kk < steps; kk++) {
            _tile_loadd(2, xp + (size_t)kk * 16 * n, bstride);
            _tile_loadd(1, w + (size_t)kk * 64, row_bytes);
            _tile_dpbf16ps(0, 1, 2);
        }
        _tile_stored(0, c, bstride);
        amx_store(c, n, 16, nx, out + r, out_stride);
    }
    if (r < r1) {
        const char *w = base + (size_t)r * row_bytes;
        _tile_zero(3);
        for (int kk = 0; kk < steps; kk++) {
            _tile_loadd(2, xp + (size_t)kk * 16 * n, bstride);
            _tile_loadd(4, w + (size_t)kk * 64, row_bytes);
            _tile_dpbf16ps(3, 4, 2);
        }
        _tile_stored(3, c, bstride);
        amx_store(c, n, r1 - r, nx, out + r, out_stride);
    }
    _tile_release();
}

static ATTR_AMX void amx_rows_bf16(const mat_t *m, int r0, int r1, const void *xv, size_t x_stride, int n_x,
                                   float *out, size_t out_stride)
{
    if (m->cols % 32 != 0 || m->cols > AMX_MAX_COLS) {
        avx512bf16_rows_bf16(m, r0, r1, xv, x_stride, n_x, out, out_stride);
        return;
    }
    uint32_t xp[AMX_MAX_COLS / 2 * 16] __attribute__((aligned(64)));
    const char *x = xv;
    for (int k = 0; k < n_x; k += 16) {
        int nx = n_x - k < 16 ? n_x - k : 16;
        amx_rows_pass(m, r0, r1, x + (size_t)k * x_stride, x_stride, nx, out + (size_t)k * out_stride, out_stride, xp);
    }
}

static ATTR_AVX512 void avx512_convert(dtype_t dt, const void *src, float *dst, int64_t n)
{
    int64_t i = 0;
    if (dt == DTYPE_BF16) {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, avx512_load(DTYPE_BF16, src, i));
    } else if (dt == DTYPE_F16) {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, avx512_load(DTYPE_F16, src, i));
    }
    dtype_get(dt)->to_f32((const char *)src + dtype_row_size(dt, i), dst + i, n - i);
}
static ATTR_AVX512 void avx512_bf16_to_f32(const void *src, float *dst, int64_t n)
{
    avx512_convert(DTYPE_BF16, src, dst, n);
}
static ATTR_AVX512 void avx512_f16_to_f32(const void *src, float *dst, int64_t n)
{
    avx512_convert(DTYPE_F16, src, dst, n);
}

/* F32 to BF16 rounding to nearest even, NaN kept quiet: bit for bit
 * f32_to_bf16 (util.c), 16 values at a time. */
static ATTR_AVX512 void avx512_f32_to_bf16(const float *src, void *dst, int64_t n)
{
    uint16_t *d = dst;
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i quiet = _mm512_set1_epi32(0x40);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_castps_si512(_mm512_loadu_ps(src + i));
        __m512i r = _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one));
        __m512i h = _mm512_srli_epi32(_mm512_add_epi32(u, r), 16);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        h = _mm512_mask_or_epi32(h, nan, _mm512_srli_epi32(u, 16), quiet);
        _mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtepi32_epi16(h));
    }
    dtype_get(DTYPE_BF16)->from_f32(src + i, d + i, n - i);
}

/* Columns [i, i + popcount(k)) of a row of F32 or F16 values, zeros past them. */
INLINE_AVX512 __m512 avx512_load_tail(dtype_t dt, const void *row, int i, __mmask16 k)
{
    if (dt == DTYPE_F16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, (const uint16_t *)row + i));
    return _mm512_maskz_loadu_ps(k, (const float *)row + i);
}

/* a (n,) . b (n,) with b F32, or F16 (the rows of an F16 KV cache). */
INLINE_AVX512 float avx512_dot(dtype_t bt, const float *a, const void *b, int n)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), avx512_load(bt, b, i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), avx512_load(bt, b, i + 16), acc1);
    }
    if (i + 16 <= n) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), avx512_load(bt, b, i), acc0);
        i += 16;
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), avx512_load_tail(bt, b, i, k), acc1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* y (n,) += a * x (n,), x F32 or F16. */
INLINE_AVX512 void avx512_axpy(dtype_t xt, float *y, float a, const void *x, int n)
{
    __m512 av = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, avx512_load(xt, x, i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 yv = _mm512_fmadd_ps(av, avx512_load_tail(xt, x, i, k), _mm512_maskz_loadu_ps(k, y + i));
        _mm512_mask_storeu_ps(y + i, k, yv);
    }
}

static ATTR_AVX512 float avx512_dot_f32(const float *a, const float *b, int n)
{
    return avx512_dot(DTYPE_F32, a, b, n);
}
static ATTR_AVX512 void avx512_axpy_f32(float *y, float a, const float *x, int n)
{
    avx512_axpy(DTYPE_F32, y, a, x, n);
}
static ATTR_AVX512 float avx512_dot_f32_f16(const float *a, const uint16_t *b, int n)
{
    return avx512_dot(DTYPE_F16, a, b, n);
}
static ATTR_AVX512 void avx512_axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    avx512_axpy(DTYPE_F16, y, a, x, n);
}

static ATTR_AVX512 double avx512_sum_bytes(const char *p, size_t n)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *f = (const float *)p;
    size_t nf = n / sizeof(float);
    for (size_t i = 0; i + 64 <= nf; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(f + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(f + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(f + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(f + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* ==== Block types: Q8_0 and Q4_0 weights times Q8_0 activations ====
 *
 * Per step and per (weight row r, activation row k), all in exact int32
 * lanes:
 *
 *   Q8_0, two blocks per zmm:
 *     VNNI:     I = dpbusd(C_k, w ^ 0x80, x_k)   C_k = -128 * (sums of x_k)
 *               (w + 128 is the unsigned operand; C_k, shared by all rows,
 *               takes the 128 * x back out)
 *     no VNNI:  I = madd16(maddubs(|w|, x_k negated where w < 0), 1)
 *   Q4_0, four blocks per zmm, 128-bit lane j = block b + j:
 *     I = dot(dot(C_k, lo nibbles, x_k first halves), hi nibbles, second halves)
 *     C_k = -8 * (sums of x_k); dot is dpbusd, or maddubs + madd16 without
 *     VNNI; the nibbles 0..15 are the unsigned operand, so no sign work
 *
 * then in float, per lane: acc_rk = fma(float(I), dw * dx, acc_rk), each
 * lane's scales those of its block; the row's result is the sum of acc_rk's
 * lanes. The integer sums are exact, so VNNI and non-VNNI give identical
 * floats, and they differ from the portable path (block sums added one by
 * one) only in the order of the float additions: with nb blocks the
 * difference is below (nb + 16) * 2^-24 * sum_b |dw_b dx_b I_b|.
 *
 * Tiles of 4 weight rows x 4 activation rows read each weight block once for
 * all activation rows; each (r, k) pair runs the same operations whatever
 * the tile it is in. The whole section is compiled with VNNI allowed, so
 * that one inline tile serves both variants; the non-VNNI variant uses no
 * VNNI intrinsic, and GCC emits none of its own for this code (objdump -d
 * shows no vpdpbusd in avx512_rows_*_bw).
 */
#define ATTR_Q512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")))
#define INLINE_Q512 static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")))

static inline uint32_t q512_half(const void *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof(h));
    return h;
}

/* [d0, d1] (f16 at p0 and, when p1, at p1; else 0) spread over the lanes
 * of the pair's int32 results by idx. */
INLINE_Q512 __m512 q512_scales(const void *p0, const void *p1, __m512i idx)
{
    uint32_t v = q512_half(p0) | (p1 ? q512_half(p1) << 16 : 0u);
    __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)v));
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d));
}

/* Rows of a block type are short streams (Q4_0: 1152 bytes for 2048
 * columns), too short for the hardware prefetcher to pick up before each
 * ends: a step asks for the two lines at the same place four rows on, the
 * next tile's, about one tile ahead. Measured streaming 1 GiB, one thread:
 * Q8_0 about as many rows per second as BF16 without this. */
INLINE_Q512 void q512_prefetch(const char *p)
{
    _mm_prefetch(p, _MM_HINT_T0);
    _mm_prefetch(p + 64, _MM_HINT_T0);
}

/* u8 x s8 dot products summed in fours into c's int32 lanes. */
INLINE_Q512 __m512i q512_dot(const int vnni, __m512i c, __m512i u, __m512i s)
{
    if (vnni)
        return _mm512_dpbusd_epi32(c, u, s);
    return _mm512_add_epi32(c, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
}

/* Q8_0, a pair of blocks at block b (two = 0: the last, single block).
 * int32 lanes 0..7 are block b, 8..15 block b + 1. */
INLINE_Q512 void q512_step_q8(const int vnni, const int two, int b, const char *w, size_t row_bytes, const char *x,
                              size_t x_stride, const int nr, const int nx, __m512 acc[4][4])
{
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512i X[4], C[4];
    __m512 DX[4];
#pragma GCC unroll 4
    for (int k = 0; k < nx; k++) {
        const block_q8_0 *xb = (const block_q8_0 *)(x + (size_t)k * x_stride) + b;
        __m256i x0 = _mm256_loadu_si256((const __m256i *)xb[0].qs);
        __m256i x1 = two ? _mm256_loadu_si256((const __m256i *)xb[1].qs) : _mm256_setzero_si256();
        X[k] = _mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1);
        DX[k] = q512_scales(&xb[0].d, two ? &xb[1].d : NULL, idx);
        if (vnni) /* -128 * (sums of x): takes the + 128 of w back out */
            C[k] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                    q512_dot(1, _mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), X[k]));
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        const block_q8_0 *wb = (const block_q8_0 *)(w + (size_t)r * row_bytes) + b;
        q512_prefetch((const char *)wb + 4 * row_bytes);
        __m256i w0 = _mm256_loadu_si256((const __m256i *)wb[0].qs);
        __m256i w1 = two ? _mm256_loadu_si256((const __m256i *)wb[1].qs) : _mm256_setzero_si256();
        __m512i M = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
        __m512i W = vnni ? _mm512_xor_si512(M, _mm512_set1_epi8((char)0x80)) : _mm512_abs_epi8(M);
        __m512 DW;
        if (two) {
            /* both scales lie in the first 64 of the pair's 68 bytes, words
             * 0 and 17: one load, one word permute, eight f16 slots each */
            const __m512i widx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 17, 17, 17,
                                                  17, 17, 17, 17, 0, 0, 0, 0, 0, 0, 0, 0);
            __m512i raw = _mm512_loadu_si512((const void *)wb);
            DW = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(widx, raw)));
        } else {
            DW = q512_scales(&wb[0].d, NULL, idx);
        }
#pragma GCC unroll 4
        for (int k = 0; k < nx; k++) {
            __m512i I;
            if (vnni) {
                I = q512_dot(1, C[k], W, X[k]);
            } else {
                __mmask64 neg = _mm512_movepi8_mask(M);
                __m512i sx = _mm512_mask_sub_epi8(X[k], neg, _mm512_setzero_si512(), X[k]);
                I = q512_dot(0, _mm512_setzero_si512(), W, sx);
            }
            acc[r][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(I), _mm512_mul_ps(DW, DX[k]), acc[r][k]);
        }
    }
}

/* Up to four f16 scales, stride bytes apart from p (cnt of them, the rest
 * 0), spread over the lanes by idx. */
INLINE_Q512 __m512 q512_scales4(const char *p, size_t stride, const int cnt, __m512i idx)
{
    __m128i v = _mm_cvtsi32_si128((int)q512_half(p));
    if (cnt > 1)
        v = _mm_insert_epi16(v, (int)q512_half(p + stride), 1);
    if (cnt > 2)
        v = _mm_insert_epi16(v, (int)q512_half(p + 2 * stride), 2);
    if (cnt > 3)
        v = _mm_insert_epi16(v, (int)q512_half(p + 3 * stride), 3);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_cvtph_ps(v)));
}

/* Q4_0, four blocks at block b (cnt < 4: the last ones, zeros after). The
 * 128-bit lane j of every vector is block b + j: nibbles [lo_b .. lo_b+3]
 * and [hi_b .. hi_b+3] against x's first and second halves, two dot
 * products chained into one int32 vector per (r, k). */
INLINE_Q512 void q512_step_q4(const int vnni, const int cnt, int b, const char *w, size_t row_bytes, const char *x,
                              size_t x_stride, const int nr, const int nx, __m512 acc[4][4])
{
    const __m512i idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    __m512i XL[4], XH[4], C[4];
    __m512 DX[4];
#pragma GCC unroll 4
    for (int k = 0; k < nx; k++) {
        const block_q8_0 *xb = (const block_q8_0 *)(x + (size_t)k * x_stride) + b;
        __m256i x0 = _mm256_loadu_si256((const __m256i *)xb[0].qs);
        __m256i x1 = cnt > 1 ? _mm256_loadu_si256((const __m256i *)xb[1].qs) : _mm256_setzero_si256();
        __m256i x2 = cnt > 2 ? _mm256_loadu_si256((const __m256i *)xb[2].qs) : _mm256_setzero_si256();
        __m256i x3 = cnt > 3 ? _mm256_loadu_si256((const __m256i *)xb[3].qs) : _mm256_setzero_si256();
        __m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1);
        __m512i c = _mm512_inserti64x4(_mm512_castsi256_si512(x2), x3, 1);
        XL[k] = _mm512_shuffle_i64x2(a, c, _MM_SHUFFLE(2, 0, 2, 0));
        XH[k] = _mm512_shuffle_i64x2(a, c, _MM_SHUFFLE(3, 1, 3, 1));
        DX[k] = q512_scales4((const char *)&xb[0].d, sizeof(block_q8_0), cnt, idx);
        __m512i eight = _mm512_set1_epi8(8);
        __m512i s8 = q512_dot(vnni, q512_dot(vnni, _mm512_setzero_si512(), eight, XL[k]), eight, XH[k]);
        C[k] = _mm512_sub_epi32(_mm512_setzero_si512(), s8);
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        const block_q4_0 *wb = (const block_q4_0 *)(w + (size_t)r * row_bytes) + b;
        q512_prefetch((const char *)wb + 4 * row_bytes);
        __m512i q = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)wb[0].qs));
        if (cnt > 1)
            q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)wb[1].qs), 1);
        if (cnt > 2)
            q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)wb[2].qs), 2);
        if (cnt > 3)
            q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)wb[3].qs), 3);
        if (cnt < 4) /* the lanes past cnt are undefined after the cast */
            q = _mm512_maskz_mov_epi32((__mmask16)((1u << (4 * cnt)) - 1), q);
        __m512i lo = _mm512_and_si512(q, _mm512_set1_epi8(0x0f));
        __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), _mm512_set1_epi8(0x0f));
        __m512 DW;
        if (cnt == 4) {
            /* the four scales lie in the first 64 of the blocks' 72 bytes,
             * words 0, 9, 18 and 27: one load, one word permute puts each
             * in four consecutive f16 slots */
            const __m512i widx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 27, 27, 27, 27,
                                                  18, 18, 18, 18, 9, 9, 9, 9, 0, 0, 0, 0);
            __m512i raw = _mm512_loadu_si512((const void *)wb);
            DW = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(widx, raw)));
        } else {
            DW = q512_scales4((const char *)&wb[0].d, sizeof(block_q4_0), cnt, idx);
        }
#pragma GCC unroll 4
        for (int k = 0; k < nx; k++) {
            __m512i I = q512_dot(vnni, q512_dot(vnni, C[k], lo, XL[k]), hi, XH[k]);
            acc[r][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(I), _mm512_mul_ps(DW, DX[k]), acc[r][k]);
        }
    }
}

INLINE_Q512 void q512_tile(const int q4, const int vnni, const char *w, size_t row_bytes, int nb, const char *x,
                           size_t x_stride, const int nr, const int nx, float *out, size_t out_stride)
{
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int k = 0; k < nx; k++)
            acc[r][k] = _mm512_setzero_ps();
    int b = 0;
    if (q4) {
        for (; b + 4 <= nb; b += 4)
            q512_step_q4(vnni, 4, b, w, row_bytes, x, x_stride, nr, nx, acc);
        if (b + 3 == nb)
            q512_step_q4(vnni, 3, b, w, row_bytes, x, x_stride, nr, nx, acc);
        else if (b + 2 == nb)
            q512_step_q4(vnni, 2, b, w, row_bytes, x, x_stride, nr, nx, acc);
        else if (b + 1 == nb)
            q512_step_q4(vnni, 1, b, w, row_bytes, x, x_stride, nr, nx, acc);
    } else {
        for (; b + 2 <= nb; b += 2)
            q512_step_q8(vnni, 1, b, w, row_bytes, x, x_stride, nr, nx, acc);
        if (b < nb)
            q512_step_q8(vnni, 0, b, w, row_bytes, x, x_stride, nr, nx, acc);
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int k = 0; k < nx; k++)
            out[(size_t)k * out_stride + r] = _mm512_reduce_add_ps(acc[r][k]);
}

INLINE_Q512 void q512_rows(const int q4, const int vnni, const mat_t *m, int r0, int r1, const void *xv,
                           size_t x_stride, int n_x, float *out, size_t out_stride)
{
    size_t row_bytes = dtype_row_size(m->dtype, m->cols);
    int nb = m->cols / QK8_0;
    const char *base = m->data, *x = xv;
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 4 <= n_x; k += 4)
            q512_tile(q4, vnni, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 4,
                      out + (size_t)k * out_stride + r, out_stride);
        for (; k < n_x; k++)
            q512_tile(q4, vnni, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 1,
                      out + (size_t)k * out_stride + r, out_stride);
    }
    for (; r < r1; r++) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 4 <= n_x; k += 4)
            q512_tile(q4, vnni, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 4,
                      out + (size_t)k * out_stride + r, out_stride);
        for (; k < n_x; k++)
            q512_tile(q4, vnni, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 1,
                      out + (size_t)k * out_stride + r, out_stride);
    }
}

static ATTR_Q512 void avx512_rows_q8_0_vnni(const mat_t *m, int r0, int r1, const void *x, size_t x_stride,
                                            int n_x, float *out, size_t out_stride)
{
    q512_rows(0, 1, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static ATTR_Q512 void avx512_rows_q4_0_vnni(const mat_t *m, int r0, int r1, const void *x, size_t x_stride,
                                            int n_x, float *out, size_t out_stride)
{
    q512_rows(1, 1, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static ATTR_Q512 void avx512_rows_q8_0_bw(const mat_t *m, int r0, int r1, const void *x, size_t x_stride,
                                          int n_x, float *out, size_t out_stride)
{
    q512_rows(0, 0, m, r0, r1, x, x_stride, n_x, out, out_stride);
}
static ATTR_Q512 void avx512_rows_q4_0_bw(const mat_t *m, int r0, int r1, const void *x, size_t x_stride,
                                          int n_x, float *out, size_t out_stride)
{
    q512_rows(1, 0, m, r0, r1, x, x_stride, n_x, out, out_stride);
}

/* roundf, half away from zero: trunc(p), plus sign(p) when |p - trunc(p)|
 * >= 0.5 (the difference is exact). */
INLINE_Q512 __m512 q512_round(__m512 p)
{
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80000000u));
    __m512 t = _mm512_roundscale_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m512 frac = _mm512_andnot_ps(sign, _mm512_sub_ps(p, t));
    __mmask16 up = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512 one = _mm512_or_ps(_mm512_and_ps(p, sign), _mm512_set1_ps(1.0f));
    return _mm512_mask_add_ps(t, up, t, one);
}

/* As q8_0_from_f32 (dtype.c), bit for bit: d = amax / 127 stored as f16
 * (round to nearest even), q = roundf(x * (1 / d)) with the F32 d. */
static ATTR_Q512 void avx512_q8_0_from_f32(const float *src, void *dst, int64_t n)
{
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80000000u));
    block_q8_0 *b = dst;
    for (int64_t k = 0; k < n / QK8_0; k++) {
        __m512 v0 = _mm512_loadu_ps(src + k * QK8_0), v1 = _mm512_loadu_ps(src + k * QK8_0 + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        memcpy(&b[k].d, &h, sizeof(h));
        __m512 vid = _mm512_set1_ps(id);
        __m512i q0 = _mm512_cvttps_epi32(q512_round(_mm512_mul_ps(v0, vid)));
        __m512i q1 = _mm512_cvttps_epi32(q512_round(_mm512_mul_ps(v1, vid)));
        _mm_storeu_si128((__m128i *)b[k].qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(b[k].qs + 16), _mm512_cvtepi32_epi8(q1));
    }
}

static ATTR_Q512 void avx512_q8_0_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q8_0 *b = src;
    for (int64_t k = 0; k < n / QK8_0; k++) {
        __m512 d = _mm512_set1_ps(_cvtsh_ss((unsigned short)q512_half(&b[k].d)));
        __m512i q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[k].qs));
        __m512i q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[k].qs + 16)));
        _mm512_storeu_ps(dst + k * QK8_0, _mm512_mul_ps(d, _mm512_cvtepi32_ps(q0)));
        _mm512_storeu_ps(dst + k * QK8_0 + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(q1)));
    }
}

static ATTR_Q512 void avx512_q4_0_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q4_0 *b = src;
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m512i eight = _mm512_set1_epi32(8);
    for (int64_t k = 0; k < n / QK4_0; k++) {
        __m512 d = _mm512_set1_ps(_cvtsh_ss((unsigned short)q512_half(&b[k].d)));
        __m128i q = _mm_loadu_si128((const __m128i *)b[k].qs);
        __m512i lo = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(q, mask)), eight);
        __m512i hi = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), mask)), eight);
        _mm512_storeu_ps(dst + k * QK4_0, _mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)));
        _mm512_storeu_ps(dst + k * QK4_0 + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)));
    }
}

/* ---- prefill GEMM (VNNI): both operands repacked once per matmul ----
 *
 * The row tiles above rebuild every vector of a step (nibble masks, lane
 * shuffles, scale permutes, the C_k sums) for every tile; with both
 * operands repacked in exactly the vectors a step uses, a step of the GEMM
 * is loads and, per (r, k), the dot products and three float operations.
 *
 *   X, per activation row, per group of blocks (Q4_0: 4 blocks, 256 bytes:
 *     XL, XH, C'_k, DX_k; Q8_0: 2 blocks, 192 bytes: X, C'_k, DX_k)
 *   W, a panel of rows per thread, per row, per group (Q4_0: 192 bytes:
 *     lo, hi, DW; Q8_0: 128 bytes: w ^ 0x80, DW)
 *
 * C'_k is C_k plus the bits of 1.5 * 2^23 (0x4b400000): the int32 sums then
 * read as floats are 1.5 * 2^23 + I, exactly (|I| < 2^16 here), and one
 * float subtraction gives float(I), which a conversion (port 0 only, like
 * vpdpbusd) would give. The lanes, the integer sums and the float
 * operations on them are those of the row tiles, in the same order: each
 * (r, k) result equals the rows kernel's bit for bit. Tiles of 4 weight
 * rows x 4 activation rows; per panel (about 256 KiB, in L2), the activation
 * rows stream over it 4 at a time. */
#define Q512_MAGIC 0x4b400000
#define Q512_PANEL_BYTES (256u * 1024u)

static size_t q512_groups(int cols, int per)
{
    return (size_t)((cols / QK8_0 + per - 1) / per);
}

static size_t q512_x_bytes_q4(int cols)
{
    return q512_groups(cols, 4) * 256;
}
static size_t q512_x_bytes_q8(int cols)
{
    return q512_groups(cols, 2) * 192;
}

static int q512_panel_rows(size_t wrow)
{
    int p = (int)(Q512_PANEL_BYTES / wrow) & ~3;
    return p < 4 ? 4 : p;
}

static size_t q512_panel_bytes_q4(int cols)
{
    size_t wrow = q512_groups(cols, 4) * 192;
    return (size_t)q512_panel_rows(wrow) * wrow;
}
static size_t q512_panel_bytes_q8(int cols)
{
    size_t wrow = q512_groups(cols, 2) * 128;
    return (size_t)q512_panel_rows(wrow) * wrow;
}

static ATTR_Q512 void q512_pack_x_q4(const void *xq, void *xp, int cols)
{
    const __m512i idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const __m512i eight = _mm512_set1_epi8(8);
    int nb = cols / QK8_0;
    char *o = xp;
    for (int b = 0; b < nb; b += 4, o += 256) {
        const block_q8_0 *xb = (const block_q8_0 *)xq + b;
        int cnt = nb - b < 4 ? nb - b : 4;
        __m256i x0 = _mm256_loadu_si256((const __m256i *)xb[0].qs);
        __m256i x1 = cnt > 1 ? _mm256_loadu_si256((const __m256i *)xb[1].qs) : _mm256_setzero_si256();
        __m256i x2 = cnt > 2 ? _mm256_loadu_si256((const __m256i *)xb[2].qs) : _mm256_setzero_si256();
        __m256i x3 = cnt > 3 ? _mm256_loadu_si256((const __m256i *)xb[3].qs) : _mm256_setzero_si256();
        __m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1);
        __m512i c = _mm512_inserti64x4(_mm512_castsi256_si512(x2), x3, 1);
        __m512i XL = _mm512_shuffle_i64x2(a, c, _MM_SHUFFLE(2, 0, 2, 0));
        __m512i XH = _mm512_shuffle_i64x2(a, c, _MM_SHUFFLE(3, 1, 3, 1));
        __m512 DX = q512_scales4((const char *)&xb[0].d, sizeof(block_q8_0), cnt, idx);
        __m512i s8 = q512_dot(1, q512_dot(1, _mm512_setzero_si512(), eight, XL), eight, XH);
        __m512i C = _mm512_sub_epi32(_mm512_set1_epi32(Q512_MAGIC), s8);
        _mm512_storeu_si512((void *)o, XL);
        _mm512_storeu_si512((void *)(o + 64), XH);
        _mm512_storeu_si512((void *)(o + 128), C);
        _mm512_storeu_ps((void *)(o + 192), DX);
    }
}

static ATTR_Q512 void q512_pack_x_q8(const void *xq, void *xp, int cols)
{
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    int nb = cols / QK8_0;
    char *o = xp;
    for (int b = 0; b < nb; b += 2, o += 192) {
        const block_q8_0 *xb = (const block_q8_0 *)xq + b;
        int two = nb - b > 1;
        __m256i x0 = _mm256_loadu_si256((const __m256i *)xb[0].qs);
        __m256i x1 = two ? _mm256_loadu_si256((const __m256i *)xb[1].qs) : _mm256_setzero_si256();
        __m512i X = _mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1);
        __m512 DX = q512_scales(&xb[0].d, two ? &xb[1].d : NULL, idx);
        __m512i s = q512_dot(1, _mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), X);
        _mm512_storeu_si512((void *)o, X);
        _mm512_storeu_si512((void *)(o + 64), _mm512_sub_epi32(_mm512_set1_epi32(Q512_MAGIC), s));
        _mm512_storeu_ps((void *)(o + 128), DX);
    }
}

/* Weight rows [r, r + pr) of m into the panel, wrow bytes a row. */
static ATTR_Q512 void q512_pack_w_q4(const mat_t *m, int r, int pr, char *panel, size_t wrow)
{
    const __m512i idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const __m512i widx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 27, 27, 27, 27, 18, 18,
                                          18, 18, 9, 9, 9, 9, 0, 0, 0, 0);
    size_t row_bytes = dtype_row_size(m->dtype, m->cols);
    int nb = m->cols / QK8_0;
    for (int i = 0; i < pr; i++) {
        const block_q4_0 *row = (const block_q4_0 *)((const char *)m->data + (size_t)(r + i) * row_bytes);
        char *o = panel + (size_t)i * wrow;
        for (int b = 0; b < nb; b += 4, o += 192) {
            const block_q4_0 *wb = row + b;
            int cnt = nb - b < 4 ? nb - b : 4;
            __m512i q = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)wb[0].qs));
            if (cnt > 1)
                q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)wb[1].qs), 1);
            if (cnt > 2)
                q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)wb[2].qs), 2);
            if (cnt > 3)
                q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)wb[3].qs), 3);
            if (cnt < 4)
                q = _mm512_maskz_mov_epi32((__mmask16)((1u << (4 * cnt)) - 1), q);
            __m512 DW;
            if (cnt == 4)
                DW = _mm512_cvtph_ps(
                    _mm512_castsi512_si256(_mm512_permutexvar_epi16(widx, _mm512_loadu_si512((const void *)wb))));
            else
                DW = q512_scales4((const char *)&wb[0].d, sizeof(block_q4_0), cnt, idx);
            _mm512_storeu_si512((void *)o, _mm512_and_si512(q, _mm512_set1_epi8(0x0f)));
            _mm512_storeu_si512((void *)(o + 64), _mm512_and_si512(_mm512_srli_epi16(q, 4), _mm512_set1_epi8(0x0f)));
            _mm512_storeu_ps((void *)(o + 128), DW);
        }
    }
}

static ATTR_Q512 void q512_pack_w_q8(const mat_t *m, int r, int pr, char *panel, size_t wrow)
{
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i widx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 17, 17, 17, 17, 17,
                                          17, 17, 0, 0, 0, 0, 0, 0, 0, 0);
    size_t row_bytes = dtype_row_size(m->dtype, m->cols);
    int nb = m->cols / QK8_0;
    for (int i = 0; i < pr; i++) {
        const block_q8_0 *row = (const block_q8_0 *)((const char *)m->data + (size_t)(r + i) * row_bytes);
        char *o = panel + (size_t)i * wrow;
        for (int b = 0; b < nb; b += 2, o += 128) {
            const block_q8_0 *wb = row + b;
            int two = nb - b > 1;
            __m256i w0 = _mm256_loadu_si256((const __m256i *)wb[0].qs);
            __m256i w1 = two ? _mm256_loadu_si256((const __m256i *)wb[1].qs) : _mm256_setzero_si256();
            __m512i M = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
            __m512 DW = two ? _mm512_cvtph_ps(_mm512_castsi512_si256(
                                  _mm512_permutexvar_epi16(widx, _mm512_loadu_si512((const void *)wb))))
                            : q512_scales(&wb[0].d, NULL, idx);
            _mm512_storeu_si512((void *)o, _mm512_xor_si512(M, _mm512_set1_epi8((char)0x80)));
            _mm512_storeu_ps((void *)(o + 64), DW);
        }
    }
}

/* One tile: nr packed weight rows (wrow bytes apart) x nx packed
 * activation rows (xs bytes apart), ng groups. */
INLINE_Q512 void q512_gemm_tile(const int q4, const char *wp, size_t wrow, size_t ng, const char *xp, size_t xs,
                                const int nr, const int nx, float *out, size_t out_stride)
{
    const __m512 magic = _mm512_castsi512_ps(_mm512_set1_epi32(Q512_MAGIC));
    const size_t wg = q4 ? 192 : 128, xg = q4 ? 256 : 192;
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int k = 0; k < nx; k++)
            acc[r][k] = _mm512_setzero_ps();
    for (size_t g = 0; g < ng; g++) {
        const char *w = wp + g * wg, *x = xp + g * xg;
        __m512i A[4], B[4];
        /* the panel's rows two groups on (from L2; prefetching X too was
         * slower, measured) */
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *pw = w + (size_t)r * wrow + 2 * wg;
            _mm_prefetch(pw, _MM_HINT_T0);
            _mm_prefetch(pw + 64, _MM_HINT_T0);
            if (q4)
                _mm_prefetch(pw + 128, _MM_HINT_T0);
        }
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            A[r] = _mm512_loadu_si512((const void *)(w + (size_t)r * wrow));
            if (q4)
                B[r] = _mm512_loadu_si512((const void *)(w + (size_t)r * wrow + 64));
        }
#pragma GCC unroll 4
        for (int k = 0; k < nx; k++) {
            const char *xk = x + (size_t)k * xs;
            __m512i X0 = _mm512_loadu_si512((const void *)xk), X1, C;
            __m512 DX;
            if (q4) {
                X1 = _mm512_loadu_si512((const void *)(xk + 64));
                C = _mm512_loadu_si512((const void *)(xk + 128));
                DX = _mm512_loadu_ps((const void *)(xk + 192));
            } else {
                X1 = X0;
                C = _mm512_loadu_si512((const void *)(xk + 64));
                DX = _mm512_loadu_ps((const void *)(xk + 128));
            }
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                __m512i I = _mm512_dpbusd_epi32(C, A[r], X0);
                if (q4)
                    I = _mm512_dpbusd_epi32(I, B[r], X1);
                __m512 f = _mm512_sub_ps(_mm512_castsi512_ps(I), magic);
                __m512 DW = _mm512_loadu_ps((const void *)(w + (size_t)r * wrow + (q4 ? 128 : 64)));
                acc[r][k] = _mm512_fmadd_ps(f, _mm512_mul_ps(DW, DX), acc[r][k]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int k = 0; k < nx; k++)
            out[(size_t)k * out_stride + r] = _mm512_reduce_add_ps(acc[r][k]);
}

INLINE_Q512 void q512_gemm(const int q4, const mat_t *m, int r0, int r1, const void *xpv, size_t xs, int n,
                           float *out, size_t out_stride, void *panel)
{
    size_t ng = q512_groups(m->cols, q4 ? 4 : 2), wrow = ng * (q4 ? 192 : 128);
    int prows = q512_panel_rows(wrow);
    const char *xp = xpv;
    for (int p0 = r0; p0 < r1; p0 += prows) {
        int pr = r1 - p0 < prows ? r1 - p0 : prows;
        if (q4)
            q512_pack_w_q4(m, p0, pr, panel, wrow);
        else
            q512_pack_w_q8(m, p0, pr, panel, wrow);
        const char *pp = panel;
        int k = 0;
        for (; k + 4 <= n; k += 4) {
            const char *xk = xp + (size_t)k * xs;
            float *o = out + (size_t)k * out_stride + p0;
            int r = 0;
            for (; r + 4 <= pr; r += 4)
                q512_gemm_tile(q4, pp + (size_t)r * wrow, wrow, ng, xk, xs, 4, 4, o + r, out_stride);
            for (; r < pr; r++)
                q512_gemm_tile(q4, pp + (size_t)r * wrow, wrow, ng, xk, xs, 1, 4, o + r, out_stride);
        }
        for (; k < n; k++) {
            const char *xk = xp + (size_t)k * xs;
            float *o = out + (size_t)k * out_stride + p0;
            int r = 0;
            for (; r + 4 <= pr; r += 4)
                q512_gemm_tile(q4, pp + (size_t)r * wrow, wrow, ng, xk, xs, 4, 1, o + r, out_stride);
            for (; r < pr; r++)
                q512_gemm_tile(q4, pp + (size_t)r * wrow, wrow, ng, xk, xs, 1, 1, o + r, out_stride);
        }
    }
}

static ATTR_Q512 void q512_gemm_q4(const mat_t *m, int r0, int r1, const void *xp, size_t xs, int n, float *out,
                                   size_t out_stride, void *panel)
{
    q512_gemm(1, m, r0, r1, xp, xs, n, out, out_stride, panel);
}
static ATTR_Q512 void q512_gemm_q8(const mat_t *m, int r0, int r1, const void *xp, size_t xs, int n, float *out,
                                   size_t out_stride, void *panel)
{
    q512_gemm(0, m, r0, r1, xp, xs, n, out, out_stride, panel);
}

static const gemm_kernel q512_gemm_kernel_q4 = { q512_x_bytes_q4, q512_panel_bytes_q4, q512_pack_x_q4,
                                                 q512_gemm_q4 };
static const gemm_kernel q512_gemm_kernel_q8 = { q512_x_bytes_q8, q512_panel_bytes_q8, q512_pack_x_q8,
                                                 q512_gemm_q8 };

/* ==== K-quants: Q4_K, Q5_K and Q6_K weights times Q8_K activations ====
 *
 * A super-block is 256 values, four chunks of 64, one zmm each: x's chunk c
 * is qs[64c .. 64c + 63]; the weights' levels (unsigned: Q4_K 0..15, Q5_K
 * 0..31, Q6_K q + 32 in 0..63) are laid out in the same order:
 *   Q4_K/Q5_K chunk c: low nibbles of qs[32c ..] then their high nibbles
 *     (sub-blocks 2c, 2c + 1), Q5_K's fifth bit from qh bit 2c / 2c + 1
 *   Q6_K chunk 2h + 0: low nibbles of ql[64h ..] | qh bits 0-1 / 2-3 << 4,
 *        chunk 2h + 1: high nibbles               | qh bits 4-5 / 6-7 << 4
 * Per chunk and (weight row r, activation row k), in exact int32 lanes:
 *   D = dot(levels, x_k chunk)   (dpbusd, or maddubs + madd16), |D| < 2^15
 *   A_rk += D * scale of the lane's sub-block (dpwssd with the scale in
 *          the low 16 bits of each lane and zeros above, or madd16 + add)
 * then per super-block the integer totals, as the portable vec_dot forms
 * them (dtype.c):
 *   Q4_K/Q5_K: sum_q = sum(A_rk), sum_m = sum_j m_j * (bsums[2j] + bsums[2j+1])
 *              s += d * dx * float(sum_q) - dmin * dx * float(sum_m)
 *   Q6_K:      total = sum(A_rk) - 32 * sum_j scale_j * bsums[j]
 *              s += d * dx * float(total)
 * The integer totals are exact and the float operations are the portable
 * ones in the same order: each result is bit for bit the portable path's,
 * whatever the tile (4 weight rows x 4 activation rows, every weight block
 * read once for all of them), the split or the batch. The float operations
 * of the nr rows of a tile run in the lanes of one vector (the integer
 * totals reduced four vectors at a time), each lane the portable sequence.
 * Dequantization (prefill panels, embedding rows) and Q8_K quantization of
 * the activations are also the portable path's bit for bit.
 */

/* acc += dot(u, s) per lane times S (the scale in each lane's low 16 bits). */
INLINE_Q512 __m512i q512_kdot(const int vnni, __m512i acc, __m512i u, __m512i s, __m512i S)
{
    if (vnni)
        return _mm512_dpwssd_epi32(acc, _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s), S);
    __m512i D = _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
    return _mm512_add_epi32(acc, _mm512_madd_epi16(D, S));
}

/* [sum(a), sum(b), sum(c), sum(d)] of four int32 vectors. */
INLINE_Q512 __m128i q512_hsum4(__m512i a, __m512i b, __m512i c, __m512i d)
{
    /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], the same of c, d */
    __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    __m512i s = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}
INLINE_Q512 __m128i q512_hsum4_256(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i ab = _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
    __m256i cd = _mm256_add_epi32(_mm256_unpacklo_epi32(c, d), _mm256_unpackhi_epi32(c, d));
    __m256i s = _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/* The levels of chunk c of a weight super-block (type: 4, 5 or 6). */
INLINE_Q512 __m512i q512_klevels(const int type, const char *blk, int c)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    if (type == 6) {
        const block_q6_K *b = (const block_q6_K *)blk;
        int h = c >> 1;
        __m512i L = _mm512_loadu_si512((const void *)(b->ql + 64 * h));
        __m512i H = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
        const __m512i m30 = _mm512_set1_epi8(0x30);
        if ((c & 1) == 0) {
            /* bits 0-1 (first 32 bytes) or 2-3 (next 32) of qh to bits 4-5 */
            const __m512i sh = _mm512_set_epi64(0x0002000200020002LL, 0x0002000200020002LL, 0x0002000200020002LL,
                                                0x0002000200020002LL, 0x0004000400040004LL, 0x0004000400040004LL,
                                                0x0004000400040004LL, 0x0004000400040004LL);
            return _mm512_or_si512(_mm512_and_si512(L, m4), _mm512_and_si512(_mm512_sllv_epi16(H, sh), m30));
        }
        /* bits 4-5 or 6-7 */
        return _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
                               _mm512_and_si512(_mm512_mask_srli_epi16(H, 0xffff0000u, H, 2), m30));
    }
    const uint8_t *qs = type == 5 ? ((const block_q5_K *)blk)->qs : ((const block_q4_K *)blk)->qs;
    __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)));
    __m512i W = _mm512_and_si512(_mm512_mask_srli_epi16(q, 0xffff0000u, q, 4), m4);
    if (type == 5) {
        const block_q5_K *b = (const block_q5_K *)blk;
        __m512i H = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)b->qh));
        /* the high half's bit 2c + 1 moved to bit 2c */
        H = _mm512_mask_srli_epi16(H, 0xffff0000u, H, 1);
        __mmask64 k = _mm512_test_epi8_mask(H, _mm512_set1_epi8((char)(1 << (2 * c))));
        W = _mm512_mask_add_epi8(W, k, W, _mm512_set1_epi8(16));
    }
    return W;
}

INLINE_Q512 void q512_ktile(const int type, const int vnni, const char *w, size_t row_bytes, int nb, const char *x,
                            size_t x_stride, const int nr, const int nx, float *out, size_t out_stride)
{
    const size_t wb = type == 6 ? sizeof(block_q6_K) : type == 5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    __m128 sum[4]; /* per activation row, lane r: weight row r */
#pragma GCC unroll 4
    for (int k = 0; k < nx; k++)
        sum[k] = _mm_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const char *wr[4];
        const block_q8_K *xb[4];
        __m512i S[4];      /* per row: scales as int32 lanes (Q6_K: the 16; Q4_K/Q5_K: the 8) */
        __m256i SM[4];     /* per row: Q4_K/Q5_K mins, each twice, int16; Q6_K scales int16 */
        __m512i A[4][4];
#pragma GCC unroll 4
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
                S[r] = _mm512_and_si512(_mm512_cvtepi8_epi32(s8), _mm512_set1_epi32(0xffff));
                SM[r] = _mm256_cvtepi8_epi16(s8);
            } else {
                uint64_t sc, mn;
                kernels_kq_scales(((const block_q4_K *)wr[r])->scales, &sc, &mn);
                S[r] = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc));
                __m128i m = _mm_cvtsi64_si128((long long)mn);
                SM[r] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
            }
#pragma GCC unroll 4
            for (int k = 0; k < nx; k++)
                A[r][k] = _mm512_setzero_si512();
        }
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            /* lane l of chunk c belongs to sub-block (type 6: 4c + l / 4; else 2c + l / 8) */
            const __m512i idx = type == 6 ? _mm512_set_epi32(4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 2,
                                                             4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 1, 4 * c + 1,
                                                             4 * c + 1, 4 * c + 1, 4 * c, 4 * c, 4 * c, 4 * c)
                                          : _mm512_set_epi32(2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1,
                                                             2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c, 2 * c, 2 * c,
                                                             2 * c, 2 * c, 2 * c, 2 * c, 2 * c);
            __m512i X[4];
#pragma GCC unroll 4
            for (int k = 0; k < nx; k++)
                X[k] = _mm512_loadu_si512((const void *)(xb[k]->qs + 64 * c));
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                __m512i W = q512_klevels(type, wr[r], c);
                __m512i Sc = _mm512_permutexvar_epi32(idx, S[r]);
#pragma GCC unroll 4
                for (int k = 0; k < nx; k++)
                    A[r][k] = q512_kdot(vnni, A[r][k], W, X[k], Sc);
            }
        }
        /* per activation row, the nr rows' totals in the lanes of one
         * vector, then the portable float operations lane by lane */
        uint16_t dh[8] = { 0 }, mh[8] = { 0 };
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            if (type == 6) {
                memcpy(&dh[r], &((const block_q6_K *)wr[r])->d, 2);
            } else {
                memcpy(&dh[r], &((const block_q4_K *)wr[r])->d, 2);
                memcpy(&mh[r], &((const block_q4_K *)wr[r])->dmin, 2);
            }
        }
        __m128 D = _mm_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
        __m128 DM = _mm_cvtph_ps(_mm_loadu_si128((const __m128i *)mh));
        const __m512i z = _mm512_setzero_si512();
        const __m256i z8 = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int k = 0; k < nx; k++) {
            __m256i bs = _mm256_loadu_si256((const __m256i *)xb[k]->bsums);
            __m128i iq = q512_hsum4(A[0][k], nr > 1 ? A[1][k] : z, nr > 2 ? A[2][k] : z, nr > 3 ? A[3][k] : z);
            __m128i im = q512_hsum4_256(_mm256_madd_epi16(bs, SM[0]), nr > 1 ? _mm256_madd_epi16(bs, SM[1]) : z8,
                                        nr > 2 ? _mm256_madd_epi16(bs, SM[2]) : z8,
                                        nr > 3 ? _mm256_madd_epi16(bs, SM[3]) : z8);
            __m128 dx = _mm_set1_ps(xb[k]->d);
            __m128 t;
            if (type == 6)
                t = _mm_mul_ps(_mm_mul_ps(D, dx), _mm_cvtepi32_ps(_mm_sub_epi32(iq, _mm_slli_epi32(im, 5))));
            else
                t = _mm_sub_ps(_mm_mul_ps(_mm_mul_ps(D, dx), _mm_cvtepi32_ps(iq)),
                               _mm_mul_ps(_mm_mul_ps(DM, dx), _mm_cvtepi32_ps(im)));
            sum[k] = _mm_add_ps(sum[k], t);
        }
    }
#pragma GCC unroll 4
    for (int k = 0; k < nx; k++) {
        float o[4];
        _mm_storeu_ps(o, sum[k]);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++)
            out[(size_t)k * out_stride + r] = o[r];
    }
}

INLINE_Q512 void q512_krows(const int type, const int vnni, const mat_t *m, int r0, int r1, const void *xv,
                            size_t x_stride, int n_x, float *out, size_t out_stride)
{
    size_t row_bytes = dtype_row_size(m->dtype, m->cols);
    int nb = m->cols / QK_K;
    const char *base = m->data, *x = xv;
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 4 <= n_x; k += 4)
            q512_ktile(type, vnni, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 4,
                       out + (size_t)k * out_stride + r, out_stride);
        for (; k < n_x; k++)
            q512_ktile(type, vnni, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 4, 1,
                       out + (size_t)k * out_stride + r, out_stride);
    }
    for (; r < r1; r++) {
        const char *w = base + (size_t)r * row_bytes;
        int k = 0;
        for (; k + 4 <= n_x; k += 4)
            q512_ktile(type, vnni, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 4,
                       out + (size_t)k * out_stride + r, out_stride);
        for (; k < n_x; k++)
            q512_ktile(type, vnni, w, row_bytes, nb, x + (size_t)k * x_stride, x_stride, 1, 1,
                       out + (size_t)k * out_stride + r, out_stride);
    }
}

#define Q512_KROWS(NAME, TYPE, VNNI)                                                                               \
    static ATTR_Q512 void NAME(const mat_t *m, int r0, int r1, const void *x, size_t x_stride, int n_x, float *out, \
                               size_t out_stride)                                                                  \
    {                                                                                                              \
        q512_krows(TYPE, VNNI, m, r0, r1, x, x_stride, n_x, out, out_stride);                                      \
    }
Q512_KROWS(avx512_rows_q4_K_vnni, 4, 1)
Q512_KROWS(avx512_rows_q5_K_vnni, 5, 1)
Q512_KROWS(avx512_rows_q6_K_vnni, 6, 1)
Q512_KROWS(avx512_rows_q4_K_bw, 4, 0)
Q512_KROWS(avx512_rows_q5_K_bw, 5, 0)
Q512_KROWS(avx512_rows_q6_K_bw, 6, 0)

/* ---- K-quant prefill GEMM (VNNI): both operands repacked once per matmul ----
 *
 * A super-block's 256 values as 64 groups of 4 (group g: values 4g..4g+3)
 * are repacked into four vectors V_0..V_3, lane l of V_v holding group
 * 4l + v: lane l of all four covers values 16l..16l+15, inside one
 * sub-block (Q4_K/Q5_K: l / 2, Q6_K: l). Per (weight row r, activation
 * row k) and super-block the integer work is then
 *   Q4_K:       D = sum_v dpbusd(L_v, V_v)         |D| <= 16*15*127 < 2^15
 *   Q5_K, Q6_K: D1 = C1 + dpbusd(L_0, V_0) + dpbusd(L_1, V_1), D2 likewise
 *               with L_2, L_3 (8 values a lane: |D| <= 8*32*127 < 2^15)
 * with C = 0, except Q6_K: C = -32 * (the lane's sum of x), so that the
 * unsigned levels q in 0..63 count as q - 32. D fits int16, so the D of
 * two activation rows are packed (packssdw, exact) into one vector and
 * multiplied by their lanes' scales (madd16, then dpwssd for D2): per
 * 128-bit lane [a, a, b, b] for activation rows a, b. The sum of a's lanes
 * is exactly sum_q (Q4_K/Q5_K) or total (Q6_K) of the portable vec_dot
 * (dtype.c). The sums of a tile (4 weight rows x 4 activation rows) are
 * reduced together into the lanes of one vector, lane 4r + k; so are the
 * mins terms sum_j m_j * (bsums[2j] + bsums[2j+1]) (madd16 of the packed
 * mins and pair sums); then the portable float operations, in its order,
 * lane by lane. Each (r, k) result equals the rows kernel's bit for bit.
 *
 *   X, per row, per super-block (448 bytes): V_0..V_3, C1, C2 (int32),
 *     the pair sums of bsums (8 x int16), d (f32), padding
 *   W, a panel per thread, per group of 4 rows, per super-block (1472
 *     bytes): per row L_0..L_3 and the scales of the packed D (int16 8b + i:
 *     the scale of D's lane 4b + i % 4), then the 4 rows' 8 mins (int16),
 *     d and dmin as f32 in lanes 4r + k
 * A panel ends in a group padded with zero rows; an activation tile short
 * of 4 rows repeats its last row; neither padding is written out. */
#define Q512_KX_BYTES 448
#define Q512_KW_BYTES 1472
#define Q512_KW_ROW 320

static const int q512_t4_idx[4][16] = {
    { 0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0 },
    { 1, 5, 9, 13, 17, 21, 25, 29, 0, 0, 0, 0, 0, 0, 0, 0 },
    { 2, 6, 10, 14, 18, 22, 26, 30, 0, 0, 0, 0, 0, 0, 0, 0 },
    { 3, 7, 11, 15, 19, 23, 27, 31, 0, 0, 0, 0, 0, 0, 0, 0 },
};

/* V_v (lane l: int32 group 4l + v) of the 256 bytes z[0..3] (in order). */
INLINE_Q512 void q512_kpack(const __m512i z[4], char *o)
{
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) {
        __m512i idx = _mm512_loadu_si512((const void *)q512_t4_idx[v]);
        __m512i p = _mm512_permutex2var_epi32(z[0], idx, z[1]);
        __m512i q = _mm512_permutex2var_epi32(z[2], idx, z[3]);
        _mm512_storeu_si512((void *)(o + 64 * v), _mm512_shuffle_i64x2(p, q, _MM_SHUFFLE(1, 0, 1, 0)));
    }
}

static size_t q512_kx_bytes(int cols)
{
    return (size_t)(cols / QK_K) * Q512_KX_BYTES;
}

static int q512_kpanel_rows(int cols)
{
    size_t per_row = (size_t)(cols / QK_K) * (Q512_KW_BYTES / 4);
    int p = (int)(Q512_PANEL_BYTES / per_row) & ~3;
    return p < 4 ? 4 : p;
}

static size_t q512_kpanel_bytes(int cols)
{
    return (size_t)(q512_kpanel_rows(cols) / 4) * (size_t)(cols / QK_K) * Q512_KW_BYTES;
}

static ATTR_Q512 void q512_kpack_x(const void *xq, void *xp, int cols)
{
    int nb = cols / QK_K;
    const __m512i k32 = _mm512_set1_epi8(32), z = _mm512_setzero_si512();
    for (int b = 0; b < nb; b++) {
        const block_q8_K *xb = (const block_q8_K *)xq + b;
        char *o = (char *)xp + (size_t)b * Q512_KX_BYTES;
        __m512i q[4];
        for (int c = 0; c < 4; c++)
            q[c] = _mm512_loadu_si512((const void *)(xb->qs + 64 * c));
        q512_kpack(q, o);
        __m512i V[4];
        for (int v = 0; v < 4; v++)
            V[v] = _mm512_loadu_si512((const void *)(o + 64 * v));
        __m512i c1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, k32, V[0]), k32, V[1]);
        __m512i c2 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, k32, V[2]), k32, V[3]);
        _mm512_storeu_si512((void *)(o + 256), _mm512_sub_epi32(z, c1));
        _mm512_storeu_si512((void *)(o + 320), _mm512_sub_epi32(z, c2));
        int16_t bp[8];
        for (int j = 0; j < 8; j++)
            bp[j] = (int16_t)(xb->bsums[2 * j] + xb->bsums[2 * j + 1]);
        memset(o + 384, 0, 64);
        memcpy(o + 384, bp, sizeof(bp));
        memcpy(o + 400, &xb->d, sizeof(float));
    }
}

/* Weight rows [r, r + pr) of m into the panel, in groups of 4 rows (the
 * last padded with zero rows). The rows are read in order, one stream. */
INLINE_Q512 void q512_kpack_w(const int type, const mat_t *m, int r, int pr, char *panel)
{
    size_t row_bytes = dtype_row_size(m->dtype, m->cols);
    const size_t wb = type == 6 ? sizeof(block_q6_K) : type == 5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    int nb = m->cols / QK_K, np = (pr + 3) & ~3;
    for (int i = 0; i < np; i++) {
        const char *row = (const char *)m->data + (size_t)(r + i) * row_bytes;
        int ri = i & 3;
        for (int b = 0; b < nb; b++) {
            char *o = panel + ((size_t)(i / 4) * (size_t)nb + (size_t)b) * Q512_KW_BYTES;
            char *orow = o + Q512_KW_ROW * ri;
            int16_t mins[8] = { 0 };
            float dr = 0.0f, dmr = 0.0f;
            if (i < pr) {
                const char *blk = row + (size_t)b * wb;
                _mm_prefetch(blk + 8 * wb, _MM_HINT_T0);
                _mm_prefetch(blk + 8 * wb + 64, _MM_HINT_T0);
                _mm_prefetch(blk + 8 * wb + 128, _MM_HINT_T0);
                __m512i z[4];
                for (int c = 0; c < 4; c++)
                    z[c] = q512_klevels(type, blk, c);
                q512_kpack(z, orow);
                /* int16 j of the packed scales: the scale of D's lane 4 (j / 8) + j % 4 */
                __m256i sb;
                if (type == 6) {
                    const block_q6_K *q6 = (const block_q6_K *)blk;
                    const __m256i ix = _mm256_setr_epi8(0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7, 8, 9, 10,
                                                        11, 8, 9, 10, 11, 12, 13, 14, 15, 12, 13, 14, 15);
                    sb = _mm256_shuffle_epi8(
                        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q6->scales)), ix);
                    _mm512_storeu_si512((void *)(orow + 256), _mm512_cvtepi8_epi16(sb));
                    dr = f16_to_f32(q6->d);
                } else {
                    const block_q4_K *q4 = (const block_q4_K *)blk; /* Q5_K: the same head */
                    const __m256i ix = _mm256_setr_epi8(0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3, 4, 4, 5, 5,
                                                        4, 4, 5, 5, 6, 6, 7, 7, 6, 6, 7, 7);
                    uint64_t sc, mn;
                    kernels_kq_scales(q4->scales, &sc, &mn);
                    sb = _mm256_shuffle_epi8(_mm256_set1_epi64x((long long)sc), ix);
                    _mm512_storeu_si512((void *)(orow + 256), _mm512_cvtepu8_epi16(sb));
                    _mm_storeu_si128((__m128i *)mins, _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn)));
                    dr = f16_to_f32(q4->d);
                    dmr = f16_to_f32(q4->dmin);
                }
            } else {
                memset(orow, 0, Q512_KW_ROW);
            }
            memcpy(o + 1280 + 16 * ri, mins, sizeof(mins));
            _mm_storeu_ps((float *)(o + 1344 + 16 * ri), _mm_set1_ps(dr));
            _mm_storeu_ps((float *)(o + 1408 + 16 * ri), _mm_set1_ps(dmr));
        }
    }
}

/* v[2r], v[2r + 1]: per 128-bit lane [a, a, b, b] and [c, c, d, d] for
 * activation rows a..d of weight row r; lane 4r + k of the result: the sum
 * of activation row k's lanes. */
INLINE_Q512 __m512i q512_khsum(const __m512i v[8])
{
    __m512i q[4], s[2];
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        __m512 a = _mm512_castsi512_ps(v[2 * r]), b = _mm512_castsi512_ps(v[2 * r + 1]);
        q[r] = _mm512_add_epi32(_mm512_castps_si512(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))),
                                _mm512_castps_si512(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))));
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++)
        s[i] = _mm512_add_epi32(_mm512_shuffle_i64x2(q[2 * i], q[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                                _mm512_shuffle_i64x2(q[2 * i], q[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_epi32(_mm512_shuffle_i64x2(s[0], s[1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i64x2(s[0], s[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* One tile: a panel group (4 weight rows) x 4 packed activation rows x[k],
 * nb super-blocks; writes the nr x nx results. */
INLINE_Q512 void q512_kgemm_tile(const int type, const char *w, int nb, const char *const x[4], int nr, int nx,
                                 float *out, size_t out_stride)
{
    const __m512i z = _mm512_setzero_si512();
    __m512 sum = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, w += Q512_KW_BYTES) {
        const size_t xo = (size_t)b * Q512_KX_BYTES;
        __m512i V[8];
        _mm_prefetch(w + Q512_KW_BYTES, _MM_HINT_T0);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const char *wr = w + Q512_KW_ROW * r;
            __m512i L0 = _mm512_loadu_si512((const void *)wr), L1 = _mm512_loadu_si512((const void *)(wr + 64));
            __m512i L2 = _mm512_loadu_si512((const void *)(wr + 128)), L3 = _mm512_loadu_si512((const void *)(wr + 192));
            __m512i S = _mm512_loadu_si512((const void *)(wr + 256));
            __m512i D1[4], D2[4];
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const char *xk = x[k] + xo;
                __m512i X0 = _mm512_loadu_si512((const void *)xk), X1 = _mm512_loadu_si512((const void *)(xk + 64));
                __m512i X2 = _mm512_loadu_si512((const void *)(xk + 128));
                __m512i X3 = _mm512_loadu_si512((const void *)(xk + 192));
                if (type == 4) {
                    __m512i D = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, L0, X0), L1, X1);
                    D1[k] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(D, L2, X2), L3, X3);
                } else {
                    __m512i c1 = z, c2 = z;
                    if (type == 6) {
                        c1 = _mm512_loadu_si512((const void *)(xk + 256));
                        c2 = _mm512_loadu_si512((const void *)(xk + 320));
                    }
                    D1[k] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(c1, L0, X0), L1, X1);
                    D2[k] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(c2, L2, X2), L3, X3);
                }
            }
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m512i P = _mm512_madd_epi16(_mm512_packs_epi32(D1[2 * h], D1[2 * h + 1]), S);
                if (type != 4)
                    P = _mm512_dpwssd_epi32(P, _mm512_packs_epi32(D2[2 * h], D2[2 * h + 1]), S);
                V[2 * r + h] = P;
            }
        }
        __m512i iq = q512_khsum(V);
        __m512 dx = _mm512_broadcast_f32x4(_mm_set_ps(*(const float *)(x[3] + xo + 400),
                                                      *(const float *)(x[2] + xo + 400),
                                                      *(const float *)(x[1] + xo + 400),
                                                      *(const float *)(x[0] + xo + 400)));
        __m512 D = _mm512_loadu_ps((const void *)(w + 1344));
        __m512 t;
        if (type == 6) {
            t = _mm512_mul_ps(_mm512_mul_ps(D, dx), _mm512_cvtepi32_ps(iq));
        } else {
            /* lane 4r + k: madd16 of row r's mins pair t and x_k's pair sums pair t, t = 0..3 */
            __m512i B = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(x[0] + xo + 384)));
            B = _mm512_inserti32x4(B, _mm_loadu_si128((const __m128i *)(x[1] + xo + 384)), 1);
            B = _mm512_inserti32x4(B, _mm_loadu_si128((const __m128i *)(x[2] + xo + 384)), 2);
            B = _mm512_inserti32x4(B, _mm_loadu_si128((const __m128i *)(x[3] + xo + 384)), 3);
            __m512i M = _mm512_loadu_si512((const void *)(w + 1280));
            const __m512i ib = _mm512_set_epi32(12, 8, 4, 0, 12, 8, 4, 0, 12, 8, 4, 0, 12, 8, 4, 0);
            const __m512i im = _mm512_set_epi32(12, 12, 12, 12, 8, 8, 8, 8, 4, 4, 4, 4, 0, 0, 0, 0);
            __m512i mt = z;
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                __m512i o = _mm512_set1_epi32(p);
                mt = _mm512_add_epi32(mt, _mm512_madd_epi16(_mm512_permutexvar_epi32(_mm512_add_epi32(im, o), M),
                                                            _mm512_permutexvar_epi32(_mm512_add_epi32(ib, o), B)));
            }
            __m512 DM = _mm512_loadu_ps((const void *)(w + 1408));
            t = _mm512_sub_ps(_mm512_mul_ps(_mm512_mul_ps(D, dx), _mm512_cvtepi32_ps(iq)),
                              _mm512_mul_ps(_mm512_mul_ps(DM, dx), _mm512_cvtepi32_ps(mt)));
        }
        sum = _mm512_add_ps(sum, t);
    }
    float o[16];
    _mm512_storeu_ps(o, sum);
    for (int r = 0; r < nr; r++)
        for (int k = 0; k < nx; k++)
            out[(size_t)k * out_stride + r] = o[4 * r + k];
}

INLINE_Q512 void q512_kgemm(const int type, const mat_t *m, int r0, int r1, const void *xpv, size_t xs, int n,
                            float *out, size_t out_stride, void *panel)
{
    int nb = m->cols / QK_K, prows = q512_kpanel_rows(m->cols);
    size_t gbytes = (size_t)nb * Q512_KW_BYTES;
    const char *xp = xpv;
    for (int p0 = r0; p0 < r1; p0 += prows) {
        int pr = r1 - p0 < prows ? r1 - p0 : prows;
        q512_kpack_w(type, m, p0, pr, panel);
        for (int k = 0; k < n; k += 4) {
            int nx = n - k < 4 ? n - k : 4;
            const char *x[4];
            for (int i = 0; i < 4; i++)
                x[i] = xp + (size_t)(k + (i < nx ? i : nx - 1)) * xs;
            float *o = out + (size_t)k * out_stride + p0;
            for (int g = 0; g < pr; g += 4)
                q512_kgemm_tile(type, (const char *)panel + (size_t)(g / 4) * gbytes, nb, x,
                                pr - g < 4 ? pr - g : 4, nx, o + g, out_stride);
        }
    }
}

#define Q512_KGEMM(NAME, TYPE)                                                                                     \
    static ATTR_Q512 void NAME(const mat_t *m, int r0, int r1, const void *xp, size_t xs, int n, float *out,      \
                               size_t out_stride, void *panel)                                                     \
    {                                                                                                              \
        q512_kgemm(TYPE, m, r0, r1, xp, xs, n, out, out_stride, panel);                                            \
    }
Q512_KGEMM(q512_kgemm_q4_K, 4)
Q512_KGEMM(q512_kgemm_q5_K, 5)
Q512_KGEMM(q512_kgemm_q6_K, 6)

static const gemm_kernel q512_gemm_kernel_q4_K = { q512_kx_bytes, q512_kpanel_bytes, q512_kpack_x, q512_kgemm_q4_K };
static const gemm_kernel q512_gemm_kernel_q5_K = { q512_kx_bytes, q512_kpanel_bytes, q512_kpack_x, q512_kgemm_q5_K };
static const gemm_kernel q512_gemm_kernel_q6_K = { q512_kx_bytes, q512_kpanel_bytes, q512_kpack_x, q512_kgemm_q6_K };

/* 128-bit lane j of v. */
INLINE_Q512 __m128i q512_lane(__m512i v, int j)
{
    switch (j) {
    case 0:
        return _mm512_extracti32x4_epi32(v, 0);
    case 1:
        return _mm512_extracti32x4_epi32(v, 1);
    case 2:
        return _mm512_extracti32x4_epi32(v, 2);
    default:
        return _mm512_extracti32x4_epi32(v, 3);
    }
}

/* Q4_K/Q5_K/Q6_K to F32 with the portable path's float operations (dtype.c):
 * (d * sc) * q - dmin * m, and (d * sc) * q for Q6_K, 16 values at a time:
 * bit for bit its results. */
INLINE_Q512 void q512_k_to_f32(const int type, const void *src, float *dst, int64_t n)
{
    const size_t bw = type == 6 ? sizeof(block_q6_K) : type == 5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    for (int64_t k = 0; k < n / QK_K; k++, dst += QK_K) {
        const char *blk = (const char *)src + (size_t)k * bw;
        if (type == 6) {
            const block_q6_K *b = (const block_q6_K *)blk;
            float d = _cvtsh_ss((unsigned short)q512_half(&b->d));
            for (int c = 0; c < 4; c++) {
                /* levels q + 32, as the row kernels build them */
                __m512i L = _mm512_sub_epi8(q512_klevels(6, blk, c), _mm512_set1_epi8(32));
                for (int j = 0; j < 4; j++) {
                    __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q512_lane(L, j)));
                    float s = d * b->scales[4 * c + j];
                    _mm512_storeu_ps(dst + 64 * c + 16 * j, _mm512_mul_ps(_mm512_set1_ps(s), q));
                }
            }
        } else {
            const block_q4_K *b = (const block_q4_K *)blk;
            float d = _cvtsh_ss((unsigned short)q512_half(&b->d));
            float dmin = _cvtsh_ss((unsigned short)q512_half(&b->dmin));
            uint64_t sc, mn;
            kernels_kq_scales(b->scales, &sc, &mn);
            for (int c = 0; c < 4; c++) {
                __m512i L = q512_klevels(type, blk, c);
                for (int j = 0; j < 4; j++) {
                    int sb = 2 * c + (j >> 1);
                    float s = d * (float)(int)((sc >> (8 * sb)) & 0xff);
                    float m = dmin * (float)(int)((mn >> (8 * sb)) & 0xff);
                    __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q512_lane(L, j)));
                    _mm512_storeu_ps(dst + 64 * c + 16 * j,
                                     _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(s), q), _mm512_set1_ps(m)));
                }
            }
        }
    }
}
static ATTR_Q512 void avx512_q4_K_to_f32(const void *src, float *dst, int64_t n)
{
    q512_k_to_f32(4, src, dst, n);
}
static ATTR_Q512 void avx512_q5_K_to_f32(const void *src, float *dst, int64_t n)
{
    q512_k_to_f32(5, src, dst, n);
}
static ATTR_Q512 void avx512_q6_K_to_f32(const void *src, float *dst, int64_t n)
{
    q512_k_to_f32(6, src, dst, n);
}

/* As q8_K_from_f32 (dtype.c), bit for bit: the first value of largest
 * magnitude maps to -127, q = round to nearest even (vcvtps2dq under the
 * default rounding, as the portable path's magic-number rounding for these
 * magnitudes), at most 127; bsums from the stored q. */
static ATTR_Q512 void avx512_q8_K_from_f32(const float *src, void *dst, int64_t n)
{
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80000000u));
    block_q8_K *b = dst;
    for (int64_t k = 0; k < n / QK_K; k++) {
        const float *x = src + k * QK_K;
        __m512 m = _mm512_setzero_ps();
        for (int j = 0; j < QK_K; j += 16)
            m = _mm512_max_ps(m, _mm512_andnot_ps(sign, _mm512_loadu_ps(x + j)));
        float amax = _mm512_reduce_max_ps(m);
        memset(&b[k], 0, sizeof(b[k]));
        if (amax == 0.0f)
            continue;
        float max = 0.0f;
        for (int j = 0; j < QK_K; j += 16) {
            __mmask16 eq = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + j)), _mm512_set1_ps(amax),
                                              _CMP_EQ_OQ);
            if (eq) {
                max = x[j + __builtin_ctz(eq)];
                break;
            }
        }
        float iscale = -127.0f / max;
        __m512 vs = _mm512_set1_ps(iscale);
        for (int j = 0; j < QK_K; j += 16) {
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(vs, _mm512_loadu_ps(x + j)));
            q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
            _mm_storeu_si128((__m128i *)(b[k].qs + j), _mm512_cvtepi32_epi8(q));
            b[k].bsums[j / 16] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        b[k].d = 1 / iscale;
    }
}

static void avx512_register_blocks(kernels_isa *k, const cpu_features *f)
{
    if (f->avx512vnni) {
        k->gemm[DTYPE_Q8_0] = &q512_gemm_kernel_q8;
        k->gemm[DTYPE_Q4_0] = &q512_gemm_kernel_q4;
        k->gemm[DTYPE_Q4_K] = &q512_gemm_kernel_q4_K;
        k->gemm[DTYPE_Q5_K] = &q512_gemm_kernel_q5_K;
        k->gemm[DTYPE_Q6_K] = &q512_gemm_kernel_q6_K;
    }
    k->rows[DTYPE_Q8_0] = f->avx512vnni ? avx512_rows_q8_0_vnni : avx512_rows_q8_0_bw;
    k->rows[DTYPE_Q4_0] = f->avx512vnni ? avx512_rows_q4_0_vnni : avx512_rows_q4_0_bw;
    k->from_f32[DTYPE_Q8_0] = avx512_q8_0_from_f32;
    k->to_f32[DTYPE_Q8_0] = avx512_q8_0_to_f32;
    k->to_f32[DTYPE_Q4_0] = avx512_q4_0_to_f32;
    k->rows[DTYPE_Q4_K] = f->avx512vnni ? avx512_rows_q4_K_vnni : avx512_rows_q4_K_bw;
    k->rows[DTYPE_Q5_K] = f->avx512vnni ? avx512_rows_q5_K_vnni : avx512_rows_q5_K_bw;
    k->rows[DTYPE_Q6_K] = f->avx512vnni ? avx512_rows_q6_K_vnni : avx512_rows_q6_K_bw;
    k->to_f32[DTYPE_Q4_K] = avx512_q4_K_to_f32;
    k->to_f32[DTYPE_Q5_K] = avx512_q5_K_to_f32;
    k->to_f32[DTYPE_Q6_K] = avx512_q6_K_to_f32;
    k->from_f32[DTYPE_Q8_K] = avx512_q8_K_from_f32;
}

/* ==== end of the block types ==== */

void kernels_avx512_register(kernels_isa *k, const cpu_features *f)
{
    k->name = "avx512";
    k->rows[DTYPE_F32] = avx512_rows_f32;
    k->rows[DTYPE_BF16] = avx512_rows_bf16;
    k->rows[DTYPE_F16] = avx512_rows_f16;
    if (f->avx512bf16)
        k->rows[DTYPE_BF16] = f->amx_bf16 ? amx_rows_bf16 : avx512bf16_rows_bf16;
    if (f->avx512bf16 && f->amx_bf16)
        k->prefill_rows_cols[DTYPE_BF16] = AMX_MAX_COLS;
    k->to_f32[DTYPE_BF16] = avx512_bf16_to_f32;
    k->to_f32[DTYPE_F16] = avx512_f16_to_f32;
    k->from_f32[DTYPE_BF16] = avx512_f32_to_bf16;
    k->dot_f32 = avx512_dot_f32;
    k->axpy_f32 = avx512_axpy_f32;
    k->dot_f32_f16 = avx512_dot_f32_f16;
    k->axpy_f16 = avx512_axpy_f16;
    k->sum_bytes = avx512_sum_bytes;
    avx512_register_blocks(k, f);
}

#endif /* KERNELS_X86 */
