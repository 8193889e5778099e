/*
 * dtype: the number formats weights, activations and caches are stored in,
 * described once each in a table of traits. Nothing else in the project
 * knows how many bytes a row of n values takes, how to turn a row into F32
 * and back, or which format the other operand of a dot product must be in:
 * it asks the table.
 *
 * Float types hold one value per element. Block types hold values in blocks
 * of block_size with a shared scale, with exactly the byte layouts of GGUF
 * (ggml), so the same bytes can be read from GGUF files:
 *
 *   Q8_0, 32 values in 34 bytes:
 *     +-----------+------------------------------+
 *     | f16 d     | int8 qs[32]                  |    x[i] = d * qs[i]
 *     +-----------+------------------------------+
 *   Q4_0, 32 values in 18 bytes:
 *     +-----------+------------------------------+
 *     | f16 d     | uint8 qs[16]                 |    x[i]      = d * ((qs[i] & 15) - 8)
 *     +-----------+------------------------------+    x[i + 16] = d * ((qs[i] >> 4) - 8)
 *
 * K-quants, super-blocks of 256 values (QK_K) in sub-blocks with scales of
 * their own, the scales themselves quantized against an f16 super-scale:
 *
 *   Q4_K, 256 values in 144 bytes: 8 sub-blocks of 32
 *     | f16 d | f16 dmin | scales[12] | qs[128] |
 *     sub-block j has a 6-bit scale sc_j and a 6-bit min m_j packed in
 *     scales[] (get_scale_min_k4 in ggml):
 *       j < 4:  sc_j = scales[j] & 63,  m_j = scales[j + 4] & 63
 *       j >= 4: sc_j = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4
 *               m_j  = (scales[j + 4] >> 4) | (scales[j]     >> 6) << 4
 *     values 64c + l (l < 32) are the low nibbles of qs[32c + l] (sub-block
 *     2c), values 64c + 32 + l the high nibbles (sub-block 2c + 1);
 *     x = d * sc_j * q - dmin * m_j
 *   Q5_K, 256 values in 176 bytes: as Q4_K plus a fifth bit
 *     | f16 d | f16 dmin | scales[12] | qh[32] | qs[128] |
 *     value 64c + l gains 16 when bit 2c of qh[l] is set, value 64c + 32 + l
 *     when bit 2c + 1 is set
 *   Q6_K, 256 values in 210 bytes: 16 sub-blocks of 16
 *     | ql[128] | qh[64] | int8 scales[16] | f16 d |
 *     in each half h (128 values; ql + 64h, qh + 32h, scales + 8h), for l < 32:
 *       q(l)      = (ql[l] & 15)      | ((qh[l] >> 0) & 3) << 4
 *       q(l + 32) = (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4
 *       q(l + 64) = (ql[l] >> 4)      | ((qh[l] >> 4) & 3) << 4
 *       q(l + 96) = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4
 *     x(v) = d * scales[v / 16] * (q(v) - 32)
 *   Q8_K, 256 values in 292 bytes, the activation type of the K-quants:
 *     | f32 d | int8 qs[256] | int16 bsums[16] |    x[i] = d * qs[i]
 *     bsums[k] = the sum of qs[16k .. 16k + 15], so that a K-quant dot
 *     product subtracts its mins without touching the values again
 *
 * A matrix row of a block type holds a whole number of blocks: its column
 * count must be a multiple of block_size (dtype_row_ok).
 *
 * The row dot product of a weight type takes the activation row already
 * converted to the weight type's vec_dot_type (F32 for F32 and F16, BF16
 * for BF16, Q8_0 for Q8_0 and Q4_0, Q8_K for the K-quants), so that the activation is quantized
 * once and read by every row and every matrix that needs it. BF16 weights
 * meet BF16 activations, as in llama.cpp: the CPUs' BF16 dot-product
 * instructions take both operands so, and a decode step reads half the
 * activation bytes; rounding the activation to BF16 costs a relative error
 * of at most 2^-8 per element (tests/test_kernels.c bounds the result).
 * The dot products here are the portable reference; the SIMD kernels
 * (kernels_*.c) compute the same sums faster.
 */
#ifndef MDI_DTYPE_H
#define MDI_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DTYPE_F32 = 0,
    DTYPE_F16 = 1,
    DTYPE_BF16 = 2,
    DTYPE_Q8_0 = 3,
    DTYPE_Q4_0 = 4,
    DTYPE_Q4_K = 5,
    DTYPE_Q5_K = 6,
    DTYPE_Q6_K = 7,
    DTYPE_Q8_K = 8,      /* the activation type of the K-quants */
    DTYPE_COUNT
} dtype_t;

#define QK8_0 32
#define QK4_0 32
#define QK_K 256         /* values per K-quant super-block */
#define K_SCALE_SIZE 12  /* bytes of packed 6-bit scales and mins (Q4_K, Q5_K) */

typedef struct {
    uint16_t d;          /* f16 scale */
    int8_t qs[QK8_0];
} block_q8_0;

typedef struct {
    uint16_t d;          /* f16 scale */
    uint8_t qs[QK4_0 / 2]; /* low nibbles: values 0..15, high nibbles: 16..31 */
} block_q4_0;

typedef struct {
    uint16_t d;                   /* f16 super-block scale of the scales */
    uint16_t dmin;                /* f16 super-block scale of the mins */
    uint8_t scales[K_SCALE_SIZE]; /* 8 scales and 8 mins, 6 bits each */
    uint8_t qs[QK_K / 2];         /* 4-bit values */
} block_q4_K;

typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];         /* 5th bit of each value */
    uint8_t qs[QK_K / 2];         /* low 4 bits */
} block_q5_K;

typedef struct {
    uint8_t ql[QK_K / 2];         /* low 4 bits */
    uint8_t qh[QK_K / 4];         /* high 2 bits */
    int8_t scales[QK_K / 16];     /* 16 signed 8-bit scales */
    uint16_t d;                   /* f16 super-block scale */
} block_q6_K;

typedef struct {
    float d;                      /* f32 scale */
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];     /* sums of each 16 values of qs */
} block_q8_K;

_Static_assert(sizeof(block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(block_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(block_q4_K) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(block_q5_K) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(block_q6_K) == 210, "Q6_K block is 210 bytes");
_Static_assert(sizeof(block_q8_K) == 292, "Q8_K block is 292 bytes");

/* dst (n,) F32 = src (n,) of the type; n a multiple of block_size. */
typedef void (*dtype_to_f32_fn)(const void *src, float *dst, int64_t n);
/* dst (n,) of the type = src (n,) F32, rounding to nearest; n a multiple of block_size. */
typedef void (*dtype_from_f32_fn)(const float *src, void *dst, int64_t n);
/* Dot product of a row of the type (n,) with x (n,) stored as vec_dot_type. */
typedef float (*dtype_vec_dot_fn)(int n, const void *row, const void *x);

typedef struct {
    const char *name;        /* "f32", "q8_0", ... as on command lines and in manifests */
    const char *st_name;     /* as a safetensors / chunk header spells it: "F32", "Q8_0" */
    int block_size;          /* values per block: 1 for float types */
    size_t block_bytes;      /* bytes per block */
    int is_float;            /* one value per element, IEEE-like */
    dtype_t vec_dot_type;    /* the type the other operand of vec_dot is in */
    dtype_to_f32_fn to_f32;
    dtype_from_f32_fn from_f32;
    dtype_vec_dot_fn vec_dot;
} dtype_traits;

/* The traits of t (t < DTYPE_COUNT). */
const dtype_traits *dtype_get(dtype_t t);

const char *dtype_name(dtype_t t);      /* "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", ...; "?" otherwise */
/* Accepts each type's name in lower or upper case, and float32, bfloat16, float16. 0 or -1. */
int dtype_parse(const char *s, dtype_t *out);
/* The names accepted, for messages: "f32, f16, bf16, q8_0, q4_0, q4_k, ...". */
const char *dtype_names(void);

int dtype_is_block(dtype_t t);         /* block_size > 1 */
int dtype_block_size(dtype_t t);
/* 1 when a row of n values can be stored as t (n a multiple of block_size). */
int dtype_row_ok(dtype_t t, int64_t n);
/* Bytes of a row of n values; n must satisfy dtype_row_ok. */
size_t dtype_row_size(dtype_t t, int64_t n);
/* Bytes of rows x cols values stored row by row. */
size_t dtype_matrix_size(dtype_t t, int64_t rows, int64_t cols);

/* dst (n,) of dst_t = src (n,) of src_t; narrowing rounds to nearest even,
 * block types quantize as ggml does. n must be a multiple of both types'
 * block sizes. The one conversion loop of the project: loading, chunk
 * writing and the wire all use it. */
void dtype_convert(void *dst, dtype_t dst_t, const void *src, dtype_t src_t, size_t n);

#endif
