/* test_bus.c - what URLs show of their credentials in messages. */
#include "url.h"
#include "test.h"

static void redacted(const char *in, const char *want)
{
    char out[256];
    sl_url_redact(in, out, sizeof out);
    CHECK_STR(out, want);
}

SL_TEST(bus_redacts_credentials_in_urls, 5)
{
    redacted("nats://127.0.0.1:4222", "nats://127.0.0.1:4222");
    redacted("nats://bob:S3cret@host:4222", "nats://***@host:4222");
    redacted("tls://token@host:4222", "tls://***@host:4222");
    redacted("nats://a:b@h1:1,nats://h2:2, nats://c@h3:3", "nats://***@h1:1,nats://h2:2, nats://***@h3:3");
    redacted("u:p@host:4222", "***@host:4222");
    redacted("", "");
    redacted("postgres://sluice:pw@db:5432/x", "postgres://***@db:5432/x");
}
