/*
 * plan: the layer split of a ring by what each node can do.
 *
 * A ring runs one token of every sample through every node in turn, and
 * with a sample in flight per node each node works all the time: tokens
 * per second are set by the slowest node (stage). A node's time per token
 * is its compute plus the activation it sends on:
 *
 *   stage_s[i] = (sum of layer_flops over its layers
 *                 + starter_flops when i is the starter) / flops_per_s[i]
 *              + act_bytes / link_bytes_per_s
 *
 * and it must hold its layers (weights and KV caches) in memory:
 *
 *   sum of layer_bytes over its layers (+ starter_bytes) <= mem_bytes[i]
 *
 * plan_split picks contiguous ranges, in ring order (node 0 the starter,
 * then the secondaries as configured), that minimise the largest stage_s
 * subject to memory: exactly, by dynamic programming over (node, first
 * layer not yet given), O(n_nodes x n_layers^2). Every secondary gets at
 * least one layer (a node with none would only forward frames, at the
 * cost of a hop); the starter may take none and only embed, sample and
 * run the head, as prepare_model's --layers allows. Among plans with the
 * same bottleneck, the first found wins: the one whose earlier nodes hold
 * fewer layers.
 *
 * All figures are per token of decode: layer_flops is 2 x the weights of
 * the layer's matrices, the starter's extra is the head (2 x vocab x dim)
 * and the final norm; flops_per_s is the node's measured matvec
 * throughput for the weights' dtype (caps.h).
 */
#ifndef MDI_PLAN_H
#define MDI_PLAN_H

#define PLAN_MAX_NODES 32
#define PLAN_NAME_LEN 160

typedef struct {
    double flops_per_s;            /* > 0 */
    double mem_bytes;              /* what the node may use */
    char name[PLAN_NAME_LEN];      /* "secondary 1 (10.0.0.3:8089)", for messages */
} plan_node;

typedef struct {
    int n_layers;
    const double *layer_flops;     /* (n_layers,) per token; borrowed */
    const double *layer_bytes;     /* (n_layers,) weights + KV caches; borrowed */
    double starter_flops;          /* head and final norm, per token */
    double starter_bytes;          /* embedding, final norm, head */
    double act_bytes;              /* one activation row on the wire */
    double link_bytes_per_s;       /* 0: transfers not counted */
} plan_model;

typedef struct {
    int n_nodes;
    int counts[PLAN_MAX_NODES];    /* layers of each node, starter first */
    double stage_s[PLAN_MAX_NODES];/* predicted time per token of each node */
    double bytes[PLAN_MAX_NODES];  /* memory each node needs */
    double bottleneck_s;           /* max of stage_s */
} plan_result;

/* Plans the split. Returns 0, or MDI_EARG (no node, more nodes than
 * PLAN_MAX_NODES or layers + 1, a node without throughput) or MDI_ENOMEM
 * when no split fits, with one line in err naming the node that lacks
 * memory ("secondary 1 (...): not enough memory: one layer needs 24.0 MiB,
 * it has 16.0 MiB"). */
int plan_split(const plan_model *m, const plan_node *nodes, int n_nodes, plan_result *out, char *err);

/* The time per token and memory of node i holding layers [a, b): what
 * plan_split minimises, for callers that weigh other splits (the even
 * one) on the same scale. */
double plan_stage_s(const plan_model *m, const plan_node *nodes, int i, int a, int b);
double plan_stage_bytes(const plan_model *m, int i, int a, int b);

/* One line per node to the log: its layers, memory and predicted time. */
void plan_print(const plan_result *r, const plan_node *nodes, const char *title);

#endif
