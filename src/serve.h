/*
 * serve: bin/starter --serve. Opens the engine once (the model loaded, the
 * secondaries configured and the ring closed), serves the HTTP API (api.h)
 * until SIGINT or SIGTERM, then stops the server, closes the engine (every
 * secondary stopped cleanly) and returns.
 *
 * The caller blocks SIGINT and SIGTERM in every thread before starting any
 * (serve_block_signals, first thing in main): serve_run waits for them.
 */
#ifndef MDI_SERVE_H
#define MDI_SERVE_H

#include "cli.h"
#include "tokenizer.h"

void serve_block_signals(void);

/* o->ckpt: the model (chunks prepared for the ring beside it); tok
 * borrowed. Prints "serving on http://HOST:PORT ..." on stdout once ready.
 * Returns 0 after a clean stop, or a code with the reason in err. */
int serve_run(const starter_opts *o, const tokenizer *tok, char *err);

#endif
