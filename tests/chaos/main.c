/* main.c - sluice-chaos: the long chaos harness (`make chaos`).
 *
 * Runs one job twice with the same shape - undisturbed first, then under a
 * seeded schedule of SIGKILLs of mappers, savers, the fetcher and
 * nats-server (tc_chaos_run, tests/test_chaos.c) - checks every row of both
 * sinks and the ledger, and prints what was killed, the redeliveries and the
 * two wall times. Exit 0 when every check passed, 1 otherwise.
 *
 * The work happens in a child in its own process group, so that Ctrl-C (or
 * a timeout) takes down every nats-server and sluice process it started. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../harness.h"
#include "../test.h"
#include "chaos.h"

/* test_chaos.o registers its tests; this binary runs none of them. */
void sl_test_register(const char *name, sl_test_fn fn, int timeout_s, const char *file)
{
    (void)name, (void)fn, (void)timeout_s, (void)file;
}

void sl_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    /* Keep every process's log for the post-mortem (the harness reads
     * this at exit). */
    setenv("SLUICE_KEEP_TMP", "1", 1);
    exit(1);
}

static void usage(FILE *to)
{
    fprintf(to,
            "Usage: sluice-chaos [flags]   (SLUICE_BIN must name the sluice binary; make chaos sets it)\n"
            "\n"
            "One job undisturbed, then the same job while a seeded schedule SIGKILLs a mapper,\n"
            "a saver, the fetcher or nats-server every few hundred ms; whatever dies is\n"
            "restarted. Checks every row of the sink, the ledger, and that no chunk died.\n"
            "\n"
            "  --seed N          the kill schedule's seed [CHAOS_SEED, else from the clock; printed]\n"
            "  --objects N       objects in the job, chunks of 100 [100000]\n"
            "  --mappers N       [4]\n"
            "  --savers N        [2]\n"
            "  --work-ms X       mapper --work-ms [40]\n"
            "  --lease-ms MS     fetcher --lease-ms [1500]\n"
            "  --max-attempts K  fetcher --max-attempts [10]\n"
            "  --kill-ms A-B     a kill every A..B ms [200-500]\n"
            "  --nats-down-ms A-B  a killed nats-server stays down A..B ms [100-1000]\n"
            "  --restart-ms MS   pause before a dead process is restarted [200]\n"
            "  --timeout-s S     give up on a run after S s [600]\n"
            "  --no-baseline     skip the undisturbed run\n"
            "  --quiet           do not print each kill and restart\n");
}

static int64_t num(const char *flag, const char *v, int64_t lo, int64_t hi)
{
    char *end;
    errno = 0;
    long long n = v ? strtoll(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || n < lo || n > hi) {
        fprintf(stderr, "sluice-chaos: %s needs an integer in %lld..%lld\n", flag, (long long)lo, (long long)hi);
        exit(2);
    }
    return n;
}

static void range(const char *flag, const char *v, int *lo, int *hi)
{
    const char *dash = v ? strchr(v, '-') : NULL;
    if (!dash) {
        fprintf(stderr, "sluice-chaos: %s needs A-B (milliseconds)\n", flag);
        exit(2);
    }
    char a[32];
    snprintf(a, sizeof a, "%.*s", (int)(dash - v), v);
    *lo = (int)num(flag, a, 0, 600000);
    *hi = (int)num(flag, dash + 1, *lo, 600000);
}

static int run(tc_opts *o, int baseline)
{
    printf("sluice chaos: seed %" PRIu64 " (replay the same kill schedule: make chaos CHAOS_SEED=%" PRIu64 ")\n",
           o->seed, o->seed);
    printf("  job              %" PRId64 " objects in %" PRId64 " chunks; %d mappers (work %d ms/chunk), %d savers,"
           " lease %d ms, max-attempts %d\n",
           o->objects, (o->objects + 99) / 100, o->mappers, o->work_ms, o->savers, o->lease_ms, o->max_attempts);
    fflush(stdout);
    tc_result base = {0}, r;
    if (baseline) {
        tc_opts b = *o;
        b.kill_min_ms = b.kill_max_ms = 0;
        b.label = "baseline";
        fprintf(stderr, "undisturbed run...\n");
        tc_chaos_run(&b, &base);
        printf("  undisturbed      %.2f s, %" PRId64 " rows checked, redeliveries %" PRId64 "\n",
               (double)base.wall_ms / 1000.0, base.rows_checked, base.redeliveries);
        fflush(stdout);
    }
    fprintf(stderr, "chaos run (seed %" PRIu64 ")...\n", o->seed);
    tc_chaos_run(o, &r);
    int64_t kills = 0;
    for (int i = 0; i < TC_ROLES; i++)
        kills += r.kills[i];
    printf("  under chaos      %.2f s", (double)r.wall_ms / 1000.0);
    if (baseline && base.wall_ms > 0)
        printf(" (%.2fx the undisturbed %.2f s)", (double)r.wall_ms / (double)base.wall_ms,
               (double)base.wall_ms / 1000.0);
    printf("\n  kills (SIGKILL)  %" PRId64 ": %" PRId64 " mappers, %" PRId64 " savers, %" PRId64 " fetchers, %" PRId64
           " nats-servers; %" PRId64 " more scheduled while the victim was already down\n",
           kills, r.kills[TC_MAPPER], r.kills[TC_SAVER], r.kills[TC_FETCHER], r.kills[TC_NATS], r.skipped);
    printf("  restarts         %" PRId64 " mappers, %" PRId64 " savers, %" PRId64 " fetchers, %" PRId64
           " nats-servers (a process restarted while NATS is down fails to connect and is restarted again)\n",
           r.restarts[TC_MAPPER], r.restarts[TC_SAVER], r.restarts[TC_FETCHER], r.restarts[TC_NATS]);
    printf("  redeliveries     %" PRId64 " (the fetcher's count, = ledger sum(attempts-1)); leases expired %" PRId64
           "; most failures of one chunk %" PRId64 " (max-attempts %d)\n",
           r.redeliveries, r.leases_expired, r.max_failures, o->max_attempts);
    printf("  invariant        the fetcher's done count <= the sink's committed chunks, sampled %" PRId64
           " times during the run\n", r.samples);
    printf("  rows checked     %" PRId64 " of %" PRId64 ", each once with the right value; ledger: %" PRId64
           " chunks, all done; no chunk dead, no dead letter\n",
           r.rows_checked, o->objects, (o->objects + 99) / 100);
    printf("result: PASS\n");
    return 0;
}

static pid_t child;

static void forward(int sig)
{
    if (child > 0)
        kill(-child, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv)
{
    tc_opts o;
    tc_opts_default(&o);
    o.objects = 100000;
    o.work_ms = 40;
    o.lease_ms = 1500;
    o.max_attempts = 10;
    o.kill_min_ms = 200;
    o.kill_max_ms = 500;
    o.nats_down_min_ms = 100;
    o.nats_down_max_ms = 1000;
    o.timeout_ms = 600000;
    o.verbose = 1;
    o.label = "chaos";
    int baseline = 1;
    const char *seed = getenv("CHAOS_SEED");
    o.seed = seed && seed[0] ? (uint64_t)num("CHAOS_SEED", seed, 0, INT64_MAX)
                             : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--seed"))
            o.seed = (uint64_t)num(a, v, 0, INT64_MAX), i++;
        else if (!strcmp(a, "--objects"))
            o.objects = num(a, v, 100, 100000000), i++;
        else if (!strcmp(a, "--mappers"))
            o.mappers = (int)num(a, v, 1, 64), i++;
        else if (!strcmp(a, "--savers"))
            o.savers = (int)num(a, v, 1, 16), i++;
        else if (!strcmp(a, "--work-ms"))
            o.work_ms = (int)num(a, v, 0, 60000), i++;
        else if (!strcmp(a, "--lease-ms"))
            o.lease_ms = (int)num(a, v, 50, 600000), i++;
        else if (!strcmp(a, "--max-attempts"))
            o.max_attempts = (int)num(a, v, 1, 1000), i++;
        else if (!strcmp(a, "--kill-ms"))
            range(a, v, &o.kill_min_ms, &o.kill_max_ms), i++;
        else if (!strcmp(a, "--nats-down-ms"))
            range(a, v, &o.nats_down_min_ms, &o.nats_down_max_ms), i++;
        else if (!strcmp(a, "--restart-ms"))
            o.restart_ms = (int)num(a, v, 0, 60000), i++;
        else if (!strcmp(a, "--timeout-s"))
            o.timeout_ms = (int)num(a, v, 1, 86400) * 1000, i++;
        else if (!strcmp(a, "--no-baseline"))
            baseline = 0;
        else if (!strcmp(a, "--quiet"))
            o.verbose = 0;
        else {
            fprintf(stderr, "sluice-chaos: unknown flag %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o.kill_min_ms <= 0) {
        fprintf(stderr, "sluice-chaos: --kill-ms must start above 0\n");
        return 2;
    }
    th_sluice_bin(); /* fails at once, with the reason, if SLUICE_BIN is wrong */
    signal(SIGPIPE, SIG_IGN);
    fflush(NULL);
    child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        setpgid(0, 0);
        exit(run(&o, baseline));
    }
    setpgid(child, child);
    signal(SIGINT, forward);
    signal(SIGTERM, forward);
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    kill(-child, SIGKILL); /* anything the run left behind */
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    printf("result: FAIL (seed %" PRIu64 "; replay: make chaos CHAOS_SEED=%" PRIu64 ")\n", o.seed, o.seed);
    return 1;
}
