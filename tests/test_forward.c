/*
 * test_forward: batched decode (forward_batch) against each sample run
 * alone, bit for bit, for every weight dtype the kernels support.
 *
 * A random checkpoint with rows of 256 values (so that every block type,
 * K-quants included, holds every matrix) is written to a temporary folder
 * and loaded in each dtype. Eight samples with prompts of different
 * lengths are prefilled one by one and then decode a few steps: alone with
 * a one-sample run state (the reference), then in batches of 1..8 sharing
 * one state. Every logit and every hidden-state value of each row must be
 * the reference's, with F32 and F16 KV caches, on the SIMD and the
 * portable kernels.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "model.h"
#include "safetensors.h"
#include "test.h"
#include "util.h"

#define DIM 256
#define HIDDEN 512
#define LAYERS 2
#define HEADS 8
#define KV_HEADS 4
#define HEAD_DIM 32
#define VOCAB 256
#define MAX_SEQ 32
#define SAMPLES 8
#define STEPS 3

static char tmpdir[256];
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float rng_normalish(float std)
{
    /* sum of uniforms: cheap, deterministic, roughly normal */
    float s = 0;
    for (int i = 0; i < 4; i++) {
        rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
        s += (float)((rng_state >> 40) & 0xffffff) / 16777216.0f - 0.5f;
    }
    return s * std * 1.7f;
}

static float *tensor_new(size_t n, float std, float mean)
{
    float *t = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        t[i] = mean + rng_normalish(std);
    return t;
}

/* The checkpoint: config.json and model.safetensors (F32). */
static int write_checkpoint(char *err)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/config.json", tmpdir);
    FILE *f = fopen(path, "w");
    if (!f)
        return mdi_fail(err, MDI_EIO, "%s: cannot create", path);
    fprintf(f, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d, "
               "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
               "\"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, "
               "\"max_position_embeddings\": %d, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, "
               "\"rope_scaling\": null, \"hidden_act\": \"silu\", \"tie_word_embeddings\": false, "
               "\"bos_token_id\": 1, \"eos_token_id\": 2, \"torch_dtype\": \"float32\"}\n",
            DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB, MAX_SEQ);
    fclose(f);
    st_writer *w = st_writer_new();
    float *keep[64];
    int n_keep = 0;
    int64_t sh_embed[2] = { VOCAB, DIM }, sh_norm[1] = { DIM };
    keep[n_keep] = tensor_new((size_t)VOCAB * DIM, 0.5f, 0);
    st_writer_add(w, "model.embed_tokens.weight", DTYPE_F32, 2, sh_embed, keep[n_keep++], DTYPE_F32);
    for (int l = 0; l < LAYERS; l++) {
        struct { const char *name; int rows, cols; } mats[] = {
            { "self_attn.q_proj", HEADS * HEAD_DIM, DIM },     { "self_attn.k_proj", KV_HEADS * HEAD_DIM, DIM },
            { "self_attn.v_proj", KV_HEADS * HEAD_DIM, DIM },  { "self_attn.o_proj", DIM, HEADS * HEAD_DIM },
            { "mlp.gate_proj", HIDDEN, DIM },                  { "mlp.up_proj", HIDDEN, DIM },
            { "mlp.down_proj", DIM, HIDDEN },
        };
        char name[128];
        for (size_t j = 0; j < sizeof(mats) / sizeof(mats[0]); j++) {
            int64_t sh[2] = { mats[j].rows, mats[j].cols };
            snprintf(name, sizeof(name), "model.layers.%d.%s.weight", l, mats[j].name);
            keep[n_keep] = tensor_new((size_t)mats[j].rows * mats[j].cols, 0.12f, 0);
            st_writer_add(w, name, DTYPE_F32, 2, sh, keep[n_keep++], DTYPE_F32);
        }
        const char *norms[] = { "input_layernorm", "post_attention_layernorm" };
        for (int j = 0; j < 2; j++) {
            snprintf(name, sizeof(name), "model.layers.%d.%s.weight", l, norms[j]);
            keep[n_keep] = tensor_new(DIM, 0.05f, 1);
            st_writer_add(w, name, DTYPE_F32, 1, sh_norm, keep[n_keep++], DTYPE_F32);
        }
    }
    keep[n_keep] = tensor_new(DIM, 0.05f, 1);
    st_writer_add(w, "model.norm.weight", DTYPE_F32, 1, sh_norm, keep[n_keep++], DTYPE_F32);
    keep[n_keep] = tensor_new((size_t)VOCAB * DIM, 0.1f, 0);
    st_writer_add(w, "lm_head.weight", DTYPE_F32, 2, sh_embed, keep[n_keep++], DTYPE_F32);
    snprintf(path, sizeof(path), "%s/model.safetensors", tmpdir);
    int rc = st_writer_finish(w, path, NULL, NULL, err);
    st_writer_free(w);
    for (int i = 0; i < n_keep; i++)
        free(keep[i]);
    return rc;
}

/* Sample s: a prompt of prompt_len(s) tokens, then STEPS decode tokens. */
static int prompt_len(int s) { return 1 + (s * 5) % 9; }
static int token_at(int s, int i) { return (int)((7u * (unsigned)s + 13u * (unsigned)i + 3u) % VOCAB); }

typedef struct {
    float logits[SAMPLES][STEPS + 1][VOCAB];  /* after the prompt, after each decode step */
    float hidden[SAMPLES][STEPS][DIM];        /* each decode step's last layer output */
} reference;

/* Prefills sample s alone into kv; returns 0 or the first mismatch. */
static float *prefill(const model *m, forward_state *fs, kv_cache *kv, int s, float *x)
{
    int toks[16];
    int n = prompt_len(s);
    for (int i = 0; i < n; i++)
        toks[i] = token_at(s, i);
    kv_cache_reset(kv);
    return forward_tokens(m, fs, kv, toks, n, 0, x);
}

static int run_reference(const model *m, dtype_t kv_dtype, reference *ref, char *err)
{
    forward_state fs;
    kv_cache kv;
    float x[16 * DIM];
    int rc = forward_state_init(&fs, m, 16, MAX_SEQ, err);
    if (rc)
        return rc;
    if ((rc = kv_cache_init(&kv, m, MAX_SEQ, kv_dtype, err))) {
        forward_state_free(&fs);
        return rc;
    }
    for (int s = 0; s < SAMPLES; s++) {
        memcpy(ref->logits[s][0], prefill(m, &fs, &kv, s, x), sizeof(ref->logits[s][0]));
        for (int t = 0; t < STEPS; t++) {
            int pos = prompt_len(s) + t, tok = token_at(s, pos);
            float *l = forward_tokens(m, &fs, &kv, &tok, 1, pos, x);
            memcpy(ref->logits[s][t + 1], l, sizeof(ref->logits[s][t + 1]));
            memcpy(ref->hidden[s][t], x, sizeof(ref->hidden[s][t]));
        }
    }
    kv_cache_free(&kv);
    forward_state_free(&fs);
    return 0;
}

/* Batches of 1..SAMPLES samples against the reference. */
static void check_batches(const model *m, dtype_t kv_dtype, const reference *ref, const char *label)
{
    char err[MDI_ERR_LEN], name[160];
    forward_state fs;
    kv_cache kv[SAMPLES];
    float x[16 * DIM];
    forward_row rows[SAMPLES];
    int toks[SAMPLES];
    memset(kv, 0, sizeof(kv));
    int rc = forward_state_init_batch(&fs, m, 16, SAMPLES, MAX_SEQ, err);
    for (int s = 0; s < SAMPLES && !rc; s++)
        rc = kv_cache_init(&kv[s], m, MAX_SEQ, kv_dtype, err);
    snprintf(name, sizeof(name), "%s: batch state", label);
    if (rc) {
        test_result(0, name, "%s", err);
        goto done;
    }
    for (int b = 1; b <= SAMPLES; b++) {
        int same = 1;
        char where[160] = "";
        /* samples b-1, b-2, ...: the batch's rows in another order than
         * the samples' indices, every one at a position of its own */
        for (int i = 0; i < b && same; i++) {
            int s = b - 1 - i;
            if (memcmp(prefill(m, &fs, &kv[s], s, x), ref->logits[s][0], sizeof(ref->logits[s][0]))) {
                same = 0;
                snprintf(where, sizeof(where), "prefill of sample %d", s);
            }
        }
        for (int t = 0; t < STEPS && same; t++) {
            for (int i = 0; i < b; i++) {
                int s = b - 1 - i, pos = prompt_len(s) + t;
                rows[i].kv = &kv[s];
                rows[i].pos = pos;
                toks[i] = token_at(s, pos);
            }
            float *l = forward_batch(m, &fs, rows, toks, b, x);
            for (int i = 0; i < b && same; i++) {
                int s = b - 1 - i;
                if (memcmp(l + (size_t)i * VOCAB, ref->logits[s][t + 1], sizeof(ref->logits[s][t + 1]))) {
                    same = 0;
                    snprintf(where, sizeof(where), "logits of sample %d at step %d", s, t);
                } else if (memcmp(x + (size_t)i * DIM, ref->hidden[s][t], sizeof(ref->hidden[s][t]))) {
                    same = 0;
                    snprintf(where, sizeof(where), "hidden state of sample %d at step %d", s, t);
                } else if (kv[s].len != prompt_len(s) + t + 1) {
                    same = 0;
                    snprintf(where, sizeof(where), "cache of sample %d holds %d positions", s, kv[s].len);
                }
            }
        }
        snprintf(name, sizeof(name), "%s: batch of %d equals each sample alone", label, b);
        test_result(same, name, "%s differs", where);
    }
done:
    for (int s = 0; s < SAMPLES; s++)
        kv_cache_free(&kv[s]);
    forward_state_free(&fs);
}

/* A replay: each sample's prompt prefilled, then its STEPS decode tokens
 * at once through forward_layers_rows (more rows than the state's one
 * sample), against the decode steps one by one: every row's hidden state
 * and the logits after the last, bit for bit. (forward_layers, the
 * prefill kernels, fails this for F32, F16 and BF16 weights.) */
static void check_rows(const model *m, dtype_t kv_dtype, const reference *ref, const char *label)
{
    char err[MDI_ERR_LEN], name[160], where[160] = "";
    forward_state fs;
    kv_cache kv;
    float x[16 * DIM];
    int toks[STEPS];
    int rc = forward_state_init_batch(&fs, m, 16, 1, MAX_SEQ, err);
    if (!rc && (rc = kv_cache_init(&kv, m, MAX_SEQ, kv_dtype, err)))
        forward_state_free(&fs);
    snprintf(name, sizeof(name), "%s: decode tokens replayed as rows equal the steps", label);
    if (rc) {
        test_result(0, name, "%s", err);
        return;
    }
    int same = 1;
    for (int s = 0; s < SAMPLES && same; s++) {
        prefill(m, &fs, &kv, s, x);
        int pos = prompt_len(s);
        for (int t = 0; t < STEPS; t++)
            toks[t] = token_at(s, pos + t);
        forward_embed(m, toks, STEPS, x);
        forward_layers_rows(m, &fs, &kv, x, STEPS, pos);
        for (int t = 0; t < STEPS && same; t++)
            if (memcmp(x + (size_t)t * DIM, ref->hidden[s][t], sizeof(ref->hidden[s][t]))) {
                same = 0;
                snprintf(where, sizeof(where), "hidden state of sample %d, row %d", s, t);
            }
        if (same && memcmp(forward_head(m, &fs, x + (size_t)(STEPS - 1) * DIM), ref->logits[s][STEPS],
                           sizeof(ref->logits[s][STEPS]))) {
            same = 0;
            snprintf(where, sizeof(where), "logits of sample %d after its last row", s);
        }
        if (same && kv.len != pos + STEPS) {
            same = 0;
            snprintf(where, sizeof(where), "cache of sample %d holds %d positions", s, kv.len);
        }
    }
    test_result(same, name, "%s differs", where);
    kv_cache_free(&kv);
    forward_state_free(&fs);
}

static void test_dtype(dtype_t dt, reference *ref)
{
    char err[MDI_ERR_LEN], name[160];
    model m;
    model_slice sl = { 0, LAYERS, 1, 1, dt, TSRC_READ };
    snprintf(name, sizeof(name), "load as %s", dtype_name(dt));
    if (model_load(&m, tmpdir, NULL, &sl, err)) {
        test_result(0, name, "%s", err);
        return;
    }
    int all = 1;
    for (int l = 0; l < LAYERS; l++) {
        const mat_t *ms[] = { &m.layers[l].wq, &m.layers[l].wk, &m.layers[l].wv, &m.layers[l].wo,
                              &m.layers[l].w_gate, &m.layers[l].w_up, &m.layers[l].w_down };
        for (int j = 0; j < 7; j++)
            all &= ms[j]->dtype == dt;
    }
    test_result(all && m.lm_head.dtype == dt, name, "matrices held as %s", m.dtypes);
    dtype_t kv_dtypes[2] = { DTYPE_F32, DTYPE_F16 };
    for (int scalar = 0; scalar < 2; scalar++) {
        kernels_force_scalar(scalar);
        for (int k = 0; k < 2; k++) {
            char label[96];
            snprintf(label, sizeof(label), "%s weights, %s cache, %s", dtype_name(dt), dtype_name(kv_dtypes[k]),
                     scalar ? "portable" : kernels_simd_name());
            if (run_reference(&m, kv_dtypes[k], ref, err)) {
                test_result(0, label, "%s", err);
                continue;
            }
            check_batches(&m, kv_dtypes[k], ref, label);
            check_rows(&m, kv_dtypes[k], ref, label);
        }
    }
    kernels_force_scalar(0);
    model_free(&m);
}

static void test_limits(void)
{
    char err[MDI_ERR_LEN] = "";
    model m;
    model_slice sl = { 0, LAYERS, 1, 1, DTYPE_F32, TSRC_READ };
    if (model_load(&m, tmpdir, NULL, &sl, err)) {
        test_result(0, "load for limits", "%s", err);
        return;
    }
    forward_state fs;
    int rc = forward_state_init_batch(&fs, &m, 4, FORWARD_MAX_SAMPLES + 1, MAX_SEQ, err);
    test_result(rc == MDI_EARG && strstr(err, "samples"), "a batch above FORWARD_MAX_SAMPLES is refused",
                "rc %d: %s", rc, err);
    if (!rc)
        forward_state_free(&fs);
    /* a batch wider than the prefill chunk: buffers hold max(batch, chunk) rows */
    rc = forward_state_init_batch(&fs, &m, 1, 8, MAX_SEQ, err);
    test_result(rc == 0 && fs.max_rows == 8, "8 samples with a prefill chunk of 1", "rc %d: %s", rc, err);
    if (!rc)
        forward_state_free(&fs);
    model_free(&m);
}

int main(void)
{
    char err[MDI_ERR_LEN];
    kernels_init(2);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mdi_test_forward_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    if (write_checkpoint(err)) {
        test_result(0, "write the checkpoint", "%s", err);
        return 1;
    }
    reference *ref = malloc(sizeof(*ref));
    dtype_t dts[] = { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_Q8_0, DTYPE_Q4_0, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K };
    for (size_t i = 0; i < sizeof(dts) / sizeof(dts[0]); i++)
        test_dtype(dts[i], ref);
    test_limits();
    free(ref);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpdir);
    kernels_shutdown();
    return test_failures;
}
