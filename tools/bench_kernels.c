/*
 * bench_kernels: how close decode gets to the memory bound, and how fast
 * prefill runs.
 *
 *   bin/bench_kernels [csv_path]      (default plots/bench_kernels.csv)
 *
 * Prints the read bandwidth of main memory (1 and 2 threads), the pool's
 * dispatch latency, matvec throughput for F32, BF16 and F16 weights at the
 * TinyLlama shapes 2048x2048 (attention) and 5632x2048 (MLP) with 1 and 2
 * threads, as GB/s of weights and as a share of the measured bandwidth,
 * and sgemm GFLOP/s for a 512-token prefill. The matvec figures cycle over
 * enough copies of the matrix (1 GiB) that every call reads from DRAM, as a
 * decode step over all layers does; "cached" repeats one matrix.
 *
 * CSV columns: bench,dtype,rows,cols,n,threads,seconds,gb_per_s,
 *              pct_of_bandwidth,gflop_per_s
 */
#include "kernels.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_BYTES ((size_t)1 << 30)

static FILE *csv;

static void csv_row(const char *bench, dtype_t dt, int rows, int cols, int n, int threads, double seconds,
                    double gbps, double pct, double gflops)
{
    if (csv)
        fprintf(csv, "%s,%s,%d,%d,%d,%d,%.9f,%.3f,%.2f,%.2f\n", bench, dtype_name(dt), rows, cols, n, threads,
                seconds, gbps, pct, gflops);
}

static void fill_matrix(void *dst, dtype_t dt, size_t n)
{
    uint32_t s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        float v = ((float)(s >> 8) / (float)(1u << 24) - 0.5f) * 0.1f;
        if (dt == DTYPE_F32)
            ((float *)dst)[i] = v;
        else if (dt == DTYPE_BF16)
            ((uint16_t *)dst)[i] = f32_to_bf16(v);
        else
            ((uint16_t *)dst)[i] = f32_to_f16(v);
    }
}

static void noop_task(void *arg, int ith, int nth)
{
    (void)arg, (void)ith, (void)nth;
}

/* Activations converted to the weights' vec_dot_type (BF16 for BF16). */
static kernels_scratch scratch;

/* Seconds per matvec, best of several passes over n_copies matrices. */
static double time_matvec(const mat_t *mats, int n_copies, const float *x, float *y, int passes)
{
    double best = 1e30;
    for (int p = 0; p < passes; p++) {
        double t0 = time_now();
        for (int c = 0; c < n_copies; c++)
            kernels_matvec(y, &mats[c], x, &scratch);
        double dt = (time_now() - t0) / n_copies;
        if (dt < best)
            best = dt;
    }
    return best;
}

int main(int argc, char **argv)
{
    kernels_fix_openblas_coretype(argv);
    /* --bandwidth-only: print "bandwidth_bytes_per_s_<T>t <bytes/s>" for 1
     * and 2 threads and stop (tools/bench.sh reads it for the decode bound). */
    int bandwidth_only = argc > 1 && !strcmp(argv[1], "--bandwidth-only");
    if (bandwidth_only) {
        for (int nt = 1; nt <= 2; nt++) {
            kernels_init(nt);
            double best = 0;
            for (int r = 0; r < 3; r++) {
                double bw = kernels_measure_bandwidth(STREAM_BYTES);
                best = bw > best ? bw : best;
            }
            printf("bandwidth_bytes_per_s_%dt %.6g\n", nt, best);
            kernels_shutdown();
        }
        return 0;
    }
    const char *csv_path = argc > 1 ? argv[1] : "plots/bench_kernels.csv";
    csv = fopen(csv_path, "w");
    if (!csv)
        fprintf(stderr, "bench_kernels: cannot write %s, printing only\n", csv_path);
    else
        fprintf(csv, "bench,dtype,rows,cols,n,threads,seconds,gb_per_s,pct_of_bandwidth,gflop_per_s\n");

    printf("simd %s, blas core %s\n", kernels_simd_name(), kernels_blas_core());

    double bandwidth[3] = { 0 };
    for (int nt = 1; nt <= 2; nt++) {
        kernels_init(nt);
        /* Best of three: the figure is an upper bound, and a machine shared
         * with other work only ever makes a run slower. */
        for (int r = 0; r < 3; r++) {
            double bw = kernels_measure_bandwidth(STREAM_BYTES);
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

    static const int shapes[][2] = { { 2048, 2048 }, { 5632, 2048 } };
    static const dtype_t dtypes[] = { DTYPE_F32, DTYPE_BF16, DTYPE_F16 };
    scratch.bytes = kernels_scratch_bytes(1, 1, 5632);
    scratch.data = malloc(scratch.bytes);
    for (int d = 0; d < 3; d++)
        for (int s = 0; s < 2; s++) {
            dtype_t dt = dtypes[d];
            int rows = shapes[s][0], cols = shapes[s][1];
            size_t mat_bytes = dtype_matrix_size(dt, rows, cols);
            int n_copies = (int)(STREAM_BYTES / mat_bytes);
            if (n_copies < 2)
                n_copies = 2;
            char *block = malloc(mat_bytes * (size_t)n_copies);
            mat_t *mats = malloc(sizeof(mat_t) * (size_t)n_copies);
            float *x = malloc((size_t)cols * sizeof(float));
            float *y = malloc((size_t)rows * sizeof(float));
            if (!block || !mats || !x || !y) {
                fprintf(stderr, "bench_kernels: out of memory\n");
                return 1;
            }
            fill_matrix(block, dt, (size_t)rows * cols);
            for (int c = 0; c < n_copies; c++) {
                if (c > 0)
                    memcpy(block + (size_t)c * mat_bytes, block, mat_bytes);
                mats[c] = (mat_t){ dt, rows, cols, block + (size_t)c * mat_bytes };
            }
            for (int i = 0; i < cols; i++)
                x[i] = sinf((float)i);
            for (int nt = 1; nt <= 2; nt++) {
                kernels_init(nt);
                time_matvec(mats, n_copies, x, y, 1); /* warm-up */
                double t = time_matvec(mats, n_copies, x, y, 10);
                double gbps = (double)mat_bytes / t / 1e9;
                /* nt threads can read at least as fast as fewer threads:
                 * the bound is the best figure measured with up to nt. */
                double bound = bandwidth[1] > bandwidth[nt] ? bandwidth[1] : bandwidth[nt];
                double pct = 100.0 * gbps * 1e9 / bound;
                double tc = time_matvec(mats, 1, x, y, 200);
                double gbps_c = (double)mat_bytes / tc / 1e9;
                printf("matvec %-4s %4dx%d threads %d: %7.1f us %6.2f GB/s = %5.1f%% of bandwidth"
                       " (cached: %6.2f GB/s)\n",
                       dtype_name(dt), rows, cols, nt, t * 1e6, gbps, pct, gbps_c);
                csv_row("matvec", dt, rows, cols, 1, nt, t, gbps, pct, 2.0 * rows * cols / t / 1e9);
                csv_row("matvec_cached", dt, rows, cols, 1, nt, tc, gbps_c, 100.0 * gbps_c * 1e9 / bound,
                        2.0 * rows * cols / tc / 1e9);
            }
            free(block);
            free(mats);
            free(x);
            free(y);
        }

    /* Prefill: Y (512, 2048) = X (512, 2048) @ W^T */
    {
        int n = 512, rows = 2048, cols = 2048;
        float *x = malloc(sizeof(float) * (size_t)n * cols);
        float *y = malloc(sizeof(float) * (size_t)n * rows);
        void *w = malloc(sizeof(float) * (size_t)rows * cols);
        fill_matrix(x, DTYPE_F32, (size_t)n * cols);
        for (int d = 0; d < 3; d++) {
            dtype_t dt = dtypes[d];
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

    kernels_shutdown();
    free(scratch.data);
    if (csv) {
        fclose(csv);
        printf("wrote %s\n", csv_path);
    }
    return 0;
}
