/*
 * kernels_cpu: what the CPU can do (features read at run time, capped by
 * MDI_SIMD for tests and measurements), the OpenBLAS core type that suits
 * it, and the memory read bandwidth.
 *
 * MDI_SIMD caps the kernels to a narrower set than the CPU has, so that
 * every path can be tested and measured on one machine:
 *   scalar     the portable C kernels only
 *   avx2       AVX2 + FMA (+ F16C, AVX-VNNI off)
 *   avx512     AVX-512 with every extension the CPU has, AMX off
 *   avx512bw   AVX-512 F/BW/VL/DQ without VNNI, BF16, FP16 or AMX
 *   neon       NEON without the dot-product, BF16 or FP16 extensions
 */
#include "kernels_impl.h"
#include "util.h"

#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#if defined(KERNELS_X86)
#include <cpuid.h>
#include <sys/syscall.h>
#endif
#if defined(KERNELS_NEON) && defined(__linux__)
#include <sys/auxv.h>
#endif

static cpu_features features;

#if defined(KERNELS_X86)
/* Asks Linux for the AMX tile data state (off until a process asks): 1
 * when granted, 0 elsewhere or when refused. */
static int amx_request(void)
{
#if defined(__linux__) && defined(SYS_arch_prctl)
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}
#endif
static pthread_once_t features_once = PTHREAD_ONCE_INIT;

static void features_detect(void)
{
    cpu_features *f = &features;
    memset(f, 0, sizeof(*f));
#if defined(KERNELS_X86)
    __builtin_cpu_init();
    f->avx2 = __builtin_cpu_supports("avx2");
    f->fma = __builtin_cpu_supports("fma");
    f->avx512f = __builtin_cpu_supports("avx512f");
    f->avx512bw = __builtin_cpu_supports("avx512bw");
    f->avx512vl = __builtin_cpu_supports("avx512vl");
    f->avx512dq = __builtin_cpu_supports("avx512dq");
    f->avx512vnni = __builtin_cpu_supports("avx512vnni");
    unsigned eax, ebx, ecx, edx;
    /* Every AVX2 CPU shipped has F16C, but ask anyway: the f16 kernels of
     * the AVX2 level are left out without it. */
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        f->f16c = (ecx & bit_F16C) != 0;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
        f->avx512fp16 = (edx >> 23) & 1;
        f->amx_bf16 = ((edx >> 22) & 1) && ((edx >> 24) & 1); /* AMX-BF16, AMX-TILE */
    }
    if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) {
        f->avx512bf16 = (eax >> 5) & 1;
        f->avxvnni = (eax >> 4) & 1;
    }
    f->amx_bf16 = f->amx_bf16 && f->avx512bf16 && amx_request();
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq)
        f->level = SIMD_AVX512;
    else if (f->avx2 && f->fma)
        f->level = SIMD_AVX2;
    else
        f->level = SIMD_SCALAR;
#elif defined(KERNELS_NEON)
    f->neon = 1;
    f->level = SIMD_NEON;
#if defined(__linux__)
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
#ifdef HWCAP_ASIMDDP
    f->dotprod = (hw & HWCAP_ASIMDDP) != 0;
#endif
#ifdef HWCAP_ASIMDHP
    f->arm_fp16 = (hw & HWCAP_ASIMDHP) != 0;
#endif
#ifdef HWCAP2_BF16
    f->arm_bf16 = (hw2 & HWCAP2_BF16) != 0;
#endif
    (void)hw;
    (void)hw2;
#endif
#endif
    const char *cap = getenv("MDI_SIMD");
    if (!cap || !*cap)
        return;
    if (strcmp(cap, "scalar") == 0) {
        f->level = SIMD_SCALAR;
    } else if (strcmp(cap, "avx2") == 0 && f->level == SIMD_AVX512) {
        f->level = SIMD_AVX2;
        f->avx512f = f->avx512bw = f->avx512vl = f->avx512dq = 0;
        f->avx512vnni = f->avx512bf16 = f->avx512fp16 = f->avxvnni = 0;
        f->amx_bf16 = 0;
    } else if (strcmp(cap, "avx2") == 0 && f->level == SIMD_AVX2) {
        f->avxvnni = 0;
    } else if (strcmp(cap, "avx512bw") == 0 && f->level == SIMD_AVX512) {
        f->avx512vnni = f->avx512bf16 = f->avx512fp16 = 0;
        f->amx_bf16 = 0;
    } else if (strcmp(cap, "avx512") == 0 && f->level == SIMD_AVX512) {
        f->amx_bf16 = 0;
    } else if (strcmp(cap, "neon") == 0 && f->level == SIMD_NEON) {
        f->dotprod = f->arm_bf16 = f->arm_fp16 = 0;
    }
}

const cpu_features *kernels_cpu_features(void)
{
    pthread_once(&features_once, features_detect);
    return &features;
}

const char *kernels_simd_features(void)
{
    static char buf[96];
    const cpu_features *f = kernels_cpu_features();
    const char *name = kernels_simd_name();
    if (strcmp(name, "scalar") == 0)
        return name;
    snprintf(buf, sizeof(buf), "%s%s%s%s%s%s%s%s", name,
             f->avx512vnni && f->level == SIMD_AVX512 ? " vnni" : "",
             f->avx512bf16 && f->level == SIMD_AVX512 ? " bf16" : "",
             f->avx512fp16 && f->level == SIMD_AVX512 ? " fp16" : "",
             f->amx_bf16 && f->level == SIMD_AVX512 ? " amx" : "",
             f->avxvnni && f->level == SIMD_AVX2 ? " avxvnni" : "",
             f->dotprod ? " dotprod" : "", f->arm_bf16 ? " bf16" : "");
    return buf;
}

/* ---- OpenBLAS core type ---- */

#if defined(KERNELS_X86)
/* Rough ISA level of an OpenBLAS core name: 3 AVX-512, 2 AVX2, 1 AVX,
 * 0 anything older or unknown. */
static int blas_core_rank(const char *name)
{
    static const char *const avx512[] = { "SkylakeX", "Cooperlake", "SapphireRapids" };
    static const char *const avx2[] = { "Haswell", "Zen", "Excavator", "Steamroller" };
    static const char *const avx[] = { "Sandybridge", "Bulldozer", "Piledriver" };
    if (!name)
        return 0;
    for (size_t i = 0; i < sizeof(avx512) / sizeof(avx512[0]); i++)
        if (strcasecmp(name, avx512[i]) == 0)
            return 3;
    for (size_t i = 0; i < sizeof(avx2) / sizeof(avx2[0]); i++)
        if (strcasecmp(name, avx2[i]) == 0)
            return 2;
    for (size_t i = 0; i < sizeof(avx) / sizeof(avx[0]); i++)
        if (strcasecmp(name, avx[i]) == 0)
            return 1;
    return 0;
}
#endif

/* Only x86 builds pick among OpenBLAS cores of different ISA levels here;
 * elsewhere the library's own choice stands and this does nothing. */
void kernels_fix_openblas_coretype(char **argv)
{
#if defined(KERNELS_X86)
    if (!argv || !argv[0] || getenv("OPENBLAS_CORETYPE") || getenv("MDI_BLAS_REEXEC"))
        return;
    const cpu_features *f = kernels_cpu_features();
    const char *want;
    int want_rank;
    if (f->level == SIMD_AVX512) {
        want = "SkylakeX";
        want_rank = 3;
    } else if (f->avx2 && f->fma) {
        want = "Haswell";
        want_rank = 2;
    } else if (__builtin_cpu_supports("avx")) {
        want = "Sandybridge";
        want_rank = 1;
    } else {
        return;
    }
    /* The library already chose kernels at least as good: nothing to do. */
    const char *have = openblas_get_corename();
    if (blas_core_rank(have) >= want_rank)
        return;
    log_debug("OpenBLAS chose core %s on a CPU that runs %s kernels; re-executing with "
             "OPENBLAS_CORETYPE=%s", have ? have : "?", want, want);
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("MDI_BLAS_REEXEC", "1", 1);
    fflush(stdout);
    fflush(stderr);
    execv("/proc/self/exe", argv);
    log_warn("cannot re-execute /proc/self/exe: %s; sgemm stays on core %s", strerror(errno),
             have ? have : "?");
#else
    (void)argv;
#endif
}

const char *kernels_blas_core(void)
{
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- memory bandwidth ---- */

typedef struct {
    const char *buf;
    size_t bytes;
    int fill;
    double sums[64 * 8]; /* one cache line apart per thread */
} bandwidth_task;

static void bandwidth_task_run(void *p, int ith, int nth)
{
    bandwidth_task *t = p;
    /* Whole 4 KiB pages per thread, so that first touch spreads pages the
     * way the reads will use them. */
    size_t pages = t->bytes / 4096;
    size_t lo = pages * (size_t)ith / (size_t)nth * 4096, hi = pages * (size_t)(ith + 1) / (size_t)nth * 4096;
    if (t->fill) {
        memset((char *)t->buf + lo, ith + 1, hi - lo);
        return;
    }
    t->sums[(ith % 64) * 8] = kernels_isa_get()->sum_bytes(t->buf + lo, hi - lo);
}

double kernels_measure_bandwidth(size_t bytes)
{
    if (bytes == 0)
        bytes = (size_t)1 << 30;
    bytes = (bytes + 4095) & ~(size_t)4095;
    char *buf = NULL;
    while (bytes >= ((size_t)1 << 24) && !(buf = aligned_alloc(4096, bytes)))
        bytes /= 2;
    if (!buf)
        return 0.0;
    bandwidth_task *t = calloc(1, sizeof(*t));
    if (!t) {
        free(buf);
        return 0.0;
    }
    t->buf = buf;
    t->bytes = bytes;
    t->fill = 1;
    kernels_parallel(bandwidth_task_run, t);
    t->fill = 0;
    kernels_parallel(bandwidth_task_run, t); /* warm-up: TLB, frequency */
    double best = 1e30;
    volatile double sink = 0.0;
    for (int run = 0; run < 5; run++) {
        uint64_t t0 = now_ns();
        kernels_parallel(bandwidth_task_run, t);
        double dt = (double)(now_ns() - t0) * 1e-9;
        if (dt < best)
            best = dt;
        sink += t->sums[0];
    }
    (void)sink;
    free(t);
    free(buf);
    return (double)bytes / best;
}
