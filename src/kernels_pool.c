/*
 * kernels_pool: the process-wide thread pool the kernels run on.
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
 */
#include "kernels_impl.h"
#include "util.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(KERNELS_X86)
#include <immintrin.h>
#endif

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

int kernels_init(int n_threads)
{
    (void)kernels_isa_get(); /* detect the CPU before the workers start */
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
    kernels_matmul_release();
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

