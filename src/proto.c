/* proto.c - subjects and header parsing. */
#include "proto.h"

#include "buf.h"

#include <errno.h>
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

sl_status sl_msg_int(natsMsg *m, const char *key, int64_t min, int64_t max, int64_t *out)
{
    const char *v = sl_msg_str(m, key);
    if (!v)
        return sl_fail(SL_ENOTFOUND, "header %s missing", key);
    /* Only plain decimal digits: no sign games, spaces or hex. */
    const char *p = v[0] == '-' ? v + 1 : v;
    if (!*p || strlen(v) > 20 || strspn(p, "0123456789") != strlen(p))
        return sl_fail(SL_EINVAL, "header %s is not an integer", key);
    errno = 0;
    long long n = strtoll(v, NULL, 10);
    if (errno == ERANGE || n < min || n > max)
        return sl_fail(SL_EINVAL, "header %s out of range", key);
    *out = n;
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
