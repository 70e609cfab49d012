/* db.c - opening SQLite files and reporting their errors. */
#include "db.h"

#include <stdio.h>

sl_status sl_db_fail(sqlite3 *db, const char *what)
{
    const char *path = db ? sqlite3_db_filename(db, "main") : NULL;
    return sl_fail(SL_EIO, "%s: %s: %s", what, path && path[0] ? path : "(database)",
                   db ? sqlite3_errmsg(db) : "out of memory");
}

sl_status sl_db_exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return sl_db_fail(db, "sqlite");
    return SL_OK;
}

sl_status sl_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out)
{
    if (sqlite3_prepare_v2(db, sql, -1, out, NULL) != SQLITE_OK)
        return sl_db_fail(db, "sqlite prepare");
    return SL_OK;
}

sl_status sl_db_exec_tx(sqlite3 *db, const char *sql)
{
    sl_status st = sl_db_exec(db, "BEGIN IMMEDIATE");
    if (st)
        return st;
    if ((st = sl_db_exec(db, sql)) || (st = sl_db_exec(db, "COMMIT")))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

void sl_db_init(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

sl_status sl_db_open(sqlite3 **out, const char *path, const char *synchronous, int page_size)
{
    sqlite3 *db = NULL;
    char sql[128];
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        sl_status st = sl_fail(SL_EIO, "cannot open database %s: %s", path,
                               db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return st;
    }
    sqlite3_busy_timeout(db, 10000);
    /* A page size applies to a new file only, and only before WAL mode
     * is set: a file in WAL mode keeps the size it was made with. */
    int n = page_size ? snprintf(sql, sizeof sql, "PRAGMA page_size=%d; ", page_size) : 0;
    snprintf(sql + n, sizeof sql - (size_t)n, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;", synchronous);
    /* journal_mode is the first statement that touches the file, so this
     * is where an unwritable path or a non-database file shows. */
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        sl_status st = sl_fail(SL_EIO, "cannot use database %s: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return st;
    }
    *out = db;
    return SL_OK;
}
