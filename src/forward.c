/* forward: the transformer forward pass over a slice; see forward.h. */
#include "forward.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int kv_cache_init(kv_cache *c, const model *m, int max_seq, dtype_t dtype, char *err)
{
    memset(c, 0, sizeof(*c));
    if (dtype != DTYPE_F32 && dtype != DTYPE_F16)
        return mdi_fail(err, MDI_EARG, "KV cache dtype %s: expected f32 or f16", dtype_name(dtype));
    c->n_layers = m->slice.layer_end - m->slice.layer_begin;
    c->max_seq = max_seq;
    c->kv_dim = m->cfg.n_kv_heads * m->cfg.head_dim;
    c->dtype = dtype;
    c->row_bytes = dtype_row_size(dtype, c->kv_dim);
    size_t n = (size_t)(c->n_layers ? c->n_layers : 1) * (size_t)max_seq * c->row_bytes;
    c->k = malloc(n);
    c->v = malloc(n);
    if (!c->k || !c->v) {
        kv_cache_free(c);
        return mdi_fail(err, MDI_ENOMEM, "out of memory for a KV cache of %zu MiB", 2 * n >> 20);
    }
    return MDI_OK;
}

size_t kv_cache_bytes(const kv_cache *c)
{
    if (!c->k)
        return 0;
    return 2 * (size_t)(c->n_layers ? c->n_layers : 1) * (size_t)c->max_seq * c->row_bytes;
}

void kv_cache_reset(kv_cache *c)
{
    c->len = 0;
}

void kv_cache_free(kv_cache *c)
{
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof(*c));
}

/* Llama 3.1 frequency scaling (rope_scaling type "llama3"): long
 * wavelengths are divided by factor, short ones kept, and the band in
 * between interpolated smoothly. */
static double rope_llama3_scale(const model_config *c, double inv_freq)
{
    const double pi = 3.14159265358979323846;
    double old_ctx = c->rope_original_max_pos;
    double low_wavelen = old_ctx / c->rope_low_freq_factor;
    double high_wavelen = old_ctx / c->rope_high_freq_factor;
    double wavelen = 2 * pi / inv_freq;
    if (wavelen < high_wavelen)
        return inv_freq;
    if (wavelen > low_wavelen)
        return inv_freq / c->rope_factor;
    double smooth = (old_ctx / wavelen - c->rope_low_freq_factor) /
                    (c->rope_high_freq_factor - c->rope_low_freq_factor);
    return (1 - smooth) * inv_freq / c->rope_factor + smooth * inv_freq;
}

int forward_state_init_batch(forward_state *s, const model *m, int max_batch, int max_samples, int max_seq,
                             char *err)
{
    memset(s, 0, sizeof(*s));
    const model_config *c = &m->cfg;
    if (max_samples < 1 || max_samples > FORWARD_MAX_SAMPLES)
        return mdi_fail(err, MDI_EARG, "batch of %d samples: expected 1 to %d", max_samples, FORWARD_MAX_SAMPLES);
    s->max_batch = max_batch;
    s->max_samples = max_samples;
    s->max_rows = max_batch > max_samples ? max_batch : max_samples;
    s->max_seq = max_seq;
    size_t R = (size_t)s->max_rows;
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    int nth = kernels_n_threads();
    s->xb = malloc(R * c->dim * sizeof(float));
    s->xb2 = malloc(R * (size_t)(q_dim > c->dim ? q_dim : c->dim) * sizeof(float));
    s->q = malloc(R * q_dim * sizeof(float));
    s->k = malloc(R * kv_dim * sizeof(float));
    s->v = malloc(R * kv_dim * sizeof(float));
    s->att = malloc((size_t)nth * max_seq * sizeof(float));
    s->hb = malloc(R * c->hidden_dim * sizeof(float));
    s->hb2 = malloc(R * c->hidden_dim * sizeof(float));
    s->rope_inv_freq = malloc((size_t)(c->head_dim / 2) * sizeof(float));
    s->rows = malloc(R * sizeof(forward_row));
    if (m->slice.head)
        s->logits = malloc((size_t)max_samples * c->vocab_size * sizeof(float));
    int max_cols = c->dim > q_dim ? c->dim : q_dim;
    if (c->hidden_dim > max_cols)
        max_cols = c->hidden_dim;
    /* q, k and v read one activation of up to R rows (a decode batch, or
     * forward_layers_rows' chunk), quantized once */
    s->xq.bytes = kernels_scratch_bytes(3, (int)R, max_cols);
    s->xq.data = malloc(s->xq.bytes);
    if (!s->xq.data || !s->xb || !s->xb2 || !s->q || !s->k || !s->v || !s->att || !s->hb || !s->hb2 ||
        !s->rope_inv_freq || !s->rows || (m->slice.head && !s->logits)) {
        forward_state_free(s);
        return mdi_fail(err, MDI_ENOMEM, "out of memory for run buffers (batch %d, %d samples)", max_batch,
                        max_samples);
    }
    for (int i = 0; i < c->head_dim / 2; i++) {
        double f = pow((double)c->rope_theta, -2.0 * i / c->head_dim);
        if (c->rope_llama3)
            f = rope_llama3_scale(c, f);
        if (c->n_rope_freq_factors)
            f /= c->rope_freq_factors[i];
        if (c->rope_linear > 0)
            f /= c->rope_linear;
        s->rope_inv_freq[i] = (float)f;
    }
    return MDI_OK;
}

int forward_state_init(forward_state *s, const model *m, int max_batch, int max_seq, char *err)
{
    return forward_state_init_batch(s, m, max_batch, 1, max_seq, err);
}

void forward_state_free(forward_state *s)
{
    free(s->xb);
    free(s->xb2);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->hb);
    free(s->hb2);
    free(s->logits);
    free(s->rope_inv_freq);
    free(s->rows);
    free(s->xq.data);
    memset(s, 0, sizeof(*s));
}

void forward_embed(const model *m, const int *tokens, int n, float *x)
{
    for (int i = 0; i < n; i++)
        kernels_get_row(x + (size_t)i * m->cfg.dim, &m->tok_embed, tokens[i]);
}

/* Rotate-half RoPE (Hugging Face layout) on n_heads vectors of hd at pos:
 * (x_i, x_{i+hd/2}) rotated by pos * inv_freq_i. */
static void rope(float *v, int n_heads, int hd, int pos, const float *inv_freq)
{
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        float angle = (float)pos * inv_freq[i];
        float cs = cosf(angle), sn = sinf(angle);
        for (int h = 0; h < n_heads; h++) {
            float *p = v + (size_t)h * hd;
            float x0 = p[i], x1 = p[i + half];
            p[i] = x0 * cs - x1 * sn;
            p[i + half] = x0 * sn + x1 * cs;
        }
    }
}

/* Interleaved RoPE (llama-architecture GGUF layout): (x_2i, x_2i+1)
 * rotated by pos * inv_freq_i. The q and k rows are in the matching
 * order, so q . k equals the rotate-half computation on Hugging Face rows. */
static void rope_interleaved(float *v, int n_heads, int hd, int pos, const float *inv_freq)
{
    for (int i = 0; i < hd / 2; i++) {
        float angle = (float)pos * inv_freq[i];
        float cs = cosf(angle), sn = sinf(angle);
        for (int h = 0; h < n_heads; h++) {
            float *p = v + (size_t)h * hd + 2 * i;
            float x0 = p[0], x1 = p[1];
            p[0] = x0 * cs - x1 * sn;
            p[1] = x0 * sn + x1 * cs;
        }
    }
}

/* Multiply-adds of one attention call below which it runs on one thread. */
#define ATTENTION_PARALLEL_MIN (32 * 1024)

typedef struct {
    const model *m;
    forward_state *s;
    const forward_row *rows; /* row i: its cache and position */
    int layer;               /* local layer index into the caches */
    int n;
} attn_task;

/* Causal attention for every (row, head) pair, split across threads; row i
 * attends to positions [.., rows[i].pos] of its own cache.
 * q (n, n_heads*hd) -> xb2 (n, n_heads*hd). */
static void attention_worker(void *arg, int ith, int nth)
{
    attn_task *a = arg;
    const model_config *c = &a->m->cfg;
    forward_state *s = a->s;
    int hd = c->head_dim, kv_dim = c->n_kv_heads * hd, q_dim = c->n_heads * hd;
    int group = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    float *att = s->att + (size_t)ith * s->max_seq;
    int units = a->n * c->n_heads;
    for (int u = ith; u < units; u += nth) {
        int i = u / c->n_heads, h = u % c->n_heads;
        const kv_cache *kv = a->rows[i].kv;
        size_t layer_off = (size_t)a->layer * kv->max_seq * kv->row_bytes;
        const char *k_cache = (const char *)kv->k + layer_off, *v_cache = (const char *)kv->v + layer_off;
        /* positions [t0, pos]: all before, or the latest sliding_window */
        int t_end = a->rows[i].pos + 1;
        int t0 = c->sliding_window && t_end > c->sliding_window ? t_end - c->sliding_window : 0;
        int t_len = t_end - t0;
        const float *q = s->q + (size_t)i * q_dim + (size_t)h * hd;
        int kvh = h / group;
        float *out = s->xb2 + (size_t)i * q_dim + (size_t)h * hd;
        memset(out, 0, (size_t)hd * sizeof(float));
        if (kv->dtype == DTYPE_F16) {
            size_t rb = kv->row_bytes, head = dtype_row_size(DTYPE_F16, (int64_t)kvh * hd);
            const char *kc = k_cache + (size_t)t0 * rb + head;
            const char *vc = v_cache + (size_t)t0 * rb + head;
            for (int t = 0; t < t_len; t++)
                att[t] = kernels_dot_f32_f16(q, (const uint16_t *)(kc + (size_t)t * rb), hd) * scale;
            kernels_softmax(att, t_len);
            for (int t = 0; t < t_len; t++)
                kernels_axpy_f16(out, att[t], (const uint16_t *)(vc + (size_t)t * rb), hd);
            continue;
        }
        const float *kc = (const float *)k_cache + (size_t)t0 * kv_dim + (size_t)kvh * hd;
        const float *vc = (const float *)v_cache + (size_t)t0 * kv_dim + (size_t)kvh * hd;
        if (hd < 32) {
            /* tiny heads (stories260K has 8): a call per position costs
             * more than the arithmetic, so the loops stay inline */
            for (int t = 0; t < t_len; t++) {
                const float *k = kc + (size_t)t * kv_dim;
                float dot = 0.0f;
                for (int j = 0; j < hd; j++)
                    dot += q[j] * k[j];
                att[t] = dot * scale;
            }
            kernels_softmax(att, t_len);
            for (int t = 0; t < t_len; t++) {
                const float *v = vc + (size_t)t * kv_dim;
                for (int j = 0; j < hd; j++)
                    out[j] += att[t] * v[j];
            }
            continue;
        }
        for (int t = 0; t < t_len; t++)
            att[t] = kernels_dot_f32(q, kc + (size_t)t * kv_dim, hd) * scale;
        kernels_softmax(att, t_len);
        for (int t = 0; t < t_len; t++)
            kernels_axpy_f32(out, att[t], vc + (size_t)t * kv_dim, hd);
    }
}

/* y (n, W.rows) = x (n, W.cols) @ W^T: decode kernels (each row as alone)
 * or, for a prefill chunk, the matrix-matrix ones. */
static void linear(forward_state *s, float *y, const mat_t *w, const float *x, int n, int decode, const float *bias)
{
    if (decode) {
        matvec_job j = { y, w, x, bias };
        kernels_matvec_batch(&j, 1, n, &s->xq);
    } else {
        kernels_matmul(y, w, x, n, bias);
    }
}

/* Stores k and v (n, kv_dim) into the rows' caches, rounded to each
 * cache's dtype (a copy for F32); consecutive positions of one cache (a
 * prefill chunk) go in one conversion. */
static void layers_store_kv(const forward_state *s, const forward_row *rows, int n, int layer, int kv_dim)
{
    for (int i = 0, j; i < n; i = j) {
        kv_cache *kv = rows[i].kv;
        for (j = i + 1; j < n && rows[j].kv == kv && rows[j].pos == rows[i].pos + (j - i); j++)
            ;
        size_t off = ((size_t)layer * kv->max_seq + (size_t)rows[i].pos) * kv->row_bytes;
        size_t count = (size_t)(j - i) * kv_dim;
        dtype_convert((char *)kv->k + off, kv->dtype, s->k + (size_t)i * kv_dim, DTYPE_F32, count);
        dtype_convert((char *)kv->v + off, kv->dtype, s->v + (size_t)i * kv_dim, DTYPE_F32, count);
    }
}

/* The layers on x (n, dim), row i at rows[i]: a prefill chunk of one
 * sample (decode 0: matrix-matrix kernels) or decode rows (decode 1:
 * matrix-vector kernels, each row computed as if alone). */
static void layers_run(const model *m, forward_state *s, const forward_row *rows, int n, float *x, int decode)
{
    const model_config *c = &m->cfg;
    int dim = c->dim, hd = c->head_dim, hidden = c->hidden_dim;
    int q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    int n_local = m->slice.layer_end - m->slice.layer_begin;
    size_t attn_work = 0;
    for (int i = 0; i < n; i++)
        attn_work += (size_t)c->n_heads * (size_t)(rows[i].pos + 1) * hd;

    for (int l = 0; l < n_local; l++) {
        const layer_weights *w = &m->layers[l];

        /* attention block: xb = rmsnorm(x); q, k, v = xb @ W^T */
        for (int i = 0; i < n; i++)
            kernels_rmsnorm(s->xb + (size_t)i * dim, x + (size_t)i * dim, w->attn_norm, dim, c->norm_eps);
        if (decode) {
            matvec_job jobs[3] = {
                { s->q, &w->wq, s->xb, w->bq },
                { s->k, &w->wk, s->xb, w->bk },
                { s->v, &w->wv, s->xb, w->bv },
            };
            kernels_matvec_batch(jobs, 3, n, &s->xq);
        } else {
            kernels_matmul(s->q, &w->wq, s->xb, n, w->bq);
            kernels_matmul(s->k, &w->wk, s->xb, n, w->bk);
            kernels_matmul(s->v, &w->wv, s->xb, n, w->bv);
        }
        if (c->qk_norm) { /* qwen3: each head of q and k normalised */
            for (int i = 0; i < n * c->n_heads; i++)
                kernels_rmsnorm(s->q + (size_t)i * hd, s->q + (size_t)i * hd, w->q_norm, hd, c->norm_eps);
            for (int i = 0; i < n * c->n_kv_heads; i++)
                kernels_rmsnorm(s->k + (size_t)i * hd, s->k + (size_t)i * hd, w->k_norm, hd, c->norm_eps);
        }
        for (int i = 0; i < n; i++) {
            int pos = rows[i].pos;
            if (c->rope_interleaved) {
                rope_interleaved(s->q + (size_t)i * q_dim, c->n_heads, hd, pos, s->rope_inv_freq);
                rope_interleaved(s->k + (size_t)i * kv_dim, c->n_kv_heads, hd, pos, s->rope_inv_freq);
            } else {
                rope(s->q + (size_t)i * q_dim, c->n_heads, hd, pos, s->rope_inv_freq);
                rope(s->k + (size_t)i * kv_dim, c->n_kv_heads, hd, pos, s->rope_inv_freq);
            }
        }
        layers_store_kv(s, rows, n, l, kv_dim);

        /* small attention (tiny models, early positions) is cheaper than a
         * dispatch; each (row, head) is computed alike either way */
        attn_task at = { m, s, rows, l, n };
        if (attn_work < ATTENTION_PARALLEL_MIN)
            attention_worker(&at, 0, 1);
        else
            kernels_parallel(attention_worker, &at);

        /* x += xb2 @ Wo^T */
        linear(s, s->xb, &w->wo, s->xb2, n, decode, NULL);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            x[i] += s->xb[i];

        /* MLP block: x += down(silu(gate(xb)) * up(xb)), xb = rmsnorm(x) */
        for (int i = 0; i < n; i++)
            kernels_rmsnorm(s->xb + (size_t)i * dim, x + (size_t)i * dim, w->ffn_norm, dim, c->norm_eps);
        if (decode) {
            matvec_job jobs[2] = {
                { s->hb, &w->w_gate, s->xb, NULL },
                { s->hb2, &w->w_up, s->xb, NULL },
            };
            kernels_matvec_batch(jobs, 2, n, &s->xq);
        } else {
            kernels_matmul(s->hb, &w->w_gate, s->xb, n, NULL);
            kernels_matmul(s->hb2, &w->w_up, s->xb, n, NULL);
        }
        kernels_swiglu(s->hb, s->hb2, n * hidden);
        linear(s, s->xb, &w->w_down, s->hb, n, decode, NULL);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            x[i] += s->xb[i];
    }
    for (int i = 0; i < n; i++)
        if (rows[i].pos + 1 > rows[i].kv->len)
            rows[i].kv->len = rows[i].pos + 1;
}

void forward_layers(const model *m, forward_state *s, kv_cache *kv, float *x, int n, int pos)
{
    CHECK(n >= 1 && n <= s->max_batch && pos + n <= kv->max_seq);
    for (int i = 0; i < n; i++) {
        s->rows[i].kv = kv;
        s->rows[i].pos = pos + i;
    }
    layers_run(m, s, s->rows, n, x, n == 1);
}

void forward_layers_rows(const model *m, forward_state *s, kv_cache *kv, float *x, int n, int pos)
{
    CHECK(n >= 1 && n <= s->max_batch && pos + n <= kv->max_seq);
    for (int i = 0; i < n; i++) {
        s->rows[i].kv = kv;
        s->rows[i].pos = pos + i;
    }
    /* every row's k and v are stored before any row's attention reads the
     * cache: row i sees rows 0 .. i-1 as its decode step did */
    layers_run(m, s, s->rows, n, x, 1);
}

void forward_layers_batch(const model *m, forward_state *s, const forward_row *rows, int n, float *x)
{
    CHECK(n >= 1 && n <= s->max_samples);
    for (int i = 0; i < n; i++) {
        CHECK(rows[i].pos >= 0 && rows[i].pos < rows[i].kv->max_seq);
        for (int j = 0; j < i; j++)
            CHECK(rows[j].kv != rows[i].kv);
    }
    layers_run(m, s, rows, n, x, 1);
}

float *forward_head(const model *m, forward_state *s, const float *x)
{
    CHECK(m->slice.head);
    kernels_rmsnorm(s->xb, x, m->final_norm, m->cfg.dim, m->cfg.norm_eps);
    matvec_job j = { s->logits, &m->lm_head, s->xb, NULL };
    kernels_matvec_batch(&j, 1, 1, &s->xq);
    return s->logits;
}

float *forward_head_batch(const model *m, forward_state *s, const float *x, int n)
{
    CHECK(m->slice.head && n >= 1 && n <= s->max_samples);
    int dim = m->cfg.dim;
    for (int i = 0; i < n; i++)
        kernels_rmsnorm(s->xb + (size_t)i * dim, x + (size_t)i * dim, m->final_norm, dim, m->cfg.norm_eps);
    matvec_job j = { s->logits, &m->lm_head, s->xb, NULL };
    kernels_matvec_batch(&j, 1, n, &s->xq);
    return s->logits;
}

float *forward_tokens(const model *m, forward_state *s, kv_cache *kv, const int *tokens, int n, int pos,
                      float *x_scratch)
{
    int dim = m->cfg.dim;
    for (int done = 0; done < n;) {
        int chunk = n - done < s->max_batch ? n - done : s->max_batch;
        forward_embed(m, tokens + done, chunk, x_scratch);
        forward_layers(m, s, kv, x_scratch, chunk, pos + done);
        done += chunk;
        if (done == n && m->slice.head)
            return forward_head(m, s, x_scratch + (size_t)(chunk - 1) * dim);
    }
    return NULL;
}

float *forward_batch(const model *m, forward_state *s, const forward_row *rows, const int *tokens, int n,
                     float *x_scratch)
{
    forward_embed(m, tokens, n, x_scratch);
    forward_layers_batch(m, s, rows, n, x_scratch);
    return m->slice.head ? forward_head_batch(m, s, x_scratch, n) : NULL;
}
