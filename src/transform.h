/* transform.h - what a mapper does to each object.
 *
 * A transform maps one JSON object to one JSON object, or refuses it with a
 * reason (the object is then dead-lettered on its own; the rest of its chunk
 * goes on). Transforms are stateless and may be shared by threads. */
#ifndef SL_TRANSFORM_H
#define SL_TRANSFORM_H

#include <jansson.h>

#include "status.h"

typedef struct sl_transform sl_transform;

/* Opens the transform named by spec ("fullname", "identity"). SL_EINVAL
 * for an unknown spec. Free with sl_transform_destroy. */
sl_status sl_transform_open(sl_transform **out, const char *spec);

/* Maps in to *out (a new reference the caller must json_decref). On
 * SL_EINVAL, sl_errmsg() says why the object was refused. */
sl_status sl_transform_apply(const sl_transform *t, json_t *in, json_t **out);

void sl_transform_destroy(sl_transform *t);

#endif
