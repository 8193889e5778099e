/* fuzz_config: a model's config.json (model_config_from_json). */
#include "fuzz.h"
#include "model.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *root = fuzz_json(data, size);
    if (!root)
        return 0;
    model_config c;
    char err[MDI_ERR_LEN];
    if (model_config_from_json(&c, root, "config.json", err) == 0) {
        json_t *back = model_config_to_json(&c);
        model_config c2;
        if (model_config_from_json(&c2, back, "round trip", err) != 0) {
            fprintf(stderr, "a configuration accepted does not read back: %s\n", err);
            abort();
        }
        json_decref(back);
    }
    json_decref(root);
    return 0;
}
