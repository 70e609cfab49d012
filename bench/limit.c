/* limit.c - build/bench-limit: the reference job's work with no NATS.
 *
 * The lower bound that `make bench` sets sluice against: one process, one
 * thread, the same modules the roles use, in the same order - the source
 * makes chunk i (as the fetcher does), sl_chunk_map transforms it (as a
 * mapper does), sl_chunk_write writes the mapped bytes (as a saver does,
 * with the same function) into a transaction committed every
 * --group-commit-ms (50, the saver's default), settling the sink after
 * each commit and at the end as a saver does (sl_sink_settle) - but no
 * messages, no leases and no ledger. What sluice takes beyond this is the
 * price of distributing the work.
 *
 *   bench-limit [--objects N] [--chunk-size C] [--group-commit-ms MS] [--transform SPEC]
 *               [--sink sqlite:PATH]
 *
 * The sink file (and its -wal, -shm) is removed first, so every run starts
 * from an empty database, like `sluice run --fresh` with a new sink. It
 * prints key=value lines: objects, chunks, wall_s, objects_per_s, cpu_s,
 * maxrss_kb. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "args.h"
#include "buf.h"
#include "chunk.h"
#include "clock.h"
#include "db.h"
#include "sink.h"
#include "source.h"
#include "transform.h"

static int usage(void)
{
    fprintf(stderr, "usage: bench-limit [--objects N] [--chunk-size C] [--group-commit-ms MS] [--transform SPEC]"
                    " [--sink sqlite:PATH]\n");
    return 2;
}

int main(int argc, char **argv)
{
    sl_db_init(); /* as sluice's main does */
    int64_t objects = 100000, chunk_size = 100, group_ms = 50;
    const char *transform = "fullname", *sink_uri = "sqlite:bench-limit.db";
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage();
        if (!strcmp(argv[i], "--objects") && bench_count(v, 1, &objects))
            i++;
        else if (!strcmp(argv[i], "--chunk-size") && bench_count(v, 1, &chunk_size))
            i++;
        else if (!strcmp(argv[i], "--group-commit-ms") && bench_count(v, 1, &group_ms))
            i++;
        else if (!strcmp(argv[i], "--transform"))
            transform = argv[++i];
        else if (!strcmp(argv[i], "--sink") && !strncmp(v, "sqlite:", 7) && v[7])
            sink_uri = argv[++i];
        else
            return usage();
    }
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s%s", sink_uri + 7, sfx[i]);
        if (unlink(path) != 0 && errno != ENOENT) {
            fprintf(stderr, "bench-limit: cannot remove %s: %s\n", path, strerror(errno));
            return 1;
        }
    }

    int rc = 1;
    sl_source *src = NULL;
    sl_transform *tf = NULL;
    sl_sink *sink = NULL;
    sl_buf body = SL_BUF_INIT;
    int64_t saved_total = 0;
    double t0 = sl_now_s();
    sl_source_opts so = {.uri = "gen:users", .objects = objects, .chunk_size = chunk_size};
    sl_sink_opts ko = {.uri = sink_uri, .table = "objects"};
    if (sl_source_open(&src, &so) || sl_transform_open(&tf, transform) || sl_sink_open(&sink, &ko)) {
        fprintf(stderr, "bench-limit: %s\n", sl_errmsg());
        goto cleanup;
    }
    int64_t chunks = sl_source_chunks(src);
    bool in_tx = false;
    int64_t due = 0;
    for (int64_t i = 0; i < chunks; i++) {
        char why[256];
        char *mapped = NULL;
        int64_t count = 0, ndead = 0, saved = 0, dead = 0;
        sl_chunk_dead *deadv = NULL;
        sl_buf_reset(&body);
        if (sl_source_chunk(src, i, &body, NULL) ||
            sl_chunk_map(tf, body.data, body.len, NULL, 0, NULL, NULL, &mapped, &count, &deadv, &ndead, why, sizeof why)) {
            fprintf(stderr, "bench-limit: chunk %" PRId64 ": %s\n", i, sl_errmsg());
            goto cleanup;
        }
        sl_chunk_dead_free(deadv, ndead);
        /* The saver's group commit: one transaction for what comes within
         * group_ms. */
        sl_status st = SL_OK;
        if (!in_tx) {
            st = sl_sink_begin(sink);
            in_tx = st == SL_OK;
            due = sl_now_ms() + group_ms;
        }
        if (!st)
            st = sl_chunk_write(sink, "id", i, 1, mapped, strlen(mapped), &saved, &dead, why, sizeof why);
        free(mapped);
        if (!st && (i == chunks - 1 || sl_now_ms() >= due)) {
            st = sl_sink_commit(sink);
            in_tx = false;
            /* After each commit, as the saver does: the SQLite sink's
             * merges of staged objects, when due. */
            bool more;
            if (!st)
                st = sl_sink_settle(sink, SL_SETTLE_DUE, &more, NULL);
        }
        if (st) {
            fprintf(stderr, "bench-limit: chunk %" PRId64 " not saved: %s\n", i, sl_errmsg());
            goto cleanup;
        }
        saved_total += saved;
    }
    /* The job ends with every object in the objects table, as a saver's
     * shutdown leaves it: deferred work is part of the time. */
    for (bool more = true; more;)
        if (sl_sink_settle(sink, SL_SETTLE_ALL, &more, NULL)) {
            fprintf(stderr, "bench-limit: %s\n", sl_errmsg());
            goto cleanup;
        }
    double wall = sl_now_s() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("objects=%" PRId64 "\nchunks=%" PRId64 "\nwall_s=%.3f\nobjects_per_s=%.0f\ncpu_s=%.3f\nmaxrss_kb=%ld\n",
           saved_total, chunks, wall, wall > 0 ? (double)saved_total / wall : 0.0,
           (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
               (double)ru.ru_stime.tv_usec / 1e6,
           ru.ru_maxrss);
    rc = saved_total == objects ? 0 : 1;
cleanup:
    sl_buf_free(&body);
    sl_sink_destroy(sink);
    sl_transform_destroy(tf);
    sl_source_destroy(src);
    return rc;
}
