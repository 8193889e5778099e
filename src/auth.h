/*
 * auth: the keys a cluster derives from its shared secret, and the
 * authentication of HTTP control-plane requests and answers with them.
 * Every primitive is libsodium's; the secret itself never leaves the node.
 *
 * Keys. The secret (a string of the nodes configuration, or --secret) is
 * stretched once per process with Argon2id (crypto_pwhash, "interactive"
 * limits: about 0.1 s and 64 MiB), with a fixed salt since every node must
 * arrive at the same key; this makes guessing a weak secret from a captured
 * handshake costly. From that master key, crypto_kdf derives one subkey per
 * use, so that a MAC of one kind can never pass for another:
 *
 *   ring   (id 1, context "mdi-ring") challenge-response and session keys
 *          of the TCP ring (seal.h)
 *   http   (id 2, context "mdi-http") HMAC-SHA-256 of control requests
 *
 * HTTP requests. With a secret, every request carries one header
 *
 *   X-MDI-Auth: v1 ts=<unix seconds> nonce=<32 hex> body=<sha256 hex> mac=<64 hex>
 *
 *   mac = HMAC-SHA-256(http key, "mdi-http-v1 request\n" METHOD "\n" PATH "\n"
 *                      body "\n" ts "\n" nonce)
 *
 * body is the SHA-256 of the request body (of the empty string when there
 * is none). The server checks the MAC (constant time), that ts lies within
 * AUTH_HTTP_WINDOW_S of its own clock, and that the nonce was not seen
 * within the window (a replay cache of AUTH_REPLAY_CAP nonces); all before
 * the request does anything. The body, which may arrive after (a chunk
 * upload streams), is digested as it comes and must match body= at the end,
 * or the request is refused and its effects discarded.
 *
 * Answers. The server signs each answer with
 *
 *   X-MDI-Auth-Response: v1 mac=<64 hex>
 *   mac = HMAC-SHA-256(http key, "mdi-http-v1 response\n" nonce "\n" STATUS "\n" sha256(body))
 *
 * where nonce is the request's, so that an answer cannot be replayed for
 * another request; the client accepts a successful answer only when it
 * verifies.
 */
#ifndef MDI_AUTH_H
#define MDI_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_KEY_SIZE 32
#define AUTH_HTTP_HEADER "X-MDI-Auth"
#define AUTH_HTTP_RESPONSE_HEADER "X-MDI-Auth-Response"
#define AUTH_HTTP_HEADER_LEN 256     /* room for either header's value */
#define AUTH_HTTP_WINDOW_S 120       /* accepted clock difference, each way */
#define AUTH_REPLAY_CAP 16384        /* nonces remembered (within the window) */
#define AUTH_NONCE_SIZE 16

typedef struct {
    int on;                          /* 0: no secret, nothing is authenticated */
    uint8_t ring[AUTH_KEY_SIZE];
    uint8_t http[AUTH_KEY_SIZE];
} auth_keys;

/* Derives the keys of secret (NULL or "": k->on = 0). The stretching is
 * done once per secret and process (a small cache), so callers may pass
 * the secret string wherever they need keys. 0 or MDI_ENOMEM. */
int auth_keys_derive(auth_keys *k, const char *secret, char *err);

/* One line, printed once at start by the node programs when no secret is
 * set: the cluster is open to anyone on the network. */
void auth_warn_open(void);

/* ---- HTTP ---- */

/* SHA-256 of a request or answer body, streaming (libsodium's). */
typedef struct {
    uint64_t state[16];              /* crypto_hash_sha256_state, opaque, aligned */
} auth_digest;
void auth_digest_init(auth_digest *d);
void auth_digest_update(auth_digest *d, const void *data, size_t len);
void auth_digest_final_hex(auth_digest *d, char hex[65]);
void auth_digest_hex(const void *data, size_t len, char hex[65]);
/* The digest of a whole file. 0 or MDI_EIO. */
int auth_digest_file_hex(const char *path, char hex[65], char *err);

/* Client: the X-MDI-Auth header value (AUTH_HTTP_HEADER_LEN bytes) for a
 * request with body digest body_hex; the nonce it used (33 bytes, hex) goes
 * to nonce_hex for checking the answer. */
void auth_http_sign(const auth_keys *k, const char *method, const char *path, const char *body_hex,
                    char *header, char *nonce_hex);

/* Client: 1 when the answer's X-MDI-Auth-Response value (may be NULL)
 * verifies for the request's nonce, status and body. */
int auth_http_verify_answer(const auth_keys *k, const char *nonce_hex, long status, const void *body,
                            size_t body_len, const char *header);

/* Server: the answer's header value (AUTH_HTTP_HEADER_LEN bytes). */
void auth_http_sign_answer(const auth_keys *k, const char *nonce_hex, unsigned status, const void *body,
                           size_t body_len, char *header);

/* Server side: the replay cache of one server (thread-safe). */
typedef struct auth_replay auth_replay;
auth_replay *auth_replay_new(void);
void auth_replay_free(auth_replay *r);

/* What a verified request header says. */
typedef struct {
    char nonce_hex[2 * AUTH_NONCE_SIZE + 1];
    char body_hex[65];               /* the body's announced digest */
} auth_http_claim;

/* Server: checks the header value (NULL: missing) of a request made with
 * method and path at time now (unix seconds) and remembers its nonce.
 * Returns 0 with the claim filled, or MDI_EAUTH and why in err: missing,
 * malformed, wrong MAC (wrong secret), stale or replayed. */
int auth_http_check(const auth_keys *k, auth_replay *replay, const char *method, const char *path,
                    const char *header, int64_t now, auth_http_claim *claim, char *err);

#endif
