/* sink.h - where a saver writes mapped objects.
 *
 * One chunk is one transaction (or part of one): begin, put every object
 * (upsert by id), record the chunk and any dead letters, commit. Only after commit returns
 * SL_OK may the saver confirm the chunk. Writing a chunk again leaves the
 * sink as it was (exactly one row per object id), which is what makes
 * at-least-once delivery effectively once. A sink is used by one thread. */
#ifndef SL_SINK_H
#define SL_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct sl_sink sl_sink;

typedef struct {
    const char *uri;   /* sqlite:PATH, postgres://..., postgresql://..., ndjson:PATH */
    const char *table; /* the objects table (--table); checked by config.c:
                        * letters, digits, _ */
} sl_sink_opts;

/* Opens the sink named by o->uri, creating its schema when missing. An
 * unwritable target fails here, with the path in the message. */
sl_status sl_sink_open(sl_sink **out, const sl_sink_opts *o);

sl_status sl_sink_begin(sl_sink *s);
/* Upserts the object with this id; doc is its JSON text. */
sl_status sl_sink_put(sl_sink *s, const char *id, const char *doc, size_t doclen, int64_t chunk);
/* Records a dead letter: where it died (`stage`: "fetcher" for a whole
 * chunk, "mapper" for a source object, "saver" for a mapped object), its
 * index `object` in that stage's array (-1: the whole chunk), why, and the
 * raw bytes. Re-recording the same (chunk, stage, object) replaces it. */
sl_status sl_sink_dead(sl_sink *s, int64_t chunk, const char *stage, int64_t object,
                       const char *reason, const void *raw, size_t rawlen);
/* Records that chunk was saved with `count` objects on `attempt`. */
sl_status sl_sink_chunk(sl_sink *s, int64_t chunk, int64_t count, int64_t attempt);
sl_status sl_sink_commit(sl_sink *s);
void sl_sink_rollback(sl_sink *s);

/* Work a sink may defer past a commit without weakening it: the SQLite
 * sink stages the objects of a large table and merges them into the
 * objects table later (sink_sqlite.c), so a committed chunk's objects may
 * reach that table after its confirmation. Settling does that work, in
 * transactions of its own, between chunk transactions (never inside one):
 * SL_SETTLE_DUE what is due now (called after each commit), SL_SETTLE_IDLE
 * one bounded step of whatever is deferred (when no chunks come),
 * SL_SETTLE_ALL all of it (a saver stopping). The SQLite sink sorts a merge
 * on a thread of its own, which settling starts and joins. *more says
 * whether deferred work remains. A failure leaves the deferred work as it was. Sinks that
 * defer nothing return SL_OK with *more false. */
typedef enum { SL_SETTLE_DUE, SL_SETTLE_IDLE, SL_SETTLE_ALL } sl_settle;
/* *txs (unless NULL): the transactions of deferred work this call did (the
 * SQLite sink: the one that begins a merge, or a slice of it). */
sl_status sl_sink_settle(sl_sink *s, sl_settle how, bool *more, int64_t *txs);

void sl_sink_destroy(sl_sink *s); /* accepts NULL */

/* The operations a sink implementation provides (sink_sqlite.c, ...). */
typedef struct {
    sl_status (*begin)(void *impl);
    sl_status (*put)(void *impl, const char *id, const char *doc, size_t doclen, int64_t chunk);
    sl_status (*dead)(void *impl, int64_t chunk, const char *stage, int64_t object,
                      const char *reason, const void *raw, size_t rawlen);
    sl_status (*chunk)(void *impl, int64_t chunk, int64_t count, int64_t attempt);
    sl_status (*commit)(void *impl);
    void (*rollback)(void *impl);
    void (*destroy)(void *impl);
    /* NULL: nothing deferred. *txs: the transactions it did. */
    sl_status (*settle)(void *impl, sl_settle how, bool *more, int64_t *txs);
} sl_sink_ops;

/* The three table names of o->table (NULL: "objects"), each double-quoted
 * for SQL: the objects table itself, and "chunks" / "dead_letters" when it
 * is "objects" (the default schema), else "NAME_chunks" / "NAME_dead_letters".
 * Each buffer holds SL_SINK_NAME_MAX bytes. */
#define SL_SINK_NAME_MAX 96
void sl_sink_tables(const sl_sink_opts *o, char objects[SL_SINK_NAME_MAX], char chunks[SL_SINK_NAME_MAX],
                    char dead[SL_SINK_NAME_MAX]);

/* Each implementation's open: sets *impl and *ops on success.
 * sink_sqlite.c: a SQLite file at path. */
sl_status sl_sink_sqlite_open(const char *path, const sl_sink_opts *o, void **impl, const sl_sink_ops **ops);
/* sink_pg.c: a PostgreSQL database, uri exactly as libpq takes it. */
sl_status sl_sink_pg_open(const char *uri, const sl_sink_opts *o, void **impl, const sl_sink_ops **ops);
/* sink_ndjson.c: appends to the file at path (sidecars path.chunks, path.dead). */
sl_status sl_sink_ndjson_open(const char *path, const sl_sink_opts *o, void **impl, const sl_sink_ops **ops);

#endif
