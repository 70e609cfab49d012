/* test_transform.c - the built-in transforms, object by object. */
#include "test.h"

#include <jansson.h>

#include "buf.h"
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

/* Applies t to in expecting at most one output, which *out receives (a
 * new reference); on refusal the output array must have stayed empty. */
static sl_status apply1(const sl_transform *t, json_t *in, json_t **out)
{
    json_t *outs = json_array();
    sl_status st = sl_transform_apply(t, in, outs);
    CHECK_INT(json_array_size(outs), ==, st == SL_OK ? 1 : 0);
    if (st == SL_OK)
        *out = json_incref(json_array_get(outs, 0));
    json_decref(outs);
    return st;
}

/* Applies t to the JSON text and returns the compact result, malloc'd. */
static char *apply_ok(const sl_transform *t, const char *text)
{
    json_t *in = parse(text), *out = NULL;
    sl_status st = apply1(t, in, &out);
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
    sl_status st = apply1(t, in, &out);
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
    CHECK_INT(apply1(t, in, &out), ==, SL_OK);
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
    CHECK_INT(apply1(t, in, &out), ==, SL_OK);
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

/* Applies t to the JSON text; returns the outputs as one compact JSON
 * array (malloc'd), or NULL when the object was refused. */
static char *apply_all(const sl_transform *t, const char *text)
{
    json_t *in = parse(text), *outs = json_array();
    sl_status st = sl_transform_apply(t, in, outs);
    char *s = NULL;
    if (st == SL_OK)
        s = json_dumps(outs, JSON_COMPACT | JSON_ENCODE_ANY);
    else
        CHECK_INT(json_array_size(outs), ==, 0);
    json_decref(outs);
    json_decref(in);
    return s;
}

static void jq_case(const char *program, const char *in, const char *want)
{
    sl_buf spec = SL_BUF_INIT;
    sl_buf_printf(&spec, "jq:%s", program);
    sl_transform *t = open_t(spec.data);
    char *got = apply_all(t, in);
    CHECK_MSG(got != NULL, "jq %s refused %s: %s", program, in, sl_errmsg());
    CHECK_MSG(!strcmp(got, want), "jq %s on %s:\n  got  %s\n  want %s", program, in, got, want);
    free(got);
    sl_transform_destroy(t);
    sl_buf_free(&spec);
}

SL_TEST(transform_jq_filters, 5)
{
    const char *user = "{\"uuid\":\"u1\",\"fn\":\"Zo\u00eb\",\"ln\":\"O'Brien\",\"friends\":[\"a\",\"b\",\"c\"]}";
    /* projection */
    jq_case("{id: .uuid, first: .fn}", user, "[{\"id\":\"u1\",\"first\":\"Zo\u00eb\"}]");
    /* string interpolation */
    jq_case("{id: .uuid, name: \"\\(.fn) \\(.ln)\"}", user, "[{\"id\":\"u1\",\"name\":\"Zo\u00eb O'Brien\"}]");
    /* select: kept, dropped */
    jq_case("select(.friends | length > 2) | {id: .uuid}", user, "[{\"id\":\"u1\"}]");
    jq_case("select(.friends | length > 3) | {id: .uuid}", user, "[]");
    jq_case("empty", user, "[]");
    /* several outputs, in order */
    jq_case(".uuid as $u | .friends[] | {id: \"\\($u)-\\(.)\"}", user,
            "[{\"id\":\"u1-a\"},{\"id\":\"u1-b\"},{\"id\":\"u1-c\"}]");
    /* arithmetic and non-object outputs are passed on (the saver wants an id) */
    jq_case(".friends | length", user, "[3]");
    /* integers stay integers while jq's doubles hold them exactly */
    jq_case("{id: .n, m: (.n + 1)}", "{\"n\":9007199254740991}", "[{\"id\":9007199254740991,\"m\":9007199254740992}]");
    /* halt with code 0 ends the program normally after what it yielded */
    jq_case("{id: .uuid}, halt", user, "[{\"id\":\"u1\"}]");
}

SL_TEST(transform_jq_errors_refuse_the_object_with_jqs_message, 5)
{
    sl_transform *t = open_t("jq:if .fn == \"Ada\" then error(\"no Adas: \\(.uuid)\") else {id: .uuid} end");
    char *ok = apply_all(t, "{\"uuid\":\"u2\",\"fn\":\"Bo\"}");
    CHECK_STR(ok, "[{\"id\":\"u2\"}]");
    free(ok);
    CHECK(apply_all(t, "{\"uuid\":\"u3\",\"fn\":\"Ada\"}") == NULL);
    CHECK_MSG(strstr(sl_errmsg(), "no Adas: u3") != NULL, "reason: %s", sl_errmsg());
    sl_transform_destroy(t);

    /* A runtime type error: jq's own words. Outputs yielded before the
     * error are taken back: an object is mapped whole or not at all. */
    t = open_t("jq:{id: .uuid}, (.fn + 1)");
    CHECK(apply_all(t, "{\"uuid\":\"u4\",\"fn\":\"x\"}") == NULL);
    CHECK_MSG(strstr(sl_errmsg(), "cannot be added") != NULL, "reason: %s", sl_errmsg());
    sl_transform_destroy(t);

    /* halt_error: a failure with its message */
    t = open_t("jq:\"stop here\" | halt_error");
    CHECK(apply_all(t, "{\"uuid\":\"u5\"}") == NULL);
    CHECK_MSG(strstr(sl_errmsg(), "stop here") != NULL, "reason: %s", sl_errmsg());
    /* and the next object starts afresh */
    CHECK(apply_all(t, "{\"uuid\":\"u6\"}") == NULL);
    sl_transform_destroy(t);
}

SL_TEST(transform_jq_bad_program_refused_at_open, 5)
{
    static const char *bad[] = {"jq:", "jq:{", "jq:.a |||", "jq:nosuchfunction(1)", "jq:{id: .uuid"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_transform *t = NULL;
        CHECK_MSG(sl_transform_open(&t, bad[i]) == SL_EINVAL, "\"%s\" accepted", bad[i]);
        CHECK(t == NULL);
        const char *m = sl_errmsg();
        CHECK_MSG(strstr(m, bad[i][3] ? "does not compile" : "needs a program") != NULL, "%s: %s", bad[i], m);
        CHECK_MSG(strchr(m, '\n') == NULL, "%s: message spans lines: %s", bad[i], m);
    }
    sl_transform *t = NULL;
    CHECK_INT(sl_transform_open(&t, "jq:nosuchfunction(1)"), ==, SL_EINVAL);
    CHECK_MSG(strstr(sl_errmsg(), "nosuchfunction") != NULL, "%s", sl_errmsg());
}
