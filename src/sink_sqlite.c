/* sink_sqlite.c - the default sink: a SQLite file (schema in DESIGN.md).
 *
 *   objects(id TEXT PRIMARY KEY, doc TEXT NOT NULL, chunk INTEGER NOT NULL)
 *   chunks(idx INTEGER PRIMARY KEY, count INTEGER NOT NULL,
 *          attempt INTEGER NOT NULL, saved_at TEXT NOT NULL)
 *   dead_letters(chunk INTEGER NOT NULL, stage TEXT NOT NULL,
 *                object INTEGER NOT NULL, reason TEXT NOT NULL, raw BLOB,
 *                PRIMARY KEY (chunk, stage, object))
 *
 * With --table NAME other than "objects" the tables are NAME, NAME_chunks
 * and NAME_dead_letters (sl_sink_tables), so several jobs can share a file.
 *
 * synchronous=FULL: a chunk is confirmed right after its commit, so a commit
 * must survive a power loss, or the fetcher would mark done a chunk that is
 * not on disk.
 *
 * Staging. Ids are random, so once the id index outgrows the page cache
 * every upsert dirties an index page of its own, and every commit writes
 * each of those 4 KB pages to the WAL and the checkpoint writes it again:
 * at 10 million rows that was 11 KB written per object, and 24,000 objects/s.
 * So while the objects table is small (DIRECT_ROWS) a chunk's objects are
 * upserted into it directly, and beyond that they are appended to
 * NAME_staged(seq, id, doc, chunk), in the chunk's own transaction (the
 * chunk is as durable as before, and its record and dead letters are
 * written as before). Staged rows reach the objects table by a merge
 * (settle), in two kinds of transaction:
 *
 *   sort:  every staged row is copied to NAME_sorted(pos, id, doc, chunk)
 *          in the order (id, seq) and the staging table is emptied;
 *   slice: the SLICE_ROWS sorted rows of lowest pos are upserted into the
 *          objects table in pos order and deleted from NAME_sorted.
 *
 * In id order the upserts of a merge walk the index once, writing each
 * index page once per merge instead of once per object. Later rows win:
 * a sort puts the later of two rows with one id after the earlier (seq
 * grows with every append), a slice applies rows in that order, and
 * everything in NAME_sorted is older than everything in NAME_staged (a sort
 * moves all staged rows at once; a sort that finds NAME_sorted not empty
 * appends after it). Each transaction is atomic, so a crash anywhere
 * leaves every row in exactly one of the three tables, and the merge goes
 * on after a restart; savers sharing the file can interleave these
 * transactions in any order. A chunk goes to the objects table directly
 * only while both staging tables are empty, or it could be overwritten by
 * an older staged row. Readers of the objects table therefore see a
 * staged chunk's objects only after its merge (see settle below and the
 * README's Sinks section). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "db.h"
#include "sink.h"

/* The defaults, each of which an environment variable sets (see knob()),
 * for the tests and for tuning. Measured with the reference data set on
 * the 2-core development machine (README, Performance). */
#define DIRECT_ROWS 100000   /* objects upserted directly below this many rows */
#define MERGE_ROWS 2000000   /* staged rows that make a merge due */
#define MERGE_AGE_MS 60000   /* ... or the age of the oldest staged row */
#define SLICE_ROWS 50000     /* rows per slice transaction */
/* The page size of a file the sink creates (SQLite's default is 4096).
 * Larger pages make a shorter id index with fewer pages for a merge to walk
 * and write, and fewer WAL frames per commit. 100,000-object jobs, 7 runs
 * each interleaved, median wall: 4 KB 0.544 s, 16 KB 0.506, 64 KB 0.488;
 * 10 M jobs: 4 KB 71-76 s, 16 KB 64.6-68.3 (3 runs), 64 KB 64.5 (1). 16 KB
 * takes most of the gain while a small commit still writes small frames. */
#define PAGE_SIZE 16384

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *upsert, *stage, *dead, *chunk;
    sqlite3_stmt *state, *sort, *unstage, *slice, *unsort;
    int in_tx;
    bool staging;         /* this transaction's objects are staged */
    bool leftover;        /* rows were staged when the sink opened */
    int64_t staged_since; /* when this connection first staged a row since its last sort (0: not
                           * since) */
    int64_t direct_rows, merge_rows, merge_age_ms, slice_rows;
} sqlite_sink;

static sl_status step(sqlite_sink *s, sqlite3_stmt *q, const char *what)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return sl_db_fail(s->db, what);
    return SL_OK;
}

/* What settling depends on: rows in the objects table (its largest rowid:
 * rows are only added, and counting would read the whole table), rows
 * staged, and rows sorted and not yet merged. */
typedef struct {
    int64_t objects, staged, sorted;
} stage_state;

static sl_status get_state(sqlite_sink *s, stage_state *out)
{
    int rc = sqlite3_step(s->state);
    if (rc == SQLITE_ROW) {
        out->objects = sqlite3_column_int64(s->state, 0);
        out->staged = sqlite3_column_int64(s->state, 1);
        out->sorted = sqlite3_column_int64(s->state, 2);
    }
    sqlite3_reset(s->state);
    return rc == SQLITE_ROW ? SL_OK : sl_db_fail(s->db, "read staging state");
}

static sl_status sq_begin(void *impl)
{
    sqlite_sink *s = impl;
    /* IMMEDIATE takes the write lock now, so a second saver waits here
     * (busy timeout) instead of failing at commit. */
    sl_status st = sl_db_exec(s->db, "BEGIN IMMEDIATE");
    if (st)
        return st;
    s->in_tx = 1;
    /* Decided under the write lock: another saver may have staged rows. */
    stage_state ss;
    if ((st = get_state(s, &ss))) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        s->in_tx = 0;
        return st;
    }
    s->staging = ss.objects >= s->direct_rows || ss.staged > 0 || ss.sorted > 0;
    return SL_OK;
}

static sl_status sq_put(void *impl, const char *id, const char *doc, size_t doclen, int64_t chunk)
{
    sqlite_sink *s = impl;
    sqlite3_stmt *q = s->staging ? s->stage : s->upsert;
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, doc, (int)doclen, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, chunk);
    if (s->staging && !s->staged_since)
        s->staged_since = sl_now_ms();
    return step(s, q, "save object");
}

static sl_status sq_dead(void *impl, int64_t chunk, const char *stage, int64_t object, const char *reason,
                         const void *raw, size_t rawlen)
{
    sqlite_sink *s = impl;
    sqlite3_bind_int64(s->dead, 1, chunk);
    sqlite3_bind_text(s->dead, 2, stage, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->dead, 3, object);
    sqlite3_bind_text(s->dead, 4, reason, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s->dead, 5, raw, (int)rawlen, SQLITE_STATIC);
    return step(s, s->dead, "save dead letter");
}

static sl_status sq_chunk(void *impl, int64_t chunk, int64_t count, int64_t attempt)
{
    sqlite_sink *s = impl;
    sqlite3_bind_int64(s->chunk, 1, chunk);
    sqlite3_bind_int64(s->chunk, 2, count);
    sqlite3_bind_int64(s->chunk, 3, attempt);
    return step(s, s->chunk, "save chunk record");
}

static sl_status sq_commit(void *impl)
{
    sqlite_sink *s = impl;
    sl_status st = sl_db_exec(s->db, "COMMIT");
    if (st)
        return st; /* the caller rolls back */
    s->in_tx = 0;
    return SL_OK;
}

static void sq_rollback(void *impl)
{
    sqlite_sink *s = impl;
    if (s->in_tx)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->in_tx = 0;
}

/* One transaction of a merge: a then b (the sort and the emptying of the
 * staging table, or a slice and its deletion). */
static sl_status merge_tx(sqlite_sink *s, sqlite3_stmt *a, sqlite3_stmt *b)
{
    sl_status st = sl_db_exec(s->db, "BEGIN IMMEDIATE");
    if (st)
        return st;
    s->in_tx = 1;
    if ((st = step(s, a, "merge staged objects")) || (st = step(s, b, "merge staged objects")) ||
        (st = sq_commit(s)))
        sq_rollback(s);
    return st;
}

/* A merge is due when the staged rows are many (a merge costs about a
 * write of the whole id index, however few rows it brings), or the oldest
 * has waited long enough for a reader. SL_SETTLE_DUE carries on a merge
 * that has begun one slice at a time; SL_SETTLE_IDLE does one transaction
 * of whatever is staged; SL_SETTLE_ALL merges everything. */
static sl_status sq_settle(void *impl, sl_settle how, bool *more, int64_t *txs)
{
    sqlite_sink *s = impl;
    SL_ASSERT(!s->in_tx);
    for (;;) {
        stage_state ss;
        sl_status st = get_state(s, &ss);
        if (st)
            return st;
        if (!ss.staged && !ss.sorted) {
            s->staged_since = 0;
            s->leftover = false;
            *more = false;
            return SL_OK;
        }
        *more = true;
        if (!ss.sorted && how == SL_SETTLE_DUE && ss.staged < s->merge_rows && !s->leftover &&
            !(s->staged_since && sl_now_ms() - s->staged_since >= s->merge_age_ms))
            return SL_OK;
        if (ss.sorted) {
            if ((st = merge_tx(s, s->slice, s->unsort)))
                return st;
        } else {
            if ((st = merge_tx(s, s->sort, s->unstage)))
                return st;
            /* The age is that of the oldest row staged: none now. */
            s->staged_since = 0;
            s->leftover = false;
        }
        ++*txs;
        if (how != SL_SETTLE_ALL)
            return SL_OK;
    }
}

static void sq_destroy(void *impl)
{
    sqlite_sink *s = impl;
    if (!s)
        return;
    sq_rollback(s);
    sqlite3_stmt *q[] = {s->upsert, s->stage, s->dead, s->chunk, s->state, s->sort, s->unstage, s->slice, s->unsort};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        sqlite3_finalize(q[i]);
    sqlite3_close(s->db);
    free(s);
}

static const sl_sink_ops sqlite_ops = {
    sq_begin, sq_put, sq_dead, sq_chunk, sq_commit, sq_rollback, sq_destroy, sq_settle,
};

/* An integer setting from the environment variable `name`, else def. */
static sl_status knob(const char *name, int64_t def, int64_t min, int64_t *out)
{
    const char *v = getenv(name);
    if (!v || !v[0]) {
        *out = def;
        return SL_OK;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < min)
        return sl_fail(SL_EINVAL, "%s: \"%s\" is not a whole number >= %lld", name, v, (long long)min);
    *out = n;
    return SL_OK;
}

/* Prepares the statement that fmt makes with the table names. */
static sl_status prepare(sqlite_sink *s, sqlite3_stmt **q, const char *fmt, ...)
{
    sl_buf sql = SL_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&sql, fmt, ap);
    va_end(ap);
    sl_status st = sl_db_prepare(s->db, sql.data, q);
    sl_buf_free(&sql);
    return st;
}

sl_status sl_sink_sqlite_open(const char *path, const sl_sink_opts *o, void **impl, const sl_sink_ops **ops)
{
    sl_status st;
    char to[SL_SINK_NAME_MAX], tc[SL_SINK_NAME_MAX], td[SL_SINK_NAME_MAX];
    char tst[SL_SINK_NAME_MAX + 8], tso[SL_SINK_NAME_MAX + 8];
    sl_sink_tables(o, to, tc, td);
    /* "NAME" -> "NAME_staged", "NAME_sorted" */
    snprintf(tst, sizeof tst, "%.*s_staged\"", (int)strlen(to) - 1, to);
    snprintf(tso, sizeof tso, "%.*s_sorted\"", (int)strlen(to) - 1, to);
    sl_buf sql = SL_BUF_INIT;
    sqlite_sink *s = sl_xcalloc(1, sizeof *s);
    if ((st = knob("SLUICE_SQLITE_DIRECT_ROWS", DIRECT_ROWS, 0, &s->direct_rows)) ||
        (st = knob("SLUICE_SQLITE_MERGE_ROWS", MERGE_ROWS, 1, &s->merge_rows)) ||
        (st = knob("SLUICE_SQLITE_MERGE_AGE_MS", MERGE_AGE_MS, 0, &s->merge_age_ms)) ||
        (st = knob("SLUICE_SQLITE_SLICE_ROWS", SLICE_ROWS, 1, &s->slice_rows)))
        goto fail;
    if ((st = sl_db_open(&s->db, path, "FULL", PAGE_SIZE)))
        goto fail;
    /* The page cache holds the id index of a table small enough for
     * direct upserts (about 6 MB at 100,000 rows), and bounds the sorter's
     * memory in a merge (SQLite sizes it by the cache): 8 MB each. With
     * 16 MB each the saver peaked at 64.4 MiB in the 10 M job, over its
     * 64 MiB budget; at 100,000 objects 8 MB measured no slower than the
     * 32 MB that direct upserts alone used to have.
     * Checkpoints stay SQLite's default (every 1,000 pages): at 10,000
     * bench-limit was 8 % faster, but the WAL then grows to 40 MB, and on a
     * small disk it filled what a full disk had freed
     * (chaos_saver_disk_full_then_freed). A merge's transactions make the
     * WAL grow beyond that while they run; journal_size_limit gives the
     * room back after the checkpoint.
     * A merge's sort runs on two helper threads (threads=2): the saver is
     * the one busy process of a large job, and its sort took 10.6 s of a
     * 10 M job's 74 s. With 1 helper against 2, 10 M jobs interleaved: 89.1
     * / 84.5, 80.1 / 71.2, 73.3 / 68.9 and 80.7 / 71.2 s; the saver's peak
     * RSS 35 -> 43 MiB. */
    /* secure_delete=FAST (Debian builds SQLite with it ON): the staging
     * tables free their pages at every merge, and ON zeroes each freed
     * page through the WAL: emptying 1,000,000 staged rows wrote 121 MB
     * that way, 128 KB with FAST. The freed pages hold copies of rows the
     * objects table keeps, so zeroing them hides nothing; FAST still
     * clears deleted content within the pages that stay in use. */
    if ((st = sl_db_exec(s->db, "PRAGMA cache_size=-8192; PRAGMA journal_size_limit=16777216; PRAGMA threads=2;"
                                " PRAGMA secure_delete=FAST")))
        goto fail;
    sl_buf_printf(&sql,
                  "CREATE TABLE IF NOT EXISTS %s(id TEXT PRIMARY KEY, doc TEXT NOT NULL,"
                  " chunk INTEGER NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS %s(idx INTEGER PRIMARY KEY,"
                  " count INTEGER NOT NULL, attempt INTEGER NOT NULL, saved_at TEXT NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS %s(chunk INTEGER NOT NULL,"
                  " stage TEXT NOT NULL, object INTEGER NOT NULL, reason TEXT NOT NULL,"
                  " raw BLOB, PRIMARY KEY (chunk, stage, object));"
                  "CREATE TABLE IF NOT EXISTS %s(seq INTEGER PRIMARY KEY, id TEXT NOT NULL,"
                  " doc TEXT NOT NULL, chunk INTEGER NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS %s(pos INTEGER PRIMARY KEY, id TEXT NOT NULL,"
                  " doc TEXT NOT NULL, chunk INTEGER NOT NULL);",
                  to, tc, td, tst, tso);
    if ((st = sl_db_exec(s->db, sql.data)))
        goto fail;
    const char *upsert_tail = "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc, chunk = excluded.chunk";
    if ((st = prepare(s, &s->upsert, "INSERT INTO %s(id, doc, chunk) VALUES (?1, ?2, ?3) %s", to, upsert_tail)) ||
        (st = prepare(s, &s->stage, "INSERT INTO %s(id, doc, chunk) VALUES (?1, ?2, ?3)", tst)) ||
        (st = prepare(s, &s->dead,
                      "INSERT OR REPLACE INTO %s(chunk, stage, object, reason, raw) VALUES (?1, ?2, ?3, ?4, ?5)",
                      td)) ||
        (st = prepare(s, &s->chunk,
                      "INSERT OR REPLACE INTO %s(idx, count, attempt, saved_at)"
                      " VALUES (?1, ?2, ?3, strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', 'now'))",
                      tc)) ||
        /* One min() or max() per SELECT: SQLite reads it off the b-tree,
         * where min() and max() together scan the table. */
        (st = prepare(s, &s->state,
                      "SELECT coalesce((SELECT max(rowid) FROM %s), 0),"
                      " coalesce((SELECT max(seq) FROM %s) - (SELECT min(seq) FROM %s) + 1, 0),"
                      " coalesce((SELECT max(pos) FROM %s) - (SELECT min(pos) FROM %s) + 1, 0)",
                      to, tst, tst, tso, tso)) ||
        /* ORDER BY in INSERT ... SELECT inserts in that order, so pos
         * follows (id, seq). */
        (st = prepare(s, &s->sort, "INSERT INTO %s(id, doc, chunk) SELECT id, doc, chunk FROM %s ORDER BY id, seq",
                      tso, tst)) ||
        (st = prepare(s, &s->unstage, "DELETE FROM %s", tst)) ||
        (st = prepare(s, &s->slice,
                      "INSERT INTO %s(id, doc, chunk) SELECT id, doc, chunk FROM %s"
                      " WHERE pos < (SELECT min(pos) FROM %s) + %lld ORDER BY pos %s",
                      to, tso, tso, (long long)s->slice_rows, upsert_tail)) ||
        (st = prepare(s, &s->unsort, "DELETE FROM %s WHERE pos < (SELECT min(pos) FROM %s) + %lld", tso, tso,
                      (long long)s->slice_rows)))
        goto fail;
    /* Rows left staged by an earlier run (a crash, a saver killed) are due
     * at once. */
    stage_state ss;
    if ((st = get_state(s, &ss)))
        goto fail;
    s->leftover = ss.staged || ss.sorted;
    sl_buf_free(&sql);
    *impl = s;
    *ops = &sqlite_ops;
    return SL_OK;
fail:
    sl_buf_free(&sql);
    sq_destroy(s);
    return st;
}
