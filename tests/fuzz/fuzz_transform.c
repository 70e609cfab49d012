/* fuzz_transform.c - one source object through each built-in transform.
 *
 * The input is parsed as the mapper parses chunk elements (jansson,
 * JSON_REJECT_DUPLICATES; any JSON value, not only objects, since a chunk
 * element can be anything). Checks:
 *   - fullname accepts exactly the objects with string "uuid" (non-empty),
 *     "fn" and "ln", and maps them to {"id": uuid, "name": fn + " " + ln},
 *     byte for byte, whatever the UTF-8 inside;
 *   - identity accepts exactly the objects and returns them unchanged;
 *   - a refusal leaves a reason (sl_errmsg) and no output;
 *   - every output serialises and parses back equal. */
#include "fuzz.h"
#include "chunk.h"

static sl_transform *fullname, *identity;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    FZ_CHECK(sl_transform_open(&fullname, "fullname") == SL_OK);
    FZ_CHECK(sl_transform_open(&identity, "identity") == SL_OK);
    return 0;
}

/* Applies t expecting at most one output, into *out (a new reference). */
static sl_status apply1(const sl_transform *t, json_t *in, json_t **out)
{
    json_t *outs = json_array();
    sl_status st = sl_transform_apply(t, in, outs);
    FZ_CHECK(json_array_size(outs) == (st == SL_OK ? 1u : 0u));
    if (st == SL_OK)
        *out = json_incref(json_array_get(outs, 0));
    json_decref(outs);
    return st;
}

static void roundtrip(json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    FZ_CHECK(text != NULL);
    json_t *back = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    FZ_CHECK(back != NULL && json_equal(back, v));
    json_decref(back);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (!in)
        return 0;

    json_t *out = NULL;
    json_t *uuid = json_object_get(in, "uuid"), *fn = json_object_get(in, "fn"), *ln = json_object_get(in, "ln");
    bool want = json_is_object(in) && json_is_string(uuid) && json_string_length(uuid) > 0 &&
                json_is_string(fn) && json_is_string(ln);
    sl_status st = apply1(fullname, in, &out);
    FZ_CHECK((st == SL_OK) == want);
    if (st == SL_OK) {
        FZ_CHECK(json_is_object(out) && json_object_size(out) == 2);
        json_t *id = json_object_get(out, "id"), *name = json_object_get(out, "name");
        FZ_CHECK(json_is_string(id) && json_equal(id, uuid));
        FZ_CHECK(json_is_string(name));
        size_t fl = json_string_length(fn), ll = json_string_length(ln);
        FZ_CHECK(json_string_length(name) == fl + 1 + ll);
        const char *n = json_string_value(name);
        FZ_CHECK(memcmp(n, json_string_value(fn), fl) == 0 && n[fl] == ' ' &&
                 memcmp(n + fl + 1, json_string_value(ln), ll) == 0);
        FZ_CHECK(fz_utf8_valid(n, json_string_length(name)));
        roundtrip(out);
        json_decref(out);
    } else {
        FZ_CHECK(out == NULL);
        FZ_CHECK(sl_errmsg()[0] != '\0');
    }

    out = NULL;
    st = apply1(identity, in, &out);
    FZ_CHECK((st == SL_OK) == json_is_object(in));
    if (st == SL_OK) {
        FZ_CHECK(out == in);
        roundtrip(out);
        json_decref(out);
    } else {
        FZ_CHECK(out == NULL);
    }
    json_decref(in);
    return 0;
}
