/* lease.c - SipHash-2-4 lease tokens, written from Aumasson & Bernstein's
 * paper "SipHash: a fast short-input PRF" (2012). */
#include "lease.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sipround(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = ROTL(v[1], 13);
    v[1] ^= v[0];
    v[0] = ROTL(v[0], 32);
    v[2] += v[3];
    v[3] = ROTL(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = ROTL(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = ROTL(v[1], 17);
    v[1] ^= v[2];
    v[2] = ROTL(v[2], 32);
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

uint64_t sl_siphash(uint64_t k0, uint64_t k1, const uint8_t *msg, size_t len)
{
    uint64_t v[4] = {
        k0 ^ UINT64_C(0x736f6d6570736575),
        k1 ^ UINT64_C(0x646f72616e646f6d),
        k0 ^ UINT64_C(0x6c7967656e657261),
        k1 ^ UINT64_C(0x7465646279746573),
    };
    size_t full = len - len % 8;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load_le64(msg + i);
        v[3] ^= m;
        sipround(v);
        sipround(v);
        v[0] ^= m;
    }
    /* The last block: remaining bytes, and the length in the top byte. */
    uint64_t b = (uint64_t)(len & 0xff) << 56;
    for (size_t i = 0; i < len % 8; i++)
        b |= (uint64_t)msg[full + i] << (8 * i);
    v[3] ^= b;
    sipround(v);
    sipround(v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sipround(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

sl_status sl_lease_key_random(sl_lease_key *key)
{
    uint64_t k[2];
    ssize_t n = getrandom(k, sizeof k, 0);
    if (n != (ssize_t)sizeof k)
        return sl_fail(SL_EIO, "getrandom: %s", strerror(errno));
    key->k0 = k[0];
    key->k1 = k[1];
    return SL_OK;
}

void sl_lease_key_format(const sl_lease_key *key, char *out)
{
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)key->k0, (unsigned long long)key->k1);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

sl_status sl_lease_key_parse(sl_lease_key *key, const char *hex)
{
    uint64_t k[2] = {0, 0};
    if (!hex || strlen(hex) != 32)
        return sl_fail(SL_EINVAL, "lease key is not 32 hex digits");
    for (int i = 0; i < 32; i++) {
        int d = hexval(hex[i]);
        if (d < 0)
            return sl_fail(SL_EINVAL, "lease key is not 32 hex digits");
        k[i / 16] = (k[i / 16] << 4) | (uint64_t)d;
    }
    key->k0 = k[0];
    key->k1 = k[1];
    return SL_OK;
}

void sl_lease_token(const sl_lease_key *key, int64_t chunk, int64_t attempt, char *out)
{
    uint8_t msg[17];
    for (int i = 0; i < 8; i++) {
        msg[i] = (uint8_t)((uint64_t)chunk >> (8 * i));
        msg[8 + i] = (uint8_t)((uint64_t)attempt >> (8 * i));
    }
    msg[16] = 0;
    uint64_t h0 = sl_siphash(key->k0, key->k1, msg, sizeof msg);
    msg[16] = 1;
    uint64_t h1 = sl_siphash(key->k0, key->k1, msg, sizeof msg);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h0, (unsigned long long)h1);
}
