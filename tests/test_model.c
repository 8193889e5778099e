/*
 * test_model: loading checkpoints (both layouts of stories260K agree) and
 * every malformed input of the Loading section failing with one line that
 * names the file and the problem.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "model.h"
#include "safetensors.h"
#include "test.h"
#include "util.h"

static char tmpdir[256];

static void write_file(const char *name, const void *data, size_t n)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static char *read_shared(const char *rel, size_t *len)
{
    char p[512], err[MDI_ERR_LEN];
    char *buf;
    TEST_PATH(p, rel);
    if (file_read_all(p, &buf, len, err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    return buf;
}

/* A fresh checkpoint folder: stories260K's files with optional edits. */
static void make_ckpt(const char *config_from, const char *config_to)
{
    size_t n;
    char *cfg = read_shared("models/stories260K/config.json", &n);
    if (config_from) {
        char *at = strstr(cfg, config_from);
        if (!at) {
            fprintf(stderr, "config has no %s\n", config_from);
            exit(1);
        }
        char out[8192];
        snprintf(out, sizeof(out), "%.*s%s%s", (int)(at - cfg), cfg, config_to, at + strlen(config_from));
        write_file("config.json", out, strlen(out));
    } else {
        write_file("config.json", cfg, n);
    }
    free(cfg);
    char *st = read_shared("models/stories260K/model.safetensors", &n);
    write_file("model.safetensors", st, n);
    free(st);
}

static int expect_load_error(const char *name, const char *path, const char *want1, const char *want2)
{
    model m;
    char err[MDI_ERR_LEN] = "";
    model_slice sl = { 0, 5, 1, 1, DTYPE_F32, TSRC_MAP };
    int rc = model_load(&m, path, NULL, &sl, err);
    int ok = rc != 0 && strstr(err, want1) && (!want2 || strstr(err, want2)) && !strchr(err, '\n');
    test_result(ok, name, "rc %d, message \"%s\" (wanted \"%s\"%s%s)", rc, err, want1, want2 ? " and " : "",
                want2 ? want2 : "");
    if (!rc)
        model_free(&m);
    else
        printf("   message: %s\n", err);
    return ok;
}

static void test_layouts_agree(void)
{
    char hf[512], l2c[512], err[MDI_ERR_LEN];
    TEST_PATH(hf, "models/stories260K");
    TEST_PATH(l2c, "models/stories260K-llama2c/stories260K.bin");
    model a, b;
    model_slice sl = { 0, 5, 1, 1, DTYPE_F32, TSRC_MAP };
    if (model_load(&a, hf, NULL, &sl, err)) {
        test_result(0, "load stories260K (HF)", "%s", err);
        return;
    }
    if (model_load(&b, l2c, NULL, &sl, err)) {
        test_result(0, "load stories260K (llama2.c)", "%s", err);
        model_free(&a);
        return;
    }
    test_result(a.cfg.dim == b.cfg.dim && a.cfg.n_kv_heads == b.cfg.n_kv_heads && a.cfg.head_dim == b.cfg.head_dim &&
                    a.cfg.vocab_size == b.cfg.vocab_size && a.cfg.tie_embeddings == b.cfg.tie_embeddings,
                "configs agree", "dim %d/%d kv %d/%d", a.cfg.dim, b.cfg.dim, a.cfg.n_kv_heads, b.cfg.n_kv_heads);
    /* the HF file was made by permuting llama2.c's q/k rows; our loader
     * permutes the same way, so every weight is bit-identical */
    int same = 1;
    for (int l = 0; l < 5 && same; l++) {
        const mat_t *ma[] = { &a.layers[l].wq, &a.layers[l].wk, &a.layers[l].wv, &a.layers[l].w_down };
        const mat_t *mb[] = { &b.layers[l].wq, &b.layers[l].wk, &b.layers[l].wv, &b.layers[l].w_down };
        for (int j = 0; j < 4; j++)
            same &= !memcmp(ma[j]->data, mb[j]->data, (size_t)ma[j]->rows * ma[j]->cols * sizeof(float));
    }
    test_result(same, "llama2.c weights permuted to the rotate-half layout match the HF file", "differ");

    forward_state sa, sb;
    kv_cache ka, kb;
    forward_state_init(&sa, &a, 4, 16, err);
    forward_state_init(&sb, &b, 4, 16, err);
    kv_cache_init(&ka, &a, 16, DTYPE_F32, err);
    kv_cache_init(&kb, &b, 16, DTYPE_F32, err);
    float xa[4 * 64], xb[4 * 64];
    int toks[3] = { 1, 403, 407 };
    float *la = forward_tokens(&a, &sa, &ka, toks, 3, 0, xa);
    float *lb = forward_tokens(&b, &sb, &kb, toks, 3, 0, xb);
    test_result(!memcmp(la, lb, 512 * sizeof(float)), "both layouts give identical logits", "differ");
    forward_state_free(&sa);
    forward_state_free(&sb);
    kv_cache_free(&ka);
    kv_cache_free(&kb);
    model_free(&a);
    model_free(&b);
}

static void test_slices(void)
{
    char hf[512], err[MDI_ERR_LEN];
    TEST_PATH(hf, "models/stories260K");
    /* running layers [0,2) then [2,5) equals running [0,5) */
    model full, p1, p2;
    model_slice s_full = { 0, 5, 1, 1, DTYPE_F32, TSRC_READ }, s1 = { 0, 2, 1, 0, DTYPE_F32, TSRC_MAP }, s2 = { 2, 5, 0, 1, DTYPE_F32, TSRC_MAP };
    if (model_load(&full, hf, NULL, &s_full, err) || model_load(&p1, hf, NULL, &s1, err) ||
        model_load(&p2, hf, NULL, &s2, err)) {
        test_result(0, "slices load", "%s", err);
        return;
    }
    test_result(p2.tok_embed.data != NULL && p1.final_norm == NULL, "tied head slice holds the embedding",
                "embed %p", p2.tok_embed.data);
    forward_state f, f1, f2;
    kv_cache k, k1, k2;
    forward_state_init(&f, &full, 8, 32, err);
    forward_state_init(&f1, &p1, 8, 32, err);
    forward_state_init(&f2, &p2, 8, 32, err);
    kv_cache_init(&k, &full, 32, DTYPE_F32, err);
    kv_cache_init(&k1, &p1, 32, DTYPE_F32, err);
    kv_cache_init(&k2, &p2, 32, DTYPE_F32, err);
    int toks[5] = { 1, 403, 407, 261, 378 };
    float x[8 * 64], y[8 * 64];
    float *l_full = forward_tokens(&full, &f, &k, toks, 5, 0, x);
    forward_embed(&p1, toks, 5, y);
    forward_layers(&p1, &f1, &k1, y, 5, 0);
    forward_layers(&p2, &f2, &k2, y, 5, 0);
    float *l_split = forward_head(&p2, &f2, y + 4 * 64);
    test_result(!memcmp(l_full, l_split, 512 * sizeof(float)), "layers [0,2)+[2,5) equal [0,5), prefill", "differ");
    int next = 300;
    l_full = forward_tokens(&full, &f, &k, &next, 1, 5, x);
    forward_embed(&p1, &next, 1, y);
    forward_layers(&p1, &f1, &k1, y, 1, 5);
    forward_layers(&p2, &f2, &k2, y, 1, 5);
    l_split = forward_head(&p2, &f2, y);
    test_result(!memcmp(l_full, l_split, 512 * sizeof(float)), "layers [0,2)+[2,5) equal [0,5), decode", "differ");
    forward_state_free(&f);
    forward_state_free(&f1);
    forward_state_free(&f2);
    kv_cache_free(&k);
    kv_cache_free(&k1);
    kv_cache_free(&k2);
    model_free(&full);
    model_free(&p1);
    model_free(&p2);
}

/* Block types: per-matrix dtypes chosen at load, block-typed chunks borrowed
 * as stored, and quantizing at load equal to loading the quantized chunk. */
static void test_matrix_dtype_table(void)
{
    const dtype_t A = DTYPE_COUNT; /* auto */
    struct { dtype_t want, stored; int64_t cols; dtype_t use; } cases[] = {
        { A, DTYPE_F32, 64, DTYPE_F32 },           { A, DTYPE_F16, 64, DTYPE_F32 },
        { A, DTYPE_BF16, 64, DTYPE_BF16 },         { A, DTYPE_Q4_0, 64, DTYPE_Q4_0 },
        { DTYPE_F32, DTYPE_Q8_0, 64, DTYPE_F32 },  { DTYPE_BF16, DTYPE_F32, 172, DTYPE_BF16 },
        { DTYPE_Q8_0, DTYPE_F32, 64, DTYPE_Q8_0 }, { DTYPE_Q4_0, DTYPE_BF16, 64, DTYPE_Q4_0 },
        { DTYPE_Q8_0, DTYPE_F32, 172, DTYPE_F16 }, { DTYPE_Q4_0, DTYPE_F16, 172, DTYPE_F16 },
        { DTYPE_Q8_0, DTYPE_BF16, 172, DTYPE_BF16 }, { DTYPE_Q8_0, DTYPE_Q4_0, 64, DTYPE_Q4_0 },
    };
    int bad = -1;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]) && bad < 0; i++)
        if (model_matrix_dtype(cases[i].want, cases[i].stored, cases[i].cols) != cases[i].use)
            bad = (int)i;
    test_result(bad < 0, "model_matrix_dtype: the table of model.h, fallback f16 (bf16 when stored so)",
                "case %d", bad);
}

static void test_block_types(void)
{
    char src_path[512], chunk[512], err[MDI_ERR_LEN] = "";
    TEST_PATH(src_path, "models/stories260K");
    model q, c;
    model_slice sl = { 0, 5, 1, 1, DTYPE_Q8_0, TSRC_MAP };
    int rc = model_load(&q, src_path, NULL, &sl, err);
    test_result(rc == 0, "load stories260K with --dtype q8_0", "%s", err);
    if (rc)
        return;
    const layer_weights *w = &q.layers[0];
    size_t want_bytes = 0;
    for (int l = 0; l < 5; l++) {
        const mat_t *m[] = { &q.layers[l].wq, &q.layers[l].wk, &q.layers[l].wv, &q.layers[l].wo,
                             &q.layers[l].w_gate, &q.layers[l].w_up, &q.layers[l].w_down };
        for (int k = 0; k < 7; k++)
            want_bytes += dtype_matrix_size(m[k]->dtype, m[k]->rows, m[k]->cols);
    }
    want_bytes += dtype_matrix_size(q.lm_head.dtype, q.lm_head.rows, q.lm_head.cols);
    test_result(w->wq.dtype == DTYPE_Q8_0 && w->w_gate.dtype == DTYPE_Q8_0 && w->w_down.dtype == DTYPE_F16 &&
                    q.tok_embed.dtype == DTYPE_Q8_0 && q.lm_head.data == q.tok_embed.data &&
                    !strcmp(q.dtypes, "q8_0+f16") && q.weight_bytes == want_bytes,
                "q8_0 at load: matrices q8_0, rows of 172 values f16, weight_bytes counts real bytes",
                "wq %s, w_down %s, dtypes %s, weight_bytes %zu vs %zu", dtype_name(w->wq.dtype),
                dtype_name(w->w_down.dtype), q.dtypes, q.weight_bytes, want_bytes);

    /* The same quantization written as a chunk, loaded as stored. */
    snprintf(chunk, sizeof(chunk), "%s/q8.safetensors", tmpdir);
    tensor_source *src = tsrc_open(src_path, err);
    st_writer *wr = st_writer_new();
    rc = src ? 0 : -1;
    for (int i = 0; rc == 0 && i < tsrc_count(src); i++) {
        const tensor_info *t = tsrc_get(src, i);
        dtype_t dt = t->ndim == 2 ? model_matrix_dtype(DTYPE_Q8_0, t->dtype, t->shape[1]) : t->dtype;
        rc = st_writer_add(wr, t->name, dt, t->ndim, t->shape, t->data, t->dtype);
    }
    int64_t bad_shape[2] = { 64, 172 };
    int rc_bad = src ? st_writer_add(wr, "bad", DTYPE_Q8_0, 2, bad_shape, tsrc_get(src, 0)->data, DTYPE_F32) : 0;
    if (rc == 0)
        rc = st_writer_finish(wr, chunk, NULL, NULL, err);
    st_writer_free(wr);
    tsrc_close(src);
    test_result(rc_bad == MDI_EARG, "writer refuses Q8_0 rows of 172 values", "rc %d", rc_bad);
    sl.dtype = DTYPE_COUNT;
    model_config cfg = q.cfg;
    rc = rc ? rc : model_load(&c, chunk, &cfg, &sl, err);
    test_result(rc == 0, "load a q8_0 chunk", "%s", err);
    if (rc) {
        model_free(&q);
        return;
    }
    const tensor_info *tq = tsrc_find(c.src, "model.layers.2.self_attn.q_proj.weight");
    test_result(c.layers[2].wq.dtype == DTYPE_Q8_0 && tq && c.layers[2].wq.data == tq->data &&
                    c.layers[2].w_down.dtype == DTYPE_F32,
                "q8_0 chunk, auto: block matrices borrowed from the mapping, f16 as f32", "wq %s, w_down %s",
                dtype_name(c.layers[2].wq.dtype), dtype_name(c.layers[2].w_down.dtype));
    /* same weights bytes: same logits as quantizing at load, bit for bit
     * (w_down is f16 there and f32 here, holding the same values) */
    forward_state fq, fc;
    kv_cache kq, kc;
    rc = forward_state_init(&fq, &q, 8, 16, err) || forward_state_init(&fc, &c, 8, 16, err) ||
         kv_cache_init(&kq, &q, 16, DTYPE_F32, err) || kv_cache_init(&kc, &c, 16, DTYPE_F32, err);
    if (!rc) {
        int toks[5] = { 1, 403, 407, 261, 378 }, next = 300;
        float x[8 * 64];
        float lq[512];
        memcpy(lq, forward_tokens(&q, &fq, &kq, toks, 5, 0, x), sizeof(lq));
        float *lc = forward_tokens(&c, &fc, &kc, toks, 5, 0, x);
        int same = !memcmp(lq, lc, sizeof(lq));
        memcpy(lq, forward_tokens(&q, &fq, &kq, &next, 1, 5, x), sizeof(lq));
        lc = forward_tokens(&c, &fc, &kc, &next, 1, 5, x);
        same = same && !memcmp(lq, lc, sizeof(lq));
        test_result(same, "q8_0 at load equals the q8_0 chunk, prefill and decode logits", "differ");
        forward_state_free(&fq);
        forward_state_free(&fc);
        kv_cache_free(&kq);
        kv_cache_free(&kc);
    } else {
        test_result(0, "q8_0 forward state", "%s", err);
    }
    /* a float dtype asked: the chunk's blocks dequantized */
    model d;
    sl.dtype = DTYPE_F32;
    rc = model_load(&d, chunk, &cfg, &sl, err);
    test_result(rc == 0 && d.layers[0].wq.dtype == DTYPE_F32 && d.n_dequantized == 5 * 6 + 1,
                "q8_0 chunk with --dtype f32: dequantized", "rc %d, %d dequantized: %s", rc,
                rc ? 0 : d.n_dequantized, err);
    if (!rc)
        model_free(&d);
    model_free(&c);
    model_free(&q);
}

static void test_malformed(void)
{
    char p[512];
    make_ckpt("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"");
    expect_load_error("unknown model_type", tmpdir, "unknown model_type \"gpt2\"", "config.json");

    make_ckpt("\"intermediate_size\": 172", "\"intermediate_size\": 170");
    expect_load_error("shape mismatch", tmpdir, "expected [170, 64], found [172, 64]", "mlp.gate_proj.weight");

    make_ckpt("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0}");
    expect_load_error("unsupported rope scaling", tmpdir, "rope_scaling type \"yarn\"", "config.json");

    make_ckpt("\"num_hidden_layers\": 5", "\"num_hidden_layers\": \"five\"");
    expect_load_error("config field of the wrong type", tmpdir, "num_hidden_layers", "config.json");

    /* missing tensor: rewrite the file without one of them */
    make_ckpt(NULL, NULL);
    {
        char err[MDI_ERR_LEN];
        snprintf(p, sizeof(p), "%s/model.safetensors", tmpdir);
        tensor_source *src = tsrc_open(p, err);
        st_writer *w = st_writer_new();
        for (int i = 0; i < tsrc_count(src); i++) {
            const tensor_info *t = tsrc_get(src, i);
            if (strcmp(t->name, "model.layers.3.mlp.up_proj.weight"))
                st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->dtype);
        }
        char out[512];
        snprintf(out, sizeof(out), "%s/model2.safetensors", tmpdir);
        int rc = st_writer_finish(w, out, NULL, NULL, err);
        st_writer_free(w);
        tsrc_close(src);
        rename(out, p);
        test_result(rc == 0, "writer writes a safetensors file", "%s", err);
        expect_load_error("missing tensor", tmpdir, "missing tensor model.layers.3.mlp.up_proj.weight",
                          "model.safetensors");
    }

    /* truncated: cut the file in half */
    make_ckpt(NULL, NULL);
    snprintf(p, sizeof(p), "%s/model.safetensors", tmpdir);
    if (truncate(p, 500000) != 0)
        perror("truncate");
    expect_load_error("truncated safetensors", tmpdir, "truncated", "model.safetensors");

    /* bad header: a length that runs past the end, and one that is not JSON */
    {
        uint64_t big = 1ull << 40;
        char buf[64];
        memcpy(buf, &big, 8);
        memcpy(buf + 8, "{}", 2);
        write_file("model.safetensors", buf, 10);
        expect_load_error("header length past the end", tmpdir, "bad header", "model.safetensors");
        uint64_t n = 12;
        memcpy(buf, &n, 8);
        memcpy(buf + 8, "{not json!!}", 12);
        write_file("model.safetensors", buf, 20);
        expect_load_error("header not JSON", tmpdir, "bad header: JSON error", "model.safetensors");
        write_file("model.safetensors", buf, 5);
        expect_load_error("file shorter than its length field", tmpdir, "truncated", "model.safetensors");
        const char *hdr = "{\"model.embed_tokens.weight\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}";
        n = strlen(hdr);
        char big_buf[256];
        memcpy(big_buf, &n, 8);
        memcpy(big_buf + 8, hdr, n);
        memset(big_buf + 8 + n, 0, 8);
        write_file("model.safetensors", big_buf, 16 + n);
        expect_load_error("unsupported dtype", tmpdir, "dtype I64", "model.embed_tokens.weight");
        /* a shape whose element count overflows 64 bits (2^32 * 2^32 * 2): refused */
        hdr = "{\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],"
              "\"data_offsets\":[0,8]}}";
        n = strlen(hdr);
        memcpy(big_buf, &n, 8);
        memcpy(big_buf + 8, hdr, n);
        memset(big_buf + 8 + n, 0, 8);
        write_file("model.safetensors", big_buf, 16 + n);
        expect_load_error("shape whose element count overflows", tmpdir, "too many elements",
                          "model.embed_tokens.weight");
    }

    /* missing config.json */
    snprintf(p, sizeof(p), "%s/config.json", tmpdir);
    unlink(p);
    expect_load_error("missing config.json", tmpdir, "config.json", NULL);

    /* truncated llama2.c checkpoint */
    {
        size_t n;
        char *bin = read_shared("models/stories260K-llama2c/stories260K.bin", &n);
        snprintf(p, sizeof(p), "%s/model.bin", tmpdir);
        FILE *f = fopen(p, "wb");
        fwrite(bin, 1, n / 3, f);
        fclose(f);
        expect_load_error("truncated llama2.c .bin", p, "truncated llama2.c checkpoint", "model.bin");
        int32_t *h = (int32_t *)bin;
        h[3] = 7; /* heads that do not divide dim */
        f = fopen(p, "wb");
        fwrite(bin, 1, n, f);
        fclose(f);
        expect_load_error("bad llama2.c header", p, "bad llama2.c header", "model.bin");
        /* fields whose sizes would overflow: each named */
        static const struct { int field; int32_t value; const char *want; } bad[] = {
            { 5, INT32_MIN, "bad llama2.c header: vocab_size" },
            { 5, -(1 << 25), "bad llama2.c header: vocab_size" },
            { 1, 1 << 30, "bad llama2.c header: hidden_dim" },
            { 2, 1 << 20, "bad llama2.c header: n_layers" },
            { 6, INT32_MAX, "bad llama2.c header: seq_len" },
            { 0, 0, "bad llama2.c header: dim" },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            int32_t hh[7] = { 64, 172, 5, 8, 4, 512, 512 };
            hh[bad[i].field] = bad[i].value;
            memcpy(bin, hh, sizeof(hh));
            f = fopen(p, "wb");
            fwrite(bin, 1, n, f);
            fclose(f);
            char name[96];
            snprintf(name, sizeof(name), "llama2.c header field %d = %d refused", bad[i].field, (int)bad[i].value);
            expect_load_error(name, p, bad[i].want, "model.bin");
        }
        free(bin);
    }
    expect_load_error("no such path", "/nonexistent/ckpt", "/nonexistent/ckpt", NULL);
}

/* Hostile or broken configurations: each refused with one line naming the
 * field, before anything is sized from it. */
static void test_config_limits(void)
{
    static const struct { const char *key, *value, *want; } cases[] = {
        /* 16 * (2^29 + 4) and 8 * (2^29 + 4) wrap to 64 and 32 in int */
        { "head_dim", "536870916", "head_dim" },
        { "num_attention_heads", "5000", "num_attention_heads" },
        { "hidden_size", "-64", "hidden_size" },
        { "hidden_size", "4294967360", "hidden_size" },
        { "intermediate_size", "1e9", "intermediate_size" },
        { "num_hidden_layers", "100000", "num_hidden_layers" },
        { "vocab_size", "-512", "vocab_size" },
        { "vocab_size", "2147483648", "vocab_size" },
        { "num_key_value_heads", "0", "must be positive" },
        { "num_key_value_heads", "3", "not a multiple" },
        { "max_position_embeddings", "0", "must be positive" },
        { "max_position_embeddings", "9999999999", "max_position_embeddings" },
        { "rms_norm_eps", "0", "rms_norm_eps" },
        { "rms_norm_eps", "-1e-5", "rms_norm_eps" },
        { "rms_norm_eps", "1e-300", "rms_norm_eps" },
        { "rope_theta", "0.0", "rope_theta" },
        { "rope_theta", "1e300", "rope_theta" },
        { "rope_theta", "\"10000\"", "rope_theta" },
        { "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": -8}", "factor" },
        { "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 0}", "factor" },
        { "rope_scaling", "{\"rope_type\": \"llama3\", \"low_freq_factor\": 4, \"high_freq_factor\": 4}",
          "high_freq_factor" },
        { "rope_scaling", "{\"rope_type\": \"llama3\", \"original_max_position_embeddings\": 0}",
          "original_max_position_embeddings" },
        { "rope_freq_factors", "[1, 1, 0, 1]", "rope_freq_factors[2]" },
    };
    const char *base = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 172, "
                       "\"num_hidden_layers\": 5, \"num_attention_heads\": 8, \"num_key_value_heads\": 4, "
                       "\"head_dim\": 8, \"vocab_size\": 512, \"max_position_embeddings\": 512}";
    char err[MDI_ERR_LEN];
    model_config c;
    json_t *root = json_loads(base, 0, NULL);
    int rc = model_config_from_json(&c, root, "config.json", err);
    test_result(rc == 0 && c.dim == 64 && c.n_kv_heads == 4, "config limits: the base configuration loads", "%s", err);
    json_decref(root);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        root = json_loads(base, 0, NULL);
        json_t *v = json_loads(cases[i].value, JSON_DECODE_ANY, NULL);
        json_object_set_new(root, cases[i].key, v ? v : json_string("?"));
        err[0] = 0;
        rc = model_config_from_json(&c, root, "config.json", err);
        char name[160];
        snprintf(name, sizeof(name), "config limits: %s = %s refused", cases[i].key, cases[i].value);
        test_result(rc != 0 && strstr(err, cases[i].want) && strstr(err, "config.json") && !strchr(err, '\n'), name,
                    "rc %d: %s", rc, err);
        json_decref(root);
    }
    /* token ids out of range are dropped, not truncated */
    root = json_loads(base, 0, NULL);
    json_object_set_new(root, "bos_token_id", json_integer(-5));
    json_object_set_new(root, "eos_token_id", json_pack("[I, i]", (json_int_t)1 << 40, 2));
    rc = model_config_from_json(&c, root, "config.json", err);
    test_result(rc == 0 && c.bos_id == -1 && c.n_eos == 1 && c.eos_ids[0] == 2,
                "config limits: token ids outside 0..INT_MAX ignored", "rc %d bos %d n_eos %d", rc, c.bos_id, c.n_eos);
    json_decref(root);
}

/* A safetensors header of any length puts the data at any offset: BF16 and
 * Q8_0 tensors starting at an odd byte load (through an aligned copy) to the
 * same weights as when aligned. make asan checks the loads' alignment. */
static void test_unaligned(void)
{
    char err[MDI_ERR_LEN] = "", p[512], q[512];
    make_ckpt(NULL, NULL);
    snprintf(p, sizeof(p), "%s/model.safetensors", tmpdir);
    snprintf(q, sizeof(q), "%s/shifted.safetensors", tmpdir);
    static const dtype_t types[] = { DTYPE_BF16, DTYPE_F16, DTYPE_Q8_0 };
    for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++) {
        dtype_t dt = types[k];
        tensor_source *src = tsrc_open(p, err);
        st_writer *w = st_writer_new();
        for (int i = 0; src && i < tsrc_count(src); i++) {
            const tensor_info *t = tsrc_get(src, i);
            dtype_t to = dtype_row_ok(dt, t->shape[t->ndim - 1]) && t->ndim == 2 ? dt : DTYPE_F16;
            st_writer_add(w, t->name, to, t->ndim, t->shape, t->data, t->dtype);
        }
        char conv[512];
        snprintf(conv, sizeof(conv), "%s/conv.safetensors", tmpdir);
        int rc = src ? st_writer_finish(w, conv, NULL, NULL, err) : -1;
        st_writer_free(w);
        tsrc_close(src);
        /* the same file with one more header byte: every tensor at an odd offset */
        char *buf = NULL;
        size_t n = 0;
        if (rc == 0)
            rc = file_read_all(conv, &buf, &n, err);
        if (rc == 0) {
            uint64_t hlen;
            memcpy(&hlen, buf, 8);
            FILE *f = fopen(q, "wb");
            uint64_t h2 = hlen + 1;
            fwrite(&h2, 8, 1, f);
            fwrite(buf + 8, 1, hlen, f);
            fputc(' ', f);
            fwrite(buf + 8 + hlen, 1, n - 8 - hlen, f);
            fclose(f);
        }
        free(buf);
        model_config cfg;
        snprintf(conv, sizeof(conv), "%s", tmpdir);
        if (rc == 0)
            rc = model_config_load(&cfg, conv, err);
        model a, b;
        model_slice sl = { 0, 5, 1, 1, DTYPE_F32, TSRC_READ };
        int ok = 0;
        snprintf(conv, sizeof(conv), "%s/conv.safetensors", tmpdir);
        if (rc == 0 && model_load(&a, conv, &cfg, &sl, err) == 0) {
            if (model_load(&b, q, &cfg, &sl, err) == 0) {
                ok = !memcmp(a.tok_embed.data, b.tok_embed.data, (size_t)cfg.vocab_size * cfg.dim * 4) &&
                     !memcmp(a.layers[4].w_down.data, b.layers[4].w_down.data, (size_t)cfg.dim * cfg.hidden_dim * 4) &&
                     !memcmp(a.layers[2].wq.data, b.layers[2].wq.data, (size_t)cfg.dim * cfg.dim * 4) &&
                     !memcmp(a.layers[1].attn_norm, b.layers[1].attn_norm, (size_t)cfg.dim * 4);
                model_free(&b);
            }
            model_free(&a);
        }
        char name[96];
        snprintf(name, sizeof(name), "%s tensors at odd offsets load as when aligned", dtype_name(dt));
        test_result(ok, name, "rc %d: %s", rc, err);
    }
}

int main(void)
{
    kernels_init(2);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mdi_test_model_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_layouts_agree();
    test_slices();
    test_matrix_dtype_table();
    test_block_types();
    test_malformed();
    test_config_limits();
    test_unaligned();
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpdir);
    kernels_shutdown();
    return test_failures;
}
