/* ledger.h - the fetcher's record of every chunk of the job.
 *
 * A chunk's whole life:
 *
 *            lease (attempt+1, token T(c,attempt))
 *   PENDING ─────────────────────────────────────► LEASED ── P.progress: deadline moves on
 *      ▲  ▲                                         │  │
 *      │  └── P.release without reason (shutdown) ──┘  │
 *      │                                               │ lease expired, or P.release
 *      └────── failures < max_attempts ◄───────────────┤ with a reason: failures+1
 *                                                      │
 *                        failures == max_attempts ─────┴──► DEAD (reason kept)
 *
 *   any state ── P.saved with a token T(c, a<=attempts) ──► DONE (final)
 *
 * A DEAD chunk is also *reported*: its dead letter is in the sink. The
 * fetcher sends it until a saver acknowledges the commit, and the mark is
 * persisted, so a dead letter is never lost between fetcher restarts.
 *
 * DONE is reached only through a saver's confirmation, whose token proves
 * the fetcher leased that chunk (see lease.h): it is the one signal that a
 * chunk's objects are committed. A late confirmation of a DEAD chunk still
 * makes it DONE, because the data is in the sink.
 *
 * Persistence: the states live in memory (a few bytes per chunk, never per
 * object) and in a SQLite file. Changes are written in batches by
 * sl_ledger_flush; a crash can lose the last batch, which only means a chunk
 * is sent and saved again - never that one is lost. A restarted fetcher
 * reads the file back: DONE and DEAD stay, LEASED becomes PENDING with its
 * attempts kept (the old tokens still verify: the key is in the file).
 *
 * Not thread-safe: the fetcher holds its lock around every call. */
#ifndef SL_LEDGER_H
#define SL_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include "lease.h"
#include "status.h"

typedef enum {
    SL_CHUNK_PENDING = 0,
    SL_CHUNK_LEASED = 1,
    SL_CHUNK_DONE = 2,
    SL_CHUNK_DEAD = 3,
} sl_chunk_state;

typedef struct sl_ledger sl_ledger;

typedef struct {
    int64_t chunks, pending, leased, done, dead;
    int64_t objects_saved; /* sum of confirmed counts of DONE chunks */
    int64_t objects_dead;  /* objects dead-lettered inside DONE chunks */
    int64_t redeliveries;  /* leases beyond the first, over all chunks */
} sl_ledger_counts;

/* Opens (creating if needed) the ledger at path for a job of `chunks`
 * chunks. `identity` describes the job (source, sizes); a ledger written for
 * another identity is refused with SL_EINVAL rather than silently mixed.
 * fresh=true forgets everything in it first. Free with sl_ledger_close. */
sl_status sl_ledger_open(sl_ledger **out, const char *path, int64_t chunks,
                         const char *identity, bool fresh);

/* The chunk the next sl_ledger_lease will lease, or -1 if none is
 * pending. Nothing a caller can see changes: what it passes over (done
 * chunks, stale entries of the return queue) a lease would skip too. */
int64_t sl_ledger_next(sl_ledger *l);

/* Leases the next PENDING chunk until now_ms + lease_ms. Returns true and
 * sets *chunk, *attempt and token (33 bytes), or false if none is pending. */
bool sl_ledger_lease(sl_ledger *l, int64_t now_ms, int64_t lease_ms, int64_t *chunk,
                     int64_t *attempt, char *token);

/* Moves the deadline of a LEASED chunk whose current token is `token`.
 * SL_ENOTFOUND when the chunk is not leased under that token. */
sl_status sl_ledger_extend(sl_ledger *l, int64_t chunk, const char *token, int64_t now_ms,
                           int64_t lease_ms);

/* Takes back a LEASED chunk held under `token`. reason == NULL: handed back
 * unfinished, PENDING again at once; otherwise a failure that counts towards
 * max_attempts. *died is set when the chunk became DEAD. */
sl_status sl_ledger_release(sl_ledger *l, int64_t chunk, const char *token, const char *reason,
                            int64_t max_attempts, bool *died);

/* Records a saver's confirmation. SL_ENOTFOUND when the token was never
 * issued for this chunk. *first is true when this made the chunk DONE. */
sl_status sl_ledger_saved(sl_ledger *l, int64_t chunk, const char *token, int64_t count,
                          int64_t dead, bool *first);

/* Expires leases whose deadline passed. Chunks that died are written to
 * died[] (up to max_died); returns the number of leases expired. */
int64_t sl_ledger_expire(sl_ledger *l, int64_t now_ms, int64_t max_attempts, int64_t *died,
                         int64_t max_died, int64_t *ndied);

/* A time no later than the earliest lease deadline (exact after
 * sl_ledger_expire), or INT64_MAX when nothing is leased. */
int64_t sl_ledger_next_deadline(const sl_ledger *l);

sl_chunk_state sl_ledger_state(const sl_ledger *l, int64_t chunk);
int64_t sl_ledger_attempts(const sl_ledger *l, int64_t chunk);
/* Failures counted (expiries and hand-backs with a reason). */
int64_t sl_ledger_failures(const sl_ledger *l, int64_t chunk);
/* Why a DEAD chunk died; owned by the ledger, NULL for other states. */
const char *sl_ledger_reason(const sl_ledger *l, int64_t chunk);

/* Up to max DEAD chunks whose dead letter no saver acknowledged yet, into
 * out; returns how many there are in all. */
int64_t sl_ledger_unreported(const sl_ledger *l, int64_t *out, int64_t max);
/* Marks chunk's dead letter as committed by a saver. */
void sl_ledger_set_reported(sl_ledger *l, int64_t chunk);

void sl_ledger_counts_get(const sl_ledger *l, sl_ledger_counts *c);
bool sl_ledger_complete(const sl_ledger *l);

/* Writes the changes since the last flush in one transaction. */
sl_status sl_ledger_flush(sl_ledger *l);
bool sl_ledger_dirty(const sl_ledger *l);

/* Flushes and closes; accepts NULL. */
sl_status sl_ledger_close(sl_ledger *l);

#endif
