/* test_failover: the engine on a ring losing a secondary mid-generation
 * (driven by tests/e2e_failover.sh, which starts the nodes; alone it
 * skips). Environment:
 *
 *   MDI_FAILOVER_NODES, MDI_FAILOVER_CKPT   the ring and its prepared model
 *   MDI_FAILOVER_KILL_PID                   the secondary killed (SIGKILL)
 *                                           once request 0 has a few tokens
 *   MDI_FAILOVER_KILLED_FILE                created after the kill (the
 *                                           script then restarts the node)
 *   MDI_FAILOVER_KILL_PID2                  killed too once the first
 *                                           failover is over (a spare)
 *   MDI_FAILOVER_EXPECT                     "complete" (default) or "error"
 *   MDI_FAILOVER_TIMEOUT                    --failover-timeout (default 20)
 *
 * complete: every request ends as in an undisturbed run on the same ring,
 * token for token (greedy and sampled), and the engine counts one failover
 * and serves a new request. error: every request ends ENGINE_FINISH_ERROR
 * naming the spare and the secondary it stood in for; new work is refused. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "kernels.h"
#include "test.h"
#include "util.h"

#define MAX_TOK 256
#define N_REQ 4

typedef struct {
    int tokens[MAX_TOK];
    int n, finish, done, sleep_us;
    char err[MDI_ERR_LEN];
} job;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void on_token(void *ud, int token, const char *piece, double t)
{
    job *j = ud;
    (void)piece;
    (void)t;
    pthread_mutex_lock(&mu);
    if (j->n < MAX_TOK) j->tokens[j->n++] = token;
    pthread_mutex_unlock(&mu);
    if (j->sleep_us) usleep((useconds_t)j->sleep_us);
}

static void on_done(void *ud, int finish, int n_prompt, int n_generated, const char *err)
{
    job *j = ud;
    (void)n_prompt;
    (void)n_generated;
    pthread_mutex_lock(&mu);
    j->finish = finish;
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

static int tokens_of(job *j)
{
    pthread_mutex_lock(&mu);
    int n = j->n;
    pthread_mutex_unlock(&mu);
    return n;
}

static const char *PROMPTS[N_REQ] = {
    "Once upon a time",
    "The little dog ran to the park because he wanted to play with the other dogs",
    "Lily saw a big red ball. She",
    "Tom",
};

/* greedy and sampled in turn, long enough to be cut by the kill */
static sample_params req_params(int i)
{
    sample_params sp;
    memset(&sp, 0, sizeof(sp));
    sp.max_new = 120 + 10 * i;
    sp.temperature = i % 2 ? 0.8f : 0;
    sp.top_p = i % 2 ? 0.9f : 1;
    sp.seed = 77 + (uint64_t)i;
    return sp;
}

static int submit_all(engine *e, int **ids, const int *n, job *jobs, int sleep_us, char *err)
{
    for (int i = 0; i < N_REQ; i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].sleep_us = sleep_us;
        sample_params sp = req_params(i);
        int rc = engine_submit(e, ids[i], n[i], &sp, &CB, &jobs[i], NULL, err);
        if (rc) return rc;
    }
    return 0;
}

static void kill_pid(const char *s)
{
    if (s && atoi(s) > 0) kill((pid_t)atoi(s), SIGKILL);
}

int main(void)
{
    char ckpt[1024], err[MDI_ERR_LEN];
    const char *nodes = getenv("MDI_FAILOVER_NODES"), *ring_ckpt = getenv("MDI_FAILOVER_CKPT");
    TEST_PATH(ckpt, "models/stories260K");
    if (!nodes || !ring_ckpt || !dir_exists(ckpt)) {
        test_skip("failover", "driven by tests/e2e_failover.sh");
        return 0;
    }
    const char *expect = getenv("MDI_FAILOVER_EXPECT");
    int want_error = expect && !strcmp(expect, "error");
    const char *tmo = getenv("MDI_FAILOVER_TIMEOUT");
    kernels_init(1);
    tokenizer *tok = tokenizer_load(ckpt, err);
    test_result(tok != NULL, "failover: tokenizer loads", "%s", err);
    if (!tok) return test_failures;
    int *ids[N_REQ], n[N_REQ];
    for (int i = 0; i < N_REQ; i++) n[i] = tokenizer_encode(tok, PROMPTS[i], 1, 0, &ids[i]);

    engine_config c;
    memset(&c, 0, sizeof(c));
    c.ckpt = ring_ckpt;
    c.nodes_config = nodes;
    c.n_threads = 1;
    c.dtype = c.kv_dtype = c.wire_dtype = DTYPE_F32;
    c.max_seq = 256;
    c.n_slots = N_REQ;
    c.prefill_chunk = 8;    /* a replay takes several chunks */
    c.timeout_s = 5;
    c.failover_timeout_s = tmo ? atof(tmo) : 20;
    engine *e = NULL;
    int rc = engine_open(&e, &c, tok, err);
    test_result(rc == 0, "failover: the engine opens on the ring", "%s", err);
    if (rc) return test_failures;

    /* undisturbed: the reference */
    static job ref[N_REQ], run[N_REQ];
    rc = submit_all(e, ids, n, ref, 0, err);
    int ok = rc == 0;
    for (int i = 0; i < N_REQ && ok; i++) ok &= wait_done(&ref[i], 60) && ref[i].finish != ENGINE_FINISH_ERROR;
    test_result(ok, "failover: the undisturbed run", "%s %s", err, ref[0].err);
    if (!ok) return test_failures;

    /* the same with a node killed once request 0 has a few tokens */
    rc = submit_all(e, ids, n, run, 3000, err);
    for (int w = 0; w < 2000 && !rc && tokens_of(&run[0]) < 5; w++) usleep(2000);
    int at_kill = tokens_of(&run[0]);
    kill_pid(getenv("MDI_FAILOVER_KILL_PID"));
    const char *killed = getenv("MDI_FAILOVER_KILLED_FILE");
    if (killed) {
        FILE *f = fopen(killed, "w");
        if (f) fclose(f);
    }
    engine_stats st;
    if (getenv("MDI_FAILOVER_KILL_PID2")) {
        /* the spare too, once it took the node's place and went on */
        for (int w = 0; w < 3000; w++) {
            engine_get_stats(e, &st);
            if (st.failovers >= 1 && tokens_of(&run[0]) >= at_kill + 3) break;
            usleep(10000);
        }
        kill_pid(getenv("MDI_FAILOVER_KILL_PID2"));
    }
    int all = 1;
    for (int i = 0; i < N_REQ; i++) all &= wait_done(&run[i], 90);
    engine_get_stats(e, &st);
    test_result(all && at_kill >= 5 && at_kill < run[0].n, "failover: killed mid-generation, every request ends",
                "done %d, %d tokens at the kill of %d", all, at_kill, run[0].n);
    if (!want_error) {
        int same = 1, bad = -1;
        for (int i = 0; i < N_REQ; i++) {
            int eq = run[i].finish == ref[i].finish && run[i].n == ref[i].n &&
                     !memcmp(run[i].tokens, ref[i].tokens, (size_t)ref[i].n * sizeof(int));
            if (!eq && bad < 0) bad = i;
            same &= eq;
        }
        test_result(same, "failover: every request's tokens (greedy and sampled) as undisturbed",
                    "request %d: finish %d vs %d, %d vs %d tokens: %s", bad, bad >= 0 ? run[bad].finish : 0,
                    bad >= 0 ? ref[bad].finish : 0, bad >= 0 ? run[bad].n : 0, bad >= 0 ? ref[bad].n : 0,
                    bad >= 0 ? run[bad].err : "");
        test_result(st.failovers == 1 && st.failover_lost_s > 0 && !st.failed, "failover: counted in engine_stats",
                    "failovers %d, lost %.3f s, failed %d", st.failovers, st.failover_lost_s, st.failed);
        printf("INFO: failover: %.3f s lost\n", st.failover_lost_s);
        /* the engine serves on */
        static job again;
        sample_params sp = req_params(0);
        rc = engine_submit(e, ids[0], n[0], &sp, &CB, &again, NULL, err);
        ok = rc == 0 && wait_done(&again, 60) && again.n == ref[0].n &&
             !memcmp(again.tokens, ref[0].tokens, (size_t)ref[0].n * sizeof(int));
        test_result(ok, "failover: a new request after it gets its tokens", "%s %s", err, again.err);
    } else {
        int errors = 0, named = 0;
        for (int i = 0; i < N_REQ; i++) {
            if (run[i].finish != ENGINE_FINISH_ERROR) continue;
            errors++;
            named += strstr(run[i].err, "spare 0") && strstr(run[i].err, "secondary 1");
        }
        test_result(errors == N_REQ && named == errors, "failover: the spare dead too: every request ends ERROR "
                    "naming the spare and the node", "%d errors, %d named: %s", errors, named, run[0].err);
        sample_params sp = req_params(0);
        rc = engine_submit(e, ids[0], n[0], &sp, &CB, NULL, NULL, err);
        test_result(rc == MDI_ESTATE && st.failed, "failover: then the engine refuses work", "rc %d", rc);
    }
    rc = engine_close(e, NULL, NULL, err);
    test_result(want_error ? rc != 0 : rc == 0, "failover: closes", "%s", err);
    for (int i = 0; i < N_REQ; i++) free(ids[i]);
    tokenizer_free(tok);
    kernels_shutdown();
    return test_failures;
}
