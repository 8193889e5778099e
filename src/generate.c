/* generate: see generate.h. */
#include "generate.h"
#include "engine.h"
#include "util.h"

#include <pthread.h>

#include <stdlib.h>
#include <string.h>

int generate_prepare_samples(const starter_opts *o, const tokenizer *tok, int n_samples,
                             sample_result **out, char *err)
{
    sample_result *res = calloc((size_t)n_samples, sizeof(*res));
    if (!res)
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    int rc = MDI_OK;
    if (o->prompt_ids) {
        int *ids, n;
        if ((rc = cli_parse_ids(o->prompt_ids, &ids, &n, err))) {
            free(res);
            return rc;
        }
        if (n == 0) {
            free(ids);
            free(res);
            return mdi_fail(err, MDI_EARG, "--prompt-ids: no ids");
        }
        for (int i = 0; i < n_samples; i++) {
            res[i].prompt_ids = malloc((size_t)n * sizeof(int));
            memcpy(res[i].prompt_ids, ids, (size_t)n * sizeof(int));
            res[i].n_prompt = n;
            res[i].prompt = tokenizer_decode(tok, ids, n);
        }
        free(ids);
    } else {
        char **prompts;
        int n_prompts;
        if ((rc = cli_load_prompts(o->prompt, &prompts, &n_prompts, err))) {
            free(res);
            return rc;
        }
        for (int i = 0; i < n_samples && !rc; i++) {
            const char *p = prompts[i % n_prompts];
            int add_bos = tokenizer_adds_bos(tok), special = !o->no_parse_special;
            int *ids = NULL, n;
            if (o->chat) {
                /* the template writes BOS where it has one */
                n = tokenizer_chat_turn(tok, p, 1, 1, special, &ids);
                if (n == MDI_EUNSUPPORTED) {
                    rc = mdi_fail(err, MDI_EUNSUPPORTED, "--chat: the tokenizer has no chat template we know "
                                  "(supported: Llama 3, Llama 2, ChatML)");
                    break;
                }
            } else {
                n = tokenizer_encode(tok, p, add_bos, special, &ids);
            }
            if (n < 0) {
                rc = mdi_fail(err, n, "cannot tokenize prompt %d", i);
                break;
            }
            if (n == 0) {
                free(ids);
                rc = mdi_fail(err, MDI_EARG, "prompt %d is empty and the tokenizer adds no BOS: nothing to start from", i);
                break;
            }
            res[i].prompt = strdup(p);
            res[i].prompt_ids = ids;
            res[i].n_prompt = n;
        }
        cli_free_prompts(prompts, n_prompts);
    }
    for (int i = 0; i < n_samples && !rc; i++) {
        res[i].generated_ids = malloc((size_t)(o->n_tokens > 0 ? o->n_tokens : 1) * sizeof(int));
        sample_result_append_text(&res[i], "");
    }
    if (rc) {
        for (int i = 0; i < n_samples; i++)
            sample_result_free(&res[i]);
        free(res);
        return rc;
    }
    *out = res;
    return MDI_OK;
}

sample_params generate_sample_params(const starter_opts *o, int index)
{
    sample_params sp = { o->n_tokens, o->temperature, o->top_k, o->top_p, o->seed + (uint64_t)index, !o->chat, 0 };
    return sp;
}

int sample_state_init(sample_state *s, sample_result *res, const sample_params *sp, const tokenizer *tok,
                      int vocab_size, FILE *echo, char *err)
{
    memset(s, 0, sizeof(*s));
    s->res = res;
    s->max_new = sp->max_new;
    s->ignore_eos = sp->ignore_eos;
    s->echo = echo;
    if (sampler_init(&s->smp, vocab_size, sp->temperature, sp->top_k, sp->top_p, sp->seed) != 0)
        return mdi_fail(err, MDI_ENOMEM, "out of memory for the sampler");
    tokenizer_stream_init(&s->stream);
    /* the prompt goes through the stream too, so that the first generated
     * piece keeps its leading space */
    char piece[512];
    for (int i = 0; i < res->n_prompt; i++) {
        tokenizer_stream_next(tok, &s->stream, res->prompt_ids[i], piece, sizeof(piece));
        if (echo && sp->echo_prompt)
            fputs(piece, echo);
    }
    if (echo)
        fflush(echo);
    s->done = s->max_new <= 0;
    return MDI_OK;
}

void sample_state_free(sample_state *s)
{
    sampler_free(&s->smp);
}

int sample_state_accept(sample_state *s, const tokenizer *tok, float *logits, double t)
{
    sample_result *r = s->res;
    int id = sampler_sample(&s->smp, logits);
    if (r->n_generated == 0)
        r->t_first_token = t;
    r->generated_ids[r->n_generated++] = id;
    char piece[512];
    if (!tokenizer_is_eos(tok, id)) {
        tokenizer_stream_next(tok, &s->stream, id, piece, sizeof(piece));
        sample_result_append_text(r, piece);
        if (s->echo) {
            fputs(piece, s->echo);
            fflush(s->echo);
        }
    }
    if ((tokenizer_is_eos(tok, id) && !s->ignore_eos) || r->n_generated >= s->max_new ||
        (s->interrupt && *s->interrupt)) {
        s->done = 1;
        r->t_done = t;
        return 0;
    }
    s->next_token = id;
    return 1;
}

int generate_plan(const starter_opts *o, const model_config *c, const sample_result *r, int n,
                  int *max_seq, int *max_batch, char *err)
{
    int longest = 0;
    for (int i = 0; i < n; i++)
        if (r[i].n_prompt > longest)
            longest = r[i].n_prompt;
    if (o->max_seq_len > c->max_seq_len)
        return mdi_fail(err, MDI_EARG, "--max-seq-len %d: above the model's context of %d tokens",
                        o->max_seq_len, c->max_seq_len);
    int need = o->max_seq_len ? o->max_seq_len : longest + o->n_tokens;
    if (need > c->max_seq_len)
        need = c->max_seq_len;
    for (int i = 0; i < n; i++)
        if (r[i].n_prompt >= need)
            return mdi_fail(err, MDI_EARG, "sample %d: prompt of %d tokens does not fit the context of %d",
                            i, r[i].n_prompt, need);
    /* Say so when --n-tokens does not fit: the last position takes the
     * prompt's tokens and all but the last generated one. One line per
     * prompt length. */
    for (int i = 0; i < n; i++) {
        int fit = need - r[i].n_prompt + 1, seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = r[j].n_prompt == r[i].n_prompt;
        if (!seen && o->n_tokens > fit)
            log_warn("sample %d: a prompt of %d tokens and --n-tokens %d do not fit a context of %d: "
                     "at most %d tokens will be generated", i, r[i].n_prompt, o->n_tokens, need, fit);
    }
    *max_seq = need;
    *max_batch = longest < GENERATE_MAX_BATCH ? (longest > 0 ? longest : 1) : GENERATE_MAX_BATCH;
    return MDI_OK;
}


_Static_assert(ENGINE_DEFAULT_PREFILL_CHUNK == GENERATE_MAX_BATCH, "one prefill chunk for every mode");

/* Batch mode on the engine: every sample submitted at once, its tokens
 * and text gathered by the callbacks into its result. */
typedef struct {
    const starter_opts *o;
    sample_result *results;
    int n_samples, distributed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_done, next_print;
    int *finished;
    double t0;
    int error;
    char err[MDI_ERR_LEN];
} batch_run;

typedef struct {
    batch_run *b;
    int index;
} batch_sample;

/* Standalone prints the finished samples in order (each after its
 * predecessors, as when they ran in turn); the ring's are printed by the
 * caller at the end. b->mu held. */
static void batch_print(batch_run *b)
{
    const starter_opts *o = b->o;
    while (b->next_print < b->n_samples && b->finished[b->next_print]) {
        int i = b->next_print++;
        if (b->n_samples == 1) {
            if (!o->quiet) {
                fputc('\n', stdout);
                fflush(stdout);
            }
        } else if (!o->quiet && !b->distributed) {
            printf("--- sample %d ---\n%s%s\n", i, o->chat ? "" : b->results[i].prompt, b->results[i].text);
            fflush(stdout);
        }
    }
}

static void batch_on_token(void *ud, int token, const char *piece, double t)
{
    batch_sample *s = ud;
    batch_run *b = s->b;
    sample_result *r = &b->results[s->index];
    (void)t;
    double now = time_now() - b->t0;
    if (r->n_generated == 0) r->t_first_token = now;
    if (r->n_generated < (b->o->n_tokens > 0 ? b->o->n_tokens : 1)) r->generated_ids[r->n_generated++] = token;
    if (piece[0]) {
        sample_result_append_text(r, piece);
        if (b->n_samples == 1 && !b->o->quiet) {
            fputs(piece, stdout);
            fflush(stdout);
        }
    }
}

static void batch_on_done(void *ud, int finish, int n_prompt, int n_generated, const char *err)
{
    batch_sample *s = ud;
    batch_run *b = s->b;
    (void)n_prompt;
    (void)n_generated;
    b->results[s->index].t_done = time_now() - b->t0;
    pthread_mutex_lock(&b->mu);
    if (finish == ENGINE_FINISH_ERROR && !b->error) {
        b->error = 1;
        snprintf(b->err, sizeof(b->err), "%s", err ? err : "failed");
    }
    b->finished[s->index] = 1;
    b->n_done++;
    if (!b->error) batch_print(b);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void generate_engine_config(const starter_opts *o, struct engine_config *c)
{
    memset(c, 0, sizeof(*c));
    c->ckpt = o->ckpt;
    c->nodes_config = o->nodes_config;
    c->n_threads = o->n_threads;
    c->dtype = o->dtype;
    c->kv_dtype = o->kv_dtype;
    c->wire_dtype = o->wire_dtype;
    c->mmap_weights = o->mmap_weights;
    c->mlock = o->mlock;
    c->max_seq = o->max_seq_len;
    c->timeout_s = o->timeout_s;
    c->connect_timeout_s = o->connect_timeout_s;
    c->failover_timeout_s = o->failover_timeout_s;
    c->verbose = o->verbose;
}

int generate_run(const starter_opts *o, const tokenizer *tok, sample_result *results, int n_samples, int n_nodes,
                 run_stats *st, json_t **nodes, char *err)
{
    model_config cfg;
    int rc, max_seq, max_batch;
    *nodes = NULL;
    memset(st, 0, sizeof(*st));
    if ((rc = model_config_load(&cfg, o->ckpt, err))) return rc;
    if ((rc = generate_plan(o, &cfg, results, n_samples, &max_seq, &max_batch, err))) return rc;
    for (int i = 0; i < n_samples; i++)
        if (!results[i].generated_ids &&
            !(results[i].generated_ids = malloc((size_t)(o->n_tokens > 0 ? o->n_tokens : 1) * sizeof(int))))
            return mdi_fail(err, MDI_ENOMEM, "out of memory");
    engine_config c;
    generate_engine_config(o, &c);
    c.max_seq = max_seq;
    /* the prefill chunk as both modes have always cut prompts: the longest
     * prompt, at most GENERATE_MAX_BATCH */
    c.prefill_chunk = max_batch;
    int most = n_nodes > 1 ? FORWARD_MAX_SAMPLES : GENERATE_MAX_SLOTS;
    c.n_slots = n_samples < most ? (n_samples > 0 ? n_samples : 1) : most;
    c.queue_max = n_samples > 0 ? n_samples : 1;
    c.logits_out = o->logits_out;
    c.record_curve = 1;
    batch_run b;
    memset(&b, 0, sizeof(b));
    b.o = o;
    b.results = results;
    b.n_samples = n_samples;
    b.distributed = n_nodes > 1;
    b.finished = calloc((size_t)(n_samples > 0 ? n_samples : 1), sizeof(int));
    batch_sample *bs = calloc((size_t)(n_samples > 0 ? n_samples : 1), sizeof(*bs));
    if (!b.finished || !bs) {
        free(b.finished);
        free(bs);
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    engine *e = NULL;
    if ((rc = engine_open(&e, &c, tok, err))) goto done;
    /* one sample streams its prompt, then its text as it comes */
    if (n_samples == 1 && !o->quiet && !o->chat) {
        tokenizer_stream ts;
        char piece[512];
        tokenizer_stream_init(&ts);
        for (int i = 0; i < results[0].n_prompt; i++) {
            tokenizer_stream_next(tok, &ts, results[0].prompt_ids[i], piece, sizeof(piece));
            fputs(piece, stdout);
        }
        fflush(stdout);
    }
    b.t0 = time_now();
    static const engine_callbacks cb = {batch_on_token, batch_on_done};
    for (int i = 0; i < n_samples && !rc; i++) {
        bs[i].b = &b;
        bs[i].index = i;
        sample_params sp = generate_sample_params(o, i);
        rc = engine_submit(e, results[i].prompt_ids, results[i].n_prompt, &sp, &cb, &bs[i], NULL, err);
        if (rc) rc = mdi_fail(err, rc, "sample %d: %.400s", i, err);
    }
    pthread_mutex_lock(&b.mu);
    while (!rc && b.n_done < n_samples && !b.error) pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);
    char why[MDI_ERR_LEN];
    int crc = engine_close(e, b.error || rc ? NULL : st, b.error || rc ? NULL : nodes, why);
    if (!rc && b.error) rc = mdi_fail(err, MDI_ENET, "%s", b.err);
    if (!rc && crc) rc = mdi_fail(err, crc, "%s", why);
    if (!rc) st->ttft_s = n_samples ? results[0].t_first_token : 0;
done:
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
    free(b.finished);
    free(bs);
    return rc;
}

int generate_session_init(generate_session *g, const model *m, int max_seq, int max_batch, dtype_t kv_dtype,
                          char *err)
{
    memset(g, 0, sizeof(*g));
    g->m = m;
    g->max_seq = max_seq;
    g->max_batch = max_batch;
    int rc;
    if ((rc = forward_state_init(&g->fs, m, max_batch, max_seq, err)))
        return rc;
    if ((rc = kv_cache_init(&g->kv, m, max_seq, kv_dtype, err))) {
        forward_state_free(&g->fs);
        return rc;
    }
    g->x = malloc((size_t)max_batch * m->cfg.dim * sizeof(float));
    if (!g->x) {
        generate_session_free(g);
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    }
    return MDI_OK;
}

void generate_session_free(generate_session *g)
{
    if (!g->m)
        return;
    free(g->x);
    kv_cache_free(&g->kv);
    forward_state_free(&g->fs);
    memset(g, 0, sizeof(*g));
}

int generate_session_turn(generate_session *g, const tokenizer *tok, sample_state *ss, const int *ids, int n,
                          double t0, turn_figures *fig, token_curve *curve, char *err)
{
    if (ss->pos + n >= g->max_seq)
        return mdi_fail(err, MDI_EARG, "the conversation would fill the context of %d tokens", g->max_seq);
    double ta = time_now();
    float *logits = forward_tokens(g->m, &g->fs, &g->kv, ids, n, ss->pos, g->x);
    ss->pos += n;
    fig->prefill_s += time_now() - ta;
    fig->prefill_tokens += n;
    int going = !ss->done;
    while (going) {
        going = sample_state_accept(ss, tok, logits, time_now() - t0);
        token_curve_add(curve, time_now() - t0, ++fig->generated);
        if (going && ss->pos >= g->max_seq) {
            ss->done = 1;
            ss->res->t_done = time_now() - t0;
            going = 0;
        }
        if (!going)
            break;
        double td = time_now();
        logits = forward_tokens(g->m, &g->fs, &g->kv, &ss->next_token, 1, ss->pos, g->x);
        ss->pos++;
        fig->decode_s += time_now() - td;
        fig->decode_tokens++;
    }
    return MDI_OK;
}
