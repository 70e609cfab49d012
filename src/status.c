/* status.c - the per-thread error message behind sl_status. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local char errbuf[512];

sl_status sl_fail(sl_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return st;
}

const char *sl_errmsg(void)
{
    return errbuf[0] ? errbuf : "unknown error";
}

const char *sl_status_name(sl_status st)
{
    switch (st) {
    case SL_OK: return "ok";
    case SL_EINVAL: return "invalid";
    case SL_EIO: return "io";
    case SL_ENATS: return "nats";
    case SL_ETIMEOUT: return "timeout";
    case SL_ENOTFOUND: return "not_found";
    }
    return "unknown";
}

void sl_assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "sluice: invariant violated at %s:%d: %s\n", file, line, what);
    abort();
}
