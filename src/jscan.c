/* jscan.c - the strict JSON scanner (see jscan.h for what it promises). */
#include "jscan.h"

#include <stdlib.h>
#include <string.h>

/* Deeper than this is left to jansson (its own limit is 2048). */
#define MAX_DEPTH 256
/* Objects with more keys than this are left to jansson, which finds
 * duplicates with a hash table; below it a quadratic check is cheaper. */
#define MAX_KEYS 64

typedef struct {
    const char *p, *end;
    int depth;
    /* Set when the text is not what json_dumps(JSON_COMPACT) would write
     * for the value it holds: whitespace, an escape other than \" and
     * \\, a real number (printed %.17g), -0. */
    bool noncanon;
} scanner;

static void ws(scanner *s)
{
    const char *from = s->p;
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
    if (s->p != from)
        s->noncanon = true;
}

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* At the opening quote; leaves s after the closing one. */
static bool string(scanner *s, sl_jscan_str *out)
{
    const char *p = s->p + 1;
    out->escaped = false;
    for (;;) {
        /* The common case: a run of plain ASCII. */
        while (p < s->end && (unsigned char)*p >= 0x20 && (unsigned char)*p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p >= s->end)
            return false;
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            break;
        if (c < 0x20)
            return false;
        if (c == '\\') {
            out->escaped = true;
            if (p + 1 >= s->end)
                return false;
            char e = p[1];
            if (e == 'u') {
                if (p + 6 > s->end)
                    return false;
                int v = 0;
                for (int k = 2; k < 6; k++) {
                    int h = hex(p[k]);
                    if (h < 0)
                        return false;
                    v = v * 16 + h;
                }
                /* NUL and surrogates: jansson's rules, jansson's words. */
                if (v == 0 || (v >= 0xD800 && v <= 0xDFFF))
                    return false;
                s->noncanon = true;
                p += 6;
            } else if (e == '"' || e == '\\') {
                p += 2;
            } else if (e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                s->noncanon = true;
                p += 2;
            } else
                return false;
            continue;
        }
        size_t n = sl_utf8_char(p, (size_t)(s->end - p));
        if (!n)
            return false;
        p += n;
    }
    out->p = s->p + 1;
    out->n = (size_t)(p - out->p);
    s->p = p + 1;
    return true;
}

static bool digits(scanner *s, size_t *n)
{
    const char *from = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    *n = (size_t)(s->p - from);
    return *n > 0;
}

/* JSON's number grammar, within what jansson reads without overflow. */
static bool number(scanner *s)
{
    if (s->end - s->p >= 2 && s->p[0] == '-' && s->p[1] == '0')
        s->noncanon = true;
    if (*s->p == '-')
        s->p++;
    if (s->p >= s->end)
        return false;
    size_t n;
    if (*s->p == '0') {
        s->p++;
        n = 1;
    } else if (!digits(s, &n))
        return false;
    bool real = false;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        size_t frac;
        if (!digits(s, &frac))
            return false;
        real = true;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        size_t exp;
        if (!digits(s, &exp) || exp > 2)
            return false;
        real = true;
    }
    /* json_int_t is 64 bits: 18 digits always fit. A real's integer part
     * this short cannot overflow a double whatever a 2-digit exponent. */
    if (real)
        s->noncanon = true;
    return real ? n <= 200 : n <= 18;
}

static bool literal(scanner *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n))
        return false;
    s->p += n;
    return true;
}

static bool value(scanner *s);

/* Wanted keys of an object and where their string values are. */
typedef struct {
    const char *const *names;
    sl_jscan_str *vals;
    bool *found;
    int n;
} wants;

/* At '{'; duplicate keys (jansson refuses them) and escaped keys (it would
 * take decoding to compare them) fall back. */
static bool object(scanner *s, wants *w)
{
    sl_jscan_str keys[MAX_KEYS];
    int nkeys = 0;
    if (++s->depth > MAX_DEPTH)
        return false;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        s->depth--;
        return true;
    }
    for (;;) {
        if (s->p >= s->end || *s->p != '"' || nkeys == MAX_KEYS)
            return false;
        sl_jscan_str *k = &keys[nkeys];
        if (!string(s, k) || k->escaped)
            return false;
        for (int j = 0; j < nkeys; j++)
            if (keys[j].n == k->n && !memcmp(keys[j].p, k->p, k->n))
                return false;
        nkeys++;
        ws(s);
        if (s->p >= s->end || *s->p != ':')
            return false;
        s->p++;
        ws(s);
        int want = -1;
        for (int j = 0; w && j < w->n; j++)
            if (strlen(w->names[j]) == k->n && !memcmp(w->names[j], k->p, k->n))
                want = j;
        if (want >= 0 && s->p < s->end && *s->p == '"') {
            if (!string(s, &w->vals[want]))
                return false;
            w->found[want] = true;
        } else if (!value(s))
            return false;
        ws(s);
        if (s->p >= s->end)
            return false;
        if (*s->p == '}') {
            s->p++;
            s->depth--;
            return true;
        }
        if (*s->p != ',')
            return false;
        s->p++;
        ws(s);
    }
}

static bool array(scanner *s)
{
    if (++s->depth > MAX_DEPTH)
        return false;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        s->depth--;
        return true;
    }
    for (;;) {
        if (!value(s))
            return false;
        ws(s);
        if (s->p >= s->end)
            return false;
        if (*s->p == ']') {
            s->p++;
            s->depth--;
            return true;
        }
        if (*s->p != ',')
            return false;
        s->p++;
        ws(s);
    }
}

static bool value(scanner *s)
{
    if (s->p >= s->end)
        return false;
    switch (*s->p) {
    case '{': return object(s, NULL);
    case '[': return array(s);
    case '"': {
        sl_jscan_str ignored;
        return string(s, &ignored);
    }
    case 't': return literal(s, "true", 4);
    case 'f': return literal(s, "false", 5);
    case 'n': return literal(s, "null", 4);
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9'))
            return number(s);
        return false;
    }
}

sl_jscan_result sl_jscan_objects(const char *data, size_t len, const char *id_field, sl_jscan_obj **items,
                                 size_t *count)
{
    const char *const names[] = {id_field};
    scanner s = {data, data + len, 0, false};
    sl_jscan_obj *v = NULL;
    size_t n = 0, cap = 0;
    ws(&s);
    if (s.p >= s.end || *s.p != '[')
        goto fallback;
    s.p++;
    s.depth = 1;
    ws(&s);
    bool empty = s.p < s.end && *s.p == ']';
    if (empty)
        s.p++;
    while (!empty) {
        if (n == cap) {
            cap = cap ? cap * 2 : 128;
            v = sl_xrealloc(v, cap * sizeof *v);
        }
        sl_jscan_obj *o = &v[n];
        sl_jscan_str id;
        bool found = false;
        wants w = {names, &id, &found, 1};
        s.noncanon = false;
        const char *from = s.p;
        if (s.p >= s.end || *s.p != '{' || !object(&s, &w) || s.noncanon)
            goto fallback;
        o->doc = from;
        o->doclen = (size_t)(s.p - from);
        /* A string id, as written (no escapes, not empty). An integer id
         * or none at all: jansson's path words it. */
        if (!found || id.escaped || !id.n)
            goto fallback;
        o->id = id.p;
        o->idlen = id.n;
        n++;
        ws(&s);
        if (s.p >= s.end)
            goto fallback;
        if (*s.p == ']') {
            s.p++;
            break;
        }
        if (*s.p != ',')
            goto fallback;
        s.p++;
        ws(&s);
    }
    ws(&s);
    if (s.p != s.end)
        goto fallback;
    *items = v;
    *count = n;
    return SL_JSCAN_OK;
fallback:
    free(v);
    return SL_JSCAN_FALLBACK;
}

sl_jscan_result sl_jscan_fullname(const char *data, size_t len, void (*each)(void *), void *arg, sl_buf *out,
                                  long long *count)
{
    static const char *const names[] = {"uuid", "fn", "ln"};
    scanner s = {data, data + len, 0, false};
    long long n = 0;
    ws(&s);
    if (s.p >= s.end || *s.p != '[')
        return SL_JSCAN_FALLBACK;
    s.p++;
    s.depth = 1;
    sl_buf_putc(out, '[');
    ws(&s);
    bool empty = s.p < s.end && *s.p == ']';
    if (empty)
        s.p++;
    while (!empty) {
        sl_jscan_str v[3];
        bool found[3] = {false, false, false};
        wants w = {names, v, found, 3};
        if (s.p >= s.end || *s.p != '{' || !object(&s, &w))
            return SL_JSCAN_FALLBACK;
        /* What fullname refuses (and an escaped value) goes the slow way,
         * which words the refusal. */
        for (int j = 0; j < 3; j++)
            if (!found[j] || v[j].escaped)
                return SL_JSCAN_FALLBACK;
        if (!v[0].n)
            return SL_JSCAN_FALLBACK;
        /* Unescaped, valid UTF-8 with no control character: json_dumps
         * writes such a string's bytes as they are. */
        if (n)
            sl_buf_putc(out, ',');
        sl_buf_puts(out, "{\"id\":\"");
        sl_buf_append(out, v[0].p, v[0].n);
        sl_buf_puts(out, "\",\"name\":\"");
        sl_buf_append(out, v[1].p, v[1].n);
        sl_buf_putc(out, ' ');
        sl_buf_append(out, v[2].p, v[2].n);
        sl_buf_puts(out, "\"}");
        n++;
        if (each)
            each(arg);
        ws(&s);
        if (s.p >= s.end)
            return SL_JSCAN_FALLBACK;
        if (*s.p == ']') {
            s.p++;
            break;
        }
        if (*s.p != ',')
            return SL_JSCAN_FALLBACK;
        s.p++;
        ws(&s);
    }
    ws(&s);
    if (s.p != s.end)
        return SL_JSCAN_FALLBACK;
    sl_buf_putc(out, ']');
    *count = n;
    return SL_JSCAN_OK;
}
