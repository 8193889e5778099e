/*
 * http_client: the one libcurl wrapper behind every HTTP request the
 * programs make: the starter's control-plane calls to the secondaries
 * (control.c) and prepare_model's hub downloads (hub.c).
 *
 * One call is one transfer on its own easy handle (thread-safe; signals
 * off), described by an http_client_request:
 *
 *     method, url, headers         "GET" when method is NULL; "HEAD" reads
 *                                  no body
 *     body | upload                a NUL-terminated body sent as is, or a
 *                                  FILE streamed as the request body (PUT)
 *     connect_timeout_s            bounds connecting (0: libcurl's default)
 *     timeout_s                    bounds the whole transfer (0: none)
 *     stall_s                      aborts when under 1 byte/s for that
 *                                  long (0: never)
 *     max_redirects                redirects followed (0: none)
 *     on_header, on_body           each header line, each piece of the
 *                                  body; returning anything but n aborts
 *     on_progress                  called now and then; nonzero aborts
 *
 * Result: 0 (HTTP_CLIENT_OK: an answer came, whatever its status) or one
 * of the negative http_client_error values below, with libcurl's reason in
 * msg (HTTP_CLIENT_MSG_LEN bytes). *status gets the answer's HTTP status,
 * 0 when none came.
 *
 * Ownership: every pointer in the request is borrowed for the call.
 */
#ifndef MDI_HTTP_CLIENT_H
#define MDI_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define HTTP_CLIENT_MSG_LEN 256

typedef enum {
    HTTP_CLIENT_OK = 0,
    HTTP_CLIENT_ECONNECT = -1,  /* connection refused or unreachable */
    HTTP_CLIENT_EFATAL = -2,    /* trying again will not help: bad URL, unknown
                                   host or proxy, too many redirects, TLS peer
                                   not verified, out of memory */
    HTTP_CLIENT_ETIMEOUT = -3,  /* connect timeout, whole-transfer timeout, stall */
    HTTP_CLIENT_EABORTED = -4,  /* a callback stopped the transfer */
    HTTP_CLIENT_EFAILED = -5,   /* any other failure (a dropped connection) */
} http_client_error;

typedef size_t (*http_client_data_fn)(const char *data, size_t n, void *ud);
typedef int (*http_client_progress_fn)(void *ud, int64_t download_total, int64_t download_now);

typedef struct {
    const char *method;          /* NULL: GET */
    const char *url;
    const char *const *headers;  /* NULL-terminated "Name: value" lines, or NULL */
    const char *body;            /* NULL: none (a PUT without one sends "") */
    FILE *upload;                /* NULL: none; else streamed, upload_size bytes */
    uint64_t upload_size;
    double connect_timeout_s;
    double timeout_s;
    long stall_s;
    long max_redirects;
    int no_proxy;                /* 1: ignore the *_proxy environment variables */
    const char *user_agent;      /* NULL: libcurl's none */
    const char *range;           /* "N-" and the like, or NULL */
    http_client_data_fn on_header;
    http_client_data_fn on_body;
    http_client_progress_fn on_progress;
    void *ud;                    /* handed to every callback */
} http_client_request;

/* curl_global_init, once per process (pthread_once); every transfer calls
 * it too. Returns 0 or MDI_ENET with the reason in err (may be NULL). */
int http_client_global_init(char *err);

int http_client_perform(const http_client_request *rq, long *status, char *msg);

#endif
