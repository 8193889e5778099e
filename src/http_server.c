/*
 * http_server: libmicrohttpd behind a route table, with connection caps,
 * body accumulation and streamed answers. See http_server.h.
 */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net.h"
#include "util.h"

#define HS_TIMEOUT_S 10.0
#define HS_CONN_MAX 64
/* MHD counts a connection until its thread is joined, the policy below
 * until it closes: MHD's own limit sits this much above conn_max, so that
 * connections closed but not yet reaped never take the reserved room, and
 * the policy (which logs whom it refuses) is what refuses. */
#define HS_CONN_SLACK 16
#define HS_MAX_RESERVED_IP 8

struct http_server {
    struct MHD_Daemon *daemon;
    int listen_fd, port;
    http_server_opts o;
    double timeout_s;
    int conn_max;

    pthread_mutex_t mu;
    /* connections: the reserved addresses (IPv4, network order), and how
     * many connections are open from them and from anyone else */
    uint32_t reserved_ip[HS_MAX_RESERVED_IP];
    int n_reserved_ip;
    int conns_reserved, conns_other;
    long conns_refused;
};

struct http_request {
    http_server *s;
    struct MHD_Connection *c;
    const http_route *route;
    char method[16];
    char *path;
    char peer[NET_ADDR_LEN];
    int answered;          /* a response was queued (or the hooks refused) */
    char *body;
    size_t body_len;
    int too_big;
    void *user;
};

/* ---- the request's accessors ---- */

const char *http_request_method(const http_request *r) { return r->method; }
const char *http_request_path(const http_request *r) { return r->path; }
const char *http_request_peer(const http_request *r) { return r->peer; }
const http_route *http_request_route(const http_request *r) { return r->route; }
http_server *http_request_server(const http_request *r) { return r->s; }
void *http_request_user(const http_request *r) { return r->user; }
void http_request_set_user(http_request *r, void *user) { r->user = user; }
int http_server_port(const http_server *s) { return s->port; }
void *http_server_ud(const http_server *s) { return s->o.ud; }

long http_server_refused(const http_server *s)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&s->mu;
    pthread_mutex_lock(mu);
    long n = s->conns_refused;
    pthread_mutex_unlock(mu);
    return n;
}

const char *http_request_header(const http_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->c, MHD_HEADER_KIND, name);
}

const char *http_request_body(const http_request *r, size_t *len)
{
    if (len) *len = r->body_len;
    return r->body ? r->body : "";
}

static int hs_conn_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* A client that closed its side: its socket reads as hung up (a client
 * that sends more while waiting is not taken for gone). */
static int hs_fd_gone(int fd)
{
    if (fd < 0) return 0;
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    if (poll(&p, 1, 0) <= 0) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

int http_request_client_gone(const http_request *r)
{
    return hs_fd_gone(hs_conn_fd(r->c));
}

/* ---- answers ---- */

static int hs_queue(http_request *r, unsigned code, struct MHD_Response *resp)
{
    if (!resp) return -1;
    r->answered = 1;
    enum MHD_Result ret = MHD_queue_response(r->c, code, resp);
    MHD_destroy_response(resp);
    return ret == MHD_YES ? 0 : -1;
}

int http_reply_text(http_request *r, unsigned code, const char *content_type, const char *text, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    memcpy(copy, text, len);
    copy[len] = 0;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, copy, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(copy);
        return -1;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    if (r->s->o.sign) r->s->o.sign(r, code, copy, len, resp);
    return hs_queue(r, code, resp);
}

int http_reply_json(http_request *r, unsigned code, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    int rc = http_reply_text(r, code, "application/json", text ? text : "", text ? strlen(text) : 0);
    free(text);
    return rc;
}

int http_reply_error(http_request *r, unsigned code, const char *fmt, ...)
{
    char msg[MDI_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *body = r->s->o.error_body ? r->s->o.error_body(r, code, msg) : json_pack("{s:s}", "error", msg);
    return http_reply_json(r, code, body);
}

/* ---- streams ---- */

struct http_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    char *buf;             /* written, not yet sent: [sent, len) */
    size_t len, cap, sent;
    int ended, gone;
    int fd;                /* the connection's socket, to notice a client gone */
    void (*gone_fn)(void *ud);
    void (*free_ud)(void *ud);
    void *ud;
};

http_stream *http_stream_new(void (*gone)(void *ud), void (*free_ud)(void *ud), void *ud)
{
    http_stream *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->refs = 2;
    s->fd = -1;
    s->gone_fn = gone;
    s->free_ud = free_ud;
    s->ud = ud;
    return s;
}

static void hs_stream_unref(http_stream *s)
{
    pthread_mutex_lock(&s->mu);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last) return;
    if (s->free_ud) s->free_ud(s->ud);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->buf);
    free(s);
}

void http_stream_release(http_stream *s)
{
    if (s) hs_stream_unref(s);
}

int http_stream_write(http_stream *s, const char *data, size_t n)
{
    pthread_mutex_lock(&s->mu);
    if (s->gone || s->ended) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    if (s->sent && s->sent == s->len) s->sent = s->len = 0;
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->len + n) cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b) {
            pthread_mutex_unlock(&s->mu);
            return -1;
        }
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int http_stream_printf(http_stream *s, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof(small)) return http_stream_write(s, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = http_stream_write(s, big, (size_t)n);
    free(big);
    return rc;
}

void http_stream_end(http_stream *s)
{
    pthread_mutex_lock(&s->mu);
    s->ended = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    hs_stream_unref(s);
}

/* Called with s->mu held. */
static void hs_stream_gone_locked(http_stream *s)
{
    if (s->gone) return;
    s->gone = 1;
    if (!s->ended && s->gone_fn) s->gone_fn(s->ud);
}

/* libmicrohttpd's reader, on the connection's thread: waits for data,
 * checking every 50 ms whether the client went away meanwhile. */
static ssize_t hs_stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    http_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    while (s->sent == s->len && !s->ended) {
        if (hs_fd_gone(s->fd)) {
            hs_stream_gone_locked(s);
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 50 * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &dl);
    }
    ssize_t n;
    if (s->sent < s->len) {
        size_t k = s->len - s->sent < max ? s->len - s->sent : max;
        memcpy(out, s->buf + s->sent, k);
        s->sent += k;
        n = (ssize_t)k;
    } else {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* The answer is over: sent whole, or its client gone. */
static void hs_stream_free(void *cls)
{
    http_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    if (!s->ended) hs_stream_gone_locked(s);
    pthread_mutex_unlock(&s->mu);
    hs_stream_unref(s);
}

int http_reply_stream(http_request *r, unsigned code, const char *content_type, http_stream *s)
{
    pthread_mutex_lock(&s->mu);
    s->fd = hs_conn_fd(r->c);
    pthread_mutex_unlock(&s->mu);
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, hs_stream_read, s,
                                                                  hs_stream_free);
    if (!resp) {
        hs_stream_unref(s);
        return -1;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    return hs_queue(r, code, resp);
}

/* ---- dispatch ---- */

static int hs_path_match(const char *pattern, const char *path)
{
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '*') return !strncmp(pattern, path, n - 1);
    return !strcmp(pattern, path);
}

static int hs_method_match(const http_route *rt, const char *method)
{
    return !rt->method || !strcmp(rt->method, method) || (rt->method2 && !strcmp(rt->method2, method));
}

/* The route for method and path; *path_known when some route has the path. */
static const http_route *hs_route(const http_server *s, const char *method, const char *path, int *path_known)
{
    *path_known = 0;
    for (const http_route *rt = s->o.routes; rt && rt->path; rt++) {
        if (!hs_path_match(rt->path, path)) continue;
        *path_known = 1;
        if (hs_method_match(rt, method)) return rt;
    }
    return NULL;
}

static void hs_peer(struct MHD_Connection *c, char *out)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, NET_ADDR_LEN, "?");
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ci->client_addr;
        char host[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(out, NET_ADDR_LEN, "%s:%d", host, ntohs(in->sin_port));
    }
}

static size_t hs_body_max(const http_route *rt)
{
    return rt && rt->body_max ? rt->body_max : HTTP_BODY_MAX_DEFAULT;
}

/* First call for a request: routing and the hooks that run before the body. */
static enum MHD_Result hs_begin(http_server *s, http_request *r)
{
    int path_known;
    const http_route *rt = hs_route(s, r->method, r->path, &path_known);
    r->route = rt;
    if (s->o.begin && s->o.begin(r, rt)) {
        r->answered = 1;
        return MHD_YES;
    }
    if (!rt) {
        int code = path_known && !s->o.no_405 ? 405 : 404;
        log_warn("HTTP %.16s %.200s from %s: %s (%d)", r->method, r->path, r->peer,
                 code == 404 ? "no such endpoint" : "method not allowed", code);
        if (code == 404)
            http_reply_error(r, 404, "no endpoint %.16s %.200s%s%s", r->method, r->path,
                             s->o.route_hint ? " " : "", s->o.route_hint ? s->o.route_hint : "");
        else
            http_reply_error(r, 405, "method %.16s not allowed on %.200s", r->method, r->path);
        r->answered = 1;
        return MHD_YES;
    }
    if (rt->on_begin && rt->on_begin(r)) r->answered = 1;
    return MHD_YES;
}

static enum MHD_Result hs_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    http_server *s = cls;
    http_request *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r) return MHD_NO;
        r->s = s;
        r->c = c;
        snprintf(r->method, sizeof(r->method), "%s", method);
        r->path = strdup(url);
        if (!r->path) {
            free(r);
            return MHD_NO;
        }
        hs_peer(c, r->peer);
        *con_cls = r;
        return hs_begin(s, r);
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->answered) return MHD_YES; /* discard what follows an early answer */
        if (r->route->on_data) return r->route->on_data(r, upload_data, n) ? MHD_NO : MHD_YES;
        size_t cap = hs_body_max(r->route);
        if (r->too_big || r->body_len + n > cap) {
            r->too_big = 1;
        } else {
            char *b = realloc(r->body, r->body_len + n + 1);
            if (!b) return MHD_NO;
            memcpy(b + r->body_len, upload_data, n);
            r->body = b;
            r->body_len += n;
            b[r->body_len] = 0;
        }
        return MHD_YES;
    }
    if (r->answered) return MHD_YES;
    if (r->too_big) {
        http_reply_error(r, 413, "%.200s: body larger than %zu bytes", r->path, hs_body_max(r->route));
        return MHD_YES;
    }
    int rc = r->route->handler(r);
    if (rc == 0 && !r->answered) {
        log_error("HTTP %s %s: the handler gave no answer", r->method, r->path);
        return MHD_NO;
    }
    return rc == 0 ? MHD_YES : MHD_NO;
}

static void hs_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    http_request *r = *con_cls;
    if (!r) return;
    if (r->route && r->route->done) r->route->done(r);
    if (r->s->o.end) r->s->o.end(r);
    free(r->body);
    free(r->path);
    free(r);
    *con_cls = NULL;
}

/* ---- connections: a per-address cap (MHD's), and room kept for the
 * reserved addresses: others may hold at most conn_max - conn_reserve
 * connections together. ---- */

static int hs_reserved(http_server *s, const struct sockaddr *addr)
{
    if (!addr || addr->sa_family != AF_INET) return 0;
    uint32_t ip = ((const struct sockaddr_in *)addr)->sin_addr.s_addr;
    for (int i = 0; i < s->n_reserved_ip; i++)
        if (s->reserved_ip[i] == ip) return 1;
    return 0;
}

static enum MHD_Result hs_accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addrlen;
    http_server *s = cls;
    if (!s->n_reserved_ip || !s->o.conn_reserve || hs_reserved(s, addr)) return MHD_YES;
    pthread_mutex_lock(&s->mu);
    int ok = s->conns_other < s->conn_max - s->o.conn_reserve;
    long refused = ok ? 0 : ++s->conns_refused;
    pthread_mutex_unlock(&s->mu);
    if (!ok && (refused <= 10 || refused % 1000 == 0)) {
        char host[INET_ADDRSTRLEN] = "?";
        if (addr && addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, host, sizeof(host));
        log_warn("HTTP: refused a connection from %s: %d connections open from addresses other than the "
                 "starter's, the rest is kept for it (%ld refused so far)", host,
                 s->conn_max - s->o.conn_reserve, refused);
    }
    return ok ? MHD_YES : MHD_NO;
}

/* Counts open connections; socket_context marks the reserved (1) and the
 * others' (2). */
static void hs_notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                                 enum MHD_ConnectionNotificationCode toe)
{
    http_server *s = cls;
    pthread_mutex_lock(&s->mu);
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        int reserved = ci && hs_reserved(s, ci->client_addr);
        *socket_context = (void *)(intptr_t)(reserved ? 1 : 2);
        if (reserved) s->conns_reserved++;
        else s->conns_other++;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        intptr_t who = (intptr_t)*socket_context;
        if (who == 1) s->conns_reserved--;
        else if (who == 2) s->conns_other--;
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&s->mu);
}

/* The reserved address's IPv4 addresses. */
static void hs_resolve_reserved(http_server *s, const char *addr)
{
    if (!s->o.conn_reserve) return;
    if (!addr || !addr[0]) {
        log_warn("HTTP: the starter's address is unknown (no starter_addr in the configuration): no "
                 "connections are kept for it");
        return;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(addr, NULL, &hints, &res);
    if (g != 0) {
        log_warn("HTTP: cannot resolve the starter's address %s (%s): no connections are kept for it", addr,
                 gai_strerror(g));
        return;
    }
    for (struct addrinfo *ai = res; ai && s->n_reserved_ip < HS_MAX_RESERVED_IP; ai = ai->ai_next)
        s->reserved_ip[s->n_reserved_ip++] = ((const struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr;
    freeaddrinfo(res);
}

/* libmicrohttpd's own messages, at most 10 per 10 s (it has one per
 * refused connection: a flood of connections must not flood the log). */
static void hs_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static double window;
    static int shown, quiet;
    pthread_mutex_lock(&mu);
    double now = time_now();
    int more = 0, show;
    if (now - window > 10.0) {
        more = quiet;
        window = now;
        shown = quiet = 0;
    }
    show = shown < 10;
    if (show) shown++;
    else quiet++;
    pthread_mutex_unlock(&mu);
    if (more) log_warn("HTTP: %d more messages in the last 10 s not shown", more);
    if (!show) return;
    char msg[MDI_ERR_LEN];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    log_warn("HTTP: %s", msg);
}

/* Listens on host:port (IPv4); every interface without a host. */
static int hs_listen(const char *host, int port, char *err)
{
    if (!host || !host[0]) return net_listen(port, 64, err);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, NULL, &hints, &res);
    if (g != 0 || !res) return mdi_fail(err, MDI_ENET, "cannot resolve %s: %s", host, gai_strerror(g));
    struct sockaddr_in sa = *(const struct sockaddr_in *)res->ai_addr;
    freeaddrinfo(res);
    sa.sin_port = htons((uint16_t)port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return mdi_fail(err, MDI_ENET, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE) return mdi_fail(err, MDI_ENET, "port %d already in use", port);
        return mdi_fail(err, MDI_ENET, "bind to %s:%d: %s", host, port, strerror(e));
    }
    if (listen(fd, 64) != 0) {
        int e = errno;
        close(fd);
        return mdi_fail(err, MDI_ENET, "listen on %s:%d: %s", host, port, strerror(e));
    }
    return fd;
}

http_server *http_server_start(const http_server_opts *o, char *err)
{
    http_server *s = calloc(1, sizeof(*s));
    if (!s) {
        mdi_fail(err, MDI_ENOMEM, "out of memory");
        return NULL;
    }
    s->o = *o;
    s->listen_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    const char *name = o->name ? o->name : "HTTP port";
    char why[MDI_ERR_LEN];
    /* Our own socket, so that a busy port gets a clear message. */
    s->listen_fd = hs_listen(o->host, o->port, why);
    if (s->listen_fd < 0) {
        mdi_fail(err, MDI_ENET, "%s: %s", name, why);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    s->port = net_local_port(s->listen_fd);
    s->timeout_s = o->timeout_s > 0 ? o->timeout_s : HS_TIMEOUT_S;
    s->conn_max = o->conn_max > 0 ? o->conn_max : HS_CONN_MAX;
    hs_resolve_reserved(s, o->reserved_addr);
    /* A thread per connection: a handler may wait (control's /stop for the
     * node to be idle, the service's answer for its tokens) and must hold
     * up nobody else meanwhile. */
    s->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                     MHD_USE_ERROR_LOG,
                                 0, &hs_accept_policy, s, &hs_handler, s,
                                 MHD_OPTION_EXTERNAL_LOGGER, &hs_mhd_log, NULL,
                                 MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(s->timeout_s + 0.999),
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)(s->conn_max + HS_CONN_SLACK),
                                 MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)(o->per_addr_max > 0 ? o->per_addr_max : 0),
                                 MHD_OPTION_NOTIFY_CONNECTION, &hs_notify_connection, s,
                                 MHD_OPTION_NOTIFY_COMPLETED, &hs_completed, s,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        mdi_fail(err, MDI_ENET, "cannot start the HTTP server on port %d", s->port);
        close(s->listen_fd);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
}

void http_server_stop(http_server *s)
{
    if (!s) return;
    MHD_stop_daemon(s->daemon);
    close(s->listen_fd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
