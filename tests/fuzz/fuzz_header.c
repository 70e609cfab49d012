/* fuzz_header.c - Sluice-* header values, the one gate every number from
 * the network passes (proto.c: sl_msg_int, sl_msg_str, sl_proto_token_ok).
 *
 * Two ways in, chosen by the first byte:
 *   even: the rest is a raw header block as it comes off the wire
 *         ("NATS/1.0\r\nSluice-Chunk: 5\r\n\r\n"), turned into a message
 *         by nats.c's own natsMsg_create, the function its connection
 *         parser calls (exported by libnats but not in nats.h; declared
 *         below with the signature of nats.c 3.x src/msg.h);
 *   odd:  the rest is "<key>\0<value>", set with natsMsgHeader_Set.
 * Then every header sluice reads is read with every range a receiver uses
 * (PROTOCOL.md §3), and each answer is compared with a reference written
 * from PROTOCOL.md §1: an optional '-', then one or more digits, at most 20
 * characters in all, in range; nothing else. */
#include <nats/nats.h>

#include "fuzz.h"
#include "proto.h"

natsStatus natsMsg_create(natsMsg **newMsg, const char *subject, int subjLen, const char *reply, int replyLen,
                          const char *buf, int bufLen, int hdrLen);
/* natsMsg_Destroy hands a message to nats.c's garbage collector thread,
 * which frees it later: libFuzzer then sees more mallocs than frees in
 * every run and scans for leaks each time (4,000 runs/s instead of
 * 100,000). natsMsg_free, what that thread calls, frees it at once. */
void natsMsg_free(void *object);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* natsMsg_Destroy needs the library's garbage collector (test_proto.c). */
    FZ_CHECK(nats_Open(-1) == NATS_OK);
    return 0;
}

/* PROTOCOL.md §1, independently of proto.c. */
static sl_status ref_int(const char *v, int64_t min, int64_t max, int64_t *out)
{
    if (!v)
        return SL_ENOTFOUND;
    size_t n = strlen(v), i = v[0] == '-';
    if (n > 20 || i == n)
        return SL_EINVAL;
    unsigned __int128 mag = 0;
    for (; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return SL_EINVAL;
        mag = mag * 10 + (unsigned)(v[i] - '0');
    }
    __int128 val = v[0] == '-' ? -(__int128)mag : (__int128)mag;
    if (val < min || val > max)
        return SL_EINVAL;
    *out = (int64_t)val;
    return SL_OK;
}

static int ref_token(const char *s)
{
    if (!s || strlen(s) != 32)
        return 0;
    for (int i = 0; i < 32; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static const struct {
    int64_t min, max;
} ranges[] = {
    {0, 999},                   /* fetcher: Sluice-Chunk of a 1000-chunk job */
    {0, INT64_MAX},             /* mapper, saver: Sluice-Chunk */
    {1, INT32_MAX},             /* Sluice-Attempt */
    {1, 86400000},              /* Sluice-Lease-Ms (mapper) */
    {1, 60000},                 /* Sluice-Retry-Ms (mapper) */
    {0, INT32_MAX},             /* Sluice-Count, Sluice-Dead */
    {-1, INT32_MAX},            /* Sluice-Object */
    {INT64_MIN, INT64_MAX},     /* everything */
};

static void check_key(natsMsg *m, const char *key)
{
    const char *v = sl_msg_str(m, key);
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        int64_t got = -4242, want = -4242;
        sl_status st = sl_msg_int(m, key, ranges[r].min, ranges[r].max, &got);
        sl_status ref = ref_int(v, ranges[r].min, ranges[r].max, &want);
        if (st != ref || got != want)
            fprintf(stderr, "key \"%s\" value \"%s\" range [%lld, %lld]: sl_msg_int %d/%lld, reference %d/%lld\n",
                    key, v ? v : "(absent)", (long long)ranges[r].min, (long long)ranges[r].max, (int)st,
                    (long long)got, (int)ref, (long long)want);
        FZ_CHECK(st == ref);
        FZ_CHECK(got == want); /* also: *out untouched on failure */
        if (st != SL_OK)
            FZ_CHECK(sl_errmsg()[0] != '\0');
    }
    FZ_CHECK(sl_proto_token_ok(v) == ref_token(v));
    if (v) {
        /* What the fetcher does with Sluice-Worker, and with a reason. */
        volatile int bad = strlen(v) > SL_HDR_MAX || strpbrk(v, "\"\\");
        (void)bad;
        char why[SL_REASON_MAX + 1];
        sl_proto_reason(why, sizeof why, v);
        FZ_CHECK(strlen(why) <= SL_REASON_MAX && fz_utf8_valid(why, strlen(why)));
        bool plain = true;
        for (const char *c = v; *c; c++)
            plain = plain && (unsigned char)*c >= 0x20;
        for (const char *c = why; *c; c++)
            FZ_CHECK((unsigned char)*c >= 0x20); /* one header line */
        if (plain && fz_utf8_valid(v, strlen(v)))
            FZ_CHECK(strncmp(why, v, strlen(why)) == 0);
    }
}

static const char *const keys[] = {
    SL_H_WORKER, SL_H_STATUS, SL_H_CHUNK, SL_H_ATTEMPT, SL_H_LEASE, SL_H_LEASE_MS,
    SL_H_RETRY_MS, SL_H_COUNT, SL_H_DEAD, SL_H_OBJECT, SL_H_REASON,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16)
        return 0;
    natsMsg *m = NULL;
    const char *key = NULL;
    char *copy = NULL;
    if (data[0] % 2 == 0) {
        if (natsMsg_create(&m, "sluice.default.saved", 20, NULL, 0, (const char *)data + 1, (int)size - 1,
                           (int)size - 1) != NATS_OK)
            return 0;
    } else {
        copy = fz_cstr(data + 1, size - 1);
        const char *value = copy + strlen(copy) + 1 <= copy + size - 1 ? copy + strlen(copy) + 1 : "";
        if (natsMsg_Create(&m, "sluice.default.saved", NULL, NULL, 0) != NATS_OK) {
            free(copy);
            return 0;
        }
        if (natsMsgHeader_Set(m, copy, value) == NATS_OK)
            key = copy;
    }
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        check_key(m, keys[k]);
    if (key)
        check_key(m, key);
    natsMsg_free(m);
    free(copy);
    return 0;
}
