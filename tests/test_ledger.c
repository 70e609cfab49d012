/* test_ledger.c - the fetcher's ledger: a chunk's whole life, and its file.
 *
 * Every test works on a ledger file in the test's temporary directory and
 * drives the ledger with explicit clock values, so nothing here sleeps. */
#include "test.h"

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "ledger.h"
#include "proto.h"

#define ID "gen:users objects=1000 chunk=100"

static sl_ledger *open_ledger(const char *name, int64_t chunks, bool fresh)
{
    char *path = th_path(name);
    sl_ledger *l = NULL;
    sl_status st = sl_ledger_open(&l, path, chunks, ID, fresh);
    CHECK_MSG(st == SL_OK, "sl_ledger_open(%s): %s", path, sl_errmsg());
    CHECK(l != NULL);
    free(path);
    return l;
}

/* Leases one chunk and checks that the ledger handed out `want`. */
static void lease_expect(sl_ledger *l, int64_t now, int64_t lease_ms, int64_t want_chunk,
                         int64_t want_attempt, char *token)
{
    int64_t c = -1, a = -1;
    char t[33];
    CHECK_MSG(sl_ledger_lease(l, now, lease_ms, &c, &a, t), "no chunk to lease, wanted %lld",
              (long long)want_chunk);
    CHECK_INT(c, ==, want_chunk);
    CHECK_INT(a, ==, want_attempt);
    CHECK_MSG(sl_proto_token_ok(t), "malformed token \"%s\"", t);
    if (token)
        memcpy(token, t, 33);
}

static void check_counts_sum(const sl_ledger *l)
{
    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.pending + c.leased + c.done + c.dead, ==, c.chunks);
    CHECK(c.pending >= 0 && c.leased >= 0 && c.done >= 0 && c.dead >= 0);
}

/* A token no one issued: well-formed hex, random. */
static void forged_token(char *out)
{
    sl_lease_key k;
    CHECK_INT(sl_lease_key_random(&k), ==, SL_OK);
    sl_lease_token(&k, 0, 1, out);
}

SL_TEST(ledger_lease_order_and_attempts, 5)
{
    sl_ledger *l = open_ledger("order.ledger", 5, false);
    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.chunks, ==, 5);
    CHECK_INT(c.pending, ==, 5);
    CHECK_INT(c.leased + c.done + c.dead + c.redeliveries, ==, 0);
    CHECK(!sl_ledger_complete(l));

    char tok[5][33];
    for (int i = 0; i < 5; i++) {
        CHECK_INT(sl_ledger_state(l, i), ==, SL_CHUNK_PENDING);
        CHECK_INT(sl_ledger_attempts(l, i), ==, 0);
        lease_expect(l, 1000, 500, i, 1, tok[i]);
        CHECK_INT(sl_ledger_state(l, i), ==, SL_CHUNK_LEASED);
        CHECK_INT(sl_ledger_attempts(l, i), ==, 1);
        check_counts_sum(l);
    }
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            CHECK_MSG(strcmp(tok[i], tok[j]) != 0, "chunks %d and %d share a token", i, j);

    int64_t ch = 77, at = 77;
    char t[33] = "untouched";
    CHECK(!sl_ledger_lease(l, 1000, 500, &ch, &at, t));
    CHECK_INT(ch, ==, 77); /* out-params untouched when nothing is pending */
    CHECK_INT(at, ==, 77);
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.leased, ==, 5);
    CHECK_INT(c.pending, ==, 0);
    CHECK_INT(c.redeliveries, ==, 0);
    CHECK(!sl_ledger_complete(l));
    CHECK_INT(sl_ledger_close(l), ==, SL_OK);
}

/* The key sits in the ledger file (so a restarted fetcher recognises its
 * tokens); every token handed out must be T(chunk, attempt) under it. This
 * reads the ledger's meta table, an internal detail, to check that. */
SL_TEST(ledger_tokens_are_lease_tokens_under_stored_key, 5)
{
    char *path = th_path("key.ledger");
    sl_ledger *l = NULL;
    CHECK_INT(sl_ledger_open(&l, path, 3, ID, false), ==, SL_OK);
    char t0[33], t1[33], t0b[33];
    lease_expect(l, 0, 100, 0, 1, t0);
    lease_expect(l, 0, 100, 1, 1, t1);
    int64_t died[3], nd = 0;
    CHECK_INT(sl_ledger_expire(l, 100, 5, died, 3, &nd), ==, 2);
    lease_expect(l, 200, 100, 0, 2, t0b);
    CHECK_INT(sl_ledger_flush(l), ==, SL_OK);

    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CHECK_INT(sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'key'", -1, &q, NULL), ==,
              SQLITE_OK);
    CHECK_INT(sqlite3_step(q), ==, SQLITE_ROW);
    sl_lease_key key;
    CHECK_INT(sl_lease_key_parse(&key, (const char *)sqlite3_column_text(q, 0)), ==, SL_OK);
    sqlite3_finalize(q);
    sqlite3_close(db);

    char want[33];
    sl_lease_token(&key, 0, 1, want);
    CHECK_STR(t0, want);
    sl_lease_token(&key, 1, 1, want);
    CHECK_STR(t1, want);
    sl_lease_token(&key, 0, 2, want);
    CHECK_STR(t0b, want);
    CHECK_INT(sl_ledger_close(l), ==, SL_OK);
    free(path);
}

SL_TEST(ledger_keys_differ_between_ledgers, 5)
{
    /* Two jobs' ledgers draw their own keys: a token of one is nothing to
     * the other. */
    sl_ledger *a = open_ledger("a.ledger", 2, false);
    sl_ledger *b = open_ledger("b.ledger", 2, false);
    char ta[33], tb[33];
    lease_expect(a, 0, 1000, 0, 1, ta);
    lease_expect(b, 0, 1000, 0, 1, tb);
    CHECK(strcmp(ta, tb) != 0);
    bool first = true;
    CHECK_INT(sl_ledger_saved(b, 0, ta, 10, 0, &first), ==, SL_ENOTFOUND);
    CHECK(!first);
    CHECK_INT(sl_ledger_extend(b, 0, ta, 10, 1000), ==, SL_ENOTFOUND);
    CHECK_INT(sl_ledger_saved(b, 0, tb, 10, 0, &first), ==, SL_OK);
    CHECK(first);
    sl_ledger_close(a);
    sl_ledger_close(b);
}

SL_TEST(ledger_extend_needs_the_current_token, 5)
{
    sl_ledger *l = open_ledger("extend.ledger", 3, false);
    char t0[33], t1[33], forged[33];
    lease_expect(l, 0, 100, 0, 1, t0);
    lease_expect(l, 0, 100, 1, 1, t1);
    forged_token(forged);

    CHECK_INT(sl_ledger_extend(l, 0, t0, 50, 1000), ==, SL_OK);
    CHECK_INT(sl_ledger_extend(l, 0, t1, 50, 1000), ==, SL_ENOTFOUND); /* another chunk's */
    CHECK(strstr(sl_errmsg(), "chunk 0") != NULL);
    CHECK_INT(sl_ledger_extend(l, 0, forged, 50, 1000), ==, SL_ENOTFOUND);
    CHECK_INT(sl_ledger_extend(l, 0, NULL, 50, 1000), ==, SL_ENOTFOUND);
    CHECK_INT(sl_ledger_extend(l, 0, "", 50, 1000), ==, SL_ENOTFOUND);
    CHECK_INT(sl_ledger_extend(l, 2, t0, 50, 1000), ==, SL_ENOTFOUND); /* pending chunk */
    CHECK_INT(sl_ledger_extend(l, -1, t0, 50, 1000), ==, SL_ENOTFOUND);
    CHECK_INT(sl_ledger_extend(l, 3, t0, 50, 1000), ==, SL_ENOTFOUND);
    CHECK_INT(sl_ledger_extend(l, INT64_MAX, t0, 50, 1000), ==, SL_ENOTFOUND);

    /* The extension took effect: chunk 0 now runs to 1050, chunk 1 still
     * expires at 100. */
    int64_t died[3], nd = -1;
    CHECK_INT(sl_ledger_expire(l, 200, 5, died, 3, &nd), ==, 1);
    CHECK_INT(nd, ==, 0);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_LEASED);
    CHECK_INT(sl_ledger_state(l, 1), ==, SL_CHUNK_PENDING);
    CHECK_INT(sl_ledger_next_deadline(l), ==, 1050);
    CHECK_INT(sl_ledger_expire(l, 1049, 5, died, 3, &nd), ==, 0);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_LEASED);

    /* An expired lease cannot be extended, nor can one that was saved. */
    CHECK_INT(sl_ledger_extend(l, 1, t1, 300, 1000), ==, SL_ENOTFOUND);
    bool first = false;
    CHECK_INT(sl_ledger_saved(l, 0, t0, 100, 0, &first), ==, SL_OK);
    CHECK_INT(sl_ledger_extend(l, 0, t0, 300, 1000), ==, SL_ENOTFOUND);
    sl_ledger_close(l);
}

SL_TEST(ledger_saved_accepts_an_earlier_attempts_token, 5)
{
    sl_ledger *l = open_ledger("late.ledger", 2, false);
    char t1[33], t2[33];
    lease_expect(l, 0, 100, 0, 1, t1);
    int64_t died[2], nd = 0;
    CHECK_INT(sl_ledger_expire(l, 100, 5, died, 2, &nd), ==, 1);
    lease_expect(l, 150, 100, 0, 2, t2);
    CHECK(strcmp(t1, t2) != 0);

    /* The first mapper was slow, not dead: its saver confirms with the
     * attempt-1 token while attempt 2 is out. The data is committed, so
     * the chunk is DONE. */
    CHECK_INT(sl_ledger_extend(l, 0, t1, 160, 100), ==, SL_ENOTFOUND); /* not the current lease */
    bool first = false;
    CHECK_INT(sl_ledger_saved(l, 0, t1, 100, 2, &first), ==, SL_OK);
    CHECK(first);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_DONE);
    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.done, ==, 1);
    CHECK_INT(c.leased, ==, 0);
    CHECK_INT(c.objects_saved, ==, 100);
    CHECK_INT(c.objects_dead, ==, 2);
    CHECK_INT(c.redeliveries, ==, 1);
    /* The second attempt's confirmation is then a duplicate. */
    CHECK_INT(sl_ledger_saved(l, 0, t2, 100, 2, &first), ==, SL_OK);
    CHECK(!first);
    CHECK_INT(sl_ledger_extend(l, 0, t2, 200, 100), ==, SL_ENOTFOUND);
    /* Done chunks are not handed out again. */
    lease_expect(l, 200, 100, 1, 1, NULL);
    int64_t ch, at;
    char t[33];
    CHECK(!sl_ledger_lease(l, 200, 100, &ch, &at, t));
    sl_ledger_close(l);
}

SL_TEST(ledger_saved_refuses_forged_tokens, 5)
{
    sl_ledger *l = open_ledger("forged.ledger", 3, false);
    char t0[33], t1[33], forged[33];
    lease_expect(l, 0, 1000, 0, 1, t0);
    lease_expect(l, 0, 1000, 1, 1, t1);
    forged_token(forged);
    sl_ledger_counts before, after;
    sl_ledger_counts_get(l, &before);

    const char *bad[] = {forged, t1, "", "00000000000000000000000000000000",
                         "not a token at all"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool first = true;
        CHECK_MSG(sl_ledger_saved(l, 0, bad[i], 100, 0, &first) == SL_ENOTFOUND,
                  "token \"%s\" accepted for chunk 0", bad[i]);
        CHECK(!first);
    }
    bool first = true;
    CHECK_INT(sl_ledger_saved(l, 0, NULL, 100, 0, &first), ==, SL_ENOTFOUND);
    CHECK_INT(sl_ledger_saved(l, -1, t0, 100, 0, &first), ==, SL_ENOTFOUND);
    CHECK_INT(sl_ledger_saved(l, 3, t0, 100, 0, &first), ==, SL_ENOTFOUND);
    /* Chunk 2 was never leased: no token at all is valid for it. */
    CHECK_INT(sl_ledger_saved(l, 2, t0, 100, 0, &first), ==, SL_ENOTFOUND);
    CHECK(!first);

    sl_ledger_counts_get(l, &after);
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_LEASED);
    CHECK_INT(sl_ledger_state(l, 2), ==, SL_CHUNK_PENDING);
    CHECK(strstr(sl_errmsg(), "chunk") != NULL);
    sl_ledger_close(l);
}

SL_TEST(ledger_duplicate_saved_changes_nothing, 5)
{
    sl_ledger *l = open_ledger("dup.ledger", 2, false);
    char t0[33];
    lease_expect(l, 0, 1000, 0, 1, t0);
    bool first = false;
    CHECK_INT(sl_ledger_saved(l, 0, t0, 100, 3, &first), ==, SL_OK);
    CHECK(first);
    sl_ledger_counts before, after;
    sl_ledger_counts_get(l, &before);
    CHECK_INT(before.done, ==, 1);
    CHECK_INT(before.objects_saved, ==, 100);
    CHECK_INT(before.objects_dead, ==, 3);
    for (int i = 0; i < 3; i++) {
        first = true;
        /* Even with other counts: the first confirmation is the record. */
        CHECK_INT(sl_ledger_saved(l, 0, t0, 50 + i, 0, &first), ==, SL_OK);
        CHECK(!first);
    }
    sl_ledger_counts_get(l, &after);
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_DONE);
    sl_ledger_close(l);
}

SL_TEST(ledger_release_without_reason_requeues_first, 5)
{
    sl_ledger *l = open_ledger("release.ledger", 4, false);
    char t0[33], t1[33], t2[33];
    lease_expect(l, 0, 1000, 0, 1, t0);
    lease_expect(l, 0, 1000, 1, 1, t1);
    lease_expect(l, 0, 1000, 2, 1, t2);

    bool died = true;
    CHECK_INT(sl_ledger_release(l, 1, t0, NULL, 5, &died), ==, SL_ENOTFOUND); /* wrong token */
    CHECK(!died);
    CHECK_INT(sl_ledger_state(l, 1), ==, SL_CHUNK_LEASED);
    CHECK_INT(sl_ledger_release(l, 1, t1, NULL, 5, &died), ==, SL_OK);
    CHECK(!died);
    /* Pending at once, without waiting for the lease to run out. */
    CHECK_INT(sl_ledger_state(l, 1), ==, SL_CHUNK_PENDING);
    /* The old token no longer holds a lease ... */
    CHECK_INT(sl_ledger_extend(l, 1, t1, 10, 1000), ==, SL_ENOTFOUND);
    CHECK_INT(sl_ledger_release(l, 1, t1, NULL, 5, &died), ==, SL_ENOTFOUND);
    check_counts_sum(l);

    /* ... and chunk 1 goes out again before the never-leased chunk 3. */
    char t1b[33];
    lease_expect(l, 10, 1000, 1, 2, t1b);
    lease_expect(l, 10, 1000, 3, 1, NULL);

    /* A hand-back is not a failure: done any number of times (more than
     * max_attempts), the chunk never dies. */
    for (int i = 0; i < 5; i++) {
        CHECK_INT(sl_ledger_release(l, 1, t1b, NULL, 2, &died), ==, SL_OK);
        CHECK(!died);
        lease_expect(l, 20, 1000, 1, 3 + i, t1b);
    }
    CHECK_INT(sl_ledger_state(l, 1), ==, SL_CHUNK_LEASED);
    CHECK(sl_ledger_reason(l, 1) == NULL);
    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.redeliveries, ==, 6);
    CHECK_INT(c.dead, ==, 0);
    sl_ledger_close(l);
}

SL_TEST(ledger_release_with_reason_dies_after_max_attempts, 5)
{
    sl_ledger *l = open_ledger("fail.ledger", 3, false);
    char t[33];
    bool died = true;
    lease_expect(l, 0, 1000, 0, 1, t);
    CHECK_INT(sl_ledger_release(l, 0, t, "boom 1", 3, &died), ==, SL_OK);
    CHECK(!died);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_PENDING);
    CHECK(sl_ledger_reason(l, 0) == NULL);
    lease_expect(l, 0, 1000, 0, 2, t); /* a failed chunk is retried first */
    CHECK_INT(sl_ledger_release(l, 0, t, "boom 2", 3, &died), ==, SL_OK);
    CHECK(!died);
    lease_expect(l, 0, 1000, 0, 3, t);
    CHECK_INT(sl_ledger_release(l, 0, t, "bad JSON at byte 7", 3, &died), ==, SL_OK);
    CHECK(died);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_DEAD);
    CHECK_STR(sl_ledger_reason(l, 0), "failed 3 times; last: bad JSON at byte 7");
    CHECK(sl_ledger_reason(l, 1) == NULL); /* pending chunks have none */

    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.dead, ==, 1);
    CHECK_INT(c.pending, ==, 2);
    CHECK_INT(c.leased, ==, 0);
    CHECK_INT(c.redeliveries, ==, 2);
    check_counts_sum(l);

    /* Dead chunks are not leased again; the others are. */
    lease_expect(l, 0, 1000, 1, 1, NULL);
    lease_expect(l, 0, 1000, 2, 1, NULL);
    int64_t ch, at;
    CHECK(!sl_ledger_lease(l, 0, 1000, &ch, &at, t));
    CHECK_INT(sl_ledger_release(l, 0, t, "again", 3, &died), ==, SL_ENOTFOUND);
    sl_ledger_close(l);
}

SL_TEST(ledger_max_attempts_one_dies_at_first_failure, 5)
{
    sl_ledger *l = open_ledger("once.ledger", 1, false);
    char t[33];
    bool died = false;
    lease_expect(l, 0, 1000, 0, 1, t);
    CHECK_INT(sl_ledger_release(l, 0, t, "nope", 1, &died), ==, SL_OK);
    CHECK(died);
    CHECK_STR(sl_ledger_reason(l, 0), "failed 1 times; last: nope");
    CHECK(sl_ledger_complete(l));
    sl_ledger_close(l);
}

SL_TEST(ledger_late_confirmation_revives_a_dead_chunk, 5)
{
    sl_ledger *l = open_ledger("revive.ledger", 2, false);
    char t[33];
    bool died = false;
    lease_expect(l, 0, 1000, 0, 1, t);
    CHECK_INT(sl_ledger_release(l, 0, t, "timeout upstream", 1, &died), ==, SL_OK);
    CHECK(died);
    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.dead, ==, 1);

    /* The saver did commit it after all: the data is in the sink. */
    bool first = false;
    CHECK_INT(sl_ledger_saved(l, 0, t, 100, 0, &first), ==, SL_OK);
    CHECK(first);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_DONE);
    CHECK(sl_ledger_reason(l, 0) == NULL);
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.dead, ==, 0);
    CHECK_INT(c.done, ==, 1);
    CHECK_INT(c.objects_saved, ==, 100);
    check_counts_sum(l);
    sl_ledger_close(l);
}

SL_TEST(ledger_expire_after_deadline, 5)
{
    sl_ledger *l = open_ledger("expire.ledger", 4, false);
    char t0[33], t1[33];
    int64_t died[4] = {-1, -1, -1, -1}, nd = -1;
    lease_expect(l, 0, 100, 0, 1, t0);  /* deadline 100 */
    lease_expect(l, 50, 100, 1, 1, t1); /* deadline 150 */

    CHECK_INT(sl_ledger_expire(l, 99, 2, died, 4, &nd), ==, 0);
    CHECK_INT(nd, ==, 0);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_LEASED);
    /* At the deadline the lease is over. */
    CHECK_INT(sl_ledger_expire(l, 100, 2, died, 4, &nd), ==, 1);
    CHECK_INT(nd, ==, 0);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_PENDING);
    CHECK_INT(sl_ledger_state(l, 1), ==, SL_CHUNK_LEASED);
    CHECK_INT(sl_ledger_next_deadline(l), ==, 150);
    CHECK_INT(sl_ledger_extend(l, 0, t0, 100, 100), ==, SL_ENOTFOUND);

    /* The expired chunk is redelivered before the never-leased chunk 2. */
    lease_expect(l, 120, 100, 0, 2, t0); /* deadline 220 */
    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.redeliveries, ==, 1);

    /* Both expire at 220; with max_attempts 2 chunk 0 dies (second
     * failure), chunk 1 goes back (first). */
    CHECK_INT(sl_ledger_expire(l, 220, 2, died, 4, &nd), ==, 2);
    CHECK_INT(nd, ==, 1);
    CHECK_INT(died[0], ==, 0);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_DEAD);
    CHECK_STR(sl_ledger_reason(l, 0), "failed 2 times; last: lease expired");
    CHECK_INT(sl_ledger_state(l, 1), ==, SL_CHUNK_PENDING);
    CHECK_INT(sl_ledger_next_deadline(l), ==, INT64_MAX);
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.dead, ==, 1);
    CHECK_INT(c.pending, ==, 3);
    CHECK_INT(c.leased, ==, 0);
    check_counts_sum(l);
    /* Nothing leased: expiring again is a no-op. */
    CHECK_INT(sl_ledger_expire(l, 100000, 2, died, 4, &nd), ==, 0);
    CHECK_INT(nd, ==, 0);
    sl_ledger_close(l);
}

SL_TEST(ledger_expire_reports_at_most_max_died, 5)
{
    sl_ledger *l = open_ledger("maxdied.ledger", 5, false);
    for (int i = 0; i < 5; i++)
        lease_expect(l, 0, 10, i, 1, NULL);
    /* Exactly max_died slots: a write past them shows under ASan. */
    int64_t died[2] = {-1, -1}, nd = -1;
    CHECK_INT(sl_ledger_expire(l, 10, 1, died, 2, &nd), ==, 5);
    CHECK_INT(nd, ==, 2);
    CHECK_INT(died[0], ==, 0);
    CHECK_INT(died[1], ==, 1);
    /* All five died, even the ones that did not fit in died[]. */
    for (int i = 0; i < 5; i++)
        CHECK_INT(sl_ledger_state(l, i), ==, SL_CHUNK_DEAD);
    CHECK(sl_ledger_complete(l));
    sl_ledger_close(l);
}

SL_TEST(ledger_next_deadline, 5)
{
    sl_ledger *l = open_ledger("deadline.ledger", 3, false);
    CHECK_INT(sl_ledger_next_deadline(l), ==, INT64_MAX);
    char t0[33], t1[33], t2[33];
    lease_expect(l, 1000, 5000, 0, 1, t0); /* 6000 */
    CHECK_INT(sl_ledger_next_deadline(l), ==, 6000);
    lease_expect(l, 1100, 200, 1, 1, t1); /* 1300: earlier */
    CHECK_INT(sl_ledger_next_deadline(l), ==, 1300);
    lease_expect(l, 1200, 9000, 2, 1, t2); /* 10200: later */
    CHECK_INT(sl_ledger_next_deadline(l), ==, 1300);
    int64_t died[3], nd;
    CHECK_INT(sl_ledger_expire(l, 1300, 5, died, 3, &nd), ==, 1);
    CHECK_INT(sl_ledger_next_deadline(l), ==, 6000);
    bool first;
    CHECK_INT(sl_ledger_saved(l, 0, t0, 1, 0, &first), ==, SL_OK);
    CHECK_INT(sl_ledger_saved(l, 2, t2, 1, 0, &first), ==, SL_OK);
    /* Nothing leased any more. */
    CHECK_INT(sl_ledger_next_deadline(l), ==, INT64_MAX);
    sl_ledger_close(l);
}

SL_TEST(ledger_complete_and_counts, 5)
{
    sl_ledger *l = open_ledger("complete.ledger", 4, false);
    char t[4][33];
    for (int i = 0; i < 4; i++)
        lease_expect(l, 0, 1000, i, 1, t[i]);
    bool first, died;
    CHECK_INT(sl_ledger_saved(l, 0, t[0], 100, 0, &first), ==, SL_OK);
    CHECK(!sl_ledger_complete(l));
    CHECK_INT(sl_ledger_saved(l, 1, t[1], 97, 3, &first), ==, SL_OK);
    CHECK_INT(sl_ledger_release(l, 2, t[2], "poison", 1, &died), ==, SL_OK);
    CHECK(died);
    CHECK(!sl_ledger_complete(l));
    check_counts_sum(l);
    CHECK_INT(sl_ledger_saved(l, 3, t[3], 42, 0, &first), ==, SL_OK);
    CHECK(sl_ledger_complete(l));
    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.chunks, ==, 4);
    CHECK_INT(c.done, ==, 3);
    CHECK_INT(c.dead, ==, 1);
    CHECK_INT(c.pending + c.leased, ==, 0);
    CHECK_INT(c.objects_saved, ==, 100 + 97 + 42);
    CHECK_INT(c.objects_dead, ==, 3);
    CHECK_INT(c.redeliveries, ==, 0);
    sl_ledger_close(l);
}

SL_TEST(ledger_release_then_saved_skips_the_queued_chunk, 5)
{
    sl_ledger *l = open_ledger("queued.ledger", 3, false);
    char t0[33];
    bool died, first;
    lease_expect(l, 0, 1000, 0, 1, t0);
    lease_expect(l, 0, 1000, 1, 1, NULL);
    CHECK_INT(sl_ledger_release(l, 0, t0, NULL, 5, &died), ==, SL_OK);
    /* Handed back, but its saver had committed it anyway. */
    CHECK_INT(sl_ledger_saved(l, 0, t0, 100, 0, &first), ==, SL_OK);
    CHECK(first);
    lease_expect(l, 0, 1000, 2, 1, NULL);
    int64_t ch, at;
    char t[33];
    CHECK(!sl_ledger_lease(l, 0, 1000, &ch, &at, t));
    check_counts_sum(l);
    sl_ledger_close(l);
}

SL_TEST(ledger_handed_back_chunks_come_back_oldest_first, 10)
{
    /* More chunks than the return queue's first allocation, handed back in
     * a scrambled order with re-leases in between (so the ring wraps and
     * grows while it holds entries): they come back in exactly the order
     * they were handed back, each with its attempt number. A plain FIFO
     * here is the model. */
    enum { N = 1000 };
    sl_ledger *l = open_ledger("ring.ledger", N, false);
    static char tok[N][33];
    static int model[4 * N], attempts[N];
    int head = 0, tail = 0;
    for (int i = 0; i < N; i++) {
        lease_expect(l, 0, 1000, i, 1, tok[i]);
        attempts[i] = 1;
    }
    bool died;
    for (int k = 0; k < N; k++) {
        int i = (k * 7) % N; /* 7 is prime to 1000: a permutation */
        CHECK_INT(sl_ledger_release(l, i, tok[i], NULL, 5, &died), ==, SL_OK);
        model[tail++] = i;
        if (k % 3 == 2) {
            int j = model[head++];
            lease_expect(l, 0, 1000, j, ++attempts[j], tok[j]);
            CHECK_INT(sl_ledger_release(l, j, tok[j], NULL, 5, &died), ==, SL_OK);
            model[tail++] = j;
        }
    }
    for (; head < tail; head++) {
        int j = model[head];
        lease_expect(l, 0, 1000, j, ++attempts[j], NULL);
    }
    int64_t ch, at;
    char t[33];
    CHECK(!sl_ledger_lease(l, 0, 1000, &ch, &at, t));
    check_counts_sum(l);
    sl_ledger_close(l);
}

SL_TEST(ledger_next_names_the_chunk_the_next_lease_takes, 10)
{
    /* The fetcher builds the chunk sl_ledger_next names before a mapper
     * asks for it: whatever happened to the chunks before (leases,
     * hand-backs, failures, deaths, confirmations, expiries, a reopen),
     * the next lease takes exactly that chunk, and -1 means none is left. */
    enum { N = 40 };
    sl_ledger *l = open_ledger("next.ledger", N, false);
    static char tok[N][33];
    uint64_t rnd = 42;
    int64_t now = 0, leases = 0, nones = 0;
    bool died, first;
    for (int step = 0; step < 20000 && !sl_ledger_complete(l); step++) {
        rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
        int op = (int)(rnd >> 60), i = (int)((rnd >> 32) % N);
        now += 7;
        if (op < 7) {
            int64_t want = sl_ledger_next(l), again = sl_ledger_next(l), c = -1, a;
            char t[33];
            CHECK_INT(again, ==, want);
            bool got = sl_ledger_lease(l, now, 50 + (int64_t)(rnd >> 58), &c, &a, t);
            CHECK_MSG(got == (want >= 0), "step %d: next said %lld, lease %s", step, (long long)want,
                      got ? "got one" : "got none");
            if (got) {
                CHECK_INT(c, ==, want);
                memcpy(tok[c], t, 33);
                leases++;
            } else {
                nones++;
            }
        } else if (op < 10) {
            if (sl_ledger_state(l, i) == SL_CHUNK_LEASED)
                CHECK_INT(sl_ledger_release(l, i, tok[i], op == 9 ? "failed" : NULL, 4, &died), ==, SL_OK);
        } else if (op < 12) {
            if (tok[i][0])
                sl_ledger_saved(l, i, tok[i], 100, 0, &first);
        } else if (op < 15) {
            int64_t dead[N], nd;
            sl_ledger_expire(l, now, 4, dead, N, &nd);
        } else {
            /* A reopened ledger orders its chunks anew (its return queue
             * is not kept); next must follow. */
            CHECK_INT(sl_ledger_close(l), ==, SL_OK);
            l = open_ledger("next.ledger", N, false);
        }
        check_counts_sum(l);
    }
    /* The walk went through redeliveries and through times when every
     * chunk left was out on lease, to the end: nothing is next then. */
    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_MSG(sl_ledger_complete(l), "the walk did not finish the job: %lld pending, %lld leased",
              (long long)c.pending, (long long)c.leased);
    CHECK_INT(c.redeliveries, >, N);
    CHECK_INT(nones, >, 0);
    CHECK_INT(sl_ledger_next(l), ==, -1);
    sl_ledger_close(l);
}

SL_TEST(ledger_dirty_until_flushed, 5)
{
    sl_ledger *l = open_ledger("dirty.ledger", 2, false);
    CHECK(!sl_ledger_dirty(l));
    lease_expect(l, 0, 1000, 0, 1, NULL);
    CHECK(sl_ledger_dirty(l));
    CHECK_INT(sl_ledger_flush(l), ==, SL_OK);
    CHECK(!sl_ledger_dirty(l));
    CHECK_INT(sl_ledger_flush(l), ==, SL_OK); /* nothing to do */
    sl_ledger_close(l);
}

SL_TEST(ledger_persists_across_reopen, 5)
{
    sl_ledger *l = open_ledger("persist.ledger", 7, false);
    char t[7][33], t3a[33];
    for (int i = 0; i < 7; i++)
        lease_expect(l, 0, 100, i, 1, t[i]);
    bool first, died;
    CHECK_INT(sl_ledger_saved(l, 0, t[0], 100, 1, &first), ==, SL_OK);
    CHECK_INT(sl_ledger_saved(l, 1, t[1], 90, 0, &first), ==, SL_OK);
    CHECK_INT(sl_ledger_release(l, 2, t[2], "poison chunk", 1, &died), ==, SL_OK);
    CHECK(died);
    /* Chunk 3: one failure and a second lease (attempt 2). */
    CHECK_INT(sl_ledger_release(l, 3, t[3], "flaky", 3, &died), ==, SL_OK);
    memcpy(t3a, t[3], 33);
    lease_expect(l, 10, 100, 3, 2, t[3]);
    /* Chunk 6 handed back: pending, attempts 1. Chunks 4, 5 stay leased. */
    CHECK_INT(sl_ledger_release(l, 6, t[6], NULL, 3, &died), ==, SL_OK);
    CHECK_INT(sl_ledger_flush(l), ==, SL_OK);
    CHECK_INT(sl_ledger_close(l), ==, SL_OK);

    l = open_ledger("persist.ledger", 7, false);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_DONE);
    CHECK_INT(sl_ledger_state(l, 1), ==, SL_CHUNK_DONE);
    CHECK_INT(sl_ledger_state(l, 2), ==, SL_CHUNK_DEAD);
    CHECK_STR(sl_ledger_reason(l, 2), "failed 1 times; last: poison chunk");
    /* Leases do not survive the fetcher: pending, attempts kept. */
    for (int i = 3; i < 7; i++)
        CHECK_INT(sl_ledger_state(l, i), ==, SL_CHUNK_PENDING);
    CHECK_INT(sl_ledger_attempts(l, 3), ==, 2);
    CHECK_INT(sl_ledger_attempts(l, 4), ==, 1);
    CHECK_INT(sl_ledger_attempts(l, 6), ==, 1);
    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.chunks, ==, 7);
    CHECK_INT(c.done, ==, 2);
    CHECK_INT(c.dead, ==, 1);
    CHECK_INT(c.pending, ==, 4);
    CHECK_INT(c.leased, ==, 0);
    CHECK_INT(c.objects_saved, ==, 190);
    CHECK_INT(c.objects_dead, ==, 1);
    CHECK_INT(c.redeliveries, ==, 1);
    CHECK_INT(sl_ledger_next_deadline(l), ==, INT64_MAX);
    CHECK(!sl_ledger_dirty(l));

    /* The key came back: a confirmation of a lease issued before the
     * restart (the saver was still working) is recognised, of the current
     * attempt and of an earlier one. */
    first = false;
    CHECK_INT(sl_ledger_saved(l, 4, t[4], 100, 0, &first), ==, SL_OK);
    CHECK(first);
    CHECK_INT(sl_ledger_saved(l, 3, t3a, 100, 0, &first), ==, SL_OK);
    CHECK(first);
    char forged[33];
    forged_token(forged);
    CHECK_INT(sl_ledger_saved(l, 5, forged, 100, 0, &first), ==, SL_ENOTFOUND);

    /* Pending chunks are leased again, in order, with attempts going on;
     * done and dead chunks are skipped. */
    char t5[33];
    lease_expect(l, 0, 100, 5, 2, t5);
    lease_expect(l, 0, 100, 6, 2, NULL);
    int64_t ch, at;
    char tt[33];
    CHECK(!sl_ledger_lease(l, 0, 100, &ch, &at, tt));
    CHECK(strcmp(t5, t[5]) != 0);
    /* Redeliveries count across the restart. */
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.redeliveries, ==, 3);
    CHECK_INT(c.objects_saved, ==, 390);
    CHECK_INT(sl_ledger_close(l), ==, SL_OK);

    /* A third open sees the second run's marks (close flushes). */
    l = open_ledger("persist.ledger", 7, false);
    CHECK_INT(sl_ledger_state(l, 3), ==, SL_CHUNK_DONE);
    CHECK_INT(sl_ledger_state(l, 4), ==, SL_CHUNK_DONE);
    CHECK_INT(sl_ledger_attempts(l, 5), ==, 2);
    sl_ledger_close(l);
}

SL_TEST(ledger_failures_count_across_reopen, 5)
{
    sl_ledger *l = open_ledger("failures.ledger", 1, false);
    char t[33];
    bool died;
    lease_expect(l, 0, 1000, 0, 1, t);
    CHECK_INT(sl_ledger_release(l, 0, t, "one", 3, &died), ==, SL_OK);
    lease_expect(l, 0, 1000, 0, 2, t);
    CHECK_INT(sl_ledger_release(l, 0, t, "two", 3, &died), ==, SL_OK);
    CHECK(!died);
    sl_ledger_close(l);

    /* A crash loop cannot reset a poison chunk's count: the third failure
     * after the restart kills it. */
    l = open_ledger("failures.ledger", 1, false);
    lease_expect(l, 0, 1000, 0, 3, t);
    CHECK_INT(sl_ledger_release(l, 0, t, "three", 3, &died), ==, SL_OK);
    CHECK(died);
    CHECK_STR(sl_ledger_reason(l, 0), "failed 3 times; last: three");
    sl_ledger_close(l);
}

/* A crash (no close, no final flush) loses only what was not flushed: the
 * flushed done mark stays, the later one is gone, so that chunk will be
 * sent again -- a duplicate, never a loss. */
SL_TEST(ledger_crash_loses_only_the_unflushed_batch, 10)
{
    char *path = th_path("crash.ledger");
    char tok1[33];
    int pipefd[2];
    CHECK_INT(pipe(pipefd), ==, 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        sl_ledger *l = NULL;
        if (sl_ledger_open(&l, path, 3, ID, false) != SL_OK)
            _exit(10);
        int64_t c, a;
        char t0[33], t1[33];
        bool first;
        if (!sl_ledger_lease(l, 0, 1000, &c, &a, t0) || !sl_ledger_lease(l, 0, 1000, &c, &a, t1))
            _exit(11);
        if (sl_ledger_saved(l, 0, t0, 100, 0, &first) != SL_OK || sl_ledger_flush(l) != SL_OK)
            _exit(12);
        if (sl_ledger_saved(l, 1, t1, 100, 0, &first) != SL_OK)
            _exit(13);
        if (write(pipefd[1], t1, 33) != 33)
            _exit(14);
        _exit(0); /* no close: the second done mark is never written */
    }
    close(pipefd[1]);
    CHECK_INT(read(pipefd[0], tok1, 33), ==, 33);
    close(pipefd[0]);
    int status = 0;
    CHECK_INT(waitpid(pid, &status, 0), ==, pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);

    sl_ledger *l = NULL;
    CHECK_INT(sl_ledger_open(&l, path, 3, ID, false), ==, SL_OK);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_DONE);
    CHECK_INT(sl_ledger_state(l, 1), ==, SL_CHUNK_PENDING);
    CHECK_INT(sl_ledger_attempts(l, 1), ==, 1);
    /* The lost confirmation arrives again (the saver re-confirms). */
    bool first = false;
    CHECK_INT(sl_ledger_saved(l, 1, tok1, 100, 0, &first), ==, SL_OK);
    CHECK(first);
    sl_ledger_close(l);
    free(path);
}

SL_TEST(ledger_identity_mismatch_refused, 5)
{
    char *path = th_path("ident.ledger");
    sl_ledger *l = NULL;
    CHECK_INT(sl_ledger_open(&l, path, 4, "job A", false), ==, SL_OK);
    char t[33];
    lease_expect(l, 0, 1000, 0, 1, t);
    bool first;
    CHECK_INT(sl_ledger_saved(l, 0, t, 10, 0, &first), ==, SL_OK);
    sl_ledger_close(l);

    static char sentinel;
    sl_ledger *other = (sl_ledger *)(void *)&sentinel; /* must stay untouched */
    sl_ledger *l2 = other;
    CHECK_INT(sl_ledger_open(&l2, path, 4, "job B", false), ==, SL_EINVAL);
    CHECK(l2 == other);
    CHECK_MSG(strstr(sl_errmsg(), path) != NULL, "message does not name the ledger: %s",
              sl_errmsg());
    CHECK(strstr(sl_errmsg(), "job A") != NULL);
    CHECK(strstr(sl_errmsg(), "job B") != NULL);

    /* The refused open did not touch the file: job A resumes intact. */
    CHECK_INT(sl_ledger_open(&l, path, 4, "job A", false), ==, SL_OK);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_DONE);
    sl_ledger_close(l);

    /* fresh=true starts over, under the new identity. */
    CHECK_INT(sl_ledger_open(&l, path, 4, "job B", true), ==, SL_OK);
    sl_ledger_counts c;
    sl_ledger_counts_get(l, &c);
    CHECK_INT(c.pending, ==, 4);
    CHECK_INT(c.done + c.dead + c.objects_saved + c.redeliveries, ==, 0);
    CHECK_INT(sl_ledger_attempts(l, 0), ==, 0);
    /* The old token belongs to the forgotten run. */
    CHECK_INT(sl_ledger_saved(l, 0, t, 10, 0, &first), ==, SL_ENOTFOUND);
    lease_expect(l, 0, 1000, 0, 1, NULL);
    sl_ledger_close(l);

    /* And job B is now the ledger's identity. */
    CHECK_INT(sl_ledger_open(&l, path, 4, "job A", false), ==, SL_EINVAL);
    CHECK_INT(sl_ledger_open(&l, path, 4, "job B", false), ==, SL_OK);
    CHECK_INT(sl_ledger_attempts(l, 0), ==, 1);
    sl_ledger_close(l);
    free(path);
}

SL_TEST(ledger_fresh_forgets_everything, 5)
{
    sl_ledger *l = open_ledger("fresh.ledger", 2, false);
    char t[33];
    bool first, died;
    lease_expect(l, 0, 1000, 0, 1, t);
    CHECK_INT(sl_ledger_saved(l, 0, t, 10, 0, &first), ==, SL_OK);
    lease_expect(l, 0, 1000, 1, 1, t);
    CHECK_INT(sl_ledger_release(l, 1, t, "x", 1, &died), ==, SL_OK);
    sl_ledger_close(l);

    l = open_ledger("fresh.ledger", 2, true);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_PENDING);
    CHECK_INT(sl_ledger_state(l, 1), ==, SL_CHUNK_PENDING);
    CHECK(sl_ledger_reason(l, 1) == NULL);
    lease_expect(l, 0, 1000, 0, 1, NULL);
    sl_ledger_close(l);
}

SL_TEST(ledger_unwritable_path_fails_with_eio, 5)
{
    const char *p1 = "/proc/nonexistent/x.ledger";
    sl_ledger *l = NULL;
    CHECK_INT(sl_ledger_open(&l, p1, 10, ID, false), ==, SL_EIO);
    CHECK(l == NULL);
    CHECK_MSG(strstr(sl_errmsg(), p1) != NULL, "message does not name %s: %s", p1, sl_errmsg());

    /* A directory is not a ledger either. */
    const char *dir = th_tmpdir();
    CHECK_INT(sl_ledger_open(&l, dir, 10, ID, false), ==, SL_EIO);
    CHECK(l == NULL);
    CHECK_MSG(strstr(sl_errmsg(), dir) != NULL, "message does not name %s: %s", dir, sl_errmsg());

    /* Nor is a file that is not a SQLite database. */
    char *junk = th_path("junk.ledger");
    FILE *f = fopen(junk, "w");
    CHECK(f != NULL);
    for (int i = 0; i < 200; i++)
        fputs("this is not a database, it is a text file\n", f);
    fclose(f);
    CHECK_INT(sl_ledger_open(&l, junk, 10, ID, false), ==, SL_EIO);
    CHECK(l == NULL);
    CHECK_MSG(strstr(sl_errmsg(), junk) != NULL, "message does not name %s: %s", junk, sl_errmsg());
    free(junk);
}

SL_TEST(ledger_open_rejects_bad_chunk_counts, 5)
{
    char *path = th_path("bad.ledger");
    sl_ledger *l = NULL;
    CHECK_INT(sl_ledger_open(&l, path, 0, ID, false), ==, SL_EINVAL);
    CHECK_INT(sl_ledger_open(&l, path, -1, ID, false), ==, SL_EINVAL);
    CHECK_INT(sl_ledger_open(&l, path, INT64_MAX, ID, false), ==, SL_EINVAL);
    CHECK(l == NULL);
    CHECK(sl_ledger_close(NULL) == SL_OK); /* accepts NULL */
    free(path);
}

/* A deadline moved earlier than the earliest one known (an extension with
 * a shorter lease than the original) still expires on time: extend keeps
 * the ledger's earliest deadline in step. */
SL_TEST(ledger_extend_to_an_earlier_deadline_expires, 5)
{
    sl_ledger *l = open_ledger("shorten.ledger", 1, false);
    char t[33];
    lease_expect(l, 0, 10000, 0, 1, t);                     /* deadline 10000 */
    CHECK_INT(sl_ledger_extend(l, 0, t, 100, 50), ==, SL_OK); /* now 150 */
    CHECK_INT(sl_ledger_next_deadline(l), <=, 150);
    int64_t died[1], nd;
    CHECK_INT(sl_ledger_expire(l, 200, 5, died, 1, &nd), ==, 1);
    CHECK_INT(sl_ledger_state(l, 0), ==, SL_CHUNK_PENDING);
    sl_ledger_close(l);
}
