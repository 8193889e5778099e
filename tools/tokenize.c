/*
 * tokenize: token ids of texts with the project's tokenizer, to compare
 * with another implementation or to see what a prompt becomes.
 *
 *   tokenize TOKENIZER [--no-parse-special] [--bos] TEXT...
 *   tokenize TOKENIZER [--no-parse-special] [--bos] --json FILE
 *   tokenize TOKENIZER --info
 *
 * TOKENIZER: a folder with tokenizer.json (or a llama2.c checkpoint's), as
 * the starter loads it. Special tokens written in a text are recognised as
 * Hugging Face does unless --no-parse-special; --bos adds BOS when the
 * tokenizer's configuration says so (the starter's plain prompts do).
 * TEXT...: one line of comma-separated ids per text. --json FILE: FILE holds
 * a JSON array of strings; prints a JSON array of id arrays. --info: one
 * line, "vocab N bos ID pad ID eos ID,ID adds_bos 0|1" (-1: none).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "util.h"

static void usage(FILE *f, const char *argv0)
{
    fprintf(f, "usage: %s TOKENIZER [--no-parse-special] [--bos] (TEXT... | --json FILE | --info)\n", argv0);
}

int main(int argc, char **argv)
{
    log_set_tag("tokenize");
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout, argv[0]);
        return argc < 2 ? 2 : 0;
    }
    int parse_special = 1, bos = 0, first_text = -1, info = 0;
    const char *json_file = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--no-parse-special")) parse_special = 0;
        else if (!strcmp(argv[i], "--bos")) bos = 1;
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json_file = argv[++i];
        else if (!strcmp(argv[i], "--info")) info = 1;
        else if (first_text < 0) first_text = i;
    }
    char err[MDI_ERR_LEN];
    tokenizer *t = tokenizer_load(argv[1], err);
    if (!t) {
        log_error("%s", err);
        return 1;
    }
    int add_bos = bos && tokenizer_adds_bos(t), status = 0;
    if (info) {
        const int *eos;
        int n_eos = tokenizer_eos_ids(t, &eos);
        printf("vocab %d bos %d pad %d eos ", tokenizer_vocab_size(t), tokenizer_bos_id(t), tokenizer_pad_id(t));
        for (int i = 0; i < n_eos; i++)
            printf("%s%d", i ? "," : "", eos[i]);
        printf("%s adds_bos %d\n", n_eos ? "" : "-1", tokenizer_adds_bos(t));
    } else if (json_file) {
        json_error_t je;
        json_t *texts = json_load_file(json_file, 0, &je);
        if (!json_is_array(texts)) {
            log_error("%s: expected a JSON array of strings (%s)", json_file, je.text);
            tokenizer_free(t);
            json_decref(texts);
            return 1;
        }
        json_t *out = json_array();
        size_t k;
        json_t *v;
        json_array_foreach(texts, k, v) {
            int *ids = NULL;
            int n = tokenizer_encode(t, json_string_value(v) ? json_string_value(v) : "", add_bos, parse_special,
                                     &ids);
            json_t *a = json_array();
            for (int j = 0; j < n; j++)
                json_array_append_new(a, json_integer(ids[j]));
            json_array_append_new(out, a);
            free(ids);
            if (n < 0)
                status = 1;
        }
        char *s = json_dumps(out, JSON_COMPACT);
        puts(s);
        free(s);
        json_decref(out);
        json_decref(texts);
    } else {
        for (int i = first_text; i > 0 && i < argc; i++) {
            if (!strcmp(argv[i], "--no-parse-special") || !strcmp(argv[i], "--bos"))
                continue;
            int *ids = NULL;
            int n = tokenizer_encode(t, argv[i], add_bos, parse_special, &ids);
            for (int j = 0; j < n; j++)
                printf("%s%d", j ? "," : "", ids[j]);
            putchar('\n');
            free(ids);
            if (n < 0)
                status = 1;
        }
    }
    tokenizer_free(t);
    return status;
}
