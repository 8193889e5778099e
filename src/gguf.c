/* gguf: GGUF reader and writer; see gguf.h for the layout. */
#include "gguf.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- types ---- */

static const char *const ggml_type_names[] = {
    "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
    "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
    "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8",
    "MXFP4",
};

static const struct { uint32_t ggml; dtype_t dtype; } ggml_dtypes[] = {
    { 0, DTYPE_F32 }, { 1, DTYPE_F16 }, { 2, DTYPE_Q4_0 }, { 8, DTYPE_Q8_0 }, { 12, DTYPE_Q4_K },
    { 13, DTYPE_Q5_K }, { 14, DTYPE_Q6_K }, { 15, DTYPE_Q8_K }, { 30, DTYPE_BF16 },
};
#define N_GGML_DTYPES (sizeof(ggml_dtypes) / sizeof(ggml_dtypes[0]))

const char *gguf_ggml_type_name(uint32_t t)
{
    static __thread char buf[32];
    if (t < sizeof(ggml_type_names) / sizeof(ggml_type_names[0]))
        return ggml_type_names[t];
    snprintf(buf, sizeof(buf), "type %u", t);
    return buf;
}

int gguf_dtype_from_ggml(uint32_t t, dtype_t *out)
{
    for (size_t i = 0; i < N_GGML_DTYPES; i++) {
        if (ggml_dtypes[i].ggml == t) {
            *out = ggml_dtypes[i].dtype;
            return 0;
        }
    }
    return -1;
}

uint32_t gguf_ggml_from_dtype(dtype_t t)
{
    for (size_t i = 0; i < N_GGML_DTYPES; i++)
        if (ggml_dtypes[i].dtype == t)
            return ggml_dtypes[i].ggml;
    return UINT32_MAX;
}

static const char *const type_names[GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array",
    "uint64", "int64", "float64",
};

const char *gguf_type_name(gguf_type t)
{
    return (unsigned)t < GGUF_TYPE_COUNT ? type_names[t] : "unknown type";
}

/* Bytes of one value of a fixed-size type; 0 for strings, arrays, unknown. */
static uint64_t type_size(uint32_t t)
{
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---- reader ---- */

typedef struct {
    const uint8_t *p;
    uint64_t size, off;
    const char *name;
    char *err;
} cursor;

static int need(cursor *c, uint64_t n, const char *what)
{
    if (n > c->size - c->off)
        return mdi_fail(c->err, MDI_EFORMAT, "%s: truncated file: %s at byte %" PRIu64 " needs %" PRIu64
                        " bytes, the file has %" PRIu64, c->name, what, c->off, n, c->size);
    return MDI_OK;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what)
{
    int rc = need(c, 4, what);
    if (rc)
        return rc;
    memcpy(v, c->p + c->off, 4);
    c->off += 4;
    return MDI_OK;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what)
{
    int rc = need(c, 8, what);
    if (rc)
        return rc;
    memcpy(v, c->p + c->off, 8);
    c->off += 8;
    return MDI_OK;
}

/* A string: *s points into the file, *len its length. */
static int rd_str(cursor *c, const char **s, uint64_t *len, const char *what)
{
    uint64_t at = c->off;
    int rc = rd_u64(c, len, what);
    if (rc)
        return rc;
    if (*len > c->size - c->off)
        return mdi_fail(c->err, MDI_EFORMAT, "%s: %s at byte %" PRIu64 " has length %" PRIu64
                        ", beyond the end of the file (%" PRIu64 " bytes)", c->name, what, at, *len, c->size);
    *s = (const char *)c->p + c->off;
    c->off += *len;
    return MDI_OK;
}

static char *dup_str(const char *s, uint64_t len)
{
    char *d = malloc(len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

/* One metadata value of type t at the cursor into kv (arrays: elements). */
static int rd_value(gguf_file *g, cursor *c, gguf_kv *kv)
{
    kv->offset = c->off;
    kv->n = 1;
    if (kv->type == GGUF_TYPE_STRING) {
        const char *s;
        int rc = rd_str(c, &s, &kv->n, "a string value");
        if (rc)
            return rc;
        kv->data = (const uint8_t *)s;
        return MDI_OK;
    }
    if (kv->type == GGUF_TYPE_ARRAY) {
        uint32_t et;
        int rc = rd_u32(c, &et, "an array's element type");
        if (rc || (rc = rd_u64(c, &kv->n, "an array's length")))
            return rc;
        if (et == GGUF_TYPE_ARRAY)
            return mdi_fail(c->err, MDI_EUNSUPPORTED, "%s: metadata %s at byte %" PRIu64 " is an array of arrays",
                            g->path, kv->key, kv->offset);
        if (et >= GGUF_TYPE_COUNT)
            return mdi_fail(c->err, MDI_EFORMAT, "%s: metadata %s at byte %" PRIu64
                            " is an array of unknown type %u", g->path, kv->key, kv->offset, et);
        kv->arr_type = (gguf_type)et;
        kv->data = c->p + c->off;
        if (et == GGUF_TYPE_STRING) {
            /* each element takes at least its 8-byte length */
            if (kv->n > (c->size - c->off) / 8)
                return mdi_fail(c->err, MDI_EFORMAT, "%s: metadata %s at byte %" PRIu64 ": %" PRIu64
                                " strings cannot fit in the %" PRIu64 " bytes left", g->path, kv->key,
                                kv->offset, kv->n, c->size - c->off);
            kv->str_offsets = malloc((kv->n ? kv->n : 1) * sizeof(uint64_t));
            if (!kv->str_offsets)
                return mdi_fail(c->err, MDI_ENOMEM, "%s: out of memory", g->path);
            for (uint64_t i = 0; i < kv->n; i++) {
                const char *s;
                uint64_t len;
                kv->str_offsets[i] = c->off;
                if ((rc = rd_str(c, &s, &len, "an array string")))
                    return rc;
            }
            return MDI_OK;
        }
        uint64_t es = type_size(et);
        if (kv->n > (c->size - c->off) / es)
            return mdi_fail(c->err, MDI_EFORMAT, "%s: metadata %s at byte %" PRIu64 ": %" PRIu64
                            " elements of %s cannot fit in the %" PRIu64 " bytes left", g->path, kv->key,
                            kv->offset, kv->n, type_names[et], c->size - c->off);
        c->off += kv->n * es;
        return MDI_OK;
    }
    uint64_t sz = type_size(kv->type);
    int rc = need(c, sz, "a metadata value");
    if (rc)
        return rc;
    kv->data = c->p + c->off;
    c->off += sz;
    return MDI_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int parse(gguf_file *g, char *err)
{
    cursor c = { g->map, g->size, 0, g->path, err };
    if (g->size < 4 || memcmp(g->map, GGUF_MAGIC, 4) != 0) {
        uint32_t m = 0;
        memcpy(&m, g->map, g->size < 4 ? g->size : 4);
        return mdi_fail(err, MDI_EFORMAT, "%s: bad magic 0x%08x at byte 0: not a GGUF file", g->path, m);
    }
    c.off = 4;
    int rc;
    uint64_t n_tensors, n_kv;
    if ((rc = rd_u32(&c, &g->version, "the version")))
        return rc;
    if (g->version != 2 && g->version != 3)
        return mdi_fail(err, MDI_EUNSUPPORTED, "%s: GGUF version %u at byte 4 is not supported (2 and 3 are%s)",
                        g->path, g->version, g->version == 1 ? "; version 1 predates 64-bit counts" :
                        g->version > 0xffff ? "; a big-endian file?" : "");
    if ((rc = rd_u64(&c, &n_tensors, "the tensor count")) || (rc = rd_u64(&c, &n_kv, "the metadata count")))
        return rc;
    /* a pair takes at least 13 bytes (key length, type, one byte), a tensor info 24 */
    if (n_kv > (g->size - c.off) / 13)
        return mdi_fail(err, MDI_EFORMAT, "%s: metadata count %" PRIu64 " at byte 16 cannot fit in the file (%"
                        PRIu64 " bytes)", g->path, n_kv, g->size);
    if (n_tensors > (g->size - c.off) / 24)
        return mdi_fail(err, MDI_EFORMAT, "%s: tensor count %" PRIu64 " at byte 8 cannot fit in the file (%"
                        PRIu64 " bytes)", g->path, n_tensors, g->size);
    g->kv = calloc(n_kv ? n_kv : 1, sizeof(gguf_kv));
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof(gguf_tensor));
    if (!g->kv || !g->tensors)
        return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", g->path);

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        const char *key;
        uint64_t key_len, at = c.off;
        uint32_t t;
        if ((rc = rd_str(&c, &key, &key_len, "a metadata key")))
            return rc;
        if (!(kv->key = dup_str(key, key_len)))
            return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", g->path);
        g->n_kv = (int64_t)i + 1;
        if (strlen(kv->key) != key_len || key_len == 0)
            return mdi_fail(err, MDI_EFORMAT, "%s: metadata key at byte %" PRIu64 " is empty or holds a NUL",
                            g->path, at);
        if ((rc = rd_u32(&c, &t, "a metadata type")))
            return rc;
        if (t >= GGUF_TYPE_COUNT)
            return mdi_fail(err, MDI_EFORMAT, "%s: metadata %s at byte %" PRIu64 " has unknown type %u", g->path,
                            kv->key, at, t);
        kv->type = (gguf_type)t;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->kv[j].key, kv->key))
                return mdi_fail(err, MDI_EFORMAT, "%s: metadata %s at byte %" PRIu64 " is given twice", g->path,
                                kv->key, at);
        if ((rc = rd_value(g, &c, kv)))
            return rc;
    }
    int64_t align;
    if ((rc = gguf_get_int(g, "general.alignment", &align, err)) < 0)
        return rc;
    if (rc == 1) {
        const gguf_kv *kv = &g->kv[gguf_find_key(g, "general.alignment")];
        if (kv->type != GGUF_TYPE_UINT32)
            return mdi_fail(err, MDI_EFORMAT, "%s: metadata general.alignment at byte %" PRIu64 " is %s, expected uint32",
                            g->path, kv->offset, type_names[kv->type]);
        if (align <= 0 || (align & (align - 1)) != 0)
            return mdi_fail(err, MDI_EFORMAT, "%s: metadata general.alignment at byte %" PRIu64
                            " is %" PRId64 ", not a power of two", g->path, kv->offset, align);
        g->alignment = (uint64_t)align;
    }

    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        const char *name;
        uint64_t name_len;
        uint32_t n_dims;
        t->info_offset = c.off;
        if ((rc = rd_str(&c, &name, &name_len, "a tensor name")))
            return rc;
        if (!(t->name = dup_str(name, name_len)))
            return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", g->path);
        g->n_tensors = (int64_t)i + 1;
        if (strlen(t->name) != name_len || name_len == 0)
            return mdi_fail(err, MDI_EFORMAT, "%s: tensor name at byte %" PRIu64 " is empty or holds a NUL", g->path,
                            t->info_offset);
        if ((rc = rd_u32(&c, &n_dims, "a tensor's dimension count")))
            return rc;
        if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
            return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s at byte %" PRIu64 " has %u dimensions (1 to %d allowed)",
                            g->path, t->name, t->info_offset, n_dims, GGUF_MAX_DIMS);
        t->n_dims = (int)n_dims;
        uint64_t n_elem = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            uint64_t ne;
            if ((rc = rd_u64(&c, &ne, "a tensor dimension")))
                return rc;
            /* 2^56 elements is beyond any file; keeps every product below in 64 bits */
            if (ne > ((uint64_t)1 << 56) || (ne && n_elem > ((uint64_t)1 << 56) / ne))
                return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s at byte %" PRIu64 ": dimension %u (%" PRIu64
                                ") makes the element count overflow", g->path, t->name, t->info_offset, d, ne);
            t->ne[d] = (int64_t)ne;
            n_elem *= ne;
        }
        if ((rc = rd_u32(&c, &t->ggml_type, "a tensor type")) || (rc = rd_u64(&c, &t->offset, "a tensor offset")))
            return rc;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->tensors[j].name, t->name))
                return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s at byte %" PRIu64 " is given twice", g->path, t->name,
                                t->info_offset);
        if (gguf_dtype_from_ggml(t->ggml_type, &t->dtype) != 0)
            return mdi_fail(err, MDI_EUNSUPPORTED, "%s: tensor %s at byte %" PRIu64 " has type %s (%u), not supported "
                            "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)", g->path, t->name,
                            t->info_offset, gguf_ggml_type_name(t->ggml_type), t->ggml_type);
        if (!dtype_row_ok(t->dtype, t->ne[0]))
            return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s at byte %" PRIu64 ": type %s needs rows of a multiple of %d"
                            " values, ne[0] is %" PRId64, g->path, t->name, t->info_offset,
                            gguf_ggml_type_name(t->ggml_type), dtype_block_size(t->dtype), t->ne[0]);
        t->nbytes = (uint64_t)dtype_row_size(t->dtype, t->ne[0]) * (t->ne[0] ? n_elem / (uint64_t)t->ne[0] : 0);
        if (t->offset % g->alignment != 0)
            return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s at byte %" PRIu64 ": data offset %" PRIu64
                            " is not a multiple of the alignment %" PRIu64, g->path, t->name, t->info_offset,
                            t->offset, g->alignment);
    }
    /* the data section starts at the next multiple of the alignment */
    uint64_t pad = (g->alignment - c.off % g->alignment) % g->alignment;
    if (c.off + pad > g->size && n_tensors)
        return mdi_fail(err, MDI_EFORMAT, "%s: truncated file: the data section would start at byte %" PRIu64
                        ", the file has %" PRIu64, g->path, c.off + pad, g->size);
    g->data_offset = c.off + pad;
    uint64_t data_size = g->size > g->data_offset ? g->size - g->data_offset : 0;

    gguf_tensor **order = malloc((size_t)(n_tensors ? n_tensors : 1) * sizeof(*order));
    if (!order)
        return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", g->path);
    for (uint64_t i = 0; i < n_tensors; i++)
        order[i] = &g->tensors[i];
    qsort(order, (size_t)n_tensors, sizeof(*order), cmp_offset);
    rc = MDI_OK;
    for (uint64_t i = 0; i < n_tensors && !rc; i++) {
        gguf_tensor *t = order[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            rc = mdi_fail(err, MDI_EFORMAT, "%s: truncated tensor data: tensor %s (info at byte %" PRIu64
                          ") needs bytes [%" PRIu64 ", %" PRIu64 ") of the file, which has %" PRIu64, g->path,
                          t->name, t->info_offset, g->data_offset + t->offset, g->data_offset + t->offset + t->nbytes,
                          g->size);
        else if (i > 0 && order[i - 1]->offset + order[i - 1]->nbytes > t->offset)
            rc = mdi_fail(err, MDI_EFORMAT, "%s: tensors %s and %s overlap: bytes [%" PRIu64 ", %" PRIu64
                          ") and [%" PRIu64 ", %" PRIu64 ")", g->path, order[i - 1]->name, t->name,
                          g->data_offset + order[i - 1]->offset,
                          g->data_offset + order[i - 1]->offset + order[i - 1]->nbytes,
                          g->data_offset + t->offset, g->data_offset + t->offset + t->nbytes);
        else
            t->data = g->map + g->data_offset + t->offset;
    }
    free(order);
    return rc;
}

static gguf_file *open_common(gguf_file *g, char *err)
{
    if (parse(g, err) != MDI_OK) {
        gguf_close(g);
        return NULL;
    }
    return g;
}

gguf_file *gguf_open_memory(const void *data, size_t size, const char *name, char *err)
{
    gguf_file *g = calloc(1, sizeof(*g));
    if (!g || !(g->path = strdup(name))) {
        free(g);
        mdi_fail(err, MDI_ENOMEM, "%s: out of memory", name);
        return NULL;
    }
    g->map = data;
    g->size = size;
    return open_common(g, err);
}

gguf_file *gguf_open(const char *path, char *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        mdi_fail(err, MDI_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        mdi_fail(err, MDI_EIO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (st.st_size < 24) {
        close(fd);
        mdi_fail(err, MDI_EFORMAT, "%s: truncated file: %lld bytes, a GGUF header takes 24", path,
                 (long long)st.st_size);
        return NULL;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) {
        mdi_fail(err, MDI_EIO, "%s: cannot mmap: %s", path, strerror(e));
        return NULL;
    }
    gguf_file *g = gguf_open_memory(map, (size_t)st.st_size, path, err);
    if (!g) {
        munmap(map, (size_t)st.st_size);
        return NULL;
    }
    g->owns_map = 1;
    return g;
}

void gguf_close(gguf_file *g)
{
    if (!g)
        return;
    for (int64_t i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].str_offsets);
    }
    for (int64_t i = 0; i < g->n_tensors; i++)
        free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    if (g->owns_map)
        munmap((void *)g->map, g->size);
    free(g->path);
    free(g);
}

/* ---- lookups ---- */

int64_t gguf_find_key(const gguf_file *g, const char *key)
{
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && !strcmp(g->kv[i].key, key))
            return i;
    return -1;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name)
{
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name))
            return &g->tensors[i];
    return NULL;
}

static int wrong_type(const gguf_file *g, const gguf_kv *kv, const char *expected, char *err)
{
    if (kv->type == GGUF_TYPE_ARRAY)
        return mdi_fail(err, MDI_EFORMAT, "%s: metadata %s at byte %" PRIu64 " is an array of %s, expected %s",
                        g->path, kv->key, kv->offset, type_names[kv->arr_type], expected);
    return mdi_fail(err, MDI_EFORMAT, "%s: metadata %s at byte %" PRIu64 " is %s, expected %s", g->path, kv->key,
                    kv->offset, type_names[kv->type], expected);
}

/* A number of type t at p, as a double and (when exact) an int64. */
static double num_at(uint32_t t, const uint8_t *p, int64_t *as_int, int *is_int)
{
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f32;
            uint64_t u64; int64_t i64; double f64; } v;
    memcpy(&v, p, type_size(t));
    *is_int = 1;
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_BOOL: *as_int = v.u8; break;
    case GGUF_TYPE_INT8: *as_int = v.i8; break;
    case GGUF_TYPE_UINT16: *as_int = v.u16; break;
    case GGUF_TYPE_INT16: *as_int = v.i16; break;
    case GGUF_TYPE_UINT32: *as_int = v.u32; break;
    case GGUF_TYPE_INT32: *as_int = v.i32; break;
    case GGUF_TYPE_INT64: *as_int = v.i64; break;
    case GGUF_TYPE_UINT64:
        *as_int = (int64_t)v.u64;
        if (v.u64 > INT64_MAX) {
            *is_int = 0;
            return (double)v.u64;
        }
        break;
    case GGUF_TYPE_FLOAT32: *is_int = 0; return v.f32;
    case GGUF_TYPE_FLOAT64: *is_int = 0; return v.f64;
    default: *is_int = 0; return 0;
    }
    return (double)*as_int;
}

static int is_int_type(uint32_t t)
{
    return t <= GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
}

int gguf_get_int(const gguf_file *g, const char *key, int64_t *out, char *err)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return 0;
    const gguf_kv *kv = &g->kv[i];
    if (!is_int_type(kv->type) && kv->type != GGUF_TYPE_BOOL)
        return wrong_type(g, kv, "an integer", err);
    int is_int;
    int64_t v;
    num_at(kv->type, kv->data, &v, &is_int);
    if (!is_int)
        return mdi_fail(err, MDI_EFORMAT, "%s: metadata %s at byte %" PRIu64 " is out of range", g->path, key,
                        kv->offset);
    *out = v;
    return 1;
}

int gguf_get_float(const gguf_file *g, const char *key, double *out, char *err)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return 0;
    const gguf_kv *kv = &g->kv[i];
    if (!is_int_type(kv->type) && kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)
        return wrong_type(g, kv, "a number", err);
    int is_int;
    int64_t v;
    *out = num_at(kv->type, kv->data, &v, &is_int);
    return 1;
}

int gguf_get_bool(const gguf_file *g, const char *key, int *out, char *err)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return 0;
    const gguf_kv *kv = &g->kv[i];
    if (kv->type != GGUF_TYPE_BOOL)
        return wrong_type(g, kv, "bool", err);
    *out = kv->data[0] != 0;
    return 1;
}

int gguf_get_str(const gguf_file *g, const char *key, const char **s, size_t *len, char *err)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return 0;
    const gguf_kv *kv = &g->kv[i];
    if (kv->type != GGUF_TYPE_STRING)
        return wrong_type(g, kv, "string", err);
    *s = (const char *)kv->data;
    *len = (size_t)kv->n;
    return 1;
}

int gguf_get_arr(const gguf_file *g, const char *key, gguf_type elem, const gguf_kv **kv_out, char *err)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return 0;
    const gguf_kv *kv = &g->kv[i];
    if (kv->type != GGUF_TYPE_ARRAY || (elem != GGUF_TYPE_COUNT && kv->arr_type != elem)) {
        char want[48];
        snprintf(want, sizeof(want), "an array of %s", elem == GGUF_TYPE_COUNT ? "values" : type_names[elem]);
        return wrong_type(g, kv, want, err);
    }
    *kv_out = kv;
    return 1;
}

double gguf_arr_num(const gguf_kv *kv, uint64_t i)
{
    int is_int;
    int64_t v;
    CHECK(kv->type == GGUF_TYPE_ARRAY && i < kv->n && type_size(kv->arr_type));
    return num_at(kv->arr_type, kv->data + i * type_size(kv->arr_type), &v, &is_int);
}

const char *gguf_arr_str(const gguf_file *g, const gguf_kv *kv, uint64_t i, size_t *len)
{
    CHECK(kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING && i < kv->n);
    uint64_t l;
    memcpy(&l, g->map + kv->str_offsets[i], 8);
    *len = (size_t)l;
    return (const char *)g->map + kv->str_offsets[i] + 8;
}

/* ---- writer ---- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int failed;
} buf_t;

static void buf_put(buf_t *b, const void *p, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_u32(buf_t *b, uint32_t v) { buf_put(b, &v, 4); }
static void buf_u64(buf_t *b, uint64_t v) { buf_put(b, &v, 8); }
static void buf_str(buf_t *b, const char *s)
{
    buf_u64(b, strlen(s));
    buf_put(b, s, strlen(s));
}

typedef struct {
    char *name;
    dtype_t dtype;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    void *data;
    size_t nbytes;
} pending_tensor;

struct gguf_writer {
    buf_t kv;          /* encoded pairs */
    int64_t n_kv;
    pending_tensor *t;
    int n, cap;
    int failed;
};

gguf_writer *gguf_writer_new(void)
{
    return calloc(1, sizeof(gguf_writer));
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w->kv.p);
    free(w);
}

static void put_num(buf_t *b, gguf_type t, double v)
{
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f32;
            uint64_t u64; int64_t i64; double f64; } u;
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_BOOL: u.u8 = (uint8_t)v; break;
    case GGUF_TYPE_INT8: u.i8 = (int8_t)v; break;
    case GGUF_TYPE_UINT16: u.u16 = (uint16_t)v; break;
    case GGUF_TYPE_INT16: u.i16 = (int16_t)v; break;
    case GGUF_TYPE_UINT32: u.u32 = (uint32_t)v; break;
    case GGUF_TYPE_INT32: u.i32 = (int32_t)v; break;
    case GGUF_TYPE_FLOAT32: u.f32 = (float)v; break;
    case GGUF_TYPE_UINT64: u.u64 = (uint64_t)v; break;
    case GGUF_TYPE_INT64: u.i64 = (int64_t)v; break;
    case GGUF_TYPE_FLOAT64: u.f64 = v; break;
    default: b->failed = 1; return;
    }
    buf_put(b, &u, type_size(t));
}

static void put_key(gguf_writer *w, const char *key, uint32_t type)
{
    buf_str(&w->kv, key);
    buf_u32(&w->kv, type);
    w->n_kv++;
}

int gguf_writer_set_int(gguf_writer *w, const char *key, gguf_type type, int64_t v)
{
    if (!is_int_type(type))
        return MDI_EARG;
    put_key(w, key, type);
    if (type == GGUF_TYPE_UINT64 || type == GGUF_TYPE_INT64)
        buf_put(&w->kv, &v, 8); /* exact beyond 2^53 */
    else
        put_num(&w->kv, type, (double)v);
    return w->kv.failed ? MDI_ENOMEM : MDI_OK;
}

int gguf_writer_set_float(gguf_writer *w, const char *key, gguf_type type, double v)
{
    if (type != GGUF_TYPE_FLOAT32 && type != GGUF_TYPE_FLOAT64)
        return MDI_EARG;
    put_key(w, key, type);
    put_num(&w->kv, type, v);
    return w->kv.failed ? MDI_ENOMEM : MDI_OK;
}

int gguf_writer_set_bool(gguf_writer *w, const char *key, int v)
{
    put_key(w, key, GGUF_TYPE_BOOL);
    uint8_t b = v ? 1 : 0;
    buf_put(&w->kv, &b, 1);
    return w->kv.failed ? MDI_ENOMEM : MDI_OK;
}

int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v)
{
    put_key(w, key, GGUF_TYPE_STRING);
    buf_str(&w->kv, v);
    return w->kv.failed ? MDI_ENOMEM : MDI_OK;
}

int gguf_writer_set_arr_num(gguf_writer *w, const char *key, gguf_type elem, const double *v, uint64_t n)
{
    if (!type_size(elem))
        return MDI_EARG;
    put_key(w, key, GGUF_TYPE_ARRAY);
    buf_u32(&w->kv, elem);
    buf_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++)
        put_num(&w->kv, elem, v[i]);
    return w->kv.failed ? MDI_ENOMEM : MDI_OK;
}

int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    put_key(w, key, GGUF_TYPE_ARRAY);
    buf_u32(&w->kv, GGUF_TYPE_STRING);
    buf_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++)
        buf_str(&w->kv, v[i]);
    return w->kv.failed ? MDI_ENOMEM : MDI_OK;
}

int gguf_writer_set_raw(gguf_writer *w, const char *key, uint32_t type, const void *bytes, size_t n)
{
    put_key(w, key, type);
    buf_put(&w->kv, bytes, n);
    return w->kv.failed ? MDI_ENOMEM : MDI_OK;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, dtype_t t, int n_dims, const int64_t *ne,
                           const void *data)
{
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || gguf_ggml_from_dtype(t) == UINT32_MAX || !dtype_row_ok(t, ne[0]))
        return MDI_EARG;
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 32;
        pending_tensor *p = realloc(w->t, (size_t)cap * sizeof(*p));
        if (!p)
            return MDI_ENOMEM;
        w->t = p;
        w->cap = cap;
    }
    pending_tensor *p = &w->t[w->n];
    memset(p, 0, sizeof(*p));
    int64_t rows = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        p->ne[d] = d < n_dims ? ne[d] : 1;
        if (d)
            rows *= p->ne[d];
    }
    p->n_dims = n_dims;
    p->dtype = t;
    p->nbytes = (size_t)rows * dtype_row_size(t, ne[0]);
    p->name = strdup(name);
    p->data = malloc(p->nbytes ? p->nbytes : 1);
    if (!p->name || !p->data) {
        free(p->name);
        free(p->data);
        return MDI_ENOMEM;
    }
    memcpy(p->data, data, p->nbytes);
    w->n++;
    return MDI_OK;
}

int gguf_writer_write(gguf_writer *w, const char *path, char *err)
{
    const uint64_t align = GGUF_DEFAULT_ALIGNMENT;
    buf_t h = { 0 };
    buf_put(&h, GGUF_MAGIC, 4);
    buf_u32(&h, 3);
    buf_u64(&h, (uint64_t)w->n);
    buf_u64(&h, (uint64_t)w->n_kv);
    buf_put(&h, w->kv.p, w->kv.len);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        pending_tensor *p = &w->t[i];
        buf_str(&h, p->name);
        buf_u32(&h, (uint32_t)p->n_dims);
        for (int d = 0; d < p->n_dims; d++)
            buf_u64(&h, (uint64_t)p->ne[d]);
        buf_u32(&h, gguf_ggml_from_dtype(p->dtype));
        buf_u64(&h, off);
        off += (p->nbytes + align - 1) / align * align;
    }
    static const uint8_t zeros[GGUF_DEFAULT_ALIGNMENT];
    buf_put(&h, zeros, (align - h.len % align) % align);
    if (h.failed || w->kv.failed) {
        free(h.p);
        return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", path);
    }
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        free(h.p);
        return mdi_fail(err, MDI_EARG, "%s: path too long", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        free(h.p);
        return mdi_fail(err, MDI_EIO, "%s: cannot create: %s", tmp, strerror(e));
    }
    int ok = fwrite(h.p, 1, h.len, f) == h.len;
    free(h.p);
    for (int i = 0; i < w->n && ok; i++) {
        pending_tensor *p = &w->t[i];
        ok = fwrite(p->data, 1, p->nbytes, f) == p->nbytes &&
             fwrite(zeros, 1, (align - p->nbytes % align) % align, f) == (align - p->nbytes % align) % align;
    }
    int e = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        return mdi_fail(err, MDI_EIO, "%s: write failed: %s", path, strerror(e ? e : EIO));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return mdi_fail(err, MDI_EIO, "%s: cannot rename from %s: %s", path, tmp, strerror(e));
    }
    return MDI_OK;
}

int gguf_write_tokenizer(const gguf_file *g, const char *path, char *err)
{
    gguf_writer *w = gguf_writer_new();
    if (!w)
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    int rc = MDI_OK;
    for (int64_t i = 0; i < g->n_kv && !rc; i++) {
        const gguf_kv *kv = &g->kv[i];
        if (strncmp(kv->key, "tokenizer.", 10) && strcmp(kv->key, "general.architecture"))
            continue;
        /* the encoded value, as it lies in the file */
        const uint8_t *begin = kv->data, *end;
        if (kv->type == GGUF_TYPE_STRING) {
            begin -= 8;
            end = kv->data + kv->n;
        } else if (kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING) {
            begin -= 12;
            size_t len = 0;
            const char *last = kv->n ? gguf_arr_str(g, kv, kv->n - 1, &len) : NULL;
            end = last ? (const uint8_t *)last + len : kv->data;
        } else if (kv->type == GGUF_TYPE_ARRAY && type_size(kv->arr_type)) {
            begin -= 12;
            end = kv->data + kv->n * type_size(kv->arr_type);
        } else if (kv->type != GGUF_TYPE_ARRAY && type_size(kv->type)) {
            end = kv->data + type_size(kv->type);
        } else {
            rc = mdi_fail(err, MDI_EUNSUPPORTED, "%s: metadata %s: nested arrays are not copied", g->path, kv->key);
            break;
        }
        rc = gguf_writer_set_raw(w, kv->key, kv->type, begin, (size_t)(end - begin));
    }
    if (!rc)
        rc = gguf_writer_write(w, path, err);
    gguf_writer_free(w);
    return rc;
}
