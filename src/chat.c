/* chat: the interactive conversation; see chat.h. */
#include "chat.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t chat_interrupted;
/* Self-pipe: the handler writes a byte, the wait for the next line polls
 * it. The signal may be delivered to any thread that does not block it
 * (OpenBLAS starts its own before main), and only that thread's poll would
 * return EINTR; the pipe wakes the one that waits. */
static int chat_wake[2] = { -1, -1 };

static void chat_on_sigint(int sig)
{
    (void)sig;
    chat_interrupted = 1;
    if (chat_wake[1] >= 0) {
        int e = errno;
        ssize_t w = write(chat_wake[1], "", 1);
        (void)w;
        errno = e;
    }
}

static void chat_wake_close(void)
{
    for (int i = 0; i < 2; i++) {
        if (chat_wake[i] >= 0)
            close(chat_wake[i]);
        chat_wake[i] = -1;
    }
}

/* Empties the wake pipe of earlier Ctrl-Cs. */
static void chat_wake_drain(void)
{
    char buf[64];
    while (chat_wake[0] >= 0 && read(chat_wake[0], buf, sizeof(buf)) > 0)
        ;
}

/* The ids of one turn: what the previous reply left outside the cache, then
 * the template's turn. New array in *ids; returns the count or a code. */
static int chat_turn_ids(const starter_opts *o, const tokenizer *tok, const char *line, int first, int last_id,
                         int **ids)
{
    int lead = -1, closed = 0;
    if (!first && last_id >= 0) {
        closed = last_id == tokenizer_chat_end_id(tok);
        /* an EOS other than the template's marker is not kept: the marker
         * closes the reply instead */
        if (closed || !tokenizer_is_eos(tok, last_id))
            lead = last_id;
    }
    int *turn = NULL;
    int n = tokenizer_chat_turn(tok, line, first, closed, !o->no_parse_special, &turn);
    if (n < 0)
        return n;
    int *all = malloc((size_t)(n + 1) * sizeof(int));
    if (!all) {
        free(turn);
        return MDI_ENOMEM;
    }
    int k = 0;
    if (lead >= 0)
        all[k++] = lead;
    memcpy(all + k, turn, (size_t)n * sizeof(int));
    free(turn);
    *ids = all;
    return n + k;
}

/* Lines read with read(2) into our own buffer, so that the wait for the
 * next line can be poll(2), which Ctrl-C always interrupts (the handler
 * has SA_RESTART, so that a write to the terminal interrupted by Ctrl-C
 * while a reply streams is restarted rather than lost). */
typedef struct {
    int fd;
    size_t len;
    char buf[65536];
} line_reader;

/* The next line without its newline (new string), NULL at the end of
 * input or on Ctrl-C. */
static char *chat_read_line(line_reader *r)
{
    for (;;) {
        char *nl = memchr(r->buf, '\n', r->len);
        if (nl || r->len == sizeof(r->buf)) {
            size_t n = nl ? (size_t)(nl - r->buf) : r->len;
            char *line = strndup(r->buf, n);
            size_t used = nl ? n + 1 : n;
            memmove(r->buf, r->buf + used, r->len - used);
            r->len -= used;
            if (line && n && line[n - 1] == '\r')
                line[n - 1] = 0;
            return line;
        }
        struct pollfd p[2] = { { .fd = r->fd, .events = POLLIN }, { .fd = chat_wake[0], .events = POLLIN } };
        int rc = poll(p, chat_wake[0] >= 0 ? 2 : 1, -1);
        if (chat_interrupted)
            return NULL;
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            chat_wake_drain();
            continue;
        }
        ssize_t got = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            if (r->len == 0)
                return NULL;
            char *line = strndup(r->buf, r->len); /* a last line without newline */
            r->len = 0;
            return line;
        }
        r->len += (size_t)got;
    }
}

int chat_run(const starter_opts *o, const tokenizer *tok, chat_engine *e, int vocab_size, FILE *in, FILE *out,
             sample_result **turns, int *n_turns, run_stats *st, char *err)
{
    *turns = NULL;
    *n_turns = 0;
    if (tokenizer_chat_family(tok) == CHAT_NONE)
        return mdi_fail(err, MDI_EUNSUPPORTED, "--chat: the tokenizer has no chat template we know "
                        "(supported: Llama 3, Llama 2, ChatML)");
    if (pipe2(chat_wake, O_NONBLOCK | O_CLOEXEC) != 0)
        chat_wake[0] = chat_wake[1] = -1; /* then a Ctrl-C at the prompt may wait for input */
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = chat_on_sigint;
    sa.sa_flags = SA_RESTART; /* see line_reader */
    sigaction(SIGINT, &sa, &old_sa);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);

    int is_tty = isatty(fileno(in));
    line_reader *reader = calloc(1, sizeof(*reader));
    if (!reader) {
        sigaction(SIGINT, &old_sa, NULL);
        chat_wake_close();
        return mdi_fail(err, MDI_ENOMEM, "out of memory");
    }
    reader->fd = fileno(in);
    int max_seq = e->local ? e->local->max_seq : pipeline_max_seq(e->ring);
    sample_result *res = NULL;
    int n = 0, cap = 0, rc = MDI_OK, pos = 0, last_id = -1;
    turn_figures fig = { 0 };
    token_curve curve = { 0 };
    token_curve_add(&curve, 0, 0);
    double t0 = time_now();
    const char *first_prompt = o->prompt && o->prompt[0] ? o->prompt : NULL;
    if (is_tty)
        fprintf(out, "Chat with %s: /exit or Ctrl-D ends, Ctrl-C stops a reply.\n",
                chat_family_name(tokenizer_chat_family(tok)));
    for (;;) {
        char *line;
        if (first_prompt) {
            line = strdup(first_prompt);
            first_prompt = NULL;
            if (is_tty)
                fprintf(out, "> %s\n", line);
        } else {
            /* forget earlier Ctrl-Cs before the prompt shows, so that one
             * typed as soon as it does is not lost */
            chat_wake_drain();
            chat_interrupted = 0;
            if (is_tty) {
                fputs("> ", out);
                fflush(out);
            }
            line = chat_read_line(reader);
            if (!line) {
                fputc('\n', out);
                break; /* Ctrl-D, the end of input, or Ctrl-C at the prompt */
            }
        }
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) {
            free(line);
            break;
        }
        if (!line[0]) {
            free(line);
            continue;
        }
        int *ids = NULL;
        int n_ids = chat_turn_ids(o, tok, line, n == 0, last_id, &ids);
        if (n_ids < 0) {
            free(line);
            rc = mdi_fail(err, n_ids, "cannot tokenize the message");
            break;
        }
        if (pos + n_ids >= max_seq) {
            free(line);
            free(ids);
            log_warn("the conversation fills the context of %d tokens (--max-seq-len): it ends here", max_seq);
            break;
        }
        if (n == cap) {
            int ncap = cap ? 2 * cap : 8;
            sample_result *nr = realloc(res, (size_t)ncap * sizeof(*res));
            if (!nr) {
                free(line);
                free(ids);
                rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
                break;
            }
            res = nr;
            cap = ncap;
        }
        sample_result *r = &res[n++];
        memset(r, 0, sizeof(*r));
        r->prompt = line;
        r->prompt_ids = ids;
        r->n_prompt = n_ids;
        r->pos_start = pos;
        r->generated_ids = malloc((size_t)(o->n_tokens > 0 ? o->n_tokens : 1) * sizeof(int));
        sample_result_append_text(r, "");
        sample_state ss;
        sample_params sp = generate_sample_params(o, n - 1);
        if (!r->generated_ids || (rc = sample_state_init(&ss, r, &sp, tok, vocab_size, out, err))) {
            if (!rc)
                rc = mdi_fail(err, MDI_ENOMEM, "out of memory");
            break;
        }
        ss.pos = pos;
        chat_interrupted = 0;
        ss.interrupt = &chat_interrupted;
        if (e->local)
            rc = generate_session_turn(e->local, tok, &ss, ids, n_ids, t0, &fig, &curve, err);
        else
            rc = pipeline_turn(e->ring, tok, &ss, ids, n_ids, t0, &fig, err);
        sample_state_free(&ss);
        fputc('\n', out);
        if (chat_interrupted)
            fputs("[stopped]\n", out);
        fflush(out);
        if (rc)
            break;
        pos = ss.pos;
        last_id = r->n_generated ? r->generated_ids[r->n_generated - 1] : -1;
        if (pos >= max_seq) {
            log_warn("the conversation filled the context of %d tokens (--max-seq-len): it ends here", max_seq);
            break;
        }
    }
    sigaction(SIGINT, &old_sa, NULL);
    free(reader);
    chat_wake_close();

    memset(st, 0, sizeof(*st));
    st->total_s = time_now() - t0;
    st->ttft_s = n ? res[0].t_first_token : 0;
    st->prefill_tok_s = fig.prefill_s > 0 ? fig.prefill_tokens / fig.prefill_s : 0;
    st->decode_tok_s = fig.decode_s > 0 ? fig.decode_tokens / fig.decode_s : 0;
    st->tokens_generated = fig.generated;
    if (e->local)
        st->curve = curve;
    else
        token_curve_free(&curve);
    *turns = res;
    *n_turns = n;
    return rc;
}
