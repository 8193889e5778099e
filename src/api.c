/*
 * api: the OpenAI-compatible service. Routes, fields and errors are
 * described in api.h.
 *
 * One call (api_call) per generating request, shared by the connection's
 * thread (which parses, submits, and answers or streams) and the engine
 * thread (whose callbacks collect the text). Two references: the engine's,
 * dropped at the end of on_done, and the answer's, dropped by the handler
 * (a buffered answer) or when the streamed answer is over. Lock order: a
 * stream's lock, then the call's; the engine thread never writes to a
 * stream while it holds the call's lock.
 */
#include "api.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define API_TIMEOUT_S 30.0

/* Latency histograms' upper bounds, seconds. */
static const double api_buckets[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
#define API_N_BUCKETS (int)(sizeof(api_buckets) / sizeof(api_buckets[0]))

typedef struct {
    long count[API_N_BUCKETS + 1]; /* the last: above every bound */
    double sum;
    long n;
} api_histogram;

enum { EP_CHAT, EP_COMPLETIONS, EP_MODELS, EP_HEALTH, EP_METRICS, EP_OTHER, EP_COUNT };
static const char *const api_endpoint_names[EP_COUNT] = {
    "/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "other",
};
static const unsigned api_codes[] = { 200, 400, 401, 404, 405, 413, 429, 500, 503 };
#define API_N_CODES (int)(sizeof(api_codes) / sizeof(api_codes[0]))

struct api_server {
    engine *e;
    const tokenizer *tok;
    http_server *http;
    char model_name[256];
    long created;
    http_route *routes;        /* the extra routes, then the service's */

    pthread_mutex_t mu;        /* the figures below and next_id */
    long requests[EP_COUNT][API_N_CODES + 1];
    api_histogram ttft, token_latency;
    long next_id;
    unsigned pace_us;          /* MDI_API_PACE_US (tests): each token's callback sleeps this long */
};

/* ---- errors in OpenAI's shape ---- */

static int api_code_index(unsigned code)
{
    for (int i = 0; i < API_N_CODES; i++)
        if (api_codes[i] == code) return i;
    return API_N_CODES;
}

static void api_count(api_server *a, int endpoint, unsigned code)
{
    pthread_mutex_lock(&a->mu);
    a->requests[endpoint][api_code_index(code)]++;
    pthread_mutex_unlock(&a->mu);
}

static const char *api_error_type(unsigned code)
{
    switch (code) {
    case 429: return "rate_limit_error";
    case 503: return "unavailable_error";
    case 500: return "server_error";
    case 404: return "not_found_error";
    default: return "invalid_request_error";
    }
}

static json_t *api_error_json(unsigned code, const char *param, const char *errcode, const char *msg)
{
    return json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", msg, "type", api_error_type(code), "param",
                     param ? json_string(param) : json_null(), "code",
                     errcode ? json_string(errcode) : json_null());
}

/* The server's own errors (404, 405, 413): opts.error_body. */
static json_t *api_error_body(http_request *req, unsigned code, const char *msg)
{
    api_count(api_from_request(req), EP_OTHER, code);
    return api_error_json(code, NULL, NULL, msg);
}

static int api_reply(http_request *req, int endpoint, unsigned code, json_t *body)
{
    api_count(api_from_request(req), endpoint, code);
    return http_reply_json(req, code, body);
}

static int api_fail(http_request *req, int endpoint, unsigned code, const char *param, const char *errcode,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int api_fail(http_request *req, int endpoint, unsigned code, const char *param, const char *errcode,
                    const char *fmt, ...)
{
    char msg[MDI_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (code >= 500) log_warn("HTTP %s %s from %s: %s (%u)", http_request_method(req), http_request_path(req),
                              http_request_peer(req), msg, code);
    return api_reply(req, endpoint, code, api_error_json(code, param, errcode, msg));
}

/* ---- a growing text buffer (the metrics page) ---- */

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} api_buf;

static void buf_put(api_buf *b, const char *s, size_t n)
{
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void buf_puts(api_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* ---- chat messages (rendered by tokenizer_chat_render) ---- */

/* A message's text: a string, or an array of {"type": "text", "text"}
 * parts (joined), or null (an assistant turn with no text). New string. */
static char *api_message_text(json_t *content, size_t i, char *err)
{
    if (json_is_null(content) || !content) return strdup("");
    if (json_is_string(content)) return strdup(json_string_value(content));
    if (!json_is_array(content)) {
        mdi_fail(err, MDI_EARG, "messages[%zu].content: expected a string or an array of text parts", i);
        return NULL;
    }
    api_buf b = { 0 };
    buf_puts(&b, "");
    size_t k;
    json_t *part;
    json_array_foreach(content, k, part) {
        json_t *text = json_object_get(part, "text");
        if (!json_is_string(text) || strcmp(json_string_value(json_object_get(part, "type")) ? json_string_value(json_object_get(part, "type")) : "", "text")) {
            free(b.p);
            mdi_fail(err, MDI_EARG, "messages[%zu].content[%zu]: expected {\"type\": \"text\", \"text\": string}", i, k);
            return NULL;
        }
        buf_puts(&b, json_string_value(text));
    }
    if (b.failed) {
        free(b.p);
        mdi_fail(err, MDI_ENOMEM, "out of memory");
        return NULL;
    }
    return b.p;
}

char *api_render_chat(const tokenizer *tok, json_t *messages, int *add_bos, char *err)
{
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        mdi_fail(err, MDI_EARG, "messages: expected a non-empty array of {\"role\", \"content\"}");
        return NULL;
    }
    size_t n = json_array_size(messages);
    char **texts = calloc(n, sizeof(char *));
    const char **roles = calloc(n, sizeof(char *));
    char *out = NULL;
    if (!texts || !roles) {
        mdi_fail(err, MDI_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(messages, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role) {
            mdi_fail(err, MDI_EARG, "messages[%zu]: expected an object with a \"role\" string", i);
            goto done;
        }
        if (!strcmp(role, "developer")) role = "system";
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) {
            mdi_fail(err, MDI_EARG, "messages[%zu].role: \"%.40s\" is not system, user or assistant", i, role);
            goto done;
        }
        roles[i] = role;
        if (!(texts[i] = api_message_text(json_object_get(m, "content"), i, err))) goto done;
    }
    if (!(out = tokenizer_chat_render(tok, roles, (const char *const *)texts, (int)n, add_bos)))
        mdi_fail(err, MDI_ENOMEM, "out of memory");
done:
    for (size_t i = 0; texts && i < n; i++) free(texts[i]);
    free(texts);
    free(roles);
    return out;
}

/* ---- stop strings ---- */

size_t api_stop_scan(const char *text, size_t len, size_t from, char *const *stop, int n_stop, long *hit)
{
    *hit = -1;
    /* A stop string cannot begin before from: its start would have been
     * held back. The earliest occurrence wins. */
    for (int i = 0; i < n_stop; i++) {
        const char *p = memmem(text + from, len - from, stop[i], strlen(stop[i]));
        if (p && (*hit < 0 || p - text < *hit)) *hit = p - text;
    }
    if (*hit >= 0) return (size_t)*hit;
    size_t keep = len;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        size_t kmax = sl - 1 < len - from ? sl - 1 : len - from;
        for (size_t k = kmax; k > 0; k--)
            if (!memcmp(text + len - k, stop[i], k)) {
                if (len - k < keep) keep = len - k;
                break;
            }
    }
    return keep;
}

/* ---- one generating request ---- */

typedef struct {
    api_server *a;
    int chat, stream, include_usage, endpoint;
    char id[48];
    long created;
    char *stop[API_MAX_STOP];
    int n_stop;
    http_stream *st;           /* stream: the answer */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    engine_request *r;         /* set once engine_submit returned */
    int done, finish, n_prompt, n_generated, stopped, gone, want_stop, n_tokens;
    char err[MDI_ERR_LEN];
    api_buf text;              /* the answer's text so far (cut at a stop string) */
    size_t given;              /* bytes of text given to the client (stream) */
    double t_last;
} api_call;

static void call_unref(void *ud)
{
    api_call *c = ud;
    pthread_mutex_lock(&c->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (!last) return;
    for (int i = 0; i < c->n_stop; i++) free(c->stop[i]);
    free(c->text.p);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static void histogram_add(api_histogram *h, double v)
{
    int i = 0;
    while (i < API_N_BUCKETS && v > api_buckets[i]) i++;
    h->count[i]++;
    h->sum += v;
    h->n++;
}

/* A stream chunk carrying text (may be NULL: none), or the finish. New. */
static json_t *call_chunk(const api_call *c, const char *text, size_t len, const char *finish, int role)
{
    json_t *choice;
    if (c->chat) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", json_stringn(text, len));
        choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "delta", delta, "logprobs", "finish_reason",
                           finish ? json_string(finish) : json_null());
    } else {
        choice = json_pack("{s:s%, s:i, s:n, s:o}", "text", text ? text : "", text ? len : 0, "index", 0,
                           "logprobs", "finish_reason", finish ? json_string(finish) : json_null());
    }
    return json_pack("{s:s, s:s, s:i, s:s, s:[o]}", "id", c->id, "object",
                     c->chat ? "chat.completion.chunk" : "text_completion", "created", (int)c->created, "model",
                     c->a->model_name, "choices", choice);
}

static void stream_json(http_stream *st, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) return;
    http_stream_printf(st, "data: %s\n\n", s);
    free(s);
}

static const char *call_finish_name(const api_call *c)
{
    return c->stopped || c->finish == ENGINE_FINISH_STOP ? "stop" : c->finish == ENGINE_FINISH_LENGTH ? "length"
                                                                                                       : "stop";
}

static json_t *call_usage(const api_call *c)
{
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", c->n_prompt, "completion_tokens", c->n_generated,
                     "total_tokens", c->n_prompt + c->n_generated);
}

static void on_token(void *ud, int token, const char *piece, double t)
{
    (void)token;
    api_call *c = ud;
    api_server *a = c->a;
    pthread_mutex_lock(&a->mu);
    histogram_add(c->n_tokens == 0 ? &a->ttft : &a->token_latency, t - c->t_last);
    pthread_mutex_unlock(&a->mu);
    char *out = NULL;
    size_t out_len = 0;
    int first = 0;
    pthread_mutex_lock(&c->mu);
    first = c->n_tokens++ == 0;
    c->t_last = t;
    if (!c->stopped && !c->gone) {
        buf_puts(&c->text, piece);
        long hit;
        size_t upto = api_stop_scan(c->text.p, c->text.len, c->given, c->stop, c->n_stop, &hit);
        if (hit >= 0) {
            c->stopped = 1;
            c->text.len = (size_t)hit;
            c->text.p[hit] = 0;
            if (c->r) engine_cancel(a->e, c->r, 1);
            else c->want_stop = 1;
        }
        if (c->stream && upto > c->given) {
            out_len = upto - c->given;
            out = malloc(out_len);
            if (out) memcpy(out, c->text.p + c->given, out_len);
        }
        c->given = upto;
    }
    pthread_mutex_unlock(&c->mu);
    if (c->stream) {
        if (first && c->chat) stream_json(c->st, call_chunk(c, NULL, 0, NULL, 1));
        if (out) stream_json(c->st, call_chunk(c, out, out_len, NULL, 0));
    }
    free(out);
    if (a->pace_us) usleep(a->pace_us);
}

static void on_done(void *ud, int finish, int n_prompt, int n_generated, const char *err)
{
    api_call *c = ud;
    char *rest = NULL;
    size_t rest_len = 0;
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    c->finish = finish;
    c->n_prompt = n_prompt;
    c->n_generated = n_generated;
    if (err) snprintf(c->err, sizeof(c->err), "%s", err);
    /* what was held back for a stop string that never came */
    if (c->stream && !c->stopped && c->text.len > c->given) {
        rest_len = c->text.len - c->given;
        rest = malloc(rest_len);
        if (rest) memcpy(rest, c->text.p + c->given, rest_len);
        c->given = c->text.len;
    }
    int gone = c->gone;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->stream) {
        if (!gone) {
            if (finish == ENGINE_FINISH_ERROR || (finish == ENGINE_FINISH_CANCELLED && !c->stopped)) {
                char msg[MDI_ERR_LEN + 32];
                snprintf(msg, sizeof(msg), "%s", finish == ENGINE_FINISH_ERROR ? (err ? err : "a node failed")
                                                                               : "the service is stopping");
                stream_json(c->st, api_error_json(503, NULL, NULL, msg));
            } else {
                if (c->n_tokens == 0 && c->chat) stream_json(c->st, call_chunk(c, NULL, 0, NULL, 1));
                if (rest) stream_json(c->st, call_chunk(c, rest, rest_len, NULL, 0));
                stream_json(c->st, call_chunk(c, NULL, 0, call_finish_name(c), 0));
                if (c->include_usage) {
                    json_t *u = call_chunk(c, NULL, 0, NULL, 0);
                    json_object_set_new(u, "choices", json_array());
                    json_object_set_new(u, "usage", call_usage(c));
                    stream_json(c->st, u);
                }
                http_stream_write(c->st, "data: [DONE]\n\n", 14);
            }
        }
        http_stream_end(c->st);
    }
    free(rest);
    call_unref(c);
}

/* The client of a streamed answer went away (on its connection's thread,
 * the stream's lock held). */
static void on_gone(void *ud)
{
    api_call *c = ud;
    pthread_mutex_lock(&c->mu);
    c->gone = 1;
    if (!c->done && c->r) engine_cancel(c->a->e, c->r, 0);
    pthread_mutex_unlock(&c->mu);
}

/* ---- request fields ---- */

typedef struct {
    sample_params sp;
    int stream, include_usage, has_max;
    char *stop[API_MAX_STOP];
    int n_stop;
} api_fields;

static void fields_free(api_fields *f)
{
    for (int i = 0; i < f->n_stop; i++) free(f->stop[i]);
    f->n_stop = 0;
}

/* A field absent or null: 0. Present with the wrong type: -1. */
static json_t *field(json_t *body, const char *key)
{
    json_t *v = json_object_get(body, key);
    return json_is_null(v) ? NULL : v;
}

/* Fills f from the body; on a bad field answers 400 naming it and returns
 * -1. */
static int api_parse_fields(http_request *req, int ep, json_t *body, int max_seq, api_fields *f)
{
    memset(f, 0, sizeof(*f));
    f->sp.max_new = max_seq;
    f->sp.temperature = 1.0f;
    f->sp.top_k = 0;
    f->sp.top_p = 1.0f;
    f->sp.seed = (uint64_t)time(NULL) * 6364136223846793005ULL ^ (uint64_t)(uintptr_t)f;
    json_t *v;
    const char *mt = ep == EP_CHAT && field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if ((v = field(body, mt))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1 << 24)
            return api_fail(req, ep, 400, mt, "invalid_value", "%s: expected an integer of at least 1", mt), -1;
        f->sp.max_new = (int)json_integer_value(v);
        f->has_max = 1;
    }
    if ((v = field(body, "temperature"))) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 100)
            return api_fail(req, ep, 400, "temperature", "invalid_value",
                            "temperature: expected a number in [0, 100] (0: greedy)"), -1;
        f->sp.temperature = (float)json_number_value(v);
    }
    if ((v = field(body, "top_p"))) {
        if (!json_is_number(v) || !(json_number_value(v) > 0 && json_number_value(v) <= 1))
            return api_fail(req, ep, 400, "top_p", "invalid_value", "top_p: expected a number in (0, 1]"), -1;
        f->sp.top_p = (float)json_number_value(v);
    }
    if ((v = field(body, "top_k"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1 << 24)
            return api_fail(req, ep, 400, "top_k", "invalid_value", "top_k: expected an integer >= 0 (0: off)"), -1;
        f->sp.top_k = (int)json_integer_value(v);
    }
    if ((v = field(body, "seed"))) {
        if (!json_is_integer(v))
            return api_fail(req, ep, 400, "seed", "invalid_value", "seed: expected an integer"), -1;
        if (json_integer_value(v) >= 0) f->sp.seed = (uint64_t)json_integer_value(v);
    }
    if ((v = field(body, "n")) && (!json_is_integer(v) || json_integer_value(v) != 1))
        return api_fail(req, ep, 400, "n", "invalid_value", "n: only 1 choice per request is served"), -1;
    if ((v = field(body, "stream"))) {
        if (!json_is_boolean(v))
            return api_fail(req, ep, 400, "stream", "invalid_value", "stream: expected true or false"), -1;
        f->stream = json_is_true(v);
    }
    if ((v = field(body, "stream_options"))) {
        json_t *iu = field(v, "include_usage");
        if (!json_is_object(v) || (iu && !json_is_boolean(iu)))
            return api_fail(req, ep, 400, "stream_options", "invalid_value",
                            "stream_options: expected {\"include_usage\": true|false}"), -1;
        f->include_usage = json_is_true(iu);
    }
    if ((v = field(body, "ignore_eos"))) {
        if (!json_is_boolean(v))
            return api_fail(req, ep, 400, "ignore_eos", "invalid_value", "ignore_eos: expected true or false"), -1;
        f->sp.ignore_eos = json_is_true(v);
    }
    if ((v = field(body, "stop"))) {
        int bad = 0;
        if (json_is_string(v)) {
            bad = json_string_length(v) == 0;
            if (!bad) f->stop[f->n_stop++] = strdup(json_string_value(v));
        } else if (json_is_array(v) && json_array_size(v) <= API_MAX_STOP) {
            size_t i;
            json_t *s;
            json_array_foreach(v, i, s) {
                if (!json_is_string(s) || json_string_length(s) == 0) {
                    bad = 1;
                    break;
                }
                f->stop[f->n_stop++] = strdup(json_string_value(s));
            }
        } else {
            bad = 1;
        }
        for (int i = 0; i < f->n_stop; i++)
            if (!f->stop[i]) bad = 1;
        if (bad) {
            fields_free(f);
            return api_fail(req, ep, 400, "stop", "invalid_value",
                            "stop: expected a non-empty string or an array of at most %d of them", API_MAX_STOP), -1;
        }
    }
    return 0;
}

/* The prompt's ids from a completion's "prompt" (text, [text], or [ids]);
 * *ids new. Answers 400 and returns -1 when it is malformed. */
static int api_prompt_ids(http_request *req, api_server *a, json_t *prompt, int **ids, int *n)
{
    int vocab = engine_model_config(a->e)->vocab_size;
    if (json_is_array(prompt) && json_array_size(prompt) == 1 && json_is_string(json_array_get(prompt, 0)))
        prompt = json_array_get(prompt, 0);
    if (json_is_string(prompt)) {
        int k = tokenizer_encode(a->tok, json_string_value(prompt), tokenizer_adds_bos(a->tok), 1, ids);
        if (k < 0) return api_fail(req, EP_COMPLETIONS, 500, "prompt", NULL, "cannot tokenize the prompt"), -1;
        *n = k;
        return 0;
    }
    if (json_is_array(prompt) && json_array_size(prompt) > 0) {
        size_t m = json_array_size(prompt), i;
        json_t *v;
        *ids = malloc(m * sizeof(int));
        if (!*ids) return api_fail(req, EP_COMPLETIONS, 500, NULL, NULL, "out of memory"), -1;
        json_array_foreach(prompt, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= vocab) {
                free(*ids);
                *ids = NULL;
                return api_fail(req, EP_COMPLETIONS, 400, "prompt", "invalid_value",
                                "prompt[%zu]: expected a token id in [0, %d) (or give one string)", i, vocab), -1;
            }
            (*ids)[i] = (int)json_integer_value(v);
        }
        *n = (int)m;
        return 0;
    }
    return api_fail(req, EP_COMPLETIONS, 400, "prompt", "invalid_value",
                    "prompt: expected a string, an array of one string, or an array of token ids"), -1;
}

/* POST /v1/chat/completions and /v1/completions. */
static int api_generate(http_request *req, int ep)
{
    api_server *a = api_from_request(req);
    size_t len;
    const char *text = http_request_body(req, &len);
    json_error_t je;
    json_t *body = json_loadb(text, len, 0, &je);
    if (!body) return api_fail(req, ep, 400, NULL, "invalid_json", "the body is not JSON: %s (line %d, column %d)",
                               je.text, je.line, je.column);
    if (!json_is_object(body)) {
        json_decref(body);
        return api_fail(req, ep, 400, NULL, "invalid_json", "the body must be a JSON object");
    }
    engine_stats es;
    engine_get_stats(a->e, &es);
    api_fields f;
    if (api_parse_fields(req, ep, body, es.max_seq, &f)) {
        json_decref(body);
        return 0;
    }
    int *ids = NULL, n = 0;
    if (ep == EP_CHAT) {
        json_t *msgs = json_object_get(body, "messages");
        char why[MDI_ERR_LEN];
        int add_bos = 0;
        char *rendered = api_render_chat(a->tok, msgs, &add_bos, why);
        if (!rendered) {
            json_decref(body);
            fields_free(&f);
            return api_fail(req, ep, 400, "messages", "invalid_value", "%s", why);
        }
        n = tokenizer_encode(a->tok, rendered, add_bos, 1, &ids);
        free(rendered);
        if (n < 0) {
            json_decref(body);
            fields_free(&f);
            return api_fail(req, ep, 500, NULL, NULL, "cannot tokenize the conversation");
        }
    } else if (api_prompt_ids(req, a, json_object_get(body, "prompt"), &ids, &n)) {
        json_decref(body);
        fields_free(&f);
        return 0;
    }
    json_decref(body);
    if (n == 0) {
        free(ids);
        fields_free(&f);
        return api_fail(req, ep, 400, ep == EP_CHAT ? "messages" : "prompt", "invalid_value",
                        "the prompt is empty and the tokenizer adds no BOS: nothing to start from");
    }

    api_call *c = calloc(1, sizeof(*c));
    if (!c) {
        free(ids);
        fields_free(&f);
        return api_fail(req, ep, 500, NULL, NULL, "out of memory");
    }
    c->a = a;
    c->chat = ep == EP_CHAT;
    c->endpoint = ep;
    c->stream = f.stream;
    c->include_usage = f.include_usage;
    memcpy(c->stop, f.stop, sizeof(f.stop));
    c->n_stop = f.n_stop;
    c->created = (long)time(NULL);
    pthread_mutex_lock(&a->mu);
    long seq = ++a->next_id;
    pthread_mutex_unlock(&a->mu);
    snprintf(c->id, sizeof(c->id), "%s-%lx%04lx", c->chat ? "chatcmpl" : "cmpl", (long)c->created, seq & 0xffff);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->refs = 2;
    buf_puts(&c->text, "");
    if (c->stream && !(c->st = http_stream_new(on_gone, call_unref, c))) {
        free(ids);
        c->refs = 1;
        call_unref(c);
        return api_fail(req, ep, 500, NULL, NULL, "out of memory");
    }
    engine_callbacks cb = { on_token, on_done };
    engine_request *r = NULL;
    char why[MDI_ERR_LEN];
    int rc = engine_submit(a->e, ids, n, &f.sp, &cb, c, &r, why);
    free(ids);
    if (rc) {
        /* no callback will come: both references are ours */
        if (c->stream) {
            http_stream_release(c->st);
            http_stream_release(c->st); /* the last: call_unref */
        } else {
            call_unref(c);
        }
        call_unref(c);
        if (rc == MDI_EFULL)
            return api_fail(req, ep, 429, NULL, "queue_full", "the queue is full (%s); try again later", why);
        if (rc == MDI_EARG)
            return api_fail(req, ep, 400, ep == EP_CHAT ? "messages" : "prompt", "context_length_exceeded", "%s",
                            why);
        return api_fail(req, ep, 503, NULL, NULL, "%s", why);
    }
    pthread_mutex_lock(&c->mu);
    c->r = r;
    if (c->want_stop && !c->done) engine_cancel(a->e, r, 1);
    pthread_mutex_unlock(&c->mu);

    if (c->stream) {
        api_count(a, ep, 200);
        return http_reply_stream(req, 200, "text/event-stream", c->st);
    }
    /* a buffered answer: wait, giving up when the client goes away */
    pthread_mutex_lock(&c->mu);
    while (!c->done) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 100 * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->cv, &c->mu, &dl);
        if (!c->done && !c->gone && http_request_client_gone(req)) {
            c->gone = 1;
            engine_cancel(a->e, c->r, 0);
        }
    }
    pthread_mutex_unlock(&c->mu);
    int ret;
    if (c->gone) {
        ret = -1;
    } else if (c->finish == ENGINE_FINISH_ERROR) {
        ret = api_fail(req, ep, 503, NULL, NULL, "%s", c->err[0] ? c->err : "a node failed");
    } else if (c->finish == ENGINE_FINISH_CANCELLED && !c->stopped) {
        ret = api_fail(req, ep, 503, NULL, NULL, "the service is stopping");
    } else {
        json_t *choice;
        if (c->chat)
            choice = json_pack("{s:i, s:{s:s, s:s%}, s:n, s:s}", "index", 0, "message", "role", "assistant", "content",
                               c->text.p, c->text.len, "logprobs", "finish_reason", call_finish_name(c));
        else
            choice = json_pack("{s:s%, s:i, s:n, s:s}", "text", c->text.p, c->text.len, "index", 0, "logprobs",
                               "finish_reason", call_finish_name(c));
        json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:[o], s:o}", "id", c->id, "object",
                              c->chat ? "chat.completion" : "text_completion", "created", (int)c->created, "model",
                              a->model_name, "choices", choice, "usage", call_usage(c));
        ret = api_reply(req, ep, 200, o);
    }
    call_unref(c);
    return ret;
}

static int api_handle_chat(http_request *req) { return api_generate(req, EP_CHAT); }
static int api_handle_completions(http_request *req) { return api_generate(req, EP_COMPLETIONS); }

static int api_handle_models(http_request *req)
{
    api_server *a = api_from_request(req);
    const model_config *mc = engine_model_config(a->e);
    json_t *m = json_pack("{s:s, s:s, s:i, s:s, s:{s:i, s:i, s:i}}", "id", a->model_name, "object", "model",
                          "created", (int)a->created, "owned_by", "mdi", "meta", "n_ctx_train", mc->max_seq_len,
                          "n_vocab", mc->vocab_size, "n_layers", mc->n_layers);
    return api_reply(req, EP_MODELS, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", m));
}

static int api_handle_health(http_request *req)
{
    api_server *a = api_from_request(req);
    engine_stats st;
    engine_get_stats(a->e, &st);
    if (st.failed)
        return api_fail(req, EP_HEALTH, 503, NULL, NULL, "a node failed; the service takes no new work: %s", st.failure);
    return api_reply(req, EP_HEALTH, 200,
                     json_pack("{s:s, s:i, s:i, s:i, s:i, s:i}", "status", "ok", "slots_idle",
                               st.n_slots - st.slots_busy, "slots_busy", st.slots_busy, "queue_depth", st.queue_depth,
                               "queue_max", st.queue_max, "n_nodes", st.n_nodes));
}

static void metric_histogram(api_buf *b, const char *name, const char *help, const api_histogram *h)
{
    char line[256];
    snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    buf_puts(b, line);
    long cum = 0;
    for (int i = 0; i < API_N_BUCKETS; i++) {
        cum += h->count[i];
        snprintf(line, sizeof(line), "%s_bucket{le=\"%g\"} %ld\n", name, api_buckets[i], cum);
        buf_puts(b, line);
    }
    snprintf(line, sizeof(line), "%s_bucket{le=\"+Inf\"} %ld\n%s_sum %.6f\n%s_count %ld\n", name, h->n, name, h->sum,
             name, h->n);
    buf_puts(b, line);
}

static void metric(api_buf *b, const char *name, const char *type, const char *help, double v)
{
    char line[512];
    snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
    buf_puts(b, line);
}

/* A label value: quotes, backslashes and line breaks escaped. */
static void label_value(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 3 < cap; s++) {
        if (*s == '"' || *s == '\\') out[o++] = '\\', out[o++] = *s;
        else if (*s == '\n') out[o++] = '\\', out[o++] = 'n';
        else out[o++] = *s;
    }
    out[o] = 0;
}

static int api_handle_metrics(http_request *req)
{
    api_server *a = api_from_request(req);
    engine_stats st;
    engine_get_stats(a->e, &st);
    api_buf b = { 0 };
    char line[512];
    buf_puts(&b, "# HELP mdi_requests_total HTTP requests answered, by endpoint and status\n"
                 "# TYPE mdi_requests_total counter\n");
    pthread_mutex_lock(&a->mu);
    for (int e = 0; e < EP_COUNT; e++)
        for (int k = 0; k <= API_N_CODES; k++) {
            if (!a->requests[e][k] && !(k == 0 && e <= EP_COMPLETIONS)) continue;
            snprintf(line, sizeof(line), "mdi_requests_total{endpoint=\"%s\",code=\"%s%u\"} %ld\n",
                     api_endpoint_names[e], k == API_N_CODES ? "other" : "", k == API_N_CODES ? 0 : api_codes[k],
                     a->requests[e][k]);
            if (k == API_N_CODES) {
                snprintf(line, sizeof(line), "mdi_requests_total{endpoint=\"%s\",code=\"other\"} %ld\n",
                         api_endpoint_names[e], a->requests[e][k]);
            }
            buf_puts(&b, line);
        }
    api_histogram ttft = a->ttft, lat = a->token_latency;
    pthread_mutex_unlock(&a->mu);
    metric(&b, "mdi_engine_requests_total", "counter", "requests the engine took", (double)st.requests_total);
    metric(&b, "mdi_engine_requests_done_total", "counter", "requests the engine finished", (double)st.requests_done);
    metric(&b, "mdi_tokens_generated_total", "counter", "tokens generated", (double)st.tokens_generated);
    metric(&b, "mdi_prompt_tokens_total", "counter", "prompt tokens prefilled", (double)st.prompt_tokens);
    metric(&b, "mdi_queue_depth", "gauge", "requests waiting for a slot", st.queue_depth);
    metric(&b, "mdi_queue_max", "gauge", "requests that may wait for a slot", st.queue_max);
    metric(&b, "mdi_slots_busy", "gauge", "sample slots generating", st.slots_busy);
    metric(&b, "mdi_slots_total", "gauge", "sample slots", st.n_slots);
    metric(&b, "mdi_nodes", "gauge", "nodes in the ring (1: standalone)", st.n_nodes);
    metric(&b, "mdi_failed", "gauge", "1 once a node has failed", st.failed);
    metric(&b, "mdi_failovers_total", "counter", "ring failures recovered from (a spare, the node back, or the ring re-closed with the same nodes)",
           st.failovers);
    metric(&b, "mdi_failover_lost_seconds_total", "counter", "seconds the failovers cost, detection to ring closed",
           st.failover_lost_s);
    metric_histogram(&b, "mdi_time_to_first_token_seconds", "seconds from a request's submission to its first token",
                     &ttft);
    metric_histogram(&b, "mdi_token_latency_seconds", "seconds between a request's consecutive tokens", &lat);
    json_t *nodes = engine_nodes_json(a->e);
    const char *names[2] = { "mdi_node_compute_seconds", "mdi_node_wait_seconds" };
    const char *keys[2] = { "compute_s", "wait_s" };
    const char *helps[2] = { "seconds each node computed", "seconds each node waited for its input" };
    for (int m = 0; m < 2; m++) {
        snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s counter\n", names[m], helps[m], names[m]);
        buf_puts(&b, line);
        size_t i;
        json_t *nd;
        json_array_foreach(nodes, i, nd) {
            char role[64], addr[160];
            label_value(role, sizeof(role), json_string_value(json_object_get(nd, "role")));
            label_value(addr, sizeof(addr), json_string_value(json_object_get(nd, "addr")));
            json_t *ix = json_object_get(nd, "index");
            snprintf(line, sizeof(line), "%s{node=\"%lld\",role=\"%s\",addr=\"%s\"} %.6f\n", names[m],
                     json_is_integer(ix) ? (long long)json_integer_value(ix) : (long long)i, role, addr,
                     json_number_value(json_object_get(nd, keys[m])));
            buf_puts(&b, line);
        }
    }
    json_decref(nodes);
    int rc;
    if (b.failed) {
        rc = api_fail(req, EP_METRICS, 500, NULL, NULL, "out of memory");
    } else {
        api_count(a, EP_METRICS, 200);
        rc = http_reply_text(req, 200, "text/plain; version=0.0.4", b.p, b.len);
    }
    free(b.p);
    return rc;
}

/* The service's routes; the web UI's and others come before them
 * (api_opts.extra_routes). */
static const http_route api_routes[] = {
    { .method = "POST", .path = "/v1/chat/completions", .handler = api_handle_chat, .body_max = API_BODY_MAX },
    { .method = "POST", .path = "/v1/completions", .handler = api_handle_completions, .body_max = API_BODY_MAX },
    { .method = "GET", .path = "/v1/models", .handler = api_handle_models },
    { .method = "GET", .path = "/health", .handler = api_handle_health },
    { .method = "GET", .path = "/metrics", .handler = api_handle_metrics },
    { 0 },
};

api_server *api_from_request(http_request *req) { return http_server_ud(http_request_server(req)); }
engine *api_engine(api_server *a) { return a->e; }
int api_port(const api_server *a) { return http_server_port(a->http); }

api_server *api_start(engine *e, const tokenizer *tok, const api_opts *o, char *err)
{
    api_server *a = calloc(1, sizeof(*a));
    if (!a) {
        mdi_fail(err, MDI_ENOMEM, "out of memory");
        return NULL;
    }
    a->e = e;
    a->tok = tok;
    a->created = (long)time(NULL);
    snprintf(a->model_name, sizeof(a->model_name), "%s", o->model_name ? o->model_name : "model");
    pthread_mutex_init(&a->mu, NULL);
    const char *pace = getenv("MDI_API_PACE_US");
    if (pace && atoi(pace) > 0) {
        a->pace_us = (unsigned)atoi(pace);
        log_warn("MDI_API_PACE_US: every token waits %u us (tests: slots stay busy long enough to watch)", a->pace_us);
    }
    size_t n_extra = 0, n_own = sizeof(api_routes) / sizeof(api_routes[0]);
    while (o->extra_routes && o->extra_routes[n_extra].path) n_extra++;
    a->routes = calloc(n_extra + n_own, sizeof(http_route));
    if (!a->routes) {
        mdi_fail(err, MDI_ENOMEM, "out of memory");
        api_stop(a);
        return NULL;
    }
    if (n_extra) memcpy(a->routes, o->extra_routes, n_extra * sizeof(http_route));
    memcpy(a->routes + n_extra, api_routes, n_own * sizeof(http_route));
    http_server_opts ho = {
        .name = "HTTP service port",
        .host = o->host,
        .port = o->port,
        .timeout_s = o->timeout_s > 0 ? o->timeout_s : API_TIMEOUT_S,
        .conn_max = API_CONN_MAX,
        .routes = a->routes,
        .route_hint = "(POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /metrics)",
        .ud = a,
        .error_body = api_error_body,
    };
    if (!(a->http = http_server_start(&ho, err))) {
        api_stop(a);
        return NULL;
    }
    return a;
}

void api_stop(api_server *a)
{
    if (!a) return;
    http_server_stop(a->http);
    pthread_mutex_destroy(&a->mu);
    free(a->routes);
    free(a);
}
