/*
 * bench_load: a load generator for OpenAI-compatible completion services
 * (ours, `bin/starter --serve`, and llama.cpp's llama-server alike).
 *
 *   bin/bench_load --url http://127.0.0.1:8080 [--concurrency 1,2,4,8,16]
 *                  [--requests N | --duration S] [--prompt-words N | --prompt TEXT]
 *                  [--max-tokens N] [--model ID] [--engine LABEL] [--nodes N]
 *                  [--model-label LABEL] [--csv FILE] [--timeout S] [--no-warmup]
 *
 * For each concurrency C in the list, C clients run at once (one libcurl
 * multi handle, one easy handle and keep-alive connection per client), each
 * sending requests one after the other: --requests N each, or as many as
 * start within --duration S seconds (those running at the deadline finish
 * and count). Every request is the same:
 *
 *   POST {url}/v1/completions
 *   {"model": ID, "prompt": TEXT, "max_tokens": N, "temperature": 0,
 *    "stream": true, "stream_options": {"include_usage": true},
 *    "ignore_eos": true, "cache_prompt": false, "timings_per_token": true}
 *
 * ignore_eos, cache_prompt and timings_per_token are llama-server's
 * extensions: generate exactly max_tokens tokens, prefill the whole prompt
 * every time (no prefix reuse between requests: every request pays the same
 * prefill on either engine), and say in each chunk how many tokens it has
 * generated so far. A service that does not know them ignores them.
 *
 * The answer is a server-sent event stream, one `data: {json}` line per
 * chunk, `data: [DONE]` last. A chunk whose choices[0].text is non-empty,
 * or empty with no finish_reason (a token whose text is not yet a whole
 * UTF-8 character), carries tokens: as many as its timings.predicted_n
 * advanced when it has one, else one. The request's token count is the
 * stream's usage.completion_tokens when it has one (no fewer chunks' tokens
 * counted than that), else the tokens counted. A request is an error unless
 * it answers 200, ends its stream ([DONE] or a finish_reason) and delivers
 * exactly max_tokens tokens: a stream cut short or stopped early can not
 * inflate the figures. Errors are counted and the first few printed.
 *
 * Per request: time to first token (TTFT: from sending to the first chunk
 * with a token) and each gap between chunks with tokens, divided evenly over
 * the tokens of the later chunk (per-token latency, TPOT). Per concurrency:
 * aggregate tokens/s = tokens of the successful requests / wall time (from
 * the first request sent to the last stream ended), TTFT and TPOT p50/p99
 * (nearest rank, successful requests only), requests, errors; printed, and
 * appended as one CSV row to --csv (header written when the file is new):
 *
 *   engine,nodes,model,concurrency,prompt_tokens,max_tokens,requests,errors,
 *   tokens,wall_s,tok_s,ttft_p50_ms,ttft_p99_ms,tpot_p50_ms,tpot_p99_ms
 *
 * prompt_tokens is the server's usage.prompt_tokens (0 when it gives none).
 * One warm-up request runs first and is not counted.
 *
 * $OPENAI_API_KEY, when set, is sent as "Authorization: Bearer KEY".
 *
 * Exit status: 0 when every request succeeded, 1 when some failed, 2 on bad
 * arguments or when the warm-up fails (the server unreachable, or wrong).
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

#define LOAD_MAX_CLIENTS 1024
#define LOAD_MAX_LEVELS 64
#define LOAD_ERRORS_SHOWN 5

/* A growing array of samples (milliseconds). */
typedef struct {
    double *v;
    size_t n, cap;
} load_series;

static int load_series_push(load_series *s, double x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        double *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

static int load_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0..1) of s (sorted in place); 0 when empty. */
static double load_series_pct(load_series *s, double p)
{
    if (!s->n) return 0;
    qsort(s->v, s->n, sizeof *s->v, load_cmp_double);
    size_t k = (size_t)ceil(p * (double)s->n);
    if (k < 1) k = 1;
    if (k > s->n) k = s->n;
    return s->v[k - 1];
}

/* One client: its easy handle and the state of the request in flight. */
typedef struct {
    CURL *h;
    int id, active, n_sent;
    double t_send, t_prev;     /* sent; the last chunk with tokens */
    double ttft_ms;            /* -1 until the first token */
    long counted;              /* tokens counted from the chunks */
    long usage_tokens;         /* usage.completion_tokens, -1 when absent */
    long usage_prompt;         /* usage.prompt_tokens, -1 when absent */
    int ended;                 /* [DONE] or a finish_reason seen */
    char finish[32];
    char why[256];             /* the first thing found wrong, "" if none */
    char *line;                /* the SSE line being received */
    size_t line_len, line_cap;
    char body[512];            /* the start of a body that is not SSE (errors) */
    size_t body_len;
    load_series gaps;          /* this request's per-token gaps (ms) */
} load_client;

/* What one concurrency level measured. */
typedef struct {
    int requests, errors, errors_shown;
    long tokens, prompt_tokens;
    double t0, t_end;
    load_series ttft, tpot;
} load_level;

typedef struct {
    const char *url, *engine, *model_label, *csv, *prompt;
    char model[256];
    int max_tokens, requests_per_client, nodes, warmup;
    double duration_s, timeout_s;
    int levels[LOAD_MAX_LEVELS], n_levels;
    char *request_body;        /* the one body every request sends */
} load_options;

static void load_client_fail(load_client *c, const char *fmt, const char *detail)
{
    if (c->why[0]) return;
    snprintf(c->why, sizeof c->why, fmt, detail);
}

/* One `data:` payload of the stream. */
static void load_client_event(load_client *c, const char *data)
{
    double t = time_now();
    if (!strcmp(data, "[DONE]")) {
        c->ended = 1;
        return;
    }
    json_error_t jerr;
    json_t *j = json_loads(data, 0, &jerr);
    if (!j) {
        load_client_fail(c, "a chunk is not JSON: %.120s", data);
        return;
    }
    json_t *e = json_object_get(j, "error");
    if (e) {
        json_t *m = json_is_object(e) ? json_object_get(e, "message") : e;
        load_client_fail(c, "error in the stream: %.200s", json_is_string(m) ? json_string_value(m) : data);
        json_decref(j);
        return;
    }
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage)) {
        json_t *ct = json_object_get(usage, "completion_tokens"), *pt = json_object_get(usage, "prompt_tokens");
        if (json_is_integer(ct)) c->usage_tokens = (long)json_integer_value(ct);
        if (json_is_integer(pt)) c->usage_prompt = (long)json_integer_value(pt);
    }
    json_t *choices = json_object_get(j, "choices");
    json_t *ch = json_is_array(choices) ? json_array_get(choices, 0) : NULL;
    if (ch) {
        json_t *text = json_object_get(ch, "text");
        json_t *fin = json_object_get(ch, "finish_reason");
        int finished = json_is_string(fin);
        if (finished) {
            snprintf(c->finish, sizeof c->finish, "%s", json_string_value(fin));
            c->ended = 1;
        }
        if (json_is_string(text) && (json_string_length(text) > 0 || !finished)) {
            long k = 1;
            json_t *pn = json_object_get(json_object_get(j, "timings"), "predicted_n");
            if (json_is_integer(pn) && json_integer_value(pn) > c->counted)
                k = (long)json_integer_value(pn) - c->counted;
            if (c->ttft_ms < 0) {
                c->ttft_ms = 1e3 * (t - c->t_send);
            } else {
                double gap = 1e3 * (t - c->t_prev) / (double)k;
                for (long i = 0; i < k; i++)
                    if (load_series_push(&c->gaps, gap) != 0) load_client_fail(c, "%s", "out of memory");
            }
            c->t_prev = t;
            c->counted += k;
        }
    }
    json_decref(j);
}

static void load_client_line(load_client *c, char *line, size_t n)
{
    if (n && line[n - 1] == '\r') line[--n] = 0;
    if (!strncmp(line, "data:", 5)) {
        const char *d = line + 5;
        while (*d == ' ') d++;
        load_client_event(c, d);
    } else if (n && line[0] != ':' && strncmp(line, "event:", 6) && strncmp(line, "id:", 3) &&
               strncmp(line, "retry:", 6)) {
        /* not SSE: keep the start (an error body) */
        size_t room = sizeof c->body - 1 - c->body_len;
        size_t k = n < room ? n : room;
        memcpy(c->body + c->body_len, line, k);
        c->body_len += k;
        c->body[c->body_len] = 0;
    }
}

static size_t load_on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    load_client *c = ud;
    size_t n = size * nmemb;
    for (size_t i = 0; i < n; i++) {
        if (c->line_len + 2 > c->line_cap) {
            size_t cap = c->line_cap ? 2 * c->line_cap : 4096;
            char *l = realloc(c->line, cap);
            if (!l) return 0; /* libcurl ends the request: counted as an error */
            c->line = l;
            c->line_cap = cap;
        }
        if (p[i] == '\n') {
            c->line[c->line_len] = 0;
            load_client_line(c, c->line, c->line_len);
            c->line_len = 0;
        } else {
            c->line[c->line_len++] = p[i];
        }
    }
    return n;
}

static void load_client_reset(load_client *c)
{
    c->ttft_ms = -1;
    c->counted = 0;
    c->usage_tokens = c->usage_prompt = -1;
    c->ended = 0;
    c->finish[0] = c->why[0] = c->body[0] = 0;
    c->body_len = c->line_len = 0;
    c->gaps.n = 0;
}

static int load_client_send(CURLM *m, load_client *c)
{
    load_client_reset(c);
    c->t_send = time_now();
    c->active = 1;
    c->n_sent++;
    return curl_multi_add_handle(m, c->h) == CURLM_OK ? 0 : -1;
}

/* The request in c has ended (res: libcurl's outcome): checks it and adds
 * its figures to lv. Returns 1 if it succeeded. */
static int load_client_finish(const load_options *o, load_client *c, CURLcode res, load_level *lv)
{
    long status = 0;
    curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &status);
    if (c->line_len) { /* a last line with no newline (the write callback left room for the 0) */
        c->line[c->line_len] = 0;
        load_client_line(c, c->line, c->line_len);
        c->line_len = 0;
    }
    char why[400];
    why[0] = 0;
    long tokens = c->usage_tokens >= 0 ? c->usage_tokens : c->counted;
    if (res != CURLE_OK)
        snprintf(why, sizeof why, "%s", curl_easy_strerror(res));
    else if (status != 200)
        snprintf(why, sizeof why, "HTTP %ld: %.200s", status, c->body);
    else if (c->why[0])
        snprintf(why, sizeof why, "%s", c->why);
    else if (!c->ended)
        snprintf(why, sizeof why, "the stream ended without [DONE] or a finish_reason after %ld tokens", c->counted);
    else if (c->usage_tokens >= 0 && c->counted > c->usage_tokens)
        snprintf(why, sizeof why, "%ld tokens in the chunks but usage.completion_tokens %ld", c->counted,
                 c->usage_tokens);
    else if (tokens != o->max_tokens)
        snprintf(why, sizeof why, "%ld tokens, not max_tokens %d (finish_reason %s)", tokens, o->max_tokens,
                 c->finish[0] ? c->finish : "none");
    else if (c->ttft_ms < 0)
        snprintf(why, sizeof why, "%s", "no chunk carried a token");
    lv->requests++;
    if (why[0]) {
        lv->errors++;
        if (lv->errors_shown++ < LOAD_ERRORS_SHOWN)
            fprintf(stderr, "bench_load: client %d request %d: %s\n", c->id, c->n_sent, why);
        return 0;
    }
    lv->tokens += tokens;
    if (c->usage_prompt >= 0) lv->prompt_tokens = c->usage_prompt;
    int oom = load_series_push(&lv->ttft, c->ttft_ms);
    for (size_t i = 0; i < c->gaps.n; i++) oom |= load_series_push(&lv->tpot, c->gaps.v[i]);
    if (oom) fprintf(stderr, "bench_load: out of memory for the figures\n");
    return 1;
}

static int load_client_init(const load_options *o, load_client *c, int id, struct curl_slist *hdr)
{
    memset(c, 0, sizeof *c);
    c->id = id;
    c->h = curl_easy_init();
    if (!c->h) return -1;
    char url[1024];
    snprintf(url, sizeof url, "%s/v1/completions", o->url);
    curl_easy_setopt(c->h, CURLOPT_URL, url);
    curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, o->request_body);
    curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, load_on_write);
    curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c->h, CURLOPT_TIMEOUT_MS, (long)(o->timeout_s * 1e3));
    curl_easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    return 0;
}

static void load_client_free(load_client *c)
{
    if (c->h) curl_easy_cleanup(c->h);
    free(c->line);
    free(c->gaps.v);
}

/* Runs one level: n clients at once. */
static int load_run_level(const load_options *o, CURLM *m, load_client *cl, int n, load_level *lv)
{
    memset(lv, 0, sizeof *lv);
    for (int i = 0; i < n; i++) cl[i].n_sent = 0;
    lv->t0 = time_now();
    double deadline = lv->t0 + o->duration_s;
    int active = 0;
    for (int i = 0; i < n; i++) {
        if (load_client_send(m, &cl[i]) != 0) return -1;
        active++;
    }
    while (active > 0) {
        int running = 0;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL *h = msg->easy_handle;
            CURLcode res = msg->data.result;
            load_client *c = NULL;
            for (int i = 0; i < n; i++)
                if (cl[i].h == h) c = &cl[i];
            curl_multi_remove_handle(m, h);
            if (!c) continue;
            c->active = 0;
            active--;
            load_client_finish(o, c, res, lv);
            lv->t_end = time_now();
            int more = o->requests_per_client > 0 ? c->n_sent < o->requests_per_client : time_now() < deadline;
            if (more) {
                if (load_client_send(m, c) != 0) return -1;
                active++;
            }
        }
        if (active > 0) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    return 0;
}

typedef struct {
    char *p;
    size_t n;
} load_buf;

static size_t load_on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    load_buf *b = ud;
    size_t n = size * nmemb;
    if (b->n + n > (1u << 20)) return 0;
    char *q = realloc(b->p, b->n + n + 1);
    if (!q) return 0;
    memcpy(q + b->n, p, n);
    b->p = q;
    b->n += n;
    q[b->n] = 0;
    return n;
}

/* The first model id of GET /v1/models, into o->model ("default" if none). */
static void load_fetch_model(load_options *o)
{
    snprintf(o->model, sizeof o->model, "default");
    CURL *h = curl_easy_init();
    if (!h) return;
    char url[1024];
    snprintf(url, sizeof url, "%s/v1/models", o->url);
    load_buf b = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, load_on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    if (curl_easy_perform(h) == CURLE_OK && b.p) {
        json_t *j = json_loads(b.p, 0, NULL);
        json_t *id = json_object_get(json_array_get(json_object_get(j, "data"), 0), "id");
        if (json_is_string(id)) snprintf(o->model, sizeof o->model, "%s", json_string_value(id));
        json_decref(j);
    }
    free(b.p);
    curl_easy_cleanup(h);
}

/* A prompt of n common English words, each one token in Llama's vocabulary
 * (other tokenizers: the server's usage.prompt_tokens says the count). */
static char *load_make_prompt(int n)
{
    static const char *words[] = {"the", "of", "and", "to", "in", "is", "was", "for", "on", "that",
                                  "with", "as", "it", "at", "by", "from", "his", "he", "she", "they"};
    size_t nw = sizeof words / sizeof words[0];
    char *s = malloc((size_t)n * 8 + 1);
    if (!s) return NULL;
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)sprintf(s + len, "%s%s", i ? " " : "", words[(size_t)i * 7 % nw]);
    s[len] = 0;
    return s;
}

static int load_parse_levels(load_options *o, const char *s)
{
    o->n_levels = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > LOAD_MAX_CLIENTS || o->n_levels == LOAD_MAX_LEVELS) return -1;
        o->levels[o->n_levels++] = (int)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return o->n_levels ? 0 : -1;
}

static int load_usage(void)
{
    fprintf(stderr,
            "usage: bench_load --url URL [--concurrency 1,2,4,8,16] [--requests N | --duration S]\n"
            "                  [--prompt-words N | --prompt TEXT] [--max-tokens N] [--model ID]\n"
            "                  [--engine LABEL] [--nodes N] [--model-label LABEL] [--csv FILE]\n"
            "                  [--timeout S] [--no-warmup]\n"
            "defaults: concurrency 1,2,4,8,16, --duration 20, --prompt-words 32, --max-tokens 32,\n"
            "          the model: the first of GET /v1/models; engine \"server\", nodes 1\n");
    return 2;
}

int main(int argc, char **argv)
{
    load_options o = {.engine = "server", .model_label = "", .max_tokens = 32, .nodes = 1, .warmup = 1,
                      .duration_s = 20, .timeout_s = 600};
    const char *levels = "1,2,4,8,16", *model = NULL;
    int prompt_words = 32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define LOAD_ARG(name) (!strcmp(a, name) && v && (i++, 1))
        if (LOAD_ARG("--url")) o.url = v;
        else if (LOAD_ARG("--concurrency")) levels = v;
        else if (LOAD_ARG("--requests")) o.requests_per_client = atoi(v);
        else if (LOAD_ARG("--duration")) o.duration_s = atof(v), o.requests_per_client = 0;
        else if (LOAD_ARG("--prompt-words")) prompt_words = atoi(v);
        else if (LOAD_ARG("--prompt")) o.prompt = v;
        else if (LOAD_ARG("--max-tokens")) o.max_tokens = atoi(v);
        else if (LOAD_ARG("--model")) model = v;
        else if (LOAD_ARG("--engine")) o.engine = v;
        else if (LOAD_ARG("--nodes")) o.nodes = atoi(v);
        else if (LOAD_ARG("--model-label")) o.model_label = v;
        else if (LOAD_ARG("--csv")) o.csv = v;
        else if (LOAD_ARG("--timeout")) o.timeout_s = atof(v);
        else if (!strcmp(a, "--no-warmup")) o.warmup = 0;
        else {
            fprintf(stderr, "bench_load: unknown or incomplete argument %s\n", a);
            return load_usage();
        }
#undef LOAD_ARG
    }
    if (!o.url) return load_usage();
    if (load_parse_levels(&o, levels) != 0) {
        fprintf(stderr, "bench_load: --concurrency %s: want a comma-separated list of 1..%d\n", levels,
                LOAD_MAX_CLIENTS);
        return 2;
    }
    if (o.max_tokens < 1 || prompt_words < 1 || o.nodes < 1 || o.timeout_s <= 0 ||
        (o.requests_per_client <= 0 && o.duration_s <= 0)) {
        fprintf(stderr, "bench_load: --max-tokens, --prompt-words, --nodes, --timeout and --requests or "
                        "--duration must be positive\n");
        return 2;
    }
    size_t ul = strlen(o.url);
    char *url = strdup(o.url);
    while (ul && url[ul - 1] == '/') url[--ul] = 0;
    o.url = url;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (model) snprintf(o.model, sizeof o.model, "%s", model);
    else load_fetch_model(&o);
    char *made = o.prompt ? NULL : load_make_prompt(prompt_words);
    json_t *req = json_pack("{s:s, s:s, s:i, s:i, s:b, s:{s:b}, s:b, s:b, s:b}", "model", o.model, "prompt",
                            o.prompt ? o.prompt : made, "max_tokens", o.max_tokens, "temperature", 0, "stream", 1,
                            "stream_options", "include_usage", 1, "ignore_eos", 1, "cache_prompt", 0,
                            "timings_per_token", 1);
    o.request_body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    free(made);
    if (!o.request_body) {
        fprintf(stderr, "bench_load: cannot build the request (is the prompt UTF-8?)\n");
        return 2;
    }

    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Accept: text/event-stream");
    hdr = curl_slist_append(hdr, "Expect:"); /* a long prompt must not wait for "100 Continue" */
    const char *key = getenv("OPENAI_API_KEY");
    char auth[512];
    if (key && *key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        hdr = curl_slist_append(hdr, auth);
    }
    int max_c = 0;
    for (int i = 0; i < o.n_levels; i++)
        if (o.levels[i] > max_c) max_c = o.levels[i];
    load_client *cl = calloc((size_t)max_c, sizeof *cl);
    CURLM *m = curl_multi_init();
    int rc = 0;
    if (!cl || !m) {
        fprintf(stderr, "bench_load: out of memory\n");
        rc = 2;
        goto cleanup;
    }
    for (int i = 0; i < max_c; i++)
        if (load_client_init(&o, &cl[i], i, hdr) != 0) {
            fprintf(stderr, "bench_load: curl_easy_init failed\n");
            rc = 2;
            goto cleanup;
        }
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_c);

    printf("bench_load: %s/v1/completions, engine %s, %d node%s, model %s%s%s; prompt %s%d%s, %d new tokens, "
           "greedy\n", o.url, o.engine, o.nodes, o.nodes == 1 ? "" : "s", o.model, o.model_label[0] ? " as " : "",
           o.model_label, o.prompt ? "given (" : "", o.prompt ? (int)strlen(o.prompt) : prompt_words,
           o.prompt ? " bytes)" : " words", o.max_tokens);
    if (o.requests_per_client > 0) printf("bench_load: %d requests per client\n", o.requests_per_client);
    else printf("bench_load: requests started for %.0f s per concurrency\n", o.duration_s);

    load_level lv;
    long prompt_tokens = 0;
    if (o.warmup) {
        load_options w = o;
        w.requests_per_client = 1;
        load_run_level(&w, m, cl, 1, &lv);
        if (lv.errors) {
            fprintf(stderr, "bench_load: the warm-up request failed (above); stopping\n");
            rc = 2;
            goto cleanup;
        }
        prompt_tokens = lv.prompt_tokens;
        printf("bench_load: warm-up: %ld prompt tokens (server's count), TTFT %.1f ms, %ld tokens in %.2f s\n",
               prompt_tokens, lv.ttft.n ? lv.ttft.v[0] : 0, lv.tokens, lv.t_end - lv.t0);
        free(lv.ttft.v);
        free(lv.tpot.v);
    }

    FILE *csv = NULL;
    if (o.csv) {
        csv = fopen(o.csv, "a");
        if (!csv) {
            fprintf(stderr, "bench_load: %s: %s\n", o.csv, strerror(errno));
            rc = 2;
            goto cleanup;
        }
        if (ftell(csv) == 0)
            fprintf(csv, "engine,nodes,model,concurrency,prompt_tokens,max_tokens,requests,errors,tokens,wall_s,"
                         "tok_s,ttft_p50_ms,ttft_p99_ms,tpot_p50_ms,tpot_p99_ms\n");
    }
    printf("%11s %8s %6s %7s %8s %9s %10s %10s %10s %10s\n", "concurrency", "requests", "errors", "tokens",
           "wall_s", "tok/s", "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99");
    for (int li = 0; li < o.n_levels; li++) {
        int n = o.levels[li];
        if (load_run_level(&o, m, cl, n, &lv) != 0) {
            fprintf(stderr, "bench_load: libcurl refused a request\n");
            rc = 2;
            break;
        }
        double wall = lv.t_end - lv.t0;
        double tok_s = wall > 0 ? (double)lv.tokens / wall : 0;
        if (lv.prompt_tokens) prompt_tokens = lv.prompt_tokens;
        double t50 = load_series_pct(&lv.ttft, 0.5), t99 = load_series_pct(&lv.ttft, 0.99);
        double p50 = load_series_pct(&lv.tpot, 0.5), p99 = load_series_pct(&lv.tpot, 0.99);
        printf("%11d %8d %6d %7ld %8.2f %9.2f %8.1fms %8.1fms %8.1fms %8.1fms\n", n, lv.requests, lv.errors,
               lv.tokens, wall, tok_s, t50, t99, p50, p99);
        fflush(stdout);
        if (csv) {
            fprintf(csv, "%s,%d,%s,%d,%ld,%d,%d,%d,%ld,%.3f,%.3f,%.2f,%.2f,%.2f,%.2f\n", o.engine, o.nodes,
                    o.model_label[0] ? o.model_label : o.model, n, prompt_tokens, o.max_tokens, lv.requests,
                    lv.errors, lv.tokens, wall, tok_s, t50, t99, p50, p99);
            fflush(csv);
        }
        if (lv.errors) rc = rc ? rc : 1;
        free(lv.ttft.v);
        free(lv.tpot.v);
    }
    if (csv && fclose(csv) != 0) {
        fprintf(stderr, "bench_load: %s: %s\n", o.csv, strerror(errno));
        rc = 2;
    }

cleanup:
    for (int i = 0; cl && i < max_c; i++) load_client_free(&cl[i]);
    free(cl);
    if (m) curl_multi_cleanup(m);
    curl_slist_free_all(hdr);
    free(o.request_body);
    free(url);
    curl_global_cleanup();
    return rc;
}
