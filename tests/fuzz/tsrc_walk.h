/* tsrc_walk.h: what the checkpoint harnesses do with a source that opened:
 * read the first and last byte of every tensor (its bounds were checked:
 * reading them must not fault), and parse the configuration it carries. */
#include "model.h"
#include "safetensors.h"
#include "util.h"

static volatile uint8_t fuzz_sink;

static void fuzz_walk_source(const char *path)
{
    char err[MDI_ERR_LEN];
    tensor_source *s = tsrc_open(path, err);
    if (!s)
        return;
    for (int i = 0; i < tsrc_count(s); i++) {
        const tensor_info *t = tsrc_get(s, i);
        if (t->nbytes) {
            fuzz_sink ^= ((const uint8_t *)t->data)[0];
            fuzz_sink ^= ((const uint8_t *)t->data)[t->nbytes - 1];
        }
        if (tsrc_find(s, t->name) == NULL)
            abort();
    }
    json_t *lc = tsrc_llama2c_config(s);
    if (lc) {
        model_config c;
        model_config_from_json(&c, lc, path, err);
    }
    tsrc_close(s);
}
