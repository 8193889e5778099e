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
 * A matrix row of a block type holds a whole number of blocks: its column
 * count must be a multiple of block_size (dtype_row_ok).
 *
 * The row dot product of a weight type takes the activation row already
 * converted to the weight type's vec_dot_type (F32 for F32 and F16, BF16
 * for BF16, Q8_0 for Q8_0 and Q4_0), so that the activation is quantized
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
    DTYPE_COUNT
} dtype_t;

#define QK8_0 32
#define QK4_0 32

typedef struct {
    uint16_t d;          /* f16 scale */
    int8_t qs[QK8_0];
} block_q8_0;

typedef struct {
    uint16_t d;          /* f16 scale */
    uint8_t qs[QK4_0 / 2]; /* low nibbles: values 0..15, high nibbles: 16..31 */
} block_q4_0;

_Static_assert(sizeof(block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(block_q4_0) == 18, "Q4_0 block is 18 bytes");

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

const char *dtype_name(dtype_t t);      /* "f32", "f16", "bf16", "q8_0", "q4_0"; "?" otherwise */
/* Accepts each type's name in lower or upper case, and float32, bfloat16, float16. 0 or -1. */
int dtype_parse(const char *s, dtype_t *out);
/* The names accepted, for messages: "f32, f16, bf16, q8_0, q4_0". */
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
