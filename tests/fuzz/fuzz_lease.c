/* fuzz_lease.c - lease keys and tokens (lease.c, proto.c).
 *
 * The key is read back from the ledger file (sl_lease_key_parse) and a
 * token comes off the network (sl_proto_token_ok), so both see whatever
 * bytes someone wrote there. Checks:
 *   - a key parses only if it is exactly 32 lowercase hex digits, and then
 *     formats back to the same text;
 *   - a refused key leaves the out-param alone;
 *   - every token sl_lease_token makes, for any key, chunk and attempt, is
 *     one sl_proto_token_ok accepts, and is the same when made again;
 *   - SipHash reads only the bytes it is given (ASan), whatever the length. */
#include "fuzz.h"
#include "lease.h"
#include "proto.h"

static uint64_t get64(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x |= (uint64_t)p[i] << (8 * i);
    return x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *hex = fz_cstr(data, size);
    sl_lease_key key = {1, 2};
    sl_status st = sl_lease_key_parse(&key, hex);
    size_t n = strlen(hex);
    int want = n == 32 && strspn(hex, "0123456789abcdef") == 32;
    FZ_CHECK((st == SL_OK) == want);
    if (st == SL_OK) {
        char back[33];
        sl_lease_key_format(&key, back);
        FZ_CHECK(strcmp(back, hex) == 0);
    } else {
        FZ_CHECK(key.k0 == 1 && key.k1 == 2);
    }
    FZ_CHECK(sl_proto_token_ok(hex) == want);
    free(hex);

    /* The bytes as key, chunk and attempt of a token. */
    uint8_t buf[32] = {0};
    memcpy(buf, data, size < sizeof buf ? size : sizeof buf);
    sl_lease_key k = {get64(buf), get64(buf + 8)};
    char t1[33], t2[33];
    sl_lease_token(&k, (int64_t)get64(buf + 16), (int64_t)get64(buf + 24), t1);
    sl_lease_token(&k, (int64_t)get64(buf + 16), (int64_t)get64(buf + 24), t2);
    FZ_CHECK(sl_proto_token_ok(t1));
    FZ_CHECK(strcmp(t1, t2) == 0);

    /* SipHash over the input itself, in an exactly sized copy. */
    uint8_t *msg = malloc(size ? size : 1);
    FZ_CHECK(msg != NULL);
    if (size)
        memcpy(msg, data, size);
    volatile uint64_t h = sl_siphash(k.k0, k.k1, msg, size);
    (void)h;
    free(msg);
    return 0;
}
