/*
 * webui: the browser page the starter's service serves at GET /: a chat
 * that streams tokens and a live view of the cluster. Its files (src/webui/:
 * index.html, app.js, style.css) are built into the binary by tools/embed.c
 * (build/webui_assets.c), so the page works with nothing fetched from
 * anywhere but the service itself:
 *
 *     GET /                    index.html
 *     GET /app.js, /style.css  the assets by name
 *     GET /api/cluster         cluster.h (JSON the page polls)
 *     POST /v1/chat/completions  the chat, streamed (api.h)
 *
 * Ownership: everything returned is static and lives as long as the
 * program.
 */
#ifndef MDI_WEBUI_H
#define MDI_WEBUI_H

#include <stddef.h>

#include "cluster.h"
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

/* The page's routes for the service (api_opts.extra_routes), in
 * webui_routes.c: GET / and each asset by name, and GET /api/cluster,
 * answered by c (borrowed; it must outlive the service) with the engine's
 * figures as the starter's own. One service per process: a second call
 * replaces the first's cluster. Static table, ends with a NULL path. */
const http_route *webui_routes(cluster *c);

/* The table tools/embed.c writes (build/webui_assets.c). */
extern const webui_asset webui_assets[];
extern const int webui_n_assets;

#endif
