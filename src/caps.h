/*
 * caps: what a node can do, measured once and cached: matrix-vector
 * throughput for each weight dtype the kernels have, and free memory. The
 * starter plans its layer split from these figures (plan.h).
 *
 * A measurement runs kernels_matvec (the decode kernel, with the node's
 * own thread pool) on a matrix larger than the caches (max(64 MiB,
 * 2 x L3), at most 256 MiB and a quarter of the free memory;
 * $MDI_CAPS_BYTES overrides it, the tests use a small one) with 4096
 * columns, for every dtype that can hold weights, and keeps the best of a
 * few timed runs. That takes a few seconds (3 s on one core here); the
 * result is cached in CACHE_DIR/capabilities.json, one entry per CPU
 * model, SIMD level and thread count (an entry measured on a matrix below
 * 64 MiB, a test's, is measured again for a real run):
 *
 *   {"Intel(R) Xeon(R) ... | avx512 | 4 threads":
 *      {"matvec_gflops": {"f32": 3.1, "bf16": 5.9, "q8_0": 9.8, ...},
 *       "matvec_gbytes_s": {"f32": 6.2, ...}, "matrix_bytes": 67108864}}
 *
 * What a node reports (GET / "capabilities", and what a nodes
 * configuration may give for a node in place of asking it):
 *
 *   {"cpu": "...", "simd": "avx512", "n_threads": 4,
 *    "matvec_gflops": {"f32": 3.1, ...},   FLOP/s / 1e9, 2 FLOPs per weight
 *    "matvec_gbytes_s": {"f32": 6.2, ...}, weight bytes read per second / 1e9
 *    "mem_available_bytes": 8123456789}    /proc/meminfo MemAvailable, read
 *                                          each time it is reported
 *
 * Only matvec_gflops and mem_available_bytes are needed by the planner.
 */
#ifndef MDI_CAPS_H
#define MDI_CAPS_H

#include <stddef.h>
#include <jansson.h>
#include "dtype.h"

#define CAPS_FILE "capabilities.json"
#define CAPS_COLS 4096
#define CAPS_MIN_BYTES ((size_t)64 << 20)
#define CAPS_MAX_BYTES ((size_t)256 << 20)
/* Where the starter (and prepare_model, run on the starter's machine)
 * keeps its own measurement. */
#define CAPS_STARTER_CACHE "cache/starter"

/* The node's figures as a new JSON object (format above), from the cache
 * when it has this CPU's entry, else measured now and cached (a cache that
 * cannot be written costs a warning, not the figures). Call from the thread
 * that owns the kernels, after kernels_init. NULL on failure (out of
 * memory), with the reason in err. */
json_t *caps_measure(const char *cache_dir, char *err);

/* The same, a dtype at a time, for a node whose main loop must stay
 * responsive: begin (from the cache: nothing left to do; NULL when out of
 * memory), step (times the next dtype, a fraction of a second; returns 1
 * when none is left), end (finishes what is left, caches, returns the
 * figures as caps_measure does, frees m); abort frees m unfinished. */
typedef struct caps_measurer caps_measurer;
caps_measurer *caps_measure_begin(const char *cache_dir, char *err);
int caps_measure_step(caps_measurer *m);
json_t *caps_measure_end(caps_measurer *m);
void caps_measure_abort(caps_measurer *m);

/* A copy of caps (borrowed) with mem_available_bytes read now (new). */
json_t *caps_refresh(const json_t *caps);

/* MemAvailable from /proc/meminfo in bytes; 0 when unknown. */
size_t caps_mem_available(void);

/* What the planner needs from a capabilities object. */
typedef struct {
    double gflops[DTYPE_COUNT];  /* 0: not measured for that dtype */
    double mem_bytes;            /* mem_available_bytes */
} caps_profile;

/* Reads a capabilities object (borrowed); where names it in messages
 * ("secondary 1 (10.0.0.3:8089): capabilities.matvec_gflops.q8_0: expected
 * a positive number"). 0 or MDI_EFORMAT. */
int caps_parse(const json_t *caps, caps_profile *out, const char *where, char *err);

/* The throughput of p for weights of dtype t in FLOP/s: its own figure, or,
 * when t was not measured, the slowest figure it has (a safe guess). 0 when
 * p has none at all. */
double caps_flops(const caps_profile *p, dtype_t t);

#endif
