/* fuzz_safetensors: a .safetensors file, header and data (tsrc_open). */
#include "fuzz.h"
#include "tsrc_walk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_walk_source(fuzz_file("model.safetensors", data, size));
    return 0;
}
