/*
 * cluster: opening and closing the ring (see cluster.h).
 */
#include "cluster.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "control.h"
#include "net.h"
#include "startup.h"
#include "util.h"

/* Probing a node's HTTP port never waits longer than this. */
#define CLUSTER_PROBE_S 2.0
/* Loading a chunk may take a while on a small device. */
#define CLUSTER_LOAD_S 300.0

static void pl_node_name(const cluster *p, int i, char *out, size_t cap)
{
    if (i < 0 || !p->in_place[i]) {
        nodes_config_describe(&p->nc, i, out, cap);
        return;
    }
    const node_entry *s = &p->nc.secondary[i], *o = &p->orig[i];
    snprintf(out, cap, "spare %d (%s:%d) in place of secondary %d (%s:%d)", p->in_place[i] - 1, s->addr,
             s->http_port, i, o->addr, o->http_port);
}

void cluster_node_name(const cluster *c, int i, char *out, size_t cap) { pl_node_name(c, i, out, cap); }

static const node_entry *pl_sec(const cluster *p, int i) { return &p->nc.secondary[i]; }

/* ---- set-up ---- */

static int pl_load_manifest(cluster *p, char *err)
{
    char dir[PATH_MAX], why[MDI_ERR_LEN];
    snprintf(dir, sizeof(dir), "%s/chunks/%dnodes", p->o.ckpt, p->n_nodes);
    if (!dir_exists(dir))
        return mdi_fail(err, MDI_EARG, "%s: no chunks for %d nodes (%s); split the model first: "
                        "bin/prepare_model SOURCE --n-nodes %d --out %s",
                        p->o.ckpt, p->n_nodes, dir, p->n_nodes, p->o.ckpt);
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
                                name, want, p->o.nodes_config, dir, p->man.layers_per_node[i]);
            }
        }
    }
    return 0;
}

static const prepare_chunk *pl_chunk(const cluster *p, int secondary_index)
{
    char role[32];
    if (secondary_index < 0) snprintf(role, sizeof(role), "starter");
    else snprintf(role, sizeof(role), "secondary%d", secondary_index);
    return prepare_manifest_chunk(&p->man, role);
}

static int pl_load_starter(cluster *p, char *err)
{
    const prepare_chunk *c = pl_chunk(p, -1);
    if (!c || !c->has_embed || !c->has_head)
        return mdi_fail(err, MDI_EFORMAT, "%s: no starter chunk with the embedding and the head", p->man.dir);
    int rc = prepare_chunk_verify(&p->man, c, 0, err);
    if (rc) return rc;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", p->man.dir, c->file);
    model_slice slice = {c->layer_begin, c->layer_end, 1, 1, p->o.dtype,
                         p->o.mmap_weights ? TSRC_MAP : TSRC_READ};
    if ((rc = model_load(&p->m, path, &p->cfg, &slice, err))) return rc;
    p->have_model = 1;
    char warn[MDI_ERR_LEN];
    if (p->o.mlock && model_lock(&p->m, warn) == 0) log_warn("starter: %s", warn);
    return 0;
}

/* The run configuration of secondary i. */
static void pl_run_config(const cluster *p, int i, run_config *rc)
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
    rc->dtype = p->o.dtype;
    rc->wire_dtype = p->o.wire_dtype;
    rc->kv_dtype = p->o.kv_dtype;
    rc->weights_mmap = p->o.mmap_weights;
    rc->weights_mlock = p->o.mlock;
    rc->n_samples = 0;
    rc->max_seq = p->o.max_seq;
    rc->max_batch = p->o.max_batch;
    rc->is_last = i == p->nc.n_secondary - 1;
    const node_entry *prev = i == 0 ? &p->nc.starter : pl_sec(p, i - 1);
    const node_entry *next = rc->is_last ? &p->nc.starter : pl_sec(p, i + 1);
    snprintf(rc->prev_addr, sizeof(rc->prev_addr), "%s", prev->addr);
    rc->prev_port = prev->port_in;
    snprintf(rc->next_addr, sizeof(rc->next_addr), "%s", next->addr);
    rc->next_port = next->port_in;
    snprintf(rc->chunk_sha256, sizeof(rc->chunk_sha256), "%s", c->sha256);
    rc->chunk_size = c->size;
    rc->timeout_s = p->o.timeout_s;
    rc->epoch = p->epoch;
}

static double pl_probe_s(const cluster *p)
{
    return p->o.timeout_s < CLUSTER_PROBE_S ? p->o.timeout_s : CLUSTER_PROBE_S;
}

/* Contacts every secondary: reachable, /init, chunk upload where needed. */
static int pl_init_secondaries(cluster *p, int n_samples, char *err)
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
        rc = control_client_init(e->addr, e->http_port, p->nc.secret, p->o.timeout_s, &rcfg, &have, why);
        if (rc) return mdi_fail(err, rc, "%s: %s", name, why);
        p->started[i] = 1;
        if (!have) {
            if ((rc = prepare_chunk_verify(&p->man, c, 0, why)))
                return mdi_fail(err, rc, "%s needs its chunk: %s", name, why);
            char path[PATH_MAX];
            snprintf(path, sizeof(path), "%s/%s", p->man.dir, c->file);
            log_info("%s: sending chunk %s (%llu bytes)", name, c->file, (unsigned long long)c->size);
            rc = control_client_upload_chunk(e->addr, e->http_port, p->nc.secret, p->o.timeout_s, path, why);
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
 * secondary whose HTTP port does not answer, or that answers idle without
 * an error of its own (restarted since it joined the run), is the culprit;
 * else the one that reports an error of its own; else the ring's words
 * stand. */
int cluster_diagnose(cluster *p, int code, const char *ring_err, char *err, int *failed_node)
{
    char name[160], why[MDI_ERR_LEN], reported[MDI_ERR_LEN] = "";
    *failed_node = -1;
    p->failed_silent = 0;
    for (int i = 0; i < p->nc.n_secondary; i++) {
        const node_entry *e = pl_sec(p, i);
        json_t *st = NULL;
        int rc = control_client_status(e->addr, e->http_port, p->nc.secret, pl_probe_s(p), &st, why);
        if (rc) {
            pl_node_name(p, i, name, sizeof(name));
            *failed_node = i;
            p->failed_silent = rc == MDI_ETIMEOUT;
            return mdi_fail(err, code, "%s failed: %s: %s (ring: %s)", name,
                            rc == MDI_ETIMEOUT ? "does not answer (hung?)" : "not reachable (process gone?)",
                            why, ring_err);
        }
        const char *last = json_string_value(json_object_get(st, "last_error"));
        const char *state = json_string_value(json_object_get(st, "state"));
        if (p->started[i] && state && !strcmp(state, "idle") && !last) {
            /* answers, but out of the run without an error of its own:
             * restarted since (a node whose run failed says why) */
            json_decref(st);
            pl_node_name(p, i, name, sizeof(name));
            *failed_node = i;
            return mdi_fail(err, code, "%s failed: restarted, no longer in the run (ring: %s)", name, ring_err);
        }
        if (last && !reported[0]) {
            pl_node_name(p, i, name, sizeof(name));
            snprintf(reported, sizeof(reported), "%s reported: %s", name, last);
        }
        json_decref(st);
    }
    if (reported[0]) return mdi_fail(err, code, "%s (starter: %s)", reported, ring_err);
    return mdi_fail(err, code, "%s", ring_err);
}

static void pl_stop_secondaries(cluster *p, int skip, double timeout_s)
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

static int pl_start_ring(cluster *p, int n_samples, char *err)
{
    ring_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.node_index = 0;
    ro.epoch = p->epoch;
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
    ro.limits.max_batch = p->o.max_batch;
    ro.limits.n_samples = (uint32_t)n_samples;
    ro.timeout_s = p->o.timeout_s;
    ro.accept_timeout_s = CLUSTER_LOAD_S;
    int rc = ring_start(&p->ring, &ro, err);
    if (rc) return rc;
    p->ring_started = 1;

    char name[160], why[MDI_ERR_LEN];
    /* Last first: each node then finds the next one already started. */
    for (int i = p->nc.n_secondary - 1; i >= 0; i--) {
        const node_entry *e = pl_sec(p, i);
        if ((rc = control_client_start(e->addr, e->http_port, p->nc.secret, p->o.timeout_s, why))) {
            pl_node_name(p, i, name, sizeof(name));
            return mdi_fail(err, rc, "%s: start: %s", name, why);
        }
    }
    /* Wait for the ring to close, watching the nodes while they load.
     * Once every node runs (loaded, its ring connections under way), the
     * ring closes within the ring's timeout or never: a node whose
     * connections are refused (a stale run epoch, a wrong secret) does not
     * hold the starter for the whole load time. */
    double deadline = time_now() + CLUSTER_LOAD_S, all_running = 0;
    while (time_now() < deadline) {
        rc = ring_wait_connected(&p->ring, 0.25, why);
        if (rc == 0) return 0;
        if (rc != MDI_ETIMEOUT) {
            int failed;
            return cluster_diagnose(p, rc, why, err, &failed);
        }
        if (all_running > 0 && time_now() - all_running > p->o.timeout_s)
            return mdi_fail(err, MDI_ETIMEOUT, "the ring did not close within %g s of every node running: %s",
                            p->o.timeout_s, why);
        int running = 0;
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
            running += state && !strcmp(state, "running");
            json_decref(st);
        }
        if (running < p->nc.n_secondary) all_running = 0;
        else if (all_running <= 0) all_running = time_now();
    }
    return mdi_fail(err, MDI_ETIMEOUT, "the ring did not close within %.0f s: %s", CLUSTER_LOAD_S, why);
}

int cluster_send_frame(cluster *p, int s, int pos, int n, int flags, const float *rows, char *err)
{
    double t = time_now();
    proto_frame *f = ring_frame_get(&p->ring, p->o.timeout_s);
    if (!f) return mdi_fail(err, MDI_ESTATE, "starter: no free frame (ring stopped)");
    f->h = proto_header_make(PROTO_DATA);
    f->h.sample_id = (uint32_t)s;
    f->h.pos = (uint32_t)pos;
    f->h.n_tokens = (uint32_t)n;
    f->h.dtype = (uint16_t)p->o.wire_dtype;
    f->h.flags = (uint16_t)(flags & (PROTO_FLAG_LOGITS | PROTO_FLAG_ROWS));
    f->h.payload_len = (uint64_t)n * dtype_row_size(p->o.wire_dtype, p->cfg.dim);
    proto_pack(rows, (size_t)n * p->cfg.dim, p->o.wire_dtype, f->payload);
    p->compute_s += time_now() - t;
    return ring_send(&p->ring, f, err);
}

int cluster_send_control(cluster *p, int type, int s, char *err)
{
    proto_frame *f = ring_frame_get(&p->ring, p->o.timeout_s);
    if (!f) return mdi_fail(err, MDI_ESTATE, "starter: no free frame (ring stopped)");
    f->h = proto_header_make(type);
    f->h.sample_id = (uint32_t)s;
    return ring_send(&p->ring, f, err);
}

/* Sends STOP round the ring and waits for it to come back. */
static int pl_stop_ring(cluster *p, char *err)
{
    int rc = cluster_send_control(p, PROTO_STOP, 0, err);
    while (!rc) {
        proto_frame *f = NULL;
        if ((rc = ring_recv(&p->ring, &f, p->o.timeout_s, err))) break;
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

json_t *cluster_nodes_json(cluster *p)
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

static void pl_free(cluster *p)
{
    if (p->ring_started) ring_stop(&p->ring);
    if (p->listen_fd >= 0) net_close(p->listen_fd);
    for (int i = 0; i < NODES_MAX_SECONDARY; i++) json_decref(p->final_status[i]);
    if (p->have_model) model_free(&p->m);
    if (p->have_manifest) prepare_manifest_free(&p->man);
}

/* Reads the configuration, the model's config and the manifest. */
static int pl_configure(cluster *p, const cluster_opts *o, char *err)
{
    int rc;
    p->o = *o;
    p->listen_fd = -1;
    if ((rc = nodes_config_load(&p->nc, o->nodes_config, err))) return rc;
    p->n_nodes = nodes_config_n_nodes(&p->nc);
    memcpy(p->orig, p->nc.secondary, sizeof(p->orig));
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

/* From the starter's chunk to a closed ring. */
static int pl_open(cluster *p, int n_samples, char *err)
{
    char why[MDI_ERR_LEN];
    int rc;
    p->listen_fd = net_listen(p->nc.starter.port_in, 8, why);
    if (p->listen_fd < 0)
        return mdi_fail(err, MDI_ENET, "starter (%s): inference.port_in: %s", p->nc.starter.addr, why);
    if ((rc = pl_load_starter(p, err))) return rc;
    control_client_global_init();
    if (!p->nc.secret[0]) auth_warn_open();
    if ((rc = startup_wait_nodes(&p->nc, p->o.connect_timeout_s, p->o.verbose, NULL, err))) return rc;
    if ((rc = pl_init_secondaries(p, n_samples, err))) return rc;
    if ((rc = pl_start_ring(p, n_samples, err))) return rc;
    log_info("ring closed: %d nodes, %d samples, wire %s", p->n_nodes, n_samples, dtype_name(p->o.wire_dtype));
    return 0;
}

/* After the last sample: the ring stopped, every secondary stopped (its
 * figures kept), st completed, *nodes built. */
int cluster_finish(cluster *p, run_stats *st, json_t **nodes, char *err)
{
    char why[MDI_ERR_LEN];
    int failed_node = -1;
    int rc = pl_stop_ring(p, why);
    if (rc) return cluster_diagnose(p, rc, why, err, &failed_node);
    ring_stop(&p->ring);
    p->ring_started = 0;
    pl_stop_secondaries(p, -1, p->o.timeout_s);
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
    st->wire_dtype = dtype_name(p->o.wire_dtype);
    st->kv_bytes = kv_bytes;
    st->kv_dtype = dtype_name(p->o.kv_dtype);
    *nodes = cluster_nodes_json(p);
    return 0;
}

/* Frees everything; after a failure (failed) leaves no node running a run
 * that is over (failed_node, when known, is not asked). */
void cluster_close(cluster *p, int failed, int failed_node)
{
    if (failed) {
        if (p->ring_started) {
            ring_stop(&p->ring);
            p->ring_started = 0;
        }
        pl_stop_secondaries(p, failed_node, pl_probe_s(p) * 2);
    }
    pl_free(p);
    free(p);
}


/* Candidate j (-1: the failed node itself, else spare j) answers GET / and
 * can take the place: 1 (the node, still in the old run, told to leave it),
 * 0 not now. *silent: it did not answer within the probe's time. */
static int pl_try_replacement(cluster *p, int failed_node, int j, int *silent)
{
    char why[MDI_ERR_LEN];
    const node_entry *e = j < 0 ? &p->orig[failed_node] : &p->nc.spare[j];
    json_t *st = NULL;
    int rc = control_client_status(e->addr, e->http_port, p->nc.secret, STARTUP_PROBE_S, &st, why);
    if (silent) *silent = rc == MDI_ETIMEOUT;
    if (rc != 0) return 0;
    const char *state = json_string_value(json_object_get(st, "state"));
    int idle = !state || !strcmp(state, "idle");
    json_decref(st);
    if (idle) return 1;
    if (j >= 0) return 0;
    /* the node itself, still in the old run (hung, then back) */
    json_t *fin = NULL;
    if (control_client_stop(e->addr, e->http_port, p->nc.secret, pl_probe_s(p) * 2, &fin, why) != 0) return 0;
    json_decref(fin);
    return 1;
}

/* Waits up to timeout_s for the failed node or an unused spare to answer
 * GET /; *spare: -1 (the node itself) or the spare's index. The node comes
 * first (its chunk is there) unless it is silent, hung rather than gone: a
 * silent node costs a probe's time each look, so the spares are asked
 * before it. */
static int pl_wait_replacement(cluster *p, int failed_node, double timeout_s, int *spare, char *err)
{
    char name[160];
    double deadline = time_now() + timeout_s, backoff = STARTUP_BACKOFF_FIRST_S;
    int node_silent = p->failed_silent;
    *spare = -1;
    for (;;) {
        if (!node_silent && pl_try_replacement(p, failed_node, -1, &node_silent)) return 0;
        for (int j = 0; j < p->nc.n_spare; j++) {
            if (p->spare_used[j] || !pl_try_replacement(p, failed_node, j, NULL)) continue;
            *spare = j;
            return 0;
        }
        if (node_silent && pl_try_replacement(p, failed_node, -1, &node_silent)) return 0;
        double left = deadline - time_now();
        if (left <= 0) break;
        double s = backoff < left ? backoff : left;
        struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
        nanosleep(&ts, NULL);
        backoff = backoff * 2 > 1.0 ? 1.0 : backoff * 2;
    }
    pl_node_name(p, failed_node, name, sizeof(name));
    return mdi_fail(err, MDI_ETIMEOUT, "%s is not back within %g s and no spare answers%s", name, timeout_s,
                    p->nc.n_spare ? "" : " (none listed)");
}

int cluster_recover(cluster *p, int failed_node, double timeout_s, cluster_recovery *rec, char *err)
{
    memset(rec, 0, sizeof(*rec));
    rec->node = failed_node;
    rec->spare = -1;
    if (p->ring_started) {
        ring_stop(&p->ring);
        p->ring_started = 0;
    }
    /* every node still answering leaves the old run: its ring connections
     * and KV caches go */
    pl_stop_secondaries(p, failed_node, pl_probe_s(p) * 2);
    if (failed_node >= 0) p->started[failed_node] = 0;
    double t = time_now();
    int rc;
    if (failed_node >= 0) {
        int spare;
        if ((rc = pl_wait_replacement(p, failed_node, timeout_s, &spare, err))) return rc;
        rec->spare = spare;
        char was[160];
        pl_node_name(p, failed_node, was, sizeof(was));
        if (p->names_mu) pthread_mutex_lock(p->names_mu);
        if (spare >= 0) {
            p->spare_used[spare] = 1;
            p->nc.secondary[failed_node] = p->nc.spare[spare];
            p->in_place[failed_node] = spare + 1;
        } else {
            p->nc.secondary[failed_node] = p->orig[failed_node];
            p->in_place[failed_node] = 0;
        }
        if (p->names_mu) pthread_mutex_unlock(p->names_mu);
        char now[160];
        pl_node_name(p, failed_node, now, sizeof(now));
        log_info("%s: %s takes its layers", was, spare >= 0 ? now : "the node, back,");
    }
    rec->wait_s = time_now() - t;
    t = time_now();
    p->epoch++;
    for (int i = 0; i < p->nc.n_secondary; i++) p->uploaded[i] = 0;
    if ((rc = pl_init_secondaries(p, p->o.n_slots, err))) return rc;
    rec->uploaded = failed_node >= 0 && p->uploaded[failed_node];
    rec->init_s = time_now() - t;
    t = time_now();
    if ((rc = pl_start_ring(p, p->o.n_slots, err))) return rc;
    rec->ring_s = time_now() - t;
    return 0;
}

int cluster_frame_error(const proto_frame *f, char *err)
{
    int len = (int)f->h.payload_len;
    return mdi_fail(err, MDI_EPROTO, "%.*s", len < PROTO_TEXT_SHOWN ? len : PROTO_TEXT_SHOWN, (const char *)f->payload);
}

int cluster_open(cluster **out, const cluster_opts *o, char *err)
{
    *out = NULL;
    cluster *p = calloc(1, sizeof(*p));
    if (!p) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    p->listen_fd = -1;
    int rc = 0;
    if (o->max_seq <= 0 || o->max_batch <= 0 || o->n_slots < 1 || o->n_slots > FORWARD_MAX_SAMPLES)
        rc = mdi_fail(err, MDI_EARG, "cluster: max_seq %d, max_batch %d, n_slots %d out of range", o->max_seq,
                      o->max_batch, o->n_slots);
    if (!rc) rc = pl_configure(p, o, err);
    if (!rc && o->max_seq > p->cfg.max_seq_len)
        rc = mdi_fail(err, MDI_EARG, "max_seq %d: above the model's context of %d tokens", o->max_seq,
                      p->cfg.max_seq_len);
    if (!rc) rc = pl_open(p, o->n_slots, err);
    if (rc) {
        cluster_close(p, 1, -1);
        return rc;
    }
    *out = p;
    return 0;
}

void cluster_get_places(cluster *c, int in_place[NODES_MAX_SECONDARY], int spare_used[NODES_MAX_SPARE])
{
    if (c->names_mu) pthread_mutex_lock(c->names_mu);
    memcpy(in_place, c->in_place, sizeof(c->in_place));
    memcpy(spare_used, c->spare_used, sizeof(c->spare_used));
    if (c->names_mu) pthread_mutex_unlock(c->names_mu);
}

void cluster_node_layers(const cluster *c, int i, int *begin, int *end)
{
    const prepare_chunk *ch = pl_chunk(c, i);
    *begin = ch ? ch->layer_begin : 0;
    *end = ch ? ch->layer_end : 0;
}
