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
 * each of those pages to the WAL and the checkpoint writes it again: at
 * 10 million rows that was 11 KB written per object, and 24,000 objects/s.
 * So while the objects table is small (DIRECT_ROWS) a chunk's objects are
 * upserted into it directly, and beyond that they are appended to a
 * staging table, NAME_staged or NAME_staged_b (seq, id, doc, chunk), in the
 * chunk's own transaction (the chunk is as durable as before, and its
 * record and dead letters are written as before). Staged rows reach the
 * objects table by a merge (settle), in id order, so that its upserts walk
 * the index once, writing each index page once per merge instead of once
 * per object:
 *
 *   begin: one transaction writes the merge's row in NAME_merge(tbl, done):
 *          the merge takes every row of staging table tbl, and from then
 *          on chunks are staged in the other one;
 *   sort:  a helper thread copies those rows, in the order (id, seq), into
 *          a scratch SQLite file next to the sink's, FILE-merge-NAME,
 *          table sorted(pos, id, doc, chunk). It reads the sink's file
 *          on a connection of its own, so chunks keep being staged (and
 *          committed and confirmed) while it sorts;
 *   slice: one transaction upserts the rows of pos done+1 .. done+SLICE_ROWS
 *          from the scratch file into the objects table in pos order and
 *          advances done; the last one also empties table tbl (which
 *          frees its pages without reading its rows) and deletes the
 *          merge's row.
 *
 * Later rows win: the sort puts the later of two rows with one id after the
 * earlier (seq grows with every append), a slice applies rows in that
 * order, and the rows staged in the other table after the merge began are
 * newer than every row it merges and wait for the next merge. Without a
 * merge at most one staging table has rows, and chunks are staged there. A
 * crash anywhere leaves every row staged or merged, and the merge's row
 * says how far it went: the scratch file is not trusted (it is written
 * without a journal), so whoever takes the merge over sorts again and goes
 * on from done; applying a slice twice changes nothing. One sink at a time
 * merges a table: the one holding an exclusive flock on the scratch file
 * (the file is never deleted, only emptied, so that every sink locks the
 * same one); a sink killed releases it. A chunk goes to the objects table
 * directly only while nothing is staged, or it could be overwritten by an
 * older staged row. Readers of the objects table therefore see a staged
 * chunk's objects only after its merge (see settle below and the README's
 * Sinks section).
 *
 * Before the scratch file, the sort copied the rows into NAME_sorted in
 * the sink's own file, one transaction that stopped the saver for its
 * length; a file left with rows there by a saver of that version is
 * merged when a sink opens it (merge_legacy). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

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

#define UPSERT_TAIL "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc, chunk = excluded.chunk"

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *upsert, *stage[2], *dead, *chunk;
    sqlite3_stmt *state, *begin_merge, *slice, *advance, *clear[2], *end_merge;
    int in_tx;
    int staging;          /* the staging table of this transaction's objects (-1: none, direct) */
    bool leftover;        /* rows were staged when the sink opened */
    int64_t staged_since; /* when this connection first staged a row since a merge began (0: not
                           * since) */
    int64_t direct_rows, merge_rows, merge_age_ms, slice_rows;
    /* The merge (see the top of the file). */
    char *path;          /* the sink's file */
    char *scratch;       /* FILE-merge-NAME */
    char *sort_sql[2];   /* what the sorter runs, for each staging table */
    char objects_table[SL_SINK_NAME_MAX];
    int lock_fd;         /* the scratch file, flocked: this sink merges (-1: not) */
    bool sorter_on;      /* the sorter thread is started and not yet joined */
    pthread_t sorter;
    atomic_bool sort_done;   /* the sorter has finished */
    atomic_bool sort_cancel; /* the sorter is to stop */
    int sort_rc;             /* its SQLite result, and message */
    char sort_err[512];
    int sort_tbl;        /* the table the sorter sorts or the scratch holds (-1: none) */
    int64_t sort_rows;   /* rows in the scratch's sorted table, once attached */
    bool attached;       /* the scratch file is attached to db as "merge" */
} sqlite_sink;

static sl_status step(sqlite_sink *s, sqlite3_stmt *q, const char *what)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return sl_db_fail(s->db, what);
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

/* What settling depends on: rows in the objects table (its largest rowid:
 * rows are only added, and counting would read the whole table), rows in
 * each staging table, and the merge under way (the table it merges, -1:
 * none, and its progress). */
typedef struct {
    int64_t objects, staged[2], done;
    int merging;
} stage_state;

/* The staging table a chunk's objects go to: the one a merge does not
 * take, else the one with rows (at most one has any then). */
static int stage_into(const stage_state *ss)
{
    if (ss->merging >= 0)
        return !ss->merging;
    return ss->staged[1] > 0;
}

static sl_status get_state(sqlite_sink *s, stage_state *out)
{
    int rc = sqlite3_step(s->state);
    if (rc == SQLITE_ROW) {
        out->objects = sqlite3_column_int64(s->state, 0);
        out->staged[0] = sqlite3_column_int64(s->state, 1);
        out->staged[1] = sqlite3_column_int64(s->state, 2);
        out->merging = (int)sqlite3_column_int64(s->state, 3);
        out->done = sqlite3_column_int64(s->state, 4);
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
    s->staging = ss.objects >= s->direct_rows || ss.staged[0] || ss.staged[1] ? stage_into(&ss) : -1;
    return SL_OK;
}

static sl_status sq_put(void *impl, const char *id, const char *doc, size_t doclen, int64_t chunk)
{
    sqlite_sink *s = impl;
    sqlite3_stmt *q = s->staging >= 0 ? s->stage[s->staging] : s->upsert;
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, doc, (int)doclen, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, chunk);
    if (s->staging >= 0 && !s->staged_since)
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

/* Steps each statement of qs (NULL-terminated) in one write transaction. */
static sl_status merge_tx(sqlite_sink *s, sqlite3_stmt **qs)
{
    sl_status st = sl_db_exec(s->db, "BEGIN IMMEDIATE");
    if (st)
        return st;
    s->in_tx = 1;
    for (; *qs && !st; qs++)
        st = step(s, *qs, "merge staged objects");
    if (st || (st = sq_commit(s)))
        sq_rollback(s);
    return st;
}

/* Takes the table's merge: an exclusive flock on the scratch file. *got is
 * false when another sink holds it. */
static sl_status take_merge(sqlite_sink *s, bool *got)
{
    *got = s->lock_fd >= 0;
    if (*got)
        return SL_OK;
    int fd = open(s->scratch, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return sl_fail(SL_EIO, "cannot open %s: %s", s->scratch, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return SL_OK;
        return sl_fail(SL_EIO, "cannot lock %s: %s", s->scratch, strerror(e));
    }
    s->lock_fd = fd;
    *got = true;
    return SL_OK;
}

/* Detaches the scratch file, if attached, with the slice that reads it. */
static void detach(sqlite_sink *s)
{
    sqlite3_finalize(s->slice);
    s->slice = NULL;
    if (s->attached)
        sqlite3_exec(s->db, "DETACH merge", NULL, NULL, NULL);
    s->attached = false;
}

/* Lets the merge go, emptying the scratch file. Neither this sink's
 * connection nor its sorter has the file open (closing a descriptor drops
 * every POSIX lock the process holds on the file, SQLite's included). */
static void drop_merge(sqlite_sink *s)
{
    SL_ASSERT(!s->sorter_on);
    detach(s);
    s->sort_tbl = -1;
    if (s->lock_fd >= 0) {
        if (ftruncate(s->lock_fd, 0) != 0) {
            /* only disk space lost until the next merge empties it */
        }
        close(s->lock_fd);
    }
    s->lock_fd = -1;
}

static int sort_cancelled(void *arg)
{
    sqlite_sink *s = arg;
    return atomic_load(&s->sort_cancel);
}

/* Runs sql, "ATTACH ?1 AS name", on db with path bound; SQLite's result. */
static int attach(sqlite3 *db, const char *sql, const char *path)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, path, -1, SQLITE_STATIC);
        rc = sqlite3_step(q) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    }
    sqlite3_finalize(q);
    return rc;
}

/* The sorter thread: copies the merge's rows in (id, seq) order into the
 * scratch file, on connections of its own. */
static void *sort_main(void *arg)
{
    sqlite_sink *s = arg;
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(s->scratch, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 10000);
        sqlite3_progress_handler(db, 10000, sort_cancelled, s);
        /* The scratch file is rebuilt after any failure, so it needs no
         * journal and no fsync. The page cache bounds the sort's memory
         * (per sorting thread), and the sink's own connection keeps its
         * cache meanwhile: with 8 MB and two helper threads, as the
         * merge's sort had when it ran on that connection, the saver
         * peaked at 60-62 MiB in 10 M jobs (59.0-67.1 s, 3 runs); with 4 MB
         * and one helper at 37.9 MiB (58.1 s, and 36.9-39.2 MiB in four
         * `make bench-large` runs since). */
        char pragmas[256];
        snprintf(pragmas, sizeof pragmas,
                 "PRAGMA page_size=%d; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                 " PRAGMA cache_size=-4096; PRAGMA threads=1",
                 PAGE_SIZE);
        rc = sqlite3_exec(db, pragmas, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK)
        rc = attach(db, "ATTACH ?1 AS src", s->path);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "CREATE TABLE sorted(pos INTEGER PRIMARY KEY, id TEXT NOT NULL, doc TEXT NOT NULL,"
                              " chunk INTEGER NOT NULL)", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, s->sort_sql[s->sort_tbl], NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        snprintf(s->sort_err, sizeof s->sort_err, "%s", db ? sqlite3_errmsg(db) : "out of memory");
    s->sort_rc = rc;
    sqlite3_close(db);
    atomic_store(&s->sort_done, true);
    return NULL;
}

/* Starts sorting the merge of staging table tbl (this sink holds the
 * merge): a scratch file emptied first, whatever it held. */
static sl_status start_sort(sqlite_sink *s, int tbl)
{
    SL_ASSERT(s->lock_fd >= 0 && !s->sorter_on);
    detach(s);
    if (ftruncate(s->lock_fd, 0) != 0)
        return sl_fail(SL_EIO, "cannot empty %s: %s", s->scratch, strerror(errno));
    s->sort_tbl = tbl;
    s->sort_rc = SQLITE_OK;
    s->sort_err[0] = '\0';
    atomic_store(&s->sort_done, false);
    atomic_store(&s->sort_cancel, false);
    int e = pthread_create(&s->sorter, NULL, sort_main, s);
    if (e) {
        s->sort_tbl = -1;
        return sl_fail(SL_EIO, "cannot start the merge's sort: %s", strerror(e));
    }
    s->sorter_on = true;
    return SL_OK;
}

/* Joins the sorter (waiting for it if it still runs); when it sorted,
 * attaches the scratch file and prepares the slices that read it. */
static sl_status end_sort(sqlite_sink *s)
{
    pthread_join(s->sorter, NULL);
    s->sorter_on = false;
    sl_status st = SL_OK;
    if (s->sort_rc != SQLITE_OK)
        st = sl_fail(SL_EIO, "sort staged objects into %s: %s", s->scratch, s->sort_err);
    if (!st && attach(s->db, "ATTACH ?1 AS merge", s->scratch) != SQLITE_OK)
        st = sl_db_fail(s->db, "attach the merge's sorted rows");
    sqlite3_stmt *q = NULL;
    if (!st) {
        s->attached = true;
        if (sqlite3_prepare_v2(s->db, "SELECT coalesce(max(pos), 0) FROM merge.sorted", -1, &q, NULL) == SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW)
            s->sort_rows = sqlite3_column_int64(q, 0);
        else
            st = sl_db_fail(s->db, "count the merge's sorted rows");
        sqlite3_finalize(q);
    }
    if (!st)
        st = prepare(s, &s->slice,
                     "INSERT INTO %s(id, doc, chunk) SELECT id, doc, chunk FROM merge.sorted"
                     " WHERE pos > ?1 AND pos <= ?2 ORDER BY pos %s",
                     s->objects_table, UPSERT_TAIL);
    if (st) {
        detach(s);
        s->sort_tbl = -1; /* sorted again at the next try */
    }
    return st;
}

/* Begins a merge of staging table tbl. */
static sl_status begin_merge(sqlite_sink *s, int tbl)
{
    sqlite3_bind_int(s->begin_merge, 1, tbl);
    sqlite3_stmt *qs[] = {s->begin_merge, NULL};
    sl_status st = merge_tx(s, qs);
    if (st)
        return st;
    /* The age is that of the oldest row staged since: none yet. */
    s->staged_since = 0;
    s->leftover = false;
    return start_sort(s, tbl);
}

/* One slice of the merge ss describes; the last one ends it. */
static sl_status merge_slice(sqlite_sink *s, const stage_state *ss)
{
    int64_t to = ss->done + s->slice_rows;
    bool last = to >= s->sort_rows;
    sqlite3_bind_int64(s->slice, 1, ss->done);
    sqlite3_bind_int64(s->slice, 2, to);
    sqlite3_bind_int64(s->advance, 1, to);
    sqlite3_stmt *qs[] = {s->slice, last ? s->clear[ss->merging] : s->advance, last ? s->end_merge : NULL, NULL};
    sl_status st = merge_tx(s, qs);
    if (!st && last)
        drop_merge(s);
    return st;
}

/* A merge is due when the staged rows are many (a merge costs about a
 * write of the whole id index, however few rows it brings), or the oldest
 * has waited long enough for a reader. SL_SETTLE_DUE carries on a merge
 * that has begun one step at a time and never waits for its sort;
 * SL_SETTLE_IDLE does one step of whatever is staged; SL_SETTLE_ALL merges
 * everything, waiting for the sort. A merge another sink holds is left to
 * it (*more stays true). */
static sl_status sq_settle(void *impl, sl_settle how, bool *more, int64_t *txs)
{
    sqlite_sink *s = impl;
    SL_ASSERT(!s->in_tx);
    for (;;) {
        sl_status st;
        *more = true;
        if (s->sorter_on) {
            if (how != SL_SETTLE_ALL && !atomic_load(&s->sort_done))
                return SL_OK;
            if ((st = end_sort(s)))
                return st;
        }
        stage_state ss;
        if ((st = get_state(s, &ss)))
            return st;
        int64_t staged = ss.staged[0] + ss.staged[1];
        if (!staged && ss.merging < 0) {
            s->staged_since = 0;
            s->leftover = false;
            *more = false;
            return SL_OK;
        }
        if (ss.merging < 0 && how == SL_SETTLE_DUE && staged < s->merge_rows && !s->leftover &&
            !(s->staged_since && sl_now_ms() - s->staged_since >= s->merge_age_ms))
            return SL_OK;
        bool held = s->lock_fd >= 0, got;
        if ((st = take_merge(s, &got)) || !got)
            return st;
        /* Just taken: read again under the lock, as the sink that held it
         * may have ended the merge since. (Held, only this sink changes
         * the merge.) */
        if (!held && (st = get_state(s, &ss)))
            return st;
        if (ss.merging < 0) {
            if (!ss.staged[0] && !ss.staged[1]) {
                drop_merge(s);
                continue;
            }
            if ((st = begin_merge(s, stage_into(&ss))))
                return st;
            ++*txs;
        } else if (s->sort_tbl != ss.merging) {
            /* Begun by a sink that is gone, or its sort failed. */
            if ((st = start_sort(s, ss.merging)))
                return st;
        } else {
            if ((st = merge_slice(s, &ss)))
                return st;
            ++*txs;
        }
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
    if (s->sorter_on) {
        atomic_store(&s->sort_cancel, true);
        pthread_join(s->sorter, NULL);
        s->sorter_on = false;
    }
    sqlite3_stmt *q[] = {s->upsert, s->stage[0], s->stage[1], s->dead,     s->chunk,     s->state,
                         s->begin_merge, s->slice, s->advance, s->clear[0], s->clear[1], s->end_merge};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        sqlite3_finalize(q[i]);
    /* The connection first: closing the lock's descriptor drops the
     * process's POSIX locks on the scratch file, SQLite's among them. */
    sqlite3_close(s->db);
    s->db = NULL;
    s->attached = false;
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s->path);
    free(s->scratch);
    free(s->sort_sql[0]);
    free(s->sort_sql[1]);
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


/* A file whose NAME_sorted table an earlier version left (a saver stopped
 * in a merge) has those rows merged now, before anything staged: they are
 * older than every staged row. The table goes with them. */
static sl_status merge_legacy(sqlite_sink *s, const char *to, const char *tso)
{
    sqlite3_stmt *q[3] = {NULL, NULL, NULL};
    sl_status st = prepare(s, &q[0], "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '%.*s'",
                           (int)strlen(tso) - 2, tso + 1);
    if (st)
        return st;
    int rc = sqlite3_step(q[0]);
    sqlite3_finalize(q[0]);
    q[0] = NULL;
    if (rc == SQLITE_DONE)
        return SL_OK;
    if (rc != SQLITE_ROW)
        return sl_db_fail(s->db, "look for an earlier version's sorted rows");
    if (!(st = prepare(s, &q[0], "INSERT INTO %s(id, doc, chunk) SELECT id, doc, chunk FROM %s WHERE true"
                                 " ORDER BY pos %s", to, tso, UPSERT_TAIL)) &&
        !(st = prepare(s, &q[1], "DROP TABLE %s", tso)))
        st = merge_tx(s, q);
    sqlite3_finalize(q[0]);
    sqlite3_finalize(q[1]);
    return st;
}

sl_status sl_sink_sqlite_open(const char *path, const sl_sink_opts *o, void **impl, const sl_sink_ops **ops)
{
    sl_status st;
    char to[SL_SINK_NAME_MAX], tc[SL_SINK_NAME_MAX], td[SL_SINK_NAME_MAX];
    char tst[2][SL_SINK_NAME_MAX + 10], tso[SL_SINK_NAME_MAX + 8], tmg[SL_SINK_NAME_MAX + 8];
    sl_sink_tables(o, to, tc, td);
    /* "NAME" -> "NAME_staged", "NAME_staged_b", "NAME_sorted", "NAME_merge" */
    snprintf(tst[0], sizeof tst[0], "%.*s_staged\"", (int)strlen(to) - 1, to);
    snprintf(tst[1], sizeof tst[1], "%.*s_staged_b\"", (int)strlen(to) - 1, to);
    snprintf(tso, sizeof tso, "%.*s_sorted\"", (int)strlen(to) - 1, to);
    snprintf(tmg, sizeof tmg, "%.*s_merge\"", (int)strlen(to) - 1, to);
    sl_buf sql = SL_BUF_INIT;
    sqlite_sink *s = sl_xcalloc(1, sizeof *s);
    s->lock_fd = -1;
    s->path = sl_xstrdup(path);
    snprintf(s->objects_table, sizeof s->objects_table, "%s", to);
    /* FILE-merge-NAME (the name unquoted) */
    sl_buf_printf(&sql, "%s-merge-%.*s", path, (int)strlen(to) - 2, to + 1);
    s->scratch = sl_xstrdup(sql.data);
    sl_buf_reset(&sql);
    for (int k = 0; k < 2; k++) {
        sl_buf_printf(&sql, "INSERT INTO sorted(id, doc, chunk) SELECT id, doc, chunk FROM src.%s ORDER BY id, seq",
                      tst[k]);
        s->sort_sql[k] = sl_xstrdup(sql.data);
        sl_buf_reset(&sql);
    }
    s->sort_tbl = -1;
    if ((st = knob("SLUICE_SQLITE_DIRECT_ROWS", DIRECT_ROWS, 0, &s->direct_rows)) ||
        (st = knob("SLUICE_SQLITE_MERGE_ROWS", MERGE_ROWS, 1, &s->merge_rows)) ||
        (st = knob("SLUICE_SQLITE_MERGE_AGE_MS", MERGE_AGE_MS, 0, &s->merge_age_ms)) ||
        (st = knob("SLUICE_SQLITE_SLICE_ROWS", SLICE_ROWS, 1, &s->slice_rows)))
        goto fail;
    /* An in-memory or temporary database (":memory:", "") cannot be
     * opened again by the sorter: nothing is staged there. */
    if (!path[0] || !strcmp(path, ":memory:"))
        s->direct_rows = INT64_MAX;
    if ((st = sl_db_open(&s->db, path, "FULL", PAGE_SIZE)))
        goto fail;
    /* The page cache holds the id index of a table small enough for
     * direct upserts (about 6 MB at 100,000 rows): 8 MB. With 16 MB (and
     * the merge's sort on this connection) the saver peaked at 64.4 MiB
     * in the 10 M job, over its 64 MiB budget; at 100,000 objects 8 MB
     * measured no slower than the 32 MB that direct upserts alone used to
     * have.
     * Checkpoints stay SQLite's default (every 1,000 pages): at 10,000
     * bench-limit was 8 % faster, but the WAL then grows to 40 MB, and on a
     * small disk it filled what a full disk had freed
     * (chaos_saver_disk_full_then_freed). A merge's slices, and chunks
     * committed while the sorter reads, make the WAL grow beyond that;
     * journal_size_limit gives the room back after the checkpoint. */
    /* secure_delete=FAST (Debian builds SQLite with it ON): a staging
     * table frees its pages at every merge, and ON zeroes each freed
     * page through the WAL: emptying 1,000,000 staged rows wrote 121 MB
     * that way, 128 KB with FAST. The freed pages hold copies of rows the
     * objects table keeps, so zeroing them hides nothing; FAST still
     * clears deleted content within the pages that stay in use. */
    if ((st = sl_db_exec(s->db, "PRAGMA cache_size=-8192; PRAGMA journal_size_limit=16777216;"
                                " PRAGMA secure_delete=FAST")))
        goto fail;
    /* In one transaction: six commits, each with its fsync, were a few
     * ms of the saver's start, which the first chunks wait for. A second
     * saver starting waits here for the write lock, as in sq_begin. */
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
                  "CREATE TABLE IF NOT EXISTS %s(seq INTEGER PRIMARY KEY, id TEXT NOT NULL,"
                  " doc TEXT NOT NULL, chunk INTEGER NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS %s(one INTEGER PRIMARY KEY CHECK (one = 1),"
                  " tbl INTEGER NOT NULL CHECK (tbl IN (0, 1)), done INTEGER NOT NULL);",
                  to, tc, td, tst[0], tst[1], tmg);
    if ((st = sl_db_exec_tx(s->db, sql.data)))
        goto fail;
    if ((st = prepare(s, &s->upsert, "INSERT INTO %s(id, doc, chunk) VALUES (?1, ?2, ?3) %s", to, UPSERT_TAIL)) ||
        (st = prepare(s, &s->stage[0], "INSERT INTO %s(id, doc, chunk) VALUES (?1, ?2, ?3)", tst[0])) ||
        (st = prepare(s, &s->stage[1], "INSERT INTO %s(id, doc, chunk) VALUES (?1, ?2, ?3)", tst[1])) ||
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
                      " coalesce((SELECT max(seq) FROM %s) - (SELECT min(seq) FROM %s) + 1, 0),"
                      " coalesce((SELECT tbl FROM %s), -1), coalesce((SELECT done FROM %s), 0)",
                      to, tst[0], tst[0], tst[1], tst[1], tmg, tmg)) ||
        (st = prepare(s, &s->begin_merge, "INSERT INTO %s(one, tbl, done) VALUES (1, ?1, 0)", tmg)) ||
        (st = prepare(s, &s->advance, "UPDATE %s SET done = ?1", tmg)) ||
        /* Without a WHERE, SQLite frees the table's pages without reading
         * its rows. */
        (st = prepare(s, &s->clear[0], "DELETE FROM %s", tst[0])) ||
        (st = prepare(s, &s->clear[1], "DELETE FROM %s", tst[1])) ||
        (st = prepare(s, &s->end_merge, "DELETE FROM %s", tmg)) ||
        (st = merge_legacy(s, to, tso)))
        goto fail;
    /* Rows left staged by an earlier run (a crash, a saver killed) are due
     * at once. */
    stage_state ss;
    if ((st = get_state(s, &ss)))
        goto fail;
    s->leftover = ss.staged[0] || ss.staged[1] || ss.merging >= 0;
    sl_buf_free(&sql);
    *impl = s;
    *ops = &sqlite_ops;
    return SL_OK;
fail:
    sl_buf_free(&sql);
    sq_destroy(s);
    return st;
}
