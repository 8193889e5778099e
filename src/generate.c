/* generate: see generate.h. */
#include "generate.h"
#include "util.h"

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


/* Standalone mode's run: up to GENERATE_MAX_SLOTS samples hold a slot (a
 * KV cache) at once; each is prefilled alone when it takes its slot, and
 * every decode step runs the slots' samples as one batch. */
typedef struct {
    const starter_opts *o;
    const model *m;
    const tokenizer *tok;
    sample_result *results;
    int n_samples, n_slots, max_seq;
    forward_state fs;
    kv_cache *kv;           /* (n_slots,) */
    sample_state *ss;       /* (n_slots,) */
    int *slot_sample;       /* (n_slots,): the sample in the slot, -1 free */
    forward_row *rows;      /* (n_slots,) */
    int *row_slot, *tokens; /* (n_slots,) */
    float *x;               /* (max(max_batch, n_slots), dim) */
    int *finished;          /* (n_samples,) */
    int next_print;
    FILE *echo, *logits_f;
    double t0;
    long generated;
    token_curve curve;
} standalone_run;

/* Prints finished samples in order (several samples: after each one's
 * predecessors, as when they ran in turn). */
static void standalone_print(standalone_run *r)
{
    const starter_opts *o = r->o;
    while (r->next_print < r->n_samples && r->finished[r->next_print]) {
        int i = r->next_print++;
        if (r->echo) {
            fputc('\n', r->echo);
            fflush(r->echo);
        } else if (!o->quiet) {
            printf("--- sample %d ---\n%s%s\n", i, o->chat ? "" : r->results[i].prompt, r->results[i].text);
        }
    }
}

/* Takes the logits after slot k's last token: 1 while its sample goes on,
 * 0 once it finished (the slot is then free). */
static int standalone_accept(standalone_run *r, int k, float *logits)
{
    int i = r->slot_sample[k];
    sample_state *ss = &r->ss[k];
    if (r->logits_f && i == 0)
        fwrite(logits, sizeof(float), (size_t)r->m->cfg.vocab_size, r->logits_f);
    int going = sample_state_accept(ss, r->tok, logits, time_now() - r->t0);
    token_curve_add(&r->curve, time_now() - r->t0, ++r->generated);
    if (going && ss->pos >= r->max_seq) {
        ss->done = 1;
        r->results[i].t_done = time_now() - r->t0;
        going = 0;
    }
    if (!going) {
        sample_state_free(ss);
        r->slot_sample[k] = -1;
        r->finished[i] = 1;
        standalone_print(r);
    }
    return going;
}

static void standalone_free(standalone_run *r)
{
    for (int k = 0; r->kv && k < r->n_slots; k++)
        kv_cache_free(&r->kv[k]);
    for (int k = 0; r->ss && r->slot_sample && k < r->n_slots; k++)
        if (r->slot_sample[k] >= 0)
            sample_state_free(&r->ss[k]);
    free(r->kv);
    free(r->ss);
    free(r->slot_sample);
    free(r->rows);
    free(r->row_slot);
    free(r->tokens);
    free(r->x);
    free(r->finished);
    if (r->fs.xb)
        forward_state_free(&r->fs);
}

int generate_standalone(const starter_opts *o, const model *m, const tokenizer *tok,
                        sample_result *results, int n_samples, run_stats *st, char *err)
{
    const model_config *c = &m->cfg;
    int max_batch, rc;
    standalone_run r;
    memset(&r, 0, sizeof(r));
    r.o = o;
    r.m = m;
    r.tok = tok;
    r.results = results;
    r.n_samples = n_samples;
    if ((rc = generate_plan(o, c, results, n_samples, &r.max_seq, &max_batch, err)))
        return rc;
    r.n_slots = n_samples < GENERATE_MAX_SLOTS ? (n_samples > 0 ? n_samples : 1) : GENERATE_MAX_SLOTS;
    int n = r.n_slots, x_rows = max_batch > n ? max_batch : n;
    if ((rc = forward_state_init_batch(&r.fs, m, max_batch, n, r.max_seq, err)))
        return rc;
    r.kv = calloc((size_t)n, sizeof(kv_cache));
    r.ss = calloc((size_t)n, sizeof(sample_state));
    r.slot_sample = malloc((size_t)n * sizeof(int));
    r.rows = malloc((size_t)n * sizeof(forward_row));
    r.row_slot = malloc((size_t)n * sizeof(int));
    r.tokens = malloc((size_t)n * sizeof(int));
    r.x = malloc((size_t)x_rows * c->dim * sizeof(float));
    r.finished = calloc((size_t)(n_samples > 0 ? n_samples : 1), sizeof(int));
    if (!r.kv || !r.ss || !r.slot_sample || !r.rows || !r.row_slot || !r.tokens || !r.x || !r.finished) {
        standalone_free(&r);
        return mdi_fail(err, MDI_ENOMEM, "out of memory for %d slots", n);
    }
    for (int k = 0; k < n; k++)
        r.slot_sample[k] = -1;
    for (int k = 0; k < n && !rc; k++)
        rc = kv_cache_init(&r.kv[k], m, r.max_seq, o->kv_dtype, err);
    if (!rc && o->logits_out && !(r.logits_f = fopen(o->logits_out, "wb")))
        rc = mdi_fail(err, MDI_EIO, "%s: cannot create", o->logits_out);

    r.t0 = time_now();
    double prefill_time = 0, decode_time = 0;
    long prefill_tokens = 0, decode_tokens = 0;
    token_curve_add(&r.curve, 0, 0);
    r.echo = (o->quiet || n_samples > 1) ? NULL : stdout;
    int next = 0, busy = 0;
    while (!rc && (next < n_samples || busy > 0)) {
        /* Free slots take the next samples, each prefilled alone. */
        for (int k = 0; k < n && next < n_samples && !rc; k++) {
            if (r.slot_sample[k] >= 0)
                continue;
            int i = next++;
            sample_params sp = generate_sample_params(o, i);
            if ((rc = sample_state_init(&r.ss[k], &results[i], &sp, tok, c->vocab_size, r.echo, err)))
                break;
            r.slot_sample[k] = i;
            kv_cache_reset(&r.kv[k]);
            double ta = time_now();
            float *logits = forward_tokens(m, &r.fs, &r.kv[k], results[i].prompt_ids, results[i].n_prompt, 0, r.x);
            prefill_time += time_now() - ta;
            prefill_tokens += results[i].n_prompt;
            r.ss[k].pos = results[i].n_prompt;
            if (r.ss[k].done) { /* --n-tokens 0 */
                sample_state_free(&r.ss[k]);
                r.slot_sample[k] = -1;
                r.finished[i] = 1;
                standalone_print(&r);
                k--; /* the slot is free again */
                continue;
            }
            if (standalone_accept(&r, k, logits))
                busy++;
            else
                k--;
        }
        if (rc || busy == 0)
            continue;
        /* One decode step of every sample in a slot. */
        int b = 0;
        for (int k = 0; k < n; k++) {
            if (r.slot_sample[k] < 0)
                continue;
            r.rows[b].kv = &r.kv[k];
            r.rows[b].pos = r.ss[k].pos;
            r.tokens[b] = r.ss[k].next_token;
            r.row_slot[b++] = k;
        }
        double td = time_now();
        float *logits = forward_batch(m, &r.fs, r.rows, r.tokens, b, r.x);
        decode_time += time_now() - td;
        decode_tokens += b;
        for (int j = 0; j < b; j++) {
            int k = r.row_slot[j];
            r.ss[k].pos++;
            if (!standalone_accept(&r, k, logits + (size_t)j * c->vocab_size))
                busy--;
        }
    }
    if (r.logits_f)
        fclose(r.logits_f);
    memset(st, 0, sizeof(*st));
    st->curve = r.curve;
    st->total_s = time_now() - r.t0;
    st->ttft_s = n_samples ? results[0].t_first_token : 0;
    st->prefill_tok_s = prefill_time > 0 ? prefill_tokens / prefill_time : 0;
    st->decode_tok_s = decode_time > 0 ? decode_tokens / decode_time : 0;
    for (int i = 0; i < n_samples; i++)
        st->tokens_generated += results[i].n_generated;
    st->kv_dtype = dtype_name(o->kv_dtype);
    for (int k = 0; k < n; k++)
        st->kv_bytes += kv_cache_bytes(&r.kv[k]);
    standalone_free(&r);
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
