/* bus.c - connecting to NATS and speaking through it. */
#include "bus.h"
#include "clock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "log.h"
#include "url.h"


struct sl_bus {
    natsConnection *nc;
    natsSubscription *subs[SL_SUBJ_COUNT]; /* at most one per subject */
    atomic_llong reconnects;
    atomic_bool closing; /* a disconnect is then expected, not news */
    char subjects[SL_SUBJ_COUNT][256];
    /* nats.c calls its connection callbacks from its own thread, the
     * "closed" one last: the bus is freed only after it ran. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool closed;
};

static void on_closed(natsConnection *nc, void *closure)
{
    struct sl_bus *bus = closure;
    (void)nc;
    pthread_mutex_lock(&bus->mu);
    bus->closed = true;
    pthread_cond_signal(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
}

/* Connections with a signature made before an authorization failure is
 * believed (sl_bus_open). */
#define SIGNED_CONNECT_TRIES 4

/* nats.c's last error, without the "(conn.c:2088): " it starts with. */
static const char *nats_detail(natsStatus s)
{
    const char *d = nats_GetLastError(NULL);
    if (!d || !d[0])
        return natsStatus_GetText(s);
    if (d[0] == '(') {
        const char *end = strstr(d, "): ");
        if (end)
            d = end + 3;
    }
    return d;
}

sl_status sl_nats_fail(natsStatus s, const char *what)
{
    return sl_fail(SL_ENATS, "%s: %s", what, nats_detail(s));
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    struct sl_bus *bus = closure;
    (void)nc;
    if (!atomic_load(&bus->closing))
        sl_warn("disconnected from NATS", NULL);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    struct sl_bus *bus = closure;
    char url[256] = "", shown[256];
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    sl_url_redact(url, shown, sizeof shown);
    atomic_fetch_add(&bus->reconnects, 1);
    sl_info("reconnected to NATS", "url=%s", sl_log_q(shown));
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)closure;
    int64_t dropped = 0;
    if (sub)
        natsSubscription_GetDropped(sub, &dropped);
    /* The server's own words say what was refused, e.g. which subject a
     * permission does not allow. */
    const char *text = NULL;
    natsConnection_GetLastError(nc, &text);
    sl_warn("NATS asynchronous error", "error=%s detail=%s dropped=%lld", sl_log_q(natsStatus_GetText(err)),
            sl_log_q(text && text[0] ? text : ""), (long long)dropped);
}

/* True if any URL of the list asks for TLS (tls://): nats.c 3.4 ignores the
 * scheme and would connect in clear to a server without TLS. */
static bool wants_tls(const char *urls)
{
    for (const char *p = urls; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!strncasecmp(p, "tls://", 6))
            return true;
        p = strchr(p, ',');
    }
    return false;
}

/* Splits "a,b , c" into the servers nats.c wants. */
static sl_status set_servers(natsOptions *o, const char *urls)
{
    char *copy = sl_xstrdup(urls);
    const char *list[64];
    int n = 0;
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        char *e = t + strlen(t);
        while (e > t && e[-1] == ' ')
            *--e = '\0';
        if (*t && n < 64)
            list[n++] = t;
    }
    natsStatus s = n ? natsOptions_SetServers(o, list, n) : NATS_INVALID_ARG;
    free(copy);
    if (s != NATS_OK) {
        char shown[512];
        sl_url_redact(urls, shown, sizeof shown);
        return sl_fail(SL_EINVAL, "NATS_URL \"%s\" is not a valid server list", shown);
    }
    return SL_OK;
}

sl_status sl_bus_open(sl_bus **out, const sl_config *cfg, const char *name)
{
    natsOptions *o = NULL;
    sl_bus *bus = sl_xcalloc(1, sizeof *bus);
    pthread_mutex_init(&bus->mu, NULL);
    pthread_cond_init(&bus->cond, NULL);
    sl_status st = SL_OK;
    natsStatus s;

    for (int i = 0; i < SL_SUBJ_COUNT; i++)
        sl_proto_subject(bus->subjects[i], sizeof bus->subjects[i], cfg->job, (sl_subject)i);

    if ((s = natsOptions_Create(&o)) != NATS_OK) {
        st = sl_nats_fail(s, "nats options");
        goto cleanup;
    }
    if ((st = set_servers(o, cfg->nats_url)))
        goto cleanup;
    natsOptions_SetName(o, name);
    /* Without SendAsap every request waits for nats.c's flusher (~1 ms). */
    natsOptions_SetSendAsap(o, true);
    natsOptions_SetIOBufSize(o, 256 * 1024);
    natsOptions_SetTimeout(o, cfg->connect_timeout_ms);
    natsOptions_SetAllowReconnect(o, true);
    natsOptions_SetMaxReconnect(o, -1);
    natsOptions_SetReconnectWait(o, 200);
    natsOptions_SetReconnectBufSize(o, 64 * 1024 * 1024);
    natsOptions_SetMaxPendingMsgs(o, 65536);
    natsOptions_SetDisconnectedCB(o, on_disconnected, bus);
    natsOptions_SetReconnectedCB(o, on_reconnected, bus);
    natsOptions_SetErrorHandler(o, on_error, bus);
    natsOptions_SetClosedCB(o, on_closed, bus);
    if (cfg->nats_user[0] && (s = natsOptions_SetUserInfo(o, cfg->nats_user, cfg->nats_password)) != NATS_OK) {
        st = sl_nats_fail(s, "NATS user");
        goto cleanup;
    }
    if (cfg->nats_token[0] && (s = natsOptions_SetToken(o, cfg->nats_token)) != NATS_OK) {
        st = sl_nats_fail(s, "NATS token");
        goto cleanup;
    }
    if (cfg->nats_creds[0] &&
        (s = natsOptions_SetUserCredentialsFromFiles(o, cfg->nats_creds, NULL)) != NATS_OK) {
        st = sl_nats_fail(s, "NATS credentials file");
        goto cleanup;
    }
    if (cfg->nats_nkey[0] || cfg->nats_nkey_seed[0]) {
        if (!cfg->nats_nkey[0] || !cfg->nats_nkey_seed[0]) {
            st = sl_fail(SL_EINVAL, "NATS_NKEY (the public key) and NATS_NKEY_SEED (the seed file) go together");
            goto cleanup;
        }
        if ((s = natsOptions_SetNKeyFromSeed(o, cfg->nats_nkey, cfg->nats_nkey_seed)) != NATS_OK) {
            st = sl_nats_fail(s, "NATS NKey seed file");
            goto cleanup;
        }
    }
    if (cfg->nats_ca[0] || cfg->nats_cert[0] || wants_tls(cfg->nats_url)) {
        if ((s = natsOptions_SetSecure(o, true)) != NATS_OK) {
            st = sl_nats_fail(s, "NATS TLS");
            goto cleanup;
        }
        if (cfg->nats_ca[0] && (s = natsOptions_LoadCATrustedCertificates(o, cfg->nats_ca)) != NATS_OK) {
            st = sl_nats_fail(s, "NATS CA file");
            goto cleanup;
        }
        if (cfg->nats_cert[0] &&
            (s = natsOptions_LoadCertificatesChain(o, cfg->nats_cert, cfg->nats_key)) != NATS_OK) {
            st = sl_nats_fail(s, "NATS client certificate");
            goto cleanup;
        }
    }
    /* nats.c before 3.8 (Debian 12 has 3.4.1) leaves the signature of the
     * server's nonce out of CONNECT when its first byte is 0 - one signed
     * connection in 256 - and the server refuses it as unauthorized
     * (nats.c #705). A new connection signs a new nonce, so a signed
     * connection refused so is made again a few times before the refusal
     * counts; wrong credentials still fail within milliseconds. */
    bool signs = cfg->nats_creds[0] || cfg->nats_nkey[0];
    for (int tries = 1; (s = natsConnection_Connect(&bus->nc, o)) == NATS_CONNECTION_AUTH_FAILED && signs &&
                        tries < SIGNED_CONNECT_TRIES;
         tries++)
        ;
    if (s != NATS_OK) {
        char shown[512];
        sl_url_redact(cfg->nats_url, shown, sizeof shown);
        /* A server that wants a client certificate it trusts closes the
         * connection after the handshake; nats.c only sees a missing PONG. */
        bool tls = cfg->nats_ca[0] || cfg->nats_cert[0] || wants_tls(cfg->nats_url);
        st = sl_fail(SL_ENATS, "cannot connect to NATS at %s: %s%s", shown, nats_detail(s),
                     tls && s == NATS_PROTOCOL_ERROR
                         ? "; the server closed the connection after the TLS handshake: it may require a client "
                           "certificate (NATS_CERT/NATS_KEY) that it trusts"
                         : "");
        goto cleanup;
    }
    *out = bus;
    bus = NULL;
cleanup:
    natsOptions_Destroy(o);
    if (bus)
        sl_bus_close(bus, 0);
    return st;
}

natsConnection *sl_bus_nc(sl_bus *bus)
{
    return bus->nc;
}

const char *sl_bus_subject(const sl_bus *bus, sl_subject s)
{
    return bus->subjects[s];
}

sl_status sl_bus_publish(sl_bus *bus, natsMsg *m)
{
    natsStatus s = natsConnection_PublishMsg(bus->nc, m);
    if (s != NATS_OK)
        return sl_nats_fail(s, "publish");
    return SL_OK;
}

sl_status sl_bus_request(sl_bus *bus, natsMsg *req, int64_t timeout_ms, natsMsg **reply)
{
    natsMsg *r = NULL;
    natsStatus s = natsConnection_RequestMsg(&r, bus->nc, req, timeout_ms);
    if (s == NATS_TIMEOUT)
        return sl_fail(SL_ETIMEOUT, "no reply on %s within %lld ms", natsMsg_GetSubject(req),
                       (long long)timeout_ms);
    if (s == NATS_NO_RESPONDERS)
        return sl_fail(SL_ENOTFOUND, "nobody listens on %s", natsMsg_GetSubject(req));
    if (s != NATS_OK)
        return sl_nats_fail(s, "request");
    *reply = r;
    return SL_OK;
}

sl_status sl_bus_subscribe(sl_bus *bus, sl_subject subj, const char *queue, natsMsgHandler cb,
                           void *closure)
{
    SL_ASSERT(!bus->subs[subj]);
    natsSubscription *sub = NULL;
    natsStatus s = queue ? natsConnection_QueueSubscribe(&sub, bus->nc, bus->subjects[subj], queue, cb, closure)
                         : natsConnection_Subscribe(&sub, bus->nc, bus->subjects[subj], cb, closure);
    if (s != NATS_OK)
        return sl_nats_fail(s, bus->subjects[subj]);
    /* How much may wait in this process. Mapped chunks are big and a saver
     * holds few: a stalled saver must not grow without bound. What goes
     * over is dropped by nats.c (logged as a slow consumer) and comes back
     * by redelivery. The fetcher's small messages may queue deeper. */
    if (subj == SL_SUBJ_MAPPED)
        natsSubscription_SetPendingLimits(sub, 256, 32 * 1024 * 1024);
    else
        natsSubscription_SetPendingLimits(sub, 65536, 64 * 1024 * 1024);
    bus->subs[subj] = sub;
    return SL_OK;
}

void sl_bus_unsubscribe(sl_bus *bus, sl_subject subj)
{
    if (!bus->subs[subj])
        return;
    natsSubscription_Unsubscribe(bus->subs[subj]);
    natsSubscription_Destroy(bus->subs[subj]);
    bus->subs[subj] = NULL;
}

bool sl_bus_subscribed(const sl_bus *bus, sl_subject subj)
{
    return bus->subs[subj] != NULL;
}

bool sl_bus_connected(sl_bus *bus)
{
    return natsConnection_Status(bus->nc) == NATS_CONN_STATUS_CONNECTED;
}

int64_t sl_bus_max_payload(sl_bus *bus)
{
    return natsConnection_GetMaxPayload(bus->nc);
}

int64_t sl_bus_reconnects(const sl_bus *bus)
{
    return atomic_load(&((sl_bus *)bus)->reconnects);
}

static bool connected(const sl_bus *bus)
{
    return bus->nc && natsConnection_Status(bus->nc) == NATS_CONN_STATUS_CONNECTED;
}

void sl_bus_drain(sl_bus *bus, int64_t timeout_ms)
{
    if (!bus)
        return;
    atomic_store(&bus->closing, true);
    /* Draining lets a callback that is mid-message finish (a saver in its
     * transaction) before anything it uses is freed; without a timeout the
     * subscriptions are just dropped. Every subscription drains at once,
     * within one deadline, and the wait ends when the server goes away:
     * then nothing more can arrive, and waiting out the timeout once per
     * subscription kept a fetcher alive 10 s after its run was killed. */
    if (!connected(bus))
        timeout_ms = 0;
    int64_t deadline = sl_now_ms() + timeout_ms;
    bool draining[SL_SUBJ_COUNT] = {false};
    for (int i = 0; i < SL_SUBJ_COUNT; i++) {
        if (!bus->subs[i])
            continue;
        if (timeout_ms > 0 && natsSubscription_DrainTimeout(bus->subs[i], timeout_ms) == NATS_OK)
            draining[i] = true;
        else
            natsSubscription_Unsubscribe(bus->subs[i]);
    }
    for (int i = 0; i < SL_SUBJ_COUNT; i++) {
        while (draining[i] && natsSubscription_WaitForDrainCompletion(bus->subs[i], 20) == NATS_TIMEOUT) {
            if (sl_now_ms() >= deadline || !connected(bus)) {
                sl_warn("subscription did not drain", "subject=%s", natsSubscription_GetSubject(bus->subs[i]));
                break;
            }
        }
    }
    for (int i = 0; i < SL_SUBJ_COUNT; i++) {
        natsSubscription_Destroy(bus->subs[i]);
        bus->subs[i] = NULL;
    }
}

void sl_bus_close(sl_bus *bus, int64_t timeout_ms)
{
    if (!bus)
        return;
    sl_bus_drain(bus, timeout_ms);
    sl_msg_flush();
    if (timeout_ms > 0 && connected(bus))
        natsConnection_FlushTimeout(bus->nc, timeout_ms);
    if (bus->nc) {
        natsConnection_Close(bus->nc);
        /* Wait (bounded) for the closed callback: after it, nats.c calls
         * nothing of ours that could touch the bus. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        pthread_mutex_lock(&bus->mu);
        while (!bus->closed && pthread_cond_timedwait(&bus->cond, &bus->mu, &until) == 0)
            ;
        bool closed = bus->closed;
        pthread_mutex_unlock(&bus->mu);
        natsConnection_Destroy(bus->nc);
        if (!closed)
            return; /* leak rather than risk a late callback on freed memory */
    }
    pthread_cond_destroy(&bus->cond);
    pthread_mutex_destroy(&bus->mu);
    free(bus);
}
