/* chunk.c - mapping a source chunk; the id of a mapped object; saving a
 * mapped chunk in one transaction. */
#include "chunk.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "jscan.h"
#include "proto.h"

/* What sl_chunk_map collects. */
typedef struct {
    json_t *mapped;
    sl_chunk_dead *dead;
    int64_t ndead;
} result;

static void add_dead(result *r, int64_t index, const char *why, char *raw)
{
    char reason[SL_REASON_MAX + 1];
    sl_proto_reason(reason, sizeof reason, why);
    r->dead = sl_xrealloc(r->dead, (size_t)(r->ndead + 1) * sizeof *r->dead);
    r->dead[r->ndead].index = index;
    r->dead[r->ndead].reason = sl_xstrdup(reason);
    r->dead[r->ndead].raw = raw;
    r->ndead++;
}

/* Transforms obj (index in the chunk); raw, if not NULL, is its text as
 * received (taken over), else it is re-serialised for a dead letter. */
static void map_one(const sl_transform *tf, result *r, json_t *obj, int64_t index, const char *where, char *raw)
{
    if (sl_transform_apply(tf, obj, r->mapped) == SL_OK) {
        free(raw);
        return;
    }
    sl_buf why = SL_BUF_INIT;
    sl_buf_printf(&why, "%s%s", where, sl_errmsg());
    add_dead(r, index, why.data, raw ? raw : json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY));
    sl_buf_free(&why);
}

static bool blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return false;
    return true;
}

/* A line-framed body: line k is `unit` first+k; blank lines are no
 * objects but are counted, so the numbers stay those of the source. */
static void map_lines(const sl_transform *tf, const char *data, size_t len, const char *unit, int64_t first,
                      void (*each)(void *), void *arg, result *r)
{
    int64_t index = 0, k = 0;
    for (size_t i = 0; i < len; k++) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - data) : len;
        const char *line = data + i;
        size_t n = e - i;
        i = e + 1;
        if (blank(line, n))
            continue;
        char where[64];
        snprintf(where, sizeof where, "%s %" PRId64 ": ", unit, first + k);
        char *raw = sl_xmalloc(n + 1);
        memcpy(raw, line, n);
        raw[n] = '\0';
        json_error_t err;
        json_t *obj = json_loadb(line, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
        if (obj) {
            map_one(tf, r, obj, index, where, raw);
            json_decref(obj);
        } else {
            sl_buf why = SL_BUF_INIT;
            sl_buf_printf(&why, "%snot valid JSON: %s", where, err.text);
            add_dead(r, index, why.data, raw);
            sl_buf_free(&why);
        }
        index++;
        if (each)
            each(arg);
    }
}

sl_status sl_chunk_map(const sl_transform *tf, const void *data, size_t len, const char *unit, int64_t first,
                       void (*each)(void *), void *arg, char **out, int64_t *count, sl_chunk_dead **dead_out,
                       int64_t *ndead_out, char *why, size_t whylen)
{
    if (sl_transform_is_fullname(tf)) {
        /* The reference job's hot path: no tree, same bytes out. A chunk
         * with anything it does not take (a refused object, a dead letter
         * to word) goes the slow way whole. */
        sl_buf fast = SL_BUF_INIT;
        long long n = 0;
        if ((unit ? sl_jscan_fullname_lines : sl_jscan_fullname)(data, len, each, arg, &fast, &n) == SL_JSCAN_OK) {
            *out = fast.data;
            *count = n;
            *dead_out = NULL;
            *ndead_out = 0;
            return SL_OK;
        }
        sl_buf_free(&fast);
    }
    result r = {json_array(), NULL, 0};
    if (unit) {
        map_lines(tf, data, len, unit, first, each, arg, &r);
    } else {
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
            json_decref(r.mapped);
            return sl_fail(SL_EINVAL, "%s", why);
        }
        size_t i;
        json_t *obj;
        json_array_foreach(in, i, obj)
        {
            map_one(tf, &r, obj, (int64_t)i, "", NULL);
            if (each)
                each(arg);
        }
        json_decref(in);
    }
    *out = json_dumps(r.mapped, JSON_COMPACT);
    *count = (int64_t)json_array_size(r.mapped);
    json_decref(r.mapped);
    *dead_out = r.dead;
    *ndead_out = r.ndead;
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

sl_status sl_chunk_write(sl_sink *sink, const char *field, int64_t chunk, int64_t attempt, const void *body,
                         size_t len, int64_t *saved, int64_t *dead, char *why, size_t whylen)
{
    sl_status st = SL_OK;
    int64_t nsaved = 0, ndead = 0;
    sl_jscan_obj *items = NULL;
    size_t nitems = 0;
    if (sl_jscan_objects(body, len, field, &items, &nitems) == SL_JSCAN_OK) {
        sl_buf id = SL_BUF_INIT;
        for (size_t i = 0; i < nitems && !st; i++) {
            sl_buf_reset(&id);
            sl_buf_append(&id, items[i].id, items[i].idlen);
            st = sl_sink_put(sink, id.data, items[i].doc, items[i].doclen, chunk);
        }
        sl_buf_free(&id);
        free(items);
        nsaved = (int64_t)nitems;
    } else {
        json_error_t err;
        json_t *arr = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
        if (!json_is_array(arr)) {
            sl_proto_reason(why, whylen, arr ? "body is not a JSON array" : err.text);
            json_decref(arr);
            return sl_fail(SL_EINVAL, "%s", why);
        }
        size_t i;
        json_t *obj;
        char num[32];
        json_array_foreach(arr, i, obj)
        {
            const char *id;
            if (!sl_chunk_object_id(obj, field, num, sizeof num, &id)) {
                char *raw = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
                char reason[160];
                snprintf(reason, sizeof reason, "mapped object has no \"%s\" string or integer", field);
                st = sl_sink_dead(sink, chunk, "saver", (int64_t)i, reason, raw, raw ? strlen(raw) : 0);
                free(raw);
                if (st)
                    break;
                ndead++;
                continue;
            }
            char *text = json_dumps(obj, JSON_COMPACT);
            st = sl_sink_put(sink, id, text, strlen(text), chunk);
            free(text);
            if (st)
                break;
            nsaved++;
        }
        json_decref(arr);
    }
    if (!st)
        st = sl_sink_chunk(sink, chunk, nsaved, attempt);
    *saved = nsaved;
    *dead = ndead;
    return st;
}
