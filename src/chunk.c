/* chunk.c - mapping a source chunk; the id of a mapped object. */
#include "chunk.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "buf.h"
#include "jscan.h"
#include "proto.h"

sl_status sl_chunk_map(const sl_transform *tf, const void *data, size_t len, void (*each)(void *), void *arg,
                       char **out, int64_t *count, sl_chunk_dead **dead_out, int64_t *ndead_out, char *why,
                       size_t whylen)
{
    if (sl_transform_is_fullname(tf)) {
        /* The reference job's hot path: no tree, same bytes out. */
        sl_buf fast = SL_BUF_INIT;
        long long n = 0;
        if (sl_jscan_fullname(data, len, each, arg, &fast, &n) == SL_JSCAN_OK) {
            *out = fast.data;
            *count = n;
            *dead_out = NULL;
            *ndead_out = 0;
            return SL_OK;
        }
        sl_buf_free(&fast);
    }
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
        if (sl_transform_apply(tf, obj, mapped_all) != SL_OK) {
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
