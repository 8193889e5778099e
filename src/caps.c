/* caps: a node's measured throughput and free memory; see caps.h. */
#include "caps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"
#include "util.h"

/* The dtypes weights may be stored in (Q8_K is only an activation type). */
static int caps_weight_dtype(dtype_t t) { return t != DTYPE_Q8_K; }

size_t caps_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (size_t)kb * 1024;
}

/* "model name" on x86, "Hardware"/"CPU part" elsewhere; "unknown CPU". */
static void caps_cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        if (strncmp(line, "model name", 10) && strncmp(line, "Hardware", 8) && strncmp(line, "CPU part", 8))
            continue;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        v[strcspn(v, "\r\n")] = 0;
        snprintf(out, cap, "%s", v);
        if (!strncmp(line, "model name", 10) || !strncmp(line, "Hardware", 8)) break;
    }
    fclose(f);
}

static size_t caps_matrix_bytes(void)
{
    const char *env = getenv("MDI_CAPS_BYTES");
    if (env && atol(env) > 0) return (size_t)atol(env);
    size_t bytes = CAPS_MIN_BYTES;
#ifdef _SC_LEVEL3_CACHE_SIZE
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 > 0 && (size_t)l3 * 2 > bytes) bytes = (size_t)l3 * 2;
#endif
    if (bytes > CAPS_MAX_BYTES) bytes = CAPS_MAX_BYTES;
    /* a small device keeps most of its memory for the model */
    size_t avail = caps_mem_available();
    if (avail && bytes > avail / 4) bytes = avail / 4 > ((size_t)4 << 20) ? avail / 4 : ((size_t)4 << 20);
    return bytes;
}

struct caps_measurer {
    char cache_dir[2048], path[4096], cpu[256], key[400];
    json_t *cache;           /* the whole cache file's object */
    json_t *gflops, *gbytes; /* this CPU's figures, filled dtype by dtype */
    int next;                /* the next dtype to time; DTYPE_COUNT: done */
    int from_cache;
    size_t bytes;            /* the test matrix */
    void *w;
    float *x, *out;
    kernels_scratch scratch;
    double t_spent;
};

static void caps_free_buffers(caps_measurer *m)
{
    free(m->w);
    free(m->x);
    free(m->out);
    free(m->scratch.data);
    m->w = m->x = m->out = NULL;
    m->scratch.data = NULL;
}

void caps_measure_abort(caps_measurer *m)
{
    if (!m) return;
    caps_free_buffers(m);
    json_decref(m->cache);
    json_decref(m->gflops);
    json_decref(m->gbytes);
    free(m);
}

caps_measurer *caps_measure_begin(const char *cache_dir, char *err)
{
    caps_measurer *m = calloc(1, sizeof(*m));
    if (!m) {
        mdi_fail(err, MDI_ENOMEM, "capabilities: out of memory");
        return NULL;
    }
    snprintf(m->cache_dir, sizeof(m->cache_dir), "%s", cache_dir ? cache_dir : ".");
    caps_cpu_model(m->cpu, sizeof(m->cpu));
    snprintf(m->key, sizeof(m->key), "%s | %s | %d threads", m->cpu, kernels_simd_name(), kernels_n_threads());
    snprintf(m->path, sizeof(m->path), "%s/%s", m->cache_dir, CAPS_FILE);
    m->cache = file_exists(m->path) ? json_load_file(m->path, 0, NULL) : NULL;
    if (!json_is_object(m->cache)) {
        json_decref(m->cache);
        m->cache = json_object();
    }
    m->bytes = caps_matrix_bytes();
    json_t *entry = json_object_get(m->cache, m->key);
    json_t *gflops = json_object_get(entry, "matvec_gflops"), *gbytes = json_object_get(entry, "matvec_gbytes_s");
    /* an entry measured on a smaller matrix (a test's) does not stand for this one */
    json_int_t measured_on = json_integer_value(json_object_get(entry, "matrix_bytes"));
    if (json_is_object(gflops) && json_object_size(gflops) > 0 && json_is_object(gbytes) &&
        (size_t)measured_on >= (m->bytes < CAPS_MIN_BYTES ? m->bytes : CAPS_MIN_BYTES)) {
        m->gflops = json_incref(gflops);
        m->gbytes = json_incref(gbytes);
        m->next = DTYPE_COUNT;
        m->from_cache = 1;
        log_debug("capabilities of this CPU from %s", m->path);
        return m;
    }
    m->gflops = json_object();
    m->gbytes = json_object();
    m->w = malloc(m->bytes);
    m->x = malloc(CAPS_COLS * sizeof(float));
    size_t smallest_row = 0;
    for (int t = 0; t < DTYPE_COUNT; t++)
        if (caps_weight_dtype((dtype_t)t) && dtype_row_ok((dtype_t)t, CAPS_COLS) &&
            (!smallest_row || dtype_row_size((dtype_t)t, CAPS_COLS) < smallest_row))
            smallest_row = dtype_row_size((dtype_t)t, CAPS_COLS);
    m->out = malloc((m->bytes / smallest_row + 1) * sizeof(float)); /* the most rows any dtype has */
    m->scratch.bytes = kernels_scratch_bytes(1, 1, CAPS_COLS);
    m->scratch.data = malloc(m->scratch.bytes);
    if (!m->w || !m->x || !m->out || !m->scratch.data) {
        mdi_fail(err, MDI_ENOMEM, "capabilities: cannot allocate %zu bytes for the test matrix", m->bytes);
        caps_measure_abort(m);
        return NULL;
    }
    /* 0x11 bytes: a small normal number in every float format and a valid
     * block of every quantized one; written, so no page is the shared
     * zero page. */
    memset(m->w, 0x11, m->bytes);
    for (int i = 0; i < CAPS_COLS; i++) m->x[i] = (float)((i * 7919) % 200 - 100) / 100.0f;
    return m;
}

int caps_measure_step(caps_measurer *m)
{
    while (m->next < DTYPE_COUNT &&
           (!caps_weight_dtype((dtype_t)m->next) || !dtype_row_ok((dtype_t)m->next, CAPS_COLS)))
        m->next++;
    if (m->next >= DTYPE_COUNT) return 1;
    dtype_t t = (dtype_t)m->next++;
    double t_start = time_now();
    size_t row = dtype_row_size(t, CAPS_COLS);
    int rows = (int)(m->bytes / row);
    mat_t w = {t, rows, CAPS_COLS, m->w};
    kernels_matvec(m->out, &w, m->x, &m->scratch); /* warm-up: pages, pool */
    double best = 1e30, t_end = time_now() + 0.05;
    for (int rep = 0; rep < 3 || (time_now() < t_end && rep < 20); rep++) {
        double t0 = time_now();
        kernels_matvec(m->out, &w, m->x, &m->scratch);
        double dt = time_now() - t0;
        if (dt < best) best = dt;
    }
    if (best <= 0) best = 1e-9;
    double weights = (double)rows * CAPS_COLS;
    json_object_set_new(m->gflops, dtype_name(t), json_real(2.0 * weights / best / 1e9));
    json_object_set_new(m->gbytes, dtype_name(t), json_real((double)rows * (double)row / best / 1e9));
    m->t_spent += time_now() - t_start;
    while (m->next < DTYPE_COUNT &&
           (!caps_weight_dtype((dtype_t)m->next) || !dtype_row_ok((dtype_t)m->next, CAPS_COLS)))
        m->next++;
    return m->next >= DTYPE_COUNT;
}

json_t *caps_measure_end(caps_measurer *m)
{
    while (!caps_measure_step(m)) {}
    json_t *caps = json_object();
    json_object_set(caps, "matvec_gflops", m->gflops);
    json_object_set(caps, "matvec_gbytes_s", m->gbytes);
    if (!m->from_cache) {
        json_object_set_new(m->cache, m->key, json_pack("{s:O, s:O, s:I}", "matvec_gflops", m->gflops,
                                                        "matvec_gbytes_s", m->gbytes, "matrix_bytes",
                                                        (json_int_t)m->bytes));
        char why[MDI_ERR_LEN], tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", m->path);
        if (mkdir_p(m->cache_dir, why) != 0 || json_dump_file(m->cache, tmp, JSON_INDENT(1) | JSON_SORT_KEYS) != 0 ||
            rename(tmp, m->path) != 0)
            log_warn("capabilities: cannot cache them in %s", m->path);
        log_info("capabilities measured in %.1f s (%zu MiB matrix), cached in %s", m->t_spent, m->bytes >> 20,
                 m->path);
    }
    json_object_set_new(caps, "cpu", json_string(m->cpu));
    json_object_set_new(caps, "simd", json_string(kernels_simd_name()));
    json_object_set_new(caps, "n_threads", json_integer(kernels_n_threads()));
    json_object_set_new(caps, "mem_available_bytes", json_integer((json_int_t)caps_mem_available()));
    caps_measure_abort(m);
    return caps;
}

json_t *caps_measure(const char *cache_dir, char *err)
{
    caps_measurer *m = caps_measure_begin(cache_dir, err);
    return m ? caps_measure_end(m) : NULL;
}

json_t *caps_refresh(const json_t *caps)
{
    json_t *c = json_deep_copy(caps);
    if (c) json_object_set_new(c, "mem_available_bytes", json_integer((json_int_t)caps_mem_available()));
    return c;
}

int caps_parse(const json_t *caps, caps_profile *out, const char *where, char *err)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(caps))
        return mdi_fail(err, MDI_EFORMAT, "%s: capabilities: expected an object", where);
    json_t *g = json_object_get(caps, "matvec_gflops");
    if (!json_is_object(g) || json_object_size(g) == 0)
        return mdi_fail(err, MDI_EFORMAT, "%s: capabilities.matvec_gflops: expected an object of dtype: GFLOP/s",
                        where);
    const char *k;
    json_t *v;
    json_object_foreach(g, k, v) {
        dtype_t t;
        if (dtype_parse(k, &t) != 0)
            return mdi_fail(err, MDI_EFORMAT, "%s: capabilities.matvec_gflops.%.32s: unknown dtype", where, k);
        double f = json_number_value(v);
        if (!json_is_number(v) || !(f > 0) || f > 1e9)
            return mdi_fail(err, MDI_EFORMAT, "%s: capabilities.matvec_gflops.%.32s: expected a positive number",
                            where, k);
        out->gflops[t] = f;
    }
    json_t *m = json_object_get(caps, "mem_available_bytes");
    if (!json_is_number(m) || json_number_value(m) < 0)
        return mdi_fail(err, MDI_EFORMAT, "%s: capabilities.mem_available_bytes: expected a number of bytes", where);
    out->mem_bytes = json_number_value(m);
    return 0;
}

double caps_flops(const caps_profile *p, dtype_t t)
{
    if (t < DTYPE_COUNT && p->gflops[t] > 0) return p->gflops[t] * 1e9;
    double slowest = 0;
    for (int i = 0; i < DTYPE_COUNT; i++)
        if (p->gflops[i] > 0 && (slowest == 0 || p->gflops[i] < slowest)) slowest = p->gflops[i];
    return slowest * 1e9;
}
