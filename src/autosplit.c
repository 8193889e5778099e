/* autosplit: the layer split from the nodes' capabilities; see autosplit.h. */
#include "autosplit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "caps.h"
#include "control.h"
#include "kernels.h"
#include "nodes_config.h"
#include "plan.h"
#include "startup.h"
#include "util.h"

/* nodes.starter or nodes.secondary[i] of the raw configuration. */
static json_t *as_node_json(json_t *root, int i)
{
    json_t *nodes = json_object_get(root, "nodes");
    return i < 0 ? json_object_get(nodes, "starter") : json_array_get(json_object_get(nodes, "secondary"), (size_t)i);
}

/* Secondary i's capabilities from its GET /, waiting while it measures. */
static json_t *as_ask_node(const nodes_config *nc, int i, double deadline, const char *name, char *err)
{
    char why[MDI_ERR_LEN];
    for (;;) {
        json_t *st = NULL;
        double left = deadline - time_now();
        int rc = control_client_status(nc->secondary[i].addr, nc->secondary[i].http_port, nc->secret,
                                       left < 2 ? 2 : left > 5 ? 5 : left, &st, why);
        if (rc) {
            mdi_fail(err, rc, "%s: %s", name, why);
            return NULL;
        }
        json_t *caps = json_object_get(st, "capabilities");
        if (caps) {
            json_incref(caps);
            json_decref(st);
            return caps;
        }
        json_decref(st);
        if (time_now() > deadline) {
            mdi_fail(err, MDI_ETIMEOUT, "%s: reports no capabilities (an older secondary, or still measuring); "
                     "give them in the nodes configuration", name);
            return NULL;
        }
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int autosplit_plan(void *ctxp, const prepare_costs *c, int n_nodes, int *counts, char *err)
{
    const autosplit_ctx *ctx = ctxp;
    nodes_config nc;
    int rc = nodes_config_load(&nc, ctx->nodes_config, err);
    if (rc) return rc;
    if (nodes_config_n_nodes(&nc) != n_nodes)
        return mdi_fail(err, MDI_EARG, "%s: %d nodes, but %d asked for", ctx->nodes_config, nodes_config_n_nodes(&nc),
                        n_nodes);
    if (n_nodes > PLAN_MAX_NODES)
        return mdi_fail(err, MDI_EARG, "%s: %d nodes, the planner takes at most %d", ctx->nodes_config, n_nodes,
                        PLAN_MAX_NODES);
    json_error_t jerr;
    json_t *root = json_load_file(ctx->nodes_config, 0, &jerr);
    if (!root) return mdi_fail(err, MDI_EFORMAT, "%s: %s", ctx->nodes_config, jerr.text);

    plan_node nodes[PLAN_MAX_NODES];
    double *layer_flops = calloc((size_t)c->n_layers, sizeof(double));
    double *layer_bytes = calloc((size_t)c->n_layers, sizeof(double));
    json_t *asked = NULL;
    if (!layer_flops || !layer_bytes) {
        rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
        goto done;
    }
    /* which secondaries must be asked: wait for them all at once */
    int need_ask = 0;
    for (int i = 0; i < nc.n_secondary; i++) need_ask |= !json_object_get(as_node_json(root, i), "capabilities");
    double deadline = time_now() + ctx->connect_timeout_s;
    if (need_ask && (rc = startup_wait_nodes(&nc, ctx->connect_timeout_s, ctx->verbose, NULL, err))) goto done;
    for (int i = -1; i < nc.n_secondary; i++) {
        plan_node *pn = &nodes[i + 1];
        nodes_config_describe(&nc, i, pn->name, sizeof(pn->name));
        json_t *caps = json_object_get(as_node_json(root, i), "capabilities");
        const char *from = "the configuration";
        json_decref(asked);
        asked = NULL;
        if (!caps && i < 0) {
            if (!(asked = caps_measure(CAPS_STARTER_CACHE, err))) {
                rc = MDI_ENOMEM;
                goto done;
            }
            from = "measured here";
        } else if (!caps) {
            if (!(asked = as_ask_node(&nc, i, deadline, pn->name, err))) {
                rc = MDI_ENET;
                goto done;
            }
            from = "its GET /";
        }
        caps_profile prof;
        if ((rc = caps_parse(caps ? caps : asked, &prof, pn->name, err))) goto done;
        pn->flops_per_s = caps_flops(&prof, c->dtype);
        pn->mem_bytes = prof.mem_bytes * AUTOSPLIT_MEM_SHARE;
        log_debug("%s: %.2f GFLOP/s for %s, %.0f MiB free (%s)", pn->name, pn->flops_per_s / 1e9,
                  dtype_name(c->dtype), prof.mem_bytes / 1048576.0, from);
    }
    int max_seq = ctx->max_seq ? ctx->max_seq : c->max_seq_len < AUTOSPLIT_MAX_SEQ ? c->max_seq_len : AUTOSPLIT_MAX_SEQ;
    int n_samples = ctx->n_samples ? ctx->n_samples : n_nodes;
    double kv_layer = 2.0 * c->kv_dim * (double)max_seq * n_samples * (ctx->kv_bytes ? ctx->kv_bytes : 4);
    for (int l = 0; l < c->n_layers; l++) {
        layer_flops[l] = 2.0 * c->layer_params[l];
        layer_bytes[l] = c->layer_bytes[l] + kv_layer;
    }
    json_t *link = json_object_get(root, "link_bytes_per_s");
    double link_bytes_s = json_is_number(link) && json_number_value(link) > 0 ? json_number_value(link)
                                                                               : AUTOSPLIT_LINK_BYTES_S;
    /* the starter's extra: the head, and the final norm (4 FLOPs a value) */
    plan_model pm = {c->n_layers, layer_flops, layer_bytes, 2.0 * c->head_params + 4.0 * c->dim,
                     c->head_bytes + c->embed_bytes, 4.0 * c->dim, link_bytes_s};
    plan_result r;
    if ((rc = plan_split(&pm, nodes, n_nodes, &r, err))) goto done;
    /* beside it, what the byte-balanced split would give on the same scale */
    int even[PLAN_MAX_NODES];
    char why[MDI_ERR_LEN];
    if (prepare_plan_split(c->layer_bytes, c->n_layers, c->head_bytes, n_nodes, even, why) == 0) {
        double worst = 0;
        for (int i = 0, a = 0; i < n_nodes; a += even[i], i++) {
            double t = plan_stage_s(&pm, nodes, i, a, a + even[i]);
            if (t > worst) worst = t;
        }
        log_info("split by bytes alone: slowest node %.3f ms per token", worst * 1e3);
    }
    plan_print(&r, nodes, "split by capability");
    memcpy(counts, r.counts, (size_t)n_nodes * sizeof(int));
done:
    json_decref(asked);
    json_decref(root);
    free(layer_flops);
    free(layer_bytes);
    return rc;
}

int autosplit_starter(const starter_opts *o, int n_nodes, char *err)
{
    char dir[4096], why[MDI_ERR_LEN];
    snprintf(dir, sizeof(dir), "%s/chunks/%dnodes", o->ckpt, n_nodes);
    prepare_manifest man;
    int rc = prepare_manifest_load(&man, dir, 0, why);
    if (rc)
        return mdi_fail(err, rc, "--auto-split: %s; prepare the model first (bin/prepare_model SOURCE --plan-from %s "
                        "--out %s)", why, o->nodes_config, o->ckpt);
    nodes_config nc;
    if ((rc = nodes_config_load(&nc, o->nodes_config, err))) goto done;
    if (nc.starter.n_layers > 0) {
        rc = mdi_fail(err, MDI_EARG, "--auto-split: %s gives n_layers per node; drop them or --auto-split",
                      o->nodes_config);
        goto done;
    }
    if (!file_exists(man.source) && !dir_exists(man.source)) {
        rc = mdi_fail(err, MDI_EARG, "--auto-split: %s/manifest.json: its source %s is not here (needed to re-split); "
                      "run bin/prepare_model SOURCE --plan-from %s --out %s", dir, man.source, o->nodes_config, o->ckpt);
        goto done;
    }
    autosplit_ctx ctx = {o->nodes_config, o->connect_timeout_s, o->verbose, o->max_seq_len, o->n_samples,
                         o->kv_dtype == DTYPE_F16 ? 2 : 4};
    prepare_opts po;
    memset(&po, 0, sizeof(po));
    po.source = man.source;
    po.out_dir = o->ckpt;
    po.n_nodes = n_nodes;
    if (strcmp(man.dtype, "source")) {
        po.convert = 1;
        if (dtype_parse(man.dtype, &po.dtype)) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s/manifest.json: dtype \"%s\" unknown", dir, man.dtype);
            goto done;
        }
    }
    if (man.embed_dtype[0] && !dtype_parse(man.embed_dtype, &po.embed_dtype)) po.convert_embed = 1;
    po.plan = autosplit_plan;
    po.plan_ctx = &ctx;
    rc = prepare_run(&po, NULL, err);
done:
    prepare_manifest_free(&man);
    return rc;
}
