/* proto.h - the wire protocol: subjects, headers, statuses (docs/PROTOCOL.md).
 *
 * Every subject is P.<name> where P = "sluice.<job>". Metadata travels in
 * NATS headers named Sluice-*; bodies are JSON. Header values are parsed
 * here and only here, with range checks, because they come from the network
 * and anybody on it may send anything. */
#ifndef SL_PROTO_H
#define SL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "buf.h"
#include "status.h"

typedef enum {
    SL_SUBJ_WORK,     /* mapper -> fetcher request: give me a chunk */
    SL_SUBJ_PROGRESS, /* mapper -> fetcher: extend my lease */
    SL_SUBJ_RELEASE,  /* mapper -> fetcher: take this chunk back */
    SL_SUBJ_MAPPED,   /* mapper -> savers (queue group): mapped objects */
    SL_SUBJ_SAVED,    /* saver -> fetcher: chunk committed */
    SL_SUBJ_DEAD,     /* any -> savers (queue group): dead letters */
    SL_SUBJ_STATUS,   /* anyone -> fetcher request: job status */
    SL_SUBJ_DONE,     /* fetcher -> all: the job finished */
    SL_SUBJ_COUNT
} sl_subject;

#define SL_SAVER_QUEUE "sluice-savers"

#define SL_H_WORKER "Sluice-Worker"
#define SL_H_STATUS "Sluice-Status"
#define SL_H_CHUNK "Sluice-Chunk"
#define SL_H_ATTEMPT "Sluice-Attempt"
#define SL_H_LEASE "Sluice-Lease"
#define SL_H_LEASE_MS "Sluice-Lease-Ms"
/* On a chunk reply, when the chunk failed before: how many times. */
#define SL_H_FAILURES "Sluice-Failures"
#define SL_H_RETRY_MS "Sluice-Retry-Ms"
#define SL_H_COUNT "Sluice-Count"
#define SL_H_DEAD "Sluice-Dead"
#define SL_H_OBJECT "Sluice-Object"
#define SL_H_REASON "Sluice-Reason"
/* On P.saved in its batch form: how many lines the body holds. */
#define SL_H_CHUNKS "Sluice-Chunks"
/* Most lines in one batch P.saved. */
#define SL_SAVED_BATCH_MAX 100000
/* On a chunk reply (and a fetcher's P.dead): the body is one JSON text per
 * line, line k being Sluice-Unit number Sluice-First+k of the source.
 * Absent: the body is a JSON array. */
#define SL_H_UNIT "Sluice-Unit"
#define SL_H_FIRST "Sluice-First"

/* Values of Sluice-Unit. */
#define SL_UNIT_LINE "line"
#define SL_UNIT_ELEMENT "element"

/* Values of Sluice-Status in a reply to P.work. */
#define SL_STATUS_CHUNK "chunk"
#define SL_STATUS_WAIT "wait"
#define SL_STATUS_DONE "done"
/* Values of Sluice-Status in a saver's answer to P.mapped. */
#define SL_STATUS_ACCEPTED "accepted" /* written into the saver's open transaction */
#define SL_STATUS_RELEASED "released" /* not written; handed back to the fetcher */

/* Longest header value sluice accepts; a lease token is 32 hex digits. */
#define SL_LEASE_LEN 32
#define SL_HDR_MAX 256

/* Longest reason (Sluice-Reason) kept; longer ones are cut. */
#define SL_REASON_MAX 1024

/* Copies reason into out (size > SL_REASON_MAX is enough), cut at
 * size-1 bytes without splitting a UTF-8 character, bytes that are not
 * valid UTF-8 replaced by '?' and control characters (CR, LF, ...) by a
 * space; NULL becomes "". */
void sl_proto_reason(char *out, size_t size, const char *reason);

/* Writes "sluice.<job>.<name>" into buf (size >= 256). */
void sl_proto_subject(char *buf, size_t size, const char *job, sl_subject s);

/* The subject's last token ("work", "mapped", ...). */
const char *sl_proto_subject_name(sl_subject s);

/* Creates a message with optional body; the caller destroys it with
 * natsMsg_Destroy. Aborts only on allocation failure. */
natsMsg *sl_msg_new(const char *subj, const char *reply, const void *data, size_t len);
void sl_msg_set(natsMsg *m, const char *key, const char *value);
/* Destroys a message, later: messages are freed in batches (see proto.c).
 * Takes m (NULL is fine); the caller must not touch it afterwards. */
void sl_msg_free(natsMsg *m);
/* Frees the messages sl_msg_free still holds; before the connection and
 * the library go away (sl_bus_close calls it). */
void sl_msg_flush(void);
void sl_msg_set_int(natsMsg *m, const char *key, int64_t value);

/* Reads header key as a decimal integer in [min, max] into *out.
 * SL_ENOTFOUND when absent, SL_EINVAL (with a message) when malformed. */
sl_status sl_msg_int(natsMsg *m, const char *key, int64_t min, int64_t max, int64_t *out);

/* The value of header key, or NULL when absent. Owned by the message. */
const char *sl_msg_str(natsMsg *m, const char *key);

/* True if s is a well-formed lease token (SL_LEASE_LEN lowercase hex). */
int sl_proto_token_ok(const char *s);

/* P.saved in its batch form: a saver confirms every chunk of one commit in
 * one message, header Sluice-Chunks: N and a body of N lines
 * "CHUNK LEASE COUNT DEAD\n" - the values of the single form's
 * Sluice-Chunk, Sluice-Lease, Sluice-Count and Sluice-Dead. */
typedef struct {
    int64_t chunk, count, dead;
    char token[SL_LEASE_LEN + 1];
} sl_saved_entry;
/* Longest line: 19 + 32 + 10 + 10 digits, 3 spaces, a newline. */
#define SL_SAVED_LINE_MAX 75
/* Appends the line for one chunk to body. */
void sl_proto_saved_append(sl_buf *body, const sl_saved_entry *e);
/* Reads the line at *p (before end) into *e and moves *p past it, also when
 * the line is malformed (SL_EINVAL, with a message naming the field). */
sl_status sl_proto_saved_next(const char **p, const char *end, sl_saved_entry *e);

#endif
