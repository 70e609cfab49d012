/* fuzz_mapped.c - a P.mapped body as a saver gets it (untrusted: anybody
 * who may publish on P.mapped sends it).
 *
 * Runs the saver's parse (saver.c on_mapped: jansson with
 * JSON_REJECT_DUPLICATES, refuse a non-array) and its transaction
 * (save_chunk: id extraction, json_dumps of each element, upsert or saver
 * dead letter) against the real SQLite sink, in memory. Checks:
 *   - a body that is not a JSON array is refused with a message;
 *   - every element is either upserted or dead-lettered;
 *   - the transaction always commits: nothing in a body can make the sink
 *     fail (which would leave the chunk unconfirmed forever);
 *   - an integer id is stored as its decimal text. */
#include "fuzz.h"
#include "chunk.h"
#include "sink.h"

static sl_sink *sink;
static unsigned runs;

/* Opens a fresh in-memory sink, and every 1000 inputs starts over, so the
 * database does not grow without end over a long run. */
static void fresh_sink(void)
{
    if (sink && ++runs % 1000)
        return;
    sl_sink_destroy(sink);
    sink = NULL;
    FZ_CHECK(sl_sink_open(&sink, &(sl_sink_opts){.uri = "sqlite::memory:", .table = "objects"}) == SL_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fresh_sink();
    json_error_t err;
    json_t *arr = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_array(arr)) {
        char why[300];
        snprintf(why, sizeof why, "%s", arr ? "body is not a JSON array" : err.text);
        FZ_CHECK(why[0] != '\0');
        json_decref(arr);
        return 0;
    }
    /* save_chunk(), chunk 7, attempt 1. */
    int64_t chunk = 7, saved = 0, dead = 0;
    size_t i;
    json_t *obj;
    char num[32];
    FZ_CHECK(sl_sink_begin(sink) == SL_OK);
    json_array_foreach(arr, i, obj)
    {
        const char *id;
        if (!sl_chunk_object_id(obj, "id", num, sizeof num, &id)) {
            char *raw = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
            FZ_CHECK(raw != NULL);
            FZ_CHECK(sl_sink_dead(sink, chunk, "saver", (int64_t)i, "mapped object has no \"id\" string or integer",
                                  raw, strlen(raw)) == SL_OK);
            free(raw);
            dead++;
            continue;
        }
        FZ_CHECK(id[0] != '\0');
        json_t *v = json_object_get(obj, "id");
        if (json_is_integer(v)) {
            char want[32];
            snprintf(want, sizeof want, "%lld", (long long)json_integer_value(v));
            FZ_CHECK(strcmp(id, want) == 0);
        }
        char *text = json_dumps(obj, JSON_COMPACT);
        /* The saver takes strlen(text) unchecked: a NULL here would crash it. */
        FZ_CHECK(text != NULL);
        FZ_CHECK(sl_sink_put(sink, id, text, strlen(text), chunk) == SL_OK);
        free(text);
        saved++;
    }
    FZ_CHECK(saved + dead == (int64_t)json_array_size(arr));
    FZ_CHECK(sl_sink_chunk(sink, chunk, saved, 1) == SL_OK);
    FZ_CHECK(sl_sink_commit(sink) == SL_OK);
    json_decref(arr);
    return 0;
}
