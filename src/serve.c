/*
 * serve: the engine and the HTTP API together, until a signal. See serve.h.
 */
#include "serve.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "cluster_view.h"
#include "engine.h"
#include "generate.h"
#include "report.h"
#include "util.h"
#include "webui.h"

void serve_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int serve_run(const starter_opts *o, const tokenizer *tok, char *err)
{
    engine_config ec;
    generate_engine_config(o, &ec);
    ec.n_slots = o->n_slots;
    ec.queue_max = o->queue_max;
    engine *e = NULL;
    int rc = engine_open(&e, &ec, tok, err);
    if (rc) return rc;
    char name[256];
    report_model_name(o->ckpt, name, sizeof(name));
    /* The web UI (webui.h): the page, and the cluster view with the
     * engine's figures as the starter's. */
    char addr[300];
    snprintf(addr, sizeof(addr), "%s:%d", o->host, o->port);
    cluster_view *cv = cluster_view_open(o->nodes_config, name, engine_model_config(e)->n_layers, addr, 0, err);
    if (!cv) {
        char why[MDI_ERR_LEN];
        engine_close(e, NULL, NULL, why);
        return MDI_EARG;
    }
    api_opts ao = { .host = o->host, .port = o->port, .model_name = name,
                    .extra_routes = webui_routes(cv, webui_self_from_engine, e) };
    api_server *a = api_start(e, tok, &ao, err);
    if (!a) {
        char why[MDI_ERR_LEN];
        engine_close(e, NULL, NULL, why);
        cluster_view_free(cv);
        return MDI_ENET;
    }
    snprintf(addr, sizeof(addr), "%s:%d", o->host, api_port(a));
    cluster_view_set_self_addr(cv, addr);
    engine_stats st;
    engine_get_stats(e, &st);
    printf("serving %s on http://%s:%d (%d node%s, %d slots, queue %d, context %d)\n", name, o->host, api_port(a),
           st.n_nodes, st.n_nodes > 1 ? "s" : "", st.n_slots, st.queue_max, st.max_seq);
    fflush(stdout);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    sigwait(&set, &sig);
    log_info("%s: stopping the service", sig == SIGINT ? "SIGINT" : "SIGTERM");
    api_stop(a);
    cluster_view_free(cv);
    rc = engine_close(e, NULL, NULL, err);
    if (!rc) log_info("stopped");
    return rc;
}
