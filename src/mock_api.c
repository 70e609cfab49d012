/* mock_api.c - `sluice mock-api`: the generator's users as a paginated
 * JSON API, for the http source to read (and the tests to break).
 *
 *   GET /users?page=P&size=S     page P (from 0) = gen:users chunk P with
 *                                chunk size S: objects P*S .. P*S+S-1
 *   GET /users?offset=O&limit=L  the same page, O = P*L; O must be a
 *                                multiple of L (400 otherwise: the
 *                                generator makes data a whole chunk at a
 *                                time, friends inside the chunk, so a page
 *                                across two chunks would be other users)
 *   GET /healthz, /metrics       as every sluice process
 *
 * A page is a compact JSON array, byte for byte what the fetcher makes of
 * gen:users?seed=S with that chunk size, so a job read through this API can
 * be checked against the generator. Past the end it is `[]`. Every /users
 * answer of 200 carries X-Total-Count: the --objects the API holds.
 *
 * Faults, drawn independently for each /users request: --slow-percent of
 * them wait --slow-ms first, --fail-percent answer 500. Each connection has
 * its own thread (libmicrohttpd's thread-per-connection mode), so a slow
 * answer holds up no other. The draws come from a stream seeded by the
 * clock: two runs fail different requests, which is the point. */
#include <inttypes.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "roles.h"
#include "source_gen.h"
#include "stop.h"

#define DEFAULT_ADDR "127.0.0.1:8080"
#define MAX_SIZE 100000 /* --chunk-size's limit */

enum { C200, C400, C404, C405, C500, NCODES };
static const unsigned codes[NCODES] = {200, 400, 404, 405, 500};

typedef struct {
    int64_t objects;
    uint64_t seed;
    int64_t fail_percent, slow_percent, slow_ms;
    _Atomic uint64_t draws; /* position in the fault stream */
    uint64_t draw_base;
    sl_metrics *metrics;
    sl_metric *requests[NCODES], *slowed;
} mock;

/* splitmix64 of the stream position: thread-safe without a lock. */
static unsigned percent_draw(mock *m)
{
    uint64_t z = m->draw_base + atomic_fetch_add(&m->draws, 1) * UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return (unsigned)((z ^ (z >> 31)) % 100);
}

typedef struct {
    unsigned code;
    const char *type;
    sl_buf body;
    int64_t total; /* X-Total-Count, or -1 for none */
} answer;

/* A plain-text answer: msg, then detail (may be ""). */
static void say(answer *a, unsigned code, const char *msg, const char *detail)
{
    a->code = code;
    a->type = "text/plain; charset=utf-8";
    sl_buf_printf(&a->body, "%s%s\n", msg, detail);
}

/* A query parameter as a non-negative integer up to max; false when it is
 * absent, empty, signed, not all digits or too big. */
static bool arg_int(struct MHD_Connection *c, const char *key, int64_t max, int64_t *v)
{
    const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    if (!s || *s < '0' || *s > '9' || strlen(s) > 18)
        return false;
    char *end = NULL;
    long long n = strtoll(s, &end, 10);
    if (*end || n > max)
        return false;
    *v = n;
    return true;
}

static bool has_arg(struct MHD_Connection *c, const char *key)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key) != NULL;
}

/* /users: which page, then the page; NULL or why the parameters are bad. */
static const char *users(mock *m, struct MHD_Connection *c, answer *a)
{
    int64_t page = 0, size = 0;
    if (has_arg(c, "page") || has_arg(c, "size")) {
        if (!arg_int(c, "page", INT64_MAX / MAX_SIZE, &page) || !arg_int(c, "size", MAX_SIZE, &size) || size < 1)
            return "page must be an integer >= 0 and size one in 1..100000";
    } else if (has_arg(c, "offset") || has_arg(c, "limit")) {
        int64_t offset = 0;
        if (!arg_int(c, "offset", INT64_MAX / 2, &offset) || !arg_int(c, "limit", MAX_SIZE, &size) || size < 1)
            return "offset must be an integer >= 0 and limit one in 1..100000";
        if (offset % size)
            return "offset must be a multiple of limit: pages are the generator's chunks of limit users";
        page = offset / size;
    } else {
        return "give page=P&size=S (P from 0) or offset=O&limit=L";
    }
    a->code = 200;
    a->type = "application/json";
    a->total = m->objects;
    int64_t first = page * size;
    int64_t n = first < m->objects ? m->objects - first : 0;
    if (n > size)
        n = size;
    if (n > 0)
        sl_gen_users(m->seed, page, first, n, &a->body);
    else
        sl_buf_puts(&a->body, "[]");
    return NULL;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *data, size_t *size, void **state)
{
    (void)version, (void)data, (void)size, (void)state;
    mock *m = cls;
    answer a = {0, NULL, SL_BUF_INIT, -1};
    bool api = !strcmp(url, "/users");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        say(&a, 405, "method not allowed", "");
    } else if (api) {
        if (m->slow_percent && percent_draw(m) < m->slow_percent) {
            sl_metric_inc(m->slowed);
            sl_stop_sleep(m->slow_ms); /* cut short by SIGTERM */
        }
        if (m->fail_percent && percent_draw(m) < m->fail_percent)
            say(&a, 500, "injected failure (--fail-percent)", "");
        else {
            const char *bad = users(m, c, &a);
            if (bad)
                say(&a, 400, bad, "");
        }
    } else if (!strcmp(url, "/healthz")) {
        say(&a, 200, "ok", "");
    } else if (!strcmp(url, "/metrics")) {
        a.code = 200;
        a.type = "text/plain; version=0.0.4; charset=utf-8";
        sl_metrics_render(m->metrics, &a.body);
    } else {
        say(&a, 404, "not found; try /users?page=P&size=S, /healthz or /metrics: ", url);
    }
    for (int i = 0; i < NCODES; i++)
        if (codes[i] == a.code)
            sl_metric_inc(m->requests[i]);
    sl_debug("request", "method=%s url=%s code=%u", sl_log_q(method), sl_log_q(url), a.code);
    enum MHD_Result ok = MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(a.body.len, a.body.data ? a.body.data : (void *)"", MHD_RESPMEM_MUST_COPY);
    if (r) {
        MHD_add_response_header(r, "Content-Type", a.type);
        if (a.total >= 0) {
            char total[24];
            snprintf(total, sizeof total, "%" PRId64, a.total);
            MHD_add_response_header(r, "X-Total-Count", total);
        }
        ok = MHD_queue_response(c, a.code, r);
        MHD_destroy_response(r);
    }
    sl_buf_free(&a.body);
    return ok;
}

static void register_metrics(mock *m)
{
    for (int i = 0; i < NCODES; i++) {
        char label[32];
        snprintf(label, sizeof label, "code=\"%u\"", codes[i]);
        m->requests[i] = sl_metrics_counter(m->metrics, "sluice_mock_api_requests_total",
                                            "Requests answered, by HTTP status (500: injected failures).", label);
    }
    m->slowed = sl_metrics_counter(m->metrics, "sluice_mock_api_slowed_total",
                                   "API requests delayed by --slow-ms.", "");
}

int sl_mock_api_main(const sl_config *cfg)
{
    const char *addr = cfg->http && cfg->http[0] ? cfg->http : DEFAULT_ADDR;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    mock m = {.objects = cfg->objects, .seed = (uint64_t)cfg->seed, .fail_percent = cfg->fail_percent,
              .slow_percent = cfg->slow_percent, .slow_ms = cfg->slow_ms,
              .draw_base = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec};
    struct sockaddr_storage ss;
    socklen_t len = 0;
    if (sl_http_parse_addr(addr, &ss, &len) != SL_OK) {
        fprintf(stderr, "sluice mock-api: %s\n", sl_errmsg());
        return 2;
    }
    m.metrics = sl_metrics_new("mock-api", cfg->job);
    register_metrics(&m);
    sl_stop_install();
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct MHD_Daemon *d =
        MHD_start_daemon(flags, 0, NULL, NULL, handle, &m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
                         MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "sluice mock-api: --http: cannot listen on %s (address in use or not available)\n", addr);
        sl_metrics_destroy(m.metrics);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    const char *colon = strrchr(addr, ':');
    char host[300];
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    sl_buf url = SL_BUF_INIT;
    sl_buf_printf(&url, "http://%s:%u/users?page={chunk}&size={size}", host[0] ? host : "127.0.0.1",
                  info ? (unsigned)info->port : 0u);
    sl_info("mock-api listening",
            "addr=%s:%u objects=%" PRId64 " seed=%" PRId64 " fail_percent=%" PRId64 " slow_percent=%" PRId64
            " slow_ms=%" PRId64 " source=%s",
            host, info ? (unsigned)info->port : 0u, cfg->objects, cfg->seed, cfg->fail_percent, cfg->slow_percent,
            cfg->slow_ms, sl_log_q(url.data));
    sl_buf_free(&url);
    while (!sl_stop_sleep(60000))
        ;
    sl_info("mock-api stopping", "signal=%d", sl_stop_signal());
    MHD_stop_daemon(d);
    sl_metrics_destroy(m.metrics);
    return 0;
}
