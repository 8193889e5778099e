/*
 * pipeline: the starter's side of distributed generation (recurrent
 * pipeline parallelism over the TCP ring).
 *
 *   starter: embed + layers [0, a) --DATA--> secondary 0: layers [a, b)
 *        ^                                        |
 *        |                                       ...
 *        +--- last row (n_tokens = 1) <-- last secondary: layers [.., L)
 *   starter: final norm + head -> sample -> next token's DATA frame
 *
 * n_samples sequences travel the ring at once so that every node works on
 * a different sample at each moment. The decode steps that come back
 * together run as one batch (one head call, then the next tokens through
 * the starter's layers), as every secondary batches the decode frames it
 * has waiting (ring.h). Each sample stops on its own EOS or
 * token limit; a RELEASE frame then frees its KV cache on every node, and
 * the run ends when all samples have finished: a STOP frame goes round the
 * ring and every secondary gets PUT /stop (which returns its figures).
 *
 * What pipeline_run does, in order:
 *   1. reads the nodes configuration and CKPT/chunks/<N>nodes/manifest.json
 *      (written by prepare_model) for each node's layer range and chunk;
 *   2. loads the starter's chunk (embedding, its layers, final norm, head);
 *   3. POST /init to every secondary (run configuration + chunk sha256),
 *      PUT /chunk (streamed from disk) only where the secondary does not
 *      hold that chunk yet, POST /start, and waits until the ring is closed
 *      (each node listens on its inference.port_in and connects to the next
 *      node's);
 *   4. generates, watching the ring with a bounded timeout (o->timeout_s):
 *      a node that dies, hangs or sends garbage is found (HTTP probing of
 *      each secondary's GET /), named, the others are stopped, and
 *      pipeline_run returns an error naming the node;
 *   5. stops the ring, collects per-node figures and the tokens-versus-time
 *      curve (the caller writes --output, --time-run and --plots, after the
 *      text, so that an output error never loses it).
 *
 * An interactive chat keeps the ring open from turn to turn instead:
 * pipeline_open (steps 1-3, one sample), pipeline_turn per turn (only the
 * turn's tokens cross the ring; every node keeps the sample's KV cache),
 * pipeline_close (RELEASE, then step 5).
 */
#ifndef MDI_PIPELINE_H
#define MDI_PIPELINE_H

#include <jansson.h>
#include "cli.h"
#include "generate.h"
#include "report.h"
#include "tokenizer.h"

/* Runs distributed generation of n_samples samples.
 *
 * The caller has called kernels_init(o->n_threads) and loaded the
 * tokenizer (borrowed; used for EOS and for the samples' text).
 * results[i]: the caller fills prompt, prompt_ids, n_prompt (owned by the
 * result, as in standalone mode); pipeline_run fills generated_ids
 * (allocated here when NULL, capacity o->n_tokens), n_generated, text,
 * t_first_token, t_done. Nothing is printed to stdout: the caller prints
 * results[i].text as it does in standalone mode.
 * st: filled (wire_dtype set). *nodes: a new JSON array of per-node objects
 * (role, index, addr, layers, compute_s, wait_s, bytes_sent,
 * bytes_received, ...) to hand to report_write_json, which steals it; NULL
 * on failure.
 *
 * Returns 0, or a negative MDI_E* code with a reason in err that names the
 * failed node ("secondary 1 (10.0.0.3:8091): ..."). */
int pipeline_run(const starter_opts *o, const tokenizer *tok,
                 sample_result *results, int n_samples,
                 run_stats *st, json_t **nodes, char *err);

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
 * st (its curve among the rest) and *nodes as pipeline_run does; NULL: an
 * abort after a failure (secondaries are told to stop). */
int pipeline_close(pipeline *p, run_stats *st, json_t **nodes, char *err);

#endif
