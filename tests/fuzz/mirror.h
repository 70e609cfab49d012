/* mirror.h - copies of the static parsing code the fuzz targets need.
 *
 * The mapper's chunk handling (mapper.c: process()) and the saver's mapped
 * body handling (saver.c: on_mapped() and object_id()) are static, inside
 * NATS callbacks that also publish. Until they are exported as pure
 * functions (tests/fuzz/README.md names the ones asked for), the targets
 * run these copies, kept statement for statement like the originals, on
 * top of the real public pieces they call (jansson with the same flags,
 * sl_transform_apply, the SQLite sink). When the exports land, each
 * mirror_* below becomes a call to the real function and this file goes. */
#ifndef SL_FUZZ_MIRROR_H
#define SL_FUZZ_MIRROR_H

#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>

#include "buf.h"
#include "proto.h"
#include "transform.h"

/* saver.c object_id(): the id of a mapped object, a non-empty string or an
 * integer written in decimal. */
static inline bool mirror_object_id(json_t *obj, const char *field, char *num, size_t numlen, const char **id)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, field) : NULL;
    if (json_is_string(v) && json_string_length(v) > 0) {
        *id = json_string_value(v);
        return true;
    }
    if (json_is_integer(v)) {
        snprintf(num, numlen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        *id = num;
        return true;
    }
    return false;
}

/* An object the transform refused (mapper.c dead_obj). */
typedef struct {
    int64_t index;
    char *reason;
    char *raw;
} mirror_dead;

/* mapper.c process(), without the NATS side: parses a chunk body, maps
 * every element, and returns the mapped body (*body, malloc'd) with its
 * count and the refused objects (*dead, *ndead; each freed with
 * mirror_dead_free). Returns false, with the reason the mapper would send
 * on P.release in why, when the body is not a JSON array. */
static inline bool mirror_map_chunk(const sl_transform *tf, const void *data, size_t len, char **body,
                                    int64_t *count, mirror_dead **dead_out, int64_t *ndead_out, char *why,
                                    size_t whylen)
{
    json_error_t err;
    json_t *in = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
    if (!in || !json_is_array(in)) {
        if (in)
            snprintf(why, whylen, "chunk body is not a JSON array");
        else
            snprintf(why, whylen, "chunk body is not JSON: %s at line %d column %d", err.text, err.line,
                     err.column);
        /* What goes on the wire: send_lease_msg passes the reason through
         * sl_proto_reason, which keeps it valid UTF-8. */
        char sent[SL_REASON_MAX + 1];
        sl_proto_reason(sent, sizeof sent, why);
        snprintf(why, whylen, "%s", sent);
        json_decref(in);
        return false;
    }
    json_t *out = json_array();
    size_t i;
    json_t *obj;
    mirror_dead *dead = NULL;
    int64_t ndead = 0;
    json_array_foreach(in, i, obj)
    {
        json_t *mapped = NULL;
        if (sl_transform_apply(tf, obj, &mapped) != SL_OK) {
            dead = sl_xrealloc(dead, (size_t)(ndead + 1) * sizeof *dead);
            dead[ndead].index = (int64_t)i;
            dead[ndead].reason = sl_xstrdup(sl_errmsg());
            dead[ndead].raw = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
            ndead++;
            continue;
        }
        json_array_append_new(out, mapped);
    }
    json_decref(in);
    *body = json_dumps(out, JSON_COMPACT);
    *count = (int64_t)json_array_size(out);
    json_decref(out);
    *dead_out = dead;
    *ndead_out = ndead;
    return true;
}

static inline void mirror_dead_free(mirror_dead *dead, int64_t ndead)
{
    for (int64_t k = 0; k < ndead; k++)
        free(dead[k].reason), free(dead[k].raw);
    free(dead);
}

#endif
