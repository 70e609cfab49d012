/* source.h - where the fetcher's data comes from.
 *
 * A source knows how many objects and chunks it holds and can produce any
 * chunk i again on demand, as a JSON array of objects. That is what lets the
 * fetcher hold no data, only the ledger: a chunk whose lease expired is
 * simply produced again. */
#ifndef SL_SOURCE_H
#define SL_SOURCE_H

#include <stdint.h>

#include "buf.h"
#include "status.h"

typedef struct sl_source sl_source;

/* Opens the source named by uri (today "gen:users") holding `objects`
 * objects in chunks of `chunk_size` (the last chunk may be short). On
 * success *out is set; the caller frees it with sl_source_destroy. */
sl_status sl_source_open(sl_source **out, const char *uri, int64_t objects,
                         int64_t chunk_size);

int64_t sl_source_objects(const sl_source *src);
int64_t sl_source_chunks(const sl_source *src);
int64_t sl_source_chunk_size(const sl_source *src);
const char *sl_source_uri(const sl_source *src);

/* Number of objects in chunk idx (chunk_size, or fewer for the last). */
int64_t sl_source_chunk_len(const sl_source *src, int64_t idx);

/* Appends chunk idx, a JSON array, to out. idx must be < sl_source_chunks. */
sl_status sl_source_chunk(sl_source *src, int64_t idx, sl_buf *out);

void sl_source_destroy(sl_source *src); /* accepts NULL */

#endif
