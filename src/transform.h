/* transform.h - what a mapper does to each object.
 *
 * A transform maps one JSON value of the source to zero or more JSON
 * values of the result (the built-ins to exactly one; a jq filter to as
 * many as it yields, so `select` drops objects and `.[]` splits them), or
 * refuses it with a reason (the object is then dead-lettered on its own;
 * the rest of its chunk goes on). A transform may be shared by threads. */
#ifndef SL_TRANSFORM_H
#define SL_TRANSFORM_H

#include <jansson.h>
#include <stdbool.h>

#include "status.h"

typedef struct sl_transform sl_transform;

/* Opens the transform named by spec: "fullname", "identity" or
 * "jq:FILTER". SL_EINVAL for an unknown spec or a jq program that does not
 * compile (sl_errmsg() then holds jq's own message). Free with
 * sl_transform_destroy. */
sl_status sl_transform_open(sl_transform **out, const char *spec);

/* Maps in, appending its outputs to the JSON array outs. On SL_EINVAL
 * nothing was appended and sl_errmsg() says why the object was refused. */
sl_status sl_transform_apply(const sl_transform *t, json_t *in, json_t *outs);

/* True for "fullname", which chunk.c maps with a fast path (jscan.h). */
bool sl_transform_is_fullname(const sl_transform *t);

void sl_transform_destroy(sl_transform *t);

#endif
