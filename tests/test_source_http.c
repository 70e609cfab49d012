/* test_source_http.c - the http(s) source and `sluice mock-api`: URL
 * templates, the API's pages against the generator, the source against
 * answers of every shape (a small API of the test's own), and whole jobs
 * read through a mock API that fails and stalls. */
#include <microhttpd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "pipeline.h"
#include "source.h"
#include "source_gen.h"
#include "source_http.h"
#include "test.h"

/* ---- templates ----------------------------------------------------------- */

static char *expand(const char *tmpl, int64_t idx, int64_t size)
{
    sl_buf b = SL_BUF_INIT;
    sl_http_template_expand(tmpl, idx, size, &b);
    return b.data;
}

SL_TEST(source_http_template_expansion_and_refusals, 10)
{
    char *u = expand("http://h/u?chunk={chunk}&page={page}&offset={offset}&size={size}", 3, 50);
    CHECK_STR(u, "http://h/u?chunk=3&page=4&offset=150&size=50");
    free(u);
    u = expand("https://h/p/{page}", 0, 100);
    CHECK_STR(u, "https://h/p/1");
    free(u);
    CHECK(sl_http_template_check("http://h/u?offset={offset}&limit={size}") == SL_OK);
    CHECK(sl_http_template_check("http://h/u/{page}") == SL_OK);

    /* Each refused at open, before any request, with what is wrong. */
    static const struct {
        const char *uri, *says;
    } bad[] = {
        {"http://127.0.0.1:1/users", "has no {chunk}, {page} or {offset}"},
        {"http://127.0.0.1:1/users?size={size}", "has no {chunk}, {page} or {offset}"},
        {"http://127.0.0.1:1/users?p={pagee}", "unknown placeholder \"{pagee}\""},
        {"http://127.0.0.1:1/users?p={chunk", "unknown placeholder \"{chunk\""},
        {"http://u:secret@127.0.0.1:1/users", "***@127.0.0.1:1/users"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_source_opts o = {.uri = bad[i].uri, .objects = 10, .chunk_size = 5, .timeout_ms = 1000};
        sl_source *src = NULL;
        CHECK(sl_source_open(&src, &o) == SL_EINVAL);
        CHECK_MSG(strstr(sl_errmsg(), bad[i].says), "%s: %s", bad[i].uri, sl_errmsg());
        CHECK_MSG(!strstr(sl_errmsg(), "secret"), "%s", sl_errmsg());
    }
}

/* ---- HTTP from the test's side ------------------------------------------ */

typedef struct {
    char *body, *headers;
} got;

/* GETs url: the status, with body and headers in *g (freed by got_free).
 * Fails the test if nothing answers. */
static long get(const char *url, got *g)
{
    long code = tp_http_get_headers(url, &g->body, &g->headers);
    CHECK_MSG(code, "GET %s: no answer", url);
    return code;
}

static void got_free(got *g)
{
    free(g->body);
    free(g->headers);
}

/* Whether body is the bytes of want exactly. */
static int same(const char *body, const sl_buf *want)
{
    return strlen(body) == want->len && !memcmp(body, want->data, want->len);
}

/* Starts `sluice mock-api` with extra flags (NULL-terminated) on a free
 * port; returns it, the port in *port. */
static th_proc *start_mock(const char *const *extra, int *port)
{
    const char *argv[24] = {"sluice", "mock-api", "--http", "127.0.0.1:0"};
    int n = 4;
    for (; extra && *extra && n < 23; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    th_proc *p = th_spawn("mock-api", argv, NULL);
    *port = tp_http_port(p);
    return p;
}

/* A counter of mock-api's /metrics, by its exact series. */
static double mock_metric(int port, const char *series)
{
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    got g;
    CHECK_INT(get(url, &g), ==, 200);
    const char *at = strstr(g.body, series);
    CHECK_MSG(at, "no %s in:\n%s", series, g.body);
    double v = strtod(at + strlen(series), NULL);
    got_free(&g);
    return v;
}

#define MOCK_500 "sluice_mock_api_requests_total{role=\"mock-api\",sluice_job=\"default\",code=\"500\"}"

SL_TEST(source_http_mock_api_serves_the_generators_chunks, 20)
{
    int port;
    const char *extra[] = {"--objects", "250", "--seed", "7", NULL};
    th_proc *p = start_mock(extra, &port);
    char url[160];
    got g;
    /* Page P of size S is the generator's chunk P at that chunk size,
     * byte for byte, with the total in X-Total-Count. */
    for (int page = 0; page < 3; page++) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d/users?page=%d&size=100", port, page);
        CHECK_INT(get(url, &g), ==, 200);
        sl_buf want = SL_BUF_INIT;
        sl_gen_users(7, page, page * 100, page < 2 ? 100 : 50, &want);
        CHECK_MSG(same(g.body, &want), "page %d differs", page);
        CHECK_MSG(strcasestr(g.headers, "X-Total-Count: 250\r\n"), "%s", g.headers);
        CHECK(strcasestr(g.headers, "Content-Type: application/json\r\n"));
        got_free(&g);
        /* The same page by offset and limit. */
        snprintf(url, sizeof url, "http://127.0.0.1:%d/users?offset=%d&limit=100", port, page * 100);
        CHECK_INT(get(url, &g), ==, 200);
        CHECK_MSG(same(g.body, &want), "page %d by offset differs", page);
        sl_buf_free(&want);
        got_free(&g);
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d/users?page=3&size=100", port);
    CHECK_INT(get(url, &g), ==, 200);
    CHECK_STR(g.body, "[]");
    got_free(&g);

    static const struct {
        const char *path;
        long code;
        const char *says;
    } bad[] = {
        {"/users?offset=50&limit=100", 400, "multiple of limit"},
        {"/users?page=x&size=100", 400, "page must be"},
        {"/users?page=1&size=0", 400, "size one in"},
        {"/users?page=-1&size=10", 400, "page must be"},
        {"/users", 400, "give page="},
        {"/nope", 404, "not found"},
        {"/healthz", 200, "ok"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, bad[i].path);
        CHECK_INT(get(url, &g), ==, bad[i].code);
        CHECK_MSG(strstr(g.body, bad[i].says), "%s: %s", bad[i].path, g.body);
        got_free(&g);
    }
    CHECK(mock_metric(port, "sluice_mock_api_requests_total{role=\"mock-api\",sluice_job=\"default\",code=\"400\"}") ==
          5);
    CHECK(mock_metric(port, MOCK_500) == 0);
    th_proc_stop(p);
    CHECK_INT(th_proc_wait(p, 1000), ==, 0);
    th_proc_free(p);
}

SL_TEST(source_http_mock_api_fails_and_slows_the_share_asked, 20)
{
    int port;
    const char *extra[] = {"--fail-percent", "50", "--slow-percent", "100", "--slow-ms", "50", NULL};
    th_proc *p = start_mock(extra, &port);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/users?page=0&size=10", port);
    int failed = 0;
    int64_t t0 = th_now_ms();
    for (int i = 0; i < 40; i++) {
        got g;
        long code = get(url, &g);
        CHECK(code == 200 || code == 500);
        failed += code == 500;
        got_free(&g);
    }
    /* 40 draws at 50%: 5..35 fail unless something is badly off. */
    CHECK_MSG(failed >= 5 && failed <= 35, "%d of 40 failed", failed);
    CHECK(th_now_ms() - t0 >= 40 * 50);
    CHECK(mock_metric(port, MOCK_500) == failed);
    CHECK(mock_metric(port, "sluice_mock_api_slowed_total{role=\"mock-api\",sluice_job=\"default\"}") == 40);
    th_proc_free(p);
}

/* ---- the source against an API of the test's own ------------------------- */

static atomic_int flaky_calls, busy_calls;
static _Atomic int64_t busy_at[2]; /* when /busy was asked first and second */

static enum MHD_Result fake_api(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                const char *version, const char *data, size_t *size, void **state)
{
    (void)cls, (void)method, (void)version, (void)data, (void)size, (void)state;
    const char *page_s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "page");
    int64_t page = page_s ? strtoll(page_s, NULL, 10) : 0;
    sl_buf b = SL_BUF_INIT;
    unsigned code = 200;
    sl_buf chunk = SL_BUF_INIT;
    int64_t n = 250 - page * 100 < 100 ? 250 - page * 100 : 100;
    sl_gen_users(1, page, page * 100, n > 0 ? n : 0, &chunk);
    if (!strcmp(url, "/wrapped")) { /* no X-Total-Count; pretty, wrapped */
        const char *key = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "key");
        sl_buf_printf(&b, "{\n  \"total\": 250,\n  \"%s\": %s\n}\n", key, n > 0 ? chunk.data : "[]");
    } else if (!strcmp(url, "/teapot")) {
        code = 418;
        sl_buf_puts(&b, "no coffee\nhere\x01, only \"tea\"");
    } else if (!strcmp(url, "/flaky")) {
        code = atomic_fetch_add(&flaky_calls, 1) < 2 ? 503 : 200;
        sl_buf_puts(&b, code == 200 ? chunk.data : "busy");
    } else if (!strcmp(url, "/busy")) { /* 429 with Retry-After (1 s, or a date) once, then the page */
        int k = atomic_fetch_add(&busy_calls, 1);
        if (k < 2)
            atomic_store(&busy_at[k], th_now_ms());
        code = k == 0 ? 429 : 200;
        sl_buf_puts(&b, code == 200 ? chunk.data : "slow down");
    } else if (!strcmp(url, "/notjson")) {
        sl_buf_puts(&b, "<html>hello</html>");
    } else if (!strcmp(url, "/short")) { /* always 3 objects */
        sl_buf three = SL_BUF_INIT;
        sl_gen_users(1, page, page * 100, 3, &three);
        sl_buf_append(&b, three.data, three.len);
        sl_buf_free(&three);
    } else if (!strcmp(url, "/hang")) {
        usleep(1500 * 1000);
        sl_buf_puts(&b, "[]");
    } else {
        code = 404;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(b.len, b.data ? b.data : (void *)"",
                                                             MHD_RESPMEM_MUST_COPY);
    if (code == 429) {
        const char *after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
        MHD_add_response_header(r, "Retry-After", after ? after : "1");
    }
    enum MHD_Result ok = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    sl_buf_free(&b);
    sl_buf_free(&chunk);
    return ok;
}

static struct MHD_Daemon *start_fake(int *port)
{
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                                            NULL, NULL, fake_api, NULL, MHD_OPTION_END);
    CHECK(d);
    *port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
    return d;
}

static atomic_int retries_seen;
static void on_retry(void *arg)
{
    (void)arg;
    atomic_fetch_add(&retries_seen, 1);
}

/* Opens http://127.0.0.1:<port><path> as a source of chunks of 100. */
static sl_status open_at(int port, const char *path, int64_t timeout_ms, int64_t retries, sl_source **src)
{
    char uri[256];
    snprintf(uri, sizeof uri, "http://127.0.0.1:%d%s", port, path);
    sl_source_opts o = {.uri = uri, .objects = 250, .chunk_size = 100, .timeout_ms = timeout_ms,
                        .retries = retries, .on_retry = on_retry};
    return sl_source_open(src, &o);
}

/* Every chunk of src is the generator's (seed 1, chunks of 100). */
static void check_chunks(sl_source *src)
{
    CHECK_INT(sl_source_objects(src), ==, 250);
    CHECK_INT(sl_source_chunks(src), ==, 3);
    for (int64_t i = 0; i < 3; i++) {
        sl_buf got_b = SL_BUF_INIT, want = SL_BUF_INIT;
        sl_source_meta meta;
        CHECK_MSG(sl_source_chunk(src, i, &got_b, &meta) == SL_OK, "chunk %lld: %s", (long long)i, sl_errmsg());
        CHECK(meta.unit == NULL);
        sl_gen_users(1, i, i * 100, sl_source_chunk_len(src, i), &want);
        CHECK_MSG(got_b.len == want.len && !memcmp(got_b.data, want.data, want.len), "chunk %lld differs",
                  (long long)i);
        sl_buf_free(&got_b), sl_buf_free(&want);
    }
}

SL_TEST(source_http_reads_every_answer_shape, 30)
{
    int port;
    struct MHD_Daemon *d = start_fake(&port);
    sl_source *src = NULL;
    /* Wrapped in an object, pretty-printed, without X-Total-Count: the
     * count is --objects, the chunks are compact arrays again. */
    const char *keys[] = {"items", "data", "results"};
    for (int k = 0; k < 3; k++) {
        char path[64];
        snprintf(path, sizeof path, "/wrapped?key=%s&page={chunk}", keys[k]);
        CHECK_MSG(open_at(port, path, 2000, 0, &src) == SL_OK, "%s", sl_errmsg());
        check_chunks(src);
        sl_source_destroy(src);
    }
    /* 503 twice, then the page: retried, and the retries counted. */
    CHECK_MSG(open_at(port, "/flaky?page={chunk}", 2000, 3, &src) == SL_OK, "%s", sl_errmsg());
    CHECK_INT(atomic_load(&retries_seen), ==, 2);
    check_chunks(src);
    sl_source_destroy(src);
    /* ... unless there are fewer retries than failures. */
    atomic_store(&flaky_calls, 0);
    atomic_store(&retries_seen, 0);
    CHECK(open_at(port, "/flaky?page={chunk}", 2000, 1, &src) == SL_EIO);
    CHECK_MSG(strstr(sl_errmsg(), "HTTP 503: busy (no retries left)"), "%s", sl_errmsg());
    CHECK_INT(atomic_load(&retries_seen), ==, 1);
    /* A 429 with Retry-After: 1 waits that second, not the first backoff
     * (100 ms at most), and the page comes. */
    atomic_store(&retries_seen, 0);
    CHECK_MSG(open_at(port, "/busy?page={chunk}", 2000, 3, &src) == SL_OK, "%s", sl_errmsg());
    CHECK_INT(atomic_load(&retries_seen), ==, 1);
    int64_t waited = atomic_load(&busy_at[1]) - atomic_load(&busy_at[0]);
    CHECK_MSG(waited >= 950, "asked again %lld ms after a Retry-After of 1 s", (long long)waited);
    check_chunks(src);
    sl_source_destroy(src);
    /* The same in its date form, an HTTP-date 2 s ahead (to the second). */
    atomic_store(&busy_calls, 0);
    char path[128], date[64];
    time_t ahead = time(NULL) + 2;
    struct tm tm;
    strftime(date, sizeof date, "%a,%%20%d%%20%b%%20%Y%%20%H:%M:%S%%20GMT", gmtime_r(&ahead, &tm));
    snprintf(path, sizeof path, "/busy?after=%s&page={chunk}", date);
    CHECK_MSG(open_at(port, path, 2000, 3, &src) == SL_OK, "%s", sl_errmsg());
    waited = atomic_load(&busy_at[1]) - atomic_load(&busy_at[0]);
    CHECK_MSG(waited >= 900, "asked again %lld ms before the Retry-After date", (long long)waited);
    sl_source_destroy(src);
    /* A page of another size than its chunk: passed on as served. */
    CHECK_MSG(open_at(port, "/short?page={chunk}", 2000, 0, &src) == SL_OK, "%s", sl_errmsg());
    sl_buf b = SL_BUF_INIT;
    CHECK(sl_source_chunk(src, 1, &b, NULL) == SL_OK);
    json_t *j = json_loadb(b.data, b.len, 0, NULL);
    CHECK(json_is_array(j) && json_array_size(j) == 3);
    json_decref(j);
    sl_buf_free(&b);
    sl_source_destroy(src);
    MHD_stop_daemon(d);
}

SL_TEST(source_http_fails_clearly, 30)
{
    int port;
    struct MHD_Daemon *d = start_fake(&port);
    sl_source *src = NULL;
    atomic_store(&retries_seen, 0);
    /* A 4xx: at once, not retried, with status, URL and the body's start
     * made one safe line. */
    CHECK(open_at(port, "/teapot?page={chunk}", 2000, 5, &src) == SL_EINVAL);
    char want[200];
    snprintf(want, sizeof want,
             "GET http://127.0.0.1:%d/teapot?page=0: HTTP 418: no coffee here?, only \"tea\" (not retried: a "
             "client error)", port);
    CHECK_STR(sl_errmsg(), want);
    CHECK_INT(atomic_load(&retries_seen), ==, 0);
    CHECK(open_at(port, "/missing/{page}", 2000, 5, &src) == SL_EINVAL);
    CHECK_MSG(strstr(sl_errmsg(), "/missing/1: HTTP 404"), "%s", sl_errmsg());
    CHECK(open_at(port, "/notjson?page={chunk}", 2000, 5, &src) == SL_EINVAL);
    CHECK_MSG(strstr(sl_errmsg(), "not JSON") && strstr(sl_errmsg(), "<html>hello</html>"), "%s", sl_errmsg());
    CHECK_INT(atomic_load(&retries_seen), ==, 0);
    /* A timeout is retried, then reported. */
    int64_t t0 = th_now_ms();
    CHECK(open_at(port, "/hang?page={chunk}", 300, 1, &src) == SL_EIO);
    CHECK_MSG(strstr(sl_errmsg(), "imed out") && strstr(sl_errmsg(), "no retries left"), "%s", sl_errmsg());
    CHECK_INT(atomic_load(&retries_seen), ==, 1);
    CHECK(th_now_ms() - t0 < 1500);
    /* Nothing listens: a connection error, retried. */
    char uri[96];
    snprintf(uri, sizeof uri, "http://127.0.0.1:%d/users?page={chunk}", th_free_port());
    sl_source_opts o = {.uri = uri, .objects = 10, .chunk_size = 5, .timeout_ms = 1000, .retries = 2,
                        .on_retry = on_retry};
    CHECK(sl_source_open(&src, &o) == SL_EIO);
    CHECK_MSG(strstr(sl_errmsg(), "no retries left"), "%s", sl_errmsg());
    CHECK_INT(atomic_load(&retries_seen), ==, 3);
    MHD_stop_daemon(d);
}

/* ---- whole jobs ------------------------------------------------------------ */

SL_TEST(source_http_job_through_a_failing_slow_api, 40)
{
    /* 10,000 users in 100 pages; a tenth of the requests answer 500 and
     * one in twenty waits 300 ms. Every row must arrive, and every 500 must
     * have been retried by the fetcher. */
    int port;
    const char *extra[] = {"--objects", "10000", "--fail-percent", "10", "--slow-percent", "5", "--slow-ms", "300",
                           NULL};
    th_proc *api = start_mock(extra, &port);
    th_nats *ns = th_nats_start(NULL);
    char *env_url = tp_env_url(th_nats_url(ns)), *ledger = tp_flag("ledger", "", "f.ledger");
    char *sink = tp_flag("sink", "sqlite:", "out.db");
    const char *env[] = {env_url, NULL};
    char source[160];
    snprintf(source, sizeof source, "--source=http://127.0.0.1:%d/users?page={chunk}&size={size}", port);
    const char *fargv[] = {"sluice", "fetcher", source, ledger, NULL};
    const char *margv[] = {"sluice", "mapper", NULL};
    const char *sargv[] = {"sluice", "saver", sink, NULL};
    th_proc *s = th_spawn("saver", sargv, env);
    th_proc *m1 = th_spawn("mapper1", margv, env), *m2 = th_spawn("mapper2", margv, env);
    int64_t t0 = th_now_ms();
    th_proc *f = th_spawn("fetcher", fargv, env);
    CHECK_INT(th_proc_wait(f, 30000), ==, 0);
    int64_t took = th_now_ms() - t0;
    char *log = th_proc_log(f);
    CHECK_MSG(strstr(log, "objects=10000 from=X-Total-Count chunks=100"), "%s", log);
    const char *r = strstr(log, "source_retries=");
    CHECK_MSG(r, "%s", log);
    long retried = strtol(r + strlen("source_retries="), NULL, 10);
    double failed = mock_metric(port, MOCK_500);
    fprintf(stderr, "job of 10000 through the API: %lld ms, %.0f injected 500s, %ld retries\n", (long long)took,
            failed, retried);
    CHECK_MSG(failed > 0 && retried == (long)failed, "%.0f injected 500s, %ld retries", failed, retried);
    char *db = th_path("out.db");
    tp_verify_sink(db, 10000, 100, 0);
    th_proc_free(m1), th_proc_free(m2), th_proc_free(s), th_proc_free(f), th_proc_free(api);
    th_nats_stop(ns);
    free(log), free(db), free(env_url), free(ledger), free(sink);
}

SL_TEST(source_http_refused_at_fetcher_start, 20)
{
    int port;
    th_proc *api = start_mock(NULL, &port);
    char *ledger = tp_flag("ledger", "", "f.ledger");
    static const struct {
        const char *path, *says;
    } bad[] = {
        {"/nope?page={chunk}&size={size}", "HTTP 404"},
        {"/users?page=0&size={size}", "has no {chunk}, {page} or {offset}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char source[160];
        snprintf(source, sizeof source, "--source=http://127.0.0.1:%d%s", port, bad[i].path);
        /* No NATS at all: the source is refused before anything else. */
        const char *argv[] = {"sluice", "fetcher", source, ledger, "--nats-url", "nats://127.0.0.1:1", NULL};
        char *out = NULL;
        CHECK_INT(th_run(argv, NULL, &out, 10000), ==, 2);
        CHECK_MSG(strstr(out, bad[i].says) && !strncmp(out, "sluice fetcher: ", 16), "%s", out);
        CHECK_MSG(strchr(out, '\n') == out + strlen(out) - 1, "not one line:\n%s", out);
        free(out);
    }
    th_proc_free(api);
    free(ledger);
}

static int slowed_one(void *arg)
{
    return mock_metric(*(int *)arg, "sluice_mock_api_slowed_total{role=\"mock-api\",sluice_job=\"default\"}") >= 1;
}

SL_TEST(source_http_sigterm_cuts_a_slow_request_short, 20)
{
    /* Page 0 takes 20 s under a 60-s timeout: SIGTERM must not wait it
     * out, and is an interrupted start (128+15), not a usage error. */
    int port;
    const char *extra[] = {"--slow-percent", "100", "--slow-ms", "20000", NULL};
    th_proc *api = start_mock(extra, &port);
    char *ledger = tp_flag("ledger", "", "f.ledger");
    char source[160];
    snprintf(source, sizeof source, "--source=http://127.0.0.1:%d/users?page={chunk}&size={size}", port);
    const char *argv[] = {"sluice", "fetcher", source, ledger, "--source-timeout-ms", "60000", NULL};
    th_proc *f = th_spawn("fetcher", argv, NULL);
    th_wait_until(slowed_one, &port, 5000, "the fetcher's first request");
    int64_t t0 = th_now_ms();
    th_proc_kill(f, SIGTERM);
    CHECK_INT(th_proc_wait(f, 5000), ==, 128 + SIGTERM);
    CHECK_INT(th_now_ms() - t0, <, 2000);
    th_proc_free(f);
    th_proc_free(api);
    free(ledger);
}
