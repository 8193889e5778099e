/*
 * seal: authenticated ring connections (handshake and frame layout in
 * seal.h).
 */
#include "seal.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "net.h"
#include "util.h"

_Static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == SEAL_TAG_SIZE, "Poly1305 tags are 16 bytes");
_Static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == 32, "ChaCha20 keys are 32 bytes");
_Static_assert(PROTO_FRAME_SLACK >= SEAL_TAG_SIZE, "frames need room for a tag past their cap");

#define SEAL_M1_SIZE (4 + SEAL_NONCE_SIZE)
#define SEAL_M2_SIZE (SEAL_NONCE_SIZE + 32)
#define SEAL_M3_SIZE 32

void seal_channel_clear(seal_channel *ch)
{
    sodium_memzero(ch, sizeof(*ch));
}

static void seal_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t seal_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* HMAC(K, label || T), T as in seal.h. */
static void seal_mac(const auth_keys *k, char label, uint32_t a, uint32_t b, uint32_t epoch,
                     const uint8_t na[SEAL_NONCE_SIZE], const uint8_t nb[SEAL_NONCE_SIZE], uint8_t out[32])
{
    uint8_t t[1 + 11 + 12 + 2 * SEAL_NONCE_SIZE];
    t[0] = (uint8_t)label;
    memcpy(t + 1, "mdi-ring-v2", 11);
    seal_put_u32(t + 12, a);
    seal_put_u32(t + 16, b);
    seal_put_u32(t + 20, epoch);
    memcpy(t + 24, na, SEAL_NONCE_SIZE);
    memcpy(t + 24 + SEAL_NONCE_SIZE, nb, SEAL_NONCE_SIZE);
    crypto_auth_hmacsha256(out, t, sizeof(t), k->ring);
    sodium_memzero(t, sizeof(t));
}

/* Sends a HELLO of the handshake of a connection for run epoch epoch. */
static int seal_send_hello(int fd, proto_frame *f, uint32_t self, uint32_t epoch, const uint8_t *payload, size_t n,
                           double timeout_s, char *err)
{
    f->h = proto_header_make(PROTO_HELLO);
    f->h.sample_id = self;
    f->h.epoch = epoch;
    f->h.flags = PROTO_FLAG_SEALED;
    f->h.payload_len = n;
    if (n) memcpy(f->payload, payload, n);
    return proto_write_frame(fd, f, timeout_s, NULL, err);
}

/* Tells the peer why it is refused (best effort). */
static void seal_refuse(int fd, proto_frame *f, const char *text)
{
    proto_frame_set_text(f, PROTO_ERROR, text);
    proto_write_frame(fd, f, 1.0, NULL, NULL);
}

/* Reads the next handshake message: a sealed HELLO of exactly n bytes. An
 * ERROR from the peer becomes MDI_EAUTH (when it speaks of the secret) or
 * MDI_EPROTO with its words. */
static int seal_read_hello(int fd, proto_frame *f, size_t n, double timeout_s, const char *step, char *err)
{
    char why[MDI_ERR_LEN];
    int rc = proto_read_frame(fd, f, NULL, timeout_s, timeout_s, NULL, why);
    if (rc) return mdi_fail(err, rc, "handshake (%s): %s", step, why);
    if (f->h.type == PROTO_ERROR) {
        char text[PROTO_TEXT_MAX + 1];
        size_t len = (size_t)f->h.payload_len;
        memcpy(text, f->payload, len);
        text[len] = 0;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) text[i] = '?';
        return mdi_fail(err, strstr(text, "secret") ? MDI_EAUTH : MDI_EPROTO, "refused by peer: %.300s", text);
    }
    if (f->h.type != PROTO_HELLO || !(f->h.flags & PROTO_FLAG_SEALED) || f->h.payload_len != n)
        return mdi_fail(err, MDI_EPROTO, "handshake (%s): expected a sealed HELLO of %zu bytes, got %s (flags 0x%x, %llu bytes)",
                        step, n, proto_type_name(f->h.type), f->h.flags, (unsigned long long)f->h.payload_len);
    return 0;
}

static void seal_session_key(const auth_keys *k, uint32_t a, uint32_t b, uint32_t epoch,
                             const uint8_t na[SEAL_NONCE_SIZE], const uint8_t nb[SEAL_NONCE_SIZE], seal_channel *ch)
{
    seal_mac(k, 'S', a, b, epoch, na, nb, ch->key);
    ch->on = 1;
    ch->n = 0;
    ch->epoch = epoch;
}

int seal_connect(int fd, const auth_keys *k, uint32_t self, uint32_t peer, uint32_t epoch, double timeout_s,
                 seal_channel *ch, char *err)
{
    seal_channel_clear(ch);
    if (!k->on) {
        int rc = proto_hello_send(fd, self, epoch, timeout_s, err);
        if (rc == 0) ch->epoch = epoch;
        return rc;
    }
    proto_frame *f = proto_frame_new(PROTO_TEXT_MAX);
    if (!f) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    uint8_t m1[SEAL_M1_SIZE], na[SEAL_NONCE_SIZE], nb[SEAL_NONCE_SIZE], mac[32];
    randombytes_buf(na, sizeof(na));
    seal_put_u32(m1, peer);
    memcpy(m1 + 4, na, sizeof(na));
    int rc = seal_send_hello(fd, f, self, epoch, m1, sizeof(m1), timeout_s, err);
    if (rc) goto cleanup;
    if ((rc = seal_read_hello(fd, f, SEAL_M2_SIZE, timeout_s, "challenge", err))) goto cleanup;
    if (f->h.sample_id != peer) {
        seal_refuse(fd, f, "wrong node");
        rc = mdi_fail(err, MDI_EPROTO, "handshake: node %u answered, expected node %u", f->h.sample_id, peer);
        goto cleanup;
    }
    memcpy(nb, f->payload, sizeof(nb));
    seal_mac(k, 'B', self, peer, epoch, na, nb, mac);
    if (crypto_verify_32(mac, f->payload + SEAL_NONCE_SIZE) != 0) {
        seal_refuse(fd, f, "wrong secret: your proof does not verify with this node's secret");
        rc = mdi_fail(err, MDI_EAUTH, "wrong secret: node %u's proof does not verify with this node's secret", peer);
        goto cleanup;
    }
    seal_mac(k, 'A', self, peer, epoch, na, nb, mac);
    if ((rc = seal_send_hello(fd, f, self, epoch, mac, sizeof(mac), timeout_s, err))) goto cleanup;
    if ((rc = seal_read_hello(fd, f, 0, timeout_s, "acceptance", err))) goto cleanup;
    seal_session_key(k, self, peer, epoch, na, nb, ch);
cleanup:
    sodium_memzero(mac, sizeof(mac));
    proto_frame_free(f);
    return rc;
}

void seal_pending_clear(seal_pending *p)
{
    sodium_memzero(p, sizeof(*p));
}

int seal_accept_begin(int fd, const auth_keys *k, uint32_t self, int expect, long long expect_epoch,
                      double timeout_s, seal_pending *p, int *done, uint32_t *from, seal_channel *ch, char *err)
{
    seal_channel_clear(ch);
    seal_pending_clear(p);
    *done = 0;
    if (!k->on) {
        int rc = proto_hello_accept(fd, timeout_s, expect_epoch, from, &ch->epoch, err);
        if (rc == 0) *done = 1;
        else seal_channel_clear(ch);
        return rc;
    }
    proto_frame *f = proto_frame_new(PROTO_TEXT_MAX);
    if (!f) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    char why[MDI_ERR_LEN];
    int rc = proto_read_frame(fd, f, NULL, timeout_s, timeout_s, NULL, why);
    if (rc) {
        mdi_fail(err, rc, "%s", why);
        goto cleanup;
    }
    if (f->h.type != PROTO_HELLO) {
        seal_refuse(fd, f, "expected HELLO first");
        rc = mdi_fail(err, MDI_EPROTO, "expected HELLO first, got %s", proto_type_name(f->h.type));
        goto cleanup;
    }
    uint32_t a = f->h.sample_id;
    if (!(f->h.flags & PROTO_FLAG_SEALED)) {
        seal_refuse(fd, f, "this node requires the shared secret (set \"secret\")");
        rc = mdi_fail(err, MDI_EAUTH, "HELLO from node %u without the shared secret's challenge (its secret is not set)", a);
        goto cleanup;
    }
    if (f->h.payload_len != SEAL_M1_SIZE) {
        seal_refuse(fd, f, "malformed sealed HELLO");
        rc = mdi_fail(err, MDI_EPROTO, "sealed HELLO from node %u of %llu bytes, expected %d", a,
                 (unsigned long long)f->h.payload_len, SEAL_M1_SIZE);
        goto cleanup;
    }
    uint32_t b = seal_get_u32(f->payload);
    if (b != self) {
        char text[96];
        snprintf(text, sizeof(text), "this is node %u, not node %u", self, b);
        seal_refuse(fd, f, text);
        rc = mdi_fail(err, MDI_EPROTO, "HELLO from node %u meant for node %u (this is node %u)", a, b, self);
        goto cleanup;
    }
    if (expect >= 0 && a != (uint32_t)expect) {
        char text[96];
        snprintf(text, sizeof(text), "this node expects node %d, not node %u", expect, a);
        seal_refuse(fd, f, text);
        rc = mdi_fail(err, MDI_EPROTO, "HELLO from node %u, expected node %d", a, expect);
        goto cleanup;
    }
    char text[160];
    if (proto_epoch_refused(expect_epoch, f->h.epoch, text, sizeof(text))) {
        seal_refuse(fd, f, text);
        rc = mdi_fail(err, MDI_EPROTO, "HELLO from node %u: %s", a, text);
        goto cleanup;
    }
    p->a = a;
    p->epoch = f->h.epoch;
    memcpy(p->na, f->payload + 4, sizeof(p->na));
    randombytes_buf(p->nb, sizeof(p->nb));
    uint8_t m2[SEAL_M2_SIZE];
    memcpy(m2, p->nb, sizeof(p->nb));
    seal_mac(k, 'B', a, self, p->epoch, p->na, p->nb, m2 + SEAL_NONCE_SIZE);
    rc = seal_send_hello(fd, f, self, p->epoch, m2, sizeof(m2), timeout_s, err);
cleanup:
    if (rc) seal_pending_clear(p);
    proto_frame_free(f);
    return rc;
}

int seal_accept_finish(int fd, const auth_keys *k, uint32_t self, long long expect_epoch, seal_pending *p,
                       double timeout_s, uint32_t *from, seal_channel *ch, char *err)
{
    seal_channel_clear(ch);
    proto_frame *f = proto_frame_new(PROTO_TEXT_MAX);
    if (!f) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    char why[MDI_ERR_LEN];
    uint8_t mac[32];
    uint32_t a = p->a;
    int rc = seal_read_hello(fd, f, SEAL_M3_SIZE, timeout_s, "proof", why);
    if (rc) {
        mdi_fail(err, rc, "HELLO from node %u: %s", a, why);
        goto cleanup;
    }
    seal_mac(k, 'A', a, self, p->epoch, p->na, p->nb, mac);
    if (crypto_verify_32(mac, f->payload) != 0) {
        seal_refuse(fd, f, "wrong secret");
        rc = mdi_fail(err, MDI_EAUTH, "wrong secret in HELLO from node %u (its proof does not verify)", a);
        goto cleanup;
    }
    /* The expectation may have been set since the first HELLO (a secondary
     * whose run began meanwhile, lobby.h). */
    char text[160];
    if (proto_epoch_refused(expect_epoch, p->epoch, text, sizeof(text))) {
        seal_refuse(fd, f, text);
        rc = mdi_fail(err, MDI_EPROTO, "HELLO from node %u: %s", a, text);
        goto cleanup;
    }
    if ((rc = seal_send_hello(fd, f, self, p->epoch, NULL, 0, timeout_s, err))) goto cleanup;
    seal_session_key(k, a, self, p->epoch, p->na, p->nb, ch);
    if (from) *from = a;
cleanup:
    sodium_memzero(mac, sizeof(mac));
    seal_pending_clear(p);
    proto_frame_free(f);
    return rc;
}

int seal_accept(int fd, const auth_keys *k, uint32_t self, int expect, long long expect_epoch, double timeout_s,
                uint32_t *from, seal_channel *ch, char *err)
{
    seal_pending p;
    int done = 0;
    int rc = seal_accept_begin(fd, k, self, expect, expect_epoch, timeout_s, &p, &done, from, ch, err);
    if (rc == 0 && !done) rc = seal_accept_finish(fd, k, self, expect_epoch, &p, timeout_s, from, ch, err);
    return rc;
}

/* ---- frames ---- */

static void seal_nonce(uint64_t n, uint8_t nonce[12])
{
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(n >> (8 * i));
}

int seal_write_frame(seal_channel *ch, int fd, proto_frame *f, double timeout_s, const volatile int *cancel,
                     char *err)
{
    if (!ch->on) return proto_write_frame(fd, f, timeout_s, cancel, err);
    uint8_t raw[PROTO_HEADER_SIZE], head[PROTO_HEADER_SIZE + SEAL_TAG_SIZE], nonce[12];
    proto_header_encode(&f->h, raw);
    seal_nonce(ch->n, nonce);
    crypto_aead_chacha20poly1305_ietf_encrypt(head, NULL, raw, sizeof(raw), NULL, 0, NULL, nonce, ch->key);
    size_t len = (size_t)f->h.payload_len;
    if (len) {
        seal_nonce(ch->n + 1, nonce);
        crypto_aead_chacha20poly1305_ietf_encrypt_detached(f->payload, f->payload + len, NULL, f->payload, len,
                                                           raw, sizeof(raw), NULL, nonce, ch->key);
    }
    ch->n += len ? 2 : 1;
    int rc = net_write_full(fd, head, sizeof(head), timeout_s, cancel, err);
    if (rc == 0 && len) rc = net_write_full(fd, f->payload, len + SEAL_TAG_SIZE, timeout_s, cancel, err);
    return rc;
}

int seal_read_frame(seal_channel *ch, int fd, proto_frame *f, const proto_limits *lim, double idle_timeout_s,
                    double body_timeout_s, const volatile int *cancel, char *err)
{
    if (!ch->on) return proto_read_frame(fd, f, lim, idle_timeout_s, body_timeout_s, cancel, err);
    uint8_t head[PROTO_HEADER_SIZE + SEAL_TAG_SIZE], raw[PROTO_HEADER_SIZE], nonce[12];
    size_t got = 0;
    char why[MDI_ERR_LEN];
    int rc = net_read_full(fd, head, 1, idle_timeout_s, cancel, &got, why);
    if (rc == MDI_ENET && got == 0 && strstr(why, "closed by peer"))
        return mdi_fail(err, MDI_ENET, "connection closed by peer");
    if (rc) return mdi_fail(err, rc, "%s", why);
    rc = net_read_full(fd, head + 1, sizeof(head) - 1, body_timeout_s, cancel, &got, why);
    if (rc) return mdi_fail(err, rc, "truncated sealed frame header (%zu of %zu bytes): %s", got + 1, sizeof(head), why);
    seal_nonce(ch->n, nonce);
    if (crypto_aead_chacha20poly1305_ietf_decrypt(raw, NULL, NULL, head, sizeof(head), NULL, 0, nonce, ch->key) != 0)
        return mdi_fail(err, MDI_EAUTH,
                        "sealed frame %llu fails authentication (forged, replayed, reordered or altered on the way)",
                        (unsigned long long)ch->n);
    proto_header_decode(&f->h, raw);
    rc = proto_header_check(&f->h, lim, why);
    if (rc) return mdi_fail(err, rc, "%s", why);
    size_t len = (size_t)f->h.payload_len;
    if (len > f->cap)
        return mdi_fail(err, MDI_EPROTO, "%s frame payload_len %zu exceeds the buffer of %zu bytes",
                        proto_type_name(f->h.type), len, f->cap);
    if (len) {
        rc = net_read_full(fd, f->payload, len + SEAL_TAG_SIZE, body_timeout_s, cancel, &got, why);
        if (rc) return mdi_fail(err, rc, "truncated %s frame payload (%zu of %zu bytes): %s",
                                proto_type_name(f->h.type), got, len + SEAL_TAG_SIZE, why);
        seal_nonce(ch->n + 1, nonce);
        if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(f->payload, NULL, f->payload, len, f->payload + len,
                                                               raw, sizeof(raw), nonce, ch->key) != 0)
            return mdi_fail(err, MDI_EAUTH, "sealed %s frame %llu: its payload fails authentication (altered on the way)",
                            proto_type_name(f->h.type), (unsigned long long)ch->n + 1);
    }
    ch->n += len ? 2 : 1;
    return 0;
}
