/*
 * model: the model configuration (from config.json or a llama2.c header)
 * and the weights of one node's slice of the model: a contiguous range of
 * layers, with or without the token embedding and the output head.
 *
 * Architectures: llama (Llama 2/3/3.1/3.2 incl. rope_scaling "llama3",
 * TinyLlama, SmolLM), mistral, qwen2 (q/k/v biases), qwen3 (RMSNorm of each
 * q and k head). Tied or untied
 * embeddings, head_dim given or derived, grouped-query attention.
 *
 * Each matrix keeps a dtype of its own (mat_t.dtype), chosen per tensor by
 * model_matrix_dtype from the dtype asked for (model_slice.dtype) and the
 * dtype it is stored in:
 *
 *   asked            stored F32/F16/BF16             stored Q8_0/Q4_0
 *   auto             as stored, F16 as F32           as stored
 *   f32, f16, bf16   converted to it                 dequantized to it (one note)
 *   q8_0, q4_0       quantized to it at load; rows   as stored (a Q4_0 matrix is
 *                    not a multiple of 32 values:    not requantized to Q8_0)
 *                    model_fallback_dtype (a note)
 *
 * A matrix used in its stored dtype is borrowed from the tensor source (a
 * read-only file mapping, or the anonymous copy of the file that TSRC_READ
 * makes; unless misaligned for its type: then copied); otherwise converted at
 * load into a buffer the model owns. Norm weights and biases are always F32.
 * A model may mix dtypes: a Q8_0 slice whose down projection has rows of 172
 * values keeps that matrix as F16, an embedding may stay F32.
 */
#ifndef MDI_MODEL_H
#define MDI_MODEL_H

#include <jansson.h>
#include "kernels.h"
#include "safetensors.h"

#define MODEL_MAX_EOS 8
#define MODEL_MAX_ROPE_FACTORS 256 /* head_dim / 2 at most */
/* Limits of a configuration, checked (in 64-bit) before anything is sized
 * from it: every width and product the forward pass computes in int stays
 * far below INT_MAX, batch (PROTO/run max_batch <= 65536) included. */
#define MODEL_MAX_DIM (1 << 17)       /* hidden_size; also num_attention_heads * head_dim */
#define MODEL_MAX_HIDDEN (1 << 20)    /* intermediate_size */
#define MODEL_MAX_LAYERS 4096
#define MODEL_MAX_HEADS 4096
#define MODEL_MAX_HEAD_DIM 4096
#define MODEL_MAX_VOCAB (1 << 24)
#define MODEL_MAX_SEQ (1 << 24)       /* max_position_embeddings */

typedef struct {
    char model_type[32];     /* "llama", "mistral", "qwen2", "qwen3" */
    int dim;                 /* hidden_size */
    int hidden_dim;          /* intermediate_size */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab_size;
    int max_seq_len;         /* max_position_embeddings */
    float norm_eps;
    float rope_theta;
    /* rope_scaling {"rope_type": "llama3", ...}; 0 when absent */
    int rope_llama3;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    /* rope_scaling {"rope_type": "linear", "factor": F} (a GGUF's
     * rope.scaling.type linear): positions divided by F; 0 when absent */
    float rope_linear;
    /* per-frequency divisors of RoPE's inverse frequencies (a GGUF's
     * rope_freqs.weight: Llama 3.1 scaling as llama.cpp stores it), config
     * key "rope_freq_factors"; 0 factors when absent */
    int n_rope_freq_factors;
    float rope_freq_factors[MODEL_MAX_ROPE_FACTORS];
    int rope_interleaved;    /* rotate pairs (2i, 2i+1) of a head, not (i, i + hd/2): q/k rows
                              * as llama-architecture GGUFs store them ("rope_interleaved") */
    int tie_embeddings;
    int attn_bias;           /* q/k/v biases (qwen2, or attention_bias true) */
    int qk_norm;             /* RMSNorm of each head of q and k before RoPE (qwen3) */
    int sliding_window;      /* attend to this many latest positions (Mistral); 0: all */
    int bos_id;              /* -1 when none */
    int eos_ids[MODEL_MAX_EOS];
    int n_eos;
} model_config;

/* Parses a config.json object; fname is used in messages. */
int model_config_from_json(model_config *c, json_t *root, const char *fname, char *err);
/* Reads DIR/config.json, the header of a llama2.c .bin, or a GGUF's metadata. generation_config.json
 * beside it, when present, overrides bos/eos. */
int model_config_load(model_config *c, const char *path, char *err);
/* The config as a config.json-shaped object (new reference). */
json_t *model_config_to_json(const model_config *c);

typedef struct {
    mat_t wq, wk, wv, wo;     /* (n_heads*hd, dim) (kv_dim, dim) (kv_dim, dim) (dim, n_heads*hd) */
    mat_t w_gate, w_up, w_down; /* (hidden, dim) (hidden, dim) (dim, hidden) */
    const float *bq, *bk, *bv;  /* NULL without attention bias */
    const float *attn_norm, *ffn_norm; /* (dim,) */
    const float *q_norm, *k_norm;      /* (head_dim,), with qk_norm */
} layer_weights;

typedef struct {
    int layer_begin, layer_end; /* global indices [begin, end) */
    int embed;                  /* load the token embedding */
    int head;                   /* load the final norm and the output head */
    dtype_t dtype;              /* dtype asked for the matrices (see the table above);
                                 * DTYPE_COUNT: auto, as stored */
    tsrc_mode weights_mode;     /* TSRC_MAP: borrow from the file mapping (--mmap);
                                 * TSRC_READ: read into anonymous memory (--no-mmap) */
} model_slice;

typedef struct {
    model_config cfg;
    model_slice slice;
    mat_t tok_embed;            /* (vocab, dim), when slice.embed */
    mat_t lm_head;              /* (vocab, dim), when slice.head; shares tok_embed's data when tied */
    const float *final_norm;    /* (dim,) when slice.head */
    layer_weights *layers;      /* slice.layer_end - slice.layer_begin entries */
    size_t weight_bytes;        /* bytes of matrices this slice reads per token, as held */
    char dtypes[32];            /* the matrices' dtypes, most bytes first: "q8_0+f16" */
    int n_dequantized;          /* block-typed matrices converted to a float dtype */
    /* private */
    tensor_source *src;
    void **owned;
    int n_owned, cap_owned;
} model;

/* Loads the slice from path: a Hugging Face folder, a llama2.c .bin, or a
 * chunk .safetensors (then cfg must be given, e.g. from the run's config;
 * pass NULL to read config.json from path's folder). Fails with a line that
 * names the file and the missing tensor or the shape expected vs found. */
int model_load(model *m, const char *path, const model_config *cfg,
               const model_slice *slice, char *err);
void model_free(model *m);

/* The dtype a matrix of `cols` columns stored as `stored` is held in when
 * `want` is asked (DTYPE_COUNT: auto); the table above. */
dtype_t model_matrix_dtype(dtype_t want, dtype_t stored, int64_t cols);
/* The float type a matrix whose rows cannot be blocks falls back to when a
 * block type is asked: BF16 when stored as BF16 (F16 would lose its range),
 * else F16. prepare_model and the loader both use it. */
dtype_t model_fallback_dtype(dtype_t stored);
/* mlock()s every matrix and vector of the slice (--mlock), so that none of
 * their pages is reclaimed or swapped. Returns the bytes locked, or 0 with
 * the reason in warn (RLIMIT_MEMLOCK too low and no CAP_IPC_LOCK, ...):
 * nothing stays locked then and the run goes on. */
size_t model_lock(const model *m, char *warn);

/* Hugging Face tensor names. buf must hold TENSOR_NAME_MAX. */
void model_tensor_name(char *buf, int layer, const char *suffix);

#endif
