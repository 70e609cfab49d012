/* db.h - the SQLite boundary shared by the ledger and the SQLite sink.
 *
 * SQLite errors become sl_status here, with SQLite's own message and the
 * file's path in the text. */
#ifndef SL_DB_H
#define SL_DB_H

#include <sqlite3.h>

#include "status.h"

/* SQLite's options for the whole process; first thing in main, before
 * any database is opened (later it changes nothing). Memory statistics
 * off: SQLite then takes no mutex around each of its allocations, 4 % of
 * a saver's time (bench-limit 0.338 -> 0.314 s, medians of 11). */
void sl_db_init(void);

/* Opens (creating) the SQLite file at path in WAL mode with a busy timeout,
 * so several processes may share it. synchronous is "FULL" or "NORMAL".
 * page_size (bytes, a power of two from 512 to 65536; 0: SQLite's default)
 * is that of a file this creates; an existing file keeps its own.
 * On success *out is set; close it with sqlite3_close. */
sl_status sl_db_open(sqlite3 **out, const char *path, const char *synchronous, int page_size);

/* Runs one or more statements without results. */
sl_status sl_db_exec(sqlite3 *db, const char *sql);

/* The same in one IMMEDIATE transaction: one commit (one fsync) for all of
 * them, the write lock taken first (waited for, busy timeout, if another
 * process holds it), and all of them undone if one fails. */
sl_status sl_db_exec_tx(sqlite3 *db, const char *sql);

/* Prepares sql into *out. */
sl_status sl_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out);

/* Turns the connection's last error into SL_EIO "what: <path>: <sqlite text>". */
sl_status sl_db_fail(sqlite3 *db, const char *what);

#endif
