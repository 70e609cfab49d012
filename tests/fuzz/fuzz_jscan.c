/* fuzz_jscan.c - the fast paths of jscan.c against jansson.
 *
 * Whatever the input, when a fast path answers OK its answer must be the
 * one the slow path (jansson with JSON_REJECT_DUPLICATES) gives:
 *   - sl_jscan_fullname: the input parses as an array whose every element
 *     fullname accepts, and the output is byte for byte json_dumps of the
 *     mapped array (JSON_COMPACT), with the same count;
 *   - sl_jscan_fullname_lines: every line of the input that is not blank
 *     parses as an object fullname accepts, and the output is byte for
 *     byte json_dumps of the mapped objects, in order, as an array;
 *   - sl_jscan_objects: the input parses as an array of objects, each with
 *     a non-empty string under "id" equal to the item's id, and each item's
 *     doc is byte for byte json_dumps(object, JSON_COMPACT).
 * FALLBACK is always allowed: it only costs time. */
#include "fuzz.h"
#include "jscan.h"
#include "transform.h"

#include <jansson.h>

static sl_transform *fullname;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    FZ_CHECK(sl_transform_open(&fullname, "fullname") == SL_OK);
    return 0;
}

/* A fast fullname's answer against jansson's: the whole input as one
 * array, or (lines) each line that is not blank as one object. */
static void check_fullname(const char *data, size_t size, bool lines)
{
    sl_buf fast = SL_BUF_INIT;
    long long n = -1;
    if ((lines ? sl_jscan_fullname_lines : sl_jscan_fullname)(data, size, NULL, NULL, &fast, &n) != SL_JSCAN_OK) {
        sl_buf_free(&fast);
        return;
    }
    json_t *outs = json_array();
    if (!lines) {
        json_t *in = json_loadb(data, size, JSON_REJECT_DUPLICATES, NULL);
        FZ_CHECK(json_is_array(in));
        size_t i;
        json_t *obj;
        json_array_foreach(in, i, obj) FZ_CHECK(sl_transform_apply(fullname, obj, outs) == SL_OK);
        json_decref(in);
    }
    for (size_t i = 0; lines && i < size;) {
        const char *nl = memchr(data + i, '\n', size - i);
        size_t e = nl ? (size_t)(nl - data) : size, j = i;
        while (j < e && (data[j] == ' ' || data[j] == '\t' || data[j] == '\r'))
            j++;
        if (j < e) {
            json_t *obj = json_loadb(data + i, e - i, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
            FZ_CHECK(json_is_object(obj));
            FZ_CHECK(sl_transform_apply(fullname, obj, outs) == SL_OK);
            json_decref(obj);
        }
        i = e + 1;
    }
    FZ_CHECK((long long)json_array_size(outs) == n);
    char *slow = json_dumps(outs, JSON_COMPACT);
    FZ_CHECK(slow && strlen(slow) == fast.len && !memcmp(slow, fast.data, fast.len));
    free(slow);
    json_decref(outs);
    sl_buf_free(&fast);
}

static void check_objects(const char *data, size_t size)
{
    sl_jscan_obj *items = NULL;
    size_t n = 0;
    if (sl_jscan_objects(data, size, "id", &items, &n) != SL_JSCAN_OK)
        return;
    json_t *in = json_loadb(data, size, JSON_REJECT_DUPLICATES, NULL);
    FZ_CHECK(json_is_array(in) && json_array_size(in) == n);
    for (size_t i = 0; i < n; i++) {
        json_t *obj = json_array_get(in, i);
        FZ_CHECK(json_is_object(obj));
        json_t *id = json_object_get(obj, "id");
        FZ_CHECK(json_is_string(id) && json_string_length(id) == items[i].idlen &&
                 !memcmp(json_string_value(id), items[i].id, items[i].idlen));
        char *doc = json_dumps(obj, JSON_COMPACT);
        FZ_CHECK(doc && strlen(doc) == items[i].doclen && !memcmp(doc, items[i].doc, items[i].doclen));
        free(doc);
    }
    json_decref(in);
    free(items);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_fullname((const char *)data, size, false);
    check_fullname((const char *)data, size, true);
    check_objects((const char *)data, size);
    return 0;
}
