/* chaos.h - a whole job under random SIGKILLs, shared by the short chaos
 * test (tests/test_chaos.c, in `make test`) and the long harness
 * (tests/chaos/main.c, `make chaos`).
 *
 * tc_chaos_run starts a private nats-server, the fetcher, `mappers` mappers
 * and `savers` savers on one SQLite sink, then, every few hundred ms, kills
 * one of them with SIGKILL - a mapper, a saver, the fetcher or nats-server
 * itself - and restarts whatever died after a pause, as a launcher or
 * Kubernetes would. The kill schedule (when, whom, how long NATS stays down)
 * is drawn from a PRNG seeded with `seed` alone, so a seed replays the same
 * schedule; what each kill hits inside the pipeline still depends on timing.
 *
 * Twice a second while nats-server is up, it checks that the fetcher counts
 * no more chunks done than the sink holds. When the fetcher exits 0 it
 * checks, failing the test (sl_test_fail) on the first miss: every object in the sink exactly once with the right value
 * (tp_verify_sink), no dead letter, the ledger file all DONE with one row
 * per chunk. With kill_min_ms == 0 nothing is killed: the undisturbed run
 * the chaos is measured against. */
#ifndef SL_TEST_CHAOS_H
#define SL_TEST_CHAOS_H

#include <stdint.h>

enum { TC_MAPPER, TC_SAVER, TC_FETCHER, TC_NATS, TC_ROLES };

extern const char *const tc_role_names[TC_ROLES];

typedef struct {
    uint64_t seed;
    int64_t objects;       /* in chunks of 100 */
    int mappers, savers;
    int work_ms;           /* mapper --work-ms */
    int lease_ms;          /* fetcher --lease-ms */
    int max_attempts;      /* fetcher --max-attempts */
    int kill_min_ms;       /* a kill every kill_min_ms..kill_max_ms; 0: none */
    int kill_max_ms;
    int weight[TC_ROLES];  /* how often each role is the victim */
    int nats_down_min_ms;  /* a killed nats-server stays down this long */
    int nats_down_max_ms;
    int restart_ms;        /* a dead sluice process is restarted after this */
    int timeout_ms;        /* the whole job, from the first start */
    int verbose;           /* print every kill and restart to stderr */
    const char *label;     /* names the run's files and log lines */
} tc_opts;

/* Fills o with the defaults of the short test (20,000 objects). */
void tc_opts_default(tc_opts *o);

typedef struct {
    int64_t kills[TC_ROLES];    /* SIGKILLs sent, by role */
    int64_t skipped;            /* scheduled kills whose victim was down */
    int64_t restarts[TC_ROLES]; /* processes started again, by role */
    int64_t redeliveries;       /* the job's, from the final P.status / ledger */
    int64_t leases_expired;     /* summed over the fetcher's lives (logs) */
    int64_t max_failures;       /* the most failures one chunk had (ledger) */
    int64_t rows_checked;       /* sink rows checked against the generator */
    int64_t samples;            /* times "fetcher's done <= sink's chunks" held */
    int64_t wall_ms;            /* first start to the fetcher's exit 0 */
} tc_result;

/* Runs the job as described above; returns only if every check passed. */
void tc_chaos_run(const tc_opts *o, tc_result *r);

#endif
