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

/* Records the keys of obj that are not in known (NULL-terminated). */
static void nc_note_unused(nodes_config *c, json_t *obj, const char *const *known, const char *where)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        int k = 0;
        while (known[k] && strcmp(known[k], key)) k++;
        if (known[k]) continue;
        int i = 0;
        while (i < c->n_unused && strcmp(c->unused[i].key, key)) i++;
        if (i < c->n_unused) { c->unused[i].count++; continue; }
        if (c->n_unused == NODES_MAX_UNUSED) continue;
        snprintf(c->unused[i].key, sizeof(c->unused[i].key), "%s", key);
        snprintf(c->unused[i].where, sizeof(c->unused[i].where), "%s", where);
        c->unused[i].count = 1;
        c->n_unused++;
    }
    (void)v;
}

static const char *const nc_node_keys[] = {"addr", "communication", "inference", "n_layers", "n_threads",
                                           "capabilities", NULL};
static const char *const nc_comm_keys[] = {"port", "starter_addr", NULL};
static const char *const nc_inf_keys[] = {"port_in", "port_out", NULL};

static void nc_note_node(nodes_config *c, json_t *obj, const char *where, const char *const *extra)
{
    char sub[96];
    const char *keys[8];
    int k = 0;
    for (int i = 0; nc_node_keys[i]; i++) keys[k++] = nc_node_keys[i];
    for (int i = 0; extra && extra[i]; i++) keys[k++] = extra[i];
    keys[k] = NULL;
    nc_note_unused(c, obj, keys, where);
    json_t *comm = json_object_get(obj, "communication");
    snprintf(sub, sizeof(sub), "%s.communication", where);
    if (json_is_object(comm)) nc_note_unused(c, comm, nc_comm_keys, sub);
    json_t *inf = json_object_get(obj, "inference");
    snprintf(sub, sizeof(sub), "%s.inference", where);
    if (json_is_object(inf)) nc_note_unused(c, inf, nc_inf_keys, sub);
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

    static const char *const root_keys[] = {"nodes", "secret", "link_bytes_per_s", NULL};
    static const char *const nodes_keys[] = {"starter", "secondary", "spare", "secret", NULL};
    nc_note_unused(c, root, root_keys, "top level");
    nc_note_unused(c, nodes, nodes_keys, "nodes");

    json_t *st = json_object_get(nodes, "starter");
    if (!st) return mdi_fail(err, MDI_EARG, "%s: nodes.starter: missing", fname);
    if ((rc = nc_node(&c->starter, st, 1, fname, "nodes.starter", err))) return rc;
    nc_note_node(c, st, "nodes.starter", NULL);

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
        nc_note_node(c, json_array_get(sec, i), where, NULL);
    }
    c->n_secondary = (int)n;

    json_t *sp = json_object_get(nodes, "spare");
    if (sp && !json_is_array(sp)) return mdi_fail(err, MDI_EARG, "%s: nodes.spare: expected an array", fname);
    size_t ns = sp ? json_array_size(sp) : 0;
    if (ns > NODES_MAX_SPARE)
        return mdi_fail(err, MDI_EARG, "%s: nodes.spare: %zu entries, at most %d supported", fname, ns, NODES_MAX_SPARE);
    for (size_t i = 0; i < ns; i++) {
        char where[48];
        snprintf(where, sizeof(where), "nodes.spare[%zu]", i);
        if ((rc = nc_node(&c->spare[i], json_array_get(sp, i), 0, fname, where, err))) return rc;
        nc_note_node(c, json_array_get(sp, i), where, NULL);
    }
    c->n_spare = (int)ns;

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

/* MDI-LLM's per-node file: the node's own entry at the top level. */
static int nc_parse_own(nodes_config *c, json_t *root, int index, const char *fname, char *err)
{
    memset(c, 0, sizeof(*c));
    if (!json_is_object(root)) return mdi_fail(err, MDI_EARG, "%s: expected a JSON object", fname);
    if (index < 0 || index >= NODES_MAX_SECONDARY)
        return mdi_fail(err, MDI_EARG, "%s: index %d out of 0..%d", fname, index, NODES_MAX_SECONDARY - 1);
    node_entry *self = &c->secondary[index];
    int rc = nc_node(self, root, 0, fname, "node", err);
    if (rc) return rc;
    static const char *const extra[] = {"secret", NULL};
    nc_note_node(c, root, "node", extra);
    json_t *secret = json_object_get(root, "secret");
    if (secret) {
        if (!json_is_string(secret) || json_string_length(secret) > NODES_SECRET_LEN)
            return mdi_fail(err, MDI_EARG, "%s: secret: expected a string of at most %d characters", fname,
                            NODES_SECRET_LEN);
        memcpy(c->secret, json_string_value(secret), json_string_length(secret) + 1);
    }
    if (self->port_in == self->http_port)
        return mdi_fail(err, MDI_EARG, "%s: node: communication.port and inference.port_in are both %d",
                        fname, self->port_in);
    snprintf(c->starter.addr, sizeof(c->starter.addr), "%s", self->starter_addr[0] ? self->starter_addr : "?");
    c->n_secondary = index + 1;
    c->per_node = 1;
    return 0;
}

int nodes_config_load_secondary(nodes_config *c, const char *path, int index, char *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        if (!file_exists(path)) return mdi_fail(err, MDI_EIO, "%s: no such file", path);
        return mdi_fail(err, MDI_EFORMAT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    }
    int rc = json_is_object(root) && !json_object_get(root, "nodes") ? nc_parse_own(c, root, index, path, err)
                                                                     : nodes_config_parse(c, root, path, err);
    json_decref(root);
    return rc;
}

void nodes_config_warn_unused(const nodes_config *c, const char *path)
{
    for (int i = 0; i < c->n_unused; i++) {
        char more[48] = "";
        if (c->unused[i].count > 1) snprintf(more, sizeof(more), " and %d more place%s", c->unused[i].count - 1,
                                             c->unused[i].count > 2 ? "s" : "");
        log_warn("%s: key \"%s\" (%s%s) is not used by mdi and is ignored%s", path, c->unused[i].key,
                 c->unused[i].where, more,
                 !strcmp(c->unused[i].key, "device") ? ": this build computes on the CPU" : "");
    }
}

void nodes_config_describe(const nodes_config *c, int i, char *out, size_t cap)
{
    if (i < 0) snprintf(out, cap, "starter (%s)", c->starter.addr);
    else snprintf(out, cap, "secondary %d (%s:%d)", i, c->secondary[i].addr, c->secondary[i].http_port);
}
