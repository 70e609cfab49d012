/* test_jq.c - jq:FILTER transforms end to end: `sluice run` with a real
 * nats-server, every row of the SQLite sink compared with what the filter
 * must make of the generator's users (computed here in C, independently
 * of jq). */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "pipeline.h"
#include "source_gen.h"
#include "test.h"

#define OBJECTS 1000
#define CHUNK 100

/* The generator's users of the job, as one JSON array (caller decrefs). */
static json_t *users(void)
{
    json_t *all = json_array();
    sl_buf b = SL_BUF_INIT;
    for (int64_t c = 0; c * CHUNK < OBJECTS; c++) {
        sl_buf_reset(&b);
        sl_gen_users(1, c, c * CHUNK, CHUNK, &b);
        json_t *arr = json_loadb(b.data, b.len, 0, NULL);
        CHECK(json_is_array(arr));
        json_array_extend(all, arr);
        json_decref(arr);
    }
    sl_buf_free(&b);
    return all;
}

/* Runs the job with transform `spec` into <tmpdir>/<name>.db and returns
 * run's output (caller frees); its exit code must be want_rc. */
static char *run_job(const char *name, const char *spec, int want_rc)
{
    sl_buf db = SL_BUF_INIT, ledger = SL_BUF_INIT, tf = SL_BUF_INIT;
    sl_buf_printf(&db, "%s.db", name);
    sl_buf_printf(&ledger, "%s.ledger", name);
    sl_buf_printf(&tf, "--transform=%s", spec);
    char *sink = tp_flag("sink", "sqlite:", db.data), *led = tp_flag("ledger", "", ledger.data);
    const char *argv[] = {"sluice", "run", "--objects", "1000", "--chunk-size", "100", "--mappers", "2",
                          tf.data, sink, led, NULL};
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 50000);
    CHECK_MSG(rc == want_rc, "sluice run %s exited %d, not %d:\n%s", spec, rc, want_rc, out);
    free(sink), free(led);
    sl_buf_free(&db), sl_buf_free(&ledger), sl_buf_free(&tf);
    return out;
}

/* The sink of job `name` holds exactly the rows of want (id -> doc, as
 * compact JSON objects) and `dead` dead letters. */
static void check_rows(const char *name, json_t *want, int64_t dead)
{
    sl_buf rel = SL_BUF_INIT;
    sl_buf_printf(&rel, "%s.db", name);
    char *path = th_path(rel.data);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CHECK(sqlite3_prepare_v2(db, "SELECT id, doc FROM objects", -1, &q, NULL) == SQLITE_OK);
    size_t rows = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(q, 0);
        json_t *w = json_object_get(want, id);
        CHECK_MSG(w != NULL, "%s: row %s is not one the filter makes", name, id);
        char *ws = json_dumps(w, JSON_COMPACT);
        CHECK_STR((const char *)sqlite3_column_text(q, 1), ws);
        free(ws);
        rows++;
    }
    sqlite3_finalize(q);
    CHECK_INT(rows, ==, json_object_size(want));
    CHECK(sqlite3_prepare_v2(db, "SELECT count(*) FROM dead_letters", -1, &q, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    CHECK_INT(sqlite3_column_int64(q, 0), ==, dead);
    sqlite3_finalize(q);
    sqlite3_close(db);
    free(path);
    sl_buf_free(&rel);
}

static const char *str(json_t *u, const char *key) { return json_string_value(json_object_get(u, key)); }

SL_TEST(jq_projection_and_interpolation_end_to_end, 60)
{
    char *out = run_job("proj", "jq:{id: .uuid, greeting: \"Hello, \\(.fn) \\(.ln)!\", friends: (.friends | length)}",
                        0);
    json_t *all = users(), *want = json_object(), *u;
    size_t i;
    json_array_foreach(all, i, u)
    {
        sl_buf g = SL_BUF_INIT;
        sl_buf_printf(&g, "Hello, %s %s!", str(u, "fn"), str(u, "ln"));
        json_object_set_new(want, str(u, "uuid"),
                            json_pack("{s:s, s:s, s:I}", "id", str(u, "uuid"), "greeting", g.data, "friends",
                                      (json_int_t)json_array_size(json_object_get(u, "friends"))));
        sl_buf_free(&g);
    }
    check_rows("proj", want, 0);
    CHECK(strstr(out, "objects saved   1000 of 1000"));
    json_decref(all), json_decref(want), free(out);
}

SL_TEST(jq_select_and_multiple_outputs_end_to_end, 60)
{
    /* Users with 15 or more friends, each split into one object per of
     * their first two friends; everybody else dropped, not dead. */
    char *out = run_job("multi", "jq:select(.friends | length >= 15) | .uuid as $u | .friends[:2][] | "
                                 "{id: \"\\($u)>\\(.)\", from: $u}", 0);
    json_t *all = users(), *want = json_object(), *u;
    size_t i;
    json_array_foreach(all, i, u)
    {
        json_t *fr = json_object_get(u, "friends");
        if (json_array_size(fr) < 15)
            continue;
        for (size_t k = 0; k < 2; k++) {
            sl_buf id = SL_BUF_INIT;
            sl_buf_printf(&id, "%s>%s", str(u, "uuid"), json_string_value(json_array_get(fr, k)));
            json_object_set_new(want, id.data, json_pack("{s:s, s:s}", "id", id.data, "from", str(u, "uuid")));
            sl_buf_free(&id);
        }
    }
    CHECK_MSG(json_object_size(want) > 100 && json_object_size(want) < 2 * OBJECTS,
              "the filter should keep some users and drop others (%zu rows)", json_object_size(want));
    check_rows("multi", want, 0);
    CHECK(strstr(out, "dead letters    0 chunks, 0 objects"));
    json_decref(all), json_decref(want), free(out);
}

SL_TEST(jq_erroring_filter_dead_letters_those_objects, 60)
{
    char *out = run_job("err", "jq:if (.fn | test(\"^[AB]\")) then error(\"rejected \\(.fn)\") else {id: .uuid} end",
                        0);
    json_t *all = users(), *want = json_object(), *reasons = json_object(), *u;
    size_t i;
    json_array_foreach(all, i, u)
    {
        const char *fn = str(u, "fn");
        if (fn[0] == 'A' || fn[0] == 'B') {
            sl_buf key = SL_BUF_INIT;
            sl_buf_printf(&key, "%zu/%zu", i / CHUNK, i % CHUNK);
            sl_buf r = SL_BUF_INIT;
            sl_buf_printf(&r, "jq: rejected %s", fn);
            json_object_set_new(reasons, key.data, json_string(r.data));
            sl_buf_free(&key), sl_buf_free(&r);
        } else
            json_object_set_new(want, str(u, "uuid"), json_pack("{s:s}", "id", str(u, "uuid")));
    }
    size_t ndead = json_object_size(reasons);
    CHECK_MSG(ndead > 10 && ndead < OBJECTS / 2, "the filter should refuse some users (%zu)", ndead);
    check_rows("err", want, (int64_t)ndead);

    /* Each dead letter: stage mapper, its index in its chunk, jq's message
     * and the user's own JSON. */
    char *path = th_path("err.db");
    sqlite3 *db = NULL;
    CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CHECK(sqlite3_prepare_v2(db, "SELECT chunk, stage, object, reason, raw FROM dead_letters", -1, &q, NULL) ==
          SQLITE_OK);
    while (sqlite3_step(q) == SQLITE_ROW) {
        sl_buf key = SL_BUF_INIT;
        sl_buf_printf(&key, "%lld/%lld", (long long)sqlite3_column_int64(q, 0), (long long)sqlite3_column_int64(q, 2));
        CHECK_STR((const char *)sqlite3_column_text(q, 1), "mapper");
        json_t *r = json_object_get(reasons, key.data);
        CHECK_MSG(r != NULL, "dead letter %s is not one the filter refuses", key.data);
        CHECK_STR((const char *)sqlite3_column_text(q, 3), json_string_value(r));
        json_t *raw = json_loadb(sqlite3_column_blob(q, 4), (size_t)sqlite3_column_bytes(q, 4), 0, NULL);
        CHECK(json_is_object(raw));
        CHECK(json_equal(raw, json_array_get(all, (size_t)(sqlite3_column_int64(q, 0) * CHUNK +
                                                           sqlite3_column_int64(q, 2)))));
        json_decref(raw);
        sl_buf_free(&key);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    free(path);
    sl_buf line = SL_BUF_INIT;
    sl_buf_printf(&line, "dead letters    0 chunks, %zu objects", ndead);
    CHECK_MSG(strstr(out, line.data), "summary lacks \"%s\":\n%s", line.data, out);
    sl_buf_free(&line);
    json_decref(all), json_decref(want), json_decref(reasons), free(out);
}

SL_TEST(jq_invalid_program_is_a_usage_error, 20)
{
    const char *runs[][5] = {
        {"sluice", "run", "--transform", "jq:{id: .uuid", NULL},
        {"sluice", "mapper", "--transform", "jq:.a |||", NULL},
    };
    for (size_t i = 0; i < 2; i++) {
        char *out = NULL;
        int rc = th_run(runs[i], NULL, &out, 10000);
        CHECK_MSG(rc == 2, "sluice %s exited %d:\n%s", runs[i][1], rc, out);
        CHECK_MSG(strstr(out, "jq program does not compile") && strstr(out, "syntax error"), "%s", out);
        free(out);
    }
}
