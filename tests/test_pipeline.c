/* test_pipeline.c - the three roles and the launcher against a real
 * nats-server: dispatch, leases, resume, crashes, exactness of the sink. */
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "pipeline.h"
#include "proto.h"
#include "source_gen.h"
#include "test.h"

/* Requests P.work as a mapper would; returns the reply (caller destroys). */
static natsMsg *ask_work(natsConnection *nc)
{
    natsMsg *req = NULL, *reply = NULL;
    CHECK(natsMsg_Create(&req, "sluice.default.work", NULL, NULL, 0) == NATS_OK);
    natsMsgHeader_Set(req, SL_H_WORKER, "test");
    natsStatus s = natsConnection_RequestMsg(&reply, nc, req, 2000);
    natsMsg_Destroy(req);
    CHECK_MSG(s == NATS_OK, "P.work request failed: %s", natsStatus_GetText(s));
    return reply;
}

static const char *hdr(natsMsg *m, const char *key)
{
    const char *v = NULL;
    natsMsgHeader_Get(m, key, &v);
    return v;
}

SL_TEST(pipeline_run_exact_small_and_odd_sizes, 60)
{
    /* 1234 objects in chunks of 100: the last chunk holds 34. */
    char *sink = tp_flag("sink", "sqlite:", "out.db"), *ledger = tp_flag("ledger", "", "l.ledger");
    const char *argv[] = {"sluice", "run", "--objects", "1234", "--chunk-size", "100", "--mappers", "3",
                          "--savers", "2", sink, ledger, NULL};
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 50000);
    CHECK_MSG(rc == 0, "sluice run exited %d:\n%s", rc, out);
    CHECK(strstr(out, "objects saved   1234 of 1234"));
    CHECK(strstr(out, "chunks saved    13 of 13"));
    CHECK(strstr(out, "objects/s"));
    char *db = th_path("out.db");
    tp_verify_sink(db, 1234, 100, 0);
    free(db), free(out), free(sink), free(ledger);
}

SL_TEST(pipeline_reference_job, 120)
{
    /* The reference job, 100,000 users in 1000 chunks, every row checked. */
    char *sink = tp_flag("sink", "sqlite:", "ref.db"), *ledger = tp_flag("ledger", "", "ref.ledger");
    const char *argv[] = {"sluice", "run", "--fresh", sink, ledger, NULL};
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 110000);
    CHECK_MSG(rc == 0, "sluice run exited %d:\n%s", rc, out);
    CHECK(strstr(out, "objects saved   100000 of 100000"));
    CHECK(strstr(out, "chunks saved    1000 of 1000"));
    CHECK(strstr(out, "dead letters    0 chunks, 0 objects"));
    char *db = th_path("ref.db");
    tp_verify_sink(db, 100000, 100, 0);
    free(db), free(out), free(sink), free(ledger);
}

SL_TEST(fetcher_dispatch_leases_and_dead_letters, 30)
{
    th_nats *ns = th_nats_start(NULL);
    char *env_url = tp_env_url(th_nats_url(ns)), *ledger = tp_flag("ledger", "", "f.ledger");
    const char *env[] = {env_url, NULL};
    const char *fargv[] = {"sluice", "fetcher", "--objects", "250", "--chunk-size", "100", "--lease-ms", "400",
                           "--max-attempts", "2", ledger, NULL};
    th_proc *f = th_spawn("fetcher", fargv, env);
    th_proc_wait_log(f, "fetcher started", 10000);
    natsConnection *nc = tp_connect(th_nats_url(ns));
    char *sink = tp_flag("sink", "sqlite:", "out.db");
    const char *sargv[] = {"sluice", "saver", sink, NULL};
    th_proc *s = th_spawn("saver", sargv, env);
    th_proc_wait_log(s, "saver started", 10000);

    /* Three chunks, leased in order, each with its own token; the body is
     * exactly the generator's chunk. */
    char tokens[3][40];
    for (int i = 0; i < 3; i++) {
        natsMsg *r = ask_work(nc);
        CHECK_STR(hdr(r, SL_H_STATUS), "chunk");
        CHECK_INT(atoi(hdr(r, SL_H_CHUNK)), ==, i);
        CHECK_STR(hdr(r, SL_H_ATTEMPT), "1");
        CHECK(hdr(r, SL_H_FAILURES) == NULL); /* never failed */
        CHECK_STR(hdr(r, SL_H_LEASE_MS), "400");
        CHECK(sl_proto_token_ok(hdr(r, SL_H_LEASE)));
        snprintf(tokens[i], sizeof tokens[i], "%s", hdr(r, SL_H_LEASE));
        sl_buf want = SL_BUF_INIT;
        sl_gen_users(1, i, i * 100, i == 2 ? 50 : 100, &want);
        CHECK_INT(natsMsg_GetDataLength(r), ==, (int)want.len);
        CHECK(memcmp(natsMsg_GetData(r), want.data, want.len) == 0);
        sl_buf_free(&want);
        natsMsg_Destroy(r);
    }
    CHECK(strcmp(tokens[0], tokens[1]) != 0);
    /* Everything is leased: wait. */
    natsMsg *r = ask_work(nc);
    CHECK_STR(hdr(r, SL_H_STATUS), "wait");
    CHECK(atoi(hdr(r, SL_H_RETRY_MS)) > 0);
    natsMsg_Destroy(r);

    /* Chunk 0 is kept alive with P.progress past its lease, then saved;
     * chunks 1 and 2 expire and come back with attempt 2. */
    int64_t until = th_now_ms() + 700;
    bool got1 = false;
    while (th_now_ms() < until || !got1) {
        tp_publish(nc, "sluice.default.progress", NULL, SL_H_CHUNK, "0", SL_H_LEASE, tokens[0], NULL);
        r = ask_work(nc);
        if (!strcmp(hdr(r, SL_H_STATUS), "chunk")) {
            CHECK_MSG(atoi(hdr(r, SL_H_CHUNK)) != 0, "chunk 0 expired despite P.progress");
            CHECK_STR(hdr(r, SL_H_ATTEMPT), "2");
            CHECK_STR(hdr(r, SL_H_FAILURES), "1"); /* the expired lease */
            CHECK(strcmp(hdr(r, SL_H_LEASE), tokens[atoi(hdr(r, SL_H_CHUNK))]) != 0);
            got1 = true;
        }
        natsMsg_Destroy(r);
        usleep(50000);
    }
    json_t *st = tp_status(nc);
    CHECK(tp_stat(st, "leases", "extended") >= 5);
    CHECK(tp_stat(st, "redeliveries", NULL) >= 1);
    CHECK_INT(tp_stat(st, "chunks", "done"), ==, 0);
    json_decref(st);
    tp_publish(nc, "sluice.default.saved", NULL, SL_H_CHUNK, "0", SL_H_LEASE, tokens[0], SL_H_COUNT, "100", NULL);
    tp_wait_chunks(nc, "done", 1, 5000);

    /* Nobody works on 1 and 2: after two failed attempts they are dead,
     * their dead letters are in the sink, the job is over, and the fetcher
     * says so with exit 3. */
    CHECK_INT(th_proc_wait(f, 10000), ==, 3);
    char *log = th_proc_log(f);
    CHECK(strstr(log, "msg=\"chunk dead\" chunk=1"));
    CHECK(strstr(log, "msg=\"chunk dead\" chunk=2"));
    CHECK(strstr(log, "failed 2 times; last: lease expired"));
    CHECK(strstr(log, "msg=\"dead letter reported\" chunk=1"));
    CHECK(strstr(log, "msg=\"dead letter reported\" chunk=2"));
    free(log);
    char *db = th_path("out.db");
    sqlite3 *sq = NULL;
    CHECK(sqlite3_open_v2(db, &sq, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CHECK(sqlite3_prepare_v2(sq, "SELECT chunk, stage, object, reason, raw FROM dead_letters ORDER BY chunk", -1,
                             &q, NULL) == SQLITE_OK);
    for (int c = 1; c <= 2; c++) {
        CHECK(sqlite3_step(q) == SQLITE_ROW);
        CHECK_INT(sqlite3_column_int(q, 0), ==, c);
        CHECK_STR((const char *)sqlite3_column_text(q, 1), "fetcher");
        CHECK_INT(sqlite3_column_int(q, 2), ==, -1);
        CHECK(strstr((const char *)sqlite3_column_text(q, 3), "lease expired"));
        sl_buf want = SL_BUF_INIT;
        sl_gen_users(1, c, c * 100, c == 2 ? 50 : 100, &want);
        CHECK_INT(sqlite3_column_bytes(q, 4), ==, (int)want.len);
        CHECK(memcmp(sqlite3_column_blob(q, 4), want.data, want.len) == 0);
        sl_buf_free(&want);
    }
    CHECK(sqlite3_step(q) == SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(sq);
    th_proc_free(s);
    natsConnection_Destroy(nc);
    th_nats_stop(ns);
    free(env_url), free(ledger), free(sink), free(db);
}

/* Asks for work and checks the reply is chunk `want` at `attempt`, with
 * exactly the generator's bytes for it (the 500-object job below); keeps
 * its lease token in token. */
static void expect_chunk(natsConnection *nc, int want, int attempt, char *token)
{
    natsMsg *r = ask_work(nc);
    CHECK_STR(hdr(r, SL_H_STATUS), "chunk");
    CHECK_INT(atoi(hdr(r, SL_H_CHUNK)), ==, want);
    CHECK_INT(atoi(hdr(r, SL_H_ATTEMPT)), ==, attempt);
    CHECK(hdr(r, SL_H_FAILURES) == NULL); /* hand-backs without a reason are no failures */
    snprintf(token, 40, "%s", hdr(r, SL_H_LEASE));
    sl_buf body = SL_BUF_INIT;
    sl_gen_users(1, want, want * 100, 100, &body);
    CHECK_INT(natsMsg_GetDataLength(r), ==, (int)body.len);
    CHECK_MSG(memcmp(natsMsg_GetData(r), body.data, body.len) == 0, "chunk %d came with other bytes", want);
    sl_buf_free(&body);
    natsMsg_Destroy(r);
}

SL_TEST(fetcher_sends_the_leased_chunk_whether_built_ahead_or_not, 30)
{
    /* The fetcher builds the chunk it expects to lease next before it is
     * asked; hand-backs change which chunk that is. Whichever chunk a
     * request leases - the one built ahead, or one that came back out of
     * turn - its reply carries that chunk's bytes. */
    th_nats *ns = th_nats_start(NULL);
    char *env_url = tp_env_url(th_nats_url(ns)), *ledger = tp_flag("ledger", "", "f.ledger");
    const char *env[] = {env_url, NULL};
    const char *fargv[] = {"sluice", "fetcher", "--objects", "500", "--chunk-size", "100", "--lease-ms", "60000",
                           ledger, NULL};
    th_proc *f = th_spawn("fetcher", fargv, env);
    th_proc_wait_log(f, "fetcher started", 10000);
    natsConnection *nc = tp_connect(th_nats_url(ns));
    char tok[5][40];
    expect_chunk(nc, 0, 1, tok[0]); /* built on request; 1 is built ahead */
    expect_chunk(nc, 1, 1, tok[1]); /* built ahead; 2 is built ahead */
    tp_publish(nc, "sluice.default.release", NULL, SL_H_CHUNK, "0", SL_H_LEASE, tok[0], NULL);
    tp_wait_chunks(nc, "pending", 4, 5000);
    expect_chunk(nc, 0, 2, tok[0]); /* out of turn: built on request; handed back, not failed */
    expect_chunk(nc, 2, 1, tok[2]); /* the one built ahead before the hand-back */
    tp_publish(nc, "sluice.default.release", NULL, SL_H_CHUNK, "2", SL_H_LEASE, tok[2], NULL);
    tp_publish(nc, "sluice.default.release", NULL, SL_H_CHUNK, "1", SL_H_LEASE, tok[1], NULL);
    tp_wait_chunks(nc, "pending", 4, 5000);
    expect_chunk(nc, 2, 2, tok[2]); /* 3 had been built ahead */
    expect_chunk(nc, 1, 2, tok[1]);
    expect_chunk(nc, 3, 1, tok[3]);
    expect_chunk(nc, 4, 1, tok[4]); /* built ahead; none is pending now */
    natsMsg *r = ask_work(nc);
    CHECK_STR(hdr(r, SL_H_STATUS), "wait");
    natsMsg_Destroy(r);
    /* What was built ahead went out with chunk 4: it is not sent again. */
    tp_publish(nc, "sluice.default.release", NULL, SL_H_CHUNK, "4", SL_H_LEASE, tok[4], NULL);
    tp_wait_chunks(nc, "pending", 1, 5000);
    expect_chunk(nc, 4, 2, tok[4]);
    th_proc_free(f);
    natsConnection_Destroy(nc);
    th_nats_stop(ns);
    free(env_url), free(ledger);
}

SL_TEST(fetcher_linger_answers_done_and_status, 30)
{
    th_nats *ns = th_nats_start(NULL);
    char *env_url = tp_env_url(th_nats_url(ns)), *ledger = tp_flag("ledger", "", "f.ledger");
    const char *env[] = {env_url, NULL};
    const char *fargv[] = {"sluice", "fetcher", "--objects", "100", "--linger", ledger, NULL};
    th_proc *f = th_spawn("fetcher", fargv, env);
    th_proc_wait_log(f, "fetcher started", 10000);
    natsConnection *nc = tp_connect(th_nats_url(ns));
    natsMsg *r = ask_work(nc);
    CHECK_STR(hdr(r, SL_H_STATUS), "chunk");
    tp_publish(nc, "sluice.default.saved", NULL, SL_H_CHUNK, "0", SL_H_LEASE, hdr(r, SL_H_LEASE), SL_H_COUNT,
               "100", NULL);
    natsMsg_Destroy(r);
    th_proc_wait_log(f, "job complete", 5000);
    for (int i = 0; i < 3; i++) {
        r = ask_work(nc);
        CHECK_STR(hdr(r, SL_H_STATUS), "done");
        natsMsg_Destroy(r);
    }
    CHECK(th_proc_running(f));
    /* A standalone mapper told "done" stays, waiting for the next job. */
    const char *margv[] = {"sluice", "mapper", NULL};
    th_proc *m = th_spawn("mapper", margv, env);
    th_proc_wait_log(m, "job done; waiting for more work", 10000);
    CHECK(th_proc_running(m));
    th_proc_stop(m);
    CHECK_INT(th_proc_wait(m, 1000), ==, 0);
    th_proc_free(m);
    const char *sargv[] = {"sluice", "status", NULL};
    char *out = NULL;
    CHECK_INT(th_run(sargv, env, &out, 10000), ==, 0);
    CHECK_MSG(strstr(out, "job default: complete") && strstr(out, "100 of 100 saved"), "%s", out);
    free(out);
    th_proc_stop(f);
    natsConnection_Destroy(nc);
    th_nats_stop(ns);
    free(env_url), free(ledger);
}

SL_TEST(mapper_extends_leases_of_long_chunks, 30)
{
    /* Each chunk takes 1.2 s of simulated work under a 500 ms lease: only
     * P.progress every lease/3 keeps it from being sent again. */
    th_nats *ns = th_nats_start(NULL);
    char *env_url = tp_env_url(th_nats_url(ns)), *ledger = tp_flag("ledger", "", "f.ledger");
    char *sink = tp_flag("sink", "sqlite:", "out.db");
    const char *env[] = {env_url, NULL};
    const char *fargv[] = {"sluice", "fetcher", "--objects", "300", "--lease-ms", "500", ledger, NULL};
    const char *margv[] = {"sluice", "mapper", "--work-ms", "1200", NULL};
    const char *sargv[] = {"sluice", "saver", sink, NULL};
    th_proc *f = th_spawn("fetcher", fargv, env);
    th_proc *s = th_spawn("saver", sargv, env);
    th_proc *m1 = th_spawn("mapper1", margv, env), *m2 = th_spawn("mapper2", margv, env);
    th_proc_wait_log(f, "fetcher started", 10000);
    natsConnection *nc = tp_connect(th_nats_url(ns));
    int64_t t0 = th_now_ms();
    tp_wait_stat(nc, "leases", "extended", 4, 10000);
    json_t *st = tp_status(nc);
    CHECK_INT(tp_stat(st, "redeliveries", NULL), ==, 0);
    CHECK_INT(tp_stat(st, "leases", "expired"), ==, 0);
    json_decref(st);
    CHECK_INT(th_proc_wait(f, 20000), ==, 0);
    /* Three chunks of 1.2 s on two mappers cannot take less than 2.4 s. */
    CHECK(th_now_ms() - t0 >= 2400);
    char *log = th_proc_log(f);
    CHECK_MSG(strstr(log, "redeliveries=0") && !strstr(log, "leases expired"), "%s", log);
    free(log);
    char *db = th_path("out.db");
    tp_verify_sink(db, 300, 100, 0);
    natsConnection_Destroy(nc);
    th_proc_free(m1), th_proc_free(m2), th_proc_free(s), th_proc_free(f);
    th_nats_stop(ns);
    free(db), free(env_url), free(ledger), free(sink);
}

SL_TEST(mapper_cpu_work_burns_cpu_not_the_clock, 60)
{
    /* --cpu-work-ms 100 on 5 chunks: the mappers use at least 0.5 s of
     * CPU between them (a sleep would use next to none). */
    struct rusage before, after;
    getrusage(RUSAGE_CHILDREN, &before);
    char *sink = tp_flag("sink", "sqlite:", "cpu.db"), *ledger = tp_flag("ledger", "", "cpu.ledger");
    const char *argv[] = {"sluice", "run", "--objects", "500", "--chunk-size", "100", "--mappers", "2",
                          "--cpu-work-ms", "100", sink, ledger, NULL};
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 50000);
    CHECK_MSG(rc == 0, "sluice run exited %d:\n%s", rc, out);
    getrusage(RUSAGE_CHILDREN, &after);
    /* User and system time: --cpu-work-ms counts the thread's CPU time,
     * of which a busy machine books a share as system time (interrupts
     * served while the loop runs). */
    double cpu = (double)(after.ru_utime.tv_sec - before.ru_utime.tv_sec) +
                 (double)(after.ru_utime.tv_usec - before.ru_utime.tv_usec) / 1e6 +
                 (double)(after.ru_stime.tv_sec - before.ru_stime.tv_sec) +
                 (double)(after.ru_stime.tv_usec - before.ru_stime.tv_usec) / 1e6;
    CHECK_MSG(cpu >= 0.5, "CPU of the job %.3f s < 0.5 s", cpu);
    char *db = th_path("cpu.db");
    tp_verify_sink(db, 500, 100, 0);
    printf("    --cpu-work-ms 100 x 5 chunks: %.3f s of CPU\n", cpu);
    free(db), free(out), free(sink), free(ledger);
}
