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
#include "nodes_config.h"
#include "prepare.h"
#include "ring.h"
#include "util.h"

/* Frames the starter keeps in flight at most; below the ring's queue
 * capacity so that the bounded queues can never all fill up at once. */
#define PIPELINE_MAX_IN_FLIGHT 32
/* Probing a node's HTTP port never waits longer than this. */
#define PIPELINE_PROBE_S 2.0
/* Loading a chunk may take a while on a small device. */
#define PIPELINE_LOAD_S 300.0

typedef struct {
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
    size_t kv_bytes, kv_bytes_peak;     /* the starter's caches, now and at most */
    float *x;
    double compute_s, wait_s;
    /* tokens-versus-time curve */
    double *curve_t;
    long *curve_n;
    long curve_len, curve_cap;
} pipeline;

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
    if (p->curve_len == p->curve_cap) {
        long cap = p->curve_cap ? 2 * p->curve_cap : 1024;
        double *t2 = realloc(p->curve_t, (size_t)cap * sizeof(double));
        if (t2) p->curve_t = t2;
        long *n2 = realloc(p->curve_n, (size_t)cap * sizeof(long));
        if (n2) p->curve_n = n2;
        if (!t2 || !n2) return;
        p->curve_cap = cap;
    }
    p->curve_t[p->curve_len] = t;
    p->curve_n[p->curve_len] = n;
    p->curve_len++;
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
    proto_frame *f = ring_frame_get(&p->ring, p->o->timeout_s);
    if (!f) return mdi_fail(err, MDI_ESTATE, "starter: no free frame (ring stopped)");
    f->h = proto_header_make(PROTO_DATA);
    f->h.sample_id = (uint32_t)s;
    f->h.pos = (uint32_t)pos;
    f->h.n_tokens = (uint32_t)n;
    f->h.dtype = (uint16_t)p->o->wire_dtype;
    f->h.flags = logits ? PROTO_FLAG_LOGITS : 0;
    f->h.payload_len = (uint64_t)n * dtype_row_size(p->o->wire_dtype, p->cfg.dim);
    proto_pack(p->x, (size_t)n * p->cfg.dim, p->o->wire_dtype, f->payload);
    p->compute_s += time_now() - t;
    return ring_send(&p->ring, f, err);
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
    for (; n_init < n && !rc; n_init++)
        rc = sample_state_init(&ss[n_init], &res[n_init], o, tok, p->cfg.vocab_size, n_init, NULL, err);
    for (int i = 0; i < n && !rc; i++)
        if (ss[i].done) {
            prefill_off[i] = res[i].n_prompt;
            n_done++;
        }
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
        proto_frame *f = NULL;
        double tw = time_now();
        rc = ring_recv(&p->ring, &f, o->timeout_s, err);
        p->wait_s += time_now() - tw;
        if (rc) break;
        in_flight--;
        int type = f->h.type;
        int s = (int)f->h.sample_id;
        if (type == PROTO_ERROR) {
            int len = (int)f->h.payload_len;
            rc = mdi_fail(err, MDI_EPROTO, "%.*s", len, (const char *)f->payload);
        } else if (type == PROTO_STOP) {
            rc = mdi_fail(err, MDI_EPROTO, "starter: STOP came back before the run ended");
        } else if (type == PROTO_DATA && (f->h.flags & PROTO_FLAG_LOGITS)) {
            double t = time_now();
            if (ss[s].done || f->h.n_tokens != 1 ||
                (int)f->h.pos != (ss[s].pos ? ss[s].pos - 1 : res[s].n_prompt - 1)) {
                rc = mdi_fail(err, MDI_EPROTO, "starter: unexpected frame for sample %d at position %u",
                              s, f->h.pos);
                ring_frame_put(&p->ring, f);
                break;
            }
            proto_unpack(f->payload, (size_t)dim, (dtype_t)f->h.dtype, p->x);
            float *logits = forward_head(&p->m, &p->fs, p->x);
            if (ss[s].pos == 0) {
                ss[s].pos = res[s].n_prompt;
                if (++n_first == n) t_prefilled = time_now() - t0;
            }
            int going = sample_state_accept(&ss[s], tok, logits, time_now() - t0);
            generated++;
            pl_curve_add(p, time_now() - t0, generated);
            if (going && ss[s].pos >= p->max_seq) {
                ss[s].done = 1;
                res[s].t_done = time_now() - t0;
                going = 0;
            }
            p->compute_s += time_now() - t;
            if (going) {
                t = time_now();
                forward_embed(&p->m, &ss[s].next_token, 1, p->x);
                p->compute_s += time_now() - t;
                rc = pl_send_rows(p, s, ss[s].pos, 1, 1, err);
                ss[s].pos++;
            } else {
                rc = pl_send_control(p, PROTO_RELEASE, s, err);
                n_done++;
                p->kv_bytes -= kv_cache_bytes(&p->kv[s]);
                kv_cache_free(&p->kv[s]);
                memset(&p->kv[s], 0, sizeof(kv_cache));
            }
            in_flight++;
        }
        ring_frame_put(&p->ring, f);
    }
    /* The RELEASE frames still in flight come back before the STOP. */
    while (!rc && in_flight > 0) {
        proto_frame *f = NULL;
        if ((rc = ring_recv(&p->ring, &f, o->timeout_s, err))) break;
        if (f->h.type == PROTO_ERROR) {
            int len = (int)f->h.payload_len;
            rc = mdi_fail(err, MDI_EPROTO, "%.*s", len, (const char *)f->payload);
        }
        ring_frame_put(&p->ring, f);
        in_flight--;
    }
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
            rc = mdi_fail(err, MDI_EPROTO, "%.*s", len, (const char *)f->payload);
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

static void pl_safe_name(const char *in, char *out, size_t cap)
{
    size_t k = 0;
    for (const char *c = in; *c && k + 1 < cap; c++)
        out[k++] = (isalnum((unsigned char)*c) || *c == '-' || *c == '.') ? *c : '_';
    out[k] = 0;
}

static int pl_write_time_run(pipeline *p, const run_stats *st, int n_samples, char *err)
{
    const char *path = p->o->time_run;
    int fresh = !file_exists(path);
    FILE *f = fopen(path, "a");
    if (!f) return mdi_fail(err, MDI_EIO, "--time-run %s: cannot open for appending", path);
    if (fresh)
        fprintf(f, "timestamp,model,n_nodes,n_samples,n_tokens,wire_dtype,dtype,total_s,tokens_generated,"
                   "tokens_per_s,ttft_s,decode_tok_s\n");
    fprintf(f, "%ld,%s,%d,%d,%d,%s,%s,%.6f,%ld,%.4f,%.6f,%.4f\n", (long)time(NULL), p->model_name,
            p->n_nodes, n_samples, p->o->n_tokens, dtype_name(p->o->wire_dtype), dtype_name(p->m.slice.dtype),
            st->total_s, st->tokens_generated, st->total_s > 0 ? st->tokens_generated / st->total_s : 0,
            st->ttft_s, st->decode_tok_s);
    fclose(f);
    return 0;
}

/* logs/tokens_time_*.csv and plots/tokens_time_*.png (gnuplot). */
static int pl_write_plots(pipeline *p, int n_samples, char *err)
{
    char name[128], csv[512], png[512];
    pl_safe_name(p->model_name, name, sizeof(name));
    int rc;
    if ((rc = mkdir_p("logs", err)) || (rc = mkdir_p("plots", err))) return rc;
    snprintf(csv, sizeof(csv), "logs/tokens_time_%s_%dnodes_%dsamples.csv", name, p->n_nodes, n_samples);
    snprintf(png, sizeof(png), "plots/tokens_time_%s_%dnodes_%dsamples.png", name, p->n_nodes, n_samples);
    FILE *f = fopen(csv, "w");
    if (!f) return mdi_fail(err, MDI_EIO, "%s: cannot create", csv);
    fprintf(f, "time_s,tokens\n");
    for (long i = 0; i < p->curve_len; i++) fprintf(f, "%.6f,%ld\n", p->curve_t[i], p->curve_n[i]);
    fclose(f);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "gnuplot -e \"set terminal pngcairo size 800,500; set output '%s'; set datafile separator ',';"
             " set key left top; set xlabel 'time (s)'; set ylabel 'generated tokens';"
             " set title '%s, %d nodes, %d samples';"
             " plot '%s' every ::1 using 1:2 with lines lw 2 title 'tokens'\" 2>/dev/null"
             " || gnuplot -e \"set terminal png size 800,500; set output '%s'; set datafile separator ',';"
             " plot '%s' every ::1 using 1:2 with lines title 'tokens'\"",
             png, name, p->n_nodes, n_samples, csv, png, csv);
    if (system(cmd) != 0) log_warn("--plots: gnuplot failed; the curve is in %s", csv);
    else log_info("--plots: %s, %s", csv, png);
    return 0;
}

/* ---- the run ---- */

static void pl_free(pipeline *p)
{
    if (p->ring_started) ring_stop(&p->ring);
    if (p->listen_fd >= 0) net_close(p->listen_fd);
    for (int i = 0; i < NODES_MAX_SECONDARY; i++) json_decref(p->final_status[i]);
    if (p->have_fs) forward_state_free(&p->fs);
    free(p->x);
    if (p->have_model) model_free(&p->m);
    if (p->have_manifest) prepare_manifest_free(&p->man);
    free(p->curve_t);
    free(p->curve_n);
}

int pipeline_run(const starter_opts *o, const tokenizer *tok, sample_result *results, int n_samples,
                 run_stats *st, json_t **nodes, char *err)
{
    pipeline *p = calloc(1, sizeof(*p));
    if (!p) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    p->o = o;
    p->listen_fd = -1;
    *nodes = NULL;
    char why[MDI_ERR_LEN];
    int rc, failed_node = -1;
    if ((rc = nodes_config_load(&p->nc, o->nodes_config, err))) goto done;
    p->n_nodes = nodes_config_n_nodes(&p->nc);
    if (p->nc.n_secondary == 0) {
        rc = mdi_fail(err, MDI_EARG, "%s: no secondary nodes: run standalone", o->nodes_config);
        goto done;
    }
    {
        char buf[PATH_MAX];
        snprintf(buf, sizeof(buf), "%s", o->ckpt);
        size_t l = strlen(buf);
        while (l > 1 && buf[l - 1] == '/') buf[--l] = 0;
        snprintf(p->model_name, sizeof(p->model_name), "%s", basename(buf));
    }
    if ((rc = model_config_load(&p->cfg, o->ckpt, err))) goto done;
    if ((rc = proto_wire_dtype_check(o->wire_dtype, p->cfg.dim, why))) {
        rc = mdi_fail(err, rc, "--wire-dtype: %s: %s", o->ckpt, why);
        goto done;
    }
    if ((rc = pl_load_manifest(p, err))) goto done;

    if ((rc = generate_plan(o, &p->cfg, results, n_samples, &p->max_seq, &p->max_batch, err))) goto done;
    for (int i = 0; i < n_samples; i++) {
        if (!results[i].generated_ids) {
            results[i].generated_ids = malloc((size_t)(o->n_tokens > 0 ? o->n_tokens : 1) * sizeof(int));
            if (!results[i].generated_ids) { rc = mdi_fail(err, MDI_ENOMEM, "out of memory"); goto done; }
        }
    }

    p->listen_fd = net_listen(p->nc.starter.port_in, 8, why);
    if (p->listen_fd < 0) {
        rc = mdi_fail(err, MDI_ENET, "starter (%s): inference.port_in: %s", p->nc.starter.addr, why);
        goto done;
    }
    if ((rc = pl_load_starter(p, err))) goto done;
    if ((rc = forward_state_init(&p->fs, &p->m, p->max_batch, p->max_seq, err))) goto done;
    p->have_fs = 1;
    p->kv = calloc((size_t)n_samples, sizeof(kv_cache));
    p->x = malloc((size_t)p->max_batch * p->cfg.dim * sizeof(float));
    if (!p->kv || !p->x) { rc = mdi_fail(err, MDI_ENOMEM, "out of memory"); goto done; }

    control_client_global_init();
    if ((rc = pl_init_secondaries(p, n_samples, err))) goto done;
    if ((rc = pl_start_ring(p, n_samples, err))) goto done;
    log_info("ring closed: %d nodes, %d samples, wire %s", p->n_nodes, n_samples, dtype_name(o->wire_dtype));

    rc = pl_generate(p, tok, results, n_samples, st, why);
    if (!rc) rc = pl_stop_ring(p, why);
    if (rc) {
        rc = pl_diagnose(p, rc, why, err, &failed_node);
        goto done;
    }
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
    st->kv_bytes = kv_bytes;
    st->kv_dtype = dtype_name(o->kv_dtype);
    st->dtype = dtype_name(p->m.slice.dtype);
    st->wire_dtype = dtype_name(o->wire_dtype);
    *nodes = pl_nodes_json(p);
    if (o->time_run && (rc = pl_write_time_run(p, st, n_samples, err))) goto done;
    if (o->plots && (rc = pl_write_plots(p, n_samples, err))) goto done;
done:
    if (rc) {
        /* Leave no node running a run that is over. */
        if (p->ring_started) {
            ring_stop(&p->ring);
            p->ring_started = 0;
        }
        pl_stop_secondaries(p, failed_node, pl_probe_s(p) * 2);
        json_decref(*nodes);
        *nodes = NULL;
    }
    if (p->kv) {
        for (int i = 0; i < n_samples; i++) kv_cache_free(&p->kv[i]);
        free(p->kv);
        p->kv = NULL;
    }
    pl_free(p);
    free(p);
    return rc;
}
