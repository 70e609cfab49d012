/* test_ndjson.c - the NDJSON sink (ndjson:PATH): lines, the chunk index
 * that keeps a re-saved chunk from being appended twice, dead letters. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "harness.h"
#include "pipeline.h"
#include "sink.h"
#include "source_gen.h"
#include "test.h"

static sl_sink *open_nd(const char *path)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "ndjson:%s", path);
    sl_sink *s = NULL;
    CHECK_MSG(sl_sink_open(&s, &(sl_sink_opts){.uri = uri, .table = "objects"}) == SL_OK, "%s", sl_errmsg());
    return s;
}

static void save(sl_sink *s, int64_t chunk, const char *id, const char *doc)
{
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, id, doc, strlen(doc), chunk), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, chunk, 1, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
}

static char *file_of(const char *path, const char *suffix)
{
    char p[4300];
    snprintf(p, sizeof p, "%s%s", path, suffix);
    char *t = th_read_file(p, NULL);
    CHECK_MSG(t, "cannot read %s", p);
    return t;
}

SL_TEST(sink_ndjson_lines_chunk_index_and_dead_letters, 10)
{
    char *path = th_path("out.ndjson");
    sl_sink *a = open_nd(path), *b = open_nd(path);
    save(a, 1, "x", "{\"id\":\"x\"}");
    save(a, 1, "x", "{\"id\":\"x\"}");  /* a redelivery: not appended */
    save(b, 1, "x", "{\"id\":\"x\"}");  /* another saver sharing the file knows too */
    save(b, 2, "y", "{\"id\":\"y\"}");
    char *t = file_of(path, "");
    CHECK_STR(t, "{\"id\":\"x\"}\n{\"id\":\"y\"}\n");
    free(t);
    t = file_of(path, ".chunks");
    CHECK_STR(t, "1\n2\n");
    free(t);

    /* Rollback writes nothing. */
    CHECK_INT(sl_sink_begin(a), ==, SL_OK);
    CHECK_INT(sl_sink_put(a, "z", "{}", 2, 3), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(a, 3, 1, 1), ==, SL_OK);
    sl_sink_rollback(a);
    /* A doc that is not one line is refused. */
    CHECK_INT(sl_sink_begin(a), ==, SL_OK);
    CHECK_INT(sl_sink_put(a, "z", "{\n}", 3, 3), ==, SL_EINVAL);
    sl_sink_rollback(a);

    /* Dead letters: valid UTF-8 as "raw", other bytes as "raw_base64". */
    const unsigned char bin[] = {'{', 0xff, 0x00, '}'};
    CHECK_INT(sl_sink_begin(a), ==, SL_OK);
    CHECK_INT(sl_sink_dead(a, 5, "mapper", 2, "bad \"quote\"", "{\"a\":1}", 7), ==, SL_OK);
    CHECK_INT(sl_sink_dead(a, 5, "fetcher", -1, "died", bin, sizeof bin), ==, SL_OK);
    CHECK_INT(sl_sink_commit(a), ==, SL_OK);
    t = file_of(path, ".dead");
    CHECK_STR(t, "{\"chunk\":5,\"stage\":\"mapper\",\"object\":2,\"reason\":\"bad \\\"quote\\\"\",\"raw\":\"{\\\"a\\\":1}\"}\n"
                 "{\"chunk\":5,\"stage\":\"fetcher\",\"object\":-1,\"reason\":\"died\",\"raw_base64\":\"e/8AfQ==\"}\n");
    free(t);

    /* A torn last line (a crash mid-write) stays a line of its own. */
    FILE *f = fopen(path, "a");
    fputs("{\"id\":\"tor", f);
    fclose(f);
    save(a, 4, "w", "{\"id\":\"w\"}");
    t = file_of(path, "");
    CHECK_STR(t, "{\"id\":\"x\"}\n{\"id\":\"y\"}\n{\"id\":\"tor\n{\"id\":\"w\"}\n");
    free(t);
    sl_sink_destroy(a);
    sl_sink_destroy(b);

    /* A new sink reads the index: chunk 2 again is not appended. */
    sl_sink *c = open_nd(path);
    save(c, 2, "y", "{\"id\":\"y\"}");
    t = file_of(path, ".chunks");
    CHECK_STR(t, "1\n2\n4\n");
    free(t);
    sl_sink_destroy(c);

    /* An unwritable path fails at open, naming it. */
    sl_sink *s = NULL;
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = "ndjson:/proc/nonexistent/x", .table = "objects"}), ==,
              SL_EIO);
    CHECK(strstr(sl_errmsg(), "/proc/nonexistent/x"));
    free(path);
}

typedef struct {
    json_t *byid; /* id -> [doc text, chunk] */
} nd_rows;

static int nd_row(void *arg, const char *id, const char **doc, int64_t *chunk)
{
    json_t *e = json_object_get(((nd_rows *)arg)->byid, id);
    if (!e)
        return 0;
    *doc = json_string_value(json_array_get(e, 0));
    *chunk = json_integer_value(json_array_get(e, 1));
    return 1;
}

SL_TEST(sink_ndjson_job_every_id_once, 90)
{
    char *sink = tp_flag("sink", "ndjson:", "job.ndjson"), *ledger = tp_flag("ledger", "", "l.ledger");
    const char *argv[] = {"sluice", "run", "--objects", "2000", "--savers", "2", sink, ledger, NULL};
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 80000);
    CHECK_MSG(rc == 0, "sluice run exited %d:\n%s", rc, out);
    char *path = th_path("job.ndjson");
    char *t = file_of(path, "");
    /* Each line is one object; no id twice. The chunk is not in the line:
     * the generator puts user i in chunk i / 100. */
    nd_rows rows = {json_object()};
    int lines = 0;
    for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *o = json_loads(line, 0, NULL);
        CHECK_MSG(json_is_object(o), "not a JSON object: %s", line);
        const char *id = json_string_value(json_object_get(o, "id"));
        CHECK_MSG(id && !json_object_get(rows.byid, id), "id %s twice", id ? id : "(none)");
        json_object_set_new(rows.byid, id, json_pack("[s,i]", line, -1));
        json_decref(o);
        lines++;
    }
    CHECK_INT(lines, ==, 2000);
    /* Chunk of each id from the generator's order: fill in, then verify. */
    sl_buf b = SL_BUF_INIT;
    for (int c = 0; c < 20; c++) {
        sl_buf_reset(&b);
        sl_gen_users(1, c, c * 100, 100, &b);
        json_t *arr = json_loads(b.data, 0, NULL);
        size_t i;
        json_t *u;
        json_array_foreach(arr, i, u)
        {
            json_t *e = json_object_get(rows.byid, json_string_value(json_object_get(u, "uuid")));
            if (e)
                json_array_set_new(e, 1, json_integer(c));
        }
        json_decref(arr);
    }
    sl_buf_free(&b);
    CHECK_INT(tp_verify_rows(2000, 100, -1, NULL, 0, true, nd_row, &rows), ==, 2000);
    char *idx = file_of(path, ".chunks");
    int n = 0;
    for (char *p = idx; *p; p++)
        n += *p == '\n';
    CHECK_INT(n, ==, 20);
    char *dead = file_of(path, ".dead");
    CHECK_STR(dead, "");
    json_decref(rows.byid);
    free(idx), free(dead), free(t), free(path), free(out), free(sink), free(ledger);
}

SL_TEST(sink_ndjson_group_commit_of_several_chunks, 10)
{
    /* One transaction holding chunks 1, 2, 1 again (a redelivery in the
     * same batch) and 3, of which 3 was committed before: 1 and 2 are
     * appended once each, with their dead letters, and recorded. */
    char *path = th_path("group.ndjson");
    sl_sink *s = open_nd(path);
    save(s, 3, "c", "{\"id\":\"c\"}");
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    const struct {
        int64_t chunk;
        const char *id;
    } puts_[] = {{1, "a1"}, {1, "a2"}, {2, "b1"}, {1, "a1"}, {1, "a2"}, {3, "c"}};
    for (size_t i = 0; i < sizeof puts_ / sizeof puts_[0]; i++) {
        char doc[64];
        snprintf(doc, sizeof doc, "{\"id\":\"%s\"}", puts_[i].id);
        CHECK_INT(sl_sink_put(s, puts_[i].id, doc, strlen(doc), puts_[i].chunk), ==, SL_OK);
        bool last_of_chunk = i + 1 == sizeof puts_ / sizeof puts_[0] || puts_[i + 1].chunk != puts_[i].chunk;
        if (puts_[i].chunk == 2)
            CHECK_INT(sl_sink_dead(s, 2, "saver", 1, "no id", "{}", 2), ==, SL_OK);
        if (last_of_chunk)
            CHECK_INT(sl_sink_chunk(s, puts_[i].chunk, 1, 1), ==, SL_OK);
    }
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    char *t = file_of(path, "");
    CHECK_STR(t, "{\"id\":\"c\"}\n{\"id\":\"a1\"}\n{\"id\":\"a2\"}\n{\"id\":\"b1\"}\n");
    free(t);
    t = file_of(path, ".chunks");
    CHECK_STR(t, "3\n1\n2\n");
    free(t);
    t = file_of(path, ".dead");
    CHECK_STR(t, "{\"chunk\":2,\"stage\":\"saver\",\"object\":1,\"reason\":\"no id\",\"raw\":\"{}\"}\n");
    free(t);
    sl_sink_destroy(s);
    free(path);
}
