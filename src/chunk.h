/* chunk.h - what mappers and savers do with chunk bodies, apart from NATS.
 *
 * A mapper turns a source chunk (a JSON array of objects) into a mapped
 * chunk, setting aside the objects its transform refuses; a saver reads the
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

/* Maps the source chunk data[0..len) with tf. On SL_OK: *out is the mapped
 * chunk, a compact JSON array of *count objects (free()); *dead holds the
 * *ndead refused objects (sl_chunk_dead_free). each(arg), if not NULL, runs
 * after every object (a mapper keeps its lease alive there). SL_EINVAL when
 * data is not a JSON array; why (whylen > 0) then says so, as valid UTF-8. */
sl_status sl_chunk_map(const sl_transform *tf, const void *data, size_t len, void (*each)(void *), void *arg,
                       char **out, int64_t *count, sl_chunk_dead **dead, int64_t *ndead, char *why,
                       size_t whylen);

void sl_chunk_dead_free(sl_chunk_dead *dead, int64_t ndead); /* accepts NULL */

/* The id of a mapped object under `field`: a non-empty string, or an
 * integer written in decimal into num. False when there is none. *id
 * points into obj or num. */
bool sl_chunk_object_id(json_t *obj, const char *field, char *num, size_t numlen, const char **id);

/* Writes the mapped chunk arr (a JSON array) to sink in one transaction,
 * as a saver does: each object with an id under `field` upserted as its
 * compact JSON, each one without dead-lettered (stage "saver", its index),
 * then the chunk's record (attempt), then commit. On SL_OK, *saved and
 * *dead count them. Otherwise nothing is committed (rolled back) and
 * sl_errmsg() says why. bench/limit calls this too, so the benchmark's
 * lower bound does exactly the saver's work. */
sl_status sl_chunk_save(sl_sink *sink, const char *field, int64_t chunk, int64_t attempt, json_t *arr,
                        int64_t *saved, int64_t *dead);

#endif
