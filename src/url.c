/* url.c - URLs shown without their credentials. */
#include "url.h"

#include <stdio.h>
#include <string.h>

#include "buf.h"

void sl_url_redact(const char *urls, char *out, size_t size)
{
    sl_buf b = SL_BUF_INIT;
    const char *p = urls;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *scheme = NULL;
        for (const char *q = p; q + 2 < p + len; q++)
            if (q[0] == ':' && q[1] == '/' && q[2] == '/') {
                scheme = q + 3;
                break;
            }
        const char *host = scheme ? scheme : p;
        const char *at = memchr(host, '@', (size_t)(p + len - host));
        if (at) {
            sl_buf_append(&b, p, (size_t)(host - p));
            sl_buf_puts(&b, "***");
            sl_buf_append(&b, at, (size_t)(p + len - at));
        } else {
            sl_buf_append(&b, p, len);
        }
        p += len;
        if (*p == ',')
            sl_buf_putc(&b, *p++);
    }
    snprintf(out, size, "%s", b.data ? b.data : "");
    sl_buf_free(&b);
}

