/* test_plan: the capability planner against brute force on random device
 * profiles; memory limits always respected; infeasible cases refused with
 * one line naming the node that lacks memory. */
#include <math.h>

#include "plan.h"
#include "test.h"
#include "util.h"

static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* Every composition: counts[0] >= 0, the others >= 1. Returns the least
 * bottleneck of the feasible ones, INFINITY when none is. */
static double brute(const plan_model *m, const plan_node *nodes, int n, int k, int a, double worst)
{
    if (k == n - 1) {
        if (k > 0 && a >= m->n_layers) return INFINITY;
        if (plan_stage_bytes(m, k, a, m->n_layers) > nodes[k].mem_bytes) return INFINITY;
        double t = plan_stage_s(m, nodes, k, a, m->n_layers);
        return t > worst ? t : worst;
    }
    double best = INFINITY;
    for (int e = a + (k ? 1 : 0); e <= m->n_layers - (n - 1 - k); e++) {
        if (plan_stage_bytes(m, k, a, e) > nodes[k].mem_bytes) break;
        double t = plan_stage_s(m, nodes, k, a, e);
        double b = brute(m, nodes, n, k + 1, e, t > worst ? t : worst);
        if (b < best) best = b;
    }
    return best;
}

int main(void)
{
    char err[MDI_ERR_LEN];
    /* a fixed case: three equal nodes, six equal layers, no head: 2, 2, 2 */
    double flops[64], bytes[64];
    for (int l = 0; l < 64; l++) { flops[l] = 1e9; bytes[l] = 1 << 20; }
    plan_node nodes[PLAN_MAX_NODES];
    for (int i = 0; i < PLAN_MAX_NODES; i++) {
        nodes[i].flops_per_s = 1e10;
        nodes[i].mem_bytes = 1e12;
        snprintf(nodes[i].name, sizeof(nodes[i].name), i ? "secondary %d (h:%d)" : "starter (h)", i - 1, 8000 + i);
    }
    plan_model m = {6, flops, bytes, 0, 0, 0, 0};
    plan_result r;
    int rc = plan_split(&m, nodes, 3, &r, err);
    test_result(rc == 0 && r.counts[0] == 2 && r.counts[1] == 2 && r.counts[2] == 2 && fabs(r.bottleneck_s - 0.2) < 1e-12,
                "plan equal nodes: even split", "rc %d: %d %d %d, %g s", rc, r.counts[0], r.counts[1], r.counts[2],
                r.bottleneck_s);
    /* a node four times slower gets fewer layers; the head weighs on the starter */
    nodes[1].flops_per_s = 0.25e10;
    m.n_layers = 12;
    m.starter_flops = 2e9;
    rc = plan_split(&m, nodes, 3, &r, err);
    test_result(rc == 0 && r.counts[1] < r.counts[2] && r.counts[0] < r.counts[2], "plan slow node gets fewer layers",
                "rc %d: %d %d %d", rc, r.counts[0], r.counts[1], r.counts[2]);
    nodes[1].flops_per_s = 1e10;
    /* the starter may take none; secondaries at least one */
    m.n_layers = 2;
    m.starter_flops = 5e9;
    rc = plan_split(&m, nodes, 3, &r, err);
    test_result(rc == 0 && r.counts[0] == 0 && r.counts[1] == 1 && r.counts[2] == 1, "plan starter may take no layer",
                "rc %d: %d %d %d", rc, r.counts[0], r.counts[1], r.counts[2]);
    rc = plan_split(&m, nodes, 4, &r, err);
    test_result(rc == MDI_EARG, "plan more secondaries than layers refused", "rc %d", rc);
    /* infeasible: named */
    m.n_layers = 6;
    m.starter_flops = 0;
    nodes[2].mem_bytes = 0.5 * (1 << 20);
    rc = plan_split(&m, nodes, 3, &r, err);
    test_result(rc == MDI_ENOMEM && strstr(err, "secondary 1 (h:8002): not enough memory") && !strchr(err, '\n'),
                "plan a secondary without room for one layer is named", "rc %d: %s", rc, err);
    nodes[2].mem_bytes = 1e12;
    m.starter_bytes = 1e13;
    rc = plan_split(&m, nodes, 3, &r, err);
    test_result(rc == MDI_ENOMEM && strstr(err, "starter (h): not enough memory"), "plan a starter without room for "
                "the head is named", "rc %d: %s", rc, err);
    m.starter_bytes = 0;
    for (int i = 0; i < 3; i++) nodes[i].mem_bytes = 1.5 * (1 << 20);
    nodes[1].mem_bytes = 1.2 * (1 << 20);
    rc = plan_split(&m, nodes, 3, &r, err);
    test_result(rc == MDI_ENOMEM && strstr(err, "secondary 0 (h:8001): not enough memory"),
                "plan not enough memory in all: the node with the least is named", "rc %d: %s", rc, err);

    /* random profiles against brute force */
    int n_cases = 600, agree = 0, feasible = 0, infeasible_named = 0, mem_ok = 1, counts_ok = 1;
    char first_bad[MDI_ERR_LEN] = "";
    for (int c = 0; c < n_cases; c++) {
        int n = 1 + (int)(urand() * 5);
        int L = (n - 1) + (int)(urand() * 9) + (n == 1 ? 1 : 0);
        if (L < 1) L = 1;
        for (int l = 0; l < L; l++) {
            flops[l] = 1e8 * (0.5 + urand() * 2);
            bytes[l] = (1 << 20) * (0.5 + urand() * 2);
        }
        plan_model pm = {L, flops, bytes, urand() < 0.5 ? 0 : 1e8 * urand() * 4, (1 << 20) * urand() * 2,
                         urand() < 0.5 ? 0 : 4096 * urand(), urand() < 0.5 ? 0 : 1e8 * (0.1 + urand())};
        double total = pm.starter_bytes;
        for (int l = 0; l < L; l++) total += bytes[l];
        for (int i = 0; i < n; i++) {
            nodes[i].flops_per_s = 1e9 * (0.1 + urand() * 4);
            /* from scarce to ample, so that some cases cannot fit */
            nodes[i].mem_bytes = total * (0.15 + urand() * (urand() < 0.3 ? 0.6 : 1.5));
        }
        double want = brute(&pm, nodes, n, 0, 0, 0);
        rc = plan_split(&pm, nodes, n, &r, err);
        if (want == INFINITY) {
            int named = rc == MDI_ENOMEM && !strchr(err, '\n') && (strstr(err, "starter (") || strstr(err, "secondary "));
            infeasible_named += named;
            agree += named;
            if (!named && !first_bad[0]) snprintf(first_bad, sizeof(first_bad), "case %d: infeasible, rc %d: %.200s", c, rc, err);
            continue;
        }
        feasible++;
        int ok = rc == 0 && fabs(r.bottleneck_s - want) <= 1e-12 * want;
        int sum = 0;
        for (int i = 0, a = 0; rc == 0 && i < n; a += r.counts[i], i++) {
            sum += r.counts[i];
            if (r.counts[i] < (i ? 1 : 0)) counts_ok = 0;
            if (plan_stage_bytes(&pm, i, a, a + r.counts[i]) > nodes[i].mem_bytes) mem_ok = 0;
        }
        if (rc == 0 && sum != L) counts_ok = 0;
        agree += ok;
        if (!ok && !first_bad[0])
            snprintf(first_bad, sizeof(first_bad), "case %d (%d nodes, %d layers): rc %d, %g s, brute force %g s", c, n, L,
                     rc, r.bottleneck_s, want);
    }
    test_result(agree == n_cases, "plan equals brute force on random profiles", "%d of %d agree; %s", agree, n_cases,
                first_bad);
    test_result(feasible > 100 && n_cases - feasible > 50, "plan random cases cover feasible and infeasible",
                "%d feasible of %d", feasible, n_cases);
    test_result(mem_ok, "plan every node's memory limit respected", "a plan exceeds a node's memory");
    test_result(counts_ok, "plan counts cover every layer, each secondary at least one", "bad counts");
    test_result(infeasible_named == n_cases - feasible, "plan infeasible cases refused naming a node", "%d of %d",
                infeasible_named, n_cases - feasible);
    return test_failures;
}
