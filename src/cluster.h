/*
 * cluster: the starter opening and closing the ring of nodes, apart from
 * what runs on it (the engine's scheduler loop, engine.c; a chat's turns,
 * pipeline.c).
 *
 *   starter: embed + layers [0, a) --DATA--> secondary 0: layers [a, b)
 *        ^                                        |
 *        |                                       ...
 *        +--- last row (n_tokens = 1) <-- last secondary: layers [.., L)
 *
 * cluster_open, in order:
 *   1. reads the nodes configuration and CKPT/chunks/<N>nodes/manifest.json
 *      (written by prepare_model) for each node's layer range and chunk;
 *   2. loads the starter's chunk (embedding, its layers, final norm, head);
 *   3. POST /init to every secondary (run configuration with n_slots sample
 *      slots, max_seq, max_batch, and the chunk's sha256), PUT /chunk
 *      (streamed from disk) only where the secondary does not hold that
 *      chunk yet, POST /start (each secondary allocates every slot's KV
 *      cache then), and waits until the ring is closed (each node listens
 *      on its inference.port_in and connects to the next node's).
 * Then the driver sends DATA frames (cluster_send_frame) and RELEASE
 * frames (cluster_send_control; a RELEASE resets the slot's cache on every
 * node and comes back to the starter, after which the slot may take a new
 * sample), and reads what comes back with ring_recv on c->ring.
 *
 * A failure seen on the ring is named by cluster_diagnose: it probes each
 * secondary's GET / (bounded by a short timeout) and names the first that
 * does not answer, else the first that reports an error of its own.
 *
 * cluster_finish sends STOP round the ring, PUT /stop to every secondary
 * (which returns its figures) and builds the per-node JSON; cluster_close
 * frees everything and, after a failure, stops the secondaries still
 * running (not the failed one).
 */
#ifndef MDI_CLUSTER_H
#define MDI_CLUSTER_H

#include <jansson.h>
#include <pthread.h>
#include "forward.h"
#include "model.h"
#include "nodes_config.h"
#include "prepare.h"
#include "report.h"
#include "ring.h"

/* What opening the cluster needs (the engine and the chat fill it). */
typedef struct {
    const char *ckpt;
    const char *nodes_config;
    dtype_t dtype, kv_dtype, wire_dtype;
    int mmap_weights, mlock;
    int max_seq;               /* KV positions per slot on every node (> 0) */
    int max_batch;             /* rows of a prefill frame at most (> 0) */
    int n_slots;               /* sample slots (1 .. FORWARD_MAX_SAMPLES) */
    double timeout_s;
    double connect_timeout_s;  /* secondaries not up yet are waited for this long (startup.h) */
    int verbose;
} cluster_opts;

typedef struct cluster {
    cluster_opts o;
    nodes_config nc;
    prepare_manifest man;
    int have_manifest;
    int n_nodes;
    model_config cfg;
    char model_name[256];
    int listen_fd;
    model m;                   /* the starter's chunk */
    int have_model;
    ring ring;
    int ring_started;
    int started[NODES_MAX_SECONDARY];   /* /init accepted: needs a /stop */
    int uploaded[NODES_MAX_SECONDARY];
    json_t *final_status[NODES_MAX_SECONDARY];
    /* the starter's figures, kept by the driver for the per-node JSON */
    double compute_s, wait_s;
    size_t kv_bytes_peak;      /* the starter's KV caches */
    long batches, batched_tokens;
    int spare_used[NODES_MAX_SPARE];    /* took a failed node's place */
    node_entry orig[NODES_MAX_SECONDARY]; /* each secondary as configured */
    int in_place[NODES_MAX_SECONDARY];  /* 0, or 1 + the spare now in secondary i's place */
    int failed_silent;                  /* the node cluster_diagnose named did not answer (hung) */
    unsigned epoch;            /* run epoch: 0 at open, +1 per failover */
    pthread_mutex_t *names_mu; /* NULL, or held while a failover puts another node in nc.secondary */
} cluster;

/* Steps 1-3. *out is new; 0 or a code with the reason in err (naming the
 * node). The caller has called kernels_init. */
int cluster_open(cluster **out, const cluster_opts *o, char *err);

/* Sends rows (n, dim) at positions pos.. of slot s as a DATA frame with
 * flags (PROTO_FLAG_LOGITS: the last node sends the last row back for the
 * head; PROTO_FLAG_ROWS: the decode kernels, proto.h). */
int cluster_send_frame(cluster *c, int s, int pos, int n, int flags, const float *rows, char *err);
/* A frame without payload: PROTO_RELEASE (slot s) or PROTO_STOP. */
int cluster_send_control(cluster *c, int type, int s, char *err);
/* An ERROR frame's text as a failure (MDI_EPROTO). */
int cluster_frame_error(const proto_frame *f, char *err);

/* The node behind a failure the ring reported (ring_err): err names it;
 * *failed_node: its secondary index, or -1. Returns code. */
int cluster_diagnose(cluster *c, int code, const char *ring_err, char *err, int *failed_node);

/* Per-node objects (role, index, addr, layers, compute_s, wait_s,
 * bytes_sent, ...; the secondaries' figures once they stopped). New. */
json_t *cluster_nodes_json(cluster *c);

/* "secondary 1 (addr:port)", or "spare 0 (addr:port) in place of
 * secondary 1 (addr:port)" once a spare took its place. */
void cluster_node_name(const cluster *c, int i, char *out, size_t cap);

/* Which node stands in each place of the ring now (a failover may put a
 * spare in one): in_place[i] 0 for secondary i as configured, else 1 + the
 * spare in its place; spare_used[j] 1 once spare j took a place (it is no
 * longer offered, even after failing in turn). Copied under names_mu: any
 * thread may ask while c is open (not while holding names_mu). */
void cluster_get_places(cluster *c, int in_place[NODES_MAX_SECONDARY], int spare_used[NODES_MAX_SPARE]);

/* Secondary i's layer range [*begin, *end) (fixed once open). */
void cluster_node_layers(const cluster *c, int i, int *begin, int *end);

/* An orderly end: STOP round the ring, every secondary stopped (its
 * figures kept); fills st's weight_bytes_per_token, dtype, wire_dtype,
 * kv_bytes and kv_dtype, and *nodes (new). A failure names the node. */
int cluster_finish(cluster *c, run_stats *st, json_t **nodes, char *err);

/* How a failover went (cluster_recover): the node that failed, what took
 * its place (the same node back, or spare `spare`), and the time each step
 * took: waiting for a node to answer, /init with the chunk upload where
 * the node lacks it, the ring closed again. */
typedef struct {
    int node;                  /* secondary index that failed */
    int spare;                 /* -1: the same node came back; else its index in nodes.spare */
    int uploaded;              /* the chunk was sent to it */
    double wait_s, init_s, ring_s;
} cluster_recovery;

/* After a failure of secondary failed_node (-1: unknown): the ring is
 * stopped, every secondary still answering is stopped (PUT /stop: its
 * ring connections and KV caches go), then the first of the failed node
 * and the unused spares to answer within timeout_s takes the failed
 * node's layers; every node gets /init (chunks cached by hash: only a
 * node without it gets an upload) and /start, and the ring closes again
 * with the next run epoch (c->epoch). 0, or the reason naming the node. */
int cluster_recover(cluster *c, int failed_node, double timeout_s, cluster_recovery *rec, char *err);

/* Frees c. failed: stops the ring and every secondary still started but
 * failed_node (-1: all). */
void cluster_close(cluster *c, int failed, int failed_node);

#endif
