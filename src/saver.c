/* saver.c - writes each mapped chunk in one transaction, then confirms it.
 *
 * The order is the guarantee: commit first, then P.saved. A saver killed
 * between the two leaves a committed chunk unconfirmed; the lease expires,
 * the chunk is mapped and saved again, and the upsert by id makes that a
 * no-op. A failed commit confirms nothing. */
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
#define OUTAGE_BACKOFF_MS 500
#define OUTAGE_MAX_BACKOFF_MS 10000

typedef struct {
    const sl_config *cfg;
    sl_bus *bus;
    sl_sink *sink;
    pthread_mutex_t mu; /* the sink is used by one thread at a time */
    int64_t chunks, objects, dead, bad_messages, failed_commits;
    bool sink_ok;       /* the last transaction committed */
    sl_telemetry tel;
    sl_metric *m_chunks, *m_objects, *m_dead, *m_stored, *m_failures, *m_duration, *m_ready;
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

/* Writes one chunk; returns objects saved, or -1 if nothing was committed. */
static int64_t save_chunk(saver *s, int64_t chunk, int64_t attempt, json_t *arr, int64_t *dead)
{
    int64_t saved;
    if (sl_chunk_save(s->sink, s->cfg->id, chunk, attempt, arr, &saved, dead) != SL_OK) {
        sl_error("chunk not saved", "chunk=%" PRId64 " error=%s", chunk, sl_log_q(sl_errmsg()));
        return -1;
    }
    return saved;
}

static void on_mapped(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    saver *s = closure;
    int64_t chunk, attempt, count, dead = 0;
    const char *token = sl_msg_str(m, SL_H_LEASE);
    sl_status st;
    json_t *arr = NULL;
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
    json_error_t err;
    arr = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), JSON_REJECT_DUPLICATES, &err);
    if (!json_is_array(arr)) {
        char why[300];
        snprintf(why, sizeof why, "%s", arr ? "body is not a JSON array" : err.text);
        bad(s, m, "bad_body", why);
        goto out;
    }
    pthread_mutex_lock(&s->mu);
    int64_t saved_dead = 0;
    double t0 = sl_now_s();
    int64_t saved = save_chunk(s, chunk, attempt, arr, &saved_dead);
    if (saved >= 0) {
        s->chunks++;
        s->objects += saved;
        s->dead += saved_dead;
        sl_metric_observe(s->m_duration, sl_now_s() - t0);
        sl_metric_inc(s->m_chunks);
        sl_metric_add(s->m_objects, (double)saved);
        sl_metric_add(s->m_dead, (double)saved_dead);
    } else {
        s->failed_commits++;
        sl_metric_inc(s->m_failures);
    }
    s->sink_ok = saved >= 0;
    sl_metric_set(s->m_ready, s->sink_ok);
    pthread_mutex_unlock(&s->mu);
    if (saved < 0) {
        /* Not the chunk's fault: hand it back (a release without a reason
         * is not a failure), so a sink outage does not use up the chunk's
         * attempts. It is leased again at once; meanwhile this saver stops
         * taking chunks (see the main loop). */
        natsMsg *r = sl_msg_new(sl_bus_subject(s->bus, SL_SUBJ_RELEASE), NULL, NULL, 0);
        sl_msg_set_int(r, SL_H_CHUNK, chunk);
        sl_msg_set(r, SL_H_LEASE, token);
        sl_bus_publish(s->bus, r);
        natsMsg_Destroy(r);
        goto out;
    }
    natsMsg *c = sl_msg_new(sl_bus_subject(s->bus, SL_SUBJ_SAVED), NULL, NULL, 0);
    sl_msg_set_int(c, SL_H_CHUNK, chunk);
    sl_msg_set(c, SL_H_LEASE, token);
    sl_msg_set_int(c, SL_H_COUNT, saved);
    sl_msg_set_int(c, SL_H_DEAD, dead + saved_dead);
    if (sl_bus_publish(s->bus, c) != SL_OK)
        sl_warn("confirmation not sent", "chunk=%" PRId64 " error=%s", chunk, sl_log_q(sl_errmsg()));
    natsMsg_Destroy(c);
    sl_debug("chunk saved", "chunk=%" PRId64 " count=%" PRId64, chunk, saved);
out:
    json_decref(arr);
    natsMsg_Destroy(m);
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
        natsMsg_Destroy(ack);
    }
out:
    natsMsg_Destroy(m);
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
    s->m_chunks = sl_metrics_counter(m, "sluice_chunks_saved_total",
                                     "Chunk transactions committed, duplicates included.", "");
    s->m_objects = sl_metrics_counter(m, "sluice_objects_written_total", "Objects upserted, duplicates included.", "");
    s->m_dead = sl_metrics_counter(m, "sluice_objects_dead_lettered_total", "Objects dead-lettered.", "");
    s->m_stored = sl_metrics_counter(m, "sluice_dead_letters_stored_total", "Dead letters committed.", "");
    s->m_failures = sl_metrics_counter(m, "sluice_save_failures_total",
                                       "Transactions that failed and were rolled back.", "");
    s->m_duration = sl_metrics_histogram(m, "sluice_save_duration_seconds", "One chunk's transaction.", "",
                                         sl_metrics_duration_bounds, sl_metrics_duration_nbounds);
    s->m_ready = sl_metrics_gauge(m, "sluice_sink_ready", "1 when the last transaction on the sink committed.", "");
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
    while (!sl_stop_sleep(OUTAGE_TICK_MS)) {
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
    /* Draining lets a transaction in progress finish and be confirmed. */
    sl_bus_close(s.bus, 5000);
    sl_telemetry_free(&s.tel);
    if (rc == 0)
        sl_info("saver stopped", "chunks=%" PRId64 " objects=%" PRId64 " dead=%" PRId64 " bad_messages=%" PRId64
                " failed_commits=%" PRId64, s.chunks, s.objects, s.dead, s.bad_messages, s.failed_commits);
    sl_sink_destroy(s.sink);
    pthread_mutex_destroy(&s.mu);
    return rc;
}
