/* test_proto.c - subjects and header parsing, on messages built locally.
 *
 * Header values come from the network, so sl_msg_int is the one gate every
 * number passes: anything but plain decimal digits in range is refused. No
 * server is needed: natsMsg and its headers exist without a connection.
 * nats.c must be initialised, though (natsMsg_Destroy hands the message to
 * the library's garbage collector, whose lock nats_Open creates; a
 * connection does that implicitly), so each test that builds messages
 * opens the library first and closes it at the end. */
#include "test.h"

#include "proto.h"

static void lib_open(void)
{
    CHECK_INT(nats_Open(-1), ==, NATS_OK);
}

static void lib_close(void)
{
    nats_Close();
}

static natsMsg *msg_with(const char *key, const char *value)
{
    natsMsg *m = sl_msg_new("sluice.t.saved", NULL, NULL, 0);
    CHECK(m != NULL);
    if (key)
        sl_msg_set(m, key, value);
    return m;
}

/* sl_msg_int of a one-header message; *out is preset to a marker that a
 * failure must leave alone. */
static sl_status int_of(const char *value, int64_t min, int64_t max, int64_t *out)
{
    natsMsg *m = msg_with(SL_H_CHUNK, value);
    *out = -4242;
    sl_status st = sl_msg_int(m, SL_H_CHUNK, min, max, out);
    natsMsg_Destroy(m);
    return st;
}

static void expect_invalid(const char *value, int64_t min, int64_t max)
{
    int64_t v;
    sl_status st = int_of(value, min, max, &v);
    CHECK_MSG(st == SL_EINVAL, "\"%s\" in [%lld, %lld]: status %d, value %lld", value,
              (long long)min, (long long)max, (int)st, (long long)v);
    CHECK_MSG(v == -4242, "\"%s\": out-param written on failure", value);
    CHECK_MSG(strstr(sl_errmsg(), SL_H_CHUNK) != NULL, "message does not name the header: %s",
              sl_errmsg());
}

static void expect_value(const char *value, int64_t min, int64_t max, int64_t want)
{
    int64_t v;
    sl_status st = int_of(value, min, max, &v);
    CHECK_MSG(st == SL_OK, "\"%s\" refused: %s", value, sl_errmsg());
    CHECK_MSG(v == want, "\"%s\" read as %lld, want %lld", value, (long long)v, (long long)want);
}

SL_TEST(proto_msg_int_valid, 5)
{
    lib_open();
    expect_value("0", 0, 100, 0);
    expect_value("12", 0, 100, 12);
    expect_value("100", 0, 100, 100); /* max itself */
    expect_value("007", 0, 100, 7);
    expect_value("-1", -1, 1, -1);
    expect_value("9223372036854775807", 0, INT64_MAX, INT64_MAX);
    expect_value("-9223372036854775808", INT64_MIN, 0, INT64_MIN);

    /* What sl_msg_set_int writes, sl_msg_int reads back, at the extremes. */
    const int64_t vals[] = {0, 1, -1, 999999, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        natsMsg *m = sl_msg_new("x", NULL, NULL, 0);
        sl_msg_set_int(m, SL_H_COUNT, vals[i]);
        int64_t v = 0;
        CHECK_INT(sl_msg_int(m, SL_H_COUNT, INT64_MIN, INT64_MAX, &v), ==, SL_OK);
        CHECK_INT(v, ==, vals[i]);
        natsMsg_Destroy(m);
    }
    lib_close();
}

SL_TEST(proto_msg_int_missing, 5)
{
    lib_open();
    natsMsg *m = msg_with(NULL, NULL); /* no headers at all */
    int64_t v = 7;
    CHECK_INT(sl_msg_int(m, SL_H_CHUNK, 0, 100, &v), ==, SL_ENOTFOUND);
    CHECK_INT(v, ==, 7);
    CHECK(strstr(sl_errmsg(), SL_H_CHUNK) != NULL);
    CHECK(sl_msg_str(m, SL_H_CHUNK) == NULL);
    natsMsg_Destroy(m);

    m = msg_with(SL_H_COUNT, "5"); /* headers, but not that one */
    CHECK_INT(sl_msg_int(m, SL_H_CHUNK, 0, 100, &v), ==, SL_ENOTFOUND);
    CHECK_INT(v, ==, 7);
    CHECK_INT(sl_msg_int(m, SL_H_COUNT, 0, 100, &v), ==, SL_OK);
    CHECK_INT(v, ==, 5);
    CHECK_STR(sl_msg_str(m, SL_H_COUNT), "5");
    natsMsg_Destroy(m);
    lib_close();
}

SL_TEST(proto_msg_int_malformed, 5)
{
    lib_open();
    expect_invalid("", 0, 100);
    expect_invalid("abc", 0, 100);
    expect_invalid("12abc", 0, 100);
    expect_invalid(" 12", 0, 100);
    expect_invalid("12 ", 0, 100);
    expect_invalid("+5", 0, 100);
    expect_invalid("-", -100, 100);
    expect_invalid("--1", -100, 100);
    expect_invalid("0x10", 0, 100);
    expect_invalid("1e3", 0, 10000);
    expect_invalid("1.5", 0, 100);
    expect_invalid("\t7", 0, 100);
    expect_invalid("٣", 0, 100); /* an Arabic-Indic digit is not a digit here */
    lib_close();
}

SL_TEST(proto_msg_int_range, 5)
{
    lib_open();
    expect_invalid("-1", 0, 100);
    expect_invalid("101", 0, 100);
    expect_invalid("4", 5, 10);
    expect_invalid("9223372036854775808", 0, INT64_MAX);   /* INT64_MAX + 1 */
    expect_invalid("-9223372036854775809", INT64_MIN, 0);  /* INT64_MIN - 1 */
    expect_invalid("18446744073709551616", 0, INT64_MAX);  /* 2^64: would wrap */
    expect_invalid("12345678901234567890", 0, INT64_MAX);  /* 20 digits */
    expect_invalid("123456789012345678901234567890", 0, INT64_MAX);
    expect_invalid("000000000000000000000000000001", 0, INT64_MAX); /* too long to bother */
    /* A huge string does not crash or wrap into range. */
    char big[300];
    memset(big, '9', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    expect_invalid(big, 0, INT64_MAX);
    lib_close();
}

SL_TEST(proto_token_ok, 5)
{
    CHECK(sl_proto_token_ok("0123456789abcdef0123456789abcdef"));
    CHECK(sl_proto_token_ok("ffffffffffffffffffffffffffffffff"));
    CHECK(!sl_proto_token_ok(NULL));
    CHECK(!sl_proto_token_ok(""));
    CHECK(!sl_proto_token_ok("0123456789abcdef0123456789abcde"));   /* 31 */
    CHECK(!sl_proto_token_ok("0123456789abcdef0123456789abcdef0")); /* 33 */
    CHECK(!sl_proto_token_ok("0123456789ABCDEF0123456789abcdef"));  /* uppercase */
    CHECK(!sl_proto_token_ok("0123456789abcdeg0123456789abcdef"));  /* g */
    CHECK(!sl_proto_token_ok("0123456789abcdef 123456789abcdef"));  /* space */
    CHECK(!sl_proto_token_ok("0123456789abcdef0123456789abcde\n")); /* newline */
    CHECK(!sl_proto_token_ok("-123456789abcdef0123456789abcdef"));
}

SL_TEST(proto_subjects, 5)
{
    static const struct {
        sl_subject s;
        const char *name;
    } subj[] = {{SL_SUBJ_WORK, "work"},     {SL_SUBJ_PROGRESS, "progress"},
                {SL_SUBJ_RELEASE, "release"}, {SL_SUBJ_MAPPED, "mapped"},
                {SL_SUBJ_SAVED, "saved"},   {SL_SUBJ_DEAD, "dead"},
                {SL_SUBJ_STATUS, "status"}, {SL_SUBJ_DONE, "done"}};
    CHECK_INT(sizeof subj / sizeof subj[0], ==, SL_SUBJ_COUNT);
    char buf[256], want[256];
    for (size_t i = 0; i < sizeof subj / sizeof subj[0]; i++) {
        sl_proto_subject(buf, sizeof buf, "default", subj[i].s);
        snprintf(want, sizeof want, "sluice.default.%s", subj[i].name);
        CHECK_STR(buf, want);
        CHECK_STR(sl_proto_subject_name(subj[i].s), subj[i].name);
    }
    sl_proto_subject(buf, sizeof buf, "job-7", SL_SUBJ_WORK);
    CHECK_STR(buf, "sluice.job-7.work");
    sl_proto_subject(buf, sizeof buf, "job-7", SL_SUBJ_MAPPED);
    CHECK_STR(buf, "sluice.job-7.mapped");
    /* A small buffer gets a truncated, terminated string, never an
     * overflow. */
    char small[10];
    memset(small, 'X', sizeof small);
    sl_proto_subject(small, sizeof small, "default", SL_SUBJ_PROGRESS);
    CHECK_STR(small, "sluice.de");
}

SL_TEST(proto_msg_headers_and_body, 5)
{
    lib_open();
    const char body[] = "[{\"id\":1}]";
    natsMsg *m = sl_msg_new("sluice.j.mapped", "_INBOX.x", body, sizeof body - 1);
    CHECK_STR(natsMsg_GetSubject(m), "sluice.j.mapped");
    CHECK_STR(natsMsg_GetReply(m), "_INBOX.x");
    CHECK_INT(natsMsg_GetDataLength(m), ==, (int)(sizeof body - 1));
    CHECK(memcmp(natsMsg_GetData(m), body, sizeof body - 1) == 0);
    sl_msg_set(m, SL_H_LEASE, "0123456789abcdef0123456789abcdef");
    sl_msg_set(m, SL_H_REASON, "bad \"json\" at byte 3");
    sl_msg_set_int(m, SL_H_ATTEMPT, 2);
    CHECK_STR(sl_msg_str(m, SL_H_LEASE), "0123456789abcdef0123456789abcdef");
    CHECK_STR(sl_msg_str(m, SL_H_REASON), "bad \"json\" at byte 3");
    CHECK_STR(sl_msg_str(m, SL_H_ATTEMPT), "2");
    /* Setting again replaces the value. */
    sl_msg_set(m, SL_H_ATTEMPT, "3");
    int64_t a = 0;
    CHECK_INT(sl_msg_int(m, SL_H_ATTEMPT, 1, 1000, &a), ==, SL_OK);
    CHECK_INT(a, ==, 3);
    natsMsg_Destroy(m);
    lib_close();
}

SL_TEST(proto_reason_is_cut_at_a_character_boundary, 5)
{
    char out[16];
    sl_proto_reason(out, sizeof out, "short");
    CHECK_STR(out, "short");
    sl_proto_reason(out, sizeof out, NULL);
    CHECK_STR(out, "");
    sl_proto_reason(out, sizeof out, "");
    CHECK_STR(out, "");
    /* Exactly size-1 bytes fit; one more is cut. */
    sl_proto_reason(out, sizeof out, "0123456789abcde");
    CHECK_STR(out, "0123456789abcde");
    sl_proto_reason(out, sizeof out, "0123456789abcdef");
    CHECK_STR(out, "0123456789abcde");

    /* "é" is two bytes, "€" three, "😀" four: a cut inside one drops the
     * whole character, never leaving half of it. */
    sl_proto_reason(out, 3, "a\u00e9"); /* 2 bytes of room for 3 */
    CHECK_STR(out, "a");
    sl_proto_reason(out, 4, "a\u00e9");
    CHECK_STR(out, "a\u00e9");
    sl_proto_reason(out, 4, "a\u20ac"); /* 3 bytes of room for 4 */
    CHECK_STR(out, "a");
    sl_proto_reason(out, 5, "a\u20ac");
    CHECK_STR(out, "a\u20ac");
    for (size_t size = 1; size <= 5; size++) {
        sl_proto_reason(out, size, "\U0001F600");
        CHECK_STR(out, size == 5 ? "\U0001F600" : "");
    }
    sl_proto_reason(out, 9, "x\U0001F600\U0001F600");
    CHECK_STR(out, "x\U0001F600");

    /* A long reason, as the protocol caps it. */
    enum { NCHARS = SL_REASON_MAX }; /* twice the bytes that fit */
    char big[2 * NCHARS + 1], cut[SL_REASON_MAX + 1];
    for (size_t i = 0; i < NCHARS; i++)
        memcpy(big + 2 * i, "\u00e9", 2);
    big[2 * NCHARS] = '\0';
    sl_proto_reason(cut, sizeof cut, big);
    CHECK_INT(strlen(cut), ==, SL_REASON_MAX);   /* 1024 is even: whole é's */
    CHECK(memcmp(cut, big, SL_REASON_MAX) == 0);
    sl_proto_reason(cut, SL_REASON_MAX, big);    /* 1023 bytes of room: 511 é's */
    CHECK_INT(strlen(cut), ==, SL_REASON_MAX - 2);

    /* size 0 writes nothing. */
    out[0] = 'Z';
    sl_proto_reason(out, 0, "abc");
    CHECK(out[0] == 'Z');
}

SL_TEST(proto_reason_replaces_bytes_that_are_not_utf8, 5)
{
    char out[64];
    sl_proto_reason(out, sizeof out, "bad \xff\xfe bytes \xc3");
    CHECK_STR(out, "bad ?? bytes ?");
    sl_proto_reason(out, sizeof out, "invalid escape near '\"\\\xc3'");
    CHECK_STR(out, "invalid escape near '\"\\?'");
    sl_proto_reason(out, sizeof out, "Zo\xc3\xab \xf0\x9f\x98\x80"); /* valid: kept */
    CHECK_STR(out, "Zo\xc3\xab \xf0\x9f\x98\x80");
    sl_proto_reason(out, sizeof out, "\xed\xa0\x80 surrogate, \xc0\xaf overlong");
    CHECK_STR(out, "??? surrogate, ?? overlong");
}

SL_TEST(proto_reason_is_one_header_line, 5)
{
    char out[64];
    sl_proto_reason(out, sizeof out, "bad\r\nSluice-Chunk: 7\tx");
    CHECK_STR(out, "bad  Sluice-Chunk: 7 x");
}

/* The batch form of P.saved: what a saver appends, the fetcher reads back;
 * a malformed line is refused and skipped without losing the next one. */
SL_TEST(proto_saved_batch_lines, 5)
{
    const char *tok = "0123456789abcdef0123456789abcdef";
    sl_buf body = SL_BUF_INIT;
    sl_saved_entry in[3] = {{.chunk = 0, .count = 100, .dead = 0},
                            {.chunk = INT64_MAX, .count = INT32_MAX, .dead = 7},
                            {.chunk = 42, .count = 0, .dead = INT32_MAX}};
    for (int k = 0; k < 3; k++) {
        snprintf(in[k].token, sizeof in[k].token, "%s", tok);
        sl_proto_saved_append(&body, &in[k]);
    }
    const char *p = body.data, *end = body.data + body.len;
    for (int k = 0; k < 3; k++) {
        sl_saved_entry e;
        CHECK_INT(sl_proto_saved_next(&p, end, &e), ==, SL_OK);
        CHECK_INT(e.chunk, ==, in[k].chunk);
        CHECK_INT(e.count, ==, in[k].count);
        CHECK_INT(e.dead, ==, in[k].dead);
        CHECK_STR(e.token, tok);
    }
    CHECK(p == end);
    sl_buf_free(&body);
    /* The longest line is what a saver reserves room for. */
    sl_saved_entry widest = {.chunk = INT64_MAX, .count = INT32_MAX, .dead = INT32_MAX};
    snprintf(widest.token, sizeof widest.token, "%s", tok);
    sl_proto_saved_append(&body, &widest);
    CHECK_INT(body.len, ==, SL_SAVED_LINE_MAX);
    sl_buf_free(&body);

    static const struct {
        const char *line, *field;
    } bad[] = {
        {"1 0123456789abcdef0123456789abcdef 2\n", "fewer than 4"},
        {"1 0123456789abcdef0123456789abcdef 2 3 4\n", "dead"},
        {"-1 0123456789abcdef0123456789abcdef 2 3\n", "chunk"},
        {"x 0123456789abcdef0123456789abcdef 2 3\n", "chunk"},
        {"1 0123456789ABCDEF0123456789abcdef 2 3\n", "lease"},
        {"1 0123456789abcdef0123456789abcde 2 3\n", "lease"},
        {"1 0123456789abcdef0123456789abcdef 2147483648 3\n", "count"},
        {"1 0123456789abcdef0123456789abcdef 2  3\n", "dead"},
        {"1 0123456789abcdef0123456789abcdef 2 +3\n", "dead"},
        {"1 0123456789abcdef0123456789abcdef 2 3", "newline"},
        {"1 0123456789abcdef0123456789abcdef 2 3\r\n", "dead"},
        {"\n", "fewer than 4"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char two[256];
        snprintf(two, sizeof two, "%s5 %s 6 7\n", bad[i].line, tok);
        size_t n = strlen(two);
        if (!strchr(bad[i].line, '\n'))
            n = strlen(bad[i].line); /* no newline: the line runs to the end */
        p = two;
        end = two + n;
        sl_saved_entry e;
        CHECK_MSG(sl_proto_saved_next(&p, end, &e) == SL_EINVAL, "accepted \"%s\"", bad[i].line);
        CHECK_MSG(strstr(sl_errmsg(), bad[i].field) != NULL, "\"%s\": message %s", bad[i].line, sl_errmsg());
        if (strchr(bad[i].line, '\n')) {
            CHECK_INT(sl_proto_saved_next(&p, end, &e), ==, SL_OK);
            CHECK_INT(e.chunk, ==, 5);
            CHECK_INT(e.count, ==, 6);
            CHECK_INT(e.dead, ==, 7);
        }
        CHECK(p == end);
    }
}
