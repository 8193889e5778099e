/* fuzz_gguf: a GGUF file: the container (gguf_open_memory: metadata, tensor
 * infos, every value read back), the tensor source over it (its
 * configuration from the metadata) and the tokenizer from its metadata. */
#include "fuzz.h"
#include "gguf.h"
#include "tokenizer.h"
#include "tsrc_walk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[MDI_ERR_LEN];
    gguf_file *g = gguf_open_memory(data, size, "fuzz.gguf", err);
    if (g) {
        for (int64_t i = 0; i < g->n_kv; i++) {
            const gguf_kv *kv = &g->kv[i];
            if (gguf_find_key(g, kv->key) < 0)
                abort();
            if (kv->type == GGUF_TYPE_ARRAY) {
                for (uint64_t j = 0; j < kv->n && j < 64; j++) {
                    size_t len;
                    if (kv->arr_type == GGUF_TYPE_STRING)
                        gguf_arr_str(g, kv, j, &len);
                    else if (kv->arr_type != GGUF_TYPE_ARRAY)
                        (void)gguf_arr_num(kv, j);
                }
            } else {
                int64_t iv;
                double dv;
                int bv;
                const char *sv;
                size_t len;
                gguf_get_int(g, kv->key, &iv, err);
                gguf_get_float(g, kv->key, &dv, err);
                gguf_get_bool(g, kv->key, &bv, err);
                gguf_get_str(g, kv->key, &sv, &len, err);
            }
        }
        for (int64_t i = 0; i < g->n_tensors; i++) {
            const gguf_tensor *t = &g->tensors[i];
            if (t->nbytes) {
                fuzz_sink ^= ((const uint8_t *)t->data)[0];
                fuzz_sink ^= ((const uint8_t *)t->data)[t->nbytes - 1];
            }
        }
        gguf_close(g);
    }
    const char *p = fuzz_file("model.gguf", data, size);
    fuzz_walk_source(p);
    tokenizer *t = tokenizer_load(p, err);
    if (t) {
        int *ids = NULL;
        int n = tokenizer_encode(t, "Once upon a time \xc3\xa9", 1, 1, &ids);
        if (n > 0)
            free(tokenizer_decode(t, ids, n));
        free(ids);
        tokenizer_free(t);
    }
    return 0;
}
