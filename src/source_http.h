/* source_http.h - the URL templates of http(s):// sources.
 *
 * A template is a URL with placeholders that name one page of the API:
 *
 *   {chunk}   the chunk index, from 0
 *   {page}    chunk + 1, for APIs that count pages from 1
 *   {offset}  chunk * size, the index of the page's first object
 *   {size}    the chunk size (--chunk-size)
 *
 * e.g. https://api.example.com/users?page={chunk}&size={size}. At least one
 * of {chunk}, {page} and {offset} must be there, or every chunk would be the
 * same page. The rest of the source lives in source_http.c (see source.h). */
#ifndef SL_SOURCE_HTTP_H
#define SL_SOURCE_HTTP_H

#include <stdint.h>

#include "buf.h"
#include "status.h"

/* SL_OK if tmpl is a usable template; otherwise SL_EINVAL with a message
 * naming what is wrong (an unknown or unclosed placeholder, none that
 * varies with the chunk). */
sl_status sl_http_template_check(const char *tmpl);

/* Appends the URL of chunk idx (chunk size `size`) to out. tmpl must have
 * passed sl_http_template_check. */
void sl_http_template_expand(const char *tmpl, int64_t idx, int64_t size, sl_buf *out);

#endif
