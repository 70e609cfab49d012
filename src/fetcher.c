/* fetcher.c - the job's one fetcher: leases chunks, keeps the ledger.
 *
 * nats.c delivers each subscription on its own thread; every handler takes
 * the fetcher's lock around the ledger and does its I/O (producing a chunk,
 * replying) outside it. The main thread ticks: it expires leases, writes the
 * ledger in batches, and notices when the job is complete. */
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "bus.h"
#include "clock.h"
#include "ledger.h"
#include "log.h"
#include "roles.h"
#include "source.h"
#include "url.h"
#include "stop.h"
#include "telemetry.h"

#define TICK_MS 20
#define FLUSH_MS 100
#define WAIT_RETRY_MS 100
#define DONE_RETRY_MS 1000
#define MAX_DIED 256
#define REPORT_BATCH 16
#define REPORT_TIMEOUT_MS 1000
#define REPORT_RETRY_MS 1000

typedef enum {
    BAD_NO_REPLY,      /* a request without a reply subject */
    BAD_HEADER,        /* a header missing, malformed or out of range */
    BAD_UNKNOWN_LEASE, /* a token the fetcher never issued for that chunk */
    BAD_STALE_LEASE,   /* progress/release for a lease that is not current:
                          expired, handed back, or never issued */
    BAD_COUNT
} bad_reason;

static const char *bad_names[BAD_COUNT] = {"no_reply", "bad_header", "unknown_lease", "stale_lease"};

typedef struct {
    const sl_config *cfg;
    sl_bus *bus;
    sl_source *src;
    sl_ledger *ledger;
    pthread_mutex_t mu;
    int64_t started_ms;
    int64_t saved_at_start; /* objects already saved when this process began */
    sl_telemetry tel;
    sl_metric *bad[BAD_COUNT];
    sl_metric *leases_issued, *leases_expired, *leases_extended, *leases_released;
    sl_metric *chunks[4], *job_chunks, *job_objects, *objects_saved, *objects_fetched, *redeliveries;
    sl_metric *unreported, *requests_chunk, *requests_wait, *requests_done, *source_retries;
    /* Counted from the source's threads, from its open on: before the
     * metrics exist. */
    atomic_int_fast64_t retries;
    bool ledger_ok;     /* the last ledger write worked */
    bool complete;
    bool first_saved;   /* a chunk was confirmed since this process began */
    pthread_t reporter;  /* sends dead letters until a saver takes them */
    bool reporter_started;
    atomic_bool reporter_stop;
    /* on_work's own (it runs on one thread): the chunk it answers with is
     * built in work_body. After each answer the chunk the next lease will
     * take is built in ready, so a mapper's request does not wait for its
     * text (PROTOCOL.md §4.1); ready_chunk is -1 when ready holds none. */
    sl_buf work_body, ready;
    int64_t ready_chunk;
    sl_source_meta ready_meta;
    bool ready_failed; /* the last preparation failed: none until a chunk is sent */
    pthread_mutex_t reporter_mu; /* with reporter_cond: wakes the reporter */
    pthread_cond_t reporter_cond; /* at once when it is told to stop */
} fetcher;

static void count_bad(fetcher *f, bad_reason why, natsMsg *m, const char *detail)
{
    sl_metric_inc(f->bad[why]);
    sl_warn("bad message", "subject=%s reason=%s detail=%s", natsMsg_GetSubject(m), bad_names[why],
            sl_log_q(detail));
}

/* Reads Sluice-Chunk (inside the job) and Sluice-Lease (token-shaped). */
static bool chunk_and_token(fetcher *f, natsMsg *m, int64_t *chunk, const char **token)
{
    int64_t n = sl_source_chunks(f->src);
    if (sl_msg_int(m, SL_H_CHUNK, 0, n - 1, chunk) != SL_OK) {
        count_bad(f, BAD_HEADER, m, sl_errmsg());
        return false;
    }
    *token = sl_msg_str(m, SL_H_LEASE);
    if (!sl_proto_token_ok(*token)) {
        count_bad(f, BAD_HEADER, m, "header Sluice-Lease is not a lease token");
        return false;
    }
    return true;
}

static void reply_status(fetcher *f, const char *reply, const char *status, int64_t retry_ms)
{
    natsMsg *r = sl_msg_new(reply, NULL, NULL, 0);
    sl_msg_set(r, SL_H_STATUS, status);
    sl_msg_set_int(r, SL_H_RETRY_MS, retry_ms);
    if (sl_bus_publish(f->bus, r) != SL_OK)
        sl_warn("reply failed", "error=%s", sl_log_q(sl_errmsg()));
    sl_msg_free(r);
}

static void log_dead(int64_t chunk, const char *reason)
{
    sl_error("chunk dead", "chunk=%" PRId64 " reason=%s", chunk, sl_log_q(reason));
}

/* Says how a chunk body is framed, when it is not a JSON array. */
static void set_framing(natsMsg *m, const sl_source_meta *meta)
{
    if (!meta->unit)
        return;
    sl_msg_set(m, SL_H_UNIT, meta->unit);
    sl_msg_set_int(m, SL_H_FIRST, meta->first);
}

/* Sends a dead chunk - why it died and its bytes - to the savers and waits
 * for one to say it is committed; only then is it marked reported. */
static sl_status report_dead(fetcher *f, int64_t chunk)
{
    char why[SL_REASON_MAX + 1];
    pthread_mutex_lock(&f->mu);
    sl_proto_reason(why, sizeof why, sl_ledger_reason(f->ledger, chunk));
    pthread_mutex_unlock(&f->mu);
    sl_buf body = SL_BUF_INIT;
    sl_source_meta meta = {NULL, 0};
    if (sl_source_chunk(f->src, chunk, &body, &meta) != SL_OK)
        sl_buf_reset(&body), meta.unit = NULL;
    /* A chunk too big for the server (the likely reason it died) goes
     * without its bytes rather than never. */
    int64_t room = sl_bus_max_payload(f->bus) - 2 * SL_REASON_MAX;
    if ((int64_t)body.len > room) {
        sl_buf note = SL_BUF_INIT;
        sl_buf_printf(&note, "chunk bytes omitted (%zu > max_payload); %s", body.len, why);
        sl_proto_reason(why, sizeof why, note.data);
        sl_buf_free(&note);
        sl_buf_reset(&body), meta.unit = NULL;
    }
    natsMsg *m = sl_msg_new(sl_bus_subject(f->bus, SL_SUBJ_DEAD), NULL, body.data, body.len);
    set_framing(m, &meta);
    sl_msg_set_int(m, SL_H_CHUNK, chunk);
    sl_msg_set_int(m, SL_H_OBJECT, -1);
    sl_msg_set(m, SL_H_REASON, why);
    natsMsg *ack = NULL;
    sl_status st = sl_bus_request(f->bus, m, REPORT_TIMEOUT_MS, &ack);
    sl_msg_free(m);
    sl_msg_free(ack);
    sl_buf_free(&body);
    if (st == SL_OK) {
        pthread_mutex_lock(&f->mu);
        sl_ledger_set_reported(f->ledger, chunk);
        pthread_mutex_unlock(&f->mu);
        sl_info("dead letter reported", "chunk=%" PRId64, chunk);
    }
    return st;
}

/* Waits ms, or less if the reporter is told to stop meanwhile (the
 * fetcher's exit would otherwise wait out the pause). */
static void pause_reporter(fetcher *f, int64_t ms)
{
    struct timespec until = sl_deadline(CLOCK_REALTIME, ms);
    pthread_mutex_lock(&f->reporter_mu);
    while (!atomic_load(&f->reporter_stop) &&
           pthread_cond_timedwait(&f->reporter_cond, &f->reporter_mu, &until) == 0)
        ;
    pthread_mutex_unlock(&f->reporter_mu);
}

/* The reporter thread: dead letters go to the savers until one
 * acknowledges each, without holding up the main loop's expiries and
 * ledger writes while no saver answers. */
static void *reporter_main(void *arg)
{
    fetcher *f = arg;
    bool failing = false;
    while (!atomic_load(&f->reporter_stop)) {
        int64_t unrep[REPORT_BATCH], n;
        pthread_mutex_lock(&f->mu);
        n = sl_ledger_unreported(f->ledger, unrep, REPORT_BATCH);
        pthread_mutex_unlock(&f->mu);
        int64_t wait = n ? 0 : TICK_MS;
        for (int64_t k = 0; k < n && k < REPORT_BATCH && !atomic_load(&f->reporter_stop); k++) {
            if (report_dead(f, unrep[k]) == SL_OK) {
                failing = false;
                continue;
            }
            if (!failing)
                sl_warn("dead letter not reported yet; retrying", "chunk=%" PRId64 " error=%s", unrep[k],
                        sl_log_q(sl_errmsg()));
            failing = true;
            wait = REPORT_RETRY_MS;
            break;
        }
        pause_reporter(f, wait);
    }
    return NULL;
}

/* Builds in f->ready the chunk the next lease will take, unless it is
 * there. A failure is left to the request, which reads the source again
 * and reports it; no preparation is tried again until a chunk is sent, so
 * a failing source is not asked twice per request. */
static void prepare_next(fetcher *f)
{
    pthread_mutex_lock(&f->mu);
    int64_t next = sl_ledger_next(f->ledger);
    pthread_mutex_unlock(&f->mu);
    if (next < 0 || next == f->ready_chunk || f->ready_failed)
        return;
    sl_buf_reset(&f->ready);
    f->ready_meta = (sl_source_meta){NULL, 0};
    bool ok = sl_source_chunk(f->src, next, &f->ready, &f->ready_meta) == SL_OK;
    f->ready_chunk = ok ? next : -1;
    f->ready_failed = !ok;
}

static void on_work(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    fetcher *f = closure;
    const char *reply = natsMsg_GetReply(m);
    if (!reply || !reply[0]) {
        count_bad(f, BAD_NO_REPLY, m, "work request without a reply subject");
        goto out;
    }
    const char *worker = sl_msg_str(m, SL_H_WORKER);
    if (worker && (strlen(worker) > SL_HDR_MAX || strpbrk(worker, "\"\\")))
        count_bad(f, BAD_HEADER, m, "header Sluice-Worker is malformed");

    int64_t chunk = 0, attempt = 0, failures = 0;
    char token[33];
    pthread_mutex_lock(&f->mu);
    bool complete = sl_ledger_complete(f->ledger);
    bool got = !complete && sl_ledger_lease(f->ledger, sl_now_ms(), f->cfg->lease_ms, &chunk, &attempt, token);
    if (got)
        failures = sl_ledger_failures(f->ledger, chunk);
    pthread_mutex_unlock(&f->mu);
    if (!got) {
        sl_metric_inc(complete ? f->requests_done : f->requests_wait);
        reply_status(f, reply, complete ? SL_STATUS_DONE : SL_STATUS_WAIT,
                     complete ? DONE_RETRY_MS : WAIT_RETRY_MS);
        goto out;
    }
    sl_metric_inc(f->leases_issued);

    sl_buf *body = &f->work_body;
    sl_source_meta meta;
    sl_status st = SL_OK;
    if (chunk == f->ready_chunk) {
        sl_buf built = f->ready;
        f->ready = *body, *body = built;
        meta = f->ready_meta;
        f->ready_chunk = -1;
    } else {
        sl_buf_reset(body);
        st = sl_source_chunk(f->src, chunk, body, &meta);
    }
    if (st == SL_OK) {
        natsMsg *r = sl_msg_new(reply, NULL, body->data, body->len);
        sl_msg_set(r, SL_H_STATUS, SL_STATUS_CHUNK);
        set_framing(r, &meta);
        sl_msg_set_int(r, SL_H_CHUNK, chunk);
        sl_msg_set_int(r, SL_H_ATTEMPT, attempt);
        sl_msg_set(r, SL_H_LEASE, token);
        sl_msg_set_int(r, SL_H_LEASE_MS, f->cfg->lease_ms);
        if (failures > 0)
            sl_msg_set_int(r, SL_H_FAILURES, failures);
        st = sl_bus_publish(f->bus, r);
        sl_msg_free(r);
    }
    if (st != SL_OK) {
        /* The mapper never got it: count a failure, so a chunk that can
         * never be sent ends dead instead of looping forever. */
        bool died = false;
        sl_buf why = SL_BUF_INIT;
        sl_buf_printf(&why, "could not send the chunk: %s", sl_errmsg());
        char *dead_why = NULL;
        pthread_mutex_lock(&f->mu);
        sl_ledger_release(f->ledger, chunk, token, why.data, f->cfg->max_attempts, &died);
        if (died)
            dead_why = sl_xstrdup(sl_ledger_reason(f->ledger, chunk));
        pthread_mutex_unlock(&f->mu);
        sl_warn("chunk not sent", "chunk=%" PRId64 " error=%s", chunk, sl_log_q(why.data));
        if (dead_why)
            log_dead(chunk, dead_why);
        free(dead_why);
        sl_buf_free(&why);
        sl_metric_inc(f->requests_wait);
        reply_status(f, reply, SL_STATUS_WAIT, WAIT_RETRY_MS);
        goto out;
    }
    sl_metric_inc(f->requests_chunk);
    sl_metric_add(f->objects_fetched, (double)sl_source_chunk_len(f->src, chunk));
    sl_debug("leased", "chunk=%" PRId64 " attempt=%" PRId64 " worker=%s", chunk, attempt,
             sl_log_q(worker ? worker : ""));
    f->ready_failed = false;
    prepare_next(f);
out:
    sl_msg_free(m);
}

static void on_progress(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    fetcher *f = closure;
    int64_t chunk;
    const char *token;
    if (chunk_and_token(f, m, &chunk, &token)) {
        pthread_mutex_lock(&f->mu);
        sl_status st = sl_ledger_extend(f->ledger, chunk, token, sl_now_ms(), f->cfg->lease_ms);
        if (st == SL_OK)
            sl_metric_inc(f->leases_extended);
        pthread_mutex_unlock(&f->mu);
        if (st != SL_OK)
            count_bad(f, BAD_STALE_LEASE, m, sl_errmsg());
    }
    sl_msg_free(m);
}

static void on_release(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    fetcher *f = closure;
    int64_t chunk;
    const char *token;
    if (chunk_and_token(f, m, &chunk, &token)) {
        const char *raw_reason = sl_msg_str(m, SL_H_REASON);
        char reason_buf[SL_REASON_MAX + 1];
        const char *reason = NULL;
        if (raw_reason) {
            sl_proto_reason(reason_buf, sizeof reason_buf, raw_reason[0] ? raw_reason : "(no reason given)");
            reason = reason_buf;
        }
        bool died = false;
        pthread_mutex_lock(&f->mu);
        sl_status st = sl_ledger_release(f->ledger, chunk, token, reason, f->cfg->max_attempts, &died);
        if (st == SL_OK)
            sl_metric_inc(f->leases_released);
        const char *why = died ? sl_ledger_reason(f->ledger, chunk) : NULL;
        char *why_copy = why ? sl_xstrdup(why) : NULL;
        pthread_mutex_unlock(&f->mu);
        if (st != SL_OK)
            count_bad(f, BAD_STALE_LEASE, m, sl_errmsg());
        else if (reason)
            sl_warn("chunk failed", "chunk=%" PRId64 " reason=%s", chunk, sl_log_q(reason));
        else
            sl_info("chunk handed back", "chunk=%" PRId64, chunk);
        if (why_copy)
            log_dead(chunk, why_copy);
        free(why_copy);
    }
    sl_msg_free(m);
}

/* One chunk confirmed by a saver (m carries it, alone or in a batch):
 * DONE unless it names a chunk outside the job or a token never issued,
 * which is counted and ignored. */
static void saved_one(fetcher *f, natsMsg *m, const sl_saved_entry *e)
{
    if (e->chunk >= sl_source_chunks(f->src)) {
        count_bad(f, BAD_HEADER, m, "Sluice-Chunk out of range");
        return;
    }
    bool first = false;
    pthread_mutex_lock(&f->mu);
    sl_status st = sl_ledger_saved(f->ledger, e->chunk, e->token, e->count, e->dead, &first);
    bool first_here = st == SL_OK && !f->first_saved;
    f->first_saved = f->first_saved || st == SL_OK;
    pthread_mutex_unlock(&f->mu);
    /* How long the pipeline took to fill: the benchmark reads this line. */
    if (first_here)
        sl_info("first chunk saved", "chunk=%" PRId64 " after_ms=%" PRId64, e->chunk, sl_now_ms() - f->started_ms);
    if (st != SL_OK)
        count_bad(f, BAD_UNKNOWN_LEASE, m, sl_errmsg());
    else
        sl_debug(first ? "chunk done" : "chunk saved again", "chunk=%" PRId64 " count=%" PRId64, e->chunk, e->count);
}

/* P.saved: one chunk in headers, or the batch form (Sluice-Chunks and one
 * line per chunk in the body) with which a saver confirms a whole commit. */
static void on_saved(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    fetcher *f = closure;
    sl_saved_entry e = {0};
    int64_t lines;
    bool single = sl_msg_str(m, SL_H_CHUNK) != NULL;
    sl_status st = sl_msg_int(m, SL_H_CHUNKS, 1, SL_SAVED_BATCH_MAX, &lines);
    if (st == SL_OK && !single) {
        const char *p = natsMsg_GetData(m), *end = p + natsMsg_GetDataLength(m);
        int64_t k = 0;
        for (; k < lines && p < end; k++) {
            if (sl_proto_saved_next(&p, end, &e) != SL_OK)
                count_bad(f, BAD_HEADER, m, sl_errmsg());
            else
                saved_one(f, m, &e);
        }
        if (k < lines || p < end)
            count_bad(f, BAD_HEADER, m, "the body does not hold Sluice-Chunks lines");
        goto out;
    }
    if (st != SL_ENOTFOUND && !single) {
        count_bad(f, BAD_HEADER, m, sl_errmsg());
        goto out;
    }
    const char *token;
    if (!chunk_and_token(f, m, &e.chunk, &token))
        goto out;
    snprintf(e.token, sizeof e.token, "%s", token);
    if (sl_msg_int(m, SL_H_COUNT, 0, INT32_MAX, &e.count) != SL_OK) {
        count_bad(f, BAD_HEADER, m, sl_errmsg());
        goto out;
    }
    st = sl_msg_int(m, SL_H_DEAD, 0, INT32_MAX, &e.dead);
    if (st != SL_OK && st != SL_ENOTFOUND) {
        count_bad(f, BAD_HEADER, m, sl_errmsg());
        goto out;
    }
    saved_one(f, m, &e);
out:
    sl_msg_free(m);
}

/* The job's state as JSON (P.status and P.done). Caller frees. */
static char *status_json(fetcher *f)
{
    sl_ledger_counts c;
    pthread_mutex_lock(&f->mu);
    sl_ledger_counts_get(f->ledger, &c);
    json_t *bad = json_object();
    for (int i = 0; i < BAD_COUNT; i++)
        json_object_set_new(bad, bad_names[i], json_integer((json_int_t)sl_metric_get(f->bad[i])));
    json_t *dead = json_array();
    for (int64_t i = 0; i < c.chunks && json_array_size(dead) < 100 && c.dead > 0; i++) {
        if (sl_ledger_state(f->ledger, i) != SL_CHUNK_DEAD)
            continue;
        /* Reasons are kept as valid UTF-8 (sl_proto_reason), but a ledger
         * written elsewhere may hold anything: never drop a dead chunk. */
        const char *why = sl_ledger_reason(f->ledger, i);
        json_t *e = json_pack("{sIss}", "chunk", (json_int_t)i, "reason", why ? why : "");
        json_array_append_new(dead, e ? e : json_pack("{sIss}", "chunk", (json_int_t)i, "reason", "(unreadable)"));
    }
    double elapsed = (double)(sl_now_ms() - f->started_ms) / 1000.0;
    double rate = elapsed > 0 ? (double)(c.objects_saved - f->saved_at_start) / elapsed : 0;
    json_t *j = json_pack(
        "{ss ss sb s{sI sI sI sI sI} s{sI sI sI sI} sI s{sI sI sI sI} so so sf sf sI sI}",
        "job", f->cfg->job, "source", sl_source_uri(f->src), "complete",
        sl_ledger_complete(f->ledger) && sl_ledger_unreported(f->ledger, NULL, 0) == 0,
        "chunks", "total", (json_int_t)c.chunks, "pending", (json_int_t)c.pending, "leased",
        (json_int_t)c.leased, "done", (json_int_t)c.done, "dead", (json_int_t)c.dead,
        "objects", "total", (json_int_t)sl_source_objects(f->src), "saved", (json_int_t)c.objects_saved,
        "dead", (json_int_t)c.objects_dead, "saved_before", (json_int_t)f->saved_at_start,
        "redeliveries", (json_int_t)c.redeliveries,
        "leases", "expired", (json_int_t)sl_metric_get(f->leases_expired), "extended",
        (json_int_t)sl_metric_get(f->leases_extended), "released", (json_int_t)sl_metric_get(f->leases_released),
        "lease_ms", (json_int_t)f->cfg->lease_ms,
        "bad_messages", bad, "dead_chunks", dead, "elapsed_s", elapsed, "objects_per_s", rate,
        "reconnects", (json_int_t)sl_bus_reconnects(f->bus), "pid", (json_int_t)getpid());
    pthread_mutex_unlock(&f->mu);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static void on_status(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    fetcher *f = closure;
    const char *reply = natsMsg_GetReply(m);
    if (!reply || !reply[0]) {
        count_bad(f, BAD_NO_REPLY, m, "status request without a reply subject");
    } else {
        char *s = status_json(f);
        natsMsg *r = sl_msg_new(reply, NULL, s, strlen(s));
        sl_bus_publish(f->bus, r);
        sl_msg_free(r);
        free(s);
    }
    sl_msg_free(m);
}

static void log_progress(fetcher *f, const char *msg)
{
    sl_ledger_counts c;
    pthread_mutex_lock(&f->mu);
    sl_ledger_counts_get(f->ledger, &c);
    pthread_mutex_unlock(&f->mu);
    double elapsed = (double)(sl_now_ms() - f->started_ms) / 1000.0;
    sl_info(msg, "done=%" PRId64 " dead=%" PRId64 " leased=%" PRId64 " pending=%" PRId64
                 " chunks=%" PRId64 " objects_saved=%" PRId64 " redeliveries=%" PRId64 " elapsed_s=%.3f"
                 " source_retries=%" PRId64,
            c.done, c.dead, c.leased, c.pending, c.chunks, c.objects_saved, c.redeliveries, elapsed,
            (int64_t)atomic_load(&f->retries));
}

/* One tick of the main loop: expire, persist, notice completion. */
static sl_status tick(fetcher *f, int64_t *last_flush)
{
    int64_t died[MAX_DIED], ndied = 0;
    char *reasons[MAX_DIED];
    sl_status st = SL_OK;
    int64_t now = sl_now_ms();
    pthread_mutex_lock(&f->mu);
    int64_t expired = sl_ledger_expire(f->ledger, now, f->cfg->max_attempts, died, MAX_DIED, &ndied);
    sl_metric_add(f->leases_expired, (double)expired);
    for (int64_t k = 0; k < ndied; k++)
        reasons[k] = sl_xstrdup(sl_ledger_reason(f->ledger, died[k]));
    bool complete = sl_ledger_complete(f->ledger);
    if (sl_ledger_dirty(f->ledger) && (complete || now - *last_flush >= FLUSH_MS)) {
        st = sl_ledger_flush(f->ledger);
        *last_flush = now;
    }
    pthread_mutex_unlock(&f->mu);
    if (expired)
        sl_info("leases expired", "count=%" PRId64, expired);
    for (int64_t k = 0; k < ndied; k++) {
        log_dead(died[k], reasons[k]);
        free(reasons[k]);
    }
    /* The job is not over while a dead letter is missing from the sink. */
    pthread_mutex_lock(&f->mu);
    complete = complete && sl_ledger_unreported(f->ledger, NULL, 0) == 0;
    pthread_mutex_unlock(&f->mu);
    if (complete && !f->complete) {
        f->complete = true;
        char *s = status_json(f);
        natsMsg *m = sl_msg_new(sl_bus_subject(f->bus, SL_SUBJ_DONE), NULL, s, strlen(s));
        sl_bus_publish(f->bus, m);
        sl_msg_free(m);
        free(s);
        log_progress(f, "job complete");
    }
    return st;
}

static void count_retry(void *arg)
{
    atomic_fetch_add(&((fetcher *)arg)->retries, 1);
}

/* The job's gauges, from the ledger, at each scrape. */
static void collect(void *arg)
{
    fetcher *f = arg;
    sl_ledger_counts c;
    pthread_mutex_lock(&f->mu);
    sl_ledger_counts_get(f->ledger, &c);
    int64_t unrep = sl_ledger_unreported(f->ledger, NULL, 0);
    pthread_mutex_unlock(&f->mu);
    sl_metric_set(f->chunks[0], (double)c.pending);
    sl_metric_set(f->chunks[1], (double)c.leased);
    sl_metric_set(f->chunks[2], (double)c.done);
    sl_metric_set(f->chunks[3], (double)c.dead);
    sl_metric_set(f->objects_saved, (double)c.objects_saved);
    sl_metric_set(f->redeliveries, (double)c.redeliveries);
    sl_metric_set(f->unreported, (double)unrep);
    sl_metric_set(f->source_retries, (double)atomic_load(&f->retries));
}

static int ready(void *arg, sl_buf *why)
{
    fetcher *f = arg;
    pthread_mutex_lock(&f->mu);
    bool ok = f->ledger_ok;
    pthread_mutex_unlock(&f->mu);
    if (!ok)
        sl_buf_printf(why, "the ledger %s cannot be written", f->cfg->ledger);
    return ok;
}

static void register_metrics(fetcher *f)
{
    sl_metrics *m = f->tel.metrics;
    static const char *states[4] = {"state=\"pending\"", "state=\"leased\"", "state=\"done\"", "state=\"dead\""};
    for (int i = 0; i < 4; i++)
        f->chunks[i] = sl_metrics_gauge(m, "sluice_chunks", "Chunks of the job by state.", states[i]);
    f->job_chunks = sl_metrics_gauge(m, "sluice_job_chunks", "Chunks in the job.", "");
    f->job_objects = sl_metrics_gauge(m, "sluice_job_objects", "Objects in the job.", "");
    sl_metric_set(f->job_chunks, (double)sl_source_chunks(f->src));
    sl_metric_set(f->job_objects, (double)sl_source_objects(f->src));
    f->objects_saved = sl_metrics_counter(m, "sluice_objects_saved_total",
                                          "Objects in chunks confirmed saved (the job's count).", "");
    f->objects_fetched = sl_metrics_counter(m, "sluice_objects_fetched_total",
                                            "Objects sent to mappers by this fetcher, resends included.", "");
    f->leases_issued = sl_metrics_counter(m, "sluice_leases_issued_total", "Chunks leased to mappers.", "");
    f->leases_expired = sl_metrics_counter(m, "sluice_leases_expired_total", "Leases that ran out unconfirmed.", "");
    f->leases_extended = sl_metrics_counter(m, "sluice_leases_extended_total", "Lease extensions (P.progress).", "");
    f->leases_released = sl_metrics_counter(m, "sluice_leases_released_total", "Chunks handed back (P.release).", "");
    f->redeliveries = sl_metrics_counter(m, "sluice_redeliveries_total", "Chunks sent again (the job's count).", "");
    f->requests_chunk = sl_metrics_counter(m, "sluice_work_requests_total", "Answers to P.work by status.",
                                           "status=\"chunk\"");
    f->requests_wait = sl_metrics_counter(m, "sluice_work_requests_total", "", "status=\"wait\"");
    f->requests_done = sl_metrics_counter(m, "sluice_work_requests_total", "", "status=\"done\"");
    f->unreported = sl_metrics_gauge(m, "sluice_dead_letters_unreported",
                                     "Dead chunks whose dead letter no saver has committed yet.", "");
    for (int i = 0; i < BAD_COUNT; i++)
        f->bad[i] = sl_telemetry_bad(&f->tel, bad_names[i]);
    f->source_retries = sl_metrics_counter(m, "sluice_source_retries_total",
                                           "Requests to the source retried (http: 5xx, 429, timeouts, "
                                           "connection errors).", "");
    sl_metrics_on_collect(m, collect, f);
}

int sl_fetcher_main(const sl_config *cfg)
{
    fetcher f = {.cfg = cfg, .ready_chunk = -1};
    int rc = 1;
    sl_status st;
    sl_buf identity = SL_BUF_INIT;
    pthread_mutex_init(&f.mu, NULL);
    pthread_mutex_init(&f.reporter_mu, NULL);
    pthread_cond_init(&f.reporter_cond, NULL);
    sl_stop_install();

    sl_source_opts so = {.uri = cfg->source, .objects = cfg->objects, .chunk_size = cfg->chunk_size,
                         .timeout_ms = cfg->source_timeout_ms, .retries = cfg->source_retries,
                         .on_retry = count_retry, .on_retry_arg = &f};
    if ((st = sl_source_open(&f.src, &so))) {
        fprintf(stderr, "sluice fetcher: %s\n", sl_errmsg());
        /* An http source's first page can take a while: a SIGTERM then
         * is a stop, not a usage error. */
        rc = sl_stop_requested() ? 128 + sl_stop_signal() : 2;
        goto cleanup;
    }
    sl_buf_printf(&identity, "source=%s objects=%" PRId64 " chunk_size=%" PRId64, cfg->source,
                  sl_source_objects(f.src), cfg->chunk_size);
    if ((st = sl_ledger_open(&f.ledger, cfg->ledger, sl_source_chunks(f.src), identity.data, cfg->fresh))) {
        fprintf(stderr, "sluice fetcher: %s\n", sl_errmsg());
        /* Another job's ledger is a conflict no restart resolves. */
        rc = st == SL_EINVAL ? 2 : 1;
        goto cleanup;
    }
    sl_ledger_counts c;
    sl_ledger_counts_get(f.ledger, &c);
    f.saved_at_start = c.objects_saved;
    f.started_ms = sl_now_ms();
    f.ledger_ok = true;
    if ((st = sl_telemetry_start(&f.tel, cfg, "fetcher", ready, &f))) {
        fprintf(stderr, "sluice fetcher: %s\n", sl_errmsg());
        rc = st == SL_EINVAL ? 2 : 1;
        goto cleanup;
    }
    register_metrics(&f);
    if ((st = sl_bus_open(&f.bus, cfg, "sluice-fetcher"))) {
        fprintf(stderr, "sluice fetcher: %s\n", sl_errmsg());
        goto cleanup;
    }
    sl_telemetry_bus(&f.tel, f.bus);
    if ((st = sl_bus_subscribe(f.bus, SL_SUBJ_WORK, NULL, on_work, &f)) ||
        (st = sl_bus_subscribe(f.bus, SL_SUBJ_PROGRESS, NULL, on_progress, &f)) ||
        (st = sl_bus_subscribe(f.bus, SL_SUBJ_RELEASE, NULL, on_release, &f)) ||
        (st = sl_bus_subscribe(f.bus, SL_SUBJ_SAVED, NULL, on_saved, &f)) ||
        (st = sl_bus_subscribe(f.bus, SL_SUBJ_STATUS, NULL, on_status, &f))) {
        sl_error("cannot subscribe", "error=%s", sl_log_q(sl_errmsg()));
        goto cleanup;
    }
    natsConnection_Flush(sl_bus_nc(f.bus));
    if (pthread_create(&f.reporter, NULL, reporter_main, &f) != 0) {
        sl_error("cannot start the dead-letter reporter", NULL);
        goto cleanup;
    }
    f.reporter_started = true;
    char shown_src[512];
    sl_url_redact(cfg->source, shown_src, sizeof shown_src);
    sl_info(c.done + c.dead ? "fetcher resuming" : "fetcher started",
            "job=%s source=%s objects=%" PRId64 " chunks=%" PRId64 " done=%" PRId64 " dead=%" PRId64
            " ledger=%s lease_ms=%" PRId64 " max_attempts=%" PRId64,
            cfg->job, sl_log_q(shown_src), sl_source_objects(f.src), c.chunks, c.done, c.dead, sl_log_q(cfg->ledger),
            cfg->lease_ms, cfg->max_attempts);

    int64_t last_flush = sl_now_ms(), last_log = sl_now_ms();
    while (!sl_stop_requested()) {
        st = tick(&f, &last_flush);
        pthread_mutex_lock(&f.mu);
        bool was_ok = f.ledger_ok;
        f.ledger_ok = st == SL_OK;
        pthread_mutex_unlock(&f.mu);
        /* The ledger's disk failed: keep serving; marks are retried. */
        if (st != SL_OK && was_ok)
            sl_error("ledger write failed", "error=%s", sl_log_q(sl_errmsg()));
        if (f.complete && !cfg->linger)
            break;
        if (sl_now_ms() - last_log >= 10000 && !f.complete) {
            log_progress(&f, "progress");
            last_log = sl_now_ms();
        }
        sl_stop_sleep(TICK_MS);
    }
    /* Stopped within a tick of the end: P.status may already have said
     * "complete"; one last tick makes the exit code agree with it. */
    if (!f.complete)
        tick(&f, &last_flush);
    if (f.complete) {
        sl_ledger_counts_get(f.ledger, &c);
        rc = c.dead ? 3 : 0;
    } else {
        log_progress(&f, "fetcher stopped before the job was done");
        rc = 128 + sl_stop_signal();
    }
cleanup:
    /* Stop what reads the ledger and the source first: the HTTP server,
     * then the NATS handlers. */
    sl_telemetry_stop(&f.tel);
    if (f.reporter_started) {
        pthread_mutex_lock(&f.reporter_mu);
        atomic_store(&f.reporter_stop, true);
        pthread_cond_signal(&f.reporter_cond);
        pthread_mutex_unlock(&f.reporter_mu);
        pthread_join(f.reporter, NULL);
    }
    sl_bus_close(f.bus, 2000);
    sl_telemetry_free(&f.tel);
    if (f.ledger && (st = sl_ledger_close(f.ledger)) != SL_OK) {
        sl_error("ledger flush failed", "error=%s", sl_log_q(sl_errmsg()));
        if (rc == 0 || rc == 3)
            rc = 1;
    }
    sl_source_destroy(f.src);
    sl_buf_free(&identity);
    sl_buf_free(&f.work_body);
    sl_buf_free(&f.ready);
    pthread_cond_destroy(&f.reporter_cond);
    pthread_mutex_destroy(&f.reporter_mu);
    pthread_mutex_destroy(&f.mu);
    return rc;
}
