/*
 * control: HTTP control plane, server (http_server.h) and client (http_client.h).
 * Endpoints and states are described in control.h.
 */
#include "control.h"
#include "caps.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <sodium.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "auth.h"
#include "http_client.h"
#include "http_server.h"
#include "net.h"
#include "proto.h"
#include "util.h"

/* ---- run configuration ---- */

static json_t *cc_addr_json(const char *addr, int port)
{
    return json_pack("{s:s, s:i}", "addr", addr, "port", port);
}

json_t *run_config_to_json(const run_config *rc)
{
    json_t *o = json_object();
    json_object_set_new(o, "role", json_string("secondary"));
    json_object_set_new(o, "node_index", json_integer(rc->node_index));
    json_object_set_new(o, "n_nodes", json_integer(rc->n_nodes));
    json_object_set_new(o, "model", json_string(rc->model_name));
    json_object_set_new(o, "model_config", model_config_to_json(&rc->cfg));
    json_object_set_new(o, "layers", json_pack("[i, i]", rc->layer_begin, rc->layer_end));
    json_object_set_new(o, "dtype", json_string(rc->dtype == DTYPE_COUNT ? "auto" : dtype_name(rc->dtype)));
    json_object_set_new(o, "wire_dtype", json_string(dtype_name(rc->wire_dtype)));
    json_object_set_new(o, "kv_dtype", json_string(dtype_name(rc->kv_dtype)));
    json_object_set_new(o, "mmap", json_boolean(rc->weights_mmap));
    json_object_set_new(o, "mlock", json_boolean(rc->weights_mlock));
    json_object_set_new(o, "n_samples", json_integer(rc->n_samples));
    json_object_set_new(o, "max_seq", json_integer(rc->max_seq));
    json_object_set_new(o, "max_batch", json_integer(rc->max_batch));
    json_object_set_new(o, "is_last", json_boolean(rc->is_last));
    json_object_set_new(o, "prev", cc_addr_json(rc->prev_addr, rc->prev_port));
    json_object_set_new(o, "next", cc_addr_json(rc->next_addr, rc->next_port));
    json_object_set_new(o, "chunk_sha256", json_string(rc->chunk_sha256));
    json_object_set_new(o, "chunk_size", json_integer((json_int_t)rc->chunk_size));
    json_object_set_new(o, "timeout_s", json_real(rc->timeout_s));
    json_object_set_new(o, "epoch", json_integer(rc->epoch));
    return o;
}

static int rc_int(json_t *o, const char *key, int lo, int hi, int *out, char *err)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return mdi_fail(err, MDI_EARG, "run configuration: %s: expected an integer in %d..%d", key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int rc_str(json_t *o, const char *key, char *out, size_t cap, char *err)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v) || json_string_length(v) >= cap)
        return mdi_fail(err, MDI_EARG, "run configuration: %s: expected a string shorter than %zu", key, cap);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int rc_dtype(json_t *o, const char *key, dtype_t *out, char *err)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v) || dtype_parse(json_string_value(v), out) != 0)
        return mdi_fail(err, MDI_EARG, "run configuration: %s: expected one of %s", key, dtype_names());
    return 0;
}

/* The compute dtype may also be "auto": as the chunk stores it. */
static int rc_compute_dtype(json_t *o, dtype_t *out, char *err)
{
    json_t *v = json_object_get(o, "dtype");
    if (json_is_string(v) && !strcmp(json_string_value(v), "auto")) {
        *out = DTYPE_COUNT;
        return 0;
    }
    if (!json_is_string(v) || dtype_parse(json_string_value(v), out) != 0)
        return mdi_fail(err, MDI_EARG, "run configuration: dtype: unknown dtype \"%s\" (accepted: auto, %s)",
                        json_is_string(v) ? json_string_value(v) : "(not a string)", dtype_names());
    return 0;
}

static int rc_addr(json_t *o, const char *key, char *addr, int *port, char *err)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_object(v)) return mdi_fail(err, MDI_EARG, "run configuration: %s: expected {\"addr\", \"port\"}", key);
    int rc = rc_str(v, "addr", addr, CONTROL_HOST_LEN, err);
    if (!rc) rc = rc_int(v, "port", 1, 65535, port, err);
    if (rc) return mdi_fail(err, MDI_EARG, "run configuration: %s: expected {\"addr\": string, \"port\": 1..65535}", key);
    return 0;
}

int run_config_from_json(run_config *rc, json_t *o, char *err)
{
    memset(rc, 0, sizeof(*rc));
    if (!json_is_object(o)) return mdi_fail(err, MDI_EARG, "run configuration: expected a JSON object");
    int r;
    json_t *layers = json_object_get(o, "layers");
    if ((r = rc_int(o, "node_index", 0, 1 << 20, &rc->node_index, err)) ||
        (r = rc_int(o, "n_nodes", 2, 1 << 20, &rc->n_nodes, err)) ||
        (r = rc_str(o, "model", rc->model_name, sizeof(rc->model_name), err)) ||
        (r = rc_compute_dtype(o, &rc->dtype, err)) ||
        (r = rc_dtype(o, "wire_dtype", &rc->wire_dtype, err)) ||
        (r = rc_dtype(o, "kv_dtype", &rc->kv_dtype, err)) ||
        (r = rc_int(o, "n_samples", 1, 1 << 16, &rc->n_samples, err)) ||
        (r = rc_int(o, "max_seq", 1, 1 << 24, &rc->max_seq, err)) ||
        (r = rc_int(o, "max_batch", 1, 1 << 16, &rc->max_batch, err)) ||
        (r = rc_addr(o, "prev", rc->prev_addr, &rc->prev_port, err)) ||
        (r = rc_addr(o, "next", rc->next_addr, &rc->next_port, err)) ||
        (r = rc_str(o, "chunk_sha256", rc->chunk_sha256, sizeof(rc->chunk_sha256), err)))
        return r;
    if (!json_is_array(layers) || json_array_size(layers) != 2 ||
        !json_is_integer(json_array_get(layers, 0)) || !json_is_integer(json_array_get(layers, 1)) ||
        json_integer_value(json_array_get(layers, 0)) < 0 || json_integer_value(json_array_get(layers, 1)) < 0 ||
        json_integer_value(json_array_get(layers, 0)) > MODEL_MAX_LAYERS ||
        json_integer_value(json_array_get(layers, 1)) > MODEL_MAX_LAYERS)
        return mdi_fail(err, MDI_EARG, "run configuration: layers: expected [begin, end] in 0..%d", MODEL_MAX_LAYERS);
    rc->layer_begin = (int)json_integer_value(json_array_get(layers, 0));
    rc->layer_end = (int)json_integer_value(json_array_get(layers, 1));
    rc->is_last = json_is_true(json_object_get(o, "is_last"));
    json_t *mm = json_object_get(o, "mmap"), *ml = json_object_get(o, "mlock");
    if ((mm && !json_is_boolean(mm)) || (ml && !json_is_boolean(ml)))
        return mdi_fail(err, MDI_EARG, "run configuration: %s: expected true or false",
                        mm && !json_is_boolean(mm) ? "mmap" : "mlock");
    rc->weights_mmap = json_is_true(mm);
    rc->weights_mlock = json_is_true(ml);
    json_t *ep = json_object_get(o, "epoch");
    if (ep && (!json_is_integer(ep) || json_integer_value(ep) < 0 || json_integer_value(ep) > 0xffffffffLL))
        return mdi_fail(err, MDI_EARG, "run configuration: epoch: expected 0..4294967295");
    rc->epoch = ep ? (unsigned)json_integer_value(ep) : 0;
    json_t *size = json_object_get(o, "chunk_size");
    if (!json_is_integer(size) || json_integer_value(size) < 0)
        return mdi_fail(err, MDI_EARG, "run configuration: chunk_size: expected a byte count");
    rc->chunk_size = (uint64_t)json_integer_value(size);
    json_t *to = json_object_get(o, "timeout_s");
    rc->timeout_s = json_is_number(to) ? json_number_value(to) : 10.0;
    if (!(rc->timeout_s > 0 && rc->timeout_s <= 86400))
        return mdi_fail(err, MDI_EARG, "run configuration: timeout_s: expected a number of seconds in (0, 86400]");
    if (strlen(rc->chunk_sha256) != 64 || strspn(rc->chunk_sha256, "0123456789abcdef") != 64)
        return mdi_fail(err, MDI_EARG, "run configuration: chunk_sha256: expected 64 lowercase hex digits");
    char why[MDI_ERR_LEN];
    if ((r = model_config_from_json(&rc->cfg, json_object_get(o, "model_config"), "model_config", why)))
        return mdi_fail(err, MDI_EARG, "run configuration: %s", why);
    if (rc->layer_begin < 0 || rc->layer_end <= rc->layer_begin || rc->layer_end > rc->cfg.n_layers)
        return mdi_fail(err, MDI_EARG, "run configuration: layers [%d, %d) outside the model's %d layers",
                        rc->layer_begin, rc->layer_end, rc->cfg.n_layers);
    if ((r = proto_wire_dtype_check(rc->wire_dtype, rc->cfg.dim, why)))
        return mdi_fail(err, MDI_EARG, "run configuration: wire_dtype: %s", why);
    if (rc->kv_dtype != DTYPE_F32 && rc->kv_dtype != DTYPE_F16)
        return mdi_fail(err, MDI_EARG, "run configuration: kv_dtype: expected \"f32\" or \"f16\", got \"%s\"",
                        dtype_name(rc->kv_dtype));
    if (rc->max_seq > rc->cfg.max_seq_len)
        return mdi_fail(err, MDI_EARG, "run configuration: max_seq %d exceeds the model's %d",
                        rc->max_seq, rc->cfg.max_seq_len);
    return 0;
}

/* ---- server ---- */

#define CONTROL_TIMEOUT_S 10.0

struct control_server {
    http_server *http;
    int port, node_index;
    char *cache_dir, *local_chunk;
    char local_sha[65];
    auth_keys keys;            /* of the secret; keys.on = 0 without one */
    auth_replay *replay;       /* nonces of recent requests */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    control_state state;
    char last_error[MDI_ERR_LEN];
    int has_init, have_chunk, upload_active;
    run_config cfg;
    char chunk_path[PATH_MAX];
    control_cmd cmd;
    long chunks_received, runs, requests_rejected;
    json_t *stats;
    json_t *capabilities;      /* caps.h; NULL until measured */
    size_t memory_bytes;
    double timeout_s;
};

/* Per-request state kept between libmicrohttpd's calls (the request's user
 * pointer). */
typedef struct {
    int fd;                /* PUT /chunk */
    char part_path[PATH_MAX];
    sha256_ctx sha;
    uint64_t n_bytes;
    uint64_t limit;        /* the size /init announced */
    double window_t;       /* upload rate: bytes since window_t */
    uint64_t window_bytes;
    int write_failed;
    int authed;            /* its X-MDI-Auth verified: claim holds */
    auth_http_claim claim;
} cs_request;

static control_server *cs_server(http_request *req)
{
    return http_server_ud(http_request_server(req));
}

static const char *cs_state_name(control_state st)
{
    switch (st) {
    case CONTROL_LOADING: return "loading";
    case CONTROL_RUNNING: return "running";
    default: return "idle";
    }
}

/* Signs a buffered answer with the request's nonce (opts.sign). */
static void cs_sign(http_request *req, unsigned code, const char *body, size_t len, void *mhd_response)
{
    control_server *s = cs_server(req);
    const cs_request *r = http_request_user(req);
    if (!s->keys.on || !r || !r->authed) return;
    char sig[AUTH_HTTP_HEADER_LEN];
    auth_http_sign_answer(&s->keys, r->claim.nonce_hex, code, body, len, sig);
    MHD_add_response_header(mhd_response, AUTH_HTTP_RESPONSE_HEADER, sig);
}

/* Status JSON; called with s->mu held. */
static json_t *cs_status_locked(control_server *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "role", json_string("secondary"));
    json_object_set_new(o, "index", json_integer(s->node_index));
    json_object_set_new(o, "state", json_string(cs_state_name(s->state)));
    json_object_set_new(o, "init", json_boolean(s->has_init));
    if (s->has_init) {
        json_object_set_new(o, "model", json_string(s->cfg.model_name));
        json_object_set_new(o, "layers", json_pack("[i, i]", s->cfg.layer_begin, s->cfg.layer_end));
        json_object_set_new(o, "n_samples", json_integer(s->cfg.n_samples));
        json_object_set_new(o, "wire_dtype", json_string(dtype_name(s->cfg.wire_dtype)));
    }
    json_object_set_new(o, "memory_bytes", json_integer((json_int_t)s->memory_bytes));
    json_object_set_new(o, "rss_bytes", json_integer((json_int_t)mem_current_rss()));
    json_object_set_new(o, "chunks_received", json_integer(s->chunks_received));
    json_object_set_new(o, "runs", json_integer(s->runs));
    json_object_set_new(o, "requests_rejected", json_integer(s->requests_rejected));
    json_object_set_new(o, "last_error", s->last_error[0] ? json_string(s->last_error) : json_null());
    json_object_set_new(o, "stats", s->stats ? json_deep_copy(s->stats) : json_object());
    if (s->capabilities) json_object_set_new(o, "capabilities", caps_refresh(s->capabilities));
    return o;
}

static int cs_handle_chunk(http_request *req);

/* Every request first (opts.begin): with a secret its X-MDI-Auth must
 * verify (auth.h), or it gets 401; a chunk upload must announce the digest
 * /init announced, which the upload's own check then holds it to. */
static int cs_begin(http_request *req, const http_route *route)
{
    control_server *s = cs_server(req);
    cs_request *r = calloc(1, sizeof(*r));
    if (!r) return http_reply_error(req, 500, "out of memory"), 1;
    r->fd = -1;
    http_request_set_user(req, r);
    if (!s->keys.on) return 0;
    const char *method = http_request_method(req), *url = http_request_path(req);
    char why[MDI_ERR_LEN];
    const char *given = http_request_header(req, AUTH_HTTP_HEADER);
    int rc = auth_http_check(&s->keys, s->replay, method, url, given, (int64_t)time(NULL), &r->claim, why);
    if (!rc) {
        r->authed = 1;
        if (route && route->handler == cs_handle_chunk) {
            pthread_mutex_lock(&s->mu);
            int same = s->has_init && !strcmp(r->claim.body_hex, s->cfg.chunk_sha256);
            pthread_mutex_unlock(&s->mu);
            if (!same) rc = mdi_fail(why, MDI_EAUTH, "the upload's signed digest is not the chunk /init announced");
        }
    }
    if (!rc) return 0;
    pthread_mutex_lock(&s->mu);
    s->requests_rejected++;
    pthread_mutex_unlock(&s->mu);
    log_warn("HTTP %.16s %.200s from %s: %s (401)", method, url, http_request_peer(req), why);
    r->authed = 0;
    http_reply_error(req, 401, "%s", why);
    return 1;
}

/* The body of a signed request must be the one its signature covers.
 * Non-zero when it replied (401). */
static int cs_check_body(http_request *req)
{
    const cs_request *r = http_request_user(req);
    if (!r || !r->authed) return 0;
    size_t len;
    const char *body = http_request_body(req, &len);
    char hex[65];
    auth_digest_hex(body, len, hex);
    if (sodium_memcmp(hex, r->claim.body_hex, 64) == 0) return 0;
    log_warn("HTTP %s %s from %s: body differs from its signed digest (401)", http_request_method(req),
             http_request_path(req), http_request_peer(req));
    http_reply_error(req, 401, "the body differs from its signed digest");
    return 1;
}

/* The cached copy of a chunk, named by its digest. */
static void cs_cache_path(const control_server *s, const char *sha, const char *ext, char *out)
{
    snprintf(out, PATH_MAX, "%s/%s%s", s->cache_dir, sha, ext);
}

static int cs_handle_status(http_request *req)
{
    control_server *s = cs_server(req);
    if (cs_check_body(req)) return 0;
    pthread_mutex_lock(&s->mu);
    json_t *st = cs_status_locked(s);
    pthread_mutex_unlock(&s->mu);
    return http_reply_json(req, 200, st);
}

static int cs_handle_init(http_request *req)
{
    control_server *s = cs_server(req);
    if (cs_check_body(req)) return 0;
    size_t len;
    const char *text = http_request_body(req, &len);
    json_error_t je;
    json_t *body = json_loadb(text, len, 0, &je);
    if (!body) return http_reply_error(req, 400, "POST /init: body is not JSON: %s (line %d)", je.text, je.line);
    run_config cfg;
    char why[MDI_ERR_LEN];
    int rc = run_config_from_json(&cfg, body, why);
    json_decref(body);
    if (rc) return http_reply_error(req, 400, "POST /init: %s", why);
    if (s->node_index >= 0 && cfg.node_index != s->node_index)
        return http_reply_error(req, 400, "POST /init: the run configuration is for secondary %d, this is secondary %d",
                                cfg.node_index, s->node_index);

    pthread_mutex_lock(&s->mu);
    if (s->state != CONTROL_IDLE || s->cmd != CONTROL_CMD_NONE || s->upload_active) {
        const char *st = cs_state_name(s->state);
        pthread_mutex_unlock(&s->mu);
        return http_reply_error(req, 409, "POST /init: busy (state %s); PUT /stop first", st);
    }
    s->cfg = cfg;
    s->has_init = 1;
    s->have_chunk = 0;
    char cached[PATH_MAX];
    cs_cache_path(s, cfg.chunk_sha256, ".safetensors", cached);
    struct stat stt;
    if (s->local_chunk && strcmp(s->local_sha, cfg.chunk_sha256) == 0) {
        snprintf(s->chunk_path, sizeof(s->chunk_path), "%s", s->local_chunk);
        s->have_chunk = 1;
    } else if (stat(cached, &stt) == 0 && (uint64_t)stt.st_size == cfg.chunk_size) {
        snprintf(s->chunk_path, sizeof(s->chunk_path), "%s", cached);
        s->have_chunk = 1;
    }
    int have = s->have_chunk;
    s->last_error[0] = 0;
    pthread_mutex_unlock(&s->mu);
    log_info("init from %s: %s layers [%d, %d), %d samples, wire %s, chunk %.12s... %s",
             http_request_peer(req), cfg.model_name, cfg.layer_begin, cfg.layer_end, cfg.n_samples,
             dtype_name(cfg.wire_dtype), cfg.chunk_sha256, have ? "held" : "needed");
    return http_reply_json(req, 200, json_pack("{s:b}", "have_chunk", have));
}

/* First call of PUT /chunk (route on_begin): opens the part file. A
 * Content-Length above the announced size is refused (413) before anything
 * is written. Non-zero when it replied. */
static int cs_chunk_begin(http_request *req)
{
    control_server *s = cs_server(req);
    cs_request *r = http_request_user(req);
    char why[MDI_ERR_LEN];
    const char *cl = http_request_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    pthread_mutex_lock(&s->mu);
    int ok = s->has_init && !s->have_chunk && !s->upload_active && s->state == CONTROL_IDLE;
    if (!ok) {
        snprintf(why, MDI_ERR_LEN, "%s", !s->has_init ? "PUT /chunk before POST /init"
                 : s->have_chunk ? "the chunk is already held" : "busy");
        pthread_mutex_unlock(&s->mu);
        http_reply_error(req, 409, "PUT /chunk: %s", why);
        return 1;
    }
    r->limit = s->cfg.chunk_size;
    if (cl && strtoull(cl, NULL, 10) > r->limit) {
        snprintf(why, MDI_ERR_LEN, "Content-Length %.40s exceeds the announced chunk size of %llu bytes", cl,
                 (unsigned long long)r->limit);
        pthread_mutex_unlock(&s->mu);
        log_warn("chunk upload from %s refused: %s", http_request_peer(req), why);
        http_reply_error(req, 413, "PUT /chunk: %s", why);
        return 1;
    }
    s->upload_active = 1;
    cs_cache_path(s, s->cfg.chunk_sha256, ".part", r->part_path);
    pthread_mutex_unlock(&s->mu);
    r->fd = open(r->part_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (r->fd < 0) {
        mdi_fail(why, MDI_EIO, "cannot create %s: %s", r->part_path, strerror(errno));
        pthread_mutex_lock(&s->mu);
        s->upload_active = 0;
        pthread_mutex_unlock(&s->mu);
        http_reply_error(req, 500, "PUT /chunk: %s", why);
        return 1;
    }
    sha256_init(&r->sha);
    r->window_t = time_now();
    return 0;
}

/* Ends an upload early: the part file is removed, the node can take the
 * next /init. */
static void cs_chunk_abort(control_server *s, http_request *req, cs_request *r, const char *why)
{
    close(r->fd);
    r->fd = -1;
    unlink(r->part_path);
    log_warn("chunk upload from %s dropped after %llu bytes: %s", http_request_peer(req),
             (unsigned long long)r->n_bytes, why);
    pthread_mutex_lock(&s->mu);
    s->upload_active = 0;
    pthread_mutex_unlock(&s->mu);
}

/* Takes n more bytes of PUT /chunk (route on_data). Non-zero (the
 * connection is closed) when they run past the announced size, or when the
 * upload trickles. */
static int cs_chunk_data(http_request *req, const char *data, size_t n)
{
    control_server *s = cs_server(req);
    cs_request *r = http_request_user(req);
    char why[160];
    if (r->fd < 0) return -1;
    if (n > r->limit - r->n_bytes) {
        snprintf(why, sizeof(why), "%llu more bytes would exceed the announced size of %llu bytes",
                 (unsigned long long)n, (unsigned long long)r->limit);
        cs_chunk_abort(s, req, r, why);
        return -1;
    }
    double now = time_now(), span = now - r->window_t;
    r->window_bytes += n;
    if (span > s->timeout_s) {
        if ((double)r->window_bytes < CONTROL_UPLOAD_MIN_RATE * span) {
            snprintf(why, sizeof(why), "%llu bytes in %.1f s, below %d bytes/s",
                     (unsigned long long)r->window_bytes, span, CONTROL_UPLOAD_MIN_RATE);
            cs_chunk_abort(s, req, r, why);
            return -1;
        }
        r->window_t = now;
        r->window_bytes = 0;
    }
    sha256_update(&r->sha, data, n);
    r->n_bytes += n;
    for (size_t off = 0; off < n && !r->write_failed;) {
        ssize_t k = write(r->fd, data + off, n - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) r->write_failed = 1;
        else off += (size_t)k;
    }
    return 0;
}

/* PUT /chunk once the whole body is in. (Its digest is held to /init's
 * here, not to the signature's.) */
static int cs_handle_chunk(http_request *req)
{
    control_server *s = cs_server(req);
    cs_request *r = http_request_user(req);
    if (r->fd < 0) return -1;
    uint8_t digest[32];
    char hex[65];
    sha256_final(&r->sha, digest);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    int fail = r->write_failed || fsync(r->fd) != 0;
    close(r->fd);
    r->fd = -1;
    pthread_mutex_lock(&s->mu);
    s->upload_active = 0;
    run_config cfg = s->cfg;
    pthread_mutex_unlock(&s->mu);
    if (fail) {
        unlink(r->part_path);
        return http_reply_error(req, 500, "PUT /chunk: writing %s failed", r->part_path);
    }
    if (strcmp(hex, cfg.chunk_sha256) != 0 || r->n_bytes != cfg.chunk_size) {
        unlink(r->part_path);
        log_warn("chunk from %s rejected: sha256 %s, %llu bytes; expected %s, %llu bytes",
                 http_request_peer(req), hex, (unsigned long long)r->n_bytes, cfg.chunk_sha256,
                 (unsigned long long)cfg.chunk_size);
        return http_reply_error(req, 400,
                                "chunk hash mismatch: received sha256 %s (%llu bytes), expected %s (%llu bytes)",
                                hex, (unsigned long long)r->n_bytes, cfg.chunk_sha256,
                                (unsigned long long)cfg.chunk_size);
    }
    char final_path[PATH_MAX];
    cs_cache_path(s, hex, ".safetensors", final_path);
    if (rename(r->part_path, final_path) != 0) {
        unlink(r->part_path);
        return http_reply_error(req, 500, "PUT /chunk: rename to %s: %s", final_path, strerror(errno));
    }
    pthread_mutex_lock(&s->mu);
    s->have_chunk = 1;
    s->chunks_received++;
    snprintf(s->chunk_path, sizeof(s->chunk_path), "%s", final_path);
    pthread_mutex_unlock(&s->mu);
    log_info("chunk received from %s: %llu bytes, sha256 verified, stored as %s",
             http_request_peer(req), (unsigned long long)r->n_bytes, final_path);
    return http_reply_json(req, 200, json_pack("{s:b, s:I}", "ok", 1, "bytes", (json_int_t)r->n_bytes));
}

static int cs_handle_start(http_request *req)
{
    control_server *s = cs_server(req);
    if (cs_check_body(req)) return 0;
    pthread_mutex_lock(&s->mu);
    const char *why = !s->has_init ? "POST /start before POST /init"
                      : !s->have_chunk ? "POST /start before the chunk was uploaded"
                      : s->state != CONTROL_IDLE || s->cmd != CONTROL_CMD_NONE ? "busy" : NULL;
    if (!why) {
        s->cmd = CONTROL_CMD_START;
        s->state = CONTROL_LOADING;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (why) return http_reply_error(req, 409, "%s", why);
    return http_reply_json(req, 202, json_pack("{s:s}", "state", "loading"));
}

/* Waits (bounded) for the main thread to bring the node back to idle, so
 * that the answer carries the run's final figures. */
static int cs_handle_stop(http_request *req)
{
    control_server *s = cs_server(req);
    if (cs_check_body(req)) return 0;
    pthread_mutex_lock(&s->mu);
    if (s->cmd == CONTROL_CMD_START) {
        /* A /start the main thread has not taken yet: cancelled here, so
         * that the node is idle at once (overwriting it with STOP would
         * leave the state "loading" with no run to end). */
        s->cmd = CONTROL_CMD_NONE;
        s->state = CONTROL_IDLE;
        pthread_cond_broadcast(&s->cv);
    } else if (s->state != CONTROL_IDLE) {
        s->cmd = CONTROL_CMD_STOP;
        pthread_cond_broadcast(&s->cv);
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 10;
        while (s->state != CONTROL_IDLE || s->cmd != CONTROL_CMD_NONE)
            if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT) break;
    }
    s->has_init = 0;
    json_t *st = cs_status_locked(s);
    pthread_mutex_unlock(&s->mu);
    return http_reply_json(req, 200, st);
}

/* A request that ends early (client gone mid-upload) leaves no part file
 * (opts.end, every request). */
static void cs_end(http_request *req)
{
    control_server *s = cs_server(req);
    cs_request *r = http_request_user(req);
    if (!r) return;
    if (r->fd >= 0) {
        close(r->fd);
        unlink(r->part_path);
        log_warn("chunk upload from %s ended after %llu bytes; discarded", http_request_peer(req),
                 (unsigned long long)r->n_bytes);
        pthread_mutex_lock(&s->mu);
        s->upload_active = 0;
        pthread_mutex_unlock(&s->mu);
    }
    free(r);
    http_request_set_user(req, NULL);
}

static const http_route cs_routes[] = {
    { .method = "GET", .path = "/", .handler = cs_handle_status, .body_max = CONTROL_BODY_MAX },
    { .method = "POST", .path = "/init", .handler = cs_handle_init, .body_max = CONTROL_BODY_MAX },
    { .method = "PUT", .path = "/chunk", .handler = cs_handle_chunk, .on_begin = cs_chunk_begin,
      .on_data = cs_chunk_data },
    { .method = "POST", .path = "/start", .handler = cs_handle_start, .body_max = CONTROL_BODY_MAX },
    { .method = "PUT", .method2 = "POST", .path = "/stop", .handler = cs_handle_stop, .body_max = CONTROL_BODY_MAX },
    { 0 },
};

control_server *control_server_start(const control_server_opts *o, char *err)
{
    control_server *s = calloc(1, sizeof(*s));
    if (!s) { mdi_fail(err, MDI_ENOMEM, "out of memory"); return NULL; }
    s->node_index = o->node_index;
    if (auth_keys_derive(&s->keys, o->secret, err) != 0) {
        free(s);
        return NULL;
    }
    if (!(s->replay = auth_replay_new())) {
        free(s);
        mdi_fail(err, MDI_ENOMEM, "out of memory");
        return NULL;
    }
    s->cache_dir = strdup(o->cache_dir);
    s->local_chunk = o->local_chunk ? strdup(o->local_chunk) : NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    char why[MDI_ERR_LEN];
    if (mkdir_p(s->cache_dir, why) != 0) {
        mdi_fail(err, MDI_EIO, "cache folder %s: %s", s->cache_dir, why);
        goto fail;
    }
    if (s->local_chunk) {
        if (sha256_file_hex(s->local_chunk, s->local_sha, why) != 0) {
            mdi_fail(err, MDI_EIO, "--chunk %s: %s", s->local_chunk, why);
            goto fail;
        }
        log_info("local chunk %s: sha256 %s", s->local_chunk, s->local_sha);
    }
    s->timeout_s = o->timeout_s > 0 ? o->timeout_s : CONTROL_TIMEOUT_S;
    http_server_opts ho = {
        .name = "HTTP control port",
        .port = o->port,
        .timeout_s = s->timeout_s,
        .conn_max = CONTROL_CONN_MAX,
        .per_addr_max = CONTROL_PER_ADDR_MAX,
        .conn_reserve = CONTROL_STARTER_RESERVE,
        .reserved_addr = o->starter_addr,
        .routes = cs_routes,
        .no_405 = 1,
        .route_hint = "(GET /, POST /init, PUT /chunk, POST /start, PUT /stop)",
        .ud = s,
        .begin = cs_begin,
        .end = cs_end,
        .sign = cs_sign,
    };
    if (!(s->http = http_server_start(&ho, err))) goto fail;
    s->port = http_server_port(s->http);
    return s;
fail:
    control_server_stop(s);
    return NULL;
}

void control_server_stop(control_server *s)
{
    if (!s) return;
    http_server_stop(s->http);
    json_decref(s->stats);
    json_decref(s->capabilities);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    auth_replay_free(s->replay);
    sodium_memzero(&s->keys, sizeof(s->keys));
    free(s->cache_dir);
    free(s->local_chunk);
    free(s);
}

int control_server_port(const control_server *s) { return s->port; }

control_cmd control_wait_command(control_server *s, double timeout_s, run_config *cfg, char *chunk_path)
{
    pthread_mutex_lock(&s->mu);
    if (s->cmd == CONTROL_CMD_NONE && timeout_s > 0) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        long long ns = dl.tv_nsec + (long long)(timeout_s * 1e9);
        dl.tv_sec += (time_t)(ns / 1000000000LL);
        dl.tv_nsec = (long)(ns % 1000000000LL);
        while (s->cmd == CONTROL_CMD_NONE)
            if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT) break;
    }
    control_cmd cmd = s->cmd;
    if (cmd == CONTROL_CMD_START) {
        *cfg = s->cfg;
        snprintf(chunk_path, PATH_MAX, "%s", s->chunk_path);
        s->runs++;
    }
    s->cmd = CONTROL_CMD_NONE;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return cmd;
}

void control_set_state(control_server *s, control_state st, const char *error)
{
    pthread_mutex_lock(&s->mu);
    s->state = st;
    if (error) snprintf(s->last_error, sizeof(s->last_error), "%s", error);
    if (st == CONTROL_IDLE) {
        s->has_init = 0;
        s->memory_bytes = 0;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void control_set_stats(control_server *s, json_t *stats)
{
    pthread_mutex_lock(&s->mu);
    json_decref(s->stats);
    s->stats = stats;
    pthread_mutex_unlock(&s->mu);
}

void control_set_memory(control_server *s, size_t bytes)
{
    pthread_mutex_lock(&s->mu);
    s->memory_bytes = bytes;
    pthread_mutex_unlock(&s->mu);
}

void control_set_capabilities(control_server *s, json_t *caps)
{
    pthread_mutex_lock(&s->mu);
    json_decref(s->capabilities);
    s->capabilities = caps;
    pthread_mutex_unlock(&s->mu);
}

/* ---- client ---- */

void control_client_global_init(void)
{
    http_client_global_init(NULL);
}

/* What one answer leaves: its body (at most CONTROL_BODY_MAX bytes) and
 * the value of its X-MDI-Auth-Response header. */
typedef struct {
    char *data;
    size_t len;
    char answer_sig[AUTH_HTTP_HEADER_LEN];
} cc_answer;

static size_t cc_write(const char *p, size_t n, void *ud)
{
    cc_answer *b = ud;
    if (b->len + n > CONTROL_BODY_MAX) return 0;
    char *d = realloc(b->data, b->len + n + 1);
    if (!d) return 0;
    memcpy(d + b->len, p, n);
    b->data = d;
    b->len += n;
    d[b->len] = 0;
    return n;
}

static size_t cc_header(const char *p, size_t n, void *ud)
{
    char *out = ((cc_answer *)ud)->answer_sig;
    size_t k = strlen(AUTH_HTTP_RESPONSE_HEADER);
    if (n > k + 1 && n < k + AUTH_HTTP_HEADER_LEN && !strncasecmp(p, AUTH_HTTP_RESPONSE_HEADER, k) && p[k] == ':') {
        const char *v = p + k + 1;
        size_t len = n - k - 1;
        while (len && (*v == ' ' || *v == '\t')) v++, len--;
        while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' ')) len--;
        memcpy(out, v, len);
        out[len] = 0;
    }
    return n;
}

/* One request. body (may be NULL) is sent as JSON; upload (may be NULL)
 * streams a file whose SHA-256 is upload_hex (needed with a secret). With a
 * secret the request is signed and a successful answer must be (auth.h).
 * *resp (may be NULL) gets the parsed answer. */
static int cc_request(const char *method, const char *host, int port, const char *path,
                      const char *secret, const char *body, FILE *upload, uint64_t upload_size,
                      const char *upload_hex, double timeout_s, json_t **resp, char *err)
{
    auth_keys keys;
    int rc0 = auth_keys_derive(&keys, secret, err);
    if (rc0) return rc0;
    char auth_line[AUTH_HTTP_HEADER_LEN + 32], nonce_hex[64] = "";
    if (keys.on) {
        char body_hex[65], value[AUTH_HTTP_HEADER_LEN];
        if (upload) snprintf(body_hex, sizeof(body_hex), "%s", upload_hex ? upload_hex : "");
        else auth_digest_hex(body ? body : "", body ? strlen(body) : 0, body_hex);
        auth_http_sign(&keys, method, path, body_hex, value, nonce_hex);
        snprintf(auth_line, sizeof(auth_line), "%s: %s", AUTH_HTTP_HEADER, value);
    }
    char url[CONTROL_HOST_LEN + 64];
    snprintf(url, sizeof(url), "http://%s:%d%s", host, port, path);
    const char *headers[3] = {NULL, NULL, NULL};
    int n_headers = 0;
    if (keys.on) headers[n_headers++] = auth_line;
    if (upload) headers[n_headers++] = "Content-Type: application/octet-stream";
    else if (body) headers[n_headers++] = "Content-Type: application/json";
    cc_answer b = {0};
    double t = timeout_s > 0.001 ? timeout_s : 0.001;
    http_client_request rq = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = upload ? NULL : body,
        .upload = upload,
        .upload_size = upload_size,
        .connect_timeout_s = t,
        /* A large upload may take long; what must not happen is a stall. */
        .timeout_s = upload ? 0 : t,
        .stall_s = upload ? (long)(timeout_s < 1 ? 1 : timeout_s) : 0,
        .no_proxy = 1,
        .on_header = keys.on ? cc_header : NULL,
        .on_body = cc_write,
        .ud = &b,
    };
    char why[HTTP_CLIENT_MSG_LEN];
    long code = 0;
    int hr = http_client_perform(&rq, &code, why);
    int rc = 0;
    if (hr != HTTP_CLIENT_OK) {
        int kind = hr == HTTP_CLIENT_ETIMEOUT ? MDI_ETIMEOUT : MDI_ENET;
        const char *what = hr == HTTP_CLIENT_ECONNECT ? "cannot connect" :
                           hr == HTTP_CLIENT_ETIMEOUT ? "no answer in time" : "HTTP request failed";
        rc = mdi_fail(err, kind, "%s %s: %s (%s)", method, path, what, why);
        goto done;
    }
    json_t *j = b.data ? json_loads(b.data, 0, NULL) : NULL;
    if (code >= 300) {
        const char *msg = json_is_object(j) ? json_string_value(json_object_get(j, "error")) : NULL;
        int kind = code == 401 ? MDI_EAUTH : code == 409 ? MDI_ESTATE : code == 400 ? MDI_EFORMAT : MDI_ENET;
        /* The node's words, bounded: a node's text may be anything. */
        rc = mdi_fail(err, kind, "%s %s: HTTP %ld: %.256s", method, path, code,
                      msg ? msg : (b.data ? b.data : "(no body)"));
        json_decref(j);
        goto done;
    }
    if (keys.on && !auth_http_verify_answer(&keys, nonce_hex, code, b.data ? b.data : "", b.len, b.answer_sig)) {
        rc = mdi_fail(err, MDI_EAUTH, "%s %s: HTTP %ld with an answer that is not authenticated (%s): the node's "
                      "secret differs, or the answer was altered on the way", method, path, code,
                      b.answer_sig[0] ? "its MAC does not verify" : "no " AUTH_HTTP_RESPONSE_HEADER);
        json_decref(j);
        goto done;
    }
    if (!j) {
        rc = mdi_fail(err, MDI_EPROTO, "%s %s: HTTP %ld with an answer that is not JSON: %.80s",
                      method, path, code, b.data ? b.data : "");
        goto done;
    }
    if (resp) *resp = j;
    else json_decref(j);
done:
    free(b.data);
    return rc;
}

int control_client_status(const char *host, int port, const char *secret, double timeout_s,
                          json_t **status, char *err)
{
    return cc_request("GET", host, port, "/", secret, NULL, NULL, 0, NULL, timeout_s, status, err);
}

int control_client_init(const char *host, int port, const char *secret, double timeout_s,
                        const run_config *rc, int *have_chunk, char *err)
{
    json_t *o = run_config_to_json(rc);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!body) return mdi_fail(err, MDI_ENOMEM, "out of memory");
    json_t *resp = NULL;
    int r = cc_request("POST", host, port, "/init", secret, body, NULL, 0, NULL, timeout_s, &resp, err);
    free(body);
    if (r) return r;
    *have_chunk = json_is_true(json_object_get(resp, "have_chunk"));
    json_decref(resp);
    return 0;
}

int control_client_upload_chunk(const char *host, int port, const char *secret, double timeout_s,
                                const char *path, char *err)
{
    /* With a secret the request signs the body's digest, read first. */
    char hex[65] = "";
    if (secret && secret[0]) {
        int rc = auth_digest_file_hex(path, hex, err);
        if (rc) return rc;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return mdi_fail(err, MDI_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    fstat(fileno(f), &st);
    int r = cc_request("PUT", host, port, "/chunk", secret, NULL, f, (uint64_t)st.st_size, hex, timeout_s, NULL, err);
    fclose(f);
    return r;
}

int control_client_start(const char *host, int port, const char *secret, double timeout_s, char *err)
{
    return cc_request("POST", host, port, "/start", secret, "{}", NULL, 0, NULL, timeout_s, NULL, err);
}

int control_client_stop(const char *host, int port, const char *secret, double timeout_s,
                        json_t **status, char *err)
{
    return cc_request("PUT", host, port, "/stop", secret, NULL, NULL, 0, NULL, timeout_s, status, err);
}
