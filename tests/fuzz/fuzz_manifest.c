/* fuzz_manifest: a chunks folder's manifest.json (prepare_manifest_load). */
#include "fuzz.h"
#include "prepare.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = fuzz_file(PREPARE_MANIFEST, data, size);
    prepare_manifest m;
    char err[MDI_ERR_LEN];
    for (int allow = 0; allow < 2; allow++) {
        memset(&m, 0, sizeof(m));
        if (prepare_manifest_load(&m, p, allow, err) == 0)
            prepare_manifest_free(&m);
    }
    return 0;
}
