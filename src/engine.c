/*
 * engine: the scheduler (see engine.h).
 *
 * One engine thread runs the loop; engine_submit / engine_cancel /
 * engine_get_stats take e->mu only for a moment. A request goes
 *
 *   queued (e->q_head..q_tail) -> in a slot: PREFILL (chunks of
 *   prefill_chunk tokens, one chunk per loop round) -> DECODE (one token per
 *   round, all decoding slots as one batch) -> finished (on_done, freed)
 *
 * and its slot is free again at once (standalone) or once its RELEASE came
 * back round the ring (ring mode: frames of the old request may still be in
 * flight before it, and the ring is FIFO).
 */
#include "engine.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "control.h"
#include "forward.h"
#include "model.h"
#include "nodes_config.h"
#include "util.h"

/* RQ_WAITING: just took its slot; RQ_PREFILL: prompt chunks to run (or
 * send); RQ_DECODE: standalone, its next token to run; RQ_RING: ring mode,
 * its logits frame to come back. */
enum { RQ_WAITING, RQ_PREFILL, RQ_DECODE, RQ_RING };

/* Frames the starter keeps in flight at most before it sends another
 * prefill chunk; below the ring's queue capacity so that the bounded
 * queues can never all fill up at once. */
#define ENGINE_MAX_IN_FLIGHT 32
/* engine_nodes_json asks each secondary for its figures, waiting this long at most. */
#define ENGINE_STATUS_S 1.0
/* A ring left failed (no node back within --failover-timeout): the loop
 * probes the failed node and the spares again this often, and the ring
 * closes again once one answers. */
#define ENGINE_RETRY_S 2.0

struct engine_request {
    engine_request *next;      /* the queue's link */
    long id;                   /* submission order since open, from 0 */
    int *ids, n_prompt;        /* ids: room for max_seq + 2 once in a slot: the prompt,
                                * then every token generated (a failover replays them) */
    int n_fill;                /* tokens of ids to prefill: n_prompt, or after a failover
                                * the prompt and every token generated */
    sample_params sp;
    engine_callbacks cb;
    void *ud;
    double t_submit;
    int cancel;                /* under e->mu: 0, or the finish engine_cancel asked for */
    /* the engine thread's, once the request holds a slot */
    int slot, state;
    int have_smp;
    sampler smp;
    tokenizer_stream stream;
    int prefilled;             /* prompt tokens sent / run */
    int pos;                   /* tokens in the KV cache */
    int next_token, n_generated;
    int replay;                /* replaying after a failover: its next logits not back yet */
};

typedef struct {
    engine_request *r;         /* NULL: free unless releasing */
    int releasing;             /* ring: its RELEASE has not come back yet */
    kv_cache kv;               /* the starter's cache of the slot */
} engine_slot;

struct engine {
    engine_config c;
    const tokenizer *tok;
    model_config cfg;
    model m;                   /* standalone: every layer */
    int have_model;
    cluster *cl;               /* ring mode; its m is the starter's chunk */
    model *mp;                 /* &m or &cl->m */
    proto_frame **batch;       /* ring: (n_slots,) logits frames back together */
    int in_flight;             /* ring: frames sent not yet back */
    int ring_rc;               /* ring: a failure seen, not yet diagnosed */
    char ring_why[MDI_ERR_LEN];
    int failed_node;           /* written under mu: the failed secondary, -1: none named */
    char fail_err[MDI_ERR_LEN]; /* the failure, naming the node */
    int failovers;             /* under mu: ring failures recovered from */
    double failover_lost_s;    /* under mu: seconds they cost, detection to every replay done */
    int replaying;             /* requests whose replay has not given logits yet */
    double t_fail;             /* the failover under way: when the failure was seen */
    double fo_ring_done;       /* seconds from t_fail to the ring closed again */
    char fo_line[MDI_ERR_LEN]; /* its log line, printed once the replays are done */
    char fo_what[200];         /* its node and what took its place, for fo_last */
    char fo_last[200];         /* under mu: the last failover, its node and time lost */
    int retry;                 /* under mu: failed, with failover: the loop retries cluster_recover */
    double t_failed;           /* when the failure that left the ring failed was seen */
    int n_nodes, n_slots, queue_max, max_seq, prefill_chunk;
    forward_state fs;
    int have_fs;
    engine_slot *slots;        /* (n_slots,) */
    float *x;                  /* (max(prefill_chunk, n_slots), dim) */
    forward_row *rows;         /* (n_slots,) */
    int *tokens, *row_slot;    /* (n_slots,) */
    FILE *logits_f;
    pthread_t thread;
    int have_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    engine_request *q_head, *q_tail;
    int q_len, closing, failed, slots_busy;
    long next_id, requests_total, requests_done, tokens_generated, prompt_tokens;
    double compute_s, wait_s;
    /* the engine thread's figures (read after it ended) */
    double t0, t_last, prefill_s, decode_s, ttft0;
    long prefill_tokens, decode_tokens, generated;
    long n_first;              /* requests that got their first token */
    double first_min, first_max; /* their first tokens, seconds after t0 */
    token_curve curve;
    size_t kv_bytes;
    char dtypes[64];
};

/* ---- requests ---- */

static void engine_request_free(engine_request *r)
{
    if (r->have_smp) sampler_free(&r->smp);
    free(r->ids);
    free(r);
}

/* Calls on_done and frees r; its slot (if any) is free from here. */
static void engine_replay_done(engine *e, engine_request *r);

static void engine_end(engine *e, engine_request *r, int finish, const char *err)
{
    engine_replay_done(e, r);
    if (r->cb.on_done) r->cb.on_done(r->ud, finish, r->n_prompt, r->n_generated, finish == ENGINE_FINISH_ERROR ? err : NULL);
    pthread_mutex_lock(&e->mu);
    e->requests_done++;
    if (r->slot >= 0) {
        e->slots[r->slot].r = NULL;
        e->slots_busy--;
    }
    pthread_mutex_unlock(&e->mu);
    e->t_last = time_now();
    engine_request_free(r);
}

/* A request that just took its slot: its sampler, and its stream primed
 * with the prompt (so that the first piece keeps its leading space). */
static int engine_start_request(engine *e, engine_request *r, char *err)
{
    if (sampler_init(&r->smp, e->cfg.vocab_size, r->sp.temperature, r->sp.top_k, r->sp.top_p, r->sp.seed) != 0)
        return mdi_fail(err, MDI_ENOMEM, "out of memory for the sampler");
    r->have_smp = 1;
    int *ids = realloc(r->ids, (size_t)(e->max_seq + 2) * sizeof(int));
    if (!ids) return mdi_fail(err, MDI_ENOMEM, "out of memory for the request's tokens");
    r->ids = ids;
    r->n_fill = r->n_prompt;
    tokenizer_stream_init(&r->stream);
    char piece[512];
    for (int i = 0; i < r->n_prompt; i++) tokenizer_stream_next(e->tok, &r->stream, r->ids[i], piece, sizeof(piece));
    kv_cache_reset(&e->slots[r->slot].kv);
    r->state = RQ_PREFILL;
    r->prefilled = r->pos = 0;
    return 0;
}

/* Takes the logits after r's last fed token: samples, calls on_token.
 * Returns 0 while r goes on (next_token set), or the finish. */
static int engine_accept(engine *e, engine_request *r, float *logits)
{
    if (e->logits_f && r->id == 0) fwrite(logits, sizeof(float), (size_t)e->cfg.vocab_size, e->logits_f);
    int id = sampler_sample(&r->smp, logits);
    double now = time_now(), t = now - r->t_submit;
    r->ids[r->n_prompt + r->n_generated] = id;
    r->n_generated++;
    if (r->n_generated == 1) {
        if (r->id == 0) e->ttft0 = t;
        double tf = now - e->t0;
        if (!e->n_first++ || tf < e->first_min) e->first_min = tf;
        if (tf > e->first_max) e->first_max = tf;
    }
    int eos = tokenizer_is_eos(e->tok, id);
    char piece[512] = "";
    if (!eos) tokenizer_stream_next(e->tok, &r->stream, id, piece, sizeof(piece));
    if (r->cb.on_token) r->cb.on_token(r->ud, id, piece, t);
    pthread_mutex_lock(&e->mu);
    e->tokens_generated++;
    pthread_mutex_unlock(&e->mu);
    e->generated++;
    if (e->c.record_curve) token_curve_add(&e->curve, now - e->t0, e->generated);
    if (eos && !r->sp.ignore_eos) return ENGINE_FINISH_STOP;
    if (r->n_generated >= r->sp.max_new || r->pos >= e->max_seq) return ENGINE_FINISH_LENGTH;
    r->next_token = id;
    return 0;
}

/* ---- standalone: one node runs every layer ---- */

/* One prefill chunk of the slot that came first, if any is prefilling. */
static void engine_local_prefill(engine *e)
{
    engine_request *r = NULL;
    for (int k = 0; k < e->n_slots; k++) {
        engine_request *q = e->slots[k].r;
        if (q && q->state == RQ_PREFILL && (!r || q->id < r->id)) r = q;
    }
    if (!r) return;
    int dim = e->cfg.dim, off = r->prefilled;
    int chunk = r->n_fill - off < e->prefill_chunk ? r->n_fill - off : e->prefill_chunk;
    double t = time_now();
    kv_cache *kv = &e->slots[r->slot].kv;
    forward_embed(e->mp, r->ids + off, chunk, e->x);
    forward_layers(e->mp, &e->fs, kv, e->x, chunk, off);
    r->prefilled = off + chunk;
    float *logits = NULL;
    if (r->prefilled == r->n_fill) logits = forward_head(e->mp, &e->fs, e->x + (size_t)(chunk - 1) * dim);
    double dt = time_now() - t;
    e->prefill_s += dt;
    e->prefill_tokens += chunk;
    pthread_mutex_lock(&e->mu);
    e->compute_s += dt;
    pthread_mutex_unlock(&e->mu);
    if (!logits) return;
    r->pos = r->n_fill;
    r->state = RQ_DECODE;
    int fin = engine_accept(e, r, logits);
    if (fin) engine_end(e, r, fin, NULL);
}

/* One decode step of every slot in DECODE, as one batch. */
static void engine_local_decode(engine *e)
{
    int b = 0;
    for (int k = 0; k < e->n_slots; k++) {
        engine_request *r = e->slots[k].r;
        if (!r || r->state != RQ_DECODE) continue;
        e->rows[b].kv = &e->slots[k].kv;
        e->rows[b].pos = r->pos;
        e->tokens[b] = r->next_token;
        e->row_slot[b++] = k;
    }
    if (!b) return;
    double t = time_now();
    float *logits = forward_batch(e->mp, &e->fs, e->rows, e->tokens, b, e->x);
    double dt = time_now() - t;
    e->decode_s += dt;
    e->decode_tokens += b;
    pthread_mutex_lock(&e->mu);
    e->compute_s += dt;
    pthread_mutex_unlock(&e->mu);
    for (int j = 0; j < b; j++) {
        engine_request *r = e->slots[e->row_slot[j]].r;
        r->pos++;
        int fin = engine_accept(e, r, logits + (size_t)j * e->cfg.vocab_size);
        if (fin) engine_end(e, r, fin, NULL);
    }
}


/* ---- ring mode: the starter's layers and head, the ring does the rest ---- */

/* r's slot leaves r (on_done called) and, when r sent anything, its
 * RELEASE goes round the ring: the slot is free once it came back. */
static void engine_ring_end(engine *e, engine_request *r, int finish, const char *err)
{
    int k = r->slot, sent = r->prefilled > 0;
    engine_end(e, r, finish, err);
    if (k < 0 || !sent || e->ring_rc) return;
    int rc = cluster_send_control(e->cl, PROTO_RELEASE, k, e->ring_why);
    if (rc == 0) {
        e->slots[k].releasing = 1;
        e->in_flight++;
    } else {
        e->ring_rc = rc; /* diagnosed by the loop */
    }
}

/* One prefill chunk of the slot that came first through the starter's
 * layers and onto the ring, room permitting (*sent: whether one went). */
static int engine_ring_prefill(engine *e, int *sent, char *err)
{
    *sent = 0;
    if (e->in_flight >= ENGINE_MAX_IN_FLIGHT) return 0;
    engine_request *r = NULL;
    for (int k = 0; k < e->n_slots; k++) {
        engine_request *q = e->slots[k].r;
        if (q && q->state == RQ_PREFILL && (!r || q->id < r->id)) r = q;
    }
    if (!r) return 0;
    int off = r->prefilled, end = r->n_fill, rows = 0;
    if (r->replay) {
        /* the prompt in the chunks it was first prefilled in, then the
         * generated tokens through the decode kernels: every cache and
         * the logits after the last token bit for bit as before */
        if (off < r->n_prompt) end = r->n_prompt;
        else rows = 1;
    }
    int chunk = end - off < e->prefill_chunk ? end - off : e->prefill_chunk;
    int last = off + chunk == r->n_fill;
    double t = time_now();
    forward_embed(e->mp, r->ids + off, chunk, e->x);
    if (rows) forward_layers_rows(e->mp, &e->fs, &e->slots[r->slot].kv, e->x, chunk, off);
    else forward_layers(e->mp, &e->fs, &e->slots[r->slot].kv, e->x, chunk, off);
    double dt = time_now() - t;
    e->cl->compute_s += dt;
    e->prefill_tokens += chunk;
    pthread_mutex_lock(&e->mu);
    e->compute_s += dt;
    pthread_mutex_unlock(&e->mu);
    r->prefilled = off + chunk;
    if (last) r->state = RQ_RING;
    int rc = cluster_send_frame(e->cl, r->slot, off, chunk,
                                (last ? PROTO_FLAG_LOGITS : 0) | (rows ? PROTO_FLAG_ROWS : 0), e->x, err);
    if (!rc) e->in_flight++;
    *sent = !rc;
    return rc;
}

/* The next frame back and every other already back; the logits frames
 * among them run the head as one batch, and the next tokens of the
 * requests that go on run the starter's layers as one batch. */
static int engine_ring_step(engine *e, int block, char *err)
{
    if (e->in_flight == 0) return 0;
    cluster *c = e->cl;
    int dim = e->cfg.dim, rc, nb = 0;
    proto_frame *f = NULL;
    double tw = time_now();
    rc = ring_recv(&c->ring, &f, block ? e->c.timeout_s : 0, err);
    double dw = time_now() - tw;
    c->wait_s += dw;
    pthread_mutex_lock(&e->mu);
    e->wait_s += dw;
    pthread_mutex_unlock(&e->mu);
    if (rc == MDI_ETIMEOUT && !block) return 0;
    if (rc) return rc;
    for (;;) {
        e->in_flight--;
        int type = f->h.type, k = (int)f->h.sample_id;
        if (type == PROTO_ERROR) {
            rc = cluster_frame_error(f, err);
        } else if (type == PROTO_STOP) {
            rc = mdi_fail(err, MDI_EPROTO, "starter: STOP came back before the run ended");
        } else if (type == PROTO_RELEASE) {
            if (k >= 0 && k < e->n_slots) e->slots[k].releasing = 0;
        } else if (type == PROTO_DATA && (f->h.flags & PROTO_FLAG_LOGITS)) {
            engine_request *r = k >= 0 && k < e->n_slots ? e->slots[k].r : NULL;
            /* a request that ended (cancelled) leaves frames behind: its
             * slot stays releasing until they and the RELEASE are back */
            if (r && !e->slots[k].releasing && r->state == RQ_RING) {
                int want = r->pos ? r->pos - 1 : r->n_fill - 1;
                if (f->h.n_tokens != 1 || (int)f->h.pos != want)
                    rc = mdi_fail(err, MDI_EPROTO, "starter: unexpected frame for slot %d at position %u", k,
                                  f->h.pos);
                else {
                    e->batch[nb++] = f;
                    f = NULL;
                }
            }
        }
        if (f) ring_frame_put(&c->ring, f);
        char why[MDI_ERR_LEN];
        if (rc || nb == e->n_slots || e->in_flight == 0 || ring_recv(&c->ring, &f, 0, why) != 0) break;
    }
    if (rc || nb == 0) {
        for (int i = 0; i < nb; i++) ring_frame_put(&c->ring, e->batch[i]);
        return rc;
    }
    double t = time_now();
    for (int i = 0; i < nb; i++)
        proto_unpack(e->batch[i]->payload, (size_t)dim, (dtype_t)e->batch[i]->h.dtype, e->x + (size_t)i * dim);
    float *logits = forward_head_batch(e->mp, &e->fs, e->x, nb);
    if (nb > 1) {
        c->batches++;
        c->batched_tokens += nb;
    }
    int n_going = 0;
    for (int i = 0; i < nb; i++) {
        int k = (int)e->batch[i]->h.sample_id;
        ring_frame_put(&c->ring, e->batch[i]);
        engine_request *r = e->slots[k].r;
        if (r->pos == 0) r->pos = r->n_fill;
        engine_replay_done(e, r);
        int fin = engine_accept(e, r, logits + (size_t)i * e->cfg.vocab_size);
        if (fin) {
            engine_ring_end(e, r, fin, NULL);
            continue;
        }
        e->rows[n_going].kv = &e->slots[k].kv;
        e->rows[n_going].pos = r->pos;
        e->tokens[n_going] = r->next_token;
        e->row_slot[n_going++] = k;
    }
    if (n_going > 0) {
        forward_embed(e->mp, e->tokens, n_going, e->x);
        forward_layers_batch(e->mp, &e->fs, e->rows, n_going, e->x);
    }
    double dt = time_now() - t;
    c->compute_s += dt;
    e->decode_tokens += n_going;
    pthread_mutex_lock(&e->mu);
    e->compute_s += dt;
    pthread_mutex_unlock(&e->mu);
    for (int j = 0; j < n_going && !rc; j++) {
        engine_request *r = e->slots[e->row_slot[j]].r;
        rc = cluster_send_frame(c, r->slot, r->pos, 1, PROTO_FLAG_LOGITS, e->x + (size_t)j * dim, err);
        r->pos++;
        if (!rc) e->in_flight++;
    }
    return rc;
}

/* A node failed: name it, refuse new work, end every request with the
 * error. */
/* After a failure: every request in a slot starts over on the new ring
 * from its prompt and the tokens it generated (prefilled again, so that
 * every node's KV cache is rebuilt); its sampler goes on where it was, and
 * the logits after its last token give its next one. */
static void engine_ring_replay(engine *e)
{
    e->in_flight = 0;
    e->ring_rc = 0;
    for (int k = 0; k < e->n_slots; k++) {
        engine_slot *sl = &e->slots[k];
        sl->releasing = 0;
        kv_cache_reset(&sl->kv);
        engine_request *r = sl->r;
        if (!r) continue;
        r->n_fill = r->n_prompt + r->n_generated;
        r->prefilled = r->pos = 0;
        r->state = RQ_PREFILL;
        if (!r->replay) e->replaying++;
        r->replay = 1;
    }
}

/* r's replay gave its logits (or r ended): the last one done completes
 * the failover's figures and log line. */
static void engine_replay_done(engine *e, engine_request *r)
{
    if (!r->replay) return;
    r->replay = 0;
    if (--e->replaying > 0) return;
    double now = time_now(), lost = now - e->t_fail;
    log_info("%s, replay %.3f s): %.3f s lost", e->fo_line, now - e->t_fail - e->fo_ring_done, lost);
    pthread_mutex_lock(&e->mu);
    e->failover_lost_s += lost;
    snprintf(e->fo_last, sizeof(e->fo_last), "%.160s: %.3f s lost", e->fo_what, lost);
    pthread_mutex_unlock(&e->mu);
}

/* What a failover did, for its log line and fo_last: "secondary 1
 * (addr:port) replaced by spare 0" (name: the failed node's, taken before
 * the recovery put another in its place), or, when no node was named, the
 * ring closed again with the same nodes. */
static void engine_failover_what(int node, const char *name, const cluster_recovery *rec, char *out, size_t cap)
{
    if (node < 0) {
        snprintf(out, cap, "the ring re-closed, no node failed");
        return;
    }
    if (rec->spare >= 0) snprintf(out, cap, "%.120s replaced by spare %d", name, rec->spare);
    else snprintf(out, cap, "%.120s replaced by the same node back", name);
}

/* Appends "; failover: why" to e->fail_err (as much as fits). */
static void engine_fail_err_append(engine *e, const char *why)
{
    static const char sep[] = "; failover: ";
    size_t cap = sizeof(e->fail_err), l = strlen(e->fail_err), n = strlen(why);
    if (l + sizeof(sep) >= cap) return;
    memcpy(e->fail_err + l, sep, sizeof(sep));
    l += sizeof(sep) - 1;
    if (n > cap - 1 - l) n = cap - 1 - l;
    memcpy(e->fail_err + l, why, n);
    e->fail_err[l + n] = 0;
}

/* A node failed (node, or -1: the diagnosis named none, every secondary
 * still answers): with --failover-timeout, the cluster recovers (the node
 * back or a spare in its place, or with no node named the same nodes, the
 * ring closed again) and the requests replay; returns 1 then. Else 0:
 * e->fail_err names the node, and the recovery's failure too. */
static int engine_ring_failover(engine *e, double t_fail, int node)
{
    if (e->c.failover_timeout_s <= 0) return 0;
    char why[MDI_ERR_LEN];
    if (node < 0 && e->replaying > 0) {
        /* the ring closed again with the same nodes broke again while the
         * requests replayed: a failure the replay repeats would loop here;
         * the requests end and the loop retries later */
        engine_fail_err_append(e, "the ring broke again before the last failover's replay was done");
        return 0;
    }
    if (node < 0) log_warn("%s; no node named: closing the ring again with the same nodes", e->fail_err);
    else log_warn("%s; failing over (waiting up to %g s for it or a spare)", e->fail_err, e->c.failover_timeout_s);
    double t_detect = time_now() - t_fail;
    char name[160] = "";
    if (node >= 0) cluster_node_name(e->cl, node, name, sizeof(name));
    cluster_recovery rec;
    int rc = cluster_recover(e->cl, node, e->c.failover_timeout_s, &rec, why);
    if (rc) {
        engine_fail_err_append(e, why);
        return 0;
    }
    engine_failover_what(node, name, &rec, e->fo_what, sizeof(e->fo_what));
    snprintf(e->fo_line, sizeof(e->fo_line), "failover: %.180s, epoch %u (detection %.3f s, "
             "waiting %.3f s, /init%s %.3f s, ring %.3f s", e->fo_what, e->cl->epoch, t_detect, rec.wait_s,
             rec.uploaded ? " and chunk upload" : "", rec.init_s, rec.ring_s);
    e->t_fail = t_fail;
    e->fo_ring_done = time_now() - t_fail;
    pthread_mutex_lock(&e->mu);
    e->failovers++;
    pthread_mutex_unlock(&e->mu);
    engine_ring_replay(e);
    if (!e->replaying) {
        /* nothing to replay: done now */
        engine_request none = {.replay = 1};
        e->replaying = 1;
        engine_replay_done(e, &none);
    }
    return 1;
}

static void engine_ring_fail(engine *e, int code, const char *why, double t_fail)
{
    int node = -1;
    cluster_diagnose(e->cl, code, why, e->fail_err, &node);
    if (engine_ring_failover(e, t_fail, node)) return;
    /* with failover, the loop goes on trying: the node or a spare that
     * answers later closes the ring again */
    e->t_failed = t_fail;
    pthread_mutex_lock(&e->mu);
    e->retry = e->c.failover_timeout_s > 0;
    e->failed = 1;
    e->failed_node = node;
    engine_request *q = e->q_head;
    e->q_head = e->q_tail = NULL;
    e->q_len = 0;
    pthread_mutex_unlock(&e->mu);
    for (int k = 0; k < e->n_slots; k++)
        if (e->slots[k].r) engine_end(e, e->slots[k].r, ENGINE_FINISH_ERROR, e->fail_err);
    while (q) {
        engine_request *r = q;
        q = r->next;
        engine_end(e, r, ENGINE_FINISH_ERROR, e->fail_err);
    }
}

/* The ring left failed (e->retry): one look for the failed node back or
 * a spare (no node named: the same nodes again); when one answers, it
 * takes the node's layers, the ring closes again and the engine takes work
 * again (a failover, its time lost counted from the failure). */
static void engine_ring_retry(engine *e)
{
    int node = e->failed_node;
    char name[160] = "", why[MDI_ERR_LEN];
    if (node >= 0) cluster_node_name(e->cl, node, name, sizeof(name));
    cluster_recovery rec;
    if (cluster_recover(e->cl, node, 0, &rec, why) != 0) {
        if (e->c.verbose) log_info("still failed: %s", why);
        return;
    }
    engine_failover_what(node, name, &rec, e->fo_what, sizeof(e->fo_what));
    snprintf(e->fo_line, sizeof(e->fo_line), "failover: %.180s, epoch %u, after %.3f s failed "
             "(/init%s %.3f s, ring %.3f s", e->fo_what, e->cl->epoch, time_now() - e->t_failed,
             rec.uploaded ? " and chunk upload" : "", rec.init_s, rec.ring_s);
    e->t_fail = e->t_failed;
    e->fo_ring_done = time_now() - e->t_fail;
    engine_ring_replay(e); /* no request left: the ring's counters reset */
    pthread_mutex_lock(&e->mu);
    e->failed_node = -1;
    e->retry = 0;
    e->failed = 0;
    e->failovers++;
    pthread_mutex_unlock(&e->mu);
    engine_request none = {.replay = 1};
    e->replaying = 1;
    engine_replay_done(e, &none);
}

/* ---- the loop ---- */

static int engine_any_busy(const engine *e)
{
    for (int k = 0; k < e->n_slots; k++)
        if (e->slots[k].r) return 1;
    return 0;
}

static void *engine_main(void *arg)
{
    engine *e = arg;
    engine_request **admitted = calloc((size_t)e->n_slots, sizeof(*admitted));
    engine_request **stopping = calloc((size_t)e->n_slots, sizeof(*stopping));
    int *stop_finish = calloc((size_t)e->n_slots, sizeof(int));
    char err[MDI_ERR_LEN];
    for (;;) {
        engine_request *ended = NULL; /* cancelled while queued */
        int n_admitted = 0, n_stopping = 0, closing;
        if (e->failed) {
            /* nothing runs (engine_submit refuses work): wait, then look
             * for the node or a spare again */
            pthread_mutex_lock(&e->mu);
            if (!e->closing) {
                struct timespec dl;
                clock_gettime(CLOCK_REALTIME, &dl);
                dl.tv_sec += (time_t)ENGINE_RETRY_S;
                pthread_cond_timedwait(&e->cv, &e->mu, &dl);
            }
            closing = e->closing;
            pthread_mutex_unlock(&e->mu);
            if (closing) break;
            engine_ring_retry(e);
            continue;
        }
        pthread_mutex_lock(&e->mu);
        for (;;) {
            if (e->closing) break;
            /* requests cancelled while queued leave the queue */
            engine_request **pp = &e->q_head, *last = NULL;
            while (*pp) {
                engine_request *r = *pp;
                if (r->cancel) {
                    *pp = r->next;
                    e->q_len--;
                    r->next = ended;
                    ended = r;
                } else {
                    last = r;
                    pp = &r->next;
                }
            }
            e->q_tail = last;
            /* the others take the free slots, in order */
            for (int k = 0; k < e->n_slots && e->q_head; k++) {
                if (e->slots[k].r || e->slots[k].releasing) continue;
                engine_request *r = e->q_head;
                e->q_head = r->next;
                e->q_len--;
                r->next = NULL;
                r->slot = k;
                r->state = RQ_WAITING;
                e->slots[k].r = r;
                e->slots_busy++;
                admitted[n_admitted++] = r;
            }
            if (!e->q_head) e->q_tail = NULL;
            if (ended || engine_any_busy(e) || e->in_flight > 0) break;
            pthread_cond_wait(&e->cv, &e->mu);
        }
        closing = e->closing;
        for (int k = 0; k < e->n_slots && !closing; k++) {
            engine_request *r = e->slots[k].r;
            if (r && r->cancel) {
                stop_finish[n_stopping] = r->cancel;
                stopping[n_stopping++] = r;
                for (int i = 0; i < n_admitted; i++)
                    if (admitted[i] == r) admitted[i] = NULL;
            }
        }
        pthread_mutex_unlock(&e->mu);
        while (ended) {
            engine_request *r = ended;
            ended = r->next;
            engine_end(e, r, r->cancel, NULL);
        }
        if (closing) break;
        for (int i = 0; i < n_stopping; i++) {
            if (e->cl) engine_ring_end(e, stopping[i], stop_finish[i], NULL);
            else engine_end(e, stopping[i], stop_finish[i], NULL);
        }
        for (int i = 0; i < n_admitted; i++) {
            engine_request *r = admitted[i];
            if (!r) continue; /* cancelled: ended above */
            if (engine_start_request(e, r, err)) engine_end(e, r, ENGINE_FINISH_ERROR, err);
            else if (r->sp.max_new <= 0) engine_end(e, r, ENGINE_FINISH_LENGTH, NULL);
        }
        if (e->cl) {
            /* a chunk just sent: take what is back without waiting, so
             * that the next round sends the next chunk while this one
             * crosses the ring */
            int rc = e->ring_rc, sent = 0;
            if (!rc) rc = engine_ring_prefill(e, &sent, e->ring_why);
            if (!rc) rc = engine_ring_step(e, !sent, e->ring_why);
            if (!rc) rc = e->ring_rc;
            if (rc) {
                engine_ring_fail(e, rc, e->ring_why, time_now());
                if (e->failed && !e->retry) break;
            }
        } else {
            engine_local_prefill(e);
            engine_local_decode(e);
        }
    }
    /* closing: what still runs or waits ends CANCELLED */
    for (int k = 0; k < e->n_slots; k++)
        if (e->slots[k].r) engine_end(e, e->slots[k].r, ENGINE_FINISH_CANCELLED, NULL);
    pthread_mutex_lock(&e->mu);
    engine_request *q = e->q_head;
    e->q_head = e->q_tail = NULL;
    e->q_len = 0;
    pthread_mutex_unlock(&e->mu);
    while (q) {
        engine_request *r = q;
        q = r->next;
        engine_end(e, r, ENGINE_FINISH_CANCELLED, NULL);
    }
    free(admitted);
    free(stopping);
    free(stop_finish);
    return NULL;
}

/* ---- open / close ---- */

const char *engine_weights_path(const char *ckpt, char *buf, size_t cap)
{
    char p[PATH_MAX];
    if (!dir_exists(ckpt)) return ckpt;
    if ((path_join(p, sizeof(p), ckpt, "model.safetensors") == 0 && file_exists(p)) ||
        (path_join(p, sizeof(p), ckpt, "model.safetensors.index.json") == 0 && file_exists(p)))
        return ckpt;
    if (path_join(buf, cap, ckpt, "chunks/1nodes/model_starter.safetensors") == 0 && file_exists(buf)) return buf;
    return ckpt;
}

static void engine_free(engine *e)
{
    if (e->slots) {
        for (int k = 0; k < e->n_slots; k++) kv_cache_free(&e->slots[k].kv);
        free(e->slots);
    }
    if (e->have_fs) forward_state_free(&e->fs);
    free(e->x);
    free(e->rows);
    free(e->tokens);
    free(e->row_slot);
    free(e->batch);
    if (e->cl) cluster_close(e->cl, 1, e->failed_node);
    if (e->logits_f) fclose(e->logits_f);
    if (e->have_model) model_free(&e->m);
    token_curve_free(&e->curve);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

/* Sizes from the configuration and the model: n_slots, queue_max,
 * max_seq, prefill_chunk. */
static int engine_plan(engine *e, char *err)
{
    const engine_config *c = &e->c;
    e->n_slots = c->n_slots > 0 ? c->n_slots : 2 * e->n_nodes;
    if (e->n_slots < 2 && c->n_slots <= 0) e->n_slots = 2;
    if (e->n_slots > FORWARD_MAX_SAMPLES)
        return mdi_fail(err, MDI_EARG, "n_slots %d: at most %d", e->n_slots, FORWARD_MAX_SAMPLES);
    e->queue_max = c->queue_max > 0 ? c->queue_max : 4 * e->n_slots;
    if (c->max_seq > e->cfg.max_seq_len)
        return mdi_fail(err, MDI_EARG, "max_seq %d: above the model's context of %d tokens", c->max_seq,
                        e->cfg.max_seq_len);
    if (c->max_seq < 0) return mdi_fail(err, MDI_EARG, "max_seq %d: negative", c->max_seq);
    e->max_seq = c->max_seq ? c->max_seq
                 : e->cfg.max_seq_len < ENGINE_DEFAULT_MAX_SEQ ? e->cfg.max_seq_len : ENGINE_DEFAULT_MAX_SEQ;
    if (c->prefill_chunk < 0) return mdi_fail(err, MDI_EARG, "prefill_chunk %d: negative", c->prefill_chunk);
    e->prefill_chunk = c->prefill_chunk ? c->prefill_chunk : ENGINE_DEFAULT_PREFILL_CHUNK;
    if (e->prefill_chunk > e->max_seq) e->prefill_chunk = e->max_seq;
    return 0;
}

/* Standalone: every layer here. Ring mode: the cluster opened (the
 * starter's chunk, every secondary configured with n_slots slots, the ring
 * closed). Then the starter's buffers and every slot's cache. */
static int engine_open_model(engine *e, char *err)
{
    const engine_config *c = &e->c;
    int rc;
    if (e->n_nodes > 1) {
        cluster_opts co = {c->ckpt, c->nodes_config, c->dtype, c->kv_dtype, c->wire_dtype, c->mmap_weights,
                           c->mlock, e->max_seq, e->prefill_chunk, e->n_slots, c->timeout_s,
                           c->connect_timeout_s, c->verbose};
        if ((rc = cluster_open(&e->cl, &co, err))) return rc;
        e->cl->names_mu = &e->mu;
        e->mp = &e->cl->m;
        if (!(e->batch = calloc((size_t)e->n_slots, sizeof(*e->batch))))
            return mdi_fail(err, MDI_ENOMEM, "out of memory");
    } else {
        char buf[PATH_MAX];
        const char *weights = engine_weights_path(c->ckpt, buf, sizeof(buf));
        model_slice slice = {0, e->cfg.n_layers, 1, 1, c->dtype, c->mmap_weights ? TSRC_MAP : TSRC_READ};
        if ((rc = model_load(&e->m, weights, &e->cfg, &slice, err))) return rc;
        e->have_model = 1;
        e->mp = &e->m;
        char warn[MDI_ERR_LEN];
        if (c->mlock && model_lock(&e->m, warn) == 0) log_warn("%s", warn);
    }
    snprintf(e->dtypes, sizeof(e->dtypes), "%s", e->mp->dtypes);
    int n = e->n_slots, x_rows = e->prefill_chunk > n ? e->prefill_chunk : n;
    if ((rc = forward_state_init_batch(&e->fs, e->mp, e->prefill_chunk, n, e->max_seq, err))) return rc;
    e->have_fs = 1;
    e->slots = calloc((size_t)n, sizeof(*e->slots));
    e->x = malloc((size_t)x_rows * e->cfg.dim * sizeof(float));
    e->rows = calloc((size_t)n, sizeof(*e->rows));
    e->tokens = calloc((size_t)n, sizeof(int));
    e->row_slot = calloc((size_t)n, sizeof(int));
    if (!e->slots || !e->x || !e->rows || !e->tokens || !e->row_slot)
        return mdi_fail(err, MDI_ENOMEM, "out of memory for %d slots", n);
    for (int k = 0; k < n; k++) {
        if ((rc = kv_cache_init(&e->slots[k].kv, e->mp, e->max_seq, c->kv_dtype, err))) return rc;
        e->kv_bytes += kv_cache_bytes(&e->slots[k].kv);
    }
    if (e->cl) e->cl->kv_bytes_peak = e->kv_bytes;
    return 0;
}

int engine_open(engine **out, const engine_config *c, const tokenizer *tok, char *err)
{
    *out = NULL;
    engine *e = calloc(1, sizeof(*e));
    if (!e) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->c = *c;
    e->tok = tok;
    e->n_nodes = 1;
    e->failed_node = -1;
    int rc = 0;
    if (!c->ckpt) rc = mdi_fail(err, MDI_EARG, "engine: no checkpoint");
    if (!rc && c->nodes_config) {
        nodes_config nc;
        if (!(rc = nodes_config_load(&nc, c->nodes_config, err))) e->n_nodes = nodes_config_n_nodes(&nc);
    }
    if (!rc) rc = model_config_load(&e->cfg, c->ckpt, err);
    if (!rc) rc = engine_plan(e, err);
    if (!rc) rc = engine_open_model(e, err);
    if (!rc && c->logits_out && !(e->logits_f = fopen(c->logits_out, "wb")))
        rc = mdi_fail(err, MDI_EIO, "%s: cannot create", c->logits_out);
    if (rc) {
        engine_free(e);
        return rc;
    }
    e->t0 = e->t_last = time_now();
    if (e->c.record_curve) token_curve_add(&e->curve, 0, 0);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        engine_free(e);
        return mdi_fail(err, MDI_ENOMEM, "cannot start the engine thread");
    }
    e->have_thread = 1;
    *out = e;
    return 0;
}

int engine_submit(engine *e, const int *ids, int n, const sample_params *sp, const engine_callbacks *cb,
                  void *ud, engine_request **out, char *err)
{
    if (out) *out = NULL;
    if (n <= 0) return mdi_fail(err, MDI_EARG, "empty prompt: nothing to start from");
    if (n + 1 > e->max_seq)
        return mdi_fail(err, MDI_EARG, "prompt of %d tokens is too long for a context of %d tokens "
                        "(the prompt and one new token at most)", n, e->max_seq);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= e->cfg.vocab_size)
            return mdi_fail(err, MDI_EARG, "prompt token %d: id %d outside the vocabulary of %d", i, ids[i],
                            e->cfg.vocab_size);
    engine_request *r = calloc(1, sizeof(*r));
    if (!r || !(r->ids = malloc((size_t)n * sizeof(int)))) {
        free(r);
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    }
    memcpy(r->ids, ids, (size_t)n * sizeof(int));
    r->n_prompt = n;
    r->sp = *sp;
    if (cb) r->cb = *cb;
    r->ud = ud;
    r->slot = -1;
    r->t_submit = time_now();
    pthread_mutex_lock(&e->mu);
    int rc = 0;
    if (e->closing || e->failed)
        rc = !e->failed ? mdi_fail(err, MDI_ESTATE, "the engine is closing")
             : e->retry && e->failed_node < 0
                 ? mdi_fail(err, MDI_ESTATE, "the ring failed; closing it again with the same nodes: %.400s", e->fail_err)
             : e->retry ? mdi_fail(err, MDI_ESTATE, "a node failed; waiting for it or a spare to take its place: %.400s",
                                   e->fail_err)
                        : mdi_fail(err, MDI_ESTATE, "the engine is stopped after a node failed: %.400s", e->fail_err);
    else if (e->q_len >= e->queue_max + (e->n_slots - e->slots_busy))
        /* requests submitted at once take the free slots first: only those
         * beyond them count against the queue, though the engine thread
         * has not admitted any yet */
        rc = mdi_fail(err, MDI_EFULL, "queue full: %d requests wait for %d slots", e->q_len, e->n_slots);
    if (!rc) {
        r->id = e->next_id++;
        if (e->q_tail) e->q_tail->next = r;
        else e->q_head = r;
        e->q_tail = r;
        e->q_len++;
        e->requests_total++;
        e->prompt_tokens += n;
        if (out) *out = r;
        pthread_cond_signal(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    if (rc) engine_request_free(r);
    return rc;
}

void engine_cancel(engine *e, engine_request *r, int stop)
{
    pthread_mutex_lock(&e->mu);
    if (!r->cancel) r->cancel = stop ? ENGINE_FINISH_STOP : ENGINE_FINISH_CANCELLED;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void engine_get_stats(engine *e, engine_stats *st)
{
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&e->mu);
    st->n_slots = e->n_slots;
    st->slots_busy = e->slots_busy;
    st->queue_depth = e->q_len;
    st->queue_max = e->queue_max;
    st->max_seq = e->max_seq;
    st->n_nodes = e->n_nodes;
    st->requests_total = e->requests_total;
    st->requests_done = e->requests_done;
    st->tokens_generated = e->tokens_generated;
    st->prompt_tokens = e->prompt_tokens;
    st->compute_s = e->compute_s;
    st->wait_s = e->wait_s;
    st->failed = e->failed;
    st->failovers = e->failovers;
    st->failover_lost_s = e->failover_lost_s;
    snprintf(st->failover_last, sizeof(st->failover_last), "%s", e->fo_last);
    if (e->failed) snprintf(st->failure, sizeof(st->failure), "%s", e->fail_err);
    pthread_mutex_unlock(&e->mu);
}

const model_config *engine_model_config(const engine *e) { return &e->cfg; }

int engine_get_places(engine *e, int in_place[NODES_MAX_SECONDARY], int spare_used[NODES_MAX_SPARE])
{
    /* e->cl lives from engine_open to engine_close; its names_mu is e->mu,
     * which cluster_get_places takes */
    if (!e->cl) return -1;
    cluster_get_places(e->cl, in_place, spare_used);
    return 0;
}

json_t *engine_nodes_json(engine *e)
{
    json_t *arr = json_array(), *s = json_object();
    pthread_mutex_lock(&e->mu);
    json_object_set_new(s, "role", json_string("starter"));
    json_object_set_new(s, "index", json_integer(0));
    json_object_set_new(s, "addr", json_string(e->cl ? e->cl->nc.starter.addr : "local"));
    json_object_set_new(s, "layers", json_pack("[i, i]", e->mp->slice.layer_begin, e->mp->slice.layer_end));
    json_object_set_new(s, "compute_s", json_real(e->compute_s));
    json_object_set_new(s, "wait_s", json_real(e->wait_s));
    json_object_set_new(s, "weight_bytes", json_integer((json_int_t)e->mp->weight_bytes));
    json_object_set_new(s, "kv_bytes", json_integer((json_int_t)e->kv_bytes));
    json_object_set_new(s, "slots_busy", json_integer(e->slots_busy));
    json_object_set_new(s, "failed", json_boolean(e->failed));
    json_object_set_new(s, "failovers", json_integer(e->failovers));
    json_object_set_new(s, "failover_lost_s", json_real(e->failover_lost_s));
    json_array_append_new(arr, s);
    /* the secondaries (a failover may put a spare in a place: under mu) */
    for (int i = 0; e->cl && i < e->cl->nc.n_secondary; i++) {
        const node_entry *n = &e->cl->nc.secondary[i];
        int b, en;
        cluster_node_layers(e->cl, i, &b, &en);
        json_t *o = json_object();
        json_object_set_new(o, "role", json_string("secondary"));
        json_object_set_new(o, "index", json_integer(i + 1));
        json_object_set_new(o, "secondary_index", json_integer(i));
        json_object_set_new(o, "addr", json_string(n->addr));
        json_object_set_new(o, "http_port", json_integer(n->http_port));
        json_object_set_new(o, "layers", json_pack("[i, i]", b, en));
        char name[200];
        cluster_node_name(e->cl, i, name, sizeof(name));
        json_object_set_new(o, "name", json_string(name));
        json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&e->mu);
    /* each secondary's figures so far, from its GET / (outside the lock,
     * bounded: a silent node leaves them out rather than holding the caller) */
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        if (i == 0) continue;
        json_t *status = NULL;
        char why[MDI_ERR_LEN];
        if (control_client_status(json_string_value(json_object_get(o, "addr")),
                                  (int)json_integer_value(json_object_get(o, "http_port")), e->cl->nc.secret,
                                  ENGINE_STATUS_S, &status, why) == 0) {
            json_t *rs = json_object_get(status, "stats");
            const char *keys[] = {"compute_s", "wait_s", "tokens", "decode_batches", "batched_tokens"};
            for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
                json_t *v = json_object_get(rs, keys[k]);
                if (json_is_number(v)) json_object_set(o, keys[k], v);
            }
            json_t *state = json_object_get(status, "state");
            if (json_is_string(state)) json_object_set(o, "state", state);
        }
        json_decref(status);
    }
    return arr;
}

int engine_close(engine *e, run_stats *st, json_t **nodes, char *err)
{
    if (nodes) *nodes = NULL;
    if (st) memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&e->mu);
    e->closing = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->have_thread) pthread_join(e->thread, NULL);
    int rc = 0;
    if (e->logits_f) {
        if (fclose(e->logits_f) != 0) rc = mdi_fail(err, MDI_EIO, "%s: write failed", e->c.logits_out);
        e->logits_f = NULL;
    }
    if (e->failed) {
        rc = mdi_fail(err, MDI_ESTATE, "%s", e->fail_err);
    } else if (e->cl) {
        /* STOP drains what is still in flight (the ring is FIFO) */
        run_stats fig;
        memset(&fig, 0, sizeof(fig));
        json_t *arr = NULL;
        char why[MDI_ERR_LEN];
        int frc = cluster_finish(e->cl, &fig, &arr, why);
        if (frc && !rc) rc = mdi_fail(err, frc, "%s", why);
        cluster_close(e->cl, frc != 0, -1);
        e->cl = NULL;
        if (st && !frc) {
            st->weight_bytes_per_token = fig.weight_bytes_per_token;
            st->wire_dtype = fig.wire_dtype;
            st->kv_bytes = fig.kv_bytes;
        }
        if (nodes) *nodes = arr;
        else json_decref(arr);
    }
    if (st) {
        /* the dtypes' text outlives the engine */
        static char dtypes[sizeof(e->dtypes)];
        st->total_s = e->t_last - e->t0;
        st->ttft_s = e->ttft0;
        st->tokens_generated = e->generated;
        if (e->n_nodes > 1) {
            /* on the ring, compute overlaps the other nodes': prompt
             * tokens over the time until every first token, the tokens
             * after the first over the time since the earliest one */
            long after_first = e->generated - e->n_first;
            st->prefill_tok_s = e->first_max > 0 ? e->prefill_tokens / e->first_max : 0;
            st->decode_tok_s = st->total_s > e->first_min && after_first > 0
                               ? after_first / (st->total_s - e->first_min) : 0;
        } else {
            st->prefill_tok_s = e->prefill_s > 0 ? e->prefill_tokens / e->prefill_s : 0;
            st->decode_tok_s = e->decode_s > 0 ? e->decode_tokens / e->decode_s : 0;
            st->weight_bytes_per_token = e->m.weight_bytes;
            st->kv_bytes = e->kv_bytes;
        }
        snprintf(dtypes, sizeof(dtypes), "%s", e->dtypes);
        st->dtype = dtypes;
        st->kv_dtype = dtype_name(e->c.kv_dtype);
        st->curve = e->curve;
        memset(&e->curve, 0, sizeof(e->curve));
    }
    engine_free(e);
    return rc;
}
