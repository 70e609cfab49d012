/* http.h - the small HTTP endpoint of every sluice process (libmicrohttpd).
 *
 *   /metrics  Prometheus text format, from the render callback
 *   /healthz  200 "ok" while the process runs
 *   /readyz   200 "ready", or 503 with the reason, from the ready callback
 *
 * Callbacks run on libmicrohttpd's thread; they must be thread-safe. */
#ifndef SL_HTTP_H
#define SL_HTTP_H

#include <sys/socket.h>

#include "buf.h"
#include "status.h"

typedef struct sl_http sl_http;

/* Appends the /metrics body to out. */
typedef void (*sl_http_render_fn)(void *arg, sl_buf *out);
/* Returns 1 if ready; otherwise 0 and appends why to out. */
typedef int (*sl_http_ready_fn)(void *arg, sl_buf *why);

/* Listens on addr ("HOST:PORT", ":PORT" for every address; PORT 0 picks a
 * free one). ready may be NULL (always ready). On success *out is set;
 * stop it with sl_http_stop. */
sl_status sl_http_start(sl_http **out, const char *addr, sl_http_render_fn render, void *render_arg,
                        sl_http_ready_fn ready, void *ready_arg);

/* The port it listens on (the chosen one when 0 was asked). */
int sl_http_port(const sl_http *h);

void sl_http_stop(sl_http *h); /* accepts NULL */

/* Splits "HOST:PORT", "[V6]:PORT" or ":PORT" (every address, IPv4 first)
 * into a socket address, for a server of its own (mock-api). SL_EINVAL
 * with a message naming --http when it is none of those. */
sl_status sl_http_parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len);

#endif
