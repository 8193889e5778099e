/*
 * secondary: a worker node. It serves the HTTP control plane, and for each
 * run the starter configures it loads its chunk (a contiguous range of
 * layers) and joins the TCP ring; after the run it is idle again and
 * serves the next one, with the same or another model.
 *
 *   bin/secondary settings-distr/config.json 0
 *   bin/secondary --nodes-config settings-distr/config.json 0 [--chunk PATH]
 *                 [--cache-dir DIR] [--n-threads N] [--secret S]
 *                 [--dtype T] [-v] [-d] [--device cpu]
 *   bin/secondary settings-distr/secondary/node0.json 0   (MDI-LLM's per-node file)
 *                 [--mmap | --no-mmap] [--mlock]
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "caps.h"
#include "control.h"
#include "kernels.h"
#include "live.h"
#include "lobby.h"
#include "model.h"
#include "net.h"
#include "nodes_config.h"
#include "proto.h"
#include "ring.h"
#include "seal.h"
#include "util.h"

/* How often the main thread looks at commands, signals and the ring. */
#define SECONDARY_TICK_S 0.1
/* How long a connection to the ring port may take to send its whole HELLO,
 * and, with a secret, its whole proof after the challenge (lobby.h). */
#define SECONDARY_HELLO_S 5.0
/* How long the previous node may stay silent in a run (--idle-timeout). */
#define SECONDARY_IDLE_S 30.0
/* A connection kept between runs older than this at /start is not used. */
#define SECONDARY_EARLY_S 10.0

typedef struct {
    const char *nodes_config;
    int index;
    int spare;              /* --spare I: nodes.spare[I], taking a failed secondary's place (-1: none) */
    const char *chunk;
    const char *cache_dir;
    int n_threads;
    const char *secret;
    dtype_t dtype;          /* --dtype: weights in memory; DTYPE_COUNT: as the starter says */
    int verbose;            /* -v, --verb: each run's figures on stderr */
    int mmap_weights;   /* --mmap 1, --no-mmap 0; -1: as the starter's run configuration says */
    int mlock;          /* --mlock 1; -1: as the run configuration says */
    double http_timeout_s;  /* --http-timeout: idle HTTP connections, stalled uploads */
    double idle_timeout_s;  /* --idle-timeout: a run's previous node silent this long */
} secondary_opts;

static volatile sig_atomic_t quit_requested;

static void on_signal(int sig)
{
    (void)sig;
    quit_requested = 1;
}

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [--nodes-config] CONFIG.json INDEX [options]\n"
            "\n"
            "Runs secondary node INDEX (its place in the configuration's \"secondary\" list).\n"
            "\n"
            "  --spare I          run as nodes.spare[I] (no INDEX): takes a failed secondary's place\n"
            "  --chunk PATH       this node's chunk, given locally (never uploaded then)\n"
            "  --cache-dir DIR    where uploaded chunks are kept (default cache/secondaryINDEX)\n"
            "  --n-threads N      compute threads (default: the configuration's n_threads, else all cores)\n"
            "  --secret S         shared secret (default: the configuration's \"secret\")\n"
            "  --dtype T          weights in memory: f32, bf16, f16, q8_0, q4_0 (default: as the starter asks)\n"
            "  --verb, -v         each run's figures on stderr\n"
            "  --debug, -d        debug log\n"
            "  --device cpu       accepted (this build computes on the CPU)\n"
            "  --mmap, --no-mmap  weights borrowed from the chunk's file mapping, or read into\n"
            "                     anonymous memory (default: as the starter asks, itself --no-mmap\n"
            "                     by default)\n"
            "  --mlock            lock the weights in memory (default: as the starter asks)\n"
            "  --http-timeout S   an HTTP connection silent this long is closed, an upload that\n"
            "                     stalls this long is dropped (default 10)\n"
            "  --idle-timeout S   during a run, the previous node silent this long (it sends a\n"
            "                     keepalive every second when it has nothing to say) is taken\n"
            "                     for hung: back to idle (default 30)\n"

            "\n"
            "CONFIG.json is the nodes configuration, or this node's own entry alone\n"
            "(MDI-LLM's settings_distr/secondary/nodeN.json).\n",
            argv0);
}

static int parse_args(secondary_opts *o, int argc, char **argv, char *err)
{
    memset(o, 0, sizeof(*o));
    o->index = -1;
    o->spare = -1;
    o->dtype = DTYPE_COUNT;
    o->mmap_weights = -1;
    o->mlock = -1;
    const char *positional[2] = {NULL, NULL};
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout, argv[0]);
            return 1;
        }
        if (!strcmp(a, "--mmap") || !strcmp(a, "--no-mmap")) {
            o->mmap_weights = !strcmp(a, "--mmap");
            continue;
        }
        if (!strcmp(a, "--mlock")) {
            o->mlock = 1;
            continue;
        }
        /* MDI-LLM's flags (README: "MDI-LLM's command lines") */
        if (!strcmp(a, "-v") || !strcmp(a, "--verb")) { o->verbose = 1; continue; }
        if (!strcmp(a, "-d") || !strcmp(a, "--debug")) { setenv("MDI_DEBUG", "1", 1); continue; }
        if (!strcmp(a, "--device") || !strcmp(a, "--dtype")) {
            if (i + 1 >= argc) return mdi_fail(err, MDI_EARG, "%s: missing value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--device")) { if (cli_check_device(v, err)) return MDI_EARG; }
            else if (strcmp(v, "auto") && dtype_parse(v, &o->dtype) != 0)
                return mdi_fail(err, MDI_EARG, "--dtype: unknown dtype \"%s\" (accepted: auto, %s)", v, dtype_names());
            continue;
        }
        if (!strcmp(a, "--http-timeout") || !strcmp(a, "--idle-timeout")) {
            if (i + 1 >= argc) return mdi_fail(err, MDI_EARG, "%s: missing value", a);
            char *end;
            double v = strtod(argv[++i], &end);
            if (*end || !(v >= 0.5 && v <= 86400))
                return mdi_fail(err, MDI_EARG, "%s: expected seconds in 0.5..86400, got %s", a, argv[i]);
            if (!strcmp(a, "--http-timeout")) o->http_timeout_s = v;
            else o->idle_timeout_s = v;
            continue;
        }
        int takes = !strcmp(a, "--nodes-config") || !strcmp(a, "--chunk") || !strcmp(a, "--cache-dir") ||
                    !strcmp(a, "--n-threads") || !strcmp(a, "--secret") || !strcmp(a, "--spare");
        if (takes) {
            if (i + 1 >= argc) return mdi_fail(err, MDI_EARG, "%s: missing value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--nodes-config")) o->nodes_config = v;
            else if (!strcmp(a, "--chunk")) o->chunk = v;
            else if (!strcmp(a, "--cache-dir")) o->cache_dir = v;
            else if (!strcmp(a, "--secret")) o->secret = v;
            else if (!strcmp(a, "--spare")) {
                char *end;
                long n = strtol(v, &end, 10);
                if (*end || n < 0 || n >= NODES_MAX_SPARE)
                    return mdi_fail(err, MDI_EARG, "--spare: expected 0..%d, got %s", NODES_MAX_SPARE - 1, v);
                o->spare = (int)n;
            } else {
                char *end;
                long n = strtol(v, &end, 10);
                if (*end || n < 1 || n > 512) return mdi_fail(err, MDI_EARG, "--n-threads: expected 1..512, got %s", v);
                o->n_threads = (int)n;
            }
        } else if (a[0] == '-' && a[1]) {
            return mdi_fail(err, MDI_EARG, "unknown option %s (see --help)", a);
        } else if (n_pos < 2) {
            positional[n_pos++] = a;
        } else {
            return mdi_fail(err, MDI_EARG, "unexpected argument %s", a);
        }
    }
    const char *index_s = NULL;
    if (o->nodes_config) index_s = positional[0];
    else {
        o->nodes_config = positional[0];
        index_s = positional[1];
    }
    if (o->spare >= 0 && o->nodes_config && !index_s) index_s = "0"; /* a spare's place comes with /init */
    if (!o->nodes_config || !index_s)
        return mdi_fail(err, MDI_EARG, "expected the nodes configuration and this node's index (see --help)");
    char *end;
    long idx = strtol(index_s, &end, 10);
    if (*end || idx < 0 || idx >= NODES_MAX_SECONDARY)
        return mdi_fail(err, MDI_EARG, "INDEX: expected 0..%d, got %s", NODES_MAX_SECONDARY - 1, index_s);
    o->index = (int)idx;
    return 0;
}

/* The run's figures; with lw (may be NULL) also the live ones: the
 * counters are sampled into lw and its rates given as "live" (live.h). */
static json_t *run_stats_json(ring *r, const model *m, double load_s, live_window *lw)
{
    ring_stats rs;
    ring_get_stats(r, &rs);
    json_t *o = json_pack("{s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:f}",
                     "compute_s", rs.compute_s, "wait_s", rs.wait_s,
                     "bytes_sent", (json_int_t)rs.bytes_sent, "bytes_received", (json_int_t)rs.bytes_received,
                     "frames_sent", (json_int_t)rs.frames_sent, "frames_received", (json_int_t)rs.frames_received,
                     "tokens", (json_int_t)rs.tokens, "weight_bytes", (json_int_t)m->weight_bytes,
                     "dtype", m->dtypes, "memory_bytes", (json_int_t)ring_memory_bytes(r, 1),
                     "kv_bytes", (json_int_t)ring_kv_bytes(r, 1), "load_s", load_s);
    json_object_set_new(o, "decode_batches", json_integer((json_int_t)rs.batches));
    json_object_set_new(o, "batched_tokens", json_integer((json_int_t)rs.batched_tokens));
    if (lw) {
        live_window_push(lw, time_now(), (double)rs.tokens, rs.compute_s);
        json_object_set_new(o, "live", live_window_json(lw));
    }
    return o;
}

/* Connections greeted as the previous node between runs, kept for the next
 * run: the starter connects before it sends the last /start, so the first
 * node's previous node is greeted before its run begins. Several may be
 * kept (someone may pose as that node without a secret): the run takes
 * the first that sends a frame (ring.h). */
typedef struct {
    int fd[RING_EARLY_MAX];
    double t[RING_EARLY_MAX];      /* when greeted */
    char peer[RING_EARLY_MAX][NET_ADDR_LEN];
    seal_channel ch[RING_EARLY_MAX]; /* each one's handshake (plain without a secret) */
    int n;
} early_conns;

/* One run: load the chunk, join the ring, serve until STOP, a failure or
 * PUT /stop, and return to idle. */
/* The weights of the last run, kept loaded while the node idles: a run of
 * the same chunk file (path, inode, size and modification time), slice,
 * model configuration and locking starts without reading them again (the
 * nodes that stay in the ring after a failover, the next run of a starter
 * that comes back). A run of another chunk frees them first, so a node
 * never holds two. */
typedef struct {
    int loaded;
    model m;
    char path[PATH_MAX];
    struct stat st;
    model_slice slice;
    model_config cfg;
    int locked;
} kept_weights;

static void kept_free(kept_weights *k)
{
    if (k->loaded) model_free(&k->m);
    memset(k, 0, sizeof(*k));
}

/* k holds the weights a run of chunk_path, slice and cfg needs: kept, or
 * loaded now (*load_s: the seconds it took, 0 when kept). */
static int kept_load(kept_weights *k, const char *chunk_path, const model_config *cfg, const model_slice *slice,
                     int lock, double *load_s, char *err)
{
    struct stat st;
    *load_s = 0;
    if (stat(chunk_path, &st) != 0) return mdi_fail(err, MDI_EIO, "%s: %s", chunk_path, strerror(errno));
    if (k->loaded && !strcmp(k->path, chunk_path) && st.st_dev == k->st.st_dev && st.st_ino == k->st.st_ino &&
        st.st_size == k->st.st_size && st.st_mtim.tv_sec == k->st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == k->st.st_mtim.tv_nsec && !memcmp(slice, &k->slice, sizeof(*slice)) &&
        !memcmp(cfg, &k->cfg, sizeof(*cfg)) && lock == k->locked)
        return 0;
    kept_free(k);
    double t0 = time_now();
    int rc = model_load(&k->m, chunk_path, cfg, slice, err);
    if (rc) return rc;
    *load_s = time_now() - t0;
    k->loaded = 1;
    snprintf(k->path, sizeof(k->path), "%s", chunk_path);
    k->st = st;
    k->slice = *slice;
    k->cfg = *cfg;
    k->locked = lock;
    char why[MDI_ERR_LEN];
    if (lock && model_lock(&k->m, why) == 0)
        log_warn("%s", why);
    return 0;
}

static void serve_run(control_server *srv, const nodes_config *nc, const secondary_opts *o, lobby *lb,
                      const early_conns *early, const run_config *cfg, const char *chunk_path, kept_weights *kw)
{
    int index = o->index;
    char err[MDI_ERR_LEN];
    /* This node's own flags win over the starter's. */
    int use_mmap = o->mmap_weights >= 0 ? o->mmap_weights : cfg->weights_mmap;
    int use_mlock = o->mlock >= 0 ? o->mlock : cfg->weights_mlock;
    model_slice slice = {cfg->layer_begin, cfg->layer_end, 0, 0, o->dtype != DTYPE_COUNT ? o->dtype : cfg->dtype,
                         use_mmap ? TSRC_MAP : TSRC_READ};
    double load_s = 0;
    if (kept_load(kw, chunk_path, &cfg->cfg, &slice, use_mlock, &load_s, err) != 0) {
        for (int i = 0; i < early->n; i++) net_close(early->fd[i]);
        log_error("loading %s: %s", chunk_path, err);
        char msg[MDI_ERR_LEN + 64];
        snprintf(msg, sizeof(msg), "loading the chunk: %s", err);
        control_set_state(srv, CONTROL_IDLE, msg);
        return;
    }
    model *mp = &kw->m;

    ring_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.node_index = index + 1;
    ro.epoch = cfg->epoch;
    snprintf(ro.name, sizeof(ro.name), "secondary %d", index);
    ro.listen_fd = lb->listen_fd;
    ro.lobby = lb;
    for (int i = 0; i < early->n; i++) ro.accepted_fd[i] = early->fd[i];
    for (int i = 0; i < early->n; i++) ro.accepted_seal[i] = early->ch[i];
    ro.next_index = cfg->is_last ? 0 : index + 2;
    ro.prev_index = index;
    snprintf(ro.next_host, sizeof(ro.next_host), "%s", cfg->next_addr);
    ro.next_port = cfg->next_port;
    if (nc->per_node) {
        /* Its own file names no other node: the starter's /init does. */
        snprintf(ro.prev_name, sizeof(ro.prev_name), "node %d (%s:%d)", index, cfg->prev_addr, cfg->prev_port);
        snprintf(ro.next_name, sizeof(ro.next_name), "node %d (%s:%d)", cfg->is_last ? 0 : index + 2,
                 cfg->next_addr, cfg->next_port);
    } else {
        nodes_config_describe(nc, index - 1, ro.prev_name, sizeof(ro.prev_name));
        nodes_config_describe(nc, cfg->is_last ? -1 : index + 1, ro.next_name, sizeof(ro.next_name));
    }
    ro.secret = nc->secret;
    ro.limits.dim = cfg->cfg.dim;
    ro.limits.max_batch = cfg->max_batch;
    ro.limits.n_samples = (uint32_t)cfg->n_samples;
    ro.timeout_s = cfg->timeout_s;
    ro.idle_timeout_s = o->idle_timeout_s > 0 ? o->idle_timeout_s : SECONDARY_IDLE_S;
    ro.m = mp;
    ro.max_seq = cfg->max_seq;
    ro.wire_dtype = cfg->wire_dtype;
    ro.kv_dtype = cfg->kv_dtype;
    ro.is_last = cfg->is_last;
    ring r;
    if (ring_start(&r, &ro, err) != 0) {
        log_error("%s", err);
        control_set_state(srv, CONTROL_IDLE, err);
        return;
    }
    control_set_state(srv, CONTROL_RUNNING, NULL);
    char loaded[48];
    if (load_s > 0) snprintf(loaded, sizeof(loaded), "loaded in %.2f s", load_s);
    else snprintf(loaded, sizeof(loaded), "kept from the last run");
    log_info("running layers [%d, %d) of %s, %s, %d samples, wire %s, KV cache %s, weights %s%s (%s)",
             cfg->layer_begin, cfg->layer_end, cfg->model_name, mp->dtypes, cfg->n_samples, dtype_name(cfg->wire_dtype),
             dtype_name(cfg->kv_dtype), use_mmap ? "mapped" : "in anonymous memory", use_mlock ? ", locked" : "",
             loaded);
    run_config unused;
    char unused_path[PATH_MAX];
    const char *why = "stopped";
    live_window lw;
    live_window_init(&lw);
    for (;;) {
        control_cmd cmd = control_wait_command(srv, SECONDARY_TICK_S, &unused, unused_path);
        control_set_stats(srv, run_stats_json(&r, mp, load_s, &lw));
        control_set_memory(srv, ring_memory_bytes(&r, 0) + mp->weight_bytes);
        if (cmd == CONTROL_CMD_STOP) { why = "PUT /stop"; break; }
        if (ring_finished(&r)) { why = "the ring ended"; break; }
        if (ring_error(&r, NULL)) { why = "a ring failure"; break; }
        if (quit_requested) { why = "a signal"; break; }
    }
    int failed = ring_error(&r, err);
    ring_stop(&r);
    control_set_stats(srv, run_stats_json(&r, mp, load_s, NULL));
    control_set_state(srv, CONTROL_IDLE, failed ? err : NULL);
    log_info("run over (%s)%s%s; idle", why, failed ? ": " : "", failed ? err : "");
    if (o->verbose) {
        ring_stats rs;
        ring_get_stats(&r, &rs);
        log_info("run figures: layers [%d, %d), %llu tokens, compute %.3f s, waiting %.3f s, sent %llu bytes, "
                 "received %llu bytes", cfg->layer_begin, cfg->layer_end, (unsigned long long)rs.tokens,
                 rs.compute_s, rs.wait_s, (unsigned long long)rs.bytes_sent, (unsigned long long)rs.bytes_received);
    }
}

/* A kept connection whose peer has gone since (closed or reset) is no use.
 * Frames already waiting on it are fine: the previous node may have begun. */
static int early_alive(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) == 0 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void early_drop(early_conns *e, int i)
{
    net_close(e->fd[i]);
    for (int j = i; j + 1 < e->n; j++) {
        e->fd[j] = e->fd[j + 1];
        e->t[j] = e->t[j + 1];
        memcpy(e->peer[j], e->peer[j + 1], NET_ADDR_LEN);
        e->ch[j] = e->ch[j + 1];
    }
    e->n--;
    seal_channel_clear(&e->ch[e->n]);
}

static void early_conns_clear(early_conns *e)
{
    while (e->n) early_drop(e, 0);
}

/* Takes, between runs, the connections the lobby has greeted as the
 * previous node (it never blocks, and refuses anything else with a log
 * line): they are kept, each with its channel (the oldest dropped when
 * full). */
static void accept_early(lobby *lb, int index, early_conns *e)
{
    char peer[NET_ADDR_LEN];
    seal_channel ch;
    int fd;
    while ((fd = lobby_wait(lb, 0, NULL, peer, &ch, NULL)) >= 0) {
        if (e->n == RING_EARLY_MAX) {
            log_warn("ring port: %d connections greeted as node %d wait for a run; dropped the oldest, from %s",
                     e->n, index, e->peer[0]);
            early_drop(e, 0);
        }
        e->fd[e->n] = fd;
        e->t[e->n] = time_now();
        snprintf(e->peer[e->n], NET_ADDR_LEN, "%s", peer);
        e->ch[e->n] = ch;
        e->n++;
    }
    seal_channel_clear(&ch);
}

/* At /start: the kept connections whose peer has gone, that were made for
 * another run epoch than this run's (from before a reconfiguration: a
 * node of the ring a failover replaced), or that are older than any the
 * run's previous node can have made (a run that never started, or someone
 * posing as that node), are dropped. */
static void early_prune(early_conns *e, uint32_t epoch)
{
    for (int i = 0; i < e->n;) {
        int alive = early_alive(e->fd[i]);
        double age = time_now() - e->t[i];
        char why[160];
        int stale = proto_epoch_refused(epoch, e->ch[i].epoch, why, sizeof(why));
        if (alive && !stale && age <= SECONDARY_EARLY_S) {
            i++;
            continue;
        }
        if (alive && stale)
            log_warn("ring port: dropped the connection from %s kept for the next run: %s", e->peer[i], why);
        else if (alive)
            log_warn("ring port: dropped the connection from %s kept for %.0f s: too old for this run",
                     e->peer[i], age);
        early_drop(e, i);
    }
}

int main(int argc, char **argv)
{
    kernels_fix_openblas_coretype(argv);
    char err[MDI_ERR_LEN];
    secondary_opts o;
    int rc = parse_args(&o, argc, argv, err);
    if (rc == 1) return 0;
    char tag[32];
    if (o.spare >= 0) snprintf(tag, sizeof(tag), "spare%d", o.spare);
    else snprintf(tag, sizeof(tag), "secondary%d", o.index < 0 ? 0 : o.index);
    log_set_tag(tag);
    if (rc) {
        log_error("%s", err);
        return 2;
    }
    nodes_config nc;
    if (nodes_config_load_secondary(&nc, o.nodes_config, o.index, err) != 0) {
        log_error("%s", err);
        return 2;
    }
    nodes_config_warn_unused(&nc, o.nodes_config);
    if (o.spare >= 0 && (nc.per_node || o.spare >= nc.n_spare)) {
        log_error("%s lists %d spare nodes; there is no spare %d", o.nodes_config, nc.per_node ? 0 : nc.n_spare,
                  o.spare);
        return 2;
    }
    if (o.spare < 0 && o.index >= nc.n_secondary) {
        log_error("%s lists %d secondary nodes; there is no secondary %d", o.nodes_config, nc.n_secondary, o.index);
        return 2;
    }
    if (o.secret) snprintf(nc.secret, sizeof(nc.secret), "%s", o.secret);
    auth_keys keys;
    if (auth_keys_derive(&keys, nc.secret, err) != 0) {
        log_error("%s", err);
        return 1;
    }
    if (!keys.on) auth_warn_open();
    const node_entry *self = o.spare >= 0 ? &nc.spare[o.spare] : &nc.secondary[o.index];
    char name[160];
    if (o.spare >= 0) snprintf(name, sizeof(name), "spare %d (%s:%d)", o.spare, self->addr, self->http_port);
    else nodes_config_describe(&nc, o.index, name, sizeof(name));
    int n_threads = o.n_threads ? o.n_threads : self->n_threads;
    if (!n_threads) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = ncpu > 0 ? (int)ncpu : 1;
    }
    char cache_default[64];
    if (o.spare >= 0) snprintf(cache_default, sizeof(cache_default), "cache/spare%d", o.spare);
    else snprintf(cache_default, sizeof(cache_default), "cache/secondary%d", o.index);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (kernels_init(n_threads) != 0) {
        log_error("cannot start %d threads", n_threads);
        return 1;
    }
    int status = 1;
    control_server *srv = NULL;
    int ring_fd = net_listen(self->port_in, 64, err);
    if (ring_fd < 0) {
        log_error("%s: inference.port_in: %s", name, err);
        goto done;
    }
    control_server_opts co = {self->http_port, o.spare >= 0 ? -1 : o.index, nc.secret,
                              o.cache_dir ? o.cache_dir : cache_default, o.chunk, nc.starter.addr,
                              o.http_timeout_s};
    if (!(srv = control_server_start(&co, err))) {
        log_error("%s: %s", name, err);
        goto done;
    }
    log_info("%s ready: HTTP port %d, ring port %d, %d threads%s", name, self->http_port, self->port_in,
             n_threads, nc.secret[0] ? ", secret required" : "");
    /* once per CPU, cached (caps.h); a dtype per idle turn of the loop */
    caps_measurer *measuring = caps_measure_begin(co.cache_dir, err);
    if (!measuring) log_warn("%s: capabilities not measured: %s", name, err);
    early_conns early = {.n = 0};
    kept_weights kept;
    memset(&kept, 0, sizeof(kept));
    lobby lb;
    char lobby_name[32];
    snprintf(lobby_name, sizeof(lobby_name), "secondary %d", o.index);
    /* between runs the next run's epoch is not known: any is greeted, and
     * compared with the run's at /start (early_prune) */
    lobby_init(&lb, ring_fd, SECONDARY_HELLO_S, &keys, (uint32_t)o.index + 1, o.index, PROTO_EPOCH_ANY, lobby_name);
    while (!quit_requested) {
        run_config cfg;
        char chunk_path[PATH_MAX];
        control_cmd cmd = control_wait_command(srv, measuring ? 0 : SECONDARY_TICK_S, &cfg, chunk_path);
        if (cmd == CONTROL_CMD_START && o.spare >= 0 && cfg.node_index != o.index) {
            /* a spare takes the place /init gave it: greets that place's
             * previous node on its ring port from now on */
            early_conns_clear(&early);
            o.index = cfg.node_index;
            lb.self = (uint32_t)o.index + 1;
            lb.expect = o.index;
            log_info("spare %d takes the place of secondary %d", o.spare, o.index);
        }
        accept_early(&lb, o.index, &early);
        if (cmd == CONTROL_CMD_START) {
            log_debug("run: layers [%d, %d) of %s, %d samples, max_seq %d, max_batch %d, previous %s:%d, "
                      "next %s:%d, chunk %s", cfg.layer_begin, cfg.layer_end, cfg.model_name, cfg.n_samples,
                      cfg.max_seq, cfg.max_batch, cfg.prev_addr, cfg.prev_port, cfg.next_addr, cfg.next_port,
                      chunk_path);
            early_prune(&early, cfg.epoch);
            serve_run(srv, &nc, &o, &lb, &early, &cfg, chunk_path, &kept);
            for (int i = 0; i < early.n; i++) seal_channel_clear(&early.ch[i]);
            early.n = 0;   /* the ring took them */
        } else if (measuring && caps_measure_step(measuring)) {
            control_set_capabilities(srv, caps_measure_end(measuring));
            measuring = NULL;
        }
    }
    caps_measure_abort(measuring);
    kept_free(&kept);
    while (early.n) early_drop(&early, 0);
    lobby_clear(&lb);
    log_info("shutting down");
    status = 0;
done:
    control_server_stop(srv);
    if (ring_fd >= 0) net_close(ring_fd);
    kernels_shutdown();
    return status;
}
