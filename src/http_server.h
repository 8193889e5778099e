/*
 * http_server: the one HTTP server of the project (libmicrohttpd, a thread
 * per connection), shared by the secondary's control plane (control.c) and
 * the starter's OpenAI-compatible service (api.c).
 *
 * What it does for every server built on it:
 *   - listens on host:port (port 0: any free one, read back with
 *     http_server_port), with a clear message when the port is taken;
 *   - caps connections: at most conn_max open, per_addr_max from one
 *     address, and conn_reserve of them open only to reserved_addr's
 *     addresses (the starter, for a secondary) when it resolves; a
 *     connection silent for timeout_s is closed; libmicrohttpd's own
 *     messages are rate-limited in the log;
 *   - routes a request by method and path to a handler through a table
 *     (http_route); an unknown path gets 404 and a known path with another
 *     method 405 (or 404 with opts.no_405), in the server's error shape;
 *   - accumulates the body up to the route's cap (413 beyond it) before the
 *     handler runs, or hands it piece by piece to the route's on_data (a
 *     chunk upload that is never held in memory);
 *   - replies JSON (http_reply_json), text (http_reply_text) or a stream
 *     that another thread fills (http_stream: server-sent events), signing
 *     buffered answers through opts.sign when given;
 *   - tells a handler that waits whether its client went away
 *     (http_request_client_gone), and a stream's owner likewise (gone).
 *
 * Handler flow: begin(opts) runs first for every request (control's HMAC
 * check), then the route's on_begin (before any body), then on_data for
 * each piece or the accumulated body, then handler once the body is
 * complete. A hook or on_begin that replied (returned non-zero) ends the
 * request: what follows of the body is discarded. A handler may block (it
 * has its own thread); it must reply exactly once.
 *
 * Ownership: the request (http_request) is the server's, valid until its
 * completion; route->done(req) runs then (client gone or answer sent).
 * http_reply_json steals its json_t.
 */
#ifndef MDI_HTTP_SERVER_H
#define MDI_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define HTTP_BODY_MAX_DEFAULT (1 << 20)

typedef struct http_server http_server;
typedef struct http_request http_request;
typedef struct http_route http_route;

/* Handlers return 0 when they replied (or will through a stream), or -1 to
 * drop the connection without an answer. */
typedef int (*http_handler_fn)(http_request *req);

struct http_route {
    const char *method;         /* "GET", "POST", ...; NULL: any method */
    const char *path;           /* exact; ending in '*': that prefix */
    http_handler_fn handler;    /* the body is complete (http_request_body) */
    size_t body_max;            /* 0: HTTP_BODY_MAX_DEFAULT */
    /* optional: before any body; non-zero when it replied (refused) */
    int (*on_begin)(http_request *req);
    /* optional: takes the body piece by piece instead of accumulating it;
     * non-zero drops the connection */
    int (*on_data)(http_request *req, const char *data, size_t n);
    /* optional: the request ended (answered or its client gone) */
    void (*done)(http_request *req);
    const char *method2;        /* optional second method ("PUT" or "POST") */
};

typedef struct {
    const char *name;           /* in log lines: "HTTP control port" */
    const char *host;           /* NULL or "": every interface */
    int port;                   /* 0: any free */
    double timeout_s;           /* idle connection closed after this (0: 10 s) */
    int conn_max;               /* 0: 64 */
    int per_addr_max;           /* 0: no per-address cap */
    int conn_reserve;           /* kept for reserved_addr's addresses */
    const char *reserved_addr;  /* NULL or "": none (a warning says so when conn_reserve) */
    const http_route *routes;   /* borrowed; ends with a route whose path is NULL */
    int no_405;                 /* a known path with another method gets 404 */
    const char *route_hint;     /* appended to a 404's message: "(GET /, POST /init)" */
    void *ud;                   /* http_server_ud */
    /* optional: every request first, before routing (route NULL when
     * unknown); non-zero when it replied */
    int (*begin)(http_request *req, const http_route *route);
    /* optional: the error body for a message (new); NULL: {"error": msg} */
    json_t *(*error_body)(http_request *req, unsigned code, const char *msg);
    /* optional: every request at its end (answered or its client gone),
     * after its route's done */
    void (*end)(http_request *req);
    /* optional: adds headers to a buffered answer before it is queued */
    void (*sign)(http_request *req, unsigned code, const char *body, size_t len, void *mhd_response);
} http_server_opts;

/* Starts serving (routes and strings in opts borrowed for the server's
 * life). NULL with "HTTP control port: port 8089 already in use" or the
 * like in err. */
http_server *http_server_start(const http_server_opts *o, char *err);
/* Stops the daemon (waits for every connection's thread) and frees. */
void http_server_stop(http_server *s);
int http_server_port(const http_server *s);
void *http_server_ud(const http_server *s);
/* Connections refused so far for the reserve, open now from others. */
long http_server_refused(const http_server *s);

/* ---- a request ---- */
const char *http_request_method(const http_request *r);
const char *http_request_path(const http_request *r);
const char *http_request_peer(const http_request *r);     /* "addr:port" */
const http_route *http_request_route(const http_request *r);
http_server *http_request_server(const http_request *r);
/* A header's value (borrowed) or NULL. */
const char *http_request_header(const http_request *r, const char *name);
/* The accumulated body (NUL-terminated; "" when none) and its length. */
const char *http_request_body(const http_request *r, size_t *len);
/* The caller's per-request pointer (NULL at first). */
void *http_request_user(const http_request *r);
void http_request_set_user(http_request *r, void *user);
/* Whether the client closed its connection (checked now, without
 * blocking): a handler that waits uses it to give up. */
int http_request_client_gone(const http_request *r);

/* ---- answers (exactly one per request) ---- */
int http_reply_json(http_request *r, unsigned code, json_t *body);
int http_reply_text(http_request *r, unsigned code, const char *content_type, const char *text, size_t len);
/* The server's error shape (opts.error_body) with a formatted message. */
int http_reply_error(http_request *r, unsigned code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- a streamed answer: one thread produces, the connection's thread
 * sends as it comes (chunked encoding) ---- */
typedef struct http_stream http_stream;

/* A new stream with two references: the producer's and the answer's
 * (given to http_reply_stream). gone(ud) runs once, on the connection's
 * thread with the stream's lock held, when the client goes away before
 * http_stream_end; free_ud(ud) runs when the last reference drops. Both
 * may be NULL. */
http_stream *http_stream_new(void (*gone)(void *ud), void (*free_ud)(void *ud), void *ud);
/* Queues the answer (headers now, body as it is written). On failure the
 * answer's reference is dropped all the same. */
int http_reply_stream(http_request *r, unsigned code, const char *content_type, http_stream *s);
/* Producer: appends (copied); returns -1 once the client is gone. */
int http_stream_write(http_stream *s, const char *data, size_t n);
int http_stream_printf(http_stream *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Producer: no more data, and the producer's reference dropped. */
void http_stream_end(http_stream *s);
/* Drops a reference without ending (an answer never queued). */
void http_stream_release(http_stream *s);

#endif
