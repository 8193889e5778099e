/*
 * fuzz.h: what the libFuzzer harnesses (tests/fuzz/fuzz_<target>.c) share.
 * Each harness feeds its input to one parser of outside input, built with
 * -fsanitize=fuzzer,address,undefined (make fuzz, make fuzz-short): a crash,
 * a sanitizer report or a leak is a finding. Parsers that take a path get
 * the input written to a file of this process (fuzz_file); parsers of JSON
 * get it parsed by jansson first, as the programs do.
 */
#ifndef MDI_FUZZ_H
#define MDI_FUZZ_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <jansson.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input written to a file of this process named name (inside a folder
 * of its own under $TMPDIR, created once); returns its path. */
static __attribute__((unused)) const char *fuzz_file(const char *name, const uint8_t *data, size_t size)
{
    static char dir[256];
    static char path[512];
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/mdi_fuzz_%d", t && *t ? t : "/tmp", (int)getpid());
        if (mkdir(dir, 0700) != 0 && access(dir, W_OK) != 0) {
            perror(dir);
            abort();
        }
    }
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size)) {
        perror(path);
        abort();
    }
    close(fd);
    return path;
}

/* The folder fuzz_file writes into. */
static __attribute__((unused)) const char *fuzz_dir(void)
{
    static char d[512];
    snprintf(d, sizeof(d), "%s", fuzz_file(".probe", (const uint8_t *)"", 0));
    *strrchr(d, '/') = 0;
    return d;
}

/* The input as JSON (NULL when it is not JSON). */
static __attribute__((unused)) json_t *fuzz_json(const uint8_t *data, size_t size)
{
    return json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
}

#endif
