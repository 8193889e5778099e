/*
 * report: what a run produced and how fast, written as the --output JSON,
 * the --time-run CSV row and the --plots curve (the same in both modes, so
 * that the 1-node baseline sits beside the distributed runs).
 *
 * The --output JSON:
 *
 *   {"model": ..., "mode": "standalone"|"distributed", "n_nodes": N,
 *    "samples": [{"prompt", "prompt_ids", "generated_ids", "text",
 *                 "ttft_s", "n_generated"}, ...],
 *    "stats": {"ttft_s", "prefill_tok_s", "decode_tok_s", "total_s",
 *              "tokens_generated", "peak_rss_bytes", "weight_bytes_per_token",
 *              "blas_core", "simd", "n_threads", "dtype", "wire_dtype",
 *              "kv_dtype", "kv_bytes", "int8_prefill_below": {"q8_0": N,
 *              "q4_0": N} (kernels_int8_prefill_below on this node)},
 *    "nodes": [{"role", "index", "layers": [a, b], "compute_s", "wait_s",
 *               "bytes_sent", "bytes_received", ...}, ...]}
 *
 * In an interactive chat each turn is one entry of "samples": its prompt_ids
 * are the tokens that turn added to the KV cache, starting at "pos_start".
 *
 * --time-run FILE.csv, one row per run under this header (a file with
 * another first line is refused, not appended to):
 *
 *   timestamp,model,mode,n_nodes,n_samples,n_tokens,wire_dtype,dtype,total_s,
 *   tokens_generated,tokens_per_s,ttft_s,decode_tok_s
 *
 * --plots: logs/tokens_time_<model>_<N>nodes_<S>samples.csv ("time_s,tokens":
 * one row per generated token, all samples together) and the same name as
 * PNG under plots/ (gnuplot); tools/plot_runs draws several on one figure.
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
    int pos_start;           /* KV position of prompt_ids[0]: 0, or a chat turn's */
} sample_result;

void sample_result_append_text(sample_result *r, const char *s);
void sample_result_free(sample_result *r);

/* Tokens-versus-time: t[i] seconds after the start, n[i] tokens generated
 * by then (all samples together). Owns its arrays. */
typedef struct {
    double *t;
    long *n;
    long len, cap;
} token_curve;

void token_curve_add(token_curve *c, double t, long n);
void token_curve_free(token_curve *c);

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
    token_curve curve;       /* owned: run_stats_free */
    const char *kv_dtype;    /* "f32" or "f16" */
    size_t kv_bytes;         /* KV caches at their peak, all nodes together */
} run_stats;

void run_stats_free(run_stats *st);

/* Writes the JSON file. nodes may be NULL (a new reference is stolen when
 * given: pass the array of per-node objects). */
int report_write_json(const char *path, const char *model, const char *mode, int n_nodes,
                      const sample_result *samples, int n_samples, const run_stats *st,
                      json_t *nodes, char *err);

/* The model's short name for file names and the CSV: the checkpoint's base
 * name, with characters other than [A-Za-z0-9.-] as '_'. */
void report_model_name(const char *ckpt, char *out, size_t cap);

/* Appends one row to path (its folder created when missing; the header
 * written when the file is new or empty). Refuses a file whose first line
 * is not the header. wire_dtype NULL: standalone ("-"). */
int report_write_time_run(const char *path, const char *model, const char *mode, int n_nodes, int n_samples,
                          int n_tokens, const run_stats *st, char *err);

/* --plots: writes the curve's CSV under logs/ and draws its PNG under
 * plots/ with gnuplot (a missing gnuplot is a warning: the CSV stays). */
int report_write_plots(const char *model, int n_nodes, int n_samples, const token_curve *c, char *err);

#endif
