/*
 * queue: a bounded blocking FIFO of pointers between a node's threads
 * (receiver -> compute -> sender). Pushing to a full queue and popping
 * from an empty one wait, up to a timeout; closing the queue wakes every
 * waiter so that a node can always be torn down.
 *
 * The queue stores pointers it does not own: whoever pops an item owns it.
 * queue_free does not free the items left inside (drain with queue_pop and
 * a zero timeout first).
 */
#ifndef MDI_QUEUE_H
#define MDI_QUEUE_H

#include <pthread.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    void **items;
    int cap, head, count;
    int closed;
} queue;

int queue_init(queue *q, int cap, char *err);
void queue_free(queue *q);

/* timeout_s < 0 waits without limit (until an item, room, or close);
 * 0 does not wait. Return 0, MDI_ETIMEOUT, or MDI_ESTATE when the queue is
 * closed (pop: closed and empty, so items pushed before close still come
 * out). */
int queue_push(queue *q, void *item, double timeout_s);
int queue_pop(queue *q, void **item, double timeout_s);

/* Marks the queue closed and wakes every waiter. Idempotent. */
void queue_close(queue *q);
int queue_len(queue *q);

#endif
