/* fuzz_llama2c: a llama2.c checkpoint, header and weights (tsrc_open), and
 * the configuration its header gives (model_config_from_json). */
#include "fuzz.h"
#include "tsrc_walk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_walk_source(fuzz_file("model.bin", data, size));
    return 0;
}
