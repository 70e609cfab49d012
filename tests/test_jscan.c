/* test_jscan.c - the fast paths against jansson: the same bytes out where
 * they answer, a fall back to jansson wherever there is doubt. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "jscan.h"
#include "source_gen.h"
#include "test.h"
#include "transform.h"

/* fullname through jansson, as chunk.c's slow path does it. */
static char *slow_fullname(const char *data, size_t len, long long *n)
{
    sl_transform *tf = NULL;
    CHECK(sl_transform_open(&tf, "fullname") == SL_OK);
    json_t *in = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    CHECK(json_is_array(in));
    json_t *outs = json_array(), *obj;
    size_t i;
    json_array_foreach(in, i, obj) CHECK(sl_transform_apply(tf, obj, outs) == SL_OK);
    *n = (long long)json_array_size(outs);
    char *s = json_dumps(outs, JSON_COMPACT);
    json_decref(outs);
    json_decref(in);
    sl_transform_destroy(tf);
    return s;
}

/* fullname over a line-framed body: the lines that are not blank, as one
 * array, through the slow path; NULL if one of them is not JSON. */
static char *slow_fullname_lines(const char *body, long long *n)
{
    sl_buf arr = SL_BUF_INIT;
    sl_buf_putc(&arr, '[');
    int objects = 0;
    for (const char *p = body; *p;) {
        size_t len = strcspn(p, "\n");
        if (strspn(p, " \t\r") < len) {
            if (objects++)
                sl_buf_putc(&arr, ',');
            sl_buf_append(&arr, p, len);
        }
        p += len + (p[len] == '\n');
    }
    sl_buf_putc(&arr, ']');
    char *want = slow_fullname(arr.data, arr.len, n);
    sl_buf_free(&arr);
    return want;
}

SL_TEST(jscan_fullname_equals_jansson_on_the_generator, 20)
{
    sl_buf chunk = SL_BUF_INIT, fast = SL_BUF_INIT;
    for (int64_t c = 0; c < 200; c++) {
        sl_buf_reset(&chunk);
        sl_buf_reset(&fast);
        int64_t len = c == 199 ? 7 : 100;
        sl_gen_users(3, c, c * 100, len, &chunk);
        long long n = -1, want_n = -1;
        CHECK_MSG(sl_jscan_fullname(chunk.data, chunk.len, NULL, NULL, &fast, &n) == SL_JSCAN_OK,
                  "chunk %lld fell back", (long long)c);
        char *want = slow_fullname(chunk.data, chunk.len, &want_n);
        CHECK_INT(n, ==, want_n);
        CHECK_STR(fast.data, want);
        free(want);
    }
    sl_buf_free(&chunk);
    sl_buf_free(&fast);
}

/* The fast fullname of text (an array, or line-framed), checked against
 * the slow path where it answers. */
static sl_jscan_result fast_fullname(const char *text, bool lines)
{
    sl_buf out = SL_BUF_INIT;
    long long n;
    sl_jscan_result r =
        (lines ? sl_jscan_fullname_lines : sl_jscan_fullname)(text, strlen(text), NULL, NULL, &out, &n);
    if (r == SL_JSCAN_OK) {
        long long want_n;
        char *want = lines ? slow_fullname_lines(text, &want_n) : slow_fullname(text, strlen(text), &want_n);
        CHECK_STR(out.data, want);
        CHECK_INT(n, ==, want_n);
        free(want);
    }
    sl_buf_free(&out);
    return r;
}

SL_TEST(jscan_fullname_falls_back_on_doubt, 5)
{
    /* Handled: spacing, other members of any kind, empty array. */
    CHECK_INT(fast_fullname(" [ {\"uuid\":\"u\",\"fn\":\"\",\"ln\":\"L\",\"x\":[1,2.5e-3,true,null,{\"y\":\"\\n\"}]} ] ",
                            false),
              ==, SL_JSCAN_OK);
    CHECK_INT(fast_fullname("[]", false), ==, SL_JSCAN_OK);
    /* Invalid JSON, or what jansson refuses, or fullname refuses. */
    const char *fb[] = {
        "", "[", "[{}", "{}", "[1]", "[{\"uuid\":\"u\",\"fn\":\"a\"}]",          /* no ln */
        "[{\"uuid\":\"\",\"fn\":\"a\",\"ln\":\"b\"}]",                          /* empty uuid */
        "[{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\",\"fn\":\"c\"}]",            /* duplicate key */
        "[{\"uuid\":\"u\",\"fn\":\"a\\u00e9\",\"ln\":\"b\"}]",                  /* escaped value */
        "[{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\",\"x\":\"\\u0000\"}]",       /* NUL */
        "[{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\",\"x\":\"\\ud800\"}]",       /* lone surrogate */
        "[{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\",\"x\":12345678901234567890}]", /* beyond int64 */
        "[{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\",\"x\":1e400}]",             /* overflows */
        "[{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\",\"x\":01}]",                 /* leading zero */
        "[{\"uuid\":\"u\",\"fn\":\"\xc0\xaf\",\"ln\":\"b\"}]",                   /* overlong UTF-8 */
        "[{\"uuid\":\"u\",\"fn\":\"a\tb\",\"ln\":\"b\"}]",                       /* raw control char */
        "[{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\"}] x",                        /* trailing data */
        "[{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\"},]",                         /* trailing comma */
    };
    for (size_t i = 0; i < sizeof fb / sizeof fb[0]; i++)
        CHECK_MSG(fast_fullname(fb[i], false) == SL_JSCAN_FALLBACK, "accepted: %s", fb[i]);
    /* Nesting deeper than the scanner goes is jansson's to judge. */
    sl_buf deep = SL_BUF_INIT;
    sl_buf_puts(&deep, "[{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\",\"x\":");
    for (int i = 0; i < 300; i++)
        sl_buf_putc(&deep, '[');
    for (int i = 0; i < 300; i++)
        sl_buf_putc(&deep, ']');
    sl_buf_puts(&deep, "}]");
    CHECK_INT(fast_fullname(deep.data, false), ==, SL_JSCAN_FALLBACK);
    sl_buf_free(&deep);
}

SL_TEST(jscan_fullname_lines_equals_jansson_on_the_generator, 20)
{
    /* The generator's users one per line, as a file source frames them,
     * with the blank lines, CRs and spacing a file may hold. */
    static const char *const seps[] = {"\n", "\n\n", "\r\n", "  \n\t\n", " \r\n"};
    sl_buf chunk = SL_BUF_INIT, body = SL_BUF_INIT;
    for (int64_t c = 0; c < 50; c++) {
        sl_buf_reset(&chunk);
        sl_buf_reset(&body);
        sl_gen_users(3, c, c * 100, c == 49 ? 1 : 100, &chunk);
        json_t *users = json_loadb(chunk.data, chunk.len, 0, NULL);
        CHECK(json_is_array(users));
        size_t i;
        json_t *u;
        json_array_foreach(users, i, u)
        {
            char *line = json_dumps(u, JSON_COMPACT);
            sl_buf_puts(&body, i % 3 ? "" : " ");
            sl_buf_puts(&body, line);
            sl_buf_puts(&body, seps[(i + (size_t)c) % 5]);
            free(line);
        }
        json_decref(users);
        if (c % 2)
            body.data[--body.len] = '\0'; /* no newline after the last */
        CHECK_MSG(fast_fullname(body.data, true) == SL_JSCAN_OK, "chunk %lld fell back", (long long)c);
    }
    CHECK_INT(fast_fullname("", true), ==, SL_JSCAN_OK);
    CHECK_INT(fast_fullname("\n \r\n\t\n", true), ==, SL_JSCAN_OK);
    sl_buf_free(&chunk);
    sl_buf_free(&body);
}

SL_TEST(jscan_fullname_lines_falls_back_on_doubt, 5)
{
    /* Each line must be one object fullname takes, and nothing else. */
    const char *fb[] = {
        "{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\"}{\"uuid\":\"v\",\"fn\":\"a\",\"ln\":\"b\"}\n", /* two */
        "{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\"},\n",                                     /* a comma */
        "{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\"}\n42\n",                                    /* a scalar */
        "[{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\"}]\n",                                    /* an array */
        "{\"uuid\":\"u\",\"fn\":\"a\"}\n",                                                   /* no ln */
        "{\"uuid\":\"u\",\"fn\":\"a\\u00e9\",\"ln\":\"b\"}\n",                              /* escaped */
        "{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\",\"fn\":\"c\"}\n",                        /* duplicate */
        "{\"uuid\":\"u\",\"fn\":\"a\",\n\"ln\":\"b\"}\n",                                     /* split */
        "{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\"}\f\n",                                    /* not JSON space */
        "{\"uuid\":\"u\",\"fn\":\"a\",\"ln\":\"b\"}\n{nope\n",                                 /* not JSON */
    };
    for (size_t i = 0; i < sizeof fb / sizeof fb[0]; i++)
        CHECK_MSG(fast_fullname(fb[i], true) == SL_JSCAN_FALLBACK, "accepted: %s", fb[i]);
}

static sl_jscan_result objects_of(const char *text, size_t want_n)
{
    sl_jscan_obj *items = NULL;
    size_t n = 0;
    sl_jscan_result r = sl_jscan_objects(text, strlen(text), "id", &items, &n);
    if (r == SL_JSCAN_OK) {
        CHECK_INT(n, ==, want_n);
        json_t *in = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
        CHECK(json_is_array(in));
        for (size_t i = 0; i < n; i++) {
            char *doc = json_dumps(json_array_get(in, i), JSON_COMPACT);
            CHECK_INT(strlen(doc), ==, items[i].doclen);
            CHECK(!memcmp(doc, items[i].doc, items[i].doclen));
            const char *id = json_string_value(json_object_get(json_array_get(in, i), "id"));
            CHECK(id && strlen(id) == items[i].idlen && !memcmp(id, items[i].id, items[i].idlen));
            free(doc);
        }
        json_decref(in);
    }
    free(items);
    return r;
}

SL_TEST(jscan_objects_stores_only_canonical_docs, 5)
{
    CHECK_INT(objects_of("[{\"id\":\"a\",\"n\":-5,\"v\":[true,null,{\"q\":\"x\\\"y\\\\z\"}]},{\"id\":\"b\"}]", 2), ==,
              SL_JSCAN_OK);
    CHECK_INT(objects_of(" [ {\"id\":\"a\"} ,\n{\"id\":\"b\"} ] ", 2), ==, SL_JSCAN_OK); /* space between: fine */
    CHECK_INT(objects_of("[]", 0), ==, SL_JSCAN_OK);
    const char *fb[] = {
        "[{\"id\": \"a\"}]",            /* space inside: json_dumps would not write it */
        "[{\"id\":\"a\",\"x\":1.5}]",   /* a real: printed %.17g */
        "[{\"id\":\"a\",\"x\":-0}]",    /* -0 is printed 0 */
        "[{\"id\":\"a\",\"x\":\"\\/\"}]", /* an escape json_dumps does not write */
        "[{\"id\":\"a\",\"x\":\"\\u00e9\"}]",
        "[{\"id\":7}]",                 /* integer id: jansson's path */
        "[{\"id\":\"\"}]", "[{\"x\":1}]", "[1]", "[{\"id\":\"a\",\"id\":\"b\"}]", "nope",
    };
    for (size_t i = 0; i < sizeof fb / sizeof fb[0]; i++)
        CHECK_MSG(objects_of(fb[i], 0) == SL_JSCAN_FALLBACK, "accepted: %s", fb[i]);
}

/* Strings are scanned 8 bytes at a time: a byte that needs a look (a
 * quote, a backslash, a control character, a byte of a multi-byte or
 * invalid sequence) is found at every offset of a word and in the tail
 * after the last whole word, and the verdict is jansson's. */
SL_TEST(jscan_strings_word_at_a_time, 10)
{
    static const struct {
        const char *bytes;
        bool valid; /* as JSON string content */
        bool fast;  /* and stored as received (json_dumps writes it so) */
    } specials[] = {
        {"\\\"", true, true}, {"\\\\", true, true}, {"\\n", true, false}, {"\x1f", false, false},
        {"\x7f", true, true}, {"\xc3\xa9", true, true}, {"\xe2\x82\xac", true, true}, {"\xff", false, false},
        {"\xc3", false, false}, {"\"", false, false},
    };
    for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++)
        for (int len = 0; len <= 20; len++)
            for (int at = 0; at <= len; at++) {
                sl_buf t = SL_BUF_INIT;
                sl_buf_puts(&t, "[{\"id\":\"a\",\"s\":\"");
                for (int i = 0; i < len; i++) {
                    if (i == at)
                        sl_buf_puts(&t, specials[k].bytes);
                    sl_buf_putc(&t, (char)('a' + i % 26));
                }
                if (at == len)
                    sl_buf_puts(&t, specials[k].bytes);
                sl_buf_puts(&t, "\"}]");
                json_t *j = json_loads(t.data, JSON_REJECT_DUPLICATES, NULL);
                CHECK_MSG((j != NULL) == specials[k].valid, "jansson and the test disagree: %s", t.data);
                sl_jscan_obj *items = NULL;
                size_t n = 0;
                sl_jscan_result r = sl_jscan_objects(t.data, t.len, "id", &items, &n);
                /* Invalid text never passes; valid text passes or is left
                 * to jansson (an escape json_dumps would not write). */
                if (!specials[k].valid)
                    CHECK_MSG(r == SL_JSCAN_FALLBACK, "accepted invalid: %s", t.data);
                if (specials[k].fast)
                    CHECK_MSG(r == SL_JSCAN_OK, "left to jansson: %s", t.data);
                else if (r == SL_JSCAN_OK) {
                    char *doc = json_dumps(json_array_get(j, 0), JSON_COMPACT);
                    CHECK_MSG(n == 1 && items[0].doclen == strlen(doc) && !memcmp(doc, items[0].doc, items[0].doclen),
                              "stored differently: %s", t.data);
                    free(doc);
                }
                free(items);
                json_decref(j);
                sl_buf_free(&t);
            }
}
