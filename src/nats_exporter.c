/* nats_exporter.c - `sluice nats-exporter`: a nats-server's monitoring data
 * as Prometheus metrics.
 *
 * Each scrape of /metrics fetches <monitor>/varz and <monitor>/connz and
 * renders them under the names the official prometheus-nats-exporter gives
 * them with `-varz -connz -prefix=nats`, so its dashboards and alerts work
 * unchanged:
 *
 *   nats_varz_<field>{server_id}          every top-level number of /varz
 *   nats_varz_<field>{server_id,value} 1  its server_id, server_name, version
 *   nats_connz_{num_connections,offset,limit}   /connz's own fields
 *   nats_connz_{pending_bytes,subscriptions,    sums over the connections
 *               {in,out}_{bytes,msgs}}          listed
 *
 * Two deliberate differences keep the exposition clean for promtool (and
 * any linting scraper) without changing what a query returns: the /connz
 * sums are typed gauges, as the official exporter types the same numbers
 * of /varz (nats_varz_in_msgs, ...), not counters without "_total"; and
 * nats_connz_total, a gauge whose name says counter, is left out - it is
 * nats_connz_num_connections for the unpaged query made here.
 *
 * plus sluice_nats_exporter_scrape_ok, 0 when either fetch failed, so a dead
 * monitor shows on a dashboard instead of as a gap. Like the official
 * exporter, nested objects are not flattened, and the /connz sums cover the
 * one page nats-server returns (its default limit is 1024 connections).
 *
 * Nothing is cached between scrapes: the numbers are as fresh as the scrape.
 * The monitor's answers are untrusted input: bodies are capped at 16 MiB,
 * anything that is not a JSON object is a failed fetch, and fields of the
 * wrong type are skipped or count as 0. */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "clock.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "roles.h"
#include "stop.h"

#define DEFAULT_ADDR ":7777" /* the official exporter's port */
#define MAX_BODY ((size_t)16 << 20)
#define CONNECT_TIMEOUT_MS 2000L
#define TOTAL_TIMEOUT_MS 2000L
/* /readyz fetches /varz itself when no scrape did for this long, so the
 * readiness probe does not report a state nobody has looked at for minutes. */
#define READY_MAX_AGE_MS 5000

/* The exporter's state. libmicrohttpd serves requests on one thread, but the
 * start-up probe runs on the main thread, so a mutex makes one fetch at a
 * time explicit; it guards every field after it. */
typedef struct {
    pthread_mutex_t mu;
    char *base;           /* the monitoring URL, without trailing '/' */
    CURL *curl;           /* reused, so scrapes keep their connection */
    int64_t varz_at_ms;   /* when /varz was last fetched; 0 = never */
    bool varz_ok;         /* whether that worked */
    char *varz_err;       /* if not, why */
    bool failing;         /* in a streak of failed fetches, already logged */
} exporter;

/* ---- fetching ----------------------------------------------------------- */

typedef struct {
    sl_buf body;
    bool too_big;
} download;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    download *d = arg;
    size_t len = size * n; /* size is always 1 */
    if (len > MAX_BODY - d->body.len) {
        d->too_big = true;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    sl_buf_append(&d->body, p, len);
    return len;
}

/* GETs <base>/<endpoint> and parses it. On success *out is a JSON object
 * the caller json_decref's. The one place curl's and jansson's errors
 * become sluice's. */
static sl_status fetch(exporter *ex, const char *endpoint, json_t **out)
{
    sl_buf url = SL_BUF_INIT;
    download d = {SL_BUF_INIT, false};
    char curl_err[CURL_ERROR_SIZE] = "";
    json_t *j = NULL;
    sl_status st = SL_OK;
    sl_buf_printf(&url, "%s/%s", ex->base, endpoint);
    curl_easy_setopt(ex->curl, CURLOPT_URL, url.data);
    curl_easy_setopt(ex->curl, CURLOPT_WRITEDATA, &d);
    curl_easy_setopt(ex->curl, CURLOPT_ERRORBUFFER, curl_err);
    CURLcode rc = curl_easy_perform(ex->curl);
    /* Neither lives past this call. */
    curl_easy_setopt(ex->curl, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(ex->curl, CURLOPT_WRITEDATA, NULL);
    if (rc != CURLE_OK) {
        st = sl_fail(SL_EIO, "GET %s: %s", url.data,
                     d.too_big ? "response larger than 16 MiB" : curl_err[0] ? curl_err : curl_easy_strerror(rc));
        goto cleanup;
    }
    json_error_t jerr;
    /* Integers as doubles: Prometheus samples are doubles anyway, and a
     * number too big for int64 is then still a number, not a parse error. */
    j = json_loadb(d.body.data ? d.body.data : "", d.body.len, JSON_DECODE_INT_AS_REAL, &jerr);
    if (!j) {
        st = sl_fail(SL_EINVAL, "GET %s: not JSON: %s (line %d)", url.data, jerr.text, jerr.line);
        goto cleanup;
    }
    if (!json_is_object(j)) {
        st = sl_fail(SL_EINVAL, "GET %s: not a JSON object", url.data);
        goto cleanup;
    }
    *out = j;
    j = NULL;
cleanup:
    json_decref(j);
    sl_buf_free(&d.body);
    sl_buf_free(&url);
    return st;
}

/* Fetches /varz, which must carry a string server_id, and records the
 * outcome for /readyz. */
static sl_status fetch_varz(exporter *ex, json_t **out)
{
    json_t *varz = NULL;
    sl_status st = fetch(ex, "varz", &varz);
    if (st == SL_OK && !json_is_string(json_object_get(varz, "server_id"))) {
        json_decref(varz);
        varz = NULL;
        st = sl_fail(SL_EINVAL, "GET %s/varz: no server_id string in the answer", ex->base);
    }
    ex->varz_at_ms = sl_now_ms();
    ex->varz_ok = st == SL_OK;
    free(ex->varz_err);
    ex->varz_err = st == SL_OK ? NULL : sl_xstrdup(sl_errmsg());
    if (st == SL_OK)
        *out = varz;
    return st;
}

/* Logs a failure once per streak; a whole successful scrape ends it. */
static void note_failure(exporter *ex, const char *why)
{
    if (ex->failing)
        return;
    ex->failing = true;
    sl_warn("cannot scrape the nats monitor", "nats_monitor=%s error=%s", sl_log_q(ex->base), sl_log_q(why));
}

static void note_success(exporter *ex)
{
    if (!ex->failing)
        return;
    ex->failing = false;
    sl_info("nats monitor scraped again", "nats_monitor=%s", sl_log_q(ex->base));
}

/* ---- rendering ---------------------------------------------------------- */

static void family(sl_buf *out, const char *name, const char *help, const char *type)
{
    sl_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(sl_buf *out, const char *name, const char *server_id, const char *value_label, double v)
{
    sl_buf_printf(out, "%s{server_id=\"", name);
    sl_metrics_escape(out, server_id);
    if (value_label) {
        sl_buf_puts(out, "\",value=\"");
        sl_metrics_escape(out, value_label);
    }
    sl_buf_puts(out, "\"} ");
    sl_metrics_value(out, v);
    sl_buf_putc(out, '\n');
}

/* A number field of j, 0 when missing or not a number (as Go's zero value
 * in the official exporter). */
static double num(const json_t *j, const char *key)
{
    return json_number_value(json_object_get(j, key));
}

static void render_connz(sl_buf *out, const json_t *connz, const char *id)
{
    /* Summed over the connections listed; in the official exporter's help
     * texts, which are the fields' names. */
    static const char *const summed[] = {"in_bytes", "in_msgs", "out_bytes", "out_msgs", "pending_bytes",
                                         "subscriptions"};
    enum { NSUMMED = sizeof summed / sizeof summed[0] };
    double sum[NSUMMED] = {0};
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(connz, "connections"), i, c)
        for (size_t k = 0; k < NSUMMED; k++)
            sum[k] += num(c, summed[k]);
    /* Families in name order, as Prometheus' client libraries write them. */
    static const struct {
        const char *field;
        int sum; /* index into summed, or -1 for connz's own field */
        const char *type;
    } fams[] = {
        {"in_bytes", 0, "gauge"},         {"in_msgs", 1, "gauge"},  {"limit", -1, "gauge"},
        {"num_connections", -1, "gauge"}, {"offset", -1, "gauge"},  {"out_bytes", 2, "gauge"},
        {"out_msgs", 3, "gauge"},         {"pending_bytes", 4, "gauge"}, {"subscriptions", 5, "gauge"},
    };
    char name[64];
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        snprintf(name, sizeof name, "nats_connz_%s", fams[f].field);
        family(out, name, fams[f].field, fams[f].type);
        sample(out, name, id, NULL, fams[f].sum < 0 ? num(connz, fams[f].field) : sum[fams[f].sum]);
    }
}

typedef struct {
    char *name;          /* "nats_varz_<field>", sanitised */
    const json_t *value; /* a number, or one of the label strings */
} varz_field;

static int by_name(const void *a, const void *b)
{
    return strcmp(((const varz_field *)a)->name, ((const varz_field *)b)->name);
}

/* Strings the official exporter turns into `{value="..."} 1` gauges. */
static bool is_label_field(const char *key)
{
    return !strcmp(key, "server_id") || !strcmp(key, "server_name") || !strcmp(key, "version");
}

static void render_varz(sl_buf *out, const json_t *varz, const char *id)
{
    size_t n = 0;
    varz_field *fields = sl_xcalloc(json_object_size(varz) + 1, sizeof *fields);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)varz, key, v) {
        if (!json_is_number(v) && !(json_is_string(v) && is_label_field(key)))
            continue; /* nested objects, arrays, booleans, other strings */
        sl_buf name = SL_BUF_INIT;
        sl_buf_puts(&name, "nats_varz_");
        for (const char *p = key; *p; p++) {
            char ch = *p;
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
            sl_buf_putc(&name, ok ? ch : '_');
        }
        fields[n].name = name.data;
        fields[n].value = v;
        n++;
    }
    /* Sorted, so the output is stable and two fields that sanitise to the
     * same name ("a-b", "a.b") are neighbours: only the first is kept, as a
     * family may appear once. */
    qsort(fields, n, sizeof *fields, by_name);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && !strcmp(fields[i].name, fields[i - 1].name))
            continue;
        const char *help = fields[i].name + strlen("nats_varz_");
        family(out, fields[i].name, help[0] ? help : "varz", "gauge");
        if (json_is_number(fields[i].value))
            sample(out, fields[i].name, id, NULL, json_number_value(fields[i].value));
        else
            sample(out, fields[i].name, id, json_string_value(fields[i].value), 1);
    }
    for (size_t i = 0; i < n; i++)
        free(fields[i].name);
    free(fields);
}

static void render(void *arg, sl_buf *out)
{
    exporter *ex = arg;
    json_t *varz = NULL, *connz = NULL;
    pthread_mutex_lock(&ex->mu);
    /* /connz needs the server_id that only /varz has: without /varz there
     * is nothing to label it with, so it is not fetched. */
    bool ok = fetch_varz(ex, &varz) == SL_OK && fetch(ex, "connz", &connz) == SL_OK;
    if (ok)
        note_success(ex);
    else
        note_failure(ex, sl_errmsg());
    if (varz) {
        const char *id = json_string_value(json_object_get(varz, "server_id"));
        if (connz)
            render_connz(out, connz, id);
        render_varz(out, varz, id);
    }
    pthread_mutex_unlock(&ex->mu);
    family(out, "sluice_nats_exporter_scrape_ok",
           "1 if this scrape fetched both /varz and /connz from the nats-server monitor, else 0.", "gauge");
    sl_buf_printf(out, "sluice_nats_exporter_scrape_ok %d\n", ok ? 1 : 0);
    json_decref(connz);
    json_decref(varz);
}

/* Ready while the monitor's /varz answers. */
static int ready(void *arg, sl_buf *why)
{
    exporter *ex = arg;
    pthread_mutex_lock(&ex->mu);
    if (!ex->varz_at_ms || sl_now_ms() - ex->varz_at_ms > READY_MAX_AGE_MS) {
        json_t *varz = NULL;
        if (fetch_varz(ex, &varz) != SL_OK)
            note_failure(ex, sl_errmsg());
        json_decref(varz);
    }
    int ok = ex->varz_ok;
    if (!ok)
        sl_buf_puts(why, ex->varz_err ? ex->varz_err : "the nats monitor was not reached yet");
    pthread_mutex_unlock(&ex->mu);
    return ok;
}

/* ---- the command -------------------------------------------------------- */

/* Checks that url is an http(s) URL, before anything listens. */
static sl_status check_url(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL;
    sl_status st = SL_OK;
    if (!u)
        return sl_fail(SL_EIO, "out of memory");
    if (!url[0] || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0))
        st = sl_fail(SL_EINVAL, "--nats-monitor / SLUICE_NATS_MONITOR: \"%s\" is not an http:// or https:// URL",
                     url);
    curl_free(scheme);
    curl_url_cleanup(u);
    return st;
}

/* Settings kept for every request of the handle. */
static sl_status setup_curl(CURL *c)
{
    CURLcode rc = CURLE_OK;
    if (!rc)
        rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    if (!rc)
        rc = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    if (!rc)
        rc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, TOTAL_TIMEOUT_MS);
    /* No SIGALRM for name resolution: this process has threads. */
    if (!rc)
        rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    /* A 404 (a wrong base path) is a failed fetch, not a body to parse. */
    if (!rc)
        rc = curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    if (!rc)
        rc = curl_easy_setopt(c, CURLOPT_USERAGENT, "sluice-nats-exporter");
#if LIBCURL_VERSION_NUM >= 0x075500
    if (!rc)
        rc = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    if (rc)
        return sl_fail(SL_EIO, "curl: %s", curl_easy_strerror(rc));
    return SL_OK;
}

/* "HOST:<port>" for the log: addr with the port actually bound. */
static void bound_addr(sl_buf *out, const char *addr, int port)
{
    const char *colon = strrchr(addr, ':');
    sl_buf_printf(out, "%.*s:%d", colon ? (int)(colon - addr) : 0, addr, port);
}

int sl_nats_exporter_main(const sl_config *cfg)
{
    exporter ex = {.mu = PTHREAD_MUTEX_INITIALIZER};
    sl_http *http = NULL;
    sl_buf listen = SL_BUF_INIT;
    bool curl_up = false;
    int rc = 1;
    const char *monitor = cfg->nats_monitor ? cfg->nats_monitor : "";
    const char *addr = cfg->http && cfg->http[0] ? cfg->http : DEFAULT_ADDR;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "sluice nats-exporter: cannot initialise libcurl\n");
        goto cleanup;
    }
    curl_up = true;
    if (check_url(monitor) != SL_OK) {
        fprintf(stderr, "sluice nats-exporter: %s\n", sl_errmsg());
        rc = 2;
        goto cleanup;
    }
    ex.base = sl_xstrdup(monitor);
    for (size_t n = strlen(ex.base); n > 0 && ex.base[n - 1] == '/'; n--)
        ex.base[n - 1] = '\0';
    ex.curl = curl_easy_init();
    if (!ex.curl || setup_curl(ex.curl) != SL_OK) {
        fprintf(stderr, "sluice nats-exporter: %s\n", ex.curl ? sl_errmsg() : "cannot create a curl handle");
        goto cleanup;
    }

    sl_stop_install();
    sl_status st = sl_http_start(&http, addr, render, &ex, ready, &ex);
    if (st != SL_OK) {
        fprintf(stderr, "sluice nats-exporter: %s\n", sl_errmsg());
        rc = st == SL_EINVAL ? 2 : 1;
        goto cleanup;
    }
    bound_addr(&listen, addr, sl_http_port(http));
    sl_info("nats-exporter listening", "addr=%s nats_monitor=%s", sl_log_q(listen.data), sl_log_q(ex.base));

    /* One look at the monitor now, so a wrong URL shows in the log at once
     * rather than at the first scrape; not fatal, as nats-server may simply
     * start later. */
    pthread_mutex_lock(&ex.mu);
    json_t *varz = NULL;
    if (fetch_varz(&ex, &varz) == SL_OK)
        sl_info("nats monitor reached", "server_id=%s version=%s",
                sl_log_q(json_string_value(json_object_get(varz, "server_id"))),
                sl_log_q(json_string_value(json_object_get(varz, "version"))));
    else
        note_failure(&ex, sl_errmsg());
    json_decref(varz);
    pthread_mutex_unlock(&ex.mu);

    while (!sl_stop_sleep(60000))
        ;
    sl_info("nats-exporter stopping", "signal=%d", sl_stop_signal());
    rc = 0;
cleanup:
    sl_http_stop(http);
    if (ex.curl)
        curl_easy_cleanup(ex.curl);
    if (curl_up)
        curl_global_cleanup();
    free(ex.varz_err);
    free(ex.base);
    sl_buf_free(&listen);
    pthread_mutex_destroy(&ex.mu);
    return rc;
}
