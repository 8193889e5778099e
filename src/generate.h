/*
 * generate: what the starter does around the forward pass, in both modes:
 * turning prompts into token ids, picking each next token, deciding when a
 * sample is done, streaming its text; and standalone mode itself (one node
 * runs every layer), used when the nodes configuration lists no
 * secondaries or none is given.
 */
#ifndef MDI_GENERATE_H
#define MDI_GENERATE_H

#include <signal.h>
#include <stdio.h>
#include <jansson.h>
#include "cli.h"
#include "forward.h"
#include "report.h"
#include "sampler.h"
#include "tokenizer.h"

/* Prefill chunk: prompts longer than this are processed in pieces of this
 * many tokens. Standalone and distributed mode must chunk alike for their
 * outputs to be bit-for-bit equal, so both use this one constant. */
#define GENERATE_MAX_BATCH 256

/* One sample in flight. */
typedef struct {
    sample_result *res;      /* borrowed */
    sampler smp;
    tokenizer_stream stream;
    int max_new;             /* --n-tokens */
    int pos;                 /* tokens in the KV cache */
    int next_token;          /* the token to feed next */
    int done;
    int ignore_eos;          /* sample_params.ignore_eos */
    FILE *echo;              /* stream the text here (NULL: do not) */
    const volatile sig_atomic_t *interrupt; /* set (Ctrl-C): the sample ends after
                                             * the token at hand; NULL: never */
} sample_state;

/* Builds n_samples results from the options: prompts (cycled) tokenized
 * with BOS as the tokenizer says, or --prompt-ids. *out is a new array. */
int generate_prepare_samples(const starter_opts *o, const tokenizer *tok, int n_samples,
                             sample_result **out, char *err);

/* The command line's parameters for sample index: --n-tokens,
 * --temperature, --top-k, --top-p, seed --seed + index; the prompt is
 * echoed unless --chat. */
sample_params generate_sample_params(const starter_opts *o, int index);

/* Sets up a sample's sampler and stream, and echoes its prompt when echo
 * is given and sp->echo_prompt. */
int sample_state_init(sample_state *s, sample_result *res, const sample_params *sp, const tokenizer *tok,
                      int vocab_size, FILE *echo, char *err);
void sample_state_free(sample_state *s);

/* Takes the logits after the sample's last fed token at time t (seconds
 * since the run started): samples, records, streams. Returns 1 when the
 * sample goes on (next_token is set), 0 when it just finished (EOS or
 * --n-tokens reached). */
int sample_state_accept(sample_state *s, const tokenizer *tok, float *logits, double t);

/* The sizes of a run, the same in both modes (so that their outputs match
 * bit for bit): *max_seq, the KV length (longest prompt + n_tokens, or
 * --max-seq-len, capped by the model's context), and *max_batch, the prefill
 * chunk (the longest prompt, at most GENERATE_MAX_BATCH). Fails naming the
 * sample whose prompt does not fit the context. */
int generate_plan(const starter_opts *o, const model_config *c, const sample_result *r, int n,
                  int *max_seq, int *max_batch, char *err);

/* Samples standalone mode runs at once: each holds a KV cache (a slot);
 * the next sample takes the slot of one that finished. */
#define GENERATE_MAX_SLOTS 16

/* The engine's configuration from the command line (engine.h), before
 * batch mode's sizes. */
struct engine_config;
void generate_engine_config(const starter_opts *o, struct engine_config *c);

/* The CLI's batch mode, in both modes, on the engine (engine.h): opens it
 * with up to GENERATE_MAX_SLOTS slots standalone (every sample on the
 * ring, at most FORWARD_MAX_SAMPLES), submits every sample, waits for
 * them all and closes it. The KV length and the prefill chunk are
 * generate_plan's, so that outputs match whatever the mode. Fills results
 * (generated_ids, text, t_first_token, t_done), st and *nodes (NULL
 * standalone) as report_write_json takes them. Prints one sample's text
 * as it comes (prompt first unless --chat), and standalone the texts of
 * several samples in order as they finish; the caller prints the ring's
 * several samples. A failure names the node. */
int generate_run(const starter_opts *o, const tokenizer *tok, sample_result *results, int n_samples, int n_nodes,
                 run_stats *st, json_t **nodes, char *err);

/* Time spent and tokens run, summed over the turns of a conversation. */
typedef struct {
    double prefill_s, decode_s;
    long prefill_tokens, decode_tokens, generated;
} turn_figures;

/* A conversation on one node: the KV cache persists from turn to turn, so
 * each turn runs only its own tokens. Owns its buffers; the model is
 * borrowed. */
typedef struct {
    const model *m;
    forward_state fs;
    kv_cache kv;
    float *x;
    int max_seq, max_batch;
} generate_session;

int generate_session_init(generate_session *g, const model *m, int max_seq, int max_batch, dtype_t kv_dtype,
                          char *err);
void generate_session_free(generate_session *g);
/* Runs ids (n) at positions ss->pos.. (the cache holds ss->pos tokens),
 * then generates into ss until it is done or the cache is full. t0: the
 * conversation's start (time_now()); curve gets one point per token. */
int generate_session_turn(generate_session *g, const tokenizer *tok, sample_state *ss, const int *ids, int n,
                          double t0, turn_figures *fig, token_curve *curve, char *err);

#endif
