/*
 * engine: the scheduler that generates for many requests at once, on one
 * node (standalone) or on the ring, admitting work at any time.
 *
 *   engine_open     loads the model (and, with secondaries, opens the
 *                   cluster: configures every node, ships chunks, closes
 *                   the ring) with n_slots sample slots whose KV caches are
 *                   allocated on every node now, once;
 *   engine_submit   from any thread: a request takes a free slot at once or
 *                   waits in a bounded queue (full: MDI_EFULL);
 *   engine thread   one loop: admits queued requests into free slots,
 *                   prefills prompts in chunks interleaved with everyone's
 *                   decode steps, runs the ready decode steps as one batch
 *                   (each row bit-identical to the sample run alone), calls
 *                   each request's callbacks, and frees a finished,
 *                   cancelled or disconnected request's slot on every node
 *                   (RELEASE through the ring) so the next one takes it;
 *   engine_close    stops the loop (requests still running end with
 *                   ENGINE_FINISH_CANCELLED), stops the ring and collects
 *                   the figures.
 *
 * The engine knows nothing of the command line: engine_config says what it
 * needs. The CLI's batch mode (generate_run) and the HTTP service run on
 * it; the interactive chat keeps its own one-sample ring (pipeline.h).
 *
 * A request's life (engine.c):
 *
 *   engine_submit -> queue (FIFO, at most queue_max)
 *     -> a free slot (its KV cache reset; on the ring, a slot is free once
 *        the RELEASE of its previous request came back)
 *     -> prefill: chunks of prefill_chunk tokens, one chunk per loop round
 *        (the request admitted first goes first), between the others'
 *        decode steps; the last chunk's row gives the first token
 *     -> decode: one token per round, every decoding slot in one batch
 *        (standalone: forward_batch; ring: the logits frames back together
 *        through one head call, the next tokens through the starter's
 *        layers as one batch, one DATA frame each)
 *     -> on_done (STOP, LENGTH, CANCELLED, ERROR); the slot is freed (ring:
 *        RELEASE sent round the ring; frames still in flight for the old
 *        request are dropped when they come back).
 *
 * Determinism: prefill chunk boundaries depend only on prefill_chunk and
 * the prompt, and a batch row is bit for bit that row alone (forward.h), so
 * a request's tokens depend only on its prompt, parameters and seed.
 *
 * Ring mode (nodes_config lists secondaries): engine_open opens the cluster
 * (cluster.h) with n_slots slots on every node. A node failure is named by
 * cluster_diagnose; with failover_timeout_s > 0 the cluster recovers
 * (cluster_recover: the node back or a spare takes its layers, every node
 * restarts its run, the ring closes again with the next epoch) and every
 * request in a slot replays its prompt and the tokens it generated, so it
 * goes on where it was: no token given changes or is given again (greedy
 * output is that of a run without a failure; a sampler goes on from its
 * state). One log line per failover names the node and the time lost;
 * engine_stats counts them. Without failover, or when no node comes back
 * in time, every request ends with ENGINE_FINISH_ERROR naming the node,
 * engine_stats.failed is set, and engine_submit answers MDI_ESTATE naming
 * it. With failover, the engine then goes on looking for the node or a
 * spare every ENGINE_RETRY_S (engine.c) while it stays open: once one
 * answers, it takes the node's layers, the ring closes again, failed is
 * cleared and the engine takes work again (a service resumes; counted as
 * a failover, its time lost from the failure on).
 * A ring failure that names no node (every secondary still answers, say a
 * connection between two of them dropped) is handled the same way with
 * every node kept: with failover the ring closes again with the same
 * nodes and the requests replay (logged and counted as a failover, "the
 * ring re-closed, no node failed"); if that fails, or the ring breaks
 * again before that replay is done (a failure that replaying repeats),
 * the requests end with the error and the engine retries closing it
 * every ENGINE_RETRY_S.
 *
 * Threads: callbacks run on the engine thread and must not block (copy
 * what you need and return; never call engine_close from one).
 * engine_submit, engine_cancel and engine_stats may be called from any
 * thread, including from inside a callback.
 */
#ifndef MDI_ENGINE_H
#define MDI_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "kernels.h"
#include "model.h"
#include "nodes_config.h"
#include "report.h"
#include "sampler.h"
#include "tokenizer.h"
#include "util.h"

typedef struct engine engine;
typedef struct engine_request engine_request;

/* What engine_open needs; the starter fills it from its options. */
typedef struct engine_config {
    const char *ckpt;          /* model folder, .bin or .gguf (chunks beside it) */
    const char *nodes_config;  /* NULL or one without secondaries: standalone */
    int n_threads;
    dtype_t dtype, kv_dtype, wire_dtype;
    int mmap_weights, mlock;
    int max_seq;               /* KV positions per slot (0: the model's context, capped) */
    int n_slots;               /* sample slots (0: 2 x nodes, at least 2) */
    int queue_max;             /* requests waiting for a slot at most (0: 4 x n_slots) */
    int prefill_chunk;         /* prompt tokens per prefill step (0: ENGINE_DEFAULT_PREFILL_CHUNK) */
    double timeout_s;          /* a silent node is declared failed after this */
    double connect_timeout_s;  /* wait this long for secondaries not up yet (0: one try each) */
    double failover_timeout_s; /* a failed node: wait this long for it or a spare (0: no failover) */
    int verbose;
    /* batch mode's extras (0 / NULL in a service) */
    const char *logits_out;    /* f32 logits of every step of the first request submitted */
    int record_curve;          /* keep the tokens-versus-time curve for engine_close */
} engine_config;

/* max_seq 0: the model's context, at most this many positions per slot. */
#define ENGINE_DEFAULT_MAX_SEQ 4096
/* prefill_chunk 0: this many (generate.h's GENERATE_MAX_BATCH, the chunk
 * both modes have always cut prompts in). */
#define ENGINE_DEFAULT_PREFILL_CHUNK 256

enum {
    ENGINE_FINISH_STOP = 1,    /* EOS / end of turn, or the caller's stop (engine_cancel with stop=1) */
    ENGINE_FINISH_LENGTH,      /* max_new tokens, or the slot's KV cache is full */
    ENGINE_FINISH_CANCELLED,   /* engine_cancel, or the engine closed */
    ENGINE_FINISH_ERROR        /* a node failed: err names it */
};

typedef struct {
    /* one generated token; piece: its UTF-8-complete text so far not yet
     * given (may be ""; never a split code point). t: seconds since submit.
     * The end-of-sequence token that ends a request is given too (piece
     * "") and counted in on_done's n_generated. */
    void (*on_token)(void *ud, int token, const char *piece, double t);
    /* always called exactly once, last; the request is freed after it
     * returns. err: NULL unless ENGINE_FINISH_ERROR. */
    void (*on_done)(void *ud, int finish, int n_prompt, int n_generated, const char *err);
} engine_callbacks;

/* Opens the engine and starts its thread. tok is borrowed (EOS, text).
 * The caller has called kernels_init(c->n_threads) (the pool is
 * process-wide); while the engine is open only its thread runs kernels. */
int engine_open(engine **out, const engine_config *c, const tokenizer *tok, char *err);

/* The prompt ids are copied. sp: max_new, sampling and seed (the same seed
 * and parameters give the same tokens whatever else runs). Returns 0 and
 * sets *out (may be NULL when not wanted), MDI_EFULL (every free slot taken and
 * queue_max requests waiting beyond them),
 * MDI_EARG (prompt empty or prompt + 1 longer than the slot's KV cache: err
 * names both lengths), MDI_ESTATE (the engine is closing or has failed). */
int engine_submit(engine *e, const int *ids, int n, const sample_params *sp, const engine_callbacks *cb,
                  void *ud, engine_request **out, char *err);

/* Ends r after the token at hand (finish: STOP when stop, else CANCELLED);
 * on_done still follows. Safe on a request already finished as long as
 * on_done has not returned yet. */
void engine_cancel(engine *e, engine_request *r, int stop);

typedef struct {
    int n_slots, slots_busy, queue_depth, queue_max, max_seq, n_nodes;
    long requests_total, requests_done, tokens_generated, prompt_tokens;
    double compute_s, wait_s;  /* the starter's, since open */
    int failed;                /* a node failed; the engine refuses new work */
    int failovers;             /* node failures recovered from (a spare or the node back) */
    double failover_lost_s;    /* seconds they cost, from detection to every replay done */
    char failover_last[200];   /* "" or the last one: "secondary 1 (addr:port) replaced by spare 0: 0.412 s lost" */
    char failure[MDI_ERR_LEN]; /* while failed: the failure, naming the node */
} engine_stats;

void engine_get_stats(engine *e, engine_stats *st);
const model_config *engine_model_config(const engine *e);
/* Ring mode: which node stands in each place of the ring now, a spare after
 * a failover (cluster_get_places, cluster.h); 0, or -1 standalone. Any
 * thread, like engine_get_stats. */
int engine_get_places(engine *e, int in_place[NODES_MAX_SECONDARY], int spare_used[NODES_MAX_SPARE]);
/* JSON array of per-node objects (role, index, addr, layers, ...), new. */
json_t *engine_nodes_json(engine *e);

/* The weights one node runs alone: ckpt, or the 1-node chunk of a
 * prepared checkpoints/NAME folder (buf: room for the path). */
const char *engine_weights_path(const char *ckpt, char *buf, size_t cap);

/* Stops the thread, ends what still runs (CANCELLED), stops the ring.
 * st/nodes (may be NULL): the figures of the whole run (report.h), nodes
 * with each secondary's once stopped (NULL standalone). After a node
 * failed, returns its error. */
int engine_close(engine *e, run_stats *st, json_t **nodes, char *err);

#endif
