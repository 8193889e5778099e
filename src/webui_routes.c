/*
 * webui_routes: the page and GET /api/cluster as routes of a server
 * (webui.h). Apart from webui.c, which only looks assets up.
 */
#include "webui.h"

/* One service per process (webui.h), set before it starts. */
static cluster_view *webui_cluster;
static webui_self_fn webui_self_get;
static void *webui_self_ud;

static int webui_handle_asset(http_request *req)
{
    const webui_asset *a = webui_find(http_request_path(req));
    if (!a) return http_reply_error(req, 404, "%s: no such page", http_request_path(req));
    return http_reply_text(req, 200, a->mime, (const char *)a->data, a->size);
}

static int webui_handle_cluster(http_request *req)
{
    if (!webui_cluster) return http_reply_error(req, 503, "no cluster view in this service");
    webui_self me = {.state = "running"};
    if (webui_self_get) webui_self_get(webui_self_ud, &me);
    json_t *j = cluster_view_json(webui_cluster, me.state, me.tokens, me.busy_s, me.have_places ? me.in_place : NULL,
                                  me.have_places ? me.spare_used : NULL);
    json_object_set_new(j, "slots", json_pack("{s:i, s:i, s:i, s:i}", "n_slots", me.n_slots, "busy", me.slots_busy,
                                              "queue_depth", me.queue_depth, "queue_max", me.queue_max));
    json_object_set_new(j, "failovers", json_pack("{s:i, s:f, s:s?}", "count", me.failovers, "lost_s",
                                                  me.failover_lost_s, "last",
                                                  me.failover_last[0] ? me.failover_last : NULL));
    return http_reply_json(req, 200, j);
}

/* "/", "/api/cluster" and one per asset, then the end. */
#define WEBUI_ROUTES_MAX 32
static http_route webui_route_table[WEBUI_ROUTES_MAX + 3];

const http_route *webui_routes(cluster_view *c, webui_self_fn self, void *ud)
{
    webui_cluster = c;
    webui_self_get = self;
    webui_self_ud = ud;
    int n = 0;
    webui_route_table[n++] = (http_route){.method = "GET", .path = "/", .handler = webui_handle_asset};
    webui_route_table[n++] = (http_route){.method = "GET", .path = "/api/cluster", .handler = webui_handle_cluster};
    for (int i = 0; i < webui_n_assets && i < WEBUI_ROUTES_MAX; i++)
        webui_route_table[n++] = (http_route){.method = "GET", .path = webui_assets[i].path,
                                              .handler = webui_handle_asset};
    webui_route_table[n] = (http_route){0};
    return webui_route_table;
}
