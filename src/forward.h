/*
 * forward: the transformer forward pass over one node's slice.
 *
 * A node runs any contiguous range of layers; the starter also embeds the
 * tokens and applies the final norm and the output head:
 *
 *   tokens -> forward_embed -> x (n, dim) -> forward_layers -> x (n, dim)
 *          -> forward_head (last row) -> logits (vocab,)
 *
 * The distributed runtime calls these same functions on each node, so the
 * output of a ring with F32 activations is bit-for-bit that of one node.
 *
 * n == 1 runs matrix-vector kernels (decode); n > 1 runs matrix-matrix
 * kernels (prefill). The run state holds every buffer; nothing here
 * allocates after forward_state_init.
 *
 * Batched decode: one token of each of several samples, every sample at a
 * position of its own in a KV cache of its own (its slot):
 *
 *   tokens (n,) -> forward_embed -> x (n, dim)
 *      -> forward_layers_batch(rows[i] = {cache of sample i, its position})
 *      -> forward_head_batch -> logits (n, vocab)
 *
 * Each weight matrix is read once for the whole batch (the matrix-vector
 * kernels take n activation rows per weight row); attention runs per row
 * on that row's cache. Row i's result is bit for bit what forward_layers
 * and forward_head give for sample i alone (n == 1): the kernels reduce
 * each (weight row, activation row) pair in one fixed order whatever the
 * batch, and everything else is per row. Prefill (n > 1 tokens of one
 * sample) stays per sample: its matrix-matrix kernels would give other
 * roundings than the decode kernels.
 */
#ifndef MDI_FORWARD_H
#define MDI_FORWARD_H

#include "model.h"

/* KV cache of one sequence (sample) for the slice's layers:
 * k, v: (n_local_layers, max_seq, kv_dim) in dtype, F32 or F16. An F16
 * cache holds half the bytes (the memory that grows with samples and
 * context); keys and values are rounded to F16 when stored, and attention
 * reads them with dot(F32 q, F16 k) and axpy(F16 v) kernels. */
typedef struct {
    int n_layers, max_seq, kv_dim;
    int len;          /* positions filled */
    dtype_t dtype;    /* DTYPE_F32 or DTYPE_F16 */
    size_t row_bytes; /* one position of one layer: kv_dim values */
    void *k, *v;
} kv_cache;

/* dtype: DTYPE_F32 or DTYPE_F16 (anything else is refused with MDI_EARG). */
int kv_cache_init(kv_cache *c, const model *m, int max_seq, dtype_t dtype, char *err);
/* Bytes of k and v together. */
size_t kv_cache_bytes(const kv_cache *c);
void kv_cache_reset(kv_cache *c);
void kv_cache_free(kv_cache *c);

/* Most samples one batched call takes (the batch limit of a node). */
#define FORWARD_MAX_SAMPLES 64

/* One row of a batched decode step: a token of the sample whose cache is
 * kv, at position pos (the cache holds the positions before it). */
typedef struct {
    kv_cache *kv;           /* borrowed */
    int pos;
} forward_row;

typedef struct {
    int max_batch;          /* most tokens one forward_layers call takes */
    int max_samples;        /* most rows one forward_*_batch call takes */
    int max_rows;           /* max(max_batch, max_samples): rows of the buffers */
    int max_seq;
    float *xb, *xb2;        /* (max_rows, dim) */
    float *q;               /* (max_rows, n_heads*hd) */
    float *k, *v;           /* (max_rows, kv_dim) */
    float *att;             /* (n_threads, max_seq) scores */
    float *hb, *hb2;        /* (max_rows, hidden) */
    float *logits;          /* (max_samples, vocab) when head */
    float *rope_inv_freq;   /* (hd/2,) */
    forward_row *rows;      /* (max_rows,): forward_layers' tokens as rows */
    kernels_scratch xq;     /* activations quantized for block-type weights */
} forward_state;

/* Buffers for prefill chunks of up to max_batch tokens and batched decode
 * of up to max_samples samples (1 <= max_samples <= FORWARD_MAX_SAMPLES),
 * attention over up to max_seq positions. */
int forward_state_init_batch(forward_state *s, const model *m, int max_batch, int max_samples, int max_seq,
                             char *err);
/* The same with max_samples = 1 (one sequence at a time). */
int forward_state_init(forward_state *s, const model *m, int max_batch, int max_seq, char *err);
void forward_state_free(forward_state *s);

/* x (n, dim) = embedding rows of tokens. */
void forward_embed(const model *m, const int *tokens, int n, float *x);

/* Runs the slice's layers on x (n, dim) in place, for positions
 * pos .. pos+n-1 of the sequence whose cache is kv; n <= max_batch,
 * pos + n <= kv->max_seq. Appends to the cache. */
void forward_layers(const model *m, forward_state *s, kv_cache *kv, float *x, int n, int pos);

/* forward_layers through the decode kernels: row i ends bit for bit as the
 * decode step of that token alone (forward_layers with n = 1 at pos + i,
 * after rows 0 .. i-1) leaves it, and so does the cache. A replay rebuilds
 * a cache with it exactly as the decode steps made it, where forward_layers
 * (n > 1: the prefill kernels, another order of sums) would round
 * differently. n <= max_batch, pos + n <= kv->max_seq. */
void forward_layers_rows(const model *m, forward_state *s, kv_cache *kv, float *x, int n, int pos);

/* Runs the slice's layers on x (n, dim) in place, row i being one token
 * of the sample whose cache is rows[i].kv, at position rows[i].pos (each
 * cache appears once; n <= max_samples; rows[i].pos < its cache's
 * max_seq). Appends each row to its cache. Row i of x ends bit for bit as
 * forward_layers(m, s, rows[i].kv, x_i, 1, rows[i].pos) leaves it. */
void forward_layers_batch(const model *m, forward_state *s, const forward_row *rows, int n, float *x);

/* Final norm and output head on one row x (dim,): returns s->logits. */
float *forward_head(const model *m, forward_state *s, const float *x);

/* The same on n rows x (n, dim), n <= max_samples: returns s->logits
 * (n, vocab), row i bit for bit forward_head of x_i. */
float *forward_head_batch(const model *m, forward_state *s, const float *x, int n);

/* Convenience for standalone use: embed + layers (+ head on the last row),
 * prompts longer than max_batch processed in chunks. Returns logits or NULL
 * when the slice has no head. x_scratch (max_batch, dim). */
float *forward_tokens(const model *m, forward_state *s, kv_cache *kv,
                      const int *tokens, int n, int pos, float *x_scratch);

/* One decode step of n samples: embed tokens[i] (one per row) + layers
 * (+ head). Returns logits (n, vocab), row i bit for bit forward_tokens'
 * for sample i alone, or NULL when the slice has no head (x then holds
 * the rows). x_scratch (max_samples, dim). */
float *forward_batch(const model *m, forward_state *s, const forward_row *rows, const int *tokens, int n,
                     float *x_scratch);

#endif
