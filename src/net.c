/*
 * net: bounded TCP helpers (see net.h).
 */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

/* Long waits are cut into slices so that cancel flags are seen promptly. */
#define NET_SLICE_MS 100

static void net_set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void net_sockaddr_name(const struct sockaddr *sa, char *out)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(out, NET_ADDR_LEN, "%s:%d", host, port);
}

void net_peer_name(int fd, char *out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(out, NET_ADDR_LEN, "?");
        return;
    }
    net_sockaddr_name((struct sockaddr *)&ss, out);
}

void net_close(int fd)
{
    if (fd < 0) return;
    shutdown(fd, SHUT_RDWR);
    close(fd);
}

int net_listen(int port, int backlog, char *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return mdi_fail(err, MDI_ENET, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    sa.sin_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE)
            return mdi_fail(err, MDI_ENET, "port %d already in use", port);
        return mdi_fail(err, MDI_ENET, "bind to port %d: %s", port, strerror(e));
    }
    if (listen(fd, backlog) != 0) {
        int e = errno;
        close(fd);
        return mdi_fail(err, MDI_ENET, "listen on port %d: %s", port, strerror(e));
    }
    return fd;
}

int net_local_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0) return -1;
    return ntohs(sa.sin_port);
}

/* Remaining milliseconds of a deadline as a poll slice. */
static int net_slice_ms(double deadline)
{
    if (deadline <= 0) return NET_SLICE_MS;
    double left = (deadline - time_now()) * 1000.0;
    if (left <= 0) return 0;
    return left < NET_SLICE_MS ? (int)left + 1 : NET_SLICE_MS;
}

/* Non-blocking connect to one resolved address, bounded by deadline. */
static int net_connect_one(const struct addrinfo *ai, double deadline, char *why, size_t why_cap)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        snprintf(why, why_cap, "socket: %s", strerror(errno));
        return MDI_ENET;
    }
    int flags = fcntl(fd, F_GETFL, 0);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        snprintf(why, why_cap, "%s", strerror(errno));
        close(fd);
        return MDI_ENET;
    }
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int ms = net_slice_ms(deadline);
        if (ms == 0) {
            snprintf(why, why_cap, "timed out");
            close(fd);
            return MDI_ETIMEOUT;
        }
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(why, why_cap, "poll: %s", strerror(errno));
            close(fd);
            return MDI_ENET;
        }
        if (r == 0) continue;
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        if (soerr != 0) {
            snprintf(why, why_cap, "%s", strerror(soerr));
            close(fd);
            return MDI_ENET;
        }
        break;
    }
    fcntl(fd, F_SETFL, flags);
    net_set_nodelay(fd);
    return fd;
}

int net_connect(const char *host, int port, double timeout_s, char *err)
{
    char port_s[16];
    snprintf(port_s, sizeof(port_s), "%d", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, port_s, &hints, &res);
    if (g != 0)
        return mdi_fail(err, MDI_ENET, "cannot resolve %s: %s", host, gai_strerror(g));
    double deadline = time_now() + timeout_s;
    char why[128] = "no address";
    int rc = MDI_ENET;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        rc = net_connect_one(ai, deadline, why, sizeof(why));
        if (rc >= 0) break;
    }
    freeaddrinfo(res);
    if (rc < 0) return mdi_fail(err, rc, "connect to %s:%d: %s", host, port, why);
    return rc;
}

int net_accept(int lfd, double timeout_s, const volatile int *cancel, char *peer, char *err)
{
    double deadline = timeout_s < 0 ? 0 : time_now() + timeout_s;
    for (;;) {
        if (net_cancelled(cancel)) return mdi_fail(err, MDI_ESTATE, "cancelled");
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int ms = net_slice_ms(deadline);
        if (ms == 0) return mdi_fail(err, MDI_ETIMEOUT, "no connection within %.1f s", timeout_s);
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return mdi_fail(err, MDI_ENET, "poll: %s", strerror(errno));
        if (r == 0) continue;
        if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
            return mdi_fail(err, MDI_ESTATE, "listening socket closed");
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
            return mdi_fail(err, MDI_ENET, "accept: %s", strerror(errno));
        }
        net_set_nodelay(fd);
        if (peer) net_sockaddr_name((struct sockaddr *)&ss, peer);
        return fd;
    }
}

int net_read_full(int fd, void *buf, size_t n, double timeout_s,
                  const volatile int *cancel, size_t *got, char *err)
{
    double deadline = timeout_s < 0 ? 0 : time_now() + timeout_s;
    size_t done = 0;
    int rc = 0;
    while (done < n) {
        if (net_cancelled(cancel)) { rc = mdi_fail(err, MDI_ESTATE, "cancelled"); break; }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ms = net_slice_ms(deadline);
        if (ms == 0) {
            rc = mdi_fail(err, MDI_ETIMEOUT, "read timed out after %.1f s (%zu of %zu bytes)",
                          timeout_s, done, n);
            break;
        }
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { rc = mdi_fail(err, MDI_ENET, "poll: %s", strerror(errno)); break; }
        if (r == 0) continue;
        ssize_t k = recv(fd, (char *)buf + done, n - done, MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            rc = mdi_fail(err, MDI_ENET, "recv: %s", strerror(errno));
            break;
        }
        if (k == 0) {
            rc = mdi_fail(err, MDI_ENET, "connection closed by peer after %zu of %zu bytes", done, n);
            break;
        }
        done += (size_t)k;
    }
    if (got) *got = done;
    return rc;
}

int net_write_full(int fd, const void *buf, size_t n, double timeout_s,
                   const volatile int *cancel, char *err)
{
    double deadline = timeout_s < 0 ? 0 : time_now() + timeout_s;
    size_t done = 0;
    while (done < n) {
        if (net_cancelled(cancel)) return mdi_fail(err, MDI_ESTATE, "cancelled");
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int ms = net_slice_ms(deadline);
        if (ms == 0)
            return mdi_fail(err, MDI_ETIMEOUT, "write timed out after %.1f s (%zu of %zu bytes)",
                            timeout_s, done, n);
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return mdi_fail(err, MDI_ENET, "poll: %s", strerror(errno));
        if (r == 0) continue;
        ssize_t k = send(fd, (const char *)buf + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            return mdi_fail(err, MDI_ENET, "send: %s", strerror(errno));
        }
        done += (size_t)k;
    }
    return 0;
}
