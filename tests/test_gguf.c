/* Tests of the GGUF reader and writer: a round trip of every metadata type
 * and tensor type, then malformed files (each one clear line naming the
 * file and the byte, no crash), then random corruptions. */
#include "gguf.h"
#include "util.h"
#include "test.h"

#include <inttypes.h>
#include <unistd.h>

static char dir[256];

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)len);
    if (p && fread(p, 1, (size_t)len, f) != (size_t)len) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* Tensor data of the sample file: F32 [3, 5], Q4_K [2, 256], Q8_0 [64], ... */
static float f32_data[15];
static uint8_t blocks[4][2 * 292];

static int write_sample(const char *path, char *err)
{
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_int(w, "t.u8", GGUF_TYPE_UINT8, 200);
    gguf_writer_set_int(w, "t.i8", GGUF_TYPE_INT8, -100);
    gguf_writer_set_int(w, "t.u16", GGUF_TYPE_UINT16, 60000);
    gguf_writer_set_int(w, "t.i16", GGUF_TYPE_INT16, -30000);
    gguf_writer_set_int(w, "t.u32", GGUF_TYPE_UINT32, 4000000000LL);
    gguf_writer_set_int(w, "t.i32", GGUF_TYPE_INT32, -2000000000LL);
    gguf_writer_set_int(w, "t.u64", GGUF_TYPE_UINT64, 1LL << 60);
    gguf_writer_set_int(w, "t.i64", GGUF_TYPE_INT64, -(1LL << 60));
    gguf_writer_set_float(w, "t.f32", GGUF_TYPE_FLOAT32, 0.5);
    gguf_writer_set_float(w, "t.f64", GGUF_TYPE_FLOAT64, 1e-300);
    gguf_writer_set_bool(w, "t.bool", 1);
    const char *strs[] = { "a", "", "hello world" };
    gguf_writer_set_arr_str(w, "t.strs", strs, 3);
    const double nums[] = { 1, -2, 3.5 };
    gguf_writer_set_arr_num(w, "t.f32s", GGUF_TYPE_FLOAT32, nums, 3);
    gguf_writer_set_arr_num(w, "t.i32s", GGUF_TYPE_INT32, nums, 2);
    for (int i = 0; i < 15; i++)
        f32_data[i] = (float)i - 7.25f;
    for (int b = 0; b < 4; b++)
        for (size_t i = 0; i < sizeof(blocks[b]); i++)
            blocks[b][i] = (uint8_t)(i * 7 + b);
    int64_t ne_f32[2] = { 5, 3 }, ne_k[2] = { 256, 2 }, ne_q8[1] = { 64 };
    int rc = gguf_writer_add_tensor(w, "a.weight", DTYPE_F32, 2, ne_f32, f32_data) ||
             gguf_writer_add_tensor(w, "b.weight", DTYPE_Q4_K, 2, ne_k, blocks[0]) ||
             gguf_writer_add_tensor(w, "c.weight", DTYPE_Q6_K, 2, ne_k, blocks[1]) ||
             gguf_writer_add_tensor(w, "d.weight", DTYPE_Q5_K, 2, ne_k, blocks[2]) ||
             gguf_writer_add_tensor(w, "e.weight", DTYPE_Q8_0, 1, ne_q8, blocks[3]) ||
             gguf_writer_add_tensor(w, "f.weight", DTYPE_BF16, 1, ne_q8, blocks[3]) ||
             gguf_writer_add_tensor(w, "g.weight", DTYPE_Q4_0, 1, ne_q8, blocks[3]) ||
             gguf_writer_add_tensor(w, "h.weight", DTYPE_F16, 1, ne_q8, blocks[3]);
    if (!rc)
        rc = gguf_writer_write(w, path, err);
    gguf_writer_free(w);
    return rc;
}

static void test_round_trip(const char *path)
{
    char err[MDI_ERR_LEN] = "";
    int rc = write_sample(path, err);
    gguf_file *g = rc ? NULL : gguf_open(path, err);
    test_result(g != NULL, "gguf_write_then_open", "%s", err);
    if (!g)
        return;
    int64_t v;
    double d;
    int b;
    const char *s;
    size_t len;
    int ok = g->version == 3 && g->n_kv == 15 && g->n_tensors == 8 && g->alignment == 32 && g->data_offset % 32 == 0;
    ok = ok && gguf_get_int(g, "t.u8", &v, err) == 1 && v == 200 && gguf_get_int(g, "t.i8", &v, err) == 1 && v == -100 &&
         gguf_get_int(g, "t.u16", &v, err) == 1 && v == 60000 && gguf_get_int(g, "t.i16", &v, err) == 1 && v == -30000 &&
         gguf_get_int(g, "t.u32", &v, err) == 1 && v == 4000000000LL &&
         gguf_get_int(g, "t.i32", &v, err) == 1 && v == -2000000000LL &&
         gguf_get_int(g, "t.u64", &v, err) == 1 && v == 1LL << 60 &&
         gguf_get_int(g, "t.i64", &v, err) == 1 && v == -(1LL << 60) &&
         gguf_get_float(g, "t.f32", &d, err) == 1 && d == 0.5 && gguf_get_float(g, "t.f64", &d, err) == 1 &&
         d == 1e-300 && gguf_get_bool(g, "t.bool", &b, err) == 1 && b == 1 &&
         gguf_get_str(g, "general.architecture", &s, &len, err) == 1 && len == 5 && !memcmp(s, "llama", 5) &&
         gguf_get_int(g, "absent", &v, err) == 0;
    test_result(ok, "gguf_metadata_every_type", "a value differs (%s)", err);
    const gguf_kv *kv;
    ok = gguf_get_arr(g, "t.strs", GGUF_TYPE_STRING, &kv, err) == 1 && kv->n == 3;
    if (ok) {
        const char *s2 = gguf_arr_str(g, kv, 2, &len);
        ok = len == 11 && !memcmp(s2, "hello world", 11) && (gguf_arr_str(g, kv, 1, &len), len == 0);
    }
    ok = ok && gguf_get_arr(g, "t.f32s", GGUF_TYPE_FLOAT32, &kv, err) == 1 && kv->n == 3 &&
         gguf_arr_num(kv, 2) == 3.5 && gguf_get_arr(g, "t.i32s", GGUF_TYPE_COUNT, &kv, err) == 1 &&
         gguf_arr_num(kv, 1) == -2;
    test_result(ok, "gguf_metadata_arrays", "%s", err);
    const gguf_tensor *a = gguf_find_tensor(g, "a.weight"), *bq = gguf_find_tensor(g, "b.weight"),
                      *c = gguf_find_tensor(g, "c.weight"), *e = gguf_find_tensor(g, "e.weight");
    ok = a && bq && c && e && a->n_dims == 2 && a->ne[0] == 5 && a->ne[1] == 3 && a->dtype == DTYPE_F32 &&
         a->nbytes == 60 && !memcmp(a->data, f32_data, 60) && bq->dtype == DTYPE_Q4_K && bq->ggml_type == 12 &&
         bq->nbytes == 288 && !memcmp(bq->data, blocks[0], 288) && c->dtype == DTYPE_Q6_K && c->nbytes == 420 &&
         !memcmp(c->data, blocks[1], 420) && e->dtype == DTYPE_Q8_0 && e->nbytes == 68 && e->ggml_type == 8;
    for (int64_t i = 0; i < g->n_tensors && ok; i++)
        ok = g->tensors[i].offset % 32 == 0 && ((uintptr_t)g->tensors[i].data - (uintptr_t)g->map) % 32 == 0;
    test_result(ok, "gguf_tensors_shapes_types_bytes", "a tensor differs");
    ok = gguf_get_int(g, "general.architecture", &v, err) == MDI_EFORMAT && strstr(err, "general.architecture") &&
         strstr(err, "is string, expected an integer") && strstr(err, "at byte ") && strstr(err, path);
    test_result(ok, "gguf_wrong_metadata_type_one_line", "%s", err);
    ok = gguf_get_arr(g, "t.f32s", GGUF_TYPE_STRING, &kv, err) == MDI_EFORMAT &&
         strstr(err, "is an array of float32, expected an array of string");
    test_result(ok, "gguf_wrong_array_type_one_line", "%s", err);
    gguf_close(g);
}

/* Opens a copy of the sample with bytes changed; expects a failure whose
 * one line holds `want`. */
static void expect_fail(const char *name, const uint8_t *data, size_t n, const char *want)
{
    char err[MDI_ERR_LEN] = "";
    gguf_file *g = gguf_open_memory(data, n, "bad.gguf", err);
    int ok = g == NULL && strstr(err, want) && strstr(err, "bad.gguf") && !strchr(err, '\n');
    test_result(ok, name, "expected \"%s\", got %s", want, g ? "success" : err);
    gguf_close(g);
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static void test_malformed(const char *path)
{
    size_t n = 0;
    uint8_t *good = read_file(path, &n), *b = malloc(n + 64);
    char err[MDI_ERR_LEN];
    gguf_file *g = good ? gguf_open_memory(good, n, "good.gguf", err) : NULL;
    if (!g || !b) {
        test_result(0, "gguf_malformed_setup", "cannot reread the sample");
        free(good);
        free(b);
        return;
    }
#define RESET() memcpy(b, good, n)
    RESET();
    memcpy(b, "GGUX", 4);
    expect_fail("gguf_bad_magic", b, n, "bad magic 0x58554747 at byte 0");
    RESET();
    put_u32(b + 4, 1);
    expect_fail("gguf_version_1", b, n, "GGUF version 1 at byte 4 is not supported");
    put_u32(b + 4, 4);
    expect_fail("gguf_unknown_version", b, n, "GGUF version 4 at byte 4");
    RESET();
    put_u64(b + 8, UINT64_MAX);
    expect_fail("gguf_tensor_count_overflow", b, n, "tensor count 18446744073709551615 at byte 8 cannot fit");
    RESET();
    put_u64(b + 16, (uint64_t)1 << 61);
    expect_fail("gguf_kv_count_overflow", b, n, "metadata count 2305843009213693952 at byte 16 cannot fit");
    expect_fail("gguf_truncated_counts", good, 30, "metadata count 15 at byte 16 cannot fit in the file (30 bytes)");
    expect_fail("gguf_truncated_metadata", good, 300, "truncated file: ");
    expect_fail("gguf_empty", good, 0, "bad magic");
    expect_fail("gguf_truncated_tensor_data", good, n - 40, "truncated tensor data: tensor h.weight");

    /* the first pair is general.architecture: key length at 24 */
    RESET();
    put_u64(b + 24, (uint64_t)1 << 62);
    expect_fail("gguf_key_length_overflow", b, n, "a metadata key at byte 24 has length 4611686018427387904");
    RESET();
    put_u32(b + 24 + 8 + 20, 99);
    expect_fail("gguf_unknown_metadata_type", b, n, "metadata general.architecture at byte 24 has unknown type 99");

    const gguf_kv *kv;
    gguf_get_arr(g, "t.strs", GGUF_TYPE_STRING, &kv, err);
    RESET();
    put_u64(b + kv->offset + 4, UINT64_MAX / 2);
    expect_fail("gguf_string_array_count_overflow", b, n, "strings cannot fit");
    gguf_get_arr(g, "t.f32s", GGUF_TYPE_FLOAT32, &kv, err);
    RESET();
    put_u64(b + kv->offset + 4, UINT64_MAX / 4 + 1);
    expect_fail("gguf_array_count_overflow", b, n, "elements of float32 cannot fit");
    RESET();
    put_u32(b + kv->offset, GGUF_TYPE_ARRAY);
    expect_fail("gguf_nested_array", b, n, "metadata t.f32s at byte");

    /* tensor infos: name, n_dims, ne[], type, offset */
    const gguf_tensor *t1 = &g->tensors[1], *t0 = &g->tensors[0];
    uint64_t at1 = t1->info_offset + 8 + strlen(t1->name);
    RESET();
    put_u32(b + at1 + 4 + 16, 16);
    expect_fail("gguf_unsupported_tensor_type", b, n, "tensor b.weight at byte");
    expect_fail("gguf_unsupported_tensor_type_named", b, n, "has type IQ2_XXS (16), not supported");
    RESET();
    put_u32(b + at1 + 4 + 16, 1000);
    expect_fail("gguf_unknown_tensor_type", b, n, "has type type 1000 (1000)");
    RESET();
    put_u64(b + at1 + 4 + 16 + 4, t1->offset + 1);
    expect_fail("gguf_misaligned_offset", b, n, "is not a multiple of the alignment 32");
    RESET();
    put_u64(b + at1 + 4 + 16 + 4, t0->offset);
    expect_fail("gguf_overlapping_offsets", b, n, "tensors a.weight and b.weight overlap");
    RESET();
    put_u64(b + at1 + 4, (uint64_t)1 << 60);
    expect_fail("gguf_dimension_overflow", b, n, "makes the element count overflow");
    RESET();
    put_u64(b + at1 + 4 + 8, (uint64_t)1 << 40);
    expect_fail("gguf_tensor_beyond_file", b, n, "truncated tensor data: tensor b.weight");
    RESET();
    put_u64(b + at1 + 4, 100);
    expect_fail("gguf_block_row_not_whole", b, n, "needs rows of a multiple of 256 values, ne[0] is 100");
    RESET();
    put_u32(b + at1, 7);
    expect_fail("gguf_too_many_dims", b, n, "tensor b.weight at byte");
    gguf_close(g);

    /* general.alignment of the wrong type, and not a power of two */
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.alignment", "32");
    char p2[300];
    snprintf(p2, sizeof(p2), "%s/align.gguf", dir);
    gguf_writer_write(w, p2, err);
    gguf_writer_free(w);
    g = gguf_open(p2, err);
    test_result(!g && strstr(err, "metadata general.alignment at byte 53 is string, expected an integer"),
                "gguf_alignment_wrong_type", "%s", g ? "opened" : err);
    gguf_close(g);
    w = gguf_writer_new();
    gguf_writer_set_int(w, "general.alignment", GGUF_TYPE_UINT32, 24);
    gguf_writer_write(w, p2, err);
    gguf_writer_free(w);
    g = gguf_open(p2, err);
    test_result(!g && strstr(err, "is 24, not a power of two"), "gguf_alignment_not_power_of_two", "%s",
                g ? "opened" : err);
    gguf_close(g);
    w = gguf_writer_new();
    gguf_writer_set_str(w, "k", "v");
    gguf_writer_set_str(w, "k", "w");
    gguf_writer_write(w, p2, err);
    gguf_writer_free(w);
    g = gguf_open(p2, err);
    test_result(!g && strstr(err, "metadata k at byte") && strstr(err, "is given twice"), "gguf_duplicate_key", "%s",
                g ? "opened" : err);
    gguf_close(g);

    /* random corruptions and every truncation of the header: no crash */
    uint32_t seed = 7;
    int opened = 0;
    for (int trial = 0; trial < 3000; trial++) {
        RESET();
        int flips = 1 + trial % 4;
        for (int f = 0; f < flips; f++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % (g ? n : n);
            seed = seed * 1103515245u + 12345u;
            b[at % (size_t)(n < 700 ? n : 700)] ^= (uint8_t)(1u << ((seed >> 16) % 8));
        }
        gguf_file *x = gguf_open_memory(b, n, "fuzz.gguf", err);
        if (x) {
            opened++;
            for (int64_t i = 0; i < x->n_tensors; i++) /* every tensor inside the file */
                if ((const uint8_t *)x->tensors[i].data + x->tensors[i].nbytes > b + n)
                    opened = -100000;
        }
        gguf_close(x);
    }
    for (size_t cut = 0; cut < n; cut += cut < 800 ? 1 : 97) {
        gguf_file *x = gguf_open_memory(good, cut, "cut.gguf", err);
        if (x && cut < n - 40)
            opened = -100000;
        gguf_close(x);
    }
    test_result(opened >= 0, "gguf_random_corruptions_and_truncations", "a tensor ran past the end of the file");
    free(good);
    free(b);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/mdi_test_gguf.%d", (int)getpid());
    char cmd[300], path[300];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s", dir);
    if (system(cmd) != 0)
        return 1;
    snprintf(path, sizeof(path), "%s/sample.gguf", dir);
    test_round_trip(path);
    test_malformed(path);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return test_failures;
}
