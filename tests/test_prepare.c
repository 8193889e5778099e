/*
 * test_prepare: the split planner against brute force, and real splits of
 * real checkpoints (stories260K in both layouts, synthetic tiny-llama and
 * tiny-qwen2) for 1 to 5 nodes: the manifest matches the files, layer
 * ranges are contiguous and complete, and the chunks together hold every
 * source tensor exactly once, bit for bit (or within the rounding bound of
 * the dtype asked for). Then re-runs (reuse), --layers, and bad inputs.
 * The command-line tool, the hub path and a full disk are in
 * tests/e2e_prepare.sh.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "model.h"
#include "prepare.h"
#include "safetensors.h"
#include "util.h"

static char tmp_root[256];

static int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run_cmd(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* ---- the planner ---- */

static double max_node_cost(const double *cost, double head, const int *counts, int n_nodes)
{
    double worst = 0;
    for (int i = 0, l = 0; i < n_nodes; i++) {
        double c = i == 0 ? head : 0;
        for (int j = 0; j < counts[i]; j++)
            c += cost[l++];
        if (c > worst)
            worst = c;
    }
    return worst;
}

/* The least largest node cost over every split with >= 1 layer per node. */
static double brute_force(const double *cost, int n, double head, int n_nodes, int *counts, int node, int left)
{
    if (node == n_nodes - 1) {
        if (left < 1)
            return 1e300;
        counts[node] = left;
        return max_node_cost(cost, head, counts, n_nodes);
    }
    double best = 1e300;
    for (int c = 1; c <= left - (n_nodes - 1 - node); c++) {
        counts[node] = c;
        double v = brute_force(cost, n, head, n_nodes, counts, node + 1, left - c);
        if (v < best)
            best = v;
    }
    return best;
}

static void test_plan(void)
{
    char err[MDI_ERR_LEN];
    int counts[16];
    /* stories260K: 5 layers of 181248 bytes, head (tied embedding) 131072 */
    double st[5] = { 181248, 181248, 181248, 181248, 181248 };
    static const int want[6][5] = { { 0 }, { 5 }, { 2, 3 }, { 1, 2, 2 }, { 1, 2, 1, 1 }, { 1, 1, 1, 1, 1 } };
    for (int n = 1; n <= 5; n++) {
        int rc = prepare_plan_split(st, 5, 131072, n, counts, err);
        int ok = rc == 0 && !memcmp(counts, want[n], (size_t)n * sizeof(int));
        char name[64];
        snprintf(name, sizeof(name), "plan stories260K %d nodes", n);
        test_result(ok, name, "rc %d, counts %d,%d,%d,%d,%d", rc, counts[0], n > 1 ? counts[1] : -1,
                    n > 2 ? counts[2] : -1, n > 3 ? counts[3] : -1, n > 4 ? counts[4] : -1);
    }
    /* Llama 3.2 1B in bf16: 16 layers, the 128k-row head costs ~4.3 layers */
    double l3[16];
    for (int i = 0; i < 16; i++)
        l3[i] = 60817408.0 * 2;
    double head = 128256.0 * 2048 * 2;
    int rc = prepare_plan_split(l3, 16, head, 2, counts, err);
    test_result(rc == 0 && counts[0] == 6 && counts[1] == 10, "plan llama3.2-1b 2 nodes: starter lighter", "%d,%d",
                counts[0], counts[1]);
    rc = prepare_plan_split(l3, 16, head, 4, counts, err);
    test_result(rc == 0 && counts[0] == 1 && counts[1] == 5 && counts[2] == 5 && counts[3] == 5,
                "plan llama3.2-1b 4 nodes", "%d,%d,%d,%d", counts[0], counts[1], counts[2], counts[3]);

    /* optimal against brute force on uneven costs */
    uint32_t seed = 12345;
    int bad = 0;
    for (int trial = 0; trial < 300; trial++) {
        int n = 1 + (int)(seed % 9);
        double cost[9], h;
        for (int i = 0; i < n; i++) {
            seed = seed * 1664525u + 1013904223u;
            cost[i] = 1 + (seed >> 20) % 100;
        }
        seed = seed * 1664525u + 1013904223u;
        h = (seed >> 20) % 300;
        seed = seed * 1664525u + 1013904223u;
        int nodes = 1 + (int)((seed >> 16) % (unsigned)n);
        int bf[16];
        double best = brute_force(cost, n, h, nodes, bf, 0, n);
        if (prepare_plan_split(cost, n, h, nodes, counts, err) != 0) {
            bad++;
            continue;
        }
        int sum = 0, ones = 1;
        for (int i = 0; i < nodes; i++) {
            sum += counts[i];
            ones &= counts[i] >= 1;
        }
        if (sum != n || !ones || max_node_cost(cost, h, counts, nodes) != best)
            bad++;
    }
    test_result(!bad, "plan is optimal against brute force (300 random cases)", "%d cases wrong", bad);

    rc = prepare_plan_split(st, 5, 0, 6, counts, err);
    test_result(rc == MDI_EARG && strstr(err, "--n-nodes 6"), "plan refuses more nodes than layers", "rc %d: %s", rc,
                err);
    rc = prepare_plan_split(st, 5, 0, 0, counts, err);
    test_result(rc == MDI_EARG, "plan refuses 0 nodes", "rc %d", rc);
}

static void test_layers_arg(void)
{
    char err[MDI_ERR_LEN];
    int *c = NULL, n = 0;
    int rc = prepare_parse_layers("2,3,0", &c, &n, err);
    test_result(rc == 0 && n == 3 && c[0] == 2 && c[1] == 3 && c[2] == 0, "parse --layers 2,3,0", "rc %d n %d", rc,
                n);
    free(c);
    static const char *bad[] = { "", "2,,3", "2,x", "-1,2", "2,3,", "1.5" };
    int nbad = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = NULL;
        if (prepare_parse_layers(bad[i], &c, &n, err) != MDI_EARG)
            nbad++;
        free(c);
    }
    test_result(!nbad, "parse --layers rejects malformed lists", "%d accepted", nbad);
    int a[] = { 2, 3 }, b[] = { 2, 2 }, z[] = { 5, 0 }, s0[] = { 0, 5 };
    test_result(prepare_check_layers(a, 2, 2, 5, err) == 0, "check --layers 2,3 of 5", "%s", err);
    rc = prepare_check_layers(b, 2, 2, 5, err);
    test_result(rc == MDI_EARG && strstr(err, "sum to 4"), "check --layers not summing", "%s", err);
    rc = prepare_check_layers(a, 2, 3, 5, err);
    test_result(rc == MDI_EARG && strstr(err, "--n-nodes is 3"), "check --layers count != nodes", "%s", err);
    rc = prepare_check_layers(z, 2, 2, 5, err);
    test_result(rc == MDI_EARG && strstr(err, "secondary 0"), "check --layers empty secondary", "%s", err);
    test_result(prepare_check_layers(s0, 2, 2, 5, err) == 0, "check --layers starter may hold 0 layers", "%s", err);
}

/* ---- checking a split ---- */

static float elem(const void *data, dtype_t t, size_t i)
{
    switch (t) {
    case DTYPE_F32: return ((const float *)data)[i];
    case DTYPE_BF16: return bf16_to_f32(((const uint16_t *)data)[i]);
    default: return f16_to_f32(((const uint16_t *)data)[i]);
    }
}

/* Compares a chunk tensor with its source: bit for bit when the dtype is
 * unchanged or widened, else within half an ulp of the narrower dtype:
 * bf16 |d| <= 2^-8 |x| (8 significant bits), f16 |d| <= 2^-11 |x| plus half
 * its smallest subnormal (2^-25). */
static int same_values(const tensor_info *src, const tensor_info *dst, char *why, size_t cap)
{
    if (src->dtype == dst->dtype) {
        if (src->nbytes != dst->nbytes || memcmp(src->data, dst->data, src->nbytes) != 0) {
            snprintf(why, cap, "%s: bytes differ", src->name);
            return 0;
        }
        return 1;
    }
    size_t n = src->nbytes / dtype_row_size(src->dtype, 1);
    if (dst->nbytes / dtype_row_size(dst->dtype, 1) != n) {
        snprintf(why, cap, "%s: element count differs", src->name);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        float x = elem(src->data, src->dtype, i), y = elem(dst->data, dst->dtype, i);
        double d = fabs((double)x - (double)y), bound;
        if (dst->dtype == DTYPE_F32)
            bound = 0;
        else if (dst->dtype == DTYPE_BF16)
            bound = ldexp(fabs(x), -8);
        else
            bound = ldexp(fabs(x), -11) + ldexp(1.0, -25);
        if (d > bound) {
            snprintf(why, cap, "%s[%zu]: %.9g stored as %.9g, error %.3g > bound %.3g", src->name, i, x, y, d, bound);
            return 0;
        }
    }
    return 1;
}

/* Everything a finished split must satisfy. Returns 1 or 0 with why. */
static int check_split(const char *src_path, const char *out_dir, int n_nodes, int convert, dtype_t dt, char *why,
                       size_t cap)
{
    char dir[1024], p[1200], err[MDI_ERR_LEN];
    snprintf(dir, sizeof(dir), "%s/chunks/%dnodes", out_dir, n_nodes);
    prepare_manifest m;
    if (prepare_manifest_load(&m, dir, 0, err) != 0) {
        snprintf(why, cap, "manifest: %s", err);
        return 0;
    }
    int ok = 0;
    tensor_source *src = tsrc_open(src_path, err);
    model_config cfg;
    int *seen = NULL;
    char cfg_sha[65];
    snprintf(p, sizeof(p), "%s/config.json", out_dir);
    if (!src || model_config_load(&cfg, out_dir, err) != 0 || sha256_file_hex(p, cfg_sha, err) != 0) {
        snprintf(why, cap, "source or config: %s", err);
        goto out;
    }
    if (strcmp(cfg_sha, m.config_sha256) != 0 || m.n_nodes != n_nodes || m.n_layers != cfg.n_layers ||
        m.n_chunks != n_nodes) {
        snprintf(why, cap, "manifest header does not match (config sha, nodes %d, layers %d, chunks %d)", m.n_nodes,
                 m.n_layers, m.n_chunks);
        goto out;
    }
    seen = calloc((size_t)tsrc_count(src), sizeof(int));
    int next = 0;
    for (int i = 0; i < m.n_chunks; i++) {
        const prepare_chunk *c = &m.chunks[i];
        char role[32];
        snprintf(role, sizeof(role), i ? "secondary%d" : "starter", i - 1);
        if (strcmp(c->role, role) != 0 || c->node_index != i || c->layer_begin != next ||
            c->layer_end - c->layer_begin != m.layers_per_node[i] || c->has_embed != (i == 0)) {
            snprintf(why, cap, "chunk %d: role %s, range [%d, %d), expected %s from %d", i, c->role, c->layer_begin,
                     c->layer_end, role, next);
            goto out;
        }
        next = c->layer_end;
        if (prepare_chunk_verify(&m, c, 1, err) != 0) {
            snprintf(why, cap, "verify: %s", err);
            goto out;
        }
        snprintf(p, sizeof(p), "%s/%s", dir, c->file);
        tensor_source *ch = tsrc_open(p, err);
        if (!ch) {
            snprintf(why, cap, "chunk: %s", err);
            goto out;
        }
        json_t *meta = tsrc_metadata(ch);
        char b[16], e[16], t[16];
        snprintf(b, sizeof(b), "%d", c->layer_begin);
        snprintf(e, sizeof(e), "%d", c->layer_end);
        snprintf(t, sizeof(t), "%d", m.n_layers);
        const char *mr = json_string_value(json_object_get(meta, "role"));
        const char *mb = json_string_value(json_object_get(meta, "layer_begin"));
        const char *me = json_string_value(json_object_get(meta, "layer_end"));
        const char *mt = json_string_value(json_object_get(meta, "n_layers_total"));
        const char *ms = json_string_value(json_object_get(meta, "config_sha256"));
        const char *mh = json_string_value(json_object_get(meta, "has_head"));
        if (!mr || !mb || !me || !mt || !ms || !mh || strcmp(mr, role) || strcmp(mb, b) || strcmp(me, e) ||
            strcmp(mt, t) || strcmp(ms, cfg_sha) || strcmp(mh, i ? "0" : "1")) {
            snprintf(why, cap, "%s: __metadata__ does not match the manifest", p);
            tsrc_close(ch);
            goto out;
        }
        if (tsrc_count(ch) != c->n_tensors) {
            snprintf(why, cap, "%s: %d tensors, manifest lists %d", p, tsrc_count(ch), c->n_tensors);
            tsrc_close(ch);
            goto out;
        }
        for (int k = 0; k < tsrc_count(ch); k++) {
            const tensor_info *ct = tsrc_get(ch, k);
            int found = -1;
            for (int s = 0; s < tsrc_count(src); s++)
                if (!strcmp(tsrc_get(src, s)->name, ct->name))
                    found = s;
            int layer = -1;
            sscanf(ct->name, "model.layers.%d.", &layer);
            int in_range = layer >= 0 ? (layer >= c->layer_begin && layer < c->layer_end) : i == 0;
            const char *listed = c->tensors[k];
            if (found < 0 || !in_range || strcmp(listed, ct->name) != 0) {
                snprintf(why, cap, "%s: tensor %s (source %s, in range %d, listed as %s)", p, ct->name,
                         found < 0 ? "missing" : "ok", in_range, listed);
                tsrc_close(ch);
                goto out;
            }
            const tensor_info *st = tsrc_get(src, found);
            dtype_t want = (convert && st->ndim >= 2) ? dt : st->dtype;
            int shape_ok = ct->ndim == st->ndim;
            for (int d = 0; shape_ok && d < st->ndim; d++)
                shape_ok = ct->shape[d] == st->shape[d];
            if (!shape_ok || ct->dtype != want) {
                snprintf(why, cap, "%s: %s has dtype %s (want %s) or another shape", p, ct->name,
                         dtype_name(ct->dtype), dtype_name(want));
                tsrc_close(ch);
                goto out;
            }
            if (!same_values(st, ct, why, cap)) {
                tsrc_close(ch);
                goto out;
            }
            seen[found]++;
        }
        tsrc_close(ch);
    }
    if (next != cfg.n_layers) {
        snprintf(why, cap, "layers end at %d of %d", next, cfg.n_layers);
        goto out;
    }
    for (int s = 0; s < tsrc_count(src); s++) {
        const char *name = tsrc_get(src, s)->name;
        int expect = (cfg.tie_embeddings && !strcmp(name, "lm_head.weight")) ? 0 : 1;
        if (seen[s] != expect) {
            snprintf(why, cap, "source tensor %s is in %d chunks, expected %d", name, seen[s], expect);
            goto out;
        }
    }
    ok = 1;
out:
    free(seen);
    tsrc_close(src);
    prepare_manifest_free(&m);
    return ok;
}

static int split(const char *src, const char *out, int n_nodes, const int *layers, int convert, dtype_t dt,
                 char *err)
{
    prepare_opts o;
    memset(&o, 0, sizeof(o));
    o.source = src;
    o.out_dir = out;
    o.n_nodes = n_nodes;
    o.layers = layers;
    o.n_layers_given = n_nodes;
    o.convert = convert;
    o.dtype = dt;
    prepare_manifest m;
    int rc = prepare_run(&o, &m, err);
    prepare_manifest_free(&m);
    return rc;
}

static void test_splits(const char *label, const char *src, int max_nodes, int convert, dtype_t dt)
{
    char out[512], err[MDI_ERR_LEN], why[4096], name[160];
    snprintf(out, sizeof(out), "%s/%s", tmp_root, label);
    for (int n = 1; n <= max_nodes; n++) {
        snprintf(name, sizeof(name), "split %s into %d nodes", label, n);
        int rc = split(src, out, n, NULL, convert, dt, err);
        if (rc) {
            test_result(0, name, "%s", err);
            continue;
        }
        test_result(check_split(src, out, n, convert, dt, why, sizeof(why)), name, "%s", why);
    }
}

static int same_file_kept(const char *path, const struct stat *before)
{
    struct stat st;
    return stat(path, &st) == 0 && st.st_ino == before->st_ino && st.st_mtim.tv_sec == before->st_mtim.tv_sec &&
           st.st_mtim.tv_nsec == before->st_mtim.tv_nsec;
}

static void test_reuse(const char *src)
{
    char out[512], dir[600], p[3][700], err[MDI_ERR_LEN], why[4096];
    static const char *files[3] = { "model_starter.safetensors", "model_secondary0.safetensors",
                                    "model_secondary1.safetensors" };
    snprintf(out, sizeof(out), "%s/reuse", tmp_root);
    snprintf(dir, sizeof(dir), "%s/chunks/3nodes", out);
    int rc = split(src, out, 3, NULL, 0, DTYPE_F32, err);
    struct stat before[3];
    for (int i = 0; i < 3; i++) {
        snprintf(p[i], sizeof(p[i]), "%s/%s", dir, files[i]);
        stat(p[i], &before[i]);
    }
    /* a leftover of a killed run */
    run_cmd("echo half > '%s/model_secondary1.safetensors.tmp'", dir);
    rc = rc ? rc : split(src, out, 3, NULL, 0, DTYPE_F32, err);
    int kept = 1;
    for (int i = 0; i < 3; i++)
        kept &= same_file_kept(p[i], &before[i]);
    char tmp[800];
    snprintf(tmp, sizeof(tmp), "%s/model_secondary1.safetensors.tmp", dir);
    test_result(rc == 0 && kept && !file_exists(tmp), "re-run reuses every finished chunk, removes .tmp",
                "rc %d (%s), kept %d", rc, err, kept);

    /* a damaged chunk is rewritten, the others stay */
    FILE *f = fopen(p[1], "r+b");
    if (f) {
        fseek(f, -4, SEEK_END);
        fputc(0x7f, f);
        fclose(f);
    }
    rc = split(src, out, 3, NULL, 0, DTYPE_F32, err);
    int ok = rc == 0 && same_file_kept(p[0], &before[0]) && !same_file_kept(p[1], &before[1]) &&
             same_file_kept(p[2], &before[2]) && check_split(src, out, 3, 0, DTYPE_F32, why, sizeof(why));
    test_result(ok, "a damaged chunk is rewritten, the others reused", "rc %d %s %s", rc, err, why);

    /* another split of the same node count rewrites what changed */
    int layers[3] = { 3, 1, 1 };
    rc = split(src, out, 3, layers, 0, DTYPE_F32, err);
    prepare_manifest m;
    ok = rc == 0 && check_split(src, out, 3, 0, DTYPE_F32, why, sizeof(why)) &&
         prepare_manifest_load(&m, dir, 0, err) == 0 && m.chunks[0].layer_end == 3 && m.chunks[2].layer_begin == 4;
    if (ok)
        prepare_manifest_free(&m);
    test_result(ok, "--layers 3,1,1 replaces the balanced split", "rc %d %s %s", rc, err, why);

    /* an incomplete manifest is refused by readers */
    char mpath[700];
    snprintf(mpath, sizeof(mpath), "%s/manifest.json", dir);
    run_cmd("sed -i 's/\"complete\": true/\"complete\": false/' '%s'", mpath);
    rc = prepare_manifest_load(&m, dir, 0, err);
    test_result(rc == MDI_ESTATE && strstr(err, "incomplete"), "an incomplete manifest is refused", "rc %d: %s", rc,
                err);
    if (prepare_manifest_load(&m, dir, 1, err) == 0)
        prepare_manifest_free(&m);
    rc = split(src, out, 3, layers, 0, DTYPE_F32, err);
    test_result(rc == 0 && check_split(src, out, 3, 0, DTYPE_F32, why, sizeof(why)),
                "re-run completes an incomplete set", "rc %d %s %s", rc, err, why);
}

static void test_starter_without_layers(const char *src)
{
    char out[512], err[MDI_ERR_LEN], why[4096];
    snprintf(out, sizeof(out), "%s/zero", tmp_root);
    int layers[3] = { 0, 2, 3 };
    int rc = split(src, out, 3, layers, 0, DTYPE_F32, err);
    test_result(rc == 0 && check_split(src, out, 3, 0, DTYPE_F32, why, sizeof(why)),
                "--layers 0,2,3: the starter holds only embedding and head", "rc %d %s %s", rc, err, why);
}

static void test_inspect(const char *src)
{
    char out[512], p[700], err[MDI_ERR_LEN];
    snprintf(out, sizeof(out), "%s/inspect", tmp_root);
    int rc = split(src, out, 2, NULL, 1, DTYPE_BF16, err);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    snprintf(p, sizeof(p), "%s/chunks/2nodes/model_secondary0.safetensors", out);
    rc = rc ? rc : prepare_inspect(p, 0, f, err);
    fclose(f);
    test_result(rc == 0 && text && strstr(text, "chunk: secondary0, layers [2, 5) of 5") &&
                    strstr(text, "model.layers.4.mlp.down_proj.weight") && strstr(text, "bf16  [64, 172] 22016 bytes"),
                "--inspect a chunk", "rc %d %s: %s", rc, err, text ? text : "");
    free(text);
    text = NULL;
    f = open_memstream(&text, &len);
    rc = prepare_inspect(out, 1, f, err);
    fclose(f);
    test_result(rc == 0 && text && strstr(text, "starter: model_starter.safetensors, layers [0, 2), embedding, head") &&
                    strstr(text, "ok (hash checked)") && strstr(text, "dtype bf16"),
                "--inspect checkpoints/NAME with --verify", "rc %d %s: %s", rc, err, text ? text : "");
    free(text);
    /* a damaged chunk shows up */
    run_cmd("truncate -s -1 '%s'", p);
    text = NULL;
    f = open_memstream(&text, &len);
    rc = prepare_inspect(out, 0, f, err);
    fclose(f);
    test_result(rc == MDI_EFORMAT && text && strstr(text, "BAD:"), "--inspect reports a damaged chunk",
                "rc %d %s", rc, err);
    free(text);
}

/* ---- bad inputs ---- */

static int no_chunks(const char *out)
{
    char p[700];
    snprintf(p, sizeof(p), "%s/chunks", out);
    return !dir_exists(p);
}

static void test_bad_inputs(const char *hf)
{
    char out[512], src[512], err[MDI_ERR_LEN];
    int rc;
    snprintf(out, sizeof(out), "%s/bad_out", tmp_root);

    rc = split("/nonexistent/model", out, 2, NULL, 0, DTYPE_F32, err);
    test_result(rc == MDI_EIO && strstr(err, "/nonexistent/model") && no_chunks(out), "missing source", "rc %d: %s",
                rc, err);

    rc = split(hf, out, 6, NULL, 0, DTYPE_F32, err);
    test_result(rc == MDI_EARG && strstr(err, "only 5 layers") && no_chunks(out), "more nodes than layers",
                "rc %d: %s", rc, err);

    int bad_sum[2] = { 2, 2 };
    rc = split(hf, out, 2, bad_sum, 0, DTYPE_F32, err);
    test_result(rc == MDI_EARG && strstr(err, "sum to 4") && no_chunks(out), "--layers not summing", "rc %d: %s", rc,
                err);

    snprintf(src, sizeof(src), "%s/gpt2", tmp_root);
    run_cmd("mkdir -p '%s' && cp %s/* '%s/' && chmod u+w '%s'/* && sed -i 's/\"model_type\": \"llama\"/\"model_type\": \"gpt2\"/' '%s/config.json'",
            src, hf, src, src, src);
    rc = split(src, out, 2, NULL, 0, DTYPE_F32, err);
    test_result(rc == MDI_EUNSUPPORTED && strstr(err, "gpt2") && no_chunks(out), "unknown architecture",
                "rc %d: %s", rc, err);

    snprintf(src, sizeof(src), "%s/truncated", tmp_root);
    run_cmd("mkdir -p '%s' && cp %s/* '%s/' && chmod u+w '%s'/* && truncate -s 500000 '%s/model.safetensors'", src,
            hf, src, src, src);
    rc = split(src, out, 2, NULL, 0, DTYPE_F32, err);
    test_result(rc < 0 && strstr(err, "model.safetensors") && no_chunks(out), "truncated safetensors", "rc %d: %s",
                rc, err);

    snprintf(src, sizeof(src), "%s/garbage", tmp_root);
    run_cmd("mkdir -p '%s' && cp %s/* '%s/' && chmod u+w '%s'/* && printf '\\x10\\x00\\x00\\x00\\x00\\x00\\x00\\x00{not json at all' | dd of='%s/model.safetensors' conv=notrunc status=none",
            src, hf, src, src, src);
    rc = split(src, out, 2, NULL, 0, DTYPE_F32, err);
    test_result(rc < 0 && strstr(err, "model.safetensors") && no_chunks(out), "corrupt safetensors header",
                "rc %d: %s", rc, err);

    /* a tensor renamed in place: the header stays valid, the tensor is gone */
    snprintf(src, sizeof(src), "%s/renamed", tmp_root);
    run_cmd("mkdir -p '%s' && cp %s/* '%s/' && chmod u+w '%s'/* && sed -i 's/model.layers.2.mlp.up_proj/model.layers.2.mlp.xx_proj/' '%s/model.safetensors'",
            src, hf, src, src, src);
    rc = split(src, out, 2, NULL, 0, DTYPE_F32, err);
    test_result(rc == MDI_EFORMAT && strstr(err, "missing tensor model.layers.2.mlp.up_proj.weight") &&
                    no_chunks(out),
                "missing tensor", "rc %d: %s", rc, err);

    snprintf(src, sizeof(src), "%s/noconfig", tmp_root);
    run_cmd("mkdir -p '%s' && cp %s/model.safetensors '%s/'", src, hf, src);
    rc = split(src, out, 2, NULL, 0, DTYPE_F32, err);
    test_result(rc < 0 && strstr(err, "config.json") && no_chunks(out), "missing config.json", "rc %d: %s", rc, err);
}

int main(void)
{
    char hf[512], l2c[512], syn[512], qwen[512], why[4096];
    TEST_PATH(hf, "models/stories260K");
    TEST_PATH(l2c, "models/stories260K-llama2c");
    snprintf(tmp_root, sizeof(tmp_root), "/tmp/test_prepare.XXXXXX");
    if (!mkdtemp(tmp_root)) {
        test_result(0, "mkdtemp", "%s", strerror(errno));
        return 1;
    }
    log_set_tag("test_prepare");

    test_plan();
    test_layers_arg();

    if (!dir_exists(hf)) {
        test_skip("splits of stories260K", "no shared models folder");
    } else {
        test_splits("stories260K", hf, 5, 0, DTYPE_F32);
        test_splits("stories260K-llama2c", l2c, 5, 0, DTYPE_F32);
        test_splits("stories260K-bf16", hf, 3, 1, DTYPE_BF16);
        test_splits("stories260K-f16", hf, 2, 1, DTYPE_F16);
        test_reuse(hf);
        test_starter_without_layers(hf);
        test_inspect(hf);
        test_bad_inputs(hf);
    }

    /* synthetic: sharded bf16 with an untied 32000-row head; qwen2 with
     * biases and a tied head */
    snprintf(syn, sizeof(syn), "%s/src-tiny-llama", tmp_root);
    snprintf(qwen, sizeof(qwen), "%s/src-tiny-qwen2", tmp_root);
    if (!file_exists("tools/gen_synthetic.py")) {
        test_skip("synthetic splits", "tools/gen_synthetic.py missing");
    } else if (run_cmd("/usr/bin/python3 tools/gen_synthetic.py --shape tiny-llama --layers 6 --dtype bf16 "
                       "--shard-size 200KB --out '%s' >/dev/null && "
                       "/usr/bin/python3 tools/gen_synthetic.py --shape tiny-qwen2 --layers 5 --vocab 2000 "
                       "--out '%s' >/dev/null",
                       syn, qwen) != 0) {
        test_result(0, "generate synthetic checkpoints", "gen_synthetic.py failed");
    } else {
        test_splits("tiny-llama", syn, 5, 0, DTYPE_F32);
        test_splits("tiny-llama-to-f32", syn, 2, 1, DTYPE_F32);
        test_splits("tiny-qwen2", qwen, 5, 0, DTYPE_F32);
        /* the untied 32000 x 64 head outweighs many layers: starter keeps one */
        char out[600];
        snprintf(out, sizeof(out), "%s/tiny-llama/chunks/2nodes", tmp_root);
        prepare_manifest m;
        int ok = prepare_manifest_load(&m, out, 0, why) == 0;
        test_result(ok && m.layers_per_node[0] == 1 && m.layers_per_node[1] == 5,
                    "balanced split counts the output head", "%s", ok ? "starter has more than 1 layer" : why);
        if (ok)
            prepare_manifest_free(&m);
    }

    if (!getenv("MDI_KEEP_TMP"))
        run_cmd("rm -rf '%s'", tmp_root);
    return test_failures;
}
