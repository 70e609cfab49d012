/* sink_pg.c - the PostgreSQL sink: postgres://... or postgresql://...,
 * handed to libpq as given, with one default of ours: a connection attempt
 * gives up after CONNECT_TIMEOUT_S unless the URI (connect_timeout=) or
 * PGCONNECT_TIMEOUT says otherwise. libpq's own default is to wait for as
 * long as the kernel does (minutes for a host that drops packets), and a
 * saver reconnecting at the start of a transaction would hang that long.
 *
 *   objects(id text PRIMARY KEY, doc jsonb NOT NULL, chunk bigint NOT NULL)
 *   chunks(idx bigint PRIMARY KEY, count bigint NOT NULL,
 *          attempt bigint NOT NULL, saved_at timestamptz NOT NULL DEFAULT now())
 *   dead_letters(chunk bigint, stage text, object bigint, reason text NOT NULL,
 *                raw bytea, PRIMARY KEY (chunk, stage, object))
 *
 * With --table NAME other than "objects": NAME, NAME_chunks and
 * NAME_dead_letters (sl_sink_tables); each must fit PostgreSQL's 63 bytes.
 * The tables are created when missing, under a transaction-scoped advisory
 * lock: two savers starting at once would otherwise race in CREATE TABLE IF
 * NOT EXISTS and one fail on pg_type's unique index.
 *
 * A transaction holds one chunk or several (the saver's group commit).
 * Dead letters and chunk rows are written as they come; objects are buffered and written at commit in one batch, sorted
 * by id (bytewise) and with only the last doc of an id kept: sorted, two
 * savers upserting overlapping ids lock rows in the same order and cannot
 * deadlock each other on them; de-duplicated, ON CONFLICT DO UPDATE does
 * not meet an id twice in one statement (which PostgreSQL refuses). Should
 * PostgreSQL still report a deadlock or serialization failure, the commit
 * fails like any other and the saver hands the chunk back.
 *
 * The batch goes in one of two ways (SLUICE_PG_BATCH, for the benchmark):
 *   values  multi-row INSERT ... VALUES ($1,$2,$3),... ON CONFLICT, at most
 *           ROWS_PER_INSERT rows per statement (3 parameters a row, far
 *           below the protocol's 65535) - the default: COPY measured no faster
 *           (bench/sink.c, bench/results/sink.csv);
 *   copy    COPY into a TEMP table (ON COMMIT DELETE ROWS, created once per
 *           connection), then INSERT ... SELECT ... ON CONFLICT.
 *
 * Durability is the server's: COMMIT returning means durable under the
 * default synchronous_commit=on, which this sink leaves alone.
 *
 * A lost connection fails the operation in progress (SL_EIO); the saver
 * rolls back and hands the chunk back, and the next begin reconnects with
 * PQreset. Messages name the URI with its password replaced (sl_url_redact).
 *
 * jsonb cannot hold the escape \u0000. An object whose doc has one would
 * fail its whole chunk on every delivery, so put records it as a dead letter
 * instead (stage "sink", object = its position among the chunk's puts) and
 * writes the rest of the chunk. */
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "sink.h"
#include "url.h"

#define ROWS_PER_INSERT 1000
#define CONNECT_TIMEOUT_S "10"
/* "sluice" in ASCII: the advisory lock that serialises schema creation. */
#define SCHEMA_LOCK 0x736c75696365LL

enum { VIA_VALUES, VIA_COPY };

typedef struct {
    char *id, *doc;
    int64_t chunk;
    size_t seq; /* order of the puts: the last one of an id wins */
} row;

typedef struct {
    PGconn *pc;
    char shown[512];
    char to[SL_SINK_NAME_MAX], tc[SL_SINK_NAME_MAX], td[SL_SINK_NAME_MAX];
    int via;
    bool in_tx, temp_ready;
    row *rows;
    size_t nrows, cap;
    int64_t puts;      /* puts of put_chunk so far in this transaction */
    int64_t put_chunk; /* (one transaction may hold several chunks) */
    sl_buf sql, copy;
} pg_sink;

/* The one boundary from libpq to sl_status: PostgreSQL's primary message
 * (or the connection's) on one line, with the SQLSTATE. Clears r. */
static sl_status pg_fail(pg_sink *s, PGresult *r, const char *what)
{
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!msg || !msg[0])
        msg = PQerrorMessage(s->pc);
    char line[1024];
    size_t n = 0;
    for (const char *p = msg; *p && n + 1 < sizeof line; p++)
        line[n++] = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p;
    while (n > 0 && line[n - 1] == ' ')
        n--;
    line[n] = '\0';
    sl_status st = sl_fail(SL_EIO, "%s: %s: %s%s%s%s", what, s->shown, n ? line : "unknown error",
                           state ? " (SQLSTATE " : "", state ? state : "", state ? ")" : "");
    PQclear(r);
    return st;
}

static sl_status check(pg_sink *s, PGresult *r, const char *what)
{
    ExecStatusType t = PQresultStatus(r);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK)
        return pg_fail(s, r, what);
    PQclear(r);
    return SL_OK;
}

static sl_status run(pg_sink *s, const char *sql, const char *what)
{
    return check(s, PQexec(s->pc, sql), what);
}

static void clear_rows(pg_sink *s)
{
    for (size_t i = 0; i < s->nrows; i++) {
        free(s->rows[i].id);
        free(s->rows[i].doc);
    }
    s->nrows = 0;
    s->puts = 0;
}

/* libpq prints NOTICEs ("relation ... already exists, skipping") on
 * stderr, which would break the one-line-per-event log. */
static void quiet(void *arg, const char *message)
{
    (void)arg, (void)message;
}

/* Connected with UTF-8 on the wire, or SL_EIO. */
static sl_status connected(pg_sink *s, const char *what)
{
    if (PQstatus(s->pc) != CONNECTION_OK)
        return pg_fail(s, NULL, what);
    PQsetNoticeProcessor(s->pc, quiet, NULL);
    if (PQsetClientEncoding(s->pc, "UTF8") != 0)
        return pg_fail(s, NULL, what);
    return SL_OK;
}

static sl_status create_schema(pg_sink *s)
{
    /* One simple-query string is one transaction, so the advisory lock is
     * held until all three tables exist. */
    sl_buf_reset(&s->sql);
    sl_buf_printf(&s->sql,
                  "SELECT pg_advisory_xact_lock(%lld);"
                  "CREATE TABLE IF NOT EXISTS %s(id text PRIMARY KEY, doc jsonb NOT NULL, chunk bigint NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS %s(idx bigint PRIMARY KEY, count bigint NOT NULL,"
                  " attempt bigint NOT NULL, saved_at timestamptz NOT NULL DEFAULT now());"
                  "CREATE TABLE IF NOT EXISTS %s(chunk bigint, stage text, object bigint, reason text NOT NULL,"
                  " raw bytea, PRIMARY KEY (chunk, stage, object))",
                  SCHEMA_LOCK, s->to, s->tc, s->td);
    return run(s, s->sql.data, "create tables");
}

static sl_status pg_begin(void *impl)
{
    pg_sink *s = impl;
    sl_status st;
    clear_rows(s);
    /* A server that restarted shows only when the connection is used: one
     * reconnect on a failed BEGIN, then give up until the next begin. */
    for (int tries = 0;; tries++) {
        if (PQstatus(s->pc) != CONNECTION_OK) {
            PQreset(s->pc);
            s->temp_ready = false;
            if ((st = connected(s, "reconnect")))
                return st;
        }
        if (s->via == VIA_COPY && !s->temp_ready) {
            st = run(s, "CREATE TEMP TABLE IF NOT EXISTS sluice_batch(id text NOT NULL, doc text NOT NULL,"
                        " chunk bigint NOT NULL) ON COMMIT DELETE ROWS",
                     "create temporary table");
            s->temp_ready = st == SL_OK;
        } else
            st = SL_OK;
        if (!st)
            st = run(s, "BEGIN", "begin");
        if (!st) {
            s->in_tx = true;
            return SL_OK;
        }
        if (tries > 0 || PQstatus(s->pc) == CONNECTION_OK)
            return st;
    }
}

/* Whether the JSON text has the escape \u0000 (in a string or a key). */
static bool has_nul_escape(const char *doc, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (doc[i] != '\\')
            continue;
        if (doc[i + 1] == 'u' && i + 5 < len && !memcmp(doc + i + 2, "0000", 4))
            return true;
        i++; /* the escaped character */
    }
    return false;
}

static sl_status pg_dead(void *impl, int64_t chunk, const char *stage, int64_t object, const char *reason,
                         const void *raw, size_t rawlen);

static sl_status pg_put(void *impl, const char *id, const char *doc, size_t doclen, int64_t chunk)
{
    pg_sink *s = impl;
    if (!s->puts || chunk != s->put_chunk) {
        s->put_chunk = chunk;
        s->puts = 0;
    }
    int64_t ordinal = s->puts++;
    if (has_nul_escape(doc, doclen))
        return pg_dead(s, chunk, "sink", ordinal, "PostgreSQL jsonb cannot hold \\u0000; object not saved", doc,
                       doclen);
    if (s->nrows == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 128;
        s->rows = sl_xrealloc(s->rows, s->cap * sizeof *s->rows);
    }
    char *d = sl_xmalloc(doclen + 1);
    memcpy(d, doc, doclen);
    d[doclen] = '\0';
    s->rows[s->nrows] = (row){sl_xstrdup(id), d, chunk, s->nrows};
    s->nrows++;
    return SL_OK;
}

static int cmp_row(const void *a, const void *b)
{
    const row *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

/* Sorts the rows by id and keeps the last put of each id. */
static void sort_unique(pg_sink *s)
{
    qsort(s->rows, s->nrows, sizeof *s->rows, cmp_row);
    size_t out = 0;
    for (size_t i = 0; i < s->nrows; i++) {
        if (i + 1 < s->nrows && !strcmp(s->rows[i].id, s->rows[i + 1].id)) {
            free(s->rows[i].id);
            free(s->rows[i].doc);
            continue;
        }
        s->rows[out++] = s->rows[i];
    }
    s->nrows = out;
}

static const char upsert_tail[] = " ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc, chunk = EXCLUDED.chunk";

static sl_status write_values(pg_sink *s)
{
    const char **vals = sl_xmalloc(3 * ROWS_PER_INSERT * sizeof *vals);
    char(*chunks)[24] = sl_xmalloc(ROWS_PER_INSERT * sizeof *chunks);
    sl_status st = SL_OK;
    for (size_t first = 0; first < s->nrows && !st; first += ROWS_PER_INSERT) {
        size_t n = s->nrows - first < ROWS_PER_INSERT ? s->nrows - first : ROWS_PER_INSERT;
        sl_buf_reset(&s->sql);
        sl_buf_printf(&s->sql, "INSERT INTO %s(id, doc, chunk) VALUES ", s->to);
        for (size_t i = 0; i < n; i++) {
            const row *r = &s->rows[first + i];
            sl_buf_printf(&s->sql, "%s($%zu, $%zu::jsonb, $%zu::bigint)", i ? "," : "", 3 * i + 1, 3 * i + 2,
                          3 * i + 3);
            snprintf(chunks[i], sizeof chunks[i], "%lld", (long long)r->chunk);
            vals[3 * i] = r->id;
            vals[3 * i + 1] = r->doc;
            vals[3 * i + 2] = chunks[i];
        }
        sl_buf_puts(&s->sql, upsert_tail);
        st = check(s, PQexecParams(s->pc, s->sql.data, (int)(3 * n), NULL, vals, NULL, NULL, 0), "save objects");
    }
    free(vals);
    free(chunks);
    return st;
}

/* Appends s as one field of COPY's text format. */
static void copy_field(sl_buf *b, const char *v)
{
    for (; *v; v++) {
        switch (*v) {
        case '\\': sl_buf_puts(b, "\\\\"); break;
        case '\n': sl_buf_puts(b, "\\n"); break;
        case '\r': sl_buf_puts(b, "\\r"); break;
        case '\t': sl_buf_puts(b, "\\t"); break;
        default: sl_buf_putc(b, *v);
        }
    }
}

static sl_status write_copy(pg_sink *s)
{
    sl_buf_reset(&s->copy);
    for (size_t i = 0; i < s->nrows; i++) {
        copy_field(&s->copy, s->rows[i].id);
        sl_buf_putc(&s->copy, '\t');
        copy_field(&s->copy, s->rows[i].doc);
        sl_buf_printf(&s->copy, "\t%lld\n", (long long)s->rows[i].chunk);
    }
    PGresult *r = PQexec(s->pc, "COPY pg_temp.sluice_batch(id, doc, chunk) FROM STDIN");
    if (PQresultStatus(r) != PGRES_COPY_IN)
        return pg_fail(s, r, "save objects (copy)");
    PQclear(r);
    int sent = PQputCopyData(s->pc, s->copy.data ? s->copy.data : "", (int)s->copy.len);
    int ended = PQputCopyEnd(s->pc, sent == 1 ? NULL : "sluice: sending failed");
    sl_status st = SL_OK;
    /* The COPY's own result, then the end of the results. */
    while ((r = PQgetResult(s->pc))) {
        if (!st && PQresultStatus(r) != PGRES_COMMAND_OK)
            st = pg_fail(s, r, "save objects (copy)");
        else
            PQclear(r);
    }
    if (!st && (sent != 1 || ended != 1))
        st = pg_fail(s, NULL, "save objects (copy)");
    if (st)
        return st;
    sl_buf_reset(&s->sql);
    sl_buf_printf(&s->sql,
                  "INSERT INTO %s(id, doc, chunk) SELECT id, doc::jsonb, chunk FROM pg_temp.sluice_batch"
                  " ORDER BY id COLLATE \"C\"%s",
                  s->to, upsert_tail);
    return run(s, s->sql.data, "save objects");
}

static sl_status pg_dead(void *impl, int64_t chunk, const char *stage, int64_t object, const char *reason,
                         const void *raw, size_t rawlen)
{
    pg_sink *s = impl;
    char c[24], o[24];
    snprintf(c, sizeof c, "%lld", (long long)chunk);
    snprintf(o, sizeof o, "%lld", (long long)object);
    const char *vals[5] = {c, stage, o, reason, raw ? raw : ""};
    int lens[5] = {0, 0, 0, 0, (int)rawlen};
    int fmts[5] = {0, 0, 0, 0, 1}; /* raw goes in binary: any bytes */
    sl_buf_reset(&s->sql);
    sl_buf_printf(&s->sql,
                  "INSERT INTO %s(chunk, stage, object, reason, raw) VALUES ($1::bigint, $2, $3::bigint, $4, $5::bytea)"
                  " ON CONFLICT (chunk, stage, object) DO UPDATE SET reason = EXCLUDED.reason, raw = EXCLUDED.raw",
                  s->td);
    return check(s, PQexecParams(s->pc, s->sql.data, 5, NULL, vals, lens, fmts, 0), "save dead letter");
}

static sl_status pg_chunk(void *impl, int64_t chunk, int64_t count, int64_t attempt)
{
    pg_sink *s = impl;
    char c[24], n[24], a[24];
    snprintf(c, sizeof c, "%lld", (long long)chunk);
    snprintf(n, sizeof n, "%lld", (long long)count);
    snprintf(a, sizeof a, "%lld", (long long)attempt);
    const char *vals[3] = {c, n, a};
    sl_buf_reset(&s->sql);
    sl_buf_printf(&s->sql,
                  "INSERT INTO %s(idx, count, attempt) VALUES ($1::bigint, $2::bigint, $3::bigint)"
                  " ON CONFLICT (idx) DO UPDATE SET count = EXCLUDED.count, attempt = EXCLUDED.attempt,"
                  " saved_at = now()",
                  s->tc);
    return check(s, PQexecParams(s->pc, s->sql.data, 3, NULL, vals, NULL, NULL, 0), "save chunk record");
}

static sl_status pg_commit(void *impl)
{
    pg_sink *s = impl;
    if (!s->in_tx)
        return sl_fail(SL_EINVAL, "commit: %s: no transaction", s->shown);
    sort_unique(s);
    sl_status st = SL_OK;
    if (s->nrows)
        st = s->via == VIA_COPY ? write_copy(s) : write_values(s);
    if (st)
        return st; /* the caller rolls back */
    PGresult *r = PQexec(s->pc, "COMMIT");
    /* COMMIT of a transaction that failed answers "ROLLBACK", not an error. */
    if (PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") != 0) {
        PQclear(r);
        s->in_tx = false;
        return sl_fail(SL_EIO, "commit: %s: the transaction was rolled back", s->shown);
    }
    if ((st = check(s, r, "commit"))) {
        s->in_tx = PQstatus(s->pc) == CONNECTION_OK && PQtransactionStatus(s->pc) != PQTRANS_IDLE;
        return st;
    }
    s->in_tx = false;
    clear_rows(s);
    return SL_OK;
}

static void pg_rollback(void *impl)
{
    pg_sink *s = impl;
    if (s->in_tx && PQstatus(s->pc) == CONNECTION_OK)
        PQclear(PQexec(s->pc, "ROLLBACK"));
    s->in_tx = false;
    clear_rows(s);
}

static void pg_destroy(void *impl)
{
    pg_sink *s = impl;
    if (!s)
        return;
    if (s->pc)
        pg_rollback(s);
    PQfinish(s->pc);
    free(s->rows);
    sl_buf_free(&s->sql);
    sl_buf_free(&s->copy);
    free(s);
}

static const sl_sink_ops pg_ops = {
    pg_begin, pg_put, pg_dead, pg_chunk, pg_commit, pg_rollback, pg_destroy, NULL,
};

sl_status sl_sink_pg_open(const char *uri, const sl_sink_opts *o, void **impl, const sl_sink_ops **ops)
{
    sl_status st;
    pg_sink *s = sl_xcalloc(1, sizeof *s);
    sl_url_redact(uri, s->shown, sizeof s->shown);
    sl_sink_tables(o, s->to, s->tc, s->td);
    if (strlen(s->td) - 2 > 63 || strlen(s->tc) - 2 > 63) {
        st = sl_fail(SL_EINVAL, "--table: %s is longer than PostgreSQL's 63-byte names", s->td);
        goto fail;
    }
    const char *via = getenv("SLUICE_PG_BATCH");
    if (!via || !via[0] || !strcmp(via, "values"))
        s->via = VIA_VALUES;
    else if (!strcmp(via, "copy"))
        s->via = VIA_COPY;
    else {
        st = sl_fail(SL_EINVAL, "SLUICE_PG_BATCH: \"%s\" is not values or copy", via);
        goto fail;
    }
    /* Keywords are applied in order, so the URI's connect_timeout, if it
     * has one, overrides ours. */
    const char *keys[] = {"connect_timeout", "dbname", NULL}, *vals[] = {CONNECT_TIMEOUT_S, uri, NULL};
    const char *env_timeout = getenv("PGCONNECT_TIMEOUT");
    int skip = env_timeout && env_timeout[0] ? 1 : 0;
    s->pc = PQconnectdbParams(keys + skip, vals + skip, 1);
    if ((st = connected(s, "connect")) || (st = create_schema(s)))
        goto fail;
    *impl = s;
    *ops = &pg_ops;
    return SL_OK;
fail:
    pg_destroy(s);
    return st;
}
