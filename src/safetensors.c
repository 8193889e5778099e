/* safetensors: see safetensors.h for the file layout. */
#include "safetensors.h"
#include "gguf.h"
#include "model.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Headers above this are certainly corrupt (the format caps them at 100 MB). */
#define ST_MAX_HEADER (100u * 1024 * 1024)

typedef struct {
    char *path;
    void *map;
    size_t size;
} mapped_file;

struct tensor_source {
    mapped_file *files;
    int n_files;
    tensor_info *tensors;
    int n_tensors, cap_tensors;
    json_t *metadata;
    json_t *llama2c_config;
    void **owned; /* buffers of converted llama2.c tensors */
    int n_owned;
    int anon;     /* files read into anonymous memory, not mapped (TSRC_READ) */
    gguf_file **ggufs; /* a GGUF source: its file, or each of its split files */
    int n_ggufs;
};

/* A header's dtype string: each type's safetensors spelling (dtype.h's
 * st_name: "F32", "F16", "BF16", and our extension's "Q8_0", "Q4_0"). */
static int parse_dtype(const char *s, dtype_t *out)
{
    for (int t = 0; t < DTYPE_COUNT; t++) {
        if (!strcmp(s, dtype_get((dtype_t)t)->st_name)) {
            *out = (dtype_t)t;
            return 0;
        }
    }
    return -1;
}

static const char *dtype_st_name(dtype_t t)
{
    return (unsigned)t < DTYPE_COUNT ? dtype_get(t)->st_name : "?";
}

/* "F32, F16, BF16, Q8_0, Q4_0" for messages. */
static const char *dtype_st_names(void)
{
    static char buf[128];
    if (!buf[0]) {
        size_t off = 0;
        for (int t = 0; t < DTYPE_COUNT; t++)
            off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s", t ? ", " : "", dtype_st_name((dtype_t)t));
    }
    return buf;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t l = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && l < cap; d++)
        l += (size_t)snprintf(buf + l, cap - l, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (l < cap)
        snprintf(buf + l, cap - l, "]");
}

static tensor_info *add_tensor(tensor_source *s)
{
    if (s->n_tensors == s->cap_tensors) {
        int cap = s->cap_tensors ? s->cap_tensors * 2 : 64;
        tensor_info *t = realloc(s->tensors, (size_t)cap * sizeof(*t));
        if (!t)
            return NULL;
        s->tensors = t;
        s->cap_tensors = cap;
    }
    tensor_info *t = &s->tensors[s->n_tensors++];
    memset(t, 0, sizeof(*t));
    return t;
}

typedef struct {
    int fd;
    char *dst;
    size_t size;
    int failed_errno[64];     /* per thread: 0, an errno, or -1 for end of file */
    size_t failed_at[64];
} read_task;

/* Thread ith reads its share of the file, in whole huge pages, so that the
 * page faults and copies of a large file spread over the pool. */
static void read_worker(void *arg, int ith, int nth)
{
    read_task *t = arg;
    const size_t huge = (size_t)2 << 20, chunk = (size_t)64 << 20;
    size_t per = ((t->size + (size_t)nth - 1) / (size_t)nth + huge - 1) & ~(huge - 1);
    size_t begin = per * (size_t)ith, end = begin + per < t->size ? begin + per : t->size;
    int slot = ith < 64 ? ith : 63;
    for (size_t done = begin; done < end;) {
        size_t want = end - done < chunk ? end - done : chunk;
        ssize_t got = pread(t->fd, t->dst + done, want, (off_t)done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            t->failed_errno[slot] = got < 0 ? errno : -1;
            t->failed_at[slot] = done;
            return;
        }
        done += (size_t)got;
    }
}

/* Reads the file's size bytes from fd into a new anonymous mapping (huge
 * pages advised where the kernel allows), left read-only like a file
 * mapping, with the kernels' thread pool. Pages of it can be dropped with
 * MADV_DONTNEED as a file mapping's can. */
static void *read_anon(int fd, size_t size, const char *path, char *err)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        mdi_fail(err, MDI_ENOMEM, "%s: cannot allocate %zu MiB of memory for the weights: %s", path, size >> 20,
                 strerror(errno));
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, size, MADV_HUGEPAGE); /* advice: refused on kernels without THP, harmless */
#endif
    read_task t;
    memset(&t, 0, sizeof(t));
    t.fd = fd;
    t.dst = p;
    t.size = size;
    kernels_parallel(read_worker, &t);
    for (int i = 0; i < 64; i++) {
        if (t.failed_errno[i]) {
            munmap(p, size);
            mdi_fail(err, MDI_EIO, "%s: read failed at byte %zu of %zu: %s", path, t.failed_at[i], size,
                     t.failed_errno[i] > 0 ? strerror(t.failed_errno[i]) : "unexpected end of file");
            return NULL;
        }
    }
    mprotect(p, size, PROT_READ);
    return p;
}

static int map_file(mapped_file *mf, const char *path, int anon, char *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return mdi_fail(err, MDI_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mdi_fail(err, MDI_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    mf->size = (size_t)st.st_size;
    mf->map = NULL;
    if (mf->size > 0 && anon) {
        mf->map = read_anon(fd, mf->size, path, err);
        if (!mf->map) {
            close(fd);
            return MDI_EIO;
        }
    } else if (mf->size > 0) {
        mf->map = mmap(NULL, mf->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (mf->map == MAP_FAILED) {
            int e = errno;
            close(fd);
            mf->map = NULL;
            return mdi_fail(err, MDI_EIO, "%s: cannot mmap: %s", path, strerror(e));
        }
    }
    close(fd);
    mf->path = strdup(path);
    return MDI_OK;
}

/* Parses one safetensors file already mapped as s->files[fi]. */
static int parse_safetensors(tensor_source *s, int fi, char *err)
{
    mapped_file *mf = &s->files[fi];
    const char *path = mf->path;
    if (mf->size < 8)
        return mdi_fail(err, MDI_EFORMAT, "%s: truncated file (%zu bytes, no header length)", path, mf->size);
    uint64_t hlen = 0;
    memcpy(&hlen, mf->map, 8); /* little-endian hosts only, as the format */
    if (hlen == 0 || hlen > ST_MAX_HEADER || hlen > mf->size - 8)
        return mdi_fail(err, MDI_EFORMAT,
                        "%s: bad header: header length %llu at byte 0 exceeds the file (%zu bytes)",
                        path, (unsigned long long)hlen, mf->size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)mf->map + 8, (size_t)hlen, 0, &jerr);
    if (!root)
        return mdi_fail(err, MDI_EFORMAT, "%s: bad header: JSON error at byte %d: %s", path,
                        8 + jerr.position, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return mdi_fail(err, MDI_EFORMAT, "%s: bad header: not a JSON object", path);
    }
    const uint8_t *data = (const uint8_t *)mf->map + 8 + hlen;
    size_t data_size = mf->size - 8 - (size_t)hlen;
    const char *key;
    json_t *val;
    int rc = MDI_OK;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if (fi == 0 && json_is_object(val)) {
                json_decref(s->metadata);
                s->metadata = json_incref(val);
            }
            continue;
        }
        if (strlen(key) >= TENSOR_NAME_MAX) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: tensor name too long: %.60s...", path, key);
            break;
        }
        json_t *jd = json_object_get(val, "dtype");
        json_t *js = json_object_get(val, "shape");
        json_t *jo = json_object_get(val, "data_offsets");
        if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: bad header: tensor %s lacks dtype, shape or data_offsets", path, key);
            break;
        }
        dtype_t dt;
        if (parse_dtype(json_string_value(jd), &dt) != 0) {
            rc = mdi_fail(err, MDI_EUNSUPPORTED, "%s: tensor %s has dtype %s (supported: %s)",
                          path, key, json_string_value(jd), dtype_st_names());
            break;
        }
        size_t ndim = json_array_size(js);
        if (ndim > TENSOR_MAX_DIMS) {
            rc = mdi_fail(err, MDI_EUNSUPPORTED, "%s: tensor %s has %zu dimensions", path, key, ndim);
            break;
        }
        tensor_info *t = add_tensor(s);
        if (!t) {
            rc = mdi_fail(err, MDI_ENOMEM, "%s: out of memory", path);
            break;
        }
        snprintf(t->name, sizeof(t->name), "%s", key);
        t->dtype = dt;
        t->ndim = (int)ndim;
        uint64_t n_elem = 1;
        for (size_t d = 0; d < ndim; d++) {
            json_t *x = json_array_get(js, d);
            if (!json_is_integer(x) || json_integer_value(x) < 0) {
                rc = mdi_fail(err, MDI_EFORMAT, "%s: bad header: tensor %s has a bad shape", path, key);
                break;
            }
            t->shape[d] = json_integer_value(x);
            if (t->shape[d] && n_elem > ((uint64_t)1 << 56) / (uint64_t)t->shape[d]) {
                rc = mdi_fail(err, MDI_EFORMAT, "%s: bad header: tensor %s has too many elements", path, key);
                break;
            }
            n_elem *= (uint64_t)t->shape[d];
        }
        if (rc)
            break;
        json_t *b = json_array_get(jo, 0), *e = json_array_get(jo, 1);
        if (!json_is_integer(b) || !json_is_integer(e)) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: bad header: tensor %s has bad data_offsets", path, key);
            break;
        }
        json_int_t begin = json_integer_value(b), end = json_integer_value(e);
        if (begin < 0 || end < begin || (uint64_t)end > data_size) {
            rc = mdi_fail(err, MDI_EFORMAT,
                          "%s: truncated file: tensor %s needs data bytes [%lld, %lld) at file offset %llu but only %zu data bytes exist",
                          path, key, (long long)begin, (long long)end,
                          (unsigned long long)(8 + hlen + (uint64_t)begin), data_size);
            break;
        }
        /* A block type stores each row (the last dimension) as whole
         * blocks; its byte size follows from the logical shape. */
        int64_t last = ndim ? t->shape[ndim - 1] : 1;
        if (!dtype_row_ok(dt, last)) {
            char sh[96];
            shape_str(sh, sizeof(sh), t->ndim, t->shape);
            rc = mdi_fail(err, MDI_EFORMAT,
                          "%s: tensor %s: dtype %s needs a last dimension that is a multiple of %d, shape is %s",
                          path, key, dtype_st_name(dt), dtype_block_size(dt), sh);
            break;
        }
        uint64_t want = last ? (uint64_t)(n_elem / (uint64_t)last) * dtype_row_size(dt, last) : 0;
        if ((uint64_t)(end - begin) != want) {
            char sh[96];
            shape_str(sh, sizeof(sh), t->ndim, t->shape);
            rc = mdi_fail(err, MDI_EFORMAT, "%s: tensor %s: %lld data bytes, but %s of shape %s takes %llu bytes",
                          path, key, (long long)(end - begin), dtype_st_name(dt), sh, (unsigned long long)want);
            break;
        }
        t->data = data + begin;
        t->nbytes = (size_t)(end - begin);
        t->file = path;
        t->mapped = 1;
    }
    json_decref(root);
    return rc;
}

static int open_st_file(tensor_source *s, const char *path, char *err)
{
    mapped_file *f = realloc(s->files, (size_t)(s->n_files + 1) * sizeof(*f));
    if (!f)
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    s->files = f;
    memset(&s->files[s->n_files], 0, sizeof(mapped_file));
    int rc = map_file(&s->files[s->n_files], path, s->anon, err);
    if (rc)
        return rc;
    s->n_files++;
    return parse_safetensors(s, s->n_files - 1, err);
}

static int open_index(tensor_source *s, const char *dir, const char *index_path, char *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(index_path, 0, &jerr);
    if (!root)
        return mdi_fail(err, MDI_EFORMAT, "%s: JSON error at line %d: %s", index_path, jerr.line, jerr.text);
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(root);
        return mdi_fail(err, MDI_EFORMAT, "%s: no \"weight_map\" object", index_path);
    }
    /* unique shard names, in first-seen order */
    const char *key;
    json_t *val;
    json_t *seen = json_object();
    int rc = MDI_OK;
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val)) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: weight_map[%s] is not a file name", index_path, key);
            break;
        }
        const char *shard = json_string_value(val);
        if (json_object_get(seen, shard))
            continue;
        json_object_set_new(seen, shard, json_true());
        if (strchr(shard, '/')) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: shard name %s must be a plain file name", index_path, shard);
            break;
        }
        char p[4096];
        if (path_join(p, sizeof(p), dir, shard) != 0) {
            rc = mdi_fail(err, MDI_EARG, "%s: path too long", dir);
            break;
        }
        rc = open_st_file(s, p, err);
        if (rc)
            break;
    }
    if (!rc) {
        json_object_foreach(wm, key, val) {
            if (!tsrc_find(s, key)) {
                rc = mdi_fail(err, MDI_EFORMAT, "%s: tensor %s listed in the index is missing from %s",
                              index_path, key, json_string_value(val));
                break;
            }
        }
    }
    json_decref(seen);
    json_decref(root);
    return rc;
}

/* ---- llama2.c ---- */

/* llama2.c's legacy .bin: 7 int32 (dim, hidden_dim, n_layers, n_heads,
 * n_kv_heads, vocab_size (negative: untied classifier follows), seq_len),
 * then F32 arrays: token_embedding (vocab, dim), rms_att (L, dim), wq (L, dim,
 * dim), wk (L, kv_dim, dim), wv (L, kv_dim, dim), wo (L, dim, dim), rms_ffn
 * (L, dim), w1 (L, hidden, dim), w2 (L, dim, hidden), w3 (L, hidden, dim),
 * rms_final (dim), freq_cis_real and _imag (seq_len, head_size/2) each,
 * [wcls (vocab, dim)]. */
static float *own_copy(tensor_source *s, const float *src, size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (!p)
        return NULL;
    if (src)
        memcpy(p, src, n * sizeof(float));
    void **o = realloc(s->owned, (size_t)(s->n_owned + 1) * sizeof(void *));
    if (!o) {
        free(p);
        return NULL;
    }
    s->owned = o;
    s->owned[s->n_owned++] = p;
    return p;
}

/* llama2.c rotates interleaved pairs (2i, 2i+1) of each head; Hugging Face
 * rotates halves (i, i + hd/2). Row h*hd + 2i + p becomes h*hd + p*hd/2 + i. */
static void permute_rows(float *dst, const float *src, int n_heads, int hd, int cols)
{
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hd / 2; i++)
            for (int p = 0; p < 2; p++)
                memcpy(dst + ((size_t)h * hd + (size_t)p * hd / 2 + i) * cols,
                       src + ((size_t)h * hd + 2 * i + p) * cols, (size_t)cols * sizeof(float));
}

static int add_l2c(tensor_source *s, const char *name, const float *data, int64_t d0, int64_t d1)
{
    tensor_info *t = add_tensor(s);
    if (!t)
        return MDI_ENOMEM;
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->dtype = DTYPE_F32;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = data;
    t->nbytes = (size_t)d0 * (size_t)(d1 ? d1 : 1) * sizeof(float);
    t->file = s->files[0].path;
    return MDI_OK;
}

static int open_llama2c(tensor_source *s, const char *path, char *err)
{
    s->files = calloc(1, sizeof(mapped_file));
    if (!s->files)
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    int rc = map_file(&s->files[0], path, s->anon, err);
    if (rc)
        return rc;
    s->n_files = 1;
    mapped_file *mf = &s->files[0];
    if (mf->size < 28)
        return mdi_fail(err, MDI_EFORMAT, "%s: truncated llama2.c checkpoint: %zu bytes, header needs 28", path, mf->size);
    int32_t h[7];
    memcpy(h, mf->map, sizeof(h));
    int dim = h[0], hidden = h[1], L = h[2], nh = h[3], nkv = h[4], vocab = h[5], seq = h[6];
    /* a negative vocabulary means an unshared classifier; INT32_MIN has no
     * positive counterpart */
    int shared = vocab > 0;
    if (vocab < 0 && vocab != INT32_MIN)
        vocab = -vocab;
    /* each field within the limits of a configuration (model.h), so that
     * every size below fits in 64 bits */
    static const char *const field[7] = { "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                                          "seq_len" };
    const int64_t lim[7] = { MODEL_MAX_DIM, MODEL_MAX_HIDDEN, MODEL_MAX_LAYERS, MODEL_MAX_HEADS, MODEL_MAX_HEADS,
                             MODEL_MAX_VOCAB, MODEL_MAX_SEQ };
    const int v[7] = { dim, hidden, L, nh, nkv, vocab, seq };
    const char *bad = NULL;
    for (int i = 0; i < 7 && !bad; i++)
        if (v[i] <= 0 || v[i] > lim[i])
            bad = field[i];
    if (!bad && (dim % nh != 0 || nh % nkv != 0))
        bad = dim % nh != 0 ? "n_heads (does not divide dim)" : "n_kv_heads (does not divide n_heads)";
    if (bad)
        return mdi_fail(err, MDI_EFORMAT,
                        "%s: bad llama2.c header: %s (dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, "
                        "seq %d)", path, bad, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    int hd = dim / nh, kv_dim = nkv * hd;
    size_t need = (size_t)vocab * dim + (size_t)L * dim + (size_t)L * dim * dim + 2 * (size_t)L * kv_dim * dim +
                  (size_t)L * dim * dim + (size_t)L * dim + 3 * (size_t)L * hidden * dim + dim +
                  (size_t)seq * hd + (shared ? 0 : (size_t)vocab * dim);
    if (mf->size < 28 + need * sizeof(float))
        return mdi_fail(err, MDI_EFORMAT, "%s: truncated llama2.c checkpoint: %zu bytes, the header implies %zu",
                        path, mf->size, 28 + need * sizeof(float));
    const float *p = (const float *)((const char *)mf->map + 28);
    const float *emb = p; p += (size_t)vocab * dim;
    const float *rms_att = p; p += (size_t)L * dim;
    const float *wq = p; p += (size_t)L * dim * dim;
    const float *wk = p; p += (size_t)L * kv_dim * dim;
    const float *wv = p; p += (size_t)L * kv_dim * dim;
    const float *wo = p; p += (size_t)L * dim * dim;
    const float *rms_ffn = p; p += (size_t)L * dim;
    const float *w1 = p; p += (size_t)L * hidden * dim;
    const float *w2 = p; p += (size_t)L * dim * hidden;
    const float *w3 = p; p += (size_t)L * hidden * dim;
    const float *rms_final = p; p += dim;
    p += (size_t)seq * hd; /* freq_cis_real, freq_cis_imag: recomputed, not read */
    const float *wcls = shared ? emb : p;

    /* mmap'ed data is unaligned (28-byte header): the compute path handles
     * that, but copy the permuted q/k into owned buffers anyway. */
    rc = add_l2c(s, "model.embed_tokens.weight", emb, vocab, dim);
    char name[TENSOR_NAME_MAX];
    for (int l = 0; l < L && !rc; l++) {
        float *q = own_copy(s, NULL, (size_t)dim * dim);
        float *k = own_copy(s, NULL, (size_t)kv_dim * dim);
        if (!q || !k)
            return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", path);
        permute_rows(q, wq + (size_t)l * dim * dim, nh, hd, dim);
        permute_rows(k, wk + (size_t)l * kv_dim * dim, nkv, hd, dim);
#define L2C(suffix, ptr, d0, d1)                                   \
        snprintf(name, sizeof(name), "model.layers.%d.%s", l, suffix); \
        if (!rc) rc = add_l2c(s, name, ptr, d0, d1);
        L2C("input_layernorm.weight", rms_att + (size_t)l * dim, dim, 0)
        L2C("self_attn.q_proj.weight", q, dim, dim)
        L2C("self_attn.k_proj.weight", k, kv_dim, dim)
        L2C("self_attn.v_proj.weight", wv + (size_t)l * kv_dim * dim, kv_dim, dim)
        L2C("self_attn.o_proj.weight", wo + (size_t)l * dim * dim, dim, dim)
        L2C("post_attention_layernorm.weight", rms_ffn + (size_t)l * dim, dim, 0)
        L2C("mlp.gate_proj.weight", w1 + (size_t)l * hidden * dim, hidden, dim)
        L2C("mlp.down_proj.weight", w2 + (size_t)l * dim * hidden, dim, hidden)
        L2C("mlp.up_proj.weight", w3 + (size_t)l * hidden * dim, hidden, dim)
#undef L2C
    }
    if (!rc)
        rc = add_l2c(s, "model.norm.weight", rms_final, dim, 0);
    if (!rc && !shared)
        rc = add_l2c(s, "lm_head.weight", wcls, vocab, dim);
    if (rc)
        return mdi_fail(err, rc, "%s: out of memory", path);

    json_t *c = json_object();
    json_object_set_new(c, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(c, "model_type", json_string("llama"));
    json_object_set_new(c, "hidden_size", json_integer(dim));
    json_object_set_new(c, "intermediate_size", json_integer(hidden));
    json_object_set_new(c, "num_hidden_layers", json_integer(L));
    json_object_set_new(c, "num_attention_heads", json_integer(nh));
    json_object_set_new(c, "num_key_value_heads", json_integer(nkv));
    json_object_set_new(c, "head_dim", json_integer(hd));
    json_object_set_new(c, "vocab_size", json_integer(vocab));
    json_object_set_new(c, "max_position_embeddings", json_integer(seq));
    json_object_set_new(c, "rms_norm_eps", json_real(1e-5));
    json_object_set_new(c, "rope_theta", json_real(10000.0));
    json_object_set_new(c, "tie_word_embeddings", json_boolean(shared));
    json_object_set_new(c, "bos_token_id", json_integer(1));
    json_object_set_new(c, "eos_token_id", json_integer(2));
    json_object_set_new(c, "hidden_act", json_string("silu"));
    s->llama2c_config = c;
    return MDI_OK;
}


/* ---- GGUF ---- */

/* GGUF tensor names and their Hugging Face names: "blk.N." + the first
 * column becomes "model.layers.N." + the second. */
static const char *const gguf_layer_names[][2] = {
    { "attn_norm.weight", "input_layernorm.weight" },
    { "attn_q.weight", "self_attn.q_proj.weight" },
    { "attn_k.weight", "self_attn.k_proj.weight" },
    { "attn_v.weight", "self_attn.v_proj.weight" },
    { "attn_output.weight", "self_attn.o_proj.weight" },
    { "attn_q.bias", "self_attn.q_proj.bias" },
    { "attn_k.bias", "self_attn.k_proj.bias" },
    { "attn_v.bias", "self_attn.v_proj.bias" },
    { "attn_q_norm.weight", "self_attn.q_norm.weight" },
    { "attn_k_norm.weight", "self_attn.k_norm.weight" },
    { "ffn_norm.weight", "post_attention_layernorm.weight" },
    { "ffn_gate.weight", "mlp.gate_proj.weight" },
    { "ffn_up.weight", "mlp.up_proj.weight" },
    { "ffn_down.weight", "mlp.down_proj.weight" },
};

static const char *const gguf_global_names[][2] = {
    { "token_embd.weight", "model.embed_tokens.weight" },
    { "output_norm.weight", "model.norm.weight" },
    { "output.weight", "lm_head.weight" },
};

/* The Hugging Face name of a GGUF tensor; names we do not know are kept. */
static void gguf_hf_name(const char *g, char *out, size_t cap)
{
    for (size_t i = 0; i < sizeof(gguf_global_names) / sizeof(gguf_global_names[0]); i++) {
        if (!strcmp(g, gguf_global_names[i][0])) {
            snprintf(out, cap, "%s", gguf_global_names[i][1]);
            return;
        }
    }
    int layer, n = 0;
    if (sscanf(g, "blk.%d.%n", &layer, &n) == 1 && n > 0 && layer >= 0) {
        for (size_t i = 0; i < sizeof(gguf_layer_names) / sizeof(gguf_layer_names[0]); i++) {
            if (!strcmp(g + n, gguf_layer_names[i][0])) {
                snprintf(out, cap, "model.layers.%d.%s", layer, gguf_layer_names[i][1]);
                return;
            }
        }
    }
    snprintf(out, cap, "%s", g);
}

int tsrc_gguf_name(const char *hf, char *out, size_t cap)
{
    for (size_t i = 0; i < sizeof(gguf_global_names) / sizeof(gguf_global_names[0]); i++) {
        if (!strcmp(hf, gguf_global_names[i][1])) {
            snprintf(out, cap, "%s", gguf_global_names[i][0]);
            return 0;
        }
    }
    int layer, n = 0;
    if (sscanf(hf, "model.layers.%d.%n", &layer, &n) == 1 && n > 0 && layer >= 0) {
        for (size_t i = 0; i < sizeof(gguf_layer_names) / sizeof(gguf_layer_names[0]); i++) {
            if (!strcmp(hf + n, gguf_layer_names[i][1])) {
                snprintf(out, cap, "blk.%d.%s", layer, gguf_layer_names[i][0]);
                return 0;
            }
        }
    }
    return -1;
}

/* "{arch}.suffix" */
static const char *arch_key(const char *arch, const char *suffix)
{
    static __thread char buf[160];
    snprintf(buf, sizeof(buf), "%s.%s", arch, suffix);
    return buf;
}

/* The model config from a GGUF's metadata, as a config.json object (the
 * shape model_config_from_json reads). */
static int gguf_config(tensor_source *s, const gguf_file *g, char *err)
{
    const char *arch_p;
    size_t arch_len;
    int rc = gguf_get_str(g, "general.architecture", &arch_p, &arch_len, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return mdi_fail(err, MDI_EFORMAT, "%s: no general.architecture in the metadata", g->path);
    char arch[32];
    snprintf(arch, sizeof(arch), "%.*s", (int)(arch_len < 31 ? arch_len : 31), arch_p);
    if (strcmp(arch, "llama") && strcmp(arch, "qwen2") && strcmp(arch, "qwen3"))
        return mdi_fail(err, MDI_EUNSUPPORTED, "%s: general.architecture \"%.*s\" (supported: llama, qwen2, qwen3)",
                        g->path, (int)arch_len, arch_p);
    json_t *c = json_object();
    json_object_set_new(c, "model_type", json_string(arch));
    static const struct { const char *key, *hf; int required; } ints[] = {
        { "embedding_length", "hidden_size", 1 },
        { "feed_forward_length", "intermediate_size", 1 },
        { "block_count", "num_hidden_layers", 1 },
        { "attention.head_count", "num_attention_heads", 1 },
        { "attention.head_count_kv", "num_key_value_heads", 0 },
        { "attention.key_length", "head_dim", 0 },
        { "context_length", "max_position_embeddings", 0 },
        { "vocab_size", "vocab_size", 0 },
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        int64_t v;
        const char *key = arch_key(arch, ints[i].key);
        rc = gguf_get_int(g, key, &v, err);
        if (rc < 0)
            goto fail;
        if (rc == 0 && ints[i].required) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: no %s in the metadata", g->path, key);
            goto fail;
        }
        if (rc == 1 && (v < 0 || v > (1 << 30))) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: metadata %s is %lld, out of range", g->path, key, (long long)v);
            goto fail;
        }
        if (rc == 1)
            json_object_set_new(c, ints[i].hf, json_integer(v));
    }
    /* a vocabulary size from the tokens or the embedding when not given */
    if (!json_object_get(c, "vocab_size")) {
        const gguf_kv *tokens;
        const tensor_info *emb = tsrc_find(s, "model.embed_tokens.weight");
        if (gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens, NULL) == 1)
            json_object_set_new(c, "vocab_size", json_integer((json_int_t)tokens->n));
        else if (emb && emb->ndim == 2)
            json_object_set_new(c, "vocab_size", json_integer(emb->shape[0]));
    }
    double eps = 1e-5, theta = 10000.0;
    if ((rc = gguf_get_float(g, arch_key(arch, "attention.layer_norm_rms_epsilon"), &eps, err)) < 0 ||
        (rc = gguf_get_float(g, arch_key(arch, "rope.freq_base"), &theta, err)) < 0)
        goto fail;
    if (!(eps > 0 && eps < 1) || !(theta > 0 && theta < 1e30)) {
        rc = mdi_fail(err, MDI_EFORMAT, "%s: metadata %s is %g: expected a finite positive number", g->path,
                      arch_key(arch, eps > 0 && eps < 1 ? "rope.freq_base" : "attention.layer_norm_rms_epsilon"),
                      eps > 0 && eps < 1 ? theta : eps);
        goto fail;
    }
    json_object_set_new(c, "rms_norm_eps", json_real(eps));
    json_object_set_new(c, "rope_theta", json_real(theta));
    const char *rs;
    size_t rs_len;
    if ((rc = gguf_get_str(g, arch_key(arch, "rope.scaling.type"), &rs, &rs_len, err)) < 0)
        goto fail;
    /* linear: positions / rope.scaling.factor (older files: rope.scale_linear) */
    double linear = 1.0;
    int is_linear = rc == 1 && rs_len == 6 && !memcmp(rs, "linear", 6);
    if (rc == 1 && !is_linear && !(rs_len == 4 && !memcmp(rs, "none", 4))) {
        rc = mdi_fail(err, MDI_EUNSUPPORTED, "%s: metadata %s is \"%.*s\" (supported: none, linear)", g->path,
                      arch_key(arch, "rope.scaling.type"), (int)rs_len, rs);
        goto fail;
    }
    if ((rc = gguf_get_float(g, arch_key(arch, is_linear ? "rope.scaling.factor" : "rope.scale_linear"), &linear,
                             err)) < 0)
        goto fail;
    if (is_linear && rc == 0) {
        rc = mdi_fail(err, MDI_EFORMAT, "%s: rope.scaling.type linear without %s", g->path,
                      arch_key(arch, "rope.scaling.factor"));
        goto fail;
    }
    if (!(linear > 0) || linear > 1e6) {
        rc = mdi_fail(err, MDI_EFORMAT, "%s: metadata %s is %g: not a scaling factor", g->path,
                      arch_key(arch, is_linear ? "rope.scaling.factor" : "rope.scale_linear"), linear);
        goto fail;
    }
    if (linear != 1.0)
        json_object_set_new(c, "rope_scaling", json_pack("{s:s, s:f}", "rope_type", "linear", "factor", linear));
    int64_t dim_count;
    if ((rc = gguf_get_int(g, arch_key(arch, "rope.dimension_count"), &dim_count, err)) < 0)
        goto fail;
    json_t *hd = json_object_get(c, "head_dim");
    json_int_t head_dim = hd ? json_integer_value(hd) :
                          json_integer_value(json_object_get(c, "hidden_size")) /
                          (json_integer_value(json_object_get(c, "num_attention_heads")) ?
                           json_integer_value(json_object_get(c, "num_attention_heads")) : 1);
    if (rc == 1 && dim_count != head_dim) {
        rc = mdi_fail(err, MDI_EUNSUPPORTED, "%s: metadata %s is %lld: RoPE on part of a head (head size %lld) is "
                      "not supported", g->path, arch_key(arch, "rope.dimension_count"), (long long)dim_count,
                      (long long)head_dim);
        goto fail;
    }
    /* Llama 3.1 scaling as llama.cpp stores it: a divisor per frequency */
    const tensor_info *ff = tsrc_find(s, "rope_freqs.weight");
    if (ff) {
        if (ff->dtype != DTYPE_F32 || ff->ndim != 1 || ff->shape[0] != head_dim / 2) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: tensor rope_freqs.weight must be F32 of head_dim / 2 = %lld values",
                          ff->file, (long long)(head_dim / 2));
            goto fail;
        }
        json_t *arr = json_array();
        for (int64_t i = 0; i < ff->shape[0]; i++) {
            float v;
            memcpy(&v, (const char *)ff->data + i * 4, 4);
            json_array_append_new(arr, json_real(v));
        }
        json_object_set_new(c, "rope_freq_factors", arr);
    }
    json_object_set_new(c, "tie_word_embeddings", json_boolean(!tsrc_find(s, "lm_head.weight")));
    json_object_set_new(c, "hidden_act", json_string("silu"));
    /* llama.cpp's converter permutes llama's q and k rows to the
     * interleaved rotary order; qwen2 and qwen3 keep rotate-half */
    json_object_set_new(c, "rope_interleaved", json_boolean(!strcmp(arch, "llama")));
    int64_t id;
    if ((rc = gguf_get_int(g, "tokenizer.ggml.bos_token_id", &id, err)) < 0)
        goto fail;
    if (rc == 1)
        json_object_set_new(c, "bos_token_id", json_integer(id));
    json_t *eos = json_array();
    json_object_set_new(c, "eos_token_id", eos);
    const char *eos_keys[] = { "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id" };
    for (int i = 0; i < 2; i++) {
        if ((rc = gguf_get_int(g, eos_keys[i], &id, err)) < 0)
            goto fail;
        if (rc == 1 && !(i == 1 && json_array_size(eos) && json_integer_value(json_array_get(eos, 0)) == id))
            json_array_append_new(eos, json_integer(id));
    }
    s->llama2c_config = c;
    return MDI_OK;
fail:
    json_decref(c);
    return rc;
}

/* Split files: NAME-00001-of-00003.gguf. 1 with the part count in *n and
 * the prefix length in *prefix when path is the first part. */
static int gguf_split_name(const char *path, int *n, size_t *prefix)
{
    size_t len = strlen(path);
    const char *tail = "-00001-of-00000.gguf";
    size_t tl = strlen(tail);
    if (len < tl)
        return 0;
    const char *t = path + len - tl;
    int a, b, used = 0;
    if (sscanf(t, "-%5d-of-%5d.gguf%n", &a, &b, &used) != 2 || (size_t)used != tl || b < 1)
        return 0;
    if (a != 1)
        return -1;
    *n = b;
    *prefix = len - tl;
    return 1;
}

static int gguf_add_file(tensor_source *s, gguf_file *g, char *err)
{
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *gt = &g->tensors[i];
        char name[TENSOR_NAME_MAX];
        gguf_hf_name(gt->name, name, sizeof(name));
        if (strlen(gt->name) >= TENSOR_NAME_MAX)
            return mdi_fail(err, MDI_EFORMAT, "%s: tensor name too long: %.60s...", g->path, gt->name);
        if (tsrc_find(s, name))
            return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s is given twice (as %s)", g->path, gt->name, name);
        tensor_info *t = add_tensor(s);
        if (!t)
            return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", g->path);
        snprintf(t->name, sizeof(t->name), "%s", name);
        t->dtype = gt->dtype;
        t->ndim = gt->n_dims;
        /* ggml's ne[0] is the last (fastest) dimension of the row-major shape */
        for (int d = 0; d < gt->n_dims; d++)
            t->shape[d] = gt->ne[gt->n_dims - 1 - d];
        t->data = gt->data;
        t->nbytes = (size_t)gt->nbytes;
        t->file = g->path;
        t->mapped = 1;
    }
    return MDI_OK;
}

static int open_gguf(tensor_source *s, const char *path, char *err)
{
    int n_parts = 1;
    size_t prefix = 0;
    int split = gguf_split_name(path, &n_parts, &prefix);
    if (split < 0)
        return mdi_fail(err, MDI_EARG, "%s: a split GGUF is opened by its first part (-00001-of-N.gguf)", path);
    s->ggufs = calloc((size_t)n_parts, sizeof(gguf_file *));
    if (!s->ggufs)
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    int rc;
    for (int i = 0; i < n_parts; i++) {
        char p[4096];
        if (split)
            snprintf(p, sizeof(p), "%.*s-%05d-of-%05d.gguf", (int)prefix, path, i + 1, n_parts);
        else
            snprintf(p, sizeof(p), "%s", path);
        gguf_file *g;
        if (s->anon) { /* --no-mmap: the file read into anonymous memory, the GGUF parsed there */
            mapped_file *f = realloc(s->files, (size_t)(s->n_files + 1) * sizeof(*f));
            if (!f)
                return mdi_fail(err, MDI_ENOMEM, "out of memory");
            s->files = f;
            memset(&s->files[s->n_files], 0, sizeof(mapped_file));
            if ((rc = map_file(&s->files[s->n_files], p, 1, err)))
                return rc;
            f = &s->files[s->n_files++];
            g = gguf_open_memory(f->map, f->size, p, err);
        } else {
            g = gguf_open(p, err);
        }
        if (!g)
            return MDI_EFORMAT;
        s->ggufs[s->n_ggufs++] = g;
        int64_t no = 0, count = 1;
        if ((rc = gguf_get_int(g, "split.no", &no, err)) < 0 || (rc = gguf_get_int(g, "split.count", &count, err)) < 0)
            return rc;
        if (rc == 0)
            count = 1;
        if (count != n_parts || no != i)
            return mdi_fail(err, MDI_EFORMAT, "%s: split.no %lld of split.count %lld, the file name says part %d of %d",
                            p, (long long)no, (long long)count, i + 1, n_parts);
        if ((rc = gguf_add_file(s, g, err)))
            return rc;
    }
    return gguf_config(s, s->ggufs[0], err);
}

/* A llama2.c checkpoint in a folder: the one .bin file that is not a tokenizer. */
static int find_llama2c_bin(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!str_has_suffix(e->d_name, ".bin") || !strncmp(e->d_name, "tok", 3))
            continue;
        if (path_join(out, cap, dir, e->d_name) == 0) {
            found = 1;
            break;
        }
    }
    closedir(d);
    return found;
}

tensor_source *tsrc_open(const char *path, char *err)
{
    return tsrc_open_mode(path, TSRC_MAP, err);
}

tensor_source *tsrc_open_mode(const char *path, tsrc_mode mode, char *err)
{
    tensor_source *s = calloc(1, sizeof(*s));
    if (!s) {
        mdi_fail(err, MDI_ENOMEM, "out of memory");
        return NULL;
    }
    s->anon = mode == TSRC_READ;
    s->metadata = json_object();
    int rc;
    char p[4096];
    if (dir_exists(path)) {
        char bin[4096];
        if (path_join(p, sizeof(p), path, "model.safetensors.index.json") == 0 && file_exists(p)) {
            rc = open_index(s, path, p, err);
        } else if (path_join(p, sizeof(p), path, "model.safetensors") == 0 && file_exists(p)) {
            rc = open_st_file(s, p, err);
        } else if (find_llama2c_bin(path, bin, sizeof(bin))) {
            rc = open_llama2c(s, bin, err);
        } else {
            rc = mdi_fail(err, MDI_EIO, "%s: no model.safetensors, model.safetensors.index.json or llama2.c .bin in this folder", path);
        }
    } else if (str_has_suffix(path, ".safetensors")) {
        rc = open_st_file(s, path, err);
    } else if (str_has_suffix(path, ".bin")) {
        rc = open_llama2c(s, path, err);
    } else if (str_has_suffix(path, ".gguf") && file_exists(path)) {
        rc = open_gguf(s, path, err);
    } else if (!file_exists(path)) {
        rc = mdi_fail(err, MDI_EIO, "%s: no such file or folder", path);
    } else {
        rc = mdi_fail(err, MDI_EUNSUPPORTED, "%s: not a checkpoint folder, .safetensors, .gguf or llama2.c .bin file",
                      path);
    }
    if (rc) {
        tsrc_close(s);
        return NULL;
    }
    return s;
}

void tsrc_close(tensor_source *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_files; i++) {
        if (s->files[i].map)
            munmap(s->files[i].map, s->files[i].size);
        free(s->files[i].path);
    }
    free(s->files);
    for (int i = 0; i < s->n_ggufs; i++)
        gguf_close(s->ggufs[i]);
    free(s->ggufs);
    for (int i = 0; i < s->n_owned; i++)
        free(s->owned[i]);
    free(s->owned);
    free(s->tensors);
    json_decref(s->metadata);
    json_decref(s->llama2c_config);
    free(s);
}

typedef struct {
    const volatile uint8_t *data;
    size_t nbytes, page;
    volatile unsigned sink;
} prefault_task;

static void prefault_worker(void *arg, int ith, int nth)
{
    prefault_task *t = arg;
    size_t n_pages = (t->nbytes + t->page - 1) / t->page;
    size_t per = (n_pages + (size_t)nth - 1) / (size_t)nth;
    size_t begin = per * (size_t)ith, end = begin + per < n_pages ? begin + per : n_pages;
    unsigned acc = 0;
    for (size_t i = begin; i < end; i++)
        acc += t->data[i * t->page];
    t->sink += acc; /* racy on purpose: only keeps the reads alive */
}

void tsrc_prefault(const void *data, size_t nbytes)
{
    if (!data || !nbytes)
        return;
    prefault_task t = { data, nbytes, (size_t)sysconf(_SC_PAGESIZE), 0 };
    kernels_parallel(prefault_worker, &t);
}

int tsrc_count(const tensor_source *s) { return s->n_tensors; }
const tensor_info *tsrc_get(const tensor_source *s, int i) { return &s->tensors[i]; }
json_t *tsrc_metadata(const tensor_source *s) { return s->metadata; }
json_t *tsrc_llama2c_config(const tensor_source *s) { return s->llama2c_config; }
const gguf_file *tsrc_gguf(const tensor_source *s) { return s->n_ggufs ? s->ggufs[0] : NULL; }

const tensor_info *tsrc_find(const tensor_source *s, const char *name)
{
    for (int i = 0; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i].name, name))
            return &s->tensors[i];
    return NULL;
}

/* ---- writer ---- */

typedef struct {
    char name[TENSOR_NAME_MAX];
    dtype_t dtype, src_dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    const void *data;
    size_t n_elem;
} st_pending;

struct st_writer {
    st_pending *t;
    int n, cap;
    json_t *meta;
};

st_writer *st_writer_new(void)
{
    st_writer *w = calloc(1, sizeof(*w));
    if (w)
        w->meta = json_object();
    return w;
}

void st_writer_set_meta(st_writer *w, const char *key, const char *value)
{
    json_object_set_new(w->meta, key, json_string(value));
}

int st_writer_add(st_writer *w, const char *name, dtype_t dtype, int ndim,
                  const int64_t *shape, const void *data, dtype_t src_dtype)
{
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS || strlen(name) >= TENSOR_NAME_MAX)
        return MDI_EARG;
    /* rows of a block type are whole blocks, in the file and in the source */
    int64_t last = ndim ? shape[ndim - 1] : 1;
    if (!dtype_row_ok(dtype, last) || !dtype_row_ok(src_dtype, last))
        return MDI_EARG;
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 64;
        st_pending *t = realloc(w->t, (size_t)cap * sizeof(*t));
        if (!t)
            return MDI_ENOMEM;
        w->t = t;
        w->cap = cap;
    }
    st_pending *p = &w->t[w->n++];
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->dtype = dtype;
    p->src_dtype = src_dtype;
    p->ndim = ndim;
    p->n_elem = 1;
    for (int d = 0; d < ndim; d++) {
        p->shape[d] = shape[d];
        p->n_elem *= (size_t)shape[d];
    }
    p->data = data;
    return MDI_OK;
}

typedef struct {
    FILE *f;
    sha256_ctx sha;
    uint64_t size;
    int failed;
} out_stream;

static void out_write(out_stream *o, const void *p, size_t n)
{
    if (o->failed || n == 0)
        return;
    if (fwrite(p, 1, n, o->f) != n) {
        o->failed = errno ? errno : EIO;
        return;
    }
    sha256_update(&o->sha, p, n);
    o->size += n;
}

int st_writer_finish(st_writer *w, const char *path, char sha256_out[65],
                     uint64_t *size_out, char *err)
{
    json_t *hdr = json_object();
    if (json_object_size(w->meta))
        json_object_set(hdr, "__metadata__", w->meta);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        st_pending *p = &w->t[i];
        json_t *shape = json_array();
        for (int d = 0; d < p->ndim; d++)
            json_array_append_new(shape, json_integer(p->shape[d]));
        uint64_t nb = dtype_row_size(p->dtype, (int64_t)p->n_elem);
        json_object_set_new(hdr, p->name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtype_st_name(p->dtype), "shape", shape,
                                      "data_offsets", (json_int_t)off, (json_int_t)(off + nb)));
        off += nb;
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    if (!text)
        return mdi_fail(err, MDI_ENOMEM, "%s: cannot build header", path);
    size_t tlen = strlen(text);
    size_t padded = (tlen + 7) & ~(size_t)7; /* keeps tensor data 8-byte aligned */

    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        free(text);
        return mdi_fail(err, MDI_EARG, "%s: path too long", path);
    }
    out_stream o = { 0 };
    sha256_init(&o.sha);
    o.f = fopen(tmp, "wb");
    if (!o.f) {
        int e = errno;
        free(text);
        return mdi_fail(err, MDI_EIO, "%s: cannot create: %s", tmp, strerror(e));
    }
    uint64_t hlen = padded;
    out_write(&o, &hlen, 8);
    out_write(&o, text, tlen);
    for (size_t i = tlen; i < padded; i++)
        out_write(&o, " ", 1);
    free(text);

    enum { CONV_BLOCK = 1 << 16 };
    static __thread uint8_t conv[CONV_BLOCK * 4];
    /* the source step, copied first when misaligned for its type's loads
     * (a safetensors header of any length puts data at any offset) */
    static __thread uint8_t src_copy[CONV_BLOCK * 4] __attribute__((aligned(16)));
    for (int i = 0; i < w->n && !o.failed; i++) {
        st_pending *p = &w->t[i];
        if (p->dtype == p->src_dtype) {
            out_write(&o, p->data, dtype_row_size(p->dtype, (int64_t)p->n_elem));
            continue;
        }
        for (size_t b = 0; b < p->n_elem && !o.failed; b += CONV_BLOCK) {
            size_t n = p->n_elem - b < CONV_BLOCK ? p->n_elem - b : CONV_BLOCK;
            const char *src = (const char *)p->data + dtype_row_size(p->src_dtype, (int64_t)b);
            if ((uintptr_t)src % sizeof(float) != 0) {
                memcpy(src_copy, src, dtype_row_size(p->src_dtype, (int64_t)n));
                src = (const char *)src_copy;
            }
            dtype_convert(conv, p->dtype, src, p->src_dtype, n);
            out_write(&o, conv, dtype_row_size(p->dtype, (int64_t)n));
        }
    }
    if (!o.failed && fflush(o.f) != 0)
        o.failed = errno ? errno : EIO;
    if (!o.failed && fsync(fileno(o.f)) != 0)
        o.failed = errno ? errno : EIO;
    if (fclose(o.f) != 0 && !o.failed)
        o.failed = errno ? errno : EIO;
    if (o.failed) {
        unlink(tmp);
        return mdi_fail(err, MDI_EIO, "%s: write failed: %s", path, strerror(o.failed));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return mdi_fail(err, MDI_EIO, "%s: cannot rename from %s: %s", path, tmp, strerror(e));
    }
    if (sha256_out)
        sha256_final_hex(&o.sha, sha256_out);
    if (size_out)
        *size_out = o.size;
    return MDI_OK;
}

void st_writer_free(st_writer *w)
{
    if (!w)
        return;
    free(w->t);
    json_decref(w->meta);
    free(w);
}
