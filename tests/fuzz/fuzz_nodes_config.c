/* fuzz_nodes_config: the nodes configuration (nodes_config_parse), the whole
 * file and a secondary's own entry (nodes_config_load_secondary). */
#include "fuzz.h"
#include "nodes_config.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nodes_config c;
    char err[MDI_ERR_LEN], desc[256];
    json_t *root = fuzz_json(data, size);
    if (root) {
        if (nodes_config_parse(&c, root, "nodes.json", err) == 0) {
            for (int i = -1; i < c.n_secondary; i++)
                nodes_config_describe(&c, i, desc, sizeof(desc));
        }
        json_decref(root);
    }
    const char *p = fuzz_file("nodes.json", data, size);
    if (nodes_config_load_secondary(&c, p, 1, err) == 0)
        nodes_config_describe(&c, 1, desc, sizeof(desc));
    return 0;
}
