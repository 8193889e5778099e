/*
 * report: what a run produced and how fast, written as the --output JSON:
 *
 *   {"model": ..., "mode": "standalone"|"distributed", "n_nodes": N,
 *    "samples": [{"prompt", "prompt_ids", "generated_ids", "text",
 *                 "ttft_s", "n_generated"}, ...],
 *    "stats": {"ttft_s", "prefill_tok_s", "decode_tok_s", "total_s",
 *              "tokens_generated", "peak_rss_bytes", "weight_bytes_per_token",
 *              "blas_core", "simd", "n_threads", "dtype", "wire_dtype",
 *              "kv_dtype", "kv_bytes"},
 *    "nodes": [{"role", "index", "layers": [a, b], "compute_s", "wait_s",
 *               "bytes_sent", "bytes_received", ...}, ...]}
 */
#ifndef MDI_REPORT_H
#define MDI_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

typedef struct {
    char *prompt;            /* owned */
    int *prompt_ids;         /* owned */
    int n_prompt;
    int *generated_ids;      /* owned, capacity n_tokens */
    int n_generated;
    char *text;              /* owned: the generated text (not the prompt) */
    size_t text_len, text_cap;
    double t_first_token;    /* seconds from run start to first generated token */
    double t_done;
} sample_result;

void sample_result_append_text(sample_result *r, const char *s);
void sample_result_free(sample_result *r);

typedef struct {
    double ttft_s;           /* first sample's first token, from run start */
    double prefill_tok_s;    /* prompt tokens / prefill time */
    double decode_tok_s;     /* generated tokens after the first / decode time, all samples */
    double total_s;
    long tokens_generated;
    size_t peak_rss_bytes;
    size_t weight_bytes_per_token;
    const char *blas_core;
    const char *simd;
    int n_threads;
    const char *dtype;
    const char *wire_dtype;  /* NULL in standalone mode */
    const char *kv_dtype;    /* "f32" or "f16" */
    size_t kv_bytes;         /* KV caches at their peak, all nodes together */
} run_stats;

/* Writes the JSON file. nodes may be NULL (a new reference is stolen when
 * given: pass the array of per-node objects). */
int report_write_json(const char *path, const char *model, const char *mode, int n_nodes,
                      const sample_result *samples, int n_samples, const run_stats *st,
                      json_t *nodes, char *err);

#endif
