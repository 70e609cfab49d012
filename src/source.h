/* source.h - where the fetcher's data comes from.
 *
 * A source knows how many objects and chunks it holds and can produce any
 * chunk i again on demand. That is what lets the fetcher hold no data, only
 * the ledger: a chunk whose lease expired is simply produced again. Chunk i
 * holds objects i*C .. i*C+C-1 (C = chunk size; the last may be short).
 *
 * URIs: gen:users[?count=N&seed=S] (source_gen.c), file:PATH
 * (source_file.c), http://... and https://... (source_http.c). A source is
 * used from several threads at once (the fetcher's handlers and its
 * dead-letter reporter). */
#ifndef SL_SOURCE_H
#define SL_SOURCE_H

#include <stdint.h>

#include "buf.h"
#include "status.h"

typedef struct sl_source sl_source;

typedef struct {
    const char *uri;
    int64_t objects;    /* --objects: gen's count unless the URI gives count=;
                         * http's when the API sends no X-Total-Count */
    int64_t chunk_size;
    int64_t timeout_ms; /* http: one request */
    int64_t retries;    /* http: retries on 5xx and connection errors */
    /* http: called, from any thread, each time a request is retried;
     * NULL for none. */
    void (*on_retry)(void *arg);
    void *on_retry_arg;
} sl_source_opts;

/* How a chunk body is framed, beyond its bytes (see docs/PROTOCOL.md). */
typedef struct {
    /* NULL: the body is a JSON array of objects. Otherwise the body is one
     * JSON text per line, and its k-th line (from 0) is `unit` first+k of
     * the source ("line" for NDJSON files, "element" for JSON arrays), so
     * a mapper can name a malformed one. */
    const char *unit;
    int64_t first;
} sl_source_meta;

/* Opens the source named by o->uri. On success *out is set; the caller
 * frees it with sl_source_destroy. SL_EINVAL for a bad URI or unreadable
 * data, with a message naming it. */
sl_status sl_source_open(sl_source **out, const sl_source_opts *o);

int64_t sl_source_objects(const sl_source *src);
int64_t sl_source_chunks(const sl_source *src);
int64_t sl_source_chunk_size(const sl_source *src);
/* The URI with any password or token replaced by ***. */
const char *sl_source_uri(const sl_source *src);

/* Number of objects in chunk idx (chunk_size, or fewer for the last). */
int64_t sl_source_chunk_len(const sl_source *src, int64_t idx);

/* Appends chunk idx to out and sets *meta (meta may be NULL for callers
 * that only want the bytes). idx must be < sl_source_chunks. */
sl_status sl_source_chunk(sl_source *src, int64_t idx, sl_buf *out, sl_source_meta *meta);

void sl_source_destroy(sl_source *src); /* accepts NULL */

/* What a source implementation provides. */
typedef struct {
    /* Appends chunk idx (objects first .. first+len-1) to out. */
    sl_status (*chunk)(void *impl, int64_t idx, int64_t first, int64_t len, sl_buf *out,
                       sl_source_meta *meta);
    void (*destroy)(void *impl);
} sl_source_ops;

/* Each opens its kind of URI: sets *objects (how many the source holds),
 * *impl and *ops. */
sl_status sl_source_gen_open(const sl_source_opts *o, int64_t *objects, void **impl,
                             const sl_source_ops **ops);
sl_status sl_source_file_open(const sl_source_opts *o, int64_t *objects, void **impl,
                              const sl_source_ops **ops);
sl_status sl_source_http_open(const sl_source_opts *o, int64_t *objects, void **impl,
                              const sl_source_ops **ops);

#endif
