/* startup: the starter waits for its secondaries; see startup.h. */
#include "startup.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "control.h"
#include "util.h"

static void startup_sleep(double s)
{
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void startup_drop(json_t **statuses, int n)
{
    if (!statuses) return;
    for (int i = 0; i < n; i++) {
        json_decref(statuses[i]);
        statuses[i] = NULL;
    }
}

int startup_wait_nodes(const nodes_config *nc, double timeout_s, int verbose, json_t **statuses, char *err)
{
    int n = nc->n_secondary, up[NODES_MAX_SECONDARY] = {0}, n_up = 0, announced = 0;
    char why[NODES_MAX_SECONDARY][MDI_ERR_LEN], name[160];
    double t0 = time_now(), deadline = t0 + (timeout_s > 0 ? timeout_s : 0), backoff = STARTUP_BACKOFF_FIRST_S;
    if (statuses)
        for (int i = 0; i < n; i++) statuses[i] = NULL;
    control_client_global_init();
    for (;;) {
        for (int i = 0; i < n; i++) {
            if (up[i]) continue;
            const node_entry *e = &nc->secondary[i];
            json_t *st = NULL;
            int rc = control_client_status(e->addr, e->http_port, nc->secret, STARTUP_PROBE_S, &st, why[i]);
            if (rc == 0) {
                up[i] = 1;
                n_up++;
                if (statuses) statuses[i] = st;
                else json_decref(st);
                if (verbose && announced) {
                    nodes_config_describe(nc, i, name, sizeof(name));
                    log_info("%s answers (after %.1f s)", name, time_now() - t0);
                }
                continue;
            }
            if (rc != MDI_ENET && rc != MDI_ETIMEOUT) {
                nodes_config_describe(nc, i, name, sizeof(name));
                rc = mdi_fail(err, rc, "%s: %s", name, why[i]);
                startup_drop(statuses, n);
                return rc;
            }
        }
        if (n_up == n) return 0;
        if (time_now() >= deadline) break;
        if (!announced) {
            char list[1024];
            size_t k = 0;
            for (int i = 0; i < n && k < sizeof(list) - 1; i++) {
                if (up[i]) continue;
                nodes_config_describe(nc, i, name, sizeof(name));
                k += (size_t)snprintf(list + k, sizeof(list) - k, "%s%s", k ? ", " : "", name);
            }
            log_info("waiting up to %g s for %s", timeout_s, list);
            announced = 1;
        }
        double left = deadline - time_now();
        startup_sleep(backoff < left ? backoff : left);
        backoff = backoff * 2 > STARTUP_BACKOFF_MAX_S ? STARTUP_BACKOFF_MAX_S : backoff * 2;
    }
    char list[MDI_ERR_LEN];
    size_t k = 0;
    int first = -1;
    for (int i = 0; i < n && k < sizeof(list) - 1; i++) {
        if (up[i]) continue;
        if (first < 0) first = i;
        nodes_config_describe(nc, i, name, sizeof(name));
        k += (size_t)snprintf(list + k, sizeof(list) - k, "%s%s", k ? ", " : "", name);
    }
    startup_drop(statuses, n);
    return mdi_fail(err, MDI_ETIMEOUT, "%s: unreachable: no answer within %g s (%.200s); is it started? (--connect-timeout)",
                    list, timeout_s, why[first]);
}
