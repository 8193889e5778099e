/*
 * ring: one node's data-plane runtime on the TCP ring.
 *
 *   previous node --TCP--> [receiving thread] -> input queue
 *        -> [compute thread] -> output queue -> [sending thread] --TCP--> next node
 *
 * The node listens on its inference.port_in (a socket the caller opened,
 * so that a busy port is reported before anything starts) and accepts the
 * previous node's connection; it connects to the next node's port_in. Each
 * connection opens with a HELLO (protocol version, sender's node index;
 * with a secret, the challenge-response of seal.h, after which frames are
 * encrypted and authenticated); connections that fail it are logged and
 * dropped, and the node keeps waiting for the right peer. Connections wait
 * in a lobby (lobby.h), which takes each through the handshake one step at
 * a time as its HELLOs arrive whole: one that says nothing, stops halfway
 * or says garbage delays nobody, and one without the secret is refused at
 * its proof. Where several connections greeted as the previous node (kept
 * between runs, or, without a secret, posing as it), the first to send a
 * frame is the run's; with none kept, the first greeted is. The run's
 * connection is never replaced: nobody is accepted after it.
 *
 * Both connections are made for the run's epoch (ring_opts.epoch, proto.h):
 * the sending thread's HELLO carries it (bound into the handshake with a
 * secret), and the previous node's connection must carry it too: one made
 * for another epoch is refused at its HELLO with ERROR naming both epochs
 * (the connecting node's run fails with those words), so a node left over
 * from before a failover never joins the ring that replaced it.
 *
 * Frames live in a pool allocated at start (payload room for max_batch
 * rows of dim floats): the receiver takes a free frame, fills it, queues
 * it; the compute thread transforms it in place; the sender writes it and
 * gives it back. Queues are bounded; nothing allocates per frame.
 *
 * A secondary passes its model (ring_opts.m) and the ring runs the compute
 * thread itself: it keeps one KV cache per sample slot (limits.n_samples),
 * all allocated at ring_start; a RELEASE resets its slot's cache (position
 * cleared, memory kept) so that the next sample in that slot starts at
 * position 0 (the starter reuses a slot only once its RELEASE came back
 * round the ring, so no frame of the old sample can follow); the node whose next hop is
 * the starter sends only the last row of each frame. The compute thread
 * takes every decode frame (one token) waiting in the input queue, of
 * distinct samples and up to a batch limit (n_samples, at most
 * FORWARD_MAX_SAMPLES), and runs them through the layers as one batch
 * (forward_layers_batch: each weight matrix read once, each sample's rows
 * as when it runs alone); a prefill chunk runs alone. Frames leave in the
 * order they came. The starter passes no
 * model and is its own compute thread, through ring_recv / ring_send.
 *
 * A sending thread with nothing to send for RING_KEEPALIVE_S sends a
 * KEEPALIVE frame, which the receiving side drops: a link is never silent
 * for long while both ends live, even while the starter waits for a chat's
 * next line, so a secondary takes a previous node silent for
 * idle_timeout_s for hung (stopped, or its host gone without a reset).
 * With a secret a KEEPALIVE is sealed like any frame: nobody else can
 * keep a dead link looking alive.
 *
 * Any failure (peer gone, garbage, timeout) is recorded once
 * (ring_error), becomes an ERROR frame that travels on towards the
 * starter when it can, and ends the node's part of the run; ring_stop
 * always returns promptly and leaves nothing running.
 */
#ifndef MDI_RING_H
#define MDI_RING_H

#include <pthread.h>
#include <stdint.h>
#include "forward.h"
#include "proto.h"
#include "queue.h"
#include "seal.h"
#include "util.h"

#define RING_KEEPALIVE_S 1.0
#define RING_EARLY_MAX 4

typedef struct {
    int node_index;            /* 0 starter, 1 + i secondary i */
    uint32_t epoch;            /* the run epoch: stamped on every frame sent
                                  and on the HELLO of the connection to the
                                  next node, required of every frame received
                                  and of the previous node's connection (its
                                  HELLO; an accepted_fd greeted for another
                                  epoch is closed) */
    char name[64];             /* "secondary 0", for messages */
    int listen_fd;             /* borrowed; listening on port_in */
    struct lobby *lobby;       /* borrowed; the waiting room of listen_fd that
                                  outlives runs (secondary); NULL: one of the
                                  ring's own for this run. Its expect_epoch is
                                  the run's while the ring waits for the
                                  previous node, then put back */
    int accepted_fd[RING_EARLY_MAX]; /* > 0: connections already greeted as the
                                  previous node (taken over); the first to
                                  send a frame is the run's, the others are
                                  closed; none: accept one */
    seal_channel accepted_seal[RING_EARLY_MAX]; /* the channel of each one's
                                  handshake (taken over too) */
    int prev_index;            /* node index expected in the incoming HELLO */
    char prev_name[160];       /* "starter (10.0.0.2)", for messages */
    int next_index;            /* node index the next node must prove */
    char next_host[128];
    int next_port;
    char next_name[160];
    const char *secret;        /* borrowed; NULL or "": an open ring */
    proto_limits limits;       /* dim, max_batch, n_samples */
    int queue_cap;             /* each queue; 0: 64 */
    double timeout_s;          /* a frame's body, connect, handshake */
    double accept_timeout_s;   /* waiting for the previous node */
    double idle_timeout_s;     /* the previous node silent this long (no frame,
                                  not even a keepalive) is taken for hung and
                                  ends the run; 0: no limit */
    /* secondary compute (m == NULL: the caller computes) */
    const model *m;            /* borrowed */
    int max_seq;
    dtype_t wire_dtype;
    dtype_t kv_dtype;          /* KV caches: DTYPE_F32 or DTYPE_F16 */
    int is_last;
} ring_opts;

typedef struct {
    uint64_t bytes_sent, bytes_received;
    uint64_t frames_sent, frames_received;
    double compute_s;          /* compute thread busy */
    double wait_s;             /* compute thread waiting for input */
    uint64_t tokens;           /* rows run through the layers */
    uint64_t batches;          /* rounds that ran several decode frames together */
    uint64_t batched_tokens;   /* the rows of those rounds */
} ring_stats;

typedef struct {
    ring_opts o;
    int in_fd, out_fd;
    auth_keys keys;            /* of o.secret */
    seal_channel rx_seal, tx_seal;
    queue in_q, out_q, free_q;
    proto_frame **frames;
    int n_frames;
    pthread_t rx, tx, compute;
    int has_rx, has_tx, has_compute;
    volatile int cancel;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int rx_ready, tx_ready;    /* handshakes done */
    int finished;              /* compute thread ended (STOP or error) */
    int tx_done;               /* sending thread ended (STOP written or error) */
    int failed;
    char error[MDI_ERR_LEN];
    char refused[256];         /* the ring port's latest refusal while
                                  waiting for the previous node, or "" */
    ring_stats stats;
    /* compute state (secondary) */
    forward_state fs;
    kv_cache *kv;              /* n_samples entries */
    float *x;                  /* (max(max_batch, batch_max), dim) */
    int batch_max;             /* decode frames run together at most */
    proto_frame **batch;       /* (batch_max,) */
    forward_row *rows;         /* (batch_max,) */
    size_t kv_bytes, kv_bytes_peak;
} ring;

/* Allocates the pool and starts the threads. Returns 0 or an error (no
 * threads left running). */
int ring_start(ring *r, const ring_opts *o, char *err);
/* Waits until both connections are open and greeted, the ring failed, or
 * timeout_s passed. 0, MDI_ETIMEOUT (err: which connection is missing, and
 * the ring port's latest refusal), or the ring's error. */
int ring_wait_connected(ring *r, double timeout_s, char *err);

/* Starter side. A free frame from the pool (NULL when the ring stopped or
 * none came within timeout_s); to send it (ownership passes to the ring);
 * to receive the next frame (0, MDI_ETIMEOUT, or the ring's error); and to
 * give a received frame back. */
proto_frame *ring_frame_get(ring *r, double timeout_s);
int ring_send(ring *r, proto_frame *f, char *err);
int ring_recv(ring *r, proto_frame **f, double timeout_s, char *err);
void ring_frame_put(ring *r, proto_frame *f);

/* 1 once the run's end has passed through this node (secondary): the
 * compute thread ended (a STOP or a failure) and so did the sending thread,
 * the STOP written to the next node (or a failure): a node that stops its
 * ring then never drops the STOP on its way round. */
int ring_finished(ring *r);
/* 1 and the first error's text when the ring failed. */
int ring_error(ring *r, char *err);
void ring_get_stats(ring *r, ring_stats *out);
/* Memory the run holds beyond the weights: KV caches and the frame pool,
 * now or at its peak. */
size_t ring_memory_bytes(ring *r, int peak);

/* The KV caches alone, now or at their peak. */
size_t ring_kv_bytes(ring *r, int peak);

/* Cancels, wakes and joins every thread, closes both connections, frees
 * the pool and the compute state. Safe on a ring that failed to start. */
void ring_stop(ring *r);

#endif
