/* bench/sink.c - how fast each sink takes the reference data set.
 *
 * 100,000 generated users, mapped by the fullname transform (sl_chunk_map,
 * as a mapper does), written through the sink API in 1000 chunks of 100 -
 * begin, 100 puts, the chunk record, commit - into:
 *   sqlite    a fresh SQLite file (synchronous=FULL, as the saver runs it)
 *   postgres  a throwaway local cluster (tests/pg.c) with fsync on, once
 *             with each batch method of sink_pg.c (SLUICE_PG_BATCH):
 *             values (multi-row INSERT) and copy (COPY + INSERT ... SELECT)
 * Three runs of each, each into new tables; prints rows/s per run and the
 * median, and writes every run to bench/results/sink.csv
 * (sink,method,run,rows,seconds,rows_per_s).
 *
 * `--fsync-off` adds the same PostgreSQL runs against a second cluster with
 * fsync=off, labelled so: not durable, for comparison only.
 *
 * Run: make bench-sink (from the repository's root). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "chunk.h"
#include "db.h"
#include "pg.h"
#include "sink.h"
#include "source_gen.h"
#include "transform.h"

#define CHUNKS 1000
#define PER_CHUNK 100
#define RUNS 3

typedef struct {
    char *ids[PER_CHUNK], *docs[PER_CHUNK];
    int n;
} mapped;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench-sink: %s: %s\n", what, msg);
    exit(1);
}

/* The data set, mapped once, outside the timing. */
static mapped *prepare(void)
{
    mapped *m = sl_xcalloc(CHUNKS, sizeof *m);
    sl_transform *tf = NULL;
    if (sl_transform_open(&tf, "fullname"))
        die("transform", sl_errmsg());
    sl_buf src = SL_BUF_INIT;
    for (int c = 0; c < CHUNKS; c++) {
        sl_buf_reset(&src);
        sl_gen_users(1, c, (int64_t)c * PER_CHUNK, PER_CHUNK, &src);
        char *out = NULL, why[256];
        int64_t count = 0, ndead = 0;
        sl_chunk_dead *dead = NULL;
        if (sl_chunk_map(tf, src.data, src.len, NULL, 0, NULL, NULL, &out, &count, &dead, &ndead, why, sizeof why))
            die("map", why);
        json_t *arr = json_loads(out, 0, NULL);
        size_t i;
        json_t *o;
        json_array_foreach(arr, i, o)
        {
            m[c].ids[i] = sl_xstrdup(json_string_value(json_object_get(o, "id")));
            m[c].docs[i] = json_dumps(o, JSON_COMPACT);
        }
        m[c].n = (int)json_array_size(arr);
        json_decref(arr);
        free(out);
        sl_chunk_dead_free(dead, ndead);
    }
    sl_buf_free(&src);
    sl_transform_destroy(tf);
    return m;
}

static double run_once(const mapped *m, const char *uri, const char *table)
{
    sl_sink *s = NULL;
    if (sl_sink_open(&s, &(sl_sink_opts){.uri = uri, .table = table}))
        die("open", sl_errmsg());
    double t0 = now_s();
    for (int c = 0; c < CHUNKS; c++) {
        if (sl_sink_begin(s))
            die("begin", sl_errmsg());
        for (int i = 0; i < m[c].n; i++)
            if (sl_sink_put(s, m[c].ids[i], m[c].docs[i], strlen(m[c].docs[i]), c))
                die("put", sl_errmsg());
        if (sl_sink_chunk(s, c, m[c].n, 1) || sl_sink_commit(s))
            die("commit", sl_errmsg());
    }
    double secs = now_s() - t0;
    sl_sink_destroy(s);
    return secs;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v)
{
    qsort(v, RUNS, sizeof v[0], cmp_d);
    return v[RUNS / 2];
}

static double one(FILE *csv, const mapped *m, const char *sink, const char *method, const char *uri,
                  const char *table, int run)
{
    double secs = run_once(m, uri, table);
    double rate = CHUNKS * PER_CHUNK / secs;
    fprintf(csv, "%s,%s,%d,%d,%.3f,%.0f\n", sink, method, run + 1, CHUNKS * PER_CHUNK, secs, rate);
    fflush(csv);
    printf("%-8s %-22s run %d: %8.0f rows/s (%.2f s)\n", sink, method, run + 1, rate, secs);
    return rate;
}

/* PostgreSQL: the two methods take turns, run by run, so that a change in
 * the machine's load (it is shared) falls on both alike; each run writes
 * new tables. */
static void pg_series(FILE *csv, const mapped *m, const char *uri, const char *suffix)
{
    const char *methods[] = {"copy", "values"};
    double rate[2][RUNS];
    for (int r = 0; r < RUNS; r++)
        for (int k = 0; k < 2; k++) {
            char label[64], table[64];
            snprintf(label, sizeof label, "%s%s", methods[k], suffix);
            snprintf(table, sizeof table, "bench_%s_%d", methods[k], r);
            setenv("SLUICE_PG_BATCH", methods[k], 1);
            rate[k][r] = one(csv, m, "postgres", label, uri, table, r);
        }
    unsetenv("SLUICE_PG_BATCH");
    for (int k = 0; k < 2; k++)
        printf("postgres %s%s median: %.0f rows/s\n", methods[k], suffix, median(rate[k]));
}

int main(int argc, char **argv)
{
    sl_db_init(); /* as sluice's main does */
    int fsync_off = argc > 1 && !strcmp(argv[1], "--fsync-off");
    char tmp[] = "/tmp/sluice-bench.XXXXXX", err[1024];
    if (!mkdtemp(tmp))
        die("mkdtemp", tmp);
    FILE *csv = fopen("bench/results/sink.csv", "w");
    if (!csv)
        die("open", "bench/results/sink.csv (run from the repository's root)");
    fprintf(csv, "sink,method,run,rows,seconds,rows_per_s\n");
    mapped *m = prepare();

    double rate[RUNS];
    for (int r = 0; r < RUNS; r++) {
        char uri[600];
        snprintf(uri, sizeof uri, "sqlite:%s/bench-%d.db", tmp, r);
        rate[r] = one(csv, m, "sqlite", "upsert", uri, "objects", r);
    }
    printf("sqlite upsert median: %.0f rows/s\n", median(rate));

    int rc = 0;
    for (int pass = 0; pass < 1 + fsync_off; pass++) {
        sl_pgc *pg = NULL;
        if (sl_pgc_start(&pg, tmp, pass == 0, err, sizeof err)) {
            fprintf(stderr, "bench-sink: PostgreSQL: %s\n", err);
            rc = 1;
            break;
        }
        pg_series(csv, m, sl_pgc_uri(pg), pass ? " (fsync=off)" : "");
        sl_pgc_destroy(pg);
    }
    fclose(csv);
    for (int c = 0; c < CHUNKS; c++)
        for (int i = 0; i < m[c].n; i++) {
            free(m[c].ids[i]);
            free(m[c].docs[i]);
        }
    free(m);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "bench-sink: could not remove %s\n", tmp);
    printf("wrote bench/results/sink.csv\n");
    return rc;
}
