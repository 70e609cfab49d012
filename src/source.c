/* source.c - choosing a source by its URI; gen:users. */
#include "source.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "source_gen.h"
#include "url.h"

struct sl_source {
    char *uri;
    int64_t objects;
    int64_t chunk_size;
    int64_t chunks;
    void *impl;
    const sl_source_ops *ops;
};

sl_status sl_source_open(sl_source **out, const sl_source_opts *o)
{
    if (o->objects < 1 || o->chunk_size < 1)
        return sl_fail(SL_EINVAL, "--objects and --chunk-size must be positive");
    int64_t objects = 0;
    void *impl = NULL;
    const sl_source_ops *ops = NULL;
    sl_status st;
    if (!strncmp(o->uri, "gen:", 4))
        st = sl_source_gen_open(o, &objects, &impl, &ops);
    else if (!strncmp(o->uri, "file:", 5))
        st = sl_source_file_open(o, &objects, &impl, &ops);
    else if (!strncmp(o->uri, "http://", 7) || !strncmp(o->uri, "https://", 8))
        st = sl_source_http_open(o, &objects, &impl, &ops);
    else {
        char shown[512];
        sl_url_redact(o->uri, shown, sizeof shown);
        return sl_fail(SL_EINVAL, "--source: unknown source \"%s\" (known: gen:users, file:PATH, "
                                  "http://..., https://...)", shown);
    }
    if (st)
        return st;
    sl_source *s = sl_xcalloc(1, sizeof *s);
    char shown[1024];
    sl_url_redact(o->uri, shown, sizeof shown);
    s->uri = sl_xstrdup(shown); /* what status and logs show: no password */
    s->objects = objects;
    s->chunk_size = o->chunk_size;
    s->chunks = objects > 0 ? (objects + o->chunk_size - 1) / o->chunk_size : 0;
    s->impl = impl;
    s->ops = ops;
    *out = s;
    return SL_OK;
}

int64_t sl_source_objects(const sl_source *src) { return src->objects; }
int64_t sl_source_chunks(const sl_source *src) { return src->chunks; }
int64_t sl_source_chunk_size(const sl_source *src) { return src->chunk_size; }
const char *sl_source_uri(const sl_source *src) { return src->uri; }

int64_t sl_source_chunk_len(const sl_source *src, int64_t idx)
{
    SL_ASSERT(idx >= 0 && idx < src->chunks);
    int64_t first = idx * src->chunk_size;
    int64_t left = src->objects - first;
    return left < src->chunk_size ? left : src->chunk_size;
}

sl_status sl_source_chunk(sl_source *src, int64_t idx, sl_buf *out, sl_source_meta *meta)
{
    if (idx < 0 || idx >= src->chunks)
        return sl_fail(SL_EINVAL, "chunk %lld is outside 0..%lld", (long long)idx,
                       (long long)src->chunks - 1);
    sl_source_meta ignored;
    if (!meta)
        meta = &ignored;
    meta->unit = NULL;
    meta->first = 0;
    return src->ops->chunk(src->impl, idx, idx * src->chunk_size, sl_source_chunk_len(src, idx), out, meta);
}

void sl_source_destroy(sl_source *src)
{
    if (!src)
        return;
    src->ops->destroy(src->impl);
    free(src->uri);
    free(src);
}

/* gen:users[?count=N&seed=S] */

typedef struct {
    uint64_t seed;
} gen_source;

static sl_status gen_chunk(void *impl, int64_t idx, int64_t first, int64_t len, sl_buf *out,
                           sl_source_meta *meta)
{
    (void)meta;
    sl_gen_users(((gen_source *)impl)->seed, idx, first, len, out);
    return SL_OK;
}

static void gen_destroy(void *impl) { free(impl); }

static const sl_source_ops gen_ops = {gen_chunk, gen_destroy};

/* Reads a non-negative decimal integer that fills [s, end). */
static bool parse_u64(const char *s, const char *end, uint64_t *v)
{
    if (s == end || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *stop = NULL;
    unsigned long long n = strtoull(s, &stop, 10);
    if (errno || stop != end)
        return false;
    *v = n;
    return true;
}

sl_status sl_source_gen_open(const sl_source_opts *o, int64_t *objects, void **impl, const sl_source_ops **ops)
{
    const char *name = o->uri + 4;
    const char *q = strchr(name, '?');
    size_t nlen = q ? (size_t)(q - name) : strlen(name);
    if (nlen != 5 || strncmp(name, "users", 5))
        return sl_fail(SL_EINVAL, "--source: unknown generator \"%.*s\" (known: gen:users)", (int)nlen, name);
    uint64_t count = (uint64_t)o->objects, seed = 1;
    for (const char *p = q ? q + 1 : NULL; p && *p;) {
        const char *amp = strchr(p, '&');
        const char *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        bool ok = false;
        if (eq && eq - p == 5 && !strncmp(p, "count", 5))
            ok = parse_u64(eq + 1, end, &count) && count >= 1 && count <= UINT64_C(1000000000000);
        else if (eq && eq - p == 4 && !strncmp(p, "seed", 4))
            ok = parse_u64(eq + 1, end, &seed);
        if (!ok)
            return sl_fail(SL_EINVAL, "--source: \"%.*s\" in %s is not count=N (1..10^12) or seed=S",
                           (int)(end - p), p, o->uri);
        p = amp ? amp + 1 : NULL;
    }
    gen_source *g = sl_xcalloc(1, sizeof *g);
    g->seed = seed;
    *objects = (int64_t)count;
    *impl = g;
    *ops = &gen_ops;
    return SL_OK;
}
