/*
 * serve: the engine and the HTTP API together, until a signal. See serve.h.
 */
#include "serve.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "engine.h"
#include "generate.h"
#include "report.h"
#include "util.h"

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
    api_opts ao = { .host = o->host, .port = o->port, .model_name = name };
    api_server *a = api_start(e, tok, &ao, err);
    if (!a) {
        char why[MDI_ERR_LEN];
        engine_close(e, NULL, NULL, why);
        return MDI_ENET;
    }
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
    rc = engine_close(e, NULL, NULL, err);
    if (!rc) log_info("stopped");
    return rc;
}
