/* test_nodes_config: the example configurations parse; malformed ones are
 * refused with a message naming the field and the node. */
#include "nodes_config.h"
#include "test.h"
#include "util.h"

static void expect_error(const char *text, const char *needle, const char *name)
{
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    if (!root) {
        test_result(0, name, "test JSON does not parse: %s", je.text);
        return;
    }
    nodes_config c;
    char err[MDI_ERR_LEN] = "";
    int rc = nodes_config_parse(&c, root, "cfg.json", err);
    json_decref(root);
    test_result(rc == MDI_EARG && strstr(err, needle), name, "rc %d, err \"%s\" (wanted \"%s\")", rc, err, needle);
}

#define STARTER "\"starter\": {\"addr\": \"10.0.0.1\", \"inference\": {\"port_in\": 5000}}"
#define SEC(addr, http, in) "{\"addr\": \"" addr "\", \"communication\": {\"port\": " #http "}, \"inference\": {\"port_in\": " #in "}}"

int main(void)
{
    nodes_config c;
    char err[MDI_ERR_LEN];
    int rc = nodes_config_load(&c, "settings-distr/config-3nodes-localhost.json", err);
    test_result(rc == 0 && c.n_secondary == 2 && c.secondary[1].http_port == 8090 && c.secondary[1].port_in == 5092 &&
                c.starter.port_in == 5088 && !c.secret[0] && !strcmp(c.secondary[0].starter_addr, "127.0.0.1"),
                "nodes_config 3 nodes on one host", "rc %d: %s", rc, err);
    rc = nodes_config_load(&c, "settings-distr/config-2nodes-localhost.json", err);
    test_result(rc == 0 && nodes_config_n_nodes(&c) == 2, "nodes_config 2 nodes on one host", "rc %d: %s", rc, err);
    rc = nodes_config_load(&c, "settings-distr/config-3hosts-lan.json", err);
    test_result(rc == 0 && c.n_secondary == 2 && c.secret[0] && c.secondary[0].n_threads == 4,
                "nodes_config 3 hosts with secret and threads", "rc %d: %s", rc, err);

    rc = nodes_config_load(&c, "tests/no-such-config.json", err);
    test_result(rc == MDI_EIO && strstr(err, "no-such-config.json"), "nodes_config missing file", "rc %d: %s", rc, err);

    expect_error("[]", "expected a JSON object", "nodes_config not an object");
    expect_error("{}", "nodes: missing", "nodes_config without nodes");
    expect_error("{\"nodes\": {}}", "nodes.starter: missing", "nodes_config without starter");
    expect_error("{\"nodes\": {\"starter\": {\"inference\": {\"port_in\": 5000}}}}", "nodes.starter.addr: missing",
                 "nodes_config starter without addr");
    expect_error("{\"nodes\": {\"starter\": {\"addr\": \"a\"}}}", "nodes.starter.inference: missing",
                 "nodes_config starter without inference");
    expect_error("{\"nodes\": {" STARTER ", \"secondary\": [" SEC("10.0.0.2", 8000, 5001) ", {\"addr\": \"10.0.0.3\", "
                 "\"communication\": {\"port\": 8000}, \"inference\": {\"port_in\": \"5001\"}}]}}",
                 "nodes.secondary[1].inference.port_in: expected an integer port", "nodes_config port as a string");
    expect_error("{\"nodes\": {" STARTER ", \"secondary\": [" SEC("10.0.0.2", 8000, 70000) "]}}",
                 "nodes.secondary[0].inference.port_in: expected an integer port in 1..65535", "nodes_config port out of range");
    expect_error("{\"nodes\": {" STARTER ", \"secondary\": [{\"addr\": \"10.0.0.2\", \"inference\": {\"port_in\": 5001}}]}}",
                 "nodes.secondary[0].communication: missing", "nodes_config secondary without HTTP port");
    expect_error("{\"nodes\": {" STARTER ", \"secondary\": {}}}", "nodes.secondary: expected an array",
                 "nodes_config secondary not a list");
    expect_error("{\"nodes\": {" STARTER ", \"secondary\": [" SEC("127.0.0.1", 8000, 5001) ", " SEC("127.0.0.1", 8001, 5001) "]}}",
                 "nodes.secondary[0] and nodes.secondary[1] both use port 5001", "nodes_config two nodes on one port");
    expect_error("{\"secret\": 5, \"nodes\": {" STARTER "}}", "secret: expected a string", "nodes_config secret not a string");
    expect_error("{\"nodes\": {\"starter\": {\"addr\": \"a\", \"n_layers\": 2, \"inference\": {\"port_in\": 5000}}, "
                 "\"secondary\": [" SEC("b", 8000, 5001) "]}}",
                 "given for 1 of 2 nodes", "nodes_config n_layers for some nodes only");
    expect_error("{\"nodes\": {" STARTER ", \"secondary\": [{\"addr\": \"b\", \"n_threads\": 0, \"communication\": {\"port\": 8000}, "
                 "\"inference\": {\"port_in\": 5001}}]}}",
                 "nodes.secondary[0].n_threads: expected a positive integer", "nodes_config zero threads");

    /* spare nodes: a secondary's shape */
    {
        json_error_t je;
        json_t *root = json_loads("{\"nodes\": {" STARTER ", \"secondary\": [" SEC("10.0.0.2", 8000, 5001) "], "
                                  "\"spare\": [" SEC("10.0.0.9", 8009, 5009) "]}}", 0, &je);
        int prc = root ? nodes_config_parse(&c, root, "cfg.json", err) : -1;
        json_decref(root);
        test_result(prc == 0 && c.n_spare == 1 && c.spare[0].http_port == 8009 && c.spare[0].port_in == 5009 &&
                    !strcmp(c.spare[0].addr, "10.0.0.9") && c.n_unused == 0, "nodes_config spare nodes", "rc %d: %s",
                    prc, err);
    }
    expect_error("{\"nodes\": {" STARTER ", \"secondary\": [" SEC("b", 8000, 5001) "], \"spare\": {}}}",
                 "nodes.spare: expected an array", "nodes_config spare not a list");
    expect_error("{\"nodes\": {" STARTER ", \"secondary\": [" SEC("b", 8000, 5001) "], \"spare\": "
                 "[{\"addr\": \"c\", \"inference\": {\"port_in\": 5002}}]}}",
                 "nodes.spare[0].communication: missing", "nodes_config spare without HTTP port");

    char name[160];
    nodes_config_load(&c, "settings-distr/config-3nodes-localhost.json", err);
    nodes_config_describe(&c, 1, name, sizeof(name));
    test_result(!strcmp(name, "secondary 1 (127.0.0.1:8090)"), "nodes_config names a node", "got \"%s\"", name);
    return test_failures;
}
