/*
 * sampler: next-token choice from logits.
 *
 *   temperature 0       -> argmax (lowest index wins a tie)
 *   otherwise           -> softmax(logits / temperature)
 *                          -> keep the top_k most likely (top_k > 0)
 *                          -> keep the smallest most-likely-first prefix whose
 *                             probability reaches top_p (top_p < 1)
 *                          -> draw from what is left, renormalized
 *
 * top_k = 1 is argmax whatever the temperature. Random numbers come from
 * xorshift64*, so a seed fixes the whole sequence of draws. The candidate
 * arrays are allocated once in sampler_init; sampling allocates nothing.
 */
#include "sampler.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: spreads a small seed (1, 2, 3...) over all 64 bits. */
static uint64_t seed_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* Uniform in [0, 1) from the top 24 bits. */
static float rng_float(uint64_t *state)
{
    return (float)(rng_next(state) >> 40) / 16777216.0f;
}

int sampler_init(sampler *s, int vocab_size, float temperature, int top_k, float top_p, uint64_t seed)
{
    memset(s, 0, sizeof(*s));
    if (vocab_size <= 0 || !(temperature >= 0.0f) || top_k < 0 || !(top_p > 0.0f && top_p <= 1.0f))
        return MDI_EARG;
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    /* xorshift must never hold 0; seed 0 stands for a fixed constant. */
    s->rng_state = seed_mix(seed ? seed : 0x5eed5eed5eed5eedULL);
    if (s->rng_state == 0)
        s->rng_state = 0x2545f4914f6cdd1dULL;
    s->idx = malloc((size_t)vocab_size * sizeof(int));
    s->prob = malloc((size_t)vocab_size * sizeof(float));
    if (!s->idx || !s->prob) {
        sampler_free(s);
        return MDI_ENOMEM;
    }
    return MDI_OK;
}

void sampler_free(sampler *s)
{
    free(s->idx);
    free(s->prob);
    s->idx = NULL;
    s->prob = NULL;
}

int sampler_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Candidate order: more probable first, then lower id. */
static int better(const float *p, int a, int b)
{
    return p[a] > p[b] || (p[a] == p[b] && a < b);
}

static int cmp_better(const void *x, const void *y, void *arg)
{
    const float *p = arg;
    int a = *(const int *)x, b = *(const int *)y;
    return better(p, a, b) ? -1 : better(p, b, a) ? 1 : 0;
}

/* Min-heap (worst candidate at the root) of ids in h[0..n). */
static void heap_sift_down(int *h, int n, int i, const float *p)
{
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && better(p, h[c], h[c + 1]))
            c++;
        if (!better(p, h[i], h[c]))
            return;
        int tmp = h[i];
        h[i] = h[c];
        h[c] = tmp;
        i = c;
    }
}

/* The k best ids of p (n,) into idx, best first: O(n log k). */
static void select_top_k(const float *p, int n, int k, int *idx)
{
    for (int i = 0; i < k; i++)
        idx[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--)
        heap_sift_down(idx, k, i, p);
    for (int i = k; i < n; i++) {
        if (better(p, i, idx[0])) {
            idx[0] = i;
            heap_sift_down(idx, k, 0, p);
        }
    }
    qsort_r(idx, (size_t)k, sizeof(int), cmp_better, (void *)p);
}

int sampler_sample(sampler *s, float *logits)
{
    int n = s->vocab_size;
    if (s->temperature <= 0.0f || s->top_k == 1)
        return sampler_argmax(logits, n);

    /* p = softmax(logits / temperature), (n,) */
    float *p = s->prob;
    float inv_t = 1.0f / s->temperature;
    float max = logits[sampler_argmax(logits, n)] * inv_t;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        p[i] = expf(logits[i] * inv_t - max);
        sum += p[i];
    }
    float inv_sum = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        p[i] *= inv_sum;

    int use_k = s->top_k > 0 && s->top_k < n;
    int use_p = s->top_p < 1.0f;
    if (!use_k && !use_p) {
        float r = rng_float(&s->rng_state), cdf = 0.0f;
        for (int i = 0; i < n; i++) {
            cdf += p[i];
            if (r < cdf)
                return i;
        }
        return sampler_argmax(p, n); /* r beyond a cdf short of 1 by rounding */
    }

    int *idx = s->idx;
    int m;
    double mass = 0.0;
    if (use_k) {
        m = s->top_k;
        select_top_k(p, n, m, idx);
        for (int i = 0; i < m; i++)
            mass += p[idx[i]];
    } else {
        /* A token less likely than (1 - top_p) / (n - 1) cannot be in the
         * nucleus (llama2.c's observation), so only the rest is sorted. */
        float cutoff = n > 1 ? (1.0f - s->top_p) / (float)(n - 1) : 0.0f;
        m = 0;
        for (int i = 0; i < n; i++)
            if (p[i] >= cutoff)
                idx[m++] = i;
        if (m == 0)
            return sampler_argmax(p, n);
        qsort_r(idx, (size_t)m, sizeof(int), cmp_better, p);
        mass = 1.0;
    }
    if (use_p) {
        /* Smallest prefix whose share of the candidates' mass reaches top_p. */
        double target = s->top_p * mass, cum = 0.0;
        int keep = 0;
        while (keep < m) {
            cum += p[idx[keep++]];
            if (cum >= target)
                break;
        }
        m = keep;
        mass = cum;
    }
    double r = (double)rng_float(&s->rng_state) * mass, cdf = 0.0;
    for (int i = 0; i < m; i++) {
        cdf += p[idx[i]];
        if (r < cdf)
            return idx[i];
    }
    return idx[m - 1];
}
