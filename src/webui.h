/*
 * webui: the browser page the starter's service serves at GET /: a chat
 * that streams tokens and a live view of the cluster. Its files (src/webui/:
 * index.html, app.js, style.css) are built into the binary by tools/embed.c
 * (build/webui_assets.c), so the page works with nothing fetched from
 * anywhere but the service itself:
 *
 *     GET /                    index.html
 *     GET /app.js, /style.css  the assets by name
 *     GET /api/cluster         cluster_view.h (JSON the page polls)
 *     POST /v1/chat/completions  the chat, streamed (api.h)
 *
 * Ownership: everything returned is static and lives as long as the
 * program.
 */
#ifndef MDI_WEBUI_H
#define MDI_WEBUI_H

#include <stddef.h>

#include "cluster_view.h"
#include "http_server.h"

typedef struct {
    const char *path;                 /* "/index.html" */
    const char *mime;                 /* "text/html; charset=utf-8" */
    const unsigned char *data;        /* followed by a NUL not counted */
    size_t size;
} webui_asset;

/* The asset served at path ("/" is "/index.html"; a query string after '?'
 * is ignored), or NULL. */
const webui_asset *webui_find(const char *path);

/* What the starter says of itself in the cluster view, asked at each
 * GET /api/cluster: its state ("running", "failed"), the rows run through
 * its layers so far and the seconds it computed so far (growing counters;
 * cluster_view.h turns them into rates), its slots, and the failovers
 * (node failures recovered from: how many, the seconds they cost, the last
 * one's node and time lost, "" when none), and, when have_places, which
 * node stands in each place of the ring (cluster_view_json's in_place and
 * spare_used). */
typedef struct {
    const char *state;
    double tokens, busy_s;
    int n_slots, slots_busy, queue_depth, queue_max;
    int failovers;
    double failover_lost_s;
    char failover_last[200];
    int have_places;
    int in_place[NODES_MAX_SECONDARY], spare_used[NODES_MAX_SPARE];
} webui_self;
typedef void (*webui_self_fn)(void *ud, webui_self *out);

/* The page's routes for a server (api_opts.extra_routes), in
 * webui_routes.c: GET / and each asset by its exact path, and
 * GET /api/cluster answered by c with self(ud) as the starter's figures.
 * c and ud are borrowed and must outlive the server. One service per
 * process: a second call replaces the first's. Static table, ends with a
 * NULL path. */
const http_route *webui_routes(cluster_view *c, webui_self_fn self, void *ud);
/* A webui_self_fn for the engine (engine.h): ud is the engine. */
void webui_self_from_engine(void *engine, webui_self *out);

/* The table tools/embed.c writes (build/webui_assets.c). */
extern const webui_asset webui_assets[];
extern const int webui_n_assets;

#endif
