/*
 * gguf_tool: look into GGUF files and write them, with src/gguf.c.
 *
 *   bin/gguf_tool show FILE.gguf            header, metadata and tensors
 *   bin/gguf_tool from-hf SOURCE OUT.gguf [--dtype T] [--split N]
 *       writes a checkpoint (a Hugging Face folder, a .safetensors or a
 *       llama2.c .bin; any tensor source) as GGUF the way llama.cpp's
 *       converter lays it out: ggml tensor names and shape order, the
 *       metadata from the config, and for the llama architecture the q/k
 *       rows permuted to the interleaved rotary order. --dtype converts the
 *       weight matrices (rows not a multiple of the type's block: F16);
 *       norms and biases stay F32. --split N writes N files
 *       OUT-0000i-of-0000N.gguf with split.* keys, layers spread evenly.
 *       For the project's tests: synthetic checkpoints to GGUF.
 */
#include "gguf.h"
#include "model.h"
#include "safetensors.h"
#include "util.h"

#include <jansson.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int show(const char *path)
{
    char err[MDI_ERR_LEN];
    gguf_file *g = gguf_open(path, err);
    if (!g) {
        fprintf(stderr, "gguf_tool: %s\n", err);
        return 1;
    }
    printf("%s: GGUF version %u, %" PRId64 " metadata pairs, %" PRId64 " tensors, alignment %" PRIu64
           ", data at byte %" PRIu64 "\n", path, g->version, g->n_kv, g->n_tensors, g->alignment, g->data_offset);
    for (int64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        printf("  %-48s %-8s ", kv->key, gguf_type_name(kv->type));
        if (kv->type == GGUF_TYPE_STRING) {
            printf("%.*s%s\n", (int)(kv->n > 80 ? 80 : kv->n), (const char *)kv->data, kv->n > 80 ? "..." : "");
        } else if (kv->type == GGUF_TYPE_ARRAY) {
            printf("[%" PRIu64 "] of %s\n", kv->n, gguf_type_name(kv->arr_type));
        } else if (kv->type == GGUF_TYPE_BOOL) {
            printf("%s\n", kv->data[0] ? "true" : "false");
        } else {
            double d;
            gguf_get_float(g, kv->key, &d, err);
            printf("%.9g\n", d);
        }
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char shape[96];
        size_t l = 0;
        for (int d = 0; d < t->n_dims; d++)
            l += (size_t)snprintf(shape + l, sizeof(shape) - l, "%s%" PRId64, d ? ", " : "", t->ne[d]);
        printf("  %-48s %-6s ne [%s] %" PRIu64 " bytes at %" PRIu64 "\n", t->name,
               gguf_ggml_type_name(t->ggml_type), shape, t->nbytes, g->data_offset + t->offset);
    }
    gguf_close(g);
    return 0;
}

static void set_config(gguf_writer *w, const model_config *c)
{
    const char *arch = !strcmp(c->model_type, "mistral") ? "llama" : c->model_type;
    char key[128];
    gguf_writer_set_str(w, "general.architecture", arch);
    gguf_writer_set_str(w, "general.name", "mdi synthetic");
#define U32(suffix, v) snprintf(key, sizeof(key), "%s.%s", arch, suffix), gguf_writer_set_int(w, key, GGUF_TYPE_UINT32, v)
#define F32(suffix, v) snprintf(key, sizeof(key), "%s.%s", arch, suffix), gguf_writer_set_float(w, key, GGUF_TYPE_FLOAT32, v)
    U32("context_length", c->max_seq_len);
    U32("embedding_length", c->dim);
    U32("block_count", c->n_layers);
    U32("feed_forward_length", c->hidden_dim);
    U32("attention.head_count", c->n_heads);
    U32("attention.head_count_kv", c->n_kv_heads);
    if (c->head_dim != c->dim / c->n_heads) {
        U32("attention.key_length", c->head_dim);
        U32("attention.value_length", c->head_dim);
    }
    U32("rope.dimension_count", c->head_dim);
    U32("vocab_size", c->vocab_size);
    F32("rope.freq_base", c->rope_theta);
    F32("attention.layer_norm_rms_epsilon", c->norm_eps);
    if (c->rope_linear > 0) {
        snprintf(key, sizeof(key), "%s.rope.scaling.type", arch);
        gguf_writer_set_str(w, key, "linear");
        F32("rope.scaling.factor", c->rope_linear);
    }
#undef U32
#undef F32
    if (c->bos_id >= 0)
        gguf_writer_set_int(w, "tokenizer.ggml.bos_token_id", GGUF_TYPE_UINT32, c->bos_id);
    if (c->n_eos > 0)
        gguf_writer_set_int(w, "tokenizer.ggml.eos_token_id", GGUF_TYPE_UINT32, c->eos_ids[0]);
}


/* tokenizer.json as GGUF tokenizer metadata: tokens by id, token types
 * (control for special added tokens, user-defined for other added ones,
 * byte for <0xXX>); SentencePiece-style files become model "llama" with
 * scores ordering merges as the merges list does (a token scores minus the
 * rank of the first merge making it), byte-level ones model "gpt2" with the
 * merges and the pre-tokenizer named after the architecture. */
static int set_tokenizer(gguf_writer *w, const char *dir, const model_config *c, char *err)
{
    char path[4096];
    if (path_join(path, sizeof(path), dir, "tokenizer.json") != 0 || !file_exists(path))
        return MDI_OK;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root)
        return mdi_fail(err, MDI_EFORMAT, "%s: JSON error at line %d: %s", path, je.line, je.text);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
    json_t *added = json_object_get(root, "added_tokens");
    char *pt = json_dumps(json_object_get(root, "pre_tokenizer"), 0);
    int byte_level = pt && strstr(pt, "\"ByteLevel\"") != NULL;
    /* each digit apart, then the GPT-2 regex: llama.cpp's name is smollm */
    int digits = byte_level && strstr(pt, "\"Digits\"") && strstr(pt, "\"individual_digits\": true");
    free(pt);
    int n = 0;
    const char *key;
    json_t *v;
    size_t i;
    json_object_foreach(vocab, key, v)
        if (json_integer_value(v) + 1 > n)
            n = (int)json_integer_value(v) + 1;
    json_array_foreach(added, i, v)
        if (json_integer_value(json_object_get(v, "id")) + 1 > n)
            n = (int)json_integer_value(json_object_get(v, "id")) + 1;
    size_t n_merges = json_array_size(merges);
    int n_tok = n;
    char *pads = NULL;
    const char **tok = calloc((size_t)n + 1, sizeof(*tok));
    double *type = calloc((size_t)n + 1, sizeof(double)), *score = calloc((size_t)n + 1, sizeof(double));
    char **mstr = calloc(n_merges + 1, sizeof(*mstr));
    int rc = MDI_OK;
    if (!tok || !type || !score || !mstr) {
        rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
        goto done;
    }
    json_object_foreach(vocab, key, v) {
        int id = (int)json_integer_value(v);
        tok[id] = key;
        type[id] = strlen(key) == 6 && !strncmp(key, "<0x", 3) && key[5] == '>' ? 6 : 1;
        score[id] = 1; /* no merge makes it yet */
    }
    json_array_foreach(added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        tok[id] = json_string_value(json_object_get(v, "content"));
        type[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4;
    }
    /* the model's vocabulary may be padded past the tokenizer's (Qwen):
     * llama.cpp's converter names the extra ids [PADi], type unused */
    if (c->vocab_size > n) {
        const char **t2 = realloc(tok, (size_t)c->vocab_size * sizeof(*tok));
        double *y2 = realloc(type, (size_t)c->vocab_size * sizeof(double));
        double *s2 = y2 ? realloc(score, (size_t)c->vocab_size * sizeof(double)) : NULL;
        tok = t2 ? t2 : tok;
        type = y2 ? y2 : type;
        score = s2 ? s2 : score;
        if (!t2 || !y2 || !s2 || !(pads = malloc((size_t)(c->vocab_size - n) * 24))) {
            rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
            goto done;
        }
        for (int k = n; k < c->vocab_size; k++) {
            tok[k] = pads + (size_t)(k - n) * 24;
            snprintf(pads + (size_t)(k - n) * 24, 24, "[PAD%d]", k);
            type[k] = 5;
            score[k] = 0;
        }
        n_tok = c->vocab_size;
    }
    for (int k = 0; k < n; k++)
        if (!tok[k])
            tok[k] = "";
    json_array_foreach(merges, i, v) {
        const char *a, *b;
        if (json_is_string(v)) {
            a = json_string_value(v);
            const char *sp = strchr(a, ' ');
            if (!sp) {
                rc = mdi_fail(err, MDI_EFORMAT, "%s: merges[%zu] is not \"a b\"", path, i);
                goto done;
            }
            mstr[i] = strdup(a);
            mstr[i][sp - a] = '\0';
            b = mstr[i] + (sp - a) + 1;
            a = mstr[i];
        } else {
            a = json_string_value(json_array_get(v, 0));
            b = json_string_value(json_array_get(v, 1));
            if (!a || !b) {
                rc = mdi_fail(err, MDI_EFORMAT, "%s: merges[%zu] is not [\"a\", \"b\"]", path, i);
                goto done;
            }
            mstr[i] = malloc(strlen(a) + strlen(b) + 2);
            sprintf(mstr[i], "%s%c%s", a, 0, b);
            b = mstr[i] + strlen(a) + 1;
            a = mstr[i];
        }
        char joined[1024];
        snprintf(joined, sizeof(joined), "%s%s", a, b);
        json_t *id = json_object_get(vocab, joined);
        if (id && score[json_integer_value(id)] > 0)
            score[json_integer_value(id)] = -(double)i;
        mstr[i][strlen(a)] = ' '; /* "a b" */
    }
    for (int k = 0; k < n; k++)
        if (score[k] > 0)
            score[k] = 0;
    gguf_writer_set_str(w, "tokenizer.ggml.model", byte_level ? "gpt2" : "llama");
    if (byte_level)
        gguf_writer_set_str(w, "tokenizer.ggml.pre", digits ? "smollm" :
                            !strncmp(c->model_type, "qwen", 4) ? "qwen2" : "llama-bpe");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tok, (uint64_t)n_tok);
    if (!byte_level)
        gguf_writer_set_arr_num(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, score, (uint64_t)n_tok);
    gguf_writer_set_arr_num(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, type, (uint64_t)n_tok);
    if (byte_level)
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)mstr, n_merges);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", c->bos_id >= 0 && strncmp(c->model_type, "qwen", 4));
    if (path_join(path, sizeof(path), dir, "tokenizer_config.json") == 0 && file_exists(path)) {
        json_t *tc = json_load_file(path, JSON_DECODE_INT_AS_REAL, &je);
        const char *tmpl = json_string_value(json_object_get(tc, "chat_template"));
        if (tmpl)
            gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
        json_t *pad = json_object_get(tc, "pad_token");
        const char *pad_s = json_is_object(pad) ? json_string_value(json_object_get(pad, "content"))
                                                : json_string_value(pad);
        for (int k = 0; pad_s && k < n; k++)
            if (!strcmp(tok[k], pad_s)) {
                gguf_writer_set_int(w, "tokenizer.ggml.padding_token_id", GGUF_TYPE_UINT32, k);
                break;
            }
        json_decref(tc);
    }
done:
    for (i = 0; mstr && i < n_merges; i++)
        free(mstr[i]);
    free(mstr);
    free(pads);
    free(tok);
    free(type);
    free(score);
    json_decref(root);
    return rc;
}

/* HF q/k rows (rotate-half, per head: first halves then second halves) to
 * the interleaved order: row h*hd + 2i + p <- row h*hd + p*hd/2 + i. */
static void interleave_rows(float *dst, const float *src, int64_t rows, int hd, int64_t cols)
{
    for (int64_t h = 0; h < rows / hd; h++)
        for (int i = 0; i < hd / 2; i++)
            for (int p = 0; p < 2; p++)
                memcpy(dst + (size_t)(h * hd + 2 * i + p) * cols, src + (size_t)(h * hd + p * hd / 2 + i) * cols,
                       (size_t)cols * sizeof(float));
}

static int from_hf(const char *src, const char *out, const char *dtype_s, int n_split)
{
    char err[MDI_ERR_LEN];
    model_config c;
    dtype_t want = DTYPE_COUNT;
    if (dtype_s && dtype_parse(dtype_s, &want) != 0) {
        fprintf(stderr, "gguf_tool: --dtype: unknown dtype \"%s\" (accepted: %s)\n", dtype_s, dtype_names());
        return 2;
    }
    if (model_config_load(&c, src, err) != 0) {
        fprintf(stderr, "gguf_tool: %s\n", err);
        return 1;
    }
    if (strcmp(c.model_type, "llama") && strcmp(c.model_type, "mistral") && strcmp(c.model_type, "qwen2") &&
        strcmp(c.model_type, "qwen3")) {
        fprintf(stderr, "gguf_tool: %s: model_type %s cannot be written as GGUF\n", src, c.model_type);
        return 1;
    }
    if (c.sliding_window) {
        fprintf(stderr, "gguf_tool: %s: a sliding attention window is not written to GGUF\n", src);
        return 1;
    }
    int interleave = strcmp(c.model_type, "qwen2") && strcmp(c.model_type, "qwen3") && !c.rope_interleaved;
    tensor_source *ts = tsrc_open(src, err);
    if (!ts) {
        fprintf(stderr, "gguf_tool: %s\n", err);
        return 1;
    }
    if (n_split < 1)
        n_split = 1;
    gguf_writer **w = calloc((size_t)n_split, sizeof(*w));
    int rc = 0;
    for (int k = 0; k < n_split; k++) {
        w[k] = gguf_writer_new();
        if (k == 0) {
            set_config(w[k], &c);
            char dir[4096];
            if (dir_exists(src))
                snprintf(dir, sizeof(dir), "%s", src);
            else
                path_dirname(src, dir, sizeof(dir));
            if (set_tokenizer(w[k], dir, &c, err) != 0) {
                fprintf(stderr, "gguf_tool: %s\n", err);
                rc = 1;
            }
        }
        if (n_split > 1) {
            gguf_writer_set_int(w[k], "split.no", GGUF_TYPE_UINT16, k);
            gguf_writer_set_int(w[k], "split.count", GGUF_TYPE_UINT16, n_split);
            gguf_writer_set_int(w[k], "split.tensors.count", GGUF_TYPE_INT32, tsrc_count(ts));
        }
    }
    for (int i = 0; i < tsrc_count(ts) && !rc; i++) {
        const tensor_info *t = tsrc_get(ts, i);
        char name[TENSOR_NAME_MAX];
        if (tsrc_gguf_name(t->name, name, sizeof(name)) != 0)
            continue; /* rotary tables and the like: recomputed */
        int64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1, n = 1;
        for (int d = 0; d < t->ndim; d++)
            n *= t->shape[d];
        dtype_t use = t->ndim == 2 ? model_matrix_dtype(want, t->dtype, cols) : DTYPE_F32;
        if (dtype_is_block(use) && !dtype_row_ok(use, cols))
            use = DTYPE_F16;
        if (use == DTYPE_COUNT)
            use = t->dtype;
        float *f = malloc((size_t)n * sizeof(float)), *g = malloc((size_t)n * sizeof(float));
        void *q = malloc(dtype_row_size(use, n) + 1);
        if (!f || !g || !q) {
            fprintf(stderr, "gguf_tool: out of memory\n");
            return 1;
        }
        dtype_convert(f, DTYPE_F32, t->data, t->dtype, (size_t)n);
        if (interleave && (strstr(t->name, "q_proj.weight") || strstr(t->name, "k_proj.weight"))) {
            interleave_rows(g, f, t->shape[0], c.head_dim, cols);
            memcpy(f, g, (size_t)n * sizeof(float));
        }
        dtype_convert(q, use, f, DTYPE_F32, (size_t)n);
        int64_t ne[GGUF_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++)
            ne[d] = t->shape[t->ndim - 1 - d];
        /* split k holds a contiguous share of the layers; the rest goes first or last */
        int layer = -1, part = 0;
        sscanf(t->name, "model.layers.%d.", &layer);
        if (layer >= 0)
            part = (int)((int64_t)layer * n_split / c.n_layers);
        else if (strcmp(t->name, "model.embed_tokens.weight"))
            part = n_split - 1;
        rc = gguf_writer_add_tensor(w[part], name, use, t->ndim, ne, q);
        if (rc)
            fprintf(stderr, "gguf_tool: %s: cannot add tensor %s as %s\n", out, name, dtype_name(use));
        free(f);
        free(g);
        free(q);
    }
    /* Llama 3.1 scaling as llama.cpp's converter stores it: rope_freqs.weight,
     * a divisor of each inverse frequency */
    if (!rc && c.rope_llama3) {
        float ff[MODEL_MAX_ROPE_FACTORS];
        const double pi = 3.14159265358979323846;
        double low_wl = c.rope_original_max_pos / c.rope_low_freq_factor;
        double high_wl = c.rope_original_max_pos / c.rope_high_freq_factor;
        for (int i = 0; i < c.head_dim / 2; i++) {
            double wl = 2 * pi / pow((double)c.rope_theta, -2.0 * i / c.head_dim);
            if (wl < high_wl) {
                ff[i] = 1.0f;
            } else if (wl > low_wl) {
                ff[i] = c.rope_factor;
            } else {
                double smooth = (c.rope_original_max_pos / wl - c.rope_low_freq_factor) /
                                (c.rope_high_freq_factor - c.rope_low_freq_factor);
                ff[i] = (float)(1.0 / ((1 - smooth) / c.rope_factor + smooth));
            }
        }
        int64_t ne[1] = { c.head_dim / 2 };
        rc = gguf_writer_add_tensor(w[0], "rope_freqs.weight", DTYPE_F32, 1, ne, ff);
    }
    for (int k = 0; k < n_split && !rc; k++) {
        char path[4096];
        if (n_split > 1) {
            size_t l = strlen(out);
            if (str_has_suffix(out, ".gguf"))
                l -= 5;
            snprintf(path, sizeof(path), "%.*s-%05d-of-%05d.gguf", (int)l, out, k + 1, n_split);
        } else {
            snprintf(path, sizeof(path), "%s", out);
        }
        if ((rc = gguf_writer_write(w[k], path, err)))
            fprintf(stderr, "gguf_tool: %s\n", err);
    }
    for (int k = 0; k < n_split; k++)
        gguf_writer_free(w[k]);
    free(w);
    tsrc_close(ts);
    return rc ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gguf_tool show FILE.gguf\n"
               "       gguf_tool from-hf SOURCE OUT.gguf [--dtype %s] [--split N]\n", dtype_names());
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "show"))
        return show(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "from-hf")) {
        const char *dtype = NULL;
        int split = 1;
        for (int i = 4; i < argc; i++) {
            if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
                dtype = argv[++i];
            } else if (!strcmp(argv[i], "--split") && i + 1 < argc) {
                split = atoi(argv[++i]);
            } else {
                usage(stderr);
                return 2;
            }
        }
        return from_hf(argv[2], argv[3], dtype, split);
    }
    usage(argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) ? stdout : stderr);
    return argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) ? 0 : 2;
}
