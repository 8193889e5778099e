/*
 * webui_engine: the starter's own figures for the cluster view, from the
 * engine (webui.h). Apart so that the page's routes link without it.
 */
#include <stdio.h>

#include "engine.h"
#include "webui.h"

void webui_self_from_engine(void *ud, webui_self *out)
{
    engine_stats st;
    engine_get_stats(ud, &st);
    out->state = st.failed ? "failed" : "running";
    /* The starter runs every prompt token and every generated one
     * through its layers. */
    out->tokens = (double)st.prompt_tokens + (double)st.tokens_generated;
    out->busy_s = st.compute_s;
    out->n_slots = st.n_slots;
    out->slots_busy = st.slots_busy;
    out->queue_depth = st.queue_depth;
    out->queue_max = st.queue_max;
    out->failovers = st.failovers;
    out->failover_lost_s = st.failover_lost_s;
    snprintf(out->failover_last, sizeof(out->failover_last), "%s", st.failover_last);
    out->have_places = engine_get_places(ud, out->in_place, out->spare_used) == 0;
}
