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
 *   bench-dispatch [--requests N] [--gap-us G] [mapper flags: --nats-url URL, --job JOB, ...]
 *
 * It prints key=value lines: requests (answered with a chunk), p50_ms,
 * p90_ms, p99_ms, mean_ms. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "bus.h"
#include "clock.h"
#include "config.h"

static int usage(void)
{
    fprintf(stderr, "usage: bench-dispatch [--requests N] [--gap-us G] [mapper flags]\n");
    return 2;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
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

int main(int argc, char **argv)
{
    int64_t requests = 1000, gap_us = 2000;
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
    if (sl_bus_open(&bus, &cfg, "sluice-bench-dispatch") != SL_OK) {
        fprintf(stderr, "bench-dispatch: %s\n", sl_errmsg());
        return 1;
    }
    if ((ns = natsInbox_Create(&inbox)) != NATS_OK ||
        (ns = natsConnection_SubscribeSync(&sub, sl_bus_nc(bus), (const char *)inbox)) != NATS_OK) {
        fprintf(stderr, "bench-dispatch: reply inbox: %s\n", natsStatus_GetText(ns));
        return 1;
    }
    double *rtt = calloc((size_t)requests, sizeof *rtt);
    held *leased = calloc((size_t)requests, sizeof *leased);
    int64_t n = 0, asked = 0;
    int rc = 0;
    /* A reply without a chunk (the job not started, or done) does not
     * count; 10 s of them ends the run. */
    for (int64_t give_up = sl_now_ms() + 10000; n < requests && sl_now_ms() < give_up; asked++) {
        natsMsg *req = sl_msg_new(sl_bus_subject(bus, SL_SUBJ_WORK), (const char *)inbox, NULL, 0);
        sl_msg_set(req, SL_H_WORKER, "bench-dispatch");
        double t0 = sl_now_s();
        sl_status st = sl_bus_publish(bus, req);
        sl_msg_free(req);
        natsMsg *r = NULL;
        if (st != SL_OK || (ns = natsSubscription_NextMsg(&r, sub, 5000)) != NATS_OK) {
            fprintf(stderr, "bench-dispatch: no reply from the fetcher: %s\n",
                    st != SL_OK ? sl_errmsg() : natsStatus_GetText(ns));
            rc = 1;
            break;
        }
        double t1 = sl_now_s();
        const char *status = sl_msg_str(r, SL_H_STATUS);
        if (status && !strcmp(status, SL_STATUS_CHUNK)) {
            const char *c = sl_msg_str(r, SL_H_CHUNK), *l = sl_msg_str(r, SL_H_LEASE);
            snprintf(leased[n].chunk, sizeof leased[n].chunk, "%s", c ? c : "");
            snprintf(leased[n].lease, sizeof leased[n].lease, "%s", l ? l : "");
            rtt[n++] = t1 - t0;
            give_up = sl_now_ms() + 10000;
        }
        natsMsg_Destroy(r);
        usleep((useconds_t)gap_us);
    }
    release(bus, leased, n);
    free(leased);
    if (!rc && n < requests) {
        fprintf(stderr, "bench-dispatch: %" PRId64 " of %" PRId64 " requests got a chunk\n", n, asked);
        rc = 1;
    }
    if (n > 0) {
        qsort(rtt, (size_t)n, sizeof *rtt, cmp_double);
        double sum = 0;
        for (int64_t i = 0; i < n; i++)
            sum += rtt[i];
        printf("requests=%" PRId64 "\np50_ms=%.3f\np90_ms=%.3f\np99_ms=%.3f\nmean_ms=%.3f\n", n,
               rtt[n / 2] * 1000, rtt[n * 9 / 10] * 1000, rtt[n * 99 / 100] * 1000, sum / (double)n * 1000);
    }
    free(rtt);
    free(rest);
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(inbox);
    sl_bus_close(bus, 2000);
    sl_config_free(&cfg);
    return rc;
}
