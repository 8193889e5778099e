/*
 * cluster_view: what the service answers at GET /api/cluster, the live view of
 * every node that the web UI polls (webui.h):
 *
 *   {"model": "stories260K", "n_layers": 5, "secret": true|false,
 *    "nodes": [
 *      {"role": "starter", "index": 0, "addr": "127.0.0.1:8080",
 *       "layers": [0, 2], "state": "running", "rss_bytes": 123456,
 *       "tokens_per_s": 812.5, "busy": 0.41, "error": null},
 *      {"role": "secondary", "index": 0, "name": "secondary 0",
 *       "addr": "10.0.0.3:8089", "spare": null, "in_place_of": null,
 *       "layers": [2, 4], "state": "running", "rss_bytes": 98765,
 *       "tokens_per_s": 800.0, "busy": 0.38, "error": null},
 *      {"role": "secondary", "index": 1,
 *       "name": "spare 0 (in place of secondary 1)", "addr": "10.0.0.9:8089",
 *       "spare": 0, "in_place_of": "10.0.0.4:8089", "layers": [4, 5], ...}],
 *    "spares": [
 *      {"role": "spare", "index": 1, "addr": "10.0.0.10:8089", "used": false,
 *       "layers": null, "state": "idle", "rss_bytes": 4567, ...}]}
 *
 * The service's routes (webui_routes.c) add "slots" {n_slots, busy,
 * queue_depth, queue_max} and "failovers" {count, lost_s, last: null or
 * "secondary 1 (addr:port) replaced by spare 0: 0.412 s lost"}.
 *
 * nodes holds the starter, then one entry per place of the ring (index: the
 * secondary whose layers it runs) with the node standing there now: the
 * configured secondary, or a spare that took its place in a failover
 * (spare: its index in the configuration's "spare" list, in_place_of: the
 * failed secondary's address). spares lists the spares standing in no
 * place, what is left to fail over to (used: it took a place once and
 * failed in turn, no longer offered); empty without spares or standalone.
 *
 * layers is [first, end) (null when not known yet); tokens_per_s counts the
 * rows run through the node's layers (prompt and generated tokens) and busy
 * the fraction of time its compute thread worked, both over the last
 * LIVE_WINDOW_S seconds (live.h). The starter gives its own counters; each
 * secondary is asked its status (control.h's GET /, signed with the
 * cluster's secret when there is one, so that the browser never needs the
 * secret), one at a time, each bounded by timeout_s; so is each spare. A
 * node that does not answer shows state "unreachable" and the reason in
 * error.
 *
 * Threads: cluster_view_json may be called from several HTTP handlers at
 * once.
 */
#ifndef MDI_CLUSTER_VIEW_H
#define MDI_CLUSTER_VIEW_H

#include <jansson.h>
#include "nodes_config.h"

typedef struct cluster_view cluster_view;

/* nc (copied; NULL: standalone), model_name and self_addr (the service's
 * host:port, copied) describe the cluster; n_layers is the model's.
 * timeout_s bounds each secondary's answer (0: 1 s). NULL when out of
 * memory. */
cluster_view *cluster_view_new(const nodes_config *nc, const char *model_name, int n_layers, const char *self_addr,
                     double timeout_s);
/* The same with the nodes configuration read from nodes_config_path
 * (NULL: standalone). NULL with the reason in err. */
cluster_view *cluster_view_open(const char *nodes_config_path, const char *model_name, int n_layers,
                                const char *self_addr, double timeout_s, char *err);
/* The service's address once known (its port may have been 0: any free). */
void cluster_view_set_self_addr(cluster_view *c, const char *self_addr);
/* The status (new reference). state, tokens and busy_s are the starter's
 * now: its state ("running", "failed"), the rows run through its layers so
 * far and the seconds it spent computing so far. in_place and spare_used
 * (cluster_get_places, cluster.h; NULL: every place holds its configured
 * secondary, no spare used): in_place[i] 0 or 1 + the spare standing in
 * place i, spare_used[j] spare j took a place once. */
json_t *cluster_view_json(cluster_view *c, const char *state, double tokens, double busy_s, const int *in_place,
                          const int *spare_used);
void cluster_view_free(cluster_view *c);

#endif
