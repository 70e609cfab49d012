/* sink.c - choosing a sink by its URI and calling through its operations. */
#include "sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "url.h"

struct sl_sink {
    void *impl;
    const sl_sink_ops *ops;
};

sl_status sl_sink_open(sl_sink **out, const sl_sink_opts *o)
{
    const char *uri = o->uri;
    void *impl = NULL;
    const sl_sink_ops *ops = NULL;
    sl_status st;
    if (!strncmp(uri, "sqlite:", 7) && uri[7])
        st = sl_sink_sqlite_open(uri + 7, o, &impl, &ops);
    else if (!strncmp(uri, "ndjson:", 7) && uri[7])
        st = sl_sink_ndjson_open(uri + 7, o, &impl, &ops);
    else if ((!strncmp(uri, "postgres://", 11) && uri[11]) || (!strncmp(uri, "postgresql://", 13) && uri[13]))
        st = sl_sink_pg_open(uri, o, &impl, &ops);
    else {
        char shown[512];
        sl_url_redact(uri, shown, sizeof shown);
        return sl_fail(SL_EINVAL,
                       "--sink: unknown sink \"%s\" (known: sqlite:PATH, ndjson:PATH,"
                       " postgres://USER:PASS@HOST:PORT/DB, postgresql://...)",
                       shown);
    }
    if (st)
        return st;
    sl_sink *s = sl_xcalloc(1, sizeof *s);
    s->impl = impl;
    s->ops = ops;
    *out = s;
    return SL_OK;
}

void sl_sink_tables(const sl_sink_opts *o, char objects[SL_SINK_NAME_MAX], char chunks[SL_SINK_NAME_MAX],
                    char dead[SL_SINK_NAME_MAX])
{
    /* config.c allows only [A-Za-z_][A-Za-z0-9_]{0,62}, so quoting needs no
     * escaping; quoted, a name keeps its case and may be a keyword. */
    const char *t = o && o->table && o->table[0] ? o->table : "objects";
    SL_ASSERT(strlen(t) <= 63 && !strchr(t, '"'));
    snprintf(objects, SL_SINK_NAME_MAX, "\"%s\"", t);
    if (!strcmp(t, "objects")) {
        snprintf(chunks, SL_SINK_NAME_MAX, "\"chunks\"");
        snprintf(dead, SL_SINK_NAME_MAX, "\"dead_letters\"");
    } else {
        snprintf(chunks, SL_SINK_NAME_MAX, "\"%s_chunks\"", t);
        snprintf(dead, SL_SINK_NAME_MAX, "\"%s_dead_letters\"", t);
    }
}

sl_status sl_sink_begin(sl_sink *s) { return s->ops->begin(s->impl); }

sl_status sl_sink_put(sl_sink *s, const char *id, const char *doc, size_t doclen, int64_t chunk)
{
    return s->ops->put(s->impl, id, doc, doclen, chunk);
}

sl_status sl_sink_dead(sl_sink *s, int64_t chunk, const char *stage, int64_t object,
                       const char *reason, const void *raw, size_t rawlen)
{
    return s->ops->dead(s->impl, chunk, stage, object, reason, raw, rawlen);
}

sl_status sl_sink_chunk(sl_sink *s, int64_t chunk, int64_t count, int64_t attempt)
{
    return s->ops->chunk(s->impl, chunk, count, attempt);
}

sl_status sl_sink_commit(sl_sink *s) { return s->ops->commit(s->impl); }

void sl_sink_rollback(sl_sink *s) { s->ops->rollback(s->impl); }

sl_status sl_sink_settle(sl_sink *s, sl_settle how, bool *more, int64_t *txs)
{
    int64_t n = 0;
    *more = false;
    sl_status st = s->ops->settle ? s->ops->settle(s->impl, how, more, &n) : SL_OK;
    if (txs)
        *txs = n;
    return st;
}

void sl_sink_destroy(sl_sink *s)
{
    if (!s)
        return;
    s->ops->destroy(s->impl);
    free(s);
}
