/* test_control: the secondary's HTTP control plane driven by the
 * starter's libcurl client on 127.0.0.1 (port 0, read back): status, the
 * run configuration, chunk upload with hash check and cache reuse, a
 * locally given chunk, start/stop hand-over, the shared secret, garbage. */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "control.h"
#include "net.h"
#include "test.h"
#include "util.h"

static char tmp_dir[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void make_config(run_config *rc, const char *chunk_text)
{
    memset(rc, 0, sizeof(*rc));
    rc->node_index = 0;
    rc->n_nodes = 2;
    snprintf(rc->cfg.model_type, sizeof(rc->cfg.model_type), "llama");
    rc->cfg.dim = 64;
    rc->cfg.hidden_dim = 172;
    rc->cfg.n_layers = 5;
    rc->cfg.n_heads = 8;
    rc->cfg.n_kv_heads = 4;
    rc->cfg.head_dim = 8;
    rc->cfg.vocab_size = 512;
    rc->cfg.max_seq_len = 512;
    rc->cfg.norm_eps = 1e-5f;
    rc->cfg.rope_theta = 10000;
    rc->cfg.bos_id = 1;
    rc->cfg.eos_ids[0] = 2;
    rc->cfg.n_eos = 1;
    snprintf(rc->model_name, sizeof(rc->model_name), "stories260K");
    rc->layer_begin = 2;
    rc->layer_end = 5;
    rc->dtype = DTYPE_COUNT;
    rc->wire_dtype = DTYPE_BF16;
    rc->kv_dtype = DTYPE_F16;
    rc->n_samples = 3;
    rc->max_seq = 100;
    rc->max_batch = 16;
    rc->is_last = 1;
    snprintf(rc->prev_addr, sizeof(rc->prev_addr), "127.0.0.1");
    rc->prev_port = 5000;
    snprintf(rc->next_addr, sizeof(rc->next_addr), "127.0.0.1");
    rc->next_port = 5000;
    sha256_hex(chunk_text, strlen(chunk_text), rc->chunk_sha256);
    rc->chunk_size = strlen(chunk_text);
    rc->timeout_s = 3;
}

static long status_int(int port, const char *secret, const char *key)
{
    json_t *st = NULL;
    if (control_client_status("127.0.0.1", port, secret, 2, &st, NULL) != 0) return -1;
    long v = (long)json_integer_value(json_object_get(st, key));
    json_decref(st);
    return v;
}

static int status_is(int port, const char *secret, const char *key, const char *want)
{
    json_t *st = NULL;
    if (control_client_status("127.0.0.1", port, secret, 2, &st, NULL) != 0) return 0;
    const char *v = json_string_value(json_object_get(st, key));
    int ok = v && !strcmp(v, want);
    json_decref(st);
    return ok;
}

static void test_run_config_json(void)
{
    run_config a, b;
    make_config(&a, "abc");
    a.epoch = 3;
    json_t *j = run_config_to_json(&a);
    char err[MDI_ERR_LEN];
    int rc = run_config_from_json(&b, j, err);
    test_result(rc == 0 && b.layer_begin == 2 && b.layer_end == 5 && b.wire_dtype == DTYPE_BF16 &&
                b.kv_dtype == DTYPE_F16 && b.dtype == DTYPE_COUNT && b.is_last && b.cfg.dim == 64 && b.cfg.norm_eps == a.cfg.norm_eps &&
                !strcmp(b.chunk_sha256, a.chunk_sha256) && b.chunk_size == 3 && b.epoch == 3,
                "control run configuration JSON round trip", "rc %d: %s", rc, err);
    json_object_set_new(j, "dtype", json_string("q4_0"));
    rc = run_config_from_json(&b, j, err);
    test_result(rc == 0 && b.dtype == DTYPE_Q4_0, "control run configuration dtype q4_0", "rc %d: %s", rc, err);
    json_object_set_new(j, "dtype", json_string("q2_k"));
    rc = run_config_from_json(&b, j, err);
    test_result(rc == MDI_EARG && strstr(err, "unknown dtype \"q2_k\"") &&
                    strstr(err, "accepted: auto, f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q8_k") && !strchr(err, '\n'),
                "control run configuration unknown dtype: one line naming the accepted ones", "rc %d: %s", rc, err);
    json_object_set_new(j, "dtype", json_string("auto"));
    json_object_set_new(j, "kv_dtype", json_string("bf16"));
    rc = run_config_from_json(&b, j, err);
    test_result(rc == MDI_EARG && strstr(err, "kv_dtype"), "control run configuration kv_dtype bf16 refused",
                "rc %d: %s", rc, err);
    json_object_set_new(j, "kv_dtype", json_string("f16"));
    json_object_set_new(j, "wire_dtype", json_string("q8_0"));
    rc = run_config_from_json(&b, j, err);
    test_result(rc == 0 && b.wire_dtype == DTYPE_Q8_0, "control run configuration wire q8_0 with dim 64", "rc %d: %s",
                rc, err);
    json_object_set_new(json_object_get(j, "model_config"), "hidden_size", json_integer(48));
    rc = run_config_from_json(&b, j, err);
    test_result(rc == MDI_EARG && strstr(err, "wire_dtype") && strstr(err, "dim is 48"),
                "control run configuration wire q8_0 with dim 48 refused naming dim", "rc %d: %s", rc, err);
    json_object_set_new(json_object_get(j, "model_config"), "hidden_size", json_integer(64));
    json_object_set_new(j, "wire_dtype", json_string("bf16"));
    json_object_set_new(j, "layers", json_pack("[i, i]", 4, 9));
    rc = run_config_from_json(&b, j, err);
    test_result(rc == MDI_EARG && strstr(err, "layers [4, 9)"), "control run configuration bad layers", "rc %d: %s", rc, err);
    json_object_set_new(j, "layers", json_pack("[I, I]", (json_int_t)1 << 32, ((json_int_t)1 << 32) + 3));
    rc = run_config_from_json(&b, j, err);
    test_result(rc == MDI_EARG && strstr(err, "layers"), "control run configuration layers beyond int refused",
                "rc %d: %s", rc, err);
    json_object_set_new(j, "layers", json_pack("[i, i]", 2, 5));
    json_object_set_new(j, "timeout_s", json_real(1e300));
    rc = run_config_from_json(&b, j, err);
    test_result(rc == MDI_EARG && strstr(err, "timeout_s"), "control run configuration timeout_s 1e300 refused",
                "rc %d: %s", rc, err);
    json_object_set_new(j, "timeout_s", json_real(3));
    /* the crafted /init: 16 and 8 heads of 2^29 + 4 wrap to 64 and 32 in int */
    json_t *mc = json_object_get(j, "model_config");
    json_object_set_new(mc, "num_attention_heads", json_integer(16));
    json_object_set_new(mc, "num_key_value_heads", json_integer(8));
    json_object_set_new(mc, "head_dim", json_integer((1 << 29) + 4));
    rc = run_config_from_json(&b, j, err);
    test_result(rc == MDI_EARG && strstr(err, "model_config") && strstr(err, "head_dim"),
                "control run configuration with int-wrapping head widths refused", "rc %d: %s", rc, err);
    json_object_set_new(j, "chunk_sha256", json_string("xyz"));
    rc = run_config_from_json(&b, j, err);
    test_result(rc == MDI_EARG && strstr(err, "chunk_sha256"), "control run configuration bad hash", "rc %d: %s", rc, err);
    json_decref(j);
}

/* Plays the secondary's main thread for one start/stop cycle. */
static void *main_thread(void *arg)
{
    control_server *s = arg;
    run_config cfg;
    char path[PATH_MAX];
    for (int i = 0; i < 50; i++) {
        control_cmd c = control_wait_command(s, 0.1, &cfg, path);
        if (c == CONTROL_CMD_START) control_set_state(s, CONTROL_RUNNING, NULL);
        if (c == CONTROL_CMD_STOP) {
            control_set_stats(s, json_pack("{s:f}", "compute_s", 1.5));
            control_set_state(s, CONTROL_IDLE, NULL);
            return NULL;
        }
    }
    return NULL;
}

static void test_server(void)
{
    char err[MDI_ERR_LEN], cache[256], good[256], bad[256];
    snprintf(cache, sizeof(cache), "%s/cache", tmp_dir);
    snprintf(good, sizeof(good), "%s/good.bin", tmp_dir);
    snprintf(bad, sizeof(bad), "%s/bad.bin", tmp_dir);
    const char *chunk = "the bytes of a chunk, standing in for a safetensors file";
    write_file(good, chunk);
    write_file(bad, "something else entirely, of another length");
    control_server_opts so = {0, 0, NULL, cache, NULL, NULL, 0};
    control_server *s = control_server_start(&so, err);
    test_result(s != NULL, "control server starts on a free port", "%s", err);
    if (!s) return;
    int port = control_server_port(s);

    test_result(status_is(port, NULL, "state", "idle"), "control GET / says idle", "status not idle");
    int have = -1;
    run_config rc;
    make_config(&rc, chunk);
    rc.node_index = 1;
    int r = control_client_init("127.0.0.1", port, NULL, 2, &rc, &have, err);
    test_result(r == MDI_EFORMAT && strstr(err, "for secondary 1, this is secondary 0"),
                "control /init for another node refused", "rc %d: %s", r, err);
    rc.node_index = 0;
    r = control_client_start("127.0.0.1", port, NULL, 2, err);
    test_result(r == MDI_ESTATE && strstr(err, "before POST /init"), "control /start before /init refused", "rc %d: %s", r, err);
    r = control_client_init("127.0.0.1", port, NULL, 2, &rc, &have, err);
    test_result(r == 0 && have == 0, "control /init asks for the chunk", "rc %d have %d: %s", r, have, err);
    r = control_client_upload_chunk("127.0.0.1", port, NULL, 2, bad, err);
    test_result(r == MDI_EFORMAT && strstr(err, "chunk hash mismatch") && strstr(err, rc.chunk_sha256),
                "control chunk hash mismatch refused", "rc %d: %s", r, err);
    char part[PATH_MAX];
    snprintf(part, sizeof(part), "%s/%s.part", cache, rc.chunk_sha256);
    test_result(!file_exists(part), "control refused chunk leaves no file", "%s exists", part);
    r = control_client_upload_chunk("127.0.0.1", port, NULL, 2, good, err);
    test_result(r == 0 && status_int(port, NULL, "chunks_received") == 1, "control chunk upload verified", "rc %d: %s", r, err);
    char cached[PATH_MAX];
    snprintf(cached, sizeof(cached), "%s/%s.safetensors", cache, rc.chunk_sha256);
    test_result(file_exists(cached), "control chunk cached under its hash", "%s missing", cached);

    pthread_t th;
    pthread_create(&th, NULL, main_thread, s);
    r = control_client_start("127.0.0.1", port, NULL, 2, err);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    test_result(r == 0 && status_is(port, NULL, "state", "running"), "control /start hands over to the main thread",
                "rc %d: %s", r, err);
    r = control_client_init("127.0.0.1", port, NULL, 2, &rc, &have, err);
    test_result(r == MDI_ESTATE && strstr(err, "busy"), "control /init while running refused", "rc %d: %s", r, err);
    json_t *st = NULL;
    r = control_client_stop("127.0.0.1", port, NULL, 5, &st, err);
    pthread_join(th, NULL);
    const char *state = json_string_value(json_object_get(st, "state"));
    double cs = json_number_value(json_object_get(json_object_get(st, "stats"), "compute_s"));
    test_result(r == 0 && state && !strcmp(state, "idle") && cs == 1.5, "control /stop answers once idle, with figures",
                "rc %d state %s: %s", r, state ? state : "?", err);
    json_decref(st);

    r = control_client_init("127.0.0.1", port, NULL, 2, &rc, &have, err);
    test_result(r == 0 && have == 1, "control second run finds the cached chunk", "rc %d have %d: %s", r, have, err);

    /* Garbage on the HTTP port: the node answers or drops it and stays up. */
    int fd = net_connect("127.0.0.1", port, 1, err);
    const char junk[] = "\x16\x03\x01\x02\x00garbage\r\n\r\n\xff\xfe";
    if (fd >= 0) {
        if (write(fd, junk, sizeof(junk)) < 0) {}
        char buf[256];
        net_read_full(fd, buf, sizeof(buf), 1, NULL, NULL, NULL);
        net_close(fd);
    }
    test_result(status_is(port, NULL, "state", "idle"), "control survives garbage on its port", "no status after garbage");
    r = control_client_stop("127.0.0.1", port, NULL, 2, NULL, err);
    control_server_stop(s);

    /* Port in use. */
    int lfd = net_listen(0, 4, err);
    so.port = net_local_port(lfd);
    s = control_server_start(&so, err);
    test_result(!s && strstr(err, "already in use"), "control busy port named", "%s", s ? "started" : err);
    if (s) control_server_stop(s);
    net_close(lfd);

    /* A local chunk is used without any upload. */
    so.port = 0;
    so.local_chunk = good;
    snprintf(cache, sizeof(cache), "%s/cache2", tmp_dir);
    so.cache_dir = cache;
    s = control_server_start(&so, err);
    port = s ? control_server_port(s) : 0;
    r = s ? control_client_init("127.0.0.1", port, NULL, 2, &rc, &have, err) : -1;
    test_result(r == 0 && have == 1, "control --chunk given locally is used", "rc %d have %d: %s", r, have, err);
    if (s) control_server_stop(s);
}

/* A request with a valid X-MDI-Auth for signed_body, carrying body. */
static void raw_signed(char *out, size_t cap, const char *secret, const char *method, const char *path,
                       const char *signed_body, const char *body)
{
    auth_keys k;
    auth_keys_derive(&k, secret, NULL);
    char hex[65], value[AUTH_HTTP_HEADER_LEN], nonce[64];
    auth_digest_hex(signed_body, strlen(signed_body), hex);
    auth_http_sign(&k, method, path, hex, value, nonce);
    snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s: %s\r\nContent-Length: %zu\r\n\r\n%s",
             method, path, AUTH_HTTP_HEADER, value, strlen(body), body);
}

/* Sends a raw request, returns the answer's status code (-1: none). */
static int raw_http(int port, const char *req)
{
    int fd = net_connect("127.0.0.1", port, 2, NULL);
    if (fd < 0) return -1;
    net_write_full(fd, req, strlen(req), 2, NULL, NULL);
    char ans[64] = "";
    size_t got = 0;
    net_read_full(fd, ans, 12, 2, NULL, &got, NULL);
    net_close(fd);
    int code = -1;
    sscanf(ans, "HTTP/1.%*d %d", &code);
    return code;
}

/* Answers one request with an unsigned 200. */
static void *unsigned_server(void *arg)
{
    int fd = net_accept(*(int *)arg, 3, NULL, NULL, NULL);
    if (fd < 0) return NULL;
    char buf[2048];
    ssize_t n = read(fd, buf, sizeof(buf));
    (void)n;
    const char *ans = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n"
                      "Connection: close\r\n\r\n{\"state\": \"idle\"}";
    net_write_full(fd, ans, strlen(ans), 2, NULL, NULL);
    net_close(fd);
    return NULL;
}

static void test_secret(void)
{
    char err[MDI_ERR_LEN], cache[256];
    snprintf(cache, sizeof(cache), "%s/cache3", tmp_dir);
    control_server_opts so = {0, 0, "open sesame", cache, NULL, NULL, 0};
    control_server *s = control_server_start(&so, err);
    if (!s) {
        test_result(0, "control server with secret", "%s", err);
        return;
    }
    int port = control_server_port(s);
    json_t *st = NULL;
    int r = control_client_status("127.0.0.1", port, NULL, 2, &st, err);
    test_result(r == MDI_EAUTH && strstr(err, "401"), "control request without secret gets 401", "rc %d: %s", r, err);
    run_config rc;
    make_config(&rc, "x");
    int have;
    r = control_client_init("127.0.0.1", port, "wrong", 2, &rc, &have, err);
    test_result(r == MDI_EAUTH, "control /init with a wrong secret gets 401", "rc %d: %s", r, err);
    r = control_client_status("127.0.0.1", port, "open sesame", 2, &st, err);
    int init = r == 0 && json_is_false(json_object_get(st, "init"));
    long rejected = r == 0 ? (long)json_integer_value(json_object_get(st, "requests_rejected")) : -1;
    json_decref(st);
    test_result(init && rejected == 2, "control refused requests change nothing", "rc %d, rejected %ld: %s", r, rejected, err);
    char path[256];
    snprintf(path, sizeof(path), "%s/upload.bin", tmp_dir);
    write_file(path, "x");
    r = control_client_upload_chunk("127.0.0.1", port, "wrong", 2, path, err);
    test_result(r == MDI_EAUTH, "control upload with a wrong secret gets 401", "rc %d: %s", r, err);

    /* A signed request replayed byte for byte: refused, changes nothing. */
    char req[1024];
    raw_signed(req, sizeof(req), "open sesame", "POST", "/init", "{}", "{}");
    int code1 = raw_http(port, req), code2 = raw_http(port, req);
    test_result(code1 == 400 && code2 == 401, "control replayed request gets 401", "first %d, replay %d", code1, code2);
    /* A body that is not the one signed. */
    raw_signed(req, sizeof(req), "open sesame", "POST", "/start", "{}", "{ }");
    int code = raw_http(port, req);
    test_result(code == 401, "control body differing from its signed digest gets 401", "got %d", code);

    /* The right secret: the whole exchange, every answer verified. */
    const char *chunk = "the chunk's bytes";
    make_config(&rc, chunk);
    r = control_client_init("127.0.0.1", port, "open sesame", 2, &rc, &have, err);
    write_file(path, chunk);
    if (!r) r = control_client_upload_chunk("127.0.0.1", port, "open sesame", 2, path, err);
    test_result(r == 0 && have == 0, "control init and upload with the right secret", "rc %d: %s", r, err);
    r = control_client_stop("127.0.0.1", port, "open sesame", 2, NULL, err);
    test_result(r == 0, "control stop with the right secret", "rc %d: %s", r, err);
    control_server_stop(s);

    /* A server that answers without a signature (an impostor): refused. */
    int lfd = net_listen(0, 4, err);
    pthread_t th;
    pthread_create(&th, NULL, unsigned_server, &lfd);
    r = control_client_status("127.0.0.1", net_local_port(lfd), "open sesame", 2, &st, err);
    pthread_join(th, NULL);
    net_close(lfd);
    test_result(r == MDI_EAUTH && strstr(err, "not authenticated"), "control unsigned answer refused by the client",
                "rc %d: %s", r, err);
}

/* A /stop that comes before the main thread took the /start (it may be
 * busy): the node must be idle at once and take the next /init, not stay
 * "loading" with no run to end. */
static void test_stop_races_start(void)
{
    char err[MDI_ERR_LEN], cache[256], path[256];
    snprintf(cache, sizeof(cache), "%s/cache4", tmp_dir);
    snprintf(path, sizeof(path), "%s/race.bin", tmp_dir);
    const char *chunk = "a chunk for the race";
    write_file(path, chunk);
    control_server_opts so = {0, 0, NULL, cache, NULL, NULL, 0};
    control_server *s = control_server_start(&so, err);
    if (!s) {
        test_result(0, "control server for the /stop race", "%s", err);
        return;
    }
    int port = control_server_port(s);
    run_config rc;
    make_config(&rc, chunk);
    int have = -1;
    int r = control_client_init("127.0.0.1", port, NULL, 2, &rc, &have, err);
    if (!r) r = control_client_upload_chunk("127.0.0.1", port, NULL, 2, path, err);
    if (!r) r = control_client_start("127.0.0.1", port, NULL, 2, err);
    int loading = status_is(port, NULL, "state", "loading");
    json_t *st = NULL;
    double t0 = time_now();
    if (!r) r = control_client_stop("127.0.0.1", port, NULL, 5, &st, err);
    double dt = time_now() - t0;
    const char *state = json_string_value(json_object_get(st, "state"));
    test_result(r == 0 && loading && state && !strcmp(state, "idle") && dt < 1,
                "control /stop before the main thread took /start: idle at once",
                "rc %d, loading before %d, state after %s, %.1f s: %s", r, loading, state ? state : "?", dt, err);
    json_decref(st);
    run_config got;
    char chunk_path[PATH_MAX];
    control_cmd c = control_wait_command(s, 0.01, &got, chunk_path);
    test_result(c == CONTROL_CMD_NONE, "control the cancelled /start reaches no main thread", "command %d", (int)c);
    r = control_client_init("127.0.0.1", port, NULL, 2, &rc, &have, err);
    test_result(r == 0 && have == 1, "control /init after a cancelled /start", "rc %d: %s", r, err);
    control_server_stop(s);
}

int main(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/mdi_test_control_XXXXXX");
    if (!mkdtemp(tmp_dir)) return 1;
    control_client_global_init();
    test_run_config_json();
    test_server();
    test_secret();
    test_stop_races_start();
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp_dir);
    if (system(cmd) != 0) {}
    return test_failures;
}
