/* test_exporter.c - `sluice nats-exporter` against a real nats-server: the
 * official exporter's names and values, promtool's verdict, a monitor that
 * goes away, usage errors, and a monitor that answers garbage. */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "pipeline.h"
#include "test.h"

/* ---- HTTP from the test's side ------------------------------------------ */

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    sl_buf_append(arg, p, size * n);
    return size * n;
}

/* GETs url and returns the HTTP status; the body goes to *body (malloc'd,
 * caller frees). Fails the test if nothing answers. */
static long http_get(const char *url, char **body)
{
    CURL *c = curl_easy_init();
    CHECK(c);
    sl_buf b = SL_BUF_INIT;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    CHECK_MSG(rc == CURLE_OK, "GET %s: %s", url, curl_easy_strerror(rc));
    *body = b.data ? b.data : sl_xstrdup("");
    return code;
}

/* GET http://127.0.0.1:<port><path>. */
static long get_local(int port, const char *path, char **body)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    return http_get(url, body);
}

/* ---- the exposition ------------------------------------------------------ */

/* The value of the sample `series` ("name{labels}" exactly as written) in
 * an exposition; NAN when there is no such line. */
static double value_of(const char *body, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = body; *line;) {
        if (!strncmp(line, series, n) && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        const char *end = strchr(line, '\n');
        if (!end)
            break;
        line = end + 1;
    }
    return NAN;
}

/* The value of name{server_id="<id>"}. */
static double value_for(const char *body, const char *name, const char *id)
{
    sl_buf s = SL_BUF_INIT;
    sl_buf_printf(&s, "%s{server_id=\"%s\"}", name, id);
    double v = value_of(body, s.data);
    sl_buf_free(&s);
    return v;
}

/* Whether a line of body starts with prefix. */
static int has_line(const char *body, const char *prefix)
{
    size_t n = strlen(prefix);
    if (!strncmp(body, prefix, n))
        return 1;
    for (const char *p = strchr(body, '\n'); p; p = strchr(p + 1, '\n'))
        if (!strncmp(p + 1, prefix, n))
            return 1;
    return 0;
}

/* promtool's verdict on an exposition: its exit code, what it said in *out
 * (malloc'd, caller frees). The body goes to its stdin from a file. */
static int promtool(const char *body, char **out)
{
    static int n;
    char name[32];
    snprintf(name, sizeof name, "metrics-%d.prom", ++n);
    char *path = th_path(name);
    FILE *f = fopen(path, "w");
    CHECK(f && fputs(body, f) >= 0 && fclose(f) == 0);
    sl_buf cmd = SL_BUF_INIT;
    sl_buf_printf(&cmd, "exec promtool check metrics < '%s'", path);
    const char *argv[] = {"sh", "-c", cmd.data, NULL};
    int rc = th_run(argv, NULL, out, 20000);
    sl_buf_free(&cmd);
    free(path);
    return rc;
}

/* promtool accepts the exposition: exit 0, no lint finding either. */
static void check_promtool_official(const char *body)
{
    char *out = NULL;
    int rc = promtool(body, &out);
    CHECK_MSG(rc == 0, "promtool check metrics exited %d:\n%s", rc, out);
    free(out);
}

/* ---- processes ----------------------------------------------------------- */

/* Starts the exporter on a port of its choosing, read back from its log. */
static th_proc *start_exporter(const char *monitor, int *port)
{
    const char *argv[] = {"sluice", "nats-exporter", "--nats-monitor", monitor, "--http", "127.0.0.1:0", NULL};
    th_proc *p = th_spawn("exporter", argv, NULL);
    th_proc_wait_log(p, "nats-exporter listening", 10000);
    char *log = th_proc_log(p);
    const char *a = strstr(log, "addr=127.0.0.1:");
    CHECK_MSG(a, "no address in the log:\n%s", log);
    *port = (int)strtol(a + strlen("addr=127.0.0.1:"), NULL, 10);
    free(log);
    CHECK(*port > 0);
    return p;
}

static char *monitor_url(const th_nats *ns)
{
    sl_buf b = SL_BUF_INIT;
    sl_buf_printf(&b, "http://127.0.0.1:%d", th_nats_monitor_port(ns));
    return b.data;
}

/* nats-server's own /varz, parsed (caller json_decref's). */
static json_t *server_varz(const th_nats *ns)
{
    char *body = NULL;
    CHECK_INT(get_local(th_nats_monitor_port(ns), "/varz", &body), ==, 200);
    json_t *j = json_loads(body, 0, NULL);
    CHECK_MSG(json_is_object(j), "/varz: %s", body);
    free(body);
    return j;
}

/* ---- with a real nats-server --------------------------------------------- */

typedef struct {
    int port;
    const char *id;
    int want;
} traffic_seen;

/* The exporter shows at least `want` messages in and out. */
static int saw_traffic(void *arg)
{
    traffic_seen *t = arg;
    char *body = NULL;
    get_local(t->port, "/metrics", &body);
    int ok = value_for(body, "nats_varz_in_msgs", t->id) >= t->want &&
             value_for(body, "nats_varz_out_msgs", t->id) >= t->want;
    free(body);
    return ok;
}

SL_TEST(exporter_serves_official_names, 30)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    th_nats *ns = th_nats_start(NULL);
    natsConnection *pub = tp_connect(th_nats_url(ns)), *sub = tp_connect(th_nats_url(ns));
    natsSubscription *s = NULL;
    CHECK(natsConnection_SubscribeSync(&s, sub, "exporter.test") == NATS_OK);
    CHECK(natsConnection_Flush(sub) == NATS_OK);
    enum { N = 25 };
    static const char msg[] = "hello, exporter";
    for (int i = 0; i < N; i++)
        CHECK(natsConnection_PublishString(pub, "exporter.test", msg) == NATS_OK);
    CHECK(natsConnection_Flush(pub) == NATS_OK);
    for (int i = 0; i < N; i++) {
        natsMsg *m = NULL;
        CHECK(natsSubscription_NextMsg(&m, s, 5000) == NATS_OK);
        natsMsg_Destroy(m);
    }

    char *mon = monitor_url(ns);
    int port = 0;
    th_proc *exp = start_exporter(mon, &port);
    json_t *varz = server_varz(ns);
    CHECK(json_is_string(json_object_get(varz, "server_id")));
    char *id = sl_xstrdup(json_string_value(json_object_get(varz, "server_id")));
    CHECK(id[0]);
    traffic_seen t = {port, id, N};
    th_wait_until(saw_traffic, &t, 10000, "the exporter to show the messages published");

    char *body = NULL;
    CHECK_INT(get_local(port, "/metrics", &body), ==, 200);
    /* The varz the test compares with, fetched after the scrape: the fields
     * compared do not move while the test's two clients stay. */
    json_decref(varz);
    varz = server_varz(ns);
    CHECK_STR(json_string_value(json_object_get(varz, "server_id")), id);
    static const char *const present[] = {
        "nats_varz_cpu",           "nats_varz_mem",        "nats_varz_connections",
        "nats_varz_total_connections", "nats_varz_in_msgs", "nats_varz_out_msgs",
        "nats_varz_in_bytes",      "nats_varz_out_bytes",  "nats_varz_slow_consumers",
        "nats_varz_subscriptions", "nats_varz_max_payload", "nats_connz_num_connections",
        "nats_connz_offset",       "nats_connz_limit",
        "nats_connz_pending_bytes", "nats_connz_subscriptions", "nats_connz_in_bytes",
        "nats_connz_out_bytes",    "nats_connz_in_msgs",   "nats_connz_out_msgs",
    };
    for (size_t i = 0; i < sizeof present / sizeof present[0]; i++) {
        CHECK_MSG(!isnan(value_for(body, present[i], id)), "no %s{server_id=\"%s\"} in:\n%s", present[i], id, body);
        sl_buf help = SL_BUF_INIT;
        sl_buf_printf(&help, "# HELP %s ", present[i]);
        CHECK_MSG(has_line(body, help.data), "no HELP for %s", present[i]);
        sl_buf_free(&help);
    }
    /* The same numbers as nats-server's own /varz. */
    static const char *const stable[] = {"connections", "total_connections", "subscriptions", "slow_consumers",
                                         "max_payload", "max_connections", "port"};
    for (size_t i = 0; i < sizeof stable / sizeof stable[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "nats_varz_%s", stable[i]);
        double want = json_number_value(json_object_get(varz, stable[i]));
        CHECK_MSG(value_for(body, name, id) == want, "%s: %g, /varz says %g", name, value_for(body, name, id), want);
    }
    CHECK(value_for(body, "nats_varz_connections", id) >= 2);
    CHECK(value_for(body, "nats_varz_in_msgs", id) >= N);
    CHECK(value_for(body, "nats_varz_out_msgs", id) >= N);
    CHECK(value_for(body, "nats_varz_in_bytes", id) >= N * (sizeof msg - 1));
    CHECK(value_for(body, "nats_varz_out_bytes", id) >= N * (sizeof msg - 1));
    CHECK_INT(value_for(body, "nats_connz_num_connections", id), ==, 2);
    /* Left out on purpose: a gauge whose name says counter (see the
     * exporter's header comment). */
    CHECK(isnan(value_for(body, "nats_connz_total", id)));
    CHECK(value_for(body, "nats_connz_in_msgs", id) >= N);
    CHECK(value_for(body, "nats_connz_out_msgs", id) >= N);
    CHECK(value_for(body, "nats_connz_subscriptions", id) >= 1);
    /* Strings become label gauges; the rest of the strings, and nested
     * objects, are not exported (uptime is "5s", cluster is {}). */
    sl_buf series = SL_BUF_INIT;
    sl_buf_printf(&series, "nats_varz_server_id{server_id=\"%s\",value=\"%s\"}", id, id);
    CHECK_MSG(value_of(body, series.data) == 1, "no %s", series.data);
    sl_buf_reset(&series);
    sl_buf_printf(&series, "nats_varz_version{server_id=\"%s\",value=\"%s\"}", id,
                  json_string_value(json_object_get(varz, "version")));
    CHECK_MSG(value_of(body, series.data) == 1, "no %s", series.data);
    CHECK(has_line(body, "nats_varz_server_name{server_id=\""));
    CHECK(!has_line(body, "nats_varz_uptime") && !has_line(body, "nats_varz_cluster") &&
          !has_line(body, "nats_varz_http_req_stats") && !has_line(body, "nats_varz_host"));
    /* Types as the official exporter sets them. */
    CHECK(has_line(body, "# TYPE nats_varz_cpu gauge"));
    CHECK(has_line(body, "# TYPE nats_connz_in_msgs gauge"));
    CHECK(has_line(body, "# TYPE nats_connz_num_connections gauge"));
    CHECK(value_of(body, "sluice_nats_exporter_scrape_ok") == 1);
    char *log = th_proc_log(exp);
    CHECK_MSG(!strstr(log, "level=warn"), "%s", log);
    free(log);

    sl_buf_free(&series);
    free(body);
    free(id);
    json_decref(varz);
    th_proc_free(exp);
    free(mon);
    natsSubscription_Destroy(s);
    natsConnection_Destroy(pub);
    natsConnection_Destroy(sub);
    th_nats_stop(ns);
}

SL_TEST(exporter_output_passes_promtool, 30)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    th_nats *ns = th_nats_start(NULL);
    natsConnection *nc = tp_connect(th_nats_url(ns));
    CHECK(natsConnection_PublishString(nc, "exporter.promtool", "x") == NATS_OK);
    CHECK(natsConnection_Flush(nc) == NATS_OK);
    char *mon = monitor_url(ns);
    int port = 0;
    th_proc *exp = start_exporter(mon, &port);
    char *body = NULL;
    CHECK_INT(get_local(port, "/metrics", &body), ==, 200);
    CHECK(value_of(body, "sluice_nats_exporter_scrape_ok") == 1);
    check_promtool_official(body);
    free(body);
    th_proc_free(exp);
    free(mon);
    natsConnection_Destroy(nc);
    th_nats_stop(ns);
}

SL_TEST(exporter_survives_nats_going_away, 30)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    th_nats *ns = th_nats_start(NULL);
    char *mon = monitor_url(ns);
    int port = 0;
    th_proc *exp = start_exporter(mon, &port);
    char *body = NULL;
    CHECK_INT(get_local(port, "/healthz", &body), ==, 200);
    free(body);
    CHECK_INT(get_local(port, "/readyz", &body), ==, 200);
    free(body);
    CHECK_INT(get_local(port, "/metrics", &body), ==, 200);
    CHECK(value_of(body, "sluice_nats_exporter_scrape_ok") == 1);
    free(body);

    th_nats_stop(ns);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(get_local(port, "/metrics", &body), ==, 200);
        CHECK_MSG(value_of(body, "sluice_nats_exporter_scrape_ok") == 0, "%s", body);
        CHECK_MSG(!has_line(body, "nats_varz_") && !has_line(body, "nats_connz_"), "%s", body);
        CHECK(has_line(body, "# TYPE sluice_nats_exporter_scrape_ok gauge"));
        free(body);
    }
    CHECK_INT(get_local(port, "/readyz", &body), ==, 503);
    CHECK_MSG(strstr(body, "not ready") && strstr(body, "/varz"), "%s", body);
    free(body);
    CHECK_INT(get_local(port, "/healthz", &body), ==, 200);
    free(body);
    CHECK(th_proc_running(exp));
    /* One warning for the whole streak of failed scrapes. */
    CHECK_INT(th_count_in_file(th_proc_log_path(exp), "cannot scrape the nats monitor"), ==, 1);

    th_proc_kill(exp, SIGTERM);
    CHECK_INT(th_proc_wait(exp, 10000), ==, 0);
    CHECK_INT(th_count_in_file(th_proc_log_path(exp), "nats-exporter stopping"), ==, 1);
    th_proc_free(exp);
    free(mon);
}

/* ---- the command line ---------------------------------------------------- */

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Runs the exporter expecting it to give up at once with exit code want
 * and one line that contains needle. libmicrohttpd_noise: lines
 * libmicrohttpd itself writes before that line are tolerated (http.c has
 * it log to stderr, "Failed to bind to port 0: Address already in use"). */
static void check_refused(const char *const *argv, const char *const *env, int want, const char *needle,
                          int libmicrohttpd_noise)
{
    char *out = NULL;
    int rc = th_run(argv, env, &out, 20000);
    CHECK_MSG(rc == want, "%s %s exited %d, not %d:\n%s", argv[2], argv[3] ? argv[3] : "", rc, want, out);
    const char *ours = strstr(out, "sluice nats-exporter: ");
    CHECK_MSG(ours && (ours == out || (libmicrohttpd_noise && ours[-1] == '\n')) && lines(ours) == 1 &&
                  strstr(ours, needle),
              "want one line with \"%s\":\n%s", needle, out);
    free(out);
}

SL_TEST(exporter_usage, 30)
{
    const char *bad_addr[] = {"sluice", "nats-exporter", "--http", "nonsense", NULL};
    check_refused(bad_addr, NULL, 2, "nonsense", 0);
    const char *bad_port[] = {"sluice", "nats-exporter", "--http", "127.0.0.1:99999", NULL};
    check_refused(bad_port, NULL, 2, "no valid port", 0);
    const char *bad_url[] = {"sluice", "nats-exporter", "--nats-monitor", "127.0.0.1:8222", NULL};
    check_refused(bad_url, NULL, 2, "--nats-monitor", 0);
    const char *no_flag[] = {"sluice", "nats-exporter", "--http", "127.0.0.1:0", NULL};
    const char *ftp[] = {"SLUICE_NATS_MONITOR=ftp://127.0.0.1/", NULL};
    check_refused(no_flag, ftp, 2, "SLUICE_NATS_MONITOR", 0);

    /* A port someone else listens on: cannot listen, exit 1. */
    int port, fd = th_listen_silent(&port);
    char taken[32];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", port);
    const char *busy[] = {"sluice", "nats-exporter", "--http", taken, NULL};
    check_refused(busy, NULL, 1, "cannot listen", 0);
    close(fd);

    const char *help[] = {"sluice", "nats-exporter", "--help", NULL};
    char *out = NULL;
    CHECK_INT(th_run(help, NULL, &out, 20000), ==, 0);
    CHECK_MSG(strstr(out, "Usage: sluice nats-exporter") && strstr(out, "--nats-monitor") &&
                  strstr(out, "SLUICE_NATS_MONITOR") && strstr(out, "--http"),
              "%s", out);
    free(out);
}

/* ---- a monitor that answers garbage --------------------------------------
 *
 * nats-server cannot be made to send a hostile answer, so this test serves
 * /varz and /connz itself, from libmicrohttpd on a thread of the test. */

static struct {
    pthread_mutex_t mu;
    const char *varz, *connz; /* bodies, owned by the test */
    size_t varz_len;          /* 0: strlen(varz) */
    unsigned code;
} fake = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, 200};

static enum MHD_Result fake_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                   const char *version, const char *data, size_t *size, void **state)
{
    (void)cls, (void)method, (void)version, (void)data, (void)size, (void)state;
    pthread_mutex_lock(&fake.mu);
    const char *body = !strcmp(url, "/varz") ? fake.varz : !strcmp(url, "/connz") ? fake.connz : "";
    size_t len = body == fake.varz && fake.varz_len ? fake.varz_len : strlen(body ? body : "");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)(body ? body : ""), MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ok = MHD_queue_response(c, fake.code, r);
    pthread_mutex_unlock(&fake.mu);
    MHD_destroy_response(r);
    return ok;
}

static void serve(const char *varz, const char *connz, size_t varz_len, unsigned code)
{
    pthread_mutex_lock(&fake.mu);
    fake.varz = varz, fake.connz = connz, fake.varz_len = varz_len, fake.code = code;
    pthread_mutex_unlock(&fake.mu);
}

/* Scrapes once: 200 always, scrape_ok as expected, promtool can parse it.
 * Returns the body (caller frees). */
static char *scrape(int port, int want_ok)
{
    char *body = NULL;
    CHECK_INT(get_local(port, "/metrics", &body), ==, 200);
    CHECK_MSG(value_of(body, "sluice_nats_exporter_scrape_ok") == want_ok, "want scrape_ok %d:\n%s", want_ok, body);
    char *out = NULL;
    int rc = promtool(body, &out);
    CHECK_MSG(rc == 0, "promtool check metrics exited %d:\n%s\non:\n%s", rc, out, body);
    free(out);
    return body;
}

SL_TEST(exporter_survives_a_hostile_monitor, 60)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fake_handle, NULL,
                                            MHD_OPTION_END);
    CHECK(d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    CHECK(info && info->port);
    char mon[64];
    snprintf(mon, sizeof mon, "http://127.0.0.1:%u/", (unsigned)info->port);
    serve("[]", "{}", 0, 200);
    int port = 0;
    th_proc *exp = start_exporter(mon, &port);

    /* Not an object, not JSON, not UTF-8, no server_id, an error status. */
    const char *failing[] = {"[1, 2, 3]", "{\"server_id\": \"x\", ", "\"just a string\"", "{\"server_id\": 42}",
                             "{\"server_id\": \"\xff\xfe\"}", "{\"mem\": 1}", "", "{\"big\": 1e999}"};
    char *body = NULL;
    for (size_t i = 0; i < sizeof failing / sizeof failing[0]; i++) {
        serve(failing[i], "{}", 0, 200);
        body = scrape(port, 0);
        CHECK_MSG(!has_line(body, "nats_"), "case %zu:\n%s", i, body);
        free(body);
    }
    serve("{\"server_id\": \"s\"}", "{}", 0, 500);
    free(scrape(port, 0));

    /* Odd but valid: escapes in the id, numbers beyond int64 and double
     * sums that overflow to +Inf, names that need sanitising (and collide
     * once sanitised), every JSON type, a connz of the wrong shapes. */
    serve("{\"server_id\": \"a\\\"b\\\\c\\nd\", \"mem\": 123456789012345678901234567890, \"neg\": -5.5,"
          " \"weird-key.x\": 3, \"weird_key_x\": 4, \"nested\": {\"a\": 1}, \"arr\": [1], \"flag\": true,"
          " \"nothing\": null, \"version\": 7, \"server_name\": \"n\\u00e9\", \"\": 9, \"huge\": 1.5e308}",
          "{\"num_connections\": \"two\", \"limit\": 1e308, \"connections\": [1, \"x\", null, {\"in_msgs\": 1e308},"
          " {\"in_msgs\": 1e308, \"out_msgs\": -1}]}",
          0, 200);
    body = scrape(port, 1);
    const char *id = "a\\\"b\\\\c\\nd"; /* as escaped in the exposition */
    CHECK_MSG(value_for(body, "nats_varz_mem", id) == 123456789012345678901234567890.0, "%s", body);
    CHECK(value_for(body, "nats_varz_neg", id) == -5.5);
    CHECK(value_for(body, "nats_varz_version", id) == 7);
    CHECK(value_for(body, "nats_varz_huge", id) == 1.5e308);
    CHECK(value_for(body, "nats_varz_weird_key_x", id) == 3 || value_for(body, "nats_varz_weird_key_x", id) == 4);
    CHECK(!has_line(body, "nats_varz_nested") && !has_line(body, "nats_varz_arr") &&
          !has_line(body, "nats_varz_flag") && !has_line(body, "nats_varz_nothing"));
    CHECK(has_line(body, "nats_varz_server_name{server_id=\"a\\\"b\\\\c\\nd\",value=\"n\xc3\xa9\"} 1"));
    CHECK(isinf(value_for(body, "nats_connz_in_msgs", id)));
    CHECK(value_for(body, "nats_connz_num_connections", id) == 0);
    CHECK(value_for(body, "nats_connz_limit", id) == 1e308);
    /* A family appears once, even where two fields met. */
    int once = 0;
    for (const char *p = body; (p = strstr(p, "# TYPE nats_varz_weird_key_x ")); p++)
        once++;
    CHECK_INT(once, ==, 1);
    free(body);

    /* /varz fine, /connz not: the varz part is still served. */
    serve("{\"server_id\": \"s\", \"mem\": 1}", "not json", 0, 200);
    body = scrape(port, 0);
    CHECK(value_for(body, "nats_varz_mem", "s") == 1 && !has_line(body, "nats_connz_"));
    free(body);

    /* A body over the 16 MiB cap is refused, not read to the end. */
    serve("{\"server_id\": \"s\"}", "{}", 0, 200);
    free(scrape(port, 1));
    size_t big = ((size_t)17 << 20);
    char *huge = malloc(big);
    CHECK(huge);
    memset(huge, ' ', big);
    memcpy(huge, "{\"server_id\": \"s\"}", 18);
    serve(huge, "{}", big, 200);
    body = scrape(port, 0);
    free(body);
    serve("[]", "{}", 0, 200);
    free(huge);

    CHECK(th_proc_running(exp));
    char *log = th_proc_log(exp);
    CHECK_MSG(strstr(log, "larger than 16 MiB"), "%s", log);
    free(log);
    /* Failures come in streaks, each warned about once: start-up and the
     * first cases, the /connz one, the big body. */
    CHECK_INT(th_count_in_file(th_proc_log_path(exp), "cannot scrape the nats monitor"), ==, 3);
    CHECK_INT(th_count_in_file(th_proc_log_path(exp), "nats monitor scraped again"), ==, 2);
    th_proc_kill(exp, SIGTERM);
    CHECK_INT(th_proc_wait(exp, 10000), ==, 0);
    th_proc_free(exp);
    MHD_stop_daemon(d);
}
