/* chunk.h - what mappers and savers do with chunk bodies, apart from NATS.
 *
 * A mapper turns a source chunk (a JSON array of objects, or one JSON text
 * per line) into a mapped chunk, setting aside the objects its transform
 * refuses and the lines that are not JSON; a saver reads the
 * id of each mapped object. Both read bytes from the network, so both are
 * here as plain functions that the fuzz targets (tests/fuzz) call too. */
#ifndef SL_CHUNK_H
#define SL_CHUNK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sink.h"
#include "status.h"
#include "transform.h"

/* An object the transform refused: its index in the chunk, why (valid
 * UTF-8, at most SL_REASON_MAX bytes) and its JSON text. */
typedef struct {
    int64_t index;
    char *reason;
    char *raw;
} sl_chunk_dead;

/* Maps the source chunk data[0..len) with tf. unit NULL: data is a JSON
 * array of objects. Otherwise data is one JSON text per line, line k (from
 * 0) being `unit` first+k of the source (Sluice-Unit, Sluice-First); blank
 * lines are skipped but counted, and a line that is not JSON is refused
 * like an object the transform refuses, with a reason naming it ("line 17:
 * not valid JSON: ...") and the line as its raw bytes. On SL_OK: *out is
 * the mapped chunk, a compact JSON array of *count objects (free()); *dead
 * holds the *ndead refused objects (sl_chunk_dead_free), index being the
 * position among the chunk's objects. each(arg), if not NULL, runs after
 * every object (a mapper keeps its lease alive there). SL_EINVAL when an
 * array-framed body is not a JSON array; why (whylen > 0) then says so, as
 * valid UTF-8. */
sl_status sl_chunk_map(const sl_transform *tf, const void *data, size_t len, const char *unit, int64_t first,
                       void (*each)(void *), void *arg, char **out, int64_t *count, sl_chunk_dead **dead,
                       int64_t *ndead, char *why, size_t whylen);

void sl_chunk_dead_free(sl_chunk_dead *dead, int64_t ndead); /* accepts NULL */

/* The id of a mapped object under `field`: a non-empty string, or an
 * integer written in decimal into num. False when there is none. *id
 * points into obj or num. */
bool sl_chunk_object_id(json_t *obj, const char *field, char *num, size_t numlen, const char **id);

/* Writes the mapped chunk body[0..len) into the sink's open transaction, as
 * a saver does: each object with an id under `field` upserted as its
 * compact JSON, each one without dead-lettered (stage "saver", its index),
 * then the chunk's record (attempt); the caller commits (a transaction may
 * hold several chunks). Chunks as our mappers write them are stored without
 * a parse tree (jscan.h); anything else is read with jansson. SL_EINVAL,
 * with why (whylen > 0) filled and nothing written, when body is not a JSON
 * array; otherwise the sink's status, *saved and *dead counting what was
 * written. bench/limit calls this too, so the benchmark's lower bound does
 * exactly the saver's work. */
sl_status sl_chunk_write(sl_sink *sink, const char *field, int64_t chunk, int64_t attempt, const void *body,
                         size_t len, int64_t *saved, int64_t *dead, char *why, size_t whylen);

#endif
