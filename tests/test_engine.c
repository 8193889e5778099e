/* test_engine: the scheduler on stories260K: requests submitted from
 * several threads at different times each get the tokens they get alone
 * (greedy and seeded sampling, prompts longer than a prefill chunk); a full
 * queue is refused; a cancelled request frees its slot for the next one; a
 * prompt too long is refused naming both lengths; closing ends what runs.
 *
 * Standalone by default; with MDI_ENGINE_NODES (a nodes configuration
 * whose secondaries run) and MDI_ENGINE_CKPT (the prepared checkpoint) the
 * same on the ring, each request's tokens also equal to standalone's
 * (tests/e2e_engine.sh). */
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "kernels.h"
#include "test.h"
#include "util.h"

#define MAX_TOK 512

typedef struct {
    engine *e;
    engine_request *req;
    int tokens[MAX_TOK];
    int n;
    int finish, n_prompt, n_generated, done;
    char text[8192];
    size_t text_len;
    int cancel_after;          /* > 0: engine_cancel from on_token after this many */
    int cancel_stop;
    int sleep_us;              /* per token (keeps a request running) */
    char err[MDI_ERR_LEN];
} job;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void on_token(void *ud, int token, const char *piece, double t)
{
    job *j = ud;
    (void)t;
    pthread_mutex_lock(&mu);
    if (j->n < MAX_TOK) j->tokens[j->n++] = token;
    size_t l = strlen(piece);
    if (j->text_len + l < sizeof(j->text)) {
        memcpy(j->text + j->text_len, piece, l + 1);
        j->text_len += l;
    }
    int n = j->n;
    pthread_mutex_unlock(&mu);
    if (j->cancel_after && n == j->cancel_after) engine_cancel(j->e, j->req, j->cancel_stop);
    if (j->sleep_us) usleep((useconds_t)j->sleep_us);
}

static void on_done(void *ud, int finish, int n_prompt, int n_generated, const char *err)
{
    job *j = ud;
    pthread_mutex_lock(&mu);
    j->finish = finish;
    j->n_prompt = n_prompt;
    j->n_generated = n_generated;
    if (err) snprintf(j->err, sizeof(j->err), "%s", err);
    j->done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static const engine_callbacks CB = {on_token, on_done};

static int wait_done(job *j, double timeout_s)
{
    double end = time_now() + timeout_s;
    pthread_mutex_lock(&mu);
    while (!j->done && time_now() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
        pthread_cond_timedwait(&cv, &mu, &ts);
    }
    int d = j->done;
    pthread_mutex_unlock(&mu);
    return d;
}

/* The requests of the concurrency test. */
#define N_REQ 8
static const char *PROMPTS[] = {
    "Once upon a time",
    "The little dog ran to the park because he wanted to play with the other dogs and the big ball that "
    "was red and blue and yellow",
    "Lily saw a big red ball. She",
    "Tom",
};
static int *prompt_ids[N_REQ];
static int prompt_n[N_REQ];

static sample_params req_params(int i)
{
    sample_params sp;
    memset(&sp, 0, sizeof(sp));
    sp.max_new = 20 + 7 * i;
    sp.temperature = i % 2 ? 0.8f : 0;
    sp.top_p = i % 2 ? 0.9f : 1;
    sp.top_k = i == 3 ? 20 : 0;
    sp.seed = 1000 + (uint64_t)i;
    return sp;
}

static job alone[N_REQ], together[N_REQ], local[N_REQ];
static const char *label = "engine";

typedef struct {
    engine *e;
    int first, count, delay_ms;
} submitter;

static void *submit_main(void *arg)
{
    submitter *s = arg;
    usleep((useconds_t)s->delay_ms * 1000);
    for (int i = s->first; i < s->first + s->count; i++) {
        job *j = &together[i];
        j->e = s->e;
        sample_params sp = req_params(i);
        char err[MDI_ERR_LEN];
        if (engine_submit(s->e, prompt_ids[i], prompt_n[i], &sp, &CB, j, &j->req, err) != 0) {
            pthread_mutex_lock(&mu);
            snprintf(j->err, sizeof(j->err), "submit: %.400s", err);
            j->done = 1;
            j->finish = -1;
            pthread_mutex_unlock(&mu);
        }
        usleep(3000);
    }
    return NULL;
}

static int same_tokens(const job *a, const job *b)
{
    return a->n == b->n && !memcmp(a->tokens, b->tokens, (size_t)a->n * sizeof(int)) && !strcmp(a->text, b->text);
}

static void base_config(engine_config *c, const char *ckpt)
{
    memset(c, 0, sizeof(*c));
    c->ckpt = ckpt;
    c->n_threads = 1;
    c->dtype = DTYPE_F32;
    c->kv_dtype = DTYPE_F32;
    c->wire_dtype = DTYPE_F32;
    c->max_seq = 256;
    c->n_slots = 3;
    c->queue_max = 6;
    c->prefill_chunk = 8;       /* the longer prompts take several chunks */
    c->timeout_s = 10;
}

/* Each request alone on e, into out. */
static int run_alone(engine *e, job *out, char *err)
{
    for (int i = 0; i < N_REQ; i++) {
        out[i].e = e;
        sample_params sp = req_params(i);
        int ok = engine_submit(e, prompt_ids[i], prompt_n[i], &sp, &CB, &out[i], &out[i].req, err) == 0 &&
                 wait_done(&out[i], 60) && out[i].n > 0 && out[i].n == out[i].n_generated &&
                 (out[i].finish == ENGINE_FINISH_STOP || out[i].finish == ENGINE_FINISH_LENGTH);
        if (!ok) {
            snprintf(err, MDI_ERR_LEN, "request %d: finish %d, %d tokens", i, out[i].finish, out[i].n);
            return 0;
        }
    }
    return 1;
}

static char name_buf[256];
static const char *NAME(const char *what)
{
    snprintf(name_buf, sizeof(name_buf), "%s: %s", label, what);
    return name_buf;
}

int main(void)
{
    char ckpt[1024], err[MDI_ERR_LEN];
    TEST_PATH(ckpt, "models/stories260K");
    if (!dir_exists(ckpt)) {
        test_skip("engine", "stories260K missing");
        return 0;
    }
    const char *nodes = getenv("MDI_ENGINE_NODES"), *ring_ckpt = getenv("MDI_ENGINE_CKPT");
    kernels_init(1);
    tokenizer *tok = tokenizer_load(ckpt, err);
    test_result(tok != NULL, "engine: tokenizer loads", "%s", err);
    if (!tok) return test_failures;
    for (int i = 0; i < N_REQ; i++) {
        prompt_n[i] = tokenizer_encode(tok, PROMPTS[i % 4], 1, 0, &prompt_ids[i]);
        CHECK(prompt_n[i] > 0);
    }
    engine_config c;
    base_config(&c, ckpt);
    engine *e = NULL;
    int rc;
    if (nodes && ring_ckpt) {
        /* standalone first: the reference the ring must equal */
        rc = engine_open(&e, &c, tok, err);
        int ok = rc == 0 && run_alone(e, local, err);
        if (e) engine_close(e, NULL, NULL, err);
        test_result(ok, "engine ring: each request alone, standalone", "%s", err);
        label = "engine ring";
        c.ckpt = ring_ckpt;
        c.nodes_config = nodes;
        e = NULL;
    }
    rc = engine_open(&e, &c, tok, err);
    test_result(rc == 0, NAME("opens with 3 slots"), "%s", err);
    if (rc) return test_failures;
    engine_stats st;
    engine_get_stats(e, &st);
    test_result(st.n_slots == 3 && st.queue_max == 6 && st.max_seq == 256 &&
                st.n_nodes == (nodes && ring_ckpt ? 3 : 1), NAME("stats give the sizes"), "slots %d queue %d max_seq %d nodes %d", st.n_slots, st.queue_max,
                st.max_seq, st.n_nodes);

    /* each request alone */
    int ok = run_alone(e, alone, err);
    test_result(ok, NAME("each request alone"), "%s", err);
    if (nodes && ring_ckpt) {
        int same = 1;
        for (int i = 0; i < N_REQ; i++) same &= same_tokens(&alone[i], &local[i]);
        test_result(same, NAME("each request's tokens and text as standalone's"), "differ");
    }
    test_result(alone[1].n_prompt == prompt_n[1] && prompt_n[1] > 2 * c.prefill_chunk,
                NAME("a prompt longer than two prefill chunks"), "%d tokens", prompt_n[1]);

    /* the same requests from 4 threads at different times */
    pthread_t th[4];
    submitter sub[4];
    for (int t = 0; t < 4; t++) {
        sub[t] = (submitter){e, 2 * t, 2, 4 * t};
        pthread_create(&th[t], NULL, submit_main, &sub[t]);
    }
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    int same = 1, bad = -1;
    for (int i = 0; i < N_REQ; i++) {
        if (!wait_done(&together[i], 30) || !same_tokens(&together[i], &alone[i])) {
            same = 0;
            if (bad < 0) bad = i;
        }
    }
    test_result(same, NAME("8 requests from 4 threads on 3 slots, greedy and sampled: each as alone"),
                "request %d: %d tokens (%s) vs %d alone (%s) %s", bad, bad >= 0 ? together[bad].n : 0,
                bad >= 0 ? together[bad].text : "", bad >= 0 ? alone[bad].n : 0, bad >= 0 ? alone[bad].text : "",
                bad >= 0 ? together[bad].err : "");

    /* a prompt too long */
    int *longp = calloc(300, sizeof(int));
    for (int i = 0; i < 300; i++) longp[i] = 5 + i % 100;
    sample_params sp0 = req_params(0);
    rc = engine_submit(e, longp, 256, &sp0, &CB, NULL, NULL, err);
    test_result(rc == MDI_EARG && strstr(err, "256") && strstr(err, "context of 256"),
                NAME("a prompt too long is refused naming both lengths"), "rc %d: %s", rc, err);
    rc = engine_submit(e, longp, 255, &sp0, NULL, NULL, NULL, err);
    test_result(rc == 0, NAME("a prompt that leaves room for one token is taken"), "rc %d: %s", rc, err);
    rc = engine_submit(e, longp, 0, &sp0, &CB, NULL, NULL, err);
    test_result(rc == MDI_EARG, NAME("an empty prompt is refused"), "rc %d", rc);
    longp[3] = 512;
    rc = engine_submit(e, longp, 10, &sp0, &CB, NULL, NULL, err);
    test_result(rc == MDI_EARG && strstr(err, "512"), NAME("a token outside the vocabulary is refused"),
                "rc %d: %s", rc, err);
    free(longp);

    /* cancel: request A cancels itself after 3 tokens; C waits for a slot
     * held by A and B (slow), so only A's cancel can free one in time */
    {
        static job ja, jb, jc, jd, jx;
        ja.e = jb.e = jc.e = jd.e = jx.e = e;
        ja.cancel_after = 3;
        jb.sleep_us = jd.sleep_us = 2000;
        jx.sleep_us = 2000;
        sample_params lp = req_params(0);
        lp.max_new = 200;
        lp.temperature = 1.0f;
        lp.top_p = 1;
        sample_params cp = req_params(2);
        /* three slots: X and B run slow, A cancels itself, C takes A's slot */
        engine_submit(e, prompt_ids[0], prompt_n[0], &lp, &CB, &jx, &jx.req, err);
        engine_submit(e, prompt_ids[0], prompt_n[0], &lp, &CB, &jb, &jb.req, err);
        engine_submit(e, prompt_ids[1], prompt_n[1], &lp, &CB, &ja, &ja.req, err);
        engine_submit(e, prompt_ids[2], prompt_n[2], &cp, &CB, &jc, &jc.req, err);
        int d = wait_done(&ja, 10) && wait_done(&jc, 10);
        pthread_mutex_lock(&mu);
        int b_running = !jb.done && !jx.done;
        pthread_mutex_unlock(&mu);
        test_result(d && ja.finish == ENGINE_FINISH_CANCELLED && ja.n_generated == 3,
                    NAME("a request cancelled ends after the token at hand"), "done %d finish %d, %d tokens", d,
                    ja.finish, ja.n_generated);
        test_result(d && b_running && same_tokens(&jc, &alone[2]),
                    NAME("the cancelled request's slot goes to the queued one"), "done %d, others running %d, "
                    "%d tokens vs %d", d, b_running, jc.n, alone[2].n);
        /* queue full: 2 slots busy (B, X), fill the queue with slow ones */
        static job q[12];
        int n_ok = 0, full = 0;
        for (int i = 0; i < 12 && !full; i++) {
            q[i].e = e;
            q[i].sleep_us = 2000;
            rc = engine_submit(e, prompt_ids[0], prompt_n[0], &lp, &CB, &q[i], &q[i].req, err);
            if (rc == 0) n_ok++;
            else full = rc == MDI_EFULL;
        }
        engine_get_stats(e, &st);
        test_result(full && n_ok >= 6 && n_ok <= 7 && st.queue_depth <= 6 && strstr(err, "queue"),
                    NAME("a full queue refuses with MDI_EFULL"), "full %d after %d: %s (depth %d)", full, n_ok,
                    err, st.queue_depth);
        /* stop: a request ended by the caller's stop finishes STOP */
        engine_cancel(e, jb.req, 1);
        int db = wait_done(&jb, 10);
        test_result(db && jb.finish == ENGINE_FINISH_STOP, NAME("engine_cancel with stop ends it STOP"),
                    "done %d finish %d", db, jb.finish);
        /* cancel the queued ones: they end without a token */
        for (int i = 0; i < n_ok; i++) engine_cancel(e, q[i].req, 0);
        engine_cancel(e, jx.req, 0);
        int all = wait_done(&jx, 10);
        for (int i = 0; i < n_ok; i++) all &= wait_done(&q[i], 10) && q[i].finish == ENGINE_FINISH_CANCELLED;
        test_result(all, NAME("cancelled queued and running requests end CANCELLED"), "not all");
        (void)jd;
    }
    for (int w = 0; w < 400; w++) { /* the 255-token prompt's request ends */
        engine_get_stats(e, &st);
        if (st.requests_done == st.requests_total) break;
        usleep(5000);
    }
    test_result(st.slots_busy == 0 && st.queue_depth == 0 && st.requests_done == st.requests_total &&
                st.tokens_generated > 0 && !st.failed,
                NAME("stats when idle"), "busy %d depth %d done %ld/%ld tokens %ld", st.slots_busy,
                st.queue_depth, st.requests_done, st.requests_total, st.tokens_generated);

    /* closing with requests running and queued: all end CANCELLED */
    static job cl[6];
    sample_params lp = req_params(0);
    lp.max_new = 200;
    for (int i = 0; i < 6; i++) {
        cl[i].e = e;
        cl[i].sleep_us = 2000;
        engine_submit(e, prompt_ids[i % 4], prompt_n[i % 4], &lp, &CB, &cl[i], NULL, err);
    }
    for (int w = 0; w < 200; w++) { /* the first ones run */
        pthread_mutex_lock(&mu);
        int n = cl[0].n;
        pthread_mutex_unlock(&mu);
        if (n > 0) break;
        usleep(5000);
    }
    run_stats rs;
    json_t *nodes_json = NULL;
    rc = engine_close(e, &rs, &nodes_json, err);
    int cancelled = 1;
    for (int i = 0; i < 6; i++) cancelled &= cl[i].done && cl[i].finish == ENGINE_FINISH_CANCELLED;
    test_result(rc == 0 && cancelled, NAME("close ends running and queued requests CANCELLED"),
                "rc %d: %s; finishes %d %d %d %d %d %d", rc, err, cl[0].finish, cl[1].finish, cl[2].finish,
                cl[3].finish, cl[4].finish, cl[5].finish);
    test_result(rs.tokens_generated > 0 && rs.kv_bytes > 0 && (!nodes || json_array_size(nodes_json) == 3),
                NAME("close gives the figures"), "tokens %ld, kv %zu, %zu nodes", rs.tokens_generated, rs.kv_bytes,
                json_array_size(nodes_json));
    run_stats_free(&rs);
    json_decref(nodes_json);
    for (int i = 0; i < N_REQ; i++) free(prompt_ids[i]);
    tokenizer_free(tok);
    kernels_shutdown();
    return test_failures;
}
