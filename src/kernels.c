/*
 * kernels: thread pool, row dot products (F32/BF16/F16 weights x F32
 * activations) with run-time SIMD selection, sgemm-based prefill, and the
 * small element-wise ops of the forward pass. See kernels.h for the contract.
 *
 * Thread pool protocol (one dispatch, caller is thread 0 of nth):
 *
 *   caller                              worker ith (1..nth-1)
 *   ------                              ---------------------
 *   pool.fn, pool.arg = task            spin on pool.generation (~50 us),
 *   pool.n_done = 0                     then sleep on pool.cond
 *   pool.generation++  (seq_cst)  --->  sees a new generation
 *   if pool.n_sleeping: broadcast       runs fn(arg, ith, nth)
 *   runs fn(arg, 0, nth)                pool.n_done++  (release)
 *   spins until n_done == nth-1   <---
 *
 * A worker announces it is about to sleep (n_sleeping++) before it checks
 * the generation a last time under the mutex; the caller bumps the
 * generation before it reads n_sleeping. Both are sequentially consistent,
 * so at least one of the two sees the other and no wake-up is lost.
 *
 * Row dot products: every row is reduced by one thread with one fixed
 * sequence of operations, whether it is computed alone or in a group of
 * four rows sharing the loads of x. That sequence depends only on the
 * column count and the SIMD level, so results are identical for any number
 * of threads and any split of rows.
 *
 *   per row, SIMD width V (16 avx512, 8 avx2, 4 neon):
 *   acc0 += w[i..i+V) * x[i..i+V)      for each full block of 2V columns
 *   acc1 += w[i+V..i+2V) * x[...]
 *   acc0 += one more block of V        if at least V columns remain
 *   acc1 += zero-padded tail (< V)     if any columns remain
 *   dot  = horizontal_sum(acc0 + acc1)
 */
#include "kernels.h"
#include "util.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define KERNELS_X86 1
#define ATTR_AVX512 __attribute__((target("avx512f")))
#define ATTR_AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE_AVX512 static inline __attribute__((always_inline, target("avx512f")))
#define INLINE_AVX2 static inline __attribute__((always_inline, target("avx2,fma,f16c")))
#endif

#if defined(__aarch64__)
#include <arm_neon.h>
#define KERNELS_NEON 1
#endif

/* ---- dtypes ---- */

size_t dtype_size(dtype_t t)
{
    switch (t) {
    case DTYPE_F32: return 4;
    case DTYPE_F16: return 2;
    case DTYPE_BF16: return 2;
    default: return 0;
    }
}

const char *dtype_name(dtype_t t)
{
    switch (t) {
    case DTYPE_F32: return "f32";
    case DTYPE_F16: return "f16";
    case DTYPE_BF16: return "bf16";
    default: return "?";
    }
}

int dtype_parse(const char *s, dtype_t *out)
{
    static const struct { const char *name; dtype_t t; } names[] = {
        { "f32", DTYPE_F32 },   { "F32", DTYPE_F32 },   { "float32", DTYPE_F32 },
        { "bf16", DTYPE_BF16 }, { "BF16", DTYPE_BF16 }, { "bfloat16", DTYPE_BF16 },
        { "f16", DTYPE_F16 },   { "F16", DTYPE_F16 },   { "float16", DTYPE_F16 },
    };
    if (!s)
        return -1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i].name) == 0) {
            if (out)
                *out = names[i].t;
            return 0;
        }
    }
    return -1;
}

/* ---- run-time SIMD selection ---- */

enum { SIMD_SCALAR, SIMD_AVX2, SIMD_AVX512, SIMD_NEON };

static int simd_level = SIMD_SCALAR;
#if defined(KERNELS_X86)
static int simd_has_f16c;
#endif
static int simd_forced_scalar;
static pthread_once_t simd_once = PTHREAD_ONCE_INIT;

static void simd_detect(void)
{
#if defined(KERNELS_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        simd_level = SIMD_AVX512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        simd_level = SIMD_AVX2;
    /* Every AVX2 CPU shipped has F16C, but ask anyway: the f16 path of the
     * AVX2 level falls back to scalar without it. */
    unsigned eax, ebx, ecx, edx;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        simd_has_f16c = (ecx & bit_F16C) != 0;
#elif defined(KERNELS_NEON)
    simd_level = SIMD_NEON;
#endif
    /* MDI_SIMD=avx2 or MDI_SIMD=scalar caps the level, so that the narrower
     * paths can be tested and measured on a CPU that has a wider one. */
    const char *cap = getenv("MDI_SIMD");
    if (cap && strcmp(cap, "avx2") == 0 && simd_level == SIMD_AVX512)
        simd_level = SIMD_AVX2;
    else if (cap && strcmp(cap, "scalar") == 0)
        simd_level = SIMD_SCALAR;
}

static atomic_int simd_ready;

static void simd_detect_once(void)
{
    simd_detect();
    atomic_store_explicit(&simd_ready, 1, memory_order_release);
}

/* Called on every small kernel (attention runs one per cached position):
 * after the first call this is one load, not a pthread_once call. */
static inline int simd_get(void)
{
    if (__builtin_expect(!atomic_load_explicit(&simd_ready, memory_order_acquire), 0))
        pthread_once(&simd_once, simd_detect_once);
    return simd_forced_scalar ? SIMD_SCALAR : simd_level;
}

const char *kernels_simd_name(void)
{
    switch (simd_get()) {
    case SIMD_AVX512: return "avx512";
    case SIMD_AVX2: return "avx2";
    case SIMD_NEON: return "neon";
    default: return "scalar";
    }
}

void kernels_force_scalar(int on)
{
    pthread_once(&simd_once, simd_detect_once);
    simd_forced_scalar = on ? 1 : 0;
}

/* ---- thread pool ---- */

/* How long an idle worker spins before it sleeps on the condition variable.
 * The gaps between dispatches inside a decode step (norms, rope, attention)
 * are a few to some tens of microseconds; sleeping through them would add a
 * futex wake-up (5-20 us) to every matvec. Between tokens the gap is long
 * and the workers sleep, leaving the cores to the network threads. */
#define POOL_SPIN_NS 50000ull

static struct {
    int n_threads;
    pthread_t *threads;
    kernels_task_fn fn; /* written by the caller before the generation bump */
    void *arg;
    atomic_uint generation;
    atomic_int n_done;
    atomic_int n_sleeping;
    atomic_int stop;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
} pool = {
    .n_threads = 0,
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
};

static inline void cpu_relax(void)
{
#if defined(KERNELS_X86)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* One step of a busy wait: pause, and every 256 steps (~10 us) give the
 * core away in case the thread we wait for shares it with us. */
static inline void spin_step(unsigned k)
{
    cpu_relax();
    if ((k & 255) == 0)
        sched_yield();
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Waits until the generation differs from `seen` and returns it. */
static unsigned pool_wait_generation(unsigned seen)
{
    uint64_t start = now_ns();
    for (unsigned k = 1;; k++) {
        unsigned g = atomic_load_explicit(&pool.generation, memory_order_acquire);
        if (g != seen)
            return g;
        spin_step(k);
        if ((k & 63) == 0 && now_ns() - start > POOL_SPIN_NS)
            break;
    }
    pthread_mutex_lock(&pool.mutex);
    atomic_fetch_add(&pool.n_sleeping, 1);
    unsigned g;
    while ((g = atomic_load(&pool.generation)) == seen)
        pthread_cond_wait(&pool.cond, &pool.mutex);
    atomic_fetch_sub(&pool.n_sleeping, 1);
    pthread_mutex_unlock(&pool.mutex);
    return g;
}

static void *pool_worker(void *p)
{
    int ith = (int)(intptr_t)p;
    char name[16];
    snprintf(name, sizeof(name), "kernels-%d", ith);
    pthread_setname_np(pthread_self(), name);
    unsigned seen = 0; /* kernels_init resets the generation before creating us */
    for (;;) {
        seen = pool_wait_generation(seen);
        if (atomic_load(&pool.stop))
            break;
        pool.fn(pool.arg, ith, pool.n_threads);
        atomic_fetch_add_explicit(&pool.n_done, 1, memory_order_release);
    }
    return NULL;
}

/* Starts the next generation and wakes the workers that went to sleep. */
static void pool_kick(void)
{
    atomic_fetch_add(&pool.generation, 1);
    if (atomic_load(&pool.n_sleeping) > 0) {
        pthread_mutex_lock(&pool.mutex);
        pthread_cond_broadcast(&pool.cond);
        pthread_mutex_unlock(&pool.mutex);
    }
}

static void pool_stop(void)
{
    if (!pool.threads)
        return;
    atomic_store(&pool.stop, 1);
    pthread_mutex_lock(&pool.mutex);
    atomic_fetch_add(&pool.generation, 1);
    pthread_cond_broadcast(&pool.cond);
    pthread_mutex_unlock(&pool.mutex);
    for (int i = 1; i < pool.n_threads; i++)
        pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
}

static float *matmul_scratch;
static size_t matmul_scratch_cap; /* floats */

int kernels_init(int n_threads)
{
    pthread_once(&simd_once, simd_detect_once);
    kernels_shutdown();
    if (n_threads < 1)
        n_threads = 1;
    openblas_set_num_threads(n_threads);
    atomic_store(&pool.generation, 0);
    atomic_store(&pool.n_done, 0);
    atomic_store(&pool.n_sleeping, 0);
    atomic_store(&pool.stop, 0);
    pool.n_threads = n_threads;
    if (n_threads == 1)
        return MDI_OK;
    pool.threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!pool.threads) {
        pool.n_threads = 1;
        return MDI_ENOMEM;
    }
    for (int i = 1; i < n_threads; i++) {
        int rc = pthread_create(&pool.threads[i], NULL, pool_worker, (void *)(intptr_t)i);
        if (rc != 0) {
            log_error("kernels: cannot start worker thread %d of %d: %s", i, n_threads, strerror(rc));
            pool.n_threads = i; /* join the ones that started */
            pool_stop();
            pool.n_threads = 1;
            return MDI_ENOMEM;
        }
    }
    return MDI_OK;
}

int kernels_n_threads(void)
{
    return pool.n_threads > 0 ? pool.n_threads : 1;
}

void kernels_shutdown(void)
{
    pool_stop();
    pool.n_threads = 0;
    free(matmul_scratch);
    matmul_scratch = NULL;
    matmul_scratch_cap = 0;
}

void kernels_parallel(kernels_task_fn fn, void *arg)
{
    int nth = pool.n_threads;
    if (nth <= 1 || !pool.threads) {
        fn(arg, 0, 1);
        return;
    }
    pool.fn = fn;
    pool.arg = arg;
    atomic_store_explicit(&pool.n_done, 0, memory_order_relaxed);
    pool_kick();
    fn(arg, 0, nth);
    /* The workers run the same amount of work and finish within a few
     * microseconds of us; spin_step yields only if one of them is late. */
    for (unsigned k = 1; atomic_load_explicit(&pool.n_done, memory_order_acquire) != nth - 1; k++)
        spin_step(k);
}

/* ---- portable row kernels ---- */

/* dst (n,) = src (n,) of dtype dt, converted to F32. */
static void convert_scalar(dtype_t dt, const void *src, float *dst, size_t n)
{
    switch (dt) {
    case DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = bf16_to_f32(s[i]);
        break;
    }
    case DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = f16_to_f32(s[i]);
        break;
    }
    default:
        break;
    }
}

void dtype_convert(void *dst, dtype_t dst_t, const void *src, dtype_t src_t, size_t n)
{
    if (dst_t == src_t) {
        memcpy(dst, src, n * dtype_size(dst_t));
    } else if (dst_t == DTYPE_F32) {
        convert_scalar(src_t, src, dst, n);
    } else if (src_t == DTYPE_F32) {
        const float *s = src;
        uint16_t *d = dst;
        if (dst_t == DTYPE_BF16)
            for (size_t i = 0; i < n; i++)
                d[i] = f32_to_bf16(s[i]);
        else
            for (size_t i = 0; i < n; i++)
                d[i] = f32_to_f16(s[i]);
    } else { /* between the two 16-bit types, through F32 */
        const uint16_t *s = src;
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++)
            d[i] = src_t == DTYPE_BF16 ? f32_to_f16(bf16_to_f32(s[i])) : f32_to_bf16(f16_to_f32(s[i]));
    }
}

/* Four partial sums over columns i mod 4, then the tail into the first. */
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

static float scalar_dot_row(dtype_t dt, const void *row, const float *x, int n)
{
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    if (dt == DTYPE_F32) {
        const float *w = row;
#define LOAD_F32(i) w[i]
        SCALAR_DOT(LOAD_F32);
#undef LOAD_F32
    } else if (dt == DTYPE_BF16) {
        const uint16_t *w = row;
#define LOAD_BF16(i) bf16_to_f32(w[i])
        SCALAR_DOT(LOAD_BF16);
#undef LOAD_BF16
    } else {
        const uint16_t *w = row;
#define LOAD_F16(i) f16_to_f32(w[i])
        SCALAR_DOT(LOAD_F16);
#undef LOAD_F16
    }
    return (a0 + a1) + (a2 + a3);
}

static void scalar_rows(const mat_t *m, int r0, int r1, const float *x, float *out)
{
    size_t row_bytes = (size_t)m->cols * dtype_size(m->dtype);
    const char *base = m->data;
    for (int r = r0; r < r1; r++)
        out[r] = scalar_dot_row(m->dtype, base + (size_t)r * row_bytes, x, m->cols);
}

/* Zero-padded tail: n (< width) elements of x and of each row as F32. */
static inline void tail_load(dtype_t dt, const void *row, int i, int n, float *dst)
{
    convert_scalar(dt, (const char *)row + (size_t)i * dtype_size(dt), dst, n);
}

/* ---- AVX-512 ---- */

#if defined(KERNELS_X86)

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

/* out[0..nr) = nr consecutive rows (row_bytes apart) . x; nr is 1 or 4. */
INLINE_AVX512 void avx512_dot_block(dtype_t dt, const char *w, size_t row_bytes, int cols,
                                    const float *x, float *out, const int nr)
{
    __m512 acc0[4], acc1[4];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        acc0[r] = _mm512_setzero_ps();
        acc1[r] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + 32 <= cols; i += 32) {
        __m512 x0 = _mm512_loadu_ps(x + i);
        __m512 x1 = _mm512_loadu_ps(x + i + 16);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *row = w + (size_t)r * row_bytes;
            acc0[r] = _mm512_fmadd_ps(avx512_load(dt, row, i), x0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(avx512_load(dt, row, i + 16), x1, acc1[r]);
        }
    }
    if (i + 16 <= cols) {
        __m512 x0 = _mm512_loadu_ps(x + i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++)
            acc0[r] = _mm512_fmadd_ps(avx512_load(dt, w + (size_t)r * row_bytes, i), x0, acc0[r]);
        i += 16;
    }
    if (i < cols) {
        float xt[16] = { 0 };
        memcpy(xt, x + i, (size_t)(cols - i) * sizeof(float));
        __m512 x0 = _mm512_loadu_ps(xt);
        for (int r = 0; r < nr; r++) {
            float wt[16] = { 0 };
            tail_load(dt, w + (size_t)r * row_bytes, i, cols - i, wt);
            acc1[r] = _mm512_fmadd_ps(_mm512_loadu_ps(wt), x0, acc1[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
}

INLINE_AVX512 void avx512_rows(dtype_t dt, const mat_t *m, int r0, int r1, const float *x, float *out)
{
    size_t row_bytes = (size_t)m->cols * dtype_size(dt);
    const char *base = m->data;
    int r = r0;
    for (; r + 4 <= r1; r += 4)
        avx512_dot_block(dt, base + (size_t)r * row_bytes, row_bytes, m->cols, x, out + r, 4);
    for (; r < r1; r++)
        avx512_dot_block(dt, base + (size_t)r * row_bytes, row_bytes, m->cols, x, out + r, 1);
}

static ATTR_AVX512 void avx512_rows_f32(const mat_t *m, int r0, int r1, const float *x, float *out)
{
    avx512_rows(DTYPE_F32, m, r0, r1, x, out);
}
static ATTR_AVX512 void avx512_rows_bf16(const mat_t *m, int r0, int r1, const float *x, float *out)
{
    avx512_rows(DTYPE_BF16, m, r0, r1, x, out);
}
static ATTR_AVX512 void avx512_rows_f16(const mat_t *m, int r0, int r1, const float *x, float *out)
{
    avx512_rows(DTYPE_F16, m, r0, r1, x, out);
}

static ATTR_AVX512 void avx512_convert(dtype_t dt, const void *src, float *dst, int n)
{
    int i = 0;
    if (dt == DTYPE_BF16) {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, avx512_load(DTYPE_BF16, src, i));
    } else if (dt == DTYPE_F16) {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, avx512_load(DTYPE_F16, src, i));
    }
    convert_scalar(dt, (const char *)src + (size_t)i * dtype_size(dt), dst + i, n - i);
}

static ATTR_AVX512 float avx512_dot_f32(const float *a, const float *b, int n)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    if (i + 16 <= n) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        i += 16;
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), acc1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

static ATTR_AVX512 void avx512_axpy_f32(float *y, float a, const float *x, int n)
{
    __m512 av = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 yv = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, y + i));
        _mm512_mask_storeu_ps(y + i, k, yv);
    }
}

/* ---- AVX2 + FMA (+ F16C) ---- */

INLINE_AVX2 __m256 avx2_load(dtype_t dt, const void *row, int i)
{
    if (dt == DTYPE_BF16) {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    if (dt == DTYPE_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    return _mm256_loadu_ps((const float *)row + i);
}

INLINE_AVX2 float avx2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE_AVX2 void avx2_dot_block(dtype_t dt, const char *w, size_t row_bytes, int cols,
                                const float *x, float *out, const int nr)
{
    __m256 acc0[4], acc1[4];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        acc0[r] = _mm256_setzero_ps();
        acc1[r] = _mm256_setzero_ps();
    }
    int i = 0;
    for (; i + 16 <= cols; i += 16) {
        __m256 x0 = _mm256_loadu_ps(x + i);
        __m256 x1 = _mm256_loadu_ps(x + i + 8);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *row = w + (size_t)r * row_bytes;
            acc0[r] = _mm256_fmadd_ps(avx2_load(dt, row, i), x0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(avx2_load(dt, row, i + 8), x1, acc1[r]);
        }
    }
    if (i + 8 <= cols) {
        __m256 x0 = _mm256_loadu_ps(x + i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++)
            acc0[r] = _mm256_fmadd_ps(avx2_load(dt, w + (size_t)r * row_bytes, i), x0, acc0[r]);
        i += 8;
    }
    if (i < cols) {
        float xt[8] = { 0 };
        memcpy(xt, x + i, (size_t)(cols - i) * sizeof(float));
        __m256 x0 = _mm256_loadu_ps(xt);
        for (int r = 0; r < nr; r++) {
            float wt[8] = { 0 };
            tail_load(dt, w + (size_t)r * row_bytes, i, cols - i, wt);
            acc1[r] = _mm256_fmadd_ps(_mm256_loadu_ps(wt), x0, acc1[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        out[r] = avx2_hsum(_mm256_add_ps(acc0[r], acc1[r]));
}

INLINE_AVX2 void avx2_rows(dtype_t dt, const mat_t *m, int r0, int r1, const float *x, float *out)
{
    size_t row_bytes = (size_t)m->cols * dtype_size(dt);
    const char *base = m->data;
    int r = r0;
    for (; r + 4 <= r1; r += 4)
        avx2_dot_block(dt, base + (size_t)r * row_bytes, row_bytes, m->cols, x, out + r, 4);
    for (; r < r1; r++)
        avx2_dot_block(dt, base + (size_t)r * row_bytes, row_bytes, m->cols, x, out + r, 1);
}

static ATTR_AVX2 void avx2_rows_f32(const mat_t *m, int r0, int r1, const float *x, float *out)
{
    avx2_rows(DTYPE_F32, m, r0, r1, x, out);
}
static ATTR_AVX2 void avx2_rows_bf16(const mat_t *m, int r0, int r1, const float *x, float *out)
{
    avx2_rows(DTYPE_BF16, m, r0, r1, x, out);
}
static ATTR_AVX2 void avx2_rows_f16(const mat_t *m, int r0, int r1, const float *x, float *out)
{
    avx2_rows(DTYPE_F16, m, r0, r1, x, out);
}

static ATTR_AVX2 void avx2_convert(dtype_t dt, const void *src, float *dst, int n)
{
    int i = 0;
    if (dt == DTYPE_BF16) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, avx2_load(DTYPE_BF16, src, i));
    } else if (dt == DTYPE_F16 && simd_has_f16c) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, avx2_load(DTYPE_F16, src, i));
    }
    convert_scalar(dt, (const char *)src + (size_t)i * dtype_size(dt), dst + i, n - i);
}

static ATTR_AVX2 float avx2_dot_f32(const float *a, const float *b, int n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    if (i + 8 <= n) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        i += 8;
    }
    float s = avx2_hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static ATTR_AVX2 void avx2_axpy_f32(float *y, float a, const float *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

#endif /* KERNELS_X86 */

/* ---- NEON ---- */

#if defined(KERNELS_NEON)

static inline float32x4_t neon_load(dtype_t dt, const void *row, int i)
{
    if (dt == DTYPE_BF16)
        return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)row + i), 16));
    if (dt == DTYPE_F16)
        return vcvt_f32_f16(vld1_f16((const float16_t *)row + i));
    return vld1q_f32((const float *)row + i);
}

static inline __attribute__((always_inline)) void neon_dot_block(dtype_t dt, const char *w, size_t row_bytes,
                                                                 int cols, const float *x, float *out,
                                                                 const int nr)
{
    float32x4_t acc0[4], acc1[4];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        acc0[r] = vdupq_n_f32(0.0f);
        acc1[r] = vdupq_n_f32(0.0f);
    }
    int i = 0;
    for (; i + 8 <= cols; i += 8) {
        float32x4_t x0 = vld1q_f32(x + i);
        float32x4_t x1 = vld1q_f32(x + i + 4);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const char *row = w + (size_t)r * row_bytes;
            acc0[r] = vfmaq_f32(acc0[r], neon_load(dt, row, i), x0);
            acc1[r] = vfmaq_f32(acc1[r], neon_load(dt, row, i + 4), x1);
        }
    }
    if (i + 4 <= cols) {
        float32x4_t x0 = vld1q_f32(x + i);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++)
            acc0[r] = vfmaq_f32(acc0[r], neon_load(dt, w + (size_t)r * row_bytes, i), x0);
        i += 4;
    }
    if (i < cols) {
        float xt[4] = { 0 };
        memcpy(xt, x + i, (size_t)(cols - i) * sizeof(float));
        float32x4_t x0 = vld1q_f32(xt);
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

static inline __attribute__((always_inline)) void neon_rows(dtype_t dt, const mat_t *m, int r0, int r1,
                                                            const float *x, float *out)
{
    size_t row_bytes = (size_t)m->cols * dtype_size(dt);
    const char *base = m->data;
    int r = r0;
    for (; r + 4 <= r1; r += 4)
        neon_dot_block(dt, base + (size_t)r * row_bytes, row_bytes, m->cols, x, out + r, 4);
    for (; r < r1; r++)
        neon_dot_block(dt, base + (size_t)r * row_bytes, row_bytes, m->cols, x, out + r, 1);
}

static void neon_rows_f32(const mat_t *m, int r0, int r1, const float *x, float *out)
{
    neon_rows(DTYPE_F32, m, r0, r1, x, out);
}
static void neon_rows_bf16(const mat_t *m, int r0, int r1, const float *x, float *out)
{
    neon_rows(DTYPE_BF16, m, r0, r1, x, out);
}
static void neon_rows_f16(const mat_t *m, int r0, int r1, const float *x, float *out)
{
    neon_rows(DTYPE_F16, m, r0, r1, x, out);
}

static void neon_convert(dtype_t dt, const void *src, float *dst, int n)
{
    int i = 0;
    if (dt != DTYPE_F32)
        for (; i + 4 <= n; i += 4)
            vst1q_f32(dst + i, neon_load(dt, src, i));
    convert_scalar(dt, (const char *)src + (size_t)i * dtype_size(dt), dst + i, n - i);
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

#endif /* KERNELS_NEON */

/* ---- dispatch ---- */

typedef void (*rows_fn)(const mat_t *m, int r0, int r1, const float *x, float *out);

/* The row kernel for a dtype at the current SIMD level. */
static rows_fn rows_for(dtype_t dt)
{
    (void)dt; /* only the SIMD levels look at it */
    switch (simd_get()) {
#if defined(KERNELS_X86)
    case SIMD_AVX512:
        return dt == DTYPE_F32 ? avx512_rows_f32 : dt == DTYPE_BF16 ? avx512_rows_bf16 : avx512_rows_f16;
    case SIMD_AVX2:
        if (dt == DTYPE_F32)
            return avx2_rows_f32;
        if (dt == DTYPE_BF16)
            return avx2_rows_bf16;
        return simd_has_f16c ? avx2_rows_f16 : scalar_rows;
#endif
#if defined(KERNELS_NEON)
    case SIMD_NEON:
        return dt == DTYPE_F32 ? neon_rows_f32 : dt == DTYPE_BF16 ? neon_rows_bf16 : neon_rows_f16;
#endif
    default:
        return scalar_rows;
    }
}

static void convert_row(dtype_t dt, const void *src, float *dst, int n)
{
    if (dt == DTYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    switch (simd_get()) {
#if defined(KERNELS_X86)
    case SIMD_AVX512: avx512_convert(dt, src, dst, n); return;
    case SIMD_AVX2: avx2_convert(dt, src, dst, n); return;
#endif
#if defined(KERNELS_NEON)
    case SIMD_NEON: neon_convert(dt, src, dst, n); return;
#endif
    default: convert_scalar(dt, src, dst, n); return;
    }
}

/* ---- matvec ---- */

typedef struct {
    const matvec_job *jobs;
    int n_jobs;
    int64_t total_rows;
} matvec_task;

/* Start of thread ith's share of total rows, rounded down to 16 rows so
 * that two threads rarely write the same cache line of out. */
static int64_t split_rows(int64_t total, int ith, int nth)
{
    if (ith >= nth)
        return total;
    return (total * ith / nth) & ~(int64_t)15;
}

static void matvec_task_run(void *p, int ith, int nth)
{
    const matvec_task *t = p;
    int64_t lo = split_rows(t->total_rows, ith, nth);
    int64_t hi = split_rows(t->total_rows, ith + 1, nth);
    int64_t base = 0;
    for (int j = 0; j < t->n_jobs && base < hi; j++) {
        const matvec_job *job = &t->jobs[j];
        int64_t rows = job->w->rows;
        int64_t a = lo > base ? lo : base;
        int64_t b = hi < base + rows ? hi : base + rows;
        if (a < b) {
            int r0 = (int)(a - base), r1 = (int)(b - base);
            rows_for(job->w->dtype)(job->w, r0, r1, job->x, job->out);
            if (job->bias)
                for (int r = r0; r < r1; r++)
                    job->out[r] += job->bias[r];
        }
        base += rows;
    }
}

/* Below this many weight elements a dispatch to the pool costs more than
 * the arithmetic (stories260K's 64x64 matrices ran 3x slower on 2 threads
 * than on 1), so the caller does the work alone. Each row is still reduced
 * by one thread in the same order: the results do not change. */
#define MATVEC_PARALLEL_MIN (64 * 1024)

void kernels_matvec_batch(const matvec_job *jobs, int n_jobs)
{
    matvec_task t = { jobs, n_jobs, 0 };
    size_t elements = 0;
    for (int j = 0; j < n_jobs; j++) {
        t.total_rows += jobs[j].w->rows;
        elements += (size_t)jobs[j].w->rows * (size_t)jobs[j].w->cols;
    }
    if (t.total_rows == 0)
        return;
    if (elements < MATVEC_PARALLEL_MIN)
        matvec_task_run(&t, 0, 1);
    else
        kernels_parallel(matvec_task_run, &t);
}

void kernels_matvec(float *out, const mat_t *w, const float *x)
{
    matvec_job job = { out, w, x, NULL };
    kernels_matvec_batch(&job, 1);
}

/* ---- matmul ---- */

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
    int lo = (int)split_rows(t->pr, ith, nth), hi = (int)split_rows(t->pr, ith + 1, nth);
    size_t row_bytes = (size_t)t->w->cols * dtype_size(t->w->dtype);
    const char *base = (const char *)t->w->data + (size_t)t->p0 * row_bytes;
    for (int r = lo; r < hi; r++)
        convert_row(t->w->dtype, base + (size_t)r * row_bytes, t->dst + (size_t)r * (size_t)t->w->cols,
                    t->w->cols);
}

void kernels_matmul(float *y, const mat_t *w, const float *x, int n, const float *bias)
{
    int rows = w->rows, cols = w->cols;
    if (n <= 0 || rows <= 0)
        return;
    if (w->dtype == DTYPE_F32) {
        /* Y (n, rows) = X (n, cols) @ W^T (cols, rows) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, cols, 1.0f, x, cols,
                    (const float *)w->data, cols, 0.0f, y, rows);
    } else {
        int panel = panel_rows_for(cols);
        if (panel > rows)
            panel = rows;
        size_t need = (size_t)panel * (size_t)cols;
        if (need > matmul_scratch_cap) {
            float *s = realloc(matmul_scratch, need * sizeof(float));
            CHECK(s != NULL);
            matmul_scratch = s;
            matmul_scratch_cap = need;
        }
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

void kernels_get_row(float *out, const mat_t *w, int r)
{
    size_t row_bytes = (size_t)w->cols * dtype_size(w->dtype);
    convert_row(w->dtype, (const char *)w->data + (size_t)r * row_bytes, out, w->cols);
}

/* ---- element-wise ---- */

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
    switch (simd_get()) {
#if defined(KERNELS_X86)
    case SIMD_AVX512: return avx512_dot_f32(a, b, n);
    case SIMD_AVX2: return avx2_dot_f32(a, b, n);
#endif
#if defined(KERNELS_NEON)
    case SIMD_NEON: return neon_dot_f32(a, b, n);
#endif
    default: return scalar_dot_row(DTYPE_F32, a, b, n);
    }
}

void kernels_axpy_f32(float *y, float a, const float *x, int n)
{
    switch (simd_get()) {
#if defined(KERNELS_X86)
    case SIMD_AVX512: avx512_axpy_f32(y, a, x, n); return;
    case SIMD_AVX2: avx2_axpy_f32(y, a, x, n); return;
#endif
#if defined(KERNELS_NEON)
    case SIMD_NEON: neon_axpy_f32(y, a, x, n); return;
#endif
    default:
        for (int i = 0; i < n; i++)
            y[i] += a * x[i];
    }
}

/* ---- OpenBLAS core type ---- */

#if defined(KERNELS_X86)
/* Rough ISA level of an OpenBLAS core name: 3 AVX-512, 2 AVX2, 1 AVX,
 * 0 anything older or unknown. */
static int blas_core_rank(const char *name)
{
    static const char *const avx512[] = { "SkylakeX", "Cooperlake", "SapphireRapids" };
    static const char *const avx2[] = { "Haswell", "Zen", "Excavator", "Steamroller" };
    static const char *const avx[] = { "Sandybridge", "Bulldozer", "Piledriver" };
    if (!name)
        return 0;
    for (size_t i = 0; i < sizeof(avx512) / sizeof(avx512[0]); i++)
        if (strcasecmp(name, avx512[i]) == 0)
            return 3;
    for (size_t i = 0; i < sizeof(avx2) / sizeof(avx2[0]); i++)
        if (strcasecmp(name, avx2[i]) == 0)
            return 2;
    for (size_t i = 0; i < sizeof(avx) / sizeof(avx[0]); i++)
        if (strcasecmp(name, avx[i]) == 0)
            return 1;
    return 0;
}
#endif

/* Only x86 builds pick among OpenBLAS cores of different ISA levels here;
 * elsewhere the library's own choice stands and this does nothing. */
void kernels_fix_openblas_coretype(char **argv)
{
#if defined(KERNELS_X86)
    if (!argv || !argv[0] || getenv("OPENBLAS_CORETYPE") || getenv("MDI_BLAS_REEXEC"))
        return;
    __builtin_cpu_init();
    const char *want;
    int want_rank;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
        want = "SkylakeX";
        want_rank = 3;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        want = "Haswell";
        want_rank = 2;
    } else if (__builtin_cpu_supports("avx")) {
        want = "Sandybridge";
        want_rank = 1;
    } else {
        return;
    }
    /* The library already chose kernels at least as good: nothing to do. */
    const char *have = openblas_get_corename();
    if (blas_core_rank(have) >= want_rank)
        return;
    log_info("OpenBLAS chose core %s on a CPU that runs %s kernels; re-executing with "
             "OPENBLAS_CORETYPE=%s", have ? have : "?", want, want);
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("MDI_BLAS_REEXEC", "1", 1);
    fflush(stdout);
    fflush(stderr);
    execv("/proc/self/exe", argv);
    log_warn("cannot re-execute /proc/self/exe: %s; sgemm stays on core %s", strerror(errno),
             have ? have : "?");
#else
    (void)argv;
#endif
}

const char *kernels_blas_core(void)
{
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

/* ---- memory bandwidth ---- */

typedef struct {
    const char *buf;
    size_t bytes;
    int fill;
    double sums[64 * 8]; /* one cache line apart per thread */
} bandwidth_task;

#if defined(KERNELS_X86)
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

static ATTR_AVX2 double avx2_sum_bytes(const char *p, size_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *f = (const float *)p;
    size_t nf = n / sizeof(float);
    for (size_t i = 0; i + 32 <= nf; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(f + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(f + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(f + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(f + i + 24));
    }
    return avx2_hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}
#endif

static double scalar_sum_bytes(const char *p, size_t n)
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

static void bandwidth_task_run(void *p, int ith, int nth)
{
    bandwidth_task *t = p;
    /* Whole 4 KiB pages per thread, so that first touch spreads pages the
     * way the reads will use them. */
    size_t pages = t->bytes / 4096;
    size_t lo = pages * (size_t)ith / (size_t)nth * 4096, hi = pages * (size_t)(ith + 1) / (size_t)nth * 4096;
    if (t->fill) {
        memset((char *)t->buf + lo, ith + 1, hi - lo);
        return;
    }
    double s;
    switch (simd_get()) {
#if defined(KERNELS_X86)
    case SIMD_AVX512: s = avx512_sum_bytes(t->buf + lo, hi - lo); break;
    case SIMD_AVX2: s = avx2_sum_bytes(t->buf + lo, hi - lo); break;
#endif
    default: s = scalar_sum_bytes(t->buf + lo, hi - lo); break;
    }
    t->sums[(ith % 64) * 8] = s;
}

double kernels_measure_bandwidth(size_t bytes)
{
    if (bytes == 0)
        bytes = (size_t)1 << 30;
    bytes = (bytes + 4095) & ~(size_t)4095;
    char *buf = NULL;
    while (bytes >= ((size_t)1 << 24) && !(buf = aligned_alloc(4096, bytes)))
        bytes /= 2;
    if (!buf)
        return 0.0;
    bandwidth_task *t = calloc(1, sizeof(*t));
    if (!t) {
        free(buf);
        return 0.0;
    }
    t->buf = buf;
    t->bytes = bytes;
    t->fill = 1;
    kernels_parallel(bandwidth_task_run, t);
    t->fill = 0;
    kernels_parallel(bandwidth_task_run, t); /* warm-up: TLB, frequency */
    double best = 1e30;
    volatile double sink = 0.0;
    for (int run = 0; run < 5; run++) {
        uint64_t t0 = now_ns();
        kernels_parallel(bandwidth_task_run, t);
        double dt = (double)(now_ns() - t0) * 1e-9;
        if (dt < best)
            best = dt;
        sink += t->sums[0];
    }
    (void)sink;
    free(t);
    free(buf);
    return (double)bytes / best;
}
