/*
 * proto: ring frames (layout in proto.h).
 */
#include "proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net.h"
#include "util.h"

static const char *proto_type_names[PROTO_TYPE_END] = {
    [PROTO_HELLO] = "HELLO", [PROTO_DATA] = "DATA", [PROTO_RELEASE] = "RELEASE",
    [PROTO_STOP] = "STOP", [PROTO_ERROR] = "ERROR", [PROTO_KEEPALIVE] = "KEEPALIVE",
};

const char *proto_type_name(int type)
{
    if (type <= 0 || type >= PROTO_TYPE_END) return "?";
    return proto_type_names[type];
}

/* 1 when frames may carry dtype code t: any type of the traits table. */
static int proto_dtype_known(uint32_t t)
{
    return t < DTYPE_COUNT;
}

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

void proto_header_encode(const proto_header *h, uint8_t out[PROTO_HEADER_SIZE])
{
    put_u32(out + 0, h->magic);
    put_u16(out + 4, h->version);
    put_u16(out + 6, h->type);
    put_u32(out + 8, h->sample_id);
    put_u32(out + 12, h->pos);
    put_u32(out + 16, h->n_tokens);
    put_u16(out + 20, h->dtype);
    put_u16(out + 22, h->flags);
    put_u64(out + 24, h->payload_len);
    put_u32(out + 32, h->seq);
    put_u32(out + 36, h->epoch);
}

void proto_header_decode(proto_header *h, const uint8_t in[PROTO_HEADER_SIZE])
{
    h->magic = get_u32(in + 0);
    h->version = get_u16(in + 4);
    h->type = get_u16(in + 6);
    h->sample_id = get_u32(in + 8);
    h->pos = get_u32(in + 12);
    h->n_tokens = get_u32(in + 16);
    h->dtype = get_u16(in + 20);
    h->flags = get_u16(in + 22);
    h->payload_len = get_u64(in + 24);
    h->seq = get_u32(in + 32);
    h->epoch = get_u32(in + 36);
}

proto_header proto_header_make(int type)
{
    proto_header h;
    memset(&h, 0, sizeof(h));
    h.magic = PROTO_MAGIC;
    h.version = PROTO_VERSION;
    h.type = (uint16_t)type;
    return h;
}

int proto_header_check(const proto_header *h, const proto_limits *lim, char *err)
{
    if (h->magic != PROTO_MAGIC)
        return mdi_fail(err, MDI_EPROTO, "bad magic 0x%08x (expected 0x%08x \"MDIR\")",
                        h->magic, PROTO_MAGIC);
    if (h->version != PROTO_VERSION)
        return mdi_fail(err, MDI_EPROTO, "protocol version %u (this node speaks %d)",
                        h->version, PROTO_VERSION);
    if (h->type == 0 || h->type >= PROTO_TYPE_END)
        return mdi_fail(err, MDI_EPROTO, "unknown frame type %u", h->type);
    if (h->payload_len > PROTO_PAYLOAD_MAX)
        return mdi_fail(err, MDI_EPROTO, "%s frame payload_len %llu exceeds the maximum %llu",
                        proto_type_name(h->type), (unsigned long long)h->payload_len,
                        (unsigned long long)PROTO_PAYLOAD_MAX);
    switch (h->type) {
    case PROTO_HELLO:
        if (h->payload_len > PROTO_SECRET_MAX)
            return mdi_fail(err, MDI_EPROTO, "HELLO payload_len %llu exceeds %d",
                            (unsigned long long)h->payload_len, PROTO_SECRET_MAX);
        break;
    case PROTO_ERROR:
        if (h->payload_len > PROTO_TEXT_MAX)
            return mdi_fail(err, MDI_EPROTO, "ERROR payload_len %llu exceeds %d",
                            (unsigned long long)h->payload_len, PROTO_TEXT_MAX);
        break;
    case PROTO_RELEASE:
    case PROTO_STOP:
    case PROTO_KEEPALIVE:
        if (h->payload_len != 0)
            return mdi_fail(err, MDI_EPROTO, "%s frame with payload_len %llu (expected 0)",
                            proto_type_name(h->type), (unsigned long long)h->payload_len);
        break;
    case PROTO_DATA: {
        if (!proto_dtype_known(h->dtype))
            return mdi_fail(err, MDI_EPROTO, "DATA frame with unknown dtype %u", h->dtype);
        dtype_t t = (dtype_t)h->dtype;
        if (h->n_tokens == 0) return mdi_fail(err, MDI_EPROTO, "DATA frame with n_tokens 0");
        if (lim && lim->max_batch > 0 && h->n_tokens > (uint32_t)lim->max_batch)
            return mdi_fail(err, MDI_EPROTO, "DATA frame n_tokens %u exceeds max_batch %d",
                            h->n_tokens, lim->max_batch);
        if (lim && lim->dim > 0) {
            if (!dtype_row_ok(t, lim->dim))
                return mdi_fail(err, MDI_EPROTO, "DATA frame dtype %s: dim %d is not a multiple of its block of %d",
                                dtype_name(t), lim->dim, dtype_block_size(t));
            size_t row = dtype_row_size(t, lim->dim);
            uint64_t want = (uint64_t)h->n_tokens * (uint64_t)row;
            if (h->payload_len != want)
                return mdi_fail(err, MDI_EPROTO,
                                "DATA frame payload_len %llu, expected %llu (n_tokens %u x %zu bytes per %s row of dim %d)",
                                (unsigned long long)h->payload_len, (unsigned long long)want,
                                h->n_tokens, row, dtype_name(t), lim->dim);
        }
        break;
    }
    default:
        break;
    }
    if ((h->type == PROTO_DATA || h->type == PROTO_RELEASE) && lim && lim->n_samples > 0 &&
        h->sample_id >= lim->n_samples)
        return mdi_fail(err, MDI_EPROTO, "%s frame for sample %u, the run has %u samples",
                        proto_type_name(h->type), h->sample_id, lim->n_samples);
    return 0;
}

proto_frame *proto_frame_new(size_t cap)
{
    proto_frame *f = calloc(1, sizeof(*f));
    if (!f) return NULL;
    f->payload = malloc(cap + PROTO_FRAME_SLACK);
    if (!f->payload) {
        free(f);
        return NULL;
    }
    f->cap = cap;
    return f;
}

void proto_frame_free(proto_frame *f)
{
    if (!f) return;
    free(f->payload);
    free(f);
}

void proto_frame_set_text(proto_frame *f, int type, const char *text)
{
    size_t n = strlen(text);
    size_t lim = type == PROTO_ERROR ? PROTO_TEXT_MAX : PROTO_SECRET_MAX;
    if (n > lim) n = lim;
    if (n > f->cap) n = f->cap;
    f->h = proto_header_make(type);
    memcpy(f->payload, text, n);
    f->h.payload_len = n;
}

int proto_read_frame(int fd, proto_frame *f, const proto_limits *lim,
                     double idle_timeout_s, double body_timeout_s,
                     const volatile int *cancel, char *err)
{
    uint8_t raw[PROTO_HEADER_SIZE];
    size_t got = 0;
    char why[MDI_ERR_LEN];
    /* The first byte may be long in coming (the ring is idle between
     * runs' steps); once a frame has begun, the rest must follow promptly. */
    int rc = net_read_full(fd, raw, 1, idle_timeout_s, cancel, &got, why);
    if (rc == MDI_ENET && got == 0 && strstr(why, "closed by peer"))
        return mdi_fail(err, MDI_ENET, "connection closed by peer");
    if (rc) return mdi_fail(err, rc, "%s", why);
    rc = net_read_full(fd, raw + 1, PROTO_HEADER_SIZE - 1, body_timeout_s, cancel, &got, why);
    if (rc) return mdi_fail(err, rc, "truncated frame header (%zu of %d bytes): %s",
                            got + 1, PROTO_HEADER_SIZE, why);
    proto_header_decode(&f->h, raw);
    rc = proto_header_check(&f->h, lim, why);
    if (rc) {
        return mdi_fail(err, rc, "%s; header bytes %02x %02x %02x %02x %02x %02x %02x %02x ...",
                        why, raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]);
    }
    if (f->h.payload_len > f->cap)
        return mdi_fail(err, MDI_EPROTO, "%s frame payload_len %llu exceeds the buffer of %zu bytes",
                        proto_type_name(f->h.type), (unsigned long long)f->h.payload_len, f->cap);
    if (f->h.payload_len > 0) {
        rc = net_read_full(fd, f->payload, (size_t)f->h.payload_len, body_timeout_s, cancel, &got, why);
        if (rc) return mdi_fail(err, rc, "truncated %s frame payload (%zu of %llu bytes): %s",
                                proto_type_name(f->h.type), got,
                                (unsigned long long)f->h.payload_len, why);
    }
    return 0;
}

int proto_write_frame(int fd, const proto_frame *f, double timeout_s,
                      const volatile int *cancel, char *err)
{
    uint8_t raw[PROTO_HEADER_SIZE];
    proto_header_encode(&f->h, raw);
    int rc = net_write_full(fd, raw, PROTO_HEADER_SIZE, timeout_s, cancel, err);
    if (rc) return rc;
    if (f->h.payload_len > 0)
        rc = net_write_full(fd, f->payload, (size_t)f->h.payload_len, timeout_s, cancel, err);
    return rc;
}

int proto_epoch_refused(long long expect, uint32_t theirs, char *out, size_t n)
{
    if (expect == PROTO_EPOCH_ANY || expect == (long long)theirs) return 0;
    snprintf(out, n, "run epoch %lld here, the connection is for run epoch %u: %s", expect, theirs,
             (long long)theirs < expect ? "from before a reconfiguration"
                                        : "from a reconfiguration this node has not seen");
    return 1;
}

int proto_hello_send(int fd, uint32_t node_index, uint32_t epoch, double timeout_s, char *err)
{
    proto_frame *f = proto_frame_new(PROTO_TEXT_MAX);
    if (!f) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    f->h = proto_header_make(PROTO_HELLO);
    f->h.sample_id = node_index;
    f->h.epoch = epoch;
    int rc = proto_write_frame(fd, f, timeout_s, NULL, err);
    if (rc) goto cleanup;
    rc = proto_read_frame(fd, f, NULL, timeout_s, timeout_s, NULL, err);
    if (rc) goto cleanup;
    if (f->h.type == PROTO_ERROR) {
        /* The text is not NUL-terminated: search a bounded copy. */
        int n = (int)f->h.payload_len;
        char text[PROTO_TEXT_MAX + 1];
        memcpy(text, f->payload, (size_t)n);
        text[n] = 0;
        for (int i = 0; i < n; i++)
            if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) text[i] = '?';
        rc = mdi_fail(err, strstr(text, "secret") ? MDI_EAUTH : MDI_EPROTO, "refused by peer: %.300s", text);
        goto cleanup;
    }
    if (f->h.type != PROTO_HELLO)
        rc = mdi_fail(err, MDI_EPROTO, "expected HELLO in answer, got %s", proto_type_name(f->h.type));
cleanup:
    proto_frame_free(f);
    return rc;
}

int proto_hello_accept(int fd, double timeout_s, long long expect_epoch, uint32_t *node_index, uint32_t *epoch,
                       char *err)
{
    proto_frame *f = proto_frame_new(PROTO_TEXT_MAX);
    if (!f) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    int rc = proto_read_frame(fd, f, NULL, timeout_s, timeout_s, NULL, err);
    if (rc) goto cleanup;
    const char *refusal = NULL;
    char words[160];
    if (f->h.type != PROTO_HELLO) {
        rc = mdi_fail(err, MDI_EPROTO, "expected HELLO first, got %s", proto_type_name(f->h.type));
        refusal = "expected HELLO first";
    } else if (f->h.flags & PROTO_FLAG_SEALED) {
        rc = mdi_fail(err, MDI_EAUTH, "node %u has a shared secret set, this node has none", f->h.sample_id);
        refusal = "this node has no shared secret set; the two must agree";
    } else if (f->h.payload_len != 0) {
        /* An older node sent its secret in clear: never compared, refused. */
        rc = mdi_fail(err, MDI_EPROTO, "HELLO from node %u carries %llu bytes (an older node sending a secret?)",
                      f->h.sample_id, (unsigned long long)f->h.payload_len);
        refusal = "HELLO with a payload: this node speaks the secret's challenge-response; upgrade the peer";
    } else if (proto_epoch_refused(expect_epoch, f->h.epoch, words, sizeof(words))) {
        refusal = words;
        rc = mdi_fail(err, MDI_EPROTO, "HELLO from node %u: %s", f->h.sample_id, refusal);
    }
    if (refusal) {
        proto_frame_set_text(f, PROTO_ERROR, refusal);
        proto_write_frame(fd, f, 1.0, NULL, NULL);
        goto cleanup;
    }
    if (node_index) *node_index = f->h.sample_id;
    if (epoch) *epoch = f->h.epoch;
    f->h = proto_header_make(PROTO_HELLO);
    rc = proto_write_frame(fd, f, timeout_s, NULL, err);
cleanup:
    proto_frame_free(f);
    return rc;
}

int proto_wire_dtype_check(dtype_t dtype, int dim, char *err)
{
    if (!proto_dtype_known(dtype))
        return mdi_fail(err, MDI_EARG, "wire dtype %d: unknown (expected %s)", (int)dtype, dtype_names());
    if (!dtype_row_ok(dtype, dim))
        return mdi_fail(err, MDI_EARG, "wire dtype %s needs the model's hidden size (dim) to be a multiple of %d; dim is %d",
                        dtype_name(dtype), dtype_block_size(dtype), dim);
    return MDI_OK;
}

void proto_pack(const float *x, size_t count, dtype_t dtype, void *out)
{
    dtype_convert(out, dtype, x, DTYPE_F32, count);
}

void proto_unpack(const void *in, size_t count, dtype_t dtype, float *x)
{
    dtype_convert(x, DTYPE_F32, in, dtype, count);
}
