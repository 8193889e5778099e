/*
 * webui: looks the page's embedded files up by path (webui.h).
 */
#include "webui.h"

#include <string.h>

const webui_asset *webui_find(const char *path)
{
    if (!path || path[0] != '/') return NULL;
    size_t n = strcspn(path, "?#");
    if (n == 1) {
        path = "/index.html";
        n = strlen(path);
    }
    for (int i = 0; i < webui_n_assets; i++)
        if (strlen(webui_assets[i].path) == n && !memcmp(webui_assets[i].path, path, n))
            return &webui_assets[i];
    return NULL;
}
