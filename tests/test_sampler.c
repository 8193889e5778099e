/*
 * test_sampler: greedy choice, top-k and top-p filtering, seeded
 * reproducibility and the empirical distribution of temperature sampling.
 */
#include "sampler.h"
#include "util.h"
#include "test.h"

#include <math.h>

#define N_DRAWS 20000

static void fill_random(float *x, int n, uint64_t *state)
{
    for (int i = 0; i < n; i++) {
        *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((*state >> 40) & 0xffff) / 4096.0f - 8.0f;
    }
}

static void test_greedy(void)
{
    float x[] = { 0.5f, 3.0f, -1.0f, 3.0f, 2.9f };
    test_result(sampler_argmax(x, 5) == 1, "argmax: lowest index wins a tie", "got %d", sampler_argmax(x, 5));
    sampler s;
    int ok = sampler_init(&s, 5, 0.0f, 0, 1.0f, 42) == 0;
    int all = 1;
    for (int i = 0; ok && i < 10; i++) {
        float y[5];
        memcpy(y, x, sizeof(y));
        all &= sampler_sample(&s, y) == 1;
    }
    test_result(ok && all, "greedy (temperature 0) picks the argmax", "init %d", ok);
    sampler_free(&s);

    uint64_t st = 7;
    int same = 1, n = 1000;
    float logits[1000], copy[1000];
    static const float temps[] = { 0.3f, 1.0f, 2.5f };
    for (int ti = 0; ti < 3; ti++) {
        sampler_init(&s, n, temps[ti], 1, 0.9f, (uint64_t)ti + 1);
        for (int trial = 0; trial < 50; trial++) {
            fill_random(logits, n, &st);
            memcpy(copy, logits, sizeof(copy));
            same &= sampler_sample(&s, copy) == sampler_argmax(logits, n);
        }
        sampler_free(&s);
    }
    test_result(same, "top_k = 1 equals greedy at temperatures 0.3, 1, 2.5", "differs");
}

static void draws(uint64_t seed, int *out, int count)
{
    sampler s;
    float logits[64], copy[64];
    uint64_t st = 99;
    fill_random(logits, 64, &st);
    sampler_init(&s, 64, 1.0f, 0, 1.0f, seed);
    for (int i = 0; i < count; i++) {
        memcpy(copy, logits, sizeof(copy));
        out[i] = sampler_sample(&s, copy);
    }
    sampler_free(&s);
}

static void test_seed(void)
{
    int a[200], b[200], c[200], z1[200], z2[200];
    draws(1234, a, 200);
    draws(1234, b, 200);
    draws(1235, c, 200);
    draws(0, z1, 200);
    draws(0, z2, 200);
    test_result(!memcmp(a, b, sizeof(a)), "same seed, same draws", "sequences differ");
    test_result(memcmp(a, c, sizeof(a)) != 0, "different seed, different draws", "seeds 1234 and 1235 agree");
    test_result(!memcmp(z1, z2, sizeof(z1)) && memcmp(z1, a, sizeof(a)) != 0, "seed 0 is a fixed usable seed",
                "not reproducible or equal to seed 1234");
}

static void test_distribution(void)
{
    const float logits[4] = { 1.0f, 2.0f, 0.5f, 1.5f };
    double want[4], sum = 0.0;
    for (int i = 0; i < 4; i++)
        sum += want[i] = exp(logits[i]);
    for (int i = 0; i < 4; i++)
        want[i] /= sum;
    sampler s;
    sampler_init(&s, 4, 1.0f, 0, 1.0f, 2024);
    int count[4] = { 0 };
    for (int i = 0; i < N_DRAWS; i++) {
        float x[4];
        memcpy(x, logits, sizeof(x));
        count[sampler_sample(&s, x)]++;
    }
    sampler_free(&s);
    /* 0.015 is over four standard deviations of a frequency at 20000 draws. */
    double worst = 0.0;
    for (int i = 0; i < 4; i++) {
        double d = fabs((double)count[i] / N_DRAWS - want[i]);
        if (d > worst)
            worst = d;
    }
    test_result(worst < 0.015, "temperature 1: frequencies match softmax over 20000 draws",
                "worst gap %.4f (counts %d %d %d %d, want %.3f %.3f %.3f %.3f)", worst, count[0], count[1],
                count[2], count[3], want[0], want[1], want[2], want[3]);

    /* Temperature 0.5 is softmax(2 * logits). */
    sampler_init(&s, 4, 0.5f, 0, 1.0f, 77);
    memset(count, 0, sizeof(count));
    for (int i = 0; i < N_DRAWS; i++) {
        float x[4];
        memcpy(x, logits, sizeof(x));
        count[sampler_sample(&s, x)]++;
    }
    sampler_free(&s);
    sum = 0.0;
    for (int i = 0; i < 4; i++)
        sum += want[i] = exp(2.0 * logits[i]);
    worst = 0.0;
    for (int i = 0; i < 4; i++) {
        double d = fabs((double)count[i] / N_DRAWS - want[i] / sum);
        if (d > worst)
            worst = d;
    }
    test_result(worst < 0.015, "temperature 0.5: frequencies match softmax(2 x)", "worst gap %.4f", worst);
}

static void test_filters(void)
{
    /* Probabilities 0.5, 0.3, 0.15, 0.05 (in shuffled order). */
    const float logits[4] = { logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f) };
    sampler s;
    int count[4] = { 0 };
    sampler_init(&s, 4, 1.0f, 0, 0.7f, 5);
    for (int i = 0; i < N_DRAWS; i++) {
        float x[4];
        memcpy(x, logits, sizeof(x));
        count[sampler_sample(&s, x)]++;
    }
    sampler_free(&s);
    /* Nucleus 0.7: 0.5 falls short, 0.5 + 0.3 reaches it; renormalized 5/8, 3/8. */
    double f1 = (double)count[1] / N_DRAWS;
    test_result(count[0] == 0 && count[2] == 0 && fabs(f1 - 0.625) < 0.015, "top_p 0.7 keeps the two likeliest",
                "counts %d %d %d %d", count[0], count[1], count[2], count[3]);

    memset(count, 0, sizeof(count));
    sampler_init(&s, 4, 1.0f, 0, 0.9f, 6);
    for (int i = 0; i < N_DRAWS; i++) {
        float x[4];
        memcpy(x, logits, sizeof(x));
        count[sampler_sample(&s, x)]++;
    }
    sampler_free(&s);
    test_result(count[2] == 0 && count[0] > 0, "top_p 0.9 drops only the 0.05 tail", "counts %d %d %d %d",
                count[0], count[1], count[2], count[3]);

    memset(count, 0, sizeof(count));
    sampler_init(&s, 4, 1.0f, 2, 1.0f, 8);
    for (int i = 0; i < N_DRAWS; i++) {
        float x[4];
        memcpy(x, logits, sizeof(x));
        count[sampler_sample(&s, x)]++;
    }
    sampler_free(&s);
    test_result(count[0] == 0 && count[2] == 0 && count[1] > 0 && count[3] > 0, "top_k 2 keeps the two likeliest",
                "counts %d %d %d %d", count[0], count[1], count[2], count[3]);

    /* top_k 3, then top_p 0.8 of the renormalized three (0.53, 0.32, 0.16). */
    memset(count, 0, sizeof(count));
    sampler_init(&s, 4, 1.0f, 3, 0.8f, 9);
    for (int i = 0; i < N_DRAWS; i++) {
        float x[4];
        memcpy(x, logits, sizeof(x));
        count[sampler_sample(&s, x)]++;
    }
    sampler_free(&s);
    test_result(count[0] == 0 && count[2] == 0, "top_k 3 then top_p 0.8 keeps two", "counts %d %d %d %d",
                count[0], count[1], count[2], count[3]);

    /* A large vocabulary through the top-p cutoff path. */
    int n = 50000;
    float *big = malloc((size_t)n * sizeof(float));
    uint64_t st = 3;
    fill_random(big, n, &st);
    big[123] = 40.0f; /* nearly all the mass */
    sampler_init(&s, n, 1.0f, 0, 0.5f, 10);
    int hits = 0;
    for (int i = 0; i < 100; i++) {
        float *x = malloc((size_t)n * sizeof(float));
        memcpy(x, big, (size_t)n * sizeof(float));
        hits += sampler_sample(&s, x) == 123;
        free(x);
    }
    sampler_free(&s);
    free(big);
    test_result(hits == 100, "top_p on 50000 tokens keeps the dominant one", "%d of 100", hits);
}

static void test_args(void)
{
    sampler s;
    test_result(sampler_init(&s, 0, 1.0f, 0, 1.0f, 1) == MDI_EARG && sampler_init(&s, 10, -1.0f, 0, 1.0f, 1) == MDI_EARG &&
                    sampler_init(&s, 10, 1.0f, -1, 1.0f, 1) == MDI_EARG &&
                    sampler_init(&s, 10, 1.0f, 0, 0.0f, 1) == MDI_EARG &&
                    sampler_init(&s, 10, 1.0f, 0, 1.5f, 1) == MDI_EARG,
                "sampler_init rejects bad settings", "accepted one");
}

int main(void)
{
    test_greedy();
    test_seed();
    test_distribution();
    test_filters();
    test_args();
    return test_failures;
}
