/* transform.c - the built-in transforms. */
#include "transform.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"

typedef sl_status (*apply_fn)(const sl_transform *t, json_t *in, json_t **out);

struct sl_transform {
    apply_fn apply;
    char *arg; /* test-abort-on: the uuid that kills the process */
};

static sl_status need_string(json_t *in, const char *key, const char **out)
{
    json_t *v = json_object_get(in, key);
    if (!v)
        return sl_fail(SL_EINVAL, "object has no \"%s\"", key);
    if (!json_is_string(v))
        return sl_fail(SL_EINVAL, "\"%s\" is not a string", key);
    *out = json_string_value(v);
    return SL_OK;
}

/* The reference job: {"uuid","fn","ln",...} -> {"id": uuid, "name": "fn ln"}. */
static sl_status fullname(const sl_transform *t, json_t *in, json_t **out)
{
    (void)t;
    const char *uuid, *fn, *ln;
    sl_status st;
    if (!json_is_object(in))
        return sl_fail(SL_EINVAL, "not a JSON object");
    if ((st = need_string(in, "uuid", &uuid)) || (st = need_string(in, "fn", &fn)) ||
        (st = need_string(in, "ln", &ln)))
        return st;
    if (!uuid[0])
        return sl_fail(SL_EINVAL, "\"uuid\" is empty");
    sl_buf name = SL_BUF_INIT;
    sl_buf_puts(&name, fn);
    sl_buf_putc(&name, ' ');
    sl_buf_puts(&name, ln);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(uuid));
    json_object_set_new(o, "name", json_stringn(name.data, name.len));
    sl_buf_free(&name);
    *out = o;
    return SL_OK;
}

static sl_status identity(const sl_transform *t, json_t *in, json_t **out)
{
    (void)t;
    if (!json_is_object(in))
        return sl_fail(SL_EINVAL, "not a JSON object");
    *out = json_incref(in);
    return SL_OK;
}

/* For tests of poison chunks: fullname, except that the object whose
 * uuid is the argument crashes the mapper (as a real bug would), every
 * time it is seen. Never useful outside a test. */
static sl_status abort_on(const sl_transform *t, json_t *in, json_t **out)
{
    const char *uuid = json_string_value(json_object_get(in, "uuid"));
    if (uuid && !strcmp(uuid, t->arg))
        abort();
    return fullname(t, in, out);
}

#define ABORT_ON "test-abort-on:"

sl_status sl_transform_open(sl_transform **out, const char *spec)
{
    apply_fn fn = NULL;
    const char *arg = "";
    if (!strcmp(spec, "fullname"))
        fn = fullname;
    else if (!strcmp(spec, "identity"))
        fn = identity;
    else if (!strncmp(spec, ABORT_ON, strlen(ABORT_ON)) && spec[strlen(ABORT_ON)]) {
        fn = abort_on;
        arg = spec + strlen(ABORT_ON);
    } else
        return sl_fail(SL_EINVAL, "--transform: unknown transform \"%s\" (known: fullname, identity)", spec);
    sl_transform *t = sl_xcalloc(1, sizeof *t);
    t->apply = fn;
    t->arg = sl_xstrdup(arg);
    *out = t;
    return SL_OK;
}

sl_status sl_transform_apply(const sl_transform *t, json_t *in, json_t **out)
{
    return t->apply(t, in, out);
}

void sl_transform_destroy(sl_transform *t)
{
    if (!t)
        return;
    free(t->arg);
    free(t);
}
