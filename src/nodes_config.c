/*
 * nodes_config: parse and validate the nodes configuration (see the header
 * for the shape).
 */
#include "nodes_config.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

/* Reads obj[key] as a port. required: absence is an error. */
static int nc_port(json_t *obj, const char *key, int required, int *out,
                   const char *fname, const char *where, char *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (!required) { *out = 0; return 0; }
        return mdi_fail(err, MDI_EARG, "%s: %s.%s: missing (a port number 1..65535)", fname, where, key);
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535)
        return mdi_fail(err, MDI_EARG, "%s: %s.%s: expected an integer port in 1..65535", fname, where, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int nc_string(json_t *obj, const char *key, int required, char *out, size_t cap,
                     const char *fname, const char *where, char *err)
{
    json_t *v = json_object_get(obj, key);
    out[0] = 0;
    if (!v) {
        if (!required) return 0;
        return mdi_fail(err, MDI_EARG, "%s: %s.%s: missing (a string)", fname, where, key);
    }
    if (!json_is_string(v) || json_string_length(v) == 0)
        return mdi_fail(err, MDI_EARG, "%s: %s.%s: expected a non-empty string", fname, where, key);
    if (json_string_length(v) >= cap)
        return mdi_fail(err, MDI_EARG, "%s: %s.%s: longer than %zu characters", fname, where, key, cap - 1);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int nc_count(json_t *obj, const char *key, int *out, const char *fname,
                    const char *where, char *err)
{
    json_t *v = json_object_get(obj, key);
    *out = 0;
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 4096)
        return mdi_fail(err, MDI_EARG, "%s: %s.%s: expected a positive integer", fname, where, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int nc_node(node_entry *n, json_t *obj, int is_starter, const char *fname,
                   const char *where, char *err)
{
    char sub[96];
    int rc;
    memset(n, 0, sizeof(*n));
    if (!json_is_object(obj))
        return mdi_fail(err, MDI_EARG, "%s: %s: expected an object", fname, where);
    if ((rc = nc_string(obj, "addr", 1, n->addr, sizeof(n->addr), fname, where, err))) return rc;

    json_t *comm = json_object_get(obj, "communication");
    snprintf(sub, sizeof(sub), "%s.communication", where);
    if (comm && !json_is_object(comm))
        return mdi_fail(err, MDI_EARG, "%s: %s: expected an object", fname, sub);
    if (!comm && !is_starter)
        return mdi_fail(err, MDI_EARG, "%s: %s: missing (an object with \"port\", the HTTP control port)",
                        fname, sub);
    if (comm) {
        if ((rc = nc_port(comm, "port", !is_starter, &n->http_port, fname, sub, err))) return rc;
        if (!is_starter &&
            (rc = nc_string(comm, "starter_addr", 0, n->starter_addr, sizeof(n->starter_addr),
                            fname, sub, err)))
            return rc;
    }

    json_t *inf = json_object_get(obj, "inference");
    snprintf(sub, sizeof(sub), "%s.inference", where);
    if (!inf) return mdi_fail(err, MDI_EARG, "%s: %s: missing (an object with \"port_in\")", fname, sub);
    if (!json_is_object(inf)) return mdi_fail(err, MDI_EARG, "%s: %s: expected an object", fname, sub);
    if ((rc = nc_port(inf, "port_in", 1, &n->port_in, fname, sub, err))) return rc;
    if ((rc = nc_port(inf, "port_out", 0, &n->port_out, fname, sub, err))) return rc;

    if ((rc = nc_count(obj, "n_layers", &n->n_layers, fname, where, err))) return rc;
    if ((rc = nc_count(obj, "n_threads", &n->n_threads, fname, where, err))) return rc;
    return 0;
}

static void nc_name(const nodes_config *c, int i, char *out, size_t cap)
{
    if (i < 0) snprintf(out, cap, "nodes.starter");
    else snprintf(out, cap, "nodes.secondary[%d]", i);
    (void)c;
}

/* Two listening ports on the same host would make the second node fail
 * at start with a less helpful message; catch it here. */
static int nc_check_ports(const nodes_config *c, const char *fname, char *err)
{
    int n = nodes_config_n_nodes(c);
    for (int a = -1; a < n - 1; a++) {
        const node_entry *na = a < 0 ? &c->starter : &c->secondary[a];
        int pa[2] = {na->port_in, na->http_port};
        if (pa[0] == pa[1]) {
            char wa[32];
            nc_name(c, a, wa, sizeof(wa));
            return mdi_fail(err, MDI_EARG, "%s: %s: communication.port and inference.port_in are both %d",
                            fname, wa, pa[0]);
        }
        for (int b = a + 1; b < n - 1; b++) {
            const node_entry *nb = &c->secondary[b];
            if (strcmp(na->addr, nb->addr) != 0) continue;
            int pb[2] = {nb->port_in, nb->http_port};
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++)
                    if (pa[i] && pa[i] == pb[j]) {
                        char wa[32], wb[32];
                        nc_name(c, a, wa, sizeof(wa));
                        nc_name(c, b, wb, sizeof(wb));
                        return mdi_fail(err, MDI_EARG, "%s: %s and %s both use port %d on %s",
                                        fname, wa, wb, pa[i], na->addr);
                    }
        }
    }
    return 0;
}

int nodes_config_parse(nodes_config *c, json_t *root, const char *fname, char *err)
{
    int rc;
    memset(c, 0, sizeof(*c));
    if (!json_is_object(root)) return mdi_fail(err, MDI_EARG, "%s: expected a JSON object", fname);
    json_t *nodes = json_object_get(root, "nodes");
    if (!nodes || !json_is_object(nodes))
        return mdi_fail(err, MDI_EARG, "%s: nodes: missing or not an object", fname);

    json_t *secret = json_object_get(root, "secret");
    if (!secret) secret = json_object_get(nodes, "secret");
    if (secret) {
        if (!json_is_string(secret))
            return mdi_fail(err, MDI_EARG, "%s: secret: expected a string", fname);
        if (json_string_length(secret) > NODES_SECRET_LEN)
            return mdi_fail(err, MDI_EARG, "%s: secret: longer than %d characters", fname, NODES_SECRET_LEN);
        memcpy(c->secret, json_string_value(secret), json_string_length(secret) + 1);
    }

    json_t *st = json_object_get(nodes, "starter");
    if (!st) return mdi_fail(err, MDI_EARG, "%s: nodes.starter: missing", fname);
    if ((rc = nc_node(&c->starter, st, 1, fname, "nodes.starter", err))) return rc;

    json_t *sec = json_object_get(nodes, "secondary");
    if (sec && !json_is_array(sec))
        return mdi_fail(err, MDI_EARG, "%s: nodes.secondary: expected an array", fname);
    size_t n = sec ? json_array_size(sec) : 0;
    if (n > NODES_MAX_SECONDARY)
        return mdi_fail(err, MDI_EARG, "%s: nodes.secondary: %zu entries, at most %d supported",
                        fname, n, NODES_MAX_SECONDARY);
    for (size_t i = 0; i < n; i++) {
        char where[48];
        snprintf(where, sizeof(where), "nodes.secondary[%zu]", i);
        if ((rc = nc_node(&c->secondary[i], json_array_get(sec, i), 0, fname, where, err))) return rc;
    }
    c->n_secondary = (int)n;

    /* Per-node layer counts are all or nothing. */
    int with_layers = (c->starter.n_layers > 0);
    for (int i = 0; i < c->n_secondary; i++) with_layers += (c->secondary[i].n_layers > 0);
    if (with_layers != 0 && with_layers != nodes_config_n_nodes(c))
        return mdi_fail(err, MDI_EARG, "%s: n_layers: given for %d of %d nodes; give it for every node or none",
                        fname, with_layers, nodes_config_n_nodes(c));
    return nc_check_ports(c, fname, err);
}

int nodes_config_load(nodes_config *c, const char *path, char *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        if (!file_exists(path)) return mdi_fail(err, MDI_EIO, "%s: no such file", path);
        return mdi_fail(err, MDI_EFORMAT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    }
    int rc = nodes_config_parse(c, root, path, err);
    json_decref(root);
    return rc;
}

void nodes_config_describe(const nodes_config *c, int i, char *out, size_t cap)
{
    if (i < 0) snprintf(out, cap, "starter (%s)", c->starter.addr);
    else snprintf(out, cap, "secondary %d (%s:%d)", i, c->secondary[i].addr, c->secondary[i].http_port);
}
