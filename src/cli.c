/* cli: the starter's command line; see cli.h. */
#include "cli.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cli_usage_starter(const char *argv0)
{
    fprintf(stderr,
            "usage: %s --ckpt DIR [options]\n"
            "\n"
            "model and prompt:\n"
            "  --ckpt PATH          checkpoint: Hugging Face folder, llama2.c .bin (or its folder),\n"
            "                       or a prepared checkpoints/NAME folder (default: the only model\n"
            "                       under checkpoints/ prepared for this number of nodes)\n"
            "  --prompt TEXT        the prompt; FILE:path reads one prompt per paragraph\n"
            "  --prompt-ids LIST    comma-separated token ids instead of a prompt (no BOS added)\n"
            "  --chat               wrap the prompt in the model's chat template\n"
            "  --n-tokens N         new tokens per sample (default 128)\n"
            "  --max-seq-len N      KV cache length (default: prompt + n-tokens, at most the model's)\n"
            "sampling:\n"
            "  --temperature T      0 is greedy (default 0.8)\n"
            "  --top-k K            keep the K most likely tokens (default 0: off)\n"
            "  --top-p P            nucleus sampling threshold (default 0.95; 1: off)\n"
            "  --seed S             random seed (default 42)\n"
            "compute:\n"
            "  --n-threads N        threads (default: the nodes configuration's, else the CPUs)\n"
            "  --dtype D            weights in memory: f32, bf16, f16, q8_0, q4_0 (quantized at load;\n"
            "                       block-typed chunks used as stored) (default auto: as stored, f16 as f32)\n"
            "  --kv-dtype f32|f16   KV caches on every node (default " CLI_DEFAULT_KV_DTYPE_NAME ")\n"
            "  --mmap, --no-mmap    weights borrowed from the file mapping, or read into anonymous\n"
            "                       memory (default %s), on every node\n"
            "  --mlock              lock the weights in memory on every node (warns if not allowed)\n"
            "output:\n"
            "  --output FILE.json   samples and statistics as JSON\n"
            "  --logits-out FILE    raw f32 logits of every generation step (testing; distributed: sample 0's)\n"
            "  --quiet              do not stream the text to stdout\n"
            "distributed:\n"
            "  --nodes-config FILE  nodes configuration (settings-distr/*.json)\n"
            "  --n-samples N        samples generated at once (default: the number of nodes)\n"
            "  --wire-dtype T       activations on the ring: f32 (default), f16, bf16 or q8_0\n"
            "  --timeout SECONDS    a node silent this long is declared failed (default 10)\n"
            "  --connect-timeout S  wait this long for secondaries not started yet (default 60)\n"
            "  --failover-timeout S a failed secondary: wait this long for it or a spare to take\n"
            "                       its layers, then go on (default 30; 0: fail at once)\n"
            "  --auto-split         split the layers by each node's measured speed and memory\n"
            "  --time-run FILE.csv  append one row of timings per run\n"
            "  --plots, -p          tokens-versus-time CSV under logs/ and PNG under plots/\n"
            "chat and logging:\n"
            "  --interactive, -i    (implies --chat) a conversation on the terminal (/exit or Ctrl-D ends it)\n"
            "  --no-parse-special   take special tokens written in a prompt (<|im_start|>, <s>) as text\n"
            "  --verb, -v           progress and per-node figures on stderr\n"
            "  --debug, -d          debug log\n"
            "service (README: Service):\n"
            "  --serve              an OpenAI-compatible HTTP service until SIGINT/SIGTERM\n"
            "  --host ADDR          address to listen on (default 127.0.0.1)\n"
            "  --port N             port (default 8080; 0: any free one, printed)\n"
            "  --slots N            requests generating at once (default 2 x nodes, at least 2)\n"
            "  --queue N            requests waiting for a slot; beyond: 429 (default 4 x slots)\n"
            "MDI-LLM's spellings: --block-size, --sequence-length, --context-length (= --max-seq-len),\n"
            "  --device cpu (this build computes on the CPU).\n",
            argv0, CLI_DEFAULT_MMAP ? "--mmap" : "--no-mmap");
}

static int parse_int(const char *flag, const char *v, long lo, long hi, int *out, char *err)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return mdi_fail(err, MDI_EARG, "%s: expected an integer in [%ld, %ld], got \"%s\"", flag, lo, hi, v);
    *out = (int)x;
    return MDI_OK;
}

static int parse_float(const char *flag, const char *v, double lo, double hi, float *out, char *err)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi))
        return mdi_fail(err, MDI_EARG, "%s: expected a number in [%g, %g], got \"%s\"", flag, lo, hi, v);
    *out = (float)x;
    return MDI_OK;
}

int cli_is_seq_len_alias(const char *flag)
{
    return !strcmp(flag, "--block-size") || !strcmp(flag, "--sequence-length") ||
           !strcmp(flag, "--context-length");
}

int cli_check_device(const char *value, char *err)
{
    if (!strcmp(value, "cpu") || !strncmp(value, "cpu:", 4))
        return MDI_OK;
    return mdi_fail(err, MDI_EARG, "--device %s: this build computes on the CPU; use --device cpu or leave it out",
                    value);
}

int cli_parse_starter(starter_opts *o, int argc, char **argv, char *err)
{
    memset(o, 0, sizeof(*o));
    o->n_tokens = 128;
    o->temperature = 0.8f;
    o->top_p = 0.95f;
    o->seed = 42;
    o->n_threads = 0; /* auto: the nodes configuration's, else every CPU */
    o->dtype = DTYPE_COUNT; /* auto */
    o->wire_dtype = DTYPE_F32;
    o->kv_dtype = CLI_DEFAULT_KV_DTYPE;
    o->mmap_weights = CLI_DEFAULT_MMAP;
    o->timeout_s = 10.0;
    o->connect_timeout_s = 60.0;
    o->host = "127.0.0.1";
    o->port = 8080;
    o->failover_timeout_s = 30.0;
    int rc = MDI_OK;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            cli_usage_starter(argv[0]);
            return 1;
        }
        /* boolean flags */
        if (!strcmp(a, "--chat")) { o->chat = 1; continue; }
        if (!strcmp(a, "--quiet")) { o->quiet = 1; continue; }
        if (!strcmp(a, "--plots")) { o->plots = 1; continue; }
        /* short and MDI-LLM spellings, chat (README: "MDI-LLM's command lines") */
        if (!strcmp(a, "-p")) { o->plots = 1; continue; }
        if (!strcmp(a, "-v") || !strcmp(a, "--verb")) { o->verbose = 1; continue; }
        if (!strcmp(a, "-d") || !strcmp(a, "--debug")) { o->debug = 1; continue; }
        if (!strcmp(a, "-i") || !strcmp(a, "--interactive")) { o->interactive = 1; continue; }
        if (!strcmp(a, "--no-parse-special")) { o->no_parse_special = 1; continue; }
        if (!strcmp(a, "--mmap")) { o->mmap_weights = 1; continue; }
        if (!strcmp(a, "--no-mmap")) { o->mmap_weights = 0; continue; }
        if (!strcmp(a, "--mlock")) { o->mlock = 1; continue; }
        if (!strcmp(a, "--auto-split")) { o->auto_split = 1; continue; }
        if (!strcmp(a, "--serve")) { o->serve = 1; continue; }
        if (strncmp(a, "--", 2))
            return mdi_fail(err, MDI_EARG, "unexpected argument \"%s\" (see --help)", a);
        if (i + 1 >= argc)
            return mdi_fail(err, MDI_EARG, "%s: missing value", a);
        const char *v = argv[++i];
        float f;
        if (cli_is_seq_len_alias(a)) { rc = parse_int(a, v, 1, 1 << 24, &o->max_seq_len, err); continue; }
        if (!strcmp(a, "--device")) { rc = cli_check_device(v, err); continue; }
        if (!strcmp(a, "--ckpt")) o->ckpt = v;
        else if (!strcmp(a, "--prompt")) o->prompt = v;
        else if (!strcmp(a, "--prompt-ids")) o->prompt_ids = v;
        else if (!strcmp(a, "--n-tokens")) rc = parse_int(a, v, 0, 1 << 24, &o->n_tokens, err);
        else if (!strcmp(a, "--temperature")) rc = parse_float(a, v, 0, 100, &o->temperature, err);
        else if (!strcmp(a, "--top-k")) rc = parse_int(a, v, 0, 1 << 24, &o->top_k, err);
        else if (!strcmp(a, "--top-p")) rc = parse_float(a, v, 0, 1, &o->top_p, err);
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end)
                rc = mdi_fail(err, MDI_EARG, "--seed: expected a non-negative integer, got \"%s\"", v);
            o->seed = s;
        } else if (!strcmp(a, "--n-threads")) rc = parse_int(a, v, 1, 512, &o->n_threads, err);
        else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "auto")) o->dtype = DTYPE_COUNT;
            else if (dtype_parse(v, &o->dtype) != 0)
                rc = mdi_fail(err, MDI_EARG, "--dtype: unknown dtype \"%s\" (accepted: auto, %s)", v, dtype_names());
        } else if (!strcmp(a, "--kv-dtype")) {
            if (dtype_parse(v, &o->kv_dtype) != 0 || (o->kv_dtype != DTYPE_F32 && o->kv_dtype != DTYPE_F16))
                rc = mdi_fail(err, MDI_EARG, "--kv-dtype: expected f32 or f16, got \"%s\"", v);
        } else if (!strcmp(a, "--max-seq-len")) rc = parse_int(a, v, 1, 1 << 24, &o->max_seq_len, err);
        else if (!strcmp(a, "--output")) o->output = v;
        else if (!strcmp(a, "--logits-out")) o->logits_out = v;
        else if (!strcmp(a, "--nodes-config")) o->nodes_config = v;
        else if (!strcmp(a, "--n-samples")) rc = parse_int(a, v, 1, 4096, &o->n_samples, err);
        else if (!strcmp(a, "--wire-dtype")) {
            if (dtype_parse(v, &o->wire_dtype) != 0 || o->wire_dtype == DTYPE_Q4_0)
                rc = mdi_fail(err, MDI_EARG, "--wire-dtype: expected f32, f16, bf16 or q8_0, got \"%s\"", v);
        } else if (!strcmp(a, "--time-run")) o->time_run = v;
        else if (!strcmp(a, "--host")) o->host = v;
        else if (!strcmp(a, "--port")) rc = parse_int(a, v, 0, 65535, &o->port, err);
        else if (!strcmp(a, "--slots")) rc = parse_int(a, v, 1, 4096, &o->n_slots, err);
        else if (!strcmp(a, "--queue")) rc = parse_int(a, v, 1, 1 << 20, &o->queue_max, err);
        else if (!strcmp(a, "--timeout")) {
            rc = parse_float(a, v, 0.1, 86400, &f, err);
            o->timeout_s = f;
        } else if (!strcmp(a, "--connect-timeout")) {
            rc = parse_float(a, v, 0, 86400, &f, err);
            o->connect_timeout_s = f;
        } else if (!strcmp(a, "--failover-timeout")) {
            rc = parse_float(a, v, 0, 86400, &f, err);
            o->failover_timeout_s = f;
        } else
            return mdi_fail(err, MDI_EARG, "unknown option \"%s\" (see --help)", a);
    }
    if (rc)
        return rc;
    if (o->prompt && o->prompt_ids)
        return mdi_fail(err, MDI_EARG, "--prompt and --prompt-ids exclude each other");
    if (o->serve && o->interactive)
        return mdi_fail(err, MDI_EARG, "--serve and --interactive exclude each other");
    if (o->interactive)
        o->chat = 1; /* a conversation is rendered with the chat template */
    if (o->interactive && (o->prompt_ids || o->n_samples > 1))
        return mdi_fail(err, MDI_EARG, "--interactive is one conversation: no --prompt-ids, no --n-samples above 1");
    return MDI_OK;
}

static char *trim_dup(const char *b, const char *e)
{
    while (b < e && isspace((unsigned char)*b))
        b++;
    while (e > b && isspace((unsigned char)e[-1]))
        e--;
    return strndup(b, (size_t)(e - b));
}

int cli_load_prompts(const char *arg, char ***prompts, int *n, char *err)
{
    *prompts = NULL;
    *n = 0;
    if (!arg)
        arg = "";
    if (strncmp(arg, "FILE:", 5)) {
        char **p = malloc(sizeof(char *));
        p[0] = strdup(arg);
        *prompts = p;
        *n = 1;
        return MDI_OK;
    }
    char *text;
    int rc = file_read_all(arg + 5, &text, NULL, err);
    if (rc)
        return rc;
    /* paragraphs: separated by one or more blank lines */
    int cap = 8, count = 0;
    char **p = malloc((size_t)cap * sizeof(char *));
    const char *s = text;
    while (*s) {
        const char *end = s;
        for (;;) {
            const char *nl = strchr(end, '\n');
            if (!nl) {
                end += strlen(end);
                break;
            }
            /* a blank line (only spaces) after nl ends the paragraph */
            const char *q = nl + 1;
            while (*q == ' ' || *q == '\t' || *q == '\r')
                q++;
            if (*q == '\n' || *q == 0) {
                end = nl;
                break;
            }
            end = nl + 1;
        }
        char *para = trim_dup(s, end);
        if (*para) {
            if (count == cap)
                p = realloc(p, (size_t)(cap *= 2) * sizeof(char *));
            p[count++] = para;
        } else {
            free(para);
        }
        s = *end ? end + 1 : end;
    }
    free(text);
    if (count == 0) {
        free(p);
        return mdi_fail(err, MDI_EARG, "%s: no prompt found (one prompt per paragraph)", arg + 5);
    }
    *prompts = p;
    *n = count;
    return MDI_OK;
}

void cli_free_prompts(char **prompts, int n)
{
    for (int i = 0; i < n; i++)
        free(prompts[i]);
    free(prompts);
}

int cli_parse_ids(const char *s, int **ids, int *n, char *err)
{
    int cap = 16, count = 0;
    int *out = malloc((size_t)cap * sizeof(int));
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > (1 << 30)) {
            free(out);
            return mdi_fail(err, MDI_EARG, "--prompt-ids: bad token id at \"%s\"", p);
        }
        if (count == cap)
            out = realloc(out, (size_t)(cap *= 2) * sizeof(int));
        out[count++] = (int)v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p) {
            free(out);
            return mdi_fail(err, MDI_EARG, "--prompt-ids: expected a comma at \"%s\"", p);
        }
    }
    *ids = out;
    *n = count;
    return MDI_OK;
}
