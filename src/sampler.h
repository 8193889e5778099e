/*
 * sampler: picks the next token from logits: greedy (temperature 0), or
 * temperature with top-k and top-p (nucleus) filtering, driven by a seeded
 * xorshift generator so that the same seed gives the same output.
 */
#ifndef MDI_SAMPLER_H
#define MDI_SAMPLER_H

#include <stdint.h>

typedef struct {
    int vocab_size;
    float temperature;   /* 0: greedy */
    int top_k;           /* 0: off */
    float top_p;         /* 1.0: off */
    uint64_t rng_state;
    /* private scratch, allocated once */
    int *idx;
    float *prob;
} sampler;

int sampler_init(sampler *s, int vocab_size, float temperature, int top_k,
                 float top_p, uint64_t seed);
void sampler_free(sampler *s);
/* logits (vocab,) may be modified in place. */
int sampler_sample(sampler *s, float *logits);
int sampler_argmax(const float *x, int n);

/* What one sample asks of the engine (engine.h), apart from the command
 * line: its token budget and its sampler (a service sets them per
 * request). */
typedef struct {
    int max_new;             /* new tokens at most */
    float temperature;       /* 0: greedy */
    int top_k;               /* 0: off */
    float top_p;             /* 1: off */
    uint64_t seed;
    int echo_prompt;         /* stream the prompt's text before the new text */
    int ignore_eos;          /* EOS does not end the sample (fixed output lengths) */
} sample_params;

#endif
