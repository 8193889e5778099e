/*
 * auth: cluster keys and HTTP request authentication (see auth.h).
 */
#include "auth.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

_Static_assert(sizeof(crypto_hash_sha256_state) <= sizeof(((auth_digest *)0)->state),
               "auth_digest too small for crypto_hash_sha256_state");
_Static_assert(crypto_auth_hmacsha256_BYTES == 32, "HMAC-SHA-256 tags are 32 bytes");

/* ---- keys ---- */

/* Fixed: every node must derive the same key from the same secret. */
static const uint8_t auth_salt[crypto_pwhash_SALTBYTES] = "mdi cluster v1";

#define AUTH_CACHE_N 4
static pthread_mutex_t auth_cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int used;
    uint8_t tag[32];                 /* BLAKE2b of the secret */
    auth_keys keys;
} auth_cache[AUTH_CACHE_N];
static int auth_cache_next;

int auth_keys_derive(auth_keys *k, const char *secret, char *err)
{
    memset(k, 0, sizeof(*k));
    /* Picks libsodium's fastest implementations for this CPU; idempotent. */
    if (sodium_init() < 0) return mdi_fail(err, MDI_ENOMEM, "libsodium failed to initialise");
    if (!secret || !secret[0]) return 0;
    size_t n = strlen(secret);
    uint8_t tag[32];
    crypto_generichash(tag, sizeof(tag), (const uint8_t *)secret, n, NULL, 0);
    pthread_mutex_lock(&auth_cache_mu);
    for (int i = 0; i < AUTH_CACHE_N; i++) {
        if (auth_cache[i].used && sodium_memcmp(auth_cache[i].tag, tag, sizeof(tag)) == 0) {
            *k = auth_cache[i].keys;
            pthread_mutex_unlock(&auth_cache_mu);
            return 0;
        }
    }
    /* Held while stretching: two threads asking at once compute it once. */
    uint8_t master[AUTH_KEY_SIZE];
    if (crypto_pwhash(master, sizeof(master), secret, n, auth_salt, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                      crypto_pwhash_MEMLIMIT_INTERACTIVE, crypto_pwhash_ALG_ARGON2ID13) != 0) {
        pthread_mutex_unlock(&auth_cache_mu);
        return mdi_fail(err, MDI_ENOMEM, "deriving the keys of the shared secret: out of memory (Argon2id needs %zu MiB)",
                        (size_t)crypto_pwhash_MEMLIMIT_INTERACTIVE >> 20);
    }
    k->on = 1;
    crypto_kdf_derive_from_key(k->ring, sizeof(k->ring), 1, "mdi-ring", master);
    crypto_kdf_derive_from_key(k->http, sizeof(k->http), 2, "mdi-http", master);
    sodium_memzero(master, sizeof(master));
    int slot = auth_cache_next;
    auth_cache_next = (auth_cache_next + 1) % AUTH_CACHE_N;
    auth_cache[slot].used = 1;
    memcpy(auth_cache[slot].tag, tag, sizeof(tag));
    auth_cache[slot].keys = *k;
    pthread_mutex_unlock(&auth_cache_mu);
    return 0;
}

void auth_warn_open(void)
{
    log_warn("no shared secret: the cluster is open to anyone on the network, who can drive the nodes and "
             "read the activations; set \"secret\" in the nodes configuration (README: Security)");
}

/* ---- digests ---- */

void auth_digest_init(auth_digest *d)
{
    crypto_hash_sha256_init((crypto_hash_sha256_state *)(void *)d->state);
}

void auth_digest_update(auth_digest *d, const void *data, size_t len)
{
    crypto_hash_sha256_update((crypto_hash_sha256_state *)(void *)d->state, data, len);
}

void auth_digest_final_hex(auth_digest *d, char hex[65])
{
    uint8_t out[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final((crypto_hash_sha256_state *)(void *)d->state, out);
    sodium_bin2hex(hex, 65, out, sizeof(out));
}

void auth_digest_hex(const void *data, size_t len, char hex[65])
{
    auth_digest d;
    auth_digest_init(&d);
    auth_digest_update(&d, data, len);
    auth_digest_final_hex(&d, hex);
}

int auth_digest_file_hex(const char *path, char hex[65], char *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return mdi_fail(err, MDI_EIO, "%s: %s", path, strerror(errno));
    auth_digest d;
    auth_digest_init(&d);
    static _Thread_local uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) auth_digest_update(&d, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) return mdi_fail(err, MDI_EIO, "%s: read error", path);
    auth_digest_final_hex(&d, hex);
    return 0;
}

/* ---- HTTP ---- */

/* The MAC of the text parts joined by newlines, after a label. */
static void auth_mac_lines(const uint8_t key[AUTH_KEY_SIZE], uint8_t mac[32], const char *const *parts, int n)
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, AUTH_KEY_SIZE);
    for (int i = 0; i < n; i++) {
        if (i) crypto_auth_hmacsha256_update(&st, (const uint8_t *)"\n", 1);
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)parts[i], strlen(parts[i]));
    }
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));
}

static void auth_request_mac(const auth_keys *k, const char *method, const char *path, const char *body_hex,
                             const char *ts, const char *nonce_hex, uint8_t mac[32])
{
    const char *parts[] = {"mdi-http-v1 request", method, path, body_hex, ts, nonce_hex};
    auth_mac_lines(k->http, mac, parts, 6);
}

static void auth_answer_mac(const auth_keys *k, const char *nonce_hex, long status, const void *body,
                            size_t body_len, uint8_t mac[32])
{
    char code[24], body_hex[65];
    snprintf(code, sizeof(code), "%ld", status);
    auth_digest_hex(body, body_len, body_hex);
    const char *parts[] = {"mdi-http-v1 response", nonce_hex, code, body_hex};
    auth_mac_lines(k->http, mac, parts, 4);
}

void auth_http_sign(const auth_keys *k, const char *method, const char *path, const char *body_hex,
                    char *header, char *nonce_hex)
{
    uint8_t nonce[AUTH_NONCE_SIZE], mac[32];
    char ts[24], mac_hex[65];
    randombytes_buf(nonce, sizeof(nonce));
    sodium_bin2hex(nonce_hex, 2 * AUTH_NONCE_SIZE + 1, nonce, sizeof(nonce));
    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
    auth_request_mac(k, method, path, body_hex, ts, nonce_hex, mac);
    sodium_bin2hex(mac_hex, sizeof(mac_hex), mac, sizeof(mac));
    snprintf(header, AUTH_HTTP_HEADER_LEN, "v1 ts=%s nonce=%s body=%s mac=%s", ts, nonce_hex, body_hex, mac_hex);
}

/* The 64 hex digits after "mac=" in a header value, as bytes. */
static int auth_parse_mac(const char *header, uint8_t mac[32])
{
    const char *m = header ? strstr(header, "mac=") : NULL;
    if (!m) return -1;
    m += 4;
    size_t len = strspn(m, "0123456789abcdef");
    if (len != 64) return -1;
    size_t got = 0;
    if (sodium_hex2bin(mac, 32, m, 64, NULL, &got, NULL) != 0 || got != 32) return -1;
    return 0;
}

int auth_http_verify_answer(const auth_keys *k, const char *nonce_hex, long status, const void *body,
                            size_t body_len, const char *header)
{
    uint8_t got[32], want[32];
    if (!header || strncmp(header, "v1 ", 3) != 0 || auth_parse_mac(header, got) != 0) return 0;
    auth_answer_mac(k, nonce_hex, status, body, body_len, want);
    return sodium_memcmp(got, want, sizeof(want)) == 0;
}

void auth_http_sign_answer(const auth_keys *k, const char *nonce_hex, unsigned status, const void *body,
                           size_t body_len, char *header)
{
    uint8_t mac[32];
    char mac_hex[65];
    auth_answer_mac(k, nonce_hex, (long)status, body, body_len, mac);
    sodium_bin2hex(mac_hex, sizeof(mac_hex), mac, sizeof(mac));
    snprintf(header, AUTH_HTTP_HEADER_LEN, "v1 mac=%s", mac_hex);
}

/* ---- replay cache ---- */

typedef struct {
    int64_t ts;
    uint8_t nonce[AUTH_NONCE_SIZE];
} auth_seen;

struct auth_replay {
    pthread_mutex_t mu;
    int n;
    auth_seen seen[AUTH_REPLAY_CAP];
};

auth_replay *auth_replay_new(void)
{
    auth_replay *r = calloc(1, sizeof(*r));
    if (r) pthread_mutex_init(&r->mu, NULL);
    return r;
}

void auth_replay_free(auth_replay *r)
{
    if (!r) return;
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Drops what has left the window, then remembers (ts, nonce) unless it is
 * there already. 0, 1 (a replay) or -1 (full of live nonces). */
static int auth_replay_add(auth_replay *r, int64_t now, int64_t ts, const uint8_t nonce[AUTH_NONCE_SIZE])
{
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    for (int i = 0; i < r->n;) {
        if (r->seen[i].ts < now - AUTH_HTTP_WINDOW_S) {
            r->seen[i] = r->seen[--r->n];
            continue;
        }
        if (memcmp(r->seen[i].nonce, nonce, AUTH_NONCE_SIZE) == 0) rc = 1;
        i++;
    }
    if (rc == 0) {
        if (r->n == AUTH_REPLAY_CAP) rc = -1;
        else {
            r->seen[r->n].ts = ts;
            memcpy(r->seen[r->n].nonce, nonce, AUTH_NONCE_SIZE);
            r->n++;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* Copies the value of "key=" (up to a space) from header into out (cap). */
static int auth_field(const char *header, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = header; (p = strstr(p, key)) != NULL; p += kl) {
        if ((p != header && p[-1] != ' ') || p[kl] != '=') continue;
        p += kl + 1;
        size_t n = strcspn(p, " ");
        if (n == 0 || n >= cap) return -1;
        memcpy(out, p, n);
        out[n] = 0;
        return 0;
    }
    return -1;
}

int auth_http_check(const auth_keys *k, auth_replay *replay, const char *method, const char *path,
                    const char *header, int64_t now, auth_http_claim *claim, char *err)
{
    if (!header) return mdi_fail(err, MDI_EAUTH, "missing %s header (this node requires the shared secret)",
                                 AUTH_HTTP_HEADER);
    char ts[24];
    uint8_t mac[32], want[32], nonce[AUTH_NONCE_SIZE];
    size_t got = 0;
    if (strncmp(header, "v1 ", 3) != 0 || auth_field(header, "ts", ts, sizeof(ts)) != 0 ||
        auth_field(header, "nonce", claim->nonce_hex, sizeof(claim->nonce_hex)) != 0 ||
        auth_field(header, "body", claim->body_hex, sizeof(claim->body_hex)) != 0 ||
        strlen(claim->body_hex) != 64 || strspn(claim->body_hex, "0123456789abcdef") != 64 ||
        strlen(claim->nonce_hex) != 2 * AUTH_NONCE_SIZE ||
        sodium_hex2bin(nonce, sizeof(nonce), claim->nonce_hex, 2 * AUTH_NONCE_SIZE, NULL, &got, NULL) != 0 ||
        got != sizeof(nonce) || auth_parse_mac(header, mac) != 0)
        return mdi_fail(err, MDI_EAUTH, "malformed %s header", AUTH_HTTP_HEADER);
    char *end;
    errno = 0;
    long long t = strtoll(ts, &end, 10);
    if (*end || errno) return mdi_fail(err, MDI_EAUTH, "malformed %s header: ts", AUTH_HTTP_HEADER);
    auth_request_mac(k, method, path, claim->body_hex, ts, claim->nonce_hex, want);
    if (sodium_memcmp(mac, want, sizeof(want)) != 0)
        return mdi_fail(err, MDI_EAUTH, "wrong secret (the request's MAC does not verify)");
    if (t < now - AUTH_HTTP_WINDOW_S || t > now + AUTH_HTTP_WINDOW_S)
        return mdi_fail(err, MDI_EAUTH,
                        "the request's timestamp is %lld s away from this node's clock (at most %d s accepted): "
                        "a replay, or clocks to synchronise", (long long)(t - now), AUTH_HTTP_WINDOW_S);
    int seen = auth_replay_add(replay, now, (int64_t)t, nonce);
    if (seen > 0) return mdi_fail(err, MDI_EAUTH, "replayed request (nonce %s seen before)", claim->nonce_hex);
    if (seen < 0)
        return mdi_fail(err, MDI_EAUTH, "more than %d requests within %d s: refused", AUTH_REPLAY_CAP,
                        AUTH_HTTP_WINDOW_S);
    return 0;
}
