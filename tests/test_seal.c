/* test_seal: the ring's challenge-response (right and wrong secret, a side
 * without one, a HELLO for another node, a recorded handshake replayed) and
 * sealed frames (round trip; nothing in clear; altered, replayed, reordered
 * and dropped frames refused). */
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
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
    int rc;
    uint32_t from;
    seal_channel ch;
    char err[MDI_ERR_LEN];
} acceptor;

static void *acceptor_main(void *arg)
{
    acceptor *a = arg;
    a->rc = seal_accept(a->fd, a->k, a->self, a->expect, 2, &a->from, &a->ch, a->err);
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
    int rc = seal_connect(sv[0], ka, a, to, 2, &ch, err);
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
} tap;

static void *tap_main(void *arg)
{
    tap *t = arg;
    uint8_t b[512];
    for (;;) {
        ssize_t n = read(t->from, b, sizeof(b));
        if (n <= 0) break;
        if (t->len + (size_t)n <= sizeof(t->buf)) memcpy(t->buf + t->len, b, (size_t)n);
        t->len += (size_t)n;
        if (write(t->to, b, (size_t)n) != n) break;
    }
    shutdown(t->to, SHUT_WR);
    return NULL;
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
    socketpair(AF_UNIX, SOCK_STREAM, 0, ab);   /* A <-> tap */
    socketpair(AF_UNIX, SOCK_STREAM, 0, tb);   /* tap <-> B */
    acceptor acc = {.fd = tb[1], .k = &k_right, .self = 2, .expect = 1};
    tap up = {.from = ab[1], .to = tb[0]}, down = {.from = tb[0], .to = ab[1]};
    pthread_t th, t1, t2;
    pthread_create(&th, NULL, acceptor_main, &acc);
    pthread_create(&t1, NULL, tap_main, &up);
    pthread_create(&t2, NULL, tap_main, &down);
    seal_channel ch;
    char err[MDI_ERR_LEN] = "";
    int rc = seal_connect(ab[0], &k_right, 1, 2, 2, &ch, err);
    pthread_join(th, NULL);
    shutdown(ab[0], SHUT_RDWR);
    shutdown(tb[1], SHUT_RDWR);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
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
    int rc;
    seal_channel ch;
    char err[MDI_ERR_LEN];
} connector;

static void *connector_main(void *arg)
{
    connector *c = arg;
    c->rc = seal_connect(c->fd, &k_right, 1, 2, 2, &c->ch, c->err);
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
    int rc = wait_readable(sv[1]) ? seal_accept_begin(sv[1], &k_right, 2, 1, 2, &p, &done, &from, &ch, err) : -1;
    int rc2 = rc == 0 && done == 0 && wait_readable(sv[1]) ? seal_accept_finish(sv[1], &k_right, 2, &p, 2, &from, &ch, err)
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
    rc = seal_accept_begin(sv[1], &k_right, 2, 1, 2, &p, &done, &from, &ch, err);
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
    rc = seal_accept_begin(sv[1], &k_none, 2, 1, 2, &p, &done, &from, &ch, err);
    test_result(rc == 0 && done == 1 && from == 1 && !ch.on, "seal accept without a secret: one step, plain",
                "rc %d (%s), done %d", rc, err, done);
    proto_frame_free(f);
    close(sv[0]);
    close(sv[1]);
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
    test_frames();
    test_http();
    return test_failures;
}
