/*
 * test_api: the service (api.c) and the HTTP server under it
 * (http_server.c), driven with libcurl and raw sockets on 127.0.0.1 (port
 * 0, read back), on a fake engine defined here: each request gets the
 * tokens "w0 ", "w1 ", ... one every 2 ms, up to max_new; a request with
 * max_new >= 1000 runs until cancelled. 2 slots and a queue of 2.
 * Stop strings and the chat templates' rendering are checked directly.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "test.h"
#include "util.h"

/* ---- the fake engine ---- */

#define FAKE_SLOTS 2
#define FAKE_QUEUE 2
#define FAKE_CTX 100

struct engine_request {
    int max_new, n, cancel, stop, n_prompt;
    engine_callbacks cb;
    void *ud;
    double t0;
    struct engine_request *next;
};

struct engine {
    pthread_mutex_t mu;
    pthread_t th;
    int quit;
    struct engine_request *list; /* the first FAKE_SLOTS run, the rest wait */
    long requests_total, tokens;
    model_config cfg;
};

static int fake_count(engine *e)
{
    int n = 0;
    for (engine_request *r = e->list; r; r = r->next) n++;
    return n;
}

int engine_submit(engine *e, const int *ids, int n, const sample_params *sp, const engine_callbacks *cb, void *ud,
                  engine_request **out, char *err)
{
    (void)ids;
    if (n + 1 > FAKE_CTX)
        return mdi_fail(err, MDI_EARG, "prompt of %d tokens does not fit the context of %d", n, FAKE_CTX);
    pthread_mutex_lock(&e->mu);
    if (fake_count(e) >= FAKE_SLOTS + FAKE_QUEUE) {
        pthread_mutex_unlock(&e->mu);
        return mdi_fail(err, MDI_EFULL, "%d requests waiting", FAKE_QUEUE);
    }
    engine_request *r = calloc(1, sizeof(*r));
    r->max_new = sp->max_new;
    r->n_prompt = n;
    r->cb = *cb;
    r->ud = ud;
    r->t0 = time_now();
    engine_request **p = &e->list;
    while (*p) p = &(*p)->next;
    *p = r;
    e->requests_total++;
    if (out) *out = r;
    pthread_mutex_unlock(&e->mu);
    return 0;
}

void engine_cancel(engine *e, engine_request *r, int stop)
{
    pthread_mutex_lock(&e->mu);
    r->cancel = 1;
    r->stop = stop;
    pthread_mutex_unlock(&e->mu);
}

void engine_get_stats(engine *e, engine_stats *st)
{
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&e->mu);
    int n = fake_count(e);
    st->n_slots = FAKE_SLOTS;
    st->slots_busy = n < FAKE_SLOTS ? n : FAKE_SLOTS;
    st->queue_depth = n > FAKE_SLOTS ? n - FAKE_SLOTS : 0;
    st->queue_max = FAKE_QUEUE;
    st->max_seq = FAKE_CTX;
    st->n_nodes = 1;
    st->requests_total = e->requests_total;
    st->tokens_generated = e->tokens;
    pthread_mutex_unlock(&e->mu);
}

const model_config *engine_model_config(const engine *e) { return &e->cfg; }

json_t *engine_nodes_json(engine *e)
{
    (void)e;
    return json_pack("[{s:s, s:i, s:s, s:f, s:f}]", "role", "starter", "index", 0, "addr", "127.0.0.1:1", "compute_s",
                     1.5, "wait_s", 0.25);
}

static void *fake_loop(void *arg)
{
    engine *e = arg;
    for (;;) {
        usleep(2000);
        pthread_mutex_lock(&e->mu);
        if (e->quit && !e->list) {
            pthread_mutex_unlock(&e->mu);
            return NULL;
        }
        int k = 0;
        for (engine_request **p = &e->list; *p && k < FAKE_SLOTS; k++) {
            engine_request *r = *p;
            int finish = 0;
            if (r->cancel || e->quit) {
                finish = r->stop ? ENGINE_FINISH_STOP : ENGINE_FINISH_CANCELLED;
            } else {
                char piece[32];
                snprintf(piece, sizeof(piece), "w%d ", r->n);
                r->n++;
                e->tokens++;
                pthread_mutex_unlock(&e->mu);
                r->cb.on_token(r->ud, r->n, piece, time_now() - r->t0);
                pthread_mutex_lock(&e->mu);
                if (r->n >= r->max_new && r->max_new < 1000) finish = ENGINE_FINISH_LENGTH;
            }
            if (finish) {
                *p = r->next;
                pthread_mutex_unlock(&e->mu);
                r->cb.on_done(r->ud, finish, r->n_prompt, r->n, NULL);
                free(r);
                pthread_mutex_lock(&e->mu);
            } else {
                p = &r->next;
            }
        }
        pthread_mutex_unlock(&e->mu);
    }
}

/* ---- a client ---- */

typedef struct {
    char *data;
    size_t len;
} buf;

static size_t buf_write(char *p, size_t size, size_t nmemb, void *ud)
{
    buf *b = ud;
    size_t n = size * nmemb;
    b->data = realloc(b->data, b->len + n + 1);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return n;
}

static int g_port;

/* One request; returns the status, *out the body (new). */
static long req(const char *method, const char *path, const char *body, char **out)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", g_port, path);
    CURL *h = curl_easy_init();
    buf b = { 0 };
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, buf_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    if (!b.data) b.data = strdup("");
    *out = b.data;
    return code;
}

static json_t *req_json(const char *method, const char *path, const char *body, long *code)
{
    char *out;
    *code = req(method, path, body, &out);
    json_t *j = json_loads(out, 0, NULL);
    free(out);
    return j;
}

static const char *error_message(json_t *j)
{
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    return m ? m : "(no error.message)";
}

/* The concatenated text of an SSE answer's chunks; *done: [DONE] came
 * last; *finish: the last finish_reason; *usage: completion_tokens of a
 * usage chunk (-1: none). New string. */
static char *sse_text(const char *body, int chat, int *done, char *finish, int *usage)
{
    buf t = { 0 };
    t.data = strdup("");
    *done = 0;
    *usage = -1;
    finish[0] = 0;
    const char *p = body;
    while ((p = strstr(p, "data: "))) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        if (!e) break;
        if (!strncmp(p, "[DONE]", 6)) {
            *done = !strstr(e, "data: ");
            break;
        }
        json_t *j = json_loadb(p, (size_t)(e - p), 0, NULL);
        json_t *c = json_array_get(json_object_get(j, "choices"), 0);
        const char *s = chat ? json_string_value(json_object_get(json_object_get(c, "delta"), "content"))
                             : json_string_value(json_object_get(c, "text"));
        if (s) buf_write((char *)s, 1, strlen(s), &t);
        const char *f = json_string_value(json_object_get(c, "finish_reason"));
        if (f) snprintf(finish, 16, "%s", f);
        json_t *u = json_object_get(j, "usage");
        if (json_is_object(u)) *usage = (int)json_integer_value(json_object_get(u, "completion_tokens"));
        json_decref(j);
        p = e;
    }
    return t.data;
}

/* A raw connection that sends a streaming request and reads nothing. */
static int hang_stream(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)g_port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) return -1;
    const char *body = "{\"prompt\": [1, 2], \"max_tokens\": 5000, \"stream\": true}";
    char r[512];
    int n = snprintf(r, sizeof(r),
                     "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    if (write(fd, r, (size_t)n) != n) return -1;
    return fd;
}

static int busy_now(engine *e)
{
    engine_stats st;
    engine_get_stats(e, &st);
    return st.slots_busy + st.queue_depth;
}

static int wait_busy(engine *e, int want)
{
    for (int i = 0; i < 300; i++) {
        if (busy_now(e) == want) return 1;
        usleep(10000);
    }
    return 0;
}

static void test_stop_scan(void)
{
    char *stop[] = { "END", "xy" };
    long hit;
    size_t n = api_stop_scan("hello E", 7, 0, stop, 2, &hit);
    test_result(n == 6 && hit < 0, "stop: a tail that may start a stop string is held back", "%zu %ld", n, hit);
    n = api_stop_scan("hello EN", 8, 6, stop, 2, &hit);
    test_result(n == 6 && hit < 0, "stop: a longer tail still held", "%zu", n);
    n = api_stop_scan("hello ENd", 9, 6, stop, 2, &hit);
    test_result(n == 9 && hit < 0, "stop: released once it cannot be a stop string", "%zu", n);
    n = api_stop_scan("hello END more", 14, 6, stop, 2, &hit);
    test_result(n == 6 && hit == 6, "stop: the text ends before the stop string", "%zu %ld", n, hit);
    n = api_stop_scan("axyEND", 6, 0, stop, 2, &hit);
    test_result(hit == 1, "stop: the earliest stop string wins", "%ld", hit);
    n = api_stop_scan("abc", 3, 0, NULL, 0, &hit);
    test_result(n == 3 && hit < 0, "stop: none given, all text goes", "%zu", n);
}

static void test_render(void)
{
    char path[1024], err[MDI_ERR_LEN];
    TEST_PATH(path, "models/stories260K");
    tokenizer *tok = tokenizer_load(path, err);
    if (!tok) {
        test_skip("render: stories260K", err);
        return;
    }
    json_t *m = json_loads("[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
                           "[{\"type\": \"text\", \"text\": \"Hi\"}]}]", 0, NULL);
    int add_bos = -1;
    char *s = api_render_chat(tok, m, &add_bos, err);
    const char *want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                       "<|im_start|>assistant\n";
    test_result(s && !strcmp(s, want) && add_bos == tokenizer_adds_bos(tok),
                "render: a model without a template gets ChatML", "%s", s ? s : err);
    free(s);
    json_decref(m);
    const char *bad[] = { "[]", "{}", "[{\"role\": \"robot\", \"content\": \"x\"}]", "[{\"content\": \"x\"}]",
                          "[{\"role\": \"user\", \"content\": 5}]" };
    const char *want_err[] = { "messages:", "messages:", "messages[0].role", "messages[0]", "messages[0].content" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m = json_loads(bad[i], 0, NULL);
        err[0] = 0;
        s = api_render_chat(tok, m, &add_bos, err);
        test_result(!s && strstr(err, want_err[i]), "render: malformed messages are refused naming the field",
                    "%s: %s", bad[i], err);
        free(s);
        json_decref(m);
    }
    tokenizer_free(tok);
}

/* One user message rendered by the service encodes to the ids of the
 * CLI's --chat (tokenizer_chat_turn), for each template the shared
 * tokenizers have; a conversation renders every turn. */
static void test_render_templates(void)
{
    const char *names[] = { "tokenizers/llama3", "tokenizers/qwen3" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[1024], err[MDI_ERR_LEN], name[128];
        TEST_PATH(path, names[i]);
        tokenizer *tok = tokenizer_load(path, err);
        snprintf(name, sizeof(name), "render: %s: one user turn encodes as --chat does", names[i]);
        if (!tok) {
            test_skip(name, err);
            continue;
        }
        json_t *m = json_loads("[{\"role\": \"user\", \"content\": \" Hello there \"}]", 0, NULL);
        int add_bos = 0, *a = NULL, *b = NULL;
        char *text = api_render_chat(tok, m, &add_bos, err);
        int na = text ? tokenizer_encode(tok, text, add_bos, 1, &a) : -1;
        int nb = tokenizer_chat_turn(tok, " Hello there ", 1, 1, 1, &b);
        test_result(na > 0 && na == nb && !memcmp(a, b, (size_t)na * sizeof(int)), name, "%d ids vs %d: %s", na, nb,
                    text ? text : err);
        free(a);
        free(b);
        free(text);
        json_decref(m);
        m = json_loads("[{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U1\"},"
                       " {\"role\": \"assistant\", \"content\": \"A1\"}, {\"role\": \"user\", \"content\": \"U2\"}]",
                       0, NULL);
        text = api_render_chat(tok, m, &add_bos, err);
        const char *want = tokenizer_chat_family(tok) == CHAT_LLAMA3
            ? "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user"
              "<|end_header_id|>\n\nU1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            : "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
              "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n";
        snprintf(name, sizeof(name), "render: %s: a conversation, every turn in order", names[i]);
        test_result(text && !strcmp(text, want), name, "%s", text ? text : err);
        free(text);
        json_decref(m);
        tokenizer_free(tok);
    }
}

int main(void)
{
    log_set_tag("test_api");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_stop_scan();
    test_render();
    test_render_templates();

    char err[MDI_ERR_LEN], path[1024];
    TEST_PATH(path, "models/stories260K");
    tokenizer *tok = tokenizer_load(path, err);
    if (!tok) {
        test_skip("api: stories260K tokenizer", err);
        return test_failures;
    }
    engine fake;
    memset(&fake, 0, sizeof(fake));
    pthread_mutex_init(&fake.mu, NULL);
    fake.cfg.vocab_size = tokenizer_vocab_size(tok);
    fake.cfg.max_seq_len = FAKE_CTX;
    pthread_create(&fake.th, NULL, fake_loop, &fake);
    api_opts o = { .host = "127.0.0.1", .port = 0, .model_name = "fake" };
    api_server *a = api_start(&fake, tok, &o, err);
    test_result(a != NULL, "api: starts on a free port", "%s", err);
    if (!a) return test_failures;
    g_port = api_port(a);

    long code;
    json_t *j = req_json("GET", "/health", NULL, &code);
    test_result(code == 200 && !strcmp(json_string_value(json_object_get(j, "status")) ?: "", "ok"),
                "api: GET /health", "%ld", code);
    json_decref(j);
    j = req_json("GET", "/v1/models", NULL, &code);
    test_result(code == 200 && !strcmp(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0),
                                                                         "id")) ?: "", "fake"),
                "api: GET /v1/models lists the model", "%ld", code);
    json_decref(j);

    /* errors */
    j = req_json("GET", "/nope", NULL, &code);
    test_result(code == 404 && strstr(error_message(j), "/nope"), "api: unknown route 404 in OpenAI's shape", "%ld %s",
                code, error_message(j));
    json_decref(j);
    j = req_json("GET", "/v1/completions", NULL, &code);
    test_result(code == 405, "api: wrong method 405", "%ld", code);
    json_decref(j);
    j = req_json("POST", "/v1/completions", "{\"prompt\": ", &code);
    test_result(code == 400 && json_is_null(json_object_get(json_object_get(j, "error"), "param")) &&
                    json_object_get(json_object_get(j, "error"), "type"),
                "api: malformed JSON 400", "%ld %s", code, error_message(j));
    json_decref(j);
    const char *bad[][2] = {
        { "{\"prompt\": \"x\", \"max_tokens\": 0}", "max_tokens" },
        { "{\"prompt\": \"x\", \"temperature\": \"hot\"}", "temperature" },
        { "{\"prompt\": \"x\", \"top_p\": 2}", "top_p" },
        { "{\"prompt\": \"x\", \"top_k\": -1}", "top_k" },
        { "{\"prompt\": \"x\", \"stop\": [1]}", "stop" },
        { "{\"prompt\": \"x\", \"stream\": 1}", "stream" },
        { "{\"prompt\": \"x\", \"n\": 2}", "n" },
        { "{\"prompt\": 5}", "prompt" },
        { "{\"prompt\": [1, 100000]}", "prompt" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = req_json("POST", "/v1/completions", bad[i][0], &code);
        const char *param = json_string_value(json_object_get(json_object_get(j, "error"), "param"));
        test_result(code == 400 && param && !strcmp(param, bad[i][1]), "api: a bad field gets 400 naming it",
                    "%s: %ld %s", bad[i][0], code, error_message(j));
        json_decref(j);
    }
    j = req_json("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}", &code);
    test_result(code == 400 && strstr(error_message(j), "messages[0].role"), "api: a bad message gets 400", "%ld %s",
                code, error_message(j));
    json_decref(j);
    {
        char body[2048] = "{\"prompt\": [1";
        for (int i = 0; i < 150; i++) strcat(body, ", 2");
        strcat(body, "]}");
        j = req_json("POST", "/v1/completions", body, &code);
        test_result(code == 400 && strstr(error_message(j), "151") && strstr(error_message(j), "100"),
                    "api: a prompt longer than the context: 400 naming both lengths", "%ld %s", code,
                    error_message(j));
        json_decref(j);
    }

    /* answers */
    j = req_json("POST", "/v1/completions", "{\"prompt\": \"Once\", \"max_tokens\": 3}", &code);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    test_result(code == 200 && !strcmp(json_string_value(json_object_get(c0, "text")) ?: "", "w0 w1 w2 ") &&
                    !strcmp(json_string_value(json_object_get(c0, "finish_reason")) ?: "", "length") &&
                    json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")) == 3,
                "api: completion, its text, finish_reason length and usage", "%ld", code);
    json_decref(j);
    j = req_json("POST", "/v1/chat/completions",
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 9, \"stop\": \"w2\"}",
                 &code);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    test_result(code == 200 &&
                    !strcmp(json_string_value(json_object_get(json_object_get(c0, "message"), "content")) ?: "",
                            "w0 w1 ") &&
                    !strcmp(json_string_value(json_object_get(c0, "finish_reason")) ?: "", "stop"),
                "api: chat completion ends before its stop string", "%ld", code);
    json_decref(j);

    char *out, finish[16];
    int done, usage;
    code = req("POST", "/v1/completions",
               "{\"prompt\": \"Once\", \"max_tokens\": 4, \"stream\": true, \"stop\": [\"w3\", \"1 w2 x\"],"
               " \"stream_options\": {\"include_usage\": true}}", &out);
    char *t = sse_text(out, 0, &done, finish, &usage);
    test_result(code == 200 && !strcmp(t, "w0 w1 w2 ") && done && !strcmp(finish, "stop") && usage == 4,
                "api: a stream holds back a stop string's start and ends before it, usage and [DONE] last",
                "%ld [%s] done %d finish %s usage %d: %s", code, t, done, finish, usage, out);
    free(t);
    free(out);
    code = req("POST", "/v1/chat/completions",
               "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 5, \"stream\": true}", &out);
    t = sse_text(out, 1, &done, finish, &usage);
    test_result(code == 200 && !strcmp(t, "w0 w1 w2 w3 w4 ") && done && !strcmp(finish, "length") && usage == -1 &&
                    strstr(out, "\"role\":\"assistant\""),
                "api: a chat stream, one chunk per piece", "%ld [%s] %s", code, t, out);
    free(t);
    free(out);

    /* slots, queue, disconnects */
    int fds[FAKE_SLOTS + FAKE_QUEUE];
    for (int i = 0; i < FAKE_SLOTS + FAKE_QUEUE; i++) fds[i] = hang_stream();
    test_result(wait_busy(&fake, FAKE_SLOTS + FAKE_QUEUE), "api: streams fill the slots and the queue", "%d",
                busy_now(&fake));
    j = req_json("POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 2}", &code);
    test_result(code == 429, "api: a full queue gives 429", "%ld %s", code, error_message(j));
    json_decref(j);
    for (int i = 0; i < FAKE_SLOTS + FAKE_QUEUE; i++) close(fds[i]);
    test_result(wait_busy(&fake, 0), "api: clients that disconnect have their requests cancelled", "%d busy",
                busy_now(&fake));
    j = req_json("POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 2}", &code);
    test_result(code == 200, "api: serving goes on after all that", "%ld", code);
    json_decref(j);

    code = req("GET", "/metrics", NULL, &out);
    test_result(code == 200 && strstr(out, "mdi_requests_total{endpoint=\"/v1/completions\",code=\"429\"} 1") &&
                    strstr(out, "mdi_time_to_first_token_seconds_bucket{le=\"+Inf\"}") &&
                    strstr(out, "mdi_token_latency_seconds_count") && strstr(out, "mdi_slots_busy 0") &&
                    strstr(out, "mdi_node_compute_seconds{node=\"0\",role=\"starter\",addr=\"127.0.0.1:1\"} 1.5"),
                "api: GET /metrics in Prometheus text", "%ld %s", code, out);
    free(out);

    api_stop(a);
    pthread_mutex_lock(&fake.mu);
    fake.quit = 1;
    pthread_mutex_unlock(&fake.mu);
    pthread_join(fake.th, NULL);
    pthread_mutex_destroy(&fake.mu);
    tokenizer_free(tok);
    curl_global_cleanup();
    return test_failures;
}
