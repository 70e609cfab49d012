/* test_faults.c - crashes, bad messages and bad configuration, with real
 * processes: whatever happens, every object ends in the sink exactly once,
 * and no process falls over. */
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "pipeline.h"
#include "proto.h"
#include "test.h"

/* A job of the test's: nats-server, and the files' flags. */
typedef struct {
    th_nats *ns;
    char *env_url;
    const char *env[2];
    char *sink_flag, *ledger_flag, *db;
    natsConnection *nc;
} job;

static void job_start(job *j)
{
    j->ns = th_nats_start(NULL);
    j->env_url = tp_env_url(th_nats_url(j->ns));
    j->env[0] = j->env_url;
    j->env[1] = NULL;
    j->db = th_path("out.db");
    j->sink_flag = tp_flag("sink", "sqlite:", "out.db");
    j->ledger_flag = tp_flag("ledger", "", "job.ledger");
    j->nc = tp_connect(th_nats_url(j->ns));
}

static void job_stop(job *j)
{
    natsConnection_Destroy(j->nc);
    th_nats_stop(j->ns);
    free(j->env_url), free(j->sink_flag), free(j->ledger_flag), free(j->db);
}

static th_proc *fetcher(job *j, const char *name, const char *objects, const char *lease_ms)
{
    const char *argv[] = {"sluice", "fetcher", "--objects", objects, "--lease-ms", lease_ms, j->ledger_flag, NULL};
    th_proc *p = th_spawn(name, argv, j->env);
    th_proc_wait_log(p, "fetcher", 10000);
    return p;
}

static th_proc *mapper(job *j, const char *name, const char *work_ms)
{
    const char *argv[] = {"sluice", "mapper", "--work-ms", work_ms, NULL};
    th_proc *p = th_spawn(name, argv, j->env);
    th_proc_wait_log(p, "mapper started", 10000);
    return p;
}

static th_proc *saver(job *j, const char *name)
{
    const char *argv[] = {"sluice", "saver", j->sink_flag, NULL};
    th_proc *p = th_spawn(name, argv, j->env);
    th_proc_wait_log(p, "saver started", 10000);
    return p;
}

SL_TEST(fetcher_kill9_resumes_from_ledger, 60)
{
    job j;
    job_start(&j);
    th_proc *f = fetcher(&j, "fetcher1", "20000", "2000");
    th_proc *s = saver(&j, "saver");
    th_proc *m1 = mapper(&j, "mapper1", "15"), *m2 = mapper(&j, "mapper2", "15");
    tp_wait_chunks(j.nc, "done", 60, 20000);
    th_proc_kill(f, SIGKILL);
    CHECK_INT(th_proc_wait(f, 5000), ==, 128 + SIGKILL);

    /* The new fetcher reads the ledger: it resumes with chunks already
     * done, and hands out fewer chunks than the job has. */
    th_proc *f2 = fetcher(&j, "fetcher2", "20000", "2000");
    th_proc_wait_log(f2, "fetcher resuming", 5000);
    char *log = th_proc_log(f2);
    const char *d = strstr(log, " done=");
    CHECK(d && atoi(d + 6) >= 40);
    free(log);
    CHECK_INT(th_proc_wait(f2, 40000), ==, 0);
    tp_verify_sink(j.db, 20000, 100, 0);
    th_proc_free(m1), th_proc_free(m2), th_proc_free(s), th_proc_free(f), th_proc_free(f2);
    job_stop(&j);
}

SL_TEST(mapper_kill9_holding_a_chunk, 60)
{
    job j;
    job_start(&j);
    th_proc *f = fetcher(&j, "fetcher", "3000", "1000");
    th_proc *s = saver(&j, "saver");
    /* A slow mapper takes a chunk and dies with it. */
    th_proc *slow = mapper(&j, "slow", "60000");
    tp_wait_chunks(j.nc, "leased", 1, 10000);
    th_proc_kill(slow, SIGKILL);
    CHECK_INT(th_proc_wait(slow, 5000), ==, 128 + SIGKILL);
    th_proc *m = mapper(&j, "mapper", "0");
    CHECK_INT(th_proc_wait(f, 30000), ==, 0);
    char *log = th_proc_log(f);
    CHECK(strstr(log, "leases expired"));
    CHECK(strstr(log, "redeliveries=1"));
    free(log);
    tp_verify_sink(j.db, 3000, 100, 0);
    th_proc_free(m), th_proc_free(s), th_proc_free(slow), th_proc_free(f);
    job_stop(&j);
}

SL_TEST(saver_kill9_mid_job, 60)
{
    job j;
    job_start(&j);
    th_proc *f = fetcher(&j, "fetcher", "10000", "1000");
    th_proc *s1 = saver(&j, "saver1");
    th_proc *m1 = mapper(&j, "mapper1", "10"), *m2 = mapper(&j, "mapper2", "10");
    tp_wait_chunks(j.nc, "done", 20, 20000);
    th_proc_kill(s1, SIGKILL);
    CHECK_INT(th_proc_wait(s1, 5000), ==, 128 + SIGKILL);
    th_proc *s2 = saver(&j, "saver2");
    CHECK_INT(th_proc_wait(f, 40000), ==, 0);
    tp_verify_sink(j.db, 10000, 100, 0);
    th_proc_free(m1), th_proc_free(m2), th_proc_free(s1), th_proc_free(s2), th_proc_free(f);
    job_stop(&j);
}

SL_TEST(bad_messages_are_counted_and_contained, 60)
{
    job j;
    job_start(&j);
    th_proc *f = fetcher(&j, "fetcher", "2000", "3000");
    th_proc *s = saver(&j, "saver");
    const char *forged = "0123456789abcdef0123456789abcdef";

    /* To the fetcher: confirmations it never issued, garbage headers. */
    tp_publish(j.nc, "sluice.default.saved", NULL, SL_H_CHUNK, "0", SL_H_LEASE, forged, SL_H_COUNT, "100", NULL);
    tp_publish(j.nc, "sluice.default.saved", NULL, SL_H_CHUNK, "xyz", SL_H_LEASE, forged, SL_H_COUNT, "1", NULL);
    tp_publish(j.nc, "sluice.default.saved", NULL, SL_H_CHUNK, "-1", SL_H_LEASE, forged, SL_H_COUNT, "1", NULL);
    tp_publish(j.nc, "sluice.default.saved", NULL, SL_H_CHUNK, "99999999999999999999", SL_H_LEASE, "zz",
               SL_H_COUNT, "1", NULL);
    tp_publish(j.nc, "sluice.default.saved", "body", NULL);
    /* The batch form: a malformed line is counted and the next one still
     * read (a forged token: unknown_lease); fewer lines than announced, a
     * count out of range, a chunk outside the job. */
    tp_publish(j.nc, "sluice.default.saved", "x 0123456789abcdef0123456789abcdef 1 0\n1 0123456789abcdef0123456789abcdef 100 0\n",
               SL_H_CHUNKS, "2", NULL);
    tp_publish(j.nc, "sluice.default.saved", "2 0123456789abcdef0123456789abcdef 1 0\n", SL_H_CHUNKS, "3", NULL);
    tp_publish(j.nc, "sluice.default.saved", "", SL_H_CHUNKS, "0", NULL);
    tp_publish(j.nc, "sluice.default.saved", "20 0123456789abcdef0123456789abcdef 1 0\n", SL_H_CHUNKS, "1", NULL);
    tp_publish(j.nc, "sluice.default.progress", NULL, SL_H_CHUNK, "3", SL_H_LEASE, forged, NULL);
    tp_publish(j.nc, "sluice.default.work", NULL, NULL); /* no reply subject */
    natsMsg *req = NULL, *reply = NULL;
    natsMsg_Create(&req, "sluice.default.work", NULL, NULL, 0);
    natsMsgHeader_Set(req, SL_H_WORKER, "\"quoted\\garbage\"");
    CHECK(natsConnection_RequestMsg(&reply, j.nc, req, 2000) == NATS_OK);
    const char *status = NULL;
    natsMsgHeader_Get(reply, SL_H_STATUS, &status);
    CHECK_STR(status, "chunk"); /* served anyway; the header was only a name */
    natsMsg_Destroy(req), natsMsg_Destroy(reply);

    /* To the savers: bodies that are not JSON, headers that lie. */
    tp_publish(j.nc, "sluice.default.mapped", "{not json", SL_H_CHUNK, "5", SL_H_ATTEMPT, "1", SL_H_LEASE, forged,
               SL_H_COUNT, "1", NULL);
    tp_publish(j.nc, "sluice.default.mapped", "[]", SL_H_CHUNK, "abc", SL_H_ATTEMPT, "1", SL_H_LEASE, forged,
               SL_H_COUNT, "0", NULL);
    tp_publish(j.nc, "sluice.default.mapped", "{\"a\":1}", SL_H_CHUNK, "5", SL_H_ATTEMPT, "1", SL_H_LEASE, forged,
               SL_H_COUNT, "1", NULL);
    tp_publish(j.nc, "sluice.default.dead", "x", SL_H_CHUNK, "5", NULL); /* no reason */

    /* Each subject has its own delivery thread in the fetcher: wait for
     * all of them to be counted, then check that nothing else was. */
    tp_wait_stat(j.nc, "bad_messages", "bad_header", 9, 5000);
    tp_wait_stat(j.nc, "bad_messages", "unknown_lease", 3, 5000);
    tp_wait_stat(j.nc, "bad_messages", "no_reply", 1, 5000);
    tp_wait_stat(j.nc, "bad_messages", "stale_lease", 1, 5000);
    json_t *st = tp_status(j.nc);
    CHECK_INT(tp_stat(st, "bad_messages", "unknown_lease"), ==, 3);
    /* 3 chunks, 1 missing, the worker; in batches a line, a short body, a
     * count, a chunk */
    CHECK_INT(tp_stat(st, "bad_messages", "bad_header"), ==, 9);
    CHECK_INT(tp_stat(st, "bad_messages", "no_reply"), ==, 1);
    CHECK_INT(tp_stat(st, "bad_messages", "stale_lease"), ==, 1);
    CHECK_INT(tp_stat(st, "chunks", "done"), ==, 0);
    json_decref(st);
    th_proc_wait_log_n(s, "msg=\"bad message\"", 4, 5000);
    char *log = th_proc_log(s);
    CHECK(strstr(log, "reason=bad_body"));
    CHECK(strstr(log, "reason=bad_header"));
    free(log);

    /* Then the real work: all of it saved, nothing else. */
    th_proc *m = mapper(&j, "mapper", "0");
    CHECK_INT(th_proc_wait(f, 40000), ==, 0);
    CHECK(th_proc_running(s));
    tp_verify_sink(j.db, 2000, 100, 0);
    th_proc_free(m), th_proc_free(s), th_proc_free(f);
    job_stop(&j);
}

/* The test plays the fetcher, to hand the mapper chunks no real source
 * would make. */
typedef struct {
    natsConnection *nc;
    int served;
} fake_fetcher;

static void fake_work(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)sub;
    fake_fetcher *ff = closure;
    const char *bodies[] = {
        "[{\"uuid\":\"a1\",\"fn\":\"Ann\",\"ln\":\"Lee\",\"friends\":[]},"
        "{\"fn\":\"No\",\"ln\":\"Uuid\",\"friends\":[]},"
        "{\"uuid\":\"c3\",\"fn\":\"Zoë\",\"ln\":\"O'Brien\",\"friends\":[]}]",
        "this is not json",
    };
    natsMsg *r = NULL;
    int i = ff->served++;
    if (i < 2) {
        natsMsg_Create(&r, natsMsg_GetReply(m), NULL, bodies[i], (int)strlen(bodies[i]));
        natsMsgHeader_Set(r, SL_H_STATUS, "chunk");
        natsMsgHeader_Set(r, SL_H_CHUNK, i == 0 ? "7" : "8");
        natsMsgHeader_Set(r, SL_H_ATTEMPT, "1");
        natsMsgHeader_Set(r, SL_H_LEASE, i == 0 ? "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" : "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
        natsMsgHeader_Set(r, SL_H_LEASE_MS, "10000");
    } else {
        natsMsg_Create(&r, natsMsg_GetReply(m), NULL, NULL, 0);
        natsMsgHeader_Set(r, SL_H_STATUS, i == 2 ? "bogus" : "wait");
        natsMsgHeader_Set(r, SL_H_RETRY_MS, "50");
    }
    natsConnection_PublishMsg(nc, r);
    natsMsg_Destroy(r);
    natsMsg_Destroy(m);
}

SL_TEST(mapper_dead_letters_bad_objects_and_chunks, 30)
{
    job j;
    job_start(&j);
    fake_fetcher ff = {.nc = j.nc};
    natsSubscription *work = NULL, *saved = NULL, *release = NULL;
    CHECK(natsConnection_Subscribe(&work, j.nc, "sluice.default.work", fake_work, &ff) == NATS_OK);
    CHECK(natsConnection_SubscribeSync(&saved, j.nc, "sluice.default.saved") == NATS_OK);
    CHECK(natsConnection_SubscribeSync(&release, j.nc, "sluice.default.release") == NATS_OK);
    natsConnection_Flush(j.nc);
    th_proc *s = saver(&j, "saver");
    th_proc *m = mapper(&j, "mapper", "0");

    /* Chunk 7: two good objects saved, the one without uuid dead-lettered. */
    natsMsg *c = NULL;
    CHECK(natsSubscription_NextMsg(&c, saved, 10000) == NATS_OK);
    sl_saved_entry e;
    tp_saved_one(c, &e);
    CHECK_INT(e.chunk, ==, 7);
    CHECK_INT(e.count, ==, 2);
    CHECK_INT(e.dead, ==, 1);
    CHECK_STR(e.token, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    natsMsg_Destroy(c);
    const char *v = NULL;

    /* Chunk 8 is not JSON: handed back as a failure, with the reason. */
    CHECK(natsSubscription_NextMsg(&c, release, 10000) == NATS_OK);
    natsMsgHeader_Get(c, SL_H_CHUNK, &v);
    CHECK_STR(v, "8");
    natsMsgHeader_Get(c, SL_H_REASON, &v);
    CHECK_MSG(v && strstr(v, "not JSON"), "reason: %s", v ? v : "(none)");
    natsMsg_Destroy(c);

    th_proc_wait_log(s, "dead letter saved", 10000);
    th_proc_wait_log(m, "reason=bad_status", 10000);
    CHECK(th_proc_running(m));
    CHECK(th_proc_running(s));

    sqlite3 *db = NULL;
    CHECK(sqlite3_open_v2(j.db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CHECK(sqlite3_prepare_v2(db, "SELECT id, doc FROM objects ORDER BY id", -1, &q, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(q, 1), "{\"id\":\"a1\",\"name\":\"Ann Lee\"}");
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(q, 1), "{\"id\":\"c3\",\"name\":\"Zoë O'Brien\"}");
    CHECK(sqlite3_step(q) == SQLITE_DONE);
    sqlite3_finalize(q);
    CHECK(sqlite3_prepare_v2(db, "SELECT chunk, object, reason, raw, stage FROM dead_letters", -1, &q, NULL) ==
          SQLITE_OK);
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    CHECK_INT(sqlite3_column_int64(q, 0), ==, 7);
    CHECK_INT(sqlite3_column_int64(q, 1), ==, 1);
    CHECK(strstr((const char *)sqlite3_column_text(q, 2), "uuid"));
    CHECK(strstr((const char *)sqlite3_column_blob(q, 3), "\"Uuid\""));
    CHECK_STR((const char *)sqlite3_column_text(q, 4), "mapper");
    CHECK(sqlite3_step(q) == SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);

    natsSubscription_Destroy(work), natsSubscription_Destroy(saved), natsSubscription_Destroy(release);
    th_proc_free(m), th_proc_free(s);
    job_stop(&j);
}

SL_TEST(chunk_bigger_than_max_payload_is_dead_lettered_not_stalled, 60)
{
    /* A server that takes at most 16 KB per message: every 57 KB chunk of
     * users is too big to send. Each fails max-attempts times, is
     * dead-lettered without its bytes, and the job ends with exit 3. */
    char *conf = th_path("small.conf");
    FILE *fp = fopen(conf, "w");
    CHECK(fp);
    fputs("max_payload: 16384\n", fp);
    fclose(fp);
    const char *extra[] = {"-c", conf, NULL};
    job j;
    j.ns = th_nats_start(extra);
    j.env_url = tp_env_url(th_nats_url(j.ns));
    j.env[0] = j.env_url;
    j.env[1] = NULL;
    j.db = th_path("out.db");
    j.sink_flag = tp_flag("sink", "sqlite:", "out.db");
    j.ledger_flag = tp_flag("ledger", "", "job.ledger");
    j.nc = tp_connect(th_nats_url(j.ns));
    const char *fargv[] = {"sluice", "fetcher", "--objects", "300", "--max-attempts", "2", j.ledger_flag, NULL};
    th_proc *f = th_spawn("fetcher", fargv, j.env);
    th_proc *s = saver(&j, "saver");
    th_proc *m = mapper(&j, "mapper", "0");
    CHECK_INT(th_proc_wait(f, 30000), ==, 3);
    char *log = th_proc_log(f);
    CHECK(strstr(log, "could not send the chunk"));
    CHECK(strstr(log, "msg=\"dead letter reported\" chunk=2"));
    free(log);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open_v2(j.db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CHECK(sqlite3_prepare_v2(db, "SELECT count(*), sum(length(raw)), min(reason) FROM dead_letters WHERE stage = 'fetcher'",
                             -1, &q, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    CHECK_INT(sqlite3_column_int(q, 0), ==, 3);
    CHECK_INT(sqlite3_column_int(q, 1), ==, 0);
    CHECK_MSG(strstr((const char *)sqlite3_column_text(q, 2), "chunk bytes omitted"), "%s",
              (const char *)sqlite3_column_text(q, 2));
    sqlite3_finalize(q);
    sqlite3_close(db);
    CHECK(th_proc_running(m) && th_proc_running(s));
    th_proc_free(m), th_proc_free(s), th_proc_free(f);
    free(conf);
    job_stop(&j);
}

/* The chunk a P.mapped names, and the answer a saver gives it. */
static int64_t mapped_chunk(natsMsg *m)
{
    const char *v = NULL;
    CHECK(natsMsgHeader_Get(m, SL_H_CHUNK, &v) == NATS_OK);
    return strtoll(v, NULL, 10);
}

static void answer_mapped(natsConnection *nc, natsMsg *m, const char *status)
{
    const char *c = NULL, *a = NULL;
    CHECK(natsMsgHeader_Get(m, SL_H_CHUNK, &c) == NATS_OK && natsMsgHeader_Get(m, SL_H_ATTEMPT, &a) == NATS_OK);
    tp_publish(nc, natsMsg_GetReply(m), NULL, SL_H_STATUS, status, SL_H_CHUNK, c, SL_H_ATTEMPT, a, NULL);
}

/* Takes every P.mapped that comes within ms; returns how many distinct
 * chunks not in seen[] came, adding them. */
static int take_mapped(natsSubscription *sub, int ms, natsMsg **last, int64_t *seen, int *nseen)
{
    int fresh = 0;
    natsMsg *m = NULL;
    for (int64_t end = th_now_ms() + ms; natsSubscription_NextMsg(&m, sub, end - th_now_ms() > 0 ? end - th_now_ms() : 1) == NATS_OK;) {
        int64_t c = mapped_chunk(m);
        bool known = false;
        for (int i = 0; i < *nseen; i++)
            known |= seen[i] == c;
        if (!known) {
            CHECK(*nseen < 64);
            seen[(*nseen)++] = c;
            fresh++;
            natsMsg_Destroy(*last);
            *last = m;
        } else {
            natsMsg_Destroy(m);
        }
        m = NULL;
        if (th_now_ms() >= end)
            break;
    }
    return fresh;
}

/* --in-flight bounds the chunks a mapper has sent that no saver answered:
 * while none is answered it sends no more (re-sending, after "no
 * responders", only those), and each answer - accepted or released - lets
 * exactly one more go. */
SL_TEST(mapper_keeps_at_most_in_flight_chunks_unanswered, 60)
{
    job j;
    job_start(&j);
    th_proc *f = fetcher(&j, "fetcher", "3000", "20000");
    const char *argv[] = {"sluice", "mapper", "--in-flight", "3", NULL};
    th_proc *mp = th_spawn("mapper", argv, j.env);
    /* No saver yet: its P.mapped get "no responders" and are held. */
    th_proc_wait_log(mp, "no saver listens", 10000);

    natsSubscription *sub = NULL;
    CHECK(natsConnection_QueueSubscribeSync(&sub, j.nc, "sluice.default.mapped", SL_SAVER_QUEUE) == NATS_OK);
    natsConnection_Flush(j.nc);
    int64_t seen[64];
    int nseen = 0;
    natsMsg *last = NULL;
    int fresh = take_mapped(sub, 1500, &last, seen, &nseen);
    CHECK_MSG(fresh == 3, "%d chunks came with none answered (--in-flight 3)", fresh);
    /* An answer for an unknown chunk changes nothing. */
    tp_publish(j.nc, natsMsg_GetReply(last), NULL, SL_H_STATUS, SL_STATUS_ACCEPTED, SL_H_CHUNK, "29", SL_H_ATTEMPT,
               "7", NULL);
    fresh = take_mapped(sub, 500, &last, seen, &nseen);
    CHECK_MSG(fresh == 0, "%d chunks came after a stale answer", fresh);
    const char *status[] = {SL_STATUS_ACCEPTED, SL_STATUS_RELEASED, SL_STATUS_ACCEPTED};
    for (int i = 0; i < 3; i++) {
        answer_mapped(j.nc, last, status[i]);
        fresh = take_mapped(sub, 700, &last, seen, &nseen);
        CHECK_MSG(fresh == 1, "answer %d (%s): %d chunks came", i + 1, status[i], fresh);
    }
    natsMsg_Destroy(last);
    natsSubscription_Destroy(sub);
    th_proc_kill(mp, SIGTERM);
    CHECK_INT(th_proc_wait(mp, 5000), ==, 0);
    th_proc_kill(f, SIGTERM);
    th_proc_wait(f, 5000);
    th_proc_free(mp), th_proc_free(f);
    job_stop(&j);
}
