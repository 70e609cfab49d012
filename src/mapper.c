/* mapper.c - asks for a chunk whenever it is free, maps it, sends it on.
 *
 * One thread, one loop: request P.work; on a chunk, parse it, transform
 * every object (a bad one is dead-lettered alone), simulate the heavy work
 * if asked (extending the lease every lease/3), publish the result on
 * P.mapped. Asked to stop in the middle of a chunk, it hands the chunk back
 * with P.release so another mapper gets it at once. */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "bus.h"
#include "clock.h"
#include "log.h"
#include "roles.h"
#include "stop.h"
#include "transform.h"

#define REQUEST_TIMEOUT_MS 5000
#define MAX_BACKOFF_MS 1000

typedef struct {
    const sl_config *cfg;
    sl_bus *bus;
    natsInbox *inbox;         /* where the fetcher's replies come */
    natsSubscription *replies;
    sl_transform *tf;
    char worker[128];
    uint64_t rng;
    int64_t chunks, objects, dead, bad_messages;
} mapper;

/* The lease a mapper works under. */
typedef struct {
    int64_t chunk, attempt, lease_ms;
    const char *token;
} lease;

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
    if (reason)
        sl_msg_set(m, SL_H_REASON, reason);
    if (sl_bus_publish(mp->bus, m) != SL_OK)
        sl_warn("publish failed", "subject=%s error=%s", sl_bus_subject(mp->bus, subj), sl_log_q(sl_errmsg()));
    natsMsg_Destroy(m);
}

static void dead_letter(mapper *mp, const lease *l, int64_t index, const char *reason, json_t *obj)
{
    char *raw = obj ? json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    natsMsg *m = sl_msg_new(sl_bus_subject(mp->bus, SL_SUBJ_DEAD), NULL, raw, raw ? strlen(raw) : 0);
    sl_msg_set_int(m, SL_H_CHUNK, l->chunk);
    sl_msg_set_int(m, SL_H_OBJECT, index);
    sl_msg_set(m, SL_H_REASON, reason);
    if (sl_bus_publish(mp->bus, m) != SL_OK)
        sl_warn("dead letter not published", "error=%s", sl_log_q(sl_errmsg()));
    natsMsg_Destroy(m);
    free(raw);
    sl_warn("object dead-lettered", "chunk=%" PRId64 " object=%" PRId64 " reason=%s", l->chunk, index,
            sl_log_q(reason));
}

/* Sleeps the simulated work, extending the lease every lease/3. Returns
 * false if asked to stop meanwhile. */
static bool simulate_work(mapper *mp, const lease *l)
{
    int64_t ms = mp->cfg->work_ms;
    if (mp->cfg->work_jitter_ms > 0)
        ms += (int64_t)(next_rand(&mp->rng) % (uint64_t)(mp->cfg->work_jitter_ms + 1));
    int64_t end = sl_now_ms() + ms, every = l->lease_ms / 3 > 0 ? l->lease_ms / 3 : 1;
    int64_t next_progress = sl_now_ms() + every;
    for (int64_t now = sl_now_ms(); now < end; now = sl_now_ms()) {
        if (now >= next_progress) {
            send_lease_msg(mp, SL_SUBJ_PROGRESS, l, NULL);
            next_progress = now + every;
        }
        int64_t until = end < next_progress ? end : next_progress;
        if (sl_stop_sleep(until - now))
            return false;
    }
    return true;
}

/* Processes one leased chunk. */
static void process(mapper *mp, natsMsg *reply, const lease *l)
{
    json_error_t err;
    json_t *in = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply),
                            JSON_REJECT_DUPLICATES, &err);
    if (!in || !json_is_array(in)) {
        char why[300];
        if (in)
            snprintf(why, sizeof why, "chunk body is not a JSON array");
        else
            snprintf(why, sizeof why, "chunk body is not JSON: %s at line %d column %d", err.text,
                     err.line, err.column);
        mp->bad_messages++;
        sl_warn("bad message", "subject=work-reply reason=bad_body chunk=%" PRId64 " detail=%s", l->chunk,
                sl_log_q(why));
        /* Hand it back as a failure: the fetcher counts it towards
         * --max-attempts, so a chunk that can never be read ends dead. */
        send_lease_msg(mp, SL_SUBJ_RELEASE, l, why);
        json_decref(in);
        return;
    }
    json_t *out = json_array();
    size_t i;
    json_t *obj;
    int64_t dead = 0;
    json_array_foreach(in, i, obj)
    {
        json_t *mapped = NULL;
        if (sl_transform_apply(mp->tf, obj, &mapped) != SL_OK) {
            dead_letter(mp, l, (int64_t)i, sl_errmsg(), obj);
            dead++;
            continue;
        }
        json_array_append_new(out, mapped);
    }
    json_decref(in);

    if (mp->cfg->work_ms > 0 || mp->cfg->work_jitter_ms > 0) {
        if (!simulate_work(mp, l)) {
            send_lease_msg(mp, SL_SUBJ_RELEASE, l, NULL);
            sl_info("stopping: chunk handed back", "chunk=%" PRId64, l->chunk);
            json_decref(out);
            return;
        }
    }

    char *body = json_dumps(out, JSON_COMPACT);
    natsMsg *m = sl_msg_new(sl_bus_subject(mp->bus, SL_SUBJ_MAPPED), NULL, body, strlen(body));
    sl_msg_set_int(m, SL_H_CHUNK, l->chunk);
    sl_msg_set_int(m, SL_H_ATTEMPT, l->attempt);
    sl_msg_set(m, SL_H_LEASE, l->token);
    sl_msg_set_int(m, SL_H_COUNT, (int64_t)json_array_size(out));
    sl_msg_set_int(m, SL_H_DEAD, dead);
    sl_status st = sl_bus_publish(mp->bus, m);
    if (st != SL_OK) {
        sl_warn("mapped chunk not sent", "chunk=%" PRId64 " error=%s", l->chunk, sl_log_q(sl_errmsg()));
        /* Nothing to do: the lease expires and the chunk comes back. */
    } else {
        mp->chunks++;
        mp->objects += (int64_t)json_array_size(out);
        mp->dead += dead;
        sl_debug("chunk mapped", "chunk=%" PRId64 " attempt=%" PRId64 " count=%zu dead=%" PRId64, l->chunk,
                 l->attempt, json_array_size(out), dead);
    }
    natsMsg_Destroy(m);
    free(body);
    json_decref(out);
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
    l->token = sl_msg_str(reply, SL_H_LEASE);
    if (!sl_proto_token_ok(l->token)) {
        snprintf(why, whylen, "header Sluice-Lease is not a lease token");
        return false;
    }
    return true;
}

/* Asks P.work and waits for the reply in short slices, so a stop request
 * is noticed at once even while the fetcher is silent. Any reply on the
 * inbox is a real answer of the fetcher's (a late one to an earlier request
 * included): a chunk reply is a lease, whoever asked for it. */
static sl_status ask(mapper *mp, natsMsg **reply)
{
    natsMsg *req = sl_msg_new(sl_bus_subject(mp->bus, SL_SUBJ_WORK), (const char *)mp->inbox, NULL, 0);
    sl_msg_set(req, SL_H_WORKER, mp->worker);
    sl_status st = sl_bus_publish(mp->bus, req);
    natsMsg_Destroy(req);
    if (st)
        return st;
    int64_t deadline = sl_now_ms() + REQUEST_TIMEOUT_MS;
    while (!sl_stop_requested()) {
        natsMsg *m = NULL;
        natsStatus s = natsSubscription_NextMsg(&m, mp->replies, 100);
        if (s == NATS_OK) {
            if (natsMsg_IsNoResponders(m)) {
                natsMsg_Destroy(m);
                return sl_fail(SL_ENOTFOUND, "nobody listens on %s", sl_bus_subject(mp->bus, SL_SUBJ_WORK));
            }
            *reply = m;
            return SL_OK;
        }
        if (s != NATS_TIMEOUT)
            return sl_nats_fail(s, "waiting for the fetcher");
        if (sl_now_ms() >= deadline)
            return sl_fail(SL_ETIMEOUT, "no reply from the fetcher within %d ms", REQUEST_TIMEOUT_MS);
    }
    return sl_fail(SL_ETIMEOUT, "stopping");
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
    if (sl_bus_open(&mp.bus, cfg, "sluice-mapper") != SL_OK) {
        fprintf(stderr, "sluice mapper: %s\n", sl_errmsg());
        goto cleanup;
    }
    natsStatus ns;
    if ((ns = natsInbox_Create(&mp.inbox)) != NATS_OK ||
        (ns = natsConnection_SubscribeSync(&mp.replies, sl_bus_nc(mp.bus), (const char *)mp.inbox)) != NATS_OK) {
        sl_nats_fail(ns, "reply inbox");
        sl_error("cannot subscribe", "error=%s", sl_log_q(sl_errmsg()));
        goto cleanup;
    }
    sl_info("mapper started", "job=%s transform=%s worker=%s work_ms=%" PRId64, cfg->job, cfg->transform,
            mp.worker, cfg->work_ms);

    int64_t backoff = 50;
    bool said_waiting = false, said_done = false;
    while (!sl_stop_requested()) {
        natsMsg *reply = NULL;
        sl_status st = ask(&mp, &reply);
        if (st != SL_OK) {
            if (sl_stop_requested())
                break;
            /* No fetcher yet, or it restarts, or NATS is away: ask again
             * later, backing off up to a second. */
            if (!said_waiting)
                sl_info("waiting for the fetcher", "reason=%s", sl_log_q(sl_errmsg()));
            said_waiting = true;
            sl_stop_sleep(backoff);
            backoff = backoff * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : backoff * 2;
            continue;
        }
        backoff = 50;
        said_waiting = false;
        const char *status = sl_msg_str(reply, SL_H_STATUS);
        int64_t retry = 100;
        if (sl_msg_int(reply, SL_H_RETRY_MS, 1, 60000, &retry) != SL_OK)
            retry = 100;
        if (status && !strcmp(status, SL_STATUS_CHUNK)) {
            lease l;
            char why[256];
            said_done = false;
            if (read_lease(reply, &l, why, sizeof why))
                process(&mp, reply, &l);
            else {
                mp.bad_messages++;
                sl_warn("bad message", "subject=work-reply reason=bad_header detail=%s", sl_log_q(why));
                sl_stop_sleep(retry);
            }
        } else if (status && !strcmp(status, SL_STATUS_WAIT)) {
            sl_stop_sleep(retry);
        } else if (status && !strcmp(status, SL_STATUS_DONE)) {
            /* A standalone mapper outlives a job: the next one may start. */
            if (!said_done)
                sl_info("job done; waiting for more work", "chunks=%" PRId64 " objects=%" PRId64, mp.chunks,
                        mp.objects);
            said_done = true;
            sl_stop_sleep(retry);
        } else {
            mp.bad_messages++;
            sl_warn("bad message", "subject=work-reply reason=bad_status status=%s",
                    sl_log_q(status ? status : "(none)"));
            sl_stop_sleep(retry);
        }
        natsMsg_Destroy(reply);
    }
    rc = 0;
    sl_info("mapper stopped", "chunks=%" PRId64 " objects=%" PRId64 " dead=%" PRId64 " bad_messages=%" PRId64,
            mp.chunks, mp.objects, mp.dead, mp.bad_messages);
cleanup:
    natsSubscription_Destroy(mp.replies);
    sl_bus_close(mp.bus, 2000);
    natsInbox_Destroy(mp.inbox);
    sl_transform_destroy(mp.tf);
    return rc;
}
