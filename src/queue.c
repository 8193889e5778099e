/*
 * queue: bounded blocking FIFO (see queue.h).
 */
#include "queue.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "util.h"

int queue_init(queue *q, int cap, char *err)
{
    CHECK(cap > 0);
    q->items = calloc((size_t)cap, sizeof(void *));
    if (!q->items) return mdi_fail(err, MDI_ENOMEM, "queue of %d items: out of memory", cap);
    q->cap = cap;
    q->head = q->count = 0;
    q->closed = 0;
    pthread_mutex_init(&q->mu, NULL);
    /* Timed waits use the monotonic clock so that a wall-clock jump
     * neither fires nor stretches a timeout. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->not_empty, &ca);
    pthread_cond_init(&q->not_full, &ca);
    pthread_condattr_destroy(&ca);
    return 0;
}

void queue_free(queue *q)
{
    if (!q->items) return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    free(q->items);
    q->items = NULL;
}

static struct timespec queue_deadline(double timeout_s)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = (long long)ts.tv_nsec + (long long)(timeout_s * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    return ts;
}

/* Waits on cv while blocked() holds; 0, MDI_ETIMEOUT. Called locked. */
static int queue_wait(queue *q, pthread_cond_t *cv, double timeout_s, const struct timespec *dl)
{
    if (timeout_s == 0) return MDI_ETIMEOUT;
    if (timeout_s < 0) {
        pthread_cond_wait(cv, &q->mu);
        return 0;
    }
    int r = pthread_cond_timedwait(cv, &q->mu, dl);
    return r == ETIMEDOUT ? MDI_ETIMEOUT : 0;
}

int queue_push(queue *q, void *item, double timeout_s)
{
    struct timespec dl = queue_deadline(timeout_s > 0 ? timeout_s : 0);
    int rc = 0;
    pthread_mutex_lock(&q->mu);
    while (!q->closed && q->count == q->cap) {
        rc = queue_wait(q, &q->not_full, timeout_s, &dl);
        if (rc) break;
    }
    if (q->closed) rc = MDI_ESTATE;
    else if (q->count == q->cap) rc = MDI_ETIMEOUT;
    else {
        q->items[(q->head + q->count) % q->cap] = item;
        q->count++;
        pthread_cond_signal(&q->not_empty);
        rc = 0;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int queue_pop(queue *q, void **item, double timeout_s)
{
    struct timespec dl = queue_deadline(timeout_s > 0 ? timeout_s : 0);
    int rc = 0;
    pthread_mutex_lock(&q->mu);
    while (!q->closed && q->count == 0) {
        rc = queue_wait(q, &q->not_empty, timeout_s, &dl);
        if (rc) break;
    }
    if (q->count > 0) {
        *item = q->items[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_cond_signal(&q->not_full);
        rc = 0;
    } else {
        rc = q->closed ? MDI_ESTATE : MDI_ETIMEOUT;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void queue_close(queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
}

int queue_len(queue *q)
{
    pthread_mutex_lock(&q->mu);
    int n = q->count;
    pthread_mutex_unlock(&q->mu);
    return n;
}
