/* fuzz_chunk.c - a chunk body as the mapper gets it in a P.work reply
 * (untrusted: anybody who can answer on the mapper's inbox sends it).
 *
 * Runs the mapper's parse-and-transform (sl_chunk_map, as mapper.c does)
 * with both built-in transforms, and checks:
 *   - a body that is not a JSON array gives a reason, never a result; the
 *     reason goes out as the Sluice-Reason header of P.release, so it must
 *     hold no CR or LF (nats.c's natsMsgHeader_Set does not refuse them:
 *     they would forge header lines) and must be valid UTF-8 (the fetcher
 *     puts it in its status JSON, where jansson refuses anything else);
 *   - every element ends either mapped or dead-lettered, never both or
 *     neither (PROTOCOL.md §7.2);
 *   - a dead letter always has its raw bytes and a reason;
 *   - the mapped body is a JSON array the saver accepts, with that count,
 *     and with fullname every element has an id the saver can store, so
 *     a good chunk is never turned into saver-side dead letters.
 * Every input is also read line-framed (Sluice-Unit: line), as a file
 * source's chunk is: that never fails as a whole, every non-blank line
 * ends mapped or dead-lettered, and a dead line's reason names its
 * number. */
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

static void one(const sl_transform *tf, bool is_fullname, const uint8_t *data, size_t size)
{
    char *body = NULL, why[300] = "";
    int64_t count = -1, ndead = -1;
    sl_chunk_dead *dead = NULL;
    if (sl_chunk_map(tf, data, size, NULL, 0, NULL, NULL, &body, &count, &dead, &ndead, why, sizeof why) != SL_OK) {
        FZ_CHECK(why[0] != '\0');
        FZ_CHECK(strncmp(why, "chunk body is not", 17) == 0);
        FZ_CHECK(!strpbrk(why, "\r\n"));
        FZ_CHECK(fz_utf8_valid(why, strlen(why)));
        return;
    }
    /* Every element accounted for exactly once. */
    json_t *in = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    FZ_CHECK(json_is_array(in));
    FZ_CHECK(count + ndead == (int64_t)json_array_size(in));
    for (int64_t k = 0; k < ndead; k++) {
        FZ_CHECK(dead[k].raw != NULL);
        FZ_CHECK(dead[k].reason != NULL && dead[k].reason[0] != '\0');
        FZ_CHECK(!strpbrk(dead[k].reason, "\r\n") && fz_utf8_valid(dead[k].reason, strlen(dead[k].reason)));
        FZ_CHECK(dead[k].index >= 0 && dead[k].index < (int64_t)json_array_size(in));
        FZ_CHECK(k == 0 || dead[k].index > dead[k - 1].index);
        /* The raw bytes are the element, re-serialised. */
        json_t *back = json_loads(dead[k].raw, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        FZ_CHECK(back != NULL);
        FZ_CHECK(json_equal(back, json_array_get(in, (size_t)dead[k].index)));
        json_decref(back);
    }
    /* The result is what a saver parses (saver.c on_mapped). */
    FZ_CHECK(body != NULL);
    json_t *out = json_loads(body, JSON_REJECT_DUPLICATES, NULL);
    FZ_CHECK(json_is_array(out));
    FZ_CHECK((int64_t)json_array_size(out) == count);
    size_t i;
    json_t *obj;
    json_array_foreach(out, i, obj)
    {
        char num[32];
        const char *id = NULL;
        if (is_fullname) {
            FZ_CHECK(sl_chunk_object_id(obj, "id", num, sizeof num, &id));
            FZ_CHECK(json_is_string(json_object_get(obj, "name")));
        }
        char *text = json_dumps(obj, JSON_COMPACT);
        FZ_CHECK(text != NULL);
        free(text);
    }
    json_decref(out);
    json_decref(in);
    free(body);
    sl_chunk_dead_free(dead, ndead);
}

/* The same body, line-framed: line k is line 7+k. */
static void lines(const sl_transform *tf, const uint8_t *data, size_t size)
{
    char *body = NULL, why[300] = "";
    int64_t count = -1, ndead = -1;
    sl_chunk_dead *dead = NULL;
    FZ_CHECK(sl_chunk_map(tf, data, size, "line", 7, NULL, NULL, &body, &count, &dead, &ndead, why, sizeof why) ==
             SL_OK);
    int64_t objects = 0;
    for (size_t i = 0; i < size;) {
        const uint8_t *nl = memchr(data + i, '\n', size - i);
        size_t e = nl ? (size_t)(nl - data) : size;
        size_t j = i;
        while (j < e && (data[j] == ' ' || data[j] == '\t' || data[j] == '\r'))
            j++;
        objects += j < e;
        i = e + 1;
    }
    FZ_CHECK(count + ndead == objects);
    for (int64_t k = 0; k < ndead; k++) {
        FZ_CHECK(dead[k].raw != NULL);
        FZ_CHECK(strncmp(dead[k].reason, "line ", 5) == 0);
        FZ_CHECK(!strpbrk(dead[k].reason, "\r\n") && fz_utf8_valid(dead[k].reason, strlen(dead[k].reason)));
        FZ_CHECK(dead[k].index >= 0 && dead[k].index < objects);
        FZ_CHECK(k == 0 || dead[k].index > dead[k - 1].index);
    }
    json_t *out = json_loads(body, JSON_REJECT_DUPLICATES, NULL);
    FZ_CHECK(json_is_array(out) && (int64_t)json_array_size(out) == count);
    json_decref(out);
    free(body);
    sl_chunk_dead_free(dead, ndead);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(fullname, true, data, size);
    one(identity, false, data, size);
    lines(fullname, data, size);
    lines(identity, data, size);
    return 0;
}
