/* jscan.c - the strict JSON scanner (see jscan.h for what it promises). */
#include "jscan.h"

#include <stdint.h>
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

/* True if none of the 8 bytes at p needs a look: each is printable ASCII
 * (0x20-0x7f) and neither '"' nor '\\'. Word-at-a-time: a byte of
 * v - 0x01..01 * k borrows (sets its top bit, with ~v's top bit clear only
 * below 0x80) exactly when some byte of v is below k - the classic "has a
 * zero byte" test, which never misses such a byte. Strings are most of a
 * chunk's bytes, and this was a quarter of a mapper's CPU byte by byte. */
static inline bool plain8(const char *p)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t v;
    memcpy(&v, p, sizeof v);
    uint64_t quote = v ^ (ones * '"'), backslash = v ^ (ones * '\\');
    uint64_t special = (v - ones * 0x20) | (quote - ones) | (backslash - ones);
    return ((special & ~v) | v) & highs ? false : true;
}

/* At the opening quote; leaves s after the closing one. */
static bool string(scanner *s, sl_jscan_str *out)
{
    const char *p = s->p + 1;
    out->escaped = false;
    for (;;) {
        /* The common case: a run of plain ASCII. */
        while (s->end - p >= 8 && plain8(p))
            p += 8;
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

/* The one loop of every container: at its opening bracket, calls one()
 * for each element (each member of an object) until `close`, allowing no
 * empty element and no trailing comma, and leaves s after `close`. */
static bool elements(scanner *s, char close, bool (*one)(scanner *, void *), void *arg)
{
    if (++s->depth > MAX_DEPTH)
        return false;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return true;
    }
    for (;;) {
        if (!one(s, arg))
            return false;
        ws(s);
        if (s->p >= s->end)
            return false;
        if (*s->p == close) {
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

/* Wanted keys of an object and where their string values are. */
typedef struct {
    const char *const *names;
    sl_jscan_str *vals;
    bool *found;
    int n;
} wants;

/* An object's members so far, and what the caller wants of them. */
typedef struct {
    sl_jscan_str keys[MAX_KEYS];
    int nkeys;
    wants *w;
} members;

/* One member. Duplicate keys (jansson refuses them) and escaped keys (it
 * would take decoding to compare them) fall back. */
static bool member(scanner *s, void *arg)
{
    members *m = arg;
    if (s->p >= s->end || *s->p != '"' || m->nkeys == MAX_KEYS)
        return false;
    sl_jscan_str *k = &m->keys[m->nkeys];
    if (!string(s, k) || k->escaped)
        return false;
    for (int j = 0; j < m->nkeys; j++)
        if (m->keys[j].n == k->n && !memcmp(m->keys[j].p, k->p, k->n))
            return false;
    m->nkeys++;
    ws(s);
    if (s->p >= s->end || *s->p != ':')
        return false;
    s->p++;
    ws(s);
    wants *w = m->w;
    int want = -1;
    for (int j = 0; w && j < w->n; j++)
        if (strlen(w->names[j]) == k->n && !memcmp(w->names[j], k->p, k->n))
            want = j;
    if (want >= 0 && s->p < s->end && *s->p == '"') {
        if (!string(s, &w->vals[want]))
            return false;
        w->found[want] = true;
        return true;
    }
    return value(s);
}

/* At '{'. */
static bool object(scanner *s, wants *w)
{
    members m = {.nkeys = 0, .w = w};
    return elements(s, '}', member, &m);
}

static bool any_value(scanner *s, void *arg)
{
    (void)arg;
    return value(s);
}

static bool value(scanner *s)
{
    if (s->p >= s->end)
        return false;
    switch (*s->p) {
    case '{': return object(s, NULL);
    case '[': return elements(s, ']', any_value, NULL);
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

/* A whole text that is one array, each element through one(). */
static bool top_array(const char *data, size_t len, bool (*one)(scanner *, void *), void *arg)
{
    scanner s = {data, data + len, 0, false};
    ws(&s);
    if (s.p >= s.end || *s.p != '[' || !elements(&s, ']', one, arg))
        return false;
    ws(&s);
    return s.p == s.end;
}

typedef struct {
    const char *id_field;
    sl_jscan_obj *v;
    size_t n, cap;
} objects_arg;

/* One mapped object, which must be exactly what json_dumps would write. */
static bool stored_object(scanner *s, void *arg)
{
    objects_arg *a = arg;
    const char *const names[] = {a->id_field};
    sl_jscan_str id;
    bool found = false;
    wants w = {names, &id, &found, 1};
    s->noncanon = false;
    const char *from = s->p;
    if (s->p >= s->end || *s->p != '{' || !object(s, &w) || s->noncanon)
        return false;
    /* A string id, as written (no escapes, not empty). An integer id or
     * none at all: jansson's path words it. */
    if (!found || id.escaped || !id.n)
        return false;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 128;
        a->v = sl_xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = (sl_jscan_obj){id.p, id.n, from, (size_t)(s->p - from)};
    return true;
}

sl_jscan_result sl_jscan_objects(const char *data, size_t len, const char *id_field, sl_jscan_obj **items,
                                 size_t *count)
{
    objects_arg a = {id_field, NULL, 0, 0};
    if (!top_array(data, len, stored_object, &a)) {
        free(a.v);
        return SL_JSCAN_FALLBACK;
    }
    *items = a.v;
    *count = a.n;
    return SL_JSCAN_OK;
}

typedef struct {
    void (*each)(void *);
    void *arg;
    sl_buf *out;
    long long n;
} fullname_arg;

/* One source object, mapped by fullname straight into the output. */
static bool fullname_object(scanner *s, void *arg)
{
    static const char *const names[] = {"uuid", "fn", "ln"};
    fullname_arg *a = arg;
    sl_jscan_str v[3];
    bool found[3] = {false, false, false};
    wants w = {names, v, found, 3};
    if (s->p >= s->end || *s->p != '{' || !object(s, &w))
        return false;
    /* What fullname refuses (and an escaped value) goes the slow way,
     * which words the refusal. */
    for (int j = 0; j < 3; j++)
        if (!found[j] || v[j].escaped)
            return false;
    if (!v[0].n)
        return false;
    /* Unescaped, valid UTF-8 with no control character: json_dumps writes
     * such a string's bytes as they are. */
    sl_buf *out = a->out;
    sl_buf_putc(out, a->n ? ',' : '[');
    sl_buf_puts(out, "{\"id\":\"");
    sl_buf_append(out, v[0].p, v[0].n);
    sl_buf_puts(out, "\",\"name\":\"");
    sl_buf_append(out, v[1].p, v[1].n);
    sl_buf_putc(out, ' ');
    sl_buf_append(out, v[2].p, v[2].n);
    sl_buf_puts(out, "\"}");
    a->n++;
    if (a->each)
        a->each(a->arg);
    return true;
}

sl_jscan_result sl_jscan_fullname(const char *data, size_t len, void (*each)(void *), void *arg, sl_buf *out,
                                  long long *count)
{
    fullname_arg a = {each, arg, out, 0};
    if (!top_array(data, len, fullname_object, &a))
        return SL_JSCAN_FALLBACK;
    sl_buf_puts(out, a.n ? "]" : "[]");
    *count = a.n;
    return SL_JSCAN_OK;
}

sl_jscan_result sl_jscan_fullname_lines(const char *data, size_t len, void (*each)(void *), void *arg, sl_buf *out,
                                        long long *count)
{
    fullname_arg a = {each, arg, out, 0};
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - data) : len;
        scanner s = {data + i, data + e, 0, false};
        i = e + 1;
        /* A line of spaces, tabs and CRs holds no object (chunk.c's
         * blank); ws skips exactly those here, as there is no '\n'. */
        ws(&s);
        if (s.p == s.end)
            continue;
        if (!fullname_object(&s, &a))
            return SL_JSCAN_FALLBACK;
        ws(&s);
        if (s.p != s.end)
            return SL_JSCAN_FALLBACK;
    }
    sl_buf_puts(out, a.n ? "]" : "[]");
    *count = a.n;
    return SL_JSCAN_OK;
}
