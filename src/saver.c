/* saver.c - writes mapped chunks in transactions, then confirms them.
 *
 * The order is the guarantee: commit first, then P.saved. A saver killed
 * between the two leaves a committed chunk unconfirmed; the lease expires,
 * the chunk is mapped and saved again, and the upsert by id makes that a
 * no-op. A failed commit confirms nothing.
 *
 * Group commit: a transaction stays open for --group-commit-ms (or until it
 * holds MAX_BATCH_CHUNKS chunks or MAX_BATCH_OBJECTS objects, or no chunk
 * came for IDLE_COMMIT_MS) and takes every chunk that arrives meanwhile, so one commit - one fsync, and one
 * write of each page the upserts touch - serves many chunks. Every chunk of
 * a batch is confirmed to the fetcher only after the commit that holds it.
 * The mapper that sent a chunk is answered as soon as the chunk is written
 * into the transaction (SL_STATUS_ACCEPTED): a mapper keeps --in-flight
 * chunks unanswered at most, so a saver's queue holds at most that many
 * per mapper however slow the sink is. If the saver dies before the commit, the
 * chunks' leases run out and they are sent again.
 *
 * Deferred writes: after each commit and its confirmations, and whenever
 * no chunk came for IDLE_SETTLE_MS while it was free to take them, the
 * saver lets the sink settle
 * (sl_sink_settle: the SQLite sink merges staged objects into its objects
 * table), and at exit it settles everything, so a job that ends leaves
 * every object where readers look for it. */
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "bus.h"
#include "chunk.h"
#include "clock.h"
#include "log.h"
#include "roles.h"
#include "sink.h"
#include "stop.h"
#include "telemetry.h"
#include "url.h"

#define OUTAGE_TICK_MS 100
#define MAX_BATCH_CHUNKS 256
#define MAX_BATCH_OBJECTS 100000
/* How often the main loop looks for a transaction due to commit. */
#define COMMIT_TICK_MS 2
/* A transaction that took no chunk for this long commits before it is
 * due: the chunks have stopped coming (the end of a job, a pause), and
 * waiting longer only delays their confirmation. Under load chunks come
 * far more often than this, and batches stay whole. */
#define IDLE_COMMIT_MS 5
/* The sink's deferred work (the SQLite sink's merge of staged objects,
 * sink_sqlite.c) is done when it is due after a commit, and otherwise once
 * no chunk came for this long: the job has ended or paused. Waiting longer
 * than a group commit keeps the merges large while chunks still come. */
#define IDLE_SETTLE_MS 200
/* After a failed merge (a full disk), the next try waits this long. */
#define SETTLE_RETRY_MS 1000

/* A chunk written in the open transaction, awaiting its commit. */
typedef struct {
    int64_t chunk, attempt, saved, dead; /* dead: the chunk's, mapper's and saver's */
    int64_t saver_dead;                  /* of those, dead-lettered here */
    char *token;
    char *reply; /* the mapper's inbox, or NULL once answered */
} batched;
#define OUTAGE_BACKOFF_MS 500
#define OUTAGE_MAX_BACKOFF_MS 10000

typedef struct {
    const sl_config *cfg;
    sl_bus *bus;
    sl_sink *sink;
    pthread_mutex_t mu; /* the sink is used by one thread at a time */
    int64_t chunks, objects, dead, bad_messages, commits, failed_commits;
    bool sink_ok;       /* the last transaction committed */
    /* the open transaction (under mu) */
    batched *batch;
    int nbatch;
    int64_t batch_objects;
    double batch_t0;
    int64_t batch_due_ms; /* commit it then */
    int64_t last_put_ms;  /* when a chunk last joined it */
    int64_t last_busy_ms; /* when a commit and its due settle last ended: chunks waited till then */
    bool settle_more;     /* the sink has deferred work */
    int64_t settle_at_ms; /* not before then (after a failure) */
    sl_telemetry tel;
    sl_metric *m_chunks, *m_objects, *m_dead, *m_stored, *m_failures, *m_duration, *m_ready, *m_commits, *m_settle;
    sl_metric *bad_header, *bad_body;
} saver;

static void bad(saver *s, natsMsg *m, const char *reason, const char *detail)
{
    pthread_mutex_lock(&s->mu);
    s->bad_messages++;
    pthread_mutex_unlock(&s->mu);
    sl_metric_inc(!strcmp(reason, "bad_body") ? s->bad_body : s->bad_header);
    sl_warn("bad message", "subject=%s reason=%s detail=%s", natsMsg_GetSubject(m), reason,
            sl_log_q(detail));
}

/* Answers the mapper that sent a chunk, if it asked (P.mapped's reply
 * subject): status accepted or released, naming the chunk and attempt so a
 * late answer to an earlier send cannot be taken for this one. */
static void answer(saver *s, batched *b, const char *status)
{
    if (!b->reply)
        return;
    natsMsg *a = sl_msg_new(b->reply, NULL, NULL, 0);
    sl_msg_set(a, SL_H_STATUS, status);
    sl_msg_set_int(a, SL_H_CHUNK, b->chunk);
    sl_msg_set_int(a, SL_H_ATTEMPT, b->attempt);
    sl_bus_publish(s->bus, a);
    sl_msg_free(a);
    free(b->reply);
    b->reply = NULL;
}

/* Hands a chunk that was not committed back to the fetcher. A release
 * without a reason is not a failure of the chunk, so a sink outage does not
 * use up its attempts; it is leased again at once, while this saver stops
 * taking chunks for a while (see the main loop). */
static void release(saver *s, batched *b)
{
    natsMsg *r = sl_msg_new(sl_bus_subject(s->bus, SL_SUBJ_RELEASE), NULL, NULL, 0);
    sl_msg_set_int(r, SL_H_CHUNK, b->chunk);
    sl_msg_set(r, SL_H_LEASE, b->token);
    sl_bus_publish(s->bus, r);
    sl_msg_free(r);
    answer(s, b, SL_STATUS_RELEASED);
}

/* Lets the sink do its deferred work (sl_sink_settle); chunks wait
 * meanwhile. A failure counts as a failed transaction: nothing is lost
 * (the work stays deferred), but the sink is not well. Called with mu held
 * and no transaction open. False if the deferred work failed. Each call
 * that did some is one observation of sluice_sink_settle_seconds. */
static bool settle(saver *s, sl_settle how)
{
    bool more = false, ok = true;
    if (sl_now_ms() < s->settle_at_ms && how != SL_SETTLE_ALL)
        return true;
    int64_t txs = 0;
    double t0 = sl_now_s();
    sl_status st = sl_sink_settle(s->sink, how, &more, &txs);
    /* The metrics exist unless the saver failed before registering them
     * and settles a sink left staged as it exits. */
    bool metrics = s->m_settle != NULL;
    if (metrics && txs > 0)
        sl_metric_observe(s->m_settle, sl_now_s() - t0);
    if (st != SL_OK) {
        ok = false;
        sl_error("deferred write failed", "error=%s", sl_log_q(sl_errmsg()));
        s->failed_commits++;
        if (metrics) {
            sl_metric_inc(s->m_failures);
            sl_metric_set(s->m_ready, 0);
        }
        s->sink_ok = false;
        s->settle_at_ms = sl_now_ms() + SETTLE_RETRY_MS;
        more = true;
    }
    s->settle_more = more;
    return ok;
}

/* Room left for headers when a batch of confirmations is sized. */
#define CONFIRM_ROOM 1024

/* Publishes one P.saved confirming the chunks whose lines are in body
 * (the batch form, docs/PROTOCOL.md §4.5), and empties body. */
static void confirm(saver *s, sl_buf *body, int lines)
{
    natsMsg *c = sl_msg_new(sl_bus_subject(s->bus, SL_SUBJ_SAVED), NULL, body->data, body->len);
    sl_msg_set_int(c, SL_H_CHUNKS, lines);
    if (sl_bus_publish(s->bus, c) != SL_OK)
        sl_warn("confirmation not sent", "chunks=%d error=%s", lines, sl_log_q(sl_errmsg()));
    sl_msg_free(c);
    sl_buf_reset(body);
}

/* Ends the open transaction: commits (ok) or rolls back, then confirms
 * (one P.saved for all its chunks) or releases every chunk it held. Called
 * with mu held. */
static void end_batch(saver *s, bool ok)
{
    if (!s->nbatch)
        return;
    sl_status st = ok ? sl_sink_commit(s->sink) : SL_EIO;
    if (st != SL_OK) {
        if (ok)
            sl_error("commit failed", "chunks=%d error=%s", s->nbatch, sl_log_q(sl_errmsg()));
        sl_sink_rollback(s->sink);
        s->failed_commits++;
        sl_metric_inc(s->m_failures);
    } else {
        s->commits++;
        sl_metric_inc(s->m_commits);
        sl_metric_observe(s->m_duration, sl_now_s() - s->batch_t0);
    }
    s->sink_ok = st == SL_OK;
    sl_metric_set(s->m_ready, s->sink_ok);
    sl_buf body = SL_BUF_INIT;
    int lines = 0;
    for (int k = 0; k < s->nbatch; k++) {
        batched *b = &s->batch[k];
        if (st != SL_OK) {
            release(s, b);
        } else {
            s->chunks++;
            s->objects += b->saved;
            s->dead += b->saver_dead;
            sl_metric_inc(s->m_chunks);
            sl_metric_add(s->m_objects, (double)b->saved);
            sl_metric_add(s->m_dead, (double)b->saver_dead);
            sl_saved_entry e = {.chunk = b->chunk, .count = b->saved, .dead = b->dead};
            snprintf(e.token, sizeof e.token, "%s", b->token);
            /* A batch never outgrows what the server accepts. */
            if (lines && (int64_t)(body.len + SL_SAVED_LINE_MAX) > sl_bus_max_payload(s->bus) - CONFIRM_ROOM) {
                confirm(s, &body, lines);
                lines = 0;
            }
            sl_proto_saved_append(&body, &e);
            lines++;
            sl_debug("chunk saved", "chunk=%" PRId64 " count=%" PRId64, b->chunk, b->saved);
        }
        free(b->token);
        free(b->reply);
    }
    if (lines)
        confirm(s, &body, lines);
    sl_buf_free(&body);
    s->nbatch = 0;
    s->batch_objects = 0;
    /* After the confirmations: a merge delays the next chunks, not these. */
    if (st == SL_OK)
        settle(s, SL_SETTLE_DUE);
    s->last_busy_ms = sl_now_ms();
}

static void on_mapped(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    saver *s = closure;
    int64_t chunk, attempt, count, dead = 0;
    const char *token = sl_msg_str(m, SL_H_LEASE);
    sl_status st;
    if (sl_msg_int(m, SL_H_CHUNK, 0, INT64_MAX, &chunk) || sl_msg_int(m, SL_H_ATTEMPT, 1, INT32_MAX, &attempt) ||
        sl_msg_int(m, SL_H_COUNT, 0, INT32_MAX, &count)) {
        bad(s, m, "bad_header", sl_errmsg());
        goto out;
    }
    st = sl_msg_int(m, SL_H_DEAD, 0, INT32_MAX, &dead);
    if (st != SL_OK && st != SL_ENOTFOUND) {
        bad(s, m, "bad_header", sl_errmsg());
        goto out;
    }
    if (!sl_proto_token_ok(token)) {
        bad(s, m, "bad_header", "header Sluice-Lease is not a lease token");
        goto out;
    }
    pthread_mutex_lock(&s->mu);
    if (!s->nbatch) {
        if (sl_sink_begin(s->sink) != SL_OK) {
            sl_error("chunk not saved", "chunk=%" PRId64 " error=%s", chunk, sl_log_q(sl_errmsg()));
            const char *r = natsMsg_GetReply(m);
            batched one = {chunk, attempt, 0, 0, 0, (char *)token, r && r[0] ? sl_xstrdup(r) : NULL};
            s->failed_commits++;
            sl_metric_inc(s->m_failures);
            s->sink_ok = false;
            sl_metric_set(s->m_ready, 0);
            release(s, &one);
            pthread_mutex_unlock(&s->mu);
            goto out;
        }
        s->batch_t0 = sl_now_s();
        s->batch_due_ms = sl_now_ms() + s->cfg->group_commit_ms;
    }
    int64_t saved = 0, saved_dead = 0;
    char why[SL_REASON_MAX + 1];
    st = sl_chunk_write(s->sink, s->cfg->id, chunk, attempt, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m),
                        &saved, &saved_dead, why, sizeof why);
    if (st == SL_EINVAL) {
        /* Nothing of it was written; a transaction opened for it alone
         * is closed again. */
        if (!s->nbatch)
            sl_sink_rollback(s->sink);
        pthread_mutex_unlock(&s->mu);
        bad(s, m, "bad_body", why);
        goto out;
    }
    if (st != SL_OK) {
        sl_error("chunk not saved", "chunk=%" PRId64 " error=%s", chunk, sl_log_q(sl_errmsg()));
        saved = -1;
    }
    const char *reply = natsMsg_GetReply(m);
    s->batch = sl_xrealloc(s->batch, (size_t)(s->nbatch + 1) * sizeof *s->batch);
    s->batch[s->nbatch++] = (batched){chunk, attempt, saved, dead + saved_dead, saved_dead, sl_xstrdup(token),
                                      reply && reply[0] ? sl_xstrdup(reply) : NULL};
    s->batch_objects += saved > 0 ? saved : 0;
    s->last_put_ms = sl_now_ms();
    if (saved >= 0)
        answer(s, &s->batch[s->nbatch - 1], SL_STATUS_ACCEPTED);
    if (saved < 0 || s->nbatch >= MAX_BATCH_CHUNKS || s->batch_objects >= MAX_BATCH_OBJECTS ||
        sl_now_ms() >= s->batch_due_ms)
        end_batch(s, saved >= 0);
    pthread_mutex_unlock(&s->mu);
out:
    sl_msg_free(m);
}

static void on_dead(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    saver *s = closure;
    int64_t chunk, object = -1;
    const char *reason = sl_msg_str(m, SL_H_REASON);
    if (sl_msg_int(m, SL_H_CHUNK, 0, INT64_MAX, &chunk) != SL_OK) {
        bad(s, m, "bad_header", sl_errmsg());
        goto out;
    }
    sl_status st = sl_msg_int(m, SL_H_OBJECT, -1, INT32_MAX, &object);
    if (st != SL_OK && st != SL_ENOTFOUND) {
        bad(s, m, "bad_header", sl_errmsg());
        goto out;
    }
    if (!reason || !reason[0]) {
        bad(s, m, "bad_header", "header Sluice-Reason missing");
        goto out;
    }
    char why[SL_REASON_MAX + 1];
    sl_proto_reason(why, sizeof why, reason);
    const char *stage = object < 0 ? "fetcher" : "mapper";
    pthread_mutex_lock(&s->mu);
    end_batch(s, true); /* a dead letter is its own transaction */
    if ((st = sl_sink_begin(s->sink)) == SL_OK &&
        (st = sl_sink_dead(s->sink, chunk, stage, object, why, natsMsg_GetData(m),
                           (size_t)natsMsg_GetDataLength(m))) == SL_OK)
        st = sl_sink_commit(s->sink);
    if (st != SL_OK) {
        sl_sink_rollback(s->sink);
        s->failed_commits++;
    }
    s->sink_ok = st == SL_OK;
    sl_metric_set(s->m_ready, s->sink_ok);
    if (st == SL_OK)
        sl_metric_inc(s->m_stored);
    pthread_mutex_unlock(&s->mu);
    if (st != SL_OK) {
        sl_metric_inc(s->m_failures);
        /* No ack: the sender keeps the dead letter and sends it again. */
        sl_error("dead letter not saved", "chunk=%" PRId64 " error=%s", chunk, sl_log_q(sl_errmsg()));
        goto out;
    }
    sl_info("dead letter saved", "chunk=%" PRId64 " stage=%s object=%" PRId64 " reason=%s", chunk, stage, object,
            sl_log_q(why));
    /* The ack names what it acknowledges, so a sender cannot take a late
     * ack of an earlier dead letter for this one. */
    const char *reply = natsMsg_GetReply(m);
    if (reply && reply[0]) {
        natsMsg *ack = sl_msg_new(reply, NULL, NULL, 0);
        sl_msg_set_int(ack, SL_H_CHUNK, chunk);
        sl_msg_set_int(ack, SL_H_OBJECT, object);
        sl_bus_publish(s->bus, ack);
        sl_msg_free(ack);
    }
out:
    sl_msg_free(m);
}

static int ready(void *arg, sl_buf *why)
{
    saver *s = arg;
    pthread_mutex_lock(&s->mu);
    bool ok = s->sink_ok;
    pthread_mutex_unlock(&s->mu);
    if (!ok) {
        char shown[512];
        sl_url_redact(s->cfg->sink, shown, sizeof shown);
        sl_buf_printf(why, "the last transaction on %s failed", shown);
    }
    return ok;
}

static void register_metrics(saver *s)
{
    sl_metrics *m = s->tel.metrics;
    s->m_chunks = sl_metrics_counter(m, "sluice_chunks_saved_total", "Chunks committed, duplicates included.", "");
    s->m_objects = sl_metrics_counter(m, "sluice_objects_written_total", "Objects upserted, duplicates included.", "");
    s->m_dead = sl_metrics_counter(m, "sluice_objects_dead_lettered_total", "Objects dead-lettered.", "");
    s->m_stored = sl_metrics_counter(m, "sluice_dead_letters_stored_total", "Dead letters committed.", "");
    s->m_failures = sl_metrics_counter(m, "sluice_save_failures_total",
                                       "Transactions that failed and were rolled back.", "");
    s->m_duration = sl_metrics_histogram(m, "sluice_save_duration_seconds",
                                         "One transaction of chunks, begin to commit.", "",
                                         sl_metrics_duration_bounds, sl_metrics_duration_nbounds);
    s->m_commits = sl_metrics_counter(m, "sluice_sink_commits_total",
                                      "Transactions of chunks committed (group commit: one may hold several).", "");
    s->m_ready = sl_metrics_gauge(m, "sluice_sink_ready", "1 when the last transaction on the sink committed.", "");
    s->m_settle = sl_metrics_histogram(m, "sluice_sink_settle_seconds",
                                       "Deferred work between chunk transactions (SQLite: the transaction that"
                                       " begins a merge, or one of its slices; at the stop, all that is left);"
                                       " the saver takes no chunk meanwhile.",
                                       "", sl_metrics_duration_bounds, sl_metrics_duration_nbounds);
    s->bad_header = sl_telemetry_bad(&s->tel, "bad_header");
    s->bad_body = sl_telemetry_bad(&s->tel, "bad_body");
}

int sl_saver_main(const sl_config *cfg)
{
    saver s = {.cfg = cfg};
    int rc = 1;
    pthread_mutex_init(&s.mu, NULL);
    sl_stop_install();
    sl_sink_opts so = {.uri = cfg->sink, .table = cfg->table};
    sl_status st = sl_sink_open(&s.sink, &so);
    if (st != SL_OK) {
        fprintf(stderr, "sluice saver: %s\n", sl_errmsg());
        rc = st == SL_EINVAL ? 2 : 1;
        goto cleanup;
    }
    s.sink_ok = true;
    s.settle_more = true; /* an earlier run may have left some */
    if ((st = sl_telemetry_start(&s.tel, cfg, "saver", ready, &s)) != SL_OK) {
        fprintf(stderr, "sluice saver: %s\n", sl_errmsg());
        rc = st == SL_EINVAL ? 2 : 1;
        goto cleanup;
    }
    register_metrics(&s);
    sl_metric_set(s.m_ready, 1);
    if (sl_bus_open(&s.bus, cfg, "sluice-saver") != SL_OK) {
        fprintf(stderr, "sluice saver: %s\n", sl_errmsg());
        goto cleanup;
    }
    sl_telemetry_bus(&s.tel, s.bus);
    if (sl_bus_subscribe(s.bus, SL_SUBJ_MAPPED, SL_SAVER_QUEUE, on_mapped, &s) != SL_OK ||
        sl_bus_subscribe(s.bus, SL_SUBJ_DEAD, SL_SAVER_QUEUE, on_dead, &s) != SL_OK) {
        sl_error("cannot subscribe", "error=%s", sl_log_q(sl_errmsg()));
        goto cleanup;
    }
    natsConnection_Flush(sl_bus_nc(s.bus));
    char shown[512];
    sl_url_redact(cfg->sink, shown, sizeof shown);
    sl_info("saver started", "job=%s sink=%s", cfg->job, sl_log_q(shown));
    /* While the sink fails, take no chunks: mappers then find no saver
     * (or another one) and hold theirs, extending the leases, instead of
     * each chunk sent here failing its lease. Chunks are taken again after
     * a back-off, and the next commit tells whether the sink is back. */
    int64_t seen_failures = 0, backoff = OUTAGE_BACKOFF_MS, resume_at = 0;
    int64_t next_outage_check = 0;
    while (!sl_stop_sleep(COMMIT_TICK_MS)) {
        pthread_mutex_lock(&s.mu);
        if (s.nbatch && (sl_now_ms() >= s.batch_due_ms || sl_now_ms() - s.last_put_ms >= IDLE_COMMIT_MS))
            end_batch(&s, true);
        /* Idle: no chunk came for a while though the saver was free to
         * take them (a long commit or merge slice is not a pause: after
         * one, every idle settle began a merge of whatever few rows were
         * staged, each of which walks the whole index). */
        else if (!s.nbatch && s.settle_more &&
                 sl_now_ms() - (s.last_put_ms > s.last_busy_ms ? s.last_put_ms : s.last_busy_ms) >= IDLE_SETTLE_MS)
            settle(&s, SL_SETTLE_IDLE);
        pthread_mutex_unlock(&s.mu);
        if (sl_now_ms() < next_outage_check)
            continue;
        next_outage_check = sl_now_ms() + OUTAGE_TICK_MS;
        pthread_mutex_lock(&s.mu);
        int64_t failures = s.failed_commits;
        bool ok = s.sink_ok;
        pthread_mutex_unlock(&s.mu);
        bool taking = sl_bus_subscribed(s.bus, SL_SUBJ_MAPPED);
        if (taking && failures > seen_failures) {
            sl_bus_unsubscribe(s.bus, SL_SUBJ_MAPPED);
            seen_failures = failures;
            resume_at = sl_now_ms() + backoff;
            sl_warn("the sink fails; taking no chunks for now", "retry_in_ms=%" PRId64, backoff);
            backoff = backoff * 2 > OUTAGE_MAX_BACKOFF_MS ? OUTAGE_MAX_BACKOFF_MS : backoff * 2;
        } else if (!taking && sl_now_ms() >= resume_at) {
            /* Failures counted since the last look (a transaction that was
             * open when it stopped taking chunks) are not news: only a
             * failure of a chunk taken from now on stops it again. Counted,
             * they stopped a saver whose sink had recovered for another,
             * doubled back-off. */
            seen_failures = failures;
            if (sl_bus_subscribe(s.bus, SL_SUBJ_MAPPED, SL_SAVER_QUEUE, on_mapped, &s) == SL_OK)
                sl_info("taking chunks again", NULL);
            else
                resume_at = sl_now_ms() + backoff;
        }
        if (ok && taking)
            backoff = OUTAGE_BACKOFF_MS;
    }
    rc = 0;
cleanup:
    sl_telemetry_stop(&s.tel);
    /* Draining lets a chunk in progress join the transaction; nothing more
     * will: commit it (or hand it back) while the connection can still
     * confirm it. */
    sl_bus_drain(s.bus, 5000);
    pthread_mutex_lock(&s.mu);
    end_batch(&s, true);
    /* Leaves the sink as readers expect it after a job: everything in the
     * objects table. Killed meanwhile, or failing, the next saver finishes
     * it; a failure is this saver's exit code, so that `run` does not call
     * the job done while objects wait where readers do not look. */
    if (s.sink && !settle(&s, SL_SETTLE_ALL) && rc == 0) {
        sl_error("objects left staged; the next saver on this sink moves them to the objects table", NULL);
        rc = 1;
    }
    pthread_mutex_unlock(&s.mu);
    sl_bus_close(s.bus, 5000);
    free(s.batch);
    sl_telemetry_free(&s.tel);
    if (rc == 0)
        sl_info("saver stopped", "chunks=%" PRId64 " objects=%" PRId64 " dead=%" PRId64 " bad_messages=%" PRId64
                " commits=%" PRId64 " failed_commits=%" PRId64,
                s.chunks, s.objects, s.dead, s.bad_messages, s.commits, s.failed_commits);
    sl_sink_destroy(s.sink);
    pthread_mutex_destroy(&s.mu);
    return rc;
}
