/* test_hostile.c - a table of bad messages on every subject a sluice
 * process listens on, sent with a plain NATS client, one row at a time.
 *
 * For each row the test waits until the receiver has counted it under the
 * reason the table says (fetcher: P.status bad_messages; mapper and saver:
 * sluice_bad_messages_total{reason} on /metrics) and checks that no other
 * reason moved, so a row counted under the wrong reason, or twice, fails
 * with the row's name. Rows that are not bad at all for the receiver (a
 * saver stores any well-formed mapped array, whatever the token) say what
 * must happen instead, and the test waits for that.
 *
 * Who gets what:
 *   - the fetcher of job "default" (2000 objects, 20 chunks): P.work,
 *     P.progress, P.release, P.saved, P.status; forged tokens, a real token
 *     replayed for another chunk, a token from the fetcher of job "other";
 *   - the saver of job "default": P.mapped and P.dead. Mapped arrays that
 *     parse are stored, under chunk numbers >= 1000000 that no real chunk
 *     has, and their P.saved reaches the fetcher, which refuses it (chunk
 *     out of range);
 *   - a mapper of job "evil", whose fetcher is the test itself, answering
 *     P.work with the table's replies, one per row; its saver (job "evil",
 *     a sink of its own) acknowledges its dead letters and stores its
 *     results.
 * The server's max_payload is 8 MB, so bodies of a few MB get through;
 * bigger ones are refused by the client (NATS_MAX_PAYLOAD) or, sent on a
 * raw socket, by the server.
 *
 * Afterwards every process is still running; before any real mapper has
 * run, no chunk is done; then a real mapper does the job, and the sink
 * holds exactly the generator's 2000 users plus the rows the table put
 * there on purpose, which the test checks and removes before
 * tp_verify_sink. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "pipeline.h"
#include "proto.h"
#include "test.h"

#define MB (1024 * 1024)
#define MAX_PAYLOAD (8 * MB)
#define CHUNKS 20
#define FAKE_CHUNK 1000000 /* first chunk number the table's mapped bodies use */

static const char *forged = "0123456789abcdef0123456789abcdef";

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- messages ------------------------------------------------------------ */

/* A row's headers: up to 8 (key, value) pairs; a NULL key ends them, a
 * NULL value leaves that header out (the "missing" rows). */
typedef struct {
    const char *k, *v;
} hdr;
#define MAXH 8

static natsMsg *make_msg(const char *subj, const char *reply, const char *body, size_t len, const hdr *h)
{
    natsMsg *m = NULL;
    CHECK(natsMsg_Create(&m, subj, reply, body, (int)len) == NATS_OK);
    for (int i = 0; i < MAXH && h[i].k; i++)
        if (h[i].v)
            CHECK(natsMsgHeader_Set(m, h[i].k, h[i].v) == NATS_OK);
    return m;
}

static void send_msg(natsConnection *nc, const char *subj, const char *body, size_t len, const hdr *h)
{
    natsMsg *m = make_msg(subj, NULL, body, len, h);
    natsStatus s = natsConnection_PublishMsg(nc, m);
    CHECK_MSG(s == NATS_OK, "publish %s: %s", subj, natsStatus_GetText(s));
    CHECK(natsConnection_Flush(nc) == NATS_OK);
    natsMsg_Destroy(m);
}

/* A body of n bytes: `fill` repeated between `head` and `tail`. */
static char *big_body(const char *head, char fill, size_t n, const char *tail)
{
    size_t hl = strlen(head), tl = strlen(tail);
    CHECK(n >= hl + tl);
    char *b = malloc(n + 1);
    CHECK(b);
    memcpy(b, head, hl);
    memset(b + hl, fill, n - hl - tl);
    memcpy(b + n - tl, tail, tl);
    b[n] = '\0';
    return b;
}

/* ---- the fetcher's counters ----------------------------------------------- */

enum { NO_REPLY, BAD_HEADER, UNKNOWN_LEASE, STALE_LEASE, NBAD };
static const char *const bad_names[NBAD] = {"no_reply", "bad_header", "unknown_lease", "stale_lease"};

static void fetcher_bad(natsConnection *nc, int64_t out[NBAD])
{
    json_t *st = NULL;
    for (int i = 0; i < 5 && !(st = tp_status(nc)); i++)
        ;
    CHECK_MSG(st, "the fetcher does not answer P.status");
    for (int i = 0; i < NBAD; i++)
        out[i] = tp_stat(st, "bad_messages", bad_names[i]);
    json_decref(st);
}

/* Waits until the fetcher's counter `want` is one more than in before[]
 * and checks that the others did not move. */
static void expect_fetcher(natsConnection *nc, const char *row, const int64_t before[NBAD], int want)
{
    int64_t now[NBAD];
    int64_t deadline = th_now_ms() + 5000;
    for (;;) {
        fetcher_bad(nc, now);
        if (now[want] > before[want] || th_now_ms() > deadline)
            break;
        nap_ms(5);
    }
    for (int i = 0; i < NBAD; i++)
        CHECK_MSG(now[i] == before[i] + (i == want),
                  "row \"%s\": fetcher bad_messages.%s went %lld -> %lld (expected only %s to count, once)", row,
                  bad_names[i], (long long)before[i], (long long)now[i], bad_names[want]);
}

/* ---- a role's /metrics ------------------------------------------------- */

/* The value of sluice_bad_messages_total{...,reason="<reason>"}, 0 if the
 * line is not there yet. */
static double bad_metric(int port, const char *reason)
{
    char url[64], label[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    snprintf(label, sizeof label, "reason=\"%s\"}", reason);
    char *body = NULL;
    long code = tp_http_get(url, &body);
    CHECK_MSG(code == 200, "GET %s: %ld", url, code);
    double v = 0;
    for (const char *l = body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *eol = strchr(l, '\n');
        const char *at = strstr(l, label);
        if (!strncmp(l, "sluice_bad_messages_total{", 26) && at && (!eol || at < eol)) {
            v = strtod(at + strlen(label), NULL);
            break;
        }
    }
    free(body);
    return v;
}

typedef struct {
    int port;
    const char *const *reasons; /* NULL-terminated */
    double v[4];
} role_bad;

static void role_snap(role_bad *r)
{
    for (int i = 0; r->reasons[i]; i++)
        r->v[i] = bad_metric(r->port, r->reasons[i]);
}

/* Waits until `want` (NULL: nothing) counted one more than in the snapshot
 * r, and checks the other reasons stayed; leaves the new values in r. */
static void expect_role(role_bad *r, const char *who, const char *row, const char *want)
{
    role_bad now = *r;
    int64_t deadline = th_now_ms() + (want ? 5000 : 0);
    for (;;) {
        role_snap(&now);
        int done = 1;
        for (int i = 0; r->reasons[i]; i++)
            if (want && !strcmp(r->reasons[i], want) && now.v[i] <= r->v[i])
                done = 0;
        if (done || th_now_ms() > deadline)
            break;
        nap_ms(5);
    }
    for (int i = 0; r->reasons[i]; i++) {
        double wanted = r->v[i] + (want && !strcmp(r->reasons[i], want));
        CHECK_MSG(now.v[i] == wanted, "row \"%s\": %s bad_messages{reason=%s} went %g -> %g (expected %s)", row,
                  who, r->reasons[i], r->v[i], now.v[i], want ? want : "nothing counted");
    }
    *r = now;
}

/* ---- leases the test takes itself ------------------------------------ */

typedef struct {
    int64_t chunk;
    char token[SL_LEASE_LEN + 1];
} lease;

/* Asks P.work of `job` as a mapper would; returns the Sluice-Status and,
 * on "chunk", the lease. The body and headers of the request are the
 * caller's. */
static const char *ask_work(natsConnection *nc, const char *job, const char *body, size_t len, const hdr *h,
                            lease *l)
{
    char subj[128];
    snprintf(subj, sizeof subj, "sluice.%s.work", job);
    static char status[16];
    natsMsg *req = make_msg(subj, NULL, body, len, h), *reply = NULL;
    natsStatus s = natsConnection_RequestMsg(&reply, nc, req, 5000);
    CHECK_MSG(s == NATS_OK, "P.work of job %s: %s", job, natsStatus_GetText(s));
    const char *v = NULL;
    natsMsgHeader_Get(reply, SL_H_STATUS, &v);
    snprintf(status, sizeof status, "%s", v ? v : "");
    if (l && !strcmp(status, "chunk")) {
        natsMsgHeader_Get(reply, SL_H_CHUNK, &v);
        l->chunk = atoll(v);
        natsMsgHeader_Get(reply, SL_H_LEASE, &v);
        CHECK(sl_proto_token_ok(v));
        snprintf(l->token, sizeof l->token, "%s", v);
    }
    natsMsg_Destroy(req);
    natsMsg_Destroy(reply);
    return status;
}

/* Hands a chunk back unfinished (P.release without a reason): not a
 * failure, and counted as released, not as a bad message. */
static void give_back(natsConnection *nc, const lease *l)
{
    char c[24];
    snprintf(c, sizeof c, "%lld", (long long)l->chunk);
    send_msg(nc, "sluice.default.release", NULL, 0, (hdr[]){{SL_H_CHUNK, c}, {SL_H_LEASE, l->token}, {NULL, NULL}});
}

/* ---- the fake fetcher of job "evil" ------------------------------------ */

/* One scripted reply to the evil mapper's P.work. */
typedef struct {
    const char *what;
    hdr h[MAXH];
    const char *body;
    size_t len;
} reply_row;

typedef struct {
    natsConnection *nc;
    _Atomic(const reply_row *) armed; /* the next reply, taken by one request */
    atomic_int served;
} fake_fetcher;

static void fake_work(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)sub;
    fake_fetcher *ff = closure;
    const reply_row *r = atomic_exchange(&ff->armed, NULL);
    static const hdr wait[] = {{SL_H_STATUS, "wait"}, {SL_H_RETRY_MS, "5"}, {NULL, NULL}};
    natsMsg *out = make_msg(natsMsg_GetReply(m), NULL, r ? r->body : NULL, r ? r->len : 0, r ? r->h : wait);
    natsConnection_PublishMsg(nc, out);
    natsMsg_Destroy(out);
    natsMsg_Destroy(m);
    if (r)
        atomic_fetch_add(&ff->served, 1);
}

/* Serves one row to the evil mapper and waits until it has taken it. */
static void serve(fake_fetcher *ff, const reply_row *r)
{
    int before = atomic_load(&ff->served);
    atomic_store(&ff->armed, r);
    int64_t deadline = th_now_ms() + 10000;
    while (atomic_load(&ff->served) == before) {
        CHECK_MSG(th_now_ms() < deadline, "row \"%s\": the evil mapper did not ask for work", r->what);
        nap_ms(2);
    }
}

/* ---- a raw client, for what nats.c refuses to send ---------------------- */

/* Sends a PUB announcing a body over max_payload on a bare TCP connection;
 * returns what the server answered (malloc'd). */
static char *raw_oversized_pub(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    CHECK(recv(fd, buf, sizeof buf - 1, 0) > 0); /* INFO */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\n"
                              "PUB sluice.default.saved %d\r\n", MAX_PAYLOAD + 1);
    CHECK(send(fd, cmd, strlen(cmd), MSG_NOSIGNAL) == (ssize_t)strlen(cmd));
    sl_buf got = SL_BUF_INIT;
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0)
        sl_buf_append(&got, buf, (size_t)n); /* until the server hangs up */
    close(fd);
    sl_buf_putc(&got, '\0');
    return got.data;
}

/* ---- the job ------------------------------------------------------------ */

typedef struct {
    th_nats *ns;
    natsConnection *nc;
    char *env_url;
    const char *env[2];
    th_proc *fetcher, *other, *saver, *evil_saver, *evil_mapper;
} world;

static th_proc *start(world *w, const char *name, const char *const *argv, const char *ready)
{
    th_proc *p = th_spawn(name, argv, w->env);
    th_proc_wait_log(p, ready, 15000);
    return p;
}

static void all_running(world *w, const char *when)
{
    th_proc *ps[] = {w->fetcher, w->other, w->saver, w->evil_saver, w->evil_mapper};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        char *log = th_proc_running(ps[i]) ? NULL : th_proc_log(ps[i]);
        CHECK_MSG(!log, "%s: %s is not running; its log ends:\n%s", when, th_proc_name(ps[i]),
                  log + (strlen(log) > 2000 ? strlen(log) - 2000 : 0));
    }
}

/* Stops p with SIGTERM and checks its exit code. The wait is long: a role
 * drains each subscription for up to 2 s on its way out (sl_bus_close), so
 * th_proc_stop's 5 s before SIGKILL can be too short under ASan.
 */
static void stopped(th_proc *p, int want)
{
    th_proc_kill(p, SIGTERM);
    int rc = th_proc_wait(p, 30000);
    if (rc == want)
        return;
    char *log = th_proc_log(p);
    CHECK_MSG(rc == want, "%s exited with %d, not %d; its log ends:\n%s", th_proc_name(p), rc, want,
              log + (strlen(log) > 3000 ? strlen(log) - 3000 : 0));
    free(log);
}

static int64_t count_rows(const char *db, const char *sql)
{
    sqlite3 *d = NULL;
    CHECK(sqlite3_open_v2(db, &d, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CHECK_MSG(sqlite3_prepare_v2(d, sql, -1, &q, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(d));
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    int64_t n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(d);
    return n;
}

/* ---- the rows ------------------------------------------------------------ */

/* Header values that are not a chunk number for the fetcher of a 20-chunk
 * job. (" 5" is not among them: nats.c trims the blanks around a header
 * value on receipt, so it arrives as "5"; see the row "chunk \" 5\"".) */
static const char *const bad_chunks[] = {
    "-1", "99999999999999999999", "1e3", "0x10", "+5", "20", "5.0", "\xd9\xa3" /* Arabic 3 */, "\xff", NULL,
};
/* Values that are not a lease token. */
static const char *const bad_tokens[] = {
    "zz", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcde",
    "0123456789abcdef0123456789abcdef0", "0123456789abcdef0123456789abcde\xff", NULL,
};

static void fetcher_rows(world *w, const lease *mine, const lease *other_job)
{
    natsConnection *nc = w->nc;
    const char *subjs[] = {"sluice.default.progress", "sluice.default.release", "sluice.default.saved"};
    int64_t before[NBAD];
    char row[256], mine_c[24], c7[] = "7";
    snprintf(mine_c, sizeof mine_c, "%lld", (long long)mine->chunk);

    /* Sluice-Chunk malformed, out of range or missing; then Sluice-Lease. */
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i <= (int)(sizeof bad_chunks / sizeof *bad_chunks) - 1; i++) {
            const char *v = bad_chunks[i];
            snprintf(row, sizeof row, "%s with Sluice-Chunk %s%s%s", subjs[s], v ? "\"" : "", v ? v : "missing",
                     v ? "\"" : "");
            fetcher_bad(nc, before);
            send_msg(nc, subjs[s], NULL, 0,
                     (hdr[]){{SL_H_CHUNK, v}, {SL_H_LEASE, forged}, {SL_H_COUNT, "1"}, {NULL, NULL}});
            expect_fetcher(nc, row, before, BAD_HEADER);
        }
        for (int i = 0; i <= (int)(sizeof bad_tokens / sizeof *bad_tokens) - 1; i++) {
            const char *v = bad_tokens[i];
            snprintf(row, sizeof row, "%s with Sluice-Lease %s", subjs[s], v ? v : "missing");
            fetcher_bad(nc, before);
            send_msg(nc, subjs[s], NULL, 0, (hdr[]){{SL_H_CHUNK, "1"}, {SL_H_LEASE, v}, {SL_H_COUNT, "1"}, {NULL, NULL}});
            expect_fetcher(nc, row, before, BAD_HEADER);
        }
    }
    /* P.saved's counts. */
    const char *bad_counts[] = {NULL, "-1", "2147483648", "abc", "1.5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_counts / sizeof *bad_counts; i++) {
        snprintf(row, sizeof row, "P.saved with Sluice-Count %s", bad_counts[i] ? bad_counts[i] : "missing");
        fetcher_bad(nc, before);
        send_msg(nc, subjs[2], NULL, 0,
                 (hdr[]){{SL_H_CHUNK, "1"}, {SL_H_LEASE, forged}, {SL_H_COUNT, bad_counts[i]}, {NULL, NULL}});
        expect_fetcher(nc, row, before, BAD_HEADER);
    }
    const char *bad_deads[] = {"-1", "x", "2147483648"};
    for (size_t i = 0; i < sizeof bad_deads / sizeof *bad_deads; i++) {
        snprintf(row, sizeof row, "P.saved with Sluice-Dead %s", bad_deads[i]);
        fetcher_bad(nc, before);
        send_msg(nc, subjs[2], NULL, 0,
                 (hdr[]){{SL_H_CHUNK, "1"}, {SL_H_LEASE, forged}, {SL_H_COUNT, "1"}, {SL_H_DEAD, bad_deads[i]},
                         {NULL, NULL}});
        expect_fetcher(nc, row, before, BAD_HEADER);
    }

    /* Well-formed, but never issued for that chunk. */
    struct {
        const char *what, *subj, *chunk, *token, *reason;
        int want;
    } forgeries[] = {
        {"P.saved, forged token", subjs[2], "1", forged, NULL, UNKNOWN_LEASE},
        {"P.saved, chunk \" 5\" (arrives as \"5\"), forged token", subjs[2], " 5", forged, NULL, UNKNOWN_LEASE},
        {"P.saved, a real token replayed for another chunk", subjs[2], c7, mine->token, NULL, UNKNOWN_LEASE},
        {"P.saved, a token of job other's fetcher", subjs[2], "0", other_job->token, NULL, UNKNOWN_LEASE},
        {"P.saved, the other job's token for its own chunk", subjs[2], mine_c, other_job->token, NULL,
         UNKNOWN_LEASE},
        {"P.progress, a real token for another chunk", subjs[0], c7, mine->token, NULL, STALE_LEASE},
        {"P.progress, the other job's token", subjs[0], mine_c, other_job->token, NULL, STALE_LEASE},
        {"P.progress, forged token on a pending chunk", subjs[0], "3", forged, NULL, STALE_LEASE},
        {"P.release, a real token for another chunk", subjs[1], c7, mine->token, "x", STALE_LEASE},
        {"P.release, the other job's token", subjs[1], mine_c, other_job->token, "bad", STALE_LEASE},
    };
    for (size_t i = 0; i < sizeof forgeries / sizeof *forgeries; i++) {
        fetcher_bad(nc, before);
        send_msg(nc, forgeries[i].subj, NULL, 0,
                 (hdr[]){{SL_H_CHUNK, forgeries[i].chunk},
                         {SL_H_LEASE, forgeries[i].token},
                         {SL_H_COUNT, "100"},
                         {SL_H_REASON, forgeries[i].reason},
                         {NULL, NULL}});
        expect_fetcher(nc, forgeries[i].what, before, forgeries[i].want);
    }

    /* Requests without a reply subject. */
    fetcher_bad(nc, before);
    send_msg(nc, "sluice.default.work", NULL, 0, (hdr[]){{NULL, NULL}});
    expect_fetcher(nc, "P.work without a reply subject", before, NO_REPLY);
    fetcher_bad(nc, before);
    send_msg(nc, "sluice.default.status", "{}", 2, (hdr[]){{NULL, NULL}});
    expect_fetcher(nc, "P.status without a reply subject", before, NO_REPLY);

    /* Requests the fetcher serves anyway: a bad Sluice-Worker is counted,
     * a body is ignored. Each chunk served is handed back. */
    char *worker_3mb = big_body("", 'w', 3 * MB, "");
    char *garbage = big_body("\xff\xfe[{\"", '\x80', 3 * MB, "\xc3");
    struct {
        const char *what, *worker, *body;
        size_t len;
        int want; /* -1: nothing counted */
    } served[] = {
        {"P.work, Sluice-Worker with a quote", "evil\"worker", NULL, 0, BAD_HEADER},
        {"P.work, Sluice-Worker with a backslash", "evil\\worker", NULL, 0, BAD_HEADER},
        {"P.work, Sluice-Worker of 3 MB", worker_3mb, NULL, 0, BAD_HEADER},
        {"P.work, 3 MB of invalid UTF-8 as body", "w", garbage, 3 * MB, -1},
    };
    for (size_t i = 0; i < sizeof served / sizeof *served; i++) {
        fetcher_bad(nc, before);
        lease l;
        const char *st = ask_work(nc, "default", served[i].body, served[i].len,
                                  (hdr[]){{SL_H_WORKER, served[i].worker}, {NULL, NULL}}, &l);
        CHECK_MSG(!strcmp(st, "chunk"), "row \"%s\": Sluice-Status %s, not chunk", served[i].what, st);
        give_back(nc, &l);
        if (served[i].want >= 0) {
            expect_fetcher(nc, served[i].what, before, served[i].want);
        } else {
            int64_t now[NBAD];
            fetcher_bad(nc, now);
            CHECK_MSG(!memcmp(now, before, sizeof now), "row \"%s\": a bad message was counted", served[i].what);
        }
    }
    /* P.status with a big body of garbage is answered all the same. */
    natsMsg *r = NULL;
    natsMsg *req = make_msg("sluice.default.status", NULL, garbage, 3 * MB, (hdr[]){{NULL, NULL}});
    CHECK(natsConnection_RequestMsg(&r, nc, req, 5000) == NATS_OK);
    json_t *answer = json_loadb(natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r), 0, NULL);
    CHECK_MSG(json_is_object(answer), "row \"P.status with 3 MB of garbage\": the answer is not status JSON");
    json_decref(answer);
    natsMsg_Destroy(req), natsMsg_Destroy(r);
    free(worker_3mb);
    free(garbage);
}

static void saver_rows(world *w, role_bad *sv)
{
    natsConnection *nc = w->nc;
    const char *subj = "sluice.default.mapped";
    char row[256];
    int64_t before[NBAD];

    /* P.mapped headers: each wrong in turn, the rest right. */
    const struct {
        const char *key, *value;
    } bad_hdrs[] = {
        {SL_H_CHUNK, "-1"},       {SL_H_CHUNK, "99999999999999999999"}, {SL_H_CHUNK, "1e3"},
        {SL_H_CHUNK, "0x10"},     {SL_H_CHUNK, NULL},                   {SL_H_CHUNK, "\xff"},
        {SL_H_ATTEMPT, "0"},      {SL_H_ATTEMPT, "-1"},                 {SL_H_ATTEMPT, "2147483648"},
        {SL_H_ATTEMPT, NULL},     {SL_H_COUNT, NULL},                   {SL_H_COUNT, "-1"},
        {SL_H_COUNT, "2147483648"}, {SL_H_DEAD, "-1"},                  {SL_H_DEAD, "x"},
        {SL_H_LEASE, "zz"},       {SL_H_LEASE, NULL},                   {SL_H_LEASE, "0123456789ABCDEF0123456789ABCDEF"},
    };
    for (size_t i = 0; i < sizeof bad_hdrs / sizeof *bad_hdrs; i++) {
        hdr h[] = {{SL_H_CHUNK, "1000000"}, {SL_H_ATTEMPT, "1"}, {SL_H_LEASE, forged},
                   {SL_H_COUNT, "0"},       {SL_H_DEAD, "0"},    {NULL, NULL}};
        for (int k = 0; h[k].k; k++)
            if (!strcmp(h[k].k, bad_hdrs[i].key))
                h[k].v = bad_hdrs[i].value;
        snprintf(row, sizeof row, "P.mapped with %s %s", bad_hdrs[i].key,
                 bad_hdrs[i].value ? bad_hdrs[i].value : "missing");
        send_msg(nc, subj, "[]", 2, h);
        expect_role(sv, "saver", row, "bad_header");
    }

    /* P.mapped bodies that are not a JSON array (or not JSON). */
    char *deep = big_body("", '[', 100000, "");
    char *garbage = big_body("[\"", '\xff', 3 * MB, "\"]");
    const struct {
        const char *what, *body;
        size_t len;
    } bad_bodies[] = {
        {"invalid UTF-8", "[\"\xff\xfe\"]", 6},
        {"truncated JSON", "[{\"id\":\"a\"", 10},
        {"100,000 levels of [", deep, 100000},
        {"an object, not an array", "{\"id\":\"a\"}", 10},
        {"duplicate keys", "[{\"id\":\"a\",\"id\":\"b\"}]", 21},
        {"\\u0000 in a string", "[{\"id\":\"a\\u0000b\"}]", 19},
        {"an integer over 64 bits", "[{\"id\":99999999999999999999}]", 29},
        {"an empty body", "", 0},
        {"null", "null", 4},
        {"3 MB of invalid UTF-8", garbage, 3 * MB},
    };
    for (size_t i = 0; i < sizeof bad_bodies / sizeof *bad_bodies; i++) {
        snprintf(row, sizeof row, "P.mapped body: %s", bad_bodies[i].what);
        send_msg(nc, subj, bad_bodies[i].body, bad_bodies[i].len,
                 (hdr[]){{SL_H_CHUNK, "1000000"}, {SL_H_ATTEMPT, "1"}, {SL_H_LEASE, forged}, {SL_H_COUNT, "1"},
                         {NULL, NULL}});
        expect_role(sv, "saver", row, "bad_body");
    }
    free(deep);
    free(garbage);

    /* Arrays the saver stores, whatever the token (it cannot check it):
     * under chunk numbers no real chunk has, elements without a usable id
     * as saver dead letters. The confirmation goes to the fetcher, which
     * refuses it: that chunk is not in the job. */
    char *huge_id = big_body("[{\"id\":\"", 'i', 3 * MB, "\",\"name\":\"x\"}]");
    const struct {
        const char *what, *body;
    } stored[] = {
        {"ids of every wrong type",
         "[{\"id\":[1]},{\"id\":{\"a\":1}},{\"id\":1.5},{\"id\":true},{\"id\":false},{\"id\":null},{},"
         "{\"id\":\"\"},7,\"s\",null,[]]"},
        {"the same id twice", "[{\"id\":\"dup\",\"n\":1},{\"id\":\"dup\",\"n\":2}]"},
        {"a 3 MB id", huge_id},
        {"the smallest 64-bit id", "[{\"id\":-9223372036854775808}]"},
        {"ids beyond the BMP, escaped", "[{\"id\":\"\\ud83d\\ude00\\u00e9\",\"name\":\"\\\"\\\\\\n\"}]"},
    };
    for (size_t i = 0; i < sizeof stored / sizeof *stored; i++) {
        char c[24];
        snprintf(c, sizeof c, "%d", FAKE_CHUNK + 1 + (int)i);
        snprintf(row, sizeof row, "P.mapped array stored: %s", stored[i].what);
        fetcher_bad(nc, before);
        send_msg(nc, subj, stored[i].body, strlen(stored[i].body),
                 (hdr[]){{SL_H_CHUNK, c}, {SL_H_ATTEMPT, "1"}, {SL_H_LEASE, forged}, {SL_H_COUNT, "1"}, {NULL, NULL}});
        /* Its P.saved names a chunk the job does not have. */
        expect_fetcher(nc, row, before, BAD_HEADER);
        expect_role(sv, "saver", row, NULL);
    }
    free(huge_id);

    /* P.dead headers. */
    const struct {
        const char *what, *chunk, *object, *reason;
    } bad_dead[] = {
        {"P.dead without Sluice-Chunk", NULL, "1", "r"},
        {"P.dead with Sluice-Chunk -1", "-1", "1", "r"},
        {"P.dead with Sluice-Chunk 1e3", "1e3", "1", "r"},
        {"P.dead with Sluice-Chunk 99999999999999999999", "99999999999999999999", "1", "r"},
        {"P.dead with Sluice-Object -2", "1000010", "-2", "r"},
        {"P.dead with Sluice-Object 2147483648", "1000010", "2147483648", "r"},
        {"P.dead with Sluice-Object x", "1000010", "x", "r"},
        {"P.dead without Sluice-Reason", "1000010", "1", NULL},
        {"P.dead with an empty Sluice-Reason", "1000010", "1", ""},
    };
    for (size_t i = 0; i < sizeof bad_dead / sizeof *bad_dead; i++) {
        send_msg(nc, "sluice.default.dead", "x", 1,
                 (hdr[]){{SL_H_CHUNK, bad_dead[i].chunk},
                         {SL_H_OBJECT, bad_dead[i].object},
                         {SL_H_REASON, bad_dead[i].reason},
                         {NULL, NULL}});
        expect_role(sv, "saver", bad_dead[i].what, "bad_header");
    }

    /* P.dead that is well-formed: stored and acknowledged, a 3 MB reason
     * cut to 1024 bytes, bytes kept as they came. */
    char *reason = big_body("", 'r', 3 * MB, "");
    for (size_t k = 0; k + 1 < 3 * MB; k += 2)
        reason[k] = '\xc3', reason[k + 1] = '\xa9'; /* é, so the cut falls between characters */
    char *raw = big_body("\xff", '\x00', 3 * MB, "\xfe");
    const struct {
        const char *what, *chunk, *object;
    } stored_dead[] = {
        {"P.dead, 3 MB reason and binary body", "1000011", "3"},
        {"P.dead without Sluice-Object (a whole chunk)", "1000012", NULL},
    };
    for (size_t i = 0; i < sizeof stored_dead / sizeof *stored_dead; i++) {
        natsMsg *m = make_msg("sluice.default.dead", NULL, raw, 3 * MB,
                              (hdr[]){{SL_H_CHUNK, stored_dead[i].chunk},
                                      {SL_H_OBJECT, stored_dead[i].object},
                                      {SL_H_REASON, reason},
                                      {NULL, NULL}});
        natsMsg *ack = NULL;
        natsStatus s = natsConnection_RequestMsg(&ack, nc, m, 10000);
        CHECK_MSG(s == NATS_OK, "row \"%s\": no ack: %s", stored_dead[i].what, natsStatus_GetText(s));
        const char *v = NULL;
        natsMsgHeader_Get(ack, SL_H_CHUNK, &v);
        CHECK_STR(v, stored_dead[i].chunk);
        natsMsgHeader_Get(ack, SL_H_OBJECT, &v);
        CHECK_STR(v, stored_dead[i].object ? stored_dead[i].object : "-1");
        natsMsg_Destroy(m), natsMsg_Destroy(ack);
        expect_role(sv, "saver", stored_dead[i].what, NULL);
    }
    free(reason);
    free(raw);
}

static void mapper_rows(world *w, fake_fetcher *ff, role_bad *mp)
{
    char row[256];
    static const char *const good_lease = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    /* Replies that are not a usable P.work answer. */
    const struct {
        const char *what, *status;
    } bad_status[] = {{"reply without Sluice-Status", NULL}, {"Sluice-Status bogus", "bogus"},
                      {"Sluice-Status CHUNK (case)", "CHUNK"}, {"Sluice-Status \\xff", "\xff"}};
    for (size_t i = 0; i < sizeof bad_status / sizeof *bad_status; i++) {
        reply_row r = {bad_status[i].what, {{SL_H_STATUS, bad_status[i].status}, {SL_H_RETRY_MS, "5"}, {NULL, NULL}},
                       NULL, 0};
        serve(ff, &r);
        expect_role(mp, "mapper", r.what, "bad_status");
    }
    /* Chunk replies with a lease header wrong: the mapper publishes
     * nothing for them. */
    const struct {
        const char *key, *value;
    } bad_hdrs[] = {
        {SL_H_CHUNK, "-1"},       {SL_H_CHUNK, "99999999999999999999"}, {SL_H_CHUNK, "1e3"},
        {SL_H_CHUNK, "0x10"},     {SL_H_CHUNK, NULL},                   {SL_H_ATTEMPT, "0"},
        {SL_H_ATTEMPT, "2147483648"}, {SL_H_ATTEMPT, NULL},             {SL_H_LEASE_MS, "0"},
        {SL_H_LEASE_MS, "86400001"}, {SL_H_LEASE_MS, NULL},             {SL_H_LEASE, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        {SL_H_LEASE, NULL},       {SL_H_LEASE, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
    };
    for (size_t i = 0; i < sizeof bad_hdrs / sizeof *bad_hdrs; i++) {
        reply_row r = {row,
                       {{SL_H_STATUS, "chunk"},
                        {SL_H_CHUNK, "1"},
                        {SL_H_ATTEMPT, "1"},
                        {SL_H_LEASE, good_lease},
                        {SL_H_LEASE_MS, "10000"},
                        {SL_H_RETRY_MS, "5"},
                        {NULL, NULL}},
                       "[]",
                       2};
        for (int k = 0; r.h[k].k; k++)
            if (!strcmp(r.h[k].k, bad_hdrs[i].key))
                r.h[k].v = bad_hdrs[i].value;
        snprintf(row, sizeof row, "chunk reply with %s %s", bad_hdrs[i].key,
                 bad_hdrs[i].value ? bad_hdrs[i].value : "missing");
        serve(ff, &r);
        expect_role(mp, "mapper", row, "bad_header");
    }

    /* Chunk bodies that are not a JSON array, or whose framing headers
     * are wrong: handed back with a reason. */
    natsSubscription *release = NULL;
    CHECK(natsConnection_SubscribeSync(&release, w->nc, "sluice.evil.release") == NATS_OK);
    CHECK(natsConnection_Flush(w->nc) == NATS_OK);
    char *deep = big_body("", '[', 100000, "");
    char *garbage = big_body("[\"", '\xff', 3 * MB, "\"]");
    const struct {
        const char *what, *body;
        size_t len;
        const char *reason; /* in the P.release reason */
        const char *unit, *first, *counter; /* Sluice-Unit, Sluice-First; counter NULL: bad_body */
    } bad_bodies[] = {
        {"chunk body: invalid UTF-8", "[{\"uuid\":\"\xff\"}]", 14, "not JSON", NULL, NULL, NULL},
        {"chunk body: truncated JSON", "[{\"uuid\":\"a\",\"fn\":", 18, "not JSON", NULL, NULL, NULL},
        {"chunk body: 100,000 levels of [", deep, 100000, "not JSON", NULL, NULL, NULL},
        {"chunk body: an object", "{\"uuid\":\"a\"}", 12, "not a JSON array", NULL, NULL, NULL},
        {"chunk body: duplicate keys", "[{\"uuid\":\"a\",\"uuid\":\"b\",\"fn\":\"x\",\"ln\":\"y\"}]", 42, "not JSON", NULL, NULL, NULL},
        {"chunk body: empty", "", 0, "not JSON", NULL, NULL, NULL},
        {"chunk body: 3 MB of invalid UTF-8", garbage, 3 * MB, "not JSON", NULL, NULL, NULL},
        {"Sluice-Unit bogus", "{}\n", 3, "Sluice-Unit is unknown", "page", "1", "bad_header"},
        {"Sluice-Unit LINE (case)", "{}\n", 3, "Sluice-Unit is unknown", "LINE", "1", "bad_header"},
        {"Sluice-First without Sluice-Unit", "{}\n", 3, "Sluice-Unit is missing", NULL, "1", "bad_header"},
        {"Sluice-Unit without Sluice-First", "{}\n", 3, "Sluice-First missing", "line", NULL, "bad_header"},
        {"Sluice-First -1", "{}\n", 3, "Sluice-First out of range", "line", "-1", "bad_header"},
        {"Sluice-First 1e3", "{}\n", 3, "Sluice-First is not an integer", "element", "1e3", "bad_header"},
    };
    for (size_t i = 0; i < sizeof bad_bodies / sizeof *bad_bodies; i++) {
        char c[24];
        snprintf(c, sizeof c, "%d", 100 + (int)i);
        reply_row r = {bad_bodies[i].what,
                       {{SL_H_STATUS, "chunk"},
                        {SL_H_CHUNK, c},
                        {SL_H_ATTEMPT, "1"},
                        {SL_H_LEASE, good_lease},
                        {SL_H_LEASE_MS, "10000"},
                        {NULL, NULL}},
                       bad_bodies[i].body,
                       bad_bodies[i].len};
        int k = 5;
        if (bad_bodies[i].unit)
            r.h[k].k = SL_H_UNIT, r.h[k++].v = bad_bodies[i].unit;
        if (bad_bodies[i].first)
            r.h[k].k = SL_H_FIRST, r.h[k++].v = bad_bodies[i].first;
        r.h[k].k = NULL;
        serve(ff, &r);
        expect_role(mp, "mapper", r.what, bad_bodies[i].counter ? bad_bodies[i].counter : "bad_body");
        natsMsg *m = NULL;
        CHECK_MSG(natsSubscription_NextMsg(&m, release, 5000) == NATS_OK, "row \"%s\": no P.release", r.what);
        const char *v = NULL;
        natsMsgHeader_Get(m, SL_H_CHUNK, &v);
        CHECK_STR(v, c);
        natsMsgHeader_Get(m, SL_H_REASON, &v);
        CHECK_MSG(v && strstr(v, bad_bodies[i].reason), "row \"%s\": P.release reason %s", r.what, v ? v : "(none)");
        natsMsg_Destroy(m);
    }
    free(deep);
    free(garbage);
    natsSubscription_Destroy(release);

    /* Chunks that parse: every object either mapped or dead-lettered
     * alone, and the result confirmed by the evil saver. */
    natsSubscription *saved = NULL;
    CHECK(natsConnection_SubscribeSync(&saved, w->nc, "sluice.evil.saved") == NATS_OK);
    CHECK(natsConnection_Flush(w->nc) == NATS_OK);
    char *huge = big_body("[{\"uuid\":\"big\",\"fn\":\"", 'f', 3 * MB, "\",\"ln\":\"x\"}]");
    const struct {
        const char *what, *body, *count, *dead;
        const char *unit, *first; /* Sluice-Unit, Sluice-First, or NULL */
    } good_bodies[] = {
        {"chunk of wrong types",
         "[{\"uuid\":7,\"fn\":\"a\",\"ln\":\"b\"},{\"uuid\":\"u1\",\"fn\":{\"x\":1},\"ln\":\"b\"},"
         "{\"uuid\":\"u2\",\"fn\":\"a\",\"ln\":\"b\",\"friends\":\"not a list\"},{\"uuid\":\"u3\",\"fn\":\"a\",\"ln\":[\"b\"]},"
         "{\"uuid\":\"\",\"fn\":\"a\",\"ln\":\"b\"},null,\"s\",1.5,{\"uuid\":\"u4\",\"fn\":\"Zo\xc3\xab\",\"ln\":\"O'Brien\"}]",
         "2", "7", NULL, NULL},
        {"chunk with a 3 MB name", huge, "1", "0", NULL, NULL},
        {"a good chunk", "[{\"uuid\":\"g1\",\"fn\":\"Ann\",\"ln\":\"Lee\",\"friends\":[]}]", "1", "0", NULL, NULL},
        {"a line-framed chunk with a bad line",
         "{\"uuid\":\"l1\",\"fn\":\"A\",\"ln\":\"B\"}\n\n\xff not json\r\n[\n{\"uuid\":\"l2\",\"fn\":\"C\",\"ln\":\"D\"}", "2",
         "2", "line", "40"},
    };
    for (size_t i = 0; i < sizeof good_bodies / sizeof *good_bodies; i++) {
        char c[24];
        snprintf(c, sizeof c, "%d", 200 + (int)i);
        reply_row r = {good_bodies[i].what,
                       {{SL_H_STATUS, "chunk"},
                        {SL_H_CHUNK, c},
                        {SL_H_ATTEMPT, "1"},
                        {SL_H_LEASE, good_lease},
                        {SL_H_LEASE_MS, "10000"},
                        {NULL, NULL}},
                       good_bodies[i].body,
                       strlen(good_bodies[i].body)};
        if (good_bodies[i].unit) {
            r.h[5] = (hdr){SL_H_UNIT, good_bodies[i].unit};
            r.h[6] = (hdr){SL_H_FIRST, good_bodies[i].first};
            r.h[7] = (hdr){NULL, NULL};
        }
        serve(ff, &r);
        natsMsg *m = NULL;
        CHECK_MSG(natsSubscription_NextMsg(&m, saved, 20000) == NATS_OK, "row \"%s\": no P.saved", r.what);
        sl_saved_entry e;
        tp_saved_one(m, &e);
        CHECK_INT(e.chunk, ==, 200 + (int)i);
        CHECK_MSG(e.count == atoi(good_bodies[i].count), "row \"%s\": count %lld", r.what, (long long)e.count);
        CHECK_MSG(e.dead == atoi(good_bodies[i].dead), "row \"%s\": dead %lld", r.what, (long long)e.dead);
        natsMsg_Destroy(m);
        expect_role(mp, "mapper", r.what, NULL);
    }
    free(huge);
    natsSubscription_Destroy(saved);
}

SL_TEST(hostile_messages_on_every_subject, 120)
{
    world w = {0};
    char *conf = th_path("nats.conf");
    FILE *fp = fopen(conf, "w");
    CHECK(fp);
    fprintf(fp, "max_payload: %d\n", MAX_PAYLOAD);
    fclose(fp);
    const char *extra[] = {"-c", conf, NULL};
    w.ns = th_nats_start(extra);
    w.env_url = tp_env_url(th_nats_url(w.ns));
    w.env[0] = w.env_url;
    w.nc = tp_connect(th_nats_url(w.ns));
    CHECK_INT(natsConnection_GetMaxPayload(w.nc), ==, MAX_PAYLOAD);

    char *db = th_path("out.db"), *evil_db = th_path("evil.db");
    char *sink = tp_flag("sink", "sqlite:", "out.db"), *evil_sink = tp_flag("sink", "sqlite:", "evil.db");
    char *ledger = tp_flag("ledger", "", "default.ledger"), *other_ledger = tp_flag("ledger", "", "other.ledger");
    {
        const char *a[] = {"sluice", "fetcher", "--objects", "2000", "--linger", ledger, NULL};
        w.fetcher = start(&w, "fetcher", a, "fetcher started");
        const char *b[] = {"sluice", "fetcher", "--job", "other", "--objects", "2000", other_ledger, NULL};
        w.other = start(&w, "fetcher-other", b, "fetcher started");
        const char *c[] = {"sluice", "saver", "--http", "127.0.0.1:0", sink, NULL};
        w.saver = start(&w, "saver", c, "saver started");
        const char *d[] = {"sluice", "saver", "--job", "evil", evil_sink, NULL};
        w.evil_saver = start(&w, "saver-evil", d, "saver started");
    }
    fake_fetcher ff = {.nc = w.nc};
    natsSubscription *work = NULL;
    CHECK(natsConnection_Subscribe(&work, w.nc, "sluice.evil.work", fake_work, &ff) == NATS_OK);
    CHECK(natsConnection_Flush(w.nc) == NATS_OK);
    {
        const char *a[] = {"sluice", "mapper", "--job", "evil", "--http", "127.0.0.1:0", NULL};
        w.evil_mapper = start(&w, "mapper-evil", a, "mapper started");
    }
    tp_wait_stat(w.nc, "chunks", "total", CHUNKS, 10000);

    /* A real lease of each job, to replay and to forge with. */
    lease mine, other_job;
    CHECK_STR(ask_work(w.nc, "default", NULL, 0, (hdr[]){{NULL, NULL}}, &mine), "chunk");
    CHECK_STR(ask_work(w.nc, "other", NULL, 0, (hdr[]){{NULL, NULL}}, &other_job), "chunk");
    CHECK(strcmp(mine.token, other_job.token) != 0);

    fetcher_rows(&w, &mine, &other_job);
    all_running(&w, "after the fetcher's rows");

    static const char *const saver_reasons[] = {"bad_header", "bad_body", NULL};
    role_bad sv = {.port = tp_http_port(w.saver), .reasons = saver_reasons};
    role_snap(&sv);
    saver_rows(&w, &sv);
    all_running(&w, "after the saver's rows");

    static const char *const mapper_reasons[] = {"bad_header", "bad_body", "bad_status", NULL};
    role_bad mp = {.port = tp_http_port(w.evil_mapper), .reasons = mapper_reasons};
    role_snap(&mp);
    mapper_rows(&w, &ff, &mp);
    all_running(&w, "after the mapper's rows");

    /* Over max_payload: nats.c refuses to send it, and a raw client that
     * announces one is cut off by the server; nobody else notices. */
    {
        int64_t before[NBAD], after[NBAD];
        fetcher_bad(w.nc, before);
        char *body = big_body("", 'x', MAX_PAYLOAD + 1, "");
        natsMsg *m = make_msg("sluice.default.saved", NULL, body, MAX_PAYLOAD + 1,
                              (hdr[]){{SL_H_CHUNK, "1"}, {SL_H_LEASE, forged}, {SL_H_COUNT, "1"}, {NULL, NULL}});
        natsStatus s = natsConnection_PublishMsg(w.nc, m);
        CHECK_MSG(s == NATS_MAX_PAYLOAD, "publishing %d bytes: %s", MAX_PAYLOAD + 1, natsStatus_GetText(s));
        natsMsg_Destroy(m);
        free(body);
        CHECK(natsConnection_Status(w.nc) == NATS_CONN_STATUS_CONNECTED);
        char *said = raw_oversized_pub(th_nats_port(w.ns));
        CHECK_MSG(strstr(said, "Maximum Payload"), "the server answered: %s", said);
        free(said);
        CHECK(natsConnection_Flush(w.nc) == NATS_OK);
        fetcher_bad(w.nc, after);
        CHECK(!memcmp(before, after, sizeof before));
    }
    all_running(&w, "after the oversized messages");

    /* Nothing is done yet: no real mapper has run. */
    give_back(w.nc, &mine);
    json_t *st = tp_status(w.nc);
    CHECK(st);
    CHECK_INT(tp_stat(st, "chunks", "done"), ==, 0);
    CHECK_INT(tp_stat(st, "objects", "saved"), ==, 0);
    json_decref(st);

    /* Then the real work, through the same fetcher and saver. */
    const char *ma[] = {"sluice", "mapper", NULL};
    th_proc *mapper = start(&w, "mapper", ma, "mapper started");
    tp_wait_chunks(w.nc, "done", CHUNKS, 60000);
    st = tp_status(w.nc);
    CHECK(st);
    CHECK_INT(tp_stat(st, "chunks", "done"), ==, CHUNKS);
    CHECK_INT(tp_stat(st, "chunks", "dead"), ==, 0);
    CHECK_INT(tp_stat(st, "objects", "saved"), ==, 2000);
    json_decref(st);
    all_running(&w, "at the end");

    /* Every process stops cleanly: no sanitizer report, no crash. */
    natsSubscription_Destroy(work);
    th_proc *stop_zero[] = {mapper, w.evil_mapper, w.saver, w.evil_saver, w.fetcher};
    for (size_t i = 0; i < sizeof stop_zero / sizeof *stop_zero; i++)
        stopped(stop_zero[i], 0);
    stopped(w.other, 128 + SIGTERM); /* its job is not done */

    /* The sink: the table's own rows, exactly, under their chunk numbers... */
    CHECK_INT(count_rows(db, "SELECT count(*) FROM chunks WHERE idx < 20"), ==, CHUNKS);
    CHECK_INT(count_rows(db, "SELECT count(*) FROM chunks WHERE idx >= 1000000"), ==, 5);
    CHECK_INT(count_rows(db, "SELECT count(*) FROM objects WHERE chunk >= 1000000"), ==, 4);
    CHECK_INT(count_rows(db, "SELECT count(*) FROM objects WHERE id = '-9223372036854775808'"), ==, 1);
    CHECK_INT(count_rows(db, "SELECT count(*) FROM objects WHERE id = 'dup' AND doc LIKE '%\"n\":2%'"), ==, 1);
    CHECK_INT(count_rows(db, "SELECT count(*) FROM objects WHERE length(CAST(id AS BLOB)) > 3000000"), ==, 1);
    CHECK_INT(count_rows(db, "SELECT count(*) FROM dead_letters WHERE chunk = 1000001 AND stage = 'saver'"), ==,
              12);
    CHECK_INT(count_rows(db, "SELECT count(*) FROM dead_letters WHERE chunk = 1000011 AND stage = 'mapper'"
                             " AND object = 3 AND length(CAST(reason AS BLOB)) BETWEEN 1023 AND 1024"
                             " AND length(raw) = 3145728"),
              ==, 1);
    CHECK_INT(count_rows(db, "SELECT count(*) FROM dead_letters WHERE chunk = 1000012 AND stage = 'fetcher'"
                             " AND object = -1"),
              ==, 1);
    CHECK_INT(count_rows(db, "SELECT count(*) FROM dead_letters"), ==, 14);
    CHECK_INT(count_rows(evil_db, "SELECT count(*) FROM dead_letters WHERE chunk = 200 AND stage = 'mapper'"), ==,
              7);
    CHECK_INT(count_rows(evil_db, "SELECT count(*) FROM objects"), ==, 6);
    /* The line-framed chunk: its two bad lines named by their numbers. */
    CHECK_INT(count_rows(evil_db, "SELECT count(*) FROM dead_letters WHERE chunk = 203 AND stage = 'mapper' AND"
                                  " ((object = 1 AND reason LIKE 'line 42: not valid JSON: %') OR"
                                  " (object = 2 AND reason LIKE 'line 43: not valid JSON: %' AND CAST(raw AS TEXT) = '['))"),
              ==, 2);
    /* ...which go, and what is left is exactly the job. */
    sqlite3 *d = NULL;
    CHECK(sqlite3_open(db, &d) == SQLITE_OK);
    CHECK(sqlite3_exec(d, "DELETE FROM objects WHERE chunk >= 1000000; DELETE FROM chunks WHERE idx >= 1000000;"
                          "DELETE FROM dead_letters WHERE chunk >= 1000000;",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(d);
    tp_verify_sink(db, 2000, 100, 0);

    th_proc_free(mapper), th_proc_free(w.evil_mapper), th_proc_free(w.saver), th_proc_free(w.evil_saver);
    th_proc_free(w.fetcher), th_proc_free(w.other);
    natsConnection_Destroy(w.nc);
    th_nats_stop(w.ns);
    free(db), free(evil_db), free(sink), free(evil_sink), free(ledger), free(other_ledger), free(conf);
    free(w.env_url);
}

/* ---- the same roles under valgrind -------------------------------------- */

/* A small job with the fetcher, a mapper and a saver each under valgrind's
 * memcheck (nats-server is not), --http on, so libmicrohttpd's threads run
 * too; /metrics of each is read once and `sluice status` (under memcheck
 * as well) asks the fetcher. memcheck turns any error, and any definite or
 * indirect leak, into exit code 99: every process must exit 0. "Possibly
 * lost" and "still reachable" blocks do not fail: nats.c keeps library-wide
 * allocations (its garbage collector, timers, the per-thread error stack)
 * until the process ends. tests/valgrind.supp holds suppressions, each
 * with its reason; there are none so far.
 *
 * An AddressSanitizer build cannot run under valgrind: with one (make
 * test-asan), the test says so and passes, ASan having checked the same
 * code in every other test. */

static const char *const vg_opts[] = {
    "valgrind", "--tool=memcheck", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
    "--show-leak-kinds=definite,indirect", "--error-exitcode=99", "--num-callers=40", "--track-origins=yes",
};
#define VG_NOPTS (sizeof vg_opts / sizeof vg_opts[0])

/* The strings vg_argv makes, freed by vg_free. */
static char *vg_made[16];
static int vg_nmade;

/* argv for `valgrind <opts> --suppressions=.. --log-file=<tmp>/<name>.vg
 * sluice <args>`, malloc'd (free it, then call vg_free once). */
static const char **vg_argv(const char *name, const char *const *args)
{
    CHECK(vg_nmade + 2 <= (int)(sizeof vg_made / sizeof vg_made[0]));
    const char **argv = calloc(64, sizeof *argv);
    CHECK(argv);
    int n = 0;
    for (size_t i = 0; i < VG_NOPTS; i++)
        argv[n++] = vg_opts[i];
    char *supp = th_src_path("tests/valgrind.supp");
    sl_buf b = SL_BUF_INIT;
    sl_buf_printf(&b, "--suppressions=%s", supp);
    argv[n++] = vg_made[vg_nmade++] = b.data;
    free(supp);
    char *log = th_path(name);
    sl_buf l = SL_BUF_INIT;
    sl_buf_printf(&l, "--log-file=%s.vg", log);
    argv[n++] = vg_made[vg_nmade++] = l.data;
    free(log);
    argv[n++] = th_sluice_bin();
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    return argv;
}

static void vg_free(void)
{
    while (vg_nmade > 0)
        free(vg_made[--vg_nmade]);
}

static int vg_clean(const char *name)
{
    char *vg = th_path(name);
    sl_buf p = SL_BUF_INIT;
    sl_buf_printf(&p, "%s.vg", vg);
    char *text = th_read_file(p.data, NULL);
    CHECK_MSG(text, "no memcheck log %s", p.data);
    int ok = strstr(text, "ERROR SUMMARY: 0 errors") != NULL;
    if (!ok)
        fprintf(stderr, "---- %s\n%s\n", p.data, text + (strlen(text) > 6000 ? strlen(text) - 6000 : 0));
    free(text), free(vg), sl_buf_free(&p);
    return ok;
}

SL_TEST(valgrind_small_job, 180)
{
    const char *bin = th_sluice_bin();
    if (th_count_in_file(bin, "__asan_init") > 0) {
        fprintf(stderr, "    note: %s is an AddressSanitizer build; memcheck cannot run it\n", bin);
        return;
    }
    const char *which[] = {"sh", "-c", "command -v valgrind", NULL};
    CHECK_MSG(th_run(which, NULL, NULL, 10000) == 0, "valgrind is not installed (make valgrind installs it)");

    th_nats *ns = th_nats_start(NULL);
    char *env_url = tp_env_url(th_nats_url(ns));
    const char *env[] = {env_url, NULL};
    char *db = th_path("out.db"), *sink = tp_flag("sink", "sqlite:", "out.db"),
         *ledger = tp_flag("ledger", "", "job.ledger");
    const char *sa[] = {"saver", "--http", "127.0.0.1:0", sink, NULL};
    const char *ma[] = {"mapper", "--http", "127.0.0.1:0", NULL};
    /* Leases long enough for memcheck's pace: nothing is sent twice.
     * --linger keeps the fetcher up for `status` and a clean SIGTERM. */
    const char *fa[] = {"fetcher", "--objects", "2000", "--lease-ms", "60000", "--linger", "--http", "127.0.0.1:0",
                        ledger, NULL};
    const char **sv = vg_argv("saver", sa), **mv = vg_argv("mapper", ma), **fv = vg_argv("fetcher", fa);
    th_proc *s = th_spawn("saver", sv, env);
    th_proc *m = th_spawn("mapper", mv, env);
    th_proc_wait_log(s, "saver started", 60000);
    th_proc_wait_log(m, "mapper started", 60000);
    th_proc *f = th_spawn("fetcher", fv, env);
    th_proc_wait_log(f, "fetcher started", 60000);

    th_proc *roles[] = {s, m, f};
    for (size_t i = 0; i < 3; i++) {
        char url[64], *body = NULL;
        snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", tp_http_port(roles[i]));
        long code = 0;
        for (int t = 0; t < 10 && code != 200; t++) /* memcheck is slow: 2 s may not be enough */
            free(body), body = NULL, code = tp_http_get(url, &body);
        CHECK_MSG(code == 200 && strstr(body, "sluice_"), "GET %s: %ld", url, code);
        free(body);
    }
    const char *sta[] = {"status", NULL};
    const char **stv = vg_argv("status", sta);
    char *out = NULL;
    int rc = th_run(stv, env, &out, 60000);
    CHECK_MSG(rc == 0 && strstr(out, "job default"), "sluice status exited %d: %s", rc, out);
    free(out);

    th_proc_wait_log(f, "msg=\"job complete\"", 120000);
    th_proc *order[] = {m, s, f};
    for (size_t i = 0; i < 3; i++) {
        th_proc_kill(order[i], SIGTERM);
        rc = th_proc_wait(order[i], 60000);
        CHECK_MSG(rc == 0, "%s under memcheck exited %d", th_proc_name(order[i]), rc);
    }
    int clean = vg_clean("saver") & vg_clean("mapper") & vg_clean("fetcher") & vg_clean("status");
    CHECK_MSG(clean, "memcheck reported errors (logs above)");
    tp_verify_sink(db, 2000, 100, 0);

    th_proc_free(m), th_proc_free(s), th_proc_free(f);
    free(sv), free(mv), free(fv), free(stv);
    vg_free();
    free(db), free(sink), free(ledger), free(env_url);
    th_nats_stop(ns);
}
