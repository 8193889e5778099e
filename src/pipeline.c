/*
 * pipeline: the starter's distributed generation (see pipeline.h).
 */
#include "pipeline.h"

#include <ctype.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "forward.h"
#include "generate.h"
#include "model.h"
#include "net.h"
#include "auth.h"
#include "nodes_config.h"
#include "prepare.h"
#include "ring.h"
#include "startup.h"
#include "util.h"

/* Frames the starter keeps in flight at most; below the ring's queue
 * capacity so that the bounded queues can never all fill up at once. */
#define PIPELINE_MAX_IN_FLIGHT 32
/* Probing a node's HTTP port never waits longer than this. */
#define PIPELINE_PROBE_S 2.0
/* Loading a chunk may take a while on a small device. */
#define PIPELINE_LOAD_S 300.0

struct pipeline {
    const starter_opts *o;
    nodes_config nc;
    prepare_manifest man;
    int have_manifest;
    int n_nodes;
    model_config cfg;
    char model_name[256];
    int max_seq, max_batch;
    int listen_fd;
    model m;
    int have_model;
    ring ring;
    int ring_started;
    int started[NODES_MAX_SECONDARY];   /* /init accepted: needs a /stop */
    int uploaded[NODES_MAX_SECONDARY];
    json_t *final_status[NODES_MAX_SECONDARY];
    /* generation */
    forward_state fs;
    int have_fs;
    kv_cache *kv;
    int n_kv;
    size_t kv_bytes, kv_bytes_peak;     /* the starter's caches, now and at most */
    float *x;            /* (max(max_batch, batch_max), dim) */
    int batch_max;       /* decode rows run together at most */
    proto_frame **batch; /* (batch_max,): logits frames back together */
    forward_row *rows;   /* (batch_max,) */
    int *row_sample, *tokens; /* (batch_max,) */
    long batches, batched_tokens; /* head rounds of several samples, their rows */
    double compute_s, wait_s;
    token_curve curve;   /* tokens-versus-time, handed to run_stats */
};

static void pl_node_name(const pipeline *p, int i, char *out, size_t cap)
{
    nodes_config_describe(&p->nc, i, out, cap);
}

static const node_entry *pl_sec(const pipeline *p, int i) { return &p->nc.secondary[i]; }

/* ---- set-up ---- */

static int pl_load_manifest(pipeline *p, char *err)
{
    char dir[PATH_MAX], why[MDI_ERR_LEN];
    snprintf(dir, sizeof(dir), "%s/chunks/%dnodes", p->o->ckpt, p->n_nodes);
    if (!dir_exists(dir))
        return mdi_fail(err, MDI_EARG, "%s: no chunks for %d nodes (%s); split the model first: "
                        "bin/prepare_model SOURCE --n-nodes %d --out %s",
                        p->o->ckpt, p->n_nodes, dir, p->n_nodes, p->o->ckpt);
    int rc = prepare_manifest_load(&p->man, dir, 0, why);
    if (rc) return mdi_fail(err, rc, "%s", why);
    p->have_manifest = 1;
    if (p->man.n_nodes != p->n_nodes || p->man.n_chunks != p->n_nodes)
        return mdi_fail(err, MDI_EFORMAT, "%s/manifest.json: %d chunks for %d nodes, the configuration has %d nodes",
                        dir, p->man.n_chunks, p->man.n_nodes, p->n_nodes);
    if (p->nc.starter.n_layers > 0) {
        for (int i = 0; i < p->n_nodes; i++) {
            int want = i == 0 ? p->nc.starter.n_layers : p->nc.secondary[i - 1].n_layers;
            if (want != p->man.layers_per_node[i]) {
                char name[160];
                pl_node_name(p, i - 1, name, sizeof(name));
                return mdi_fail(err, MDI_EARG, "%s: n_layers %d in %s, but the chunks in %s give it %d layers "
                                "(re-split with bin/prepare_model --layers)",
                                name, want, p->o->nodes_config, dir, p->man.layers_per_node[i]);
            }
        }
    }
    return 0;
}

static const prepare_chunk *pl_chunk(const pipeline *p, int secondary_index)
{
    char role[32];
    if (secondary_index < 0) snprintf(role, sizeof(role), "starter");
    else snprintf(role, sizeof(role), "secondary%d", secondary_index);
    return prepare_manifest_chunk(&p->man, role);
}

static int pl_load_starter(pipeline *p, char *err)
{
    const prepare_chunk *c = pl_chunk(p, -1);
    if (!c || !c->has_embed || !c->has_head)
        return mdi_fail(err, MDI_EFORMAT, "%s: no starter chunk with the embedding and the head", p->man.dir);
    int rc = prepare_chunk_verify(&p->man, c, 0, err);
    if (rc) return rc;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", p->man.dir, c->file);
    model_slice slice = {c->layer_begin, c->layer_end, 1, 1, p->o->dtype,
                         p->o->mmap_weights ? TSRC_MAP : TSRC_READ};
    if ((rc = model_load(&p->m, path, &p->cfg, &slice, err))) return rc;
    p->have_model = 1;
    char warn[MDI_ERR_LEN];
    if (p->o->mlock && model_lock(&p->m, warn) == 0) log_warn("starter: %s", warn);
    return 0;
}

/* The run configuration of secondary i. */
static void pl_run_config(const pipeline *p, int i, run_config *rc)
{
    const prepare_chunk *c = pl_chunk(p, i);
    const node_entry *self = pl_sec(p, i);
    (void)self;
    memset(rc, 0, sizeof(*rc));
    rc->node_index = i;
    rc->n_nodes = p->n_nodes;
    rc->cfg = p->cfg;
    snprintf(rc->model_name, sizeof(rc->model_name), "%.127s", p->model_name);
    rc->layer_begin = c->layer_begin;
    rc->layer_end = c->layer_end;
    rc->dtype = p->o->dtype;
    rc->wire_dtype = p->o->wire_dtype;
    rc->kv_dtype = p->o->kv_dtype;
    rc->weights_mmap = p->o->mmap_weights;
    rc->weights_mlock = p->o->mlock;
    rc->n_samples = 0;
    rc->max_seq = p->max_seq;
    rc->max_batch = p->max_batch;
    rc->is_last = i == p->nc.n_secondary - 1;
    const node_entry *prev = i == 0 ? &p->nc.starter : pl_sec(p, i - 1);
    const node_entry *next = rc->is_last ? &p->nc.starter : pl_sec(p, i + 1);
    snprintf(rc->prev_addr, sizeof(rc->prev_addr), "%s", prev->addr);
    rc->prev_port = prev->port_in;
    snprintf(rc->next_addr, sizeof(rc->next_addr), "%s", next->addr);
    rc->next_port = next->port_in;
    snprintf(rc->chunk_sha256, sizeof(rc->chunk_sha256), "%s", c->sha256);
    rc->chunk_size = c->size;
    rc->timeout_s = p->o->timeout_s;
}

static double pl_probe_s(const pipeline *p)
{
    return p->o->timeout_s < PIPELINE_PROBE_S ? p->o->timeout_s : PIPELINE_PROBE_S;
}

/* Contacts every secondary: reachable, /init, chunk upload where needed. */
static int pl_init_secondaries(pipeline *p, int n_samples, char *err)
{
    char name[160], why[MDI_ERR_LEN];
    for (int i = 0; i < p->nc.n_secondary; i++) {
        const node_entry *e = pl_sec(p, i);
        pl_node_name(p, i, name, sizeof(name));
        const prepare_chunk *c = pl_chunk(p, i);
        if (!c) return mdi_fail(err, MDI_EFORMAT, "%s: no chunk secondary%d in the manifest", p->man.dir, i);
        json_t *st = NULL;
        int rc = control_client_status(e->addr, e->http_port, p->nc.secret, pl_probe_s(p) * 2, &st, why);
        if (rc) return mdi_fail(err, rc, "%s: %s%s", name,
                                rc == MDI_ENET || rc == MDI_ETIMEOUT ? "unreachable: " : "", why);
        json_decref(st);
        run_config rcfg;
        pl_run_config(p, i, &rcfg);
        rcfg.n_samples = n_samples;
        int have = 0;
        rc = control_client_init(e->addr, e->http_port, p->nc.secret, p->o->timeout_s, &rcfg, &have, why);
        if (rc) return mdi_fail(err, rc, "%s: %s", name, why);
        p->started[i] = 1;
        if (!have) {
            if ((rc = prepare_chunk_verify(&p->man, c, 0, why)))
                return mdi_fail(err, rc, "%s needs its chunk: %s", name, why);
            char path[PATH_MAX];
            snprintf(path, sizeof(path), "%s/%s", p->man.dir, c->file);
            log_info("%s: sending chunk %s (%llu bytes)", name, c->file, (unsigned long long)c->size);
            rc = control_client_upload_chunk(e->addr, e->http_port, p->nc.secret, p->o->timeout_s, path, why);
            if (rc) return mdi_fail(err, rc, "%s: chunk upload: %s", name, why);
            p->uploaded[i] = 1;
        } else {
            log_info("%s: already holds chunk %s (sha256 %.12s...)", name, c->file, c->sha256);
        }
    }
    return 0;
}

/* ---- fault diagnosis ---- */

/* A failure was seen (ring_err): find which node it was. The first
 * secondary whose HTTP port does not answer is the culprit; else the one
 * that reports an error of its own; else the ring's words stand. */
static int pl_diagnose(pipeline *p, int code, const char *ring_err, char *err, int *failed_node)
{
    char name[160], why[MDI_ERR_LEN], reported[MDI_ERR_LEN] = "";
    *failed_node = -1;
    for (int i = 0; i < p->nc.n_secondary; i++) {
        const node_entry *e = pl_sec(p, i);
        json_t *st = NULL;
        int rc = control_client_status(e->addr, e->http_port, p->nc.secret, pl_probe_s(p), &st, why);
        if (rc) {
            pl_node_name(p, i, name, sizeof(name));
            *failed_node = i;
            return mdi_fail(err, code, "%s failed: %s: %s (ring: %s)", name,
                            rc == MDI_ETIMEOUT ? "does not answer (hung?)" : "not reachable (process gone?)",
                            why, ring_err);
        }
        const char *last = json_string_value(json_object_get(st, "last_error"));
        if (last && !reported[0]) {
            pl_node_name(p, i, name, sizeof(name));
            snprintf(reported, sizeof(reported), "%s reported: %s", name, last);
        }
        json_decref(st);
    }
    if (reported[0]) return mdi_fail(err, code, "%s (starter: %s)", reported, ring_err);
    return mdi_fail(err, code, "%s", ring_err);
}

static void pl_stop_secondaries(pipeline *p, int skip, double timeout_s)
{
    char why[MDI_ERR_LEN], name[160];
    for (int i = 0; i < p->nc.n_secondary; i++) {
        if (!p->started[i] || i == skip) continue;
        const node_entry *e = pl_sec(p, i);
        json_t *st = NULL;
        if (control_client_stop(e->addr, e->http_port, p->nc.secret, timeout_s, &st, why) != 0) {
            pl_node_name(p, i, name, sizeof(name));
            log_warn("%s: stop: %s", name, why);
            continue;
        }
        p->started[i] = 0;
        json_decref(p->final_status[i]);
        p->final_status[i] = st;
    }
}

/* ---- ring set-up ---- */

static int pl_start_ring(pipeline *p, int n_samples, char *err)
{
    ring_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.node_index = 0;
    snprintf(ro.name, sizeof(ro.name), "starter");
    ro.listen_fd = p->listen_fd;
    ro.prev_index = p->n_nodes - 1;
    pl_node_name(p, p->nc.n_secondary - 1, ro.prev_name, sizeof(ro.prev_name));
    snprintf(ro.next_host, sizeof(ro.next_host), "%s", pl_sec(p, 0)->addr);
    ro.next_port = pl_sec(p, 0)->port_in;
    ro.next_index = 1;
    pl_node_name(p, 0, ro.next_name, sizeof(ro.next_name));
    ro.secret = p->nc.secret;
    ro.limits.dim = p->cfg.dim;
    ro.limits.max_batch = p->max_batch;
    ro.limits.n_samples = (uint32_t)n_samples;
    ro.timeout_s = p->o->timeout_s;
    ro.accept_timeout_s = PIPELINE_LOAD_S;
    int rc = ring_start(&p->ring, &ro, err);
    if (rc) return rc;
    p->ring_started = 1;

    char name[160], why[MDI_ERR_LEN];
    /* Last first: each node then finds the next one already started. */
    for (int i = p->nc.n_secondary - 1; i >= 0; i--) {
        const node_entry *e = pl_sec(p, i);
        if ((rc = control_client_start(e->addr, e->http_port, p->nc.secret, p->o->timeout_s, why))) {
            pl_node_name(p, i, name, sizeof(name));
            return mdi_fail(err, rc, "%s: start: %s", name, why);
        }
    }
    /* Wait for the ring to close, watching the nodes while they load. */
    double deadline = time_now() + PIPELINE_LOAD_S;
    while (time_now() < deadline) {
        rc = ring_wait_connected(&p->ring, 0.25, why);
        if (rc == 0) return 0;
        if (rc != MDI_ETIMEOUT) {
            int failed;
            return pl_diagnose(p, rc, why, err, &failed);
        }
        for (int i = 0; i < p->nc.n_secondary; i++) {
            const node_entry *e = pl_sec(p, i);
            json_t *st = NULL;
            pl_node_name(p, i, name, sizeof(name));
            if ((rc = control_client_status(e->addr, e->http_port, p->nc.secret, pl_probe_s(p), &st, why)))
                return mdi_fail(err, rc, "%s failed while starting: %s", name,
                                rc == MDI_ETIMEOUT ? "does not answer (hung?)" : why);
            const char *state = json_string_value(json_object_get(st, "state"));
            const char *last = json_string_value(json_object_get(st, "last_error"));
            if (state && !strcmp(state, "idle") && last) {
                rc = mdi_fail(err, MDI_ESTATE, "%s failed to start: %s", name, last);
                json_decref(st);
                p->started[i] = 0;
                return rc;
            }
            json_decref(st);
        }
    }
    return mdi_fail(err, MDI_ETIMEOUT, "the ring did not close within %.0f s", PIPELINE_LOAD_S);
}

/* ---- generation ---- */

static void pl_curve_add(pipeline *p, double t, long n)
{
    token_curve_add(&p->curve, t, n);
}

/* Sends rows (n, dim), sample s's positions pos.., as a DATA frame. */
static int pl_send_frame(pipeline *p, int s, int pos, int n, int logits, const float *rows, char *err)
{
    double t = time_now();
    proto_frame *f = ring_frame_get(&p->ring, p->o->timeout_s);
    if (!f) return mdi_fail(err, MDI_ESTATE, "starter: no free frame (ring stopped)");
    f->h = proto_header_make(PROTO_DATA);
    f->h.sample_id = (uint32_t)s;
    f->h.pos = (uint32_t)pos;
    f->h.n_tokens = (uint32_t)n;
    f->h.dtype = (uint16_t)p->o->wire_dtype;
    f->h.flags = logits ? PROTO_FLAG_LOGITS : 0;
    f->h.payload_len = (uint64_t)n * dtype_row_size(p->o->wire_dtype, p->cfg.dim);
    proto_pack(rows, (size_t)n * p->cfg.dim, p->o->wire_dtype, f->payload);
    p->compute_s += time_now() - t;
    return ring_send(&p->ring, f, err);
}

/* Runs the starter's layers on x (n rows) for sample s and sends them. */
static int pl_send_rows(pipeline *p, int s, int pos, int n, int logits, char *err)
{
    double t = time_now();
    kv_cache *kv = &p->kv[s];
    if (!kv->k) {
        int rc = kv_cache_init(kv, &p->m, p->max_seq, p->o->kv_dtype, err);
        if (rc) return rc;
        p->kv_bytes += kv_cache_bytes(kv);
        if (p->kv_bytes > p->kv_bytes_peak) p->kv_bytes_peak = p->kv_bytes;
    }
    forward_layers(&p->m, &p->fs, kv, p->x, n, pos);
    p->compute_s += time_now() - t;
    return pl_send_frame(p, s, pos, n, logits, p->x, err);
}

static int pl_send_control(pipeline *p, int type, int s, char *err)
{
    proto_frame *f = ring_frame_get(&p->ring, p->o->timeout_s);
    if (!f) return mdi_fail(err, MDI_ESTATE, "starter: no free frame (ring stopped)");
    f->h = proto_header_make(type);
    f->h.sample_id = (uint32_t)s;
    return ring_send(&p->ring, f, err);
}

static int pl_generate(pipeline *p, const tokenizer *tok, sample_result *res, int n, run_stats *st, char *err)
{
    const starter_opts *o = p->o;
    int dim = p->cfg.dim, rc = 0;
    sample_state *ss = calloc((size_t)n, sizeof(*ss));
    int *prefill_off = calloc((size_t)n, sizeof(int));
    if (!ss || !prefill_off) {
        free(ss);
        free(prefill_off);
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    }
    int n_init = 0, n_done = 0, in_flight = 0;
    for (; n_init < n && !rc; n_init++) {
        sample_params sp = generate_sample_params(o, n_init);
        rc = sample_state_init(&ss[n_init], &res[n_init], &sp, tok, p->cfg.vocab_size,
                               n == 1 && !o->quiet ? stdout : NULL, err);
    }
    for (int i = 0; i < n && !rc; i++)
        if (ss[i].done) {
            prefill_off[i] = res[i].n_prompt;
            n_done++;
        }
    /* --logits-out: sample 0's rows, one per step, as standalone writes them */
    FILE *logits_f = NULL;
    if (!rc && o->logits_out && !(logits_f = fopen(o->logits_out, "wb")))
        rc = mdi_fail(err, MDI_EIO, "%s: cannot create", o->logits_out);
    double t0 = time_now(), t_prefilled = 0;
    long prompt_tokens = 0, generated = 0;
    int n_first = 0;
    for (int i = 0; i < n; i++) prompt_tokens += res[i].n_prompt;
    pl_curve_add(p, 0, 0);

    while (!rc && n_done < n) {
        /* Feed prompt chunks while there is room in the ring. */
        for (int s = 0; s < n && !rc && in_flight < PIPELINE_MAX_IN_FLIGHT; s++) {
            while (!rc && prefill_off[s] < res[s].n_prompt && in_flight < PIPELINE_MAX_IN_FLIGHT) {
                int off = prefill_off[s];
                int chunk = res[s].n_prompt - off < p->max_batch ? res[s].n_prompt - off : p->max_batch;
                double t = time_now();
                forward_embed(&p->m, res[s].prompt_ids + off, chunk, p->x);
                p->compute_s += time_now() - t;
                rc = pl_send_rows(p, s, off, chunk, off + chunk == res[s].n_prompt, err);
                prefill_off[s] = off + chunk;
                in_flight++;
            }
        }
        if (rc) break;
        /* The next frame back, and every other already back: the logits
         * frames among them (one per sample at most) run as one batch. */
        proto_frame *f = NULL;
        double tw = time_now();
        rc = ring_recv(&p->ring, &f, o->timeout_s, err);
        p->wait_s += time_now() - tw;
        if (rc) break;
        int nb = 0;
        for (;;) {
            in_flight--;
            int type = f->h.type;
            int s = (int)f->h.sample_id;
            if (type == PROTO_ERROR) {
                int len = (int)f->h.payload_len;
                rc = mdi_fail(err, MDI_EPROTO, "%.*s", len < PROTO_TEXT_SHOWN ? len : PROTO_TEXT_SHOWN, (const char *)f->payload);
            } else if (type == PROTO_STOP) {
                rc = mdi_fail(err, MDI_EPROTO, "starter: STOP came back before the run ended");
            } else if (type == PROTO_DATA && (f->h.flags & PROTO_FLAG_LOGITS)) {
                if (s < 0 || s >= n || ss[s].done || f->h.n_tokens != 1 ||
                    (int)f->h.pos != (ss[s].pos ? ss[s].pos - 1 : res[s].n_prompt - 1)) {
                    rc = mdi_fail(err, MDI_EPROTO, "starter: unexpected frame for sample %d at position %u",
                                  s, f->h.pos);
                } else {
                    p->batch[nb++] = f;
                    f = NULL;
                }
            }
            if (f) ring_frame_put(&p->ring, f);
            char why[MDI_ERR_LEN];
            if (rc || nb == p->batch_max || ring_recv(&p->ring, &f, 0, why) != 0) break;
        }
        if (rc || nb == 0) {
            for (int i = 0; i < nb; i++) ring_frame_put(&p->ring, p->batch[i]);
            continue;
        }
        double t = time_now();
        for (int i = 0; i < nb; i++)
            proto_unpack(p->batch[i]->payload, (size_t)dim, (dtype_t)p->batch[i]->h.dtype, p->x + (size_t)i * dim);
        float *logits = forward_head_batch(&p->m, &p->fs, p->x, nb);
        if (nb > 1) {
            p->batches++;
            p->batched_tokens += nb;
        }
        int n_going = 0;
        for (int i = 0; i < nb; i++) {
            int s = (int)p->batch[i]->h.sample_id;
            const float *row = logits + (size_t)i * p->cfg.vocab_size;
            ring_frame_put(&p->ring, p->batch[i]);
            if (ss[s].pos == 0) {
                ss[s].pos = res[s].n_prompt;
                if (++n_first == n) t_prefilled = time_now() - t0;
            }
            if (logits_f && s == 0)
                fwrite(row, sizeof(float), (size_t)p->cfg.vocab_size, logits_f);
            int going = sample_state_accept(&ss[s], tok, (float *)row, time_now() - t0);
            generated++;
            pl_curve_add(p, time_now() - t0, generated);
            if (going && ss[s].pos >= p->max_seq) {
                ss[s].done = 1;
                res[s].t_done = time_now() - t0;
                going = 0;
            }
            if (going) {
                p->rows[n_going].kv = &p->kv[s];
                p->rows[n_going].pos = ss[s].pos;
                p->tokens[n_going] = ss[s].next_token;
                p->row_sample[n_going++] = s;
            } else if (!rc) {
                rc = pl_send_control(p, PROTO_RELEASE, s, err);
                n_done++;
                in_flight++;
                p->kv_bytes -= kv_cache_bytes(&p->kv[s]);
                kv_cache_free(&p->kv[s]);
                memset(&p->kv[s], 0, sizeof(kv_cache));
            }
        }
        /* the next token of every sample that goes on, through the
         * starter's layers as one batch */
        if (!rc && n_going > 0) {
            forward_embed(&p->m, p->tokens, n_going, p->x);
            forward_layers_batch(&p->m, &p->fs, p->rows, n_going, p->x);
        }
        p->compute_s += time_now() - t;
        for (int j = 0; j < n_going && !rc; j++) {
            int s = p->row_sample[j];
            rc = pl_send_frame(p, s, ss[s].pos, 1, 1, p->x + (size_t)j * dim, err);
            ss[s].pos++;
            in_flight++;
        }
    }
    /* The RELEASE frames still in flight come back before the STOP. */
    while (!rc && in_flight > 0) {
        proto_frame *f = NULL;
        if ((rc = ring_recv(&p->ring, &f, o->timeout_s, err))) break;
        if (f->h.type == PROTO_ERROR) {
            int len = (int)f->h.payload_len;
            rc = mdi_fail(err, MDI_EPROTO, "%.*s", len < PROTO_TEXT_SHOWN ? len : PROTO_TEXT_SHOWN, (const char *)f->payload);
        }
        ring_frame_put(&p->ring, f);
        in_flight--;
    }
    if (logits_f && fclose(logits_f) != 0 && !rc)
        rc = mdi_fail(err, MDI_EIO, "%s: write failed", o->logits_out);
    double total = time_now() - t0;
    memset(st, 0, sizeof(*st));
    st->total_s = total;
    st->ttft_s = n ? res[0].t_first_token : 0;
    st->prefill_tok_s = t_prefilled > 0 ? prompt_tokens / t_prefilled : 0;
    double first_min = total;
    for (int i = 0; i < n; i++) {
        st->tokens_generated += res[i].n_generated;
        if (res[i].n_generated && res[i].t_first_token < first_min) first_min = res[i].t_first_token;
    }
    long after_first = st->tokens_generated - n_first;
    st->decode_tok_s = total > first_min && after_first > 0 ? after_first / (total - first_min) : 0;
    if (n == 1 && !o->quiet) {
        fputc('\n', stdout);
        fflush(stdout);
    }
    for (int i = 0; i < n_init; i++) sample_state_free(&ss[i]);
    free(ss);
    free(prefill_off);
    return rc;
}

/* Sends STOP round the ring and waits for it to come back. */
static int pl_stop_ring(pipeline *p, char *err)
{
    int rc = pl_send_control(p, PROTO_STOP, 0, err);
    while (!rc) {
        proto_frame *f = NULL;
        if ((rc = ring_recv(&p->ring, &f, p->o->timeout_s, err))) break;
        int type = f->h.type;
        if (type == PROTO_ERROR) {
            int len = (int)f->h.payload_len;
            rc = mdi_fail(err, MDI_EPROTO, "%.*s", len < PROTO_TEXT_SHOWN ? len : PROTO_TEXT_SHOWN, (const char *)f->payload);
        }
        ring_frame_put(&p->ring, f);
        if (type == PROTO_STOP) break;
    }
    return rc;
}

/* ---- output ---- */

static json_t *pl_nodes_json(pipeline *p)
{
    json_t *arr = json_array();
    ring_stats rs;
    ring_get_stats(&p->ring, &rs);
    json_t *s = json_object();
    json_object_set_new(s, "role", json_string("starter"));
    json_object_set_new(s, "index", json_integer(0));
    json_object_set_new(s, "addr", json_string(p->nc.starter.addr));
    json_object_set_new(s, "layers", json_pack("[i, i]", p->m.slice.layer_begin, p->m.slice.layer_end));
    json_object_set_new(s, "compute_s", json_real(p->compute_s));
    json_object_set_new(s, "wait_s", json_real(p->wait_s));
    json_object_set_new(s, "bytes_sent", json_integer((json_int_t)rs.bytes_sent));
    json_object_set_new(s, "bytes_received", json_integer((json_int_t)rs.bytes_received));
    json_object_set_new(s, "frames_sent", json_integer((json_int_t)rs.frames_sent));
    json_object_set_new(s, "frames_received", json_integer((json_int_t)rs.frames_received));
    json_object_set_new(s, "weight_bytes", json_integer((json_int_t)p->m.weight_bytes));
    json_object_set_new(s, "kv_bytes", json_integer((json_int_t)p->kv_bytes_peak));
    json_object_set_new(s, "decode_batches", json_integer(p->batches));
    json_object_set_new(s, "batched_tokens", json_integer(p->batched_tokens));
    json_array_append_new(arr, s);
    for (int i = 0; i < p->nc.n_secondary; i++) {
        const prepare_chunk *c = pl_chunk(p, i);
        json_t *o = json_object();
        json_object_set_new(o, "role", json_string("secondary"));
        json_object_set_new(o, "index", json_integer(i + 1));
        json_object_set_new(o, "secondary_index", json_integer(i));
        json_object_set_new(o, "addr", json_string(pl_sec(p, i)->addr));
        json_object_set_new(o, "layers", json_pack("[i, i]", c ? c->layer_begin : 0, c ? c->layer_end : 0));
        json_object_set_new(o, "chunk_uploaded", json_boolean(p->uploaded[i]));
        json_t *st = p->final_status[i] ? json_object_get(p->final_status[i], "stats") : NULL;
        if (json_is_object(st)) json_object_update(o, st);
        if (p->final_status[i]) {
            json_object_set(o, "chunks_received", json_object_get(p->final_status[i], "chunks_received"));
            json_object_set(o, "runs", json_object_get(p->final_status[i], "runs"));
        }
        json_array_append_new(arr, o);
    }
    return arr;
}

/* ---- the run ---- */

static void pl_free(pipeline *p)
{
    if (p->ring_started) ring_stop(&p->ring);
    if (p->listen_fd >= 0) net_close(p->listen_fd);
    for (int i = 0; i < NODES_MAX_SECONDARY; i++) json_decref(p->final_status[i]);
    if (p->have_fs) forward_state_free(&p->fs);
    free(p->x);
    free(p->batch);
    free(p->rows);
    free(p->row_sample);
    free(p->tokens);
    if (p->have_model) model_free(&p->m);
    if (p->have_manifest) prepare_manifest_free(&p->man);
    token_curve_free(&p->curve);
}

/* Reads the configuration, the model's config and the manifest. */
static int pl_configure(pipeline *p, const starter_opts *o, char *err)
{
    int rc;
    p->o = o;
    p->listen_fd = -1;
    if ((rc = nodes_config_load(&p->nc, o->nodes_config, err))) return rc;
    p->n_nodes = nodes_config_n_nodes(&p->nc);
    if (p->nc.n_secondary == 0)
        return mdi_fail(err, MDI_EARG, "%s: no secondary nodes: run standalone", o->nodes_config);
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", o->ckpt);
    size_t l = strlen(buf);
    while (l > 1 && buf[l - 1] == '/') buf[--l] = 0;
    snprintf(p->model_name, sizeof(p->model_name), "%s", basename(buf));
    if ((rc = model_config_load(&p->cfg, o->ckpt, err))) return rc;
    char why[MDI_ERR_LEN];
    if ((rc = proto_wire_dtype_check(o->wire_dtype, p->cfg.dim, why)))
        return mdi_fail(err, rc, "--wire-dtype: %s: %s", o->ckpt, why);
    return pl_load_manifest(p, err);
}

/* From the starter's chunk to a closed ring, with p->max_seq and
 * p->max_batch set. */
static int pl_open(pipeline *p, int n_samples, char *err)
{
    char why[MDI_ERR_LEN];
    int rc;
    p->listen_fd = net_listen(p->nc.starter.port_in, 8, why);
    if (p->listen_fd < 0)
        return mdi_fail(err, MDI_ENET, "starter (%s): inference.port_in: %s", p->nc.starter.addr, why);
    if ((rc = pl_load_starter(p, err))) return rc;
    /* every sample's decode step may come back at once */
    p->batch_max = n_samples < FORWARD_MAX_SAMPLES ? n_samples : FORWARD_MAX_SAMPLES;
    int x_rows = p->max_batch > p->batch_max ? p->max_batch : p->batch_max;
    if ((rc = forward_state_init_batch(&p->fs, &p->m, p->max_batch, p->batch_max, p->max_seq, err))) return rc;
    p->have_fs = 1;
    p->n_kv = n_samples;
    p->kv = calloc((size_t)n_samples, sizeof(kv_cache));
    p->x = malloc((size_t)x_rows * p->cfg.dim * sizeof(float));
    p->batch = calloc((size_t)p->batch_max, sizeof(*p->batch));
    p->rows = calloc((size_t)p->batch_max, sizeof(*p->rows));
    p->row_sample = calloc((size_t)p->batch_max, sizeof(int));
    p->tokens = calloc((size_t)p->batch_max, sizeof(int));
    if (!p->kv || !p->x || !p->batch || !p->rows || !p->row_sample || !p->tokens)
        return mdi_fail(err, MDI_ENOMEM, "out of memory");

    control_client_global_init();
    if (!p->nc.secret[0]) auth_warn_open();
    if ((rc = startup_wait_nodes(&p->nc, p->o->connect_timeout_s, p->o->verbose, NULL, err))) return rc;
    if ((rc = pl_init_secondaries(p, n_samples, err))) return rc;
    if ((rc = pl_start_ring(p, n_samples, err))) return rc;
    log_info("ring closed: %d nodes, %d samples, wire %s", p->n_nodes, n_samples, dtype_name(p->o->wire_dtype));
    return 0;
}

/* After the last sample: the ring stopped, every secondary stopped (its
 * figures kept), st completed, *nodes built. */
static int pl_finish(pipeline *p, run_stats *st, json_t **nodes, char *err)
{
    char why[MDI_ERR_LEN];
    int failed_node = -1;
    int rc = pl_stop_ring(p, why);
    if (rc) return pl_diagnose(p, rc, why, err, &failed_node);
    ring_stop(&p->ring);
    p->ring_started = 0;
    pl_stop_secondaries(p, -1, p->o->timeout_s);
    /* From here the run succeeded; a missing figure is not a failure. */
    size_t weights = p->m.weight_bytes, kv_bytes = p->kv_bytes_peak;
    for (int i = 0; i < p->nc.n_secondary; i++) {
        json_t *s = p->final_status[i] ? json_object_get(p->final_status[i], "stats") : NULL;
        weights += (size_t)json_integer_value(json_object_get(s, "weight_bytes"));
        kv_bytes += (size_t)json_integer_value(json_object_get(s, "kv_bytes"));
    }
    st->weight_bytes_per_token = weights;
    static char dtypes[sizeof(p->m.dtypes)]; /* outlives the model, freed below */
    snprintf(dtypes, sizeof(dtypes), "%s", p->m.dtypes);
    st->dtype = dtypes;
    st->wire_dtype = dtype_name(p->o->wire_dtype);
    token_curve_free(&st->curve);
    st->curve = p->curve;
    memset(&p->curve, 0, sizeof(p->curve));
    st->kv_bytes = kv_bytes;
    st->kv_dtype = dtype_name(p->o->kv_dtype);
    *nodes = pl_nodes_json(p);
    return 0;
}

/* Frees everything; after a failure (failed) leaves no node running a run
 * that is over (failed_node, when known, is not asked). */
static void pl_close(pipeline *p, int failed, int failed_node)
{
    if (failed) {
        if (p->ring_started) {
            ring_stop(&p->ring);
            p->ring_started = 0;
        }
        pl_stop_secondaries(p, failed_node, pl_probe_s(p) * 2);
    }
    if (p->kv) {
        for (int i = 0; i < p->n_kv; i++) kv_cache_free(&p->kv[i]);
        free(p->kv);
        p->kv = NULL;
    }
    pl_free(p);
    free(p);
}

int pipeline_run(const starter_opts *o, const tokenizer *tok, sample_result *results, int n_samples,
                 run_stats *st, json_t **nodes, char *err)
{
    pipeline *p = calloc(1, sizeof(*p));
    if (!p) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    *nodes = NULL;
    char why[MDI_ERR_LEN];
    int rc, failed_node = -1;
    if ((rc = pl_configure(p, o, err))) goto done;
    if ((rc = generate_plan(o, &p->cfg, results, n_samples, &p->max_seq, &p->max_batch, err))) goto done;
    for (int i = 0; i < n_samples; i++) {
        if (!results[i].generated_ids) {
            results[i].generated_ids = malloc((size_t)(o->n_tokens > 0 ? o->n_tokens : 1) * sizeof(int));
            if (!results[i].generated_ids) { rc = mdi_fail(err, MDI_ENOMEM, "out of memory"); goto done; }
        }
    }
    if ((rc = pl_open(p, n_samples, err))) goto done;
    rc = pl_generate(p, tok, results, n_samples, st, why);
    if (rc) {
        rc = pl_diagnose(p, rc, why, err, &failed_node);
        goto done;
    }
    rc = pl_finish(p, st, nodes, err);
done:
    pl_close(p, rc != 0, failed_node);
    return rc;
}

int pipeline_open(pipeline **out, const starter_opts *o, int max_seq, char *err)
{
    pipeline *p = calloc(1, sizeof(*p));
    *out = NULL;
    if (!p) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    int rc = pl_configure(p, o, err);
    if (!rc && max_seq > p->cfg.max_seq_len)
        rc = mdi_fail(err, MDI_EARG, "--max-seq-len %d: above the model's context of %d tokens", max_seq,
                      p->cfg.max_seq_len);
    if (!rc) {
        p->max_seq = max_seq ? max_seq : p->cfg.max_seq_len;
        p->max_batch = p->max_seq < GENERATE_MAX_BATCH ? p->max_seq : GENERATE_MAX_BATCH;
        rc = pl_open(p, 1, err);
    }
    if (rc) {
        pl_close(p, 1, -1);
        return rc;
    }
    *out = p;
    return 0;
}

int pipeline_max_seq(const pipeline *p) { return p->max_seq; }

int pipeline_turn(pipeline *p, const tokenizer *tok, sample_state *ss, const int *ids, int n, double t0,
                  turn_figures *fig, char *err)
{
    char why[MDI_ERR_LEN];
    int rc = 0, in_flight = 0, first = 1, dim = p->cfg.dim, failed_node;
    if (ss->pos + n >= p->max_seq)
        return mdi_fail(err, MDI_EARG, "the conversation would fill the context of %d tokens", p->max_seq);
    double ta = time_now();
    for (int off = 0; off < n && !rc; off += p->max_batch) {
        int chunk = n - off < p->max_batch ? n - off : p->max_batch;
        forward_embed(&p->m, ids + off, chunk, p->x);
        rc = pl_send_rows(p, 0, ss->pos + off, chunk, off + chunk == n, why);
        in_flight++;
    }
    int pos_end = ss->pos + n;
    while (!rc && in_flight > 0) {
        proto_frame *f = NULL;
        double tw = time_now();
        rc = ring_recv(&p->ring, &f, p->o->timeout_s, why);
        p->wait_s += time_now() - tw;
        if (rc) break;
        in_flight--;
        if (f->h.type == PROTO_ERROR) {
            int len = (int)f->h.payload_len;
            rc = mdi_fail(why, MDI_EPROTO, "%.*s", len < PROTO_TEXT_SHOWN ? len : PROTO_TEXT_SHOWN, (const char *)f->payload);
        } else if (f->h.type == PROTO_DATA && (f->h.flags & PROTO_FLAG_LOGITS)) {
            int want = first ? pos_end - 1 : ss->pos - 1;
            if (ss->done || f->h.n_tokens != 1 || (int)f->h.pos != want) {
                rc = mdi_fail(why, MDI_EPROTO, "starter: unexpected frame at position %u", f->h.pos);
                ring_frame_put(&p->ring, f);
                break;
            }
            double t = time_now();
            if (first) {
                fig->prefill_s += t - ta;
                fig->prefill_tokens += n;
                ss->pos = pos_end;
                first = 0;
            } else {
                fig->decode_s += t - ta;
                fig->decode_tokens++;
            }
            proto_unpack(f->payload, (size_t)dim, (dtype_t)f->h.dtype, p->x);
            float *logits = forward_head(&p->m, &p->fs, p->x);
            int going = sample_state_accept(ss, tok, logits, time_now() - t0);
            pl_curve_add(p, time_now() - t0, ++fig->generated);
            if (going && ss->pos >= p->max_seq) {
                ss->done = 1;
                ss->res->t_done = time_now() - t0;
                going = 0;
            }
            p->compute_s += time_now() - t;
            if (going) {
                ta = time_now();
                forward_embed(&p->m, &ss->next_token, 1, p->x);
                rc = pl_send_rows(p, 0, ss->pos, 1, 1, why);
                ss->pos++;
                in_flight++;
            }
        }
        ring_frame_put(&p->ring, f);
    }
    if (rc) return pl_diagnose(p, rc, why, err, &failed_node);
    return 0;
}

int pipeline_close(pipeline *p, run_stats *st, json_t **nodes, char *err)
{
    if (nodes) *nodes = NULL;
    int rc = 0;
    if (st) {
        /* the conversation's one sample leaves every node's cache */
        char why[MDI_ERR_LEN];
        if (!(rc = pl_send_control(p, PROTO_RELEASE, 0, why))) {
            proto_frame *f = NULL;
            if (!(rc = ring_recv(&p->ring, &f, p->o->timeout_s, why))) ring_frame_put(&p->ring, f);
        }
        int failed_node = -1;
        if (rc) rc = pl_diagnose(p, rc, why, err, &failed_node);
        else rc = pl_finish(p, st, nodes, err);
    }
    pl_close(p, st == NULL || rc != 0, -1);
    return rc;
}
