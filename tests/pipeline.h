/* pipeline.h - what the pipeline tests share: a plain NATS client for the
 * test itself, and the check of a sink against the generator. */
#ifndef SL_TEST_PIPELINE_H
#define SL_TEST_PIPELINE_H

#include <jansson.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "proto.h"

/* A connection of the test's own to url; fails the test if it cannot. */
natsConnection *tp_connect(const char *url);

/* Publishes subj with header pairs (key, value, ..., NULL) and a body. */
void tp_publish(natsConnection *nc, const char *subj, const char *body, ...);

/* The one chunk a saver's P.saved confirms (the batch form with a single
 * line; the test fails on any other shape). */
void tp_saved_one(natsMsg *m, sl_saved_entry *e);

/* Requests P.status of job "default" and returns the parsed answer (caller
 * json_decref's), or NULL when no fetcher answers within 1 s. */
json_t *tp_status(natsConnection *nc);

/* An integer inside the status: tp_stat(j, "chunks", "done"); b may be NULL. */
int64_t tp_stat(json_t *status, const char *a, const char *b);

/* Polls P.status until chunks.<field> >= want (timeout_ms). */
void tp_wait_chunks(natsConnection *nc, const char *field, int64_t want, int timeout_ms);

/* Checks the SQLite sink at path against the generator: exactly `objects`
 * rows, each the fullname of its user, in the chunk the user belongs to;
 * one chunk record per chunk; `dead` rows in dead_letters. */
void tp_verify_sink(const char *path, int64_t objects, int64_t chunk_size, int64_t dead);

/* The same for every chunk but `skip` (-1: none), of which nothing may be
 * in the sink (a chunk that died); returns the rows checked. */
int64_t tp_verify_sink_except(const char *path, int64_t objects, int64_t chunk_size, int64_t dead, int64_t skip);

/* Looks up the object with this id in a sink: its doc (owned by the
 * callee, valid until the next call) and chunk; 0 when it is missing. */
typedef int (*tp_row_fn)(void *arg, const char *id, const char **doc, int64_t *chunk);

/* The generator's side of every tp_verify_*: for each object of every
 * chunk but `skip` (-1: none), checks that get() finds its fullname doc
 * (byte for byte when exact, else as equal JSON: PostgreSQL's jsonb
 * rewrites the text) in the right chunk -- or, for the objects whose
 * indices are in missing[0..nmissing), that it finds nothing. Returns the
 * objects checked. */
int64_t tp_verify_rows(int64_t objects, int64_t chunk_size, int64_t skip, const int64_t *missing, size_t nmissing,
                       bool exact, tp_row_fn get, void *arg);

/* The same, where also the objects whose indices are in missing[0..n)
 * (the source's dead letters) must be absent; returns the rows checked. */
int64_t tp_verify_sink_missing(const char *path, int64_t objects, int64_t chunk_size, int64_t dead, int64_t skip,
                               const int64_t *missing, size_t nmissing);

/* Polls P.status until the integer a.b (b may be NULL) is >= want. */
void tp_wait_stat(natsConnection *nc, const char *a, const char *b, int64_t want, int timeout_ms);

/* "--<flag>=<prefix><tmpdir>/<name>", e.g. tp_flag("sink", "sqlite:",
 * "out.db"); the caller frees it. */
char *tp_flag(const char *flag, const char *prefix, const char *name);

/* GETs url (2 s timeout); returns the HTTP status (0 if no answer) and,
 * if body is not NULL, the body in *body (malloc'd, caller frees). */
long tp_http_get(const char *url, char **body);
/* The same, with the response's header lines in *headers (malloc'd, caller
 * frees) when headers is not NULL. */
long tp_http_get_headers(const char *url, char **body, char **headers);

/* The port a sluice process logged in its "http listening" line. */
int tp_http_port(th_proc *p);

/* Queries Prometheus at port for the instant vector of expr; returns the
 * "result" array (caller json_decref's), failing the test unless the
 * status is "success". */
json_t *tp_prom_query(int port, const char *expr);

/* "NATS_URL=<url>", owned by the caller (free). */
char *tp_env_url(const char *url);

#endif
