/*
 * proto: the frames of the data plane (the TCP ring).
 *
 * Every frame is a fixed 40-byte little-endian header and a payload:
 *
 *   offset size field
 *        0    4 magic        "MDIR" (0x5249444d read as LE u32)
 *        4    2 version      PROTO_VERSION
 *        6    2 type         HELLO, DATA, RELEASE, STOP, ERROR, KEEPALIVE
 *        8    4 sample_id    which sequence (DATA, RELEASE); sender's
 *                            node index in HELLO (0 starter, 1 + i secondary i)
 *       12    4 pos          position of the first token (DATA)
 *       16    4 n_tokens     rows of the payload (DATA)
 *       20    2 dtype        payload type, a dtype_t code: f32, f16, bf16, q8_0 (DATA)
 *       22    2 flags        PROTO_FLAG_*
 *       24    8 payload_len  bytes that follow the header
 *       32    4 seq          per-connection frame counter (diagnostics)
 *       36    4 epoch        run epoch: 0 when the ring first closes, + 1 each
 *                            time it closes again after a failover; a frame
 *                            of another epoch than the run's ends the run;
 *                            in the connecting side's HELLOs, the epoch of
 *                            the run the connection is made for
 *       40      payload      DATA: activations (n_tokens, dim) in dtype, row
 *                            after row: n_tokens * dtype_row_size(dtype, dim)
 *                            bytes exactly (a q8_0 row: dim/32 blocks of 34);
 *                            HELLO: empty, or a step of the handshake
 *                            with a secret (seal.h);
 *                            ERROR: UTF-8 text saying what went wrong;
 *                            KEEPALIVE: none (sent on a link idle for a
 *                            second, so that a hung node can be told from
 *                            a quiet one; sealed like any frame with a
 *                            secret).
 *
 * A connection opens with HELLO from the connecting side; the accepting
 * side answers HELLO (accepted) or ERROR (wrong version, node, secret or
 * run epoch) and closes. A connection is made for one run epoch, the one
 * its HELLO carries: a node in a run refuses a connection made for
 * another (one left over from before a reconfiguration, or one from a
 * node already past it), so that nothing from before a failover mixes
 * with what comes after; a secondary between runs, which does not know
 * the next run's epoch yet, greets any and keeps its epoch until the run
 * starts (secondary.c). Without a secret that is all, and frames follow as above.
 * With a secret, the HELLOs carry PROTO_FLAG_SEALED and a challenge-
 * response instead, and every frame after them travels encrypted and
 * authenticated, header included; the secret itself never crosses the
 * wire. A sealed frame on the wire (details in seal.h):
 *
 *   offset size               field
 *        0 40 + 16            the header above, encrypted (ChaCha20-Poly1305,
 *                             the message counter as nonce), and its tag
 *       56 payload_len + 16   the payload, encrypted, and its tag; absent
 *                             when payload_len is 0
 *
 * Frames are validated before their payload is read: a frame with a
 * wrong magic, version, type or dtype, or a length beyond what its
 * n_tokens and the model's dim allow, ends the connection with a message
 * that names the peer, the field and the byte values.
 */
#ifndef MDI_PROTO_H
#define MDI_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include "kernels.h"

#define PROTO_MAGIC 0x5249444du /* bytes 'M' 'D' 'I' 'R' */
#define PROTO_VERSION 1
#define PROTO_HEADER_SIZE 40
#define PROTO_SECRET_MAX 256
#define PROTO_TEXT_MAX 4096
/* At most this much of a peer's text (ERROR) is quoted in our messages. */
#define PROTO_TEXT_SHOWN 256
/* Hard ceiling of one payload whatever the model: 1 GiB. */
#define PROTO_PAYLOAD_MAX ((uint64_t)1 << 30)

typedef enum {
    PROTO_HELLO = 1,
    PROTO_DATA = 2,
    PROTO_RELEASE = 3,  /* the sample finished: free its KV cache */
    PROTO_STOP = 4,     /* the run is over: forward it, then tear down */
    PROTO_ERROR = 5,    /* text payload: a node saw a fault */
    PROTO_KEEPALIVE = 6, /* no payload: the sender is alive, with nothing to send */
    PROTO_TYPE_END
} proto_type;

/* DATA flag: the last chunk of a prompt or a decode step, whose last row
 * the starter turns into logits. */
#define PROTO_FLAG_LOGITS 0x1
/* HELLO flag: a step of the challenge-response of seal.h. */
#define PROTO_FLAG_SEALED 0x2
/* DATA flag: tokens a sample already generated, replayed after a failover:
 * every node runs them through the decode kernels row by row
 * (forward_layers_rows), so that the caches it rebuilds and the logits
 * after the last are bit for bit those the decode steps gave. */
#define PROTO_FLAG_ROWS 0x4
/* A frame's payload buffer has this many bytes past its cap: room for the
 * tag of a sealed payload (seal.h), so that sealing allocates nothing. */
#define PROTO_FRAME_SLACK 16

typedef struct __attribute__((packed)) {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t sample_id;
    uint32_t pos;
    uint32_t n_tokens;
    uint16_t dtype;
    uint16_t flags;
    uint64_t payload_len;
    uint32_t seq;
    uint32_t epoch;
} proto_header;

_Static_assert(sizeof(proto_header) == PROTO_HEADER_SIZE, "proto_header must be 40 bytes");

/* A frame with a payload buffer of cap bytes that it owns. */
typedef struct {
    proto_header h;
    uint8_t *payload;
    size_t cap;
} proto_frame;

/* What a receiver accepts; dim == 0 skips the DATA shape check. */
typedef struct {
    int dim;
    int max_batch;
    uint32_t n_samples;     /* 0: any sample id */
} proto_limits;

const char *proto_type_name(int type);

void proto_header_encode(const proto_header *h, uint8_t out[PROTO_HEADER_SIZE]);
void proto_header_decode(proto_header *h, const uint8_t in[PROTO_HEADER_SIZE]);
/* A header with magic, version and type set, the rest zero. */
proto_header proto_header_make(int type);

/* Checks a decoded header against the limits. Returns 0 or MDI_EPROTO
 * with the field and its value in err. */
int proto_header_check(const proto_header *h, const proto_limits *lim, char *err);

/* New frame with a payload capacity of cap bytes (and PROTO_FRAME_SLACK
 * more; NULL on no memory). */
proto_frame *proto_frame_new(size_t cap);
void proto_frame_free(proto_frame *f);
/* Sets an ERROR or HELLO text payload (truncated to the frame's cap). */
void proto_frame_set_text(proto_frame *f, int type, const char *text);

/* Reads one frame into f. Waits up to idle_timeout_s (< 0: no limit) for
 * its first byte, then up to body_timeout_s for the rest. The header is
 * checked before the payload is read; a payload larger than f->cap is a
 * protocol error. Returns 0, MDI_EPROTO, MDI_ENET (closed or broken),
 * MDI_ETIMEOUT, or MDI_ESTATE when *cancel became set. */
int proto_read_frame(int fd, proto_frame *f, const proto_limits *lim,
                     double idle_timeout_s, double body_timeout_s,
                     const volatile int *cancel, char *err);
int proto_write_frame(int fd, const proto_frame *f, double timeout_s,
                      const volatile int *cancel, char *err);

/* The accepting side's expected run epoch that stands for "any" (a
 * secondary between runs); otherwise a run epoch, 0 .. UINT32_MAX. */
#define PROTO_EPOCH_ANY (-1LL)

/* Whether a node expecting run epoch expect (PROTO_EPOCH_ANY: any) refuses
 * a connection made for run epoch theirs: 0, or 1 with the words that
 * refuse it in out (at most n bytes; sent in the ERROR, quoted in log
 * lines): "run epoch 3 here, the connection is for run epoch 2: from
 * before a reconfiguration". */
int proto_epoch_refused(long long expect, uint32_t theirs, char *out, size_t n);

/* The plain handshake, of a cluster without a secret (seal_connect and
 * seal_accept call these when no secret is set, the challenge-response
 * otherwise). Connecting side: sends HELLO (node_index, and the run epoch
 * the connection is for) and waits up to timeout_s for the answer.
 * Returns 0, MDI_EAUTH (the peer wants a secret), MDI_EPROTO or a network
 * error, with the peer's words in err. */
int proto_hello_send(int fd, uint32_t node_index, uint32_t epoch, double timeout_s, char *err);
/* Accepting side: reads the HELLO within timeout_s, checks the version,
 * refuses a sealed one (the peer has a secret, this node none: MDI_EAUTH),
 * one with a payload, or one for another run epoch than expect_epoch
 * (PROTO_EPOCH_ANY: any; MDI_EPROTO, the refusal naming both epochs),
 * answers. *node_index receives the sender's index and *epoch (may be NULL)
 * the HELLO's run epoch. */
int proto_hello_accept(int fd, double timeout_s, long long expect_epoch, uint32_t *node_index, uint32_t *epoch,
                       char *err);

/* 0 when activations of dim values can cross the wire as dtype (its row size
 * is defined: dim a multiple of its block size); else MDI_EARG and one line
 * naming the dtype and dim. Checked when a run is configured. */
int proto_wire_dtype_check(dtype_t dtype, int dim, char *err);

/* Activations to and from the wire: count elements (a whole number of
 * rows, so of blocks for a block type). */
void proto_pack(const float *x, size_t count, dtype_t dtype, void *out);
void proto_unpack(const void *in, size_t count, dtype_t dtype, float *x);

#endif
