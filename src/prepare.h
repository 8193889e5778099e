/*
 * prepare: splits a checkpoint into one chunk per node (the library behind
 * bin/prepare_model), reads back the manifest that describes the chunks, and
 * prints what a chunk or manifest holds.
 *
 * A node loads its own chunk alone, so no node ever holds, reads or
 * downloads the whole model. What a run writes:
 *
 *   OUT/                              (default checkpoints/NAME)
 *     config.json                     the source's, byte for byte (llama2.c:
 *                                     generated from the .bin header)
 *     tokenizer.json, tokenizer_config.json, generation_config.json,
 *     special_tokens_map.json         those the source has (llama2.c: its
 *                                     tokenizer.bin / tok*.bin)
 *     source/                         hub sources only: the downloaded files
 *     chunks/<N>nodes/
 *       model_starter.safetensors     embedding, layers [0, a), final norm,
 *                                     output head (tied: embedding only)
 *       model_secondary0.safetensors  layers [a, b)
 *       ...
 *       model_secondary<N-2>.safetensors
 *       manifest.json
 *
 * A chunk is a safetensors file; with --dtype q8_0 or q4_0 its matrices use
 * our documented extension for block types (dtype "Q8_0"/"Q4_0", the logical
 * [rows, cols] shape, GGUF's block bytes: drawn in safetensors.h, which also
 * says why we extend safetensors rather than write GGUF chunks). Each tensor
 * carries its own dtype, so a chunk may mix them: norms and biases stay as
 * stored (F32), the embedding and output head follow --embed-dtype when
 * given, and a matrix whose rows are not whole blocks (stories260K's down
 * projection, rows of 172 values) falls back to model_fallback_dtype (F16,
 * or BF16 when stored so) with one note line naming the tensor. Tensor names
 * keep their global layer index ("model.layers.7.mlp.up_proj.weight" in
 * every chunk that holds layer 7), and its __metadata__ (all values strings,
 * as safetensors requires):
 *
 *   {"format": "mdi-chunk", "role": "starter" | "secondary<i>",
 *    "node_index": "0".."N-1", "n_nodes": "N",
 *    "layer_begin": "a", "layer_end": "b", "n_layers_total": "L",
 *    "has_embed": "1"|"0", "has_head": "1"|"0", "model_type": "llama",
 *    "config_sha256": "<hex of OUT/config.json>"}
 *
 * manifest.json:
 *
 *   {"format": "mdi-chunks", "version": 1,
 *    "complete": true,             false while a run is still writing chunks
 *    "source": "<folder, .bin or repo id as given>",
 *    "source_fingerprint": "<hex>", sha256 of the source files' names,
 *                                   sizes and modification times
 *    "model_type": "llama", "n_layers": L, "n_nodes": N,
 *    "config_sha256": "<hex>",      sha256 of OUT/config.json
 *    "dtype": "f32"|"f16"|"bf16"|"q8_0"|"q4_0"|"source",   what --dtype asked for
 *    "embed_dtype": "f32"|...,      only when --embed-dtype was given
 *    "layers_per_node": [a, b - a, ...],
 *    "chunks": [{"file": "model_starter.safetensors", "role": "starter",
 *                "node_index": 0, "layer_begin": 0, "layer_end": a,
 *                "has_embed": true, "has_head": true,
 *                "dtype": "f32"|...|"q4_0"|"mixed",  of its matrices
 *                "size": <bytes>, "sha256": "<hex>",
 *                "tensors": ["model.embed_tokens.weight", ...]}, ...]}
 *
 * Writing is atomic at every step: each chunk goes to NAME.tmp, is fsync'ed
 * and renamed; the manifest is rewritten the same way after each chunk with
 * "complete": false, and with "complete": true at the end. A reader that
 * loads a manifest (prepare_manifest_load) refuses an incomplete one, so an
 * interrupted run is never mistaken for a finished one. Re-running with the
 * same arguments reuses every chunk whose file still matches the size and
 * sha256 the manifest records; another --dtype or --embed-dtype rewrites
 * them all.
 *
 * The default split balances compute: a layer costs the bytes of its
 * matrices (decode reads each weight once per token), the starter also pays
 * for the output head (vocab x dim: 128k rows for Llama 3, the cost of
 * several layers). Layer counts minimise the largest node cost; every node
 * gets at least one layer. --layers overrides it: counts per node, starter
 * first, summing to the layer count, each secondary >= 1 (the starter may
 * take 0 and only embed, sample and run the head).
 *
 * Ownership: a prepare_manifest owns its arrays (prepare_manifest_free);
 * strings in prepare_opts are borrowed for the duration of the call.
 */
#ifndef MDI_PREPARE_H
#define MDI_PREPARE_H

#include <stdint.h>
#include <stdio.h>
#include "kernels.h"

#define PREPARE_MANIFEST "manifest.json"

/* What each layer costs, as the chunks will store it, for a planner that
 * chooses the split (prepare_opts.plan). */
typedef struct {
    int n_layers;
    const double *layer_bytes;  /* (n_layers,) bytes of its matrices */
    const double *layer_params; /* (n_layers,) weights of its matrices */
    double head_bytes, head_params; /* the output head (tied: the embedding) */
    double embed_bytes;         /* the embedding when untied, else 0 */
    dtype_t dtype;              /* the dtype holding most of the layers' bytes */
    int dim, kv_dim, max_seq_len; /* for the KV caches' size */
} prepare_costs;

/* Fills counts (n_nodes, starter first) for the model; 0 or an MDI_E* code
 * with one line in err. */
typedef int (*prepare_plan_fn)(void *ctx, const prepare_costs *costs, int n_nodes, int *counts, char *err);

typedef struct {
    const char *source;        /* local folder, llama2.c .bin, or hub repo id */
    const char *out_dir;       /* NULL: checkpoints/<name of the source> */
    int n_nodes;
    const int *layers;         /* NULL: balanced split; else n_layers_given counts */
    int n_layers_given;
    int convert;               /* 0: keep each tensor's stored dtype */
    dtype_t dtype;             /* when convert: dtype of the stored matrices */
    int convert_embed;         /* the embedding and output head get embed_dtype */
    dtype_t embed_dtype;
    /* hub sources */
    const char *hf_token;      /* NULL: $HF_TOKEN */
    const char *revision;      /* NULL: "main" */
    const char *const *hub_files; /* NULL: a transformers checkpoint; else these
                                     files of the repo (llama2.c layout) */
    int n_hub_files;
    int progress;              /* progress bar while downloading */
    prepare_plan_fn plan;      /* NULL: balanced by bytes (or --layers); else it chooses */
    void *plan_ctx;
} prepare_opts;

typedef struct {
    char file[64];             /* base name inside the chunks folder */
    char role[32];             /* "starter", "secondary0", ... */
    int node_index;            /* 0 for the starter, i + 1 for secondary i */
    int layer_begin, layer_end;
    int has_embed, has_head;
    char dtype[8];             /* of its matrices: "f32", "q8_0", ... or "mixed" */
    uint64_t size;
    char sha256[65];
    int n_tensors;
    char **tensors;            /* owned */
} prepare_chunk;

typedef struct {
    int complete;
    char source[1024];
    char source_fingerprint[65];
    char model_type[32];
    int n_layers;
    int n_nodes;
    char config_sha256[65];
    char dtype[8];             /* "f32", "f16", "bf16", "q8_0", "q4_0" or "source" */
    char embed_dtype[8];       /* --embed-dtype's, "" when not given */
    int *layers_per_node;      /* n_nodes entries, owned */
    char dir[1024];            /* folder of manifest.json (set by load/run) */
    int n_chunks;              /* n_nodes when complete; fewer while writing */
    prepare_chunk *chunks;     /* n_chunks entries, owned */
} prepare_manifest;

/* Balanced split: counts[0..n_nodes) (starter first) minimising the largest
 * node cost, where node cost = sum of its layers' layer_cost, plus head_cost
 * for the starter. Every node gets >= 1 layer. Ties go to the split that
 * gives the starter more layers. Returns 0 or MDI_EARG (n_nodes out of
 * 1..n_layers) with the reason in err. */
int prepare_plan_split(const double *layer_cost, int n_layers, double head_cost,
                       int n_nodes, int *counts, char *err);

/* Checks --layers counts against the model: n_given == n_nodes, sum ==
 * n_layers, each secondary >= 1, starter >= 0. 0 or MDI_EARG. */
int prepare_check_layers(const int *counts, int n_given, int n_nodes, int n_layers,
                         char *err);

/* Parses "2,3,1" into a new array (caller frees). 0 or MDI_EARG. */
int prepare_parse_layers(const char *s, int **counts, int *n, char *err);

/* The default NAME for a source: the folder's (or .bin's) base name, the
 * repository's name, or for hub files the folder of the first file
 * ("karpathy/tinyllamas" with "stories260K/stories260K.bin": "stories260K"). */
void prepare_default_name(const prepare_opts *o, char *name, size_t cap);

/* Does the whole job: resolves (and for repo ids downloads) the source,
 * plans the split, writes config, tokenizer files, chunks and manifest.
 * Logs one line per chunk (written or reused) to stderr. When out is not
 * NULL it receives the final manifest (free it with prepare_manifest_free).
 * Returns 0 or a negative MDI_E* code with one line in err. On failure
 * nothing half-written is left: no .tmp files, no manifest marked complete
 * for chunks that were not all written. */
int prepare_run(const prepare_opts *o, prepare_manifest *out, char *err);

/* Loads DIR/manifest.json (path may be the folder or the file). A manifest
 * with "complete": false is refused unless allow_incomplete. Checks the
 * fields it reads: types, layer ranges contiguous from 0 to n_layers over
 * the chunks in node order, file names without '/'. */
int prepare_manifest_load(prepare_manifest *m, const char *path, int allow_incomplete,
                          char *err);
void prepare_manifest_free(prepare_manifest *m);
/* The chunk of a role ("starter", "secondary0", ...), NULL if none. */
const prepare_chunk *prepare_manifest_chunk(const prepare_manifest *m, const char *role);

/* Checks a chunk file (in m->dir) against the manifest: size, and sha256
 * when check_hash. 0, MDI_EIO (missing) or MDI_EFORMAT (mismatch). */
int prepare_chunk_verify(const prepare_manifest *m, const prepare_chunk *c, int check_hash,
                         char *err);

/* Prints what path holds: a chunk (or any safetensors file): metadata,
 * layer range, each tensor's name, dtype, shape and size in bytes; a
 * manifest (the file or its folder): every chunk with its range, size and
 * hash, whether the file is present with that size (and hash, with verify),
 * and its tensors (with dtype, shape and bytes when the file is there); a
 * checkpoints/NAME folder: each chunks/<N>nodes manifest. */
int prepare_inspect(const char *path, int verify, FILE *out, char *err);

#endif
