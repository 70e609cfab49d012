/* source.c - choosing a source by its URI. */
#include "source.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "source_gen.h"

struct sl_source {
    char *uri;
    int64_t objects;
    int64_t chunk_size;
    int64_t chunks;
    uint64_t seed;
};

sl_status sl_source_open(sl_source **out, const char *uri, int64_t objects, int64_t chunk_size)
{
    if (strcmp(uri, "gen:users") != 0)
        return sl_fail(SL_EINVAL, "--source: unknown source \"%s\" (known: gen:users)", uri);
    if (objects < 1 || chunk_size < 1)
        return sl_fail(SL_EINVAL, "--objects and --chunk-size must be positive");
    sl_source *s = sl_xcalloc(1, sizeof *s);
    s->uri = sl_xstrdup(uri);
    s->objects = objects;
    s->chunk_size = chunk_size;
    s->chunks = (objects + chunk_size - 1) / chunk_size;
    s->seed = 1;
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

sl_status sl_source_chunk(sl_source *src, int64_t idx, sl_buf *out)
{
    if (idx < 0 || idx >= src->chunks)
        return sl_fail(SL_EINVAL, "chunk %lld is outside 0..%lld", (long long)idx,
                       (long long)src->chunks - 1);
    sl_gen_users(src->seed, idx, idx * src->chunk_size, sl_source_chunk_len(src, idx), out);
    return SL_OK;
}

void sl_source_destroy(sl_source *src)
{
    if (!src)
        return;
    free(src->uri);
    free(src);
}
