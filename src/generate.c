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

int sample_state_init(sample_state *s, sample_result *res, const starter_opts *o, const tokenizer *tok,
                      int vocab_size, int index, FILE *echo, char *err)
{
    memset(s, 0, sizeof(*s));
    s->res = res;
    s->max_new = o->n_tokens;
    s->echo = echo;
    if (sampler_init(&s->smp, vocab_size, o->temperature, o->top_k, o->top_p, o->seed + (uint64_t)index) != 0)
        return mdi_fail(err, MDI_ENOMEM, "out of memory for the sampler");
    tokenizer_stream_init(&s->stream);
    /* the prompt goes through the stream too, so that the first generated
     * piece keeps its leading space */
    char piece[512];
    for (int i = 0; i < res->n_prompt; i++) {
        tokenizer_stream_next(tok, &s->stream, res->prompt_ids[i], piece, sizeof(piece));
        if (echo && !o->chat)
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
    if (tokenizer_is_eos(tok, id) || r->n_generated >= s->max_new || (s->interrupt && *s->interrupt)) {
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


int generate_standalone(const starter_opts *o, const model *m, const tokenizer *tok,
                        sample_result *results, int n_samples, run_stats *st, char *err)
{
    const model_config *c = &m->cfg;
    int max_seq, max_batch, rc;
    if ((rc = generate_plan(o, c, results, n_samples, &max_seq, &max_batch, err)))
        return rc;
    forward_state fs;
    kv_cache kv;
    if ((rc = forward_state_init(&fs, m, max_batch, max_seq, err)))
        return rc;
    if ((rc = kv_cache_init(&kv, m, max_seq, o->kv_dtype, err))) {
        forward_state_free(&fs);
        return rc;
    }
    float *x = malloc((size_t)max_batch * c->dim * sizeof(float));
    FILE *logits_f = NULL;
    if (o->logits_out && !(logits_f = fopen(o->logits_out, "wb")))
        rc = mdi_fail(err, MDI_EIO, "%s: cannot create", o->logits_out);

    double t0 = time_now(), prefill_time = 0, decode_time = 0;
    long prefill_tokens = 0, decode_tokens = 0, generated = 0;
    token_curve curve = { 0 };
    token_curve_add(&curve, 0, 0);
    FILE *echo = (o->quiet || n_samples > 1) ? NULL : stdout;
    for (int i = 0; i < n_samples && !rc; i++) {
        sample_state ss;
        if ((rc = sample_state_init(&ss, &results[i], o, tok, c->vocab_size, i, echo, err)))
            break;
        kv_cache_reset(&kv);
        double ta = time_now();
        float *logits = forward_tokens(m, &fs, &kv, results[i].prompt_ids, results[i].n_prompt, 0, x);
        double tb = time_now();
        prefill_time += tb - ta;
        prefill_tokens += results[i].n_prompt;
        ss.pos = results[i].n_prompt;
        int going = !ss.done;
        while (going) {
            if (logits_f)
                fwrite(logits, sizeof(float), (size_t)c->vocab_size, logits_f);
            going = sample_state_accept(&ss, tok, logits, time_now() - t0);
            token_curve_add(&curve, time_now() - t0, ++generated);
            if (going && ss.pos >= max_seq) {
                ss.done = 1;
                results[i].t_done = time_now() - t0;
                going = 0;
            }
            if (!going)
                break;
            double td = time_now();
            logits = forward_tokens(m, &fs, &kv, &ss.next_token, 1, ss.pos, x);
            ss.pos++;
            decode_time += time_now() - td;
            decode_tokens++;
        }
        if (echo) {
            fputc('\n', echo);
            fflush(echo);
        }
        else if (!o->quiet)
            printf("--- sample %d ---\n%s%s\n", i, o->chat ? "" : results[i].prompt, results[i].text);
        sample_state_free(&ss);
    }
    if (logits_f)
        fclose(logits_f);
    memset(st, 0, sizeof(*st));
    st->curve = curve;
    st->total_s = time_now() - t0;
    st->ttft_s = n_samples ? results[0].t_first_token : 0;
    st->prefill_tok_s = prefill_time > 0 ? prefill_tokens / prefill_time : 0;
    st->decode_tok_s = decode_time > 0 ? decode_tokens / decode_time : 0;
    for (int i = 0; i < n_samples; i++)
        st->tokens_generated += results[i].n_generated;
    st->kv_dtype = dtype_name(kv.dtype);
    st->kv_bytes = kv_cache_bytes(&kv);
    free(x);
    kv_cache_free(&kv);
    forward_state_free(&fs);
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
