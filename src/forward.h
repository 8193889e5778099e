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

typedef struct {
    int max_batch;          /* most tokens one forward_layers call takes */
    int max_seq;
    float *xb, *xb2;        /* (max_batch, dim) */
    float *q;               /* (max_batch, n_heads*hd) */
    float *k, *v;           /* (max_batch, kv_dim) */
    float *att;             /* (n_threads, max_seq) scores */
    float *hb, *hb2;        /* (max_batch, hidden) */
    float *logits;          /* (vocab,) when head */
    float *rope_inv_freq;   /* (hd/2,) */
    kernels_scratch xq;     /* activations quantized for block-type weights */
} forward_state;

int forward_state_init(forward_state *s, const model *m, int max_batch, int max_seq, char *err);
void forward_state_free(forward_state *s);

/* x (n, dim) = embedding rows of tokens. */
void forward_embed(const model *m, const int *tokens, int n, float *x);

/* Runs the slice's layers on x (n, dim) in place, for positions
 * pos .. pos+n-1 of the sequence whose cache is kv; n <= max_batch,
 * pos + n <= kv->max_seq. Appends to the cache. */
void forward_layers(const model *m, forward_state *s, kv_cache *kv, float *x, int n, int pos);

/* Final norm and output head on one row x (dim,): returns s->logits. */
float *forward_head(const model *m, forward_state *s, const float *x);

/* Convenience for standalone use: embed + layers (+ head on the last row),
 * prompts longer than max_batch processed in chunks. Returns logits or NULL
 * when the slice has no head. x_scratch (max_batch, dim). */
float *forward_tokens(const model *m, forward_state *s, kv_cache *kv,
                      const int *tokens, int n, int pos, float *x_scratch);

#endif
