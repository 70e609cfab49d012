/* lease.h - lease tokens: who may confirm, extend or hand back a chunk.
 *
 * A chunk's life, as the lease sees it:
 *
 *   1. The fetcher leases chunk c for the a-th time (a = 1, 2, ...) and
 *      sends token T(c, a) with it. T is a keyed hash (SipHash-2-4, two
 *      64-bit halves) of (c, a) under the run's 128-bit secret key, so
 *      nobody without the key can produce a token the fetcher never issued.
 *   2. The mapper carries T on P.progress / P.release and hands it on with
 *      the mapped objects; the saver echoes it on P.saved.
 *   3. The fetcher checks a token by recomputing T(c, a) for a = 1..the
 *      chunk's attempts: no table of issued tokens, memory per chunk stays
 *      constant, and a confirmation from an earlier attempt whose lease
 *      already expired is still recognised (the data *was* committed).
 *
 * The key lives in the ledger, so a restarted fetcher recognises the
 * tokens it issued before the crash; another job's tokens never match. */
#ifndef SL_LEASE_H
#define SL_LEASE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct {
    uint64_t k0, k1;
} sl_lease_key;

/* Draws a fresh key from the kernel's random source. */
sl_status sl_lease_key_random(sl_lease_key *key);

/* Formats the key as 32 hex digits (out has room for 33) and parses it. */
void sl_lease_key_format(const sl_lease_key *key, char *out);
sl_status sl_lease_key_parse(sl_lease_key *key, const char *hex);

/* Writes T(chunk, attempt): 32 lowercase hex digits and a NUL. */
void sl_lease_token(const sl_lease_key *key, int64_t chunk, int64_t attempt, char *out);

/* SipHash-2-4 of msg under (k0, k1); exposed for its test vectors. */
uint64_t sl_siphash(uint64_t k0, uint64_t k1, const uint8_t *msg, size_t len);

#endif
