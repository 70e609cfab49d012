/* test_pg.c - the PostgreSQL sink against a real, throwaway cluster
 * (tests/pg.c): the sink contract, both batch methods, concurrency, and
 * whole jobs with a saver killed and with PostgreSQL going away. */
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "pg.h"
#include "pipeline.h"
#include "sink.h"
#include "test.h"

static sl_pgc *cluster;

static void stop_cluster(void)
{
    sl_pgc_destroy(cluster);
    cluster = NULL;
}

/* A cluster of the test's own; stopped and removed at exit, also after a
 * failed CHECK (the harness's own cleanup, registered first by
 * th_tmpdir, runs after this one). */
static sl_pgc *start_cluster(int fsync)
{
    char err[1024];
    const char *tmp = th_tmpdir();
    CHECK_MSG(sl_pgc_start(&cluster, tmp, fsync, err, sizeof err) == 0, "PostgreSQL: %s", err);
    atexit(stop_cluster);
    return cluster;
}

static PGconn *connect_pg(const char *uri)
{
    PGconn *pc = PQconnectdb(uri);
    CHECK_MSG(PQstatus(pc) == CONNECTION_OK, "connect %s: %s", uri, PQerrorMessage(pc));
    return pc;
}

/* The single value of a query, as text, malloc'd; NULL for SQL NULL. */
static char *q_text(PGconn *pc, const char *sql)
{
    PGresult *r = PQexec(pc, sql);
    CHECK_MSG(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", sql, PQerrorMessage(pc));
    char *v = PQgetisnull(r, 0, 0) ? NULL : strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static int64_t q_int(PGconn *pc, const char *sql)
{
    char *v = q_text(pc, sql);
    CHECK_MSG(v, "%s: NULL", sql);
    int64_t n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

static void check_text(PGconn *pc, const char *sql, const char *want)
{
    char *got = q_text(pc, sql);
    CHECK_MSG(got && !strcmp(got, want), "%s: \"%s\", want \"%s\"", sql, got ? got : "(null)", want);
    free(got);
}

static sl_sink *open_sink(const char *uri, const char *table)
{
    sl_sink *s = NULL;
    sl_status st = sl_sink_open(&s, &(sl_sink_opts){.uri = uri, .table = table});
    CHECK_MSG(st == SL_OK, "sl_sink_open(%s): %s", uri, sl_errmsg());
    return s;
}

/* The sink contract, with the batch method SLUICE_PG_BATCH names. */
static void contract(const char *uri, const char *method)
{
    setenv("SLUICE_PG_BATCH", method, 1);
    char table[32];
    snprintf(table, sizeof table, "t_%s", method);
    sl_sink *s = open_sink(uri, table);
    PGconn *pc = connect_pg(uri);
    char sql[512];
    /* --table names all three tables. */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('%s', '%s_chunks',"
             " '%s_dead_letters')",
             table, table, table);
    CHECK_INT(q_int(pc, sql), ==, 3);
    snprintf(sql, sizeof sql, "SELECT data_type FROM information_schema.columns WHERE table_name = '%s'"
                              " AND column_name = 'doc'", table);
    check_text(pc, sql, "jsonb");

    /* Put, chunk, commit; the same id twice in one chunk keeps the last. */
    const char *d1 = "{\"id\":\"a\",\"name\":\"Zo\u00eb O'Brien\\\\ \\t\"}";
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "b", "{\"v\":0}", 7, 4), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "a", d1, strlen(d1), 4), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "b", "{\"v\":1}", 7, 4), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 4, 2, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    CHECK_INT(q_int(pc, sql), ==, 2);
    snprintf(sql, sizeof sql, "SELECT doc->>'name' FROM %s WHERE id = 'a'", table);
    check_text(pc, sql, "Zo\u00eb O'Brien\\ \t");
    snprintf(sql, sizeof sql, "SELECT doc::text FROM %s WHERE id = 'b'", table);
    check_text(pc, sql, "{\"v\": 1}");
    snprintf(sql, sizeof sql, "SELECT count || '/' || attempt FROM %s_chunks WHERE idx = 4", table);
    check_text(pc, sql, "2/1");

    /* A redelivery changes nothing but what it carries. */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "b", "{\"v\":2}", 7, 9), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 4, 2, 2), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    snprintf(sql, sizeof sql, "SELECT count(*) || ' ' || min(chunk) || ' ' || max(chunk) FROM %s", table);
    check_text(pc, sql, "2 4 9");
    snprintf(sql, sizeof sql, "SELECT count(*) || ' ' || max(attempt) FROM %s_chunks", table);
    check_text(pc, sql, "1 2");

    /* Rollback leaves nothing, and the sink goes on. */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "c", "{}", 2, 5), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 5, "mapper", 1, "bad", "x", 1), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 5, 1, 1), ==, SL_OK);
    sl_sink_rollback(s);
    sl_sink_rollback(s);
    snprintf(sql, sizeof sql, "SELECT (SELECT count(*) FROM %s WHERE id = 'c') + (SELECT count(*) FROM %s_chunks"
                              " WHERE idx = 5) + (SELECT count(*) FROM %s_dead_letters)", table, table, table);
    CHECK_INT(q_int(pc, sql), ==, 0);

    /* Dead letters keep any bytes and replace by (chunk, stage, object). */
    const unsigned char raw[] = {'{', 0x00, 0xff, '"', 0x80, '}'};
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 5, "mapper", 2, "first", raw, sizeof raw), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 5, "fetcher", -1, "whole chunk", "[]", 2), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_dead(s, 5, "mapper", 2, "second", raw, sizeof raw), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s_dead_letters", table);
    CHECK_INT(q_int(pc, sql), ==, 2);
    snprintf(sql, sizeof sql, "SELECT reason || ' ' || encode(raw, 'hex') FROM %s_dead_letters WHERE object = 2",
             table);
    check_text(pc, sql, "second 7b00ff22807d");

    /* jsonb cannot hold \u0000: that object becomes a dead letter of stage
     * "sink" (its position among the puts), the rest of the chunk is
     * saved. */
    const char *nul = "{\"id\":\"n\",\"name\":\"x\\u0000y\"}";
    const char *tricky = "{\"id\":\"m\",\"name\":\"\\\\u0000 is text here\"}";
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "m", tricky, strlen(tricky), 6), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "n", nul, strlen(nul), 6), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "o", "{}", 2, 6), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 6, 3, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    snprintf(sql, sizeof sql, "SELECT string_agg(id, ',' ORDER BY id) FROM %s WHERE chunk = 6", table);
    check_text(pc, sql, "m,o");
    snprintf(sql, sizeof sql, "SELECT stage || ' ' || object || ' ' || convert_from(raw, 'UTF8') FROM"
                              " %s_dead_letters WHERE chunk = 6", table);
    char want[128];
    snprintf(want, sizeof want, "sink 1 %s", nul);
    check_text(pc, sql, want);

    /* Destroy in the middle of a transaction commits nothing. */
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "zz", "{}", 2, 7), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 7, 1, 1), ==, SL_OK);
    sl_sink_destroy(s);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s_chunks WHERE idx = 7", table);
    CHECK_INT(q_int(pc, sql), ==, 0);

    /* Opening again keeps the tables. */
    s = open_sink(uri, table);
    sl_sink_destroy(s);
    PQfinish(pc);
    unsetenv("SLUICE_PG_BATCH");
}

SL_TEST(pg_sink_contract, 120)
{
    sl_pgc *c = start_cluster(0);
    contract(sl_pgc_uri(c), "values");
    contract(sl_pgc_uri(c), "copy");

    /* The default --table keeps the default schema's names. */
    sl_sink *s = open_sink(sl_pgc_uri(c), "objects");
    sl_sink_destroy(s);
    PGconn *pc = connect_pg(sl_pgc_uri(c));
    CHECK_INT(q_int(pc, "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('objects', 'chunks',"
                        " 'dead_letters')"),
              ==, 3);
    PQfinish(pc);

    /* A NAME whose NAME_dead_letters PostgreSQL would cut is refused. */
    char longname[64];
    memset(longname, 'x', 55);
    longname[55] = '\0';
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = sl_pgc_uri(c), .table = longname}), ==, SL_EINVAL);
    CHECK(strstr(sl_errmsg(), "63"));

    /* A bad setting of the batch method is refused. */
    setenv("SLUICE_PG_BATCH", "bulk", 1);
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = sl_pgc_uri(c), .table = "objects"}), ==, SL_EINVAL);
    unsetenv("SLUICE_PG_BATCH");
}

SL_TEST(pg_sink_gives_up_on_a_server_that_never_answers, 60)
{
    /* A listening socket that never answers: the TCP connection is made,
     * the server's reply never comes. libpq alone would wait as long as
     * the kernel keeps the connection; the sink gives up after its 10 s,
     * unless the URI or PGCONNECT_TIMEOUT says otherwise. */
    int port, fd = th_listen_silent(&port);
    char uri[128];
    snprintf(uri, sizeof uri, "postgres://sluice@127.0.0.1:%d/postgres?sslmode=disable", port);
    sl_sink *s = NULL;
    int64_t t0 = th_now_ms();
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = uri, .table = "objects"}), ==, SL_EIO);
    int64_t took = th_now_ms() - t0;
    CHECK_MSG(strstr(sl_errmsg(), "timeout expired"), "%s", sl_errmsg());
    CHECK_MSG(took >= 9000 && took < 30000, "gave up after %lld ms, not about 10 s", (long long)took);

    /* The URI's own connect_timeout wins over the default. */
    snprintf(uri, sizeof uri, "postgres://sluice@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", port);
    t0 = th_now_ms();
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = uri, .table = "objects"}), ==, SL_EIO);
    took = th_now_ms() - t0;
    CHECK_MSG(took >= 1500 && took < 9000, "gave up after %lld ms, not about 2 s", (long long)took);

    /* So does PGCONNECT_TIMEOUT, libpq's own variable. */
    snprintf(uri, sizeof uri, "postgres://sluice@127.0.0.1:%d/postgres?sslmode=disable", port);
    setenv("PGCONNECT_TIMEOUT", "3", 1);
    t0 = th_now_ms();
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = uri, .table = "objects"}), ==, SL_EIO);
    took = th_now_ms() - t0;
    unsetenv("PGCONNECT_TIMEOUT");
    CHECK_MSG(took >= 2500 && took < 9000, "gave up after %lld ms, not about 3 s", (long long)took);
    close(fd);
}

SL_TEST(pg_sink_errors_hide_the_password, 60)
{
    sl_pgc *c = start_cluster(0);
    sl_sink *s = NULL;
    /* Nothing listens on port 1; the message names the URI, password hidden. */
    const char *bad = "postgresql://sluice:hunter2secret@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2";
    CHECK_INT(sl_sink_open(&s, &(sl_sink_opts){.uri = bad, .table = "objects"}), ==, SL_EIO);
    CHECK(s == NULL);
    CHECK_MSG(!strstr(sl_errmsg(), "hunter2secret") && strstr(sl_errmsg(), "127.0.0.1:1") &&
                  !strchr(sl_errmsg(), '\n'),
              "%s", sl_errmsg());

    /* Lost connection: the operation fails with the password hidden, the
     * next begin reconnects. (trust auth: the password is not checked.) */
    char uri[256];
    snprintf(uri, sizeof uri, "postgres://sluice:hunter2secret@127.0.0.1:%d/postgres?sslmode=disable",
             sl_pgc_port(c));
    s = open_sink(uri, "objects");
    CHECK_INT(sl_pgc_stop(c, 'f'), ==, 0);
    sl_status st = sl_sink_begin(s);
    if (st == SL_OK) {
        CHECK_INT(sl_sink_put(s, "a", "{}", 2, 0), ==, SL_OK);
        st = sl_sink_commit(s);
    }
    CHECK_INT(st, ==, SL_EIO);
    CHECK_MSG(!strstr(sl_errmsg(), "hunter2secret") && strstr(sl_errmsg(), "***@"), "%s", sl_errmsg());
    sl_sink_rollback(s);
    char err[512];
    CHECK_MSG(sl_pgc_start_again(c, err, sizeof err) == 0, "%s", err);
    CHECK_INT(sl_sink_begin(s), ==, SL_OK);
    CHECK_INT(sl_sink_put(s, "a", "{}", 2, 0), ==, SL_OK);
    CHECK_INT(sl_sink_chunk(s, 0, 1, 1), ==, SL_OK);
    CHECK_INT(sl_sink_commit(s), ==, SL_OK);
    sl_sink_destroy(s);
    PGconn *pc = connect_pg(sl_pgc_uri(c));
    CHECK_INT(q_int(pc, "SELECT count(*) FROM objects"), ==, 1);
    PQfinish(pc);
}

typedef struct {
    const char *uri;
    int reverse;
    int failures;
} writer;

/* 40 chunks of 200 ids, the same 300 ids for both writers, put in opposite
 * orders; every failed commit is retried, as the saver's hand-back does. */
static void *write_overlapping(void *arg)
{
    writer *w = arg;
    sl_sink *s = NULL;
    if (sl_sink_open(&s, &(sl_sink_opts){.uri = w->uri, .table = "objects"}) != SL_OK)
        return (void *)sl_errmsg();
    for (int chunk = 0; chunk < 40; chunk++) {
        for (int tries = 0;; tries++) {
            sl_status st = sl_sink_begin(s);
            for (int k = 0; k < 200 && !st; k++) {
                int n = w->reverse ? 299 - (k + chunk * 7) % 300 : (k + chunk * 7) % 300;
                char id[16], doc[64];
                snprintf(id, sizeof id, "id-%03d", n);
                int len = snprintf(doc, sizeof doc, "{\"id\":\"%s\",\"by\":%d}", id, w->reverse);
                st = sl_sink_put(s, id, doc, (size_t)len, chunk);
            }
            if (!st)
                st = sl_sink_chunk(s, chunk * 2 + w->reverse, 200, 1);
            if (!st)
                st = sl_sink_commit(s);
            if (!st)
                break;
            sl_sink_rollback(s);
            w->failures++;
            if (tries > 50) {
                sl_sink_destroy(s);
                return "gave up after 50 failed commits";
            }
        }
    }
    sl_sink_destroy(s);
    return NULL;
}

SL_TEST(pg_sink_two_connections_overlapping_ids, 120)
{
    sl_pgc *c = start_cluster(0);
    const char *methods[] = {"values", "copy"};
    for (int m = 0; m < 2; m++) {
        setenv("SLUICE_PG_BATCH", methods[m], 1);
        writer a = {sl_pgc_uri(c), 0, 0}, b = {sl_pgc_uri(c), 1, 0};
        pthread_t ta, tb;
        CHECK(pthread_create(&ta, NULL, write_overlapping, &a) == 0);
        CHECK(pthread_create(&tb, NULL, write_overlapping, &b) == 0);
        void *ra, *rb;
        pthread_join(ta, &ra);
        pthread_join(tb, &rb);
        CHECK_MSG(!ra && !rb, "%s: %s / %s", methods[m], ra ? (char *)ra : "ok", rb ? (char *)rb : "ok");
        PGconn *pc = connect_pg(sl_pgc_uri(c));
        CHECK_INT(q_int(pc, "SELECT count(*) FROM objects"), ==, 300);
        CHECK_INT(q_int(pc, "SELECT count(*) FROM chunks"), ==, 80);
        fprintf(stderr, "    %s: failed commits retried: %d + %d\n", methods[m], a.failures, b.failures);
        PQfinish(pc);
    }
    unsetenv("SLUICE_PG_BATCH");
}

/* ---- whole jobs ----------------------------------------------------------- */

typedef struct {
    PGresult *r; /* id, doc::text, chunk, sorted bytewise by id */
} pg_rows;

static int pg_row(void *arg, const char *id, const char **doc, int64_t *chunk)
{
    pg_rows *p = arg;
    int lo = 0, hi = PQntuples(p->r) - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(PQgetvalue(p->r, mid, 0), id);
        if (!c) {
            *doc = PQgetvalue(p->r, mid, 1);
            *chunk = strtoll(PQgetvalue(p->r, mid, 2), NULL, 10);
            return 1;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return 0;
}

/* tp_verify_sink for PostgreSQL: exactly `objects` rows, each the fullname
 * of its user in its chunk, one chunk row per chunk, `dead` dead letters. */
static void verify_pg(const char *uri, int64_t objects, int64_t chunk_size, int64_t dead)
{
    PGconn *pc = connect_pg(uri);
    CHECK_INT(q_int(pc, "SELECT count(*) FROM objects"), ==, objects);
    CHECK_INT(q_int(pc, "SELECT count(*) FROM chunks"), ==, (objects + chunk_size - 1) / chunk_size);
    CHECK_INT(q_int(pc, "SELECT count(*) FROM dead_letters"), ==, dead);
    pg_rows p = {PQexec(pc, "SELECT id, doc::text, chunk FROM objects ORDER BY id COLLATE \"C\"")};
    CHECK_MSG(PQresultStatus(p.r) == PGRES_TUPLES_OK, "%s", PQerrorMessage(pc));
    CHECK_INT(tp_verify_rows(objects, chunk_size, -1, NULL, 0, false, pg_row, &p), ==, objects);
    PQclear(p.r);
    PQfinish(pc);
}

/* count and a digest of every (id, doc) of objects. */
static char *objects_digest(const char *uri)
{
    PGconn *pc = connect_pg(uri);
    char *d = q_text(pc, "SELECT count(*) || ' ' || md5(string_agg(id || '=' || doc::text, ',' ORDER BY id))"
                         " FROM objects");
    PQfinish(pc);
    return d;
}

static int64_t pg_chunks(const char *uri)
{
    PGconn *pc = connect_pg(uri);
    int64_t n = q_int(pc, "SELECT count(*) FROM chunks");
    PQfinish(pc);
    return n;
}

SL_TEST(pg_job_two_savers_one_killed_then_rerun, 240)
{
    sl_pgc *c = start_cluster(0);
    char *sinkflag = NULL;
    {
        sl_buf b = SL_BUF_INIT;
        sl_buf_printf(&b, "--sink=%s", sl_pgc_uri(c));
        sinkflag = b.data;
    }
    th_nats *ns = th_nats_start(NULL);
    char *env_url = tp_env_url(th_nats_url(ns)), *ledger = tp_flag("ledger", "", "f.ledger");
    const char *env[] = {env_url, NULL};
    const char *fargv[] = {"sluice", "fetcher", "--objects", "20000", "--lease-ms", "2000", ledger, NULL};
    const char *margv[] = {"sluice", "mapper", "--work-ms", "20", NULL};
    const char *sargv[] = {"sluice", "saver", sinkflag, NULL};
    th_proc *f = th_spawn("fetcher", fargv, env);
    th_proc_wait_log(f, "fetcher started", 10000);
    th_proc *s1 = th_spawn("saver1", sargv, env), *s2 = th_spawn("saver2", sargv, env);
    th_proc_wait_log(s1, "saver started", 10000);
    th_proc_wait_log(s2, "saver started", 10000);
    th_proc *m1 = th_spawn("mapper1", margv, env), *m2 = th_spawn("mapper2", margv, env);
    natsConnection *nc = tp_connect(th_nats_url(ns));
    tp_wait_chunks(nc, "done", 40, 60000);
    th_proc_kill(s1, SIGKILL);
    CHECK_INT(th_proc_wait(s1, 5000), ==, 128 + SIGKILL);
    tp_wait_chunks(nc, "done", 100, 60000);
    th_proc *s3 = th_spawn("saver3", sargv, env); /* the killed one, restarted */
    CHECK_INT(th_proc_wait(f, 120000), ==, 0);
    verify_pg(sl_pgc_uri(c), 20000, 100, 0);
    char *before = objects_digest(sl_pgc_uri(c));
    th_proc_free(m1), th_proc_free(m2), th_proc_free(s2), th_proc_free(s3), th_proc_free(s1);
    natsConnection_Destroy(nc);

    /* The same job again from a fresh ledger: every chunk is saved again,
     * and objects is exactly as it was. */
    const char *rargv[] = {"sluice", "run", "--fresh", "--objects", "20000", "--savers", "2", sinkflag, ledger,
                           NULL};
    char *out = NULL;
    int rc = th_run(rargv, NULL, &out, 120000);
    CHECK_MSG(rc == 0, "sluice run exited %d:\n%s", rc, out);
    char *after = objects_digest(sl_pgc_uri(c));
    CHECK_STR(after, before);
    verify_pg(sl_pgc_uri(c), 20000, 100, 0);
    free(out), free(before), free(after), free(sinkflag), free(env_url), free(ledger);
    th_proc_free(f);
    th_nats_stop(ns);
}

SL_TEST(pg_job_survives_postgres_outage, 240)
{
    sl_pgc *c = start_cluster(1); /* fsync on: a restart must not lose commits */
    sl_buf b = SL_BUF_INIT;
    sl_buf_printf(&b, "--sink=%s", sl_pgc_uri(c));
    th_nats *ns = th_nats_start(NULL);
    char *env_url = tp_env_url(th_nats_url(ns)), *ledger = tp_flag("ledger", "", "f.ledger");
    const char *env[] = {env_url, NULL};
    const char *fargv[] = {"sluice", "fetcher", "--objects", "10000", "--lease-ms", "2000", ledger, NULL};
    const char *margv[] = {"sluice", "mapper", "--work-ms", "30", NULL};
    const char *sargv[] = {"sluice", "saver", b.data, NULL};
    th_proc *f = th_spawn("fetcher", fargv, env);
    th_proc_wait_log(f, "fetcher started", 10000);
    th_proc *s1 = th_spawn("saver1", sargv, env), *s2 = th_spawn("saver2", sargv, env);
    th_proc_wait_log(s1, "saver started", 10000);
    th_proc_wait_log(s2, "saver started", 10000);
    th_proc *m1 = th_spawn("mapper1", margv, env), *m2 = th_spawn("mapper2", margv, env);
    natsConnection *nc = tp_connect(th_nats_url(ns));
    tp_wait_chunks(nc, "done", 20, 60000);

    CHECK_INT(sl_pgc_stop(c, 'f'), ==, 0);
    /* While it is down: a saver fails, and the fetcher marks nothing done
     * that is not committed - the most it reports now must all be in
     * PostgreSQL once it is back. */
    th_proc_wait_log(s1, "chunk not saved", 20000);
    int64_t most = 0, until = th_now_ms() + 3000;
    while (th_now_ms() < until) {
        json_t *st = tp_status(nc);
        if (st) {
            int64_t d = tp_stat(st, "chunks", "done");
            most = d > most ? d : most;
            json_decref(st);
        }
        usleep(50000);
    }
    char err[512];
    CHECK_MSG(sl_pgc_start_again(c, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(pg_chunks(sl_pgc_uri(c)) >= most, "fetcher had %lld chunks done while PostgreSQL was down,"
              " more than it holds", (long long)most);
    CHECK_MSG(most < 100, "the job ended before the outage mattered (%lld done)", (long long)most);

    CHECK_INT(th_proc_wait(f, 180000), ==, 0);
    verify_pg(sl_pgc_uri(c), 10000, 100, 0);
    char *log = th_proc_log(s1);
    CHECK_MSG(strstr(log, "taking chunks again"), "saver1 never resumed:\n%s", log);
    free(log);
    th_proc_free(m1), th_proc_free(m2), th_proc_free(s1), th_proc_free(s2), th_proc_free(f);
    natsConnection_Destroy(nc);
    th_nats_stop(ns);
    sl_buf_free(&b);
    free(env_url), free(ledger);
}
