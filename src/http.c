/* http.c - /metrics, /healthz and /readyz on libmicrohttpd. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

struct sl_http {
    struct MHD_Daemon *d;
    int port;
    sl_http_render_fn render;
    void *render_arg;
    sl_http_ready_fn ready;
    void *ready_arg;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type, sl_buf *body)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(body->len, body->data ? body->data : (void *)"",
                                                             MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ok = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *data, size_t *size, void **state)
{
    (void)version, (void)data, (void)size, (void)state;
    sl_http *h = cls;
    sl_buf body = SL_BUF_INIT;
    enum MHD_Result ok;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        sl_buf_puts(&body, "method not allowed\n");
        ok = reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", &body);
    } else if (!strcmp(url, "/metrics")) {
        h->render(h->render_arg, &body);
        ok = reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &body);
    } else if (!strcmp(url, "/healthz")) {
        sl_buf_puts(&body, "ok\n");
        ok = reply(c, MHD_HTTP_OK, "text/plain; charset=utf-8", &body);
    } else if (!strcmp(url, "/readyz")) {
        sl_buf why = SL_BUF_INIT;
        int ready = h->ready ? h->ready(h->ready_arg, &why) : 1;
        sl_buf_puts(&body, ready ? "ready" : "not ready: ");
        if (!ready && why.len)
            sl_buf_append(&body, why.data, why.len);
        sl_buf_putc(&body, '\n');
        sl_buf_free(&why);
        ok = reply(c, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", &body);
    } else {
        sl_buf_puts(&body, "not found; try /metrics, /healthz or /readyz\n");
        ok = reply(c, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", &body);
    }
    sl_buf_free(&body);
    return ok;
}

sl_status sl_http_parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return sl_fail(SL_EINVAL, "--http: \"%s\" is not HOST:PORT or :PORT", addr);
    char host[256];
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host)
        return sl_fail(SL_EINVAL, "--http: host too long in \"%s\"", addr);
    memcpy(host, addr, hl);
    host[hl] = '\0';
    /* [::1]:8080 */
    char *h = host;
    if (h[0] == '[' && hl > 1 && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    char *end = NULL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port < 0 || port > 65535)
        return sl_fail(SL_EINVAL, "--http: \"%s\" has no valid port", addr);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(h[0] ? h : NULL, colon + 1, &hints, &res);
    if (rc != 0 || !res)
        return sl_fail(SL_EINVAL, "--http: cannot resolve \"%s\": %s", addr, gai_strerror(rc));
    /* Prefer IPv4 for an empty host: every address, as people expect. */
    struct addrinfo *pick = res;
    for (struct addrinfo *a = res; a && !h[0]; a = a->ai_next)
        if (a->ai_family == AF_INET)
            pick = a;
    memcpy(ss, pick->ai_addr, pick->ai_addrlen);
    *len = pick->ai_addrlen;
    freeaddrinfo(res);
    return SL_OK;
}

sl_status sl_http_start(sl_http **out, const char *addr, sl_http_render_fn render, void *render_arg,
                        sl_http_ready_fn ready, void *ready_arg)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    sl_status st = sl_http_parse_addr(addr, &ss, &len);
    if (st)
        return st;
    sl_http *h = sl_xcalloc(1, sizeof *h);
    h->render = render;
    h->render_arg = render_arg;
    h->ready = ready;
    h->ready_arg = ready_arg;
    /* No MHD_USE_ERROR_LOG: libmicrohttpd's own line ("Failed to bind to
     * port 0") would precede, and contradict, the one-line error below. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)64, MHD_OPTION_END);
    if (!h->d) {
        free(h);
        return sl_fail(SL_EIO, "--http: cannot listen on %s (address in use or not available)", addr);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    *out = h;
    return SL_OK;
}

int sl_http_port(const sl_http *h)
{
    return h->port;
}

void sl_http_stop(sl_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
