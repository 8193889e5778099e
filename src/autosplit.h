/*
 * autosplit: the layer split planned from what each node can do, for
 * bin/prepare_model --plan-from CONFIG and bin/starter --auto-split.
 *
 * Each node's capabilities (caps.h: matvec GFLOP/s per dtype, free memory)
 * come from, in this order:
 *   1. the nodes configuration, when the node's entry has a
 *      "capabilities" object (offline planning, or a plan pinned by hand):
 *        "secondary": [{"addr": ..., "capabilities":
 *            {"matvec_gflops": {"q8_0": 9.8}, "mem_available_bytes": 4e9}}]
 *   2. a secondary's GET / "capabilities" (the starter waits for nodes not
 *      up yet, and for a node still measuring, up to the connect timeout);
 *   3. for the starter, a measurement here (prepare_model is run on the
 *      starter's machine), cached in CAPS_STARTER_CACHE.
 * An optional top-level "link_bytes_per_s" is the links' bandwidth
 * (default AUTOSPLIT_LINK_BYTES_S).
 *
 * Each node may use AUTOSPLIT_MEM_SHARE of its free memory for its weights
 * and the KV caches of n_samples samples (default: one per node) of
 * max_seq positions (default: the model's context, at most 4096). The plan
 * (plan.h) is printed with each node's predicted time per token, beside
 * the split prepare_model would make without it.
 */
#ifndef MDI_AUTOSPLIT_H
#define MDI_AUTOSPLIT_H

#include "cli.h"
#include "prepare.h"

#define AUTOSPLIT_LINK_BYTES_S 100e6
#define AUTOSPLIT_MEM_SHARE 0.9
#define AUTOSPLIT_MAX_SEQ 4096

typedef struct {
    const char *nodes_config;  /* path of the nodes configuration */
    double connect_timeout_s;
    int verbose;
    int max_seq;               /* 0: the model's, at most AUTOSPLIT_MAX_SEQ */
    int n_samples;             /* 0: one per node */
    int kv_bytes;              /* bytes per cached value: 4 (f32) or 2 (f16); 0: 4 */
} autosplit_ctx;

/* A prepare_plan_fn: ctx is an autosplit_ctx. */
int autosplit_plan(void *ctx, const prepare_costs *costs, int n_nodes, int *counts, char *err);

/* The starter's --auto-split: re-splits o->ckpt (a prepared folder with
 * chunks for n_nodes, whose manifest names the source it came from, with
 * its --dtype and --embed-dtype) by the plan, reusing every chunk that is
 * already right, so that the run that follows uses the planned split.
 * 0 or an MDI_E* code with one line in err. */
int autosplit_starter(const starter_opts *o, int n_nodes, char *err);

#endif
