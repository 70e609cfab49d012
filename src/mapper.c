/* mapper.c - asks for a chunk whenever it is free, maps it, sends it on.
 *
 * One thread, one loop: request P.work; on a chunk, parse it, transform
 * every object (a bad one is dead-lettered alone), simulate the heavy work
 * if asked, and deliver the result. While it holds a chunk it extends the
 * lease every lease/3. Asked to stop in the middle of a chunk, it hands the
 * chunk back with P.release so another mapper gets it at once.
 *
 * Delivery is checked, because core NATS drops a message nobody is
 * subscribed to: P.mapped is published with a reply subject, so the
 * server's "no responders" answer tells the mapper that no saver listens
 * (one starting, all restarting), and a saver answers "accepted" once the
 * chunk is in its transaction; dead letters are requests the saver answers
 * after its commit. Without an answer the mapper keeps the chunk, keeps its
 * lease alive and sends it again, instead of losing it. It maps its next
 * chunks while the last ones wait for their answers, but never has more
 * than --in-flight waiting (back-pressure: see saver.c). */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "bus.h"
#include "chunk.h"
#include "clock.h"
#include "log.h"
#include "roles.h"
#include "stop.h"
#include "telemetry.h"
#include "transform.h"

#define REQUEST_TIMEOUT_MS 5000
#define ACK_TIMEOUT_MS 2000
/* How long a mapper waits for a saver to accept its chunk before sending it
 * again (the saver may have died holding it; a duplicate is harmless). */
#define SAVE_ACK_TIMEOUT_MS 5000
#define MAX_BACKOFF_MS 1000
/* The first pause before asking the fetcher again (growing by half). */
#define FIRST_ASK_BACKOFF_MS 2
#define REDELIVER_MS 200
/* After "no responders" a chunk is sent again after this pause, growing by
 * half each time up to REDELIVER_MS: a saver that is still starting (run
 * starts every role at once) is found within milliseconds, and one that is
 * gone is not asked hundreds of times a second. */
#define FIRST_REDELIVER_MS 5
/* A prefetched reply is taken from the inbox (to keep its lease alive)
 * once it has been out this long: a look per mapped object would cost a
 * lock each. */
#define PREFETCH_POLL_MS 20
/* How long a stopping mapper waits for the savers to answer for the
 * chunks it sent them (stop_flights). */
#define STOP_ANSWER_WAIT_MS 200
/* How long a stopping mapper waits for the reply to its prefetch, to hand
 * that chunk back rather than leave it to its lease. */
#define PREFETCH_STOP_WAIT_MS 500

/* sluice_dispatch_seconds: a round trip through NATS to the fetcher and
 * back is a fraction of a millisecond, hence buckets finer than
 * sl_metrics_duration_bounds below 1 ms. */
static const double dispatch_bounds[] = {0.00005, 0.0001, 0.00015, 0.0002, 0.00025, 0.0003, 0.0004, 0.0005,
                                         0.00075, 0.001,   0.002,   0.005,  0.01,    0.05,   0.1,    0.5,
                                         1};

/* The lease a mapper works under. */
typedef struct {
    int64_t chunk, attempt, lease_ms;
    int64_t failures; /* Sluice-Failures: a hint, 0 when absent or unreadable */
    const char *token;
    int64_t next_progress; /* when to extend it next */
} lease;

/* A chunk handed to the savers and not yet answered for. A mapper maps
 * its next chunks meanwhile (the saver's work is off the mapper's path)
 * but keeps at most --in-flight of them, which is the back-pressure that
 * holds a saver's queue to about that many chunks per mapper. */
typedef struct {
    bool active, sent;
    bool said; /* a warning about its delivery was logged */
    lease l;
    char token[SL_LEASE_LEN + 1];
    char *body;
    int64_t count, ndead;
    int64_t deadline; /* send again if no answer by then */
    int64_t pause_ms; /* the next pause after "no responders" */
} inflight;

typedef struct {
    const sl_config *cfg;
    sl_bus *bus;
    natsInbox *inbox;          /* where the fetcher's replies come */
    natsSubscription *replies;
    /* Where savers' answers, dead-letter acks and "no responders" come:
     * the subjects ACKS.0 .. ACKS.<in-flight - 1>, one per slot of the
     * chunks in flight, and ACKS.d for dead letters, under one
     * subscription to ACKS.*. A subject per slot, because a server with
     * allow_responses lets a saver answer a reply subject once for each
     * message it received on it: two chunks queued with one reply subject
     * would get one answer through. */
    natsInbox *acks_inbox;
    natsSubscription *acks;
    sl_transform *tf;
    char worker[128];
    uint64_t rng;
    int64_t chunks, objects, dead, bad_messages;
    sl_telemetry tel;
    sl_metric *m_objects, *m_chunks, *m_dead, *m_busy, *m_duration, *m_dispatch, *m_wait;
    sl_metric *bad_header, *bad_body, *bad_status;
    inflight *fl;  /* cfg->in_flight slots */
    int nfl;       /* of which active */
    lease *cur;    /* the chunk being mapped, if any */
    bool settling; /* inside settle(), which reads the answers itself */
    /* Prefetch: the next chunk is asked for --prefetch-lead-ms before the
     * current one should be done (judged by how long the last one took),
     * so that the round trip to the fetcher - and the wait behind other
     * mappers' requests - is off the mapper's path, while a mapper never
     * holds a chunk for long that an idle one could start. At most one
     * request is out; its reply, once taken from the inbox, waits in next
     * with its lease kept alive, and is handed back if the mapper stops. */
    int64_t prefetch_at;   /* ask then (0: not for this chunk) */
    bool asking;           /* a P.work request is out, its reply not taken */
    int64_t asked_ms;      /* when */
    double asked_s;
    natsMsg *next;         /* a reply taken early */
    bool next_leased;      /* next is a chunk, leased to us as next_l */
    lease next_l;
    int64_t last_chunk_ms; /* how long the last chunk took, receipt to delivery */
} mapper;

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void send_lease_msg(mapper *mp, sl_subject subj, const lease *l, const char *reason)
{
    natsMsg *m = sl_msg_new(sl_bus_subject(mp->bus, subj), NULL, NULL, 0);
    sl_msg_set_int(m, SL_H_CHUNK, l->chunk);
    sl_msg_set(m, SL_H_LEASE, l->token);
    if (reason) {
        char why[SL_REASON_MAX + 1];
        sl_proto_reason(why, sizeof why, reason);
        sl_msg_set(m, SL_H_REASON, why);
    }
    if (sl_bus_publish(mp->bus, m) != SL_OK)
        sl_warn("publish failed", "subject=%s error=%s", sl_bus_subject(mp->bus, subj), sl_log_q(sl_errmsg()));
    sl_msg_free(m);
}

/* Hands l's chunk back unfinished as the mapper stops (P.release without
 * a reason: it costs the chunk no attempt). */
static void hand_back(mapper *mp, const lease *l)
{
    send_lease_msg(mp, SL_SUBJ_RELEASE, l, NULL);
    sl_info("stopping: chunk handed back", "chunk=%" PRId64, l->chunk);
}

/* Extends the lease if a third of it has passed since the last time (now
 * is the time). */
static void keep_alive_one(mapper *mp, lease *l, int64_t now)
{
    if (now < l->next_progress)
        return;
    send_lease_msg(mp, SL_SUBJ_PROGRESS, l, NULL);
    l->next_progress = now + (l->lease_ms / 3 > 0 ? l->lease_ms / 3 : 1);
}

static void poll_answers(mapper *mp);
static sl_status request(mapper *mp);
static void take_prefetched(mapper *mp);

/* Keeps l, the chunk being mapped and the chunks in flight alive - the
 * last only while no saver has answered for them: the answers that came
 * are read first, and only when an extension is due (this runs after every
 * object mapped). */
static void keep_alive(mapper *mp, lease *l)
{
    /* The clock is read once: this runs for every object, and reading it
     * for each check was 5 % of a mapper's CPU. */
    int64_t now = sl_now_ms();
    if (l)
        keep_alive_one(mp, l, now);
    if (mp->cur && mp->cur != l)
        keep_alive_one(mp, mp->cur, now);
    if (mp->prefetch_at && now >= mp->prefetch_at) {
        mp->prefetch_at = 0;
        if (!mp->asking && !mp->next)
            request(mp); /* a failure leaves asking false: the main loop asks */
    }
    if (mp->asking && now - mp->asked_ms >= PREFETCH_POLL_MS)
        take_prefetched(mp);
    if (mp->next_leased)
        keep_alive_one(mp, &mp->next_l, now);
    bool polled = mp->settling; /* settle() reads the answers itself */
    for (int64_t i = 0; i < mp->cfg->in_flight; i++) {
        inflight *f = &mp->fl[i];
        if (!f->active || l == &f->l || now < f->l.next_progress)
            continue;
        if (!polled)
            poll_answers(mp);
        polled = true;
        if (f->active)
            keep_alive_one(mp, &f->l, now);
    }
}

/* The earliest of until and the times keep_alive has something to do. */
static int64_t next_due(const mapper *mp, const lease *l, int64_t until)
{
    const lease *ls[] = {l, mp->cur, mp->next_leased ? &mp->next_l : NULL};
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++)
        if (ls[i] && ls[i]->next_progress < until)
            until = ls[i]->next_progress;
    for (int64_t i = 0; i < mp->cfg->in_flight; i++)
        if (mp->fl[i].active && mp->fl[i].l.next_progress < until)
            until = mp->fl[i].l.next_progress;
    if (mp->prefetch_at && mp->prefetch_at < until)
        until = mp->prefetch_at;
    return until;
}

/* Sleeps up to ms while keeping the leases alive; false if asked to stop. */
static bool hold(mapper *mp, lease *l, int64_t ms)
{
    int64_t end = sl_now_ms() + ms;
    for (int64_t now = sl_now_ms(); now < end; now = sl_now_ms()) {
        keep_alive(mp, l);
        int64_t until = next_due(mp, l, end);
        if (sl_stop_sleep(until > now ? until - now : 0))
            return false;
    }
    keep_alive(mp, l);
    return !sl_stop_requested();
}

/* Burns ms of this thread's CPU time (--cpu-work-ms: processing that needs
 * a core, unlike --work-ms's sleep), keeping the lease alive and heeding a
 * stop every few milliseconds. Returns false when stopped. */
static bool burn(mapper *mp, lease *l, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    int64_t end = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + ms * 1000000;
    volatile uint64_t sink = 0;
    for (;;) {
        for (int i = 0; i < 100000; i++)
            sink = sink * 6364136223846793005u + 1442695040888963407u;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        if ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec >= end)
            break;
        keep_alive(mp, l);
        if (sl_stop_requested())
            return false;
    }
    keep_alive(mp, l);
    return !sl_stop_requested();
}

/* Throws away acks that arrived after their sender gave up on them. */
static void drain_acks(mapper *mp)
{
    natsMsg *m = NULL;
    natsStatus s;
    while ((s = natsSubscription_NextMsg(&m, mp->acks, 0)) == NATS_OK || s == NATS_NO_RESPONDERS)
        sl_msg_free(m), m = NULL;
}

/* Waits up to ms for the next message on the acks inbox, keeping the
 * leases alive meanwhile. Returns NATS_OK (with *m), NATS_NO_RESPONDERS or
 * NATS_TIMEOUT (also at once when asked to stop). */
static natsStatus next_ack(mapper *mp, lease *l, int64_t ms, natsMsg **m)
{
    int64_t end = sl_now_ms() + ms;
    for (;;) {
        keep_alive(mp, l);
        int64_t left = end - sl_now_ms();
        natsStatus s = natsSubscription_NextMsg(m, mp->acks, left <= 0 ? 0 : left < 100 ? left : 100);
        if (s != NATS_TIMEOUT || left <= 0 || sl_stop_requested())
            return s;
    }
}

/* Sends one dead letter and waits for a saver to say it is committed. */
static sl_status send_dead(mapper *mp, lease *l, const sl_chunk_dead *d)
{
    drain_acks(mp);
    char reply[64];
    snprintf(reply, sizeof reply, "%s.d", (const char *)mp->acks_inbox);
    natsMsg *m = sl_msg_new(sl_bus_subject(mp->bus, SL_SUBJ_DEAD), reply, d->raw,
                            d->raw ? strlen(d->raw) : 0);
    sl_msg_set_int(m, SL_H_CHUNK, l->chunk);
    sl_msg_set_int(m, SL_H_OBJECT, d->index);
    sl_msg_set(m, SL_H_REASON, d->reason);
    sl_status st = sl_bus_publish(mp->bus, m);
    sl_msg_free(m);
    if (st)
        return st;
    int64_t deadline = sl_now_ms() + ACK_TIMEOUT_MS;
    for (;;) {
        natsMsg *ack = NULL;
        natsStatus s = next_ack(mp, l, deadline - sl_now_ms(), &ack);
        if (s == NATS_NO_RESPONDERS)
            return sl_fail(SL_ENOTFOUND, "no saver listens on %s", sl_bus_subject(mp->bus, SL_SUBJ_DEAD));
        if (s != NATS_OK)
            return sl_fail(SL_ETIMEOUT, "no saver acknowledged the dead letter within %d ms", ACK_TIMEOUT_MS);
        /* Only the ack of this dead letter counts; a late one of an
         * earlier attempt is dropped. */
        int64_t c = -1, o = -2;
        bool mine = sl_msg_int(ack, SL_H_CHUNK, 0, INT64_MAX, &c) == SL_OK &&
                    sl_msg_int(ack, SL_H_OBJECT, -1, INT32_MAX, &o) == SL_OK && c == l->chunk && o == d->index;
        sl_msg_free(ack);
        if (mine)
            return SL_OK;
    }
}

/* Publishes a chunk in flight to the savers, asking for an answer on the
 * acks inbox. */
static sl_status publish_mapped(mapper *mp, inflight *f)
{
    char reply[64];
    snprintf(reply, sizeof reply, "%s.%d", (const char *)mp->acks_inbox, (int)(f - mp->fl));
    natsMsg *m = sl_msg_new(sl_bus_subject(mp->bus, SL_SUBJ_MAPPED), reply, f->body, strlen(f->body));
    sl_msg_set_int(m, SL_H_CHUNK, f->l.chunk);
    sl_msg_set_int(m, SL_H_ATTEMPT, f->l.attempt);
    sl_msg_set(m, SL_H_LEASE, f->token);
    sl_msg_set_int(m, SL_H_COUNT, f->count);
    sl_msg_set_int(m, SL_H_DEAD, f->ndead);
    sl_status st = sl_bus_publish(mp->bus, m);
    sl_msg_free(m);
    return st;
}

/* Says once per chunk why it is held and sent again. */
static void held(inflight *f, const char *why)
{
    if (!f->said)
        sl_warn("cannot deliver; holding the chunk and retrying", "chunk=%" PRId64 " error=%s", f->l.chunk, why);
    f->said = true;
}

/* Sends f now, or (the publish failed) again after a pause. */
static void send_flight(mapper *mp, inflight *f)
{
    if (publish_mapped(mp, f) == SL_OK) {
        f->sent = true;
        f->deadline = sl_now_ms() + SAVE_ACK_TIMEOUT_MS;
        return;
    }
    held(f, sl_log_q(sl_errmsg()));
    f->deadline = sl_now_ms() + REDELIVER_MS;
}

static void end_flight(mapper *mp, inflight *f)
{
    free(f->body);
    f->body = NULL;
    f->active = false;
    mp->nfl--;
}

/* One message from the acks inbox: a saver's answer for a chunk in flight
 * ends that flight; anything else is stale. "No responders" (no saver
 * listens) cannot say which publish it answers, so every chunk sent and
 * not answered is sent again after its pause: one that did arrive becomes
 * a duplicate, which is harmless. Takes ack. */
static void flight_answer(mapper *mp, natsStatus s, natsMsg *ack)
{
    int64_t n = mp->cfg->in_flight;
    if (s == NATS_NO_RESPONDERS) {
        sl_msg_free(ack);
        for (int64_t i = 0; i < n; i++) {
            inflight *f = &mp->fl[i];
            if (!f->active || !f->sent)
                continue;
            held(f, "\"no saver listens\"");
            f->sent = false;
            f->deadline = sl_now_ms() + f->pause_ms; /* publish again then */
            f->pause_ms = f->pause_ms * 3 / 2 > REDELIVER_MS ? REDELIVER_MS : f->pause_ms * 3 / 2;
        }
        return;
    }
    /* Only an answer about a chunk and attempt in flight counts. */
    int64_t c = -1, a = -1;
    const char *status = sl_msg_str(ack, SL_H_STATUS);
    inflight *f = NULL;
    if (status && sl_msg_int(ack, SL_H_CHUNK, 0, INT64_MAX, &c) == SL_OK &&
        sl_msg_int(ack, SL_H_ATTEMPT, 1, INT32_MAX, &a) == SL_OK)
        for (int64_t i = 0; i < n && !f; i++)
            if (mp->fl[i].active && mp->fl[i].l.chunk == c && mp->fl[i].l.attempt == a)
                f = &mp->fl[i];
    if (f && !strcmp(status, SL_STATUS_ACCEPTED)) {
        mp->chunks++;
        mp->objects += f->count;
        mp->dead += f->ndead;
        sl_metric_inc(mp->m_chunks);
        sl_metric_add(mp->m_objects, (double)f->count);
        sl_metric_add(mp->m_dead, (double)f->ndead);
        sl_debug("chunk mapped", "chunk=%" PRId64 " attempt=%" PRId64 " count=%" PRId64 " dead=%" PRId64, f->l.chunk,
                 f->l.attempt, f->count, f->ndead);
        end_flight(mp, f);
    } else if (f && !strcmp(status, SL_STATUS_RELEASED)) {
        sl_warn("the saver could not commit the chunk; it went back to the fetcher", "chunk=%" PRId64, f->l.chunk);
        end_flight(mp, f);
    }
    sl_msg_free(ack);
}

/* Waits, as the mapper stops, up to STOP_ANSWER_WAIT_MS for the savers'
 * answers to the chunks it sent; then hands the chunks still unanswered
 * back. A chunk a saver accepted is that saver's to commit and confirm:
 * handed back as well, it was leased and mapped again, or its hand-back
 * came after the confirmation and was counted as a stale lease (7-8 of
 * the 12 chunks two mappers held when a run was interrupted). Called
 * last, after the chunk the mapper held and the prefetched one went back,
 * so that the wait does not hold those up. */
static void stop_flights(mapper *mp)
{
    for (int64_t until = sl_now_ms() + STOP_ANSWER_WAIT_MS; mp->nfl;) {
        bool sent = false;
        for (int64_t i = 0; i < mp->cfg->in_flight; i++)
            sent |= mp->fl[i].active && mp->fl[i].sent;
        int64_t left = until - sl_now_ms();
        natsMsg *ack = NULL;
        natsStatus s = natsSubscription_NextMsg(&ack, mp->acks, sent && left > 0 ? left : 0);
        if (s != NATS_OK && s != NATS_NO_RESPONDERS)
            break;
        flight_answer(mp, s, ack);
    }
    for (int64_t i = 0; i < mp->cfg->in_flight; i++) {
        inflight *f = &mp->fl[i];
        if (!f->active)
            continue;
        hand_back(mp, &f->l);
        end_flight(mp, f);
    }
}

/* Waits until at most keep chunks are in flight: each ends when a saver
 * answers for it, accepted into its transaction (it is counted as mapped)
 * or handed back to the fetcher by a saver whose sink failed. A chunk with
 * no answer in time, or with nobody listening, is sent again (a duplicate
 * is harmless). Returns at once when asked to stop: stop_flights ends
 * them then. */
static void settle(mapper *mp, int keep)
{
    mp->settling = true;
    while (mp->nfl > keep && !sl_stop_requested()) {
        int64_t now = sl_now_ms(), wake = INT64_MAX;
        for (int64_t i = 0; i < mp->cfg->in_flight; i++) {
            inflight *f = &mp->fl[i];
            if (!f->active)
                continue;
            if (f->sent && now >= f->deadline) {
                held(f, "\"no saver accepted it in time\"");
                f->sent = false;
            }
            if (!f->sent && now >= f->deadline)
                send_flight(mp, f);
            if (f->deadline < wake)
                wake = f->deadline;
        }
        if (mp->nfl <= keep)
            break;
        natsMsg *ack = NULL;
        natsStatus s = next_ack(mp, NULL, wake - sl_now_ms(), &ack);
        if (s == NATS_OK || s == NATS_NO_RESPONDERS)
            flight_answer(mp, s, ack);
        else if (s != NATS_TIMEOUT)
            hold(mp, NULL, REDELIVER_MS); /* the connection is away */
    }
    mp->settling = false;
}

/* Takes the answers that came for the chunks in flight without waiting,
 * so that a lease is not extended after a saver accepted its chunk. */
static void poll_answers(mapper *mp)
{
    natsMsg *ack = NULL;
    natsStatus s;
    while (mp->nfl && ((s = natsSubscription_NextMsg(&ack, mp->acks, 0)) == NATS_OK || s == NATS_NO_RESPONDERS)) {
        flight_answer(mp, s, ack);
        ack = NULL;
    }
}

/* Room for headers in a message: the body must leave this much of the
 * server's max_payload free. */
#define HEADER_ROOM 1024

typedef enum { DELIVERED, STOPPED, FAILED } outcome;

/* Makes room among the chunks in flight (all of them settled first if
 * this chunk has dead letters, whose acks the mapper waits for alone),
 * delivers this chunk's dead letters (each acknowledged by a saver), then
 * puts the chunk in flight. STOPPED when a stop came first; a result too
 * big for the server is a failure of the chunk, handed back with its
 * reason (FAILED), not a thing to retry. */
static outcome deliver(mapper *mp, lease *l, char *body, int64_t count, sl_chunk_dead *dead, int64_t ndead)
{
    settle(mp, ndead ? 0 : (int)mp->cfg->in_flight - 1);
    int64_t max = sl_bus_max_payload(mp->bus) - HEADER_ROOM;
    if ((int64_t)strlen(body) > max) {
        char why[200];
        snprintf(why, sizeof why, "mapped chunk is %zu bytes, more than the server's max_payload allows (%" PRId64
                                  ")", strlen(body), max + HEADER_ROOM);
        sl_warn("chunk too big to send", "chunk=%" PRId64 " reason=%s", l->chunk, sl_log_q(why));
        send_lease_msg(mp, SL_SUBJ_RELEASE, l, why);
        return FAILED;
    }
    for (int64_t k = 0; k < ndead; k++)
        if (dead[k].raw && (int64_t)strlen(dead[k].raw) > max)
            dead[k].raw[max > 0 ? max : 0] = '\0'; /* a dead letter keeps what fits of its bytes */
    int64_t acked = 0;
    bool said = false;
    while (acked < ndead) {
        if (sl_stop_requested())
            return STOPPED;
        sl_status st = send_dead(mp, l, &dead[acked]);
        if (st == SL_OK) {
            acked++;
            continue;
        }
        if (!said)
            sl_warn("cannot deliver; holding the chunk and retrying", "chunk=%" PRId64 " error=%s", l->chunk,
                    sl_log_q(sl_errmsg()));
        said = true;
        if (!hold(mp, l, REDELIVER_MS))
            return STOPPED;
    }
    if (sl_stop_requested())
        return STOPPED;
    inflight *f = mp->fl;
    while (f->active)
        f++; /* settle() left a slot free */
    mp->cur = NULL; /* from now on kept alive as a chunk in flight */
    *f = (inflight){.active = true, .l = *l, .body = body, .count = count, .ndead = ndead,
                    .pause_ms = FIRST_REDELIVER_MS};
    snprintf(f->token, sizeof f->token, "%s", l->token);
    f->l.token = f->token;
    mp->nfl++;
    send_flight(mp, f);
    return DELIVERED;
}

/* Processes one leased chunk. */
/* keep_alive as sl_chunk_map's per-object callback. */
typedef struct {
    mapper *mp;
    lease *l;
} alive_arg;

static void keep_alive_cb(void *arg)
{
    alive_arg *a = arg;
    keep_alive(a->mp, a->l);
}

/* A chunk that cannot be read (bad framing headers, a body that is not
 * JSON) is counted and handed back as a failure: the fetcher counts it
 * towards --max-attempts, so a chunk that can never be read ends dead. */
static void refuse(mapper *mp, lease *l, sl_metric *counter, const char *reason, const char *why)
{
    mp->bad_messages++;
    sl_metric_inc(counter);
    sl_warn("bad message", "subject=work-reply reason=%s chunk=%" PRId64 " detail=%s", reason, l->chunk,
            sl_log_q(why));
    send_lease_msg(mp, SL_SUBJ_RELEASE, l, why);
}

/* Reads how the chunk body is framed: no Sluice-Unit (and no
 * Sluice-First) is a JSON array; else a known unit and a number. */
static bool read_framing(natsMsg *reply, const char **unit, int64_t *first, char *why, size_t whylen)
{
    const char *u = sl_msg_str(reply, SL_H_UNIT);
    sl_status st = sl_msg_int(reply, SL_H_FIRST, 0, INT64_MAX, first);
    if (!u && st == SL_ENOTFOUND)
        return true;
    if (!u || (strcmp(u, SL_UNIT_LINE) && strcmp(u, SL_UNIT_ELEMENT))) {
        snprintf(why, whylen, "header %s is %s (known: %s, %s)", SL_H_UNIT, u ? "unknown" : "missing",
                 SL_UNIT_LINE, SL_UNIT_ELEMENT);
        return false;
    }
    if (st != SL_OK) {
        snprintf(why, whylen, "%s", sl_errmsg());
        return false;
    }
    *unit = u;
    return true;
}

static void process(mapper *mp, natsMsg *reply, lease *l)
{
    double started = sl_now_s();
    char why[SL_REASON_MAX + 1];
    char *body = NULL;
    int64_t count = 0, ndead = 0;
    sl_chunk_dead *dead = NULL;
    alive_arg alive = {mp, l};
    const char *unit = NULL;
    int64_t first = 0;
    if (!read_framing(reply, &unit, &first, why, sizeof why)) {
        refuse(mp, l, mp->bad_header, "bad_header", why);
        return;
    }
    if (sl_chunk_map(mp->tf, natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), unit, first,
                     keep_alive_cb, &alive, &body, &count, &dead, &ndead, why, sizeof why) != SL_OK) {
        refuse(mp, l, mp->bad_body, "bad_body", why);
        return;
    }
    for (int64_t k = 0; k < ndead; k++)
        sl_warn("object dead-lettered", "chunk=%" PRId64 " object=%" PRId64 " reason=%s", l->chunk, dead[k].index,
                sl_log_q(dead[k].reason));

    bool go_on = true;
    if (mp->cfg->work_ms > 0 || mp->cfg->work_jitter_ms > 0) {
        int64_t ms = mp->cfg->work_ms;
        if (mp->cfg->work_jitter_ms > 0)
            ms += (int64_t)(next_rand(&mp->rng) % (uint64_t)(mp->cfg->work_jitter_ms + 1));
        go_on = hold(mp, l, ms);
    }
    if (go_on && mp->cfg->cpu_work_ms > 0)
        go_on = burn(mp, l, mp->cfg->cpu_work_ms);
    outcome done = go_on ? deliver(mp, l, body, count, dead, ndead) : STOPPED;
    if (done == DELIVERED) {
        body = NULL; /* the chunk in flight owns it now */
        sl_metric_observe(mp->m_duration, sl_now_s() - started);
    } else if (done == STOPPED) {
        hand_back(mp, l);
    }
    sl_chunk_dead_free(dead, ndead);
    free(body);
}

/* Reads the lease headers of a chunk reply; false if any is malformed. */
static bool read_lease(natsMsg *reply, lease *l, char *why, size_t whylen)
{
    if (sl_msg_int(reply, SL_H_CHUNK, 0, INT64_MAX, &l->chunk) ||
        sl_msg_int(reply, SL_H_ATTEMPT, 1, INT32_MAX, &l->attempt) ||
        sl_msg_int(reply, SL_H_LEASE_MS, 1, INT64_C(86400000), &l->lease_ms)) {
        snprintf(why, whylen, "%s", sl_errmsg());
        return false;
    }
    if (sl_msg_int(reply, SL_H_FAILURES, 0, INT32_MAX, &l->failures) != SL_OK)
        l->failures = 0;
    l->token = sl_msg_str(reply, SL_H_LEASE);
    if (!sl_proto_token_ok(l->token)) {
        snprintf(why, whylen, "header Sluice-Lease is not a lease token");
        return false;
    }
    l->next_progress = sl_now_ms() + (l->lease_ms / 3 > 0 ? l->lease_ms / 3 : 1);
    return true;
}

/* Publishes a P.work request; its reply comes to the inbox. */
static sl_status request(mapper *mp)
{
    natsMsg *req = sl_msg_new(sl_bus_subject(mp->bus, SL_SUBJ_WORK), (const char *)mp->inbox, NULL, 0);
    sl_msg_set(req, SL_H_WORKER, mp->worker);
    mp->asked_ms = sl_now_ms();
    mp->asked_s = sl_now_s();
    sl_status st = sl_bus_publish(mp->bus, req);
    sl_msg_free(req);
    mp->asking = st == SL_OK;
    return st;
}

/* Keeps m, a reply taken early, as next. */
static void keep_next(mapper *mp, natsMsg *m)
{
    mp->asking = false;
    mp->next = m;
    const char *status = sl_msg_str(m, SL_H_STATUS);
    char why[256];
    mp->next_leased = status && !strcmp(status, SL_STATUS_CHUNK) && read_lease(m, &mp->next_l, why, sizeof why);
}

/* Takes the reply to the request that is out, if it came, into next. */
static void take_prefetched(mapper *mp)
{
    if (!mp->asking || mp->next)
        return;
    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, mp->replies, 0);
    if (s == NATS_NO_RESPONDERS)
        mp->asking = false; /* no fetcher: the main loop will find out */
    else if (s == NATS_OK)
        keep_next(mp, m);
}

/* Hands back a prefetched chunk when the mapper stops: the one taken
 * already, or the reply still on its way (waited for a moment). */
static void drop_prefetched(mapper *mp)
{
    for (int64_t end = sl_now_ms() + PREFETCH_STOP_WAIT_MS; mp->asking && !mp->next && sl_now_ms() < end;) {
        natsMsg *m = NULL;
        natsStatus s = natsSubscription_NextMsg(&m, mp->replies, 20);
        if (s == NATS_OK)
            keep_next(mp, m);
        else if (s != NATS_TIMEOUT)
            mp->asking = false;
    }
    if (mp->next_leased) {
        hand_back(mp, &mp->next_l);
    }
    sl_msg_free(mp->next);
    mp->next = NULL;
    mp->next_leased = false;
}

/* The next reply of the fetcher: the prefetched one, or the answer to a
 * request (sent now unless one is out), waited for in short slices so a
 * stop is noticed at once even while the fetcher is silent. A reply that
 * came late, after an earlier ask gave up, is taken first and no new
 * request is sent: it is a real lease, and leaving it queued would leave a
 * chunk waiting while its lease runs. *asked is when the request went out
 * if the mapper waited for its reply (the dispatch round trip), else 0. */
static sl_status ask(mapper *mp, natsMsg **reply, double *asked)
{
    *asked = 0;
    if (mp->next) {
        *reply = mp->next;
        mp->next = NULL;
        mp->next_leased = false;
        return SL_OK;
    }
    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, mp->replies, 0);
    if (s == NATS_OK) {
        *reply = m;
        mp->asking = false;
        return SL_OK;
    }
    if (!mp->asking) {
        sl_status st = request(mp);
        if (st)
            return st;
    }
    int64_t deadline = mp->asked_ms + REQUEST_TIMEOUT_MS;
    while (!sl_stop_requested()) {
        s = natsSubscription_NextMsg(&m, mp->replies, 100);
        if (s == NATS_OK) {
            *reply = m;
            *asked = mp->asked_s;
            mp->asking = false;
            return SL_OK;
        }
        if (s == NATS_NO_RESPONDERS) {
            mp->asking = false;
            return sl_fail(SL_ENOTFOUND, "nobody listens on %s", sl_bus_subject(mp->bus, SL_SUBJ_WORK));
        }
        if (s != NATS_TIMEOUT)
            return sl_nats_fail(s, "waiting for the fetcher");
        if (sl_now_ms() >= deadline) {
            mp->asking = false;
            return sl_fail(SL_ETIMEOUT, "no reply from the fetcher within %d ms", REQUEST_TIMEOUT_MS);
        }
    }
    return sl_fail(SL_ETIMEOUT, "stopping");
}

/* Subscribes to a new inbox, with suffix after it (".*": its subjects). */
static sl_status inbox_sub(mapper *mp, natsInbox **inbox, const char *suffix, natsSubscription **sub)
{
    natsStatus s;
    char subj[64];
    if ((s = natsInbox_Create(inbox)) != NATS_OK)
        return sl_nats_fail(s, "reply inbox");
    snprintf(subj, sizeof subj, "%s%s", (const char *)*inbox, suffix);
    if ((s = natsConnection_SubscribeSync(sub, sl_bus_nc(mp->bus), subj)) != NATS_OK)
        return sl_nats_fail(s, "reply inbox");
    return SL_OK;
}

int sl_mapper_main(const sl_config *cfg)
{
    mapper mp = {.cfg = cfg};
    int rc = 1;
    sl_stop_install();
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(mp.worker, sizeof mp.worker, "%s/%d", host, (int)getpid());
    mp.rng = (uint64_t)getpid() ^ (uint64_t)sl_now_ms() << 20;

    if (sl_transform_open(&mp.tf, cfg->transform) != SL_OK) {
        fprintf(stderr, "sluice mapper: %s\n", sl_errmsg());
        return 2;
    }
    mp.fl = sl_xcalloc((size_t)cfg->in_flight, sizeof *mp.fl);
    sl_status st0 = sl_telemetry_start(&mp.tel, cfg, "mapper", NULL, NULL);
    if (st0 != SL_OK) {
        fprintf(stderr, "sluice mapper: %s\n", sl_errmsg());
        rc = st0 == SL_EINVAL ? 2 : 1;
        goto cleanup;
    }
    sl_metrics *m = mp.tel.metrics;
    mp.m_objects = sl_metrics_counter(m, "sluice_objects_mapped_total", "Objects transformed and delivered.", "");
    mp.m_chunks = sl_metrics_counter(m, "sluice_chunks_mapped_total", "Chunks delivered to the savers.", "");
    mp.m_dead = sl_metrics_counter(m, "sluice_objects_dead_lettered_total", "Objects dead-lettered.", "");
    mp.m_busy = sl_metrics_gauge(m, "sluice_mapper_busy", "1 while the mapper holds a chunk.", "");
    mp.m_duration = sl_metrics_histogram(m, "sluice_chunk_duration_seconds",
                                         "From receiving a chunk to delivering it.", "", sl_metrics_duration_bounds,
                                         sl_metrics_duration_nbounds);
    mp.m_dispatch = sl_metrics_histogram(m, "sluice_dispatch_seconds",
                                         "From asking for work to receiving a chunk (replies with a chunk only).",
                                         "", dispatch_bounds, (int)(sizeof dispatch_bounds / sizeof dispatch_bounds[0]));
    mp.m_wait = sl_metrics_histogram(m, "sluice_work_wait_seconds",
                                     "From being free for a chunk to having one: 0 when it was prefetched "
                                     "(replies with a chunk only).",
                                     "", dispatch_bounds, (int)(sizeof dispatch_bounds / sizeof dispatch_bounds[0]));
    mp.bad_header = sl_telemetry_bad(&mp.tel, "bad_header");
    mp.bad_body = sl_telemetry_bad(&mp.tel, "bad_body");
    mp.bad_status = sl_telemetry_bad(&mp.tel, "bad_status");
    if (sl_bus_open(&mp.bus, cfg, "sluice-mapper") != SL_OK) {
        fprintf(stderr, "sluice mapper: %s\n", sl_errmsg());
        goto cleanup;
    }
    sl_telemetry_bus(&mp.tel, mp.bus);
    if (inbox_sub(&mp, &mp.inbox, "", &mp.replies) || inbox_sub(&mp, &mp.acks_inbox, ".*", &mp.acks)) {
        sl_error("cannot subscribe", "error=%s", sl_log_q(sl_errmsg()));
        goto cleanup;
    }
    sl_info("mapper started", "job=%s transform=%s worker=%s work_ms=%" PRId64 " cpu_work_ms=%" PRId64, cfg->job,
            sl_log_q(cfg->transform), mp.worker, cfg->work_ms, cfg->cpu_work_ms);

    /* Short at first: at start-up the fetcher is often a few ms behind
     * the mappers, and every ms a mapper sleeps is lost work. */
    int64_t backoff = FIRST_ASK_BACKOFF_MS;
    bool said_waiting = false, said_done = false;
    while (!sl_stop_requested()) {
        natsMsg *reply = NULL;
        double asked = 0;
        lease prefetched = {0};
        if (mp.next_leased)
            prefetched = mp.next_l;
        double free_since = sl_now_s();
        sl_status st = ask(&mp, &reply, &asked);
        if (st != SL_OK) {
            if (sl_stop_requested())
                break;
            /* No fetcher yet, or it restarts, or NATS is away: ask again
             * later, backing off up to a second. */
            settle(&mp, 0);
            if (!said_waiting)
                sl_info("waiting for the fetcher", "reason=%s", sl_log_q(sl_errmsg()));
            said_waiting = true;
            sl_stop_sleep(backoff);
            backoff = backoff * 3 / 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : backoff * 3 / 2;
            continue;
        }
        backoff = FIRST_ASK_BACKOFF_MS;
        said_waiting = false;
        const char *status = sl_msg_str(reply, SL_H_STATUS);
        int64_t retry = 100;
        if (sl_msg_int(reply, SL_H_RETRY_MS, 1, 60000, &retry) != SL_OK)
            retry = 100;
        if (status && !strcmp(status, SL_STATUS_CHUNK)) {
            if (asked > 0)
                sl_metric_observe(mp.m_dispatch, sl_now_s() - asked);
            sl_metric_observe(mp.m_wait, sl_now_s() - free_since);
            lease l;
            char why[256];
            said_done = false;
            if (read_lease(reply, &l, why, sizeof why)) {
                if (prefetched.token && prefetched.chunk == l.chunk)
                    l.next_progress = prefetched.next_progress; /* kept alive meanwhile */
                sl_metric_set(mp.m_busy, 1);
                mp.cur = &l;
                int64_t t0 = sl_now_ms(), lead = cfg->prefetch_lead_ms;
                /* A chunk that failed before may be the one that killed the
                 * mappers: it is mapped with no other chunk leased beside
                 * it, which would expire with it and count a failure each
                 * time (chaos_poison_chunk_is_dead_lettered_alone). */
                if (lead > 0 && mp.last_chunk_ms > 0 && l.failures == 0)
                    mp.prefetch_at = t0 + (mp.last_chunk_ms > lead ? mp.last_chunk_ms - lead : 0);
                keep_alive(&mp, &l); /* asks now if the chunks are that quick */
                process(&mp, reply, &l);
                mp.prefetch_at = 0;
                int64_t took = sl_now_ms() - t0;
                mp.last_chunk_ms = took > 0 ? took : 1; /* 0 means "none yet" */
                mp.cur = NULL;
                sl_metric_set(mp.m_busy, 0);
            }
            else {
                mp.bad_messages++;
                sl_metric_inc(mp.bad_header);
                sl_warn("bad message", "subject=work-reply reason=bad_header detail=%s", sl_log_q(why));
                sl_stop_sleep(retry);
            }
        } else if (status && !strcmp(status, SL_STATUS_WAIT)) {
            settle(&mp, 0);
            sl_stop_sleep(retry);
        } else if (status && !strcmp(status, SL_STATUS_DONE)) {
            settle(&mp, 0);
            /* A standalone mapper outlives a job: the next one may start. */
            if (!said_done)
                sl_info("job done; waiting for more work", "chunks=%" PRId64 " objects=%" PRId64, mp.chunks,
                        mp.objects);
            said_done = true;
            sl_stop_sleep(retry);
        } else {
            mp.bad_messages++;
            sl_metric_inc(mp.bad_status);
            sl_warn("bad message", "subject=work-reply reason=bad_status status=%s",
                    sl_log_q(status ? status : "(none)"));
            sl_stop_sleep(retry);
        }
        sl_msg_free(reply);
    }
    drop_prefetched(&mp);
    stop_flights(&mp);
    rc = 0;
    sl_info("mapper stopped", "chunks=%" PRId64 " objects=%" PRId64 " dead=%" PRId64 " bad_messages=%" PRId64,
            mp.chunks, mp.objects, mp.dead, mp.bad_messages);
cleanup:
    sl_telemetry_stop(&mp.tel);
    natsSubscription_Destroy(mp.replies);
    natsSubscription_Destroy(mp.acks);
    sl_bus_close(mp.bus, 2000);
    sl_telemetry_free(&mp.tel);
    natsInbox_Destroy(mp.inbox);
    natsInbox_Destroy(mp.acks_inbox);
    sl_transform_destroy(mp.tf);
    free(mp.fl);
    return rc;
}
