/* proto.c - subjects and header parsing. */
#include "proto.h"

#include "buf.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *subject_names[SL_SUBJ_COUNT] = {
    "work", "progress", "release", "mapped", "saved", "dead", "status", "done",
};

void sl_proto_subject(char *buf, size_t size, const char *job, sl_subject s)
{
    snprintf(buf, size, "sluice.%s.%s", job, subject_names[s]);
}

const char *sl_proto_subject_name(sl_subject s)
{
    return subject_names[s];
}

natsMsg *sl_msg_new(const char *subj, const char *reply, const void *data, size_t len)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subj, reply, (const char *)data, (int)len);
    SL_ASSERT(s == NATS_OK);
    return m;
}

/* nats.c frees no message in place: natsMsg_Destroy hands it to the
 * library's garbage-collector thread and wakes that thread if it sleeps.
 * At sluice's rates (a few thousand messages a second, one at a time) that
 * was one wake-up - two context switches, the costliest thing on a small
 * VM - per message in every process: the fetcher's collector thread
 * switched 2,900 times in the 100,000-object job, as often as all its
 * other threads together. Handed over in batches, the collector wakes once
 * per batch. A batch holds at most FREE_BATCH messages or FREE_BYTES of
 * them, so the memory held back stays small; it is process-wide (messages
 * are destroyed on nats.c's delivery threads as well as on ours). */
#define FREE_BATCH 64
#define FREE_BYTES (1024 * 1024)
static pthread_mutex_t free_mu = PTHREAD_MUTEX_INITIALIZER;
static natsMsg *to_free[FREE_BATCH];
static int nfree;
static size_t free_bytes;

/* Destroys the held messages if force or a batch is full (m, if any,
 * joins the batch first). */
static void free_batch(natsMsg *m, bool force)
{
    natsMsg *batch[FREE_BATCH];
    int n = 0;
    pthread_mutex_lock(&free_mu);
    if (m) {
        to_free[nfree++] = m;
        free_bytes += (size_t)natsMsg_GetDataLength(m) + 256;
    }
    if (force || nfree == FREE_BATCH || free_bytes >= FREE_BYTES) {
        n = nfree;
        memcpy(batch, to_free, (size_t)n * sizeof *batch);
        nfree = 0;
        free_bytes = 0;
    }
    pthread_mutex_unlock(&free_mu);
    for (int k = 0; k < n; k++)
        natsMsg_Destroy(batch[k]);
}

void sl_msg_free(natsMsg *m)
{
    if (m)
        free_batch(m, false);
}

void sl_msg_flush(void)
{
    free_batch(NULL, true);
}

void sl_msg_set(natsMsg *m, const char *key, const char *value)
{
    natsStatus s = natsMsgHeader_Set(m, key, value);
    SL_ASSERT(s == NATS_OK);
}

void sl_msg_set_int(natsMsg *m, const char *key, int64_t value)
{
    char num[24];
    snprintf(num, sizeof num, "%" PRId64, value);
    sl_msg_set(m, key, num);
}

const char *sl_msg_str(natsMsg *m, const char *key)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, key, &v) != NATS_OK)
        return NULL;
    return v;
}

/* A plain decimal integer (an optional '-', digits; no spaces, signs or
 * hex) of n bytes at v, in [min, max]. */
static bool parse_int(const char *v, size_t n, int64_t min, int64_t max, int64_t *out)
{
    size_t i = n && v[0] == '-';
    if (i == n || n > 20)
        return false;
    uint64_t x = 0, limit = i ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (size_t k = i; k < n; k++) {
        if (v[k] < '0' || v[k] > '9')
            return false;
        unsigned d = (unsigned)(v[k] - '0');
        if (x > (limit - d) / 10)
            return false;
        x = x * 10 + d;
    }
    int64_t val = i ? (x == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)x) : (int64_t)x;
    if (val < min || val > max)
        return false;
    *out = val;
    return true;
}

sl_status sl_msg_int(natsMsg *m, const char *key, int64_t min, int64_t max, int64_t *out)
{
    const char *v = sl_msg_str(m, key);
    if (!v)
        return sl_fail(SL_ENOTFOUND, "header %s missing", key);
    int64_t n;
    if (!parse_int(v, strlen(v), INT64_MIN, INT64_MAX, &n))
        return sl_fail(SL_EINVAL, "header %s is not an integer", key);
    if (n < min || n > max)
        return sl_fail(SL_EINVAL, "header %s out of range", key);
    *out = n;
    return SL_OK;
}

void sl_proto_saved_append(sl_buf *body, const sl_saved_entry *e)
{
    sl_buf_printf(body, "%" PRId64 " %s %" PRId64 " %" PRId64 "\n", e->chunk, e->token, e->count, e->dead);
}

sl_status sl_proto_saved_next(const char **p, const char *end, sl_saved_entry *e)
{
    const char *line = *p, *nl = memchr(line, '\n', (size_t)(end - line));
    const char *stop = nl ? nl : end;
    *p = nl ? nl + 1 : end;
    static const char *const names[4] = {"chunk", "lease", "count", "dead"};
    const char *f = line;
    for (int k = 0; k < 4; k++) {
        const char *sp = k < 3 ? memchr(f, ' ', (size_t)(stop - f)) : NULL;
        const char *fe = sp ? sp : stop;
        if (k < 3 && !sp)
            return sl_fail(SL_EINVAL, "batch line has fewer than 4 fields");
        size_t n = (size_t)(fe - f);
        bool ok;
        if (k == 1) {
            ok = n == SL_LEASE_LEN;
            if (ok) {
                memcpy(e->token, f, n);
                e->token[n] = '\0';
                ok = sl_proto_token_ok(e->token);
            }
        } else {
            int64_t *dst = k == 0 ? &e->chunk : k == 2 ? &e->count : &e->dead;
            ok = parse_int(f, n, 0, k == 0 ? INT64_MAX : INT32_MAX, dst);
        }
        if (!ok)
            return sl_fail(SL_EINVAL, "batch line: %s is malformed", names[k]);
        f = fe + 1;
    }
    if (!nl)
        return sl_fail(SL_EINVAL, "batch line does not end with a newline");
    return SL_OK;
}

int sl_proto_token_ok(const char *s)
{
    if (!s || strlen(s) != SL_LEASE_LEN)
        return 0;
    return strspn(s, "0123456789abcdef") == SL_LEASE_LEN;
}

void sl_proto_reason(char *out, size_t size, const char *reason)
{
    if (!size)
        return;
    size_t o = 0, n = reason ? strlen(reason) : 0;
    for (size_t i = 0; i < n;) {
        size_t len = sl_utf8_char(reason + i, n - i);
        /* A reason can quote bytes from the network; it must stay text, and
         * one line: it travels as a header, where CR or LF would forge
         * header lines. */
        if (len == 1 && (unsigned char)reason[i] < 0x20) {
            if (o + 1 > size - 1)
                break;
            out[o++] = ' ';
            i++;
            continue;
        }
        const char *piece = len ? reason + i : "?";
        size_t plen = len ? len : 1;
        if (o + plen > size - 1)
            break;
        memcpy(out + o, piece, plen);
        o += plen;
        i += len ? len : 1;
    }
    out[o] = '\0';
}
