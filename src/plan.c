/* plan: the layer split by capability; see plan.h. */
#include "plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

double plan_stage_s(const plan_model *m, const plan_node *nodes, int i, int a, int b)
{
    double flops = i == 0 ? m->starter_flops : 0;
    for (int l = a; l < b; l++) flops += m->layer_flops[l];
    double t = flops / nodes[i].flops_per_s;
    if (m->link_bytes_per_s > 0) t += m->act_bytes / m->link_bytes_per_s;
    return t;
}

double plan_stage_bytes(const plan_model *m, int i, int a, int b)
{
    double bytes = i == 0 ? m->starter_bytes : 0;
    for (int l = a; l < b; l++) bytes += m->layer_bytes[l];
    return bytes;
}

static double plan_mib(double b) { return b / (1024.0 * 1024.0); }

/* No split fits: name the node that lacks memory. */
static int plan_explain(const plan_model *m, const plan_node *nodes, int n, char *err)
{
    if (m->starter_bytes > nodes[0].mem_bytes)
        return mdi_fail(err, MDI_ENOMEM, "%s: not enough memory: the embedding and head need %.1f MiB, it has %.1f MiB",
                        nodes[0].name, plan_mib(m->starter_bytes), plan_mib(nodes[0].mem_bytes));
    double smallest = INFINITY, total = m->starter_bytes, have = 0;
    for (int l = 0; l < m->n_layers; l++) {
        if (m->layer_bytes[l] < smallest) smallest = m->layer_bytes[l];
        total += m->layer_bytes[l];
    }
    int least = 0;
    for (int i = 0; i < n; i++) {
        have += nodes[i].mem_bytes;
        if (i > 0 && nodes[i].mem_bytes < smallest)
            return mdi_fail(err, MDI_ENOMEM, "%s: not enough memory: one layer needs at least %.1f MiB, it has %.1f MiB",
                            nodes[i].name, plan_mib(smallest), plan_mib(nodes[i].mem_bytes));
        if (nodes[i].mem_bytes < nodes[least].mem_bytes) least = i;
    }
    return mdi_fail(err, MDI_ENOMEM, "%s: not enough memory: it has %.1f MiB, the least of the %d nodes, and "
                    "no contiguous split of the %.1f MiB the model needs fits (%.1f MiB in all)",
                    nodes[least].name, plan_mib(nodes[least].mem_bytes), n, plan_mib(total), plan_mib(have));
}

int plan_split(const plan_model *m, const plan_node *nodes, int n, plan_result *out, char *err)
{
    int L = m->n_layers;
    memset(out, 0, sizeof(*out));
    if (n < 1 || n > PLAN_MAX_NODES)
        return mdi_fail(err, MDI_EARG, "plan: %d nodes (1..%d)", n, PLAN_MAX_NODES);
    if (n - 1 > L)
        return mdi_fail(err, MDI_EARG, "plan: %d secondaries for %d layers: each needs at least one layer", n - 1, L);
    for (int i = 0; i < n; i++)
        if (!(nodes[i].flops_per_s > 0))
            return mdi_fail(err, MDI_EARG, "%s: no throughput measured", nodes[i].name);
    /* best[k][e]: least bottleneck of nodes 0..k-1 holding layers [0, e);
     * from[k][e]: where node k-1's range starts. */
    size_t cells = (size_t)(n + 1) * (size_t)(L + 1);
    double *best = malloc(cells * sizeof(double));
    int *from = malloc(cells * sizeof(int));
    if (!best || !from) {
        free(best);
        free(from);
        return mdi_fail(err, MDI_ENOMEM, "plan: out of memory");
    }
#define AT(k, e) ((size_t)(k) * (size_t)(L + 1) + (size_t)(e))
    for (size_t c = 0; c < cells; c++) {
        best[c] = INFINITY;
        from[c] = -1;
    }
    best[AT(0, 0)] = 0;
    for (int k = 0; k < n; k++) {
        int min_layers = k == 0 ? 0 : 1;
        for (int s = 0; s <= L; s++) {
            if (best[AT(k, s)] == INFINITY) continue;
            for (int e = s + min_layers; e <= L; e++) {
                if (plan_stage_bytes(m, k, s, e) > nodes[k].mem_bytes) break; /* grows with e */
                double t = plan_stage_s(m, nodes, k, s, e);
                double b = t > best[AT(k, s)] ? t : best[AT(k, s)];
                if (b < best[AT(k + 1, e)]) {
                    best[AT(k + 1, e)] = b;
                    from[AT(k + 1, e)] = s;
                }
            }
        }
    }
    int rc = 0;
    if (best[AT(n, L)] == INFINITY) {
        rc = plan_explain(m, nodes, n, err);
    } else {
        out->n_nodes = n;
        out->bottleneck_s = best[AT(n, L)];
        for (int k = n, e = L; k > 0; k--) {
            int s = from[AT(k, e)];
            out->counts[k - 1] = e - s;
            out->stage_s[k - 1] = plan_stage_s(m, nodes, k - 1, s, e);
            out->bytes[k - 1] = plan_stage_bytes(m, k - 1, s, e);
            e = s;
        }
    }
#undef AT
    free(best);
    free(from);
    return rc;
}

void plan_print(const plan_result *r, const plan_node *nodes, const char *title)
{
    log_info("%s: slowest node %.3f ms per token (%.1f tokens/s at most)", title, r->bottleneck_s * 1e3,
             r->bottleneck_s > 0 ? 1.0 / r->bottleneck_s : 0.0);
    for (int i = 0, a = 0; i < r->n_nodes; a += r->counts[i], i++)
        log_info("  %-36s layers [%d, %d) %2d: %8.3f ms per token, %8.1f MiB of %.1f MiB, %.2f GFLOP/s", nodes[i].name,
                 a, a + r->counts[i], r->counts[i], r->stage_s[i] * 1e3, plan_mib(r->bytes[i]),
                 plan_mib(nodes[i].mem_bytes), nodes[i].flops_per_s / 1e9);
}
