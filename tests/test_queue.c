/* test_queue: the bounded blocking queue: order, bounds, timeouts, close. */
#include <pthread.h>

#include "queue.h"
#include "test.h"
#include "util.h"

#define N_ITEMS 20000

static void *producer(void *arg)
{
    queue *q = arg;
    for (long i = 1; i <= N_ITEMS; i++)
        if (queue_push(q, (void *)i, -1) != 0) break;
    return NULL;
}

static void *late_close(void *arg)
{
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    queue_close(arg);
    return NULL;
}

int main(void)
{
    queue q;
    char err[MDI_ERR_LEN];
    queue_init(&q, 4, err);
    void *item = NULL;
    int ok = 1;
    for (long i = 1; i <= 4; i++) ok &= queue_push(&q, (void *)i, 0) == 0;
    test_result(ok && queue_len(&q) == 4, "queue fills to its capacity", "len %d", queue_len(&q));
    double t = time_now();
    int rc = queue_push(&q, (void *)5, 0.1);
    t = time_now() - t;
    test_result(rc == MDI_ETIMEOUT && t >= 0.09 && t < 1, "queue push to a full queue times out", "rc %d after %.3f s", rc, t);
    for (long i = 1; i <= 4; i++) ok &= queue_pop(&q, &item, 0) == 0 && item == (void *)i;
    test_result(ok, "queue is FIFO", "order broken");
    t = time_now();
    rc = queue_pop(&q, &item, 0.1);
    t = time_now() - t;
    test_result(rc == MDI_ETIMEOUT && t >= 0.09 && t < 1, "queue pop from empty times out", "rc %d after %.3f s", rc, t);

    pthread_t th;
    pthread_create(&th, NULL, late_close, &q);
    t = time_now();
    rc = queue_pop(&q, &item, -1);
    t = time_now() - t;
    pthread_join(th, NULL);
    test_result(rc == MDI_ESTATE && t < 1, "queue close wakes a blocked pop", "rc %d after %.3f s", rc, t);
    test_result(queue_push(&q, (void *)1, 0) == MDI_ESTATE, "queue push after close refused", "accepted");
    queue_free(&q);

    queue_init(&q, 2, err);
    queue_push(&q, (void *)7, 0);
    queue_close(&q);
    rc = queue_pop(&q, &item, 0);
    int rc2 = queue_pop(&q, &item, 0);
    test_result(rc == 0 && item == (void *)7 && rc2 == MDI_ESTATE, "queue drains after close", "rc %d %d", rc, rc2);
    queue_free(&q);

    queue_init(&q, 8, err);
    pthread_create(&th, NULL, producer, &q);
    long expect = 1;
    ok = 1;
    for (long i = 1; i <= N_ITEMS; i++) {
        if (queue_pop(&q, &item, 5) != 0 || (long)item != expect++) { ok = 0; break; }
    }
    pthread_join(th, NULL);
    test_result(ok, "queue producer/consumer keeps order under contention", "item %ld out of order", expect - 1);
    queue_free(&q);
    return test_failures;
}
