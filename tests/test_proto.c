/* test_proto: ring frames: layout, validation, reading from real sockets
 * (truncated, garbage, stalled), the HELLO handshake, wire dtypes. */
#include <math.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"
#include "test.h"
#include "util.h"

static proto_limits lim = {.dim = 8, .max_batch = 4, .n_samples = 3};

static void test_layout(void)
{
    proto_header h = proto_header_make(PROTO_DATA);
    h.sample_id = 2;
    h.pos = 0x01020304;
    h.n_tokens = 3;
    h.dtype = DTYPE_BF16;
    h.flags = PROTO_FLAG_LOGITS;
    h.payload_len = 0x1122334455ull;
    h.seq = 7;
    h.epoch = 0x0a0b0c0d;
    uint8_t raw[PROTO_HEADER_SIZE];
    proto_header_encode(&h, raw);
    test_result(raw[36] == 0x0d && raw[39] == 0x0a, "proto run epoch at offset 36", "%02x %02x", raw[36], raw[39]);
    test_result(!memcmp(raw, "MDIR", 4), "proto magic bytes", "got %02x %02x %02x %02x", raw[0], raw[1], raw[2], raw[3]);
    test_result(raw[12] == 4 && raw[15] == 1, "proto little-endian pos", "bytes %02x..%02x", raw[12], raw[15]);
    test_result(raw[24] == 0x55 && raw[28] == 0x11, "proto payload_len at offset 24", "%02x %02x", raw[24], raw[28]);
    proto_header d;
    proto_header_decode(&d, raw);
    test_result(!memcmp(&d, &h, sizeof(h)), "proto header round trip", "decoded header differs");
}

static void expect_reject(proto_header h, const char *name, const char *needle)
{
    char err[MDI_ERR_LEN] = "";
    int rc = proto_header_check(&h, &lim, err);
    test_result(rc == MDI_EPROTO && strstr(err, needle), name, "rc %d, err \"%s\" (wanted \"%s\")", rc, err, needle);
}

static void test_check(void)
{
    proto_header ok = proto_header_make(PROTO_DATA);
    ok.n_tokens = 2;
    ok.dtype = DTYPE_F16;
    ok.payload_len = 2 * 8 * 2;
    char err[MDI_ERR_LEN];
    test_result(proto_header_check(&ok, &lim, err) == 0, "proto valid DATA accepted", "%s", err);
    proto_header h = ok;
    h.magic = 0xdeadbeef;
    expect_reject(h, "proto bad magic", "bad magic 0xdeadbeef");
    h = ok;
    h.version = 9;
    expect_reject(h, "proto wrong version", "version 9");
    h = ok;
    h.type = 77;
    expect_reject(h, "proto unknown type", "type 77");
    h = ok;
    h.dtype = 9;
    expect_reject(h, "proto unknown dtype", "dtype 9");
    h = ok;
    h.payload_len = 1000;
    expect_reject(h, "proto DATA length not n_tokens x dim", "expected 32");
    h = ok;
    h.payload_len = (uint64_t)1 << 40;
    expect_reject(h, "proto oversized payload", "exceeds the maximum");
    h = ok;
    h.n_tokens = 5;
    h.payload_len = 5 * 8 * 2;
    expect_reject(h, "proto n_tokens beyond max_batch", "max_batch 4");
    h = ok;
    h.sample_id = 3;
    expect_reject(h, "proto sample id out of range", "sample 3");
    h = proto_header_make(PROTO_RELEASE);
    h.payload_len = 4;
    expect_reject(h, "proto RELEASE with payload", "expected 0");
    h = proto_header_make(PROTO_ERROR);
    h.payload_len = PROTO_TEXT_MAX + 1;
    expect_reject(h, "proto oversized ERROR text", "exceeds");
}

static void write_raw(int fd, const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n) abort();
}

static void test_read(void)
{
    int sv[2];
    char err[MDI_ERR_LEN];
    proto_frame *f = proto_frame_new(4 * 8 * 4);
    proto_frame *g = proto_frame_new(4 * 8 * 4);

    /* A valid frame goes through unchanged. */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    f->h = proto_header_make(PROTO_DATA);
    f->h.n_tokens = 2;
    f->h.dtype = DTYPE_F32;
    f->h.payload_len = 2 * 8 * 4;
    for (int i = 0; i < 16; i++) ((float *)f->payload)[i] = (float)i * 0.5f;
    int rc = proto_write_frame(sv[0], f, 1, NULL, err);
    rc = rc ? rc : proto_read_frame(sv[1], g, &lim, 1, 1, NULL, err);
    test_result(rc == 0 && g->h.n_tokens == 2 && !memcmp(g->payload, f->payload, 64), "proto frame over a socket",
                "rc %d: %s", rc, err);

    /* Truncated header, then the peer leaves. */
    uint8_t raw[PROTO_HEADER_SIZE];
    proto_header_encode(&f->h, raw);
    write_raw(sv[0], raw, 10);
    close(sv[0]);
    rc = proto_read_frame(sv[1], g, &lim, 1, 1, NULL, err);
    test_result(rc == MDI_ENET && strstr(err, "truncated frame header"), "proto truncated header", "rc %d: %s", rc, err);
    close(sv[1]);

    /* Truncated payload. */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    write_raw(sv[0], raw, PROTO_HEADER_SIZE);
    write_raw(sv[0], f->payload, 20);
    close(sv[0]);
    rc = proto_read_frame(sv[1], g, &lim, 1, 1, NULL, err);
    test_result(rc == MDI_ENET && strstr(err, "truncated DATA frame payload (20 of 64"), "proto truncated payload",
                "rc %d: %s", rc, err);
    close(sv[1]);

    /* Garbage: refused before any payload is read. */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    const char *junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n....................";
    write_raw(sv[0], junk, strlen(junk));
    rc = proto_read_frame(sv[1], g, &lim, 1, 1, NULL, err);
    test_result(rc == MDI_EPROTO && strstr(err, "bad magic") && strstr(err, "47 45 54"), "proto garbage named with bytes",
                "rc %d: %s", rc, err);
    close(sv[0]);
    close(sv[1]);

    /* A peer that stalls mid-frame is given up on in bounded time. */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    write_raw(sv[0], raw, 10);
    double t = time_now();
    rc = proto_read_frame(sv[1], g, &lim, 1, 0.3, NULL, err);
    t = time_now() - t;
    test_result(rc == MDI_ETIMEOUT && t < 1.5, "proto stalled peer times out", "rc %d after %.2f s: %s", rc, t, err);
    close(sv[0]);
    close(sv[1]);

    /* Idle wait honours a cancel flag. */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    volatile int cancel = 1;
    rc = proto_read_frame(sv[1], g, &lim, -1, 1, &cancel, err);
    test_result(rc == MDI_ESTATE, "proto idle read cancelled", "rc %d", rc);
    close(sv[0]);
    close(sv[1]);
    proto_frame_free(f);
    proto_frame_free(g);
}

typedef struct {
    int fd;
    long long expect_epoch;
    int rc;
    uint32_t index, epoch;
    char err[MDI_ERR_LEN];
} hello_side;

static void *hello_acceptor(void *arg)
{
    hello_side *h = arg;
    h->rc = proto_hello_accept(h->fd, 1, h->expect_epoch, &h->index, &h->epoch, h->err);
    return NULL;
}

/* A plain HELLO for run epoch `epoch` to an acceptor expecting expect. */
static void hello_epoch_case(uint32_t epoch, long long expect, int want, const char *words, const char *name)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    hello_side acc = {.fd = sv[1], .expect_epoch = expect, .epoch = 12345};
    pthread_t th;
    pthread_create(&th, NULL, hello_acceptor, &acc);
    char err[MDI_ERR_LEN] = "";
    int rc = proto_hello_send(sv[0], 3, epoch, 1, err);
    pthread_join(th, NULL);
    int ok = rc == want && acc.rc == want;
    if (want == 0) ok = ok && acc.index == 3 && acc.epoch == epoch;
    else ok = ok && strstr(err, "refused by peer") && strstr(err, words) && strstr(acc.err, words) &&
              strstr(acc.err, "node 3");
    test_result(ok, name, "sender rc %d (%s), acceptor rc %d (%s), epoch %u", rc, err, acc.rc, acc.err, acc.epoch);
    close(sv[0]);
    close(sv[1]);
}

/* The plain HELLO (no secret: seal.h has the challenge-response). */
static void test_hello(void)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    hello_side acc = {.fd = sv[1], .expect_epoch = PROTO_EPOCH_ANY};
    pthread_t th;
    pthread_create(&th, NULL, hello_acceptor, &acc);
    char err[MDI_ERR_LEN] = "";
    int rc = proto_hello_send(sv[0], 3, 0, 1, err);
    pthread_join(th, NULL);
    test_result(rc == 0 && acc.rc == 0 && acc.index == 3, "proto HELLO without secret",
                "sender rc %d (%s), acceptor rc %d (%s), index %u", rc, err, acc.rc, acc.err, acc.index);
    close(sv[0]);
    close(sv[1]);

    /* An older node's HELLO carrying its secret: refused, never compared. */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    acc = (hello_side){.fd = sv[1], .expect_epoch = PROTO_EPOCH_ANY};
    pthread_create(&th, NULL, hello_acceptor, &acc);
    proto_frame *f = proto_frame_new(PROTO_TEXT_MAX);
    proto_frame_set_text(f, PROTO_HELLO, "s3cret");
    proto_write_frame(sv[0], f, 1, NULL, err);
    rc = proto_read_frame(sv[0], f, NULL, 1, 1, NULL, err);
    pthread_join(th, NULL);
    test_result(acc.rc == MDI_EPROTO && rc == 0 && f->h.type == PROTO_ERROR, "proto HELLO with a payload refused",
                "acceptor rc %d (%s), answer %s", acc.rc, acc.err, proto_type_name(f->h.type));
    proto_frame_free(f);
    close(sv[0]);
    close(sv[1]);

    /* The run epoch the connection is made for. */
    hello_epoch_case(2, 2, 0, "", "proto HELLO of the expected run epoch greeted");
    hello_epoch_case(7, PROTO_EPOCH_ANY, 0, "", "proto HELLO: an acceptor taking any epoch greets it and tells it");
    hello_epoch_case(2, 3, MDI_EPROTO, "run epoch 3 here, the connection is for run epoch 2: from before a reconfiguration",
                     "proto HELLO of an older run epoch refused, both epochs named on both sides");
    hello_epoch_case(4, 3, MDI_EPROTO, "run epoch 3 here, the connection is for run epoch 4",
                     "proto HELLO of a later run epoch refused");
}

static void test_pack(void)
{
    float x[5] = {1.0f, -2.5f, 3.14159f, 1e-3f, 65504.0f}, y[5];
    uint8_t buf[20];
    proto_pack(x, 5, DTYPE_F32, buf);
    proto_unpack(buf, 5, DTYPE_F32, y);
    test_result(!memcmp(x, y, sizeof(x)), "proto f32 wire is exact", "differs");
    proto_pack(x, 5, DTYPE_BF16, buf);
    proto_unpack(buf, 5, DTYPE_BF16, y);
    float worst = 0;
    for (int i = 0; i < 5; i++) worst = fmaxf(worst, fabsf(y[i] - x[i]) / fabsf(x[i]));
    test_result(worst < 1.0f / 128, "proto bf16 wire within rounding", "relative error %g", worst);
    proto_pack(x, 5, DTYPE_F16, buf);
    proto_unpack(buf, 5, DTYPE_F16, y);
    worst = 0;
    for (int i = 0; i < 5; i++) worst = fmaxf(worst, fabsf(y[i] - x[i]) / fabsf(x[i]));
    test_result(worst < 1.0f / 1024, "proto f16 wire within rounding", "relative error %g", worst);
}

/* Q8_0 on the wire: frames of dim 64 (two blocks of 34 bytes per row),
 * validated to the byte; dims that are not a multiple of 32 refused when a
 * run is configured; unknown dtype codes refused; the values come back
 * within Q8_0's rounding (half a step of amax / 127 per block). */
static void test_wire_q8_0(void)
{
    proto_limits l64 = {.dim = 64, .max_batch = 4, .n_samples = 3};
    char err[MDI_ERR_LEN] = "";
    proto_header h = proto_header_make(PROTO_DATA);
    h.n_tokens = 3;
    h.dtype = DTYPE_Q8_0;
    h.payload_len = 3 * 2 * 34;
    int rc = proto_header_check(&h, &l64, err);
    test_result(rc == 0, "proto q8_0 DATA of 3 x 2 blocks accepted", "rc %d: %s", rc, err);
    h.payload_len = 3 * 64;
    rc = proto_header_check(&h, &l64, err);
    test_result(rc == MDI_EPROTO && strstr(err, "expected 204") && strstr(err, "68 bytes per q8_0 row"),
                "proto q8_0 DATA with one byte per value refused", "rc %d: %s", rc, err);
    h.payload_len = 3 * 2 * 34 + 1;
    rc = proto_header_check(&h, &l64, err);
    test_result(rc == MDI_EPROTO, "proto q8_0 DATA one byte long refused", "rc %d: %s", rc, err);
    h.payload_len = 2 * 34;
    h.n_tokens = 1;
    h.dtype = DTYPE_Q8_0;
    rc = proto_header_check(&h, &lim, err); /* dim 8 */
    test_result(rc == MDI_EPROTO && strstr(err, "dim 8 is not a multiple of its block of 32"),
                "proto q8_0 DATA with dim 8 refused", "rc %d: %s", rc, err);
    h = proto_header_make(PROTO_DATA);
    h.n_tokens = 1;
    h.dtype = DTYPE_COUNT;
    h.payload_len = 64;
    rc = proto_header_check(&h, &l64, err);
    test_result(rc == MDI_EPROTO && strstr(err, "unknown dtype"), "proto first dtype code past the table refused",
                "rc %d: %s", rc, err);

    rc = proto_wire_dtype_check(DTYPE_Q8_0, 64, err);
    test_result(rc == 0, "proto wire q8_0 with dim 64 configurable", "%s", err);
    rc = proto_wire_dtype_check(DTYPE_Q8_0, 172, err);
    test_result(rc == MDI_EARG && strstr(err, "multiple of 32") && strstr(err, "dim is 172"),
                "proto wire q8_0 with dim 172: one line naming dim", "rc %d: %s", rc, err);
    rc = proto_wire_dtype_check(DTYPE_F16, 172, err);
    test_result(rc == 0, "proto wire f16 with dim 172 configurable", "%s", err);

    /* Round trip through a socket, two rows. */
    enum { DIM = 64, ROWS = 2 };
    float x[ROWS * DIM], y[ROWS * DIM];
    for (int i = 0; i < ROWS * DIM; i++) x[i] = sinf((float)i * 0.37f) * (i < DIM ? 1.0f : 300.0f);
    proto_frame *f = proto_frame_new(ROWS * DIM * 4), *g = proto_frame_new(ROWS * DIM * 4);
    f->h = proto_header_make(PROTO_DATA);
    f->h.n_tokens = ROWS;
    f->h.dtype = DTYPE_Q8_0;
    f->h.payload_len = ROWS * dtype_row_size(DTYPE_Q8_0, DIM);
    proto_pack(x, ROWS * DIM, DTYPE_Q8_0, f->payload);
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    rc = proto_write_frame(sv[0], f, 1, NULL, err);
    rc = rc ? rc : proto_read_frame(sv[1], g, &l64, 1, 1, NULL, err);
    close(sv[0]);
    close(sv[1]);
    test_result(rc == 0 && g->h.payload_len == 136, "proto q8_0 frame over a socket: 136 bytes for 2 x 64 values",
                "rc %d: %s, payload_len %llu", rc, err, (unsigned long long)g->h.payload_len);
    proto_unpack(g->payload, ROWS * DIM, DTYPE_Q8_0, y);
    int within = 1;
    for (int b = 0; b < ROWS * DIM / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        /* half a step, plus the f16 rounding of the scale (2^-11 relative) */
        float bound = amax / 127 * 0.5f + amax * (1.0f / 2048) + 1e-7f;
        for (int i = 0; i < 32; i++)
            if (fabsf(y[b * 32 + i] - x[b * 32 + i]) > bound) within = 0;
    }
    test_result(within, "proto q8_0 wire within half a quantization step per block", "a value beyond its bound");
    proto_frame_free(f);
    proto_frame_free(g);
}

int main(void)
{
    test_layout();
    test_check();
    test_read();
    test_hello();
    test_pack();
    test_wire_q8_0();
    return test_failures;
}
