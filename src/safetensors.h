/*
 * safetensors: read (mmap) and write the safetensors format, and the
 * "tensor source" that presents every checkpoint layout we read as one set
 * of named tensors with Hugging Face names.
 *
 * File layout:
 *
 *   +----------------+----------------------------+----------------------+
 *   | u64 LE: N      | N bytes of JSON header     | raw tensor data      |
 *   +----------------+----------------------------+----------------------+
 *   header: {"__metadata__": {"k": "v", ...},
 *            "name": {"dtype": "F32"|"F16"|"BF16"|"Q8_0"|"Q4_0", "shape": [d0, ...],
 *                     "data_offsets": [begin, end]}, ...}
 *   offsets are relative to the start of the data section, little-endian
 *   values, C (row-major) order.
 *
 * Block types (our extension). Safetensors has no block-quantized dtypes,
 * so chunks carry Q8_0 and Q4_0 under dtype strings of their own:
 *
 *   "dtype": "Q8_0" or "Q4_0"      GGUF's block layouts, drawn in dtype.h
 *   "shape": [rows, cols]          the LOGICAL shape, in values, as for F32
 *   data bytes = rows * dtype_row_size(cols)
 *              = rows * cols / 32 * 34 (Q8_0) or * 18 (Q4_0)
 *   cols (the last dimension) a multiple of 32: each row is whole blocks
 *
 * Why an extension rather than GGUF-formatted chunks: chunks keep one
 * container whatever their types, so the manifest, sha256, --inspect,
 * --verify, the upload to secondaries and the mmap reader stay as they are;
 * a tensor's bytes are still GGUF's, so a GGUF reader can be added beside
 * this one without converting anything; a float-only chunk is still a
 * standard safetensors file; and a reader that does not know the extension
 * (a stock safetensors library) refuses the file naming the dtype instead
 * of misreading it. Two checks guard each block tensor: its last dimension
 * is a multiple of the block size, and its data bytes equal what its shape
 * takes; either failure is one line naming the file, the tensor and the
 * sizes. Since block sizes in bytes are even, every tensor stays 2-byte
 * aligned; an F32 tensor after a block tensor may not be 4-byte aligned
 * (the model copies such a tensor rather than borrow it).
 *
 * Tensor sources (tsrc_open) read:
 *   - a Hugging Face folder: model.safetensors, or model.safetensors.index.json
 *     with its shards;
 *   - a single .safetensors file (a chunk written by prepare_model);
 *   - a llama2.c .bin checkpoint: converted in memory to Hugging Face names
 *     (q/k rows permuted from interleaved to rotate-half rotary layout);
 *   - a GGUF file (gguf.h), or the first of split files NAME-00001-of-0000N.gguf
 *     (all parts then): tensors renamed to Hugging Face names (token_embd ->
 *     model.embed_tokens, blk.N.attn_q -> model.layers.N.self_attn.q_proj,
 *     output_norm -> model.norm, output -> lm_head, ...), shapes reversed from
 *     ggml's order to row-major, data borrowed from the mapping in its GGUF
 *     type. llama-architecture GGUFs keep q/k rows in the interleaved rotary
 *     order: the config says so (rope_interleaved) instead of rows being
 *     copied, so the file stays mapped. The config comes from the metadata.
 * Data pointers are borrowed from the mmap (or the source's own buffers) and
 * live until tsrc_close.
 *
 * Where the bytes live (tsrc_mode; GGUF files as the others): TSRC_MAP maps
 * each file read-only, so its pages belong to the page cache; TSRC_READ
 * reads each file whole into anonymous memory (huge pages advised) and
 * keeps no mapping of the file.
 * Clean file pages left untouched are reclaimed by the kernel under memory
 * pressure, or proactively on some machines, and then read from disk again
 * at the next token; anonymous pages stay until freed (or are swapped).
 * Either way a tensor's pages can be dropped once it has been converted.
 */
#ifndef MDI_SAFETENSORS_H
#define MDI_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "kernels.h"
#include "gguf.h"

#define TENSOR_NAME_MAX 160
#define TENSOR_MAX_DIMS 4

typedef struct {
    char name[TENSOR_NAME_MAX];
    dtype_t dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    const void *data;   /* borrowed */
    size_t nbytes;
    const char *file;   /* the file it came from, for error messages */
    int mapped;         /* data lies in a read-only file mapping (not a converted copy) */
} tensor_info;

typedef struct tensor_source tensor_source;

typedef enum {
    TSRC_MAP = 0,   /* borrow from a read-only file mapping (--mmap) */
    TSRC_READ = 1,  /* read into anonymous memory (--no-mmap) */
} tsrc_mode;

/* Opens path (folder, .safetensors file or llama2.c .bin). On failure returns
 * NULL with one line in err naming the file and the problem. tsrc_open maps. */
tensor_source *tsrc_open(const char *path, char *err);
tensor_source *tsrc_open_mode(const char *path, tsrc_mode mode, char *err);
void tsrc_close(tensor_source *s);

int tsrc_count(const tensor_source *s);
const tensor_info *tsrc_get(const tensor_source *s, int i);
const tensor_info *tsrc_find(const tensor_source *s, const char *name);

/* The "__metadata__" object of the (first) safetensors file, borrowed; an
 * empty object when none. For llama2.c sources, the model config fields
 * read from its header are placed here too (see model_config_from_tsrc). */
json_t *tsrc_metadata(const tensor_source *s);

/* Reads every page of [data, data + nbytes) once, with the kernels' thread
 * pool, so that the first forward pass does not pay for page faults of the
 * mapping (a cold 4 GB file otherwise slows the first prefill many times). */
void tsrc_prefault(const void *data, size_t nbytes);

/* For llama2.c and GGUF sources: the config read from the .bin header or
 * the GGUF metadata, as a Hugging Face config.json object (borrowed). NULL
 * for safetensors. */
json_t *tsrc_llama2c_config(const tensor_source *s);

/* The GGUF name of a Hugging Face tensor name (the inverse of the renaming
 * above): 0, or -1 when it has none. */
int tsrc_gguf_name(const char *hf, char *out, size_t cap);

/* For GGUF sources: the (first) file, borrowed; NULL otherwise. */
const gguf_file *tsrc_gguf(const tensor_source *s);

/* Writer. Tensors are added in order, then written in one pass to
 * path + ".tmp" which is fsync'ed and renamed onto path, so a reader never
 * sees a half-written file. The writer copies nothing: data pointers must
 * stay valid until st_writer_finish. */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
/* metadata values must be strings (safetensors rule); borrowed until finish */
void st_writer_set_meta(st_writer *w, const char *key, const char *value);
/* Adds a tensor stored as `dtype`; src_dtype is the dtype of data. When they
 * differ the data is converted while writing (dtype_convert: block types
 * quantize as ggml does). MDI_EARG when the last dimension is not a whole
 * number of blocks of either type. */
int st_writer_add(st_writer *w, const char *name, dtype_t dtype, int ndim,
                  const int64_t *shape, const void *data, dtype_t src_dtype);
/* Writes the file; fills sha256 hex (65 bytes) and total size if non-NULL. */
int st_writer_finish(st_writer *w, const char *path, char sha256_out[65],
                     uint64_t *size_out, char *err);
void st_writer_free(st_writer *w);

#endif
