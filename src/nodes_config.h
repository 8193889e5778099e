/*
 * nodes_config: the nodes configuration file, in MDI-LLM's JSON shape so
 * that its users can bring their files, plus optional fields of ours:
 *
 *   {"secret": "s3cr3t",                         (optional, ours)
 *    "nodes": {
 *      "starter":  {"addr": "10.0.0.2",
 *                   "communication": {"port": 8088},          (optional)
 *                   "inference": {"port_in": 5088, "port_out": 5089},
 *                   "n_layers": 2, "n_threads": 4},           (optional, ours)
 *      "secondary": [
 *        {"addr": "10.0.0.3",
 *         "communication": {"starter_addr": "10.0.0.2", "port": 8089},
 *         "inference": {"port_in": 5090, "port_out": 5091},
 *         "n_layers": 3, "n_threads": 4}, ...],
 *      "spare": [{"addr": ..., "communication": ..., "inference": ...}]}}
 *
 * "spare" (optional, ours) lists nodes of a secondary's shape, each started
 * with bin/secondary CONFIG --spare I: when a secondary fails mid-run, the
 * first spare to answer (or the node itself, back) takes its layers.
 *
 * communication.port is a secondary's HTTP control port; the starter runs
 * no HTTP server, so its own is accepted and unused. inference.port_in is
 * where a node listens for frames from the previous node of the ring; it
 * connects to the next node's port_in from an ephemeral port, so port_out
 * (which MDI-LLM binds as the source port) is accepted and unused: binding
 * fixed source ports would make a quick second run fail on TIME_WAIT.
 * starter_addr is informational. n_layers, when given for every node, must
 * match the layer split of the chunks; n_threads sets a secondary's threads
 * unless its command line says otherwise.
 *
 * A secondary may instead be given its own entry alone, MDI-LLM's
 * settings_distr/secondary/nodeN.json (no "nodes" key; "secret" allowed):
 *
 *   {"addr": "10.0.0.3",
 *    "communication": {"starter_addr": "10.0.0.2", "port": 8089},
 *    "inference": {"port_in": 5090, "port_out": 5091}, "device": "cuda"}
 *
 * It knows nothing of the other nodes: the starter's /init names its
 * neighbours. Keys we do not use ("device" and any other) are collected, one
 * entry per key name, for the programs to warn about.
 */
#ifndef MDI_NODES_CONFIG_H
#define MDI_NODES_CONFIG_H

#include <jansson.h>

#define NODES_MAX_SECONDARY 31
#define NODES_MAX_SPARE 8
#define NODES_ADDR_LEN 128
#define NODES_SECRET_LEN 256
#define NODES_MAX_UNUSED 16

typedef struct {
    char addr[NODES_ADDR_LEN];
    int http_port;      /* communication.port; 0 when absent (starter) */
    int port_in;        /* inference.port_in */
    int port_out;       /* inference.port_out; 0 when absent; unused */
    char starter_addr[NODES_ADDR_LEN]; /* secondary only; "" when absent */
    int n_layers;       /* 0 when absent */
    int n_threads;      /* 0 when absent */
} node_entry;

typedef struct {
    node_entry starter;
    node_entry secondary[NODES_MAX_SECONDARY];
    int n_secondary;
    node_entry spare[NODES_MAX_SPARE]; /* "spare": nodes that take a failed secondary's place */
    int n_spare;
    char secret[NODES_SECRET_LEN + 1]; /* "" when none */
    int per_node;       /* 1: a secondary's own file; only secondary[n_secondary - 1]
                         * is known, starter.addr is its starter_addr */
    /* keys present but not used, one entry per key name */
    struct { char key[64]; char where[64]; int count; } unused[NODES_MAX_UNUSED];
    int n_unused;
} nodes_config;

/* Parses root (borrowed); fname names the file in messages, which name the
 * field and the node ("cfg.json: nodes.secondary[1].inference.port_in:
 * expected an integer in 1..65535"). Returns 0 or MDI_EARG. */
int nodes_config_parse(nodes_config *c, json_t *root, const char *fname, char *err);
/* Reads and parses a file. Returns 0, MDI_EIO, MDI_EFORMAT (bad JSON, with
 * line and column) or MDI_EARG. */
int nodes_config_load(nodes_config *c, const char *path, char *err);

/* For a secondary: the full configuration, or its own per-node file, which
 * then fills secondary[index]. 0 or an error as nodes_config_load. */
int nodes_config_load_secondary(nodes_config *c, const char *path, int index, char *err);

/* One warning line per unused key, naming the file, the key and where. */
void nodes_config_warn_unused(const nodes_config *c, const char *path);

static inline int nodes_config_n_nodes(const nodes_config *c) { return 1 + c->n_secondary; }

/* "starter (10.0.0.2)" or "secondary 1 (10.0.0.3:8089)" into out. */
void nodes_config_describe(const nodes_config *c, int secondary_index, char *out, size_t cap);

#endif
