/* url.h - showing URLs without the secrets in them. */
#ifndef SL_URL_H
#define SL_URL_H

#include <stddef.h>

/* Copies a list of URLs (comma-separated) to out with any user:pass@ or
 * token@ part replaced by "***@": for logs and error messages. NATS server
 * lists and sink URIs (postgres://user:pass@host/db) alike. */
void sl_url_redact(const char *urls, char *out, size_t size);

#endif
