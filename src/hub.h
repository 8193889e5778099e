/*
 * hub: downloads checkpoints from a Hugging Face hub (or anything that
 * speaks its file layout) with libcurl, for prepare_model.
 *
 * URL layout. Every file of a repository at a revision is one GET:
 *
 *     {endpoint}/{owner}/{name}/resolve/{revision}/{path}
 *
 *     endpoint   opts.endpoint, else $HF_ENDPOINT, else https://huggingface.co
 *     revision   opts.revision, else "main"; sent URL-encoded ("refs/pr/1"
 *                becomes "refs%2Fpr%2F1"), path segments encoded one by one
 *     token      opts.token, else $HF_TOKEN; sent as
 *                "Authorization: Bearer <token>" (gated and private repos).
 *                curl drops it when a redirect leaves the host, so the CDN
 *                that serves LFS files never sees it.
 *
 * The real hub answers LFS files with a 302 to a CDN; the 302 carries
 * X-Linked-Size (the file size) and X-Linked-ETag ("<64 hex>", the sha256 of
 * the file). Small git files come back directly with ETag = git blob id (40
 * hex, not a sha256). So the expected size is X-Linked-Size, else the total
 * of Content-Range (206), else Content-Length (200); the expected sha256 is
 * X-Linked-ETag, else ETag, and only when it is exactly 64 hex digits.
 *
 * Resume protocol, per file:
 *
 *     dest.part  <- bytes received so far, always a prefix of the file
 *
 *     N = size of dest.part (0 if absent); hash its N bytes once
 *     GET with "Range: bytes=N-" when N > 0
 *       206, Content-Range: bytes N-M/T   append, keep hashing
 *       200 (server ignored Range)        truncate dest.part, start over
 *       416, Content-Range total T         dest.part already whole if N == T,
 *                                         else truncate and start over
 *       connection dropped or stalled     retry (up to opts.retries), resuming
 *                                         from the new N, with a short backoff
 *     complete: check size == expected, sha256 == etag (when 64 hex),
 *               fsync, rename dest.part -> dest (atomic in one folder)
 *     mismatch: delete dest.part (it is known bad) and fail
 *
 * A dest that already exists is checked first with a HEAD request: when its
 * size matches (and its sha256, when the hub gives one) it is kept and
 * nothing is downloaded, so re-running an interrupted checkpoint download
 * only fetches what is missing.
 *
 * A stalled server cannot hang a download: no byte for opts.timeout_s
 * seconds (or curl's averaged speed under 1 byte/s that long) aborts the
 * attempt, and the retry resumes.
 *
 * Ownership: hub_opts and every string passed in are borrowed for the
 * duration of the call. Nothing returned needs freeing. Calls are thread-safe
 * (each uses its own curl handle; hub_global_init runs once).
 */
#ifndef MDI_HUB_H
#define MDI_HUB_H

#include <stddef.h>

#define HUB_DEFAULT_ENDPOINT "https://huggingface.co"

typedef struct {
    const char *endpoint; /* NULL: $HF_ENDPOINT or HUB_DEFAULT_ENDPOINT */
    const char *token;    /* NULL: $HF_TOKEN or none; "" means none */
    const char *revision; /* NULL: "main" */
    int progress;         /* 1: progress bar on stderr when it is a tty, and
                             one summary line per file either way */
    long timeout_s;       /* connect timeout and stall window; 0: 30 s */
    int retries;          /* extra attempts after a dropped transfer; 0: 5,
                             negative: none */
} hub_opts;

/* curl_global_init, once per process (pthread_once). Every other function
 * calls it; call it yourself from main before starting threads if you like.
 * Returns 0 or MDI_ENET. */
int hub_global_init(char *err);

/* 1 when source looks like a repository id "owner/name" (one slash, both
 * parts of [A-Za-z0-9._-], not "." or "..") and is not an existing local
 * file or folder; 0 otherwise. */
int hub_is_repo_id(const char *source);

/* Writes the resolve URL of repo/file under o into url (cap bytes).
 * Returns 0 or MDI_EARG (too long). */
int hub_file_url(const hub_opts *o, const char *repo, const char *file, char *url,
                 size_t cap);

/* Downloads repo/file (a path inside the repo, may contain '/') to dest_path,
 * creating its folder, resuming dest_path.part and verifying as above.
 * Returns 0 when dest_path is in place, 1 when optional and the hub says 404
 * (nothing is left behind), or a negative code with one line in err:
 *   MDI_EAUTH    401/403: gated or private, names --hf-token / HF_TOKEN
 *   MDI_ENET     404 on a required file (names file and URL), other HTTP
 *                errors, connection failures (curl's message and the URL),
 *                transfers still incomplete after the retries
 *   MDI_ETIMEOUT stalled on every attempt
 *   MDI_EPROTO   size or sha256 mismatch (expected vs got)
 *   MDI_EIO      local file errors
 *   MDI_EARG     bad arguments (empty file name, URL too long) */
int hub_download_file(const hub_opts *o, const char *repo, const char *file,
                      const char *dest_path, int optional, char *err);

/* Downloads each of the n_files named files (all required) into dest_dir,
 * each stored under its base name: "stories260K/tok512.bin" lands in
 * dest_dir/tok512.bin. For llama2.c-format repos with no config.json.
 * Stops at the first failure. Returns 0 or a negative code as above. */
int hub_download_files(const hub_opts *o, const char *repo, const char *const *files,
                       int n_files, const char *dest_dir, char *err);

/* Downloads a Hugging Face transformers checkpoint into dest_dir:
 *   config.json, tokenizer.json                      required
 *   tokenizer_config.json, generation_config.json    optional
 *   model.safetensors.index.json, if the repo has one, then every shard its
 *   weight_map names (flat file names only); else model.safetensors.
 * Returns 0 or a negative code as above. */
int hub_download_checkpoint(const hub_opts *o, const char *repo, const char *dest_dir,
                            char *err);

#endif
