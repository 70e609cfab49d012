/* ledger.c - chunk states in memory, batched into a SQLite file. */
#include "ledger.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"

/* The file's tables: meta(identity, key) and a row per chunk. */
#define SCHEMA                                                                                                       \
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"                                    \
    "CREATE TABLE IF NOT EXISTS chunks(idx INTEGER PRIMARY KEY, state INTEGER NOT NULL, attempts INTEGER NOT NULL,"  \
    " failures INTEGER NOT NULL, saved INTEGER NOT NULL, dead INTEGER NOT NULL, reason TEXT,"                        \
    " reported INTEGER NOT NULL DEFAULT 0);"

typedef struct {
    int64_t deadline;  /* monotonic ms; meaningful while LEASED */
    int64_t saved;     /* objects confirmed (DONE) */
    int64_t dead;      /* objects dead-lettered inside the chunk (DONE) */
    uint32_t attempts; /* leases issued so far: the a of the last token */
    uint32_t failures; /* expirations and failure releases */
    uint8_t state;
    uint8_t queued;    /* in the return queue */
    uint8_t dirty;     /* changed since the last flush */
    uint8_t reported;  /* DEAD and its dead letter is in the sink */
} chunk_rec;

struct sl_ledger {
    sqlite3 *db;
    sqlite3_stmt *put;
    sl_lease_key key;
    int64_t n;
    chunk_rec *c;
    char **reasons;     /* per chunk, allocated on the first death */
    int64_t cursor;     /* chunks below it were handed out at least once */
    int64_t *queue;     /* ring of chunks handed back, oldest first */
    int64_t qcap, qhead, qlen;
    int64_t *dirty;     /* chunks to write at the next flush */
    int64_t ndirty, dirtycap;
    int64_t min_deadline;
    int64_t *unrep;     /* DEAD chunks not yet reported */
    int64_t nunrep, unrepcap;
    sl_ledger_counts counts;
};

static void unrep_add(sl_ledger *l, int64_t i)
{
    if (l->nunrep == l->unrepcap) {
        l->unrepcap = l->unrepcap ? l->unrepcap * 2 : 64;
        l->unrep = sl_xrealloc(l->unrep, (size_t)l->unrepcap * sizeof *l->unrep);
    }
    l->unrep[l->nunrep++] = i;
}

static void unrep_remove(sl_ledger *l, int64_t i)
{
    for (int64_t k = 0; k < l->nunrep; k++)
        if (l->unrep[k] == i) {
            l->unrep[k] = l->unrep[--l->nunrep];
            return;
        }
}

static void mark(sl_ledger *l, int64_t i)
{
    if (l->c[i].dirty)
        return;
    l->c[i].dirty = 1;
    if (l->ndirty == l->dirtycap) {
        l->dirtycap = l->dirtycap ? l->dirtycap * 2 : 1024;
        l->dirty = sl_xrealloc(l->dirty, (size_t)l->dirtycap * sizeof *l->dirty);
    }
    l->dirty[l->ndirty++] = i;
}

static void enqueue(sl_ledger *l, int64_t i)
{
    if (l->c[i].queued || i >= l->cursor)
        return; /* the cursor will reach it anyway */
    if (l->qlen == l->qcap) {
        int64_t cap = l->qcap ? l->qcap * 2 : 256;
        int64_t *q = sl_xmalloc((size_t)cap * sizeof *q);
        for (int64_t k = 0; k < l->qlen; k++)
            q[k] = l->queue[(l->qhead + k) % l->qcap];
        free(l->queue);
        l->queue = q;
        l->qcap = cap;
        l->qhead = 0;
    }
    l->queue[(l->qhead + l->qlen) % l->qcap] = i;
    l->qlen++;
    l->c[i].queued = 1;
}

/* Moves chunk i into `to`, keeping the counts in step. */
static void set_state(sl_ledger *l, int64_t i, sl_chunk_state to)
{
    static const size_t field[] = {
        offsetof(sl_ledger_counts, pending), offsetof(sl_ledger_counts, leased),
        offsetof(sl_ledger_counts, done), offsetof(sl_ledger_counts, dead)};
    chunk_rec *r = &l->c[i];
    (*(int64_t *)((char *)&l->counts + field[r->state]))--;
    (*(int64_t *)((char *)&l->counts + field[to]))++;
    if (r->state == SL_CHUNK_DEAD && !r->reported)
        unrep_remove(l, i);
    r->state = (uint8_t)to;
    r->reported = 0;
    if (to == SL_CHUNK_PENDING)
        enqueue(l, i);
    if (to == SL_CHUNK_DEAD)
        unrep_add(l, i);
    mark(l, i);
}

static sl_status load(sl_ledger *l, const char *identity, bool fresh)
{
    sl_status st;
    sqlite3_stmt *q = NULL;
    /* Fresh drops the tables rather than their rows, so a ledger written by
     * another version of sluice can be started over too. All in one
     * transaction: each statement on its own was a commit (and fsync) of
     * its own, a few ms of the fetcher's start. */
    if ((st = sl_db_exec_tx(l->db,
                            fresh ? "DROP TABLE IF EXISTS chunks; DROP TABLE IF EXISTS meta;" SCHEMA : SCHEMA)))
        return st;

    char *have_id = NULL, *have_key = NULL;
    if ((st = sl_db_prepare(l->db, "SELECT key, value FROM meta", &q)))
        return st;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0);
        const char *v = (const char *)sqlite3_column_text(q, 1);
        if (k && v && !strcmp(k, "identity"))
            have_id = sl_xstrdup(v);
        if (k && v && !strcmp(k, "key"))
            have_key = sl_xstrdup(v);
    }
    sqlite3_finalize(q);
    q = NULL;

    if (have_id && strcmp(have_id, identity) != 0) {
        st = sl_fail(SL_EINVAL, "ledger %s belongs to another job (%s), not %s; "
                                "use --fresh to start over or another --ledger",
                     sqlite3_db_filename(l->db, "main"), have_id, identity);
        goto cleanup;
    }
    if (have_key && !have_id) {
        st = sl_fail(SL_EINVAL, "ledger %s is damaged: it has a key but no identity",
                     sqlite3_db_filename(l->db, "main"));
        goto cleanup;
    }
    if (have_key) {
        if ((st = sl_lease_key_parse(&l->key, have_key)))
            goto cleanup;
    } else {
        char hex[33];
        sl_buf sql = SL_BUF_INIT;
        if ((st = sl_lease_key_random(&l->key)))
            goto cleanup;
        sl_lease_key_format(&l->key, hex);
        if ((st = sl_db_prepare(l->db, "INSERT OR REPLACE INTO meta(key, value) VALUES"
                                       " ('identity', ?1), ('key', ?2)", &q)))
            goto cleanup;
        sqlite3_bind_text(q, 1, identity, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, hex, -1, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_DONE)
            st = sl_db_fail(l->db, "ledger");
        sqlite3_finalize(q);
        q = NULL;
        sl_buf_free(&sql);
        if (st)
            goto cleanup;
    }

    if ((st = sl_db_prepare(l->db, "SELECT idx, state, attempts, failures, saved, dead, reason,"
                                   " reported FROM chunks", &q)))
        goto cleanup;
    while (sqlite3_step(q) == SQLITE_ROW) {
        int64_t i = sqlite3_column_int64(q, 0);
        int st8 = sqlite3_column_int(q, 1);
        if (i < 0 || i >= l->n || st8 < 0 || st8 > SL_CHUNK_DEAD)
            continue; /* not ours to interpret */
        chunk_rec *r = &l->c[i];
        r->attempts = (uint32_t)sqlite3_column_int64(q, 2);
        r->failures = (uint32_t)sqlite3_column_int64(q, 3);
        r->saved = sqlite3_column_int64(q, 4);
        r->dead = sqlite3_column_int64(q, 5);
        if (st8 == SL_CHUNK_DONE || st8 == SL_CHUNK_DEAD) {
            l->counts.pending--;
            r->state = (uint8_t)st8;
            if (st8 == SL_CHUNK_DONE) {
                l->counts.done++;
                l->counts.objects_saved += r->saved;
                l->counts.objects_dead += r->dead;
            } else {
                const char *why = (const char *)sqlite3_column_text(q, 6);
                l->counts.dead++;
                r->reported = sqlite3_column_int(q, 7) != 0;
                if (!r->reported)
                    unrep_add(l, i);
                if (!l->reasons)
                    l->reasons = sl_xcalloc((size_t)l->n, sizeof *l->reasons);
                l->reasons[i] = sl_xstrdup(why ? why : "dead");
            }
        }
        if (r->attempts > 1)
            l->counts.redeliveries += r->attempts - 1;
    }
    if (sqlite3_errcode(l->db) != SQLITE_DONE && sqlite3_errcode(l->db) != SQLITE_OK)
        st = sl_db_fail(l->db, "ledger");
cleanup:
    sqlite3_finalize(q);
    free(have_id);
    free(have_key);
    return st;
}

sl_status sl_ledger_open(sl_ledger **out, const char *path, int64_t chunks, const char *identity,
                         bool fresh)
{
    sl_status st;
    if (chunks <= 0 || chunks > INT64_C(100000000))
        return sl_fail(SL_EINVAL, "a job of %lld chunks is outside 1..100000000", (long long)chunks);
    sl_ledger *l = sl_xcalloc(1, sizeof *l);
    l->n = chunks;
    l->c = sl_xcalloc((size_t)chunks, sizeof *l->c);
    l->counts.chunks = chunks;
    l->counts.pending = chunks;
    l->min_deadline = INT64_MAX;
    /* NORMAL in WAL mode survives a process crash; a power loss may cost
     * the last marks, which only means chunks are sent again. */
    if ((st = sl_db_open(&l->db, path, "NORMAL", 0)))
        goto fail;
    if ((st = load(l, identity, fresh)))
        goto fail;
    if ((st = sl_db_prepare(l->db, "INSERT OR REPLACE INTO chunks(idx, state, attempts, failures,"
                                   " saved, dead, reason, reported) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            &l->put)))
        goto fail;
    *out = l;
    return SL_OK;
fail:
    sl_ledger_close(l);
    return st;
}

int64_t sl_ledger_next(sl_ledger *l)
{
    /* Entries that are no longer pending are dropped on the way: a lease
     * would skip them too, and a chunk that becomes pending again is
     * queued anew. */
    while (l->qlen > 0) {
        int64_t q = l->queue[l->qhead];
        if (l->c[q].state == SL_CHUNK_PENDING)
            return q;
        l->qhead = (l->qhead + 1) % l->qcap;
        l->qlen--;
        l->c[q].queued = 0;
    }
    while (l->cursor < l->n && l->c[l->cursor].state != SL_CHUNK_PENDING)
        l->cursor++;
    return l->cursor < l->n ? l->cursor : -1;
}

bool sl_ledger_lease(sl_ledger *l, int64_t now_ms, int64_t lease_ms, int64_t *chunk,
                     int64_t *attempt, char *token)
{
    int64_t i = sl_ledger_next(l);
    if (i < 0)
        return false;
    if (l->qlen > 0) {
        l->qhead = (l->qhead + 1) % l->qcap;
        l->qlen--;
        l->c[i].queued = 0;
    } else {
        l->cursor++;
    }
    chunk_rec *r = &l->c[i];
    r->attempts++;
    if (r->attempts > 1)
        l->counts.redeliveries++;
    r->deadline = now_ms + lease_ms;
    if (r->deadline < l->min_deadline)
        l->min_deadline = r->deadline;
    set_state(l, i, SL_CHUNK_LEASED);
    sl_lease_token(&l->key, i, r->attempts, token);
    *chunk = i;
    *attempt = r->attempts;
    return true;
}

/* True if token is the one of chunk i's current lease. */
static bool current_token(const sl_ledger *l, int64_t i, const char *token)
{
    char want[33];
    if (i < 0 || i >= l->n || l->c[i].state != SL_CHUNK_LEASED || !token)
        return false;
    sl_lease_token(&l->key, i, l->c[i].attempts, want);
    return strcmp(want, token) == 0;
}

sl_status sl_ledger_extend(sl_ledger *l, int64_t chunk, const char *token, int64_t now_ms,
                           int64_t lease_ms)
{
    if (!current_token(l, chunk, token))
        return sl_fail(SL_ENOTFOUND, "chunk %lld is not leased under that token", (long long)chunk);
    l->c[chunk].deadline = now_ms + lease_ms;
    if (l->c[chunk].deadline < l->min_deadline)
        l->min_deadline = l->c[chunk].deadline;
    return SL_OK;
}

static void fail_chunk(sl_ledger *l, int64_t i, const char *reason, int64_t max_attempts, bool *died)
{
    chunk_rec *r = &l->c[i];
    r->failures++;
    if (r->failures >= (uint64_t)max_attempts) {
        if (!l->reasons)
            l->reasons = sl_xcalloc((size_t)l->n, sizeof *l->reasons);
        sl_buf why = SL_BUF_INIT;
        sl_buf_printf(&why, "failed %u times; last: %s", r->failures, reason);
        free(l->reasons[i]);
        l->reasons[i] = why.data;
        set_state(l, i, SL_CHUNK_DEAD);
        *died = true;
    } else {
        set_state(l, i, SL_CHUNK_PENDING);
    }
}

sl_status sl_ledger_release(sl_ledger *l, int64_t chunk, const char *token, const char *reason,
                            int64_t max_attempts, bool *died)
{
    *died = false;
    if (!current_token(l, chunk, token))
        return sl_fail(SL_ENOTFOUND, "chunk %lld is not leased under that token", (long long)chunk);
    if (reason)
        fail_chunk(l, chunk, reason, max_attempts, died);
    else
        set_state(l, chunk, SL_CHUNK_PENDING);
    return SL_OK;
}

sl_status sl_ledger_saved(sl_ledger *l, int64_t chunk, const char *token, int64_t count,
                          int64_t dead, bool *first)
{
    *first = false;
    if (chunk < 0 || chunk >= l->n || !token)
        return sl_fail(SL_ENOTFOUND, "chunk %lld is not part of this job", (long long)chunk);
    chunk_rec *r = &l->c[chunk];
    bool known = false;
    char want[33];
    for (uint32_t a = r->attempts; a >= 1 && !known; a--) {
        sl_lease_token(&l->key, chunk, a, want);
        known = strcmp(want, token) == 0;
    }
    if (!known)
        return sl_fail(SL_ENOTFOUND, "lease token was never issued for chunk %lld", (long long)chunk);
    if (r->state == SL_CHUNK_DONE)
        return SL_OK; /* a duplicate: re-confirmed, nothing changes */
    if (r->state == SL_CHUNK_DEAD && l->reasons) {
        free(l->reasons[chunk]);
        l->reasons[chunk] = NULL;
    }
    r->saved = count;
    r->dead = dead;
    l->counts.objects_saved += count;
    l->counts.objects_dead += dead;
    set_state(l, chunk, SL_CHUNK_DONE);
    *first = true;
    return SL_OK;
}

int64_t sl_ledger_expire(sl_ledger *l, int64_t now_ms, int64_t max_attempts, int64_t *died,
                         int64_t max_died, int64_t *ndied)
{
    int64_t expired = 0;
    *ndied = 0;
    if (now_ms < l->min_deadline)
        return 0;
    int64_t next = INT64_MAX;
    for (int64_t i = 0; i < l->n && l->counts.leased > 0; i++) {
        chunk_rec *r = &l->c[i];
        if (r->state != SL_CHUNK_LEASED)
            continue;
        if (r->deadline > now_ms) {
            if (r->deadline < next)
                next = r->deadline;
            continue;
        }
        bool d = false;
        fail_chunk(l, i, "lease expired", max_attempts, &d);
        expired++;
        if (d && *ndied < max_died)
            died[(*ndied)++] = i;
    }
    l->min_deadline = next;
    return expired;
}

int64_t sl_ledger_next_deadline(const sl_ledger *l)
{
    return l->counts.leased ? l->min_deadline : INT64_MAX;
}

sl_chunk_state sl_ledger_state(const sl_ledger *l, int64_t chunk)
{
    SL_ASSERT(chunk >= 0 && chunk < l->n);
    return (sl_chunk_state)l->c[chunk].state;
}

int64_t sl_ledger_attempts(const sl_ledger *l, int64_t chunk)
{
    SL_ASSERT(chunk >= 0 && chunk < l->n);
    return l->c[chunk].attempts;
}

int64_t sl_ledger_failures(const sl_ledger *l, int64_t chunk)
{
    SL_ASSERT(chunk >= 0 && chunk < l->n);
    return l->c[chunk].failures;
}

const char *sl_ledger_reason(const sl_ledger *l, int64_t chunk)
{
    if (chunk < 0 || chunk >= l->n || l->c[chunk].state != SL_CHUNK_DEAD || !l->reasons)
        return NULL;
    return l->reasons[chunk];
}

int64_t sl_ledger_unreported(const sl_ledger *l, int64_t *out, int64_t max)
{
    for (int64_t k = 0; k < max && k < l->nunrep; k++)
        out[k] = l->unrep[k];
    return l->nunrep;
}

void sl_ledger_set_reported(sl_ledger *l, int64_t chunk)
{
    if (chunk < 0 || chunk >= l->n || l->c[chunk].state != SL_CHUNK_DEAD || l->c[chunk].reported)
        return;
    l->c[chunk].reported = 1;
    unrep_remove(l, chunk);
    mark(l, chunk);
}

void sl_ledger_counts_get(const sl_ledger *l, sl_ledger_counts *c)
{
    *c = l->counts;
}

bool sl_ledger_complete(const sl_ledger *l)
{
    return l->counts.done + l->counts.dead == l->n;
}

bool sl_ledger_dirty(const sl_ledger *l)
{
    return l->ndirty > 0;
}

sl_status sl_ledger_flush(sl_ledger *l)
{
    sl_status st;
    if (!l->ndirty)
        return SL_OK;
    if ((st = sl_db_exec(l->db, "BEGIN")))
        return st;
    for (int64_t k = 0; k < l->ndirty; k++) {
        int64_t i = l->dirty[k];
        chunk_rec *r = &l->c[i];
        /* A lease does not survive the fetcher: it is written as PENDING. */
        int state = r->state == SL_CHUNK_LEASED ? SL_CHUNK_PENDING : r->state;
        sqlite3_reset(l->put);
        sqlite3_bind_int64(l->put, 1, i);
        sqlite3_bind_int(l->put, 2, state);
        sqlite3_bind_int64(l->put, 3, r->attempts);
        sqlite3_bind_int64(l->put, 4, r->failures);
        sqlite3_bind_int64(l->put, 5, r->saved);
        sqlite3_bind_int64(l->put, 6, r->dead);
        const char *why = sl_ledger_reason(l, i);
        if (why)
            sqlite3_bind_text(l->put, 7, why, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(l->put, 7);
        sqlite3_bind_int(l->put, 8, r->reported);
        if (sqlite3_step(l->put) != SQLITE_DONE) {
            st = sl_db_fail(l->db, "ledger write");
            sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
            return st;
        }
    }
    if ((st = sl_db_exec(l->db, "COMMIT"))) {
        sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
        return st;
    }
    for (int64_t k = 0; k < l->ndirty; k++)
        l->c[l->dirty[k]].dirty = 0;
    l->ndirty = 0;
    return SL_OK;
}

sl_status sl_ledger_close(sl_ledger *l)
{
    if (!l)
        return SL_OK;
    sl_status st = l->put ? sl_ledger_flush(l) : SL_OK;
    sqlite3_finalize(l->put);
    sqlite3_close(l->db);
    if (l->reasons)
        for (int64_t i = 0; i < l->n; i++)
            free(l->reasons[i]);
    free(l->reasons);
    free(l->queue);
    free(l->dirty);
    free(l->unrep);
    free(l->c);
    free(l);
    return st;
}
