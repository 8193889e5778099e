/*
 * starter: the node that holds the embedding, the first layers, the final
 * norm and the output head. It tokenizes the prompts, samples the tokens and
 * prints the text. Alone (no --nodes-config, or one that lists no
 * secondaries) it runs every layer itself; otherwise it drives the ring.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "generate.h"
#include "kernels.h"
#include "model.h"
#include "nodes_config.h"
#include "pipeline.h"
#include "report.h"
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

/* The tokenizer sits beside the weights: in the folder, or beside the file. */
static tokenizer *load_tokenizer(const char *ckpt, char *err)
{
    if (dir_exists(ckpt))
        return tokenizer_load(ckpt, err);
    char dir[4096];
    path_dirname(ckpt, dir, sizeof(dir));
    return tokenizer_load(dir, err);
}

/* A prepared checkpoints/NAME folder holds config.json and chunks only; one
 * node alone runs its 1-node chunk. */
static const char *standalone_weights(const char *ckpt, char *buf, size_t cap)
{
    char p[4096];
    if (!dir_exists(ckpt))
        return ckpt;
    if ((path_join(p, sizeof(p), ckpt, "model.safetensors") == 0 && file_exists(p)) ||
        (path_join(p, sizeof(p), ckpt, "model.safetensors.index.json") == 0 && file_exists(p)))
        return ckpt;
    if (path_join(buf, cap, ckpt, "chunks/1nodes/model_starter.safetensors") == 0 && file_exists(buf))
        return buf;
    return ckpt;
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
    int n_nodes = 1;
    if (o.nodes_config) {
        nodes_config nc;
        if (nodes_config_load(&nc, o.nodes_config, err)) {
            log_error("%s", err);
            return 1;
        }
        n_nodes = nodes_config_n_nodes(&nc);
        if (!o.n_threads)
            o.n_threads = nc.starter.n_threads;
    }
    if (n_nodes > 1 && o.logits_out) {
        log_error("--logits-out works in standalone mode only (the nodes configuration lists %d nodes)", n_nodes);
        return 2;
    }
    if (!o.n_threads) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        o.n_threads = ncpu > 0 ? (int)ncpu : 1;
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
    int n_samples = o.n_samples ? o.n_samples : n_nodes;
    char ckpt_buf[4096];
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
    if (!(tok = load_tokenizer(o.ckpt, err))) {
        log_error("%s", err);
        goto done;
    }
    model_config cfg;
    if ((rc = model_config_load(&cfg, o.ckpt, err))) {
        log_error("%s", err);
        goto done;
    }
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
    run_stats st;
    if (n_nodes > 1) {
        if ((rc = pipeline_run(&o, tok, results, n_samples, &st, &nodes, err))) {
            log_error("%s", err);
            goto done;
        }
        for (int i = 0; i < n_samples && !o.quiet; i++)
            printf("%s--- sample %d ---\n%s%s\n", i ? "\n" : "", i, o.chat ? "" : results[i].prompt,
                   results[i].text);
    } else {
        char weights_buf[4096];
        const char *weights = standalone_weights(o.ckpt, weights_buf, sizeof(weights_buf));
        model_slice slice = { 0, cfg.n_layers, 1, 1, o.dtype, o.mmap_weights ? TSRC_MAP : TSRC_READ };
        if ((rc = model_load(&m, weights, &cfg, &slice, err))) {
            log_error("%s", err);
            goto done;
        }
        if (o.mlock && model_lock(&m, err) == 0)
            log_warn("%s", err);
        if ((rc = generate_standalone(&o, &m, tok, results, n_samples, &st, err))) {
            log_error("%s", err);
            goto done;
        }
        st.weight_bytes_per_token = m.weight_bytes;
        st.dtype = dtype_name(m.slice.dtype);
    }
    st.peak_rss_bytes = mem_peak_rss();
    st.blas_core = kernels_blas_core();
    st.simd = kernels_simd_name();
    st.n_threads = o.n_threads;
    log_info("%ld tokens, prefill %.1f tok/s, decode %.2f tok/s, first token after %.3f s, peak RSS %zu MiB, "
             "BLAS core %s, %s",
             st.tokens_generated, st.prefill_tok_s, st.decode_tok_s, st.ttft_s, st.peak_rss_bytes >> 20,
             st.blas_core, st.simd);
    if (o.output &&
        (rc = report_write_json(o.output, o.ckpt, n_nodes > 1 ? "distributed" : "standalone", n_nodes, results,
                                n_samples, &st, nodes, err))) {
        nodes = NULL;
        log_error("%s", err);
        goto done;
    }
    nodes = o.output ? NULL : nodes;
    status = 0;
done:
    for (int i = 0; results && i < n_samples; i++)
        sample_result_free(&results[i]);
    free(results);
    model_free(&m);
    tokenizer_free(tok);
    json_decref(nodes);
    kernels_shutdown();
    return status;
}
