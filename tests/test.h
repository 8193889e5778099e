/*
 * test.h: the tiny harness every tests/test_*.c uses. Each check prints one
 * line "PASS: name" or "FAIL: name: reason" (or "SKIP: name: reason");
 * tests/run.sh counts them. main() returns the number of failures.
 */
#ifndef MDI_TEST_H
#define MDI_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>

static int test_failures;
/* Prefixes every check's name (a test that runs twice, e.g. per SIMD level). */
static const char *test_name_prefix = "";

static void test_result(int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), unused));
static void test_result(int ok, const char *name, const char *fmt, ...)
{
    if (ok) {
        printf("PASS: %s%s\n", test_name_prefix, name);
    } else {
        va_list ap;
        printf("FAIL: %s%s: ", test_name_prefix, name);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        test_failures++;
    }
    fflush(stdout);
}

static void test_skip(const char *name, const char *why) __attribute__((unused));
static void test_skip(const char *name, const char *why)
{
    printf("SKIP: %s: %s\n", name, why);
    fflush(stdout);
}

/* Root of the shared models and tokenizers: $MDI_SHARED or ../shared. */
static const char *test_shared_dir(void) __attribute__((unused));
static const char *test_shared_dir(void)
{
    const char *d = getenv("MDI_SHARED");
    return d ? d : "../shared";
}

#define TEST_PATH(buf, rel) snprintf((buf), sizeof(buf), "%s/%s", test_shared_dir(), (rel))

#endif
