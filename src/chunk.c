/* chunk.c - mapping a source chunk; the id of a mapped object; saving a
 * mapped chunk in one transaction. */
#include "chunk.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "proto.h"

sl_status sl_chunk_map(const sl_transform *tf, const void *data, size_t len, void (*each)(void *), void *arg,
                       char **out, int64_t *count, sl_chunk_dead **dead_out, int64_t *ndead_out, char *why,
                       size_t whylen)
{
    json_error_t err;
    json_t *in = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_array(in)) {
        char text[300];
        if (in)
            snprintf(text, sizeof text, "chunk body is not a JSON array");
        else
            snprintf(text, sizeof text, "chunk body is not JSON: %s at line %d column %d", err.text, err.line,
                     err.column);
        /* jansson's text can quote the input, cut anywhere: keep it text. */
        sl_proto_reason(why, whylen, text);
        json_decref(in);
        return sl_fail(SL_EINVAL, "%s", why);
    }
    json_t *mapped_all = json_array();
    sl_chunk_dead *dead = NULL;
    int64_t ndead = 0;
    size_t i;
    json_t *obj;
    json_array_foreach(in, i, obj)
    {
        json_t *mapped = NULL;
        if (sl_transform_apply(tf, obj, &mapped) == SL_OK) {
            json_array_append_new(mapped_all, mapped);
        } else {
            char reason[SL_REASON_MAX + 1];
            sl_proto_reason(reason, sizeof reason, sl_errmsg());
            dead = sl_xrealloc(dead, (size_t)(ndead + 1) * sizeof *dead);
            dead[ndead].index = (int64_t)i;
            dead[ndead].reason = sl_xstrdup(reason);
            dead[ndead].raw = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
            ndead++;
        }
        if (each)
            each(arg);
    }
    json_decref(in);
    *out = json_dumps(mapped_all, JSON_COMPACT);
    *count = (int64_t)json_array_size(mapped_all);
    json_decref(mapped_all);
    *dead_out = dead;
    *ndead_out = ndead;
    return SL_OK;
}

void sl_chunk_dead_free(sl_chunk_dead *dead, int64_t ndead)
{
    for (int64_t k = 0; dead && k < ndead; k++)
        free(dead[k].reason), free(dead[k].raw);
    free(dead);
}

bool sl_chunk_object_id(json_t *obj, const char *field, char *num, size_t numlen, const char **id)
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

sl_status sl_chunk_save(sl_sink *sink, const char *field, int64_t chunk, int64_t attempt, json_t *arr,
                        int64_t *saved, int64_t *dead)
{
    sl_status st;
    size_t i;
    json_t *obj;
    int64_t nsaved = 0, ndead = 0;
    char num[32];
    if ((st = sl_sink_begin(sink)))
        goto fail;
    json_array_foreach(arr, i, obj)
    {
        const char *id;
        if (!sl_chunk_object_id(obj, field, num, sizeof num, &id)) {
            char *raw = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
            char why[160];
            snprintf(why, sizeof why, "mapped object has no \"%s\" string or integer", field);
            st = sl_sink_dead(sink, chunk, "saver", (int64_t)i, why, raw, raw ? strlen(raw) : 0);
            free(raw);
            if (st)
                goto fail;
            ndead++;
            continue;
        }
        char *text = json_dumps(obj, JSON_COMPACT);
        st = sl_sink_put(sink, id, text, strlen(text), chunk);
        free(text);
        if (st)
            goto fail;
        nsaved++;
    }
    if ((st = sl_sink_chunk(sink, chunk, nsaved, attempt)) || (st = sl_sink_commit(sink)))
        goto fail;
    *saved = nsaved;
    *dead = ndead;
    return SL_OK;
fail:
    sl_sink_rollback(sink);
    return st;
}
