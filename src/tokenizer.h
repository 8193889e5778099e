/*
 * tokenizer: BPE tokenizers from Hugging Face tokenizer.json, in both
 * families, and llama2.c's tokenizer.bin.
 *
 *  - byte-level BPE with a regex pre-tokenizer (Llama 3, Qwen2/Qwen3,
 *    GPT-2 style): text split by the pre-tokenizer regex (PCRE2, UTF mode),
 *    each piece mapped to the byte-level alphabet, merged by merge rank;
 *  - SentencePiece-style BPE (Llama 2, TinyLlama, Mistral, stories260K):
 *    normalizer prepends "▁" and maps " " to "▁", merges by rank, unknown
 *    characters fall back to <0xXX> byte tokens.
 *  - llama2.c tokenizer.bin: vocabulary with scores, merged by score the
 *    way llama2.c's run.c does, SentencePiece conventions otherwise.
 *
 * Added tokens (special or not) are matched in the input before the model
 * runs when parse_special is set. BOS is added as tokenizer_config.json /
 * the post-processor says.
 */
#ifndef MDI_TOKENIZER_H
#define MDI_TOKENIZER_H

#include <stddef.h>

typedef struct tokenizer tokenizer;

/* path: a folder holding tokenizer.json (and optionally tokenizer_config.json,
 * generation_config.json), or a tokenizer.json file, or a llama2.c
 * tokenizer .bin file, or a folder with a llama2.c checkpoint and its
 * tokenizer.bin / tok*.bin. NULL on failure with the reason in err. */
tokenizer *tokenizer_load(const char *path, char *err);
void tokenizer_free(tokenizer *t);

int tokenizer_vocab_size(const tokenizer *t);
int tokenizer_bos_id(const tokenizer *t);      /* -1 if none */
/* Padding id (tokenizer_config.json pad_token, a GGUF's
 * tokenizer.ggml.padding_token_id); -1 if none. */
int tokenizer_pad_id(const tokenizer *t);
/* End-of-sequence ids: eos_token, plus generation_config.json's eos_token_id
 * list when present (e.g. Llama 3 <|eot_id|>). Returns the count. */
int tokenizer_eos_ids(const tokenizer *t, const int **ids);
int tokenizer_is_eos(const tokenizer *t, int id);
/* Whether encoding a prompt should start with BOS (tokenizer_config.json
 * add_bos_token, or the post-processor template). */
int tokenizer_adds_bos(const tokenizer *t);
/* The token's string as stored in the vocabulary (borrowed), NULL if out of range. */
const char *tokenizer_token(const tokenizer *t, int id);
/* Looks a token string up; -1 if absent. */
int tokenizer_find(const tokenizer *t, const char *token);

/* Encodes text. add_bos: prepend BOS. parse_special: recognise added
 * tokens such as <|eot_id|> in the text. *ids is a new array (caller
 * frees). Returns the count, or a negative error code. */
int tokenizer_encode(const tokenizer *t, const char *text, int add_bos,
                     int parse_special, int **ids);

/* Streaming decoder: feed ids one at a time, get back the text that is
 * complete so far. Never splits a UTF-8 character (bytes of a partial
 * character are held until it completes); the SentencePiece leading space
 * of the first piece is stripped, as the decoder's Strip step does. Special
 * tokens (BOS/EOS) produce no text. */
typedef struct {
    unsigned char pending[8];
    int n_pending;
    int n_emitted;      /* pieces emitted so far */
} tokenizer_stream;

void tokenizer_stream_init(tokenizer_stream *s);
/* Writes NUL-terminated text into out (cap >= 256 is always enough for one
 * token) and returns its length. */
int tokenizer_stream_next(const tokenizer *t, tokenizer_stream *s, int id, char *out, size_t cap);
/* Whole-sequence decode (new string, caller frees). */
char *tokenizer_decode(const tokenizer *t, const int *ids, int n);

/* Chat templates: the family picked from tokenizer_config.json's
 * chat_template (Llama 3 header ids, Llama 2 [INST], ChatML <|im_start|>). */
typedef enum {
    CHAT_NONE = 0,
    CHAT_LLAMA3,
    CHAT_LLAMA2,
    CHAT_CHATML
} chat_family;

chat_family tokenizer_chat_family(const tokenizer *t);
const char *chat_family_name(chat_family f);
/* The prompt wrapped as one user turn followed by the assistant's turn
 * opening (new string, caller frees; special tokens written as text, so
 * encode it with parse_special). NULL if the tokenizer has no known template.
 * The returned text starts with BOS's text where the template does, so
 * encode it with add_bos = 0 then. */
char *tokenizer_apply_chat(const tokenizer *t, const char *user_prompt);
/* A conversation (roles "system", "user", "assistant"; n messages) rendered
 * with the template and followed by the assistant's turn opening (new
 * string; NULL: out of memory). Without a known template it is ChatML, as
 * llama-server does, and *add_bos says whether to encode it with BOS; with
 * one, the text starts with BOS's text where the template does (*add_bos 0). */
char *tokenizer_chat_render(const tokenizer *t, const char *const *roles, const char *const *texts, int n,
                            int *add_bos);

/* One user turn of a conversation as token ids (new array), the ids to
 * append to what the KV cache already holds: for a later turn (first = 0)
 * the end-of-turn marker of the assistant's reply when the cache does not
 * end with it yet (closed = 0), then the user's turn and the opening of the
 * assistant's; the first turn starts with BOS where the template does. The
 * template's markers are always special tokens; special tokens written in
 * the user's text are recognised only when parse_special. Returns the count
 * or a negative code (MDI_EUNSUPPORTED: no known template). */
int tokenizer_chat_turn(const tokenizer *t, const char *user, int first, int closed, int parse_special, int **ids);
/* The template's end-of-turn token (<|eot_id|>, <|im_end|>, </s>); -1 if none. */
int tokenizer_chat_end_id(const tokenizer *t);

#endif
