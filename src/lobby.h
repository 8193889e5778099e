/*
 * lobby: the waiting room of a ring port, where no connection can hold up
 * another.
 *
 * A node's ring port is open to anyone on the network. A connection that
 * says nothing, or a few bytes and then nothing, must neither keep the
 * previous node waiting behind it nor block the thread that accepts. So
 * connections are not greeted one after the other: every accepted
 * connection (a guest) waits here, all of them watched at once with one
 * poll(2), each with its own deadline, and the lobby takes each through
 * the handshake (seal.h) one step at a time, each step only once the
 * guest's HELLO for it (a 40-byte header and the payload it announces) has
 * arrived whole, so that no step ever waits on a guest:
 *
 *   listen_fd --accept--> [guest, deadline] ... (at most LOBBY_MAX)
 *       first HELLO whole -> checked (meant for this node, from the node
 *           expected, for the run epoch expected); without a secret
 *           answered, greeted;
 *           with one, challenged: [guest, new deadline] until its proof
 *       proof whole -> checked (constant time), its epoch checked again,
 *           accepted, greeted
 *       silent past its deadline, closed, not "MDIR", a payload beyond
 *       PROTO_TEXT_MAX, refused by the handshake -> dropped, a log line
 *       greeted -> lobby_wait returns it, with its channel
 *
 * A peer without the secret is refused at its proof, one posing as another
 * node at its first HELLO; one that stops halfway holds nothing but its
 * place in the room until its deadline.
 *
 * When the room is full, the oldest guest of the address holding the most
 * guests leaves first: one address opening connections in a loop cannot
 * push out another's.
 *
 * Run epochs (proto.h): the secondary between runs does not know the
 * next run's epoch, so its lobby greets a connection made for any
 * (expect_epoch PROTO_EPOCH_ANY) and tells each greeted connection's epoch
 * (ch->epoch), which the secondary compares with the run's at /start; the
 * ring's receiving thread sets expect_epoch to its run's while it waits
 * for the previous node, and puts it back after.
 *
 * One thread at a time uses a lobby: the secondary's main loop between
 * runs, the ring's receiving thread during one.
 */
#ifndef MDI_LOBBY_H
#define MDI_LOBBY_H

#include "auth.h"
#include "net.h"
#include "seal.h"

#define LOBBY_MAX 16

typedef struct {
    int fd;
    double deadline;
    char peer[NET_ADDR_LEN];   /* "addr:port" */
    int challenged;            /* its first HELLO answered, its proof to come */
    seal_pending pend;         /* the handshake's state meanwhile */
} lobby_guest;

typedef struct lobby {
    int listen_fd;             /* borrowed */
    double hello_timeout_s;    /* from accept to the whole first HELLO, and
                                  from the challenge to the whole proof */
    const auth_keys *keys;     /* borrowed; keys->on = 0: plain HELLO */
    uint32_t self;             /* this node's index */
    int expect;                /* the index of the node to greet */
    long long expect_epoch;    /* the run epoch its connection must be made
                                  for; PROTO_EPOCH_ANY: any */
    char name[64];             /* "secondary 0", for log lines */
    lobby_guest guests[LOBBY_MAX];
    int n;
    double log_start;          /* rejections logged in the current window */
    int log_count, log_quiet;
    unsigned n_rejected;       /* every rejection so far */
    char last_rejected[256];   /* the latest: "addr:port: why" */
} lobby;

/* A lobby of listen_fd greeting node expect for node self, on connections
 * made for run epoch expect_epoch (PROTO_EPOCH_ANY: any), with keys
 * (borrowed, outliving the lobby). */
void lobby_init(lobby *l, int listen_fd, double hello_timeout_s, const auth_keys *keys, uint32_t self, int expect,
                long long expect_epoch, const char *name);

/* Waits up to timeout_s (0: only looks at what is there now) for a guest
 * to be greeted, accepting, stepping through handshakes and dropping
 * meanwhile. Returns its socket (the caller owns it; its next bytes are
 * the peer's first frame of the run) with its "addr:port" in peer
 * (NET_ADDR_LEN) and its channel in *ch (plain without a secret; ch->epoch
 * the run epoch the connection was made for), or
 * MDI_ETIMEOUT, MDI_ESTATE when *cancel (may be NULL) became set, or
 * MDI_ENET when the listening socket failed (reason in err, may be NULL). */
int lobby_wait(lobby *l, double timeout_s, const volatile int *cancel, char *peer, seal_channel *ch, char *err);

/* Closes every guest. */
void lobby_clear(lobby *l);

#endif
