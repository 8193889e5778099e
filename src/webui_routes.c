/*
 * webui_routes: the page and GET /api/cluster as routes of the service
 * (webui.h). Apart from webui.c so that what only looks assets up links
 * without the engine.
 */
#include "webui.h"

#include "api.h"
#include "engine.h"

/* One service per process (webui.h): its cluster, set before it starts. */
static cluster *webui_cluster;

static int webui_handle_asset(http_request *req)
{
    const webui_asset *a = webui_find(http_request_path(req));
    if (!a) return http_reply_error(req, 404, "%s: no such page", http_request_path(req));
    return http_reply_text(req, 200, a->mime, (const char *)a->data, a->size);
}

static int webui_handle_cluster(http_request *req)
{
    if (!webui_cluster) return http_reply_error(req, 503, "no cluster view in this service");
    engine_stats st;
    engine_get_stats(api_engine(api_from_request(req)), &st);
    json_t *j = cluster_status_json(webui_cluster, st.failed ? "failed" : "running",
                                    (double)st.prompt_tokens + (double)st.tokens_generated, st.compute_s);
    json_t *nodes = json_object_get(j, "nodes");
    json_object_set_new(json_array_get(nodes, 0), "slots_busy", json_integer(st.slots_busy));
    json_object_set_new(j, "slots", json_pack("{s:i, s:i, s:i, s:i}", "n_slots", st.n_slots, "busy", st.slots_busy,
                                              "queue_depth", st.queue_depth, "queue_max", st.queue_max));
    return http_reply_json(req, 200, j);
}

/* "/", "/api/cluster" and one per asset, then the end. */
#define WEBUI_ROUTES_MAX 32
static http_route webui_route_table[WEBUI_ROUTES_MAX + 3];

const http_route *webui_routes(cluster *c)
{
    webui_cluster = c;
    int n = 0;
    webui_route_table[n++] = (http_route){.method = "GET", .path = "/", .handler = webui_handle_asset};
    webui_route_table[n++] = (http_route){.method = "GET", .path = "/api/cluster", .handler = webui_handle_cluster};
    for (int i = 0; i < webui_n_assets && i < WEBUI_ROUTES_MAX; i++)
        webui_route_table[n++] = (http_route){.method = "GET", .path = webui_assets[i].path,
                                              .handler = webui_handle_asset};
    webui_route_table[n] = (http_route){0};
    return webui_route_table;
}
