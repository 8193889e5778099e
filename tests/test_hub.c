/*
 * test_hub: the hub downloader against tests/hub_server.py, a real HTTP
 * server on a free loopback port, through real libcurl. Each case starts
 * the server with the faults it needs and stops it at the end.
 */
#include "hub.h"
#include "test.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SERVER_SCRIPT "tests/hub_server.py"

static char tmp_root[256];
static char stories_dir[512];  /* HF layout: config.json, model.safetensors, ... */
static char llama2c_dir[512];  /* stories260K.bin, tok512.bin */
static char tinyllamas[512];   /* tmp folder with stories260K -> llama2c_dir */
static char sharded_dir[512];  /* tmp folder with an index and two shards */

typedef struct {
    pid_t pid;
    int port;
    char endpoint[64];
    char log[600];
} test_server;

/* Starts hub_server.py with the repo maps and the extra options (NULL
 * terminated) and reads its port from the first line of its stdout. */
static int server_start(test_server *s, const char *const *extra)
{
    static int n_logs;
    char map1[700], map2[700], map3[700];
    snprintf(map1, sizeof(map1), "test/stories260K=%s", stories_dir);
    snprintf(map2, sizeof(map2), "karpathy/tinyllamas=%s", tinyllamas);
    snprintf(map3, sizeof(map3), "test/sharded=%s", sharded_dir);
    snprintf(s->log, sizeof(s->log), "%s/server%d.log", tmp_root, n_logs++);
    const char *argv[32];
    int argc = 0;
    argv[argc++] = "/usr/bin/python3";
    argv[argc++] = SERVER_SCRIPT;
    argv[argc++] = "--port";
    argv[argc++] = "0";
    argv[argc++] = "--log";
    argv[argc++] = s->log;
    argv[argc++] = "--map";
    argv[argc++] = map1;
    argv[argc++] = "--map";
    argv[argc++] = map2;
    argv[argc++] = "--map";
    argv[argc++] = map3;
    for (int i = 0; extra && extra[i] && argc < 31; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;

    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    char line[32];
    size_t n = 0;
    while (n < sizeof(line) - 1) {
        ssize_t r = read(fds[0], line + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || line[n] == '\n')
            break;
        n++;
    }
    line[n] = 0;
    close(fds[0]);
    s->pid = pid;
    s->port = atoi(line);
    if (s->port <= 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        return -1;
    }
    snprintf(s->endpoint, sizeof(s->endpoint), "http://127.0.0.1:%d", s->port);
    return 0;
}

static void server_stop(test_server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

static int files_equal(const char *a, const char *b)
{
    char *da = NULL, *db = NULL;
    size_t na = 0, nb = 0;
    int eq = file_read_all(a, &da, &na, NULL) == 0 && file_read_all(b, &db, &nb, NULL) == 0 &&
             na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return eq;
}

/* Occurrences of needle in the server's request log. */
static int log_count(const test_server *s, const char *needle)
{
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(s->log, &text, &len, NULL) != 0)
        return 0;
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    free(text);
    return n;
}

static void make_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmp_root, name);
    mkdir_p(out, NULL);
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static int copy_prefix(const char *src, const char *dst, size_t n)
{
    char *d = NULL;
    size_t len = 0;
    if (file_read_all(src, &d, &len, NULL) != 0)
        return -1;
    int rc = write_file(dst, d, n < len ? n : len);
    free(d);
    return rc;
}

/* Builds the sharded checkpoint: the stories260K metadata plus an index
 * whose weight_map names two shards of random bytes. */
static int make_sharded(void)
{
    make_dir(sharded_dir, sizeof(sharded_dir), "sharded");
    static const char *meta[] = {"config.json", "tokenizer.json", "tokenizer_config.json"};
    char src[700], dst[700];
    for (size_t i = 0; i < 3; i++) {
        snprintf(src, sizeof(src), "%s/%s", stories_dir, meta[i]);
        snprintf(dst, sizeof(dst), "%s/%s", sharded_dir, meta[i]);
        if (copy_prefix(src, dst, (size_t)-1) != 0)
            return -1;
    }
    const char *index =
        "{\"metadata\": {\"total_size\": 500000}, \"weight_map\": {\n"
        "  \"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\",\n"
        "  \"model.layers.0.mlp.up_proj.weight\": \"model-00001-of-00002.safetensors\",\n"
        "  \"model.norm.weight\": \"model-00002-of-00002.safetensors\",\n"
        "  \"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}\n";
    snprintf(dst, sizeof(dst), "%s/model.safetensors.index.json", sharded_dir);
    if (write_file(dst, index, strlen(index)) != 0)
        return -1;
    size_t sizes[2] = {300001, 199999};
    unsigned seed = 12345;
    for (int s = 0; s < 2; s++) {
        unsigned char *buf = malloc(sizes[s]);
        for (size_t i = 0; i < sizes[s]; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (unsigned char)(seed >> 16);
        }
        snprintf(dst, sizeof(dst), "%s/model-0000%d-of-00002.safetensors", sharded_dir, s + 1);
        int rc = write_file(dst, buf, sizes[s]);
        free(buf);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void test_repo_id(void)
{
    int ok = hub_is_repo_id("meta-llama/Llama-3.2-1B-Instruct") &&
             hub_is_repo_id("karpathy/tinyllamas") && !hub_is_repo_id("tinyllamas") &&
             !hub_is_repo_id("a/b/c") && !hub_is_repo_id("/abs/path") &&
             !hub_is_repo_id("owner/") && !hub_is_repo_id("../x") && !hub_is_repo_id("a b/c") &&
             !hub_is_repo_id("src/hub.c") && !hub_is_repo_id(NULL);
    test_result(ok, "hub_is_repo_id", "classification wrong");

    hub_opts o = {.endpoint = "http://h:1/", .revision = "refs/pr/1"};
    char url[256];
    int rc = hub_file_url(&o, "a/b", "sub dir/f.bin", url, sizeof(url));
    test_result(rc == 0 && !strcmp(url, "http://h:1/a/b/resolve/refs%2Fpr%2F1/sub%20dir/f.bin"),
                "hub_file_url encodes revision and path", "got %s", url);
}

static void test_checkpoint(void)
{
    test_server s;
    if (server_start(&s, NULL) != 0) {
        test_result(0, "server start", "cannot start %s", SERVER_SCRIPT);
        return;
    }
    hub_opts o = {.endpoint = s.endpoint, .progress = 1, .timeout_s = 5};
    char dest[600], err[MDI_ERR_LEN] = "";
    make_dir(dest, sizeof(dest), "ckpt");
    int rc = hub_download_checkpoint(&o, "test/stories260K", dest, err);
    test_result(rc == 0, "checkpoint download", "rc=%d: %s", rc, err);
    static const char *files[] = {"config.json", "generation_config.json", "model.safetensors",
                                  "tokenizer.json", "tokenizer_config.json"};
    int same = 1;
    char a[700], b[700];
    for (size_t i = 0; i < 5; i++) {
        snprintf(a, sizeof(a), "%s/%s", dest, files[i]);
        snprintf(b, sizeof(b), "%s/%s", stories_dir, files[i]);
        if (!files_equal(a, b)) {
            same = 0;
            printf("# differs: %s\n", files[i]);
        }
        snprintf(a, sizeof(a), "%s/%s.part", dest, files[i]);
        if (file_exists(a))
            same = 0;
    }
    test_result(same, "checkpoint files equal the source, no .part left", "see above");
    snprintf(a, sizeof(a), "%s/model.safetensors.index.json", dest);
    test_result(!file_exists(a) && !file_exists(strcat(a, ".part")),
                "absent optional index leaves nothing", "%s exists", a);

    /* A second run finds everything in place and fetches no body again. */
    rc = hub_download_checkpoint(&o, "test/stories260K", dest, err);
    int gets = log_count(&s, "GET /test/stories260K/resolve/main/model.safetensors ");
    int heads = log_count(&s, "HEAD /test/stories260K/resolve/main/model.safetensors ");
    test_result(rc == 0 && gets == 1 && heads == 1, "second run keeps verified files",
                "rc=%d gets=%d heads=%d: %s", rc, gets, heads, err);

    /* A stale final file of the wrong content is downloaded again. */
    snprintf(a, sizeof(a), "%s/config.json", dest);
    write_file(a, "{}", 2);
    snprintf(b, sizeof(b), "%s/config.json", stories_dir);
    rc = hub_download_file(&o, "test/stories260K", "config.json", a, 0, err);
    test_result(rc == 0 && files_equal(a, b), "stale final file replaced", "rc=%d: %s", rc, err);
    server_stop(&s);
}

static void test_llama2c(void)
{
    test_server s;
    if (server_start(&s, NULL) != 0) {
        test_result(0, "server start", "cannot start %s", SERVER_SCRIPT);
        return;
    }
    hub_opts o = {.endpoint = s.endpoint, .timeout_s = 5};
    char dest[600], err[MDI_ERR_LEN] = "", a[700], b[700];
    make_dir(dest, sizeof(dest), "llama2c");
    const char *files[] = {"stories260K/stories260K.bin", "stories260K/tok512.bin"};
    int rc = hub_download_files(&o, "karpathy/tinyllamas", files, 2, dest, err);
    int same = 1;
    for (int i = 0; i < 2; i++) {
        const char *base = strchr(files[i], '/') + 1;
        snprintf(a, sizeof(a), "%s/%s", dest, base);
        snprintf(b, sizeof(b), "%s/%s", llama2c_dir, base);
        same &= files_equal(a, b);
    }
    test_result(rc == 0 && same, "llama2.c files from a repo subfolder", "rc=%d same=%d: %s", rc,
                same, err);

    /* No config.json: the checkpoint layout is refused with a clear line. */
    rc = hub_download_checkpoint(&o, "karpathy/tinyllamas", dest, err);
    test_result(rc < 0 && strstr(err, "config.json") && strstr(err, "404"),
                "checkpoint of a llama2.c repo names config.json", "rc=%d: %s", rc, err);
    server_stop(&s);
}

static void test_sharded(void)
{
    test_server s;
    if (server_start(&s, NULL) != 0) {
        test_result(0, "server start", "cannot start %s", SERVER_SCRIPT);
        return;
    }
    hub_opts o = {.endpoint = s.endpoint, .timeout_s = 5};
    char dest[600], err[MDI_ERR_LEN] = "", a[700], b[700];
    make_dir(dest, sizeof(dest), "sharded_out");
    int rc = hub_download_checkpoint(&o, "test/sharded", dest, err);
    static const char *files[] = {"model.safetensors.index.json",
                                  "model-00001-of-00002.safetensors",
                                  "model-00002-of-00002.safetensors", "config.json"};
    int same = 1;
    for (int i = 0; i < 4; i++) {
        snprintf(a, sizeof(a), "%s/%s", dest, files[i]);
        snprintf(b, sizeof(b), "%s/%s", sharded_dir, files[i]);
        same &= files_equal(a, b);
    }
    int shard_gets = log_count(&s, "GET /test/sharded/resolve/main/model-0000");
    int single = log_count(&s, "/test/sharded/resolve/main/model.safetensors ");
    test_result(rc == 0 && same && shard_gets == 2 && single == 0,
                "sharded checkpoint: index and each shard once",
                "rc=%d same=%d shard_gets=%d single=%d: %s", rc, same, shard_gets, single, err);

    /* An index naming a path outside dest_dir is refused. */
    char bad_repo[600];
    make_dir(bad_repo, sizeof(bad_repo), "sharded_out/evil");
    snprintf(a, sizeof(a), "%s/model.safetensors.index.json", sharded_dir);
    const char *evil = "{\"weight_map\": {\"x\": \"../../escape.safetensors\"}}";
    write_file(a, evil, strlen(evil));
    rc = hub_download_checkpoint(&o, "test/sharded", bad_repo, err);
    test_result(rc == MDI_EFORMAT && strstr(err, "weight_map"), "index with a path is refused",
                "rc=%d: %s", rc, err);
    server_stop(&s);
}

static void test_gated(void)
{
    const char *extra[] = {"--token", "hf_secret", NULL};
    test_server s;
    if (server_start(&s, extra) != 0) {
        test_result(0, "server start", "cannot start %s", SERVER_SCRIPT);
        return;
    }
    hub_opts o = {.endpoint = s.endpoint, .timeout_s = 5};
    char dest[600], err[MDI_ERR_LEN] = "", a[700], b[700];
    make_dir(dest, sizeof(dest), "gated");
    snprintf(a, sizeof(a), "%s/config.json", dest);
    snprintf(b, sizeof(b), "%s/config.json", stories_dir);

    unsetenv("HF_TOKEN");
    int rc = hub_download_checkpoint(&o, "test/stories260K", dest, err);
    test_result(rc == MDI_EAUTH && strstr(err, "gated") && strstr(err, "HF_TOKEN") &&
                    strstr(err, "401") && strstr(err, "test/stories260K") && !file_exists(a),
                "gated without token names gated and the token", "rc=%d: %s", rc, err);

    setenv("HF_TOKEN", "hf_secret", 1);
    rc = hub_download_file(&o, "test/stories260K", "config.json", a, 0, err);
    test_result(rc == 0 && files_equal(a, b), "gated with HF_TOKEN", "rc=%d: %s", rc, err);
    unsetenv("HF_TOKEN");
    unlink(a);

    o.token = "hf_secret";
    rc = hub_download_checkpoint(&o, "test/stories260K", dest, err);
    test_result(rc == 0 && files_equal(a, b), "gated with the token argument", "rc=%d: %s", rc,
                err);
    test_result(log_count(&s, "auth=yes 200") > 0, "server saw the bearer token", "no auth=yes");

    o.token = "hf_wrong";
    unlink(a);
    rc = hub_download_file(&o, "test/stories260K", "config.json", a, 0, err);
    test_result(rc == MDI_EAUTH && strstr(err, "refused"), "wrong token refused", "rc=%d: %s",
                rc, err);
    server_stop(&s);
}

static void test_resume(void)
{
    char a[700], b[700], dest[600], err[MDI_ERR_LEN] = "";
    snprintf(b, sizeof(b), "%s/model.safetensors", stories_dir);
    make_dir(dest, sizeof(dest), "resume");
    snprintf(a, sizeof(a), "%s/model.safetensors", dest);
    test_server s;

    /* The first GET is cut after 100000 bytes; the retry asks for the rest. */
    const char *drop[] = {"--drop-after", "100000", NULL};
    if (server_start(&s, drop) == 0) {
        hub_opts o = {.endpoint = s.endpoint, .timeout_s = 5, .progress = 1};
        int rc = hub_download_file(&o, "test/stories260K", "model.safetensors", a, 0, err);
        int ranged = log_count(&s, "range=bytes=100000- auth=no 206");
        test_result(rc == 0 && files_equal(a, b) && ranged == 1,
                    "dropped connection resumes with Range", "rc=%d ranged=%d: %s", rc, ranged,
                    err);
        server_stop(&s);
    }

    /* The same, but the server ignores Range: the client starts over. */
    unlink(a);
    const char *ignore[] = {"--drop-after", "100000", "--ignore-range", NULL};
    if (server_start(&s, ignore) == 0) {
        hub_opts o = {.endpoint = s.endpoint, .timeout_s = 5};
        int rc = hub_download_file(&o, "test/stories260K", "model.safetensors", a, 0, err);
        int ranged = log_count(&s, "range=bytes=100000- auth=no 200");
        test_result(rc == 0 && files_equal(a, b) && ranged == 1,
                    "server ignoring Range: restart from zero", "rc=%d ranged=%d: %s", rc, ranged,
                    err);
        server_stop(&s);
    }

    /* A stalled server is given up on after timeout_s and the retry resumes. */
    unlink(a);
    const char *stall[] = {"--stall-after", "50000", NULL};
    if (server_start(&s, stall) == 0) {
        hub_opts o = {.endpoint = s.endpoint, .timeout_s = 1};
        double t0 = time_now();
        int rc = hub_download_file(&o, "test/stories260K", "model.safetensors", a, 0, err);
        double dt = time_now() - t0;
        int ranged = log_count(&s, "range=bytes=50000- auth=no 206");
        test_result(rc == 0 && files_equal(a, b) && ranged == 1 && dt < 15,
                    "stalled transfer times out and resumes", "rc=%d ranged=%d dt=%.1f: %s", rc,
                    ranged, dt, err);
        server_stop(&s);
    }

    /* .part files from an earlier run: a good prefix, a whole file, junk. */
    if (server_start(&s, NULL) == 0) {
        hub_opts o = {.endpoint = s.endpoint, .timeout_s = 5};
        char part[720];
        snprintf(part, sizeof(part), "%s.part", a);
        unlink(a);
        copy_prefix(b, part, 5000);
        int rc = hub_download_file(&o, "test/stories260K", "model.safetensors", a, 0, err);
        test_result(rc == 0 && files_equal(a, b) && !file_exists(part) &&
                        log_count(&s, "range=bytes=5000- auth=no 206") == 1,
                    "resume from an earlier run's .part", "rc=%d: %s", rc, err);

        unlink(a);
        copy_prefix(b, part, (size_t)-1);
        rc = hub_download_file(&o, "test/stories260K", "model.safetensors", a, 0, err);
        test_result(rc == 0 && files_equal(a, b) && log_count(&s, "auth=no 416") == 1,
                    "whole .part finished by a 416", "rc=%d: %s", rc, err);

        unlink(a);
        char junk[5000];
        memset(junk, 0x5a, sizeof(junk));
        write_file(part, junk, sizeof(junk));
        rc = hub_download_file(&o, "test/stories260K", "model.safetensors", a, 0, err);
        test_result(rc == MDI_EPROTO && strstr(err, "sha256 mismatch") && !file_exists(a) &&
                        !file_exists(part),
                    "corrupt .part: sha256 mismatch names both hashes", "rc=%d: %s", rc, err);
        server_stop(&s);
    }
}

/* The hub's LFS path: 302 with X-Linked-*, bytes from a CDN whose ETag is
 * no sha256; a dropped CDN transfer resumes through the redirect again. */
static void test_redirect(void)
{
    const char *extra[] = {"--redirect", "--drop-after", "200000", "--wrong-size",
                           "tokenizer.json", NULL};
    test_server s;
    if (server_start(&s, extra) != 0) {
        test_result(0, "server start", "cannot start %s", SERVER_SCRIPT);
        return;
    }
    hub_opts o = {.endpoint = s.endpoint, .timeout_s = 5};
    char dest[600], err[MDI_ERR_LEN] = "", a[700], b[700];
    make_dir(dest, sizeof(dest), "redirect");
    snprintf(a, sizeof(a), "%s/model.safetensors", dest);
    snprintf(b, sizeof(b), "%s/model.safetensors", stories_dir);
    int rc = hub_download_file(&o, "test/stories260K", "model.safetensors", a, 0, err);
    int cdn_range = log_count(&s, "GET /cdn/test/stories260K/model.safetensors range=bytes=200000- auth=no 206");
    test_result(rc == 0 && files_equal(a, b) && cdn_range == 1,
                "redirect to a CDN, resumed there", "rc=%d cdn_range=%d: %s", rc, cdn_range, err);

    rc = hub_download_file(&o, "test/stories260K", "model.safetensors", a, 0, err);
    int heads = log_count(&s, "HEAD /cdn/");
    int gets = log_count(&s, "GET /test/stories260K/resolve/main/model.safetensors ");
    test_result(rc == 0 && heads == 0 && gets == 2, "HEAD check stops at the redirect",
                "rc=%d cdn heads=%d resolve gets=%d: %s", rc, heads, gets, err);

    /* X-Linked-Size on the 302 wins over the CDN's Content-Length. */
    snprintf(a, sizeof(a), "%s/tokenizer.json", dest);
    rc = hub_download_file(&o, "test/stories260K", "tokenizer.json", a, 0, err);
    test_result(rc == MDI_EPROTO && strstr(err, "expected 16297 bytes, got 15297") &&
                    !file_exists(a),
                "X-Linked-Size from the redirect is checked", "rc=%d: %s", rc, err);
    server_stop(&s);
}

static void test_errors(void)
{
    char a[700], dest[600], err[MDI_ERR_LEN] = "";
    make_dir(dest, sizeof(dest), "errors");
    test_server s;

    const char *wrong[] = {"--wrong-size", "model.safetensors", NULL};
    if (server_start(&s, wrong) == 0) {
        hub_opts o = {.endpoint = s.endpoint, .timeout_s = 5};
        snprintf(a, sizeof(a), "%s/model.safetensors", dest);
        int rc = hub_download_file(&o, "test/stories260K", "model.safetensors", a, 0, err);
        test_result(rc == MDI_EPROTO && strstr(err, "size mismatch") && strstr(err, "1046088") &&
                        strstr(err, "1045088") && !file_exists(a),
                    "wrong size: expected vs got, no final file", "rc=%d: %s", rc, err);

        snprintf(a, sizeof(a), "%s/absent.json", dest);
        rc = hub_download_file(&o, "test/stories260K", "absent.json", a, 1, err);
        char part[720];
        snprintf(part, sizeof(part), "%s.part", a);
        test_result(rc == 1 && !file_exists(a) && !file_exists(part),
                    "optional 404 is absent, leaves nothing", "rc=%d: %s", rc, err);

        rc = hub_download_file(&o, "test/stories260K", "absent.json", a, 0, err);
        test_result(rc == MDI_ENET && strstr(err, "absent.json") && strstr(err, "404") &&
                        strstr(err, s.endpoint) && !file_exists(part),
                    "required 404 names the file and URL", "rc=%d: %s", rc, err);

        o.revision = "v9";
        rc = hub_download_file(&o, "test/stories260K", "config.json", a, 0, err);
        test_result(rc == MDI_ENET && strstr(err, "/resolve/v9/config.json"),
                    "revision goes into the URL", "rc=%d: %s", rc, err);
        o.revision = NULL;

        /* HF_ENDPOINT is used when the options name no endpoint. */
        setenv("HF_ENDPOINT", s.endpoint, 1);
        hub_opts env_opts = {.timeout_s = 5};
        snprintf(a, sizeof(a), "%s/config.json", dest);
        char b[700];
        snprintf(b, sizeof(b), "%s/config.json", stories_dir);
        rc = hub_download_file(&env_opts, "test/stories260K", "config.json", a, 0, err);
        test_result(rc == 0 && files_equal(a, b), "HF_ENDPOINT honoured", "rc=%d: %s", rc, err);
        unsetenv("HF_ENDPOINT");
        server_stop(&s);
    }

    int port = free_port();
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", port);
    hub_opts o = {.endpoint = endpoint, .timeout_s = 2};
    snprintf(a, sizeof(a), "%s/refused.json", dest);
    double t0 = time_now();
    int rc = hub_download_file(&o, "test/stories260K", "config.json", a, 0, err);
    test_result(rc == MDI_ENET && strstr(err, endpoint) && strstr(err, "onnect") &&
                    time_now() - t0 < 5,
                "connection refused: curl's message and the URL", "rc=%d: %s", rc, err);
}

int main(void)
{
    char models[600];
    snprintf(stories_dir, sizeof(stories_dir), "%s/models/stories260K", test_shared_dir());
    snprintf(llama2c_dir, sizeof(llama2c_dir), "%s/models/stories260K-llama2c",
             test_shared_dir());
    snprintf(models, sizeof(models), "%s/model.safetensors", stories_dir);
    if (!file_exists(models) || !dir_exists(llama2c_dir) || access(SERVER_SCRIPT, R_OK) != 0 ||
        access("/usr/bin/python3", X_OK) != 0) {
        test_skip("hub", "needs the shared stories260K models, " SERVER_SCRIPT
                         " and /usr/bin/python3 (run from the repository root)");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    unsetenv("HF_TOKEN");
    unsetenv("HF_ENDPOINT");
    snprintf(tmp_root, sizeof(tmp_root), "/tmp/test_hub.XXXXXX");
    if (!mkdtemp(tmp_root)) {
        test_result(0, "mkdtemp", "%s", strerror(errno));
        return test_failures;
    }
    /* The hub keeps the llama2.c files under a folder: tinyllamas/stories260K/. */
    make_dir(tinyllamas, sizeof(tinyllamas), "tinyllamas");
    char link_path[700];
    snprintf(link_path, sizeof(link_path), "%s/stories260K", tinyllamas);
    char target[PATH_MAX];
    if (!realpath(llama2c_dir, target) || symlink(target, link_path) != 0)
        test_result(0, "symlink", "%s: %s", link_path, strerror(errno));
    char err[MDI_ERR_LEN];
    test_result(hub_global_init(err) == 0, "hub_global_init", "%s", err);
    test_result(make_sharded() == 0, "sharded repo built", "in %s", tmp_root);

    test_repo_id();
    test_checkpoint();
    test_llama2c();
    test_sharded();
    test_gated();
    test_resume();
    test_redirect();
    test_errors();

    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmp_root);
    return test_failures;
}
