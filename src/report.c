/* report: the --output JSON; see report.h. */
#include "report.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdio.h>

void sample_result_append_text(sample_result *r, const char *s)
{
    size_t n = strlen(s);
    if (r->text_len + n + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap : 256;
        while (cap < r->text_len + n + 1)
            cap *= 2;
        char *t = realloc(r->text, cap);
        if (!t)
            return;
        r->text = t;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, s, n + 1);
    r->text_len += n;
}

void sample_result_free(sample_result *r)
{
    free(r->prompt);
    free(r->prompt_ids);
    free(r->generated_ids);
    free(r->text);
    memset(r, 0, sizeof(*r));
}

static json_t *ids_json(const int *ids, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

int report_write_json(const char *path, const char *model, const char *mode, int n_nodes,
                      const sample_result *samples, int n_samples, const run_stats *st,
                      json_t *nodes, char *err)
{
    json_t *root = json_object();
    json_object_set_new(root, "model", json_string(model ? model : ""));
    json_object_set_new(root, "mode", json_string(mode));
    json_object_set_new(root, "n_nodes", json_integer(n_nodes));
    json_t *arr = json_array();
    for (int i = 0; i < n_samples; i++) {
        const sample_result *r = &samples[i];
        json_t *o = json_object();
        json_object_set_new(o, "prompt", json_string(r->prompt ? r->prompt : ""));
        json_object_set_new(o, "prompt_ids", ids_json(r->prompt_ids, r->n_prompt));
        json_object_set_new(o, "generated_ids", ids_json(r->generated_ids, r->n_generated));
        /* json_string rejects invalid UTF-8; the decoder never emits it, but
         * a model can generate stray byte tokens at the very end */
        json_t *t = json_string(r->text ? r->text : "");
        json_object_set_new(o, "text", t ? t : json_stringn_nocheck(r->text, r->text_len));
        json_object_set_new(o, "n_generated", json_integer(r->n_generated));
        json_object_set_new(o, "ttft_s", json_real(r->t_first_token));
        json_object_set_new(o, "done_s", json_real(r->t_done));
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "samples", arr);
    json_t *s = json_object();
    json_object_set_new(s, "ttft_s", json_real(st->ttft_s));
    json_object_set_new(s, "prefill_tok_s", json_real(st->prefill_tok_s));
    json_object_set_new(s, "decode_tok_s", json_real(st->decode_tok_s));
    json_object_set_new(s, "total_s", json_real(st->total_s));
    json_object_set_new(s, "tokens_generated", json_integer(st->tokens_generated));
    json_object_set_new(s, "peak_rss_bytes", json_integer((json_int_t)st->peak_rss_bytes));
    json_object_set_new(s, "weight_bytes_per_token", json_integer((json_int_t)st->weight_bytes_per_token));
    json_object_set_new(s, "blas_core", json_string(st->blas_core ? st->blas_core : ""));
    json_object_set_new(s, "simd", json_string(st->simd ? st->simd : ""));
    json_object_set_new(s, "n_threads", json_integer(st->n_threads));
    json_object_set_new(s, "dtype", json_string(st->dtype ? st->dtype : ""));
    if (st->wire_dtype)
        json_object_set_new(s, "wire_dtype", json_string(st->wire_dtype));
    if (st->kv_dtype)
        json_object_set_new(s, "kv_dtype", json_string(st->kv_dtype));
    json_object_set_new(s, "kv_bytes", json_integer((json_int_t)st->kv_bytes));
    json_object_set_new(root, "stats", s);
    if (nodes)
        json_object_set_new(root, "nodes", nodes);
    int rc = MDI_OK;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (json_dump_file(root, tmp, JSON_INDENT(1)) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        rc = mdi_fail(err, MDI_EIO, "%s: cannot write the output JSON", path);
    }
    json_decref(root);
    return rc;
}
