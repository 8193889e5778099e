/*
 * live: rates over the last few seconds from growing counters (live.h).
 */
#include "live.h"

#include <string.h>

void live_window_init(live_window *w)
{
    memset(w, 0, sizeof(*w));
}

void live_window_push(live_window *w, double t, double tokens, double busy_s)
{
    int at = w->head;
    /* While the newest is less than LIVE_MIN_STEP_S after the one before
     * it, it moves on instead of staying: the samples before the newest
     * are spread at least that far apart. */
    int replace = w->n >= 2 &&
                  w->t[w->head] - w->t[(w->head + LIVE_SAMPLES - 1) % LIVE_SAMPLES] < 0.999 * LIVE_MIN_STEP_S;
    if (!replace && w->n > 0) at = (w->head + 1) % LIVE_SAMPLES;
    if (!replace && w->n < LIVE_SAMPLES) w->n++;
    w->t[at] = t;
    w->tokens[at] = tokens;
    w->busy_s[at] = busy_s;
    w->head = at;
}

void live_window_rates(const live_window *w, double *tokens_per_s, double *busy, double *window_s)
{
    *tokens_per_s = 0;
    *busy = 0;
    if (window_s) *window_s = 0;
    if (w->n < 2) return;
    int newest = w->head, oldest = newest;
    for (int k = 1; k < w->n; k++) {
        int i = (newest + LIVE_SAMPLES - k) % LIVE_SAMPLES;
        if (w->t[newest] - w->t[i] > LIVE_WINDOW_S) break;
        oldest = i;
    }
    double dt = w->t[newest] - w->t[oldest];
    if (dt <= 0) return;
    *tokens_per_s = (w->tokens[newest] - w->tokens[oldest]) / dt;
    double b = (w->busy_s[newest] - w->busy_s[oldest]) / dt;
    *busy = b < 0 ? 0 : b > 1 ? 1 : b;
    if (window_s) *window_s = dt;
}

json_t *live_window_json(const live_window *w)
{
    double tok_s, busy, span;
    live_window_rates(w, &tok_s, &busy, &span);
    return json_pack("{s:f, s:f, s:f}", "window_s", span, "tokens_per_s", tok_s, "busy", busy);
}
