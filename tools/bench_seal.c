/*
 * bench_seal: the cost of sealing one ring frame, apart from any model: a
 * DATA frame of n_tokens rows of dim f32 values written and read back over
 * a socketpair, plain and sealed (ChaCha20-Poly1305), on one thread. CPU
 * time of the thread (so that other load on the machine counts little).
 *
 *   bin/bench_seal [ITERATIONS]
 *
 * Prints one CSV line per case on stdout:
 *   dim,n_tokens,payload_bytes,plain_us,sealed_us,extra_us,extra_ns_per_byte
 * (microseconds per frame, write and read together, one hop).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "seal.h"
#include "util.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Microseconds per frame written and read back through ch (plain when off). */
static double bench_case(int dim, int n_tokens, int on, int iters)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return -1;
    int buf = 8 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    size_t payload = (size_t)n_tokens * dim * sizeof(float);
    proto_frame *f = proto_frame_new(payload), *g = proto_frame_new(payload);
    proto_limits lim = {.dim = dim, .max_batch = n_tokens, .n_samples = 1};
    seal_channel tx = {0}, rx = {0};
    if (on) {
        tx.on = 1;
        for (int i = 0; i < 32; i++) tx.key[i] = (uint8_t)(i * 13 + 5);
        rx = tx;
    }
    char err[MDI_ERR_LEN];
    double best = 1e30;
    for (int round = 0; round < 3; round++) {
        double t0 = cpu_now();
        for (int it = 0; it < iters; it++) {
            f->h = proto_header_make(PROTO_DATA);
            f->h.n_tokens = (uint32_t)n_tokens;
            f->h.dtype = DTYPE_F32;
            f->h.payload_len = payload;
            if (seal_write_frame(&tx, sv[0], f, 5, NULL, err) != 0 ||
                seal_read_frame(&rx, sv[1], g, &lim, 5, 5, NULL, err) != 0) {
                fprintf(stderr, "bench_seal: %s\n", err);
                best = -1;
                goto done;
            }
        }
        double t = (cpu_now() - t0) / iters * 1e6;
        if (t < best) best = t;
    }
done:
    proto_frame_free(f);
    proto_frame_free(g);
    close(sv[0]);
    close(sv[1]);
    return best;
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 2000;
    if (iters < 1) iters = 1;
    auth_keys k;
    auth_keys_derive(&k, "", NULL);   /* initialises libsodium, as every node does */
    static const int cases[][2] = {{64, 1}, {64, 16}, {2048, 1}, {2048, 16}, {2048, 128}};
    printf("dim,n_tokens,payload_bytes,plain_us,sealed_us,extra_us,extra_ns_per_byte\n");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int dim = cases[i][0], n = cases[i][1];
        int it = n >= 128 ? iters / 16 + 1 : iters;
        double plain = bench_case(dim, n, 0, it), sealed = bench_case(dim, n, 1, it);
        size_t bytes = (size_t)n * dim * sizeof(float);
        printf("%d,%d,%zu,%.2f,%.2f,%.2f,%.3f\n", dim, n, bytes, plain, sealed, sealed - plain,
               (sealed - plain) * 1e3 / (double)bytes);
    }
    return 0;
}
