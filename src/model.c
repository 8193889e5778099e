/* model: configuration and weights of one node's slice; see model.h. */
#include "model.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- configuration ---- */

static int get_int(json_t *root, const char *key, int required, int dflt, int max, int *out,
                   const char *fname, char *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return mdi_fail(err, MDI_EFORMAT, "%s: missing field \"%s\"", fname, key);
        *out = dflt;
        return MDI_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return mdi_fail(err, MDI_EFORMAT, "%s: field \"%s\" must be an integer in 0..%d", fname, key, max);
    *out = (int)json_integer_value(v);
    return MDI_OK;
}

/* A finite number; positive unless zero_ok. */
static int get_num(json_t *root, const char *key, double dflt, int zero_ok, float *out, const char *fname,
                   char *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = (float)dflt;
        return MDI_OK;
    }
    double x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!isfinite(x) || !isfinite((float)x) || x < 0 || (x == 0 && !zero_ok) || (x > 0 && (float)x == 0))
        return mdi_fail(err, MDI_EFORMAT, "%s: field \"%s\" must be a finite %s number", fname, key,
                        zero_ok ? "non-negative" : "positive");
    *out = (float)x;
    return MDI_OK;
}

/* A token id from the configuration: ids outside 0..INT_MAX are ignored. */
static int token_id(json_t *v, int *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
        return 0;
    *out = (int)json_integer_value(v);
    return 1;
}

static void set_eos(model_config *c, json_t *v)
{
    if (json_is_integer(v)) {
        c->n_eos = token_id(v, &c->eos_ids[0]);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        c->n_eos = 0;
        json_array_foreach(v, i, e) {
            if (c->n_eos < MODEL_MAX_EOS && token_id(e, &c->eos_ids[c->n_eos]))
                c->n_eos++;
        }
    }
}

int model_config_from_json(model_config *c, json_t *root, const char *fname, char *err)
{
    memset(c, 0, sizeof(*c));
    if (!json_is_object(root))
        return mdi_fail(err, MDI_EFORMAT, "%s: not a JSON object", fname);
    json_t *mt = json_object_get(root, "model_type");
    if (!json_is_string(mt))
        return mdi_fail(err, MDI_EFORMAT, "%s: missing field \"model_type\"", fname);
    const char *type = json_string_value(mt);
    if (strcmp(type, "llama") && strcmp(type, "mistral") && strcmp(type, "qwen2") && strcmp(type, "qwen3"))
        return mdi_fail(err, MDI_EUNSUPPORTED,
                        "%s: unknown model_type \"%s\" (supported: llama, mistral, qwen2, qwen3)", fname, type);
    snprintf(c->model_type, sizeof(c->model_type), "%s", type);
    int rc;
    if ((rc = get_int(root, "hidden_size", 1, 0, MODEL_MAX_DIM, &c->dim, fname, err)) ||
        (rc = get_int(root, "intermediate_size", 1, 0, MODEL_MAX_HIDDEN, &c->hidden_dim, fname, err)) ||
        (rc = get_int(root, "num_hidden_layers", 1, 0, MODEL_MAX_LAYERS, &c->n_layers, fname, err)) ||
        (rc = get_int(root, "num_attention_heads", 1, 0, MODEL_MAX_HEADS, &c->n_heads, fname, err)) ||
        (rc = get_int(root, "vocab_size", 1, 0, MODEL_MAX_VOCAB, &c->vocab_size, fname, err)) ||
        (rc = get_int(root, "num_key_value_heads", 0, c->n_heads, MODEL_MAX_HEADS, &c->n_kv_heads, fname, err)) ||
        (rc = get_int(root, "max_position_embeddings", 0, 2048, MODEL_MAX_SEQ, &c->max_seq_len, fname, err)))
        return rc;
    if (c->dim == 0 || c->hidden_dim == 0 || c->n_layers == 0 || c->n_heads == 0 || c->vocab_size == 0 ||
        c->n_kv_heads == 0 || c->max_seq_len == 0)
        return mdi_fail(err, MDI_EFORMAT, "%s: hidden_size, intermediate_size, num_hidden_layers, "
                        "num_attention_heads, num_key_value_heads, vocab_size and max_position_embeddings "
                        "must be positive", fname);
    if (c->n_heads % c->n_kv_heads != 0)
        return mdi_fail(err, MDI_EFORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                        fname, c->n_heads, c->n_kv_heads);
    if ((rc = get_int(root, "head_dim", 0, c->dim / c->n_heads, MODEL_MAX_HEAD_DIM, &c->head_dim, fname, err)))
        return rc;
    if (c->head_dim == 0 || c->head_dim % 2 != 0)
        return mdi_fail(err, MDI_EFORMAT, "%s: head_dim %d must be positive and even", fname, c->head_dim);
    /* the widths the forward pass indexes with int: in 64-bit, then bounded */
    int64_t q_dim = (int64_t)c->n_heads * c->head_dim;
    if (q_dim > MODEL_MAX_DIM)
        return mdi_fail(err, MDI_EFORMAT, "%s: num_attention_heads %d * head_dim %d = %lld exceeds %d", fname,
                        c->n_heads, c->head_dim, (long long)q_dim, MODEL_MAX_DIM);
    if ((rc = get_num(root, "rms_norm_eps", 1e-6, 0, &c->norm_eps, fname, err)) ||
        (rc = get_num(root, "rope_theta", 10000.0, 0, &c->rope_theta, fname, err)))
        return rc;
    json_t *act = json_object_get(root, "hidden_act");
    if (json_is_string(act) && strcmp(json_string_value(act), "silu"))
        return mdi_fail(err, MDI_EUNSUPPORTED, "%s: hidden_act \"%s\" (supported: silu)", fname, json_string_value(act));
    json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        json_t *rt = json_object_get(rs, "rope_type");
        if (!rt)
            rt = json_object_get(rs, "type");
        const char *rts = json_is_string(rt) ? json_string_value(rt) : "?";
        if (!strcmp(rts, "llama3")) {
            c->rope_llama3 = 1;
            if ((rc = get_num(rs, "factor", 8.0, 0, &c->rope_factor, fname, err)) ||
                (rc = get_num(rs, "low_freq_factor", 1.0, 0, &c->rope_low_freq_factor, fname, err)) ||
                (rc = get_num(rs, "high_freq_factor", 4.0, 0, &c->rope_high_freq_factor, fname, err)) ||
                (rc = get_int(rs, "original_max_position_embeddings", 0, 8192, MODEL_MAX_SEQ,
                              &c->rope_original_max_pos, fname, err)))
                return rc;
            if (!(c->rope_high_freq_factor > c->rope_low_freq_factor) || c->rope_original_max_pos == 0)
                return mdi_fail(err, MDI_EFORMAT, "%s: rope_scaling: high_freq_factor %g must exceed low_freq_factor "
                                "%g, and original_max_position_embeddings be positive", fname,
                                (double)c->rope_high_freq_factor, (double)c->rope_low_freq_factor);
        } else if (!strcmp(rts, "linear")) {
            if ((rc = get_num(rs, "factor", 0.0, 1, &c->rope_linear, fname, err)))
                return rc;
            if (!(c->rope_linear > 0))
                return mdi_fail(err, MDI_EFORMAT, "%s: rope_scaling linear needs a positive factor", fname);
        } else if (strcmp(rts, "default")) {
            return mdi_fail(err, MDI_EUNSUPPORTED, "%s: rope_scaling type \"%s\" (supported: llama3, linear)", fname,
                            rts);
        }
    }
    c->rope_interleaved = json_is_true(json_object_get(root, "rope_interleaved"));
    json_t *ff = json_object_get(root, "rope_freq_factors");
    if (ff && !json_is_null(ff)) {
        if (!json_is_array(ff) || json_array_size(ff) != (size_t)c->head_dim / 2 ||
            json_array_size(ff) > MODEL_MAX_ROPE_FACTORS)
            return mdi_fail(err, MDI_EFORMAT, "%s: rope_freq_factors must be an array of head_dim / 2 = %d numbers",
                            fname, c->head_dim / 2);
        if (c->rope_llama3)
            return mdi_fail(err, MDI_EFORMAT, "%s: rope_freq_factors and rope_scaling llama3 both given", fname);
        for (size_t i = 0; i < json_array_size(ff); i++) {
            json_t *x = json_array_get(ff, i);
            if (!json_is_number(x) || !(json_number_value(x) > 0) || !isfinite((float)json_number_value(x)))
                return mdi_fail(err, MDI_EFORMAT, "%s: rope_freq_factors[%zu] must be a positive number", fname, i);
            c->rope_freq_factors[i] = (float)json_number_value(x);
        }
        c->n_rope_freq_factors = (int)json_array_size(ff);
    }
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    c->tie_embeddings = json_is_true(tie);
    c->attn_bias = !strcmp(type, "qwen2");
    c->qk_norm = !strcmp(type, "qwen3");
    json_t *ab = json_object_get(root, "attention_bias");
    if (json_is_true(ab) && strcmp(type, "qwen2"))
        return mdi_fail(err, MDI_EUNSUPPORTED, "%s: attention_bias true (o_proj bias) is not supported for %s", fname, type);
    if (json_is_true(json_object_get(root, "mlp_bias")))
        return mdi_fail(err, MDI_EUNSUPPORTED, "%s: mlp_bias true is not supported", fname);
    /* Mistral's sliding window; Qwen2 lists one but uses it only with
     * use_sliding_window, and then on some layers only: not supported. */
    json_t *sw = json_object_get(root, "sliding_window");
    if (!strcmp(type, "mistral") && json_is_integer(sw) && json_integer_value(sw) > 0)
        c->sliding_window = json_integer_value(sw) < MODEL_MAX_SEQ ? (int)json_integer_value(sw) : 0;
    if ((!strcmp(type, "qwen2") || !strcmp(type, "qwen3")) && json_is_true(json_object_get(root, "use_sliding_window")))
        return mdi_fail(err, MDI_EUNSUPPORTED, "%s: use_sliding_window true is not supported for %s", fname, type);
    json_t *bos = json_object_get(root, "bos_token_id");
    if (!token_id(bos, &c->bos_id))
        c->bos_id = -1;
    set_eos(c, json_object_get(root, "eos_token_id"));
    return MDI_OK;
}

int model_config_load(model_config *c, const char *path, char *err)
{
    char p[4096], dir[4096];
    int rc;
    if (dir_exists(path)) {
        snprintf(dir, sizeof(dir), "%s", path);
    } else {
        path_dirname(path, dir, sizeof(dir));
    }
    if (path_join(p, sizeof(p), dir, "config.json") != 0)
        return mdi_fail(err, MDI_EARG, "%s: path too long", dir);
    /* a GGUF carries its config in its metadata */
    int gguf = !dir_exists(path) && str_has_suffix(path, ".gguf");
    if (file_exists(p) && !gguf) {
        json_error_t jerr;
        json_t *root = json_load_file(p, 0, &jerr);
        if (!root)
            return mdi_fail(err, MDI_EFORMAT, "%s: JSON error at line %d column %d: %s", p, jerr.line,
                            jerr.column, jerr.text);
        rc = model_config_from_json(c, root, p, err);
        json_decref(root);
    } else {
        /* a llama2.c checkpoint carries its config in its header */
        char st[4096];
        if (dir_exists(path) && path_join(st, sizeof(st), dir, "model.safetensors") == 0 &&
            (file_exists(st) || (path_join(st, sizeof(st), dir, "model.safetensors.index.json") == 0 && file_exists(st))))
            return mdi_fail(err, MDI_EIO, "%s: missing config.json beside the safetensors weights", dir);
        tensor_source *s = tsrc_open(path, err);
        if (!s)
            return MDI_EFORMAT;
        json_t *lc = tsrc_llama2c_config(s);
        if (!lc) {
            tsrc_close(s);
            return mdi_fail(err, MDI_EIO, "%s: missing config.json", dir);
        }
        rc = model_config_from_json(c, lc, path, err);
        tsrc_close(s);
    }
    if (rc)
        return rc;
    if (!gguf && path_join(p, sizeof(p), dir, "generation_config.json") == 0 && file_exists(p)) {
        json_t *g = json_load_file(p, 0, NULL);
        if (g) {
            json_t *b = json_object_get(g, "bos_token_id");
            token_id(b, &c->bos_id);
            json_t *e = json_object_get(g, "eos_token_id");
            if (json_is_integer(e) || json_is_array(e))
                set_eos(c, e);
            json_decref(g);
        }
    }
    return MDI_OK;
}

json_t *model_config_to_json(const model_config *c)
{
    json_t *o = json_object();
    json_object_set_new(o, "model_type", json_string(c->model_type));
    json_object_set_new(o, "hidden_size", json_integer(c->dim));
    json_object_set_new(o, "intermediate_size", json_integer(c->hidden_dim));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(o, "rms_norm_eps", json_real(c->norm_eps));
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    if (c->rope_llama3)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor",
                                      (double)c->rope_factor, "low_freq_factor", (double)c->rope_low_freq_factor,
                                      "high_freq_factor", (double)c->rope_high_freq_factor,
                                      "original_max_position_embeddings", c->rope_original_max_pos));
    else if (c->rope_linear > 0)
        json_object_set_new(o, "rope_scaling", json_pack("{s:s, s:f}", "rope_type", "linear", "factor",
                                                         (double)c->rope_linear));
    else
        json_object_set_new(o, "rope_scaling", json_null());
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    if (c->rope_interleaved)
        json_object_set_new(o, "rope_interleaved", json_true());
    if (c->n_rope_freq_factors) {
        json_t *ff = json_array();
        for (int i = 0; i < c->n_rope_freq_factors; i++)
            json_array_append_new(ff, json_real(c->rope_freq_factors[i]));
        json_object_set_new(o, "rope_freq_factors", ff);
    }
    if (c->sliding_window)
        json_object_set_new(o, "sliding_window", json_integer(c->sliding_window));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "bos_token_id", c->bos_id >= 0 ? json_integer(c->bos_id) : json_null());
    json_t *eos = json_array();
    for (int i = 0; i < c->n_eos; i++)
        json_array_append_new(eos, json_integer(c->eos_ids[i]));
    json_object_set_new(o, "eos_token_id", eos);
    return o;
}

/* ---- weights ---- */

void model_tensor_name(char *buf, int layer, const char *suffix)
{
    snprintf(buf, TENSOR_NAME_MAX, "model.layers.%d.%s", layer, suffix);
}

static void *model_own(model *m, size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        return NULL;
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 32;
        void **o = realloc(m->owned, (size_t)cap * sizeof(void *));
        if (!o) {
            free(p);
            return NULL;
        }
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return p;
}

static int find_checked(const model *m, const char *path, const char *name, int64_t d0, int64_t d1,
                        const tensor_info **out, char *err)
{
    const tensor_info *t = tsrc_find(m->src, name);
    if (!t) {
        int n = tsrc_count(m->src);
        const char *file = n ? tsrc_get(m->src, 0)->file : path;
        const char *last = n ? tsrc_get(m->src, n - 1)->file : path;
        return mdi_fail(err, MDI_EFORMAT, "%s: missing tensor %s (looked in %s%s)", path, name, file,
                        strcmp(file, last) ? " and the other shards" : "");
    }
    int want_ndim = d1 ? 2 : 1;
    int ok = t->ndim == want_ndim && t->shape[0] == d0 && (want_ndim == 1 || t->shape[1] == d1);
    if (!ok) {
        char found[96] = "[";
        for (int i = 0; i < t->ndim; i++) {
            size_t l = strlen(found);
            snprintf(found + l, sizeof(found) - l, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        }
        strncat(found, "]", sizeof(found) - strlen(found) - 1);
        if (d1)
            return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s: shape mismatch: expected [%lld, %lld], found %s (%s)",
                            path, name, (long long)d0, (long long)d1, found, t->file);
        return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s: shape mismatch: expected [%lld], found %s (%s)", path,
                        name, (long long)d0, found, t->file);
    }
    *out = t;
    return MDI_OK;
}

/* Once a mapped tensor has been converted its pages are never read again:
 * drop them so that resident memory holds one copy of the weights, not two.
 * Only whole pages inside the tensor are released (MADV_DONTNEED on a
 * private read-only file mapping just forgets the cached pages). */
static void release_pages(const void *data, size_t nbytes)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t begin = ((uintptr_t)data + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)data + nbytes) & ~(page - 1);
    if (end > begin)
        madvise((void *)begin, end - begin, MADV_DONTNEED);
}

typedef struct {
    void *dst;
    dtype_t dst_t;
    const void *src;
    dtype_t src_t;
    size_t n;
} convert_task;

static void convert_worker(void *arg, int ith, int nth)
{
    convert_task *c = arg;
    /* shares of whole steps of 256 values: a multiple of every block size */
    size_t per = ((c->n + (size_t)nth - 1) / (size_t)nth + 255) & ~(size_t)255;
    size_t begin = per * (size_t)ith, end = begin + per < c->n ? begin + per : c->n;
    if (begin < end)
        dtype_convert((char *)c->dst + dtype_row_size(c->dst_t, (int64_t)begin), c->dst_t,
                      (const char *)c->src + dtype_row_size(c->src_t, (int64_t)begin), c->src_t, end - begin);
}

dtype_t model_matrix_dtype(dtype_t want, dtype_t stored, int64_t cols)
{
    if (want == DTYPE_COUNT) /* auto: as stored, F16 as F32 */
        return stored == DTYPE_F16 ? DTYPE_F32 : stored;
    if (!dtype_is_block(want) || dtype_is_block(stored))
        return dtype_is_block(want) ? stored : want;
    if (dtype_row_ok(want, cols))
        return want;
    return model_fallback_dtype(stored);
}

dtype_t model_fallback_dtype(dtype_t stored)
{
    return stored == DTYPE_BF16 ? DTYPE_BF16 : DTYPE_F16;
}

/* The alignment a borrowed row of t needs: a float's size, or the block's
 * f16 scale (Q8_K's scale is an f32). */
static uintptr_t dtype_align(dtype_t t)
{
    if (t == DTYPE_Q8_K)
        return sizeof(float);
    return dtype_is_block(t) ? sizeof(uint16_t) : dtype_get(t)->block_bytes;
}

/* The tensor's bytes where its type's loads are aligned: the data itself,
 * or (a safetensors header of any length puts data at any offset) an aligned
 * copy in *tmp, which the caller frees. NULL when out of memory. */
static const void *aligned_source(const tensor_info *t, void **tmp)
{
    *tmp = NULL;
    if ((uintptr_t)t->data % dtype_align(t->dtype) == 0)
        return t->data;
    *tmp = malloc(t->nbytes ? t->nbytes : 1);
    if (*tmp)
        memcpy(*tmp, t->data, t->nbytes);
    return *tmp;
}

/* A matrix in the dtype model_matrix_dtype chooses: borrowed from the
 * mapping when stored so (and aligned), else converted into a buffer the
 * model owns. */
static int load_mat(model *m, const char *path, const char *name, int rows, int cols, mat_t *out, char *err)
{
    const tensor_info *t;
    int rc = find_checked(m, path, name, rows, cols, &t, err);
    if (rc)
        return rc;
    dtype_t want = m->slice.dtype, use = model_matrix_dtype(want, t->dtype, cols);
    out->rows = rows;
    out->cols = cols;
    out->dtype = use;
    int want_block = want != DTYPE_COUNT && dtype_is_block(want);
    if (want_block && !dtype_is_block(use) && !dtype_is_block(t->dtype))
        log_info("%s: %s has rows of %d values, not a multiple of %d: kept as %s instead of %s", path, name, cols,
                 dtype_block_size(want), dtype_name(use), dtype_name(want));
    if (dtype_is_block(t->dtype) && !dtype_is_block(use))
        m->n_dequantized++;
    if (t->dtype == use && (uintptr_t)t->data % dtype_align(use) == 0) {
        out->data = t->data;
        tsrc_prefault(t->data, t->nbytes);
        return MDI_OK;
    }
    size_t n = (size_t)rows * cols;
    void *buf = model_own(m, dtype_matrix_size(use, rows, cols));
    if (!buf)
        return mdi_fail(err, MDI_ENOMEM, "%s: out of memory converting %s", path, name);
    void *tmp = NULL;
    const void *src = aligned_source(t, &tmp);
    if (!src)
        return mdi_fail(err, MDI_ENOMEM, "%s: out of memory converting %s", path, name);
    convert_task ct = { buf, use, src, t->dtype, n };
    kernels_parallel(convert_worker, &ct);
    free(tmp);
    out->data = buf;
    if (t->mapped)
        release_pages(t->data, t->nbytes);
    return MDI_OK;
}

/* A vector, always F32. */
static int load_vec(model *m, const char *path, const char *name, int n, const float **out, char *err)
{
    const tensor_info *t;
    int rc = find_checked(m, path, name, n, 0, &t, err);
    if (rc)
        return rc;
    if (t->dtype == DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
        return MDI_OK;
    }
    float *buf = model_own(m, (size_t)n * sizeof(float));
    void *tmp = NULL;
    const void *src = buf ? aligned_source(t, &tmp) : NULL;
    if (!src)
        return mdi_fail(err, MDI_ENOMEM, "%s: out of memory converting %s", path, name);
    dtype_convert(buf, DTYPE_F32, src, t->dtype, (size_t)n);
    free(tmp);
    *out = buf;
    return MDI_OK;
}

static size_t mat_bytes(const mat_t *w)
{
    return dtype_matrix_size(w->dtype, w->rows, w->cols);
}

/* m->dtypes: the matrices' dtypes, the one holding most bytes first,
 * joined by '+' ("q8_0+f16"). */
static void describe_dtypes(model *m)
{
    size_t bytes[DTYPE_COUNT] = { 0 };
    int n_local = m->slice.layer_end - m->slice.layer_begin;
    for (int i = 0; i < n_local; i++) {
        const mat_t *w[] = { &m->layers[i].wq, &m->layers[i].wk, &m->layers[i].wv, &m->layers[i].wo,
                             &m->layers[i].w_gate, &m->layers[i].w_up, &m->layers[i].w_down };
        for (size_t k = 0; k < sizeof(w) / sizeof(w[0]); k++)
            bytes[w[k]->dtype] += mat_bytes(w[k]) + 1;
    }
    if (m->tok_embed.data)
        bytes[m->tok_embed.dtype] += mat_bytes(&m->tok_embed) + 1;
    if (m->lm_head.data && m->lm_head.data != m->tok_embed.data)
        bytes[m->lm_head.dtype] += mat_bytes(&m->lm_head) + 1;
    size_t off = 0;
    m->dtypes[0] = '\0';
    for (;;) {
        int best = -1;
        for (int t = 0; t < DTYPE_COUNT; t++)
            if (bytes[t] && (best < 0 || bytes[t] > bytes[best]))
                best = t;
        if (best < 0 || off >= sizeof(m->dtypes))
            break;
        off += (size_t)snprintf(m->dtypes + off, sizeof(m->dtypes) - off, "%s%s", off ? "+" : "",
                                dtype_name((dtype_t)best));
        bytes[best] = 0;
    }
    if (!m->dtypes[0])
        snprintf(m->dtypes, sizeof(m->dtypes), "none");
}

int model_load(model *m, const char *path, const model_config *cfg, const model_slice *slice, char *err)
{
    memset(m, 0, sizeof(*m));
    int rc;
    if (cfg) {
        m->cfg = *cfg;
    } else if ((rc = model_config_load(&m->cfg, path, err))) {
        return rc;
    }
    m->slice = *slice;
    const model_config *c = &m->cfg;
    if (slice->layer_begin < 0 || slice->layer_end < slice->layer_begin || slice->layer_end > c->n_layers)
        return mdi_fail(err, MDI_EARG, "%s: layer range [%d, %d) outside the model's %d layers", path,
                        slice->layer_begin, slice->layer_end, c->n_layers);
    m->src = tsrc_open_mode(path, slice->weights_mode, err);
    if (!m->src)
        return MDI_EFORMAT;
    if (slice->dtype != DTYPE_COUNT && (unsigned)slice->dtype >= DTYPE_COUNT) {
        rc = mdi_fail(err, MDI_EARG, "%s: unknown dtype %d asked for (accepted: auto, %s)", path, (int)slice->dtype,
                      dtype_names());
        goto fail;
    }

    int dim = c->dim, hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    int n_local = slice->layer_end - slice->layer_begin;
    m->layers = calloc((size_t)(n_local ? n_local : 1), sizeof(layer_weights));
    if (!m->layers) {
        rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
        goto fail;
    }
    char name[TENSOR_NAME_MAX];
    if (slice->embed || (slice->head && c->tie_embeddings)) {
        if ((rc = load_mat(m, path, "model.embed_tokens.weight", c->vocab_size, dim, &m->tok_embed, err)))
            goto fail;
    }
    for (int i = 0; i < n_local; i++) {
        int l = slice->layer_begin + i;
        layer_weights *w = &m->layers[i];
#define MAT(field, suffix, r, cc)                                          \
        model_tensor_name(name, l, suffix);                                \
        if ((rc = load_mat(m, path, name, (r), (cc), &w->field, err)))     \
            goto fail;                                                     \
        m->weight_bytes += mat_bytes(&w->field);
#define VEC(field, suffix, n)                                              \
        model_tensor_name(name, l, suffix);                                \
        if ((rc = load_vec(m, path, name, (n), &w->field, err)))           \
            goto fail;
        MAT(wq, "self_attn.q_proj.weight", q_dim, dim)
        MAT(wk, "self_attn.k_proj.weight", kv_dim, dim)
        MAT(wv, "self_attn.v_proj.weight", kv_dim, dim)
        MAT(wo, "self_attn.o_proj.weight", dim, q_dim)
        MAT(w_gate, "mlp.gate_proj.weight", c->hidden_dim, dim)
        MAT(w_up, "mlp.up_proj.weight", c->hidden_dim, dim)
        MAT(w_down, "mlp.down_proj.weight", dim, c->hidden_dim)
        VEC(attn_norm, "input_layernorm.weight", dim)
        VEC(ffn_norm, "post_attention_layernorm.weight", dim)
        if (c->qk_norm) {
            VEC(q_norm, "self_attn.q_norm.weight", hd)
            VEC(k_norm, "self_attn.k_norm.weight", hd)
        }
        if (c->attn_bias) {
            VEC(bq, "self_attn.q_proj.bias", q_dim)
            VEC(bk, "self_attn.k_proj.bias", kv_dim)
            VEC(bv, "self_attn.v_proj.bias", kv_dim)
        }
#undef MAT
#undef VEC
    }
    if (slice->head) {
        if ((rc = load_vec(m, path, "model.norm.weight", dim, &m->final_norm, err)))
            goto fail;
        if (c->tie_embeddings) {
            m->lm_head = m->tok_embed;
        } else if ((rc = load_mat(m, path, "lm_head.weight", c->vocab_size, dim, &m->lm_head, err))) {
            goto fail;
        }
        m->weight_bytes += mat_bytes(&m->lm_head);
    }
    if (m->n_dequantized)
        log_info("%s: %d block-typed matrices dequantized to %s, as --dtype asks", path, m->n_dequantized,
                 dtype_name(slice->dtype));
    describe_dtypes(m);
    return MDI_OK;
fail:
    model_free(m);
    return rc;
}

void model_free(model *m)
{
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    tsrc_close(m->src);
    memset(m, 0, sizeof(*m));
}

/* The ranges model_lock locks: every matrix and vector the slice reads. */
static size_t model_lock_ranges(const model *m, const void **p, size_t *n, size_t cap)
{
    size_t k = 0;
    int dim = m->cfg.dim, kv_dim = m->cfg.n_kv_heads * m->cfg.head_dim;
    int q_dim = m->cfg.n_heads * m->cfg.head_dim;
#define RANGE(ptr, bytes)              \
    if ((ptr) && k < cap) {            \
        p[k] = (ptr);                  \
        n[k++] = (bytes);              \
    }
#define RANGE_MAT(w) RANGE((w).data, dtype_matrix_size((w).dtype, (w).rows, (w).cols))
    RANGE_MAT(m->tok_embed)
    if (m->lm_head.data != m->tok_embed.data)
        RANGE_MAT(m->lm_head)
    RANGE(m->final_norm, (size_t)dim * sizeof(float))
    for (int i = 0; i < m->slice.layer_end - m->slice.layer_begin; i++) {
        const layer_weights *w = &m->layers[i];
        RANGE_MAT(w->wq) RANGE_MAT(w->wk) RANGE_MAT(w->wv) RANGE_MAT(w->wo)
        RANGE_MAT(w->w_gate) RANGE_MAT(w->w_up) RANGE_MAT(w->w_down)
        RANGE(w->attn_norm, (size_t)dim * sizeof(float))
        RANGE(w->ffn_norm, (size_t)dim * sizeof(float))
        RANGE(w->bq, (size_t)q_dim * sizeof(float))
        RANGE(w->bk, (size_t)kv_dim * sizeof(float))
        RANGE(w->bv, (size_t)kv_dim * sizeof(float))
    }
#undef RANGE_MAT
#undef RANGE
    return k;
}

size_t model_lock(const model *m, char *warn)
{
    size_t cap = 3 + 12 * (size_t)(m->slice.layer_end - m->slice.layer_begin);
    const void **p = malloc(cap * sizeof(*p));
    size_t *n = malloc(cap * sizeof(*n));
    if (!p || !n) {
        free(p);
        free(n);
        mdi_fail(warn, MDI_ENOMEM, "--mlock: out of memory");
        return 0;
    }
    size_t k = model_lock_ranges(m, p, n, cap), total = 0, i;
    for (i = 0; i < k; i++)
        total += n[i];
    for (i = 0; i < k; i++)
        if (mlock(p[i], n[i]) != 0)
            break;
    if (i < k) {
        int e = errno;
        for (size_t j = 0; j < i; j++)
            munlock(p[j], n[j]);
        struct rlimit rl;
        char lim[64] = "unknown";
        if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
            if (rl.rlim_cur == RLIM_INFINITY)
                snprintf(lim, sizeof(lim), "unlimited");
            else
                snprintf(lim, sizeof(lim), "%llu KiB", (unsigned long long)rl.rlim_cur >> 10);
        }
        mdi_fail(warn, MDI_ENOMEM,
                 "--mlock: cannot lock the %.1f MiB of weights (%s; RLIMIT_MEMLOCK is %s: raise it with "
                 "ulimit -l or LimitMEMLOCK=, or grant CAP_IPC_LOCK); the weights stay unlocked",
                 (double)total / (1 << 20), strerror(e), lim);
        total = 0;
    }
    free(p);
    free(n);
    return total;
}
