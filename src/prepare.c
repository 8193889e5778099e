/* prepare: see prepare.h. */
#include "prepare.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>

#include "hub.h"
#include "model.h"
#include "safetensors.h"
#include "util.h"

#define PATH_CAP 4096

/* ---- small file helpers ---- */

/* The last component of path, trailing slashes ignored. */
static void path_basename(const char *path, char *out, size_t cap)
{
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/')
        start--;
    size_t n = len - start;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, path + start, n);
    out[n] = 0;
}

/* fsync a folder so a rename inside it survives a power cut; best effort. */
static void sync_dir(const char *path)
{
    char dir[PATH_CAP];
    path_dirname(path, dir, sizeof(dir));
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Writes data to path + ".tmp", fsyncs it and renames it onto path, so a
 * reader sees the old file or the new one, never a part. */
static int file_write_atomic(const char *path, const void *data, size_t len, char *err)
{
    char tmp[PATH_CAP];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return mdi_fail(err, MDI_EARG, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return mdi_fail(err, MDI_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    int failed = 0;
    if (fd_write_all(fd, data, len) != 0 || fsync(fd) != 0)
        failed = errno ? errno : EIO;
    if (close(fd) != 0 && !failed)
        failed = errno ? errno : EIO;
    if (!failed && rename(tmp, path) != 0)
        failed = errno ? errno : EIO;
    if (failed) {
        unlink(tmp);
        return mdi_fail(err, MDI_EIO, "%s: write failed: %s", path, strerror(failed));
    }
    sync_dir(path);
    return MDI_OK;
}

/* Copies src onto dst atomically, unless dst already holds the same bytes. */
static int copy_file_atomic(const char *src, const char *dst, char *err)
{
    char *data = NULL, *old = NULL;
    size_t len = 0, old_len = 0;
    int rc = file_read_all(src, &data, &len, err);
    if (rc)
        return rc;
    if (file_exists(dst) && file_read_all(dst, &old, &old_len, NULL) == 0 && old_len == len &&
        memcmp(old, data, len) == 0) {
        free(old);
        free(data);
        return MDI_OK;
    }
    free(old);
    rc = file_write_atomic(dst, data, len, err);
    free(data);
    return rc;
}

/* Removes the *.tmp files a killed run may have left in dir. Nothing reads
 * them (readers only open final names), so this is tidying, not recovery. */
static void remove_tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[PATH_CAP];
    while ((e = readdir(d))) {
        if (str_has_suffix(e->d_name, ".tmp") && path_join(p, sizeof(p), dir, e->d_name) == 0 &&
            file_exists(p)) {
            if (unlink(p) == 0)
                log_info("removed %s, left by an unfinished run", p);
        }
    }
    closedir(d);
}

/* ---- split planning ---- */

int prepare_plan_split(const double *layer_cost, int n_layers, double head_cost,
                       int n_nodes, int *counts, char *err)
{
    if (n_nodes < 1 || n_nodes > n_layers)
        return mdi_fail(err, MDI_EARG,
                        "--n-nodes %d: must be between 1 and the number of layers (%d), since every node holds at least one layer",
                        n_nodes, n_layers);
    int n = n_layers, k = n_nodes - 1; /* k secondaries */
    if (k == 0) {
        counts[0] = n;
        return MDI_OK;
    }
    double *prefix = malloc((size_t)(n + 1) * sizeof(double));
    /* best[j][s]: the least largest cost of layers [s, n) over j secondaries,
     * each taking >= 1 layer; cut[j][s]: where the first of them ends. */
    double *best = malloc((size_t)(k + 1) * (size_t)(n + 1) * sizeof(double));
    int *cut = malloc((size_t)(k + 1) * (size_t)(n + 1) * sizeof(int));
    if (!prefix || !best || !cut) {
        free(prefix);
        free(best);
        free(cut);
        return mdi_fail(err, MDI_ENOMEM, "out of memory planning the split");
    }
#define BEST(j, s) best[(size_t)(j) * (size_t)(n + 1) + (size_t)(s)]
#define CUT(j, s) cut[(size_t)(j) * (size_t)(n + 1) + (size_t)(s)]
    prefix[0] = 0;
    for (int l = 0; l < n; l++)
        prefix[l + 1] = prefix[l] + layer_cost[l];
    const double inf = 1e300;
    for (int s = 0; s <= n; s++) {
        BEST(1, s) = s < n ? prefix[n] - prefix[s] : inf;
        CUT(1, s) = n;
    }
    for (int j = 2; j <= k; j++) {
        for (int s = 0; s <= n; s++) {
            BEST(j, s) = inf;
            CUT(j, s) = -1;
            /* "<=": on ties the earlier node takes more layers */
            for (int t = s + 1; t <= n - (j - 1); t++) {
                double a = prefix[t] - prefix[s], b = BEST(j - 1, t);
                double v = a > b ? a : b;
                if (v <= BEST(j, s)) {
                    BEST(j, s) = v;
                    CUT(j, s) = t;
                }
            }
        }
    }
    int best_s = -1;
    double best_v = inf;
    for (int s = 1; s <= n - k; s++) {
        double a = prefix[s] + head_cost, b = BEST(k, s);
        double v = a > b ? a : b;
        if (v <= best_v) { /* ties: the starter takes more */
            best_v = v;
            best_s = s;
        }
    }
    counts[0] = best_s;
    int pos = best_s;
    for (int j = k; j >= 1; j--) {
        int t = CUT(j, pos);
        counts[k - j + 1] = t - pos;
        pos = t;
    }
#undef BEST
#undef CUT
    free(prefix);
    free(best);
    free(cut);
    return MDI_OK;
}

int prepare_check_layers(const int *counts, int n_given, int n_nodes, int n_layers, char *err)
{
    if (n_given != n_nodes)
        return mdi_fail(err, MDI_EARG, "--layers gives %d counts but --n-nodes is %d (one count per node, starter first)",
                        n_given, n_nodes);
    long sum = 0;
    for (int i = 0; i < n_given; i++) {
        if (counts[i] < 0)
            return mdi_fail(err, MDI_EARG, "--layers: count %d of node %d is negative", counts[i], i);
        if (i > 0 && counts[i] < 1)
            return mdi_fail(err, MDI_EARG, "--layers: secondary %d gets no layer (each secondary needs at least one)",
                            i - 1);
        sum += counts[i];
    }
    if (sum != n_layers)
        return mdi_fail(err, MDI_EARG, "--layers: counts sum to %ld but the model has %d layers", sum, n_layers);
    return MDI_OK;
}

int prepare_parse_layers(const char *s, int **counts, int *n, char *err)
{
    *counts = NULL;
    *n = 0;
    int cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int *c = malloc((size_t)cap * sizeof(int));
    if (!c)
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    int k = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 1000000 || (*end != ',' && *end != 0)) {
            free(c);
            return mdi_fail(err, MDI_EARG, "--layers \"%s\": expected counts such as 2,3,3", s);
        }
        c[k++] = (int)v;
        if (*end == 0)
            break;
        p = end + 1;
    }
    *counts = c;
    *n = k;
    return MDI_OK;
}

void prepare_default_name(const prepare_opts *o, char *name, size_t cap)
{
    if (hub_is_repo_id(o->source)) {
        if (o->n_hub_files > 0 && strchr(o->hub_files[0], '/')) {
            char dir[PATH_CAP];
            path_dirname(o->hub_files[0], dir, sizeof(dir));
            path_basename(dir, name, cap);
        } else {
            path_basename(o->source, name, cap);
        }
        return;
    }
    path_basename(o->source, name, cap);
    size_t len = strlen(name);
    if (len > 4 && str_has_suffix(name, ".bin"))
        name[len - 4] = 0;
    if (!name[0] || !strcmp(name, ".") || !strcmp(name, ".."))
        snprintf(name, cap, "model");
}

/* ---- manifest ---- */

static void chunk_free(prepare_chunk *c)
{
    for (int i = 0; i < c->n_tensors; i++)
        free(c->tensors[i]);
    free(c->tensors);
    c->tensors = NULL;
    c->n_tensors = 0;
}

void prepare_manifest_free(prepare_manifest *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_chunks; i++)
        chunk_free(&m->chunks[i]);
    free(m->chunks);
    free(m->layers_per_node);
    memset(m, 0, sizeof(*m));
}

const prepare_chunk *prepare_manifest_chunk(const prepare_manifest *m, const char *role)
{
    for (int i = 0; i < m->n_chunks; i++)
        if (!strcmp(m->chunks[i].role, role))
            return &m->chunks[i];
    return NULL;
}

static json_t *manifest_to_json(const prepare_manifest *m)
{
    json_t *root = json_object();
    json_object_set_new(root, "format", json_string("mdi-chunks"));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "complete", json_boolean(m->complete));
    json_object_set_new(root, "source", json_string(m->source));
    json_object_set_new(root, "source_fingerprint", json_string(m->source_fingerprint));
    json_object_set_new(root, "model_type", json_string(m->model_type));
    json_object_set_new(root, "n_layers", json_integer(m->n_layers));
    json_object_set_new(root, "n_nodes", json_integer(m->n_nodes));
    json_object_set_new(root, "config_sha256", json_string(m->config_sha256));
    json_object_set_new(root, "dtype", json_string(m->dtype));
    if (m->embed_dtype[0])
        json_object_set_new(root, "embed_dtype", json_string(m->embed_dtype));
    json_t *lpn = json_array();
    for (int i = 0; i < m->n_nodes; i++)
        json_array_append_new(lpn, json_integer(m->layers_per_node[i]));
    json_object_set_new(root, "layers_per_node", lpn);
    json_t *chunks = json_array();
    for (int i = 0; i < m->n_chunks; i++) {
        const prepare_chunk *c = &m->chunks[i];
        json_t *names = json_array();
        for (int t = 0; t < c->n_tensors; t++)
            json_array_append_new(names, json_string(c->tensors[t]));
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(c->file));
        json_object_set_new(o, "role", json_string(c->role));
        json_object_set_new(o, "node_index", json_integer(c->node_index));
        json_object_set_new(o, "layer_begin", json_integer(c->layer_begin));
        json_object_set_new(o, "layer_end", json_integer(c->layer_end));
        json_object_set_new(o, "has_embed", json_boolean(c->has_embed));
        json_object_set_new(o, "has_head", json_boolean(c->has_head));
        json_object_set_new(o, "dtype", json_string(c->dtype));
        json_object_set_new(o, "size", json_integer((json_int_t)c->size));
        json_object_set_new(o, "sha256", json_string(c->sha256));
        json_object_set_new(o, "tensors", names);
        json_array_append_new(chunks, o);
    }
    json_object_set_new(root, "chunks", chunks);
    return root;
}

static int manifest_write(const prepare_manifest *m, char *err)
{
    char path[PATH_CAP];
    if (path_join(path, sizeof(path), m->dir, PREPARE_MANIFEST) != 0)
        return mdi_fail(err, MDI_EARG, "%s: path too long", m->dir);
    json_t *root = manifest_to_json(m);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text)
        return mdi_fail(err, MDI_ENOMEM, "%s: cannot build the manifest", path);
    size_t len = strlen(text);
    char *buf = realloc(text, len + 2);
    if (!buf) {
        free(text);
        return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", path);
    }
    buf[len] = '\n';
    buf[len + 1] = 0;
    int rc = file_write_atomic(path, buf, len + 1, err);
    free(buf);
    return rc;
}

/* Copies a JSON string field into dst; MDI_EFORMAT naming the field when it
 * is missing, not a string or too long. */
static int get_str(json_t *o, const char *key, char *dst, size_t cap, const char *where, char *err)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return mdi_fail(err, MDI_EFORMAT, "%s: \"%s\" missing or not a string", where, key);
    if (strlen(json_string_value(v)) >= cap)
        return mdi_fail(err, MDI_EFORMAT, "%s: \"%s\" too long", where, key);
    snprintf(dst, cap, "%s", json_string_value(v));
    return MDI_OK;
}

static int get_int(json_t *o, const char *key, long long lo, long long hi, long long *out, const char *where,
                   char *err)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return mdi_fail(err, MDI_EFORMAT, "%s: \"%s\" missing or not an integer", where, key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return mdi_fail(err, MDI_EFORMAT, "%s: \"%s\" = %lld out of range [%lld, %lld]", where, key, x, lo, hi);
    *out = x;
    return MDI_OK;
}

static int parse_chunk(json_t *o, prepare_chunk *c, int n_layers, const char *where, char *err)
{
    long long v;
    int rc;
    if (!json_is_object(o))
        return mdi_fail(err, MDI_EFORMAT, "%s: not an object", where);
    if ((rc = get_str(o, "file", c->file, sizeof(c->file), where, err)) ||
        (rc = get_str(o, "role", c->role, sizeof(c->role), where, err)) ||
        (rc = get_str(o, "dtype", c->dtype, sizeof(c->dtype), where, err)) ||
        (rc = get_str(o, "sha256", c->sha256, sizeof(c->sha256), where, err)))
        return rc;
    if (strchr(c->file, '/') || c->file[0] == '.' || !c->file[0])
        return mdi_fail(err, MDI_EFORMAT, "%s: \"file\" must be a plain file name, not \"%s\"", where, c->file);
    if (strlen(c->sha256) != 64)
        return mdi_fail(err, MDI_EFORMAT, "%s: \"sha256\" is not 64 hex digits", where);
    if ((rc = get_int(o, "node_index", 0, 1 << 20, &v, where, err)))
        return rc;
    c->node_index = (int)v;
    if ((rc = get_int(o, "layer_begin", 0, n_layers, &v, where, err)))
        return rc;
    c->layer_begin = (int)v;
    if ((rc = get_int(o, "layer_end", c->layer_begin, n_layers, &v, where, err)))
        return rc;
    c->layer_end = (int)v;
    if ((rc = get_int(o, "size", 0, INT64_MAX, &v, where, err)))
        return rc;
    c->size = (uint64_t)v;
    c->has_embed = json_is_true(json_object_get(o, "has_embed"));
    c->has_head = json_is_true(json_object_get(o, "has_head"));
    json_t *names = json_object_get(o, "tensors");
    if (!json_is_array(names))
        return mdi_fail(err, MDI_EFORMAT, "%s: \"tensors\" missing or not an array", where);
    size_t n = json_array_size(names);
    c->tensors = calloc(n ? n : 1, sizeof(char *));
    if (!c->tensors)
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(names, i);
        if (!json_is_string(s))
            return mdi_fail(err, MDI_EFORMAT, "%s: tensors[%zu] is not a string", where, i);
        c->tensors[i] = strdup(json_string_value(s));
        if (!c->tensors[i])
            return mdi_fail(err, MDI_ENOMEM, "out of memory");
        c->n_tensors = (int)i + 1;
    }
    return MDI_OK;
}

int prepare_manifest_load(prepare_manifest *m, const char *path, int allow_incomplete, char *err)
{
    memset(m, 0, sizeof(*m));
    char file[PATH_CAP];
    if (dir_exists(path)) {
        if (path_join(file, sizeof(file), path, PREPARE_MANIFEST) != 0)
            return mdi_fail(err, MDI_EARG, "%s: path too long", path);
    } else {
        snprintf(file, sizeof(file), "%s", path);
    }
    path_dirname(file, m->dir, sizeof(m->dir));
    json_error_t jerr;
    json_t *root = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (!file_exists(file))
            return mdi_fail(err, MDI_EIO, "%s: no such file", file);
        return mdi_fail(err, MDI_EFORMAT, "%s: JSON error at line %d column %d: %s", file, jerr.line, jerr.column,
                        jerr.text);
    }
    int rc;
    long long v;
    char fmt[32];
    if (!json_is_object(root)) {
        rc = mdi_fail(err, MDI_EFORMAT, "%s: not a JSON object", file);
        goto done;
    }
    if ((rc = get_str(root, "format", fmt, sizeof(fmt), file, err)))
        goto done;
    if (strcmp(fmt, "mdi-chunks") != 0) {
        rc = mdi_fail(err, MDI_EFORMAT, "%s: \"format\" is \"%s\", not \"mdi-chunks\"", file, fmt);
        goto done;
    }
    if ((rc = get_int(root, "version", 1, 1, &v, file, err)))
        goto done;
    json_t *complete = json_object_get(root, "complete");
    if (!json_is_boolean(complete)) {
        rc = mdi_fail(err, MDI_EFORMAT, "%s: \"complete\" missing or not a boolean", file);
        goto done;
    }
    m->complete = json_is_true(complete);
    if (!m->complete && !allow_incomplete) {
        rc = mdi_fail(err, MDI_ESTATE,
                      "%s: incomplete: a prepare_model run is still writing these chunks or was interrupted; run it again",
                      file);
        goto done;
    }
    if ((rc = get_str(root, "source", m->source, sizeof(m->source), file, err)) ||
        (rc = get_str(root, "source_fingerprint", m->source_fingerprint, sizeof(m->source_fingerprint), file, err)) ||
        (rc = get_str(root, "model_type", m->model_type, sizeof(m->model_type), file, err)) ||
        (rc = get_str(root, "config_sha256", m->config_sha256, sizeof(m->config_sha256), file, err)) ||
        (rc = get_str(root, "dtype", m->dtype, sizeof(m->dtype), file, err)))
        goto done;
    if (json_object_get(root, "embed_dtype") &&
        (rc = get_str(root, "embed_dtype", m->embed_dtype, sizeof(m->embed_dtype), file, err)))
        goto done;
    if ((rc = get_int(root, "n_layers", 1, 1 << 16, &v, file, err)))
        goto done;
    m->n_layers = (int)v;
    if ((rc = get_int(root, "n_nodes", 1, m->n_layers, &v, file, err)))
        goto done;
    m->n_nodes = (int)v;
    json_t *lpn = json_object_get(root, "layers_per_node");
    if (!json_is_array(lpn) || (int)json_array_size(lpn) != m->n_nodes) {
        rc = mdi_fail(err, MDI_EFORMAT, "%s: \"layers_per_node\" must be an array of n_nodes (%d) counts", file,
                      m->n_nodes);
        goto done;
    }
    m->layers_per_node = calloc((size_t)m->n_nodes, sizeof(int));
    if (!m->layers_per_node) {
        rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < m->n_nodes; i++) {
        json_t *x = json_array_get(lpn, (size_t)i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > m->n_layers) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: layers_per_node[%d] is not an integer in 0..%d", file, i,
                          m->n_layers);
            goto done;
        }
        m->layers_per_node[i] = (int)json_integer_value(x);
    }
    if ((rc = prepare_check_layers(m->layers_per_node, m->n_nodes, m->n_nodes, m->n_layers, err))) {
        char why[MDI_ERR_LEN];
        snprintf(why, sizeof(why), "%s", err ? err : "");
        rc = mdi_fail(err, MDI_EFORMAT, "%s: layers_per_node: %s", file, why);
        goto done;
    }
    json_t *chunks = json_object_get(root, "chunks");
    if (!json_is_array(chunks) || (int)json_array_size(chunks) > m->n_nodes) {
        rc = mdi_fail(err, MDI_EFORMAT, "%s: \"chunks\" must be an array of at most n_nodes (%d) objects", file,
                      m->n_nodes);
        goto done;
    }
    size_t n = json_array_size(chunks);
    m->chunks = calloc(n ? n : 1, sizeof(prepare_chunk));
    if (!m->chunks) {
        rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        char where[PATH_CAP + 32];
        snprintf(where, sizeof(where), "%s: chunks[%zu]", file, i);
        m->n_chunks = (int)i + 1;
        if ((rc = parse_chunk(json_array_get(chunks, i), &m->chunks[i], m->n_layers, where, err)))
            goto done;
    }
    if (m->complete) {
        /* A complete manifest covers every layer once, in node order. */
        if (m->n_chunks != m->n_nodes) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: %d chunks for %d nodes", file, m->n_chunks, m->n_nodes);
            goto done;
        }
        int next = 0;
        for (int i = 0; i < m->n_chunks; i++) {
            const prepare_chunk *c = &m->chunks[i];
            if (c->node_index != i || c->layer_begin != next ||
                c->layer_end - c->layer_begin != m->layers_per_node[i]) {
                rc = mdi_fail(err, MDI_EFORMAT,
                              "%s: chunk %d (%s) has layers [%d, %d), expected node %d to start at layer %d with %d layers",
                              file, i, c->role, c->layer_begin, c->layer_end, i, next, m->layers_per_node[i]);
                goto done;
            }
            next = c->layer_end;
        }
        if (next != m->n_layers) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: chunks end at layer %d of %d", file, next, m->n_layers);
            goto done;
        }
        if (!m->chunks[0].has_embed || !m->chunks[0].has_head) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: the starter's chunk lacks the embedding or the head", file);
            goto done;
        }
    }
    rc = MDI_OK;
done:
    json_decref(root);
    if (rc) {
        char keep[sizeof(m->dir)];
        snprintf(keep, sizeof(keep), "%s", m->dir);
        prepare_manifest_free(m);
        snprintf(m->dir, sizeof(m->dir), "%s", keep);
    }
    return rc;
}

int prepare_chunk_verify(const prepare_manifest *m, const prepare_chunk *c, int check_hash, char *err)
{
    char path[PATH_CAP];
    if (path_join(path, sizeof(path), m->dir, c->file) != 0)
        return mdi_fail(err, MDI_EARG, "%s: path too long", m->dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return mdi_fail(err, MDI_EIO, "%s: %s", path, strerror(errno));
    if ((uint64_t)st.st_size != c->size)
        return mdi_fail(err, MDI_EFORMAT, "%s: %lld bytes, the manifest says %" PRIu64, path,
                        (long long)st.st_size, c->size);
    if (check_hash) {
        char hex[65];
        int rc = sha256_file_hex(path, hex, err);
        if (rc)
            return rc;
        if (strcmp(hex, c->sha256) != 0)
            return mdi_fail(err, MDI_EFORMAT, "%s: sha256 %s, the manifest says %s", path, hex, c->sha256);
    }
    return MDI_OK;
}

/* ---- the source checkpoint ---- */

typedef struct {
    char dir[PATH_CAP];      /* folder holding config and tokenizer files */
    char weights[PATH_CAP];  /* what tsrc_open reads: the folder or a .bin */
    int llama2c;
    model_config cfg;
    tensor_source *tsrc;
    char *config_text;       /* bytes of OUT/config.json */
    size_t config_len;
    char fingerprint[65];
} source;

static void source_close(source *s)
{
    tsrc_close(s->tsrc);
    free(s->config_text);
    memset(s, 0, sizeof(*s));
}

/* A repository id is downloaded into OUT/source/ (resumable; files already
 * there with the right size and hash are kept); anything else must be a
 * local folder or llama2.c .bin. */
static int source_locate(const prepare_opts *o, const char *out_dir, source *s, char *err)
{
    if (hub_is_repo_id(o->source)) {
        if (path_join(s->dir, sizeof(s->dir), out_dir, "source") != 0)
            return mdi_fail(err, MDI_EARG, "%s: path too long", out_dir);
        hub_opts h = { 0 };
        h.token = o->hf_token;
        h.revision = o->revision;
        h.progress = o->progress;
        log_info("downloading %s from the hub into %s", o->source, s->dir);
        int rc = mkdir_p(s->dir, err);
        if (rc)
            return rc;
        if (o->n_hub_files > 0)
            rc = hub_download_files(&h, o->source, o->hub_files, o->n_hub_files, s->dir, err);
        else
            rc = hub_download_checkpoint(&h, o->source, s->dir, err);
        if (rc)
            return rc;
        snprintf(s->weights, sizeof(s->weights), "%s", s->dir);
        /* llama2.c files: read the checkpoint .bin by name, so other files
         * in the folder cannot be taken for it */
        for (int i = 0; i < o->n_hub_files; i++) {
            char base[256];
            path_basename(o->hub_files[i], base, sizeof(base));
            if (str_has_suffix(base, ".bin") && strncmp(base, "tok", 3) != 0 &&
                path_join(s->weights, sizeof(s->weights), s->dir, base) == 0)
                break;
        }
        return MDI_OK;
    }
    if (dir_exists(o->source)) {
        snprintf(s->dir, sizeof(s->dir), "%s", o->source);
        snprintf(s->weights, sizeof(s->weights), "%s", o->source);
        return MDI_OK;
    }
    if (file_exists(o->source)) {
        if (!str_has_suffix(o->source, ".bin") && !str_has_suffix(o->source, ".gguf"))
            return mdi_fail(err, MDI_EARG, "%s: SOURCE must be a checkpoint folder, a llama2.c .bin, a .gguf or a hub "
                            "repository id", o->source);
        path_dirname(o->source, s->dir, sizeof(s->dir));
        snprintf(s->weights, sizeof(s->weights), "%s", o->source);
        return MDI_OK;
    }
    return mdi_fail(err, MDI_EIO, "%s: no such file or folder, and not a hub repository id (owner/name)", o->source);
}

/* Reads the config (config.json, or the llama2.c header) and opens the
 * weights. The config is checked first where it is a separate file, so an
 * unknown architecture is reported before any weight is read. */
static int source_open(source *s, char *err)
{
    char cfg_path[PATH_CAP];
    int rc;
    if (path_join(cfg_path, sizeof(cfg_path), s->dir, "config.json") != 0)
        return mdi_fail(err, MDI_EARG, "%s: path too long", s->dir);
    int have_cfg = file_exists(cfg_path) && !str_has_suffix(s->weights, ".bin") && !str_has_suffix(s->weights, ".gguf");
    if (have_cfg) {
        if ((rc = model_config_load(&s->cfg, s->dir, err)))
            return rc;
        if ((rc = file_read_all(cfg_path, &s->config_text, &s->config_len, err)))
            return rc;
    }
    s->tsrc = tsrc_open(s->weights, err);
    if (!s->tsrc)
        return MDI_EFORMAT;
    json_t *lc = tsrc_llama2c_config(s->tsrc);
    if (lc) {
        s->llama2c = !tsrc_gguf(s->tsrc); /* a GGUF's config is its metadata too */
        if (!have_cfg) {
            if ((rc = model_config_from_json(&s->cfg, lc, s->weights, err)))
                return rc;
            s->config_text = json_dumps(lc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            if (!s->config_text)
                return mdi_fail(err, MDI_ENOMEM, "out of memory");
            s->config_len = strlen(s->config_text);
        }
    } else if (!have_cfg) {
        return mdi_fail(err, MDI_EIO, "%s: missing config.json", s->dir);
    }
    if (s->cfg.n_layers < 1)
        return mdi_fail(err, MDI_EFORMAT, "%s: the config has no layers", s->dir);
    return MDI_OK;
}

/* A cheap identity of the source: names, sizes and modification times of
 * every file the weights and config come from. Re-running on the same files
 * gives the same fingerprint without reading gigabytes. */
static void source_fingerprint(source *s)
{
    sha256_ctx c;
    sha256_init(&c);
    const char *last = NULL;
    char line[PATH_CAP + 64];
    char cfg_path[PATH_CAP];
    const char *files[2] = { NULL, NULL };
    if (path_join(cfg_path, sizeof(cfg_path), s->dir, "config.json") == 0 && file_exists(cfg_path))
        files[0] = cfg_path;
    for (int i = -1; i < tsrc_count(s->tsrc); i++) {
        const char *f = i < 0 ? files[0] : tsrc_get(s->tsrc, i)->file;
        if (!f || (last && !strcmp(f, last)))
            continue;
        if (i >= 0)
            last = f;
        struct stat st;
        char base[256];
        path_basename(f, base, sizeof(base));
        if (stat(f, &st) == 0)
            snprintf(line, sizeof(line), "%s\t%lld\t%lld.%09ld\n", base, (long long)st.st_size,
                     (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
        else
            snprintf(line, sizeof(line), "%s\t?\n", base);
        sha256_update(&c, line, strlen(line));
    }
    sha256_final_hex(&c, s->fingerprint);
}

/* Tokenizer and generation files copied beside config.json, when present.
 * A GGUF with its own tokenizer keeps it, as the starter reads it: its
 * tokenizer metadata alone as tokenizer.gguf, and no tokenizer files from
 * the folder around it. */
static int copy_side_files(const source *s, const char *out_dir, char *err)
{
    static const char *hf_files[] = { "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                      "special_tokens_map.json", "tokenizer.model" };
    char src[PATH_CAP], dst[PATH_CAP];
    int rc = MDI_OK, n_tok = 0, own = 0;
    gguf_file *g;
    if (str_has_suffix(s->weights, ".gguf") && (g = gguf_open(s->weights, err))) {
        if (gguf_find_key(g, "tokenizer.ggml.tokens") >= 0) {
            if (path_join(dst, sizeof(dst), out_dir, "tokenizer.gguf") != 0)
                rc = mdi_fail(err, MDI_EARG, "%s: path too long", out_dir);
            else
                rc = gguf_write_tokenizer(g, dst, err);
            n_tok = own = !rc;
        }
        gguf_close(g);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < sizeof(hf_files) / sizeof(hf_files[0]); i++) {
        if (own && !strncmp(hf_files[i], "tokenizer", 9))
            continue;
        if (path_join(src, sizeof(src), s->dir, hf_files[i]) != 0 || !file_exists(src))
            continue;
        if (path_join(dst, sizeof(dst), out_dir, hf_files[i]) != 0)
            return mdi_fail(err, MDI_EARG, "%s: path too long", out_dir);
        if ((rc = copy_file_atomic(src, dst, err)))
            return rc;
        n_tok += i == 0;
    }
    if (s->llama2c) {
        /* llama2.c keeps its tokenizer as tokenizer.bin or tok<vocab>.bin */
        DIR *d = opendir(s->dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (!str_has_suffix(e->d_name, ".bin") || strncmp(e->d_name, "tok", 3) != 0)
                continue;
            if (path_join(src, sizeof(src), s->dir, e->d_name) != 0 || !file_exists(src) ||
                path_join(dst, sizeof(dst), out_dir, e->d_name) != 0)
                continue;
            if ((rc = copy_file_atomic(src, dst, err))) {
                closedir(d);
                return rc;
            }
            n_tok++;
        }
        if (d)
            closedir(d);
    }
    if (!n_tok)
        log_warn("%s: no tokenizer found (tokenizer.json or llama2.c tokenizer .bin); the starter will need one", s->dir);
    return MDI_OK;
}

/* ---- tensors: where each goes, and checks against the config ---- */

enum { T_LAYER, T_EMBED, T_NORM, T_HEAD, T_DROP, T_OTHER };

/* "model.layers.<i>.<rest>": the layer index, else -1. */
static int layer_of(const char *name)
{
    static const char prefix[] = "model.layers.";
    if (strncmp(name, prefix, sizeof(prefix) - 1) != 0)
        return -1;
    const char *p = name + sizeof(prefix) - 1;
    if (*p < '0' || *p > '9')
        return -1;
    long v = 0;
    while (*p >= '0' && *p <= '9' && v < 1000000)
        v = v * 10 + (*p++ - '0');
    return *p == '.' ? (int)v : -1;
}

static int tensor_kind(const char *name, int *layer)
{
    *layer = layer_of(name);
    if (*layer >= 0)
        return str_has_suffix(name, ".rotary_emb.inv_freq") ? T_DROP : T_LAYER;
    if (!strcmp(name, "model.embed_tokens.weight"))
        return T_EMBED;
    if (!strcmp(name, "model.norm.weight"))
        return T_NORM;
    if (!strcmp(name, "lm_head.weight"))
        return T_HEAD;
    if (str_has_suffix(name, "rotary_emb.inv_freq")) /* a buffer some exports keep; recomputed */
        return T_DROP;
    if (!strcmp(name, "rope_freqs.weight")) /* a GGUF's RoPE factors: in the config */
        return T_DROP;
    return T_OTHER;
}

static int check_shape(const tensor_info *t, int ndim, int64_t d0, int64_t d1, char *err)
{
    int ok = t->ndim == ndim && t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1);
    if (ok)
        return MDI_OK;
    char found[96] = "";
    size_t n = 0;
    for (int d = 0; d < t->ndim && n < sizeof(found) - 24; d++)
        n += (size_t)snprintf(found + n, sizeof(found) - n, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    if (ndim == 2)
        return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s has shape [%s], expected [%" PRId64 ", %" PRId64 "]",
                        t->file, t->name, found, d0, d1);
    return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s has shape [%s], expected [%" PRId64 "]", t->file, t->name,
                    found, d0);
}

typedef struct {
    const char *suffix;
    int ndim;
    char d0, d1; /* 'd' dim, 'q' heads*hd, 'k' kv_heads*hd, 'h' hidden, 'e' head_dim */
} expected_tensor;

static const expected_tensor layer_tensors[] = {
    { "input_layernorm.weight", 1, 'd', 0 },
    { "self_attn.q_proj.weight", 2, 'q', 'd' },
    { "self_attn.k_proj.weight", 2, 'k', 'd' },
    { "self_attn.v_proj.weight", 2, 'k', 'd' },
    { "self_attn.o_proj.weight", 2, 'd', 'q' },
    { "post_attention_layernorm.weight", 1, 'd', 0 },
    { "mlp.gate_proj.weight", 2, 'h', 'd' },
    { "mlp.up_proj.weight", 2, 'h', 'd' },
    { "mlp.down_proj.weight", 2, 'd', 'h' },
};
static const expected_tensor qk_norm_tensors[] = {
    { "self_attn.q_norm.weight", 1, 'e', 0 },
    { "self_attn.k_norm.weight", 1, 'e', 0 },
};
static const expected_tensor bias_tensors[] = {
    { "self_attn.q_proj.bias", 1, 'q', 0 },
    { "self_attn.k_proj.bias", 1, 'k', 0 },
    { "self_attn.v_proj.bias", 1, 'k', 0 },
};

static int64_t dim_of(const model_config *c, char k)
{
    switch (k) {
    case 'd': return c->dim;
    case 'q': return (int64_t)c->n_heads * c->head_dim;
    case 'k': return (int64_t)c->n_kv_heads * c->head_dim;
    case 'h': return c->hidden_dim;
    case 'e': return c->head_dim;
    default: return 0;
    }
}

static int check_expected(const source *s, int layer, const expected_tensor *e, char *err)
{
    char name[TENSOR_NAME_MAX];
    model_tensor_name(name, layer, e->suffix);
    const tensor_info *t = tsrc_find(s->tsrc, name);
    if (!t)
        return mdi_fail(err, MDI_EFORMAT, "%s: missing tensor %s", s->weights, name);
    return check_shape(t, e->ndim, dim_of(&s->cfg, e->d0), dim_of(&s->cfg, e->d1), err);
}

/* Checks that the source holds every tensor the config calls for, with the
 * right shapes, and no layer beyond the config's count. */
static int check_tensors(const source *s, char *err)
{
    const model_config *c = &s->cfg;
    int rc;
    for (int l = 0; l < c->n_layers; l++) {
        for (size_t i = 0; i < sizeof(layer_tensors) / sizeof(layer_tensors[0]); i++)
            if ((rc = check_expected(s, l, &layer_tensors[i], err)))
                return rc;
        for (size_t i = 0; c->qk_norm && i < sizeof(qk_norm_tensors) / sizeof(qk_norm_tensors[0]); i++)
            if ((rc = check_expected(s, l, &qk_norm_tensors[i], err)))
                return rc;
        for (size_t i = 0; c->attn_bias && i < sizeof(bias_tensors) / sizeof(bias_tensors[0]); i++)
            if ((rc = check_expected(s, l, &bias_tensors[i], err)))
                return rc;
    }
    const tensor_info *t = tsrc_find(s->tsrc, "model.embed_tokens.weight");
    if (!t)
        return mdi_fail(err, MDI_EFORMAT, "%s: missing tensor model.embed_tokens.weight", s->weights);
    if ((rc = check_shape(t, 2, c->vocab_size, c->dim, err)))
        return rc;
    if (!(t = tsrc_find(s->tsrc, "model.norm.weight")))
        return mdi_fail(err, MDI_EFORMAT, "%s: missing tensor model.norm.weight", s->weights);
    if ((rc = check_shape(t, 1, c->dim, 0, err)))
        return rc;
    t = tsrc_find(s->tsrc, "lm_head.weight");
    if (!t && !c->tie_embeddings)
        return mdi_fail(err, MDI_EFORMAT, "%s: missing tensor lm_head.weight (tie_word_embeddings is false)",
                        s->weights);
    if (t && (rc = check_shape(t, 2, c->vocab_size, c->dim, err)))
        return rc;
    for (int i = 0; i < tsrc_count(s->tsrc); i++) {
        int layer;
        const tensor_info *ti = tsrc_get(s->tsrc, i);
        int kind = tensor_kind(ti->name, &layer);
        if (kind == T_LAYER && layer >= c->n_layers)
            return mdi_fail(err, MDI_EFORMAT, "%s: tensor %s belongs to layer %d but the config has %d layers",
                            ti->file, ti->name, layer, c->n_layers);
        if (kind == T_OTHER)
            log_warn("%s: tensor %s is not part of the Llama layout; it goes to the starter's chunk", ti->file,
                     ti->name);
        if (kind == T_DROP)
            log_info("%s: tensor %s is recomputed at load; not copied", ti->file, ti->name);
    }
    return MDI_OK;
}

static size_t n_elements(const tensor_info *t)
{
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->shape[d];
    return n;
}

/* The dtype a tensor is stored as: --dtype applies to matrices (and
 * --embed-dtype, when given, to the embedding and the output head); norm
 * weights and biases keep theirs (they are tiny and used in F32). A block
 * type asked for a matrix whose rows are not whole blocks falls back to
 * model_fallback_dtype; *fell_from (when not NULL) is then the type asked,
 * else DTYPE_COUNT. */
static dtype_t out_dtype_why(const prepare_opts *o, const tensor_info *t, dtype_t *fell_from)
{
    int layer, kind = tensor_kind(t->name, &layer);
    dtype_t want;
    if (fell_from)
        *fell_from = DTYPE_COUNT;
    if (t->ndim < 2)
        return t->dtype;
    if (o->convert_embed && (kind == T_EMBED || kind == T_HEAD))
        want = o->embed_dtype;
    else if (o->convert)
        want = o->dtype;
    else
        return t->dtype;
    if (want == t->dtype || dtype_row_ok(want, t->shape[t->ndim - 1]))
        return want;
    if (fell_from)
        *fell_from = want;
    return model_fallback_dtype(t->dtype);
}

static dtype_t out_dtype(const prepare_opts *o, const tensor_info *t)
{
    return out_dtype_why(o, t, NULL);
}

/* ---- writing ---- */

typedef struct {
    int idx;     /* index in the tensor source */
    int group;   /* 0 embed, 1 layers, 2 norm, 3 head, 4 other */
    int layer;
} chunk_entry;

static int entry_cmp(const void *a, const void *b)
{
    const chunk_entry *x = a, *y = b;
    if (x->group != y->group)
        return x->group - y->group;
    if (x->layer != y->layer)
        return x->layer - y->layer;
    return x->idx - y->idx;
}

/* The tensors of node `node` (0 = starter) in file order: embedding,
 * layers in order, final norm, head. A tied head is not stored: the
 * embedding serves both. Returns the count; *out is new. */
static int chunk_tensors(const source *s, const int *node_of_layer, int node, chunk_entry **out)
{
    int n = tsrc_count(s->tsrc), k = 0;
    chunk_entry *e = malloc((size_t)(n ? n : 1) * sizeof(chunk_entry));
    if (!e)
        return -1;
    for (int i = 0; i < n; i++) {
        int layer, group;
        switch (tensor_kind(tsrc_get(s->tsrc, i)->name, &layer)) {
        case T_LAYER:
            if (node_of_layer[layer] != node)
                continue;
            group = 1;
            break;
        case T_EMBED: group = 0; break;
        case T_NORM: group = 2; break;
        case T_HEAD:
            if (s->cfg.tie_embeddings)
                continue;
            group = 3;
            break;
        case T_OTHER: group = 4; break;
        default: continue;
        }
        if (group != 1 && node != 0)
            continue;
        e[k].idx = i;
        e[k].group = group;
        e[k].layer = layer;
        k++;
    }
    qsort(e, (size_t)k, sizeof(*e), entry_cmp);
    *out = e;
    return k;
}

static void chunk_names(int node, char *file, size_t file_cap, char *role, size_t role_cap)
{
    if (node == 0) {
        snprintf(role, role_cap, "starter");
        snprintf(file, file_cap, "model_starter.safetensors");
    } else {
        snprintf(role, role_cap, "secondary%d", node - 1);
        snprintf(file, file_cap, "model_secondary%d.safetensors", node - 1);
    }
}

/* Fills c's description (names, range, tensor list, dtype) for node. */
static int chunk_describe(const source *s, const prepare_opts *o, const int *node_of_layer, int node, int begin,
                          int end, prepare_chunk *c, char *err)
{
    memset(c, 0, sizeof(*c));
    chunk_names(node, c->file, sizeof(c->file), c->role, sizeof(c->role));
    c->node_index = node;
    c->layer_begin = begin;
    c->layer_end = end;
    c->has_embed = c->has_head = node == 0;
    chunk_entry *e;
    int n = chunk_tensors(s, node_of_layer, node, &e);
    if (n < 0)
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    c->tensors = calloc((size_t)(n ? n : 1), sizeof(char *));
    if (!c->tensors) {
        free(e);
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    }
    int dt = -1;
    for (int i = 0; i < n; i++) {
        const tensor_info *t = tsrc_get(s->tsrc, e[i].idx);
        c->tensors[i] = strdup(t->name);
        if (!c->tensors[i]) {
            free(e);
            return mdi_fail(err, MDI_ENOMEM, "out of memory");
        }
        c->n_tensors = i + 1;
        if (t->ndim >= 2) {
            dtype_t asked;
            int d = (int)out_dtype_why(o, t, &asked);
            if (asked != DTYPE_COUNT)
                log_info("%s: %s has rows of %lld values, not a multiple of %d: stored as %s instead of %s",
                         c->role, t->name, (long long)t->shape[t->ndim - 1], dtype_block_size(asked),
                         dtype_name((dtype_t)d), dtype_name(asked));
            dt = dt == -1 ? d : (dt == d ? d : -2);
        }
    }
    free(e);
    snprintf(c->dtype, sizeof(c->dtype), "%s", dt >= 0 ? dtype_name((dtype_t)dt) : dt == -2 ? "mixed" : "none");
    return MDI_OK;
}

/* Writes node's chunk to dir/c->file (via .tmp, fsync, rename) and fills
 * its size and sha256. */
static int chunk_write(const source *s, const prepare_opts *o, const prepare_manifest *m, const int *node_of_layer,
                       prepare_chunk *c, char *err)
{
    char path[PATH_CAP];
    if (path_join(path, sizeof(path), m->dir, c->file) != 0)
        return mdi_fail(err, MDI_EARG, "%s: path too long", m->dir);
    chunk_entry *e;
    int n = chunk_tensors(s, node_of_layer, c->node_index, &e);
    if (n < 0)
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    st_writer *w = st_writer_new();
    if (!w) {
        free(e);
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    }
    char node_index[16], n_nodes[16], begin[16], end[16], total[16];
    snprintf(node_index, sizeof(node_index), "%d", c->node_index);
    snprintf(n_nodes, sizeof(n_nodes), "%d", m->n_nodes);
    snprintf(begin, sizeof(begin), "%d", c->layer_begin);
    snprintf(end, sizeof(end), "%d", c->layer_end);
    snprintf(total, sizeof(total), "%d", m->n_layers);
    st_writer_set_meta(w, "format", "mdi-chunk");
    st_writer_set_meta(w, "role", c->role);
    st_writer_set_meta(w, "node_index", node_index);
    st_writer_set_meta(w, "n_nodes", n_nodes);
    st_writer_set_meta(w, "layer_begin", begin);
    st_writer_set_meta(w, "layer_end", end);
    st_writer_set_meta(w, "n_layers_total", total);
    st_writer_set_meta(w, "has_embed", c->has_embed ? "1" : "0");
    st_writer_set_meta(w, "has_head", c->has_head ? "1" : "0");
    st_writer_set_meta(w, "model_type", m->model_type);
    st_writer_set_meta(w, "config_sha256", m->config_sha256);
    int rc = MDI_OK;
    for (int i = 0; i < n && !rc; i++) {
        const tensor_info *t = tsrc_get(s->tsrc, e[i].idx);
        rc = st_writer_add(w, t->name, out_dtype(o, t), t->ndim, t->shape, t->data, t->dtype);
        if (rc)
            rc = mdi_fail(err, rc, "%s: cannot add tensor %s", path, t->name);
    }
    free(e);
    if (!rc)
        rc = st_writer_finish(w, path, c->sha256, &c->size, err);
    st_writer_free(w);
    if (rc) {
        /* the writer removes its .tmp; make sure no part is left either way */
        char tmp[PATH_CAP + 8];
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        unlink(tmp);
        return rc;
    }
    sync_dir(path);
    return MDI_OK;
}

/* Whether the chunk file from a previous run can stand for c: same
 * arguments (checked by the caller), same name and range, and the file on
 * disk still has the size and hash the old manifest recorded. */
static int chunk_reusable(const prepare_manifest *old, const prepare_chunk *c, prepare_chunk *found)
{
    for (int i = 0; i < old->n_chunks; i++) {
        const prepare_chunk *p = &old->chunks[i];
        if (strcmp(p->file, c->file) != 0)
            continue;
        if (p->layer_begin != c->layer_begin || p->layer_end != c->layer_end || strcmp(p->dtype, c->dtype) != 0 ||
            p->n_tensors != c->n_tensors)
            return 0;
        for (int t = 0; t < c->n_tensors; t++)
            if (strcmp(p->tensors[t], c->tensors[t]) != 0)
                return 0;
        if (prepare_chunk_verify(old, p, 1, NULL) != 0)
            return 0;
        found->size = p->size;
        snprintf(found->sha256, sizeof(found->sha256), "%s", p->sha256);
        return 1;
    }
    return 0;
}

static double mib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0);
}

int prepare_run(const prepare_opts *o, prepare_manifest *out, char *err)
{
    source src;
    prepare_manifest man, old;
    char out_dir[PATH_CAP], chunks_dir[PATH_CAP], name[256], sub[64];
    int *counts = NULL, *node_of_layer = NULL, *reused = NULL;
    prepare_chunk *planned = NULL;
    double *layer_cost = NULL, *layer_params = NULL;
    int rc, started = 0;
    memset(&src, 0, sizeof(src));
    memset(&man, 0, sizeof(man));
    memset(&old, 0, sizeof(old));
    if (out)
        memset(out, 0, sizeof(*out));

    if (!o->source || !o->source[0])
        return mdi_fail(err, MDI_EARG, "no SOURCE given");
    if (o->n_nodes < 1)
        return mdi_fail(err, MDI_EARG, "--n-nodes %d: must be at least 1", o->n_nodes);
    if (o->out_dir) {
        snprintf(out_dir, sizeof(out_dir), "%s", o->out_dir);
    } else {
        prepare_default_name(o, name, sizeof(name));
        snprintf(out_dir, sizeof(out_dir), "checkpoints/%s", name);
    }

    if ((rc = source_locate(o, out_dir, &src, err)) || (rc = source_open(&src, err)) ||
        (rc = check_tensors(&src, err)))
        goto done;
    const model_config *cfg = &src.cfg;
    int n_layers = cfg->n_layers, n_nodes = o->n_nodes;
    if (n_nodes > n_layers) {
        rc = mdi_fail(err, MDI_EARG, "--n-nodes %d: the model has only %d layers (at most one node per layer)",
                      n_nodes, n_layers);
        goto done;
    }

    /* Plan: each layer costs the bytes of its matrices as they will be
     * stored; the starter adds the output head. */
    counts = calloc((size_t)n_nodes, sizeof(int));
    layer_cost = calloc((size_t)n_layers, sizeof(double));
    node_of_layer = calloc((size_t)n_layers, sizeof(int));
    reused = calloc((size_t)n_nodes, sizeof(int));
    planned = calloc((size_t)n_nodes, sizeof(prepare_chunk));
    if (!counts || !layer_cost || !node_of_layer || !reused || !planned) {
        rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
        goto done;
    }
    double head_cost = 0, head_params = 0, embed_bytes = 0, dtype_bytes[DTYPE_COUNT] = {0};
    layer_params = calloc((size_t)n_layers, sizeof(double));
    if (!layer_params) {
        rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < tsrc_count(src.tsrc); i++) {
        const tensor_info *t = tsrc_get(src.tsrc, i);
        int layer, kind = tensor_kind(t->name, &layer);
        int64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1;
        double bytes = cols ? (double)(n_elements(t) / (size_t)cols) * (double)dtype_row_size(out_dtype(o, t), cols)
                            : 0.0;
        if (kind == T_LAYER && t->ndim >= 2) {
            layer_cost[layer] += bytes;
            layer_params[layer] += (double)n_elements(t);
            dtype_bytes[out_dtype(o, t)] += bytes;
        } else if (kind == T_HEAD && !cfg->tie_embeddings) {
            head_cost += bytes;
            head_params += (double)n_elements(t);
        } else if (kind == T_EMBED && cfg->tie_embeddings) {
            head_cost += bytes; /* the tied embedding is the head's matrix */
            head_params += (double)n_elements(t);
        } else if (kind == T_EMBED) {
            embed_bytes += bytes;
        }
    }
    if (o->layers) {
        if ((rc = prepare_check_layers(o->layers, o->n_layers_given, n_nodes, n_layers, err)))
            goto done;
        memcpy(counts, o->layers, (size_t)n_nodes * sizeof(int));
    } else if (o->plan) {
        prepare_costs pc = {n_layers, layer_cost, layer_params, head_cost, head_params, embed_bytes, DTYPE_F32,
                            cfg->dim, cfg->n_kv_heads * cfg->head_dim, cfg->max_seq_len};
        for (int t = 0; t < DTYPE_COUNT; t++)
            if (dtype_bytes[t] > dtype_bytes[pc.dtype]) pc.dtype = (dtype_t)t;
        rc = o->plan(o->plan_ctx, &pc, n_nodes, counts, err);
        if (rc || (rc = prepare_check_layers(counts, n_nodes, n_nodes, n_layers, err)))
            goto done;
    } else if ((rc = prepare_plan_split(layer_cost, n_layers, head_cost, n_nodes, counts, err))) {
        goto done;
    }
    for (int i = 0, l = 0; i < n_nodes; i++)
        for (int j = 0; j < counts[i]; j++)
            node_of_layer[l++] = i;

    snprintf(sub, sizeof(sub), "chunks/%dnodes", n_nodes);
    if (path_join(chunks_dir, sizeof(chunks_dir), out_dir, sub) != 0) {
        rc = mdi_fail(err, MDI_EARG, "%s: path too long", out_dir);
        goto done;
    }
    if ((rc = mkdir_p(chunks_dir, err)))
        goto done;
    started = 1;
    remove_tmp_files(out_dir);
    remove_tmp_files(chunks_dir);

    /* The manifest of this run. */
    source_fingerprint(&src);
    snprintf(man.source, sizeof(man.source), "%s", o->source);
    snprintf(man.source_fingerprint, sizeof(man.source_fingerprint), "%s", src.fingerprint);
    snprintf(man.model_type, sizeof(man.model_type), "%s", cfg->model_type);
    man.n_layers = n_layers;
    man.n_nodes = n_nodes;
    sha256_hex(src.config_text, src.config_len, man.config_sha256);
    snprintf(man.dtype, sizeof(man.dtype), "%s", o->convert ? dtype_name(o->dtype) : "source");
    if (o->convert_embed)
        snprintf(man.embed_dtype, sizeof(man.embed_dtype), "%s", dtype_name(o->embed_dtype));
    if (strlen(chunks_dir) >= sizeof(man.dir)) {
        rc = mdi_fail(err, MDI_EARG, "%s: path too long", chunks_dir);
        goto done;
    }
    memcpy(man.dir, chunks_dir, strlen(chunks_dir) + 1);
    man.layers_per_node = malloc((size_t)n_nodes * sizeof(int));
    man.chunks = calloc((size_t)n_nodes, sizeof(prepare_chunk));
    if (!man.layers_per_node || !man.chunks) {
        rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(man.layers_per_node, counts, (size_t)n_nodes * sizeof(int));
    {
        char line[512];
        size_t k = 0;
        for (int i = 0; i < n_nodes && k < sizeof(line) - 16; i++)
            k += (size_t)snprintf(line + k, sizeof(line) - k, "%s%d", i ? "," : "", counts[i]);
        log_info("%s: %d layers over %d nodes: %s (%s)", cfg->model_type, n_layers, n_nodes, line,
                 o->layers ? "--layers" : o->plan ? "planned from the nodes' capabilities" : "balanced by compute");
    }
    for (int i = 0, begin = 0; i < n_nodes; begin += counts[i], i++)
        if ((rc = chunk_describe(&src, o, node_of_layer, i, begin, begin + counts[i], &planned[i], err)))
            goto done;

    /* Reuse what a previous run with the same arguments finished. */
    char old_err[MDI_ERR_LEN];
    if (prepare_manifest_load(&old, chunks_dir, 1, old_err) == 0) {
        if (!strcmp(old.source_fingerprint, man.source_fingerprint) &&
            !strcmp(old.config_sha256, man.config_sha256) && old.n_nodes == n_nodes &&
            !strcmp(old.dtype, man.dtype) && !strcmp(old.embed_dtype, man.embed_dtype)) {
            for (int i = 0; i < n_nodes; i++)
                reused[i] = chunk_reusable(&old, &planned[i], &planned[i]);
        }
    } else {
        char mpath[PATH_CAP];
        if (path_join(mpath, sizeof(mpath), chunks_dir, PREPARE_MANIFEST) == 0 && file_exists(mpath))
            log_warn("previous manifest ignored, every chunk is rewritten: %s", old_err);
    }

    /* From here the manifest says "incomplete" until every chunk is in place:
     * a node never loads a set whose chunks are being replaced. */
    man.complete = 0;
    man.n_chunks = 0;
    for (int i = 0; i < n_nodes; i++)
        if (reused[i])
            man.chunks[man.n_chunks++] = planned[i];
    if ((rc = manifest_write(&man, err)))
        goto done;
    {
        char cfg_out[PATH_CAP];
        if (path_join(cfg_out, sizeof(cfg_out), out_dir, "config.json") != 0) {
            rc = mdi_fail(err, MDI_EARG, "%s: path too long", out_dir);
            goto done;
        }
        char *cur = NULL;
        size_t cur_len = 0;
        int same = file_exists(cfg_out) && file_read_all(cfg_out, &cur, &cur_len, NULL) == 0 &&
                   cur_len == src.config_len && !memcmp(cur, src.config_text, cur_len);
        free(cur);
        if (!same && (rc = file_write_atomic(cfg_out, src.config_text, src.config_len, err)))
            goto done;
        if ((rc = copy_side_files(&src, out_dir, err)))
            goto done;
    }
    for (int i = 0; i < n_nodes; i++) {
        prepare_chunk *c = &planned[i];
        if (reused[i]) {
            log_info("%s: layers [%d, %d), %d tensors, %.2f MiB: reused %s", c->role, c->layer_begin,
                     c->layer_end, c->n_tensors, mib(c->size), c->file);
            continue;
        }
        double t0 = time_now();
        if ((rc = chunk_write(&src, o, &man, node_of_layer, c, err)))
            goto done;
        log_info("%s: layers [%d, %d), %d tensors, %.2f MiB: written %s (%.1f s)", c->role, c->layer_begin,
                 c->layer_end, c->n_tensors, mib(c->size), c->file, time_now() - t0);
        /* keep the manifest's chunks in node order */
        int at = man.n_chunks;
        while (at > 0 && man.chunks[at - 1].node_index > c->node_index) {
            man.chunks[at] = man.chunks[at - 1];
            at--;
        }
        man.chunks[at] = *c;
        man.n_chunks++;
        if ((rc = manifest_write(&man, err)))
            goto done;
    }
    man.complete = 1;
    if ((rc = manifest_write(&man, err)))
        goto done;
    log_info("manifest: %s/%s", chunks_dir, PREPARE_MANIFEST);
    rc = MDI_OK;

done:
    if (rc && started) {
        remove_tmp_files(out_dir);
        remove_tmp_files(chunks_dir);
    }
    /* man.chunks holds shallow copies of planned[]: planned owns the lists */
    free(man.chunks);
    man.chunks = NULL;
    if (rc == MDI_OK && out) {
        *out = man;
        out->chunks = planned;
        out->n_chunks = o->n_nodes;
        planned = NULL;
        man.layers_per_node = NULL;
    }
    free(man.layers_per_node);
    if (planned) {
        for (int i = 0; i < o->n_nodes; i++)
            chunk_free(&planned[i]);
        free(planned);
    }
    prepare_manifest_free(&old);
    free(counts);
    free(layer_cost);
    free(layer_params);
    free(node_of_layer);
    free(reused);
    source_close(&src);
    return rc;
}

/* ---- inspect ---- */

static void print_shape(FILE *out, const tensor_info *t)
{
    fputc('[', out);
    for (int d = 0; d < t->ndim; d++)
        fprintf(out, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    fputc(']', out);
}

static int inspect_tensors(const char *path, FILE *out, char *err)
{
    tensor_source *s = tsrc_open(path, err);
    if (!s)
        return MDI_EFORMAT;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
        fprintf(out, "%s: %lld bytes\n", path, (long long)st.st_size);
    else
        fprintf(out, "%s\n", path);
    json_t *meta = tsrc_metadata(s);
    const char *key;
    json_t *val;
    json_t *role = json_object_get(meta, "role");
    json_t *lb = json_object_get(meta, "layer_begin"), *le = json_object_get(meta, "layer_end");
    json_t *lt = json_object_get(meta, "n_layers_total");
    if (json_is_string(role) && json_is_string(lb) && json_is_string(le))
        fprintf(out, "chunk: %s, layers [%s, %s) of %s\n", json_string_value(role), json_string_value(lb),
                json_string_value(le), json_is_string(lt) ? json_string_value(lt) : "?");
    if (json_object_size(meta)) {
        fprintf(out, "metadata:\n");
        json_object_foreach(meta, key, val) {
            char *v = json_is_string(val) ? NULL : json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
            fprintf(out, "  %s: %s\n", key, v ? v : json_string_value(val));
            free(v);
        }
    }
    size_t total = 0, by_dtype[DTYPE_COUNT] = { 0 };
    fprintf(out, "tensors: %d\n", tsrc_count(s));
    for (int i = 0; i < tsrc_count(s); i++) {
        const tensor_info *t = tsrc_get(s, i);
        fprintf(out, "  %-48s %-5s ", t->name, dtype_name(t->dtype));
        print_shape(out, t);
        fprintf(out, " %zu bytes\n", t->nbytes);
        total += t->nbytes;
        by_dtype[t->dtype] += t->nbytes;
    }
    fprintf(out, "total: %zu bytes of tensor data (%.2f MiB)", total, mib(total));
    for (int d = 0, first = 1; d < DTYPE_COUNT; d++) {
        if (by_dtype[d]) {
            fprintf(out, "%s%s %zu", first ? ": " : ", ", dtype_name((dtype_t)d), by_dtype[d]);
            first = 0;
        }
    }
    fprintf(out, " bytes\n");
    tsrc_close(s);
    return MDI_OK;
}

static int inspect_manifest(const char *path, int verify, FILE *out, char *err)
{
    prepare_manifest m;
    int rc = prepare_manifest_load(&m, path, 1, err);
    if (rc)
        return rc;
    fprintf(out, "manifest: %s/%s%s\n", m.dir, PREPARE_MANIFEST,
            m.complete ? "" : " (INCOMPLETE: a run is writing it or was interrupted)");
    fprintf(out, "source: %s\nmodel_type: %s, %d layers, %d nodes, dtype %s%s%s\nconfig_sha256: %s\nlayers per node:",
            m.source, m.model_type, m.n_layers, m.n_nodes, m.dtype, m.embed_dtype[0] ? ", embedding and head " : "",
            m.embed_dtype, m.config_sha256);
    for (int i = 0; i < m.n_nodes; i++)
        fprintf(out, " %d", m.layers_per_node[i]);
    fprintf(out, "\n");
    int bad = 0;
    for (int i = 0; i < m.n_chunks; i++) {
        const prepare_chunk *c = &m.chunks[i];
        char why[MDI_ERR_LEN] = "";
        int vr = prepare_chunk_verify(&m, c, verify, why);
        bad += vr != 0;
        fprintf(out, "%s: %s, layers [%d, %d)%s%s, %d tensors, %s, %" PRIu64 " bytes, sha256 %s: %s%s\n", c->role,
                c->file, c->layer_begin, c->layer_end, c->has_embed ? ", embedding" : "",
                c->has_head ? ", head" : "", c->n_tensors, c->dtype, c->size, c->sha256,
                vr ? "BAD: " : verify ? "ok (hash checked)" : "ok (size checked)", vr ? why : "");
        /* each tensor's dtype, shape and bytes, read from the chunk's header
         * when the file is there */
        char cpath[PATH_CAP], cerr[MDI_ERR_LEN];
        tensor_source *ts = NULL;
        if (!vr && path_join(cpath, sizeof(cpath), m.dir, c->file) == 0)
            ts = tsrc_open(cpath, cerr);
        for (int t = 0; t < c->n_tensors; t++) {
            const tensor_info *ti = ts ? tsrc_find(ts, c->tensors[t]) : NULL;
            if (!ti) {
                fprintf(out, "    %s\n", c->tensors[t]);
                continue;
            }
            fprintf(out, "    %-48s %-5s ", ti->name, dtype_name(ti->dtype));
            print_shape(out, ti);
            fprintf(out, " %zu bytes\n", ti->nbytes);
        }
        tsrc_close(ts);
    }
    prepare_manifest_free(&m);
    if (bad)
        return mdi_fail(err, MDI_EFORMAT, "%s: %d chunk(s) missing or not matching the manifest", path, bad);
    return MDI_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int prepare_inspect(const char *path, int verify, FILE *out, char *err)
{
    char p[PATH_CAP];
    if (dir_exists(path)) {
        if (path_join(p, sizeof(p), path, PREPARE_MANIFEST) == 0 && file_exists(p))
            return inspect_manifest(p, verify, out, err);
        char chunks[PATH_CAP];
        if (path_join(chunks, sizeof(chunks), path, "chunks") == 0 && dir_exists(chunks)) {
            /* checkpoints/NAME: every chunk set it holds, in name order */
            DIR *d = opendir(chunks);
            char *names[256];
            int n = 0, rc = MDI_OK;
            struct dirent *e;
            while (d && (e = readdir(d)) && n < 256)
                if (e->d_name[0] != '.')
                    names[n++] = strdup(e->d_name);
            if (d)
                closedir(d);
            qsort(names, (size_t)n, sizeof(char *), cmp_str);
            int shown = 0;
            for (int i = 0; i < n; i++) {
                char sub[PATH_CAP];
                if (names[i] && path_join(sub, sizeof(sub), chunks, names[i]) == 0 &&
                    path_join(p, sizeof(p), sub, PREPARE_MANIFEST) == 0 && file_exists(p)) {
                    if (shown++)
                        fprintf(out, "\n");
                    int r = inspect_manifest(p, verify, out, err);
                    if (r && !rc)
                        rc = r;
                }
                free(names[i]);
            }
            if (!shown)
                return mdi_fail(err, MDI_EIO, "%s: no chunks/<N>nodes/manifest.json inside", path);
            return rc;
        }
        return inspect_tensors(path, out, err);
    }
    if (!file_exists(path))
        return mdi_fail(err, MDI_EIO, "%s: no such file or folder", path);
    if (str_has_suffix(path, ".json"))
        return inspect_manifest(path, verify, out, err);
    return inspect_tensors(path, out, err);
}
