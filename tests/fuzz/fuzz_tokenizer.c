/* fuzz_tokenizer: a tokenizer.json (tokenizer_load), then a text encoded
 * and decoded with it. */
#include "fuzz.h"
#include "tokenizer.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = fuzz_file("tokenizer.json", data, size);
    char err[MDI_ERR_LEN];
    tokenizer *t = tokenizer_load(p, err);
    if (!t)
        return 0;
    int *ids = NULL;
    int n = tokenizer_encode(t, "Once upon a time, <s> a caf\xc3\xa9 \xf0\x9f\x98\x80 \n\t 123!", 1, 1, &ids);
    if (n > 0) {
        char *s = tokenizer_decode(t, ids, n);
        free(s);
        tokenizer_stream st;
        tokenizer_stream_init(&st);
        char out[512];
        for (int i = 0; i < n; i++)
            tokenizer_stream_next(t, &st, ids[i], out, sizeof(out));
    }
    free(ids);
    int v = tokenizer_vocab_size(t);
    for (int id = -1; id < v && id < 300; id++) {
        tokenizer_token(t, id);
        char *s = tokenizer_decode(t, &id, 1);
        free(s);
    }
    char *chat = tokenizer_apply_chat(t, "hi");
    free(chat);
    tokenizer_free(t);
    return 0;
}
