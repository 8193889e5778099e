/*
 * tokenizer: BPE tokenizers from Hugging Face tokenizer.json (byte-level and
 * SentencePiece-style) and from llama2.c's tokenizer.bin.
 *
 * Encoding pipeline, for both families:
 *
 *   text -> UTF-8 repair -> split on added tokens -> for each plain segment:
 *     byte-level:    NFC? -> regex pieces -> bytes as GPT-2 alphabet -> BPE
 *     SentencePiece: "▁" prepended, " " -> "▁" -> BPE (byte fallback <0xXX>)
 *
 * BPE runs per piece with a binary heap of candidate pairs ordered by
 * (merge rank, position), the same order Hugging Face's BPE model and
 * llama2.c's best-score loop use, so each piece costs O(n log n).
 *
 * llama2.c tokenizer.bin layout (little-endian):
 *
 *   int32 max_token_length
 *   repeated until end of file:
 *     float32 score | int32 len | len bytes (no NUL)
 *
 * Its vocabulary writes spaces as " " (not "▁"), ids 0/1/2 are <unk>, BOS
 * and EOS, ids 3..258 are the byte tokens <0x00>..<0xFF>. Its merges are
 * implied: two adjacent tokens merge when their concatenation is in the
 * vocabulary, best score first; we turn that into a pair table at load
 * time so both formats share one merge loop.
 */
#include "tokenizer.h"
#include "gguf.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

typedef enum {
    TOK_BYTE_LEVEL,
    TOK_SPM,
    TOK_LLAMA2C
} tok_kind;

enum {
    ATTR_ADDED = 1,    /* from added_tokens: written raw, matched before BPE */
    ATTR_SPECIAL = 2,  /* produces no text when decoded */
    ATTR_BYTE = 4,     /* <0xXX> byte-fallback token */
};

enum { PREPEND_NEVER, PREPEND_ALWAYS, PREPEND_FIRST };

#define MAX_REGEX 2
#define MAX_EOS 16

typedef struct {
    int32_t a, b;      /* left and right token ids; a < 0 marks an empty slot */
    int32_t rank, id;  /* merge rank (lower first) and the merged token */
} merge_slot;

struct tokenizer {
    tok_kind kind;
    int n_vocab;           /* ids 0..n_vocab-1; ids nobody defined are NULL */
    char **tokens;         /* token strings, pointing into arena */
    int *token_lens;
    unsigned char *attr;
    char *arena;

    int32_t *vocab_slots;  /* open addressing: token id or -1 */
    uint32_t vocab_mask;
    merge_slot *merges;
    uint32_t merge_mask;

    int *added;            /* added token ids, longest content first */
    int n_added;
    unsigned char added_first[256]; /* first bytes of added tokens */

    /* byte-level */
    pcre2_code *re[MAX_REGEX];
    int n_re;
    int byte_prefix_space; /* ByteLevel add_prefix_space */
    int nfc;
    int ignore_merges;
    int byte_sym[256];     /* id of the single GPT-2 character of each byte */

    /* SentencePiece */
    char space[8];         /* "▁", or " " for llama2.c */
    int space_len;
    int prepend;           /* PREPEND_* */
    int replace_space;
    int metaspace_split;
    int byte_fallback;
    int byte_token[256];   /* id of <0xXX>, -1 if absent */
    int unk_id;
    int fuse_unk;

    int bos_id;
    int pad_id;            /* -1 if none: metadata only, never encoded from text */
    int adds_bos;
    int eos[MAX_EOS];
    int n_eos;
    chat_family chat;
};

/* ---- small helpers ---- */

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static uint32_t hash_pair(int32_t a, int32_t b)
{
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static uint32_t table_size_for(size_t n)
{
    uint32_t size = 16;
    while (size < 2 * n + 1)
        size <<= 1;
    return size;
}

/* Length of the UTF-8 sequence a lead byte opens, 0 if it cannot open one. */
static int utf8_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef)
        return 3;
    if (c >= 0xf0 && c <= 0xf4)
        return 4;
    return 0;
}

/* Whether s[0..n) holds a complete, well-formed UTF-8 sequence of length n
 * (no overlongs, no surrogates, nothing above U+10FFFF). */
static int utf8_valid_seq(const unsigned char *s, int n)
{
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if (n == 3) {
        if (s[0] == 0xe0 && s[1] < 0xa0)
            return 0;
        if (s[0] == 0xed && s[1] >= 0xa0)
            return 0;
    } else if (n == 4) {
        if (s[0] == 0xf0 && s[1] < 0x90)
            return 0;
        if (s[0] == 0xf4 && s[1] >= 0x90)
            return 0;
    }
    return 1;
}

static uint32_t utf8_decode(const unsigned char *s, int n)
{
    switch (n) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1f) << 6) | (s[1] & 0x3f);
    case 3: return ((uint32_t)(s[0] & 0x0f) << 12) | ((uint32_t)(s[1] & 0x3f) << 6) | (s[2] & 0x3f);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3f) << 12) |
               ((uint32_t)(s[2] & 0x3f) << 6) | (s[3] & 0x3f);
    }
}

static int utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A growable byte buffer and a growable id vector; both report ENOMEM by
 * returning -1 and leave their contents valid. */
typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static int sbuf_put(sbuf *b, const void *data, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

typedef struct {
    int *v;
    int n, cap;
} ivec;

static int ivec_push(ivec *v, int x)
{
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 64;
        int *p = realloc(v->v, (size_t)cap * sizeof(int));
        if (!p)
            return -1;
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return 0;
}

/* ---- GPT-2 byte alphabet ----
 * Byte-level BPE writes every byte as a printable character: the bytes
 * '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves, the other 68
 * take the code points 256, 257, ... in byte order. */

static uint16_t byte_to_cp[256];
static int16_t cp_to_byte[324];

static void byte_alphabet_fill(void)
{
    int next = 256;
    for (int i = 0; i < 324; i++)
        cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int self = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        byte_to_cp[b] = (uint16_t)(self ? b : next++);
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
}

/* Tokenizers may be loaded from several threads at once. */
static void byte_alphabet_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, byte_alphabet_fill);
}

/* ---- NFC ---- */

/* Canonical compositions (first, second, composite) of Unicode 14.0.0, sorted;
 * Hangul syllables are composed arithmetically instead. */
static const uint32_t nfc_pairs[][3] = {
    {0x3C,0x338,0x226E}, {0x3D,0x338,0x2260}, {0x3E,0x338,0x226F}, {0x41,0x300,0xC0}, {0x41,0x301,0xC1},
    {0x41,0x302,0xC2}, {0x41,0x303,0xC3}, {0x41,0x304,0x100}, {0x41,0x306,0x102}, {0x41,0x307,0x226},
    {0x41,0x308,0xC4}, {0x41,0x309,0x1EA2}, {0x41,0x30A,0xC5}, {0x41,0x30C,0x1CD}, {0x41,0x30F,0x200},
    {0x41,0x311,0x202}, {0x41,0x323,0x1EA0}, {0x41,0x325,0x1E00}, {0x41,0x328,0x104}, {0x42,0x307,0x1E02},
    {0x42,0x323,0x1E04}, {0x42,0x331,0x1E06}, {0x43,0x301,0x106}, {0x43,0x302,0x108}, {0x43,0x307,0x10A},
    {0x43,0x30C,0x10C}, {0x43,0x327,0xC7}, {0x44,0x307,0x1E0A}, {0x44,0x30C,0x10E}, {0x44,0x323,0x1E0C},
    {0x44,0x327,0x1E10}, {0x44,0x32D,0x1E12}, {0x44,0x331,0x1E0E}, {0x45,0x300,0xC8}, {0x45,0x301,0xC9},
    {0x45,0x302,0xCA}, {0x45,0x303,0x1EBC}, {0x45,0x304,0x112}, {0x45,0x306,0x114}, {0x45,0x307,0x116},
    {0x45,0x308,0xCB}, {0x45,0x309,0x1EBA}, {0x45,0x30C,0x11A}, {0x45,0x30F,0x204}, {0x45,0x311,0x206},
    {0x45,0x323,0x1EB8}, {0x45,0x327,0x228}, {0x45,0x328,0x118}, {0x45,0x32D,0x1E18}, {0x45,0x330,0x1E1A},
    {0x46,0x307,0x1E1E}, {0x47,0x301,0x1F4}, {0x47,0x302,0x11C}, {0x47,0x304,0x1E20}, {0x47,0x306,0x11E},
    {0x47,0x307,0x120}, {0x47,0x30C,0x1E6}, {0x47,0x327,0x122}, {0x48,0x302,0x124}, {0x48,0x307,0x1E22},
    {0x48,0x308,0x1E26}, {0x48,0x30C,0x21E}, {0x48,0x323,0x1E24}, {0x48,0x327,0x1E28}, {0x48,0x32E,0x1E2A},
    {0x49,0x300,0xCC}, {0x49,0x301,0xCD}, {0x49,0x302,0xCE}, {0x49,0x303,0x128}, {0x49,0x304,0x12A},
    {0x49,0x306,0x12C}, {0x49,0x307,0x130}, {0x49,0x308,0xCF}, {0x49,0x309,0x1EC8}, {0x49,0x30C,0x1CF},
    {0x49,0x30F,0x208}, {0x49,0x311,0x20A}, {0x49,0x323,0x1ECA}, {0x49,0x328,0x12E}, {0x49,0x330,0x1E2C},
    {0x4A,0x302,0x134}, {0x4B,0x301,0x1E30}, {0x4B,0x30C,0x1E8}, {0x4B,0x323,0x1E32}, {0x4B,0x327,0x136},
    {0x4B,0x331,0x1E34}, {0x4C,0x301,0x139}, {0x4C,0x30C,0x13D}, {0x4C,0x323,0x1E36}, {0x4C,0x327,0x13B},
    {0x4C,0x32D,0x1E3C}, {0x4C,0x331,0x1E3A}, {0x4D,0x301,0x1E3E}, {0x4D,0x307,0x1E40}, {0x4D,0x323,0x1E42},
    {0x4E,0x300,0x1F8}, {0x4E,0x301,0x143}, {0x4E,0x303,0xD1}, {0x4E,0x307,0x1E44}, {0x4E,0x30C,0x147},
    {0x4E,0x323,0x1E46}, {0x4E,0x327,0x145}, {0x4E,0x32D,0x1E4A}, {0x4E,0x331,0x1E48}, {0x4F,0x300,0xD2},
    {0x4F,0x301,0xD3}, {0x4F,0x302,0xD4}, {0x4F,0x303,0xD5}, {0x4F,0x304,0x14C}, {0x4F,0x306,0x14E},
    {0x4F,0x307,0x22E}, {0x4F,0x308,0xD6}, {0x4F,0x309,0x1ECE}, {0x4F,0x30B,0x150}, {0x4F,0x30C,0x1D1},
    {0x4F,0x30F,0x20C}, {0x4F,0x311,0x20E}, {0x4F,0x31B,0x1A0}, {0x4F,0x323,0x1ECC}, {0x4F,0x328,0x1EA},
    {0x50,0x301,0x1E54}, {0x50,0x307,0x1E56}, {0x52,0x301,0x154}, {0x52,0x307,0x1E58}, {0x52,0x30C,0x158},
    {0x52,0x30F,0x210}, {0x52,0x311,0x212}, {0x52,0x323,0x1E5A}, {0x52,0x327,0x156}, {0x52,0x331,0x1E5E},
    {0x53,0x301,0x15A}, {0x53,0x302,0x15C}, {0x53,0x307,0x1E60}, {0x53,0x30C,0x160}, {0x53,0x323,0x1E62},
    {0x53,0x326,0x218}, {0x53,0x327,0x15E}, {0x54,0x307,0x1E6A}, {0x54,0x30C,0x164}, {0x54,0x323,0x1E6C},
    {0x54,0x326,0x21A}, {0x54,0x327,0x162}, {0x54,0x32D,0x1E70}, {0x54,0x331,0x1E6E}, {0x55,0x300,0xD9},
    {0x55,0x301,0xDA}, {0x55,0x302,0xDB}, {0x55,0x303,0x168}, {0x55,0x304,0x16A}, {0x55,0x306,0x16C},
    {0x55,0x308,0xDC}, {0x55,0x309,0x1EE6}, {0x55,0x30A,0x16E}, {0x55,0x30B,0x170}, {0x55,0x30C,0x1D3},
    {0x55,0x30F,0x214}, {0x55,0x311,0x216}, {0x55,0x31B,0x1AF}, {0x55,0x323,0x1EE4}, {0x55,0x324,0x1E72},
    {0x55,0x328,0x172}, {0x55,0x32D,0x1E76}, {0x55,0x330,0x1E74}, {0x56,0x303,0x1E7C}, {0x56,0x323,0x1E7E},
    {0x57,0x300,0x1E80}, {0x57,0x301,0x1E82}, {0x57,0x302,0x174}, {0x57,0x307,0x1E86}, {0x57,0x308,0x1E84},
    {0x57,0x323,0x1E88}, {0x58,0x307,0x1E8A}, {0x58,0x308,0x1E8C}, {0x59,0x300,0x1EF2}, {0x59,0x301,0xDD},
    {0x59,0x302,0x176}, {0x59,0x303,0x1EF8}, {0x59,0x304,0x232}, {0x59,0x307,0x1E8E}, {0x59,0x308,0x178},
    {0x59,0x309,0x1EF6}, {0x59,0x323,0x1EF4}, {0x5A,0x301,0x179}, {0x5A,0x302,0x1E90}, {0x5A,0x307,0x17B},
    {0x5A,0x30C,0x17D}, {0x5A,0x323,0x1E92}, {0x5A,0x331,0x1E94}, {0x61,0x300,0xE0}, {0x61,0x301,0xE1},
    {0x61,0x302,0xE2}, {0x61,0x303,0xE3}, {0x61,0x304,0x101}, {0x61,0x306,0x103}, {0x61,0x307,0x227},
    {0x61,0x308,0xE4}, {0x61,0x309,0x1EA3}, {0x61,0x30A,0xE5}, {0x61,0x30C,0x1CE}, {0x61,0x30F,0x201},
    {0x61,0x311,0x203}, {0x61,0x323,0x1EA1}, {0x61,0x325,0x1E01}, {0x61,0x328,0x105}, {0x62,0x307,0x1E03},
    {0x62,0x323,0x1E05}, {0x62,0x331,0x1E07}, {0x63,0x301,0x107}, {0x63,0x302,0x109}, {0x63,0x307,0x10B},
    {0x63,0x30C,0x10D}, {0x63,0x327,0xE7}, {0x64,0x307,0x1E0B}, {0x64,0x30C,0x10F}, {0x64,0x323,0x1E0D},
    {0x64,0x327,0x1E11}, {0x64,0x32D,0x1E13}, {0x64,0x331,0x1E0F}, {0x65,0x300,0xE8}, {0x65,0x301,0xE9},
    {0x65,0x302,0xEA}, {0x65,0x303,0x1EBD}, {0x65,0x304,0x113}, {0x65,0x306,0x115}, {0x65,0x307,0x117},
    {0x65,0x308,0xEB}, {0x65,0x309,0x1EBB}, {0x65,0x30C,0x11B}, {0x65,0x30F,0x205}, {0x65,0x311,0x207},
    {0x65,0x323,0x1EB9}, {0x65,0x327,0x229}, {0x65,0x328,0x119}, {0x65,0x32D,0x1E19}, {0x65,0x330,0x1E1B},
    {0x66,0x307,0x1E1F}, {0x67,0x301,0x1F5}, {0x67,0x302,0x11D}, {0x67,0x304,0x1E21}, {0x67,0x306,0x11F},
    {0x67,0x307,0x121}, {0x67,0x30C,0x1E7}, {0x67,0x327,0x123}, {0x68,0x302,0x125}, {0x68,0x307,0x1E23},
    {0x68,0x308,0x1E27}, {0x68,0x30C,0x21F}, {0x68,0x323,0x1E25}, {0x68,0x327,0x1E29}, {0x68,0x32E,0x1E2B},
    {0x68,0x331,0x1E96}, {0x69,0x300,0xEC}, {0x69,0x301,0xED}, {0x69,0x302,0xEE}, {0x69,0x303,0x129},
    {0x69,0x304,0x12B}, {0x69,0x306,0x12D}, {0x69,0x308,0xEF}, {0x69,0x309,0x1EC9}, {0x69,0x30C,0x1D0},
    {0x69,0x30F,0x209}, {0x69,0x311,0x20B}, {0x69,0x323,0x1ECB}, {0x69,0x328,0x12F}, {0x69,0x330,0x1E2D},
    {0x6A,0x302,0x135}, {0x6A,0x30C,0x1F0}, {0x6B,0x301,0x1E31}, {0x6B,0x30C,0x1E9}, {0x6B,0x323,0x1E33},
    {0x6B,0x327,0x137}, {0x6B,0x331,0x1E35}, {0x6C,0x301,0x13A}, {0x6C,0x30C,0x13E}, {0x6C,0x323,0x1E37},
    {0x6C,0x327,0x13C}, {0x6C,0x32D,0x1E3D}, {0x6C,0x331,0x1E3B}, {0x6D,0x301,0x1E3F}, {0x6D,0x307,0x1E41},
    {0x6D,0x323,0x1E43}, {0x6E,0x300,0x1F9}, {0x6E,0x301,0x144}, {0x6E,0x303,0xF1}, {0x6E,0x307,0x1E45},
    {0x6E,0x30C,0x148}, {0x6E,0x323,0x1E47}, {0x6E,0x327,0x146}, {0x6E,0x32D,0x1E4B}, {0x6E,0x331,0x1E49},
    {0x6F,0x300,0xF2}, {0x6F,0x301,0xF3}, {0x6F,0x302,0xF4}, {0x6F,0x303,0xF5}, {0x6F,0x304,0x14D},
    {0x6F,0x306,0x14F}, {0x6F,0x307,0x22F}, {0x6F,0x308,0xF6}, {0x6F,0x309,0x1ECF}, {0x6F,0x30B,0x151},
    {0x6F,0x30C,0x1D2}, {0x6F,0x30F,0x20D}, {0x6F,0x311,0x20F}, {0x6F,0x31B,0x1A1}, {0x6F,0x323,0x1ECD},
    {0x6F,0x328,0x1EB}, {0x70,0x301,0x1E55}, {0x70,0x307,0x1E57}, {0x72,0x301,0x155}, {0x72,0x307,0x1E59},
    {0x72,0x30C,0x159}, {0x72,0x30F,0x211}, {0x72,0x311,0x213}, {0x72,0x323,0x1E5B}, {0x72,0x327,0x157},
    {0x72,0x331,0x1E5F}, {0x73,0x301,0x15B}, {0x73,0x302,0x15D}, {0x73,0x307,0x1E61}, {0x73,0x30C,0x161},
    {0x73,0x323,0x1E63}, {0x73,0x326,0x219}, {0x73,0x327,0x15F}, {0x74,0x307,0x1E6B}, {0x74,0x308,0x1E97},
    {0x74,0x30C,0x165}, {0x74,0x323,0x1E6D}, {0x74,0x326,0x21B}, {0x74,0x327,0x163}, {0x74,0x32D,0x1E71},
    {0x74,0x331,0x1E6F}, {0x75,0x300,0xF9}, {0x75,0x301,0xFA}, {0x75,0x302,0xFB}, {0x75,0x303,0x169},
    {0x75,0x304,0x16B}, {0x75,0x306,0x16D}, {0x75,0x308,0xFC}, {0x75,0x309,0x1EE7}, {0x75,0x30A,0x16F},
    {0x75,0x30B,0x171}, {0x75,0x30C,0x1D4}, {0x75,0x30F,0x215}, {0x75,0x311,0x217}, {0x75,0x31B,0x1B0},
    {0x75,0x323,0x1EE5}, {0x75,0x324,0x1E73}, {0x75,0x328,0x173}, {0x75,0x32D,0x1E77}, {0x75,0x330,0x1E75},
    {0x76,0x303,0x1E7D}, {0x76,0x323,0x1E7F}, {0x77,0x300,0x1E81}, {0x77,0x301,0x1E83}, {0x77,0x302,0x175},
    {0x77,0x307,0x1E87}, {0x77,0x308,0x1E85}, {0x77,0x30A,0x1E98}, {0x77,0x323,0x1E89}, {0x78,0x307,0x1E8B},
    {0x78,0x308,0x1E8D}, {0x79,0x300,0x1EF3}, {0x79,0x301,0xFD}, {0x79,0x302,0x177}, {0x79,0x303,0x1EF9},
    {0x79,0x304,0x233}, {0x79,0x307,0x1E8F}, {0x79,0x308,0xFF}, {0x79,0x309,0x1EF7}, {0x79,0x30A,0x1E99},
    {0x79,0x323,0x1EF5}, {0x7A,0x301,0x17A}, {0x7A,0x302,0x1E91}, {0x7A,0x307,0x17C}, {0x7A,0x30C,0x17E},
    {0x7A,0x323,0x1E93}, {0x7A,0x331,0x1E95}, {0xA8,0x300,0x1FED}, {0xA8,0x301,0x385}, {0xA8,0x342,0x1FC1},
    {0xC2,0x300,0x1EA6}, {0xC2,0x301,0x1EA4}, {0xC2,0x303,0x1EAA}, {0xC2,0x309,0x1EA8}, {0xC4,0x304,0x1DE},
    {0xC5,0x301,0x1FA}, {0xC6,0x301,0x1FC}, {0xC6,0x304,0x1E2}, {0xC7,0x301,0x1E08}, {0xCA,0x300,0x1EC0},
    {0xCA,0x301,0x1EBE}, {0xCA,0x303,0x1EC4}, {0xCA,0x309,0x1EC2}, {0xCF,0x301,0x1E2E}, {0xD4,0x300,0x1ED2},
    {0xD4,0x301,0x1ED0}, {0xD4,0x303,0x1ED6}, {0xD4,0x309,0x1ED4}, {0xD5,0x301,0x1E4C}, {0xD5,0x304,0x22C},
    {0xD5,0x308,0x1E4E}, {0xD6,0x304,0x22A}, {0xD8,0x301,0x1FE}, {0xDC,0x300,0x1DB}, {0xDC,0x301,0x1D7},
    {0xDC,0x304,0x1D5}, {0xDC,0x30C,0x1D9}, {0xE2,0x300,0x1EA7}, {0xE2,0x301,0x1EA5}, {0xE2,0x303,0x1EAB},
    {0xE2,0x309,0x1EA9}, {0xE4,0x304,0x1DF}, {0xE5,0x301,0x1FB}, {0xE6,0x301,0x1FD}, {0xE6,0x304,0x1E3},
    {0xE7,0x301,0x1E09}, {0xEA,0x300,0x1EC1}, {0xEA,0x301,0x1EBF}, {0xEA,0x303,0x1EC5}, {0xEA,0x309,0x1EC3},
    {0xEF,0x301,0x1E2F}, {0xF4,0x300,0x1ED3}, {0xF4,0x301,0x1ED1}, {0xF4,0x303,0x1ED7}, {0xF4,0x309,0x1ED5},
    {0xF5,0x301,0x1E4D}, {0xF5,0x304,0x22D}, {0xF5,0x308,0x1E4F}, {0xF6,0x304,0x22B}, {0xF8,0x301,0x1FF},
    {0xFC,0x300,0x1DC}, {0xFC,0x301,0x1D8}, {0xFC,0x304,0x1D6}, {0xFC,0x30C,0x1DA}, {0x102,0x300,0x1EB0},
    {0x102,0x301,0x1EAE}, {0x102,0x303,0x1EB4}, {0x102,0x309,0x1EB2}, {0x103,0x300,0x1EB1}, {0x103,0x301,0x1EAF},
    {0x103,0x303,0x1EB5}, {0x103,0x309,0x1EB3}, {0x112,0x300,0x1E14}, {0x112,0x301,0x1E16}, {0x113,0x300,0x1E15},
    {0x113,0x301,0x1E17}, {0x14C,0x300,0x1E50}, {0x14C,0x301,0x1E52}, {0x14D,0x300,0x1E51}, {0x14D,0x301,0x1E53},
    {0x15A,0x307,0x1E64}, {0x15B,0x307,0x1E65}, {0x160,0x307,0x1E66}, {0x161,0x307,0x1E67}, {0x168,0x301,0x1E78},
    {0x169,0x301,0x1E79}, {0x16A,0x308,0x1E7A}, {0x16B,0x308,0x1E7B}, {0x17F,0x307,0x1E9B}, {0x1A0,0x300,0x1EDC},
    {0x1A0,0x301,0x1EDA}, {0x1A0,0x303,0x1EE0}, {0x1A0,0x309,0x1EDE}, {0x1A0,0x323,0x1EE2}, {0x1A1,0x300,0x1EDD},
    {0x1A1,0x301,0x1EDB}, {0x1A1,0x303,0x1EE1}, {0x1A1,0x309,0x1EDF}, {0x1A1,0x323,0x1EE3}, {0x1AF,0x300,0x1EEA},
    {0x1AF,0x301,0x1EE8}, {0x1AF,0x303,0x1EEE}, {0x1AF,0x309,0x1EEC}, {0x1AF,0x323,0x1EF0}, {0x1B0,0x300,0x1EEB},
    {0x1B0,0x301,0x1EE9}, {0x1B0,0x303,0x1EEF}, {0x1B0,0x309,0x1EED}, {0x1B0,0x323,0x1EF1}, {0x1B7,0x30C,0x1EE},
    {0x1EA,0x304,0x1EC}, {0x1EB,0x304,0x1ED}, {0x226,0x304,0x1E0}, {0x227,0x304,0x1E1}, {0x228,0x306,0x1E1C},
    {0x229,0x306,0x1E1D}, {0x22E,0x304,0x230}, {0x22F,0x304,0x231}, {0x292,0x30C,0x1EF}, {0x391,0x300,0x1FBA},
    {0x391,0x301,0x386}, {0x391,0x304,0x1FB9}, {0x391,0x306,0x1FB8}, {0x391,0x313,0x1F08}, {0x391,0x314,0x1F09},
    {0x391,0x345,0x1FBC}, {0x395,0x300,0x1FC8}, {0x395,0x301,0x388}, {0x395,0x313,0x1F18}, {0x395,0x314,0x1F19},
    {0x397,0x300,0x1FCA}, {0x397,0x301,0x389}, {0x397,0x313,0x1F28}, {0x397,0x314,0x1F29}, {0x397,0x345,0x1FCC},
    {0x399,0x300,0x1FDA}, {0x399,0x301,0x38A}, {0x399,0x304,0x1FD9}, {0x399,0x306,0x1FD8}, {0x399,0x308,0x3AA},
    {0x399,0x313,0x1F38}, {0x399,0x314,0x1F39}, {0x39F,0x300,0x1FF8}, {0x39F,0x301,0x38C}, {0x39F,0x313,0x1F48},
    {0x39F,0x314,0x1F49}, {0x3A1,0x314,0x1FEC}, {0x3A5,0x300,0x1FEA}, {0x3A5,0x301,0x38E}, {0x3A5,0x304,0x1FE9},
    {0x3A5,0x306,0x1FE8}, {0x3A5,0x308,0x3AB}, {0x3A5,0x314,0x1F59}, {0x3A9,0x300,0x1FFA}, {0x3A9,0x301,0x38F},
    {0x3A9,0x313,0x1F68}, {0x3A9,0x314,0x1F69}, {0x3A9,0x345,0x1FFC}, {0x3AC,0x345,0x1FB4}, {0x3AE,0x345,0x1FC4},
    {0x3B1,0x300,0x1F70}, {0x3B1,0x301,0x3AC}, {0x3B1,0x304,0x1FB1}, {0x3B1,0x306,0x1FB0}, {0x3B1,0x313,0x1F00},
    {0x3B1,0x314,0x1F01}, {0x3B1,0x342,0x1FB6}, {0x3B1,0x345,0x1FB3}, {0x3B5,0x300,0x1F72}, {0x3B5,0x301,0x3AD},
    {0x3B5,0x313,0x1F10}, {0x3B5,0x314,0x1F11}, {0x3B7,0x300,0x1F74}, {0x3B7,0x301,0x3AE}, {0x3B7,0x313,0x1F20},
    {0x3B7,0x314,0x1F21}, {0x3B7,0x342,0x1FC6}, {0x3B7,0x345,0x1FC3}, {0x3B9,0x300,0x1F76}, {0x3B9,0x301,0x3AF},
    {0x3B9,0x304,0x1FD1}, {0x3B9,0x306,0x1FD0}, {0x3B9,0x308,0x3CA}, {0x3B9,0x313,0x1F30}, {0x3B9,0x314,0x1F31},
    {0x3B9,0x342,0x1FD6}, {0x3BF,0x300,0x1F78}, {0x3BF,0x301,0x3CC}, {0x3BF,0x313,0x1F40}, {0x3BF,0x314,0x1F41},
    {0x3C1,0x313,0x1FE4}, {0x3C1,0x314,0x1FE5}, {0x3C5,0x300,0x1F7A}, {0x3C5,0x301,0x3CD}, {0x3C5,0x304,0x1FE1},
    {0x3C5,0x306,0x1FE0}, {0x3C5,0x308,0x3CB}, {0x3C5,0x313,0x1F50}, {0x3C5,0x314,0x1F51}, {0x3C5,0x342,0x1FE6},
    {0x3C9,0x300,0x1F7C}, {0x3C9,0x301,0x3CE}, {0x3C9,0x313,0x1F60}, {0x3C9,0x314,0x1F61}, {0x3C9,0x342,0x1FF6},
    {0x3C9,0x345,0x1FF3}, {0x3CA,0x300,0x1FD2}, {0x3CA,0x301,0x390}, {0x3CA,0x342,0x1FD7}, {0x3CB,0x300,0x1FE2},
    {0x3CB,0x301,0x3B0}, {0x3CB,0x342,0x1FE7}, {0x3CE,0x345,0x1FF4}, {0x3D2,0x301,0x3D3}, {0x3D2,0x308,0x3D4},
    {0x406,0x308,0x407}, {0x410,0x306,0x4D0}, {0x410,0x308,0x4D2}, {0x413,0x301,0x403}, {0x415,0x300,0x400},
    {0x415,0x306,0x4D6}, {0x415,0x308,0x401}, {0x416,0x306,0x4C1}, {0x416,0x308,0x4DC}, {0x417,0x308,0x4DE},
    {0x418,0x300,0x40D}, {0x418,0x304,0x4E2}, {0x418,0x306,0x419}, {0x418,0x308,0x4E4}, {0x41A,0x301,0x40C},
    {0x41E,0x308,0x4E6}, {0x423,0x304,0x4EE}, {0x423,0x306,0x40E}, {0x423,0x308,0x4F0}, {0x423,0x30B,0x4F2},
    {0x427,0x308,0x4F4}, {0x42B,0x308,0x4F8}, {0x42D,0x308,0x4EC}, {0x430,0x306,0x4D1}, {0x430,0x308,0x4D3},
    {0x433,0x301,0x453}, {0x435,0x300,0x450}, {0x435,0x306,0x4D7}, {0x435,0x308,0x451}, {0x436,0x306,0x4C2},
    {0x436,0x308,0x4DD}, {0x437,0x308,0x4DF}, {0x438,0x300,0x45D}, {0x438,0x304,0x4E3}, {0x438,0x306,0x439},
    {0x438,0x308,0x4E5}, {0x43A,0x301,0x45C}, {0x43E,0x308,0x4E7}, {0x443,0x304,0x4EF}, {0x443,0x306,0x45E},
    {0x443,0x308,0x4F1}, {0x443,0x30B,0x4F3}, {0x447,0x308,0x4F5}, {0x44B,0x308,0x4F9}, {0x44D,0x308,0x4ED},
    {0x456,0x308,0x457}, {0x474,0x30F,0x476}, {0x475,0x30F,0x477}, {0x4D8,0x308,0x4DA}, {0x4D9,0x308,0x4DB},
    {0x4E8,0x308,0x4EA}, {0x4E9,0x308,0x4EB}, {0x627,0x653,0x622}, {0x627,0x654,0x623}, {0x627,0x655,0x625},
    {0x648,0x654,0x624}, {0x64A,0x654,0x626}, {0x6C1,0x654,0x6C2}, {0x6D2,0x654,0x6D3}, {0x6D5,0x654,0x6C0},
    {0x928,0x93C,0x929}, {0x930,0x93C,0x931}, {0x933,0x93C,0x934}, {0x9C7,0x9BE,0x9CB}, {0x9C7,0x9D7,0x9CC},
    {0xB47,0xB3E,0xB4B}, {0xB47,0xB56,0xB48}, {0xB47,0xB57,0xB4C}, {0xB92,0xBD7,0xB94}, {0xBC6,0xBBE,0xBCA},
    {0xBC6,0xBD7,0xBCC}, {0xBC7,0xBBE,0xBCB}, {0xC46,0xC56,0xC48}, {0xCBF,0xCD5,0xCC0}, {0xCC6,0xCC2,0xCCA},
    {0xCC6,0xCD5,0xCC7}, {0xCC6,0xCD6,0xCC8}, {0xCCA,0xCD5,0xCCB}, {0xD46,0xD3E,0xD4A}, {0xD46,0xD57,0xD4C},
    {0xD47,0xD3E,0xD4B}, {0xDD9,0xDCA,0xDDA}, {0xDD9,0xDCF,0xDDC}, {0xDD9,0xDDF,0xDDE}, {0xDDC,0xDCA,0xDDD},
    {0x1025,0x102E,0x1026}, {0x1B05,0x1B35,0x1B06}, {0x1B07,0x1B35,0x1B08}, {0x1B09,0x1B35,0x1B0A}, {0x1B0B,0x1B35,0x1B0C},
    {0x1B0D,0x1B35,0x1B0E}, {0x1B11,0x1B35,0x1B12}, {0x1B3A,0x1B35,0x1B3B}, {0x1B3C,0x1B35,0x1B3D}, {0x1B3E,0x1B35,0x1B40},
    {0x1B3F,0x1B35,0x1B41}, {0x1B42,0x1B35,0x1B43}, {0x1E36,0x304,0x1E38}, {0x1E37,0x304,0x1E39}, {0x1E5A,0x304,0x1E5C},
    {0x1E5B,0x304,0x1E5D}, {0x1E62,0x307,0x1E68}, {0x1E63,0x307,0x1E69}, {0x1EA0,0x302,0x1EAC}, {0x1EA0,0x306,0x1EB6},
    {0x1EA1,0x302,0x1EAD}, {0x1EA1,0x306,0x1EB7}, {0x1EB8,0x302,0x1EC6}, {0x1EB9,0x302,0x1EC7}, {0x1ECC,0x302,0x1ED8},
    {0x1ECD,0x302,0x1ED9}, {0x1F00,0x300,0x1F02}, {0x1F00,0x301,0x1F04}, {0x1F00,0x342,0x1F06}, {0x1F00,0x345,0x1F80},
    {0x1F01,0x300,0x1F03}, {0x1F01,0x301,0x1F05}, {0x1F01,0x342,0x1F07}, {0x1F01,0x345,0x1F81}, {0x1F02,0x345,0x1F82},
    {0x1F03,0x345,0x1F83}, {0x1F04,0x345,0x1F84}, {0x1F05,0x345,0x1F85}, {0x1F06,0x345,0x1F86}, {0x1F07,0x345,0x1F87},
    {0x1F08,0x300,0x1F0A}, {0x1F08,0x301,0x1F0C}, {0x1F08,0x342,0x1F0E}, {0x1F08,0x345,0x1F88}, {0x1F09,0x300,0x1F0B},
    {0x1F09,0x301,0x1F0D}, {0x1F09,0x342,0x1F0F}, {0x1F09,0x345,0x1F89}, {0x1F0A,0x345,0x1F8A}, {0x1F0B,0x345,0x1F8B},
    {0x1F0C,0x345,0x1F8C}, {0x1F0D,0x345,0x1F8D}, {0x1F0E,0x345,0x1F8E}, {0x1F0F,0x345,0x1F8F}, {0x1F10,0x300,0x1F12},
    {0x1F10,0x301,0x1F14}, {0x1F11,0x300,0x1F13}, {0x1F11,0x301,0x1F15}, {0x1F18,0x300,0x1F1A}, {0x1F18,0x301,0x1F1C},
    {0x1F19,0x300,0x1F1B}, {0x1F19,0x301,0x1F1D}, {0x1F20,0x300,0x1F22}, {0x1F20,0x301,0x1F24}, {0x1F20,0x342,0x1F26},
    {0x1F20,0x345,0x1F90}, {0x1F21,0x300,0x1F23}, {0x1F21,0x301,0x1F25}, {0x1F21,0x342,0x1F27}, {0x1F21,0x345,0x1F91},
    {0x1F22,0x345,0x1F92}, {0x1F23,0x345,0x1F93}, {0x1F24,0x345,0x1F94}, {0x1F25,0x345,0x1F95}, {0x1F26,0x345,0x1F96},
    {0x1F27,0x345,0x1F97}, {0x1F28,0x300,0x1F2A}, {0x1F28,0x301,0x1F2C}, {0x1F28,0x342,0x1F2E}, {0x1F28,0x345,0x1F98},
    {0x1F29,0x300,0x1F2B}, {0x1F29,0x301,0x1F2D}, {0x1F29,0x342,0x1F2F}, {0x1F29,0x345,0x1F99}, {0x1F2A,0x345,0x1F9A},
    {0x1F2B,0x345,0x1F9B}, {0x1F2C,0x345,0x1F9C}, {0x1F2D,0x345,0x1F9D}, {0x1F2E,0x345,0x1F9E}, {0x1F2F,0x345,0x1F9F},
    {0x1F30,0x300,0x1F32}, {0x1F30,0x301,0x1F34}, {0x1F30,0x342,0x1F36}, {0x1F31,0x300,0x1F33}, {0x1F31,0x301,0x1F35},
    {0x1F31,0x342,0x1F37}, {0x1F38,0x300,0x1F3A}, {0x1F38,0x301,0x1F3C}, {0x1F38,0x342,0x1F3E}, {0x1F39,0x300,0x1F3B},
    {0x1F39,0x301,0x1F3D}, {0x1F39,0x342,0x1F3F}, {0x1F40,0x300,0x1F42}, {0x1F40,0x301,0x1F44}, {0x1F41,0x300,0x1F43},
    {0x1F41,0x301,0x1F45}, {0x1F48,0x300,0x1F4A}, {0x1F48,0x301,0x1F4C}, {0x1F49,0x300,0x1F4B}, {0x1F49,0x301,0x1F4D},
    {0x1F50,0x300,0x1F52}, {0x1F50,0x301,0x1F54}, {0x1F50,0x342,0x1F56}, {0x1F51,0x300,0x1F53}, {0x1F51,0x301,0x1F55},
    {0x1F51,0x342,0x1F57}, {0x1F59,0x300,0x1F5B}, {0x1F59,0x301,0x1F5D}, {0x1F59,0x342,0x1F5F}, {0x1F60,0x300,0x1F62},
    {0x1F60,0x301,0x1F64}, {0x1F60,0x342,0x1F66}, {0x1F60,0x345,0x1FA0}, {0x1F61,0x300,0x1F63}, {0x1F61,0x301,0x1F65},
    {0x1F61,0x342,0x1F67}, {0x1F61,0x345,0x1FA1}, {0x1F62,0x345,0x1FA2}, {0x1F63,0x345,0x1FA3}, {0x1F64,0x345,0x1FA4},
    {0x1F65,0x345,0x1FA5}, {0x1F66,0x345,0x1FA6}, {0x1F67,0x345,0x1FA7}, {0x1F68,0x300,0x1F6A}, {0x1F68,0x301,0x1F6C},
    {0x1F68,0x342,0x1F6E}, {0x1F68,0x345,0x1FA8}, {0x1F69,0x300,0x1F6B}, {0x1F69,0x301,0x1F6D}, {0x1F69,0x342,0x1F6F},
    {0x1F69,0x345,0x1FA9}, {0x1F6A,0x345,0x1FAA}, {0x1F6B,0x345,0x1FAB}, {0x1F6C,0x345,0x1FAC}, {0x1F6D,0x345,0x1FAD},
    {0x1F6E,0x345,0x1FAE}, {0x1F6F,0x345,0x1FAF}, {0x1F70,0x345,0x1FB2}, {0x1F74,0x345,0x1FC2}, {0x1F7C,0x345,0x1FF2},
    {0x1FB6,0x345,0x1FB7}, {0x1FBF,0x300,0x1FCD}, {0x1FBF,0x301,0x1FCE}, {0x1FBF,0x342,0x1FCF}, {0x1FC6,0x345,0x1FC7},
    {0x1FF6,0x345,0x1FF7}, {0x1FFE,0x300,0x1FDD}, {0x1FFE,0x301,0x1FDE}, {0x1FFE,0x342,0x1FDF}, {0x2190,0x338,0x219A},
    {0x2192,0x338,0x219B}, {0x2194,0x338,0x21AE}, {0x21D0,0x338,0x21CD}, {0x21D2,0x338,0x21CF}, {0x21D4,0x338,0x21CE},
    {0x2203,0x338,0x2204}, {0x2208,0x338,0x2209}, {0x220B,0x338,0x220C}, {0x2223,0x338,0x2224}, {0x2225,0x338,0x2226},
    {0x223C,0x338,0x2241}, {0x2243,0x338,0x2244}, {0x2245,0x338,0x2247}, {0x2248,0x338,0x2249}, {0x224D,0x338,0x226D},
    {0x2261,0x338,0x2262}, {0x2264,0x338,0x2270}, {0x2265,0x338,0x2271}, {0x2272,0x338,0x2274}, {0x2273,0x338,0x2275},
    {0x2276,0x338,0x2278}, {0x2277,0x338,0x2279}, {0x227A,0x338,0x2280}, {0x227B,0x338,0x2281}, {0x227C,0x338,0x22E0},
    {0x227D,0x338,0x22E1}, {0x2282,0x338,0x2284}, {0x2283,0x338,0x2285}, {0x2286,0x338,0x2288}, {0x2287,0x338,0x2289},
    {0x2291,0x338,0x22E2}, {0x2292,0x338,0x22E3}, {0x22A2,0x338,0x22AC}, {0x22A8,0x338,0x22AD}, {0x22A9,0x338,0x22AE},
    {0x22AB,0x338,0x22AF}, {0x22B2,0x338,0x22EA}, {0x22B3,0x338,0x22EB}, {0x22B4,0x338,0x22EC}, {0x22B5,0x338,0x22ED},
    {0x3046,0x3099,0x3094}, {0x304B,0x3099,0x304C}, {0x304D,0x3099,0x304E}, {0x304F,0x3099,0x3050}, {0x3051,0x3099,0x3052},
    {0x3053,0x3099,0x3054}, {0x3055,0x3099,0x3056}, {0x3057,0x3099,0x3058}, {0x3059,0x3099,0x305A}, {0x305B,0x3099,0x305C},
    {0x305D,0x3099,0x305E}, {0x305F,0x3099,0x3060}, {0x3061,0x3099,0x3062}, {0x3064,0x3099,0x3065}, {0x3066,0x3099,0x3067},
    {0x3068,0x3099,0x3069}, {0x306F,0x3099,0x3070}, {0x306F,0x309A,0x3071}, {0x3072,0x3099,0x3073}, {0x3072,0x309A,0x3074},
    {0x3075,0x3099,0x3076}, {0x3075,0x309A,0x3077}, {0x3078,0x3099,0x3079}, {0x3078,0x309A,0x307A}, {0x307B,0x3099,0x307C},
    {0x307B,0x309A,0x307D}, {0x309D,0x3099,0x309E}, {0x30A6,0x3099,0x30F4}, {0x30AB,0x3099,0x30AC}, {0x30AD,0x3099,0x30AE},
    {0x30AF,0x3099,0x30B0}, {0x30B1,0x3099,0x30B2}, {0x30B3,0x3099,0x30B4}, {0x30B5,0x3099,0x30B6}, {0x30B7,0x3099,0x30B8},
    {0x30B9,0x3099,0x30BA}, {0x30BB,0x3099,0x30BC}, {0x30BD,0x3099,0x30BE}, {0x30BF,0x3099,0x30C0}, {0x30C1,0x3099,0x30C2},
    {0x30C4,0x3099,0x30C5}, {0x30C6,0x3099,0x30C7}, {0x30C8,0x3099,0x30C9}, {0x30CF,0x3099,0x30D0}, {0x30CF,0x309A,0x30D1},
    {0x30D2,0x3099,0x30D3}, {0x30D2,0x309A,0x30D4}, {0x30D5,0x3099,0x30D6}, {0x30D5,0x309A,0x30D7}, {0x30D8,0x3099,0x30D9},
    {0x30D8,0x309A,0x30DA}, {0x30DB,0x3099,0x30DC}, {0x30DB,0x309A,0x30DD}, {0x30EF,0x3099,0x30F7}, {0x30F0,0x3099,0x30F8},
    {0x30F1,0x3099,0x30F9}, {0x30F2,0x3099,0x30FA}, {0x30FD,0x3099,0x30FE}, {0x11099,0x110BA,0x1109A}, {0x1109B,0x110BA,0x1109C},
    {0x110A5,0x110BA,0x110AB}, {0x11131,0x11127,0x1112E}, {0x11132,0x11127,0x1112F}, {0x11347,0x1133E,0x1134B}, {0x11347,0x11357,0x1134C},
    {0x114B9,0x114B0,0x114BC}, {0x114B9,0x114BA,0x114BB}, {0x114B9,0x114BD,0x114BE}, {0x115B8,0x115AF,0x115BA}, {0x115B9,0x115AF,0x115BB},
    {0x11935,0x11930,0x11938},
};

static uint32_t nfc_compose(uint32_t a, uint32_t b)
{
    /* Hangul: L + V -> LV, LV + T -> LVT. */
    if (a >= 0x1100 && a < 0x1113 && b >= 0x1161 && b < 0x1176)
        return 0xac00 + ((a - 0x1100) * 21 + (b - 0x1161)) * 28;
    if (a >= 0xac00 && a < 0xd7a4 && (a - 0xac00) % 28 == 0 && b > 0x11a7 && b < 0x11c3)
        return a + (b - 0x11a7);
    size_t lo = 0, hi = sizeof(nfc_pairs) / sizeof(nfc_pairs[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *p = nfc_pairs[mid];
        if (p[0] < a || (p[0] == a && p[1] < b))
            lo = mid + 1;
        else if (p[0] == a && p[1] == b)
            return p[2];
        else
            hi = mid;
    }
    return 0;
}

/* Composes adjacent canonical pairs (a base followed by combining marks,
 * Hangul jamo). This is NFC for text whose marks are already in canonical
 * order, which covers what tokenizers meet in practice; singleton
 * decompositions (U+212B ANGSTROM SIGN and the like) are left alone.
 * Text is valid UTF-8 here. Returns 0 or -1 on ENOMEM. */
static int nfc_normalize(const char *s, size_t n, sbuf *out)
{
    out->n = 0;
    uint32_t held = 0;
    int have = 0;
    size_t i = 0;
    char enc[4];
    while (i < n) {
        int len = utf8_len((unsigned char)s[i]);
        uint32_t cp = utf8_decode((const unsigned char *)s + i, len);
        i += (size_t)len;
        if (have && cp >= 0x300) {
            uint32_t c = nfc_compose(held, cp);
            if (c) {
                held = c;
                continue;
            }
        }
        if (have && sbuf_put(out, enc, (size_t)utf8_encode(held, enc)) != 0)
            return -1;
        held = cp;
        have = 1;
    }
    if (have && sbuf_put(out, enc, (size_t)utf8_encode(held, enc)) != 0)
        return -1;
    if (!out->p && sbuf_put(out, "", 0) != 0)
        return -1;
    return 0;
}

static int has_composable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0xcc) /* U+0300 and above */
            return 1;
    return 0;
}

/* ---- vocabulary and merges ---- */

static int vocab_lookup(const tokenizer *t, const char *s, size_t n)
{
    uint32_t h = hash_bytes(s, n) & t->vocab_mask;
    for (;;) {
        int32_t id = t->vocab_slots[h];
        if (id < 0)
            return -1;
        if ((size_t)t->token_lens[id] == n && memcmp(t->tokens[id], s, n) == 0)
            return id;
        h = (h + 1) & t->vocab_mask;
    }
}

/* Inserts id unless its string is already present (the first id wins). */
static void vocab_insert(tokenizer *t, int id)
{
    uint32_t h = hash_bytes(t->tokens[id], (size_t)t->token_lens[id]) & t->vocab_mask;
    for (;;) {
        int32_t other = t->vocab_slots[h];
        if (other < 0) {
            t->vocab_slots[h] = id;
            return;
        }
        if (t->token_lens[other] == t->token_lens[id] &&
            memcmp(t->tokens[other], t->tokens[id], (size_t)t->token_lens[id]) == 0)
            return;
        h = (h + 1) & t->vocab_mask;
    }
}

static const merge_slot *merge_lookup(const tokenizer *t, int a, int b)
{
    uint32_t h = hash_pair(a, b) & t->merge_mask;
    for (;;) {
        const merge_slot *m = &t->merges[h];
        if (m->a < 0)
            return NULL;
        if (m->a == a && m->b == b)
            return m;
        h = (h + 1) & t->merge_mask;
    }
}

/* Keeps the first (lowest rank) merge of a pair. */
static void merge_insert(tokenizer *t, int a, int b, int rank, int id)
{
    uint32_t h = hash_pair(a, b) & t->merge_mask;
    for (;;) {
        merge_slot *m = &t->merges[h];
        if (m->a < 0) {
            m->a = a;
            m->b = b;
            m->rank = rank;
            m->id = id;
            return;
        }
        if (m->a == a && m->b == b)
            return;
        h = (h + 1) & t->merge_mask;
    }
}

static int merges_alloc(tokenizer *t, size_t n)
{
    uint32_t size = table_size_for(n);
    t->merges = malloc(size * sizeof(merge_slot));
    if (!t->merges)
        return -1;
    for (uint32_t i = 0; i < size; i++)
        t->merges[i].a = -1;
    t->merge_mask = size - 1;
    return 0;
}

/* Allocates the per-id arrays for n ids and copies strings into one arena
 * (strs[i] of lens[i] bytes, NULL for an undefined id; attr may be NULL),
 * then builds the vocabulary hash, where a plain vocabulary entry wins over
 * an added token of the same text. */
static int vocab_build(tokenizer *t, int n, const char **strs, const int *lens, const unsigned char *attr)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (strs[i])
            total += (size_t)lens[i] + 1;
    t->n_vocab = n;
    t->tokens = calloc((size_t)n, sizeof(char *));
    t->token_lens = calloc((size_t)n, sizeof(int));
    t->attr = calloc((size_t)n, 1);
    t->arena = malloc(total + 1);
    uint32_t size = table_size_for((size_t)n);
    t->vocab_slots = malloc(size * sizeof(int32_t));
    if (!t->tokens || !t->token_lens || !t->attr || !t->arena || !t->vocab_slots)
        return -1;
    memset(t->vocab_slots, 0xff, size * sizeof(int32_t));
    t->vocab_mask = size - 1;
    if (attr)
        memcpy(t->attr, attr, (size_t)n);
    char *p = t->arena;
    for (int i = 0; i < n; i++) {
        if (!strs[i])
            continue;
        memcpy(p, strs[i], (size_t)lens[i]);
        p[lens[i]] = 0;
        t->tokens[i] = p;
        t->token_lens[i] = lens[i];
        p += lens[i] + 1;
    }
    for (int i = 0; i < n; i++)
        if (t->tokens[i] && !(t->attr[i] & ATTR_ADDED))
            vocab_insert(t, i);
    for (int i = 0; i < n; i++)
        if (t->tokens[i] && (t->attr[i] & ATTR_ADDED))
            vocab_insert(t, i);
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Marks <0xXX> tokens and fills byte_token. */
static void byte_tokens_init(tokenizer *t)
{
    for (int b = 0; b < 256; b++)
        t->byte_token[b] = -1;
    for (int i = 0; i < t->n_vocab; i++) {
        const char *s = t->tokens[i];
        if (!s || t->token_lens[i] != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
            continue;
        int hi = hexval(s[3]), lo = hexval(s[4]);
        if (hi < 0 || lo < 0)
            continue;
        t->attr[i] |= ATTR_BYTE;
        if (t->byte_token[hi * 16 + lo] < 0)
            t->byte_token[hi * 16 + lo] = i;
    }
}

static int added_cmp_len_desc(const void *a, const void *b, void *arg)
{
    const tokenizer *t = arg;
    int la = t->token_lens[*(const int *)a], lb = t->token_lens[*(const int *)b];
    return lb - la;
}

static int added_index_build(tokenizer *t)
{
    int n = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if ((t->attr[i] & ATTR_ADDED) && t->token_lens[i] > 0)
            n++;
    t->added = malloc((size_t)(n ? n : 1) * sizeof(int));
    if (!t->added)
        return -1;
    t->n_added = 0;
    memset(t->added_first, 0, sizeof(t->added_first));
    for (int i = 0; i < t->n_vocab; i++)
        if ((t->attr[i] & ATTR_ADDED) && t->token_lens[i] > 0) {
            t->added[t->n_added++] = i;
            t->added_first[(unsigned char)t->tokens[i][0]] = 1;
        }
    qsort_r(t->added, (size_t)t->n_added, sizeof(int), added_cmp_len_desc, t);
    return 0;
}

/* ---- BPE over one piece ---- */

typedef struct {
    int id;
    int len;        /* 0 once merged away */
    int prev, next;
} bpe_sym;

typedef struct {
    int rank, pos;  /* order: lower rank, then leftmost */
    int left, right;
    int left_id, right_id, new_id;
} bpe_cand;

/* Scratch reused across the pieces of one encode call. */
typedef struct {
    bpe_sym *sym;
    int sym_cap;
    bpe_cand *heap;
    int heap_n, heap_cap;
    sbuf mapped;    /* a byte-level piece written in the GPT-2 alphabet */
    sbuf norm;      /* normalized segment */
    ivec *out;
} bpe_work;

static int cand_less(const bpe_cand *x, const bpe_cand *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static int heap_push(bpe_work *w, const bpe_cand *c)
{
    if (w->heap_n == w->heap_cap) {
        int cap = w->heap_cap ? w->heap_cap * 2 : 256;
        bpe_cand *h = realloc(w->heap, (size_t)cap * sizeof(bpe_cand));
        if (!h)
            return -1;
        w->heap = h;
        w->heap_cap = cap;
    }
    int i = w->heap_n++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!cand_less(c, &w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = *c;
    return 0;
}

static bpe_cand heap_pop(bpe_work *w)
{
    bpe_cand top = w->heap[0];
    bpe_cand last = w->heap[--w->heap_n];
    int i = 0, n = w->heap_n;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && cand_less(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!cand_less(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0)
        w->heap[i] = last;
    return top;
}

static int bpe_try_pair(const tokenizer *t, bpe_work *w, int left, int right)
{
    if (left < 0 || right < 0)
        return 0;
    const merge_slot *m = merge_lookup(t, w->sym[left].id, w->sym[right].id);
    if (!m)
        return 0;
    bpe_cand c = { m->rank, left, left, right, w->sym[left].id, w->sym[right].id, m->id };
    return heap_push(w, &c);
}

static int sym_reserve(bpe_work *w, int n)
{
    if (n <= w->sym_cap)
        return 0;
    int cap = w->sym_cap ? w->sym_cap : 256;
    while (cap < n)
        cap *= 2;
    bpe_sym *s = realloc(w->sym, (size_t)cap * sizeof(bpe_sym));
    if (!s)
        return -1;
    w->sym = s;
    w->sym_cap = cap;
    return 0;
}

static int sym_add(bpe_work *w, int *n, int id, int len)
{
    bpe_sym *s = &w->sym[*n];
    s->id = id;
    s->len = len;
    s->prev = *n - 1;
    s->next = -1;
    if (*n > 0)
        w->sym[*n - 1].next = *n;
    (*n)++;
    return 0;
}

/* Merges the symbols w->sym[0..n) and appends the resulting ids. */
static int bpe_merge(const tokenizer *t, bpe_work *w, int n)
{
    w->heap_n = 0;
    for (int i = 0; i + 1 < n; i++)
        if (bpe_try_pair(t, w, i, i + 1) != 0)
            return -1;
    while (w->heap_n > 0) {
        bpe_cand c = heap_pop(w);
        bpe_sym *l = &w->sym[c.left], *r = &w->sym[c.right];
        if (l->len == 0 || r->len == 0 || l->next != c.right || l->id != c.left_id || r->id != c.right_id)
            continue; /* stale: one side was merged since */
        l->id = c.new_id;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0)
            w->sym[r->next].prev = c.left;
        if (bpe_try_pair(t, w, l->prev, c.left) != 0 || bpe_try_pair(t, w, c.left, l->next) != 0)
            return -1;
    }
    for (int i = 0; i >= 0 && i < n; i = w->sym[i].next)
        if (ivec_push(w->out, w->sym[i].id) != 0)
            return -1;
    return 0;
}

/* A byte-level piece: raw bytes, each one symbol of its GPT-2 character. */
static int bpe_byte_level_piece(const tokenizer *t, bpe_work *w, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (t->ignore_merges) {
        /* Hugging Face's ignore_merges: a piece that is itself a token is
         * taken whole, whatever the merges would have made of it. */
        char enc[4];
        w->mapped.n = 0;
        for (size_t i = 0; i < n; i++)
            if (sbuf_put(&w->mapped, enc, (size_t)utf8_encode(byte_to_cp[(unsigned char)s[i]], enc)) != 0)
                return -1;
        int id = vocab_lookup(t, w->mapped.p, w->mapped.n);
        if (id >= 0)
            return ivec_push(w->out, id);
    }
    if (n > (size_t)1 << 30 || sym_reserve(w, (int)n) != 0)
        return -1;
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        int id = t->byte_sym[(unsigned char)s[i]];
        if (id < 0)
            id = t->unk_id;
        if (id < 0)
            continue; /* a vocabulary without this byte and no <unk> */
        sym_add(w, &k, id, 1);
    }
    return bpe_merge(t, w, k);
}

/* A SentencePiece piece (already normalized): one symbol per character,
 * unknown characters as byte tokens or <unk>. */
static int bpe_spm_piece(const tokenizer *t, bpe_work *w, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (n > (size_t)1 << 30 || sym_reserve(w, (int)n) != 0)
        return -1;
    int k = 0;
    size_t i = 0;
    while (i < n) {
        int len = utf8_len((unsigned char)s[i]);
        if (len == 0 || i + (size_t)len > n)
            len = 1;
        int id = vocab_lookup(t, s + i, (size_t)len);
        if (id >= 0 && !(t->attr[id] & ATTR_ADDED)) {
            sym_add(w, &k, id, len);
        } else if (t->byte_fallback) {
            for (int j = 0; j < len; j++) {
                int b = t->byte_token[(unsigned char)s[i + (size_t)j]];
                if (b < 0)
                    b = t->unk_id;
                if (b >= 0)
                    sym_add(w, &k, b, 1);
            }
        } else if (t->unk_id >= 0) {
            if (!(t->fuse_unk && k > 0 && w->sym[k - 1].id == t->unk_id))
                sym_add(w, &k, t->unk_id, len);
        }
        i += (size_t)len;
    }
    return bpe_merge(t, w, k);
}

/* Splits s[0..n) with regex number stage ("Isolated": matches and the gaps
 * between them are both pieces) and passes each piece on. */
static int split_regex(const tokenizer *t, bpe_work *w, int stage, const char *s, size_t n,
                       pcre2_match_data *md)
{
    if (stage >= t->n_re)
        return bpe_byte_level_piece(t, w, s, n);
    size_t off = 0;
    while (off < n) {
        int rc = pcre2_match(t->re[stage], (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) {
            /* An empty match: let the character there go with the gap. */
            int len = utf8_len((unsigned char)s[ms]);
            me = ms + (size_t)(len ? len : 1);
            if (me > n)
                me = n;
            ms = off;
        }
        if (ms > off && split_regex(t, w, stage + 1, s + off, ms - off, md) != 0)
            return -1;
        if (split_regex(t, w, stage + 1, s + ms, me - ms, md) != 0)
            return -1;
        off = me;
    }
    if (off < n)
        return split_regex(t, w, stage + 1, s + off, n - off, md);
    return 0;
}

/* Encodes one segment of text that holds no added token. */
static int encode_segment(const tokenizer *t, bpe_work *w, const char *s, size_t n, int first,
                          pcre2_match_data *md)
{
    if (n == 0)
        return 0;
    if (t->kind == TOK_BYTE_LEVEL) {
        if (t->nfc && has_composable(s, n)) {
            if (nfc_normalize(s, n, &w->norm) != 0)
                return -1;
            s = w->norm.p;
            n = w->norm.n;
        }
        if (t->byte_prefix_space && s[0] != ' ') {
            sbuf tmp = { 0 };
            int rc = sbuf_put(&tmp, " ", 1) || sbuf_put(&tmp, s, n) ? -1
                   : split_regex(t, w, 0, tmp.p, tmp.n, md);
            free(tmp.p);
            return rc;
        }
        return split_regex(t, w, 0, s, n, md);
    }
    /* SentencePiece normalizer: the dummy prefix, then spaces as "▁". */
    w->norm.n = 0;
    if (t->prepend == PREPEND_ALWAYS || (t->prepend == PREPEND_FIRST && first))
        if (sbuf_put(&w->norm, t->space, (size_t)t->space_len) != 0)
            return -1;
    for (size_t i = 0; i < n; i++) {
        int rc = (s[i] == ' ' && t->replace_space) ? sbuf_put(&w->norm, t->space, (size_t)t->space_len)
                                                   : sbuf_put(&w->norm, s + i, 1);
        if (rc != 0)
            return -1;
    }
    const char *p = w->norm.p;
    size_t m = w->norm.n;
    if (!t->metaspace_split)
        return bpe_spm_piece(t, w, p, m);
    /* Metaspace split: every word starts at a "▁". */
    size_t start = 0;
    for (size_t i = 1; i + (size_t)t->space_len <= m; i++) {
        if (memcmp(p + i, t->space, (size_t)t->space_len) == 0) {
            if (bpe_spm_piece(t, w, p + start, i - start) != 0)
                return -1;
            start = i;
        }
    }
    return bpe_spm_piece(t, w, p + start, m - start);
}

/* Copies text with every ill-formed UTF-8 byte replaced by U+FFFD, so
 * that the regex engine and the normalizers only see valid text. */
static int utf8_repair(const char *s, size_t n, sbuf *out)
{
    size_t i = 0;
    while (i < n) {
        int len = utf8_len((unsigned char)s[i]);
        if (len > 0 && i + (size_t)len <= n && utf8_valid_seq((const unsigned char *)s + i, len)) {
            if (sbuf_put(out, s + i, (size_t)len) != 0)
                return -1;
            i += (size_t)len;
        } else {
            if (sbuf_put(out, "\xef\xbf\xbd", 3) != 0)
                return -1;
            i++;
        }
    }
    return sbuf_put(out, "", 0);
}

static int utf8_is_valid(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int len = utf8_len((unsigned char)s[i]);
        if (len == 0 || i + (size_t)len > n || !utf8_valid_seq((const unsigned char *)s + i, len))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

/* Encodes text; special tokens are recognised when parse_special, except
 * those starting inside [lit_begin, lit_end) (a user's text inside a chat
 * template, with --no-parse-special). */
static int encode_impl(const tokenizer *t, const char *text, int add_bos, int parse_special, size_t lit_begin,
                       size_t lit_end, int **ids)
{
    ivec out = { 0 };
    bpe_work w = { 0 };
    sbuf fixed = { 0 };
    pcre2_match_data *md = NULL;
    int rc = MDI_ENOMEM;
    size_t n = strlen(text);

    *ids = NULL;
    w.out = &out;
    if (!utf8_is_valid(text, n)) {
        if (utf8_repair(text, n, &fixed) != 0)
            goto done;
        text = fixed.p;
        n = fixed.n;
    }
    if (t->n_re > 0) {
        md = pcre2_match_data_create(1, NULL);
        if (!md)
            goto done;
    }
    if (add_bos && t->bos_id >= 0 && ivec_push(&out, t->bos_id) != 0)
        goto done;

    /* Added tokens first: the longest one starting at the leftmost place;
     * special ones only when asked to, as llama.cpp's parse_special and
     * Hugging Face's split_special_tokens=False do. */
    size_t seg = 0, i = 0;
    int first = 1;
    while (i < n) {
        int hit = -1;
        if (t->added_first[(unsigned char)text[i]]) {
            for (int k = 0; k < t->n_added; k++) {
                int id = t->added[k];
                size_t len = (size_t)t->token_lens[id];
                if ((t->attr[id] & ATTR_SPECIAL) && (!parse_special || (i >= lit_begin && i < lit_end)))
                    continue;
                if (len <= n - i && memcmp(text + i, t->tokens[id], len) == 0) {
                    hit = id;
                    break;
                }
            }
        }
        if (hit < 0) {
            i++;
            continue;
        }
        if (i > seg) {
            if (encode_segment(t, &w, text + seg, i - seg, first, md) != 0)
                goto done;
            first = 0;
        }
        if (ivec_push(&out, hit) != 0)
            goto done;
        first = 0;
        i += (size_t)t->token_lens[hit];
        seg = i;
    }
    if (n > seg && encode_segment(t, &w, text + seg, n - seg, first, md) != 0)
        goto done;
    if (out.n == 0 && ivec_push(&out, 0) == 0)
        out.n = 0; /* a valid (empty) array, so that callers may free it */
    if (!out.v)
        goto done;
    *ids = out.v;
    out.v = NULL;
    rc = out.n;
done:
    free(out.v);
    free(w.sym);
    free(w.heap);
    free(w.mapped.p);
    free(w.norm.p);
    free(fixed.p);
    if (md)
        pcre2_match_data_free(md);
    return rc;
}

int tokenizer_encode(const tokenizer *t, const char *text, int add_bos, int parse_special, int **ids)
{
    return encode_impl(t, text, add_bos, parse_special, 0, 0, ids);
}

/* ---- decoding ---- */

/* The bytes a token stands for, into out (at least token_lens[id] bytes).
 * Returns the count. */
static int token_bytes(const tokenizer *t, int id, unsigned char *out)
{
    if (id < 0 || id >= t->n_vocab || !t->tokens[id] || (t->attr[id] & ATTR_SPECIAL))
        return 0;
    const unsigned char *s = (const unsigned char *)t->tokens[id];
    int n = t->token_lens[id], k = 0;
    if (t->attr[id] & ATTR_ADDED) {
        memcpy(out, s, (size_t)n);
        return n;
    }
    if (t->attr[id] & ATTR_BYTE) {
        out[0] = (unsigned char)(hexval(s[3]) * 16 + hexval(s[4]));
        return 1;
    }
    if (t->kind == TOK_BYTE_LEVEL) {
        int i = 0;
        while (i < n) {
            int len = utf8_len(s[i]);
            if (len == 0 || i + len > n)
                len = 1;
            uint32_t cp = utf8_decode(s + i, len);
            if (cp < 324 && cp_to_byte[cp] >= 0) {
                out[k++] = (unsigned char)cp_to_byte[cp];
            } else {
                memcpy(out + k, s + i, (size_t)len);
                k += len;
            }
            i += len;
        }
        return k;
    }
    for (int i = 0; i < n;) {
        if (i + t->space_len <= n && memcmp(s + i, t->space, (size_t)t->space_len) == 0) {
            out[k++] = ' ';
            i += t->space_len;
        } else {
            out[k++] = s[i++];
        }
    }
    return k;
}

void tokenizer_stream_init(tokenizer_stream *s)
{
    memset(s, 0, sizeof(*s));
}

/* Moves the complete characters of buf[0..n) to out (U+FFFD for bytes that
 * can never form one) and keeps an unfinished last character in pending. */
static size_t utf8_flush(tokenizer_stream *s, const unsigned char *buf, size_t n, char *out, size_t cap)
{
    size_t i = 0, k = 0;
    s->n_pending = 0;
    while (i < n) {
        int len = utf8_len(buf[i]);
        if (len > 0 && i + (size_t)len > n) {
            /* Possibly the start of a character whose bytes come later. */
            int ok = 1;
            for (size_t j = i + 1; j < n; j++)
                if ((buf[j] & 0xc0) != 0x80)
                    ok = 0;
            if (ok) {
                memcpy(s->pending, buf + i, n - i);
                s->n_pending = (int)(n - i);
                break;
            }
        }
        const unsigned char *p = buf + i;
        size_t step = (size_t)len;
        if (len == 0 || i + (size_t)len > n || !utf8_valid_seq(p, len)) {
            p = (const unsigned char *)"\xef\xbf\xbd";
            step = 3;
            len = 1;
        }
        if (k + step >= cap)
            break; /* out of room: the caller's buffer was too small */
        memcpy(out + k, p, step);
        k += step;
        i += (size_t)len;
    }
    out[k] = 0;
    return k;
}

int tokenizer_stream_next(const tokenizer *t, tokenizer_stream *s, int id, char *out, size_t cap)
{
    if (cap == 0)
        return 0;
    out[0] = 0;
    if (id < 0 || id >= t->n_vocab || !t->tokens[id])
        return 0;
    size_t need = (size_t)s->n_pending + (size_t)t->token_lens[id] + 1;
    unsigned char stack[512];
    unsigned char *buf = need <= sizeof(stack) ? stack : malloc(need);
    if (!buf)
        return 0;
    memcpy(buf, s->pending, (size_t)s->n_pending);
    unsigned char *piece = buf + s->n_pending;
    int n = token_bytes(t, id, piece);
    int had_text = n > 0;
    if (n > 0 && s->n_emitted == 0 && t->kind != TOK_BYTE_LEVEL && piece[0] == ' ' &&
        !(t->attr[id] & ATTR_ADDED)) {
        /* The decoder's Strip step: SentencePiece's dummy prefix goes. */
        memmove(piece, piece + 1, (size_t)n - 1);
        n--;
    }
    if (had_text)
        s->n_emitted++;
    size_t k = utf8_flush(s, buf, (size_t)s->n_pending + (size_t)n, out, cap);
    if (buf != stack)
        free(buf);
    return (int)k;
}

char *tokenizer_decode(const tokenizer *t, const int *ids, int n)
{
    tokenizer_stream st;
    sbuf out = { 0 };
    char piece[1024];
    tokenizer_stream_init(&st);
    if (sbuf_put(&out, "", 0) != 0)
        return NULL;
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        size_t cap = sizeof(piece);
        char *p = piece;
        if (id >= 0 && id < t->n_vocab && (size_t)t->token_lens[id] * 3 + 16 > cap) {
            cap = (size_t)t->token_lens[id] * 3 + 16;
            p = malloc(cap);
            if (!p)
                goto fail;
        }
        int k = tokenizer_stream_next(t, &st, id, p, cap);
        int rc = sbuf_put(&out, p, (size_t)k);
        if (p != piece)
            free(p);
        if (rc != 0)
            goto fail;
    }
    /* A character cut off at the end becomes U+FFFD per byte. */
    for (int i = 0; i < st.n_pending; i++)
        if (sbuf_put(&out, "\xef\xbf\xbd", 3) != 0)
            goto fail;
    return out.p;
fail:
    free(out.p);
    return NULL;
}

/* ---- accessors ---- */

int tokenizer_vocab_size(const tokenizer *t) { return t->n_vocab; }
int tokenizer_bos_id(const tokenizer *t) { return t->bos_id; }
int tokenizer_pad_id(const tokenizer *t) { return t->pad_id; }
int tokenizer_adds_bos(const tokenizer *t) { return t->adds_bos; }

int tokenizer_eos_ids(const tokenizer *t, const int **ids)
{
    *ids = t->eos;
    return t->n_eos;
}

int tokenizer_is_eos(const tokenizer *t, int id)
{
    for (int i = 0; i < t->n_eos; i++)
        if (t->eos[i] == id)
            return 1;
    return 0;
}

const char *tokenizer_token(const tokenizer *t, int id)
{
    return id >= 0 && id < t->n_vocab ? t->tokens[id] : NULL;
}

int tokenizer_find(const tokenizer *t, const char *token)
{
    return vocab_lookup(t, token, strlen(token));
}

/* ---- chat templates ---- */

chat_family tokenizer_chat_family(const tokenizer *t) { return t->chat; }

const char *chat_family_name(chat_family f)
{
    switch (f) {
    case CHAT_LLAMA3: return "llama3";
    case CHAT_LLAMA2: return "llama2";
    case CHAT_CHATML: return "chatml";
    default: return "none";
    }
}

/* Python's str.strip(): the templates trim the user's message. */
static void trim_span(const char **s, size_t *n)
{
    while (*n > 0 && isspace((unsigned char)(*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

/* Appends s, trimmed as the templates' strip() does when trim. */
static int chat_put(sbuf *b, const char *s, int trim)
{
    size_t n = strlen(s);
    if (trim) trim_span(&s, &n);
    return sbuf_put(b, s, n);
}

char *tokenizer_chat_render(const tokenizer *t, const char *const *roles, const char *const *texts, int n,
                            int *add_bos)
{
    const char *bos = t->bos_id >= 0 ? t->tokens[t->bos_id] : "";
    sbuf b = { 0 };
    int bad = sbuf_put(&b, "", 0);
    *add_bos = 0;
    switch (t->chat) {
    case CHAT_LLAMA3:
        bad = bad || chat_put(&b, bos, 0);
        for (int i = 0; i < n && !bad; i++)
            bad = chat_put(&b, "<|start_header_id|>", 0) || chat_put(&b, roles[i], 0) ||
                  chat_put(&b, "<|end_header_id|>\n\n", 0) || chat_put(&b, texts[i], 1) ||
                  chat_put(&b, "<|eot_id|>", 0);
        bad = bad || chat_put(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n", 0);
        break;
    case CHAT_LLAMA2: {
        /* <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ... */
        const char *sys = NULL;
        for (int i = 0; i < n && !bad; i++) {
            if (!strcmp(roles[i], "system")) {
                sys = texts[i];
            } else if (!strcmp(roles[i], "user")) {
                bad = chat_put(&b, bos, 0) || chat_put(&b, "[INST] ", 0);
                if (sys)
                    bad = bad || chat_put(&b, "<<SYS>>\n", 0) || chat_put(&b, sys, 1) ||
                          chat_put(&b, "\n<</SYS>>\n\n", 0);
                sys = NULL;
                bad = bad || chat_put(&b, texts[i], 1) || chat_put(&b, " [/INST]", 0);
            } else {
                bad = chat_put(&b, " ", 0) || chat_put(&b, texts[i], 1) || chat_put(&b, " </s>", 0);
            }
        }
        break;
    }
    default:
        /* ChatML; also the fallback for a tokenizer without a template,
         * whose markers are then plain text */
        *add_bos = t->chat == CHAT_NONE && t->adds_bos;
        for (int i = 0; i < n && !bad; i++)
            bad = chat_put(&b, "<|im_start|>", 0) || chat_put(&b, roles[i], 0) || chat_put(&b, "\n", 0) ||
                  chat_put(&b, texts[i], 0) || chat_put(&b, "<|im_end|>\n", 0);
        bad = bad || chat_put(&b, "<|im_start|>assistant\n", 0);
        break;
    }
    if (bad) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *tokenizer_apply_chat(const tokenizer *t, const char *user_prompt)
{
    if (t->chat == CHAT_NONE)
        return NULL;
    const char *role = "user";
    int add_bos;
    return tokenizer_chat_render(t, &role, &user_prompt, 1, &add_bos);
}

int tokenizer_chat_end_id(const tokenizer *t)
{
    switch (t->chat) {
    case CHAT_LLAMA3: return tokenizer_find(t, "<|eot_id|>");
    case CHAT_CHATML: return tokenizer_find(t, "<|im_end|>");
    case CHAT_LLAMA2: return tokenizer_find(t, "</s>");
    default: return -1;
    }
}

int tokenizer_chat_turn(const tokenizer *t, const char *user, int first, int closed, int parse_special, int **ids)
{
    const char *bos = first && t->bos_id >= 0 ? t->tokens[t->bos_id] : "";
    const char *p = user;
    size_t n = strlen(p);
    const char *close, *pre, *post;
    switch (t->chat) {
    case CHAT_LLAMA3:
        trim_span(&p, &n);
        close = "<|eot_id|>";
        pre = "<|start_header_id|>user<|end_header_id|>\n\n";
        post = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
        break;
    case CHAT_LLAMA2:
        trim_span(&p, &n);
        close = "</s>";
        pre = "[INST] ";
        post = " [/INST]";
        if (!first)
            bos = t->bos_id >= 0 ? t->tokens[t->bos_id] : ""; /* each exchange opens with <s> */
        break;
    case CHAT_CHATML:
        bos = "";
        close = "<|im_end|>";
        pre = first ? "<|im_start|>user\n" : "\n<|im_start|>user\n";
        post = "<|im_end|>\n<|im_start|>assistant\n";
        break;
    default:
        *ids = NULL;
        return MDI_EUNSUPPORTED;
    }
    if (first || closed)
        close = "";
    sbuf out = { 0 };
    size_t lit_begin = strlen(close) + strlen(bos) + strlen(pre);
    if (sbuf_put(&out, close, strlen(close)) || sbuf_put(&out, bos, strlen(bos)) || sbuf_put(&out, pre, strlen(pre)) ||
        sbuf_put(&out, p, n) || sbuf_put(&out, post, strlen(post)) || sbuf_put(&out, "", 1)) {
        free(out.p);
        return MDI_ENOMEM;
    }
    int rc = encode_impl(t, out.p, 0, 1, parse_special ? 0 : lit_begin, parse_special ? 0 : lit_begin + n, ids);
    free(out.p);
    return rc;
}

/* ---- loading ---- */

void tokenizer_free(tokenizer *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n_re; i++)
        pcre2_code_free(t->re[i]);
    free(t->tokens);
    free(t->token_lens);
    free(t->attr);
    free(t->arena);
    free(t->vocab_slots);
    free(t->merges);
    free(t->added);
    free(t);
}

static tokenizer *tokenizer_new(void)
{
    tokenizer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->bos_id = -1;
    t->pad_id = -1;
    t->unk_id = -1;
    t->chat = CHAT_NONE;
    for (int b = 0; b < 256; b++) {
        t->byte_token[b] = -1;
        t->byte_sym[b] = -1;
    }
    return t;
}

static void eos_add(tokenizer *t, int id)
{
    if (id < 0 || id >= t->n_vocab || tokenizer_is_eos(t, id) || t->n_eos == MAX_EOS)
        return;
    t->eos[t->n_eos++] = id;
}

/* -- llama2.c tokenizer.bin -- */

static int rd_i32(const unsigned char *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static float rd_f32(const unsigned char *p)
{
    float v;
    memcpy(&v, p, 4);
    return v;
}

typedef struct {
    float score;
    int id;
} score_rank;

static int score_desc(const void *a, const void *b)
{
    float x = ((const score_rank *)a)->score, y = ((const score_rank *)b)->score;
    return (x < y) - (x > y);
}

static tokenizer *load_llama2c(const char *path, char *err)
{
    char *data = NULL;
    size_t size = 0;
    const char **strs = NULL;
    int *lens = NULL;
    score_rank *scores = NULL;
    int *rank = NULL;
    tokenizer *t = NULL;
    if (file_read_all(path, &data, &size, err) != 0)
        return NULL;
    const unsigned char *p = (const unsigned char *)data;
    if (size < 4) {
        mdi_fail(err, MDI_EFORMAT, "%s: truncated llama2.c tokenizer (%zu bytes, no header)", path, size);
        goto fail;
    }
    int max_len = rd_i32(p);
    if (max_len <= 0 || max_len > (1 << 16)) {
        mdi_fail(err, MDI_EFORMAT, "%s: not a llama2.c tokenizer (max_token_length %d)", path, max_len);
        goto fail;
    }
    /* First pass: count and check every record. */
    int n = 0;
    size_t off = 4;
    while (off < size) {
        if (size - off < 8) {
            mdi_fail(err, MDI_EFORMAT, "%s: truncated in token %d at byte %zu (record header)", path, n, off);
            goto fail;
        }
        int len = rd_i32(p + off + 4);
        if (len < 0 || len > max_len * 4 + 16 || (size_t)len > size - off - 8) {
            mdi_fail(err, MDI_EFORMAT, "%s: truncated or corrupt token %d at byte %zu (length %d)",
                     path, n, off, len);
            goto fail;
        }
        off += 8 + (size_t)len;
        n++;
    }
    if (n < 3) {
        mdi_fail(err, MDI_EFORMAT, "%s: llama2.c tokenizer with only %d tokens", path, n);
        goto fail;
    }
    strs = calloc((size_t)n, sizeof(*strs));
    lens = calloc((size_t)n, sizeof(*lens));
    scores = calloc((size_t)n, sizeof(*scores));
    rank = calloc((size_t)n, sizeof(*rank));
    t = tokenizer_new();
    if (!strs || !lens || !scores || !rank || !t)
        goto nomem;
    off = 4;
    for (int i = 0; i < n; i++) {
        scores[i].score = rd_f32(p + off);
        scores[i].id = i;
        lens[i] = rd_i32(p + off + 4);
        strs[i] = data + off + 8;
        off += 8 + (size_t)lens[i];
    }
    t->kind = TOK_LLAMA2C;
    if (vocab_build(t, n, strs, lens, NULL) != 0)
        goto nomem;
    /* llama2.c's conventions: 0 <unk>, 1 BOS, 2 EOS, byte tokens after. */
    t->attr[0] |= ATTR_SPECIAL;
    t->attr[1] |= ATTR_SPECIAL;
    t->attr[2] |= ATTR_SPECIAL;
    byte_tokens_init(t);
    t->byte_fallback = 1;
    t->unk_id = 0;
    memcpy(t->space, " ", 2);
    t->space_len = 1;
    t->prepend = PREPEND_ALWAYS;
    t->bos_id = 1;
    t->adds_bos = 1;
    t->eos[t->n_eos++] = 2;

    /* Scores become ranks: equal scores share a rank, so that the leftmost
     * pair wins a tie, as in run.c's strict ">" search. */
    qsort(scores, (size_t)n, sizeof(*scores), score_desc);
    for (int i = 0, r = 0; i < n; i++) {
        if (i > 0 && scores[i].score != scores[i - 1].score)
            r++;
        rank[scores[i].id] = r;
    }
    size_t n_pairs = 0;
    for (int i = 3; i < n; i++)
        n_pairs += lens[i] > 1 ? (size_t)lens[i] - 1 : 0;
    if (merges_alloc(t, n_pairs) != 0)
        goto nomem;
    for (int i = 3; i < n; i++) {
        if (t->attr[i] & ATTR_BYTE)
            continue;
        for (int k = 1; k < lens[i]; k++) {
            int a = vocab_lookup(t, t->tokens[i], (size_t)k);
            int b = vocab_lookup(t, t->tokens[i] + k, (size_t)(lens[i] - k));
            if (a >= 3 && b >= 3)
                merge_insert(t, a, b, rank[i], i);
        }
    }
    if (added_index_build(t) != 0)
        goto nomem;
    goto done;
nomem:
    mdi_fail(err, MDI_ENOMEM, "%s: out of memory loading the tokenizer", path);
fail:
    tokenizer_free(t);
    t = NULL;
done:
    free(strs);
    free(lens);
    free(scores);
    free(rank);
    free(data);
    return t;
}

/* -- tokenizer.json -- */

/* flags: JSON_DECODE_INT_AS_REAL for the config files, whose
 * model_max_length can be 1e30 written as an integer. */
static json_t *json_load_path(const char *path, size_t flags, char *err)
{
    json_error_t je;
    json_t *j = json_load_file(path, flags, &je);
    if (!j) {
        if (!file_exists(path))
            mdi_fail(err, MDI_EIO, "%s: cannot open: %s", path, strerror(ENOENT));
        else if (je.line < 0)
            mdi_fail(err, MDI_EIO, "%s: %s", path, je.text);
        else
            mdi_fail(err, MDI_EFORMAT, "%s: bad JSON at line %d column %d: %s", path, je.line,
                     je.column, je.text);
    }
    return j;
}

/* A token named in a config: "text" or {"content": "text", ...}. */
static const char *json_token_name(json_t *v)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_object(v))
        return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static int parse_normalizer(tokenizer *t, json_t *nz, const char *path, char *err)
{
    if (!nz || json_is_null(nz))
        return 0;
    const char *type = json_string_value(json_object_get(nz, "type"));
    if (!type)
        return mdi_fail(err, MDI_EFORMAT, "%s: normalizer without a type", path);
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *sub;
        json_array_foreach(json_object_get(nz, "normalizers"), i, sub)
            if (parse_normalizer(t, sub, path, err) != 0)
                return MDI_EUNSUPPORTED;
        return 0;
    }
    if (!strcmp(type, "NFC")) {
        t->nfc = 1;
        return 0;
    }
    if (!strcmp(type, "Prepend")) {
        const char *s = json_string_value(json_object_get(nz, "prepend"));
        if (!s || strlen(s) >= sizeof(t->space))
            return mdi_fail(err, MDI_EUNSUPPORTED, "%s: unsupported Prepend normalizer", path);
        strcpy(t->space, s);
        t->space_len = (int)strlen(s);
        t->prepend = PREPEND_ALWAYS;
        return 0;
    }
    if (!strcmp(type, "Replace")) {
        const char *from = json_string_value(json_object_get(json_object_get(nz, "pattern"), "String"));
        const char *to = json_string_value(json_object_get(nz, "content"));
        if (!from || !to || strcmp(from, " ") != 0 || strlen(to) >= sizeof(t->space))
            return mdi_fail(err, MDI_EUNSUPPORTED, "%s: unsupported Replace normalizer", path);
        strcpy(t->space, to);
        t->space_len = (int)strlen(to);
        t->replace_space = 1;
        return 0;
    }
    return mdi_fail(err, MDI_EUNSUPPORTED, "%s: unsupported normalizer %s", path, type);
}

static int add_regex(tokenizer *t, const char *pattern, const char *path, char *err)
{
    if (t->n_re == MAX_REGEX)
        return mdi_fail(err, MDI_EUNSUPPORTED, "%s: more than %d regex pre-tokenizers", path, MAX_REGEX);
    int ecode;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                   &ecode, &eoff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof(msg));
        return mdi_fail(err, MDI_EUNSUPPORTED, "%s: pre-tokenizer regex does not compile at %zu: %s",
                        path, (size_t)eoff, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    t->re[t->n_re++] = re;
    return 0;
}

static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pre_tokenizer(tokenizer *t, json_t *pt, int *byte_level, const char *path, char *err)
{
    if (!pt || json_is_null(pt))
        return 0;
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type)
        return mdi_fail(err, MDI_EFORMAT, "%s: pre_tokenizer without a type", path);
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *sub;
        json_array_foreach(json_object_get(pt, "pretokenizers"), i, sub)
            if (parse_pre_tokenizer(t, sub, byte_level, path, err) != 0)
                return MDI_EUNSUPPORTED;
        return 0;
    }
    if (!strcmp(type, "Split")) {
        const char *re = json_string_value(json_object_get(json_object_get(pt, "pattern"), "Regex"));
        const char *behavior = json_string_value(json_object_get(pt, "behavior"));
        if (!re || json_is_true(json_object_get(pt, "invert")) || (behavior && strcmp(behavior, "Isolated")))
            return mdi_fail(err, MDI_EUNSUPPORTED,
                            "%s: unsupported Split pre-tokenizer (only an isolating Regex)", path);
        return add_regex(t, re, path, err);
    }
    if (!strcmp(type, "ByteLevel")) {
        *byte_level = 1;
        t->byte_prefix_space = json_is_true(json_object_get(pt, "add_prefix_space"));
        json_t *use = json_object_get(pt, "use_regex");
        if (!use || json_is_true(use))
            return add_regex(t, gpt2_pattern, path, err);
        return 0;
    }
    if (!strcmp(type, "Metaspace")) {
        const char *rep = json_string_value(json_object_get(pt, "replacement"));
        if (!rep || strlen(rep) >= sizeof(t->space))
            rep = "\xe2\x96\x81";
        strcpy(t->space, rep);
        t->space_len = (int)strlen(rep);
        t->replace_space = 1;
        const char *scheme = json_string_value(json_object_get(pt, "prepend_scheme"));
        if (scheme)
            t->prepend = !strcmp(scheme, "always") ? PREPEND_ALWAYS
                       : !strcmp(scheme, "first")  ? PREPEND_FIRST
                                                   : PREPEND_NEVER;
        else
            t->prepend = json_is_false(json_object_get(pt, "add_prefix_space")) ? PREPEND_NEVER : PREPEND_ALWAYS;
        json_t *split = json_object_get(pt, "split");
        t->metaspace_split = !split || json_is_true(split);
        return 0;
    }
    if (!strcmp(type, "Digits")) /* SmolLM, StarCoder: each digit apart, or runs of them */
        return add_regex(t, json_is_true(json_object_get(pt, "individual_digits")) ? "\\p{N}" : "\\p{N}+", path,
                         err);
    return mdi_fail(err, MDI_EUNSUPPORTED, "%s: unsupported pre_tokenizer %s", path, type);
}

/* The id the post-processor's TemplateProcessing puts first, or -1. */
static int post_processor_bos(const tokenizer *t, json_t *pp)
{
    if (!pp || !json_is_object(pp))
        return -1;
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type)
        return -1;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *sub;
        json_array_foreach(json_object_get(pp, "processors"), i, sub) {
            int id = post_processor_bos(t, sub);
            if (id >= 0)
                return id;
        }
        return -1;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return -1;
    json_t *first = json_array_get(json_object_get(pp, "single"), 0);
    const char *name = json_string_value(json_object_get(json_object_get(first, "SpecialToken"), "id"));
    if (!name)
        return -1;
    json_t *spec = json_object_get(json_object_get(pp, "special_tokens"), name);
    json_t *ids = json_object_get(spec, "ids");
    json_t *id = json_array_get(ids, 0);
    if (json_is_integer(id))
        return json_integer_value(id) >= 0 && json_integer_value(id) < t->n_vocab ? (int)json_integer_value(id) : -1;
    return vocab_lookup(t, name, strlen(name));
}

static int merge_add(tokenizer *t, const char *a, size_t la, const char *b, size_t lb, int rank, sbuf *tmp)
{
    int ia = vocab_lookup(t, a, la), ib = vocab_lookup(t, b, lb);
    if (ia < 0 || ib < 0)
        return 0;
    tmp->n = 0;
    if (sbuf_put(tmp, a, la) || sbuf_put(tmp, b, lb))
        return -1;
    int id = vocab_lookup(t, tmp->p, tmp->n);
    if (id >= 0)
        merge_insert(t, ia, ib, rank, id);
    return 0;
}

static int parse_model(tokenizer *t, json_t *root, const char *path, char *err)
{
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return mdi_fail(err, MDI_EFORMAT, "%s: no \"model\" object", path);
    const char *type = json_string_value(json_object_get(model, "type"));
    if (type && strcmp(type, "BPE") != 0)
        return mdi_fail(err, MDI_EUNSUPPORTED, "%s: model type %s is not supported (only BPE)", path, type);
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab) || !json_is_array(merges))
        return mdi_fail(err, MDI_EFORMAT, "%s: BPE model without a vocab object and a merges list", path);
    json_t *added = json_object_get(root, "added_tokens");

    /* Ids may leave holes (none in practice); the highest one sizes the table. */
    int n = 0;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id > (1 << 24))
            return mdi_fail(err, MDI_EFORMAT, "%s: vocab entry \"%s\" has a bad id", path, key);
        if (id + 1 > n)
            n = (int)id + 1;
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        if (!json_is_string(json_object_get(a, "content")) || id < 0 || id > (1 << 24))
            return mdi_fail(err, MDI_EFORMAT, "%s: added_tokens[%zu] lacks content or a good id", path, i);
        if (id + 1 > n)
            n = (int)id + 1;
    }
    const char **strs = calloc((size_t)(n ? n : 1), sizeof(*strs));
    int *lens = calloc((size_t)(n ? n : 1), sizeof(*lens));
    unsigned char *attr = calloc((size_t)(n ? n : 1), 1);
    if (!strs || !lens || !attr) {
        free(strs);
        free(lens);
        free(attr);
        return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", path);
    }
    json_object_foreach(vocab, key, val) {
        int id = (int)json_integer_value(val);
        strs[id] = key;
        lens[id] = (int)strlen(key);
    }
    json_array_foreach(added, i, a) {
        int id = (int)json_integer_value(json_object_get(a, "id"));
        strs[id] = json_string_value(json_object_get(a, "content"));
        lens[id] = (int)json_string_length(json_object_get(a, "content"));
        attr[id] = ATTR_ADDED | (json_is_true(json_object_get(a, "special")) ? ATTR_SPECIAL : 0);
    }
    int rc = vocab_build(t, n, strs, lens, attr);
    free(strs);
    free(lens);
    free(attr);
    if (rc != 0)
        return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", path);

    if (merges_alloc(t, json_array_size(merges)) != 0)
        return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", path);
    sbuf tmp = { 0 };
    json_t *m;
    json_array_foreach(merges, i, m) {
        int r = 0;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            const char *sp = strchr(s, ' ');
            if (!sp) {
                free(tmp.p);
                return mdi_fail(err, MDI_EFORMAT, "%s: merges[%zu] \"%s\" is not \"a b\"", path, i, s);
            }
            r = merge_add(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), (int)i, &tmp);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            json_t *x = json_array_get(m, 0), *y = json_array_get(m, 1);
            r = merge_add(t, json_string_value(x), json_string_length(x), json_string_value(y),
                          json_string_length(y), (int)i, &tmp);
        } else {
            free(tmp.p);
            return mdi_fail(err, MDI_EFORMAT, "%s: merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", path, i);
        }
        if (r != 0) {
            free(tmp.p);
            return mdi_fail(err, MDI_ENOMEM, "%s: out of memory", path);
        }
    }
    free(tmp.p);

    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if (unk)
        t->unk_id = vocab_lookup(t, unk, strlen(unk));
    t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    return 0;
}

/* The chat family from a template's markers. */
static void chat_from_template(tokenizer *t, const char *tmpl)
{
    if (!tmpl)
        return;
    if (strstr(tmpl, "<|start_header_id|>"))
        t->chat = CHAT_LLAMA3;
    else if (strstr(tmpl, "<|im_start|>"))
        t->chat = CHAT_CHATML;
    else if (strstr(tmpl, "[INST]"))
        t->chat = CHAT_LLAMA2;
}

/* A token id given as a JSON number (read with JSON_DECODE_INT_AS_REAL):
 * -1 unless a whole number naming a token of the vocabulary. */
static int json_token_id(const tokenizer *t, json_t *v)
{
    double x = json_number_value(v);
    return x >= 0 && x < t->n_vocab && x == (double)(int)x ? (int)x : -1;
}

/* Reads tokenizer_config.json and generation_config.json from dir, when
 * present, for BOS/EOS, add_bos_token and the chat template. */
static int parse_configs(tokenizer *t, const char *dir, json_t *post, char *err)
{
    char path[4096];
    json_t *cfg = NULL;
    int have_cfg = 0, bos_named = 0;
    if (path_join(path, sizeof(path), dir, "tokenizer_config.json") == 0 && file_exists(path)) {
        cfg = json_load_path(path, JSON_DECODE_INT_AS_REAL, err);
        if (!cfg)
            return MDI_EFORMAT;
        have_cfg = 1;
    }
    int post_bos = post_processor_bos(t, post);
    if (cfg) {
        json_t *b = json_object_get(cfg, "bos_token");
        if (b) {
            bos_named = 1;
            const char *name = json_token_name(b);
            t->bos_id = name ? vocab_lookup(t, name, strlen(name)) : -1;
        }
        const char *eos = json_token_name(json_object_get(cfg, "eos_token"));
        if (eos)
            eos_add(t, vocab_lookup(t, eos, strlen(eos)));
        const char *pad = json_token_name(json_object_get(cfg, "pad_token"));
        if (pad)
            t->pad_id = vocab_lookup(t, pad, strlen(pad));
        json_t *ct = json_object_get(cfg, "chat_template");
        const char *tmpl = json_string_value(ct);
        if (json_is_array(ct)) {
            /* Several named templates: the "default" one, else the first. */
            size_t i;
            json_t *e;
            json_array_foreach(ct, i, e) {
                const char *name = json_string_value(json_object_get(e, "name"));
                if (!tmpl || (name && !strcmp(name, "default")))
                    tmpl = json_string_value(json_object_get(e, "template"));
            }
        }
        chat_from_template(t, tmpl);
    }
    if (!bos_named)
        t->bos_id = post_bos;
    json_t *add = cfg ? json_object_get(cfg, "add_bos_token") : NULL;
    if (json_is_boolean(add))
        t->adds_bos = json_is_true(add);
    else
        t->adds_bos = post_bos >= 0;
    if (t->bos_id < 0)
        t->adds_bos = 0;
    json_decref(cfg);

    if (path_join(path, sizeof(path), dir, "generation_config.json") == 0 && file_exists(path)) {
        json_t *gen = json_load_path(path, JSON_DECODE_INT_AS_REAL, err);
        if (!gen)
            return MDI_EFORMAT;
        json_t *e = json_object_get(gen, "eos_token_id");
        if (json_is_number(e))
            eos_add(t, json_token_id(t, e));
        size_t i;
        json_t *x;
        json_array_foreach(e, i, x)
            if (json_is_number(x))
                eos_add(t, json_token_id(t, x));
        json_decref(gen);
    }
    /* Generation from a chat prompt ends with the turn, so the template's
     * end-of-turn token stops it too, even where the configs name only the
     * end-of-text token (Meta's first Llama 3 Instruct files did). */
    if (t->chat == CHAT_LLAMA3)
        eos_add(t, vocab_lookup(t, "<|eot_id|>", 10));
    else if (t->chat == CHAT_CHATML)
        eos_add(t, vocab_lookup(t, "<|im_end|>", 10));
    if (!have_cfg && t->n_eos == 0) {
        static const char *names[] = { "</s>", "<|end_of_text|>", "<|endoftext|>" };
        for (size_t i = 0; i < 3 && t->n_eos == 0; i++)
            eos_add(t, vocab_lookup(t, names[i], strlen(names[i])));
    }
    return 0;
}

static tokenizer *load_hf(const char *json_path, const char *dir, char *err)
{
    tokenizer *t = tokenizer_new();
    if (!t) {
        mdi_fail(err, MDI_ENOMEM, "%s: out of memory", json_path);
        return NULL;
    }
    json_t *root = json_load_path(json_path, 0, err);
    if (!root)
        goto fail;
    if (!json_is_object(root)) {
        mdi_fail(err, MDI_EFORMAT, "%s: not a tokenizer.json (top level is not an object)", json_path);
        goto fail;
    }
    if (parse_model(t, root, json_path, err) != 0)
        goto fail;
    int byte_level = 0;
    if (parse_normalizer(t, json_object_get(root, "normalizer"), json_path, err) != 0 ||
        parse_pre_tokenizer(t, json_object_get(root, "pre_tokenizer"), &byte_level, json_path, err) != 0)
        goto fail;
    if (byte_level) {
        t->kind = TOK_BYTE_LEVEL;
        byte_alphabet_init();
        char enc[4];
        for (int b = 0; b < 256; b++)
            t->byte_sym[b] = vocab_lookup(t, enc, (size_t)utf8_encode(byte_to_cp[b], enc));
    } else if (t->space_len > 0 || t->byte_fallback) {
        t->kind = TOK_SPM;
        if (t->space_len == 0) {
            memcpy(t->space, "\xe2\x96\x81", 4);
            t->space_len = 3;
        }
        byte_tokens_init(t);
        if (!t->byte_fallback) /* <0xXX> tokens decode to bytes all the same */
            for (int b = 0; b < 256; b++)
                t->byte_token[b] = -1;
    } else {
        mdi_fail(err, MDI_EUNSUPPORTED,
                 "%s: BPE model neither byte-level nor SentencePiece-style (no ByteLevel pre-tokenizer, "
                 "no \"\xe2\x96\x81\" normalizer, no byte fallback)", json_path);
        goto fail;
    }
    if (added_index_build(t) != 0) {
        mdi_fail(err, MDI_ENOMEM, "%s: out of memory", json_path);
        goto fail;
    }
    if (parse_configs(t, dir, json_object_get(root, "post_processor"), err) != 0)
        goto fail;
    json_decref(root);
    return t;
fail:
    json_decref(root);
    tokenizer_free(t);
    return NULL;
}


/* -- GGUF metadata -- */

/* Pre-tokenizer regexes by tokenizer.ggml.pre, as the tokenizer.json files
 * of those families spell them. */
static const char llama3_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char qwen2_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ignore_merges: a piece that is a token is taken whole (Llama 3's
 * tokenizer.json says so, and llama.cpp does it for these names). digits:
 * each digit split apart first (a Digits pre-tokenizer before the regex:
 * SmolLM, StarCoder and their kin). The names are llama.cpp's, grouped as
 * it groups them. */
static const struct { const char *pre; const char *pattern; int digits, nfc, ignore_merges; } gguf_pre[] = {
    { "llama-bpe", llama3_pattern, 0, 0, 1 }, { "llama3", llama3_pattern, 0, 0, 1 },
    { "llama-v3", llama3_pattern, 0, 0, 1 }, { "falcon3", llama3_pattern, 0, 0, 1 },
    { "smaug-bpe", llama3_pattern, 0, 0, 1 }, { "dbrx", llama3_pattern, 0, 0, 0 },
    { "qwen2", qwen2_pattern, 0, 1, 0 }, { "deepseek-r1-qwen", qwen2_pattern, 0, 0, 0 },
    { "megrez", qwen2_pattern, 0, 0, 0 }, { "stablelm2", qwen2_pattern, 0, 0, 0 },
    { "default", gpt2_pattern, 0, 0, 0 }, { "gpt-2", gpt2_pattern, 0, 0, 0 }, { "gpt2", gpt2_pattern, 0, 0, 0 },
    { "phi-2", gpt2_pattern, 0, 0, 0 }, { "mpt", gpt2_pattern, 0, 0, 0 }, { "olmo", gpt2_pattern, 0, 0, 0 },
    { "jais", gpt2_pattern, 0, 0, 0 }, { "roberta-bpe", gpt2_pattern, 0, 0, 0 },
    { "smollm", gpt2_pattern, 1, 0, 0 }, { "starcoder", gpt2_pattern, 1, 0, 0 }, { "refact", gpt2_pattern, 1, 0, 0 },
    { "command-r", gpt2_pattern, 1, 0, 0 }, { "codeshell", gpt2_pattern, 1, 0, 0 },
    { "exaone", gpt2_pattern, 1, 0, 0 }, { "minerva-7b", gpt2_pattern, 1, 0, 0 },
};

/* GGUF token types (llama.cpp's llama_token_type). */
enum { GGUF_TOKEN_NORMAL = 1, GGUF_TOKEN_UNKNOWN = 2, GGUF_TOKEN_CONTROL = 3, GGUF_TOKEN_USER_DEFINED = 4,
       GGUF_TOKEN_UNUSED = 5, GGUF_TOKEN_BYTE = 6 };


/* tokenizer.ggml.model "llama" (SentencePiece: pieces with scores, "▁" for
 * spaces, byte fallback, merged by score as llama.cpp and llama2.c do) or
 * "gpt2" (byte-level BPE: merges "a b" in rank order, the regex named by
 * tokenizer.ggml.pre). */
static tokenizer *load_gguf(const char *path, char *err)
{
    gguf_file *g = gguf_open(path, err);
    if (!g)
        return NULL;
    tokenizer *t = tokenizer_new();
    const char **strs = NULL;
    int *lens = NULL, *rank = NULL;
    unsigned char *attr = NULL;
    score_rank *scores = NULL;
    char *tmpl = NULL;
    const char *model;
    size_t model_len;
    const gguf_kv *tokens, *types = NULL, *score_kv = NULL, *merges = NULL;
    int rc;
    if (!t)
        goto nomem;
    if ((rc = gguf_get_str(g, "tokenizer.ggml.model", &model, &model_len, err)) <= 0 ||
        (rc = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens, err)) <= 0) {
        if (rc == 0)
            mdi_fail(err, MDI_EFORMAT, "%s: no tokenizer in the metadata (tokenizer.ggml.model and .tokens)", path);
        goto fail;
    }
    int spm = model_len == 5 && !memcmp(model, "llama", 5), bpe = model_len == 4 && !memcmp(model, "gpt2", 4);
    if (!spm && !bpe) {
        mdi_fail(err, MDI_EUNSUPPORTED, "%s: tokenizer.ggml.model \"%.*s\" (supported: llama, gpt2)", path,
                 (int)model_len, model);
        goto fail;
    }
    if (tokens->n < 3 || tokens->n > (1 << 24)) {
        mdi_fail(err, MDI_EFORMAT, "%s: tokenizer.ggml.tokens holds %llu tokens", path, (unsigned long long)tokens->n);
        goto fail;
    }
    int n = (int)tokens->n;
    if ((rc = gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_TYPE_COUNT, &types, err)) < 0 ||
        (rc = gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_TYPE_COUNT, &score_kv, err)) < 0 ||
        (rc = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &merges, err)) < 0)
        goto fail;
    if ((types && (types->n != (uint64_t)n || types->arr_type == GGUF_TYPE_STRING)) ||
        (score_kv && (score_kv->n != (uint64_t)n || score_kv->arr_type == GGUF_TYPE_STRING))) {
        mdi_fail(err, MDI_EFORMAT, "%s: tokenizer.ggml.token_type or .scores is not %d numbers, one per token",
                 path, n);
        goto fail;
    }
    strs = calloc((size_t)n, sizeof(*strs));
    lens = calloc((size_t)n, sizeof(*lens));
    attr = calloc((size_t)n, 1);
    if (!strs || !lens || !attr)
        goto nomem;
    for (int i = 0; i < n; i++) {
        size_t len;
        strs[i] = gguf_arr_str(g, tokens, (uint64_t)i, &len);
        if (len > (1 << 20)) {
            mdi_fail(err, MDI_EFORMAT, "%s: token %d is %zu bytes long", path, i, len);
            goto fail;
        }
        lens[i] = (int)len;
        int type = types ? (int)gguf_arr_num(types, (uint64_t)i) : GGUF_TOKEN_NORMAL;
        if (type == GGUF_TOKEN_CONTROL)
            attr[i] = ATTR_ADDED | ATTR_SPECIAL;
        else if (type == GGUF_TOKEN_USER_DEFINED)
            attr[i] = ATTR_ADDED;
        else if (type == GGUF_TOKEN_UNKNOWN)
            attr[i] = ATTR_SPECIAL;
    }
    if (vocab_build(t, n, strs, lens, attr) != 0)
        goto nomem;
    int64_t id;
    int flag;
    if (spm) {
        t->kind = TOK_SPM;
        memcpy(t->space, "\xe2\x96\x81", 4);
        t->space_len = 3;
        t->replace_space = 1;
        flag = 1;
        if ((rc = gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &flag, err)) < 0)
            goto fail;
        t->prepend = flag ? PREPEND_ALWAYS : PREPEND_NEVER;
        byte_tokens_init(t);
        t->byte_fallback = 1;
        t->unk_id = vocab_lookup(t, "<unk>", 5);
        if ((rc = gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &id, err)) < 0)
            goto fail;
        if (rc == 1 && id >= 0 && id < n)
            t->unk_id = (int)id;
        /* scores become ranks (higher score merges first; equal scores
         * share a rank, so the leftmost pair wins), and every way to write a
         * token as two tokens is a merge into it */
        scores = calloc((size_t)n, sizeof(*scores));
        rank = calloc((size_t)n, sizeof(*rank));
        if (!scores || !rank)
            goto nomem;
        for (int i = 0; i < n; i++) {
            scores[i].score = score_kv ? (float)gguf_arr_num(score_kv, (uint64_t)i) : (float)-i;
            scores[i].id = i;
        }
        qsort(scores, (size_t)n, sizeof(*scores), score_desc);
        for (int i = 0, r = 0; i < n; i++) {
            if (i > 0 && scores[i].score != scores[i - 1].score)
                r++;
            rank[scores[i].id] = r;
        }
        size_t n_pairs = 0;
        for (int i = 0; i < n; i++)
            n_pairs += lens[i] > 1 ? (size_t)lens[i] - 1 : 0;
        if (merges_alloc(t, n_pairs) != 0)
            goto nomem;
        const unsigned char skip = ATTR_ADDED | ATTR_SPECIAL | ATTR_BYTE;
        for (int i = 0; i < n; i++) {
            if (t->attr[i] & skip || !t->tokens[i])
                continue;
            for (int k = 1; k < lens[i]; k++) {
                int a = vocab_lookup(t, t->tokens[i], (size_t)k);
                int b = vocab_lookup(t, t->tokens[i] + k, (size_t)(lens[i] - k));
                if (a >= 0 && b >= 0 && !(t->attr[a] & skip) && !(t->attr[b] & skip))
                    merge_insert(t, a, b, rank[i], i);
            }
        }
    } else {
        t->kind = TOK_BYTE_LEVEL;
        const char *pre = "default";
        size_t pre_len = 7;
        if ((rc = gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pre_len, err)) < 0)
            goto fail;
        size_t k = 0;
        while (k < sizeof(gguf_pre) / sizeof(gguf_pre[0]) &&
               !(strlen(gguf_pre[k].pre) == pre_len && !memcmp(gguf_pre[k].pre, pre, pre_len)))
            k++;
        if (k == sizeof(gguf_pre) / sizeof(gguf_pre[0])) {
            char names[512];
            size_t l = 0;
            for (k = 0; k < sizeof(gguf_pre) / sizeof(gguf_pre[0]) && l < sizeof(names); k++)
                l += (size_t)snprintf(names + l, sizeof(names) - l, "%s%s", k ? ", " : "", gguf_pre[k].pre);
            mdi_fail(err, MDI_EUNSUPPORTED, "%s: tokenizer.ggml.pre \"%.*s\" (supported: %s)", path, (int)pre_len,
                     pre, names);
            goto fail;
        }
        if ((gguf_pre[k].digits && add_regex(t, "\\p{N}", path, err) != 0) ||
            add_regex(t, gguf_pre[k].pattern, path, err) != 0)
            goto fail;
        t->nfc = gguf_pre[k].nfc;
        t->ignore_merges = gguf_pre[k].ignore_merges;
        if (!merges) {
            mdi_fail(err, MDI_EFORMAT, "%s: a gpt2 tokenizer without tokenizer.ggml.merges", path);
            goto fail;
        }
        if (merges_alloc(t, merges->n) != 0)
            goto nomem;
        sbuf tmp = { 0 };
        for (uint64_t i = 0; i < merges->n; i++) {
            size_t len;
            const char *m = gguf_arr_str(g, merges, i, &len);
            const char *sp = memchr(m, ' ', len);
            if (!sp) {
                free(tmp.p);
                mdi_fail(err, MDI_EFORMAT, "%s: tokenizer.ggml.merges[%llu] is not \"a b\"", path,
                         (unsigned long long)i);
                goto fail;
            }
            if (merge_add(t, m, (size_t)(sp - m), sp + 1, len - (size_t)(sp - m) - 1, (int)i, &tmp) != 0) {
                free(tmp.p);
                goto nomem;
            }
        }
        free(tmp.p);
        byte_alphabet_init();
        char enc[4];
        for (int b = 0; b < 256; b++)
            t->byte_sym[b] = vocab_lookup(t, enc, (size_t)utf8_encode(byte_to_cp[b], enc));
    }
    t->bos_id = -1;
    if ((rc = gguf_get_int(g, "tokenizer.ggml.bos_token_id", &id, err)) < 0)
        goto fail;
    if (rc == 1 && id >= 0 && id < n)
        t->bos_id = (int)id;
    flag = spm;
    if ((rc = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &flag, err)) < 0)
        goto fail;
    t->adds_bos = flag && t->bos_id >= 0;
    if ((rc = gguf_get_int(g, "tokenizer.ggml.padding_token_id", &id, err)) < 0)
        goto fail;
    if (rc == 1 && id >= 0 && id < n)
        t->pad_id = (int)id;
    static const char *const eos_keys[] = { "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                            "tokenizer.ggml.eom_token_id" };
    for (size_t i = 0; i < sizeof(eos_keys) / sizeof(eos_keys[0]); i++) {
        if ((rc = gguf_get_int(g, eos_keys[i], &id, err)) < 0)
            goto fail;
        if (rc == 1 && id >= 0 && id < n)
            eos_add(t, (int)id);
    }
    const char *ct;
    size_t ct_len;
    if ((rc = gguf_get_str(g, "tokenizer.chat_template", &ct, &ct_len, err)) < 0)
        goto fail;
    if (rc == 1) {
        if (!(tmpl = malloc(ct_len + 1)))
            goto nomem;
        memcpy(tmpl, ct, ct_len);
        tmpl[ct_len] = '\0';
        chat_from_template(t, tmpl);
    }
    if (t->chat == CHAT_LLAMA3)
        eos_add(t, vocab_lookup(t, "<|eot_id|>", 10));
    else if (t->chat == CHAT_CHATML)
        eos_add(t, vocab_lookup(t, "<|im_end|>", 10));
    if (added_index_build(t) != 0)
        goto nomem;
    goto done;
nomem:
    mdi_fail(err, MDI_ENOMEM, "%s: out of memory loading the tokenizer", path);
fail:
    tokenizer_free(t);
    t = NULL;
done:
    free(strs);
    free(lens);
    free(attr);
    free(scores);
    free(rank);
    free(tmpl);
    gguf_close(g);
    return t;
}

/* The first bytes of a file, to tell JSON from a llama2.c .bin. */
static int file_starts_with_brace(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    int c;
    while ((c = fgetc(f)) != EOF && isspace(c))
        ;
    fclose(f);
    return c == '{';
}

tokenizer *tokenizer_load(const char *path, char *err)
{
    char buf[4096];
    if (dir_exists(path)) {
        if (path_join(buf, sizeof(buf), path, "tokenizer.json") == 0 && file_exists(buf))
            return load_hf(buf, path, err);
        if (path_join(buf, sizeof(buf), path, "tokenizer.bin") == 0 && file_exists(buf))
            return load_llama2c(buf, err);
        if (path_join(buf, sizeof(buf), path, "tokenizer.gguf") == 0 && file_exists(buf))
            return load_gguf(buf, err); /* a GGUF checkpoint's, kept by prepare_model */
        glob_t g;
        memset(&g, 0, sizeof(g));
        if (path_join(buf, sizeof(buf), path, "tok*.bin") == 0 && glob(buf, 0, NULL, &g) == 0 && g.gl_pathc > 0) {
            snprintf(buf, sizeof(buf), "%s", g.gl_pathv[0]);
            globfree(&g);
            return load_llama2c(buf, err);
        }
        globfree(&g);
        mdi_fail(err, MDI_EIO, "%s: no tokenizer.json, tokenizer.bin, tokenizer.gguf or tok*.bin in this folder",
                 path);
        return NULL;
    }
    if (!file_exists(path)) {
        mdi_fail(err, MDI_EIO, "%s: cannot open: %s", path, strerror(ENOENT));
        return NULL;
    }
    if (str_has_suffix(path, ".gguf"))
        return load_gguf(path, err);
    if (file_starts_with_brace(path)) {
        snprintf(buf, sizeof(buf), "%s", path);
        char *slash = strrchr(buf, '/');
        if (slash)
            *slash = 0;
        else
            strcpy(buf, ".");
        return load_hf(path, buf, err);
    }
    return load_llama2c(path, err);
}
