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
 * not on disk. */
#include <stdlib.h>

#include "buf.h"
#include "db.h"
#include "sink.h"

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *put, *dead, *chunk;
    int in_tx;
} sqlite_sink;

static sl_status step(sqlite_sink *s, sqlite3_stmt *q, const char *what)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return sl_db_fail(s->db, what);
    return SL_OK;
}

static sl_status sq_begin(void *impl)
{
    sqlite_sink *s = impl;
    /* IMMEDIATE takes the write lock now, so a second saver waits here
     * (busy timeout) instead of failing at commit. */
    sl_status st = sl_db_exec(s->db, "BEGIN IMMEDIATE");
    if (!st)
        s->in_tx = 1;
    return st;
}

static sl_status sq_put(void *impl, const char *id, const char *doc, size_t doclen, int64_t chunk)
{
    sqlite_sink *s = impl;
    sqlite3_bind_text(s->put, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->put, 2, doc, (int)doclen, SQLITE_STATIC);
    sqlite3_bind_int64(s->put, 3, chunk);
    return step(s, s->put, "save object");
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

static void sq_destroy(void *impl)
{
    sqlite_sink *s = impl;
    if (!s)
        return;
    sq_rollback(s);
    sqlite3_finalize(s->put);
    sqlite3_finalize(s->dead);
    sqlite3_finalize(s->chunk);
    sqlite3_close(s->db);
    free(s);
}

static const sl_sink_ops sqlite_ops = {
    sq_begin, sq_put, sq_dead, sq_chunk, sq_commit, sq_rollback, sq_destroy,
};

sl_status sl_sink_sqlite_open(const char *path, const sl_sink_opts *o, void **impl, const sl_sink_ops **ops)
{
    sl_status st;
    char to[SL_SINK_NAME_MAX], tc[SL_SINK_NAME_MAX], td[SL_SINK_NAME_MAX];
    sl_sink_tables(o, to, tc, td);
    sl_buf sql = SL_BUF_INIT;
    sqlite_sink *s = sl_xcalloc(1, sizeof *s);
    if ((st = sl_db_open(&s->db, path, "FULL")))
        goto fail;
    /* Upserts by random ids touch pages all over the index: a page cache
     * of 32 MB keeps them in memory between transactions (the saver's
     * memory target is 64 MB). Checkpoints stay SQLite's default (every
     * 1,000 pages): at 10,000 bench-limit was 8 % faster, but the WAL then
     * grows to 40 MB, and on a small disk it filled what a full disk had
     * freed (chaos_saver_disk_full_then_freed). */
    if ((st = sl_db_exec(s->db, "PRAGMA cache_size=-32768")))
        goto fail;
    sl_buf_printf(&sql,
                  "CREATE TABLE IF NOT EXISTS %s(id TEXT PRIMARY KEY, doc TEXT NOT NULL,"
                  " chunk INTEGER NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS %s(idx INTEGER PRIMARY KEY,"
                  " count INTEGER NOT NULL, attempt INTEGER NOT NULL, saved_at TEXT NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS %s(chunk INTEGER NOT NULL,"
                  " stage TEXT NOT NULL, object INTEGER NOT NULL, reason TEXT NOT NULL,"
                  " raw BLOB, PRIMARY KEY (chunk, stage, object));",
                  to, tc, td);
    if ((st = sl_db_exec(s->db, sql.data)))
        goto fail;
    sl_buf_reset(&sql);
    sl_buf_printf(&sql, "INSERT INTO %s(id, doc, chunk) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT(id) DO UPDATE SET doc = excluded.doc, chunk = excluded.chunk", to);
    if ((st = sl_db_prepare(s->db, sql.data, &s->put)))
        goto fail;
    sl_buf_reset(&sql);
    sl_buf_printf(&sql, "INSERT OR REPLACE INTO %s(chunk, stage, object, reason, raw)"
                        " VALUES (?1, ?2, ?3, ?4, ?5)", td);
    if ((st = sl_db_prepare(s->db, sql.data, &s->dead)))
        goto fail;
    sl_buf_reset(&sql);
    sl_buf_printf(&sql, "INSERT OR REPLACE INTO %s(idx, count, attempt, saved_at)"
                        " VALUES (?1, ?2, ?3, strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', 'now'))", tc);
    if ((st = sl_db_prepare(s->db, sql.data, &s->chunk)))
        goto fail;
    sl_buf_free(&sql);
    *impl = s;
    *ops = &sqlite_ops;
    return SL_OK;
fail:
    sl_buf_free(&sql);
    sq_destroy(s);
    return st;
}
