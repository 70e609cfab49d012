/* jscan.h - a strict JSON scanner for the hot path, without a tree.
 *
 * The mapper's work on the reference job is mostly parsing: jansson builds
 * a tree of every user's friends only for the transform to read three
 * strings. The scanner validates a JSON text in one pass and hands back
 * where things are, allocating nothing.
 *
 * It is conservative by design: it answers "valid, and here is what you
 * asked for" only for input jansson (with JSON_REJECT_DUPLICATES) accepts
 * with exactly that meaning, and SL_JSCAN_FALLBACK for everything else --
 * invalid JSON, but also valid JSON it does not handle simply (escapes in
 * keys, \u0000 and surrogates, integers beyond 18 digits, huge exponents,
 * deep nesting, objects with many keys). The caller then takes the jansson
 * path, which decides and words the error. tests/fuzz/fuzz_jscan.c checks
 * both paths agree byte for byte. */
#ifndef SL_JSCAN_H
#define SL_JSCAN_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

typedef enum { SL_JSCAN_OK, SL_JSCAN_FALLBACK } sl_jscan_result;

/* A string value in the text: its bytes between the quotes, and whether
 * they hold escapes (if not, they are the string itself, valid UTF-8). */
typedef struct {
    const char *p;
    size_t n;
    bool escaped;
} sl_jscan_str;

/* fullname over a whole chunk: data[0..len) must be a JSON array of
 * objects, each with string "uuid" (non-empty), "fn" and "ln" free of
 * escapes. Appends the mapped array, byte for byte what json_dumps
 * (JSON_COMPACT) makes of the transform's results, to out, and sets *count.
 * each(arg), if not NULL, runs after every object. On FALLBACK out may hold
 * a partial result: the caller resets it. */
sl_jscan_result sl_jscan_fullname(const char *data, size_t len, void (*each)(void *), void *arg, sl_buf *out,
                                  long long *count);

/* The same over a line-framed body (a file source's chunk, Sluice-Unit
 * line or element): every line that is not blank (spaces, tabs, CRs) must
 * be one such object, and the output is what chunk.c's slow path makes of
 * the lines, one mapped object per line. */
sl_jscan_result sl_jscan_fullname_lines(const char *data, size_t len, void (*each)(void *), void *arg, sl_buf *out,
                                        long long *count);

/* A mapped object as a saver stores it: its key and its JSON text. */
typedef struct {
    const char *id; /* not NUL-terminated */
    size_t idlen;
    const char *doc;
    size_t doclen;
} sl_jscan_obj;

/* The saver's side: data[0..len) must be a JSON array of objects, each
 * written exactly as json_dumps(JSON_COMPACT) writes it (so its bytes can be
 * stored as they are), each with a non-empty unescaped string under
 * id_field. On OK *items (free()) points into data, *count of them. */
sl_jscan_result sl_jscan_objects(const char *data, size_t len, const char *id_field, sl_jscan_obj **items,
                                 size_t *count);

#endif
