/* test_transform.c - the built-in transforms, object by object. */
#include "test.h"

#include <jansson.h>

#include "transform.h"

static sl_transform *open_t(const char *spec)
{
    sl_transform *t = NULL;
    sl_status st = sl_transform_open(&t, spec);
    CHECK_MSG(st == SL_OK, "sl_transform_open(%s): %s", spec, sl_errmsg());
    CHECK(t != NULL);
    return t;
}

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &err);
    CHECK_MSG(j != NULL, "bad test JSON %s: %s", text, err.text);
    return j;
}

/* Applies t to the JSON text and returns the compact result, malloc'd. */
static char *apply_ok(const sl_transform *t, const char *text)
{
    json_t *in = parse(text), *out = NULL;
    sl_status st = sl_transform_apply(t, in, &out);
    CHECK_MSG(st == SL_OK, "%s refused: %s", text, sl_errmsg());
    CHECK(out != NULL);
    char *s = json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY);
    CHECK(s != NULL);
    json_decref(out);
    json_decref(in);
    return s;
}

/* Expects the object to be refused with a reason that contains `why`. */
static void apply_refused(const sl_transform *t, const char *text, const char *why)
{
    json_t *in = parse(text);
    json_t *out = (json_t *)(void *)&out; /* a marker that must survive */
    json_t *const marker = out;
    sl_status st = sl_transform_apply(t, in, &out);
    CHECK_MSG(st == SL_EINVAL, "%s accepted (status %d)", text, (int)st);
    CHECK_MSG(out == marker, "%s: out-param written on failure", text);
    CHECK_MSG(strstr(sl_errmsg(), why) != NULL, "%s: reason \"%s\" lacks \"%s\"", text,
              sl_errmsg(), why);
    /* The input is the caller's, untouched (null, true and false are
     * jansson singletons without a count). */
    if (!json_is_null(in) && !json_is_boolean(in))
        CHECK_INT(in->refcount, ==, 1);
    json_decref(in);
}

SL_TEST(transform_fullname_maps_the_reference_object, 5)
{
    sl_transform *t = open_t("fullname");
    char *s = apply_ok(t, "{\"uuid\":\"u\",\"fn\":\"Zo\u00eb\",\"ln\":\"O'Brien\",\"friends\":[]}");
    CHECK_STR(s, "{\"id\":\"u\",\"name\":\"Zo\u00eb O'Brien\"}");
    free(s);

    /* Other fields are dropped, whatever they are; key order of the input
     * does not matter. */
    s = apply_ok(t, "{\"friends\":[\"a\",\"b\"],\"ln\":\"Lovelace\",\"extra\":{\"x\":1},"
                    "\"fn\":\"Ada\",\"uuid\":\"7c9e6679-7425-40de-944b-e07fc1f90ae7\"}");
    CHECK_STR(s, "{\"id\":\"7c9e6679-7425-40de-944b-e07fc1f90ae7\",\"name\":\"Ada Lovelace\"}");
    free(s);

    /* Characters JSON must escape come out escaped, and back in one piece. */
    s = apply_ok(t, "{\"uuid\":\"q\\\"1\",\"fn\":\"A\\\\B\",\"ln\":\"\\u65e5\\u672c\"}");
    CHECK_STR(s, "{\"id\":\"q\\\"1\",\"name\":\"A\\\\B \u65e5\u672c\"}");
    free(s);
    sl_transform_destroy(t);
}

SL_TEST(transform_fullname_result_is_a_new_object, 5)
{
    sl_transform *t = open_t("fullname");
    json_t *in = parse("{\"uuid\":\"u1\",\"fn\":\"A\",\"ln\":\"B\"}"), *out = NULL;
    CHECK_INT(sl_transform_apply(t, in, &out), ==, SL_OK);
    CHECK(out != in);
    CHECK_INT(out->refcount, ==, 1);
    CHECK_INT(in->refcount, ==, 1);
    /* The input is not modified. */
    CHECK_INT(json_object_size(in), ==, 3);
    CHECK_STR(json_string_value(json_object_get(in, "uuid")), "u1");
    CHECK_INT(json_object_size(out), ==, 2);
    json_decref(in);
    /* The result does not depend on the input staying alive. */
    CHECK_STR(json_string_value(json_object_get(out, "id")), "u1");
    CHECK_STR(json_string_value(json_object_get(out, "name")), "A B");
    json_decref(out);
    sl_transform_destroy(t);
}

SL_TEST(transform_fullname_refuses_bad_objects, 5)
{
    sl_transform *t = open_t("fullname");
    apply_refused(t, "[1,2]", "object");
    apply_refused(t, "\"just a string\"", "object");
    apply_refused(t, "42", "object");
    apply_refused(t, "null", "object");
    apply_refused(t, "true", "object");
    apply_refused(t, "{\"fn\":\"A\",\"ln\":\"B\"}", "uuid");
    apply_refused(t, "{\"uuid\":\"u\",\"ln\":\"B\"}", "fn");
    apply_refused(t, "{\"uuid\":\"u\",\"fn\":\"A\"}", "ln");
    apply_refused(t, "{\"uuid\":7,\"fn\":\"A\",\"ln\":\"B\"}", "uuid");
    apply_refused(t, "{\"uuid\":null,\"fn\":\"A\",\"ln\":\"B\"}", "uuid");
    apply_refused(t, "{\"uuid\":\"u\",\"fn\":[\"A\"],\"ln\":\"B\"}", "fn");
    apply_refused(t, "{\"uuid\":\"u\",\"fn\":\"A\",\"ln\":{}}", "ln");
    apply_refused(t, "{\"uuid\":\"\",\"fn\":\"A\",\"ln\":\"B\"}", "uuid");
    apply_refused(t, "{}", "uuid");
    sl_transform_destroy(t);
}

SL_TEST(transform_identity_returns_the_same_object, 5)
{
    sl_transform *t = open_t("identity");
    json_t *in = parse("{\"anything\":[1,2,{\"x\":null}]}"), *out = NULL;
    CHECK_INT(sl_transform_apply(t, in, &out), ==, SL_OK);
    CHECK(out == in);
    CHECK_INT(in->refcount, ==, 2); /* a new reference for the caller */
    json_decref(out);
    CHECK_INT(in->refcount, ==, 1);
    json_decref(in);
    /* Objects only: a chunk's elements must be objects. */
    apply_refused(t, "[1]", "object");
    apply_refused(t, "3", "object");
    sl_transform_destroy(t);
}

SL_TEST(transform_unknown_spec_refused, 5)
{
    static const char *bad[] = {"", "nonsense", "FullName", "fullname ", "identity2", "full"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_transform *t = (sl_transform *)(void *)&bad; /* marker */
        sl_transform *const marker = t;
        CHECK_MSG(sl_transform_open(&t, bad[i]) == SL_EINVAL, "spec \"%s\" accepted", bad[i]);
        CHECK(t == marker);
        CHECK_MSG(strstr(sl_errmsg(), bad[i]) != NULL, "message does not name \"%s\": %s", bad[i],
                  sl_errmsg());
    }
    sl_transform_destroy(NULL); /* accepts NULL */
}
