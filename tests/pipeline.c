/* pipeline.c - helpers of the pipeline tests. */
#include "pipeline.h"

#include <curl/curl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "source_gen.h"
#include "test.h"

natsConnection *tp_connect(const char *url)
{
    natsConnection *nc = NULL;
    natsStatus s = natsConnection_ConnectTo(&nc, url);
    CHECK_MSG(s == NATS_OK, "test client cannot connect to %s: %s", url, natsStatus_GetText(s));
    return nc;
}

void tp_publish(natsConnection *nc, const char *subj, const char *body, ...)
{
    natsMsg *m = NULL;
    CHECK(natsMsg_Create(&m, subj, NULL, body, body ? (int)strlen(body) : 0) == NATS_OK);
    va_list ap;
    va_start(ap, body);
    for (const char *k = va_arg(ap, const char *); k; k = va_arg(ap, const char *)) {
        const char *v = va_arg(ap, const char *);
        CHECK(natsMsgHeader_Set(m, k, v) == NATS_OK);
    }
    va_end(ap);
    CHECK(natsConnection_PublishMsg(nc, m) == NATS_OK);
    CHECK(natsConnection_Flush(nc) == NATS_OK);
    natsMsg_Destroy(m);
}

void tp_saved_one(natsMsg *m, sl_saved_entry *e)
{
    const char *n = NULL;
    natsMsgHeader_Get(m, SL_H_CHUNKS, &n);
    CHECK_MSG(n && !strcmp(n, "1"), "P.saved with Sluice-Chunks %s, not one chunk", n ? n : "(none)");
    const char *p = natsMsg_GetData(m), *end = p + natsMsg_GetDataLength(m);
    CHECK_MSG(sl_proto_saved_next(&p, end, e) == SL_OK, "P.saved body: %s", sl_errmsg());
    CHECK_MSG(p == end, "P.saved body holds more than its line");
}

json_t *tp_status(natsConnection *nc)
{
    natsMsg *r = NULL;
    if (natsConnection_RequestString(&r, nc, "sluice.default.status", "", 1000) != NATS_OK)
        return NULL;
    json_t *j = json_loadb(natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r), 0, NULL);
    natsMsg_Destroy(r);
    CHECK_MSG(json_is_object(j), "P.status answer is not a JSON object");
    return j;
}

int64_t tp_stat(json_t *status, const char *a, const char *b)
{
    json_t *v = json_object_get(status, a);
    if (b)
        v = json_object_get(v, b);
    CHECK_MSG(json_is_integer(v), "status has no integer %s%s%s", a, b ? "." : "", b ? b : "");
    return (int64_t)json_integer_value(v);
}

void tp_wait_stat(natsConnection *nc, const char *a, const char *b, int64_t want, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms, have = -1;
    while (th_now_ms() < deadline) {
        json_t *j = tp_status(nc);
        if (j) {
            have = tp_stat(j, a, b);
            json_decref(j);
            if (have >= want)
                return;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    sl_test_fail(__FILE__, __LINE__, "status %s%s%s stayed at %lld, wanted %lld within %d ms", a, b ? "." : "",
                 b ? b : "", (long long)have, (long long)want, timeout_ms);
}

void tp_wait_chunks(natsConnection *nc, const char *field, int64_t want, int timeout_ms)
{
    tp_wait_stat(nc, "chunks", field, want, timeout_ms);
}

char *tp_flag(const char *flag, const char *prefix, const char *name)
{
    char *p = th_path(name);
    sl_buf b = SL_BUF_INIT;
    sl_buf_printf(&b, "--%s=%s%s", flag, prefix, p);
    free(p);
    return b.data;
}

char *tp_env_url(const char *url)
{
    sl_buf b = SL_BUF_INIT;
    sl_buf_printf(&b, "NATS_URL=%s", url);
    return b.data;
}

static bool is_missing(int64_t idx, const int64_t *missing, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (missing[k] == idx)
            return true;
    return false;
}

static int64_t count_rows(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q = NULL;
    CHECK_MSG(sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    int64_t n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return n;
}

int64_t tp_verify_rows(int64_t objects, int64_t chunk_size, int64_t skip, const int64_t *missing, size_t nmissing,
                       bool exact, tp_row_fn get, void *arg)
{
    int64_t chunks = (objects + chunk_size - 1) / chunk_size;
    sl_buf chunk = SL_BUF_INIT;
    int64_t checked = 0;
    for (int64_t c = 0; c < chunks; c++) {
        if (c == skip)
            continue;
        int64_t first = c * chunk_size, len = objects - first < chunk_size ? objects - first : chunk_size;
        sl_buf_reset(&chunk);
        sl_gen_users(1, c, first, len, &chunk);
        json_t *arr = json_loadb(chunk.data, chunk.len, 0, NULL);
        CHECK(json_is_array(arr) && (int64_t)json_array_size(arr) == len);
        size_t i;
        json_t *u;
        json_array_foreach(arr, i, u)
        {
            const char *uuid = json_string_value(json_object_get(u, "uuid"));
            const char *doc = NULL;
            int64_t at = -1;
            if (is_missing(first + (int64_t)i, missing, nmissing)) {
                CHECK_MSG(!get(arg, uuid, &doc, &at), "object %lld (%s) should be missing",
                          (long long)(first + (int64_t)i), uuid);
                continue;
            }
            json_t *w = json_pack("{s:s, s:s++}", "id", uuid, "name", json_string_value(json_object_get(u, "fn")), " ",
                                  json_string_value(json_object_get(u, "ln")));
            char *want = json_dumps(w, JSON_COMPACT);
            CHECK_MSG(get(arg, uuid, &doc, &at), "object %s of chunk %lld is missing", uuid, (long long)c);
            if (exact) {
                CHECK_STR(doc, want);
            } else {
                json_t *got = json_loads(doc, 0, NULL);
                CHECK_MSG(got && json_equal(got, w), "object %s: %s, want %s", uuid, doc, want);
                json_decref(got);
            }
            CHECK_INT(at, ==, c);
            json_decref(w);
            free(want);
            checked++;
        }
        json_decref(arr);
    }
    sl_buf_free(&chunk);
    return checked;
}

static int sqlite_row(void *arg, const char *id, const char **doc, int64_t *chunk)
{
    sqlite3_stmt *q = arg;
    sqlite3_reset(q);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(q) != SQLITE_ROW)
        return 0;
    *doc = (const char *)sqlite3_column_text(q, 0);
    *chunk = sqlite3_column_int64(q, 1);
    return 1;
}

int64_t tp_verify_sink_except(const char *path, int64_t objects, int64_t chunk_size, int64_t dead, int64_t skip)
{
    return tp_verify_sink_missing(path, objects, chunk_size, dead, skip, NULL, 0);
}

int64_t tp_verify_sink_missing(const char *path, int64_t objects, int64_t chunk_size, int64_t dead, int64_t skip,
                               const int64_t *missing, size_t nmissing)
{
    sqlite3 *db = NULL;
    CHECK_MSG(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open %s", path);
    int64_t chunks = (objects + chunk_size - 1) / chunk_size;
    bool skipping = skip >= 0 && skip < chunks;
    int64_t skipped = skipping ? (skip == chunks - 1 ? objects - skip * chunk_size : chunk_size) : 0;
    CHECK_INT(count_rows(db, "SELECT count(*) FROM objects"), ==, objects - skipped - (int64_t)nmissing);
    CHECK_INT(count_rows(db, "SELECT count(DISTINCT id) FROM objects"), ==, objects - skipped - (int64_t)nmissing);
    CHECK_INT(count_rows(db, "SELECT count(*) FROM chunks"), ==, chunks - (skipping ? 1 : 0));
    CHECK_INT(count_rows(db, "SELECT count(*) FROM dead_letters"), ==, dead);

    sqlite3_stmt *q = NULL;
    if (skipping) {
        CHECK(sqlite3_prepare_v2(db, "SELECT count(*) FROM objects WHERE chunk = ?1", -1, &q, NULL) == SQLITE_OK);
        sqlite3_bind_int64(q, 1, skip);
        CHECK(sqlite3_step(q) == SQLITE_ROW);
        CHECK_INT(sqlite3_column_int64(q, 0), ==, 0);
        sqlite3_finalize(q);
    }
    CHECK(sqlite3_prepare_v2(db, "SELECT doc, chunk FROM objects WHERE id = ?1", -1, &q, NULL) == SQLITE_OK);
    int64_t checked = tp_verify_rows(objects, chunk_size, skip, missing, nmissing, true, sqlite_row, q);
    CHECK_INT(checked, ==, objects - skipped - (int64_t)nmissing);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return checked;
}

void tp_verify_sink(const char *path, int64_t objects, int64_t chunk_size, int64_t dead)
{
    tp_verify_sink_except(path, objects, chunk_size, dead, -1);
}

static size_t collect_body(char *data, size_t size, size_t n, void *arg)
{
    sl_buf_append(arg, data, size * n);
    return size * n;
}

long tp_http_get(const char *url, char **body)
{
    return tp_http_get_headers(url, body, NULL);
}

long tp_http_get_headers(const char *url, char **body, char **headers)
{
    CURL *c = curl_easy_init();
    CHECK(c);
    sl_buf b = SL_BUF_INIT, h = SL_BUF_INIT;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (headers) {
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect_body);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    }
    long code = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    sl_buf_putc(&b, '\0');
    sl_buf_putc(&h, '\0');
    if (body)
        *body = b.data;
    else
        sl_buf_free(&b);
    if (headers)
        *headers = h.data;
    else
        sl_buf_free(&h);
    return code;
}

int tp_http_port(th_proc *p)
{
    /* "http listening" addr=... port=N (roles) or "... listening" addr=HOST:N */
    th_proc_wait_log(p, "listening\" addr=", 10000);
    char *log = th_proc_log(p);
    const char *at = strstr(log, "listening\" addr=");
    const char *eol = strchr(at, '\n');
    const char *port = strstr(at, " port=");
    int n;
    if (port && (!eol || port < eol)) {
        n = atoi(port + 6);
    } else {
        const char *addr = at + strlen("listening\" addr=");
        const char *colon = memrchr(addr, ':', strcspn(addr, " \n"));
        n = colon ? atoi(colon + 1) : 0;
    }
    free(log);
    CHECK_MSG(n > 0, "no port in the listening line");
    return n;
}

json_t *tp_prom_query(int port, const char *expr)
{
    CURL *c = curl_easy_init();
    CHECK(c);
    char *q = curl_easy_escape(c, expr, 0);
    sl_buf url = SL_BUF_INIT;
    sl_buf_printf(&url, "http://127.0.0.1:%d/api/v1/query?query=%s", port, q);
    curl_free(q);
    curl_easy_cleanup(c);
    char *body = NULL;
    long code = tp_http_get(url.data, &body);
    json_t *j = json_loads(body, 0, NULL);
    CHECK_MSG(code == 200 && j && !strcmp(json_string_value(json_object_get(j, "status")), "success"),
              "Prometheus query %s answered %ld: %s", expr, code, body);
    json_t *result = json_incref(json_object_get(json_object_get(j, "data"), "result"));
    json_decref(j);
    free(body);
    sl_buf_free(&url);
    return result;
}
