/*
 * prepare_model: splits a checkpoint into one chunk per node, or shows what
 * a chunk or manifest holds. The work is done by src/prepare.c.
 *
 *   prepare_model SOURCE --n-nodes N [--layers a,b,... | --plan-from CONFIG] [--dtype f32|bf16|f16|q8_0|q4_0]
 *                 [--embed-dtype DTYPE] [--out checkpoints/NAME] [--hf-token TOKEN] [--revision REV]
 *                 [--hub-files PATH,PATH,...] [--no-progress]
 *   prepare_model --inspect PATH [--verify]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autosplit.h"
#include "kernels.h"
#include "nodes_config.h"
#include "prepare.h"
#include "startup.h"
#include "util.h"

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s SOURCE --n-nodes N [options]\n"
            "       %s --inspect PATH [--verify]\n"
            "\n"
            "Splits a checkpoint into one chunk per node under OUT/chunks/<N>nodes/.\n"
            "SOURCE: a Hugging Face checkpoint folder, a llama2.c .bin (or its folder, with\n"
            "its tokenizer .bin), or a hub repository id owner/name (downloaded to OUT/source/).\n"
            "\n"
            "  --n-nodes N          number of nodes: the starter and N-1 secondaries (1..layers)\n"
            "  --layers a,b,...     layers per node, starter first (default: balanced by compute)\n"
            "  --plan-from CONFIG   layers per node planned from each node's measured speed and memory:\n"
            "                       its \"capabilities\" in CONFIG, else the secondary's GET /, the\n"
            "                       starter's measured here (--n-nodes: CONFIG's node count)\n"
            "  --dtype D            store weight matrices as D: f32, bf16, f16, q8_0 or q4_0 (default:\n"
            "                       as stored); with q8_0/q4_0 a matrix whose rows are not a multiple of\n"
            "                       32 values stays f16 (bf16 when stored so), with a note\n"
            "  --embed-dtype D      the token embedding and output head as D (default: as --dtype)\n"
            "  --out DIR            output folder (default: checkpoints/NAME, NAME from SOURCE)\n"
            "  --hf-token TOKEN     hub token for gated models (default: $HF_TOKEN)\n"
            "  --revision REV       hub revision (default: main)\n"
            "  --hub-files A,B,...  download only these repository files (llama2.c repos),\n"
            "                       e.g. stories260K/stories260K.bin,stories260K/tok512.bin\n"
            "  --no-progress        no download progress bar\n"
            "  --inspect PATH       print a chunk's, a manifest's or checkpoints/NAME's contents\n"
            "  --verify             with --inspect: check every chunk's sha256\n"
            "\n"
            "The hub base URL comes from $HF_ENDPOINT (default https://huggingface.co).\n",
            argv0, argv0);
}

/* "a,b,c" -> new array of new strings. */
static int split_list(const char *s, char ***out, int *n)
{
    int cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    char **v = calloc((size_t)cap, sizeof(char *));
    char *copy = strdup(s);
    if (!v || !copy) {
        free(v);
        free(copy);
        return -1;
    }
    int k = 0;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","))
        v[k++] = strdup(tok);
    free(copy);
    *out = v;
    *n = k;
    return 0;
}

int main(int argc, char **argv)
{
    log_set_tag("prepare_model");
    prepare_opts o;
    memset(&o, 0, sizeof(o));
    o.progress = 1;
    const char *inspect = NULL, *layers = NULL, *plan_from = NULL;
    int verify = 0;
    char **hub_files = NULL;
    int n_hub_files = 0;
    char err[MDI_ERR_LEN] = "";

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
#define NEED_VALUE()                                                          \
    if (!has_val) {                                                           \
        fprintf(stderr, "prepare_model: %s needs a value (see --help)\n", a); \
        return 2;                                                             \
    }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout, argv[0]);
            return 0;
        } else if (!strcmp(a, "--n-nodes")) {
            NEED_VALUE();
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > 100000) {
                fprintf(stderr, "prepare_model: --n-nodes \"%s\": expected a positive integer\n", argv[i]);
                return 2;
            }
            o.n_nodes = (int)v;
        } else if (!strcmp(a, "--layers")) {
            NEED_VALUE();
            layers = argv[++i];
        } else if (!strcmp(a, "--plan-from")) {
            NEED_VALUE();
            plan_from = argv[++i];
        } else if (!strcmp(a, "--dtype")) {
            NEED_VALUE();
            if (dtype_parse(argv[++i], &o.dtype) != 0) {
                fprintf(stderr, "prepare_model: --dtype: unknown dtype \"%s\" (accepted: %s)\n", argv[i],
                        dtype_names());
                return 2;
            }
            o.convert = 1;
        } else if (!strcmp(a, "--embed-dtype")) {
            NEED_VALUE();
            if (dtype_parse(argv[++i], &o.embed_dtype) != 0) {
                fprintf(stderr, "prepare_model: --embed-dtype: unknown dtype \"%s\" (accepted: %s)\n", argv[i],
                        dtype_names());
                return 2;
            }
            o.convert_embed = 1;
        } else if (!strcmp(a, "--out")) {
            NEED_VALUE();
            o.out_dir = argv[++i];
        } else if (!strcmp(a, "--hf-token")) {
            NEED_VALUE();
            o.hf_token = argv[++i];
        } else if (!strcmp(a, "--revision")) {
            NEED_VALUE();
            o.revision = argv[++i];
        } else if (!strcmp(a, "--hub-files")) {
            NEED_VALUE();
            if (split_list(argv[++i], &hub_files, &n_hub_files) != 0) {
                fprintf(stderr, "prepare_model: out of memory\n");
                return 1;
            }
        } else if (!strcmp(a, "--no-progress")) {
            o.progress = 0;
        } else if (!strcmp(a, "--inspect")) {
            NEED_VALUE();
            inspect = argv[++i];
        } else if (!strcmp(a, "--verify")) {
            verify = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "prepare_model: unknown option %s (see --help)\n", a);
            return 2;
        } else if (!o.source) {
            o.source = a;
        } else {
            fprintf(stderr, "prepare_model: unexpected argument \"%s\" (one SOURCE only)\n", a);
            return 2;
        }
#undef NEED_VALUE
    }

    if (inspect) {
        int rc = prepare_inspect(inspect, verify, stdout, err);
        if (rc) {
            fprintf(stderr, "prepare_model: %s\n", err);
            return 1;
        }
        return 0;
    }
    autosplit_ctx plan_ctx = {plan_from, STARTUP_CONNECT_TIMEOUT_S, 0, 0, 0, 0};
    if (plan_from) {
        nodes_config nc;
        if (nodes_config_load(&nc, plan_from, err) != 0) {
            fprintf(stderr, "prepare_model: --plan-from: %s\n", err);
            return 2;
        }
        if (o.n_nodes && o.n_nodes != nodes_config_n_nodes(&nc)) {
            fprintf(stderr, "prepare_model: --n-nodes %d, but %s has %d nodes\n", o.n_nodes, plan_from,
                    nodes_config_n_nodes(&nc));
            return 2;
        }
        if (layers) {
            fprintf(stderr, "prepare_model: --layers and --plan-from exclude each other\n");
            return 2;
        }
        o.n_nodes = nodes_config_n_nodes(&nc);
        int n_threads = nc.starter.n_threads;
        if (!n_threads) {
            long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
            n_threads = ncpu > 0 ? (int)ncpu : 1;
        }
        kernels_init(n_threads); /* the starter's throughput is measured here */
        o.plan = autosplit_plan;
        o.plan_ctx = &plan_ctx;
    }
    if (!o.source || !o.n_nodes) {
        usage(stderr, argv[0]);
        fprintf(stderr, "prepare_model: %s\n", !o.source ? "no SOURCE given" : "--n-nodes is required");
        return 2;
    }
    int *counts = NULL;
    if (layers) {
        if (prepare_parse_layers(layers, &counts, &o.n_layers_given, err) != 0) {
            fprintf(stderr, "prepare_model: %s\n", err);
            return 2;
        }
        o.layers = counts;
    }
    o.hub_files = (const char *const *)hub_files;
    o.n_hub_files = n_hub_files;

    prepare_manifest m;
    int rc = prepare_run(&o, &m, err);
    if (rc)
        fprintf(stderr, "prepare_model: %s\n", err);
    else
        printf("%s/%s\n", m.dir, PREPARE_MANIFEST);
    prepare_manifest_free(&m);
    free(counts);
    for (int i = 0; i < n_hub_files; i++)
        free(hub_files[i]);
    free(hub_files);
    return rc ? 1 : 0;
}
