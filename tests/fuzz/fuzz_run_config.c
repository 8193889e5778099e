/* fuzz_run_config: the run configuration a secondary gets in POST /init
 * (run_config_from_json), as the handler parses the body. */
#include "fuzz.h"
#include "control.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t je;
    json_t *body = json_loadb((const char *)data, size, 0, &je);
    if (!body)
        return 0;
    run_config rc;
    char err[MDI_ERR_LEN];
    if (run_config_from_json(&rc, body, err) == 0) {
        json_t *back = run_config_to_json(&rc);
        run_config rc2;
        if (run_config_from_json(&rc2, back, err) != 0) {
            fprintf(stderr, "a run configuration accepted does not read back: %s\n", err);
            abort();
        }
        json_decref(back);
    }
    json_decref(body);
    return 0;
}
