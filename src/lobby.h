/*
 * lobby: the waiting room of a ring port, where no connection can hold up
 * another.
 *
 * A node's ring port is open to anyone on the network. A connection that
 * says nothing, or a few bytes and then nothing, must neither keep the
 * previous node waiting behind it nor block the thread that accepts. So
 * connections are not greeted one after the other: every accepted
 * connection (a guest) waits here, all of them watched at once with one
 * poll(2), each with its own deadline, until its whole first frame (the
 * HELLO: a 40-byte header and the payload it announces) has arrived. Only
 * then is it handed out, the HELLO still unread in the socket, so that the
 * caller's proto_hello_accept reads it at once and never waits on a silent
 * peer.
 *
 *   listen_fd --accept--> [guest, deadline] ... (at most LOBBY_MAX)
 *       silent past its deadline, closed, not "MDIR" or a payload beyond
 *       PROTO_TEXT_MAX  -> dropped with a log line
 *       whole first frame in the socket -> lobby_wait returns it
 *
 * When the room is full, the oldest guest of the address holding the most
 * guests leaves first: one address opening connections in a loop cannot
 * push out another's.
 *
 * One thread at a time uses a lobby: the secondary's main loop between
 * runs, the ring's receiving thread during one.
 */
#ifndef MDI_LOBBY_H
#define MDI_LOBBY_H

#include "net.h"

#define LOBBY_MAX 16

typedef struct {
    int fd;
    double deadline;
    char peer[NET_ADDR_LEN];   /* "addr:port" */
} lobby_guest;

typedef struct lobby {
    int listen_fd;             /* borrowed */
    double hello_timeout_s;    /* from accept to the whole first frame */
    char name[64];             /* "secondary 0", for log lines */
    lobby_guest guests[LOBBY_MAX];
    int n;
    double log_start;          /* rejections logged in the current window */
    int log_count, log_quiet;
} lobby;

void lobby_init(lobby *l, int listen_fd, double hello_timeout_s, const char *name);

/* Waits up to timeout_s (0: only looks at what is there now) for a guest
 * whose first frame has arrived whole, accepting and dropping meanwhile.
 * Returns its socket (the caller owns it; the frame is still unread) with
 * its "addr:port" in peer (NET_ADDR_LEN), MDI_ETIMEOUT, MDI_ESTATE when
 * *cancel (may be NULL) became set, or MDI_ENET when the listening socket
 * failed (reason in err, may be NULL). */
int lobby_wait(lobby *l, double timeout_s, const volatile int *cancel, char *peer, char *err);

/* Closes every guest. */
void lobby_clear(lobby *l);

#endif
