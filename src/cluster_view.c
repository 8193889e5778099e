/*
 * cluster_view: the starter gathers every node's live figures (cluster_view.h).
 */
#include "cluster_view.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "live.h"
#include "util.h"

struct cluster_view {
    nodes_config nc;
    int standalone;
    char model_name[128];
    char self_addr[CONTROL_HOST_LEN + 8];
    int n_layers;
    double timeout_s;
    pthread_mutex_t mu;        /* guards self and self_addr */
    live_window self;
};

cluster_view *cluster_view_new(const nodes_config *nc, const char *model_name, int n_layers, const char *self_addr,
                     double timeout_s)
{
    cluster_view *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    if (nc) c->nc = *nc;
    c->standalone = !nc || nc->n_secondary == 0;
    snprintf(c->model_name, sizeof(c->model_name), "%s", model_name ? model_name : "");
    snprintf(c->self_addr, sizeof(c->self_addr), "%s", self_addr ? self_addr : "");
    c->n_layers = n_layers;
    c->timeout_s = timeout_s > 0 ? timeout_s : 1.0;
    pthread_mutex_init(&c->mu, NULL);
    live_window_init(&c->self);
    control_client_global_init();
    return c;
}

cluster_view *cluster_view_open(const char *nodes_config_path, const char *model_name, int n_layers,
                                const char *self_addr, double timeout_s, char *err)
{
    nodes_config *nc = NULL;
    if (nodes_config_path) {
        if (!(nc = malloc(sizeof(*nc)))) {
            mdi_fail(err, MDI_ENOMEM, "out of memory");
            return NULL;
        }
        if (nodes_config_load(nc, nodes_config_path, err) != 0) {
            free(nc);
            return NULL;
        }
    }
    cluster_view *c = cluster_view_new(nc, model_name, n_layers, self_addr, timeout_s);
    free(nc);
    if (!c) mdi_fail(err, MDI_ENOMEM, "out of memory");
    return c;
}

void cluster_view_free(cluster_view *c)
{
    if (!c) return;
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void cluster_view_set_self_addr(cluster_view *c, const char *self_addr)
{
    pthread_mutex_lock(&c->mu);
    snprintf(c->self_addr, sizeof(c->self_addr), "%s", self_addr ? self_addr : "");
    pthread_mutex_unlock(&c->mu);
}

static json_t *cluster_view_layers(int begin, int end)
{
    return begin >= 0 && end > begin ? json_pack("[i, i]", begin, end) : json_null();
}

static void cluster_view_addr(const node_entry *ne, char *out, size_t cap)
{
    snprintf(out, cap, "%s:%d", ne->addr, ne->http_port);
}

/* The node ne as its GET / describes it, into o: layers, state, rss_bytes,
 * tokens_per_s, busy, error. */
static json_t *cluster_view_probe(cluster_view *c, const node_entry *ne, json_t *o)
{
    char err[MDI_ERR_LEN];
    json_t *st = NULL;
    if (control_client_status(ne->addr, ne->http_port, c->nc.secret, c->timeout_s, &st, err) != 0) {
        json_object_set_new(o, "layers", json_null());
        json_object_set_new(o, "state", json_string("unreachable"));
        json_object_set_new(o, "rss_bytes", json_null());
        json_object_set_new(o, "tokens_per_s", json_real(0));
        json_object_set_new(o, "busy", json_real(0));
        json_object_set_new(o, "error", json_string(err));
        return o;
    }
    json_t *layers = json_object_get(st, "layers");
    json_object_set(o, "layers", json_is_array(layers) ? layers : json_null());
    const char *state = json_string_value(json_object_get(st, "state"));
    json_object_set_new(o, "state", json_string(state ? state : "unknown"));
    json_t *rss = json_object_get(st, "rss_bytes");
    json_object_set(o, "rss_bytes", json_is_integer(rss) ? rss : json_null());
    /* The figures of a run that ended stay in the status; live only
     * while it runs. */
    json_t *live = json_object_get(json_object_get(st, "stats"), "live");
    int running = state && !strcmp(state, "running");
    json_object_set_new(o, "tokens_per_s",
                        json_real(running ? json_number_value(json_object_get(live, "tokens_per_s")) : 0));
    json_object_set_new(o, "busy", json_real(running ? json_number_value(json_object_get(live, "busy")) : 0));
    json_t *last_error = json_object_get(st, "last_error");
    json_object_set(o, "error", json_is_string(last_error) ? last_error : json_null());
    json_decref(st);
    return o;
}

/* Place i of the ring: the configured secondary i, or spare in_place - 1
 * standing in its place since a failover. */
static json_t *cluster_view_secondary(cluster_view *c, int i, int in_place)
{
    const node_entry *ne = in_place ? &c->nc.spare[in_place - 1] : &c->nc.secondary[i];
    char addr[NODES_ADDR_LEN + 8], orig[NODES_ADDR_LEN + 8], name[96];
    cluster_view_addr(ne, addr, sizeof(addr));
    cluster_view_addr(&c->nc.secondary[i], orig, sizeof(orig));
    if (in_place) snprintf(name, sizeof(name), "spare %d (in place of secondary %d)", in_place - 1, i);
    else snprintf(name, sizeof(name), "secondary %d", i);
    json_t *o = json_pack("{s:s, s:i, s:s, s:s}", "role", "secondary", "index", i, "name", name, "addr", addr);
    json_object_set_new(o, "spare", in_place ? json_integer(in_place - 1) : json_null());
    json_object_set_new(o, "in_place_of", in_place ? json_string(orig) : json_null());
    return cluster_view_probe(c, ne, o);
}

/* Spare j, standing in no place: what is left to fail over to (used: it
 * took a place once and failed in turn, no longer offered). */
static json_t *cluster_view_spare(cluster_view *c, int j, int used)
{
    char addr[NODES_ADDR_LEN + 8];
    cluster_view_addr(&c->nc.spare[j], addr, sizeof(addr));
    json_t *o = json_pack("{s:s, s:i, s:s, s:b}", "role", "spare", "index", j, "addr", addr, "used", used);
    return cluster_view_probe(c, &c->nc.spare[j], o);
}

json_t *cluster_view_json(cluster_view *c, const char *state, double tokens, double busy_s, const int *in_place,
                          const int *spare_used)
{
    double tok_s, busy;
    char self_addr[sizeof(c->self_addr)];
    pthread_mutex_lock(&c->mu);
    live_window_push(&c->self, time_now(), tokens, busy_s);
    live_window_rates(&c->self, &tok_s, &busy, NULL);
    memcpy(self_addr, c->self_addr, sizeof(self_addr));
    pthread_mutex_unlock(&c->mu);

    json_t *nodes = json_array();
    json_t *self = json_pack("{s:s, s:i, s:s, s:s, s:I, s:f, s:f, s:n}", "role", "starter", "index", 0, "addr",
                             self_addr, "state", state ? state : "unknown", "rss_bytes",
                             (json_int_t)mem_current_rss(), "tokens_per_s", tok_s, "busy", busy, "error");
    json_array_append_new(nodes, self);
    int self_end = c->standalone ? c->n_layers : c->nc.starter.n_layers > 0 ? c->nc.starter.n_layers : -1;
    /* which spare stands where (indices out of this configuration's
     * range read as none) */
    int place[NODES_MAX_SECONDARY] = {0}, in_a_place[NODES_MAX_SPARE] = {0};
    for (int i = 0; in_place && i < c->nc.n_secondary; i++)
        if (in_place[i] > 0 && in_place[i] <= c->nc.n_spare) {
            place[i] = in_place[i];
            in_a_place[in_place[i] - 1] = 1;
        }
    for (int i = 0; !c->standalone && i < c->nc.n_secondary; i++) {
        json_t *o = cluster_view_secondary(c, i, place[i]);
        /* The starter's layers end where the first secondary's begin. */
        json_t *first = json_array_get(json_object_get(o, "layers"), 0);
        if (i == 0 && json_is_integer(first)) self_end = (int)json_integer_value(first);
        json_array_append_new(nodes, o);
    }
    json_object_set_new(self, "layers", cluster_view_layers(0, self_end));
    json_t *spares = json_array();
    for (int j = 0; !c->standalone && j < c->nc.n_spare; j++)
        if (!in_a_place[j]) json_array_append_new(spares, cluster_view_spare(c, j, spare_used && spare_used[j]));
    return json_pack("{s:s, s:i, s:b, s:o, s:o}", "model", c->model_name, "n_layers", c->n_layers, "secret",
                     c->nc.secret[0] != 0, "nodes", nodes, "spares", spares);
}
