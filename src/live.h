/*
 * live: figures over a recent window (the last LIVE_WINDOW_S seconds) from
 * counters that only grow: rows run through the layers and seconds spent
 * computing. A node samples its counters now and then (live_window_push);
 * the rates are the counters' change between the newest sample and the
 * oldest one still inside the window:
 *
 *     tokens_per_s = (tokens[new] - tokens[old]) / (t[new] - t[old])
 *     busy         = (busy_s[new] - busy_s[old]) / (t[new] - t[old])
 *
 *     t:   ... [old] ... ... ... [new]       at most LIVE_SAMPLES kept,
 *               <---- LIVE_WINDOW_S ---->    one per LIVE_MIN_STEP_S
 *
 * Not thread-safe: one owner pushes and reads (the node's main thread, or
 * its caller under a lock).
 */
#ifndef MDI_LIVE_H
#define MDI_LIVE_H

#include <jansson.h>

#define LIVE_WINDOW_S 5.0
#define LIVE_SAMPLES 64
#define LIVE_MIN_STEP_S 0.1

typedef struct {
    double t[LIVE_SAMPLES], tokens[LIVE_SAMPLES], busy_s[LIVE_SAMPLES];
    int head;                  /* the newest sample's slot */
    int n;
} live_window;

void live_window_init(live_window *w);
/* Adds a sample at time t (seconds, monotonic). While samples come faster
 * than LIVE_MIN_STEP_S apart, each replaces the newest instead, so the
 * newest is always current and the window's samples stay spread out. */
void live_window_push(live_window *w, double t, double tokens, double busy_s);
/* Rates over the window; both 0 until two samples span some time. The
 * busy fraction is clamped to [0, 1]. *window_s (may be NULL) gets the
 * span they were taken over. */
void live_window_rates(const live_window *w, double *tokens_per_s, double *busy, double *window_s);
/* {"window_s", "tokens_per_s", "busy"} (new reference). */
json_t *live_window_json(const live_window *w);

#endif
