/* test_monitoring.c - metrics, health and the dashboards, against a real
 * Prometheus scraping real processes: every panel of both dashboards must
 * return data ("the result may be a success even if the query doesn't make
 * sense"), and the counters must agree with the database. */
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "pipeline.h"
#include "test.h"

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK_MSG(f, "cannot write %s", path);
    fputs(text, f);
    CHECK(fclose(f) == 0);
}

/* Replaces every "from" in text by "to" (text is freed; result malloc'd). */
static char *replace_all(char *text, const char *from, const char *to)
{
    sl_buf b = SL_BUF_INIT;
    const char *p = text, *q;
    while ((q = strstr(p, from))) {
        sl_buf_append(&b, p, (size_t)(q - p));
        sl_buf_puts(&b, to);
        p = q + strlen(from);
    }
    sl_buf_puts(&b, p);
    free(text);
    return b.data;
}

/* Pipes a process's /metrics through `promtool check metrics`. */
static void promtool_accepts(int port, const char *who)
{
    char url[64], *body = NULL;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    CHECK_INT(tp_http_get(url, &body), ==, 200);
    char name[64];
    snprintf(name, sizeof name, "metrics-%s.txt", who);
    char *path = th_path(name);
    write_text(path, body);
    sl_buf cmd = SL_BUF_INIT;
    sl_buf_printf(&cmd, "promtool check metrics < '%s'", path);
    const char *argv[] = {"/bin/sh", "-c", cmd.data, NULL};
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 20000);
    CHECK_MSG(rc == 0, "promtool check metrics refused %s's /metrics (exit %d):\n%s", who, rc, out);
    free(out), free(path), free(body);
    sl_buf_free(&cmd);
}

/* (Re)writes the sluice scrape targets; Prometheus reads them again within
 * a second (file_sd). */
static void set_targets(const char *sluice_targets)
{
    char *path = th_path("prom/targets/sluice.json");
    sl_buf b = SL_BUF_INIT;
    sl_buf_printf(&b, "[{\"targets\": [%s]}]\n", sluice_targets);
    write_text(path, b.data);
    sl_buf_free(&b);
    free(path);
}

/* Prometheus with deploy/prometheus's configuration, scraping every second
 * instead of every 5 s, and the given targets. Returns its port. */
static int start_prometheus(const char *sluice_targets, int exporter_port, th_proc **proc)
{
    char *dir = th_path("prom"), *targets = th_path("prom/targets");
    CHECK(mkdir(dir, 0755) == 0 && mkdir(targets, 0755) == 0);
    char *cfg = th_src_read("deploy/prometheus/prometheus.yml");
    cfg = replace_all(cfg, "scrape_interval: 5s", "scrape_interval: 1s");
    cfg = replace_all(cfg, "evaluation_interval: 5s", "evaluation_interval: 1s");
    cfg = replace_all(cfg, "refresh_interval: 5s", "refresh_interval: 1s");
    char *rules = th_src_read("deploy/prometheus/rules.yml");
    sl_buf p = SL_BUF_INIT, t2 = SL_BUF_INIT, f2 = SL_BUF_INIT;
    sl_buf_printf(&p, "%s/prometheus.yml", dir);
    write_text(p.data, cfg);
    sl_buf_reset(&p);
    sl_buf_printf(&p, "%s/rules.yml", dir);
    write_text(p.data, rules);
    sl_buf_printf(&t2, "%s/nats.json", targets);
    sl_buf_printf(&f2, "[{\"targets\": [\"127.0.0.1:%d\"]}]\n", exporter_port);
    set_targets(sluice_targets);
    write_text(t2.data, f2.data);
    int port = th_free_port();
    sl_buf a1 = SL_BUF_INIT, a2 = SL_BUF_INIT, a3 = SL_BUF_INIT;
    sl_buf_printf(&a1, "--config.file=%s/prometheus.yml", dir);
    sl_buf_printf(&a2, "--storage.tsdb.path=%s/data", dir);
    sl_buf_printf(&a3, "--web.listen-address=127.0.0.1:%d", port);
    const char *argv[] = {"prometheus", a1.data, a2.data, a3.data, "--log.level=warn", NULL};
    *proc = th_spawn("prometheus", argv, NULL);
    char ready[64];
    snprintf(ready, sizeof ready, "http://127.0.0.1:%d/-/ready", port);
    int64_t deadline = th_now_ms() + 20000;
    while (tp_http_get(ready, NULL) != 200) {
        CHECK_MSG(th_now_ms() < deadline && th_proc_running(*proc), "Prometheus did not become ready");
        usleep(50000);
    }
    free(dir), free(targets), free(cfg), free(rules);
    sl_buf_free(&p), sl_buf_free(&t2), sl_buf_free(&f2);
    sl_buf_free(&a1), sl_buf_free(&a2), sl_buf_free(&a3);
    return port;
}

/* Polls Prometheus until expr has a non-empty result; returns its first
 * sample's value. */
static double wait_query(int port, const char *expr, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    /* A Prometheus that is still opening its storage answers 503 to
     * queries; a job can be over by then. */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/-/ready", port);
    for (;;) {
        char *body = NULL;
        long code = tp_http_get(url, &body);
        free(body);
        if (code == 200)
            break;
        CHECK_MSG(th_now_ms() < deadline, "Prometheus not ready after %d ms (%ld)", timeout_ms, code);
        usleep(100000);
    }
    for (;;) {
        json_t *r = tp_prom_query(port, expr);
        if (json_array_size(r) > 0) {
            const char *v = json_string_value(json_array_get(json_object_get(json_array_get(r, 0), "value"), 1));
            double d = v ? strtod(v, NULL) : 0;
            json_decref(r);
            return d;
        }
        json_decref(r);
        CHECK_MSG(th_now_ms() < deadline, "Prometheus has no data for %s after %d ms", expr, timeout_ms);
        usleep(200000);
    }
}

/* Every query of every panel of a dashboard returns data. */
static int check_dashboard(int port, const char *rel)
{
    char *text = th_src_read(rel);
    json_t *d = json_loads(text, 0, NULL);
    CHECK_MSG(json_is_object(d), "%s is not JSON", rel);
    size_t i, k;
    json_t *panel, *target;
    int queries = 0;
    json_array_foreach(json_object_get(d, "panels"), i, panel)
    {
        json_array_foreach(json_object_get(panel, "targets"), k, target)
        {
            const char *expr = json_string_value(json_object_get(target, "expr"));
            if (!expr)
                continue;
            char *q = replace_all(sl_xstrdup(expr), "$__rate_interval", "1m");
            q = replace_all(q, "$sluice_job", ".*");
            q = replace_all(q, "$server_id", ".*");
            json_t *r = tp_prom_query(port, q);
            CHECK_MSG(json_array_size(r) > 0, "panel \"%s\" of %s: no data for %s",
                      json_string_value(json_object_get(panel, "title")), rel, q);
            const char *v = json_string_value(json_array_get(json_object_get(json_array_get(r, 0), "value"), 1));
            fprintf(stderr, "    %-28.28s %s = %s\n", json_string_value(json_object_get(panel, "title")), q,
                    v ? v : "?");
            json_decref(r);
            free(q);
            queries++;
        }
    }
    json_decref(d);
    free(text);
    return queries;
}

SL_TEST(monitoring_dashboards_have_data_in_prometheus, 150)
{
    th_nats *ns = th_nats_start(NULL);
    char *env_url = tp_env_url(th_nats_url(ns));
    const char *env[] = {env_url, NULL};
    char *sink = tp_flag("sink", "sqlite:", "out.db"), *ledger = tp_flag("ledger", "", "f.ledger");
    char monitor[64];
    snprintf(monitor, sizeof monitor, "http://127.0.0.1:%d", th_nats_monitor_port(ns));
    const char *eargv[] = {"sluice", "nats-exporter", "--nats-monitor", monitor, "--http", "127.0.0.1:0", NULL};
    const char *fargv[] = {"sluice", "fetcher", "--objects", "8000", "--lease-ms", "1000", "--linger",
                           "--http", "127.0.0.1:0", ledger, NULL};
    const char *sargv[] = {"sluice", "saver", "--http", "127.0.0.1:0", sink, NULL};
    const char *slowargv[] = {"sluice", "mapper", "--work-ms", "60000", "--http", "127.0.0.1:0", NULL};
    const char *margv[] = {"sluice", "mapper", "--work-ms", "150", "--http", "127.0.0.1:0", NULL};
    th_proc *e = th_spawn("exporter", eargv, env), *f = th_spawn("fetcher", fargv, env);
    th_proc *s = th_spawn("saver", sargv, env), *slow = th_spawn("slow-mapper", slowargv, env);
    int eport = tp_http_port(e), fport = tp_http_port(f), sport = tp_http_port(s);
    th_proc_wait_log(f, "fetcher started", 10000);
    natsConnection *nc = tp_connect(th_nats_url(ns));
    /* A mapper dies holding a chunk: the job must redeliver it. */
    tp_wait_chunks(nc, "leased", 1, 10000);
    th_proc_kill(slow, SIGKILL);
    /* Prometheus first, so it sees the job running. */
    sl_buf targets = SL_BUF_INIT;
    sl_buf_printf(&targets, "\"127.0.0.1:%d\", \"127.0.0.1:%d\"", fport, sport);
    th_proc *prom = NULL;
    int pport = start_prometheus(targets.data, eport, &prom);
    wait_query(pport, "up{job=\"sluice\"} == 1", 20000);
    th_proc *m1 = th_spawn("mapper1", margv, env), *m2 = th_spawn("mapper2", margv, env);
    int m1port = tp_http_port(m1), m2port = tp_http_port(m2);
    sl_buf_printf(&targets, ", \"127.0.0.1:%d\", \"127.0.0.1:%d\"", m1port, m2port);
    set_targets(targets.data);

    /* Every process's exposition is valid. */
    promtool_accepts(fport, "fetcher");
    promtool_accepts(sport, "saver");
    promtool_accepts(m1port, "mapper");
    promtool_accepts(eport, "exporter");

    tp_wait_stat(nc, "chunks", "done", 80, 60000);
    /* What Prometheus says once it has scraped the finished job. */
    double saved = 0;
    int64_t deadline = th_now_ms() + 20000;
    while ((saved = wait_query(pport, "sluice_objects_saved_total{role=\"fetcher\"}", 20000)) < 8000) {
        CHECK_MSG(th_now_ms() < deadline, "sluice_objects_saved_total stuck at %.0f", saved);
        usleep(200000);
    }
    char *db = th_path("out.db");
    sqlite3 *sq = NULL;
    CHECK(sqlite3_open_v2(db, &sq, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CHECK(sqlite3_prepare_v2(sq, "SELECT count(*) FROM objects", -1, &q, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    CHECK_INT((int64_t)saved, ==, sqlite3_column_int64(q, 0));
    sqlite3_finalize(q);
    sqlite3_close(sq);
    CHECK(wait_query(pport, "sluice_redeliveries_total{role=\"fetcher\"}", 10000) >= 1);
    CHECK(wait_query(pport, "nats_varz_cpu", 10000) >= 0);
    /* Prometheus saw the job move, and has two samples of every target. */
    wait_query(pport, "count(count_over_time(up[1m]) >= 2) >= 5", 20000);
    CHECK(wait_query(pport, "sum(rate(sluice_objects_saved_total{role=\"fetcher\"}[1m]))", 10000) > 0);
    if (wait_query(pport, "sum(rate(sluice_objects_mapped_total[1m]))", 10000) <= 0) {
        json_t *r = tp_prom_query(pport, "sluice_objects_mapped_total[1m]");
        char *dump = json_dumps(r, JSON_COMPACT);
        sl_test_fail(__FILE__, __LINE__, "no mapping seen: %s", dump);
    }

    int n = check_dashboard(pport, "deploy/grafana/sluice.json") + check_dashboard(pport, "deploy/grafana/nats.json");
    CHECK(n >= 20);

    natsConnection_Destroy(nc);
    th_proc_free(prom), th_proc_free(m1), th_proc_free(m2), th_proc_free(slow), th_proc_free(s);
    th_proc_free(f), th_proc_free(e);
    th_nats_stop(ns);
    free(env_url), free(sink), free(ledger), free(db);
    sl_buf_free(&targets);
}

static long get(int port, const char *path)
{
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    return tp_http_get(url, NULL);
}

static void wait_status(int port, const char *path, long want, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    long have;
    while ((have = get(port, path)) != want) {
        CHECK_MSG(th_now_ms() < deadline, "%s answered %ld, not %ld, for %d ms", path, have, want, timeout_ms);
        usleep(20000);
    }
}

SL_TEST(monitoring_readyz_follows_nats, 60)
{
    th_nats *ns = th_nats_start(NULL);
    char *env_url = tp_env_url(th_nats_url(ns));
    const char *env[] = {env_url, NULL};
    char *ledger = tp_flag("ledger", "", "f.ledger"), *sink = tp_flag("sink", "sqlite:", "out.db");
    const char *margv[] = {"sluice", "mapper", "--http", "127.0.0.1:0", NULL};
    const char *fargv[] = {"sluice", "fetcher", "--http", "127.0.0.1:0", "--objects", "100", "--linger", ledger, NULL};
    const char *sargv[] = {"sluice", "saver", "--http", "127.0.0.1:0", sink, NULL};
    th_proc *m = th_spawn("mapper", margv, env), *f = th_spawn("fetcher", fargv, env);
    th_proc *s = th_spawn("saver", sargv, env);
    int ports[3] = {tp_http_port(m), tp_http_port(f), tp_http_port(s)};
    for (int i = 0; i < 3; i++) {
        wait_status(ports[i], "/readyz", 200, 10000);
        CHECK_INT(get(ports[i], "/healthz"), ==, 200);
        CHECK_INT(get(ports[i], "/nope"), ==, 404);
    }
    /* NATS goes away: nobody is ready, everybody is alive. */
    kill(th_nats_pid(ns), SIGKILL);
    for (int i = 0; i < 3; i++) {
        wait_status(ports[i], "/readyz", 503, 10000);
        CHECK_INT(get(ports[i], "/healthz"), ==, 200);
    }
    char url[64], *body = NULL;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", ports[0]);
    CHECK_INT(tp_http_get(url, &body), ==, 503);
    CHECK_MSG(strstr(body, "NATS"), "%s", body);
    free(body);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", ports[0]);
    CHECK_INT(tp_http_get(url, &body), ==, 200);
    CHECK(strstr(body, "sluice_nats_connected{role=\"mapper\",sluice_job=\"default\"} 0"));
    free(body);
    /* It comes back on the same port; so does readiness. */
    th_nats_restart(ns);
    for (int i = 0; i < 3; i++)
        wait_status(ports[i], "/readyz", 200, 15000);
    CHECK_INT(tp_http_get(url, &body), ==, 200);
    CHECK(strstr(body, "sluice_nats_connected{role=\"mapper\",sluice_job=\"default\"} 1"));
    CHECK(strstr(body, "sluice_nats_reconnects_total{role=\"mapper\",sluice_job=\"default\"} 1"));
    free(body);
    th_proc_free(m), th_proc_free(f), th_proc_free(s);
    th_nats_stop(ns);
    free(env_url), free(ledger), free(sink);
}

SL_TEST(monitoring_run_monitor_starts_prometheus, 90)
{
    char *sink = tp_flag("sink", "sqlite:", "out.db"), *ledger = tp_flag("ledger", "", "run.ledger");
    const char *argv[] = {"sluice", "run", "--monitor", "--objects", "2000", sink, ledger, NULL};
    th_proc *run = th_spawn("run", argv, NULL);
    th_proc_wait_log(run, "Prometheus stays up at http://127.0.0.1:", 60000);
    char *log = th_proc_log(run);
    CHECK(strstr(log, "objects saved   2000 of 2000"));
    CHECK(strstr(log, "fetcher=http://127.0.0.1:"));
    int port = atoi(strstr(log, "Prometheus stays up at http://127.0.0.1:") + strlen("Prometheus stays up at http://127.0.0.1:"));
    free(log);
    /* As in a cluster: the query people type first. */
    wait_query(port, "nats_varz_cpu", 30000);
    th_proc_kill(run, SIGINT);
    CHECK_INT(th_proc_wait(run, 20000), ==, 0);
    th_proc_free(run);
    free(sink), free(ledger);
}
