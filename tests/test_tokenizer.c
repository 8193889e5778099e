/*
 * test_tokenizer: the tokenizer against reference token ids from an
 * independent implementation (shared/tokenizers/vectors), round trips,
 * the llama2.c tokenizer.bin against the Hugging Face file of the same
 * model, streaming decode, special ids, chat templates and malformed files.
 */
#include "tokenizer.h"
#include "gguf.h"
#include "util.h"
#include "test.h"

#include <jansson.h>

#include <limits.h>
#include <unistd.h>

#define SEP "\n__ggml_vocab_test__\n"

typedef struct {
    char **texts;
    int n;
    char *data;
} cases;

/* .inp: every text is followed by SEP (texts may hold newlines, may be
 * empty). Returns the count, -1 on error. */
static int cases_load(const char *path, cases *c)
{
    char err[MDI_ERR_LEN];
    size_t len;
    memset(c, 0, sizeof(*c));
    if (file_read_all(path, &c->data, &len, err) != 0) {
        printf("# %s\n", err);
        return -1;
    }
    char *p = c->data;
    for (;;) {
        char *sep = strstr(p, SEP);
        if (!sep)
            break;
        *sep = 0;
        char **tt = realloc(c->texts, (size_t)(c->n + 1) * sizeof(char *));
        if (!tt)
            return -1;
        c->texts = tt;
        c->texts[c->n++] = p;
        p = sep + strlen(SEP);
    }
    return c->n;
}

static void cases_free(cases *c)
{
    free(c->texts);
    free(c->data);
}

/* .out: one line of ids per text. */
static int ids_load(const char *path, int ***lines, int **counts)
{
    char err[MDI_ERR_LEN];
    char *data;
    size_t len;
    if (file_read_all(path, &data, &len, err) != 0) {
        printf("# %s\n", err);
        return -1;
    }
    int n = 0;
    *lines = NULL;
    *counts = NULL;
    char *p = data;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        *lines = realloc(*lines, (size_t)(n + 1) * sizeof(int *));
        *counts = realloc(*counts, (size_t)(n + 1) * sizeof(int));
        int *v = malloc((strlen(p) / 2 + 2) * sizeof(int));
        int k = 0;
        char *q = p, *end;
        for (;;) {
            long x = strtol(q, &end, 10);
            if (end == q)
                break;
            v[k++] = (int)x;
            q = end;
        }
        (*lines)[n] = v;
        (*counts)[n] = k;
        n++;
        if (!nl)
            break;
        p = nl + 1;
    }
    free(data);
    return n;
}

static void ids_str(const int *ids, int n, char *out, size_t cap)
{
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < n && k + 16 < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%d", i ? " " : "", ids[i]);
}

/* Text with control characters escaped, for messages. */
static const char *show(const char *s)
{
    static char buf[256];
    size_t k = 0;
    for (; *s && k + 8 < sizeof(buf); s++) {
        if (*s == '\n')
            k += (size_t)snprintf(buf + k, sizeof(buf) - k, "\\n");
        else if (*s == '\t')
            k += (size_t)snprintf(buf + k, sizeof(buf) - k, "\\t");
        else
            buf[k++] = *s;
    }
    buf[k] = 0;
    return buf;
}

/* tok_dir: under the shared folder, or an absolute path (a GGUF). */
static void test_vectors_as(const char *vec, const char *tok_dir, const char *label)
{
    char path[1024], name[128], err[MDI_ERR_LEN];
    cases c;
    int **want = NULL, *nwant = NULL;
    TEST_PATH(path, "tokenizers/vectors");
    char inp[1200], outp[1200];
    snprintf(inp, sizeof(inp), "%s/%s.inp", path, vec);
    snprintf(outp, sizeof(outp), "%s/%s.out", path, vec);
    snprintf(name, sizeof(name), "vectors %s%s", vec, label);
    int n = cases_load(inp, &c);
    int m = ids_load(outp, &want, &nwant);
    if (n <= 0 || m != n) {
        test_result(0, name, "cannot read %s / %s (%d texts, %d id lines)", inp, outp, n, m);
        cases_free(&c);
        return;
    }
    if (tok_dir[0] == '/')
        snprintf(path, sizeof(path), "%s", tok_dir);
    else
        TEST_PATH(path, tok_dir);
    tokenizer *t = tokenizer_load(path, err);
    if (!t) {
        test_result(0, name, "%s", err);
        cases_free(&c);
        return;
    }
    int bad = -1, ok = 0, trip_bad = -1;
    char got_s[2048] = "", want_s[2048] = "", trip_s[512] = "";
    for (int i = 0; i < n; i++) {
        int *ids;
        int k = tokenizer_encode(t, c.texts[i], 0, 0, &ids);
        int same = k == nwant[i] && memcmp(ids, want[i], (size_t)k * sizeof(int)) == 0;
        if (same)
            ok++;
        else if (bad < 0) {
            bad = i;
            ids_str(ids, k, got_s, sizeof(got_s));
            ids_str(want[i], nwant[i], want_s, sizeof(want_s));
        }
        /* Every text here round-trips, leading spaces included: the
         * SentencePiece normalizer prepends exactly one "▁" and the decoder
         * strips exactly one leading space, so " Hello" -> "▁▁Hello" ->
         * " Hello". Nothing falls to <unk> thanks to byte fallback. */
        char *back = tokenizer_decode(t, ids, k);
        if (trip_bad < 0 && (!back || strcmp(back, c.texts[i]) != 0)) {
            trip_bad = i;
            snprintf(trip_s, sizeof(trip_s), "\"%s\"", show(back ? back : "(null)"));
        }
        free(back);
        free(ids);
    }
    if (bad < 0)
        printf("PASS: %s: %d of %d cases\n", name, ok, n);
    else
        test_result(0, name, "%d of %d cases; first mismatch case %d \"%s\": expected [%s] got [%s]", ok,
                    n, bad, show(c.texts[bad]), want_s, got_s);
    snprintf(name, sizeof(name), "round trip %s%s: decode(encode(x)) == x over %d texts", vec, label, n);
    test_result(trip_bad < 0, name, "case %d \"%s\" came back as %s", trip_bad,
                trip_bad >= 0 ? show(c.texts[trip_bad]) : "", trip_s);
    tokenizer_free(t);
    for (int i = 0; i < n; i++)
        free(want[i]);
    free(want);
    free(nwant);
    cases_free(&c);
}

static void test_vectors(const char *vec, const char *tok_dir)
{
    test_vectors_as(vec, tok_dir, "");
}

/* A GGUF holding only the tokenizer of a tokenizer.json, written as
 * llama.cpp's converter would: tokens by id, token types (control for
 * special added tokens, user-defined for other added ones, byte for
 * <0xXX>), and for model "llama" scores that order merges as the merges
 * list does (a token scores minus the rank of the first merge making it),
 * for "gpt2" the merges and the pre-tokenizer's name. */
static int gguf_vocab_from_json(const char *json_path, const char *out, const char *model, const char *pre,
                                char *err)
{
    json_error_t je;
    json_t *root = json_load_file(json_path, 0, &je);
    if (!root)
        return mdi_fail(err, MDI_EFORMAT, "%s: %s", json_path, je.text);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
    json_t *added = json_object_get(root, "added_tokens");
    int n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v)
        if (json_integer_value(v) + 1 > n)
            n = (int)json_integer_value(v) + 1;
    size_t i;
    json_array_foreach(added, i, v)
        if (json_integer_value(json_object_get(v, "id")) + 1 > n)
            n = (int)json_integer_value(json_object_get(v, "id")) + 1;
    const char **tok = calloc((size_t)n, sizeof(*tok));
    double *type = calloc((size_t)n, sizeof(double)), *score = calloc((size_t)n, sizeof(double));
    const char **mstr = calloc(json_array_size(merges) + 1, sizeof(*mstr));
    char **mown = calloc(json_array_size(merges) + 1, sizeof(*mown));
    json_object_foreach(vocab, key, v) {
        int id = (int)json_integer_value(v);
        tok[id] = key;
        type[id] = strlen(key) == 6 && !strncmp(key, "<0x", 3) && key[5] == '>' ? 6 : 1;
        score[id] = 1; /* not made by a merge yet */
    }
    json_array_foreach(added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        tok[id] = json_string_value(json_object_get(v, "content"));
        type[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4;
    }
    for (int k = 0; k < n; k++)
        if (!tok[k])
            tok[k] = "";
    json_array_foreach(merges, i, v) {
        const char *a, *b;
        char buf[512];
        if (json_is_string(v)) {
            mstr[i] = json_string_value(v);
            const char *sp = strchr(mstr[i], ' ');
            snprintf(buf, sizeof(buf), "%.*s%s", (int)(sp - mstr[i]), mstr[i], sp + 1);
        } else {
            a = json_string_value(json_array_get(v, 0));
            b = json_string_value(json_array_get(v, 1));
            mown[i] = malloc(strlen(a) + strlen(b) + 2);
            sprintf(mown[i], "%s %s", a, b);
            mstr[i] = mown[i];
            snprintf(buf, sizeof(buf), "%s%s", a, b);
        }
        json_t *id = json_object_get(vocab, buf);
        if (id && score[json_integer_value(id)] > 0)
            score[json_integer_value(id)] = -(double)i;
    }
    for (int k = 0; k < n; k++)
        if (score[k] > 0)
            score[k] = 0;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", model);
    if (pre)
        gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tok, (uint64_t)n);
    gguf_writer_set_arr_num(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, type, (uint64_t)n);
    if (!strcmp(model, "llama"))
        gguf_writer_set_arr_num(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, score, (uint64_t)n);
    else
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", mstr, json_array_size(merges));
    int rc = gguf_writer_write(w, out, err);
    gguf_writer_free(w);
    for (i = 0; i < json_array_size(merges); i++)
        free(mown[i]);
    free(mown);
    free(mstr);
    free(tok);
    free(type);
    free(score);
    json_decref(root);
    return rc;
}

/* The vectors again, through GGUF vocabularies built from the same
 * tokenizer.json files. */
static void test_vectors_gguf(const char *tmp)
{
    static const struct { const char *vec, *dir, *model, *pre; } c[] = {
        { "llama-spm", "tokenizers/llama2", "llama", NULL },
        { "llama-bpe", "tokenizers/llama3", "gpt2", "llama-bpe" },
        { "qwen2", "tokenizers/qwen3", "gpt2", "qwen2" },
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        char json[1024], out[1200], err[MDI_ERR_LEN], rel[256];
        snprintf(rel, sizeof(rel), "%s/tokenizer.json", c[i].dir);
        TEST_PATH(json, rel);
        snprintf(out, sizeof(out), "%s/%s.gguf", tmp, c[i].vec);
        if (gguf_vocab_from_json(json, out, c[i].model, c[i].pre, err) != 0) {
            test_result(0, "GGUF vocabulary from tokenizer.json", "%s", err);
            continue;
        }
        test_vectors_as(c[i].vec, out, " (GGUF vocabulary)");
    }
}

static int ids_equal(const int *a, int na, const int *b, int nb)
{
    return na == nb && memcmp(a, b, (size_t)na * sizeof(int)) == 0;
}

static void test_stories(void)
{
    char path[1024], err[MDI_ERR_LEN];
    TEST_PATH(path, "models/stories260K");
    tokenizer *hf = tokenizer_load(path, err);
    test_result(hf != NULL, "stories260K tokenizer.json loads", "%s", err);
    TEST_PATH(path, "models/stories260K-llama2c/tok512.bin");
    tokenizer *bin = tokenizer_load(path, err);
    test_result(bin != NULL, "stories260K tok512.bin loads", "%s", err);
    if (!hf || !bin) {
        tokenizer_free(hf);
        tokenizer_free(bin);
        return;
    }
    TEST_PATH(path, "models/stories260K-llama2c");
    tokenizer *dir = tokenizer_load(path, err);
    test_result(dir && tokenizer_vocab_size(dir) == 512, "llama2.c folder finds tok512.bin", "%s", err);
    tokenizer_free(dir);
    test_result(tokenizer_vocab_size(hf) == 512 && tokenizer_vocab_size(bin) == 512,
                "stories260K vocabularies have 512 tokens", "%d and %d", tokenizer_vocab_size(hf),
                tokenizer_vocab_size(bin));
    test_result(tokenizer_bos_id(bin) == 1 && tokenizer_is_eos(bin, 2) && tokenizer_adds_bos(bin) &&
                    tokenizer_bos_id(hf) == 1 && tokenizer_is_eos(hf, 2) && tokenizer_adds_bos(hf),
                "stories260K BOS 1 added, EOS 2, in both formats", "bos %d/%d", tokenizer_bos_id(hf),
                tokenizer_bos_id(bin));

    static const char *prompts[] = {
        "The dog",
        "Once upon a time, there was a little girl named Lily.",
        "Lily's mom said, \"Lily, let's go to the park.\"\nTim said: 42 \xe2\x84\xa2 caf\xc3\xa9 \xf0\x9f\x98\x80!",
        " two  spaces",
    };
    for (size_t i = 0; i < sizeof(prompts) / sizeof(prompts[0]); i++) {
        int *a, *b;
        int na = tokenizer_encode(hf, prompts[i], 1, 0, &a);
        int nb = tokenizer_encode(bin, prompts[i], 1, 0, &b);
        char name[256], sa[1024], sb[1024];
        snprintf(name, sizeof(name), "stories260K json == bin ids for \"%s\"", show(prompts[i]));
        ids_str(a, na, sa, sizeof(sa));
        ids_str(b, nb, sb, sizeof(sb));
        test_result(ids_equal(a, na, b, nb) && na > 1 && a[0] == 1, name, "json [%s] bin [%s]", sa, sb);
        char *da = tokenizer_decode(hf, a, na), *db = tokenizer_decode(bin, b, nb);
        snprintf(name, sizeof(name), "stories260K decode(encode) for \"%s\"", show(prompts[i]));
        /* Both drop exactly one leading space: the dummy prefix. */
        test_result(da && db && !strcmp(da, prompts[i]) && !strcmp(db, prompts[i]), name,
                    "json \"%s\"", da ? show(da) : "(null)");
        free(da);
        free(db);
        free(a);
        free(b);
    }
    int *a;
    int na = tokenizer_encode(hf, "The dog", 1, 0, &a);
    /* BOS, "▁The", "▁d", "og" in stories260K's vocabulary. */
    char sa[256];
    ids_str(a, na, sa, sizeof(sa));
    test_result(na == 4 && a[0] == 1 && !strcmp(tokenizer_token(hf, a[1]), "\xe2\x96\x81The") &&
                    !strcmp(tokenizer_token(bin, a[1]), " The"),
                "stories260K \"The dog\" starts BOS, \xe2\x96\x81The", "[%s]", sa);
    free(a);

    /* One id sequence, all of the vocabulary's kinds: BOS, words, byte
     * tokens (a newline, a multi-byte character), EOS. */
    int seq[512];
    int n = 0;
    seq[n++] = 1;
    for (int id = 259; id < 512; id += 7)
        seq[n++] = id;
    seq[n++] = 3 + '\n';
    seq[n++] = 3 + 0xe2;
    seq[n++] = 3 + 0x84;
    seq[n++] = 3 + 0xa2;
    seq[n++] = 300;
    seq[n++] = 2;
    char *ta = tokenizer_decode(hf, seq, n), *tb = tokenizer_decode(bin, seq, n);
    test_result(ta && tb && !strcmp(ta, tb) && strstr(ta, "\n\xe2\x84\xa2"), "stories260K json == bin decoded text",
                "json \"%s\" bin \"%s\"", ta ? ta : "", tb ? tb : "");
    free(ta);
    free(tb);
    tokenizer_free(hf);
    tokenizer_free(bin);
}

static void test_stream(void)
{
    char path[1024], err[MDI_ERR_LEN], out[256];
    TEST_PATH(path, "tokenizers/llama2");
    tokenizer *t = tokenizer_load(path, err);
    if (!t) {
        test_result(0, "stream: llama2 loads", "%s", err);
        return;
    }
    /* "🦙" is not in Llama 2's vocabulary: byte fallback F0 9F A6 99. */
    int *ids;
    int n = tokenizer_encode(t, "\xf0\x9f\xa6\x99", 1, 0, &ids);
    int want[] = { 1, 29871, tokenizer_find(t, "<0xF0>"), tokenizer_find(t, "<0x9F>"), tokenizer_find(t, "<0xA6>"),
                   tokenizer_find(t, "<0x99>") };
    test_result(ids_equal(ids, n, want, 6), "stream: llama emoji encodes as BOS, \xe2\x96\x81 and 4 byte tokens",
                "%d ids", n);
    tokenizer_stream st;
    tokenizer_stream_init(&st);
    int early = 0;
    for (int i = 0; i < n - 1; i++)
        early += tokenizer_stream_next(t, &st, ids[i], out, sizeof(out));
    int last = tokenizer_stream_next(t, &st, ids[n - 1], out, sizeof(out));
    test_result(early == 0 && last == 4 && !strcmp(out, "\xf0\x9f\xa6\x99"),
                "stream: nothing until the emoji's last byte, then the whole character",
                "early %d bytes, last %d \"%s\"", early, last, out);
    free(ids);

    /* The first piece loses the dummy prefix, later ones keep their space. */
    n = tokenizer_encode(t, "Hello world", 1, 0, &ids);
    tokenizer_stream_init(&st);
    char all[256] = "";
    for (int i = 0; i < n; i++) {
        tokenizer_stream_next(t, &st, ids[i], out, sizeof(out));
        strcat(all, out);
    }
    test_result(!strcmp(all, "Hello world"), "stream: SentencePiece leading space stripped once", "\"%s\"", all);
    free(ids);
    tokenizer_free(t);

    /* Byte-level: an emoji whose bytes span two tokens in Llama 3. */
    TEST_PATH(path, "tokenizers/llama3");
    t = tokenizer_load(path, err);
    if (!t) {
        test_result(0, "stream: llama3 loads", "%s", err);
        return;
    }
    n = tokenizer_encode(t, "\xf0\x9f\xa6\x99\xf0\x9f\xa6\x99", 0, 0, &ids);
    tokenizer_stream_init(&st);
    int pieces_with_text = 0;
    all[0] = 0;
    for (int i = 0; i < n; i++) {
        int k = tokenizer_stream_next(t, &st, ids[i], out, sizeof(out));
        if (k > 0) {
            pieces_with_text++;
            test_result(k % 4 == 0, "stream: byte-level pieces are whole characters", "%d bytes", k);
        }
        strcat(all, out);
    }
    test_result(n > 2 && !strcmp(all, "\xf0\x9f\xa6\x99\xf0\x9f\xa6\x99"),
                "stream: byte-level emoji split across tokens comes out whole", "%d ids, \"%s\"", n, all);
    int eot = tokenizer_find(t, "<|eot_id|>");
    tokenizer_stream_init(&st);
    test_result(tokenizer_stream_next(t, &st, 128000, out, sizeof(out)) == 0 &&
                    tokenizer_stream_next(t, &st, eot, out, sizeof(out)) == 0,
                "stream: special tokens produce no text", "\"%s\"", out);
    free(ids);
    tokenizer_free(t);
}

static void test_specials(void)
{
    char path[1024], err[MDI_ERR_LEN];
    const int *eos;
    TEST_PATH(path, "tokenizers/llama3");
    tokenizer *t = tokenizer_load(path, err);
    if (t) {
        int n = tokenizer_eos_ids(t, &eos);
        test_result(tokenizer_bos_id(t) == 128000 && tokenizer_adds_bos(t) && tokenizer_vocab_size(t) == 128256,
                    "llama3: BOS 128000 added by the post-processor, 128256 ids", "bos %d adds %d vocab %d",
                    tokenizer_bos_id(t), tokenizer_adds_bos(t), tokenizer_vocab_size(t));
        test_result(n >= 1 && eos[0] == 128001 && tokenizer_is_eos(t, 128009) && !tokenizer_is_eos(t, 128000),
                    "llama3: EOS <|end_of_text|> 128001 (config), <|eot_id|> 128009 (template)", "%d ids, first %d",
                    n, n ? eos[0] : -1);
        int *ids;
        int k = tokenizer_encode(t, "Hello", 1, 0, &ids);
        test_result(k == 2 && ids[0] == 128000 && ids[1] == 9906, "llama3: encode(\"Hello\", bos) = 128000 9906",
                    "%d ids", k);
        free(ids);
        k = tokenizer_encode(t, "a<|eot_id|>b", 0, 1, &ids);
        int k2;
        int *ids2;
        k2 = tokenizer_encode(t, "a<|eot_id|>b", 0, 0, &ids2);
        test_result(k == 3 && ids[1] == 128009 && k2 > 3, "llama3: <|eot_id|> matched only with parse_special",
                    "%d and %d ids", k, k2);
        free(ids);
        free(ids2);
        tokenizer_free(t);
    } else {
        test_result(0, "llama3 loads", "%s", err);
    }
    TEST_PATH(path, "tokenizers/qwen3");
    t = tokenizer_load(path, err);
    if (t) {
        int n = tokenizer_eos_ids(t, &eos);
        test_result(tokenizer_bos_id(t) == -1 && !tokenizer_adds_bos(t) && n >= 1 && eos[0] == 151645,
                    "qwen3: no BOS, EOS <|im_end|> 151645", "bos %d eos[0] %d", tokenizer_bos_id(t),
                    n ? eos[0] : -1);
        /* NFC: "e" + U+0301 is encoded as "é". */
        int *a, *b;
        int na = tokenizer_encode(t, "caf\x65\xcc\x81", 0, 0, &a);
        int nb = tokenizer_encode(t, "caf\xc3\xa9", 0, 0, &b);
        test_result(ids_equal(a, na, b, nb), "qwen3: NFC composes e + U+0301", "%d vs %d ids", na, nb);
        free(a);
        free(b);
        tokenizer_free(t);
    } else {
        test_result(0, "qwen3 loads", "%s", err);
    }
    static const char *spm[] = { "tokenizers/llama2", "tokenizers/mistral" };
    for (int i = 0; i < 2; i++) {
        char name[128];
        TEST_PATH(path, spm[i]);
        t = tokenizer_load(path, err);
        snprintf(name, sizeof(name), "%s: BOS 1 added, EOS 2, 32000 ids", spm[i]);
        if (!t) {
            test_result(0, name, "%s", err);
            continue;
        }
        int n = tokenizer_eos_ids(t, &eos);
        test_result(tokenizer_bos_id(t) == 1 && tokenizer_adds_bos(t) && n == 1 && eos[0] == 2 &&
                        tokenizer_vocab_size(t) == 32000 && !strcmp(tokenizer_token(t, 1), "<s>") &&
                        tokenizer_find(t, "</s>") == 2,
                    name, "bos %d eos %d vocab %d", tokenizer_bos_id(t), n ? eos[0] : -1, tokenizer_vocab_size(t));
        tokenizer_free(t);
    }
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static void test_chat(const char *tmp)
{
    char dir[1024], target[2048];
    static const struct {
        const char *dir;
        chat_family want;
    } fam[] = {
        { "tokenizers/llama3", CHAT_LLAMA3 },
        { "tokenizers/qwen3", CHAT_CHATML },
        /* These two tokenizer_config.json files carry no chat_template. */
        { "tokenizers/llama2", CHAT_NONE },
        { "tokenizers/mistral", CHAT_NONE },
    };
    char path[2048], err[MDI_ERR_LEN], name[256];
    for (size_t i = 0; i < sizeof(fam) / sizeof(fam[0]); i++) {
        TEST_PATH(path, fam[i].dir);
        tokenizer *t = tokenizer_load(path, err);
        snprintf(name, sizeof(name), "chat family of %s is %s", fam[i].dir, chat_family_name(fam[i].want));
        test_result(t && tokenizer_chat_family(t) == fam[i].want, name, "%s",
                    t ? chat_family_name(tokenizer_chat_family(t)) : err);
        if (t && fam[i].want == CHAT_LLAMA3) {
            char *s = tokenizer_apply_chat(t, "Why is the sky blue?");
            const char *want = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhy is the sky "
                               "blue?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
            test_result(s && !strcmp(s, want), "chat: llama3 wrapped prompt exact", "\"%s\"", s ? show(s) : "");
            int *ids;
            int n = tokenizer_encode(t, s, 0, 1, &ids);
            test_result(n > 8 && ids[0] == 128000 && ids[1] == 128006 && ids[n - 1] == 271 && ids[n - 2] == 128007,
                        "chat: llama3 wrapped prompt encodes to header ids", "%d ids", n);
            free(ids);
            free(s);
        }
        if (t && fam[i].want == CHAT_CHATML) {
            char *s = tokenizer_apply_chat(t, "Hi");
            test_result(s && !strcmp(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
                        "chat: chatml wrapped prompt exact", "\"%s\"", s ? show(s) : "");
            free(s);
        }
        if (t && fam[i].want == CHAT_NONE)
            test_result(tokenizer_apply_chat(t, "Hi") == NULL, "chat: no template gives NULL", "not NULL");
        tokenizer_free(t);
    }
    /* Llama 2's own template, beside the real Llama 2 tokenizer.json. */
    snprintf(dir, sizeof(dir), "%s/llama2chat", tmp);
    mkdir_p(dir, err);
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    TEST_PATH(target, "tokenizers/llama2/tokenizer.json");
    char abs_target[PATH_MAX];
    if (!realpath(target, abs_target))
        snprintf(abs_target, sizeof(abs_target), "%s", target);
    unlink(path);
    int ok = symlink(abs_target, path) == 0;
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    const char *cfg = "{\"add_bos_token\": true, \"bos_token\": {\"content\": \"<s>\", \"lstrip\": false},"
                      " \"eos_token\": \"</s>\", \"chat_template\": \"{{ bos_token }}{% for m in messages %}"
                      "{{ '[INST] ' + m['content'] | trim + ' [/INST]' }}{% endfor %}\"}";
    ok = ok && write_file(path, cfg, strlen(cfg)) == 0;
    tokenizer *t = ok ? tokenizer_load(dir, err) : NULL;
    test_result(t && tokenizer_chat_family(t) == CHAT_LLAMA2 && tokenizer_bos_id(t) == 1, "chat family [INST] is llama2",
                "%s", t ? chat_family_name(tokenizer_chat_family(t)) : err);
    if (t) {
        char *s = tokenizer_apply_chat(t, " Hi there ");
        test_result(s && !strcmp(s, "<s>[INST] Hi there [/INST]"), "chat: llama2 wrapped prompt exact", "\"%s\"",
                    s ? show(s) : "");
        int *ids;
        int n = tokenizer_encode(t, s, 0, 1, &ids);
        /* <s> ▁[ INST ] ▁Hi ▁there ▁[ / INST ] */
        test_result(n > 3 && ids[0] == 1 && ids[1] == 518, "chat: llama2 prompt starts <s> \xe2\x96\x81[", "%d ids",
                    n);
        free(ids);
        free(s);
        tokenizer_free(t);
    }
}

static int err_names(const char *err, const char *file)
{
    return strstr(err, file) != NULL && strchr(err, '\n') == NULL;
}

static void test_malformed(const char *tmp)
{
    char path[2048], dir[1024], err[MDI_ERR_LEN];
    tokenizer *t;

    snprintf(dir, sizeof(dir), "%s/empty", tmp);
    mkdir_p(dir, err);
    err[0] = 0;
    t = tokenizer_load(dir, err);
    test_result(!t && err_names(err, dir), "malformed: folder without tokenizer.json", "\"%s\"", err);
    tokenizer_free(t);

    snprintf(path, sizeof(path), "%s/missing/tokenizer.json", tmp);
    err[0] = 0;
    t = tokenizer_load(path, err);
    test_result(!t && err_names(err, path), "malformed: missing tokenizer.json", "\"%s\"", err);
    tokenizer_free(t);

    char src[1024];
    char *data;
    size_t len;
    TEST_PATH(src, "models/stories260K/tokenizer.json");
    if (file_read_all(src, &data, &len, err) == 0) {
        snprintf(dir, sizeof(dir), "%s/truncjson", tmp);
        mkdir_p(dir, err);
        snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
        write_file(path, data, len / 2);
        err[0] = 0;
        t = tokenizer_load(dir, err);
        test_result(!t && err_names(err, path) && strstr(err, "JSON"), "malformed: truncated tokenizer.json",
                    "\"%s\"", err);
        tokenizer_free(t);
        free(data);
    }

    snprintf(path, sizeof(path), "%s/wordpiece.json", tmp);
    const char *wp = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
    write_file(path, wp, strlen(wp));
    err[0] = 0;
    t = tokenizer_load(path, err);
    test_result(!t && err_names(err, path) && strstr(err, "WordPiece"), "malformed: WordPiece model unsupported",
                "\"%s\"", err);
    tokenizer_free(t);

    snprintf(path, sizeof(path), "%s/unigram.json", tmp);
    const char *ug = "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}";
    write_file(path, ug, strlen(ug));
    err[0] = 0;
    t = tokenizer_load(path, err);
    test_result(!t && err_names(err, path) && strstr(err, "Unigram"), "malformed: Unigram model unsupported", "\"%s\"",
                err);
    tokenizer_free(t);

    TEST_PATH(src, "models/stories260K-llama2c/tok512.bin");
    if (file_read_all(src, &data, &len, err) == 0) {
        /* Cut inside the 301st token's bytes: walk the records to find it. */
        size_t off = 4;
        for (int i = 0; i < 300; i++) {
            int32_t l;
            memcpy(&l, data + off + 4, 4);
            off += 8 + (size_t)l;
        }
        snprintf(path, sizeof(path), "%s/tok_trunc.bin", tmp);
        write_file(path, data, off + 9);
        err[0] = 0;
        t = tokenizer_load(path, err);
        test_result(!t && err_names(err, path) && strstr(err, "token 300"),
                    "malformed: tokenizer.bin truncated mid-token", "\"%s\"", err);
        tokenizer_free(t);
        write_file(path, data, 2);
        err[0] = 0;
        t = tokenizer_load(path, err);
        test_result(!t && err_names(err, path), "malformed: tokenizer.bin without a header", "\"%s\"", err);
        tokenizer_free(t);
        free(data);
    }
}

/* Informational: how long the 128k-token Llama 3 tokenizer takes. */
static void bench_llama3(void)
{
    char path[1024], err[MDI_ERR_LEN], inp[1024];
    TEST_PATH(path, "tokenizers/llama3");
    double t0 = time_now();
    tokenizer *t = tokenizer_load(path, err);
    double t1 = time_now();
    if (!t)
        return;
    TEST_PATH(inp, "tokenizers/vectors/llama-bpe.inp");
    char *data;
    size_t len;
    if (file_read_all(inp, &data, &len, err) == 0) {
        size_t reps = 200, total = len * reps;
        char *big = malloc(total + 1);
        for (size_t i = 0; i < reps; i++)
            memcpy(big + i * len, data, len);
        big[total] = 0;
        int *ids;
        double t2 = time_now();
        int n = tokenizer_encode(t, big, 1, 0, &ids);
        double t3 = time_now();
        printf("# llama3 tokenizer: load %.3f s; encode %zu bytes -> %d tokens in %.3f s (%.1f MB/s)\n", t1 - t0,
               total, n, t3 - t2, (double)total / 1e6 / (t3 - t2));
        free(ids);
        free(big);
        free(data);
    }
    tokenizer_free(t);
}

int main(void)
{
    char tmp[] = "/tmp/test_tokenizer.XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_vectors("llama-bpe", "tokenizers/llama3");
    test_vectors("qwen2", "tokenizers/qwen3");
    test_vectors("llama-spm", "tokenizers/llama2");
    test_vectors_gguf(tmp);
    test_stories();
    test_stream();
    test_specials();
    test_chat(tmp);
    test_malformed(tmp);
    bench_llama3();
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmp);
    return test_failures;
}
