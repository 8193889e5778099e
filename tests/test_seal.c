/* test_seal: the ring's challenge-response (right and wrong secret, a side
 * without one, a HELLO for another node, a recorded handshake replayed),
 * the run epoch a connection is made for (plain and sealed, at the
 * handshake and in a lobby; an epoch altered on the way), and sealed
 * frames (round trip; nothing in clear; altered, replayed, reordered and
 * dropped frames refused). */
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "lobby.h"
#include "net.h"
#include "seal.h"
#include "test.h"
#include "util.h"

static auth_keys k_right, k_wrong, k_none;

typedef struct {
    int fd;
    const auth_keys *k;
    uint32_t self;
    int expect;
    long long expect_epoch;    /* 0 unless set: the epoch seal_connect is given below */
    int rc;
    uint32_t from;
    seal_channel ch;
    char err[MDI_ERR_LEN];
} acceptor;

static void *acceptor_main(void *arg)
{
    acceptor *a = arg;
    a->rc = seal_accept(a->fd, a->k, a->self, a->expect, a->expect_epoch, 2, &a->from, &a->ch, a->err);
    return NULL;
}

/* A connects as node a to node `to` with ka; B is node b with kb. */
static void handshake_case(const auth_keys *ka, const auth_keys *kb, uint32_t a, uint32_t to, uint32_t b,
                           int expect, int want_a, int want_b, const char *name)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    acceptor acc = {.fd = sv[1], .k = kb, .self = b, .expect = expect};
    pthread_t th;
    pthread_create(&th, NULL, acceptor_main, &acc);
    seal_channel ch;
    char err[MDI_ERR_LEN] = "";
    int rc = seal_connect(sv[0], ka, a, to, 0, 2, &ch, err);
    pthread_join(th, NULL);
    int ok = rc == want_a && acc.rc == want_b;
    if (ok && rc == 0)
        ok = acc.from == a && ch.on == ka->on && acc.ch.on == kb->on && memcmp(ch.key, acc.ch.key, 32) == 0;
    test_result(ok, name, "connecting rc %d (%s), accepting rc %d (%s), from %u", rc, err, acc.rc, acc.err, acc.from);
    close(sv[0]);
    close(sv[1]);
}

/* Copies everything from one socket to another, keeping a copy of what
 * passed (the recorder between two nodes). */
typedef struct {
    int from, to;
    uint8_t buf[4096];
    size_t len;
    int edit_epoch;            /* > 0: the first frame's epoch becomes edit_epoch - 1 */
} tap;

static void *tap_main(void *arg)
{
    tap *t = arg;
    uint8_t b[512];
    for (;;) {
        /* the first frame's header whole, then whatever comes */
        ssize_t n = t->len == 0 && t->edit_epoch ? (net_read_full(t->from, b, PROTO_HEADER_SIZE, 2, NULL, NULL, NULL)
                                                        ? -1 : PROTO_HEADER_SIZE)
                                                 : read(t->from, b, sizeof(b));
        if (n <= 0) break;
        if (t->len == 0 && t->edit_epoch) {
            proto_header h;
            proto_header_decode(&h, b);
            h.epoch = (uint32_t)(t->edit_epoch - 1);
            proto_header_encode(&h, b);
        }
        if (t->len + (size_t)n <= sizeof(t->buf)) memcpy(t->buf + t->len, b, (size_t)n);
        t->len += (size_t)n;
        if (write(t->to, b, (size_t)n) != n) break;
    }
    shutdown(t->to, SHUT_WR);
    return NULL;
}

/* A handshake from node 1 (epoch epoch) to acc's node through two taps,
 * up (towards acc) and down: the connecting side's result and err; acc,
 * up and down hold theirs. ab and tb stay open for the caller to close. */
static int relay_handshake(acceptor *acc, tap *up, tap *down, uint32_t epoch, int ab[2], int tb[2],
                           seal_channel *ch, char *err)
{
    socketpair(AF_UNIX, SOCK_STREAM, 0, ab);   /* A <-> tap */
    socketpair(AF_UNIX, SOCK_STREAM, 0, tb);   /* tap <-> B */
    acc->fd = tb[1];
    up->from = ab[1];
    up->to = tb[0];
    down->from = tb[0];
    down->to = ab[1];
    pthread_t th, t1, t2;
    pthread_create(&th, NULL, acceptor_main, acc);
    pthread_create(&t1, NULL, tap_main, up);
    pthread_create(&t2, NULL, tap_main, down);
    int rc = seal_connect(ab[0], acc->k, 1, 2, epoch, 2, ch, err);
    pthread_join(th, NULL);
    shutdown(ab[0], SHUT_RDWR);
    shutdown(tb[1], SHUT_RDWR);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    return rc;
}

static void test_handshake(void)
{
    handshake_case(&k_right, &k_right, 1, 2, 2, 1, 0, 0, "seal handshake with the right secret, keys agree");
    handshake_case(&k_none, &k_none, 1, 2, 2, -1, 0, 0, "seal handshake without a secret (plain HELLO)");
    handshake_case(&k_wrong, &k_right, 1, 2, 2, 1, MDI_EAUTH, MDI_EAUTH,
                   "seal handshake wrong secret refused on both sides");
    handshake_case(&k_none, &k_right, 1, 2, 2, 1, MDI_EAUTH, MDI_EAUTH, "seal handshake without the secret refused");
    handshake_case(&k_right, &k_none, 1, 2, 2, -1, MDI_EAUTH, MDI_EAUTH,
                   "seal handshake: a node without a secret refuses a sealed HELLO");
    handshake_case(&k_right, &k_right, 1, 3, 2, 1, MDI_EPROTO, MDI_EPROTO,
                   "seal handshake meant for another node refused");
    handshake_case(&k_right, &k_right, 4, 2, 2, 1, MDI_EPROTO, MDI_EPROTO,
                   "seal handshake from another node than the expected one refused");

    /* A recorded handshake replayed to the same node: its nonce is new, the
     * recorded proof does not verify. */
    int ab[2], tb[2];
    acceptor acc = {.k = &k_right, .self = 2, .expect = 1};
    tap up = {.len = 0}, down = {.len = 0};
    seal_channel ch;
    char err[MDI_ERR_LEN] = "";
    int rc = relay_handshake(&acc, &up, &down, 0, ab, tb, &ch, err);
    pthread_t th;
    test_result(rc == 0 && acc.rc == 0, "seal handshake through a recording relay", "rc %d (%s), %d (%s)", rc, err,
                acc.rc, acc.err);
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    acceptor again = {.fd = sv[1], .k = &k_right, .self = 2, .expect = 1};
    pthread_create(&th, NULL, acceptor_main, &again);
    if (up.len <= sizeof(up.buf)) net_write_full(sv[0], up.buf, up.len, 1, NULL, NULL);
    pthread_join(th, NULL);
    test_result(again.rc == MDI_EAUTH, "seal handshake replayed from a recording refused", "rc %d (%s)", again.rc,
                again.err);
    for (int i = 0; i < 2; i++) {
        close(ab[i]);
        close(tb[i]);
        close(sv[i]);
    }
}

/* The two-step accept of the lobby: each step reads only what is there.
 * A peer that stops after the challenge leaves begin done at once, and a
 * whole handshake done in steps gives the keys of seal_accept. */
typedef struct {
    int fd;
    const auth_keys *k;        /* NULL: the right secret */
    uint32_t epoch;
    int rc;
    seal_channel ch;
    char err[MDI_ERR_LEN];
} connector;

static void *connector_main(void *arg)
{
    connector *c = arg;
    c->rc = seal_connect(c->fd, c->k ? c->k : &k_right, 1, 2, c->epoch, 2, &c->ch, c->err);
    return NULL;
}

static int wait_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 2000) == 1;
}

static void test_accept_steps(void)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    connector con = {.fd = sv[0]};
    pthread_t th;
    pthread_create(&th, NULL, connector_main, &con);
    seal_pending p;
    seal_channel ch;
    uint32_t from = 99;
    int done = -1;
    char err[MDI_ERR_LEN] = "";
    int rc = wait_readable(sv[1]) ? seal_accept_begin(sv[1], &k_right, 2, 1, 0, 2, &p, &done, &from, &ch, err) : -1;
    int rc2 = rc == 0 && done == 0 && wait_readable(sv[1]) ? seal_accept_finish(sv[1], &k_right, 2, 0, &p, 2, &from,
                                                                                &ch, err)
                                                          : -1;
    pthread_join(th, NULL);
    test_result(rc == 0 && done == 0 && rc2 == 0 && con.rc == 0 && from == 1 && ch.on &&
                    memcmp(ch.key, con.ch.key, 32) == 0,
                "seal accept in two steps: challenged, then proved; keys agree", "rc %d, done %d, rc %d (%s), %d (%s)",
                rc, done, rc2, err, con.rc, con.err);
    close(sv[0]);
    close(sv[1]);

    /* a peer that sends its sealed HELLO and then nothing */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    proto_frame *f = proto_frame_new(PROTO_TEXT_MAX);
    f->h = proto_header_make(PROTO_HELLO);
    f->h.flags = PROTO_FLAG_SEALED;
    f->h.payload_len = 4 + SEAL_NONCE_SIZE;
    memset(f->payload, 0, (size_t)f->h.payload_len);
    f->payload[0] = 2;   /* meant for node 2, from node 1 */
    f->h.sample_id = 1;
    proto_write_frame(sv[0], f, 1, NULL, NULL);
    double t = time_now();
    done = -1;
    rc = seal_accept_begin(sv[1], &k_right, 2, 1, 0, 2, &p, &done, &from, &ch, err);
    double dt = time_now() - t;
    int answered = proto_read_frame(sv[0], f, NULL, 1, 1, NULL, NULL) == 0 && f->h.type == PROTO_HELLO &&
                   f->h.payload_len == SEAL_NONCE_SIZE + 32;
    test_result(rc == 0 && done == 0 && dt < 0.5 && answered,
                "seal accept: the challenge is answered without waiting for the proof", "rc %d (%s), done %d, %.2f s",
                rc, err, done, dt);
    seal_pending_clear(&p);
    /* without a secret the handshake is over in one step */
    proto_frame_free(f);
    close(sv[0]);
    close(sv[1]);
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    f = proto_frame_new(PROTO_TEXT_MAX);
    f->h = proto_header_make(PROTO_HELLO);
    f->h.sample_id = 1;
    proto_write_frame(sv[0], f, 1, NULL, NULL);
    done = -1;
    rc = seal_accept_begin(sv[1], &k_none, 2, 1, 0, 2, &p, &done, &from, &ch, err);
    test_result(rc == 0 && done == 1 && from == 1 && !ch.on, "seal accept without a secret: one step, plain",
                "rc %d (%s), done %d", rc, err, done);
    proto_frame_free(f);
    close(sv[0]);
    close(sv[1]);
}

/* ---- run epochs ---- */

#define WORDS_OLDER "run epoch 3 here, the connection is for run epoch 2: from before a reconfiguration"

/* Node 1 connects to node 2 for run epoch `epoch`; node 2 expects
 * expect_epoch. Both sides with keys k. */
static void epoch_case(const auth_keys *k, uint32_t epoch, long long expect_epoch, int want, const char *name)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    acceptor acc = {.fd = sv[1], .k = k, .self = 2, .expect = 1, .expect_epoch = expect_epoch};
    pthread_t th;
    pthread_create(&th, NULL, acceptor_main, &acc);
    seal_channel ch;
    char err[MDI_ERR_LEN] = "";
    int rc = seal_connect(sv[0], k, 1, 2, epoch, 2, &ch, err);
    pthread_join(th, NULL);
    int ok = rc == want && acc.rc == want;
    if (ok && want == 0)
        ok = ch.epoch == epoch && acc.ch.epoch == epoch && ch.on == k->on && acc.ch.on == k->on &&
             memcmp(ch.key, acc.ch.key, 32) == 0;
    else if (ok)
        ok = strstr(err, "refused by peer: " WORDS_OLDER) && strstr(acc.err, "HELLO from node 1: " WORDS_OLDER);
    test_result(ok, name, "connecting rc %d (%s), accepting rc %d (%s), epochs %u %u", rc, err, acc.rc, acc.err,
                ch.epoch, acc.ch.epoch);
    close(sv[0]);
    close(sv[1]);
}

/* A lobby on a real port: node 1 connects for run epoch `epoch`; 1 when it
 * was greeted with that epoch in the channel, 0 when refused with the
 * words naming both epochs (only when want_greeted is 0), -1 otherwise. */
static int lobby_case(lobby *l, int port, const auth_keys *k, uint32_t epoch, int want_greeted, char *why)
{
    char err[MDI_ERR_LEN] = "", peer[NET_ADDR_LEN];
    connector c = {.fd = net_connect("127.0.0.1", port, 2, err), .k = k, .epoch = epoch};
    pthread_t th;
    pthread_create(&th, NULL, connector_main, &c);
    seal_channel ch;
    memset(&ch, 0, sizeof(ch));
    int fd = lobby_wait(l, want_greeted ? 2 : 0.5, NULL, peer, &ch, err);
    pthread_join(th, NULL);
    int got = -1;
    if (fd >= 0 && c.rc == 0 && ch.epoch == epoch && c.ch.epoch == epoch && ch.on == k->on) got = 1;
    if (fd == MDI_ETIMEOUT && c.rc == MDI_EPROTO && strstr(c.err, "for run epoch") && strstr(c.err, "here")) got = 0;
    snprintf(why, MDI_ERR_LEN, "lobby_wait %d (%.200s), epoch %u; connecting rc %d (%.200s)", fd, fd < 0 ? err : "",
             ch.epoch, c.rc, c.err);
    if (fd >= 0) net_close(fd);
    net_close(c.fd);
    return got;
}

static void test_epoch(void)
{
    epoch_case(&k_none, 3, 3, 0, "epoch: plain HELLO of the expected run epoch greeted");
    epoch_case(&k_right, 3, 3, 0, "epoch: sealed HELLO of the expected run epoch greeted, keys agree");
    epoch_case(&k_none, 2, 3, MDI_EPROTO, "epoch: plain HELLO of another run epoch refused, both epochs named");
    epoch_case(&k_right, 2, 3, MDI_EPROTO, "epoch: sealed HELLO of another run epoch refused, both epochs named");
    epoch_case(&k_none, 9, PROTO_EPOCH_ANY, 0, "epoch: plain, any epoch taken and told");
    epoch_case(&k_right, 9, PROTO_EPOCH_ANY, 0, "epoch: sealed, any epoch taken and told");

    /* A relay rewrites the epoch of the first HELLO (2 -> 3, the epoch the
     * accepting node expects): the epoch is in the transcript, so the
     * proofs fail and nothing is accepted. */
    int ab[2], tb[2];
    acceptor acc = {.k = &k_right, .self = 2, .expect = 1, .expect_epoch = 3};
    tap up = {.edit_epoch = 3 + 1}, down = {.len = 0};
    seal_channel ch;
    char err[MDI_ERR_LEN] = "";
    int rc = relay_handshake(&acc, &up, &down, 2, ab, tb, &ch, err);
    pthread_t th;
    test_result(rc == MDI_EAUTH && strstr(err, "does not verify") && acc.rc == MDI_EAUTH,
                "epoch: an epoch altered on the way fails the proof (sealed)", "rc %d (%s), %d (%s)", rc, err, acc.rc,
                acc.err);
    for (int i = 0; i < 2; i++) {
        close(ab[i]);
        close(tb[i]);
    }

    /* Challenged while any epoch was taken, proved after the run's epoch
     * became known: refused at the proof. */
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    connector con = {.fd = sv[0], .epoch = 2};
    pthread_create(&th, NULL, connector_main, &con);
    seal_pending p;
    uint32_t from = 0;
    int done = -1;
    rc = wait_readable(sv[1]) ? seal_accept_begin(sv[1], &k_right, 2, 1, PROTO_EPOCH_ANY, 2, &p, &done, &from, &ch, err)
                              : -1;
    int rc2 = rc == 0 && done == 0 && wait_readable(sv[1]) ? seal_accept_finish(sv[1], &k_right, 2, 3, &p, 2, &from,
                                                                                &ch, err)
                                                          : -1;
    pthread_join(th, NULL);
    test_result(rc == 0 && rc2 == MDI_EPROTO && strstr(err, WORDS_OLDER) && con.rc == MDI_EPROTO &&
                    strstr(con.err, WORDS_OLDER) && !ch.on,
                "epoch: challenged under any epoch, refused at the proof once the run's is expected",
                "rc %d, %d (%s); connecting rc %d (%s)", rc, rc2, err, con.rc, con.err);
    close(sv[0]);
    close(sv[1]);

    /* The lobby: expecting epoch 3, then any (a secondary between runs). */
    int lfd = net_listen(0, 16, err);
    int port = lfd >= 0 ? net_local_port(lfd) : -1;
    const auth_keys *keys[2] = {&k_none, &k_right};
    for (int i = 0; i < 2 && port > 0; i++) {
        char why[MDI_ERR_LEN];
        lobby l;
        lobby_init(&l, lfd, 2, keys[i], 2, 1, 3, "test lobby");
        int got = lobby_case(&l, port, keys[i], 2, 0, why);
        test_result(got == 0, i ? "epoch: lobby expecting run epoch 3 refuses a sealed connection for 2"
                                : "epoch: lobby expecting run epoch 3 refuses a plain connection for 2", "%s", why);
        got = lobby_case(&l, port, keys[i], 3, 1, why);
        test_result(got == 1, i ? "epoch: lobby expecting run epoch 3 greets a sealed connection for 3"
                                : "epoch: lobby expecting run epoch 3 greets a plain connection for 3", "%s", why);
        l.expect_epoch = PROTO_EPOCH_ANY;
        got = lobby_case(&l, port, keys[i], 5, 1, why);
        test_result(got == 1, i ? "epoch: lobby taking any epoch greets a sealed connection and tells its epoch 5"
                                : "epoch: lobby taking any epoch greets a plain connection and tells its epoch 5",
                    "%s", why);
        lobby_clear(&l);
    }
    test_result(port > 0, "epoch: lobby on a port of its own", "%s", err);
    if (lfd >= 0) net_close(lfd);
}

/* ---- frames ---- */

#define DIM 64
static proto_limits lim = {.dim = DIM, .max_batch = 4, .n_samples = 2};

static void fill_data(proto_frame *f, uint32_t pos)
{
    f->h = proto_header_make(PROTO_DATA);
    f->h.sample_id = 1;
    f->h.pos = pos;
    f->h.n_tokens = 2;
    f->h.dtype = DTYPE_F32;
    f->h.payload_len = 2 * DIM * sizeof(float);
    float *x = (float *)f->payload;
    for (int i = 0; i < 2 * DIM; i++) x[i] = 0.25f * (float)i + (float)pos;
}

/* The bytes one sealed frame takes on the wire. */
static size_t wire_len(const proto_frame *f)
{
    return PROTO_HEADER_SIZE + (size_t)f->h.payload_len + SEAL_FRAME_OVERHEAD(f->h.payload_len);
}

/* Seals frames (positions pos[0..n)) with tx and returns their bytes. */
static size_t seal_to_bytes(seal_channel *tx, const uint32_t *pos, int n, uint8_t *out, size_t *lens)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    proto_frame *f = proto_frame_new(4 * DIM * sizeof(float));
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (pos[i] == UINT32_MAX) {
            f->h = proto_header_make(PROTO_STOP);
        } else {
            fill_data(f, pos[i]);
        }
        size_t len = wire_len(f);
        seal_write_frame(tx, sv[0], f, 1, NULL, NULL);
        net_read_full(sv[1], out + total, len, 1, NULL, NULL, NULL);
        lens[i] = len;
        total += len;
    }
    proto_frame_free(f);
    close(sv[0]);
    close(sv[1]);
    return total;
}

/* Feeds bytes to a receiver with rx and reads frames until one fails:
 * returns the number read, and the error of the failing one. */
static int open_bytes(seal_channel *rx, const uint8_t *bytes, size_t len, int *rc, char *err, uint32_t *last_pos)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    net_write_full(sv[0], bytes, len, 1, NULL, NULL);
    shutdown(sv[0], SHUT_WR);
    proto_frame *f = proto_frame_new(4 * DIM * sizeof(float));
    int n = 0;
    for (;;) {
        *rc = seal_read_frame(rx, sv[1], f, &lim, 1, 1, NULL, err);
        if (*rc) break;
        n++;
        *last_pos = f->h.pos;
        if (f->h.type == PROTO_DATA) {
            const float *x = (const float *)f->payload;
            if (x[3] != 0.75f + (float)f->h.pos) {
                *rc = -100;
                snprintf(err, MDI_ERR_LEN, "payload differs after the round trip");
                break;
            }
        }
    }
    proto_frame_free(f);
    close(sv[0]);
    close(sv[1]);
    return n;
}

/* A fresh pair of channels sharing a session key. */
static void channels(seal_channel *tx, seal_channel *rx)
{
    memset(tx, 0, sizeof(*tx));
    tx->on = 1;
    for (int i = 0; i < 32; i++) tx->key[i] = (uint8_t)(7 * i + 1);
    *rx = *tx;
}

static int contains(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(hay + i, needle, m)) return 1;
    return 0;
}

static void test_frames(void)
{
    static uint8_t bytes[1 << 16], edited[1 << 16];
    size_t lens[8];
    seal_channel tx, rx;
    uint32_t pos[] = {0, 2, 4, UINT32_MAX};
    channels(&tx, &rx);
    size_t n = seal_to_bytes(&tx, pos, 4, bytes, lens);
    int rc;
    uint32_t last = 0;
    char err[MDI_ERR_LEN] = "";
    int got = open_bytes(&rx, bytes, n, &rc, err, &last);
    test_result(got == 4 && rc == MDI_ENET, "seal frames round trip (DATA x3, STOP)", "%d frames, then rc %d (%s)", got,
                rc, err);
    float probe = 0.75f + 2.0f;
    test_result(!contains(bytes, n, "MDIR", 4) && !contains(bytes, n, &probe, sizeof(probe)),
                "seal frames: no magic and no activation value in clear", "found in the sealed bytes");
    test_result(n == 3 * (PROTO_HEADER_SIZE + 2 * DIM * 4 + 32) + PROTO_HEADER_SIZE + 16,
                "seal frames: 32 bytes of overhead per frame with a payload", "%zu bytes", n);

    /* One byte flipped in the second frame's payload. */
    memcpy(edited, bytes, n);
    edited[lens[0] + 70] ^= 1;
    channels(&tx, &rx);
    got = open_bytes(&rx, edited, n, &rc, err, &last);
    test_result(got == 1 && rc == MDI_EAUTH && strstr(err, "fails authentication"), "seal: an altered frame is refused",
                "%d frames, rc %d (%s)", got, rc, err);

    /* The first frame sent twice. */
    memcpy(edited, bytes, lens[0]);
    memcpy(edited + lens[0], bytes, n);
    channels(&tx, &rx);
    got = open_bytes(&rx, edited, lens[0] + n, &rc, err, &last);
    test_result(got == 1 && rc == MDI_EAUTH, "seal: a replayed frame is refused", "%d frames, rc %d (%s)", got, rc, err);

    /* The second and third frames swapped. */
    memcpy(edited, bytes, lens[0]);
    memcpy(edited + lens[0], bytes + lens[0] + lens[1], lens[2]);
    memcpy(edited + lens[0] + lens[2], bytes + lens[0], lens[1]);
    memcpy(edited + lens[0] + lens[1] + lens[2], bytes + lens[0] + lens[1] + lens[2], lens[3]);
    channels(&tx, &rx);
    got = open_bytes(&rx, edited, n, &rc, err, &last);
    test_result(got == 1 && rc == MDI_EAUTH, "seal: reordered frames are refused", "%d frames, rc %d (%s)", got, rc, err);

    /* The second frame dropped. */
    memcpy(edited, bytes, lens[0]);
    memcpy(edited + lens[0], bytes + lens[0] + lens[1], n - lens[0] - lens[1]);
    channels(&tx, &rx);
    got = open_bytes(&rx, edited, n - lens[1], &rc, err, &last);
    test_result(got == 1 && rc == MDI_EAUTH, "seal: a dropped frame is noticed at the next", "%d frames, rc %d (%s)",
                got, rc, err);

    /* A frame of another connection (another key). */
    channels(&tx, &rx);
    rx.key[0] ^= 1;
    got = open_bytes(&rx, bytes, n, &rc, err, &last);
    test_result(got == 0 && rc == MDI_EAUTH, "seal: a frame under another session key is refused",
                "%d frames, rc %d (%s)", got, rc, err);

    /* A plain frame sent into a sealed connection. */
    seal_channel plain = {0};
    channels(&tx, &rx);
    n = seal_to_bytes(&plain, pos, 1, bytes, lens);
    got = open_bytes(&rx, bytes, n, &rc, err, &last);
    test_result(got == 0 && rc == MDI_EAUTH, "seal: an injected plain frame is refused", "%d frames, rc %d (%s)", got,
                rc, err);
}

static void test_http(void)
{
    char header[AUTH_HTTP_HEADER_LEN], nonce[64], body[65], err[MDI_ERR_LEN] = "";
    auth_digest_hex("{}", 2, body);
    auth_replay *rp = auth_replay_new();
    auth_http_claim claim;
    auth_http_sign(&k_right, "POST", "/start", body, header, nonce);
    int64_t now = (int64_t)time(NULL);
    test_result(!strstr(header, "s3cret"), "auth header does not carry the secret", "%s", header);
    int rc = auth_http_check(&k_right, rp, "POST", "/start", header, now, &claim, err);
    test_result(rc == 0 && !strcmp(claim.body_hex, body), "auth request verifies", "rc %d (%s)", rc, err);
    rc = auth_http_check(&k_right, rp, "POST", "/start", header, now, &claim, err);
    test_result(rc == MDI_EAUTH && strstr(err, "replayed"), "auth replayed request refused", "rc %d (%s)", rc, err);
    auth_http_sign(&k_right, "GET", "/", body, header, nonce);
    rc = auth_http_check(&k_right, rp, "PUT", "/stop", header, now, &claim, err);
    test_result(rc == MDI_EAUTH && strstr(err, "wrong secret"), "auth: a MAC for another method and path refused",
                "rc %d (%s)", rc, err);
    auth_http_sign(&k_wrong, "GET", "/", body, header, nonce);
    rc = auth_http_check(&k_right, rp, "GET", "/", header, now, &claim, err);
    test_result(rc == MDI_EAUTH && strstr(err, "wrong secret"), "auth wrong secret refused", "rc %d (%s)", rc, err);
    auth_http_sign(&k_right, "GET", "/", body, header, nonce);
    rc = auth_http_check(&k_right, rp, "GET", "/", header, now + 1000, &claim, err);
    test_result(rc == MDI_EAUTH && strstr(err, "clock"), "auth stale timestamp refused", "rc %d (%s)", rc, err);
    rc = auth_http_check(&k_right, rp, "GET", "/", NULL, now, &claim, err);
    test_result(rc == MDI_EAUTH && strstr(err, "missing"), "auth missing header refused", "rc %d (%s)", rc, err);
    rc = auth_http_check(&k_right, rp, "GET", "/", "v1 ts=1 nonce=zz mac=00", now, &claim, err);
    test_result(rc == MDI_EAUTH && strstr(err, "malformed"), "auth malformed header refused", "rc %d (%s)", rc, err);

    char answer[AUTH_HTTP_HEADER_LEN];
    auth_http_sign_answer(&k_right, nonce, 200, "{\"a\":1}", 7, answer);
    test_result(auth_http_verify_answer(&k_right, nonce, 200, "{\"a\":1}", 7, answer) &&
                    !auth_http_verify_answer(&k_right, nonce, 200, "{\"a\":2}", 7, answer) &&
                    !auth_http_verify_answer(&k_right, "00", 200, "{\"a\":1}", 7, answer) &&
                    !auth_http_verify_answer(&k_wrong, nonce, 200, "{\"a\":1}", 7, answer) &&
                    !auth_http_verify_answer(&k_right, nonce, 200, "{\"a\":1}", 7, NULL),
                "auth answers verify only for their request, status and body", "%s", answer);
    auth_replay_free(rp);
}

int main(void)
{
    char err[MDI_ERR_LEN];
    double t0 = time_now();
    if (auth_keys_derive(&k_right, "s3cret", err) || auth_keys_derive(&k_wrong, "s3cret!", err) ||
        auth_keys_derive(&k_none, "", err)) {
        test_result(0, "auth keys", "%s", err);
        return 1;
    }
    double t1 = time_now();
    auth_keys again;
    auth_keys_derive(&again, "s3cret", err);
    printf("INFO: key stretching %.0f ms per secret, then cached (%.3f ms)\n", (t1 - t0) * 500, (time_now() - t1) * 1e3);
    test_result(k_right.on && !k_none.on && memcmp(k_right.ring, k_wrong.ring, 32) != 0 &&
                    memcmp(k_right.ring, k_right.http, 32) != 0 && memcmp(&again, &k_right, sizeof(again)) == 0,
                "auth keys: per secret, per use, cached", "keys do not differ as they should");
    test_handshake();
    test_accept_steps();
    test_epoch();
    test_frames();
    test_http();
    return test_failures;
}
