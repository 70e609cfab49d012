/* test_sink.c - the SQLite sink, read back with sqlite3 directly.
 *
 * The schema is a user-facing contract (DESIGN.md): objects(id TEXT PRIMARY
 * KEY, doc TEXT NOT NULL, chunk INTEGER NOT NULL), chunks (one row per saved
 * chunk) and dead_letters (chunk, the stage it died in, object, reason, the
 * raw bytes). */
#include "test.h"

#include <sqlite3.h>
#include <strings.h>
#include <unistd.h>

#include "harness.h"
#include "sink.h"

static sl_sink *open_sink(const char *path)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "sqlite:%s", path);
    sl_sink *s = NULL;
    sl_status st = sl_sink_open(&s, &(sl_sink_opts){.uri = uri, .table = "objects"});
    CHECK_MSG(st == SL_OK, "sl_sink_open(%s): %s", uri, sl_errmsg());
    CHECK(s != NULL);
    return s;
}

static sqlite3 *reader(const char *path)
{
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
    return db;
}

/* The single integer a query returns. */
static int64_t q_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q = NULL;
    CHECK_MSG(sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK, "%s: %s", sql,
              sqlite3_errmsg(db));
    CHECK_MSG(sqlite3_step(q) == SQLITE_ROW, "%s: no row", sql);
    int64_t v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return v;
}

/* The single text a query returns, malloc'd; NULL for SQL NULL. */
static char *q_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q = NULL;
    CHECK_MSG(sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK, "%s: %s", sql,
              sqlite3_errmsg(db));
    CHECK_MSG(sqlite3_step(q) == SQLITE_ROW, "%s: no row", sql);
    const unsigned char *t = sqlite3_column_text(q, 0);
    char *r = t ? strdup((const char *)t) : NULL;
    sqlite3_finalize(q);
    return r;
}

static void check_text(sqlite3 *db, const char *sql, const char *want)
{
    char *got = q_text(db, sql);
    CHECK_MSG(got && !strcmp(got, want), "%s: \"%s\", want \"%s\"", sql, got ? got : "(null)",
              want);
    free(got);
}

/* Column `col` of `table`: its declared type, NOT NULL and primary-key
 * position, as PRAGMA table_info reports them; fails if it is missing. */
static void check_column(sqlite3 *db, const char *table, const char *col, const char *type,
                         int notnull, int pk)
{
    char sql[256];
    snprintf(sql, sizeof sql, "PRAGMA table_info(%s)", table);
    sqlite3_stmt *q = NULL;
    CHECK_INT(sqlite3_prepare_v2(db, sql, -1, &q, NULL), ==, SQLITE_OK);
    int found = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (strcmp((const char *)sqlite3_column_text(q, 1), col) != 0)
            continue;
        found = 1;
        const char *t = (const char *)sqlite3_column_text(q, 2);
        CHECK_MSG(t && !strcasecmp(t, type), "%s.%s has type %s, want %s", table, col, t, type);
        if (notnull >= 0)
            CHECK_MSG(sqlite3_column_int(q, 3) == notnull, "%s.%s notnull %d, want %d", table,
                      col, sqlite3_column_int(q, 3), notnull);
        if (pk >= 0)
            CHECK_MSG(sqlite3_column_int(q, 5) == pk, "%s.%s pk %d, want %d", table, col,
                      sqlite3_column_int(q, 5), pk);
    }
    sqlite3_finalize(q);
    CHECK_MSG(found, "table %s has no column %s", table, col);
}

SL_TEST(sink_open_creates_schema, 5)
{
    char *path = th_path("schema.db");
    sl_sink *s = open_sink(path);
    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
                        " ('objects', 'chunks', 'dead_letters')"),
              ==, 3);
    /* objects(id TEXT PRIMARY KEY, doc TEXT NOT NULL, chunk INTEGER NOT NULL) */
    check_column(db, "objects", "id", "TEXT", -1, 1);
    check_column(db, "objects", "doc", "TEXT", 1, 0);
    check_column(db, "objects", "chunk", "INTEGER", 1, 0);
    CHECK_INT(q_int(db, "SELECT count(*) FROM pragma_table_info('objects')"), ==, 3);
    /* chunks: one row per saved chunk, keyed by its index. */
    check_column(db, "chunks", "idx", "INTEGER", -1, 1);
    check_column(db, "chunks", "count", "INTEGER", -1, -1);
    check_column(db, "chunks", "attempt", "INTEGER", -1, -1);
    check_column(db, "chunks", "saved_at", "TEXT", -1, -1);
    /* dead_letters: chunk, reason, the raw bytes; keyed by (chunk, stage,
     * object). */
    check_column(db, "dead_letters", "chunk", "INTEGER", -1, 1);
    check_column(db, "dead_letters", "stage", "TEXT", -1, 2);
    check_column(db, "dead_letters", "object", "INTEGER", -1, 3);
    check_column(db, "dead_letters", "reason", "TEXT", -1, -1);
    check_column(db, "dead_letters", "raw", "BLOB", -1, -1);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 0);
    sqlite3_close(db);
    sl_sink_destroy(s);

    /* Opening again keeps the tables (and does not fail on them). */
    s = open_sink(path);
    sl_sink_destroy(s);
    sl_sink_destroy(NULL);
    free(path);
}

/* A file the sink creates has 16 KB pages (fewer index pages for a merge
 * to walk and write; sink_sqlite.c); a file made before keeps its own page
 * size, which WAL mode cannot change, and works as before. */
SL_TEST(sink_new_file_has_16k_pages_an_old_one_keeps_its_own, 5)
{
    char *path = th_path("pages.db");
    sl_sink *s = open_sink(path);
    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "PRAGMA page_size"), ==, 16384);
    sqlite3_close(db);
    sl_sink_destroy(s);

    char *old = th_path("old-pages.db");
    CHECK_INT(sqlite3_open(old, &db), ==, SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; CREATE TABLE other(x)", NULL, NULL,
                           NULL),
              ==, SQLITE_OK);
    sqlite3_close(db);
    s = open_sink(old);
    const char *d = "{\"id\":\"a\"}";
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "a", d, strlen(d), 1), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 1, 1, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    sl_sink_destroy(s);
    db = reader(old);
    CHECK_INT(q_int(db, "PRAGMA page_size"), ==, 4096);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 1);
    sqlite3_close(db);
    free(old);
    free(path);
}

SL_TEST(sink_put_chunk_commit_persists, 5)
{
    char *path = th_path("commit.db");
    sl_sink *s = open_sink(path);
    const char *d1 = "{\"id\":\"a\",\"name\":\"Zo\u00eb O'Brien\"}";
    const char *d2 = "{\"id\":\"b\",\"name\":\"B\"}";
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "a", d1, strlen(d1), 4), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "b", d2, strlen(d2), 4), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 4, 2, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);

    /* Visible to another connection, i.e. committed, before destroy. */
    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 2);
    check_text(db, "SELECT doc FROM objects WHERE id = 'a'", d1);
    check_text(db, "SELECT doc FROM objects WHERE id = 'b'", d2);
    CHECK_INT(q_int(db, "SELECT chunk FROM objects WHERE id = 'a'"), ==, 4);
    CHECK_INT(q_int(db, "SELECT count(*) FROM chunks"), ==, 1);
    CHECK_INT(q_int(db, "SELECT count FROM chunks WHERE idx = 4"), ==, 2);
    CHECK_INT(q_int(db, "SELECT attempt FROM chunks WHERE idx = 4"), ==, 1);
    /* saved_at is an ISO-8601 UTC time. */
    char *at = q_text(db, "SELECT saved_at FROM chunks WHERE idx = 4");
    CHECK_MSG(at && strlen(at) >= 20 && at[4] == '-' && at[10] == 'T' && at[strlen(at) - 1] == 'Z',
              "saved_at \"%s\"", at ? at : "(null)");
    free(at);
    sqlite3_close(db);
    sl_sink_destroy(s);

    /* And after the sink is gone. */
    db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 2);
    sqlite3_close(db);
    free(path);
}

SL_TEST(sink_put_uses_doclen, 5)
{
    char *path = th_path("doclen.db");
    sl_sink *s = open_sink(path);
    const char buf[] = "{\"id\":\"x\"}TRAILING GARBAGE";
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "x", buf, 10, 0), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    sqlite3 *db = reader(path);
    check_text(db, "SELECT doc FROM objects WHERE id = 'x'", "{\"id\":\"x\"}");
    sqlite3_close(db);
    sl_sink_destroy(s);
    free(path);
}

SL_TEST(sink_same_id_twice_keeps_one_row_with_latest_doc, 5)
{
    char *path = th_path("upsert.db");
    sl_sink *s = open_sink(path);
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u1", "{\"v\":1}", 7, 1), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u2", "{\"v\":1}", 7, 1), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 1, 2, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    /* The chunk again (a redelivery), with a changed doc and chunk. */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u1", "{\"v\":2}", 7, 9), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 1, 2, 2), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);

    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 2);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects WHERE id = 'u1'"), ==, 1);
    check_text(db, "SELECT doc FROM objects WHERE id = 'u1'", "{\"v\":2}");
    CHECK_INT(q_int(db, "SELECT chunk FROM objects WHERE id = 'u1'"), ==, 9);
    check_text(db, "SELECT doc FROM objects WHERE id = 'u2'", "{\"v\":1}");
    /* One chunk record, the latest. */
    CHECK_INT(q_int(db, "SELECT count(*) FROM chunks"), ==, 1);
    CHECK_INT(q_int(db, "SELECT attempt FROM chunks WHERE idx = 1"), ==, 2);
    sqlite3_close(db);

    /* Twice in one transaction too. */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u3", "{\"v\":3}", 7, 2), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u3", "{\"v\":4}", 7, 2), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects WHERE id = 'u3'"), ==, 1);
    check_text(db, "SELECT doc FROM objects WHERE id = 'u3'", "{\"v\":4}");
    sqlite3_close(db);
    sl_sink_destroy(s);
    free(path);
}

SL_TEST(sink_rollback_leaves_nothing, 5)
{
    char *path = th_path("rollback.db");
    sl_sink *s = open_sink(path);
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "a", "{}", 2, 3), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 3, "mapper", 1, "bad", "x", 1), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 3, 1, 1), ==, SL_OK);
    sl_sink_rollback(s);
    sl_sink_rollback(s); /* a second rollback is harmless */

    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 0);
    CHECK_INT(q_int(db, "SELECT count(*) FROM chunks"), ==, 0);
    CHECK_INT(q_int(db, "SELECT count(*) FROM dead_letters"), ==, 0);
    sqlite3_close(db);

    /* The sink is usable after a rollback. */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "b", "{}", 2, 3), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 3, 1, 2), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 1);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects WHERE id = 'a'"), ==, 0);
    CHECK_INT(q_int(db, "SELECT attempt FROM chunks WHERE idx = 3"), ==, 2);
    sqlite3_close(db);
    sl_sink_destroy(s);
    free(path);
}

SL_TEST(sink_destroy_mid_transaction_commits_nothing, 5)
{
    /* A saver that dies (or gives up) between begin and commit must not
     * leave half a chunk behind. */
    char *path = th_path("abandon.db");
    sl_sink *s = open_sink(path);
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "a", "{}", 2, 0), ==, SL_OK);
    sl_sink_destroy(s);
    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 0);
    sqlite3_close(db);
    free(path);
}

SL_TEST(sink_dead_letters_replace_by_chunk_stage_and_object, 5)
{
    char *path = th_path("dead.db");
    sl_sink *s = open_sink(path);
    const unsigned char raw[] = {'{', 0x00, 0xff, '"', 0x80, '}'}; /* not text, not UTF-8 */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 5, "mapper", 2, "first reason", raw, sizeof raw), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 5, "mapper", 3, "other object", "{}", 2), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 5, "saver", 2, "other stage", "{}", 2), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 5, "fetcher", -1, "whole chunk", "[]", 2), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 6, "mapper", 2, "other chunk", "{}", 2), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    /* The chunk again (a redelivery): the same dead letter replaces the
     * first, it is not added. */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 5, "mapper", 2, "second reason", "{\"x\"", 4), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);

    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM dead_letters"), ==, 5);
    CHECK_INT(q_int(db, "SELECT count(*) FROM dead_letters WHERE chunk = 5 AND stage = 'mapper'"
                        " AND object = 2"),
              ==, 1);
    check_text(db, "SELECT reason FROM dead_letters WHERE chunk = 5 AND stage = 'mapper'"
                   " AND object = 2",
               "second reason");
    check_text(db, "SELECT raw FROM dead_letters WHERE chunk = 5 AND stage = 'mapper'"
                   " AND object = 2",
               "{\"x\"");
    check_text(db, "SELECT reason FROM dead_letters WHERE chunk = 5 AND stage = 'saver'"
                   " AND object = 2",
               "other stage");
    check_text(db, "SELECT reason FROM dead_letters WHERE chunk = 5 AND object = -1",
               "whole chunk");
    check_text(db, "SELECT stage FROM dead_letters WHERE chunk = 5 AND object = -1", "fetcher");
    check_text(db, "SELECT reason FROM dead_letters WHERE chunk = 6 AND object = 2",
               "other chunk");
    sqlite3_close(db);

    /* Raw bytes are kept byte for byte, NULs and invalid UTF-8 included. */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 7, "saver", 0, "binary", raw, sizeof raw), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    db = reader(path);
    sqlite3_stmt *q = NULL;
    CHECK_INT(sqlite3_prepare_v2(db, "SELECT raw, typeof(raw) FROM dead_letters WHERE chunk = 7",
                                 -1, &q, NULL),
              ==, SQLITE_OK);
    CHECK_INT(sqlite3_step(q), ==, SQLITE_ROW);
    CHECK_INT(sqlite3_column_bytes(q, 0), ==, (int)sizeof raw);
    CHECK(memcmp(sqlite3_column_blob(q, 0), raw, sizeof raw) == 0);
    CHECK_STR((const char *)sqlite3_column_text(q, 1), "blob");
    sqlite3_finalize(q);
    sqlite3_close(db);
    sl_sink_destroy(s);
    free(path);
}

SL_TEST(sink_unwritable_path_fails_with_eio, 5)
{
    sl_sink *s = NULL;
    const char *p = "/proc/nonexistent/out.db";
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = "sqlite:/proc/nonexistent/out.db", .table = "objects"}), ==, SL_EIO);
    CHECK(s == NULL);
    CHECK_MSG(strstr(sl_errmsg(), p) != NULL, "message does not name %s: %s", p, sl_errmsg());

    /* A directory in place of the file. */
    char uri[4200];
    snprintf(uri, sizeof uri, "sqlite:%s", th_tmpdir());
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = uri, .table = "objects"}), ==, SL_EIO);
    CHECK(s == NULL);
    CHECK_MSG(strstr(sl_errmsg(), th_tmpdir()) != NULL, "message does not name %s: %s",
              th_tmpdir(), sl_errmsg());

    /* A file that is not a database. */
    char *junk = th_path("junk.db");
    FILE *f = fopen(junk, "w");
    CHECK(f != NULL);
    for (int i = 0; i < 200; i++)
        fputs("definitely not an SQLite file\n", f);
    fclose(f);
    snprintf(uri, sizeof uri, "sqlite:%s", junk);
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = uri, .table = "objects"}), ==, SL_EIO);
    CHECK(s == NULL);
    CHECK_MSG(strstr(sl_errmsg(), junk) != NULL, "message does not name %s: %s", junk, sl_errmsg());
    free(junk);
}

SL_TEST(sink_unknown_uri_refused, 5)
{
    static const char *bad[] = {"mysql://x", "nonsense", "", "sqlite:", "sqlite", "SQLITE:x.db",
                                "file:x.db", "ndjson:", "postgres://", "postgresql:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_sink *s = NULL;
        CHECK_MSG(sl_sink_open(&s, &(sl_sink_opts){.uri = bad[i], .table = "objects"}) == SL_EINVAL, "sink \"%s\" accepted", bad[i]);
        CHECK(s == NULL);
        CHECK_MSG(strstr(sl_errmsg(), bad[i]) != NULL, "message does not name \"%s\": %s", bad[i],
                  sl_errmsg());
    }
    /* The message lists every known form. */
    sl_sink *s = NULL;
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = "x", .table = "objects"}), ==, SL_EINVAL);
    CHECK_MSG(strstr(sl_errmsg(), "sqlite:PATH") && strstr(sl_errmsg(), "ndjson:PATH") &&
                  strstr(sl_errmsg(), "postgres://") && strstr(sl_errmsg(), "postgresql://"),
              "%s", sl_errmsg());
    /* Nothing was created under the names either. */
    CHECK(access("nonsense", F_OK) != 0);
}

SL_TEST(sink_two_sinks_share_a_file, 10)
{
    /* Several savers write to one SQLite file: each chunk is its own
     * transaction, and the rows of both end up there. */
    char *path = th_path("shared.db");
    sl_sink *a = open_sink(path), *b = open_sink(path);
    for (int round = 0; round < 20; round++) {
        sl_sink *s = round % 2 ? b : a;
        char id[32], doc[64];
        CHECK_INT(sl_sink_begin(s), ==, SL_OK);
        for (int k = 0; k < 5; k++) {
            snprintf(id, sizeof id, "obj-%d-%d", round, k);
            snprintf(doc, sizeof doc, "{\"id\":\"%s\"}", id);
            CHECK_INT(sl_sink_put(s, id, doc, strlen(doc), round), ==, SL_OK);
        }
        CHECK_INT(sl_sink_chunk(s, round, 5, 1), ==, SL_OK);
        CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    }
    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 100);
    CHECK_INT(q_int(db, "SELECT count(*) FROM chunks"), ==, 20);
    sqlite3_close(db);
    sl_sink_destroy(a);
    sl_sink_destroy(b);
    free(path);
}

SL_TEST(sink_table_names_its_tables, 5)
{
    /* --table NAME: NAME, NAME_chunks, NAME_dead_letters; a keyword or
     * mixed case works (the names are quoted). The default tables stay
     * untouched, and a second NAME in the same file is independent. */
    char *path = th_path("tables.db");
    char uri[4200];
    snprintf(uri, sizeof uri, "sqlite:%s", path);
    const char *names[] = {"Users", "select"};
    for (int k = 0; k < 2; k++) {
        sl_sink *s = NULL;
        CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = uri, .table = names[k]}), ==, SL_OK);
        CHECK_INT(sl_sink_begin(s), ==, SL_OK);
        CHECK_INT(sl_sink_put(s, "a", "{}", 2, 1), ==, SL_OK);
        CHECK_INT(sl_sink_dead(s, 1, "saver", 0, "why", "x", 1), ==, SL_OK);
        CHECK_INT(sl_sink_chunk(s, 1, 1, 1), ==, SL_OK);
        CHECK_INT(sl_sink_commit(s), ==, SL_OK);
        sl_sink_destroy(s);
    }
    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('Users',"
                        " 'Users_chunks', 'Users_dead_letters', 'select', 'select_chunks', 'select_dead_letters')"),
              ==, 6);
    CHECK_INT(q_int(db, "SELECT count(*) FROM sqlite_master WHERE name IN ('objects', 'chunks', 'dead_letters')"),
              ==, 0);
    CHECK_INT(q_int(db, "SELECT count(*) FROM \"select\""), ==, 1);
    CHECK_INT(q_int(db, "SELECT count(*) FROM Users_dead_letters"), ==, 1);
    check_column(db, "Users", "doc", "TEXT", 1, 0);
    sqlite3_close(db);
    free(path);
}

/* ---- staging: objects of a large table are merged later (sink_sqlite.c) -- */

/* Stages every object (the table counts as large from the first row), and
 * merges in slices of `slice` rows. */
static void stage_always(int slice)
{
    char v[32];
    snprintf(v, sizeof v, "%d", slice);
    setenv("SLUICE_SQLITE_DIRECT_ROWS", "0", 1);
    setenv("SLUICE_SQLITE_SLICE_ROWS", v, 1);
    setenv("SLUICE_SQLITE_MERGE_ROWS", "1000000000", 1);
    setenv("SLUICE_SQLITE_MERGE_AGE_MS", "1000000000", 1);
}

static bool settle(sl_sink *s, sl_settle how)
{
    bool more = true;
    CHECK_MSG(sl_sink_settle(s, how, &more, NULL) == SL_OK, "settle: %s", sl_errmsg());
    return more;
}

static int64_t rows_left(sqlite3 *db)
{
    return q_int(db, "SELECT (SELECT count(*) FROM objects_staged) + (SELECT count(*) FROM objects_staged_b)");
}

/* Settles one idle step at a time until sql gives want: the merge's sort
 * runs on a thread of its own, and a step finds it done or not. */
static void settle_until(sl_sink *s, sqlite3 *db, const char *sql, int64_t want)
{
    int64_t deadline = th_now_ms() + 3000;
    while (q_int(db, sql) != want) {
        CHECK_MSG(th_now_ms() < deadline, "%s: %lld, want %lld", sql, (long long)q_int(db, sql), (long long)want);
        settle(s, SL_SETTLE_IDLE);
        usleep(1000);
    }
}

SL_TEST(sink_staged_objects_reach_the_table_at_merge_last_wins, 5)
{
    stage_always(2);
    char *path = th_path("staged.db");
    sl_sink *s = open_sink(path);
    /* Chunk 1: u1 twice (the later wins), u2, u3. */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u1", "{\"v\":1}", 7, 1), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u2", "{\"v\":1}", 7, 1), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u1", "{\"v\":2}", 7, 1), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u3", "{\"v\":1}", 7, 1), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 1, 4, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    /* Committed: the chunk's record at once, its objects staged. */
    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM chunks"), ==, 1);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 0);
    CHECK_INT(rows_left(db), ==, 4);
    /* Nothing is due yet; an idle step begins a merge of the staging
     * table (its sort runs on a thread of its own), the next ones merge a
     * slice of two rows each once the sort is done. */
    CHECK(settle(s, SL_SETTLE_DUE));
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects_merge"), ==, 0);
    CHECK(settle(s, SL_SETTLE_IDLE));
    CHECK_INT(q_int(db, "SELECT tbl FROM objects_merge"), ==, 0);
    CHECK_INT(q_int(db, "SELECT done FROM objects_merge"), ==, 0);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 0);
    settle_until(s, db, "SELECT count(*) FROM objects", 1);
    CHECK_INT(q_int(db, "SELECT done FROM objects_merge"), ==, 2);
    /* u1's two rows were the first slice, in order. */
    check_text(db, "SELECT doc FROM objects WHERE id = 'u1'", "{\"v\":2}");
    /* Chunk 2 arrives in the middle of the merge: u2 again, u4. It is
     * staged in the other table, is newer than what is merged, and must
     * win over it. */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u2", "{\"v\":3}", 7, 2), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u4", "{\"v\":3}", 7, 2), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 2, 2, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects_staged"), ==, 4);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects_staged_b"), ==, 2);
    /* A merge under way goes on at every due step: its last slice empties
     * the table it merged and ends it. */
    CHECK(settle(s, SL_SETTLE_DUE));
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects_merge"), ==, 0);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects_staged"), ==, 0);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects_staged_b"), ==, 2);
    check_text(db, "SELECT doc FROM objects WHERE id = 'u2'", "{\"v\":1}");
    CHECK(!settle(s, SL_SETTLE_ALL));
    CHECK_INT(rows_left(db), ==, 0);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 4);
    check_text(db, "SELECT doc FROM objects WHERE id = 'u1'", "{\"v\":2}");
    check_text(db, "SELECT doc FROM objects WHERE id = 'u2'", "{\"v\":3}");
    CHECK_INT(q_int(db, "SELECT chunk FROM objects WHERE id = 'u2'"), ==, 2);
    check_text(db, "SELECT doc FROM objects WHERE id = 'u3'", "{\"v\":1}");
    check_text(db, "SELECT doc FROM objects WHERE id = 'u4'", "{\"v\":3}");
    /* Across merges: u3 again replaces the merged row (staged in the
     * first table again: both are empty). */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "u3", "{\"v\":4}", 7, 3), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    CHECK(!settle(s, SL_SETTLE_ALL));
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 4);
    check_text(db, "SELECT doc FROM objects WHERE id = 'u3'", "{\"v\":4}");
    CHECK_INT(q_int(db, "SELECT chunk FROM objects WHERE id = 'u3'"), ==, 3);
    sqlite3_close(db);
    sl_sink_destroy(s);
    free(path);
}

SL_TEST(sink_direct_while_small_then_staged, 5)
{
    /* Below SLUICE_SQLITE_DIRECT_ROWS rows objects are upserted at once;
     * from then on they are staged, and a sink opened on staged rows finds
     * its merge due. */
    setenv("SLUICE_SQLITE_DIRECT_ROWS", "3", 1);
    setenv("SLUICE_SQLITE_MERGE_ROWS", "1000000000", 1);
    setenv("SLUICE_SQLITE_MERGE_AGE_MS", "1000000000", 1);
    char *path = th_path("direct.db");
    sl_sink *s = open_sink(path);
    sqlite3 *db = reader(path);
    const char *ids[] = {"a", "b", "c", "d", "e"};
    for (int k = 0; k < 5; k++) {
        CHECK_INT(sl_sink_begin(s), ==, SL_OK);
        CHECK_INT(sl_sink_put(s, ids[k], "{}", 2, k), ==, SL_OK);
        CHECK_INT(sl_sink_commit(s), ==, SL_OK);
        CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, k < 3 ? k + 1 : 3);
    }
    CHECK(settle(s, SL_SETTLE_DUE)); /* not due: two rows, just staged */
    CHECK_INT(rows_left(db), ==, 2);
    sl_sink_destroy(s);
    s = open_sink(path);
    CHECK(settle(s, SL_SETTLE_DUE)); /* left by an earlier sink: due */
    while (settle(s, SL_SETTLE_DUE))
        ;
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 5);
    CHECK_INT(rows_left(db), ==, 0);
    /* A merge is due once MERGE_ROWS rows are staged. */
    sl_sink_destroy(s);
    setenv("SLUICE_SQLITE_MERGE_ROWS", "2", 1);
    s = open_sink(path);
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "f", "{}", 2, 9), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    CHECK(settle(s, SL_SETTLE_DUE));
    CHECK_INT(rows_left(db), ==, 1);
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "g", "{}", 2, 9), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    while (settle(s, SL_SETTLE_DUE))
        ;
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 7);
    sl_sink_destroy(s);

    /* A small table with rows staged (by a sink that staged everything)
     * stays staged: upserted directly, "h" would be overwritten by its
     * older staged row at the merge. */
    setenv("SLUICE_SQLITE_DIRECT_ROWS", "0", 1);
    setenv("SLUICE_SQLITE_MERGE_ROWS", "1000000000", 1);
    char *path2 = th_path("direct2.db");
    s = open_sink(path2);
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "h", "{\"v\":1}", 7, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    sl_sink_destroy(s);
    setenv("SLUICE_SQLITE_DIRECT_ROWS", "1000", 1);
    s = open_sink(path2);
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "h", "{\"v\":2}", 7, 2), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    CHECK(!settle(s, SL_SETTLE_ALL));
    sqlite3 *db2 = reader(path2);
    check_text(db2, "SELECT doc FROM objects WHERE id = 'h'", "{\"v\":2}");
    sqlite3_close(db2);
    sqlite3_close(db);
    sl_sink_destroy(s);
    free(path2);
    free(path);
}

/* A model of the objects table: the doc of each of NIDS ids (0: none). */
#define NIDS 97

/* One chunk, `round`: up to 40 objects of ids chosen by the round alone,
 * some twice. */
static void put_round(sl_sink *s, int *model, int round)
{
    uint32_t rng = (uint32_t)round * 2654435761u;
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    int n = 1 + (int)((rng >> 4) % 40);
    for (int k = 0; k < n; k++) {
        rng = rng * 1103515245u + 12345u;
        int id = (int)((rng >> 8) % NIDS);
        char key[16], doc[32];
        snprintf(key, sizeof key, "id%02d", id);
        snprintf(doc, sizeof doc, "{\"v\":%d}", round * 100 + k);
        CHECK_INT(sl_sink_put(s, key, doc, strlen(doc), round), ==, SL_OK);
        model[id] = round * 100 + k;
    }
    CHECK_INT(sl_sink_chunk(s, round, n, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
}

static void check_model(const char *path, const int *model)
{
    sqlite3 *db = reader(path);
    CHECK_INT(rows_left(db), ==, 0);
    int n = 0;
    for (int id = 0; id < NIDS; id++) {
        if (!model[id])
            continue;
        n++;
        char sql[96], want[32];
        snprintf(sql, sizeof sql, "SELECT doc FROM objects WHERE id = 'id%02d'", id);
        snprintf(want, sizeof want, "{\"v\":%d}", model[id]);
        check_text(db, sql, want);
    }
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, n);
    sqlite3_close(db);
}

SL_TEST(sink_two_sinks_interleave_puts_and_merges, 20)
{
    /* Two savers on one file, each writing chunks and merging slices in
     * any interleaving: every id ends with its last doc. */
    stage_always(7);
    setenv("SLUICE_SQLITE_MERGE_ROWS", "50", 1);
    char *path = th_path("interleave.db");
    sl_sink *a = open_sink(path), *b = open_sink(path);
    int model[NIDS] = {0};
    uint32_t rng = 7;
    for (int round = 1; round < 400; round++) {
        rng = rng * 1103515245u + 12345u;
        sl_sink *s = (rng >> 16) & 1 ? a : b;
        switch ((rng >> 17) % 4) {
        case 0:
            settle(s, SL_SETTLE_IDLE);
            break;
        case 1:
            settle(s, SL_SETTLE_DUE);
            break;
        default:
            put_round(s, model, round);
        }
    }
    while (settle(a, SL_SETTLE_IDLE) | settle(b, SL_SETTLE_IDLE))
        ;
    check_model(path, model);
    sl_sink_destroy(a);
    sl_sink_destroy(b);
    free(path);
}

SL_TEST(sink_merge_belongs_to_one_sink_and_is_taken_over, 20)
{
    /* One sink at a time merges a table (a flock on the merge's scratch
     * file); another one's settle steps leave its merge alone and say that
     * work remains. When the merging sink goes in the middle (as a saver
     * killed), another takes the merge over: it sorts the rows again and
     * goes on from where the merge's row says. */
    stage_always(3);
    char *path = th_path("takeover.db");
    sl_sink *a = open_sink(path), *b = open_sink(path);
    sqlite3 *db = reader(path);
    int model[NIDS] = {0};
    for (int round = 1; round <= 5; round++)
        put_round(a, model, round);
    CHECK(settle(a, SL_SETTLE_IDLE));
    settle_until(a, db, "SELECT coalesce((SELECT done FROM objects_merge), 0) > 0", 1);
    int64_t done = q_int(db, "SELECT done FROM objects_merge");
    int64_t merged = q_int(db, "SELECT count(*) FROM objects");
    for (int k = 0; k < 5; k++) {
        CHECK(settle(b, SL_SETTLE_IDLE));
        CHECK(settle(b, SL_SETTLE_DUE));
    }
    CHECK(settle(b, SL_SETTLE_ALL));
    CHECK_INT(q_int(db, "SELECT done FROM objects_merge"), ==, done);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, merged);
    /* b stages meanwhile, in the table the merge does not take. */
    put_round(b, model, 6);
    CHECK(q_int(db, "SELECT count(*) FROM objects_staged_b") > 0);
    sl_sink_destroy(a);
    while (settle(b, SL_SETTLE_IDLE))
        ;
    check_model(path, model);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects_merge"), ==, 0);
    sqlite3_close(db);
    sl_sink_destroy(b);
    free(path);
}

SL_TEST(sink_in_memory_database_is_never_staged, 5)
{
    /* sqlite::memory: holds nothing past the saver, but works: its
     * objects go to the table directly (the merge's sorter could not open
     * that database again), and no scratch file appears. */
    stage_always(1);
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK_INT(chdir(th_tmpdir()), ==, 0);
    sl_sink *s = NULL;
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = "sqlite::memory:", .table = "objects"}), ==, SL_OK);
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "a", "{}", 2, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    bool more = true;
    CHECK_INT(sl_sink_settle(s, SL_SETTLE_ALL, &more, NULL), ==, SL_OK);
    CHECK(!more);
    CHECK(access(":memory:-merge-objects", F_OK) != 0);
    sl_sink_destroy(s);
    CHECK_INT(chdir(cwd), ==, 0);
}

SL_TEST(sink_rows_an_earlier_version_left_sorted_are_merged_first, 5)
{
    /* A saver of the version before the scratch file, stopped in a merge,
     * left rows in objects_sorted: they are older than every staged row,
     * and a sink opening the file merges them (and drops that table)
     * before anything else. */
    stage_always(50);
    char *path = th_path("legacy.db");
    sqlite3 *w = NULL;
    CHECK_INT(sqlite3_open(path, &w), ==, SQLITE_OK);
    CHECK_INT(sqlite3_exec(w,
                           "PRAGMA journal_mode=WAL;"
                           "CREATE TABLE objects(id TEXT PRIMARY KEY, doc TEXT NOT NULL, chunk INTEGER NOT NULL);"
                           "CREATE TABLE objects_staged(seq INTEGER PRIMARY KEY, id TEXT NOT NULL,"
                           " doc TEXT NOT NULL, chunk INTEGER NOT NULL);"
                           "CREATE TABLE objects_sorted(pos INTEGER PRIMARY KEY, id TEXT NOT NULL,"
                           " doc TEXT NOT NULL, chunk INTEGER NOT NULL);"
                           "INSERT INTO objects VALUES ('a', '{\"v\":0}', 0);"
                           "INSERT INTO objects_sorted(id, doc, chunk) VALUES ('a', '{\"v\":1}', 1),"
                           " ('b', '{\"v\":1}', 1);"
                           "INSERT INTO objects_staged(id, doc, chunk) VALUES ('b', '{\"v\":2}', 2),"
                           " ('c', '{\"v\":2}', 2);",
                           NULL, NULL, NULL),
              ==, SQLITE_OK);
    sqlite3_close(w);
    sl_sink *s = open_sink(path);
    sqlite3 *db = reader(path);
    CHECK_INT(q_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'objects_sorted'"), ==, 0);
    check_text(db, "SELECT doc FROM objects WHERE id = 'a'", "{\"v\":1}");
    check_text(db, "SELECT doc FROM objects WHERE id = 'b'", "{\"v\":1}");
    CHECK_INT(rows_left(db), ==, 2);
    CHECK(!settle(s, SL_SETTLE_ALL));
    CHECK_INT(rows_left(db), ==, 0);
    CHECK_INT(q_int(db, "SELECT count(*) FROM objects"), ==, 3);
    check_text(db, "SELECT doc FROM objects WHERE id = 'b'", "{\"v\":2}");
    check_text(db, "SELECT doc FROM objects WHERE id = 'c'", "{\"v\":2}");
    sqlite3_close(db);
    sl_sink_destroy(s);
    free(path);
}
