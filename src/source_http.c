/* source_http.c - http(s):// sources: a paginated JSON API read with
 * libcurl, one page per chunk.
 *
 * The URI is a URL template (source_http.h): chunk i is the page its
 * placeholders name for i. At open, page 0 is requested: its X-Total-Count
 * header, when there is one, is the number of objects; otherwise --objects
 * is. A page is a JSON array of objects, or a JSON object holding that
 * array under "items", "data" or "results" (the first of those that is an
 * array). An array is passed on byte for byte once it parses; an array
 * inside an object is written out again as compact JSON.
 *
 * A page with another number of objects than its chunk should hold (say the
 * data changed since X-Total-Count was read) is passed on as served, with a
 * warning once per process: the savers count and save what there is. A page
 * must be the same every time it is asked for - the fetcher asks again for
 * a chunk whose lease expired - which an API over data that does not change
 * underneath gives.
 *
 * Failures: a connection error, a timeout (--source-timeout-ms for the whole
 * request, at most 10 s of it to connect), a 5xx or a 429 is retried up to
 * --source-retries times, after 100 ms, 200 ms, 400 ms ... (at most 5 s,
 * each with up to half of it taken off at random, so a fleet of retries
 * does not come back in step) - or after the Retry-After of a 429 or 503
 * when that is longer (seconds or a date; at most RETRY_AFTER_MAX_MS).
 * Any other answer that is not 2xx fails at once with its status, the URL
 * (password hidden) and the start of the body, as does a 2xx body that is
 * not one of the shapes above. A chunk that
 * fails is the fetcher's to retry later, and in the end to dead-letter.
 *
 * Read-ahead: the fetcher asks for chunk i when a mapper wants work and
 * waits for it, so a slow API would be read one page at a time. When chunk
 * i is asked for, chunks i+1 .. i+AHEAD are queued for WORKERS background
 * threads; at most CACHE pages are held (fetched or on their way), so the
 * memory stays bounded whatever the job's size. A page is dropped from the
 * cache once handed out: a chunk asked for again is fetched again.
 *
 * https uses libcurl's default CA store (the system's); nothing else is
 * configured. Redirects are followed, to http(s) only. */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "source.h"
#include "source_http.h"
#include "stop.h"
#include "url.h"

#define AHEAD 4
#define WORKERS 4
#define CACHE 8
#define IDLE_HANDLES 16
#define MAX_BODY ((size_t)64 << 20) /* NATS' max_payload is at most 64 MiB */
#define CONNECT_TIMEOUT_MS 10000
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
/* The longest Retry-After honoured: a server asking for more is asked again
 * after this, rather than the source sitting silent for as long. */
#define RETRY_AFTER_MAX_MS 60000
#define SHOWN_BODY 200 /* bytes of an error answer's body in the message */

/* ---- templates ---------------------------------------------------------- */

typedef enum { PH_CHUNK, PH_PAGE, PH_OFFSET, PH_SIZE, PH_NONE } placeholder;

static const char *const ph_names[] = {"{chunk}", "{page}", "{offset}", "{size}"};

/* The placeholder that starts at p ('{'), or PH_NONE. */
static placeholder placeholder_at(const char *p)
{
    for (int k = 0; k < PH_NONE; k++)
        if (!strncmp(p, ph_names[k], strlen(ph_names[k])))
            return (placeholder)k;
    return PH_NONE;
}

sl_status sl_http_template_check(const char *tmpl)
{
    char shown[1024];
    sl_url_redact(tmpl, shown, sizeof shown);
    bool varies = false;
    for (const char *p = strchr(tmpl, '{'); p; p = strchr(p + 1, '{')) {
        placeholder ph = placeholder_at(p);
        if (ph == PH_NONE) {
            const char *close = strchr(p, '}');
            return sl_fail(SL_EINVAL, "--source: unknown placeholder \"%.*s\" in %s (known: {chunk}, {page}, "
                                      "{offset}, {size})",
                           close ? (int)(close - p + 1) : (int)strlen(p), p, shown);
        }
        varies |= ph != PH_SIZE;
    }
    if (!varies)
        return sl_fail(SL_EINVAL, "--source: %s has no {chunk}, {page} or {offset}: every chunk would be the "
                                  "same page (e.g. ...?page={chunk}&size={size})", shown);
    return SL_OK;
}

void sl_http_template_expand(const char *tmpl, int64_t idx, int64_t size, sl_buf *out)
{
    const int64_t values[] = {idx, idx + 1, idx * size, size};
    for (const char *p = tmpl; *p;) {
        const char *open = strchr(p, '{');
        if (!open) {
            sl_buf_puts(out, p);
            return;
        }
        sl_buf_append(out, p, (size_t)(open - p));
        placeholder ph = placeholder_at(open);
        SL_ASSERT(ph != PH_NONE); /* sl_http_template_check let it through */
        sl_buf_printf(out, "%lld", (long long)values[ph]);
        p = open + strlen(ph_names[ph]);
    }
}

/* ---- the source ---------------------------------------------------------- */

typedef enum { SLOT_FREE, SLOT_QUEUED, SLOT_FETCHING, SLOT_READY, SLOT_FAILED } slot_state;

/* A page read ahead, or on its way. */
typedef struct {
    slot_state state;
    int64_t idx;
    sl_buf body;   /* READY: the chunk body */
    int64_t count; /* READY: objects in it */
    sl_status st;  /* FAILED: why, */
    char *error;   /* with its message */
} slot;

typedef struct {
    char *tmpl;
    int64_t chunk_size, objects, chunks;
    int64_t timeout_ms, retries;
    void (*on_retry)(void *arg);
    void *on_retry_arg;
    atomic_bool stopping;   /* destroy: abort transfers and back-offs */
    atomic_bool warned_count;
    _Atomic uint64_t jitter; /* position in the jitter stream */
    pthread_mutex_t mu;      /* guards everything below */
    pthread_cond_t cv;       /* a slot changed, or stopping */
    slot slots[CACHE];
    CURL *idle[IDLE_HANDLES];
    int nidle;
    pthread_t workers[WORKERS];
    int nworkers;
} http_source;

static bool stopping(http_source *s)
{
    return atomic_load(&s->stopping) || sl_stop_requested();
}

/* One answer. */
typedef struct {
    sl_buf body;
    bool too_big;
    int64_t total; /* X-Total-Count, -1 if none */
    http_source *src;
} response;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    response *r = arg;
    size_t len = size * n;
    if (len > MAX_BODY - r->body.len) {
        r->too_big = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    sl_buf_append(&r->body, p, len);
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    response *r = arg;
    size_t len = size * n;
    static const char name[] = "x-total-count:";
    /* A new response (after a redirect, or a 100 Continue) starts again. */
    if (len >= 5 && !strncmp(p, "HTTP/", 5))
        r->total = -1;
    if (len > sizeof name - 1 && !strncasecmp(p, name, sizeof name - 1)) {
        char v[32];
        size_t vl = len - (sizeof name - 1);
        if (vl >= sizeof v)
            vl = sizeof v - 1;
        memcpy(v, p + sizeof name - 1, vl);
        v[vl] = '\0';
        char *end = NULL;
        long long t = strtoll(v, &end, 10);
        while (end && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
            end++;
        if (end && !*end && end != v && t >= 0)
            r->total = t;
    }
    return len;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return stopping(((response *)arg)->src) ? 1 : 0; /* non-zero aborts */
}

/* An easy handle from the idle ones, or a new one, set up for s. */
static CURL *take_handle(http_source *s)
{
    pthread_mutex_lock(&s->mu);
    CURL *c = s->nidle ? s->idle[--s->nidle] : NULL;
    pthread_mutex_unlock(&s->mu);
    if (c)
        return c;
    c = curl_easy_init();
    if (!c)
        return NULL;
    long connect_ms = s->timeout_ms < CONNECT_TIMEOUT_MS ? (long)s->timeout_ms : CONNECT_TIMEOUT_MS;
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)s->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); /* whatever this libcurl decodes */
    curl_easy_setopt(c, CURLOPT_USERAGENT, "sluice");
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#endif
    return c;
}

static void give_handle(http_source *s, CURL *c)
{
    pthread_mutex_lock(&s->mu);
    if (s->nidle < IDLE_HANDLES) {
        s->idle[s->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (c)
        curl_easy_cleanup(c);
}

/* The wait before retry `attempt` (from 0): doubling from 100 ms, at most
 * 5 s, less up to half of it at random. */
static int64_t backoff_ms(http_source *s, int64_t attempt)
{
    int64_t ms = BACKOFF_FIRST_MS;
    for (int64_t k = 0; k < attempt && ms < BACKOFF_MAX_MS; k++)
        ms *= 2;
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    uint64_t z = atomic_fetch_add(&s->jitter, UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    z ^= z >> 31;
    return ms - (int64_t)(z % (uint64_t)(ms / 2 + 1));
}

/* The wait before retry `attempt` of an answer with status code: the
 * backoff, or the server's Retry-After when a 429 or 503 has a longer one. */
static int64_t retry_wait_ms(http_source *s, CURL *c, long code, int64_t attempt)
{
    int64_t ms = backoff_ms(s, attempt);
    curl_off_t after = 0;
    if ((code == 429 || code == 503) && curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &after) == CURLE_OK &&
        after > 0) {
        int64_t want = after > RETRY_AFTER_MAX_MS / 1000 ? RETRY_AFTER_MAX_MS : (int64_t)after * 1000;
        if (want > ms)
            ms = want;
    }
    return ms;
}

/* Sleeps ms unless the source is stopping; false if it is. */
static bool pause_ms(http_source *s, int64_t ms)
{
    struct timespec until = sl_deadline(CLOCK_MONOTONIC, ms);
    pthread_mutex_lock(&s->mu);
    /* Wakes every 100 ms to see a SIGTERM, which signals no condition. */
    while (!stopping(s)) {
        struct timespec now, step;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > until.tv_sec || (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec))
            break;
        step = sl_deadline(CLOCK_MONOTONIC, 100);
        if (step.tv_sec > until.tv_sec || (step.tv_sec == until.tv_sec && step.tv_nsec > until.tv_nsec))
            step = until;
        pthread_cond_timedwait(&s->cv, &s->mu, &step);
    }
    pthread_mutex_unlock(&s->mu);
    return !stopping(s);
}

/* Up to SHOWN_BODY bytes of a body as one line of printable ASCII. */
static void show_body(sl_buf *out, const sl_buf *body)
{
    size_t n = body->len < SHOWN_BODY ? body->len : SHOWN_BODY;
    bool space = true; /* no leading blank */
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)body->data[i];
        bool blank = ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
        if (blank && space)
            continue;
        sl_buf_putc(out, blank ? ' ' : ch < 0x20 || ch >= 0x7f ? '?' : (char)ch);
        space = blank;
    }
    while (out->len && out->data[out->len - 1] == ' ')
        out->data[--out->len] = '\0';
    if (body->len > n)
        sl_buf_puts(out, "...");
}

/* The page's objects as a compact JSON array appended to out; *count of
 * them. */
static sl_status take_array(const sl_buf *body, const char *shown, sl_buf *out, int64_t *count)
{
    json_error_t err;
    json_t *j = json_loadb(body->data ? body->data : "", body->len, 0, &err);
    sl_status st = SL_OK;
    if (!j) {
        sl_buf b = SL_BUF_INIT;
        show_body(&b, body);
        st = sl_fail(SL_EINVAL, "GET %s: the answer is not JSON (%s, line %d): %s", shown, err.text, err.line,
                     b.data ? b.data : "");
        sl_buf_free(&b);
        return st;
    }
    if (json_is_array(j)) {
        sl_buf_append(out, body->data, body->len);
        *count = (int64_t)json_array_size(j);
    } else {
        static const char *const keys[] = {"items", "data", "results"};
        json_t *a = NULL;
        for (size_t k = 0; k < 3 && !a; k++)
            if (json_is_array(json_object_get(j, keys[k])))
                a = json_object_get(j, keys[k]);
        char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
        if (s) {
            sl_buf_puts(out, s);
            *count = (int64_t)json_array_size(a);
            free(s);
        } else {
            st = sl_fail(SL_EINVAL, "GET %s: the answer is neither a JSON array nor an object with an array "
                                    "under \"items\", \"data\" or \"results\"", shown);
        }
    }
    json_decref(j);
    return st;
}

static bool retryable_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST: /* DNS hiccups pass; a wrong name fails after the retries */
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

/* GETs page idx: its objects go to out (a compact JSON array), how many to
 * *count, X-Total-Count (or -1) to *total when total is not NULL. The one
 * place libcurl's errors become sluice's. */
static sl_status fetch_page(http_source *s, int64_t idx, sl_buf *out, int64_t *count, int64_t *total)
{
    sl_buf url = SL_BUF_INIT;
    sl_http_template_expand(s->tmpl, idx, s->chunk_size, &url);
    char shown[1024];
    sl_url_redact(url.data, shown, sizeof shown);
    char curl_err[CURL_ERROR_SIZE];
    response r = {SL_BUF_INIT, false, -1, s};
    sl_status st = SL_OK;
    CURL *c = take_handle(s);
    if (!c) {
        st = sl_fail(SL_EIO, "GET %s: cannot create a curl handle", shown);
        goto cleanup;
    }
    curl_easy_setopt(c, CURLOPT_URL, url.data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &r);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
    for (int64_t attempt = 0;; attempt++) {
        sl_buf_reset(&r.body);
        r.too_big = false;
        r.total = -1;
        curl_err[0] = '\0';
        CURLcode rc = curl_easy_perform(c);
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        bool retry;
        sl_buf why = SL_BUF_INIT;
        if (rc == CURLE_OK && code >= 200 && code < 300) {
            st = take_array(&r.body, shown, out, count);
            if (st == SL_OK && total)
                *total = r.total;
            break;
        }
        if (rc == CURLE_ABORTED_BY_CALLBACK || stopping(s)) {
            st = sl_fail(SL_EIO, "GET %s: stopped", shown);
            break;
        }
        if (rc != CURLE_OK) {
            retry = retryable_curl(rc);
            sl_buf_puts(&why, r.too_big ? "answer larger than 64 MiB" : curl_err[0] ? curl_err : curl_easy_strerror(rc));
        } else {
            retry = code >= 500 || code == 429;
            sl_buf_printf(&why, "HTTP %ld", code);
            if (r.body.len) {
                sl_buf_puts(&why, ": ");
                show_body(&why, &r.body);
            }
        }
        if (!retry || attempt >= s->retries) {
            st = sl_fail(rc == CURLE_OK && code >= 400 && code < 500 && code != 429 ? SL_EINVAL : SL_EIO,
                         "GET %s: %s%s", shown, why.data,
                         retry ? " (no retries left)" : rc == CURLE_OK ? " (not retried: a client error)" : "");
            sl_buf_free(&why);
            break;
        }
        sl_debug("retrying a page", "chunk=%lld attempt=%lld error=%s", (long long)idx, (long long)attempt + 1,
                 sl_log_q(why.data));
        sl_buf_free(&why);
        if (s->on_retry)
            s->on_retry(s->on_retry_arg);
        if (!pause_ms(s, retry_wait_ms(s, c, code, attempt))) {
            st = sl_fail(SL_EIO, "GET %s: stopped", shown);
            break;
        }
    }
    /* None of these outlives this call. */
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, NULL);
    give_handle(s, c);
cleanup:
    sl_buf_free(&r.body);
    sl_buf_free(&url);
    return st;
}

/* ---- read-ahead ---------------------------------------------------------- */

static slot *find_slot(http_source *s, int64_t idx)
{
    for (int k = 0; k < CACHE; k++)
        if (s->slots[k].state != SLOT_FREE && s->slots[k].idx == idx)
            return &s->slots[k];
    return NULL;
}

static void clear_slot(slot *sl)
{
    sl_buf_free(&sl->body);
    free(sl->error);
    memset(sl, 0, sizeof *sl);
    sl->state = SLOT_FREE;
}

/* A free slot, making one of a page outside [lo, hi] that is not being
 * fetched if need be; NULL if every slot holds one that is wanted. */
static slot *room(http_source *s, int64_t lo, int64_t hi)
{
    slot *victim = NULL;
    for (int k = 0; k < CACHE; k++) {
        slot *sl = &s->slots[k];
        if (sl->state == SLOT_FREE)
            return sl;
        if (sl->state != SLOT_FETCHING && (sl->idx < lo || sl->idx > hi) && !victim)
            victim = sl;
    }
    if (victim)
        clear_slot(victim);
    return victim;
}

/* Queues the pages after idx for the workers. With s->mu held. */
static void read_ahead(http_source *s, int64_t idx)
{
    bool queued = false;
    for (int64_t j = idx + 1; j <= idx + AHEAD && j < s->chunks; j++) {
        if (find_slot(s, j))
            continue;
        slot *sl = room(s, idx, idx + AHEAD);
        if (!sl)
            break;
        sl->state = SLOT_QUEUED;
        sl->idx = j;
        queued = true;
    }
    if (queued)
        pthread_cond_broadcast(&s->cv);
}

static void *worker_main(void *arg)
{
    http_source *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!atomic_load(&s->stopping)) {
        slot *next = NULL;
        for (int k = 0; k < CACHE; k++)
            if (s->slots[k].state == SLOT_QUEUED && (!next || s->slots[k].idx < next->idx))
                next = &s->slots[k];
        if (!next) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        next->state = SLOT_FETCHING;
        int64_t idx = next->idx;
        pthread_mutex_unlock(&s->mu);
        sl_buf body = SL_BUF_INIT;
        int64_t count = 0;
        sl_status st = fetch_page(s, idx, &body, &count, NULL);
        pthread_mutex_lock(&s->mu);
        /* A FETCHING slot is never reused by anyone else. */
        next->body = body;
        next->count = count;
        next->st = st;
        next->error = st ? sl_xstrdup(sl_errmsg()) : NULL;
        next->state = st ? SLOT_FAILED : SLOT_READY;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void warn_count(http_source *s, int64_t idx, int64_t len, int64_t count)
{
    if (count == len || atomic_exchange(&s->warned_count, true))
        return;
    sl_warn("a page holds another number of objects than its chunk should; passed on as served (warned once)",
            "chunk=%lld expected=%lld got=%lld", (long long)idx, (long long)len, (long long)count);
}

static sl_status http_chunk(void *impl, int64_t idx, int64_t first, int64_t len, sl_buf *out, sl_source_meta *meta)
{
    (void)first, (void)meta; /* meta stays "a JSON array" */
    http_source *s = impl;
    pthread_mutex_lock(&s->mu);
    read_ahead(s, idx);
    slot *sl;
    for (;;) {
        sl = find_slot(s, idx);
        /* Not started yet: quicker to fetch it here than to wait for a
         * worker. */
        if (sl && sl->state == SLOT_QUEUED) {
            clear_slot(sl);
            sl = NULL;
        }
        if (!sl || sl->state != SLOT_FETCHING)
            break;
        pthread_cond_wait(&s->cv, &s->mu); /* another thread may take it meanwhile: look again */
    }
    sl_status st = SL_OK;
    int64_t count = 0;
    bool cached = sl != NULL;
    if (cached) {
        st = sl->st;
        if (st == SL_OK) {
            sl_buf_append(out, sl->body.data, sl->body.len);
            count = sl->count;
        } else {
            sl_fail(st, "%s", sl->error);
        }
        clear_slot(sl);
    }
    pthread_mutex_unlock(&s->mu);
    if (!cached)
        st = fetch_page(s, idx, out, &count, NULL);
    if (st == SL_OK)
        warn_count(s, idx, len, count);
    return st;
}

static void http_destroy(void *impl)
{
    http_source *s = impl;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stopping, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int k = 0; k < s->nworkers; k++)
        pthread_join(s->workers[k], NULL);
    for (int k = 0; k < CACHE; k++)
        clear_slot(&s->slots[k]);
    for (int k = 0; k < s->nidle; k++)
        curl_easy_cleanup(s->idle[k]);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->tmpl);
    free(s);
    curl_global_cleanup();
}

static const sl_source_ops http_ops = {http_chunk, http_destroy};

sl_status sl_source_http_open(const sl_source_opts *o, int64_t *objects, void **impl, const sl_source_ops **ops)
{
    sl_status st = sl_http_template_check(o->uri);
    if (st)
        return st;
    /* Reference-counted, and thread-safe in the libcurl this builds with
     * (>= 7.84); the fetcher opens its source before it starts threads. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return sl_fail(SL_EIO, "cannot initialise libcurl");
    http_source *s = sl_xcalloc(1, sizeof *s);
    s->tmpl = sl_xstrdup(o->uri);
    s->chunk_size = o->chunk_size;
    s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    s->retries = o->retries > 0 ? o->retries : 0;
    s->on_retry = o->on_retry;
    s->on_retry_arg = o->on_retry_arg;
    atomic_store(&s->jitter, (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* pause_ms's deadlines */
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);

    /* Page 0 tells how many objects there are, and is kept for chunk 0. */
    sl_buf first = SL_BUF_INIT;
    int64_t count = 0, total = -1;
    if ((st = fetch_page(s, 0, &first, &count, &total)) != SL_OK) {
        sl_buf_free(&first);
        http_destroy(s);
        return st;
    }
    s->objects = total >= 0 ? total : o->objects;
    if (s->objects < 1) {
        sl_buf_free(&first);
        http_destroy(s);
        char shown[1024];
        sl_url_redact(o->uri, shown, sizeof shown);
        return sl_fail(SL_EINVAL, "--source: %s reports X-Total-Count: 0, nothing to fetch", shown);
    }
    s->chunks = (s->objects + s->chunk_size - 1) / s->chunk_size;
    s->slots[0].state = SLOT_READY;
    s->slots[0].idx = 0;
    s->slots[0].body = first;
    s->slots[0].count = count;
    for (int k = 0; k < WORKERS; k++) {
        if (pthread_create(&s->workers[k], NULL, worker_main, s) != 0)
            break; /* fewer workers read ahead less; none still works */
        s->nworkers++;
    }
    sl_info("http source open", "objects=%lld from=%s chunks=%lld", (long long)s->objects,
            total >= 0 ? "X-Total-Count" : "--objects", (long long)s->chunks);
    *objects = s->objects;
    *impl = s;
    *ops = &http_ops;
    return SL_OK;
}
