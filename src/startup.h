/*
 * startup: the starter waits for its secondaries.
 *
 * Nodes of a ring are started by hand, by a script or by a service manager,
 * in any order. Before it configures them, the starter asks every
 * secondary's GET / until each answers, retrying with backoff (0.1 s,
 * doubling, at most 2 s between tries) up to a deadline (--connect-timeout,
 * STARTUP_CONNECT_TIMEOUT_S by default). It prints once which nodes it is
 * waiting for, and, verbose, when each answers. A node that answers with an
 * error of its own (a wrong secret: 401, anything that is not "cannot
 * connect" or "no answer in time") ends the wait at once: waiting longer
 * would not change it.
 */
#ifndef MDI_STARTUP_H
#define MDI_STARTUP_H

#include <jansson.h>
#include "nodes_config.h"

#define STARTUP_CONNECT_TIMEOUT_S 60.0
#define STARTUP_BACKOFF_FIRST_S 0.1
#define STARTUP_BACKOFF_MAX_S 2.0
/* One GET / waits this long at most: a node that is up answers in time
 * even on a slow link, and a hung one costs no more than this past the
 * deadline. */
#define STARTUP_PROBE_S 2.0

/* Waits until every secondary of nc answers GET /, at most timeout_s
 * (0: one try each). statuses (may be NULL) gets, per secondary, its status
 * (new references; the caller json_decref's each). Returns 0, or
 * MDI_ETIMEOUT naming every node still silent ("secondary 1
 * (127.0.0.1:8091) did not answer within 5 s: GET /: cannot connect ..."),
 * or the code of a node's own error with its name. */
int startup_wait_nodes(const nodes_config *nc, double timeout_s, int verbose, json_t **statuses, char *err);

#endif
