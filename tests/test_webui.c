/* test_webui: the page's embedded files (tools/embed.c, webui_find), the
 * live figures over a window (live.h), and the cluster view the service
 * answers at GET /api/cluster (cluster_view.h) against real control servers on
 * 127.0.0.1: standalone, a running secondary with its live figures, one
 * that does not answer, one behind the shared secret, and a spare standing
 * in a failed secondary's place with the spares left listed. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cluster_view.h"
#include "control.h"
#include "http_client.h"
#include "http_server.h"
#include "live.h"
#include "net.h"
#include "test.h"
#include "util.h"
#include "webui.h"

static void test_assets(void)
{
    const webui_asset *root = webui_find("/"), *index = webui_find("/index.html");
    test_result(root && root == index, "webui: / is /index.html", "%p %p", (void *)root, (void *)index);
    test_result(index && !strcmp(index->mime, "text/html; charset=utf-8"), "webui: index.html is text/html",
                "%s", index ? index->mime : "(none)");
    test_result(index && strstr((const char *)index->data, "/app.js") && index->data[index->size] == 0,
                "webui: index.html embedded whole, NUL after it", "%zu bytes", index ? index->size : 0);
    const webui_asset *js = webui_find("/app.js?v=2");
    test_result(js && !strncmp(js->mime, "text/javascript", 15) && strstr((const char *)js->data, "/api/cluster"),
                "webui: app.js with a query string", "%s", js ? js->mime : "(none)");
    const webui_asset *css = webui_find("/style.css");
    test_result(css && !strncmp(css->mime, "text/css", 8), "webui: style.css is text/css", "%s",
                css ? css->mime : "(none)");
    test_result(!webui_find("/nope") && !webui_find("") && !webui_find(NULL) && !webui_find("index.html") &&
                !webui_find("/index.htm") && !webui_find("/index.html/"),
                "webui: unknown paths are not found", "one was found");
    /* Every file of src/webui/ is there, with its size. */
    int all = webui_n_assets >= 3;
    for (int i = 0; i < webui_n_assets; i++) {
        char path[256];
        snprintf(path, sizeof(path), "src/webui%s", webui_assets[i].path);
        FILE *f = fopen(path, "rb");
        long size = -1;
        if (f && fseek(f, 0, SEEK_END) == 0) size = ftell(f);
        if (f) fclose(f);
        if (size != (long)webui_assets[i].size) all = 0;
    }
    test_result(all, "webui: each embedded asset has its file's size", "%d assets", webui_n_assets);
}

static void test_live(void)
{
    live_window w;
    live_window_init(&w);
    double tok_s, busy, span;
    live_window_rates(&w, &tok_s, &busy, &span);
    test_result(tok_s == 0 && busy == 0 && span == 0, "live: nothing before two samples", "%g %g", tok_s, busy);
    /* 100 tokens/s, busy half the time, sampled every 0.05 s for 10 s: the
     * rates span the last LIVE_WINDOW_S seconds at most. */
    for (int i = 0; i <= 200; i++) live_window_push(&w, 1000 + 0.05 * i, 5.0 * i, 0.025 * i);
    live_window_rates(&w, &tok_s, &busy, &span);
    test_result(fabs(tok_s - 100) < 1e-6 && fabs(busy - 0.5) < 1e-6 && span <= LIVE_WINDOW_S && span > 4.85,
                "live: steady rates over the window", "%g tokens/s, busy %g over %g s", tok_s, busy, span);
    /* Then idle for 3 s: the window still holds 2 s of work. */
    for (int i = 1; i <= 30; i++) live_window_push(&w, 1010 + 0.1 * i, 1000, 5);
    live_window_rates(&w, &tok_s, &busy, &span);
    test_result(tok_s > 30 && tok_s < 50 && busy > 0.15 && busy < 0.25, "live: rates fall once work stops",
                "%g tokens/s, busy %g over %g s", tok_s, busy, span);
    for (int i = 1; i <= 60; i++) live_window_push(&w, 1013 + 0.1 * i, 1000, 5);
    live_window_rates(&w, &tok_s, &busy, &span);
    test_result(tok_s == 0 && busy == 0, "live: zero after a window of nothing", "%g %g", tok_s, busy);
    live_window_push(&w, 1020, 1000, 50);
    live_window_rates(&w, &tok_s, &busy, &span);
    test_result(busy == 1, "live: busy clamped to 1", "%g", busy);
}

/* j as compact text for a failure's message (one static buffer). */
static const char *dump(json_t *j)
{
    static char buf[4096];
    size_t n = json_dumpb(j, buf, sizeof(buf) - 1, JSON_COMPACT);
    if (n >= sizeof(buf)) return "(too long to show)";
    buf[n] = 0;
    return buf;
}

static json_t *node_at(json_t *st, int i)
{
    return json_array_get(json_object_get(st, "nodes"), (size_t)i);
}

static int layers_are(json_t *node, int a, int b)
{
    json_t *l = json_object_get(node, "layers");
    return json_array_size(l) == 2 && json_integer_value(json_array_get(l, 0)) == a &&
           json_integer_value(json_array_get(l, 1)) == b;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "(none)";
}

static void test_cluster_standalone(void)
{
    cluster_view *c = cluster_view_new(NULL, "stories260K", 5, "127.0.0.1:0", 0);
    cluster_view_set_self_addr(c, "127.0.0.1:8080");
    json_t *st = cluster_view_json(c, "running", 0, 0, NULL, NULL);
    usleep(150 * 1000);
    json_decref(st);
    st = cluster_view_json(c, "running", 30, 0.075, NULL, NULL);
    json_t *n0 = node_at(st, 0);
    test_result(json_array_size(json_object_get(st, "nodes")) == 1 && !strcmp(str(n0, "role"), "starter") &&
                !strcmp(str(n0, "addr"), "127.0.0.1:8080") && layers_are(n0, 0, 5) &&
                !strcmp(str(n0, "state"), "running") && json_integer_value(json_object_get(n0, "rss_bytes")) > 0 &&
                !strcmp(str(st, "model"), "stories260K"),
                "cluster: standalone is one node with every layer", "%s", dump(st));
    double tok_s = json_number_value(json_object_get(n0, "tokens_per_s"));
    double busy = json_number_value(json_object_get(n0, "busy"));
    test_result(tok_s > 50 && tok_s < 210 && busy > 0.1 && busy < 0.6, "cluster: the starter's live figures",
                "%g tokens/s, busy %g", tok_s, busy);
    json_decref(st);
    cluster_view_free(c);
}

static control_server *start_server(int index, const char *secret)
{
    char err[MDI_ERR_LEN];
    control_server_opts o = {.port = 0, .node_index = index, .secret = secret, .cache_dir = "/tmp/mdi-test-webui"};
    control_server *s = control_server_start(&o, err);
    if (!s) printf("INFO: control_server_start: %s\n", err);
    return s;
}

static void test_cluster_ring(void)
{
    control_server *s0 = start_server(0, NULL), *s1 = start_server(1, NULL);
    if (!s0 || !s1) {
        test_result(0, "cluster: control servers start", "see INFO");
        control_server_stop(s0);
        control_server_stop(s1);
        return;
    }
    control_set_state(s0, CONTROL_RUNNING, NULL);
    control_set_stats(s0, json_pack("{s:I, s:{s:f, s:f, s:f}}", "tokens", (json_int_t)4000, "live", "window_s", 5.0,
                                    "tokens_per_s", 812.5, "busy", 0.25));
    /* A closed port for the third node. */
    int fd = net_listen(0, 1, NULL);
    int closed_port = net_local_port(fd);
    net_close(fd);

    nodes_config nc;
    memset(&nc, 0, sizeof(nc));
    snprintf(nc.starter.addr, sizeof(nc.starter.addr), "127.0.0.1");
    nc.n_secondary = 3;
    int ports[3] = {control_server_port(s0), control_server_port(s1), closed_port};
    for (int i = 0; i < 3; i++) {
        snprintf(nc.secondary[i].addr, sizeof(nc.secondary[i].addr), "127.0.0.1");
        nc.secondary[i].http_port = ports[i];
    }
    nc.starter.n_layers = 2;
    cluster_view *c = cluster_view_new(&nc, "stories260K", 5, "127.0.0.1:8080", 1);
    json_t *st = cluster_view_json(c, "running", 0, 0, NULL, NULL);
    json_t *n0 = node_at(st, 0), *n1 = node_at(st, 1), *n2 = node_at(st, 2), *n3 = node_at(st, 3);
    char want_addr[64];
    snprintf(want_addr, sizeof(want_addr), "127.0.0.1:%d", ports[0]);
    test_result(json_array_size(json_object_get(st, "nodes")) == 4 && layers_are(n0, 0, 2) &&
                !strcmp(str(n1, "role"), "secondary") && json_integer_value(json_object_get(n1, "index")) == 0 &&
                !strcmp(str(n1, "addr"), want_addr) && !strcmp(str(n1, "state"), "running") &&
                json_number_value(json_object_get(n1, "tokens_per_s")) == 812.5 &&
                json_number_value(json_object_get(n1, "busy")) == 0.25 &&
                json_integer_value(json_object_get(n1, "rss_bytes")) > 0,
                "cluster: a running secondary with its live figures", "%s", dump(st));
    test_result(!strcmp(str(n2, "state"), "idle") && json_number_value(json_object_get(n2, "tokens_per_s")) == 0,
                "cluster: an idle secondary", "%s", dump(n2));
    test_result(!strcmp(str(n3, "state"), "unreachable") && strstr(str(n3, "error"), "cannot connect"),
                "cluster: a secondary that does not answer, with the reason", "%s", dump(n3));
    json_decref(st);
    cluster_view_free(c);
    control_server_stop(s0);
    control_server_stop(s1);
}

/* After a failover: spare 0 stands in place 1 (whose secondary is gone),
 * spare 1 is left, spare 2 took a place once and is gone too. */
static void test_cluster_spares(void)
{
    control_server *s0 = start_server(0, NULL), *sp0 = start_server(1, NULL), *sp1 = start_server(1, NULL);
    if (!s0 || !sp0 || !sp1) {
        test_result(0, "cluster: control servers for the spares start", "see INFO");
        control_server_stop(s0);
        control_server_stop(sp0);
        control_server_stop(sp1);
        return;
    }
    int fd = net_listen(0, 1, NULL);
    int gone_port = net_local_port(fd);
    net_close(fd);
    nodes_config nc;
    memset(&nc, 0, sizeof(nc));
    nc.n_secondary = 2;
    nc.n_spare = 3;
    int sec_ports[2] = {control_server_port(s0), gone_port};
    int spare_ports[3] = {control_server_port(sp0), control_server_port(sp1), gone_port};
    for (int i = 0; i < 2; i++) {
        snprintf(nc.secondary[i].addr, sizeof(nc.secondary[i].addr), "127.0.0.1");
        nc.secondary[i].http_port = sec_ports[i];
    }
    for (int j = 0; j < 3; j++) {
        snprintf(nc.spare[j].addr, sizeof(nc.spare[j].addr), "127.0.0.1");
        nc.spare[j].http_port = spare_ports[j];
    }
    cluster_view *c = cluster_view_new(&nc, "m", 5, "127.0.0.1:8080", 1);
    int in_place[NODES_MAX_SECONDARY] = {0, 1}, spare_used[NODES_MAX_SPARE] = {1, 0, 1};
    json_t *st = cluster_view_json(c, "running", 0, 0, in_place, spare_used);
    json_t *p0 = node_at(st, 1), *p1 = node_at(st, 2), *spares = json_object_get(st, "spares");
    char sp0_addr[64], sp1_addr[64], gone_addr[64];
    snprintf(sp0_addr, sizeof(sp0_addr), "127.0.0.1:%d", spare_ports[0]);
    snprintf(sp1_addr, sizeof(sp1_addr), "127.0.0.1:%d", spare_ports[1]);
    snprintf(gone_addr, sizeof(gone_addr), "127.0.0.1:%d", gone_port);
    test_result(json_array_size(json_object_get(st, "nodes")) == 3 && !strcmp(str(p0, "name"), "secondary 0") &&
                json_is_null(json_object_get(p0, "spare")) && json_is_null(json_object_get(p0, "in_place_of")),
                "cluster: a place with its configured secondary", "%s", dump(st));
    test_result(json_integer_value(json_object_get(p1, "index")) == 1 && !strcmp(str(p1, "addr"), sp0_addr) &&
                !strcmp(str(p1, "name"), "spare 0 (in place of secondary 1)") &&
                json_integer_value(json_object_get(p1, "spare")) == 0 &&
                !strcmp(str(p1, "in_place_of"), gone_addr) && !strcmp(str(p1, "state"), "idle"),
                "cluster: a spare in a failed secondary's place, its address and state", "%s", dump(p1));
    json_t *s1 = json_array_get(spares, 0), *s2 = json_array_get(spares, 1);
    test_result(json_array_size(spares) == 2 && json_integer_value(json_object_get(s1, "index")) == 1 &&
                !strcmp(str(s1, "role"), "spare") && !strcmp(str(s1, "addr"), sp1_addr) &&
                !strcmp(str(s1, "state"), "idle") && json_is_false(json_object_get(s1, "used")) &&
                json_integer_value(json_object_get(s2, "index")) == 2 &&
                !strcmp(str(s2, "state"), "unreachable") && json_is_true(json_object_get(s2, "used")),
                "cluster: the spares in no place listed, idle or unreachable, used once or not", "%s", dump(spares));
    json_decref(st);
    /* a spare index out of this configuration's range reads as none */
    in_place[0] = 9;
    in_place[1] = 0;
    st = cluster_view_json(c, "running", 0, 0, in_place, NULL);
    test_result(!strcmp(str(node_at(st, 1), "name"), "secondary 0") && !strcmp(str(node_at(st, 2), "addr"), gone_addr)
                && json_array_size(json_object_get(st, "spares")) == 3,
                "cluster: an out-of-range spare index in a place reads as the configured secondary", "%s", dump(st));
    json_decref(st);
    cluster_view_free(c);
    control_server_stop(s0);
    control_server_stop(sp0);
    control_server_stop(sp1);
}

static void test_cluster_secret(void)
{
    control_server *s = start_server(0, "s3cr3t");
    if (!s) {
        test_result(0, "cluster: control server with a secret starts", "see INFO");
        return;
    }
    nodes_config nc;
    memset(&nc, 0, sizeof(nc));
    nc.n_secondary = 1;
    snprintf(nc.secondary[0].addr, sizeof(nc.secondary[0].addr), "127.0.0.1");
    nc.secondary[0].http_port = control_server_port(s);
    snprintf(nc.secret, sizeof(nc.secret), "s3cr3t");
    cluster_view *c = cluster_view_new(&nc, "m", 5, "127.0.0.1:8080", 1);
    json_t *st = cluster_view_json(c, "running", 0, 0, NULL, NULL);
    test_result(!strcmp(str(node_at(st, 1), "state"), "idle") && json_is_true(json_object_get(st, "secret")),
                "cluster: the starter signs its status requests", "%s", dump(st));
    json_decref(st);
    cluster_view_free(c);
    snprintf(nc.secret, sizeof(nc.secret), "wrong");
    c = cluster_view_new(&nc, "m", 5, "127.0.0.1:8080", 1);
    st = cluster_view_json(c, "running", 0, 0, NULL, NULL);
    test_result(!strcmp(str(node_at(st, 1), "state"), "unreachable") && strstr(str(node_at(st, 1), "error"), "401"),
                "cluster: a wrong secret is refused", "%s", dump(st));
    json_decref(st);
    cluster_view_free(c);
    /* The same read from a nodes configuration file. */
    char path[] = "/tmp/mdi-test-webui-XXXXXX", err[MDI_ERR_LEN];
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f) {
        fprintf(f, "{\"secret\": \"s3cr3t\", \"nodes\": {\"starter\": {\"addr\": \"127.0.0.1\", \"inference\": "
                   "{\"port_in\": 5088}}, \"secondary\": [{\"addr\": \"127.0.0.1\", \"communication\": {\"port\": %d}, "
                   "\"inference\": {\"port_in\": 5090}}]}}", control_server_port(s));
        fclose(f);
    }
    c = cluster_view_open(path, "m", 5, "127.0.0.1:8080", 1, err);
    st = c ? cluster_view_json(c, "running", 0, 0, NULL, NULL) : NULL;
    test_result(st && !strcmp(str(node_at(st, 1), "state"), "idle"), "cluster: from a nodes configuration file",
                "%s", c ? dump(st) : err);
    json_decref(st);
    cluster_view_free(c);
    unlink(path);
    test_result(!cluster_view_open("/nonexistent/nodes.json", "m", 5, "", 1, err) && strstr(err, "nonexistent"),
                "cluster: a missing nodes configuration is named", "%s", err);
    control_server_stop(s);
}

/* ---- the routes on a real server ---- */

typedef struct {
    char *data;
    size_t len;
    char type[128];
} fetched;

static size_t fetched_body(const char *p, size_t n, void *ud)
{
    fetched *f = ud;
    char *d = realloc(f->data, f->len + n + 1);
    if (!d) return 0;
    memcpy(d + f->len, p, n);
    f->data = d;
    f->len += n;
    d[f->len] = 0;
    return n;
}

static size_t fetched_header(const char *p, size_t n, void *ud)
{
    fetched *f = ud;
    if (n > 14 && !strncasecmp(p, "Content-Type: ", 14)) {
        size_t k = n - 14;
        while (k && (p[14 + k - 1] == '\r' || p[14 + k - 1] == '\n')) k--;
        snprintf(f->type, sizeof(f->type), "%.*s", (int)k, p + 14);
    }
    return n;
}

static long fetch(int port, const char *path, fetched *f)
{
    char url[256], msg[HTTP_CLIENT_MSG_LEN];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    memset(f, 0, sizeof(*f));
    http_client_request rq = {.url = url, .connect_timeout_s = 2, .timeout_s = 5, .no_proxy = 1,
                              .on_header = fetched_header, .on_body = fetched_body, .ud = f};
    long status = 0;
    if (http_client_perform(&rq, &status, msg) != 0) printf("INFO: GET %s: %s\n", path, msg);
    return status;
}

static void fake_self(void *ud, webui_self *out)
{
    const double *counters = ud;
    out->state = "running";
    out->tokens = counters[0];
    out->busy_s = counters[1];
    out->n_slots = 4;
    out->slots_busy = 1;
    out->queue_max = 16;
    out->failovers = 1;
    out->failover_lost_s = 0.5;
    snprintf(out->failover_last, sizeof(out->failover_last), "secondary 1 (127.0.0.1:2) replaced by spare 0: 0.500 s lost");
}

static void test_routes(void)
{
    double counters[2] = {0, 0};
    cluster_view *c = cluster_view_new(NULL, "stories260K", 5, "127.0.0.1:1", 0);
    http_server_opts o = {.name = "test web UI", .host = "127.0.0.1", .routes = webui_routes(c, fake_self, counters)};
    char err[MDI_ERR_LEN];
    http_server *s = http_server_start(&o, err);
    if (!s) {
        test_result(0, "routes: server starts", "%s", err);
        cluster_view_free(c);
        return;
    }
    int port = http_server_port(s);
    fetched f;
    long st = fetch(port, "/", &f);
    const webui_asset *index = webui_find("/index.html");
    test_result(st == 200 && f.len == index->size && !memcmp(f.data, index->data, f.len) &&
                !strcmp(f.type, index->mime), "routes: GET / is index.html", "%ld, %zu bytes, %s", st, f.len, f.type);
    free(f.data);
    for (int i = 0; i < webui_n_assets; i++) {
        const webui_asset *a = &webui_assets[i];
        st = fetch(port, a->path, &f);
        char name[160];
        snprintf(name, sizeof(name), "routes: GET %s, %s", a->path, a->mime);
        test_result(st == 200 && f.len == a->size && !memcmp(f.data, a->data, f.len) && !strcmp(f.type, a->mime),
                    name, "%ld, %zu bytes, %s", st, f.len, f.type);
        free(f.data);
    }
    st = fetch(port, "/nope.js", &f);
    test_result(st == 404, "routes: an unknown page is 404", "%ld", st);
    free(f.data);
    fetch(port, "/api/cluster", &f);
    free(f.data);
    usleep(150 * 1000);
    counters[0] = 60;
    counters[1] = 0.075;
    st = fetch(port, "/api/cluster", &f);
    json_t *j = f.data ? json_loads(f.data, 0, NULL) : NULL;
    json_t *n0 = node_at(j, 0);
    double tok_s = json_number_value(json_object_get(n0, "tokens_per_s"));
    test_result(st == 200 && !strncmp(f.type, "application/json", 16) && layers_are(n0, 0, 5) && tok_s > 100 &&
                json_integer_value(json_object_get(json_object_get(j, "slots"), "n_slots")) == 4,
                "routes: GET /api/cluster with the starter's figures", "%ld %s: %s", st, f.type, f.data);
    json_t *fo = json_object_get(j, "failovers");
    const char *last = json_string_value(json_object_get(fo, "last"));
    test_result(json_integer_value(json_object_get(fo, "count")) == 1 &&
                json_number_value(json_object_get(fo, "lost_s")) == 0.5 && last && strstr(last, "secondary 1 "),
                "routes: GET /api/cluster with the failovers (count, time lost, the last one's node)", "%s", f.data);
    json_decref(j);
    free(f.data);
    http_server_stop(s);
    cluster_view_free(c);
}

int main(void)
{
    control_client_global_init();
    test_assets();
    test_live();
    test_cluster_standalone();
    test_cluster_ring();
    test_cluster_secret();
    test_cluster_spares();
    test_routes();
    return test_failures;
}
