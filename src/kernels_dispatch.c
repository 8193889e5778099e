/*
 * kernels_dispatch: builds the table of kernels for the CPU once (the
 * portable one, then each SIMD level's replacements), and runs matrix-vector
 * products with it: activations quantized once per batch, rows split across
 * the thread pool.
 */
#include "kernels_impl.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static kernels_isa isa_portable, isa_best;
static int isa_forced_scalar;
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;
static atomic_int isa_ready;

static void isa_build(void)
{
    const cpu_features *f = kernels_cpu_features();
    kernels_portable_register(&isa_portable);
    isa_best = isa_portable;
#if defined(KERNELS_X86)
    if (f->level >= SIMD_AVX2 && f->level != SIMD_NEON)
        kernels_avx2_register(&isa_best, f);
    if (f->level == SIMD_AVX512)
        kernels_avx512_register(&isa_best, f);
#endif
#if defined(KERNELS_NEON)
    if (f->level == SIMD_NEON)
        kernels_neon_register(&isa_best, f);
#endif
    (void)f;
    atomic_store_explicit(&isa_ready, 1, memory_order_release);
}

/* Called on every small kernel (attention runs one per cached position):
 * after the first call this is one load, not a pthread_once call. */
const kernels_isa *kernels_isa_get(void)
{
    if (__builtin_expect(!atomic_load_explicit(&isa_ready, memory_order_acquire), 0))
        pthread_once(&isa_once, isa_build);
    return isa_forced_scalar ? &isa_portable : &isa_best;
}

const char *kernels_simd_name(void)
{
    return kernels_isa_get()->name;
}

void kernels_force_scalar(int on)
{
    (void)kernels_isa_get();
    isa_forced_scalar = on ? 1 : 0;
}

/* ---- matvec ---- */

/* The largest activation row of any vec_dot_type is the F32 one. */
size_t kernels_scratch_bytes(int n_jobs, int n_x, int max_cols)
{
    size_t worst = 0;
    for (int t = 0; t < DTYPE_COUNT; t++) {
        int bs = dtype_block_size((dtype_t)t);
        int64_t cols = ((int64_t)max_cols + bs - 1) / bs * bs;
        size_t b = dtype_row_size((dtype_t)t, cols);
        if (b > worst)
            worst = b;
    }
    return (size_t)(n_jobs > 0 ? n_jobs : 1) * (size_t)(n_x > 0 ? n_x : 1) * worst;
}

typedef struct {
    const matvec_job *jobs;
    const void *x[KERNELS_MAX_JOBS];  /* each job's activations in its vec_dot_type */
    size_t x_stride[KERNELS_MAX_JOBS];
    rows_fn rows[KERNELS_MAX_JOBS];
    int n_jobs, n_x;
    int64_t total_rows;
} matvec_task;

static void matvec_task_run(void *p, int ith, int nth)
{
    const matvec_task *t = p;
    int64_t lo = kernels_split_rows(t->total_rows, ith, nth);
    int64_t hi = kernels_split_rows(t->total_rows, ith + 1, nth);
    int64_t base = 0;
    for (int j = 0; j < t->n_jobs && base < hi; j++) {
        const matvec_job *job = &t->jobs[j];
        int64_t rows = job->w->rows;
        int64_t a = lo > base ? lo : base;
        int64_t b = hi < base + rows ? hi : base + rows;
        if (a < b) {
            int r0 = (int)(a - base), r1 = (int)(b - base);
            t->rows[j](job->w, r0, r1, t->x[j], t->x_stride[j], t->n_x, job->out, (size_t)rows);
            if (job->bias)
                for (int k = 0; k < t->n_x; k++)
                    for (int r = r0; r < r1; r++)
                        job->out[(size_t)k * rows + r] += job->bias[r];
        }
        base += rows;
    }
}

/* Below this many weight elements a dispatch to the pool costs more than
 * the arithmetic (stories260K's 64x64 matrices ran 3x slower on 2 threads
 * than on 1), so the caller does the work alone. Each row is still reduced
 * by one thread in the same order: the results do not change. */
#define MATVEC_PARALLEL_MIN (64 * 1024)

void kernels_matvec_batch(const matvec_job *jobs, int n_jobs, int n_x, kernels_scratch *scratch)
{
    CHECK(n_jobs >= 0 && n_jobs <= KERNELS_MAX_JOBS && n_x >= 1);
    const kernels_isa *isa = kernels_isa_get();
    matvec_task t;
    t.jobs = jobs;
    t.n_jobs = n_jobs;
    t.n_x = n_x;
    t.total_rows = 0;
    size_t elements = 0, used = 0;
    for (int j = 0; j < n_jobs; j++) {
        const mat_t *w = jobs[j].w;
        dtype_t vt = dtype_get(w->dtype)->vec_dot_type;
        t.rows[j] = isa->rows[w->dtype];
        t.total_rows += w->rows;
        elements += (size_t)w->rows * (size_t)w->cols * (size_t)n_x;
        if (vt == DTYPE_F32) {
            t.x[j] = jobs[j].x;
            t.x_stride[j] = (size_t)w->cols * sizeof(float);
            continue;
        }
        /* quantize this activation once for every job that reads it */
        int shared = -1;
        for (int i = 0; i < j && shared < 0; i++)
            if (jobs[i].x == jobs[j].x && jobs[i].w->cols == w->cols &&
                dtype_get(jobs[i].w->dtype)->vec_dot_type == vt)
                shared = i;
        if (shared >= 0) {
            t.x[j] = t.x[shared];
            t.x_stride[j] = t.x_stride[shared];
            continue;
        }
        size_t row = dtype_row_size(vt, w->cols);
        CHECK(scratch && scratch->data && used + row * (size_t)n_x <= scratch->bytes);
        char *dst = (char *)scratch->data + used;
        for (int k = 0; k < n_x; k++)
            isa->from_f32[vt](jobs[j].x + (size_t)k * w->cols, dst + (size_t)k * row, w->cols);
        t.x[j] = dst;
        t.x_stride[j] = row;
        used += row * (size_t)n_x;
    }
    if (t.total_rows == 0)
        return;
    if (elements < MATVEC_PARALLEL_MIN)
        matvec_task_run(&t, 0, 1);
    else
        kernels_parallel(matvec_task_run, &t);
}

void kernels_matvec(float *out, const mat_t *w, const float *x, kernels_scratch *scratch)
{
    matvec_job job = { out, w, x, NULL };
    kernels_matvec_batch(&job, 1, 1, scratch);
}

void kernels_get_row(float *out, const mat_t *w, int r)
{
    size_t row_bytes = dtype_row_size(w->dtype, w->cols);
    kernels_isa_get()->to_f32[w->dtype]((const char *)w->data + (size_t)r * row_bytes, out, w->cols);
}
