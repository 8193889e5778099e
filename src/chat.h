/*
 * chat: the interactive conversation of bin/starter --chat --interactive,
 * on one node or on the ring.
 *
 * Each user line becomes one turn rendered with the model's chat template
 * (tokenizer_chat_turn); the KV cache persists from turn to turn, so a turn
 * runs only its own tokens: the last token of the previous reply (sampled,
 * not yet in the cache), the end-of-turn marker when the reply did not end
 * on it, the user's turn and the opening of the assistant's. The reply
 * streams to the terminal as it is generated.
 *
 *   /exit (or /quit), Ctrl-D    end the conversation
 *   Ctrl-C                      while a reply streams: stop it, keep the
 *                               conversation; at the prompt: end it
 *
 * A conversation that fills the KV cache (--max-seq-len) ends with a line
 * saying so.
 */
#ifndef MDI_CHAT_H
#define MDI_CHAT_H

#include <stdio.h>
#include "cli.h"
#include "generate.h"
#include "pipeline.h"

/* Where the turns run: exactly one of the two is set (both borrowed). */
typedef struct {
    generate_session *local;
    pipeline *ring;
} chat_engine;

/* The default KV length of a conversation when --max-seq-len is not given:
 * the model's context, at most this. */
#define CHAT_DEFAULT_MAX_SEQ 4096

/* Runs the conversation: lines from in, prompts and replies to out (the
 * "> " prompt only when in is a terminal). o->prompt, when given, is the
 * first user message. *turns: a new array of one result per turn (free
 * each with sample_result_free, then the array); st gets the figures and,
 * for a local engine, the tokens-versus-time curve. Returns 0 when the
 * conversation ended normally, or a code with the reason in err (a ring
 * failure: the caller aborts the pipeline). */
int chat_run(const starter_opts *o, const tokenizer *tok, chat_engine *e, int vocab_size, FILE *in, FILE *out,
             sample_result **turns, int *n_turns, run_stats *st, char *err);

#endif
