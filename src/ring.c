/*
 * ring: a node's receiving, compute and sending threads (see ring.h).
 */
#include "ring.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <sys/socket.h>

#include "lobby.h"
#include "net.h"
#include "util.h"

#define RING_QUEUE_CAP 64
#define RING_HELLO_TIMEOUT_S 5.0

/* Records the first failure, and wakes whoever waits on the ring. The
 * input queue is closed so that the compute thread (or the starter) sees
 * the failure at its next pop, after the frames already queued. */
static void ring_fail(ring *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ring_fail(ring *r, const char *fmt, ...)
{
    char msg[MDI_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&r->mu);
    int first = !r->failed && !r->cancel;
    if (first) {
        r->failed = 1;
        snprintf(r->error, sizeof(r->error), "%s", msg);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (first) log_error("%s", msg);
    queue_close(&r->in_q);
}

/* ---- receiving thread ---- */

/* The previous node's connection (see ring.h). Connections wait in the
 * lobby, which takes them through the handshake as their HELLOs arrive
 * whole, so that silent, garbage or unauthenticated ones neither delay the
 * real peer nor end the run. Candidates are connections greeted as the
 * previous node: with none kept from before the run, the first greeted is
 * taken at once; with some, the first to send a frame (the real previous
 * node sends a DATA or a KEEPALIVE within a second) is taken and the
 * others closed. Each candidate's channel goes with it. */
static int ring_accept_prev(ring *r)
{
    double hello_to = r->o.timeout_s < RING_HELLO_TIMEOUT_S ? r->o.timeout_s : RING_HELLO_TIMEOUT_S;
    int cand[RING_EARLY_MAX], n = 0, chosen = -1;
    seal_channel cand_seal[RING_EARLY_MAX];
    char cand_peer[RING_EARLY_MAX][NET_ADDR_LEN];
    for (int i = 0; i < RING_EARLY_MAX; i++) {
        if (r->o.accepted_fd[i] <= 0) continue;
        cand[n] = r->o.accepted_fd[i];
        cand_seal[n] = r->o.accepted_seal[i];
        net_peer_name(cand[n], cand_peer[n]);
        r->o.accepted_fd[i] = 0;
        seal_channel_clear(&r->o.accepted_seal[i]);
        char why[160];
        if (proto_epoch_refused(r->o.epoch, cand_seal[n].epoch, why, sizeof(why))) {
            /* greeted before the run's epoch was known (the caller drops
             * these already; no connection of another run is ever used) */
            log_warn("%s: ring port: closed the connection from %s greeted as %s: %s", r->o.name, cand_peer[n],
                     r->o.prev_name, why);
            net_close(cand[n]);
            seal_channel_clear(&cand_seal[n]);
            continue;
        }
        n++;
    }
    int wait_for_frame = n > 0;
    lobby own, *lb = r->o.lobby;
    long long lobby_epoch = PROTO_EPOCH_ANY;
    if (!lb) {
        lobby_init(&own, r->o.listen_fd, hello_to, &r->keys, (uint32_t)r->o.node_index, r->o.prev_index,
                   r->o.epoch, r->o.name);
        lb = &own;
    } else {
        /* the caller's lobby greets any epoch between runs: this run's only
         * while it is the run's */
        lobby_epoch = lb->expect_epoch;
        lb->expect_epoch = r->o.epoch;
    }
    double deadline = time_now() + r->o.accept_timeout_s;
    /* Greeted, the previous node is bound by the idle timeout as in the run. */
    double speak_by = wait_for_frame && r->o.idle_timeout_s > 0 ? time_now() + r->o.idle_timeout_s : deadline;
    char err[MDI_ERR_LEN], peer[NET_ADDR_LEN];
    while (chosen < 0) {
        double left = deadline - time_now();
        if (n > 0 && wait_for_frame && time_now() > speak_by) {
            ring_fail(r, "%s: nothing from %s for %.1f s, not even a keepalive: taken for hung, run ended",
                      r->o.name, r->o.prev_name, r->o.idle_timeout_s);
            break;
        }
        if (left <= 0) {
            ring_fail(r, "%s: %s never connected within %.0f s", r->o.name, r->o.prev_name,
                      r->o.accept_timeout_s);
            break;
        }
        for (int i = 0; i < n && wait_for_frame;) {
            char b;
            ssize_t k = recv(cand[i], &b, 1, MSG_PEEK | MSG_DONTWAIT);
            if (k > 0) {
                chosen = i;
                break;
            }
            if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                log_warn("%s: ring port: the connection from %s greeted as %s closed before a frame", r->o.name,
                         cand_peer[i], r->o.prev_name);
                net_close(cand[i]);
                seal_channel_clear(&cand_seal[i]);
                memmove(&cand[i], &cand[i + 1], (size_t)(n - i - 1) * sizeof(cand[0]));
                memmove(&cand_seal[i], &cand_seal[i + 1], (size_t)(n - i - 1) * sizeof(cand_seal[0]));
                memmove(cand_peer[i], cand_peer[i + 1], (size_t)(n - i - 1) * sizeof(cand_peer[0]));
                n--;
                continue;
            }
            i++;
        }
        if (chosen >= 0) break;
        seal_channel ch;
        unsigned refusals = lb->n_rejected;
        /* in slices, so that a refusal is told (r->refused) while it waits */
        int fd = lobby_wait(lb, wait_for_frame ? 0.02 : left < 0.25 ? left : 0.25, &r->cancel, peer, &ch, err);
        if (lb->n_rejected != refusals) {
            pthread_mutex_lock(&r->mu);
            snprintf(r->refused, sizeof(r->refused), "%s", lb->last_rejected);
            pthread_mutex_unlock(&r->mu);
        }
        if (fd == MDI_ESTATE) break;
        if (fd == MDI_ETIMEOUT) continue;
        if (fd < 0) {
            ring_fail(r, "%s: accepting the connection from %s: %s", r->o.name, r->o.prev_name, err);
            break;
        }
        /* greeted by the lobby: the expected node (proved, with a secret) */
        if (n == RING_EARLY_MAX) {
            log_warn("%s: ring port: %d connections greeted as %s and none has spoken; closed the oldest, from %s",
                     r->o.name, n, r->o.prev_name, cand_peer[0]);
            net_close(cand[0]);
            seal_channel_clear(&cand_seal[0]);
            memmove(&cand[0], &cand[1], (size_t)(n - 1) * sizeof(cand[0]));
            memmove(&cand_seal[0], &cand_seal[1], (size_t)(n - 1) * sizeof(cand_seal[0]));
            memmove(cand_peer[0], cand_peer[1], (size_t)(n - 1) * sizeof(cand_peer[0]));
            n--;
        }
        cand[n] = fd;
        cand_seal[n] = ch;
        seal_channel_clear(&ch);
        snprintf(cand_peer[n], NET_ADDR_LEN, "%s", peer);
        n++;
        if (!wait_for_frame) chosen = n - 1;
    }
    for (int i = 0; i < n; i++) {
        if (i == chosen) continue;
        if (chosen >= 0)
            log_warn("%s: ring port: closed the connection from %s, also greeted as %s: the one from %s spoke first",
                     r->o.name, cand_peer[i], r->o.prev_name, cand_peer[chosen]);
        net_close(cand[i]);
        seal_channel_clear(&cand_seal[i]);
    }
    if (lb == &own) lobby_clear(&own);
    else lb->expect_epoch = lobby_epoch;
    if (chosen < 0) return -1;
    pthread_mutex_lock(&r->mu);
    r->in_fd = cand[chosen];
    r->rx_seal = cand_seal[chosen];
    r->rx_ready = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    seal_channel_clear(&cand_seal[chosen]);
    log_debug("%s: connected from %s (%s)", r->o.name, r->o.prev_name, cand_peer[chosen]);
    return 0;
}

static void *ring_rx_main(void *arg)
{
    ring *r = arg;
    char err[MDI_ERR_LEN];
    if (ring_accept_prev(r) != 0) return NULL;
    for (;;) {
        void *item;
        if (queue_pop(&r->free_q, &item, -1) != 0) return NULL;
        proto_frame *f = item;
        double idle = r->o.idle_timeout_s > 0 ? r->o.idle_timeout_s : -1;
        int rc;
        double t0;
        do {
            t0 = time_now();
            rc = seal_read_frame(&r->rx_seal, r->in_fd, f, &r->o.limits, idle, r->o.timeout_s, &r->cancel, err);
            if (rc == 0 && f->h.type == PROTO_KEEPALIVE) {
                pthread_mutex_lock(&r->mu);
                r->stats.bytes_received += PROTO_HEADER_SIZE + (r->rx_seal.on ? SEAL_FRAME_OVERHEAD(0) : 0);
                pthread_mutex_unlock(&r->mu);
            }
        } while (rc == 0 && f->h.type == PROTO_KEEPALIVE);
        if (rc) {
            queue_push(&r->free_q, f, 0);
            if (rc == MDI_ETIMEOUT && idle > 0 && time_now() - t0 >= idle)
                ring_fail(r, "%s: nothing from %s for %.1f s, not even a keepalive: taken for hung, run ended",
                          r->o.name, r->o.prev_name, r->o.idle_timeout_s);
            else if (rc != MDI_ESTATE)
                ring_fail(r, "%s: receiving from %s: %s", r->o.name, r->o.prev_name, err);
            return NULL;
        }
        int type = f->h.type;
        if (f->h.epoch != r->o.epoch) {
            uint32_t ep = f->h.epoch;
            queue_push(&r->free_q, f, 0);
            ring_fail(r, "%s: receiving from %s: a %s frame of run epoch %u in run epoch %u (from before or "
                      "after a failover): refused", r->o.name, r->o.prev_name, proto_type_name(type), ep,
                      r->o.epoch);
            return NULL;
        }
        if (type == PROTO_HELLO) {
            queue_push(&r->free_q, f, 0);
            ring_fail(r, "%s: receiving from %s: unexpected HELLO in the middle of a run",
                      r->o.name, r->o.prev_name);
            return NULL;
        }
        pthread_mutex_lock(&r->mu);
        r->stats.bytes_received += PROTO_HEADER_SIZE + f->h.payload_len +
                                   (r->rx_seal.on ? SEAL_FRAME_OVERHEAD(f->h.payload_len) : 0);
        r->stats.frames_received++;
        pthread_mutex_unlock(&r->mu);
        if (queue_push(&r->in_q, f, -1) != 0) {
            queue_push(&r->free_q, f, 0);
            return NULL;
        }
        /* Nothing follows a STOP or an ERROR on this connection. */
        if (type == PROTO_STOP || type == PROTO_ERROR) return NULL;
    }
}

/* ---- sending thread ---- */

static void *ring_tx_run(ring *r)
{
    char err[MDI_ERR_LEN];
    /* The next node may still be starting: retry refused connections
     * until the deadline. */
    double deadline = time_now() + r->o.accept_timeout_s;
    int fd = -1;
    while (!net_cancelled(&r->cancel)) {
        fd = net_connect(r->o.next_host, r->o.next_port, r->o.timeout_s, err);
        if (fd >= 0) break;
        if (time_now() > deadline) {
            ring_fail(r, "%s: cannot connect to %s at %s:%d: %s", r->o.name, r->o.next_name,
                      r->o.next_host, r->o.next_port, err);
            return NULL;
        }
        for (int i = 0; i < 2 && !net_cancelled(&r->cancel); i++) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (fd < 0) return NULL;
    int rc = seal_connect(fd, &r->keys, (uint32_t)r->o.node_index, (uint32_t)r->o.next_index, r->o.epoch,
                          r->o.timeout_s, &r->tx_seal, err);
    if (rc) {
        net_close(fd);
        ring_fail(r, "%s: handshake with %s at %s:%d: %s", r->o.name, r->o.next_name,
                  r->o.next_host, r->o.next_port, err);
        return NULL;
    }
    pthread_mutex_lock(&r->mu);
    r->out_fd = fd;
    r->tx_ready = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    double last_sent = time_now();
    for (;;) {
        void *item;
        rc = queue_pop(&r->out_q, &item, 0.2);
        if (rc == MDI_ETIMEOUT) {
            /* Nothing to send: make sure the next node is still there. It
             * never writes on this connection after its HELLO, so anything
             * readable means it closed or reset the connection. */
            struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLRDHUP};
            if (poll(&pfd, 1, 0) > 0) {
                ring_fail(r, "%s: %s closed the connection", r->o.name, r->o.next_name);
                queue_close(&r->out_q);
                return NULL;
            }
            /* ... and tell it that we are. */
            if (time_now() - last_sent >= RING_KEEPALIVE_S) {
                proto_frame ka = {.h = proto_header_make(PROTO_KEEPALIVE)};
                ka.h.epoch = r->o.epoch;
                rc = seal_write_frame(&r->tx_seal, fd, &ka, r->o.timeout_s, &r->cancel, err);
                if (rc) {
                    if (rc != MDI_ESTATE)
                        ring_fail(r, "%s: sending to %s: %s", r->o.name, r->o.next_name, err);
                    queue_close(&r->out_q);
                    return NULL;
                }
                last_sent = time_now();
                pthread_mutex_lock(&r->mu);
                r->stats.bytes_sent += PROTO_HEADER_SIZE + (r->tx_seal.on ? SEAL_FRAME_OVERHEAD(0) : 0);
                pthread_mutex_unlock(&r->mu);
            }
            continue;
        }
        if (rc != 0) return NULL;
        proto_frame *f = item;
        int type = f->h.type;
        f->h.epoch = r->o.epoch;
        uint64_t n = PROTO_HEADER_SIZE + f->h.payload_len +
                     (r->tx_seal.on ? SEAL_FRAME_OVERHEAD(f->h.payload_len) : 0);
        rc = seal_write_frame(&r->tx_seal, fd, f, r->o.timeout_s, &r->cancel, err);
        last_sent = time_now();
        queue_push(&r->free_q, f, 0);
        if (rc) {
            if (rc != MDI_ESTATE)
                ring_fail(r, "%s: sending to %s: %s", r->o.name, r->o.next_name, err);
            queue_close(&r->out_q);
            return NULL;
        }
        pthread_mutex_lock(&r->mu);
        r->stats.bytes_sent += n;
        r->stats.frames_sent++;
        pthread_mutex_unlock(&r->mu);
        if (type == PROTO_STOP || type == PROTO_ERROR) return NULL;
    }
}

/* The sending thread: tx_done once it ended, so that the end of a run
 * (ring_finished) waits for the STOP to be written to the next node. */
static void *ring_tx_main(void *arg)
{
    ring *r = arg;
    ring_tx_run(r);
    pthread_mutex_lock(&r->mu);
    r->tx_done = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- compute thread (secondary) ---- */

/* Sends an ERROR frame on towards the starter, reusing f. */
static void ring_forward_error(ring *r, proto_frame *f, const char *text)
{
    proto_frame_set_text(f, PROTO_ERROR, text);
    if (queue_push(&r->out_q, f, r->o.timeout_s) != 0) queue_push(&r->free_q, f, 0);
}

/* The cache of the sample slot of DATA frame f (allocated at start),
 * after checking the frame's positions against it. NULL with the reason
 * in why. */
static kv_cache *ring_frame_cache(ring *r, const proto_frame *f, char *why)
{
    uint32_t s = f->h.sample_id;
    int n = (int)f->h.n_tokens, pos = (int)f->h.pos;
    kv_cache *kv = &r->kv[s];
    if (pos != kv->len) {
        mdi_fail(why, -1, "frame of sample %u at position %d, but its cache holds %d positions", s, pos, kv->len);
        return NULL;
    }
    if (pos + n > r->o.max_seq) {
        mdi_fail(why, -1, "frame of sample %u reaches position %d, beyond max_seq %d", s, pos + n, r->o.max_seq);
        return NULL;
    }
    return kv;
}

/* Writes n rows (n, dim) as frame f's payload in the wire dtype. */
static void ring_frame_fill(ring *r, proto_frame *f, const float *rows, int n)
{
    int dim = r->o.m->cfg.dim;
    f->h.dtype = (uint16_t)r->o.wire_dtype;
    f->h.payload_len = (uint64_t)n * dtype_row_size(r->o.wire_dtype, dim);
    proto_pack(rows, (size_t)n * dim, r->o.wire_dtype, f->payload);
}

/* Runs the slice's layers on one DATA frame, in place. Returns 0 or -1
 * with the reason in why. */
static int ring_compute_data(ring *r, proto_frame *f, char *why)
{
    const model *m = r->o.m;
    int dim = m->cfg.dim;
    int n = (int)f->h.n_tokens, pos = (int)f->h.pos;
    kv_cache *kv = ring_frame_cache(r, f, why);
    if (!kv) return -1;
    proto_unpack(f->payload, (size_t)n * dim, (dtype_t)f->h.dtype, r->x);
    if (f->h.flags & PROTO_FLAG_ROWS) forward_layers_rows(m, &r->fs, kv, r->x, n, pos);
    else forward_layers(m, &r->fs, kv, r->x, n, pos);
    const float *out = r->x;
    if (r->o.is_last && n > 1) {
        /* The starter needs only the last row for the head. */
        out = r->x + (size_t)(n - 1) * dim;
        f->h.pos = (uint32_t)(pos + n - 1);
        f->h.n_tokens = 1;
        n = 1;
    }
    ring_frame_fill(r, f, out, n);
    pthread_mutex_lock(&r->mu);
    r->stats.tokens += f->h.n_tokens;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* Runs nb decode frames (one token each, distinct samples) through the
 * layers as one batch, each in place. 0 or -1 with the reason in why. */
static int ring_compute_batch(ring *r, proto_frame **batch, int nb, char *why)
{
    const model *m = r->o.m;
    int dim = m->cfg.dim;
    for (int i = 0; i < nb; i++) {
        kv_cache *kv = ring_frame_cache(r, batch[i], why);
        if (!kv) return -1;
        r->rows[i].kv = kv;
        r->rows[i].pos = (int)batch[i]->h.pos;
        proto_unpack(batch[i]->payload, (size_t)dim, (dtype_t)batch[i]->h.dtype, r->x + (size_t)i * dim);
    }
    forward_layers_batch(m, &r->fs, r->rows, nb, r->x);
    for (int i = 0; i < nb; i++) ring_frame_fill(r, batch[i], r->x + (size_t)i * dim, 1);
    pthread_mutex_lock(&r->mu);
    r->stats.tokens += (uint64_t)nb;
    r->stats.batches++;
    r->stats.batched_tokens += (uint64_t)nb;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* A decode frame: DATA of one token. */
static int ring_is_decode(const proto_frame *f)
{
    return f->h.type == PROTO_DATA && f->h.n_tokens == 1;
}

/* After decode frame batch[0]: takes the decode frames of other samples
 * that are already waiting, up to the batch limit. The first frame that
 * cannot join (another kind, or a second frame of a sample in the batch,
 * which must wait for the first) is left in *held for the next round.
 * Returns the batch's size. */
static int ring_gather_batch(ring *r, proto_frame **held)
{
    int nb = 1;
    while (nb < r->batch_max) {
        void *item;
        if (queue_pop(&r->in_q, &item, 0) != 0) break;
        proto_frame *g = item;
        int ok = ring_is_decode(g);
        for (int i = 0; i < nb && ok; i++)
            ok = r->batch[i]->h.sample_id != g->h.sample_id;
        if (!ok) {
            *held = g;
            break;
        }
        r->batch[nb++] = g;
    }
    return nb;
}

/* RELEASE: the sample's slot is free for the next one; its cache stays
 * allocated (position cleared). */
static void ring_release_sample(ring *r, uint32_t s)
{
    if (s < r->o.limits.n_samples) kv_cache_reset(&r->kv[s]);
}

static void *ring_compute_main(void *arg)
{
    ring *r = arg;
    char why[MDI_ERR_LEN], text[MDI_ERR_LEN + 80];
    proto_frame *held = NULL; /* popped, not yet run: the next round's first frame */
    for (;;) {
        double t0 = time_now();
        void *item;
        int rc = 0;
        if (held) {
            item = held;
            held = NULL;
        } else {
            rc = queue_pop(&r->in_q, &item, -1);
        }
        double t1 = time_now();
        if (rc != 0) {
            /* The receiver failed (its error is recorded) or we were
             * stopped: tell the nodes downstream when we can. */
            if (!net_cancelled(&r->cancel)) {
                proto_frame *f = ring_frame_get(r, 0.5);
                if (f) {
                    ring_error(r, why);
                    ring_forward_error(r, f, why);
                }
            }
            break;
        }
        proto_frame *f = item;
        int type = f->h.type;
        int stop = 0, nb = 1;
        r->batch[0] = f;
        if (type == PROTO_DATA) {
            int failed;
            if (ring_is_decode(f) && r->batch_max > 1 && (nb = ring_gather_batch(r, &held)) > 1)
                failed = ring_compute_batch(r, r->batch, nb, why) != 0;
            else
                failed = ring_compute_data(r, f, why) != 0;
            if (failed) {
                snprintf(text, sizeof(text), "%s: %s", r->o.name, why);
                ring_fail(r, "%s", text);
                ring_forward_error(r, f, text);
                for (int i = 1; i < nb; i++) queue_push(&r->free_q, r->batch[i], 0);
                stop = 1;
                nb = 0;
            }
        } else if (type == PROTO_RELEASE) {
            ring_release_sample(r, f->h.sample_id);
        } else if (type == PROTO_STOP) {
            stop = 1;
        } else if (type == PROTO_ERROR) {
            /* An upstream node failed: pass its words on and end. */
            int n = (int)f->h.payload_len;
            snprintf(text, sizeof(text), "%.*s", n < PROTO_TEXT_SHOWN ? n : PROTO_TEXT_SHOWN, (const char *)f->payload);
            ring_fail(r, "%s", text);
            stop = 1;
        }
        pthread_mutex_lock(&r->mu);
        r->stats.wait_s += t1 - t0;
        r->stats.compute_s += time_now() - t1;
        pthread_mutex_unlock(&r->mu);
        int pushed = 0;
        for (; pushed < nb; pushed++)
            if (queue_push(&r->out_q, r->batch[pushed], -1) != 0) break;
        if (pushed < nb) {
            for (; pushed < nb; pushed++) queue_push(&r->free_q, r->batch[pushed], 0);
            break;
        }
        if (stop) break;
    }
    if (held) queue_push(&r->free_q, held, 0);
    pthread_mutex_lock(&r->mu);
    r->finished = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- lifecycle ---- */

int ring_start(ring *r, const ring_opts *o, char *err)
{
    memset(r, 0, sizeof(*r));
    r->o = *o;
    r->in_fd = r->out_fd = -1;
    if (r->o.queue_cap <= 0) r->o.queue_cap = RING_QUEUE_CAP;
    if (r->o.accept_timeout_s <= 0) r->o.accept_timeout_s = 120;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    int cap = r->o.queue_cap;
    r->n_frames = 2 * cap + 8;
    int rc;
    if ((rc = auth_keys_derive(&r->keys, r->o.secret, err)) || (rc = queue_init(&r->in_q, cap, err)) ||
        (rc = queue_init(&r->out_q, cap, err)) || (rc = queue_init(&r->free_q, r->n_frames, err)))
        goto fail;
    size_t frame_cap = (size_t)r->o.limits.max_batch * (size_t)r->o.limits.dim * sizeof(float);
    if (frame_cap < PROTO_TEXT_MAX) frame_cap = PROTO_TEXT_MAX;
    r->frames = calloc((size_t)r->n_frames, sizeof(*r->frames));
    if (!r->frames) { rc = mdi_fail(err, MDI_ENOMEM, "out of memory"); goto fail; }
    for (int i = 0; i < r->n_frames; i++) {
        r->frames[i] = proto_frame_new(frame_cap);
        if (!r->frames[i]) { rc = mdi_fail(err, MDI_ENOMEM, "out of memory for the frame pool"); goto fail; }
        queue_push(&r->free_q, r->frames[i], 0);
    }
    if (r->o.m) {
        const model *m = r->o.m;
        uint32_t ns = r->o.limits.n_samples;
        r->batch_max = ns < 1 ? 1 : ns > FORWARD_MAX_SAMPLES ? FORWARD_MAX_SAMPLES : (int)ns;
        int x_rows = r->o.limits.max_batch > r->batch_max ? r->o.limits.max_batch : r->batch_max;
        if ((rc = forward_state_init_batch(&r->fs, m, r->o.limits.max_batch, r->batch_max, r->o.max_seq, err)))
            goto fail;
        r->kv = calloc(r->o.limits.n_samples, sizeof(kv_cache));
        r->x = malloc((size_t)x_rows * m->cfg.dim * sizeof(float));
        r->batch = calloc((size_t)r->batch_max, sizeof(*r->batch));
        r->rows = calloc((size_t)r->batch_max, sizeof(*r->rows));
        if (!r->kv || !r->x || !r->batch || !r->rows) { rc = mdi_fail(err, MDI_ENOMEM, "out of memory"); goto fail; }
        /* every slot's cache now, once: a sample takes a slot whose
         * RELEASE has passed, and finds it empty */
        for (uint32_t i = 0; i < r->o.limits.n_samples; i++) {
            if ((rc = kv_cache_init(&r->kv[i], m, r->o.max_seq, r->o.kv_dtype, err))) goto fail;
            r->kv_bytes += kv_cache_bytes(&r->kv[i]);
        }
        r->kv_bytes_peak = r->kv_bytes;
    }
    if (pthread_create(&r->rx, NULL, ring_rx_main, r) != 0) {
        rc = mdi_fail(err, MDI_ENOMEM, "cannot start the receiving thread");
        goto fail;
    }
    r->has_rx = 1;
    if (pthread_create(&r->tx, NULL, ring_tx_main, r) != 0) {
        rc = mdi_fail(err, MDI_ENOMEM, "cannot start the sending thread");
        goto fail;
    }
    r->has_tx = 1;
    if (r->o.m) {
        if (pthread_create(&r->compute, NULL, ring_compute_main, r) != 0) {
            rc = mdi_fail(err, MDI_ENOMEM, "cannot start the compute thread");
            goto fail;
        }
        r->has_compute = 1;
    }
    return 0;
fail:
    ring_stop(r);
    return rc;
}

int ring_wait_connected(ring *r, double timeout_s, char *err)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    long long ns = dl.tv_nsec + (long long)(timeout_s * 1e9);
    dl.tv_sec += (time_t)(ns / 1000000000LL);
    dl.tv_nsec = (long)(ns % 1000000000LL);
    pthread_mutex_lock(&r->mu);
    while (!r->failed && !(r->rx_ready && r->tx_ready))
        if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) != 0) break;
    int rc = 0;
    if (r->failed) rc = mdi_fail(err, MDI_ENET, "%s", r->error);
    else if (!r->tx_ready)
        rc = mdi_fail(err, MDI_ETIMEOUT, "%s: no handshake with %s yet", r->o.name, r->o.next_name);
    else if (!r->rx_ready)
        rc = mdi_fail(err, MDI_ETIMEOUT, "%s: %s has not connected%s%s%s", r->o.name, r->o.prev_name,
                      r->refused[0] ? " (the ring port refused " : "", r->refused, r->refused[0] ? ")" : "");
    pthread_mutex_unlock(&r->mu);
    return rc;
}

proto_frame *ring_frame_get(ring *r, double timeout_s)
{
    void *item;
    if (queue_pop(&r->free_q, &item, timeout_s) != 0) return NULL;
    return item;
}

int ring_send(ring *r, proto_frame *f, char *err)
{
    if (queue_push(&r->out_q, f, r->o.timeout_s) != 0) {
        queue_push(&r->free_q, f, 0);
        if (ring_error(r, err)) return MDI_ENET;
        return mdi_fail(err, MDI_ETIMEOUT, "%s: the output queue stayed full for %.1f s (sending to %s)",
                        r->o.name, r->o.timeout_s, r->o.next_name);
    }
    return 0;
}

int ring_recv(ring *r, proto_frame **f, double timeout_s, char *err)
{
    void *item;
    int rc = queue_pop(&r->in_q, &item, timeout_s);
    if (rc == 0) {
        *f = item;
        return 0;
    }
    if (ring_error(r, err)) return MDI_ENET;
    if (rc == MDI_ETIMEOUT)
        return mdi_fail(err, MDI_ETIMEOUT, "nothing came back from %s within %.1f s", r->o.prev_name, timeout_s);
    return mdi_fail(err, MDI_ESTATE, "%s: the ring was stopped", r->o.name);
}

void ring_frame_put(ring *r, proto_frame *f)
{
    queue_push(&r->free_q, f, 0);
}

int ring_finished(ring *r)
{
    pthread_mutex_lock(&r->mu);
    int f = r->finished && r->tx_done;
    pthread_mutex_unlock(&r->mu);
    return f;
}

int ring_error(ring *r, char *err)
{
    pthread_mutex_lock(&r->mu);
    int failed = r->failed;
    if (failed && err) snprintf(err, MDI_ERR_LEN, "%s", r->error);
    pthread_mutex_unlock(&r->mu);
    return failed;
}

void ring_get_stats(ring *r, ring_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}

size_t ring_memory_bytes(ring *r, int peak)
{
    pthread_mutex_lock(&r->mu);
    size_t n = peak ? r->kv_bytes_peak : r->kv_bytes;
    pthread_mutex_unlock(&r->mu);
    size_t frame_cap = (size_t)r->o.limits.max_batch * (size_t)r->o.limits.dim * sizeof(float);
    return n + (size_t)r->n_frames * (frame_cap > PROTO_TEXT_MAX ? frame_cap : PROTO_TEXT_MAX);
}

size_t ring_kv_bytes(ring *r, int peak)
{
    pthread_mutex_lock(&r->mu);
    size_t n = peak ? r->kv_bytes_peak : r->kv_bytes;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void ring_stop(ring *r)
{
    pthread_mutex_lock(&r->mu);
    net_cancel(&r->cancel);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->in_q.items) queue_close(&r->in_q);
    if (r->out_q.items) queue_close(&r->out_q);
    if (r->free_q.items) queue_close(&r->free_q);
    /* shutdown(2) wakes a thread blocked in poll on either socket. */
    pthread_mutex_lock(&r->mu);
    if (r->in_fd >= 0) shutdown(r->in_fd, SHUT_RDWR);
    if (r->out_fd >= 0) shutdown(r->out_fd, SHUT_RDWR);
    pthread_mutex_unlock(&r->mu);
    if (r->has_rx) pthread_join(r->rx, NULL);
    if (r->has_tx) pthread_join(r->tx, NULL);
    if (r->has_compute) pthread_join(r->compute, NULL);
    r->has_rx = r->has_tx = r->has_compute = 0;
    for (int i = 0; i < RING_EARLY_MAX; i++) {
        if (r->o.accepted_fd[i] > 0) net_close(r->o.accepted_fd[i]);
        r->o.accepted_fd[i] = 0;
    }
    net_close(r->in_fd);
    net_close(r->out_fd);
    r->in_fd = r->out_fd = -1;
    if (r->frames) {
        for (int i = 0; i < r->n_frames; i++) proto_frame_free(r->frames[i]);
        free(r->frames);
        r->frames = NULL;
    }
    if (r->kv) {
        for (uint32_t i = 0; i < r->o.limits.n_samples; i++) kv_cache_free(&r->kv[i]);
        free(r->kv);
        r->kv = NULL;
    }
    if (r->o.m && r->fs.xb) forward_state_free(&r->fs);
    free(r->x);
    r->x = NULL;
    free(r->batch);
    free(r->rows);
    r->batch = NULL;
    r->rows = NULL;
    queue_free(&r->in_q);
    queue_free(&r->out_q);
    queue_free(&r->free_q);
    seal_channel_clear(&r->rx_seal);
    seal_channel_clear(&r->tx_seal);
    sodium_memzero(r->o.accepted_seal, sizeof(r->o.accepted_seal));
    sodium_memzero(&r->keys, sizeof(r->keys));
}
