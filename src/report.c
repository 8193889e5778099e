/* report: the --output JSON; see report.h. */
#include "report.h"
#include "kernels.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>

#define TIME_RUN_HEADER "timestamp,model,mode,n_nodes,n_samples,n_tokens,wire_dtype,dtype,total_s," \
                        "tokens_generated,tokens_per_s,ttft_s,decode_tok_s"

void token_curve_add(token_curve *c, double t, long n)
{
    if (c->len == c->cap) {
        long cap = c->cap ? 2 * c->cap : 1024;
        double *nt = realloc(c->t, (size_t)cap * sizeof(double));
        if (!nt) return;
        c->t = nt;
        long *nn = realloc(c->n, (size_t)cap * sizeof(long));
        if (!nn) return;
        c->n = nn;
        c->cap = cap;
    }
    c->t[c->len] = t;
    c->n[c->len++] = n;
}

void token_curve_free(token_curve *c)
{
    free(c->t);
    free(c->n);
    memset(c, 0, sizeof(*c));
}

void run_stats_free(run_stats *st)
{
    token_curve_free(&st->curve);
}

void report_model_name(const char *ckpt, char *out, size_t cap)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", ckpt ? ckpt : "model");
    size_t l = strlen(buf);
    while (l > 1 && buf[l - 1] == '/') buf[--l] = 0;
    const char *base = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
    size_t k = 0;
    for (const char *c = base; *c && k + 1 < cap; c++)
        out[k++] = (isalnum((unsigned char)*c) || *c == '-' || *c == '.') ? *c : '_';
    out[k] = 0;
}

int report_write_time_run(const char *path, const char *model, const char *mode, int n_nodes, int n_samples,
                          int n_tokens, const run_stats *st, char *err)
{
    char dir[4096];
    path_dirname(path, dir, sizeof(dir));
    int rc;
    char why[MDI_ERR_LEN];
    if (strcmp(dir, ".") && (rc = mkdir_p(dir, why)))
        return mdi_fail(err, rc, "--time-run %s: %s", path, why);
    FILE *f = fopen(path, "a+");
    if (!f)
        return mdi_fail(err, MDI_EIO, "--time-run %s: cannot open for appending: %s", path, strerror(errno));
    char first[1024] = "";
    rewind(f);
    int empty = !fgets(first, sizeof(first), f);
    first[strcspn(first, "\r\n")] = 0;
    if (!empty && strcmp(first, TIME_RUN_HEADER)) {
        fclose(f);
        return mdi_fail(err, MDI_EFORMAT, "--time-run %s: its first line is not this CSV's header (\"%.60s%s\"); "
                        "nothing appended: give a new file or one written by --time-run", path, first,
                        strlen(first) > 60 ? "..." : "");
    }
    fseek(f, 0, SEEK_END);
    if (empty)
        fprintf(f, "%s\n", TIME_RUN_HEADER);
    fprintf(f, "%ld,%s,%s,%d,%d,%d,%s,%s,%.6f,%ld,%.4f,%.6f,%.4f\n", (long)time(NULL), model, mode, n_nodes,
            n_samples, n_tokens, st->wire_dtype ? st->wire_dtype : "-", st->dtype ? st->dtype : "-", st->total_s,
            st->tokens_generated, st->total_s > 0 ? st->tokens_generated / st->total_s : 0, st->ttft_s,
            st->decode_tok_s);
    if (fclose(f) != 0)
        return mdi_fail(err, MDI_EIO, "--time-run %s: write failed: %s", path, strerror(errno));
    return MDI_OK;
}

int report_write_plots(const char *model, int n_nodes, int n_samples, const token_curve *c, char *err)
{
    char csv[512], png[512];
    int rc;
    char why[MDI_ERR_LEN];
    if ((rc = mkdir_p("logs", why)) || (rc = mkdir_p("plots", why)))
        return mdi_fail(err, rc, "--plots: %s", why);
    snprintf(csv, sizeof(csv), "logs/tokens_time_%s_%dnodes_%dsamples.csv", model, n_nodes, n_samples);
    snprintf(png, sizeof(png), "plots/tokens_time_%s_%dnodes_%dsamples.png", model, n_nodes, n_samples);
    FILE *f = fopen(csv, "w");
    if (!f)
        return mdi_fail(err, MDI_EIO, "--plots: %s: cannot create: %s", csv, strerror(errno));
    fprintf(f, "time_s,tokens\n");
    for (long i = 0; i < c->len; i++)
        fprintf(f, "%.6f,%ld\n", c->t[i], c->n[i]);
    if (fclose(f) != 0)
        return mdi_fail(err, MDI_EIO, "--plots: %s: write failed: %s", csv, strerror(errno));
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "gnuplot -e \"set terminal pngcairo size 800,500; set output '%s'; set datafile separator ',';"
             " set key left top; set xlabel 'time (s)'; set ylabel 'generated tokens';"
             " set title '%s, %d node%s, %d sample%s';"
             " plot '%s' every ::1 using 1:2 with lines lw 2 title 'tokens'\" 2>/dev/null"
             " || gnuplot -e \"set terminal png size 800,500; set output '%s'; set datafile separator ',';"
             " plot '%s' every ::1 using 1:2 with lines title 'tokens'\" 2>/dev/null",
             png, model, n_nodes, n_nodes > 1 ? "s" : "", n_samples, n_samples > 1 ? "s" : "", csv, png, csv);
    if (system(cmd) != 0 || !file_exists(png))
        log_warn("--plots: gnuplot could not draw %s; the curve is in %s", png, csv);
    else
        log_info("--plots: %s, %s", csv, png);
    return MDI_OK;
}

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
        json_object_set_new(o, "pos_start", json_integer(r->pos_start));
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
    json_t *below = json_object();
    json_object_set_new(below, "q8_0", json_integer(kernels_int8_prefill_below(DTYPE_Q8_0)));
    json_object_set_new(below, "q4_0", json_integer(kernels_int8_prefill_below(DTYPE_Q4_0)));
    json_object_set_new(s, "int8_prefill_below", below);
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
    errno = 0;
    if (json_dump_file(root, tmp, JSON_INDENT(1)) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        rc = mdi_fail(err, MDI_EIO, "--output %s: cannot write the output JSON%s%s", path, e ? ": " : "",
                      e ? strerror(e) : "");
    }
    json_decref(root);
    return rc;
}
