/*
 * bench_kernels: how close decode gets to the memory bound, and how fast
 * prefill runs.
 *
 *   bin/bench_kernels [csv_path]      (default plots/bench_kernels.csv)
 *   bin/bench_kernels --bandwidth-only
 *
 * Prints the read bandwidth of main memory (1 and 2 threads), the pool's
 * dispatch latency, and matvec throughput for every weight type (f32, bf16,
 * f16, q8_0, q4_0, q4_k, q5_k, q6_k) at the TinyLlama shapes 2048x2048 (attention) and
 * 5632x2048 (MLP) with 1 and 2 threads, as GB/s of weights read and as a
 * share of the bandwidth measured in the same run. The matvec figures cycle
 * over enough copies of the matrix (1 GiB) that every call reads from DRAM,
 * as a decode step over all layers does; "cached" repeats one matrix.
 * Batched matvec (n_x = 1, 2, 4, 8 activation rows per weight read) gives
 * GB/s of weights and activation rows per second.
 *
 * Every SIMD path the CPU has is measured: the program runs itself again
 * with MDI_SIMD capped (avx512 when the CPU has AMX, with the batched rows
 * too; avx512bw when the CPU has VNNI, avx2 on AVX-512
 * CPUs, neon on ARM CPUs with the dot-product extension, and scalar) for the
 * single-row matvec rows, against the bandwidth measured by the first run.
 *
 * Prefill: sgemm GFLOP/s for a 512-token prefill (f32, bf16 weights), and
 * for the block types at 128 tokens on the TinyLlama shapes 2048x2048,
 * 5632x2048 and 2048x5632 (and 16, 64, 256 tokens on 5632x2048) both
 * ways: "matmul_dequant_sgemm" (F32 panels and OpenBLAS) and "matmul_int8"
 * (X quantized to Q8_0, integer row tiles, or the GEMM kernel where the
 * level has one: AVX-512 VNNI).
 *
 * MDI_BENCH_QUICK=1 runs every part on little data, to check the program.
 * MDI_BENCH_DTYPES=q4_k,q6_k,q4_0 measures only those weight types.
 *
 * CSV columns: bench,dtype,rows,cols,n,threads,seconds,gb_per_s,
 *              pct_of_bandwidth,gflop_per_s,path
 * (n: activation rows or tokens; path: the SIMD level and features, e.g.
 * "avx512 vnni bf16 fp16").
 */
#include "kernels.h"
#include "kernels_impl.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_NX 8

/* Bytes of matrix copies a matvec figure cycles over: 1 GiB, or 64 MiB with
 * MDI_BENCH_QUICK set (a check that the program runs, not a measurement). */
static size_t stream_bytes = (size_t)1 << 30;
static int quick;

static FILE *csv;

/* The weight types to measure: all, or those listed in MDI_BENCH_DTYPES. */
static int bench_wants(dtype_t dt)
{
    const char *list = getenv("MDI_BENCH_DTYPES");
    if (!list || !*list)
        return 1;
    const char *name = dtype_name(dt);
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncasecmp(p, name, n) == 0)
            return 1;
        p += n + (end ? 1 : 0);
    }
    return 0;
}
static char path_name[96];

static void csv_row(const char *bench, dtype_t dt, int rows, int cols, int n, int threads, double seconds,
                    double gbps, double pct, double gflops)
{
    if (csv)
        fprintf(csv, "%s,%s,%d,%d,%d,%d,%.9f,%.3f,%.2f,%.2f,%s\n", bench, dtype_name(dt), rows, cols, n, threads,
                seconds, gbps, pct, gflops, path_name);
}

/* n values of dt, from a fixed pseudo-random sequence in [-0.05, 0.05). */
static void fill_matrix(void *dst, dtype_t dt, size_t n)
{
    uint32_t s = 12345;
    float buf[256];
    size_t done = 0;
    while (done < n) {
        size_t k = n - done < 256 ? n - done : 256;
        for (size_t i = 0; i < k; i++) {
            s = s * 1664525u + 1013904223u;
            buf[i] = ((float)(s >> 8) / (float)(1u << 24) - 0.5f) * 0.1f;
        }
        dtype_convert((char *)dst + dtype_row_size(dt, (int64_t)done), dt, buf, DTYPE_F32, k);
        done += k;
    }
}

static void noop_task(void *arg, int ith, int nth)
{
    (void)arg, (void)ith, (void)nth;
}

/* Seconds per matvec of n_x rows, best of several passes over n_copies
 * matrices. */
static double time_matvec(const mat_t *mats, int n_copies, const float *x, int n_x, float *y, kernels_scratch *sc,
                          int passes)
{
    double best = 1e30;
    for (int p = 0; p < passes; p++) {
        double t0 = time_now();
        for (int c = 0; c < n_copies; c++) {
            matvec_job job = { y, &mats[c], x, NULL };
            kernels_matvec_batch(&job, 1, n_x, sc);
        }
        double dt = (time_now() - t0) / n_copies;
        if (dt < best)
            best = dt;
    }
    return best;
}

/* Decode matvecs of every type and shape. sub: a re-run for another SIMD
 * path: single rows only, fewer passes. */
static int bench_matvec(const double *bandwidth, int sub)
{
    static const int shapes[][2] = { { 2048, 2048 }, { 5632, 2048 } };
    static const dtype_t dtypes[] = { DTYPE_F32,  DTYPE_BF16, DTYPE_F16,  DTYPE_Q8_0,
                                      DTYPE_Q4_0, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K };
    static const int nxs[] = { 2, 4, 8 };
    int passes = quick ? 1 : sub ? 3 : 10;
    for (size_t d = 0; d < sizeof(dtypes) / sizeof(dtypes[0]); d++)
        for (int s = 0; s < 2; s++) {
            dtype_t dt = dtypes[d];
            if (!bench_wants(dt))
                continue;
            int rows = shapes[s][0], cols = shapes[s][1];
            size_t mat_bytes = dtype_matrix_size(dt, rows, cols);
            int n_copies = (int)(stream_bytes / mat_bytes);
            if (n_copies < 2)
                n_copies = 2;
            char *block = malloc(mat_bytes * (size_t)n_copies);
            mat_t *mats = malloc(sizeof(mat_t) * (size_t)n_copies);
            float *x = malloc((size_t)MAX_NX * cols * sizeof(float));
            float *y = malloc((size_t)MAX_NX * rows * sizeof(float));
            kernels_scratch sc = { NULL, kernels_scratch_bytes(1, MAX_NX, cols) };
            sc.data = malloc(sc.bytes);
            if (!block || !mats || !x || !y || !sc.data) {
                fprintf(stderr, "bench_kernels: out of memory\n");
                return 1;
            }
            fill_matrix(block, dt, (size_t)rows * cols);
            for (int c = 0; c < n_copies; c++) {
                if (c > 0)
                    memcpy(block + (size_t)c * mat_bytes, block, mat_bytes);
                mats[c] = (mat_t){ dt, rows, cols, block + (size_t)c * mat_bytes };
            }
            for (int i = 0; i < MAX_NX * cols; i++)
                x[i] = sinf((float)i);
            for (int nt = 1; nt <= 2; nt++) {
                kernels_init(nt);
                time_matvec(mats, n_copies, x, 1, y, &sc, 1); /* warm-up */
                double t = time_matvec(mats, n_copies, x, 1, y, &sc, passes);
                double gbps = (double)mat_bytes / t / 1e9;
                /* nt threads can read at least as fast as fewer threads:
                 * the bound is the best figure measured with up to nt. */
                double bound = bandwidth[1] > bandwidth[nt] ? bandwidth[1] : bandwidth[nt];
                double pct = 100.0 * gbps * 1e9 / bound;
                double tc = time_matvec(mats, 1, x, 1, y, &sc, quick ? 5 : sub ? 50 : 200);
                double gbps_c = (double)mat_bytes / tc / 1e9;
                printf("[%s] matvec %-4s %4dx%d threads %d: %7.1f us %6.2f GB/s = %5.1f%% of bandwidth"
                       " (cached: %6.2f GB/s)\n",
                       path_name, dtype_name(dt), rows, cols, nt, t * 1e6, gbps, pct, gbps_c);
                csv_row("matvec", dt, rows, cols, 1, nt, t, gbps, pct, 2.0 * rows * cols / t / 1e9);
                csv_row("matvec_cached", dt, rows, cols, 1, nt, tc, gbps_c, 100.0 * gbps_c * 1e9 / bound,
                        2.0 * rows * cols / tc / 1e9);
                for (size_t b = 0; !sub && b < sizeof(nxs) / sizeof(nxs[0]); b++) {
                    int nx = nxs[b];
                    time_matvec(mats, n_copies, x, nx, y, &sc, 1);
                    double tb = time_matvec(mats, n_copies, x, nx, y, &sc, passes);
                    double gb = (double)mat_bytes / tb / 1e9;
                    printf("[%s] matvec %-4s %4dx%d threads %d n_x %d: %7.1f us %6.2f GB/s of weights = %5.1f%%,"
                           " %.0f rows/s (n_x 1: %.0f)\n",
                           path_name, dtype_name(dt), rows, cols, nt, nx, tb * 1e6, gb, 100.0 * gb * 1e9 / bound,
                           nx / tb, 1.0 / t);
                    csv_row("matvec_batch", dt, rows, cols, nx, nt, tb, gb, 100.0 * gb * 1e9 / bound,
                            2.0 * nx * rows * cols / tb / 1e9);
                }
            }
            free(sc.data);
            free(block);
            free(mats);
            free(x);
            free(y);
        }
    return 0;
}

static void bench_matmul(void)
{
    /* Float prefill: Y (512, 2048) = X (512, 2048) @ W^T */
    {
        static const dtype_t dtypes[] = { DTYPE_F32, DTYPE_BF16, DTYPE_F16 };
        int n = 512, rows = 2048, cols = 2048;
        float *x = malloc(sizeof(float) * (size_t)n * cols);
        float *y = malloc(sizeof(float) * (size_t)n * rows);
        void *w = malloc(sizeof(float) * (size_t)rows * cols);
        fill_matrix(x, DTYPE_F32, (size_t)n * cols);
        for (int d = 0; d < 3; d++) {
            dtype_t dt = dtypes[d];
            if (!bench_wants(dt))
                continue;
            fill_matrix(w, dt, (size_t)rows * cols);
            mat_t m = { dt, rows, cols, w };
            for (int nt = 1; nt <= 2; nt++) {
                kernels_init(nt);
                kernels_matmul(y, &m, x, n, NULL); /* warm-up, grows the scratch */
                double best = 1e30;
                for (int r = 0; r < 5; r++) {
                    double t0 = time_now();
                    kernels_matmul(y, &m, x, n, NULL);
                    double t = time_now() - t0;
                    if (t < best)
                        best = t;
                }
                double gflops = 2.0 * n * rows * cols / best / 1e9;
                printf("matmul %-4s %dx%dx%d threads %d: %8.2f ms %7.1f GFLOP/s\n", dtype_name(dt), n, rows, cols,
                       nt, best * 1e3, gflops);
                csv_row("matmul", dt, rows, cols, n, nt, best, 0, 0, gflops);
            }
        }
        free(x);
        free(y);
        free(w);
    }
    /* Block types at 128 tokens, both paths; and at 16, 64 and 256 tokens
     * for the MLP shape, around where the default path changes
     * (kernels_matmul.c). */
    static const int shapes[][3] = { { 2048, 2048, 128 }, { 5632, 2048, 128 }, { 2048, 5632, 128 },
                                     { 5632, 2048, 16 },  { 5632, 2048, 64 },  { 5632, 2048, 256 } };
    static const dtype_t qtypes[] = { DTYPE_Q8_0, DTYPE_Q4_0, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K };
    for (size_t q = 0; q < sizeof(qtypes) / sizeof(qtypes[0]); q++)
        for (int s = 0; s < 6; s++) {
            dtype_t dt = qtypes[q];
            if (!bench_wants(dt))
                continue;
            int rows = shapes[s][0], cols = shapes[s][1], n = shapes[s][2];
            float *x = malloc(sizeof(float) * (size_t)n * cols);
            float *y = malloc(sizeof(float) * (size_t)n * rows);
            void *w = malloc(dtype_matrix_size(dt, rows, cols));
            fill_matrix(x, DTYPE_F32, (size_t)n * cols);
            fill_matrix(w, dt, (size_t)rows * cols);
            mat_t m = { dt, rows, cols, w };
            for (int nt = 1; nt <= 2; nt++) {
                kernels_init(nt);
                double best[2] = { 1e30, 1e30 };
                for (int p = 0; p < 2; p++) {
                    int path = p ? MATMUL_INT8 : MATMUL_SGEMM;
                    kernels_matmul_with(y, &m, x, n, NULL, path); /* warm-up */
                    for (int r = 0; r < 3; r++) {
                        double t0 = time_now();
                        kernels_matmul_with(y, &m, x, n, NULL, path);
                        double t = time_now() - t0;
                        if (t < best[p])
                            best[p] = t;
                    }
                    double gflops = 2.0 * n * rows * cols / best[p] / 1e9;
                    csv_row(p ? "matmul_int8" : "matmul_dequant_sgemm", dt, rows, cols, n, nt, best[p], 0, 0, gflops);
                }
                printf("matmul %-4s %dx%dx%d threads %d: dequant+sgemm %8.2f ms %6.1f GFLOP/s, int8 tiles %8.2f ms"
                       " %6.1f GFLOP/s\n",
                       dtype_name(dt), n, rows, cols, nt, best[0] * 1e3, 2.0 * n * rows * cols / best[0] / 1e9,
                       best[1] * 1e3, 2.0 * n * rows * cols / best[1] / 1e9);
            }
            free(x);
            free(y);
            free(w);
        }
}

/* Runs this program again with MDI_SIMD=cap for the matvec rows of that
 * path, appending to csv_path, against the bandwidth measured here. */
static void rerun_with(char **argv, const char *cap, const char *csv_path, const double *bandwidth)
{
    char bw[64];
    snprintf(bw, sizeof(bw), "%.6g,%.6g", bandwidth[1], bandwidth[2]);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid == 0) {
        setenv("MDI_SIMD", cap, 1);
        setenv("MDI_BENCH_PATH_RUN", bw, 1);
        char *args[] = { argv[0], (char *)csv_path, NULL };
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
}

int main(int argc, char **argv)
{
    kernels_fix_openblas_coretype(argv);
    if (getenv("MDI_BENCH_QUICK")) {
        quick = 1;
        stream_bytes = (size_t)64 << 20;
    }
    /* --bandwidth-only: print "bandwidth_bytes_per_s_<T>t <bytes/s>" for 1
     * and 2 threads and stop (tools/bench.sh reads it for the decode bound). */
    int bandwidth_only = argc > 1 && !strcmp(argv[1], "--bandwidth-only");
    if (bandwidth_only) {
        for (int nt = 1; nt <= 2; nt++) {
            kernels_init(nt);
            double best = 0;
            for (int r = 0; r < 3; r++) {
                double bw = kernels_measure_bandwidth(stream_bytes);
                best = bw > best ? bw : best;
            }
            printf("bandwidth_bytes_per_s_%dt %.6g\n", nt, best);
            kernels_shutdown();
        }
        return 0;
    }
    snprintf(path_name, sizeof(path_name), "%s", kernels_simd_features());
    const char *csv_path = argc > 1 ? argv[1] : "plots/bench_kernels.csv";
    double bandwidth[3] = { 0 };

    /* A re-run for another SIMD path: matvec rows appended. */
    const char *sub = getenv("MDI_BENCH_PATH_RUN");
    if (sub) {
        if (sscanf(sub, "%lf,%lf", &bandwidth[1], &bandwidth[2]) != 2)
            return 1;
        csv = fopen(csv_path, "a");
        /* AVX-512 without AMX: batches too, AMX's batches beside them */
        int rc = bench_matvec(bandwidth, strcmp(getenv("MDI_SIMD") ? getenv("MDI_SIMD") : "", "avx512") != 0);
        kernels_shutdown();
        if (csv)
            fclose(csv);
        return rc;
    }

    csv = fopen(csv_path, "w");
    if (!csv)
        fprintf(stderr, "bench_kernels: cannot write %s, printing only\n", csv_path);
    else
        fprintf(csv, "bench,dtype,rows,cols,n,threads,seconds,gb_per_s,pct_of_bandwidth,gflop_per_s,path\n");

    printf("simd %s, blas core %s\n", path_name, kernels_blas_core());

    for (int nt = 1; nt <= 2; nt++) {
        kernels_init(nt);
        /* Best of three: the figure is an upper bound, and a machine shared
         * with other work only ever makes a run slower. */
        for (int r = 0; r < 3; r++) {
            double bw = kernels_measure_bandwidth(stream_bytes);
            if (bw > bandwidth[nt])
                bandwidth[nt] = bw;
        }
        int n = 100000;
        double t0 = time_now();
        for (int i = 0; i < n; i++)
            kernels_parallel(noop_task, NULL);
        double lat = (time_now() - t0) / n;
        printf("threads %d: read bandwidth %.2f GB/s, dispatch latency %.2f us\n", nt, bandwidth[nt] / 1e9,
               lat * 1e6);
        csv_row("bandwidth", DTYPE_F32, 0, 0, 0, nt, 0, bandwidth[nt] / 1e9, 100.0, 0);
        csv_row("dispatch", DTYPE_F32, 0, 0, 0, nt, lat, 0, 0, 0);
    }

    if (bench_matvec(bandwidth, 0))
        return 1;
    bench_matmul();
    kernels_shutdown();
    if (csv) {
        fclose(csv);
        csv = NULL;
    }

    /* the other SIMD paths of this CPU */
    if (!getenv("MDI_SIMD") && csv_path) {
        const cpu_features *f = kernels_cpu_features();
        if (f->level == SIMD_AVX512 && f->amx_bf16)
            rerun_with(argv, "avx512", csv_path, bandwidth);
        if (f->level == SIMD_AVX512 && f->avx512vnni)
            rerun_with(argv, "avx512bw", csv_path, bandwidth);
        if (f->level == SIMD_AVX512)
            rerun_with(argv, "avx2", csv_path, bandwidth);
        if (f->level == SIMD_NEON && f->dotprod)
            rerun_with(argv, "neon", csv_path, bandwidth);
        if (f->level != SIMD_SCALAR)
            rerun_with(argv, "scalar", csv_path, bandwidth);
    }
    printf("wrote %s\n", csv_path);
    return 0;
}
