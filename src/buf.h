/* buf.h - a growable byte buffer, the one way sluice builds messages.
 *
 * An sl_buf owns its bytes; sl_buf_free releases them. The data is always
 * NUL-terminated past len, so it can be handed to C string functions.
 * Running out of memory aborts (as Redis's zmalloc does): every caller would
 * otherwise have to invent a recovery that does not exist. */
#ifndef SL_BUF_H
#define SL_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
    char *data; /* NUL-terminated; NULL until the first append */
    size_t len;
    size_t cap;
} sl_buf;

#define SL_BUF_INIT {NULL, 0, 0}

void sl_buf_reserve(sl_buf *b, size_t extra);
void sl_buf_append(sl_buf *b, const void *p, size_t n);
void sl_buf_puts(sl_buf *b, const char *s);
void sl_buf_putc(sl_buf *b, char c);
void sl_buf_printf(sl_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void sl_buf_vprintf(sl_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends s as the inside of a JSON string (quotes not included). Bytes
 * that are not valid UTF-8 become U+FFFD, so the result is always valid
 * JSON whatever came from the network. */
void sl_buf_json_escape(sl_buf *b, const char *s, size_t n);
void sl_buf_reset(sl_buf *b); /* len = 0, memory kept */

/* Length (1-4) of the valid UTF-8 character at s (n bytes available), or 0
 * if the bytes there are not one (overlong, surrogate, truncated...). */
size_t sl_utf8_char(const char *s, size_t n);
void sl_buf_free(sl_buf *b);  /* accepts a zeroed buffer */

/* malloc/calloc/realloc/strdup that abort on exhaustion. */
void *sl_xmalloc(size_t n);
void *sl_xcalloc(size_t n, size_t size);
void *sl_xrealloc(void *p, size_t n);
char *sl_xstrdup(const char *s);

#endif
