/*
 * hub: Hugging Face hub downloads through http_client (libcurl). The URL
 * layout, the resume protocol and the checks are drawn in hub.h.
 */
#include "hub.h"
#include "http_client.h"
#include "util.h"

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HUB_URL_LEN 4096
#define HUB_ETAG_LEN 160
#define HUB_PATH_LEN 4096

/* ---- process-wide curl setup ---- */

int hub_global_init(char *err)
{
    return http_client_global_init(err);
}

/* ---- options, names and URLs ---- */

/* hub_opts with the environment and the defaults filled in. */
typedef struct {
    const char *endpoint;
    size_t endpoint_len; /* without trailing slashes */
    const char *token;   /* NULL: none */
    const char *revision;
    int progress;
    long timeout_s;
    int retries;
} hub_conf;

static void hub_conf_resolve(const hub_opts *o, hub_conf *c)
{
    static const hub_opts zero;
    if (!o)
        o = &zero;
    c->endpoint = o->endpoint && *o->endpoint ? o->endpoint : getenv("HF_ENDPOINT");
    if (!c->endpoint || !*c->endpoint)
        c->endpoint = HUB_DEFAULT_ENDPOINT;
    c->endpoint_len = strlen(c->endpoint);
    while (c->endpoint_len > 0 && c->endpoint[c->endpoint_len - 1] == '/')
        c->endpoint_len--;
    c->token = o->token ? o->token : getenv("HF_TOKEN");
    if (c->token && !*c->token)
        c->token = NULL;
    c->revision = o->revision && *o->revision ? o->revision : "main";
    c->progress = o->progress;
    c->timeout_s = o->timeout_s > 0 ? o->timeout_s : 30;
    c->retries = o->retries == 0 ? 5 : o->retries < 0 ? 0 : o->retries;
}

static int hub_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_' || ch == '.';
}

/* One part of "owner/name": [A-Za-z0-9._-]{1,96}, not "." or "..". */
static int hub_name_part_ok(const char *s, size_t n)
{
    if (n == 0 || n > 96)
        return 0;
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!hub_name_char(s[i]))
            return 0;
    return 1;
}

int hub_is_repo_id(const char *source)
{
    if (!source)
        return 0;
    const char *slash = strchr(source, '/');
    if (!slash || strchr(slash + 1, '/'))
        return 0;
    if (!hub_name_part_ok(source, (size_t)(slash - source)) ||
        !hub_name_part_ok(slash + 1, strlen(slash + 1)))
        return 0;
    struct stat st;
    return stat(source, &st) != 0; /* a local path wins over a repo id */
}

/* Appends s[0..n) to url, percent-encoding all but RFC 3986 unreserved
 * characters (and '/' when keep_slash). Returns -1 when it does not fit. */
static int hub_url_append(char *url, size_t cap, size_t *len, const char *s, size_t n,
                          int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        int plain = hub_name_char((char)ch) || ch == '~' || (keep_slash && ch == '/');
        size_t need = plain ? 1 : 3;
        if (*len + need >= cap)
            return -1;
        if (plain) {
            url[(*len)++] = (char)ch;
        } else {
            url[(*len)++] = '%';
            url[(*len)++] = hex[ch >> 4];
            url[(*len)++] = hex[ch & 15];
        }
    }
    url[*len] = 0;
    return 0;
}

static int hub_conf_url(const hub_conf *c, const char *repo, const char *file, char *url,
                        size_t cap)
{
    size_t len = 0;
    if (cap == 0 || c->endpoint_len + 1 >= cap)
        return -1;
    memcpy(url, c->endpoint, c->endpoint_len);
    len = c->endpoint_len;
    url[len++] = '/';
    url[len] = 0;
    if (hub_url_append(url, cap, &len, repo, strlen(repo), 1) != 0 ||
        hub_url_append(url, cap, &len, "/resolve/", 9, 1) != 0 ||
        hub_url_append(url, cap, &len, c->revision, strlen(c->revision), 0) != 0 ||
        hub_url_append(url, cap, &len, "/", 1, 1) != 0 ||
        hub_url_append(url, cap, &len, file, strlen(file), 1) != 0)
        return -1;
    return 0;
}

int hub_file_url(const hub_opts *o, const char *repo, const char *file, char *url, size_t cap)
{
    hub_conf c;
    hub_conf_resolve(o, &c);
    if (!repo || !file || hub_conf_url(&c, repo, file, url, cap) != 0)
        return MDI_EARG;
    return MDI_OK;
}

/* ---- one transfer ---- */

enum { HUB_ABORT_NONE, HUB_ABORT_IO, HUB_ABORT_RANGE };

typedef struct {
    /* The .part file; lives across the attempts of one download. */
    int fd;
    int64_t have; /* bytes in .part, all of them hashed into sha */
    sha256_ctx sha;

    /* The current response; reset by each status line (redirects too). */
    long status;
    int64_t content_length;
    int64_t range_start, range_total; /* Content-Range, -1 when absent */
    char etag[HUB_ETAG_LEN];

    /* Kept over the redirects of one attempt: the hub sends them on the 302. */
    int64_t linked_size;
    char linked_etag[HUB_ETAG_LEN];
    char error_message[256]; /* X-Error-Message */

    /* Body handling. */
    int body_started;
    int restarted; /* the server ignored Range and sent the whole file */
    int abort_reason;
    int io_errno;
    char body[256]; /* start of an error response's body */
    size_t body_len;

    /* Stall detection: curl's own low-speed check averages over a few
     * seconds, this one fires timeout_s after the last byte. */
    double timeout_s;
    double t_moved;
    int64_t have_seen;
    int stalled;

    /* Progress bar. */
    const char *name;
    int bar;
    double t_start, t_last;
    int64_t have_at_start;
} hub_xfer;

static int64_t hub_parse_i64(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0)
        return -1;
    return (int64_t)v;
}

/* Stores an ETag value without W/ and quotes. */
static void hub_copy_etag(char *dst, const char *v)
{
    if (strncmp(v, "W/", 2) == 0)
        v += 2;
    if (*v == '"')
        v++;
    size_t n = strlen(v);
    if (n > 0 && v[n - 1] == '"')
        n--;
    if (n >= HUB_ETAG_LEN)
        n = HUB_ETAG_LEN - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

static int hub_is_sha256(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char ch = s[n];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return 0;
    }
    return n == 64;
}

static void hub_xfer_reset_response(hub_xfer *x)
{
    x->status = 0;
    x->content_length = -1;
    x->range_start = x->range_total = -1;
    x->etag[0] = 0;
}

static size_t hub_on_header(const char *buf, size_t len, void *user)
{
    hub_xfer *x = user;
    char line[1024];
    size_t n = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
    memcpy(line, buf, n);
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
        n--;
    line[n] = 0;

    if (strncmp(line, "HTTP/", 5) == 0) {
        hub_xfer_reset_response(x);
        const char *sp = strchr(line, ' ');
        x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return len;
    }
    char *colon = strchr(line, ':');
    if (!colon)
        return len;
    *colon = 0;
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (!strcasecmp(line, "content-length")) {
        x->content_length = hub_parse_i64(v);
    } else if (!strcasecmp(line, "content-range")) {
        /* "bytes N-M/T" on a 206, "bytes * /T" (no space) on a 416 */
        if (strncasecmp(v, "bytes ", 6) == 0) {
            v += 6;
            if (*v != '*')
                x->range_start = hub_parse_i64(v);
            const char *slash = strchr(v, '/');
            if (slash && slash[1] != '*')
                x->range_total = hub_parse_i64(slash + 1);
        }
    } else if (!strcasecmp(line, "etag")) {
        hub_copy_etag(x->etag, v);
    } else if (!strcasecmp(line, "x-linked-etag")) {
        hub_copy_etag(x->linked_etag, v);
    } else if (!strcasecmp(line, "x-linked-size")) {
        x->linked_size = hub_parse_i64(v);
    } else if (!strcasecmp(line, "x-error-message")) {
        snprintf(x->error_message, sizeof(x->error_message), "%s", v);
    }
    return len;
}

/* Empties the .part file: the next bytes are the start of the file. */
static int hub_part_truncate(hub_xfer *x)
{
    if (ftruncate(x->fd, 0) != 0 || lseek(x->fd, 0, SEEK_SET) != 0)
        return -1;
    x->have = 0;
    sha256_init(&x->sha);
    return 0;
}

static size_t hub_on_body(const char *buf, size_t len, void *user)
{
    hub_xfer *x = user;
    if (x->status != 200 && x->status != 206) {
        /* Error pages (and any redirect body) are kept only for the message. */
        size_t room = sizeof(x->body) - 1 - x->body_len;
        size_t k = len < room ? len : room;
        memcpy(x->body + x->body_len, buf, k);
        x->body_len += k;
        x->body[x->body_len] = 0;
        return len;
    }
    if (!x->body_started) {
        x->body_started = 1;
        if (x->status == 200 && x->have > 0) {
            if (hub_part_truncate(x) != 0) {
                x->io_errno = errno;
                x->abort_reason = HUB_ABORT_IO;
                return 0;
            }
            x->restarted = 1;
        } else if (x->status == 206 && x->range_start != x->have) {
            x->abort_reason = HUB_ABORT_RANGE;
            return 0;
        }
    }
    if (fd_write_all(x->fd, buf, len) != 0) {
        x->io_errno = errno;
        x->abort_reason = HUB_ABORT_IO;
        return 0;
    }
    sha256_update(&x->sha, buf, len);
    x->have += (int64_t)len;
    return len;
}

static void hub_draw_bar(hub_xfer *x, int64_t total, int final)
{
    double now = time_now();
    if (!final && now - x->t_last < 0.1)
        return;
    x->t_last = now;
    double dt = now - x->t_start;
    double rate = dt > 0 ? (double)(x->have - x->have_at_start) / dt : 0;
    char bar[31];
    int pct = total > 0 ? (int)(100.0 * (double)x->have / (double)total) : 0;
    if (pct > 100)
        pct = 100;
    int fill = pct * 30 / 100;
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    char line[256];
    int n;
    if (total > 0)
        n = snprintf(line, sizeof(line), "\r%-28.28s %3d%% [%s] %8.1f/%.1f MB %7.1f MB/s",
                     x->name, pct, bar, (double)x->have / 1e6, (double)total / 1e6, rate / 1e6);
    else
        n = snprintf(line, sizeof(line), "\r%-28.28s %8.1f MB %7.1f MB/s", x->name,
                     (double)x->have / 1e6, rate / 1e6);
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, line, strnlen(line, sizeof(line)));
        (void)w;
    }
}

static int hub_on_progress(void *user, int64_t dltotal, int64_t dlnow)
{
    (void)dlnow;
    hub_xfer *x = user;
    double now = time_now();
    if (x->have != x->have_seen) {
        x->have_seen = x->have;
        x->t_moved = now;
    } else if (now - x->t_moved > x->timeout_s) {
        x->stalled = 1;
        return 1; /* aborts the transfer: HTTP_CLIENT_EABORTED */
    }
    if (!x->bar || (x->status != 200 && x->status != 206))
        return 0;
    int64_t total = x->linked_size >= 0   ? x->linked_size
                    : x->range_total >= 0 ? x->range_total
                    : dltotal > 0         ? (int64_t)dltotal
                                          : -1;
    hub_draw_bar(x, total, 0);
    return 0;
}

/* One GET (or HEAD) of url into x. The transfer's message lands in msg
 * (HTTP_CLIENT_MSG_LEN bytes). */
static int hub_perform(const hub_conf *c, const char *url, hub_xfer *x, int head, char *msg)
{
    hub_xfer_reset_response(x);
    x->linked_size = -1;
    x->linked_etag[0] = 0;
    x->error_message[0] = 0;
    x->body_started = 0;
    x->abort_reason = HUB_ABORT_NONE;
    x->body_len = 0;
    x->body[0] = 0;
    x->timeout_s = (double)c->timeout_s;
    x->t_moved = time_now();
    x->have_seen = x->have;
    x->stalled = 0;

    char auth[1024], range[64];
    const char *headers[2] = {NULL, NULL};
    if (c->token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->token);
        headers[0] = auth;
    }
    if (!head && x->have > 0)
        snprintf(range, sizeof(range), "%" PRId64 "-", x->have);
    http_client_request rq = {
        .method = head ? "HEAD" : "GET",
        .url = url,
        .headers = headers,
        .connect_timeout_s = (double)c->timeout_s,
        .stall_s = c->timeout_s,
        /* A HEAD stops at the hub's redirect: the 302 already carries
         * X-Linked-Size and X-Linked-ETag, and a CDN's signed GET URL need
         * not answer HEAD. */
        .max_redirects = head ? 0 : 10,
        .user_agent = "mdi-prepare_model/1.0",
        .range = !head && x->have > 0 ? range : NULL,
        .on_header = hub_on_header,
        .on_body = hub_on_body,
        .on_progress = head ? NULL : hub_on_progress,
        .ud = x,
    };
    long code = 0;
    int rc = http_client_perform(&rq, &code, msg);
    if (code > 0)
        x->status = code;
    if (rc == HTTP_CLIENT_EABORTED && x->stalled) {
        snprintf(msg, HTTP_CLIENT_MSG_LEN, "no data for %ld s", c->timeout_s);
        rc = HTTP_CLIENT_ETIMEOUT;
    }
    return rc;
}

static void hub_backoff(int attempt)
{
    /* 0.25 s, 0.5 s, 1 s, 2 s, then 4 s */
    double s = 0.25 * (double)(1 << (attempt < 4 ? attempt : 4));
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Hashes the first n bytes of path into sha (an interrupted earlier run). */
static int hub_hash_prefix(const char *path, int64_t n, sha256_ctx *sha, char *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mdi_fail(err, MDI_EIO, "%s: cannot open: %s", path, strerror(errno));
    static __thread char buf[1 << 16];
    while (n > 0) {
        ssize_t r = read(fd, buf, n < (int64_t)sizeof(buf) ? (size_t)n : sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            close(fd);
            return mdi_fail(err, MDI_EIO, "%s: read failed: %s", path, strerror(e));
        }
        sha256_update(sha, buf, (size_t)r);
        n -= r;
    }
    close(fd);
    return MDI_OK;
}


/* 1 when dest already holds the file the hub describes (HEAD): same size
 * and, when the hub gives a sha256, same hash. 0 when it must be fetched
 * (including every error: the GET then reports it properly). */
static int hub_is_up_to_date(const hub_conf *c, const char *url, const char *dest)
{
    struct stat st;
    if (stat(dest, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    hub_xfer x;
    memset(&x, 0, sizeof(x));
    x.fd = -1;
    char msg[HTTP_CLIENT_MSG_LEN];
    if (hub_perform(c, url, &x, 1, msg) != HTTP_CLIENT_OK)
        return 0;
    int redirect = x.status >= 300 && x.status < 400;
    if (x.status != 200 && !redirect)
        return 0;
    int64_t expected = x.linked_size >= 0 ? x.linked_size : redirect ? -1 : x.content_length;
    if (expected < 0 || (int64_t)st.st_size != expected)
        return 0;
    const char *etag = x.linked_etag[0] ? x.linked_etag : redirect ? "" : x.etag;
    if (hub_is_sha256(etag)) {
        char got[65];
        if (sha256_file_hex(dest, got, NULL) != 0 || strcasecmp(got, etag) != 0)
            return 0;
    }
    return 1;
}

int hub_download_file(const hub_opts *o, const char *repo, const char *file,
                      const char *dest_path, int optional, char *err)
{
    if (!repo || !*repo || !file || !*file || !dest_path || !*dest_path)
        return mdi_fail(err, MDI_EARG, "hub: empty repository, file or destination");
    int rc = hub_global_init(err);
    if (rc != 0)
        return rc;
    hub_conf c;
    hub_conf_resolve(o, &c);
    if (c.token && strpbrk(c.token, "\r\n"))
        return mdi_fail(err, MDI_EARG, "hub: the token contains a line break");

    char url[HUB_URL_LEN], part[HUB_PATH_LEN], dir[HUB_PATH_LEN];
    if (hub_conf_url(&c, repo, file, url, sizeof(url)) != 0)
        return mdi_fail(err, MDI_EARG, "%s/%s: URL too long", repo, file);
    if (snprintf(part, sizeof(part), "%s.part", dest_path) >= (int)sizeof(part))
        return mdi_fail(err, MDI_EARG, "%s: path too long", dest_path);
    snprintf(dir, sizeof(dir), "%s", dest_path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        if ((rc = mkdir_p(dir, err)) != 0)
            return rc;
    }

    if (hub_is_up_to_date(&c, url, dest_path)) {
        if (c.progress)
            log_info("%s: up to date", dest_path);
        return MDI_OK;
    }

    hub_xfer x;
    memset(&x, 0, sizeof(x));
    sha256_init(&x.sha);
    x.name = file;
    x.bar = c.progress && isatty(STDERR_FILENO);
    x.fd = open(part, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (x.fd < 0)
        return mdi_fail(err, MDI_EIO, "%s: cannot open: %s", part, strerror(errno));
    off_t end = lseek(x.fd, 0, SEEK_END);
    if (end < 0) {
        rc = mdi_fail(err, MDI_EIO, "%s: cannot seek: %s", part, strerror(errno));
        goto fail;
    }
    x.have = (int64_t)end;
    if (x.have > 0 && (rc = hub_hash_prefix(part, x.have, &x.sha, err)) != 0)
        goto fail;
    int64_t resumed_from = x.have;
    x.t_start = x.t_last = time_now();
    x.have_at_start = x.have;

    char msg[HTTP_CLIENT_MSG_LEN];
    int complete = 0;
    int64_t expected = -1;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0)
            hub_backoff(attempt - 1);
        int last = attempt >= c.retries;
        int cr = hub_perform(&c, url, &x, 0, msg);
        if (x.bar && x.body_started)
            hub_draw_bar(&x, x.linked_size >= 0 ? x.linked_size : x.range_total, 1);

        if (x.abort_reason == HUB_ABORT_IO) {
            rc = mdi_fail(err, MDI_EIO, "%s: write failed: %s", part, strerror(x.io_errno));
            goto fail;
        }
        if (x.abort_reason == HUB_ABORT_RANGE) {
            /* The server resumed somewhere else than asked: start over. */
            if (hub_part_truncate(&x) != 0) {
                rc = mdi_fail(err, MDI_EIO, "%s: cannot truncate: %s", part, strerror(errno));
                goto fail;
            }
            if (last) {
                rc = mdi_fail(err, MDI_EPROTO, "%s: the server answered Range requests with wrong offsets (%s)",
                              file, url);
                goto fail;
            }
            continue;
        }
        if (cr != HTTP_CLIENT_OK) {
            if (cr == HTTP_CLIENT_ECONNECT || cr == HTTP_CLIENT_EFATAL) {
                rc = mdi_fail(err, MDI_ENET, "%s: %s", url, msg);
                goto fail;
            }
            if (last) {
                int timeout = cr == HTTP_CLIENT_ETIMEOUT;
                int64_t total = x.linked_size >= 0 ? x.linked_size : x.range_total;
                char total_s[32] = "?";
                if (total >= 0)
                    snprintf(total_s, sizeof(total_s), "%" PRId64, total);
                rc = mdi_fail(err, timeout ? MDI_ETIMEOUT : MDI_ENET,
                              "%s: %s after %d attempts: %s (have %" PRId64 " of %s bytes, %s kept for resume)",
                              url, timeout ? "stalled" : "transfer failed", attempt + 1, msg,
                              x.have, total_s, part);
                goto fail;
            }
            log_debug("%s: %s, resuming at byte %" PRId64, url, msg, x.have);
            continue;
        }

        if (x.status == 200 || x.status == 206) {
            if (x.status == 200 && !x.body_started && x.have > 0) {
                /* An empty 200 answer to a Range request: the file is empty. */
                if (hub_part_truncate(&x) != 0) {
                    rc = mdi_fail(err, MDI_EIO, "%s: cannot truncate: %s", part, strerror(errno));
                    goto fail;
                }
            }
            expected = x.linked_size >= 0 ? x.linked_size
                       : x.status == 206  ? x.range_total
                                          : x.content_length;
            complete = 1;
            break;
        }
        if (x.status == 416) {
            /* Range not satisfiable: .part is already whole, or is longer
             * than the file (a stale .part of another revision). */
            int64_t total = x.range_total >= 0 ? x.range_total : x.linked_size;
            if (total >= 0 && total == x.have) {
                expected = x.linked_size >= 0 ? x.linked_size : total;
                complete = 1;
                break;
            }
            if (hub_part_truncate(&x) != 0) {
                rc = mdi_fail(err, MDI_EIO, "%s: cannot truncate: %s", part, strerror(errno));
                goto fail;
            }
            if (last) {
                rc = mdi_fail(err, MDI_EPROTO, "%s: HTTP 416 for a request from byte 0", url);
                goto fail;
            }
            continue;
        }
        if (x.status == 401 || x.status == 403) {
            if (c.token)
                rc = mdi_fail(err, MDI_EAUTH,
                              "%s: gated or private and the token was refused, check --hf-token or HF_TOKEN and that it was granted access (HTTP %ld)",
                              repo, x.status);
            else
                rc = mdi_fail(err, MDI_EAUTH, "%s: gated or private, set --hf-token or HF_TOKEN (HTTP %ld)",
                              repo, x.status);
            goto fail;
        }
        if (x.status == 404) {
            if (optional) {
                close(x.fd);
                unlink(part);
                return 1;
            }
            rc = mdi_fail(err, MDI_ENET, "%s: not found in %s at revision %s (HTTP 404%s%s): %s", file,
                          repo, c.revision, x.error_message[0] ? ", " : "", x.error_message, url);
            goto fail;
        }
        if ((x.status == 429 || x.status >= 500) && !last)
            continue;
        rc = mdi_fail(err, MDI_ENET, "%s: HTTP %ld%s%s%s", url, x.status,
                      x.error_message[0] || x.body_len ? ": " : "",
                      x.error_message[0] ? x.error_message : x.body,
                      x.status == 429 || x.status >= 500 ? " (after retries)" : "");
        for (char *p = err; p && *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        goto fail;
    }
    CHECK(complete);

    if (expected >= 0 && x.have != expected) {
        rc = mdi_fail(err, MDI_EPROTO, "%s: size mismatch: expected %" PRId64 " bytes, got %" PRId64 " (%s)",
                      file, expected, x.have, url);
        close(x.fd);
        unlink(part);
        return rc;
    }
    const char *etag = x.linked_etag[0] ? x.linked_etag : x.etag;
    int hashed = hub_is_sha256(etag);
    if (hashed) {
        char got[65];
        sha256_final_hex(&x.sha, got);
        if (strcasecmp(got, etag) != 0) {
            rc = mdi_fail(err, MDI_EPROTO, "%s: sha256 mismatch: expected %s, got %s (%s)", file, etag,
                          got, url);
            close(x.fd);
            unlink(part);
            return rc;
        }
    }
    if (fsync(x.fd) != 0) {
        rc = mdi_fail(err, MDI_EIO, "%s: fsync failed: %s", part, strerror(errno));
        goto fail;
    }
    if (close(x.fd) != 0) {
        x.fd = -1;
        rc = mdi_fail(err, MDI_EIO, "%s: close failed: %s", part, strerror(errno));
        goto fail;
    }
    x.fd = -1;
    if (rename(part, dest_path) != 0)
        return mdi_fail(err, MDI_EIO, "%s: cannot rename to %s: %s", part, dest_path, strerror(errno));
    if (c.progress) {
        if (x.bar)
            (void)!write(STDERR_FILENO, "\n", 1);
        double dt = time_now() - x.t_start;
        double got = (double)(x.have - x.have_at_start);
        char resumed[64] = "";
        if (resumed_from > 0 && !x.restarted)
            snprintf(resumed, sizeof(resumed), ", resumed at byte %" PRId64, resumed_from);
        log_info("%s: %" PRId64 " bytes in %.1f s (%.1f MB/s)%s%s", dest_path, x.have, dt,
                 dt > 0 ? got / dt / 1e6 : 0.0, hashed ? ", sha256 ok" : "", resumed);
    }
    return MDI_OK;

fail:
    if (x.bar && x.body_started)
        (void)!write(STDERR_FILENO, "\n", 1);
    if (x.fd >= 0) {
        struct stat st;
        /* An empty .part tells a later run nothing: leave no litter. */
        if (fstat(x.fd, &st) == 0 && st.st_size == 0)
            unlink(part);
        close(x.fd);
    }
    return rc;
}

/* ---- several files ---- */

static const char *hub_base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int hub_download_files(const hub_opts *o, const char *repo, const char *const *files,
                       int n_files, const char *dest_dir, char *err)
{
    if (!files || n_files <= 0 || !dest_dir)
        return mdi_fail(err, MDI_EARG, "hub: no files to download");
    char dest[HUB_PATH_LEN];
    for (int i = 0; i < n_files; i++) {
        const char *base = files[i] ? hub_base_name(files[i]) : "";
        if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
            return mdi_fail(err, MDI_EARG, "hub: bad file name \"%s\"", files[i] ? files[i] : "");
        if (path_join(dest, sizeof(dest), dest_dir, base) != 0)
            return mdi_fail(err, MDI_EARG, "%s/%s: path too long", dest_dir, base);
        int rc = hub_download_file(o, repo, files[i], dest, 0, err);
        if (rc != 0)
            return rc;
    }
    return MDI_OK;
}

static int hub_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard name from a weight_map is a flat file name: the index comes from
 * the network and must not write outside dest_dir. */
static int hub_shard_name_ok(const char *s)
{
    return *s && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/') && !strchr(s, '\\');
}

static int hub_download_shards(const hub_opts *o, const char *repo, const char *dest_dir,
                               const char *index_path, char *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(index_path, 0, &jerr);
    if (!root)
        return mdi_fail(err, MDI_EFORMAT, "%s: line %d: %s", index_path, jerr.line, jerr.text);
    int rc = MDI_OK;
    const char **names = NULL;
    size_t n_names = 0;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        rc = mdi_fail(err, MDI_EFORMAT, "%s: no weight_map object", index_path);
        goto done;
    }
    names = calloc(json_object_size(map), sizeof(*names));
    if (!names) {
        rc = mdi_fail(err, MDI_ENOMEM, "%s: out of memory", index_path);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(map, key, val) {
        const char *s = json_string_value(val);
        if (!s || !hub_shard_name_ok(s)) {
            rc = mdi_fail(err, MDI_EFORMAT, "%s: weight_map[\"%s\"] is not a plain file name",
                          index_path, key);
            goto done;
        }
        size_t i = 0;
        while (i < n_names && strcmp(names[i], s) != 0)
            i++;
        if (i == n_names)
            names[n_names++] = s;
    }
    qsort(names, n_names, sizeof(*names), hub_cmp_str);
    rc = hub_download_files(o, repo, names, (int)n_names, dest_dir, err);
done:
    free(names);
    json_decref(root);
    return rc;
}

int hub_download_checkpoint(const hub_opts *o, const char *repo, const char *dest_dir,
                            char *err)
{
    static const struct {
        const char *name;
        int optional;
    } meta[] = {
        {"config.json", 0},
        {"tokenizer.json", 0},
        {"tokenizer_config.json", 1},
        {"generation_config.json", 1},
    };
    if (!repo || !dest_dir || !*dest_dir)
        return mdi_fail(err, MDI_EARG, "hub: empty repository or destination");
    int rc = mkdir_p(dest_dir, err);
    if (rc != 0)
        return rc;
    char dest[HUB_PATH_LEN];
    /* The small files first: a gated repo or a typo fails in a second. */
    for (size_t i = 0; i < sizeof(meta) / sizeof(meta[0]); i++) {
        if (path_join(dest, sizeof(dest), dest_dir, meta[i].name) != 0)
            return mdi_fail(err, MDI_EARG, "%s: path too long", dest_dir);
        rc = hub_download_file(o, repo, meta[i].name, dest, meta[i].optional, err);
        if (rc < 0)
            return rc;
    }
    const char *index = "model.safetensors.index.json";
    if (path_join(dest, sizeof(dest), dest_dir, index) != 0)
        return mdi_fail(err, MDI_EARG, "%s: path too long", dest_dir);
    rc = hub_download_file(o, repo, index, dest, 1, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return hub_download_shards(o, repo, dest_dir, dest, err);

    const char *single = "model.safetensors";
    if (path_join(dest, sizeof(dest), dest_dir, single) != 0)
        return mdi_fail(err, MDI_EARG, "%s: path too long", dest_dir);
    rc = hub_download_file(o, repo, single, dest, 1, err);
    if (rc == 1) {
        char url[HUB_URL_LEN];
        hub_file_url(o, repo, single, url, sizeof(url));
        return mdi_fail(err, MDI_ENET,
                        "%s: has neither %s nor %s (HTTP 404: %s); for a llama2.c .bin repo name its files",
                        repo, single, index, url);
    }
    return rc;
}
