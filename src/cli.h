/*
 * cli: the starter's command line, shared by standalone and distributed
 * mode, and the prompt list (--prompt TEXT, or --prompt FILE:path with one
 * sample per paragraph, as MDI-LLM does).
 */
#ifndef MDI_CLI_H
#define MDI_CLI_H

#include <stdint.h>
#include "kernels.h"

/* The KV cache dtype when --kv-dtype is not given (see README: chosen on
 * the reference tests' accuracy). */
#define CLI_DEFAULT_KV_DTYPE DTYPE_F32
#define CLI_DEFAULT_KV_DTYPE_NAME "f32"
/* Weights in anonymous memory unless --mmap (see README: measured). */
#define CLI_DEFAULT_MMAP 0

typedef struct {
    const char *ckpt;          /* --ckpt DIR: HF folder, llama2.c .bin, or checkpoints/NAME;
                                * NULL: the starter looks for the one prepared model */
    const char *prompt;        /* --prompt TEXT | FILE:path */
    const char *prompt_ids;    /* --prompt-ids 1,2,3 (bypasses the tokenizer) */
    int n_tokens;              /* --n-tokens: new tokens per sample */
    float temperature;         /* --temperature (0 = greedy) */
    int top_k;                 /* --top-k (0 = off) */
    float top_p;               /* --top-p (1 = off) */
    uint64_t seed;             /* --seed */
    int n_threads;             /* --n-threads; 0: the nodes configuration's starter
                                * n_threads, else the number of CPUs */
    dtype_t dtype;             /* --dtype f32|bf16: compute dtype of weights */
    dtype_t kv_dtype;          /* --kv-dtype f32|f16: every node's KV caches */
    int mmap_weights;          /* --mmap 1: borrow weights from the file mapping;
                                * --no-mmap 0: read them into anonymous memory */
    int mlock;                 /* --mlock: lock the weights in memory */
    int chat;                  /* --chat */
    int max_seq_len;           /* --max-seq-len (0: the model's, capped) */
    const char *output;        /* --output FILE.json */
    const char *logits_out;    /* --logits-out FILE: f32 logits of every step (tests) */
    int quiet;                 /* --quiet: do not stream text to stdout */
    /* distributed mode */
    const char *nodes_config;  /* --nodes-config FILE.json */
    int n_samples;             /* --n-samples (0: number of nodes) */
    dtype_t wire_dtype;        /* --wire-dtype f32|f16|bf16|q8_0 */
    const char *time_run;      /* --time-run FILE.csv */
    int plots;                 /* --plots */
    double timeout_s;          /* --timeout seconds before a silent node is declared failed */
    double connect_timeout_s;  /* --connect-timeout: how long to wait for secondaries not up yet */
    double failover_timeout_s; /* --failover-timeout: a failed secondary or a spare, waited for this long */
    int auto_split;            /* --auto-split: layer ranges planned from the nodes' capabilities */
    /* everyday use: MDI-LLM's spellings, interactive chat, special tokens */
    int verbose;               /* -v, --verb: progress and per-node figures on stderr */
    int debug;                 /* -d, --debug: debug log (as MDI_DEBUG=1) */
    int interactive;           /* -i, --interactive: a multi-turn chat on the terminal */
    int no_parse_special;      /* --no-parse-special: special tokens in a prompt are text */
    /* the service (api.h) */
    int serve;                 /* --serve: the OpenAI-compatible HTTP service */
    const char *host;          /* --host (default 127.0.0.1) */
    int port;                  /* --port (default 8080; 0: any free, printed) */
    int n_slots;               /* --slots (0: the engine's default, 2 x nodes) */
    int queue_max;             /* --queue: requests waiting for a slot (0: 4 x slots) */
} starter_opts;

/* MDI-LLM's names for --max-seq-len: --block-size, --sequence-length,
 * --context-length. */
int cli_is_seq_len_alias(const char *flag);
/* --device: "cpu" (or "cpu:N") is accepted; anything else is refused with
 * one line saying that this build computes on the CPU. */
int cli_check_device(const char *value, char *err);

/* Fills defaults, then parses argv. Returns 0, 1 when --help was printed,
 * or MDI_EARG with the reason in err. */
int cli_parse_starter(starter_opts *o, int argc, char **argv, char *err);
void cli_usage_starter(const char *argv0);

/* Prompts: --prompt TEXT gives one prompt; FILE:path gives one per
 * paragraph (blank-line separated, trimmed). When n_samples exceeds the
 * count, prompts repeat cyclically. Returns a new array of new strings. */
int cli_load_prompts(const char *arg, char ***prompts, int *n, char *err);
void cli_free_prompts(char **prompts, int n);

/* "1,2,3" -> new int array. */
int cli_parse_ids(const char *s, int **ids, int *n, char *err);

#endif
