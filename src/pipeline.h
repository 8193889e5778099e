/*
 * pipeline: an interactive chat's conversation on the ring (recurrent
 * pipeline parallelism over the TCP ring, one sample).
 *
 *   starter: embed + layers [0, a) --DATA--> secondary 0: layers [a, b)
 *        ^                                        |
 *        |                                       ...
 *        +--- last row (n_tokens = 1) <-- last secondary: layers [.., L)
 *   starter: final norm + head -> sample -> next token's DATA frame
 *
 * The ring stays open from turn to turn: pipeline_open (the cluster
 * module's cluster_open with one slot: nodes configuration, manifest,
 * starter chunk, POST /init, chunk upload, /start, ring closed),
 * pipeline_turn per turn (only the turn's tokens cross the ring; every
 * node keeps the sample's KV cache), pipeline_close (RELEASE, then STOP
 * round the ring, every secondary stopped, per-node figures).
 *
 * Batch mode (--n-samples, --prompt FILE:) and the service run on the
 * engine instead (engine.h), which drives the same cluster module with
 * many slots.
 */
#ifndef MDI_PIPELINE_H
#define MDI_PIPELINE_H

#include <jansson.h>
#include "cli.h"
#include "generate.h"
#include "report.h"
#include "tokenizer.h"

typedef struct pipeline pipeline;

/* Sets up a one-sample ring with a KV cache of max_seq positions (0: the
 * model's context). *out is new; 0 or a code with the reason in err. */
int pipeline_open(pipeline **out, const starter_opts *o, int max_seq, char *err);
int pipeline_max_seq(const pipeline *p);
/* As generate_session_turn, on the ring. A failure names the node; the
 * caller then closes with st = NULL. */
int pipeline_turn(pipeline *p, const tokenizer *tok, sample_state *ss, const int *ids, int n, double t0,
                  turn_figures *fig, char *err);
/* Ends the conversation and frees p. st != NULL: an orderly end that fills
 * st (its curve among the rest) and *nodes (cluster_finish); NULL: an
 * abort after a failure (secondaries are told to stop). */
int pipeline_close(pipeline *p, run_stats *st, json_t **nodes, char *err);

#endif
