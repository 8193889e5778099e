/*
 * seal: the ring's connections when a secret is configured: a mutual
 * challenge-response that proves both ends hold the secret and binds their
 * node indices, then every frame under authenticated encryption. Without a
 * secret the same calls do the plain HELLO and plain frames of proto.h, at
 * no cost.
 *
 * Handshake (A connects to B; a, b their node indices; e the run epoch the
 * connection is made for (proto.h); K the ring key of auth.h; every message
 * a HELLO frame with PROTO_FLAG_SEALED, sample_id the sender's index, epoch
 * e):
 *
 *   A -> B   HELLO  payload: b (u32 LE, the node A means to reach), na (32 random bytes)
 *   B -> A   HELLO  payload: nb (32 random bytes), HMAC(K, "B" || T)
 *   A -> B   HELLO  payload: HMAC(K, "A" || T)
 *   B -> A   HELLO  (empty): accepted; or ERROR at any step, then close
 *
 *   T = "mdi-ring-v2" || a (u32 LE) || b (u32 LE) || e (u32 LE) || na || nb
 *   session key S = HMAC(K, "S" || T)     (HMAC-SHA-256, crypto_auth_hmacsha256)
 *
 * e is the epoch field of A's first HELLO, as B read it: it is in T, so an
 * epoch altered on the way makes B's proof fail at A (and A's at B), and
 * a connection is bound to its run epoch as to its two nodes. ("v2": T
 * gained e; a node of the former transcript fails the proofs.)
 *
 * B refuses a HELLO meant for another node, from a node other than the
 * one it expects, or made for another run epoch than its own (when it
 * knows it: a secondary between runs takes any, and its run checks it
 * later, ring.h), before anything else; each side
 * checks the other's MAC in constant time, so a peer without the secret
 * learns nothing and gets nothing accepted, and a recorded handshake cannot
 * be replayed (each side's nonce is fresh); a is authenticated with it.
 *
 * Frames (A -> B only: B never writes on the connection after the
 * handshake). Each frame becomes one or two AEAD messages, ChaCha20-Poly1305
 * IETF under S, nonce = 4 zero bytes || n (u64 LE), n counting messages from
 * 0 on the connection:
 *
 *   offset      size              field
 *        0      40 + 16           the 40-byte header, encrypted, and its tag
 *       56      payload_len + 16  the payload, encrypted (additional data:
 *                                 the header's 40 plaintext bytes), and its
 *                                 tag; absent when payload_len is 0
 *
 * So nothing of a frame, not even its magic, crosses the wire in clear, and a
 * frame injected, replayed, reordered, altered or cut fails its tag: the
 * receiver ends that connection with "fails authentication" (MDI_EAUTH). A
 * STOP is authenticated too, so an end of stream cannot be forged. Payloads
 * are encrypted in place: a frame's buffer has PROTO_FRAME_SLACK bytes past
 * its cap for the tag; nothing is allocated per frame.
 */
#ifndef MDI_SEAL_H
#define MDI_SEAL_H

#include <stdint.h>
#include "auth.h"
#include "proto.h"

#define SEAL_TAG_SIZE 16
#define SEAL_NONCE_SIZE 32
/* Bytes a sealed frame adds on the wire: two tags (one when no payload). */
#define SEAL_FRAME_OVERHEAD(payload_len) ((payload_len) ? 2 * SEAL_TAG_SIZE : SEAL_TAG_SIZE)

/* One direction of one connection. on = 0: plain frames. */
typedef struct {
    int on;
    uint8_t key[32];
    uint64_t n;                /* next message number */
    uint32_t epoch;            /* the run epoch the connection was made for
                                  (its HELLO's; in T with a secret) */
} seal_channel;

/* Connecting side (self, meaning to reach peer, for run epoch epoch).
 * Returns 0 with *ch ready for sending, MDI_EAUTH (secrets differ, or one
 * side has none), MDI_EPROTO (refused: another node, another run epoch, ...)
 * or a network error, with the reason (the peer's words when it refused) in
 * err. k->on = 0: the plain HELLO of proto.h. */
int seal_connect(int fd, const auth_keys *k, uint32_t self, uint32_t peer, uint32_t epoch, double timeout_s,
                 seal_channel *ch, char *err);

/* Accepting side (node self, expecting node expect, -1: any; a connection
 * for run epoch expect_epoch, PROTO_EPOCH_ANY: any). Returns 0 with the
 * peer's index in *from and the connection's run epoch in ch->epoch (both
 * authenticated with a secret) and *ch ready for receiving, or an error as
 * above after answering ERROR (for another epoch: MDI_EPROTO, the words of
 * proto_epoch_refused). */
int seal_accept(int fd, const auth_keys *k, uint32_t self, int expect, long long expect_epoch, double timeout_s,
                uint32_t *from, seal_channel *ch, char *err);

/* The accepting side in two steps, for a caller that watches many
 * connections at once and calls each step only when the peer's HELLO is
 * whole in the socket (lobby.h), so that neither step ever waits on the
 * peer. seal_accept_begin reads the first HELLO, checks it (node meant,
 * node expected, run epoch expected) and, with a secret, answers the
 * challenge: 0 with *done = 0, the state kept in *p until the peer's proof
 * has arrived. Without a secret the plain HELLO is answered and the
 * handshake is over: 0 with *done = 1, *from set and *ch plain (its epoch
 * set). seal_accept_finish reads the proof, checks it, checks the first
 * HELLO's epoch again against expect_epoch (which may have been set in
 * between) and accepts: 0 with *from and *ch ready for receiving. Both
 * answer ERROR and return an error as seal_accept does. timeout_s bounds
 * the reads and the writes of a step. */
typedef struct {
    uint32_t a;                /* the connecting node's index, as it said */
    uint32_t epoch;            /* the run epoch of its first HELLO */
    uint8_t na[SEAL_NONCE_SIZE], nb[SEAL_NONCE_SIZE];
} seal_pending;

int seal_accept_begin(int fd, const auth_keys *k, uint32_t self, int expect, long long expect_epoch,
                      double timeout_s, seal_pending *p, int *done, uint32_t *from, seal_channel *ch, char *err);
int seal_accept_finish(int fd, const auth_keys *k, uint32_t self, long long expect_epoch, seal_pending *p,
                       double timeout_s, uint32_t *from, seal_channel *ch, char *err);
void seal_pending_clear(seal_pending *p);

/* proto_read_frame / proto_write_frame through the channel (plain when
 * ch->on is 0). Writing encrypts f's payload in place: the frame's payload
 * is no longer the plaintext afterwards. A frame that fails authentication
 * gives MDI_EAUTH naming its number. */
int seal_read_frame(seal_channel *ch, int fd, proto_frame *f, const proto_limits *lim, double idle_timeout_s,
                    double body_timeout_s, const volatile int *cancel, char *err);
int seal_write_frame(seal_channel *ch, int fd, proto_frame *f, double timeout_s, const volatile int *cancel,
                     char *err);

void seal_channel_clear(seal_channel *ch);

#endif
