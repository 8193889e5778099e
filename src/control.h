/*
 * control: the HTTP control plane between the starter and each secondary.
 *
 * A secondary serves (libmicrohttpd, one internal polling thread):
 *
 *   GET  /        status JSON: {"role", "index", "state": "idle" |
 *                 "loading" | "running", "model", "layers": [a, b],
 *                 "n_samples", "memory_bytes", "chunks_received",
 *                 "rss_bytes", "runs", "last_error", "stats": {...last or
 *                 current run; while running also "live": {"window_s",
 *                 "tokens_per_s", "busy"} over the last few seconds,
 *                 live.h}, "capabilities": {...} (caps.h; once measured)}
 *   POST /init    the run configuration (run_config as JSON, below);
 *                 answers {"have_chunk": true|false}: whether a chunk with
 *                 that sha256 is already held (given with --chunk, or in
 *                 the cache folder from an earlier upload)
 *   PUT  /chunk   the chunk's bytes, streamed to CACHE/<sha256>.part while
 *                 hashed, renamed to CACHE/<sha256>.safetensors when the
 *                 digest matches the one /init announced (else 400 and the
 *                 part file is removed); never held in memory
 *   POST /start   loads the chunk and joins the ring (202; watch GET /)
 *   PUT  /stop    ends the run; answers the status once the node is idle
 *
 * No client can starve the starter: at most CONTROL_CONN_MAX connections,
 * CONTROL_PER_ADDR_MAX from one address, and CONTROL_STARTER_RESERVE of
 * them open only to the starter's address (when known); a connection
 * silent for timeout_s is closed, and so is an upload that stalls or
 * trickles (less than CONTROL_UPLOAD_MIN_RATE over timeout_s). PUT /chunk
 * takes no byte beyond the size /init announced: a Content-Length above it
 * gets 413 before anything is written, and a body that runs past it
 * (chunked encoding) is cut off there and discarded.
 *
 * With a shared secret configured every request must carry a valid
 * X-MDI-Auth header (an HMAC over method, path, body digest, timestamp and
 * nonce; the secret itself never crosses the wire; auth.h), or gets 401
 * and changes nothing; a replayed one is refused likewise. Answers are
 * signed in turn, and the client accepts a successful answer only when its
 * signature verifies. Handlers parse,
 * validate and hand over: the node's main thread does the work
 * (control_wait_command), and reports back with control_set_*.
 *
 * The starter's side is a set of http_client calls (control_client_*), each
 * bounded by a timeout, that return 0 or a negative MDI_E* code with the
 * reason (HTTP status and the node's own message) in err.
 */
#ifndef MDI_CONTROL_H
#define MDI_CONTROL_H

#include <stdint.h>
#include <jansson.h>
#include "kernels.h"
#include "model.h"

#define CONTROL_HOST_LEN 128
#define CONTROL_BODY_MAX (1 << 20)  /* largest JSON body a handler reads */
#define CONTROL_CONN_MAX 64
#define CONTROL_PER_ADDR_MAX 8
#define CONTROL_STARTER_RESERVE 8
#define CONTROL_UPLOAD_MIN_RATE (16 * 1024)  /* bytes per second */

/* What POST /init carries: everything a secondary needs for one run. */
typedef struct {
    int node_index;            /* i of secondary i */
    int n_nodes;
    model_config cfg;          /* the whole model's configuration */
    char model_name[128];
    int layer_begin, layer_end;
    dtype_t dtype;             /* compute dtype of matrices */
    dtype_t wire_dtype;
    dtype_t kv_dtype;          /* every node's KV caches: f32 or f16 */
    int weights_mmap;          /* the starter's --mmap (1) or --no-mmap (0); a secondary's own
                                * flag, when given, wins */
    int weights_mlock;         /* the starter's --mlock; likewise */
    int n_samples, max_seq, max_batch;
    int is_last;               /* next node is the starter: send last rows only */
    char prev_addr[CONTROL_HOST_LEN];
    int prev_port;
    char next_addr[CONTROL_HOST_LEN];
    int next_port;
    char chunk_sha256[65];
    uint64_t chunk_size;
    double timeout_s;          /* ring timeouts */
    unsigned epoch;            /* the run epoch (proto.h): 0, + 1 per failover */
} run_config;

/* The run configuration as JSON (new reference) and back. from_json names
 * the offending field in err and returns MDI_EARG. */
json_t *run_config_to_json(const run_config *rc);
int run_config_from_json(run_config *rc, json_t *o, char *err);

/* ---- server (secondary) ---- */

typedef enum {
    CONTROL_IDLE = 0,
    CONTROL_LOADING,
    CONTROL_RUNNING,
} control_state;

typedef enum {
    CONTROL_CMD_NONE = 0,
    CONTROL_CMD_START,         /* load the chunk and join the ring */
    CONTROL_CMD_STOP,          /* leave the ring, back to idle */
} control_cmd;

typedef struct {
    int port;                  /* HTTP port; 0: any free (tests) */
    int node_index;            /* -1: a spare, any place /init gives it */
    const char *secret;        /* NULL or "": none */
    const char *cache_dir;     /* created if missing */
    const char *local_chunk;   /* --chunk PATH or NULL */
    const char *starter_addr;  /* the starter's address or name: connections
                                  are kept for it; NULL or "": unknown */
    double timeout_s;          /* a connection silent this long is closed; an
                                  upload slower than CONTROL_UPLOAD_MIN_RATE
                                  over this long is dropped; 0: 10 s */
} control_server_opts;

typedef struct control_server control_server;

/* Starts serving. Hashes the local chunk first (when given). Returns NULL
 * with "port 8089 already in use" and the like in err. */
control_server *control_server_start(const control_server_opts *o, char *err);
/* Stops the daemon and frees the server. */
void control_server_stop(control_server *s);
int control_server_port(const control_server *s);

/* Waits up to timeout_s for a command from a handler. For START, *cfg gets
 * the run configuration and chunk_path (PATH_MAX) the chunk to load. */
control_cmd control_wait_command(control_server *s, double timeout_s, run_config *cfg,
                                 char *chunk_path);
/* State changes made by the main thread. error (may be NULL) becomes the
 * status' last_error. Setting IDLE wakes a waiting PUT /stop and clears
 * the pending run configuration. */
void control_set_state(control_server *s, control_state st, const char *error);
/* Replaces the status' "stats" object (reference stolen). */
void control_set_stats(control_server *s, json_t *stats);
/* Memory the run holds (weights it owns, caches), for the status. */
void control_set_memory(control_server *s, size_t bytes);
/* The node's measured capabilities (caps.h; reference stolen), reported in
 * the status as "capabilities" with free memory read at each GET /. */
void control_set_capabilities(control_server *s, json_t *caps);

/* ---- client (starter) ---- */

/* Once per process, before any client call (curl_global_init). */
void control_client_global_init(void);

/* GET /: *status a new reference. */
int control_client_status(const char *host, int port, const char *secret, double timeout_s,
                          json_t **status, char *err);
int control_client_init(const char *host, int port, const char *secret, double timeout_s,
                        const run_config *rc, int *have_chunk, char *err);
/* Streams the file; timeout_s bounds connecting and any stall, not the
 * whole upload. */
int control_client_upload_chunk(const char *host, int port, const char *secret, double timeout_s,
                                const char *path, char *err);
int control_client_start(const char *host, int port, const char *secret, double timeout_s,
                         char *err);
/* PUT /stop; *status (may be NULL) gets the node's status after it. */
int control_client_stop(const char *host, int port, const char *secret, double timeout_s,
                        json_t **status, char *err);

#endif
