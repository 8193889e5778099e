/*
 * pipeline: a chat's conversation on the ring (see pipeline.h); opening
 * and closing the ring is the cluster module's (cluster.h).
 */
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "forward.h"
#include "util.h"

struct pipeline {
    const starter_opts *o;
    cluster *c;
    model *m;            /* the starter's chunk (c->m) */
    model_config cfg;
    int max_seq, max_batch;
    forward_state fs;
    int have_fs;
    kv_cache kv;         /* the conversation's one slot */
    float *x;            /* (max_batch, dim) */
    token_curve curve;   /* tokens-versus-time, handed to run_stats */
};

static void pl_free(pipeline *p)
{
    if (p->have_fs) forward_state_free(&p->fs);
    kv_cache_free(&p->kv);
    free(p->x);
    token_curve_free(&p->curve);
    free(p);
}

int pipeline_open(pipeline **out, const starter_opts *o, int max_seq, char *err)
{
    pipeline *p = calloc(1, sizeof(*p));
    *out = NULL;
    if (!p) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    p->o = o;
    int rc = model_config_load(&p->cfg, o->ckpt, err);
    if (!rc && max_seq > p->cfg.max_seq_len)
        rc = mdi_fail(err, MDI_EARG, "--max-seq-len %d: above the model's context of %d tokens", max_seq,
                      p->cfg.max_seq_len);
    if (!rc) {
        p->max_seq = max_seq ? max_seq : p->cfg.max_seq_len;
        p->max_batch = p->max_seq < GENERATE_MAX_BATCH ? p->max_seq : GENERATE_MAX_BATCH;
        cluster_opts co = {o->ckpt, o->nodes_config, o->dtype, o->kv_dtype, o->wire_dtype, o->mmap_weights,
                           o->mlock, p->max_seq, p->max_batch, 1, o->timeout_s,
                           o->connect_timeout_s, o->verbose};
        rc = cluster_open(&p->c, &co, err);
    }
    if (!rc) {
        p->m = &p->c->m;
        if (!(rc = forward_state_init(&p->fs, p->m, p->max_batch, p->max_seq, err))) p->have_fs = 1;
    }
    if (!rc) rc = kv_cache_init(&p->kv, p->m, p->max_seq, o->kv_dtype, err);
    if (!rc && !(p->x = malloc((size_t)p->max_batch * p->cfg.dim * sizeof(float))))
        rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
    if (rc) {
        if (p->c) cluster_close(p->c, 1, -1);
        pl_free(p);
        return rc;
    }
    p->c->kv_bytes_peak = kv_cache_bytes(&p->kv);
    *out = p;
    return 0;
}

/* Runs the starter's layers on x (n rows) and sends them. */
static int pl_send_rows(pipeline *p, int pos, int n, int logits, char *err)
{
    double t = time_now();
    forward_layers(p->m, &p->fs, &p->kv, p->x, n, pos);
    p->c->compute_s += time_now() - t;
    return cluster_send_frame(p->c, 0, pos, n, logits ? PROTO_FLAG_LOGITS : 0, p->x, err);
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
        forward_embed(p->m, ids + off, chunk, p->x);
        rc = pl_send_rows(p, ss->pos + off, chunk, off + chunk == n, why);
        in_flight++;
    }
    int pos_end = ss->pos + n;
    while (!rc && in_flight > 0) {
        proto_frame *f = NULL;
        double tw = time_now();
        rc = ring_recv(&p->c->ring, &f, p->o->timeout_s, why);
        p->c->wait_s += time_now() - tw;
        if (rc) break;
        in_flight--;
        if (f->h.type == PROTO_ERROR) {
            int len = (int)f->h.payload_len;
            rc = mdi_fail(why, MDI_EPROTO, "%.*s", len < PROTO_TEXT_SHOWN ? len : PROTO_TEXT_SHOWN, (const char *)f->payload);
        } else if (f->h.type == PROTO_DATA && (f->h.flags & PROTO_FLAG_LOGITS)) {
            int want = first ? pos_end - 1 : ss->pos - 1;
            if (ss->done || f->h.n_tokens != 1 || (int)f->h.pos != want) {
                rc = mdi_fail(why, MDI_EPROTO, "starter: unexpected frame at position %u", f->h.pos);
                ring_frame_put(&p->c->ring, f);
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
            float *logits = forward_head(p->m, &p->fs, p->x);
            int going = sample_state_accept(ss, tok, logits, time_now() - t0);
            token_curve_add(&p->curve, time_now() - t0, ++fig->generated);
            if (going && ss->pos >= p->max_seq) {
                ss->done = 1;
                ss->res->t_done = time_now() - t0;
                going = 0;
            }
            p->c->compute_s += time_now() - t;
            if (going) {
                ta = time_now();
                forward_embed(p->m, &ss->next_token, 1, p->x);
                rc = pl_send_rows(p, ss->pos, 1, 1, why);
                ss->pos++;
                in_flight++;
            }
        }
        ring_frame_put(&p->c->ring, f);
    }
    if (rc) return cluster_diagnose(p->c, rc, why, err, &failed_node);
    return 0;
}

int pipeline_close(pipeline *p, run_stats *st, json_t **nodes, char *err)
{
    if (nodes) *nodes = NULL;
    int rc = 0;
    if (st) {
        /* the conversation's one sample leaves every node's cache */
        char why[MDI_ERR_LEN];
        if (!(rc = cluster_send_control(p->c, PROTO_RELEASE, 0, why))) {
            proto_frame *f = NULL;
            if (!(rc = ring_recv(&p->c->ring, &f, p->o->timeout_s, why))) ring_frame_put(&p->c->ring, f);
        }
        int failed_node = -1;
        if (rc) {
            rc = cluster_diagnose(p->c, rc, why, err, &failed_node);
        } else if (!(rc = cluster_finish(p->c, st, nodes, err))) {
            token_curve_free(&st->curve);
            st->curve = p->curve;
            memset(&p->curve, 0, sizeof(p->curve));
        }
    }
    cluster_close(p->c, st == NULL || rc != 0, -1);
    pl_free(p);
    return rc;
}
