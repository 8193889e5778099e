/*
 * lobby: the ring port's waiting room (see lobby.h).
 */
#include "lobby.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "proto.h"
#include "util.h"

/* Slices of the wait: the cancel flag is looked at this often, and a guest
 * that has sent part of its frame is looked at again this often (poll(2)
 * cannot wait for "more bytes than are there"). */
#define LOBBY_SLICE_MS 100
#define LOBBY_PARTIAL_MS 10
/* Connections accepted by one call that has no time left: a flood of
 * connections cannot keep lobby_wait(l, 0, ...) from returning. */
#define LOBBY_ACCEPT_BURST (2 * LOBBY_MAX)
/* Rejections logged per window; the rest are counted in one line. */
#define LOBBY_LOG_WINDOW_S 10.0
#define LOBBY_LOG_MAX 10
/* Bounds one handshake step's reads (of bytes already there) and writes. */
#define LOBBY_STEP_S 1.0

/* One line per rejected connection, at most LOBBY_LOG_MAX per window: an
 * attacker opening connections in a loop does not flood the log. */
static void lobby_reject(lobby *l, const char *peer, const char *why)
{
    double now = time_now();
    l->n_rejected++;
    snprintf(l->last_rejected, sizeof(l->last_rejected), "%.60s: %.190s", peer, why);
    if (now - l->log_start > LOBBY_LOG_WINDOW_S) {
        if (l->log_quiet)
            log_warn("%s: ring port: %d more connections rejected in %.0f s", l->name, l->log_quiet,
                     LOBBY_LOG_WINDOW_S);
        l->log_start = now;
        l->log_count = l->log_quiet = 0;
    }
    if (l->log_count++ < LOBBY_LOG_MAX)
        log_warn("%s: ring port: rejected connection from %s: %s", l->name, peer, why);
    else
        l->log_quiet++;
}

void lobby_init(lobby *l, int listen_fd, double hello_timeout_s, const auth_keys *keys, uint32_t self, int expect,
                long long expect_epoch, const char *name)
{
    memset(l, 0, sizeof(*l));
    l->listen_fd = listen_fd;
    l->hello_timeout_s = hello_timeout_s;
    l->keys = keys;
    l->self = self;
    l->expect = expect;
    l->expect_epoch = expect_epoch;
    snprintf(l->name, sizeof(l->name), "%s", name);
}

static void lobby_remove(lobby *l, int i)
{
    seal_pending_clear(&l->guests[i].pend);
    memmove(&l->guests[i], &l->guests[i + 1], (size_t)(l->n - i - 1) * sizeof(l->guests[0]));
    l->n--;
}

static void lobby_drop(lobby *l, int i, const char *why)
{
    lobby_reject(l, l->guests[i].peer, why);
    net_close(l->guests[i].fd);
    lobby_remove(l, i);
}

/* Length of the address part of "addr:port". */
static size_t lobby_host_len(const char *peer)
{
    const char *colon = strrchr(peer, ':');
    return colon ? (size_t)(colon - peer) : strlen(peer);
}

/* The room is full: the oldest guest of the address holding the most
 * guests leaves. */
static void lobby_make_room(lobby *l)
{
    int victim = 0, most = 0;
    for (int i = 0; i < l->n; i++) {
        size_t hl = lobby_host_len(l->guests[i].peer);
        int same = 0;
        for (int j = 0; j < l->n; j++)
            if (lobby_host_len(l->guests[j].peer) == hl && !memcmp(l->guests[i].peer, l->guests[j].peer, hl))
                same++;
        if (same > most) {
            most = same;
            victim = i;   /* guests are in arrival order: the first is the oldest */
        }
    }
    char why[96];
    snprintf(why, sizeof(why), "%d connections waiting, this address holds %d; oldest dropped", l->n, most);
    lobby_drop(l, victim, why);
}

/* 1: the guest's next HELLO (its first, or its proof) is whole in its
 * socket; 0: not yet; -1: the guest was dropped (with the reason logged). */
static int lobby_look(lobby *l, int i, double now, int *has_bytes)
{
    lobby_guest *g = &l->guests[i];
    uint8_t buf[PROTO_HEADER_SIZE + PROTO_TEXT_MAX];
    static const uint8_t magic[4] = {'M', 'D', 'I', 'R'};
    char why[160];
    ssize_t k = recv(g->fd, buf, PROTO_HEADER_SIZE, MSG_PEEK | MSG_DONTWAIT);
    if (k == 0) {
        lobby_drop(l, i, "closed without a word");
        return -1;
    }
    if (k < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            snprintf(why, sizeof(why), "recv: %s", strerror(errno));
            lobby_drop(l, i, why);
            return -1;
        }
        k = 0;
    }
    size_t have = (size_t)k;
    if (memcmp(buf, magic, have < 4 ? have : 4) != 0) {
        snprintf(why, sizeof(why), "not the ring protocol (first bytes %02x %02x %02x %02x)", buf[0],
                 have > 1 ? buf[1] : 0, have > 2 ? buf[2] : 0, have > 3 ? buf[3] : 0);
        lobby_drop(l, i, why);
        return -1;
    }
    if (have == PROTO_HEADER_SIZE) {
        proto_header h;
        proto_header_decode(&h, buf);
        if (h.payload_len > PROTO_TEXT_MAX) {
            snprintf(why, sizeof(why), "first frame announces a payload of %llu bytes (at most %d)",
                     (unsigned long long)h.payload_len, PROTO_TEXT_MAX);
            lobby_drop(l, i, why);
            return -1;
        }
        size_t want = PROTO_HEADER_SIZE + (size_t)h.payload_len;
        k = want == have ? (ssize_t)have : recv(g->fd, buf, want, MSG_PEEK | MSG_DONTWAIT);
        if (k == (ssize_t)want) return 1;
        if (k > 0) have = (size_t)k;
    }
    if (now > g->deadline) {
        const char *what = g->challenged ? "its proof after the challenge" : "a whole first frame";
        if (have) snprintf(why, sizeof(why), "%zu bytes in %.1f s, not %s", have, l->hello_timeout_s, what);
        else snprintf(why, sizeof(why), "said nothing within %.1f s%s", l->hello_timeout_s,
                      g->challenged ? " of the challenge" : "");
        lobby_drop(l, i, why);
        return -1;
    }
    *has_bytes = have > 0;
    return 0;
}

/* Takes guest i, whose next HELLO is whole in its socket, one step through
 * the handshake: 1 when it is greeted (its channel in *ch; the caller
 * removes it from the room), 0 when it was challenged and stays, -1 when
 * it was refused and dropped. The HELLO is there and the answers are a few
 * bytes on a fresh connection, so no step waits on the guest: the timeout
 * only bounds a peer that stops reading at once. */
static int lobby_step(lobby *l, int i, seal_channel *ch)
{
    lobby_guest *g = &l->guests[i];
    char why[MDI_ERR_LEN];
    uint32_t from = 0;
    int rc;
    if (!g->challenged) {
        int done = 0;
        rc = seal_accept_begin(g->fd, l->keys, l->self, l->expect, l->expect_epoch, LOBBY_STEP_S, &g->pend, &done,
                               &from, ch, why);
        if (rc == 0 && !done) {
            g->challenged = 1;
            g->deadline = time_now() + l->hello_timeout_s;
            return 0;
        }
    } else {
        rc = seal_accept_finish(g->fd, l->keys, l->self, l->expect_epoch, &g->pend, LOBBY_STEP_S, &from, ch, why);
    }
    if (rc == 0 && l->expect >= 0 && (int)from != l->expect) {
        rc = MDI_EPROTO;
        snprintf(why, sizeof(why), "HELLO from node %u, expected node %d", from, l->expect);
    }
    if (rc) {
        seal_channel_clear(ch);
        lobby_drop(l, i, why);
        return -1;
    }
    return 1;
}

int lobby_wait(lobby *l, double timeout_s, const volatile int *cancel, char *peer, seal_channel *ch, char *err)
{
    double deadline = time_now() + (timeout_s > 0 ? timeout_s : 0);
    int accepted = 0, spins = 0;
    for (;;) {
        if (net_cancelled(cancel)) return mdi_fail(err, MDI_ESTATE, "cancelled");
        double now = time_now();
        int partial = 0;          /* some guest has sent part of its frame */
        int waiting[LOBBY_MAX];   /* guests that have sent nothing yet */
        int n_waiting = 0;
        double next = deadline;
        for (int i = 0; i < l->n;) {
            int has_bytes = 0;
            int st = lobby_look(l, i, now, &has_bytes);
            if (st > 0) st = lobby_step(l, i, ch);
            if (st > 0) {
                int fd = l->guests[i].fd;
                if (peer) snprintf(peer, NET_ADDR_LEN, "%s", l->guests[i].peer);
                lobby_remove(l, i);
                return fd;
            }
            if (st < 0) continue;
            if (has_bytes) partial = 1;
            else waiting[n_waiting++] = i;
            if (l->guests[i].deadline < next) next = l->guests[i].deadline;
            i++;
        }
        double left = deadline - now;
        if (left <= 0 && (accepted >= LOBBY_ACCEPT_BURST || ++spins > 4 * LOBBY_ACCEPT_BURST))
            return mdi_fail(err, MDI_ETIMEOUT, "no peer ready");
        /* Sleep until a guest speaks, one comes, a deadline or a slice. */
        struct pollfd p[LOBBY_MAX + 1];
        p[0] = (struct pollfd){.fd = l->listen_fd, .events = POLLIN};
        for (int j = 0; j < n_waiting; j++) p[1 + j] = (struct pollfd){.fd = l->guests[waiting[j]].fd, .events = POLLIN};
        double wait_ms = (next - now) * 1000.0;
        int ms = wait_ms <= 0 ? 0 : wait_ms < LOBBY_SLICE_MS ? (int)wait_ms + 1 : LOBBY_SLICE_MS;
        if (partial && ms > LOBBY_PARTIAL_MS) ms = LOBBY_PARTIAL_MS;
        if (left <= 0) ms = 0;
        int r = poll(p, (nfds_t)(1 + n_waiting), ms);
        if (r < 0 && errno != EINTR) return mdi_fail(err, MDI_ENET, "poll: %s", strerror(errno));
        if (r > 0 && (p[0].revents & (POLLERR | POLLHUP | POLLNVAL)))
            return mdi_fail(err, MDI_ENET, "the listening socket failed");
        if (r > 0 && (p[0].revents & POLLIN)) {
            char who[NET_ADDR_LEN];
            int fd = net_accept(l->listen_fd, 0.001, NULL, who, NULL);
            if (fd >= 0) {
                accepted++;
                if (l->n == LOBBY_MAX) lobby_make_room(l);
                l->guests[l->n++] = (lobby_guest){.fd = fd, .deadline = time_now() + l->hello_timeout_s};
                snprintf(l->guests[l->n - 1].peer, NET_ADDR_LEN, "%s", who);
            }
            continue;
        }
        if (left <= 0 && r <= 0) return mdi_fail(err, MDI_ETIMEOUT, "no peer ready");
    }
}

void lobby_clear(lobby *l)
{
    for (int i = 0; i < l->n; i++) {
        net_close(l->guests[i].fd);
        seal_pending_clear(&l->guests[i].pend);
    }
    l->n = 0;
}
