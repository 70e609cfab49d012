/* dispatch.c - build/bench-dispatch: the dispatch round trip alone.
 *
 * The round trip a mapper waits for when it asks for work - P.work out,
 * the fetcher's reply with a chunk back - with nothing else running: one
 * client, connected as a mapper is (sl_bus, the same connection options),
 * asks a real fetcher one request at a time, --gap-us apart, keeping
 * each chunk leased as a mapper would while it works on it, and hands them
 * all back at the end (P.release without a reason, which costs a chunk no
 * attempt), so the job is left as it was and can serve the next run: the
 * chunks come back in the order they went. The job needs at least
 * --requests chunks. `make bench` sets it
 * beside the round trip the mappers of a running job measure, which also
 * holds the wait for the cores that job keeps busy.
 *
 * With --echo BYTES it measures the floor under that round trip instead: a
 * bare request and reply through the same server, answered by a responder
 * that does nothing but send BYTES bytes back - the fetcher with no work
 * at all. The responder is a process of its own (forked before any
 * connection, connected as the requester is), as the fetcher is. No
 * fetcher is needed; --job only names the subject.
 *
 *   bench-dispatch [--requests N] [--gap-us G] [--echo BYTES] [mapper flags: --nats-url URL, --job JOB, ...]
 *
 * It prints key=value lines: requests (answered with a chunk, or echoed),
 * reply_bytes (the median reply body), p50_ms, p90_ms, p99_ms, mean_ms. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "args.h"
#include "bus.h"
#include "clock.h"
#include "config.h"

static int usage(void)
{
    fprintf(stderr, "usage: bench-dispatch [--requests N] [--gap-us G] [--echo BYTES] [mapper flags]\n");
    return 2;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The --echo responder: BYTES of nothing in particular to every request. */
typedef struct {
    sl_bus *bus;
    char *body;
    int len;
} echo;

static void on_echo(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    echo *e = closure;
    (void)nc;
    (void)sub;
    if (natsMsg_GetReply(m))
        natsConnection_Publish(sl_bus_nc(e->bus), natsMsg_GetReply(m), e->body, e->len);
    natsMsg_Destroy(m);
}

/* What is kept of a chunk reply until the end of the run: not the
 * 57 KB reply, only what hands the chunk back. */
typedef struct {
    char chunk[24], lease[SL_LEASE_LEN + 1];
} held;

/* Hands the chunks of h[0..n-1] back to the fetcher. */
static void release(sl_bus *bus, const held *h, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        natsMsg *m = sl_msg_new(sl_bus_subject(bus, SL_SUBJ_RELEASE), NULL, NULL, 0);
        sl_msg_set(m, SL_H_CHUNK, h[i].chunk);
        sl_msg_set(m, SL_H_LEASE, h[i].lease);
        sl_bus_publish(bus, m);
        sl_msg_free(m);
    }
}

/* The --echo responder's process: connects, subscribes to subject,
 * writes one byte to ready once the server has the subscription, and
 * answers until SIGTERM. Never returns. */
static void echo_main(const sl_config *cfg, const char *subject, int64_t bytes, int ready)
{
    echo e = {.len = (int)bytes, .body = malloc((size_t)bytes + 1)};
    natsSubscription *sub = NULL;
    natsStatus ns;
    memset(e.body, 'x', (size_t)bytes);
    if (sl_bus_open(&e.bus, cfg, "sluice-bench-echo") != SL_OK) {
        fprintf(stderr, "bench-dispatch: echo responder: %s\n", sl_errmsg());
        _exit(1);
    }
    /* The flush's PONG comes after the server has taken the SUB. */
    if ((ns = natsConnection_Subscribe(&sub, sl_bus_nc(e.bus), subject, on_echo, &e)) != NATS_OK ||
        (ns = natsConnection_FlushTimeout(sl_bus_nc(e.bus), 5000)) != NATS_OK) {
        fprintf(stderr, "bench-dispatch: echo responder: %s\n", natsStatus_GetText(ns));
        _exit(1);
    }
    if (write(ready, "1", 1) != 1)
        _exit(1);
    for (;;)
        pause();
}

/* Forks the --echo responder; its pid once it is subscribed, or -1 (said
 * on stderr). Called before this process has any connection or thread. */
static pid_t echo_start(const sl_config *cfg, const char *subject, int64_t bytes)
{
    int fds[2];
    char c;
    if (pipe(fds)) {
        perror("bench-dispatch: pipe");
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        echo_main(cfg, subject, bytes, fds[1]);
    }
    close(fds[1]);
    bool ok = pid > 0 && read(fds[0], &c, 1) == 1;
    close(fds[0]);
    if (!ok) {
        if (pid > 0)
            waitpid(pid, NULL, 0);
        else
            perror("bench-dispatch: fork");
        return -1;
    }
    return pid;
}

static void echo_stop(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

int main(int argc, char **argv)
{
    int64_t requests = 1000, gap_us = 2000, echo_bytes = -1;
    /* Our flags out, the rest to the mapper's parser. */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--requests")) {
            if (!bench_count(v, 1, &requests))
                return usage();
            i++;
        } else if (!strcmp(argv[i], "--gap-us")) {
            if (!bench_count(v, 0, &gap_us))
                return usage();
            i++;
        } else if (!strcmp(argv[i], "--echo")) {
            if (!bench_count(v, 0, &echo_bytes) || echo_bytes > 64 * 1024 * 1024)
                return usage();
            i++;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    sl_config cfg;
    bool help = false;
    if (sl_config_load(&cfg, SL_CMD_MAPPER, nrest, rest, &help) != SL_OK) {
        fprintf(stderr, "bench-dispatch: %s\n", sl_errmsg());
        return 2;
    }
    if (help)
        return usage();
    sl_bus *bus = NULL;
    natsInbox *inbox = NULL;
    natsSubscription *sub = NULL;
    natsStatus ns;
    char echo_subject[300];
    snprintf(echo_subject, sizeof echo_subject, "sluice.%s.bench-echo.%d", cfg.job, (int)getpid());
    bool echoing = echo_bytes >= 0;
    pid_t responder = echoing ? echo_start(&cfg, echo_subject, echo_bytes) : 0;
    if (responder < 0)
        return 1;
    if (sl_bus_open(&bus, &cfg, "sluice-bench-dispatch") != SL_OK) {
        fprintf(stderr, "bench-dispatch: %s\n", sl_errmsg());
        echo_stop(responder);
        return 1;
    }
    if ((ns = natsInbox_Create(&inbox)) != NATS_OK ||
        (ns = natsConnection_SubscribeSync(&sub, sl_bus_nc(bus), (const char *)inbox)) != NATS_OK) {
        fprintf(stderr, "bench-dispatch: reply inbox: %s\n", natsStatus_GetText(ns));
        echo_stop(responder);
        return 1;
    }
    const char *target = echoing ? echo_subject : sl_bus_subject(bus, SL_SUBJ_WORK);
    double *rtt = calloc((size_t)requests, sizeof *rtt);
    int64_t *bytes = calloc((size_t)requests, sizeof *bytes);
    held *leased = calloc((size_t)requests, sizeof *leased);
    int64_t n = 0, asked = 0;
    int rc = 0;
    /* A reply without a chunk (the job not started, or done) does not
     * count; 10 s of them ends the run. */
    for (int64_t give_up = sl_now_ms() + 10000; n < requests && sl_now_ms() < give_up; asked++) {
        natsMsg *req = sl_msg_new(target, (const char *)inbox, NULL, 0);
        sl_msg_set(req, SL_H_WORKER, "bench-dispatch");
        double t0 = sl_now_s();
        sl_status st = sl_bus_publish(bus, req);
        sl_msg_free(req);
        natsMsg *r = NULL;
        if (st != SL_OK || (ns = natsSubscription_NextMsg(&r, sub, 5000)) != NATS_OK) {
            fprintf(stderr, "bench-dispatch: no reply from the %s: %s\n", echoing ? "echo responder" : "fetcher",
                    st != SL_OK ? sl_errmsg() : natsStatus_GetText(ns));
            rc = 1;
            break;
        }
        double t1 = sl_now_s();
        const char *status = sl_msg_str(r, SL_H_STATUS);
        if (echoing || (status && !strcmp(status, SL_STATUS_CHUNK))) {
            if (!echoing) {
                const char *c = sl_msg_str(r, SL_H_CHUNK), *l = sl_msg_str(r, SL_H_LEASE);
                snprintf(leased[n].chunk, sizeof leased[n].chunk, "%s", c ? c : "");
                snprintf(leased[n].lease, sizeof leased[n].lease, "%s", l ? l : "");
            }
            bytes[n] = natsMsg_GetDataLength(r);
            rtt[n++] = t1 - t0;
            give_up = sl_now_ms() + 10000;
        }
        natsMsg_Destroy(r);
        usleep((useconds_t)gap_us);
    }
    release(bus, leased, echoing ? 0 : n); /* an echo leases nothing */
    free(leased);
    if (!rc && n < requests) {
        fprintf(stderr, "bench-dispatch: %" PRId64 " of %" PRId64 " requests got a %s\n", n, asked,
                echoing ? "reply" : "chunk");
        rc = 1;
    }
    if (n > 0) {
        qsort(rtt, (size_t)n, sizeof *rtt, cmp_double);
        qsort(bytes, (size_t)n, sizeof *bytes, cmp_i64);
        double sum = 0;
        for (int64_t i = 0; i < n; i++)
            sum += rtt[i];
        printf("requests=%" PRId64 "\nreply_bytes=%" PRId64 "\np50_ms=%.3f\np90_ms=%.3f\np99_ms=%.3f\nmean_ms=%.3f\n",
               n, bytes[n / 2], rtt[n / 2] * 1000, rtt[n * 9 / 10] * 1000, rtt[n * 99 / 100] * 1000,
               sum / (double)n * 1000);
    }
    free(rtt);
    free(bytes);
    free(rest);
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(inbox);
    sl_bus_close(bus, 2000);
    echo_stop(responder);
    sl_config_free(&cfg);
    return rc;
}
