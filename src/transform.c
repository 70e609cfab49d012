/* transform.c - the built-in transforms and jq:FILTER. */
#include "transform.h"

#include <jq.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

typedef sl_status (*apply_fn)(const sl_transform *t, json_t *in, json_t *outs);

struct sl_transform {
    apply_fn apply;
    char *arg; /* test-abort-on: the uuid that kills the process */
    /* jq: one compiled program; jq_state is not thread-safe, hence mu. */
    jq_state *jq;
    pthread_mutex_t mu;
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
static sl_status fullname(const sl_transform *t, json_t *in, json_t *outs)
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
    json_array_append_new(outs, o);
    return SL_OK;
}

static sl_status identity(const sl_transform *t, json_t *in, json_t *outs)
{
    (void)t;
    if (!json_is_object(in))
        return sl_fail(SL_EINVAL, "not a JSON object");
    json_array_append(outs, in);
    return SL_OK;
}

/* For tests of poison chunks: fullname, except that the object whose
 * uuid is the argument crashes the mapper (as a real bug would), every
 * time it is seen. Never useful outside a test. */
static sl_status abort_on(const sl_transform *t, json_t *in, json_t *outs)
{
    const char *uuid = json_string_value(json_object_get(in, "uuid"));
    if (uuid && !strcmp(uuid, t->arg))
        abort();
    return fullname(t, in, outs);
}

/* jq's message as text: a string as it is, anything else as JSON. Consumes
 * msg. */
static void jq_text(jv msg, sl_buf *out)
{
    if (jv_get_kind(msg) == JV_KIND_STRING) {
        sl_buf_puts(out, jv_string_value(msg));
        jv_free(msg);
        return;
    }
    jv s = jv_dump_string(msg, 0);
    sl_buf_puts(out, jv_string_value(s));
    jv_free(s);
}

/* Compile errors arrive here, one call per message. */
static void jq_collect(void *arg, jv msg)
{
    sl_buf *b = arg;
    if (b->len)
        sl_buf_puts(b, "; ");
    size_t from = b->len;
    jq_text(jq_format_error(msg), b);
    /* jq quotes the program on a line of its own: keep the message one line. */
    for (size_t i = from; i < b->len; i++)
        if (b->data[i] == '\n' || b->data[i] == '\r')
            b->data[i] = ' ';
}

/* Runs the program on in (by way of its JSON text: jq has its own value
 * type) and appends every output; the first error refuses the object and
 * takes back what it had yielded. */
static sl_status jq_apply(const sl_transform *t, json_t *in, json_t *outs)
{
    char *text = json_dumps(in, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return sl_fail(SL_EINVAL, "jq: cannot serialise the object");
    jv input = jv_parse_sized(text, (int)strlen(text));
    free(text);
    if (!jv_is_valid(input)) {
        jv_free(input);
        return sl_fail(SL_EINVAL, "jq: cannot read the object");
    }
    size_t before = json_array_size(outs);
    sl_status st = SL_OK;
    sl_buf why = SL_BUF_INIT;
    pthread_mutex_t *mu = (pthread_mutex_t *)&t->mu;
    pthread_mutex_lock(mu);
    jq_start(t->jq, input, 0);
    jv r;
    while (jv_is_valid(r = jq_next(t->jq))) {
        jv s = jv_dump_string(r, 0);
        json_error_t err;
        json_t *o = json_loads(jv_string_value(s), JSON_DECODE_ANY, &err);
        jv_free(s);
        if (!o) {
            sl_buf_printf(&why, "jq output is not JSON: %s", err.text);
            break;
        }
        json_array_append_new(outs, o);
    }
    if (!why.len && jq_halted(t->jq)) {
        /* halt / halt_error: an exit code other than 0 is a failure. */
        jv code = jq_get_exit_code(t->jq);
        bool failed = jv_is_valid(code) && !(jv_get_kind(code) == JV_KIND_NUMBER && jv_number_value(code) == 0);
        jv_free(code);
        jv msg = jq_get_error_message(t->jq);
        if (failed) {
            sl_buf_puts(&why, "jq halted: ");
            if (jv_is_valid(msg))
                jq_text(msg, &why);
            else
                jv_free(msg);
        } else
            jv_free(msg);
    } else if (!why.len && jv_invalid_has_msg(jv_copy(r))) {
        sl_buf_puts(&why, "jq: ");
        jq_text(jv_invalid_get_msg(jv_copy(r)), &why);
    }
    jv_free(r);
    pthread_mutex_unlock(mu);
    if (why.len) {
        while (json_array_size(outs) > before)
            json_array_remove(outs, json_array_size(outs) - 1);
        st = sl_fail(SL_EINVAL, "%s", why.data);
    }
    sl_buf_free(&why);
    return st;
}

static sl_status jq_open(sl_transform *t, const char *program)
{
    sl_buf errs = SL_BUF_INIT;
    t->jq = jq_init();
    if (!t->jq)
        return sl_fail(SL_EIO, "jq: cannot start");
    jq_set_error_cb(t->jq, jq_collect, &errs);
    int ok = jq_compile(t->jq, program);
    jq_set_error_cb(t->jq, NULL, NULL);
    sl_status st = SL_OK;
    if (!ok)
        st = sl_fail(SL_EINVAL, "--transform: jq program does not compile: %s",
                     errs.len ? errs.data : "(jq gave no reason)");
    sl_buf_free(&errs);
    return st;
}

#define ABORT_ON "test-abort-on:"
#define JQ "jq:"

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
    } else if (!strncmp(spec, JQ, strlen(JQ))) {
        fn = jq_apply;
        arg = spec + strlen(JQ);
        if (!arg[0])
            return sl_fail(SL_EINVAL, "--transform: jq: needs a program, as in jq:'{id: .uuid}'");
    } else
        return sl_fail(SL_EINVAL, "--transform: unknown transform \"%s\" (known: fullname, identity, jq:FILTER)",
                       spec);
    sl_transform *t = sl_xcalloc(1, sizeof *t);
    t->apply = fn;
    t->arg = sl_xstrdup(arg);
    pthread_mutex_init(&t->mu, NULL);
    if (fn == jq_apply) {
        sl_status st = jq_open(t, arg);
        if (st) {
            sl_transform_destroy(t);
            return st;
        }
    }
    *out = t;
    return SL_OK;
}

sl_status sl_transform_apply(const sl_transform *t, json_t *in, json_t *outs)
{
    return t->apply(t, in, outs);
}

bool sl_transform_is_fullname(const sl_transform *t) { return t->apply == fullname; }

void sl_transform_destroy(sl_transform *t)
{
    if (!t)
        return;
    if (t->jq)
        jq_teardown(&t->jq);
    pthread_mutex_destroy(&t->mu);
    free(t->arg);
    free(t);
}
