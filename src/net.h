/*
 * net: the TCP helpers of the ring and the tests, in the manner of redis'
 * anet: each returns a file descriptor or 0 on success, or a negative MDI_E*
 * code with a readable reason (the address, the system call, strerror) in
 * err (MDI_ERR_LEN bytes, may be NULL).
 *
 * Every blocking operation is bounded: connects and transfers take a
 * timeout in seconds and poll in short slices, so that a caller's cancel
 * flag (set by another thread) or shutdown(2) on the socket ends them
 * promptly. No function here ever waits forever.
 */
#ifndef MDI_NET_H
#define MDI_NET_H

#include <stddef.h>

#define NET_ADDR_LEN 96     /* "host:port" text of a peer */

/* Listens on port (0: any free port) on all interfaces with SO_REUSEADDR.
 * Returns the socket or MDI_ENET ("port 9100 already in use"). */
int net_listen(int port, int backlog, char *err);
/* The port a listening socket got (for port 0). -1 on error. */
int net_local_port(int fd);

/* Connects to host:port within timeout_s seconds, then sets TCP_NODELAY.
 * Returns the socket, MDI_ETIMEOUT or MDI_ENET. */
int net_connect(const char *host, int port, double timeout_s, char *err);

/* Waits up to timeout_s (< 0: no limit) for a connection, checking
 * *cancel (may be NULL) every slice. Sets TCP_NODELAY and writes the
 * peer's "addr:port" into peer (NET_ADDR_LEN, may be NULL). Returns the
 * socket, MDI_ETIMEOUT, MDI_ESTATE when cancelled, or MDI_ENET. */
int net_accept(int lfd, double timeout_s, const volatile int *cancel,
               char *peer, char *err);

/* Reads exactly n bytes. timeout_s bounds the whole transfer (< 0: no
 * limit). Returns 0, MDI_ETIMEOUT, MDI_ESTATE when *cancel became set,
 * or MDI_ENET (with "connection closed by peer after k of n bytes" on
 * EOF). *got (may be NULL) receives the bytes read. */
int net_read_full(int fd, void *buf, size_t n, double timeout_s,
                  const volatile int *cancel, size_t *got, char *err);
/* Writes exactly n bytes, same conventions. Never raises SIGPIPE. */
int net_write_full(int fd, const void *buf, size_t n, double timeout_s,
                   const volatile int *cancel, char *err);

/* "addr:port" of the socket's peer into out (NET_ADDR_LEN). */
void net_peer_name(int fd, char *out);
/* shutdown(2) both ways then close(2); ignores fd < 0. */
void net_close(int fd);

/* A cancel flag is set by one thread and polled by others: atomic loads and
 * stores (a plain volatile int is a data race under the C11 model). */
static inline int net_cancelled(const volatile int *cancel)
{
    return cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE);
}
static inline void net_cancel(volatile int *cancel)
{
    __atomic_store_n(cancel, 1, __ATOMIC_RELEASE);
}

#endif
