/* status_cmd.c - `sluice status`: ask the fetcher, print the answer. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "bus.h"
#include "log.h"
#include "roles.h"

int sl_status_main(const sl_config *cfg)
{
    sl_bus *bus = NULL;
    natsMsg *reply = NULL;
    json_t *j = NULL;
    int rc = 1;
    if (sl_bus_open(&bus, cfg, "sluice-status") != SL_OK) {
        fprintf(stderr, "sluice status: %s\n", sl_errmsg());
        goto cleanup;
    }
    natsMsg *req = sl_msg_new(sl_bus_subject(bus, SL_SUBJ_STATUS), NULL, NULL, 0);
    sl_status st = sl_bus_request(bus, req, 3000, &reply);
    sl_msg_free(req);
    if (st != SL_OK) {
        fprintf(stderr, "sluice status: no fetcher answers for job %s: %s\n", cfg->job, sl_errmsg());
        goto cleanup;
    }
    json_error_t err;
    j = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, &err);
    if (!json_is_object(j)) {
        fprintf(stderr, "sluice status: the fetcher's answer is not JSON: %s\n", err.text);
        goto cleanup;
    }
    json_int_t total = json_integer_value(json_object_get(json_object_get(j, "chunks"), "total"));
    json_int_t done = json_integer_value(json_object_get(json_object_get(j, "chunks"), "done"));
    json_int_t dead = json_integer_value(json_object_get(json_object_get(j, "chunks"), "dead"));
    json_int_t saved = json_integer_value(json_object_get(json_object_get(j, "objects"), "saved"));
    json_int_t objects = json_integer_value(json_object_get(json_object_get(j, "objects"), "total"));
    double rate = json_real_value(json_object_get(j, "objects_per_s"));
    printf("job %s: %s\n", cfg->job, json_is_true(json_object_get(j, "complete")) ? "complete" : "running");
    printf("chunks: %lld total, %lld pending, %lld leased, %lld done, %lld dead\n", (long long)total,
           (long long)json_integer_value(json_object_get(json_object_get(j, "chunks"), "pending")),
           (long long)json_integer_value(json_object_get(json_object_get(j, "chunks"), "leased")),
           (long long)done, (long long)dead);
    printf("objects: %lld of %lld saved (%.1f%%), %.0f objects/s", (long long)saved, (long long)objects,
           objects ? 100.0 * (double)saved / (double)objects : 0.0, rate);
    if (rate > 0 && saved < objects)
        printf(", ETA %.0f s", (double)(objects - saved) / rate);
    printf("\nredeliveries: %lld, dead objects: %lld\n",
           (long long)json_integer_value(json_object_get(j, "redeliveries")),
           (long long)json_integer_value(json_object_get(json_object_get(j, "objects"), "dead")));
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(j, "dead_chunks"), i, d)
    {
        const char *why = json_string_value(json_object_get(d, "reason"));
        printf("dead chunk %lld: %s\n", (long long)json_integer_value(json_object_get(d, "chunk")), why ? why : "?");
    }
    rc = 0;
cleanup:
    json_decref(j);
    sl_msg_free(reply);
    sl_bus_close(bus, 0);
    return rc;
}
