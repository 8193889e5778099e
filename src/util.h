/*
 * util: the small things every module needs: one error-code table, logging,
 * monotonic time, half-precision conversions, whole-file reads and SHA-256.
 *
 * Error convention (from redis/libuv): a function that can fail returns 0 or
 * a negative MDI_E* code, and writes a readable reason into a caller buffer
 * `char *err` of MDI_ERR_LEN bytes (may be NULL). The reason names what was
 * wrong and where: the file, the field, the node, the byte offset.
 */
#ifndef MDI_UTIL_H
#define MDI_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdlib.h>

#define MDI_ERR_LEN 512

enum {
    MDI_OK = 0,
    MDI_EIO = -1,          /* a system call on a file failed */
    MDI_EFORMAT = -2,      /* malformed input: bad header, truncated, wrong shape */
    MDI_EUNSUPPORTED = -3, /* well-formed but not something we run */
    MDI_ENOMEM = -4,
    MDI_ENET = -5,         /* socket or HTTP failure */
    MDI_EPROTO = -6,       /* a peer broke the wire protocol */
    MDI_ETIMEOUT = -7,
    MDI_EAUTH = -8,        /* wrong or missing shared secret */
    MDI_EARG = -9,         /* bad command-line or configuration value */
    MDI_ESTATE = -10,      /* request not valid in the current state */
    MDI_EFULL = -11,       /* a bounded queue is full: try again later */
};

const char *mdi_strerror(int code);

/* Formats into err (MDI_ERR_LEN bytes, may be NULL) and returns code. */
int mdi_fail(char *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logging to stderr with a program tag set once at start ("starter",
 * "secondary0", ...). log_debug prints only when MDI_DEBUG is set. */
void log_set_tag(const char *tag);
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Programmer errors only, never input. */
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            log_error("%s:%d: CHECK failed: %s", __FILE__, __LINE__, #cond); \
            abort();                                                         \
        }                                                                    \
    } while (0)

double time_now(void); /* monotonic seconds */

/* Peak resident set size of this process in bytes (getrusage). */
size_t mem_peak_rss(void);
/* Current resident set size in bytes (/proc/self/statm), 0 if unknown. */
size_t mem_current_rss(void);

/* Half-precision conversions, round-to-nearest-even on the way down. */
static inline float bf16_to_f32(uint16_t h)
{
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

/* Reads a whole file into a new NUL-terminated buffer (caller frees).
 * Returns 0 or MDI_EIO with the reason in err. */
int file_read_all(const char *path, char **out, size_t *len, char *err);
int file_exists(const char *path);
int dir_exists(const char *path);
/* mkdir -p. */
int mkdir_p(const char *path, char *err);
/* dst = dir + "/" + name, truncation is an error (returns -1). */
int path_join(char *dst, size_t cap, const char *dir, const char *name);
/* Whether s ends with suffix. */
int str_has_suffix(const char *s, const char *suffix);
/* The folder part of path into dir ("." when it has none, "/" for the root). */
void path_dirname(const char *path, char *dir, size_t cap);
/* write() until all n bytes are out, retrying on EINTR; 0 or -1 (errno set). */
int fd_write_all(int fd, const void *data, size_t n);

/* SHA-256 (FIPS 180-4), incremental. */
typedef struct {
    uint32_t state[8];
    uint64_t n_bytes;
    uint8_t block[64];
    size_t block_len;
} sha256_ctx;
void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
/* Ends c and writes the hex digest (65 bytes with NUL). */
void sha256_final_hex(sha256_ctx *c, char out[65]);
/* Hex digest (65 bytes with NUL) of a buffer or a whole file. */
void sha256_hex(const void *data, size_t len, char out[65]);
int sha256_file_hex(const char *path, char out[65], char *err);

#endif
