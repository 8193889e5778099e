/*
 * gguf: read (mmap) and write GGUF files, the single-file format of ggml and
 * llama.cpp, versions 2 and 3. This module knows the container only; what
 * the keys and tensor names mean to a model is the tensor source's business
 * (safetensors.c).
 *
 * File layout (all integers little-endian):
 *
 *   +----------+-------------+----------------+-------------+
 *   | "GGUF"   | u32 version | u64 n_tensors  | u64 n_kv    |   24 bytes
 *   +----------+-------------+----------------+-------------+
 *   | n_kv metadata pairs:                                   |
 *   |   str key | u32 type | value                            |
 *   +--------------------------------------------------------+
 *   | n_tensors tensor infos:                                |
 *   |   str name | u32 n_dims | u64 ne[n_dims] | u32 type    |
 *   |   | u64 offset (from the data section, a multiple of   |
 *   |   the alignment)                                       |
 *   +--------------------------------------------------------+
 *   | padding to a multiple of the alignment                 |
 *   +--------------------------------------------------------+
 *   | data section: each tensor's bytes at its offset,       |
 *   | padded to the alignment between tensors                |
 *   +--------------------------------------------------------+
 *
 *   str   = u64 length, then that many bytes (UTF-8, no terminating NUL)
 *   value = by type: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool
 *           (one byte), 8 str, 9 array, 10 u64, 11 i64, 12 f64
 *   array = u32 element type | u64 count | count values (no nested arrays)
 *   alignment = metadata "general.alignment" (u32, a power of two), else 32
 *
 * Tensor shapes are ggml's: ne[0] is the number of columns (the fastest
 * varying dimension), the reverse of the row-major shape a safetensors
 * header gives. A tensor's type is a ggml type number; those with a dtype
 * (dtype.h) are F32 0, F16 1, Q4_0 2, Q8_0 8, Q4_K 12, Q5_K 13, Q6_K 14,
 * Q8_K 15 and BF16 30, with the same block layouts.
 *
 * Every size is computed in 64 bits and checked against the file before it
 * is used; a malformed file (bad magic, unknown version, a count or length
 * the file cannot hold, metadata of an unknown type, a tensor of a type we
 * cannot run, misaligned, overlapping or truncated tensor data) fails with
 * one line naming the file and the byte offset.
 *
 * Ownership: gguf_open returns a handle owning the mapping; every pointer it
 * hands out (strings, array data, tensor data) is borrowed from the mapping
 * and lives until gguf_close. Key and tensor names are NUL-terminated copies.
 */
#ifndef MDI_GGUF_H
#define MDI_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include "dtype.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

typedef struct {
    char *key;                /* NUL-terminated copy */
    gguf_type type;
    gguf_type arr_type;       /* element type when type is ARRAY */
    uint64_t n;               /* element count (arrays), string length (strings), else 1 */
    const uint8_t *data;      /* the value (arrays: the first element; strings: the bytes) */
    uint64_t offset;          /* file offset of the value, for messages */
    uint64_t *str_offsets;    /* string arrays: file offset of each element's length */
} gguf_kv;

typedef struct {
    char *name;               /* NUL-terminated copy */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ggml order: ne[0] columns; unused dimensions 1 */
    uint32_t ggml_type;
    dtype_t dtype;
    uint64_t offset;          /* from the start of the data section */
    uint64_t nbytes;
    const void *data;         /* borrowed from the mapping */
    uint64_t info_offset;     /* file offset of the tensor info, for messages */
} gguf_tensor;

typedef struct {
    char *path;
    const uint8_t *map;
    uint64_t size;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;     /* file offset of the data section */
    gguf_kv *kv;
    int64_t n_kv;
    gguf_tensor *tensors;
    int64_t n_tensors;
    int owns_map;             /* gguf_close unmaps map */
} gguf_file;

/* Maps and parses path. NULL with one line in err on failure. */
gguf_file *gguf_open(const char *path, char *err);
/* The same on bytes the caller keeps alive until gguf_close (tests, fuzzing). */
gguf_file *gguf_open_memory(const void *data, size_t size, const char *name, char *err);
void gguf_close(gguf_file *g);

/* ggml type number <-> dtype; -1 / UINT32_MAX when there is none. */
int gguf_dtype_from_ggml(uint32_t ggml_type, dtype_t *out);
uint32_t gguf_ggml_from_dtype(dtype_t t);
/* "Q4_K", "IQ2_XXS", ... for messages; "type N" beyond ggml's table. */
const char *gguf_ggml_type_name(uint32_t ggml_type);
const char *gguf_type_name(gguf_type t);

/* Index of key, or -1. */
int64_t gguf_find_key(const gguf_file *g, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);

/* Typed getters. Each returns 1 when found and of a fitting type, 0 when
 * absent (out untouched), or MDI_EFORMAT with "file: metadata KEY at byte
 * N is TYPE, expected ..." in err.
 *   gguf_get_int: any integer type (and bool), range-checked into int64;
 *   gguf_get_float: f32, f64 or an integer;
 *   gguf_get_bool: bool;
 *   gguf_get_str: a string (not NUL-terminated: *len bytes). */
int gguf_get_int(const gguf_file *g, const char *key, int64_t *out, char *err);
int gguf_get_float(const gguf_file *g, const char *key, double *out, char *err);
int gguf_get_bool(const gguf_file *g, const char *key, int *out, char *err);
int gguf_get_str(const gguf_file *g, const char *key, const char **s, size_t *len, char *err);
/* An array of elem type (GGUF_TYPE_COUNT: any); *kv_out its entry. */
int gguf_get_arr(const gguf_file *g, const char *key, gguf_type elem, const gguf_kv **kv_out, char *err);
/* Element i of an array: integers and floats as double, strings by pointer. */
double gguf_arr_num(const gguf_kv *kv, uint64_t i);
const char *gguf_arr_str(const gguf_file *g, const gguf_kv *kv, uint64_t i, size_t *len);

/* Writer: metadata and tensors are added in order, then written in one
 * pass (version 3, alignment 32) to path + ".tmp", renamed onto path.
 * Strings and tensor data are copied at add time into the writer (test
 * files are small). Shapes are given in ggml order (ne[0] columns). */
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
int gguf_writer_set_int(gguf_writer *w, const char *key, gguf_type type, int64_t v);
int gguf_writer_set_float(gguf_writer *w, const char *key, gguf_type type, double v);
int gguf_writer_set_bool(gguf_writer *w, const char *key, int v);
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
/* An array of n numbers of elem type (an integer or float type), from doubles. */
int gguf_writer_set_arr_num(gguf_writer *w, const char *key, gguf_type elem, const double *v, uint64_t n);
int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
/* A raw value: type and its encoded bytes (tests of malformed files). */
int gguf_writer_set_raw(gguf_writer *w, const char *key, uint32_t type, const void *bytes, size_t n);
/* data: nbytes of the tensor already in dtype t (dtype_row_size checked). */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, dtype_t t, int n_dims, const int64_t *ne,
                           const void *data);
int gguf_writer_write(gguf_writer *w, const char *path, char *err);

/* A GGUF with no tensors holding g's general.architecture and every
 * tokenizer.* pair, byte for byte: the tokenizer of a GGUF checkpoint that
 * prepare_model keeps beside its chunks (tokenizer.gguf). */
int gguf_write_tokenizer(const gguf_file *g, const char *path, char *err);

#endif
