/*
 * api: the starter's OpenAI-compatible HTTP service (bin/starter --serve),
 * on the engine (engine.h) and the one HTTP server (http_server.h).
 *
 *   POST /v1/chat/completions   {"messages": [{"role": "system" | "user" |
 *                               "assistant", "content": text}], ...}: the
 *                               conversation rendered with the model's chat
 *                               template (Llama 3, Llama 2, ChatML); a model
 *                               without one gets ChatML, as llama-server does
 *   POST /v1/completions        {"prompt": text | [text] | [ids], ...}:
 *                               tokenized as bin/starter --prompt does
 *   GET  /v1/models             the one model
 *   GET  /health                {"status": "ok", slots and queue}; 503 once
 *                               a node has failed
 *   GET  /metrics               Prometheus text: requests by endpoint and
 *                               status, tokens, queue depth, slots busy,
 *                               time to first token and per-token latency
 *                               histograms, per-node compute and wait time
 *
 * Request fields: max_tokens (max_completion_tokens), temperature, top_p,
 * top_k, seed, stop (a string or up to API_MAX_STOP strings: generation
 * ends before the stop string, which is not returned), stream (server-sent
 * events: one `data: {chunk}` per UTF-8-complete piece, `data: [DONE]`
 * last; text that may be the start of a stop string is held back until it
 * is not), stream_options.include_usage (a last chunk with the usage and
 * no choices), n (1 only), and llama-server's ignore_eos (EOS does not end
 * the answer: fixed output lengths for load tests). model is accepted and
 * ignored (one model is served).
 *
 * Errors in OpenAI's shape {"error": {"message", "type", "param", "code"}}:
 * 400 malformed JSON or field (param names it), 400 a prompt longer than
 * the context (both lengths in the message), 404 unknown route, 405 wrong
 * method, 413 a body above API_BODY_MAX, 429 the queue is full, 503 a node
 * failed or the service is stopping.
 *
 * A client that disconnects before its answer is complete has its request
 * cancelled (engine_cancel), which frees its slot for the next one.
 *
 * Tests only: MDI_API_PACE_US=N makes the engine thread wait N us after each
 * token's callback, so that a tiny model's requests hold their slots long
 * enough for queueing and disconnects to be watched.
 */
#ifndef MDI_API_H
#define MDI_API_H

#include "engine.h"
#include "http_server.h"
#include "tokenizer.h"

#define API_BODY_MAX (8 << 20)
#define API_MAX_STOP 8
#define API_CONN_MAX 512

typedef struct api_server api_server;

typedef struct {
    const char *host;          /* NULL or "": every interface */
    int port;                  /* 0: any free */
    const char *model_name;    /* /v1/models' id and each answer's model */
    double timeout_s;          /* idle connections closed after this (0: 30 s) */
    /* routes tried before the service's own (borrowed; ends with a NULL
     * path; their handlers get the api_server from api_from_request) */
    const http_route *extra_routes;
} api_opts;

/* Starts serving on the engine (borrowed, as tok). NULL with the reason. */
api_server *api_start(engine *e, const tokenizer *tok, const api_opts *o, char *err);
/* Stops the HTTP server (answers in flight end); the engine stays open. */
void api_stop(api_server *a);
int api_port(const api_server *a);
api_server *api_from_request(http_request *req);
engine *api_engine(api_server *a);

/* The conversation rendered as text with the tokenizer's template
 * (ChatML when it has none); messages is a JSON array of {role,
 * content}. *add_bos: whether to encode it with BOS (the text starts with
 * BOS's text where the template writes it). New string, or NULL with the
 * reason in err (naming messages[i]). */
char *api_render_chat(const tokenizer *tok, json_t *messages, int *add_bos, char *err);

/* Stop strings: how many bytes of text (len) may be given now, holding
 * back a tail that may start a stop string; *hit: the offset where a stop
 * string begins (-1 when none), the text to give ending there. from: where
 * to start looking (bytes already given). */
size_t api_stop_scan(const char *text, size_t len, size_t from, char *const *stop, int n_stop, long *hit);

#endif
