/* test_source_file.c - file:PATH: the index (NDJSON, JSON arrays, gzip,
 * the edges of each), the line framing the mapper reads, and whole jobs of
 * 100,000 objects read from files. */
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "buf.h"
#include "chunk.h"
#include "pipeline.h"
#include "source.h"
#include "source_gen.h"
#include "test.h"

/* Writes data to <tmpdir>/name, gzip'd when gz; returns the path (free). */
static char *put_file(const char *name, const char *data, size_t len, bool gz)
{
    char *path = th_path(name);
    if (gz) {
        gzFile g = gzopen(path, "wb");
        CHECK(g != NULL);
        /* In pieces: gzwrite takes an unsigned length. */
        for (size_t off = 0; off < len;) {
            unsigned n = len - off > (1u << 30) ? (1u << 30) : (unsigned)(len - off);
            CHECK(gzwrite(g, data + off, n) == (int)n);
            off += n;
        }
        CHECK(gzclose(g) == Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL);
        CHECK(fwrite(data, 1, len, f) == len);
        CHECK(fclose(f) == 0);
    }
    return path;
}

static sl_source *open_file(const char *path, int64_t chunk_size)
{
    sl_buf uri = SL_BUF_INIT;
    sl_buf_printf(&uri, "file:%s", path);
    sl_source_opts o = {.uri = uri.data, .objects = 1, .chunk_size = chunk_size};
    sl_source *src = NULL;
    sl_status st = sl_source_open(&src, &o);
    CHECK_MSG(st == SL_OK, "open %s: %s", uri.data, sl_errmsg());
    sl_buf_free(&uri);
    return src;
}

/* The error message of opening data as a file source (which must fail). */
static char *open_error(const char *data, bool gz)
{
    char *path = put_file(gz ? "bad.gz" : "bad", data, strlen(data), gz);
    sl_buf uri = SL_BUF_INIT;
    sl_buf_printf(&uri, "file:%s", path);
    sl_source_opts o = {.uri = uri.data, .objects = 1, .chunk_size = 2};
    sl_source *src = NULL;
    CHECK_MSG(sl_source_open(&src, &o) == SL_EINVAL, "%s opened", data);
    free(path), sl_buf_free(&uri);
    return sl_xstrdup(sl_errmsg());
}

/* Chunk idx as text, checking the framing. */
static char *chunk_text(sl_source *src, int64_t idx, const char *unit, int64_t first)
{
    sl_buf b = SL_BUF_INIT;
    sl_source_meta meta;
    CHECK_MSG(sl_source_chunk(src, idx, &b, &meta) == SL_OK, "chunk %lld: %s", (long long)idx, sl_errmsg());
    CHECK_STR(meta.unit, unit);
    CHECK_INT(meta.first, ==, first);
    return b.data ? b.data : sl_xstrdup("");
}

#define CHECK_CHUNK(src, idx, unit, first, want)                                                                     \
    do {                                                                                                             \
        char *got_ = chunk_text(src, idx, unit, first);                                                              \
        CHECK_STR(got_, want);                                                                                       \
        free(got_);                                                                                                  \
    } while (0)

static const char ndjson[] = "\n"
                             "{\"a\":1}\n"
                             "  \n"
                             "{\"a\":2}\r\n"
                             "{\"a\":3}\n"
                             "\n"
                             "{bad\n"
                             "{\"a\":5}\r\n"
                             "\r\n"
                             "{\"a\":6}"; /* no final newline */

/* Both examples hold 6 objects: 3 chunks of 2. */
static sl_source *open_example(const char *name, const char *data, bool gz)
{
    char *path = put_file(name, data, strlen(data), gz);
    sl_source *src = open_file(path, 2);
    free(path);
    CHECK_INT(sl_source_objects(src), ==, 6);
    CHECK_INT(sl_source_chunks(src), ==, 3);
    return src;
}

static void check_ndjson(bool gz)
{
    sl_source *src = open_example(gz ? "n.ndjson.gz" : "n.ndjson", ndjson, gz);
    /* Blank lines stay in (the mapper skips them) so that the body's line
     * k is line first+k; trailing CRs go. */
    CHECK_CHUNK(src, 0, "line", 2, "{\"a\":1}\n  \n{\"a\":2}\n");
    CHECK_CHUNK(src, 1, "line", 5, "{\"a\":3}\n\n{bad\n");
    CHECK_CHUNK(src, 2, "line", 8, "{\"a\":5}\n\n{\"a\":6}\n");
    CHECK_INT(sl_source_chunk_len(src, 2), ==, 2);
    sl_source_destroy(src);
}

SL_TEST(source_file_ndjson_index, 10)
{
    check_ndjson(false);
}

SL_TEST(source_file_ndjson_gzip, 10)
{
    check_ndjson(true);
}

/* Elements spread over lines; strings holding brackets, commas, quotes and
 * escapes; a raw line break inside a string (invalid JSON); a scalar. */
static const char array[] = " \r\n[ {\"a\": [1,\n 2],\r\n \"s\": \"x],}{\\\"\\\\\"} ,\n"
                            "\"str,[\"\n,\n"
                            "{\"bad\": \"two\nlines\"}, 42 , [[],{}],\n"
                            "{\"last\":true}\n"
                            "]\n\n";

static void check_array(bool gz)
{
    sl_source *src = open_example(gz ? "a.json.gz" : "a.json", array, gz);
    CHECK_CHUNK(src, 0, "element", 0, "{\"a\": [1,  2],   \"s\": \"x],}{\\\"\\\\\"}\n\"str,[\"\n");
    /* The raw LF inside the string becomes a raw CR: still one line, and
     * still not JSON. */
    CHECK_CHUNK(src, 1, "element", 2, "{\"bad\": \"two\rlines\"}\n42\n");
    CHECK_CHUNK(src, 2, "element", 4, "[[],{}]\n{\"last\":true}\n");
    char *c1 = chunk_text(src, 1, "element", 2);
    CHECK(json_loadb(c1, strcspn(c1, "\n"), 0, NULL) == NULL);
    free(c1);
    sl_source_destroy(src);
}

SL_TEST(source_file_array_index, 10)
{
    check_array(false);
}

SL_TEST(source_file_array_gzip, 10)
{
    check_array(true);
}

/* Strings long enough to be read eight bytes at a time, with a quote, a
 * backslash, a multibyte character and (last element) a raw line break at
 * every offset: each element still comes back whole, on a line of its own. */
SL_TEST(source_file_array_long_strings_stay_whole, 10)
{
    enum { N = 64 };
    sl_buf text = SL_BUF_INIT;
    sl_buf_puts(&text, "[\n");
    for (int i = 0; i < N; i++) {
        sl_buf_printf(&text, "%s{\"i\": %d,\n  \"s\": \"", i ? ",\n " : " ", i);
        for (int k = 0; k < i % 29; k++)
            sl_buf_putc(&text, 'a');
        sl_buf_puts(&text, "\\\"");
        for (int k = 0; k < i % 17; k++)
            sl_buf_putc(&text, 'b');
        sl_buf_puts(&text, "\\\\");
        for (int k = 0; k < i % 11; k++)
            sl_buf_putc(&text, 'c');
        sl_buf_puts(&text, "\xc3\xa9,]}{dddddddddd\", \"t\": [\"");
        for (int k = 0; k < 8 + i % 9; k++)
            sl_buf_putc(&text, 'e');
        sl_buf_puts(&text, i == N - 1 ? "\nraw\"]}" : "\"]}");
    }
    sl_buf_puts(&text, "\n]\n");
    /* The last element is not JSON (a raw line break in a string): parse
     * the others from a copy without it. */
    sl_buf valid = SL_BUF_INIT;
    sl_buf_append(&valid, text.data, (size_t)(strstr(text.data, ",\n {\"i\": 63") - text.data));
    sl_buf_puts(&valid, "]");
    json_t *want = json_loadb(valid.data, valid.len, JSON_REJECT_DUPLICATES, NULL);
    CHECK_MSG(json_is_array(want) && json_array_size(want) == N - 1, "%s", valid.data);

    char *path = put_file("long.json", text.data, text.len, false);
    sl_source *src = open_file(path, 5);
    CHECK_INT(sl_source_objects(src), ==, N);
    CHECK_INT(sl_source_chunks(src), ==, (N + 4) / 5);
    int seen = 0;
    for (int64_t c = 0; c < sl_source_chunks(src); c++) {
        char *body = chunk_text(src, c, "element", c * 5);
        for (char *line = body, *nl; (nl = strchr(line, '\n')); line = nl + 1, seen++) {
            if (seen == N - 1) {
                /* Its raw LF became a raw CR: one line, still not JSON. */
                CHECK(memchr(line, '\r', (size_t)(nl - line)) != NULL);
                CHECK(json_loadb(line, (size_t)(nl - line), 0, NULL) == NULL);
                continue;
            }
            json_t *got = json_loadb(line, (size_t)(nl - line), JSON_REJECT_DUPLICATES, NULL);
            CHECK_MSG(json_equal(got, json_array_get(want, (size_t)seen)), "element %d: %.*s", seen,
                      (int)(nl - line), line);
            json_decref(got);
        }
        free(body);
    }
    CHECK_INT(seen, ==, N);
    json_decref(want);
    sl_source_destroy(src);
    free(path);
    sl_buf_free(&valid);
    sl_buf_free(&text);
}

SL_TEST(source_file_errors_name_the_place, 10)
{
    struct {
        const char *data, *want;
    } cases[] = {
        {"", "is empty"},
        {" \n\t\r\n", "is empty"},
        {"\n\n  \n", "is empty"},
        {"[ ]", "holds no objects"},
        {"[{\"a\":1},\n{\"b\":2}", "the file ends before the array is closed at byte 17 (line 2)"},
        {"[\"abc", "the file ends inside a string"},
        {"[1,,2]", "an empty element at byte 3 (line 1)"},
        {"[1,\n2,\n]", "a comma before ] at byte 7 (line 3)"},
        {"[{\"a\":1]}]", "a ] that closes a { at byte 7"},
        {"[[1}]", "a } that closes a [ at byte 3"},
        {"[1] x", "data after the closing ] at byte 4"},
        {"[1]]", "data after the closing ] at byte 3"},
        {"[}]", "a } that closes nothing at byte 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int gz = 0; gz < 2; gz++) {
            char *msg = open_error(cases[i].data, gz);
            CHECK_MSG(strstr(msg, cases[i].want) && strstr(msg, "bad"), "\"%s\": %s", cases[i].data, msg);
            free(msg);
        }
    }
    sl_source_opts o = {.uri = "file:/nonexistent/x.ndjson", .objects = 1, .chunk_size = 2};
    sl_source *src = NULL;
    CHECK_INT(sl_source_open(&src, &o), ==, SL_EINVAL);
    CHECK(strstr(sl_errmsg(), "/nonexistent/x.ndjson"));
    /* A gzip file cut short is refused at open, not read as less data. */
    char *path = put_file("cut.gz", ndjson, strlen(ndjson), true);
    size_t len = 0;
    char *gz = th_read_file(path, &len);
    char *cut = put_file("cut.gz", gz, len - 10, false);
    sl_buf uri = SL_BUF_INIT;
    sl_buf_printf(&uri, "file:%s", cut);
    o.uri = uri.data;
    CHECK_INT(sl_source_open(&src, &o), ==, SL_EINVAL);
    CHECK_MSG(strstr(sl_errmsg(), "gzip"), "%s", sl_errmsg());
    free(path), free(gz), free(cut), sl_buf_free(&uri);
}

SL_TEST(source_file_huge_line, 20)
{
    /* A 3 MB line between two small ones: no fixed line buffer anywhere. */
    sl_buf f = SL_BUF_INIT;
    sl_buf_puts(&f, "{\"a\":1}\n{\"big\":\"");
    for (int i = 0; i < 3 * 1024 * 1024; i++)
        sl_buf_putc(&f, (char)('a' + i % 26));
    sl_buf_puts(&f, "\"}\n{\"a\":3}\n");
    char *path = put_file("huge.ndjson", f.data, f.len, false);
    sl_source *src = open_file(path, 2);
    CHECK_INT(sl_source_objects(src), ==, 3);
    char *c0 = chunk_text(src, 0, "line", 1);
    CHECK_INT(strlen(c0), ==, f.len - strlen("{\"a\":3}\n"));
    CHECK(memcmp(c0, f.data, strlen(c0)) == 0);
    CHECK_CHUNK(src, 1, "line", 3, "{\"a\":3}\n");
    free(c0);
    sl_source_destroy(src);
    sl_buf_free(&f), free(path);
}

/* ---- 100,000 users ------------------------------------------------------ */

/* A line of the users file replaced by something that is not JSON. */
typedef struct {
    int64_t object;
    const char *text;
    int64_t line; /* filled in: where it landed */
} bad_line;

/* The generator's n users (seed 1, chunks of 100) as an NDJSON file, or a
 * JSON array with one element a line. NDJSON gets blank lines and CRLF
 * here and there, so that line numbers are not object numbers. */
static char *users_file(const char *name, int64_t n, bool as_array, bool gz, bad_line *bad, size_t nbad)
{
    sl_buf f = SL_BUF_INIT, chunk = SL_BUF_INIT;
    int64_t line = 1;
    if (as_array)
        sl_buf_puts(&f, "[\n"), line++;
    for (int64_t c = 0; c * 100 < n; c++) {
        int64_t len = n - c * 100 < 100 ? n - c * 100 : 100;
        sl_buf_reset(&chunk);
        sl_gen_users(1, c, c * 100, len, &chunk);
        json_t *arr = json_loadb(chunk.data, chunk.len, 0, NULL);
        CHECK(json_is_array(arr));
        for (int64_t i = 0; i < len; i++) {
            int64_t obj = c * 100 + i;
            if (!as_array && obj % 7919 == 3)
                sl_buf_puts(&f, "\n  \n"), line += 2;
            const char *text = NULL;
            for (size_t k = 0; k < nbad; k++)
                if (bad[k].object == obj)
                    text = bad[k].text, bad[k].line = line;
            char *s = text ? NULL : json_dumps(json_array_get(arr, (size_t)i), JSON_COMPACT);
            sl_buf_puts(&f, text ? text : s);
            free(s);
            if (as_array && obj < n - 1)
                sl_buf_putc(&f, ',');
            sl_buf_puts(&f, !as_array && obj % 1000 == 1 ? "\r\n" : "\n");
            line++;
        }
        json_decref(arr);
    }
    if (as_array)
        sl_buf_puts(&f, "]\n");
    char *path = put_file(name, f.data, f.len, gz);
    sl_buf_free(&f), sl_buf_free(&chunk);
    return path;
}

SL_TEST(source_file_100k_index_and_reread, 30)
{
    char *path = users_file("u.ndjson", 100000, false, false, NULL, 0);
    int64_t t0 = th_now_ms();
    sl_source *src = open_file(path, 100);
    int64_t ms = th_now_ms() - t0;
    fprintf(stderr, "source_file: indexed 100,000 NDJSON objects in %lld ms\n", (long long)ms);
    CHECK_INT(sl_source_objects(src), ==, 100000);
    CHECK_INT(sl_source_chunks(src), ==, 1000);
    /* Every chunk maps to its 100 users; a second read of a chunk is the
     * same bytes as the first. */
    sl_transform *tf = NULL;
    CHECK(sl_transform_open(&tf, "fullname") == SL_OK);
    for (int64_t c = 0; c < 1000; c += 37) {
        sl_buf a = SL_BUF_INIT, b = SL_BUF_INIT;
        sl_source_meta ma, mb;
        CHECK(sl_source_chunk(src, c, &a, &ma) == SL_OK);
        CHECK(sl_source_chunk(src, c + 1 < 1000 ? c + 1 : 0, &b, NULL) == SL_OK);
        sl_buf_reset(&b);
        CHECK(sl_source_chunk(src, c, &b, &mb) == SL_OK);
        CHECK_INT(a.len, ==, b.len);
        CHECK(memcmp(a.data, b.data, a.len) == 0);
        CHECK_INT(ma.first, ==, mb.first);
        char *out = NULL, why[300];
        int64_t count = 0, ndead = 0;
        sl_chunk_dead *dead = NULL;
        CHECK(sl_chunk_map(tf, a.data, a.len, ma.unit, ma.first, NULL, NULL, &out, &count, &dead, &ndead, why,
                           sizeof why) == SL_OK);
        CHECK_INT(count, ==, 100);
        CHECK_INT(ndead, ==, 0);
        free(out);
        sl_buf_free(&a), sl_buf_free(&b);
    }
    sl_transform_destroy(tf);
    sl_source_destroy(src);
    free(path);
    /* The same users as a gzip'd JSON array: decompressed, then scanned. */
    path = users_file("u.json.gz", 100000, true, true, NULL, 0);
    t0 = th_now_ms();
    src = open_file(path, 100);
    ms = th_now_ms() - t0;
    fprintf(stderr, "source_file: indexed 100,000 gzip'd JSON array elements in %lld ms\n", (long long)ms);
    CHECK_INT(sl_source_objects(src), ==, 100000);
    sl_source_destroy(src);
    free(path);
}

SL_TEST(source_file_chunk_map_line_framing, 10)
{
    /* What the mapper does with a line-framed body: blank lines skipped
     * but counted, a line that is not JSON refused with its number, the
     * index among the chunk's objects, the line as raw bytes. */
    sl_transform *tf = NULL;
    CHECK(sl_transform_open(&tf, "identity") == SL_OK);
    const char body[] = "{\"id\":1}\n\n{\"id\":2,\"id\":3}\n   \n{nope\n{\"id\":4}";
    char *out = NULL, why[300];
    int64_t count = 0, ndead = 0;
    sl_chunk_dead *dead = NULL;
    CHECK(sl_chunk_map(tf, body, strlen(body), "line", 17, NULL, NULL, &out, &count, &dead, &ndead, why,
                       sizeof why) == SL_OK);
    CHECK_STR(out, "[{\"id\":1},{\"id\":4}]");
    CHECK_INT(count, ==, 2);
    CHECK_INT(ndead, ==, 2);
    CHECK_INT(dead[0].index, ==, 1);
    CHECK_MSG(!strncmp(dead[0].reason, "line 19: not valid JSON: duplicate object key", 45), "%s", dead[0].reason);
    CHECK_STR(dead[0].raw, "{\"id\":2,\"id\":3}");
    CHECK_INT(dead[1].index, ==, 2);
    CHECK_MSG(!strncmp(dead[1].reason, "line 21: not valid JSON: ", 25), "%s", dead[1].reason);
    CHECK_STR(dead[1].raw, "{nope");
    sl_chunk_dead_free(dead, ndead);
    free(out);
    sl_transform_destroy(tf);
}

/* ---- whole jobs ---------------------------------------------------------- */

static char *source_flag(const char *path)
{
    sl_buf b = SL_BUF_INIT;
    sl_buf_printf(&b, "--source=file:%s", path);
    return b.data;
}

/* `sluice run` over a file of 100,000 users, every row checked. About 16 s
 * on the 2-core machine, 25-30 s under ASan: the timeouts leave room. */
static void run_users_file(const char *name, bool as_array, bool gz)
{
    /* The sanitizer pass (make test-asan) looks for memory errors, which
     * 20,000 users find as well as 100,000 in a third of the time; the
     * plain pass runs the full size. */
    int64_t n = getenv("SLUICE_TEST_SANITIZED") ? 20000 : 100000;
    char *path = users_file(name, n, as_array, gz, NULL, 0);
    char *src = source_flag(path), *sink = tp_flag("sink", "sqlite:", "out.db"),
         *ledger = tp_flag("ledger", "", "l.ledger");
    const char *argv[] = {"sluice", "run", "--fresh", "--mappers", "2", src, sink, ledger, NULL};
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 60000);
    CHECK_MSG(rc == 0, "sluice run exited %d:\n%s", rc, out);
    char want[64];
    snprintf(want, sizeof want, "objects saved   %lld of %lld", (long long)n, (long long)n);
    CHECK_MSG(strstr(out, want), "%s", out);
    char *db = th_path("out.db");
    tp_verify_sink(db, n, 100, 0);
    free(db), free(out), free(src), free(sink), free(ledger), free(path);
}

SL_TEST(source_file_job_ndjson_100k, 80)
{
    run_users_file("users.ndjson", false, false);
}

SL_TEST(source_file_job_json_array_gzip_100k, 80)
{
    run_users_file("users.json.gz", true, true);
}

/* A job of separate processes on the test's nats-server. */
typedef struct {
    th_nats *ns;
    char *env_url, *src, *sink, *ledger, *db;
    const char *env[2];
} file_job;

static void file_job_start(file_job *j, const char *path)
{
    j->ns = th_nats_start(NULL);
    j->env_url = tp_env_url(th_nats_url(j->ns));
    j->env[0] = j->env_url;
    j->env[1] = NULL;
    j->src = source_flag(path);
    j->sink = tp_flag("sink", "sqlite:", "out.db");
    j->ledger = tp_flag("ledger", "", "job.ledger");
    j->db = th_path("out.db");
}

/* Starts a role ("fetcher", "mapper", "saver") and waits for `ready` in
 * its log. */
static th_proc *file_job_spawn(file_job *j, const char *name, const char *role, const char *work_ms,
                               const char *ready)
{
    const char *fargv[] = {"sluice", "fetcher", j->src, j->ledger, NULL};
    const char *margv[] = {"sluice", "mapper", "--work-ms", work_ms, NULL};
    const char *sargv[] = {"sluice", "saver", j->sink, NULL};
    const char *const *argv = !strcmp(role, "fetcher") ? fargv : !strcmp(role, "mapper") ? margv : sargv;
    th_proc *p = th_spawn(name, argv, j->env);
    th_proc_wait_log(p, ready, 10000);
    return p;
}

static void file_job_stop(file_job *j)
{
    th_nats_stop(j->ns);
    free(j->env_url), free(j->src), free(j->sink), free(j->ledger), free(j->db);
}

SL_TEST(source_file_job_malformed_lines_dead_lettered_by_line, 80)
{
    bad_line bad[] = {
        {0, "{\"uuid\": \"cut short\"", 0},
        {4242, "not json at all", 0},
        {50000, "{\"uuid\":\"a\",\"uuid\":\"b\",\"fn\":\"x\",\"ln\":\"y\"}", 0},
        {77001, "[1, 2", 0}, /* 77001 % 1000 == 1: written with CRLF */
        {99999, "{\"fn\": \"\xff\xfe\"}", 0},
    };
    size_t nbad = sizeof bad / sizeof bad[0];
    char *path = users_file("bad.ndjson", 100000, false, false, bad, nbad);
    file_job j;
    file_job_start(&j, path);
    th_proc *f = file_job_spawn(&j, "fetcher", "fetcher", "0", "fetcher started");
    th_proc *s = file_job_spawn(&j, "saver", "saver", "0", "saver started");
    th_proc *m1 = file_job_spawn(&j, "mapper1", "mapper", "0", "mapper started");
    th_proc *m2 = file_job_spawn(&j, "mapper2", "mapper", "0", "mapper started");
    /* Objects dead-lettered inside saved chunks are not dead chunks: the
     * job is complete, exit 0 (exit 3 is for chunks that died). */
    CHECK_INT(th_proc_wait(f, 60000), ==, 0);
    int64_t missing[sizeof bad / sizeof bad[0]];
    for (size_t k = 0; k < nbad; k++)
        missing[k] = bad[k].object;
    tp_verify_sink_missing(j.db, 100000, 100, (int64_t)nbad, -1, missing, nbad);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open_v2(j.db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CHECK(sqlite3_prepare_v2(db, "SELECT chunk, stage, object, reason, raw FROM dead_letters ORDER BY chunk", -1,
                             &q, NULL) == SQLITE_OK);
    for (size_t k = 0; k < nbad; k++) {
        CHECK(sqlite3_step(q) == SQLITE_ROW);
        CHECK_INT(sqlite3_column_int64(q, 0), ==, bad[k].object / 100);
        CHECK_STR((const char *)sqlite3_column_text(q, 1), "mapper");
        CHECK_INT(sqlite3_column_int64(q, 2), ==, bad[k].object % 100);
        char want[64];
        snprintf(want, sizeof want, "line %lld: not valid JSON: ", (long long)bad[k].line);
        const char *reason = (const char *)sqlite3_column_text(q, 3);
        CHECK_MSG(!strncmp(reason, want, strlen(want)), "object %lld: reason \"%s\", wanted \"%s...\"",
                  (long long)bad[k].object, reason, want);
        CHECK_INT(sqlite3_column_bytes(q, 4), ==, (int)strlen(bad[k].text));
        CHECK(memcmp(sqlite3_column_blob(q, 4), bad[k].text, strlen(bad[k].text)) == 0);
    }
    CHECK(bad[1].line > bad[1].object + 1); /* the blank lines counted */
    CHECK(sqlite3_step(q) == SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);
    th_proc_free(m1), th_proc_free(m2), th_proc_free(s), th_proc_free(f);
    file_job_stop(&j);
    free(path);
}

SL_TEST(source_file_job_fetcher_kill9_resumes, 40)
{
    /* The fetcher dies mid-job; a new one indexes the (gzip'd) file again,
     * resumes from the ledger and re-reads what was not done. */
    char *path = users_file("users.ndjson.gz", 20000, false, true, NULL, 0);
    file_job j;
    file_job_start(&j, path);
    natsConnection *nc = tp_connect(th_nats_url(j.ns));
    th_proc *f = file_job_spawn(&j, "fetcher1", "fetcher", "0", "fetcher started");
    th_proc *s = file_job_spawn(&j, "saver", "saver", "0", "saver started");
    th_proc *m1 = file_job_spawn(&j, "mapper1", "mapper", "15", "mapper started");
    th_proc *m2 = file_job_spawn(&j, "mapper2", "mapper", "15", "mapper started");
    tp_wait_chunks(nc, "done", 60, 20000);
    th_proc_kill(f, SIGKILL);
    CHECK_INT(th_proc_wait(f, 5000), ==, 128 + SIGKILL);
    th_proc *f2 = file_job_spawn(&j, "fetcher2", "fetcher", "0", "fetcher resuming");
    /* What the ledger held at the restart was not sent again. */
    json_t *st = tp_status(nc);
    CHECK(st != NULL);
    CHECK(tp_stat(st, "objects", "saved_before") >= 4000);
    json_decref(st);
    CHECK_INT(th_proc_wait(f2, 30000), ==, 0);
    tp_verify_sink(j.db, 20000, 100, 0);
    th_proc_free(m1), th_proc_free(m2), th_proc_free(s), th_proc_free(f), th_proc_free(f2);
    natsConnection_Destroy(nc);
    file_job_stop(&j);
    free(path);
}
