/* test_shutdown.c - SIGTERM, as Kubernetes sends it: a mapper hands its
 * chunk back (and it is leased again at once), a saver finishes and
 * confirms what it took, a fetcher writes its ledger before it goes. */
#include <signal.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline.h"
#include "test.h"

typedef struct {
    th_nats *ns;
    char *env_url, *sink, *ledger, *db, *ledger_path;
    const char *env[2];
    natsConnection *nc;
} rig;

static void rig_start(rig *r)
{
    r->ns = th_nats_start(NULL);
    r->env_url = tp_env_url(th_nats_url(r->ns));
    r->env[0] = r->env_url;
    r->env[1] = NULL;
    r->sink = tp_flag("sink", "sqlite:", "out.db");
    r->ledger = tp_flag("ledger", "", "f.ledger");
    r->db = th_path("out.db");
    r->ledger_path = th_path("f.ledger");
    r->nc = tp_connect(th_nats_url(r->ns));
}

static void rig_stop(rig *r)
{
    natsConnection_Destroy(r->nc);
    th_nats_stop(r->ns);
    free(r->env_url), free(r->sink), free(r->ledger), free(r->db), free(r->ledger_path);
}

static int64_t count(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *q = NULL;
    CHECK_MSG(sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(db));
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    int64_t n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return n;
}

SL_TEST(shutdown_mapper_hands_its_chunk_back_at_once, 60)
{
    rig r;
    rig_start(&r);
    /* One chunk, a lease of 30 s: only a hand-back can move it quickly. */
    const char *fargv[] = {"sluice", "fetcher", "--objects", "100", "--lease-ms", "30000", r.ledger, NULL};
    const char *sargv[] = {"sluice", "saver", r.sink, NULL};
    const char *slowargv[] = {"sluice", "mapper", "--work-ms", "600000", NULL};
    const char *fastargv[] = {"sluice", "mapper", NULL};
    th_proc *f = th_spawn("fetcher", fargv, r.env), *s = th_spawn("saver", sargv, r.env);
    th_proc *slow = th_spawn("slow", slowargv, r.env);
    tp_wait_chunks(r.nc, "leased", 1, 10000);
    th_proc *fast = th_spawn("fast", fastargv, r.env);
    th_proc_wait_log(fast, "mapper started", 10000);

    int64_t t0 = th_now_ms();
    th_proc_kill(slow, SIGTERM);
    CHECK_INT(th_proc_wait(slow, 5000), ==, 0);
    int64_t exited = th_now_ms() - t0;
    CHECK_INT(th_proc_wait(f, 10000), ==, 0);
    int64_t done = th_now_ms() - t0;
    char *log = th_proc_log(slow);
    CHECK(strstr(log, "stopping: chunk handed back"));
    free(log);
    log = th_proc_log(f);
    CHECK(strstr(log, "msg=\"chunk handed back\" chunk=0"));
    CHECK(!strstr(log, "leases expired"));
    free(log);
    /* Far inside the 30 s lease: the chunk was leased again at once. */
    CHECK_MSG(done < 10000, "the job took %lld ms after SIGTERM", (long long)done);
    fprintf(stderr, "    mapper exited %lld ms after SIGTERM; job done %lld ms after\n", (long long)exited,
            (long long)done);
    tp_verify_sink(r.db, 100, 100, 0);
    th_proc_free(fast), th_proc_free(slow), th_proc_free(s), th_proc_free(f);
    rig_stop(&r);
}

SL_TEST(shutdown_mapper_leaves_accepted_chunks_to_the_saver, 60)
{
    /* A mapper with chunks in flight (sent to the saver, --in-flight 4)
     * is stopped mid-job: the chunks the saver accepted are the saver's to
     * commit and confirm, so the mapper hands back only what it still
     * holds itself - the chunk it maps and the one prefetched - and no
     * hand-back reaches the fetcher after the saver's confirmation (it
     * once handed back all six, most of them stale). */
    rig r;
    rig_start(&r);
    const char *fargv[] = {"sluice", "fetcher", "--objects", "100000", r.ledger, NULL};
    const char *sargv[] = {"sluice", "saver", r.sink, NULL};
    const char *margv[] = {"sluice", "mapper", "--work-ms", "20", "--in-flight", "4", NULL};
    th_proc *f = th_spawn("fetcher", fargv, r.env), *s = th_spawn("saver", sargv, r.env);
    th_proc *m = th_spawn("mapper", margv, r.env);
    tp_wait_chunks(r.nc, "done", 20, 20000);
    th_proc_kill(m, SIGTERM);
    CHECK_INT(th_proc_wait(m, 5000), ==, 0);
    char *log = th_proc_log(m);
    int handed = th_count_in_file(th_proc_log_path(m), "stopping: chunk handed back");
    CHECK_MSG(handed <= 2, "the mapper handed back %d chunks:\n%s", handed, log);
    free(log);
    /* The job goes on with another mapper; the fetcher never met a stale
     * hand-back, and every object is there once. */
    const char *m2argv[] = {"sluice", "mapper", NULL};
    th_proc *m2 = th_spawn("mapper2", m2argv, r.env);
    CHECK_INT(th_proc_wait(f, 60000), ==, 0);
    CHECK_INT(th_count_in_file(th_proc_log_path(f), "stale_lease"), ==, 0);
    tp_verify_sink(r.db, 100000, 100, 0);
    th_proc_free(m2), th_proc_free(m), th_proc_free(s), th_proc_free(f);
    rig_stop(&r);
}

/* Polls P.status until chunks.leased reaches want; returns whether it did
 * within timeout_ms. */
static bool leased_reaches(natsConnection *nc, int64_t want, int timeout_ms)
{
    for (int64_t end = th_now_ms() + timeout_ms; th_now_ms() < end; usleep(5000)) {
        json_t *st = tp_status(nc);
        int64_t n = st ? tp_stat(st, "chunks", "leased") : -1;
        json_decref(st);
        if (n == want)
            return true;
    }
    return false;
}

/* A mapper asks for its next chunk --prefetch-lead-ms before the current
 * one should be done (judged by the last one). With no saver to take its
 * results it keeps one chunk in flight (--in-flight 1) and maps the next:
 * two leases; prefetching, it asks for a third; with the lead at 0 it
 * never does. Stopped, it hands back all three, far inside the lease. */
SL_TEST(shutdown_mapper_prefetches_and_hands_every_chunk_back, 60)
{
    rig r;
    rig_start(&r);
    const char *fargv[] = {"sluice", "fetcher", "--objects", "3000", "--lease-ms", "60000", r.ledger, NULL};
    const char *noargv[] = {"sluice", "mapper", "--work-ms", "300", "--prefetch-lead-ms", "0",
                            "--in-flight", "1", NULL};
    const char *preargv[] = {"sluice", "mapper", "--work-ms", "300", "--prefetch-lead-ms", "250",
                             "--in-flight", "1", NULL};
    th_proc *f = th_spawn("fetcher", fargv, r.env);

    th_proc *no = th_spawn("no-prefetch", noargv, r.env);
    CHECK_MSG(leased_reaches(r.nc, 2, 10000), "the mapper did not keep a chunk in flight");
    CHECK_MSG(!leased_reaches(r.nc, 3, 1500), "a mapper without prefetch asked ahead");
    th_proc_kill(no, SIGTERM);
    CHECK_INT(th_proc_wait(no, 5000), ==, 0);
    CHECK_MSG(leased_reaches(r.nc, 0, 5000), "chunks stayed leased after the first mapper stopped");

    th_proc *pre = th_spawn("prefetch", preargv, r.env);
    CHECK_MSG(leased_reaches(r.nc, 3, 10000), "the mapper never asked ahead");
    int64_t t0 = th_now_ms();
    th_proc_kill(pre, SIGTERM);
    CHECK_INT(th_proc_wait(pre, 5000), ==, 0);
    CHECK_MSG(leased_reaches(r.nc, 0, 5000), "chunks stayed leased after the mapper stopped");
    int64_t back = th_now_ms() - t0;
    CHECK_INT(th_count_in_file(th_proc_log_path(pre), "stopping: chunk handed back"), ==, 3);
    json_t *st = tp_status(r.nc);
    CHECK_INT(tp_stat(st, "leases", "expired"), ==, 0);
    json_decref(st);
    fprintf(stderr, "    three chunks back %lld ms after SIGTERM\n", (long long)back);
    th_proc_kill(f, SIGTERM);
    th_proc_wait(f, 10000);
    th_proc_free(pre), th_proc_free(no), th_proc_free(f);
    rig_stop(&r);
}

SL_TEST(shutdown_saver_confirms_everything_it_committed, 60)
{
    rig r;
    rig_start(&r);
    const char *fargv[] = {"sluice", "fetcher", "--objects", "30000", "--lease-ms", "2000", r.ledger, NULL};
    const char *sargv[] = {"sluice", "saver", r.sink, NULL};
    const char *margv[] = {"sluice", "mapper", NULL};
    th_proc *f = th_spawn("fetcher", fargv, r.env), *s1 = th_spawn("saver1", sargv, r.env);
    th_proc *m1 = th_spawn("mapper1", margv, r.env), *m2 = th_spawn("mapper2", margv, r.env);
    tp_wait_chunks(r.nc, "done", 30, 20000);
    th_proc_kill(s1, SIGTERM);
    CHECK_INT(th_proc_wait(s1, 10000), ==, 0);
    char *log = th_proc_log(s1);
    CHECK(strstr(log, "saver stopped"));
    free(log);
    /* Every chunk it committed is confirmed: the fetcher's done count
     * reaches what the sink holds (and, with no saver now, stays there). */
    int64_t committed = count(r.db, "SELECT count(*) FROM chunks");
    CHECK(committed >= 30 && committed < 300);
    tp_wait_chunks(r.nc, "done", committed, 5000);
    json_t *st = tp_status(r.nc);
    CHECK_INT(tp_stat(st, "chunks", "done"), ==, committed);
    json_decref(st);
    th_proc *s2 = th_spawn("saver2", sargv, r.env);
    CHECK_INT(th_proc_wait(f, 40000), ==, 0);
    tp_verify_sink(r.db, 30000, 100, 0);
    th_proc_free(m1), th_proc_free(m2), th_proc_free(s2), th_proc_free(s1), th_proc_free(f);
    rig_stop(&r);
}

SL_TEST(shutdown_fetcher_writes_its_ledger, 60)
{
    rig r;
    rig_start(&r);
    const char *fargv[] = {"sluice", "fetcher", "--objects", "30000", "--lease-ms", "2000", r.ledger, NULL};
    const char *sargv[] = {"sluice", "saver", r.sink, NULL};
    const char *margv[] = {"sluice", "mapper", "--work-ms", "5", NULL};
    th_proc *f = th_spawn("fetcher", fargv, r.env), *s = th_spawn("saver", sargv, r.env);
    th_proc *m = th_spawn("mapper", margv, r.env);
    tp_wait_chunks(r.nc, "done", 20, 20000);
    th_proc_kill(m, SIGTERM); /* nothing moves while we look */
    CHECK_INT(th_proc_wait(m, 5000), ==, 0);
    json_t *st = tp_status(r.nc);
    int64_t done = tp_stat(st, "chunks", "done");
    json_decref(st);
    th_proc_kill(f, SIGTERM);
    /* Stopped before the job was done: 128 + SIGTERM. */
    CHECK_INT(th_proc_wait(f, 10000), ==, 128 + SIGTERM);
    /* Every done mark it had is on disk, and none that a saver did not
     * commit (the saver may have confirmed a few more since we asked). */
    int64_t on_disk = count(r.ledger_path, "SELECT count(*) FROM chunks WHERE state = 2");
    CHECK_INT(on_disk, >=, done);
    CHECK_INT(on_disk, <=, count(r.db, "SELECT count(*) FROM chunks"));
    char *log = th_proc_log(f);
    CHECK(strstr(log, "fetcher stopped before the job was done"));
    free(log);
    th_proc_free(m), th_proc_free(s), th_proc_free(f);
    rig_stop(&r);
}
