/*
 * starter: the node that holds the embedding, the first layers, the final
 * norm and the output head. It tokenizes the prompts, samples the tokens and
 * prints the text. Alone (no --nodes-config, or one that lists no
 * secondaries) it runs every layer itself; otherwise it drives the ring.
 * With --interactive it holds a conversation instead (chat.h).
 *
 * The text always reaches stdout before any output file is written: a
 * JSON, CSV or plot that cannot be written is reported after it, naming
 * the path, and the exit status is 1.
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "cli.h"
#include "engine.h"
#include "generate.h"
#include "kernels.h"
#include "model.h"
#include "nodes_config.h"
#include "pipeline.h"
#include "prepare.h"
#include "proto.h"
#include "report.h"
#include "serve.h"
#include "gguf.h"
#include "tokenizer.h"
#include "util.h"

/* Without --ckpt: the one folder under checkpoints/ that prepare_model split
 * for this many nodes. Fails, listing the candidates, when there are none or
 * several. */
static int find_prepared(char *out, size_t cap, int n_nodes, char *err)
{
    const char *root = "checkpoints";
    DIR *d = opendir(root);
    if (!d)
        return mdi_fail(err, MDI_EARG, "no --ckpt given and no %s/ folder to look in", root);
    char found[1024] = "";
    int n_found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char manifest[4096];
        snprintf(manifest, sizeof(manifest), "%s/%s/chunks/%dnodes/manifest.json", root, e->d_name, n_nodes);
        if (!file_exists(manifest))
            continue;
        if (n_found++ == 0)
            snprintf(out, cap, "%s/%s", root, e->d_name);
        size_t l = strlen(found);
        snprintf(found + l, sizeof(found) - l, "%s%s/%s", l ? ", " : "", root, e->d_name);
    }
    closedir(d);
    if (n_found == 1)
        return MDI_OK;
    if (n_found == 0)
        return mdi_fail(err, MDI_EARG, "no --ckpt given and no model under %s/ is prepared for %d node%s "
                        "(tools/prepare_model SOURCE --n-nodes %d)", root, n_nodes, n_nodes > 1 ? "s" : "", n_nodes);
    return mdi_fail(err, MDI_EARG, "no --ckpt given and several models are prepared for %d nodes: %s; pick one",
                    n_nodes, found);
}

/* The tokenizer sits beside the weights: in the folder, or beside the file;
 * a GGUF's own, from its metadata, when it has one. */
static tokenizer *load_tokenizer(const char *ckpt, char *err)
{
    if (dir_exists(ckpt))
        return tokenizer_load(ckpt, err);
    if (str_has_suffix(ckpt, ".gguf")) {
        gguf_file *g = gguf_open(ckpt, err);
        if (!g)
            return NULL;
        int own = gguf_find_key(g, "tokenizer.ggml.tokens") >= 0;
        gguf_close(g);
        if (own)
            return tokenizer_load(ckpt, err);
    }
    char dir[4096];
    path_dirname(ckpt, dir, sizeof(dir));
    return tokenizer_load(dir, err);
}

/* The chunks for n_nodes are missing: split the checkpoint now, as
 * MDI-LLM's starter does, into prepare_model's default folder
 * (checkpoints/NAME), and run from there. A prepared folder without its
 * source weights is left as it is: opening the cluster then names what to do. */
static int ensure_chunks(starter_opts *o, int n_nodes, char *out, size_t cap, char *err)
{
    char p[8192];
    snprintf(p, sizeof(p), "%s/chunks/%dnodes/manifest.json", o->ckpt, n_nodes);
    if (file_exists(p))
        return MDI_OK;
    snprintf(p, sizeof(p), "%s/chunks", o->ckpt);
    char st[4096], idx[4096];
    snprintf(st, sizeof(st), "%s/model.safetensors", o->ckpt);
    snprintf(idx, sizeof(idx), "%s/model.safetensors.index.json", o->ckpt);
    if (dir_exists(p) && !file_exists(st) && !file_exists(idx))
        return MDI_OK;
    prepare_opts po;
    memset(&po, 0, sizeof(po));
    po.source = o->ckpt;
    po.n_nodes = n_nodes;
    po.progress = isatty(STDERR_FILENO);
    char name[256];
    prepare_default_name(&po, name, sizeof(name));
    snprintf(out, cap, "checkpoints/%s", name);
    snprintf(p, sizeof(p), "%s/chunks/%dnodes/manifest.json", out, n_nodes);
    if (!file_exists(p))
        log_info("no chunks for %d nodes in %s: splitting it into %s now (as bin/prepare_model %s --n-nodes %d does)",
                 n_nodes, o->ckpt, out, o->ckpt, n_nodes);
    po.out_dir = out;
    int rc = prepare_run(&po, NULL, err);
    if (rc)
        return rc;
    log_info("model: %s", out);
    o->ckpt = out;
    return MDI_OK;
}

/* The samples' text, when it was not streamed. */
static void print_texts(const starter_opts *o, const sample_result *r, int n)
{
    for (int i = 0; i < n; i++)
        printf("%s--- sample %d ---\n%s%s\n", i ? "\n" : "", i, o->chat ? "" : r[i].prompt, r[i].text);
    fflush(stdout);
}

/* --output, --time-run, --plots, each tried; the text is out already.
 * Returns the number that failed. Steals nodes. */
static int write_outputs(const starter_opts *o, int n_nodes, const sample_result *r, int n, const run_stats *st,
                         json_t *nodes)
{
    char err[MDI_ERR_LEN], name[256];
    const char *mode = n_nodes > 1 ? "distributed" : "standalone";
    int failed = 0;
    report_model_name(o->ckpt, name, sizeof(name));
    if (o->output) {
        if (report_write_json(o->output, o->ckpt, mode, n_nodes, r, n, st, nodes, err)) {
            if (o->quiet && !o->interactive)
                print_texts(o, r, n); /* not lost */
            log_error("%s", err);
            failed++;
        }
    } else {
        json_decref(nodes);
    }
    if (o->time_run && report_write_time_run(o->time_run, name, mode, n_nodes, n, o->n_tokens, st, err)) {
        log_error("%s", err);
        failed++;
    }
    if (o->plots && report_write_plots(name, n_nodes, n, &st->curve, err)) {
        log_error("%s", err);
        failed++;
    }
    return failed;
}

/* -v: per sample and per node, on stderr. */
static void print_figures(const sample_result *r, int n, json_t *nodes)
{
    for (int i = 0; i < n; i++)
        log_info("sample %d: %d prompt tokens, %d generated, first token %.3f s, done %.3f s", i, r[i].n_prompt,
                 r[i].n_generated, r[i].t_first_token, r[i].t_done);
    size_t k;
    json_t *e;
    json_array_foreach(nodes, k, e) {
        json_t *l = json_object_get(e, "layers");
        log_info("node %zu (%s, %s): layers [%d, %d), compute %.3f s, waiting %.3f s, sent %lld B, received %lld B",
                 k, json_string_value(json_object_get(e, "role")), json_string_value(json_object_get(e, "addr")),
                 (int)json_integer_value(json_array_get(l, 0)), (int)json_integer_value(json_array_get(l, 1)),
                 json_number_value(json_object_get(e, "compute_s")), json_number_value(json_object_get(e, "wait_s")),
                 (long long)json_integer_value(json_object_get(e, "bytes_sent")),
                 (long long)json_integer_value(json_object_get(e, "bytes_received")));
    }
}

int main(int argc, char **argv)
{
    kernels_fix_openblas_coretype(argv);
    log_set_tag("starter");
    char err[MDI_ERR_LEN];
    starter_opts o;
    int rc = cli_parse_starter(&o, argc, argv, err);
    if (rc == 1)
        return 0;
    if (rc) {
        log_error("%s", err);
        return 2;
    }
    if (o.debug)
        setenv("MDI_DEBUG", "1", 1);
    log_debug("options: ckpt %s, nodes-config %s, prompt %s, n-tokens %d, n-samples %d, max-seq-len %d, "
              "temperature %g, top-k %d, top-p %g, seed %llu, interactive %d, parse special %d",
              o.ckpt ? o.ckpt : "(auto)", o.nodes_config ? o.nodes_config : "(none)", o.prompt ? o.prompt : "",
              o.n_tokens, o.n_samples, o.max_seq_len, o.temperature, o.top_k, o.top_p, (unsigned long long)o.seed,
              o.interactive, !o.no_parse_special);
    int n_nodes = 1;
    if (o.nodes_config) {
        nodes_config nc;
        if (nodes_config_load(&nc, o.nodes_config, err)) {
            log_error("%s", err);
            return 1;
        }
        nodes_config_warn_unused(&nc, o.nodes_config);
        n_nodes = nodes_config_n_nodes(&nc);
        if (!o.n_threads)
            o.n_threads = nc.starter.n_threads;
    }
    if (!o.n_threads) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        o.n_threads = ncpu > 0 ? (int)ncpu : 1;
    }
    if (o.serve)
        serve_block_signals(); /* serve_run waits for them; no thread takes them */
    if (o.interactive) {
        /* Ctrl-C belongs to the conversation (the main thread): every
         * thread started from here on blocks it; chat_run unblocks it. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
    }
    if (kernels_init(o.n_threads) != 0) {
        log_error("cannot start %d threads", o.n_threads);
        return 1;
    }

    int status = 1;
    model m = { 0 };
    tokenizer *tok = NULL;
    sample_result *results = NULL;
    json_t *nodes = NULL;
    run_stats st;
    memset(&st, 0, sizeof(st));
    int n_samples = o.interactive ? 0 : o.n_samples ? o.n_samples : n_nodes;
    char ckpt_buf[4096], prepared_buf[4096];
    if (!o.ckpt) {
        if (find_prepared(ckpt_buf, sizeof(ckpt_buf), n_nodes, err)) {
            log_error("%s", err);
            kernels_shutdown();
            return 2;
        }
        o.ckpt = ckpt_buf;
        log_info("model: %s", o.ckpt);
    }

    if (!dir_exists(o.ckpt) && !file_exists(o.ckpt)) {
        log_error("%s: no such checkpoint folder or file", o.ckpt);
        goto done;
    }
    if (n_nodes > 1) {
        /* what the ring cannot carry is refused before any chunk is made */
        model_config wcfg;
        char why[MDI_ERR_LEN];
        if (model_config_load(&wcfg, o.ckpt, why) == 0 && proto_wire_dtype_check(o.wire_dtype, wcfg.dim, why)) {
            log_error("--wire-dtype: %s: %s", o.ckpt, why);
            goto done;
        }
    }
    if (n_nodes > 1 && (rc = ensure_chunks(&o, n_nodes, prepared_buf, sizeof(prepared_buf), err))) {
        log_error("%s", err);
        goto done;
    }
    if (!(tok = load_tokenizer(o.ckpt, err))) {
        log_error("%s", err);
        goto done;
    }
    model_config cfg;
    if ((rc = model_config_load(&cfg, o.ckpt, err))) {
        log_error("%s", err);
        goto done;
    }
    if (o.serve) {
        if ((rc = serve_run(&o, tok, err)))
            log_error("%s", err);
        status = rc ? 1 : 0;
        goto done;
    }
    if (o.interactive) {
        chat_engine eng = { 0 };
        generate_session g;
        pipeline *pl = NULL;
        memset(&g, 0, sizeof(g));
        int max_seq = o.max_seq_len;
        if (!max_seq)
            max_seq = cfg.max_seq_len < CHAT_DEFAULT_MAX_SEQ ? cfg.max_seq_len : CHAT_DEFAULT_MAX_SEQ;
        if (n_nodes > 1) {
            if ((rc = pipeline_open(&pl, &o, max_seq, err))) {
                log_error("%s", err);
                goto done;
            }
            eng.ring = pl;
        } else {
            if (max_seq > cfg.max_seq_len) {
                log_error("--max-seq-len %d: above the model's context of %d tokens", max_seq, cfg.max_seq_len);
                goto done;
            }
            char weights_buf[4096];
            const char *weights = engine_weights_path(o.ckpt, weights_buf, sizeof(weights_buf));
            model_slice slice = { 0, cfg.n_layers, 1, 1, o.dtype, o.mmap_weights ? TSRC_MAP : TSRC_READ };
            if ((rc = model_load(&m, weights, &cfg, &slice, err)) ||
                (rc = generate_session_init(&g, &m, max_seq,
                                            max_seq < GENERATE_MAX_BATCH ? max_seq : GENERATE_MAX_BATCH,
                                            o.kv_dtype, err))) {
                log_error("%s", err);
                goto done;
            }
            eng.local = &g;
        }
        rc = chat_run(&o, tok, &eng, cfg.vocab_size, stdin, stdout, &results, &n_samples, &st, err);
        if (rc)
            log_error("%s", err);
        if (pl) {
            if (rc) {
                pipeline_close(pl, NULL, NULL, err);
            } else if ((rc = pipeline_close(pl, &st, &nodes, err))) {
                log_error("%s", err);
            }
        } else {
            st.weight_bytes_per_token = m.weight_bytes;
            st.dtype = m.dtypes;
            generate_session_free(&g);
        }
        if (rc)
            goto done;
    } else {
        if ((rc = generate_prepare_samples(&o, tok, n_samples, &results, err))) {
            log_error("%s", err);
            goto done;
        }
        for (int i = 0; i < n_samples; i++)
            for (int j = 0; j < results[i].n_prompt; j++)
                if (results[i].prompt_ids[j] < 0 || results[i].prompt_ids[j] >= cfg.vocab_size) {
                    log_error("sample %d: token id %d outside the vocabulary of %d", i, results[i].prompt_ids[j],
                              cfg.vocab_size);
                    goto done;
                }
        if ((rc = generate_run(&o, tok, results, n_samples, n_nodes, &st, &nodes, err))) {
            log_error("%s", err);
            goto done;
        }
        /* one sample streamed as it came; standalone printed each in turn */
        if (!o.quiet && n_samples > 1 && n_nodes > 1)
            print_texts(&o, results, n_samples);
    }
    st.peak_rss_bytes = mem_peak_rss();
    st.blas_core = kernels_blas_core();
    st.simd = kernels_simd_name();
    st.n_threads = o.n_threads;
    log_info("%ld tokens, prefill %.1f tok/s, decode %.2f tok/s, first token after %.3f s, peak RSS %zu MiB, "
             "BLAS core %s, %s",
             st.tokens_generated, st.prefill_tok_s, st.decode_tok_s, st.ttft_s, st.peak_rss_bytes >> 20,
             st.blas_core, st.simd);
    if (o.verbose)
        print_figures(results, n_samples, nodes);
    status = write_outputs(&o, n_nodes, results, n_samples, &st, nodes) ? 1 : 0;
    nodes = NULL;
done:
    for (int i = 0; results && i < n_samples; i++)
        sample_result_free(&results[i]);
    free(results);
    model_free(&m);
    tokenizer_free(tok);
    json_decref(nodes);
    run_stats_free(&st);
    kernels_shutdown();
    return status;
}
