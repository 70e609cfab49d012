/* status.h - sluice's one error convention.
 *
 * A fallible function returns sl_status (SL_OK == 0). Where it fails it also
 * leaves a one-line, human-readable message in a per-thread buffer that
 * sl_errmsg() returns; the caller that decides to give up prints it. Errors
 * of the libraries underneath (nats.c, SQLite, jansson, errno) are turned
 * into an sl_status at exactly one place each, keeping their own text. */
#ifndef SL_STATUS_H
#define SL_STATUS_H

typedef enum {
    SL_OK = 0,
    SL_EINVAL,   /* bad input: a value out of range, malformed bytes */
    SL_EIO,      /* a file, database or socket failed */
    SL_ENATS,    /* NATS refused, timed out or is unreachable */
    SL_ETIMEOUT, /* a deadline passed */
    SL_ENOTFOUND /* the thing asked for does not exist */
} sl_status;

/* Sets this thread's error message (printf-style) and returns st, so a
 * failure reads `return sl_fail(SL_EIO, "open %s: %s", p, strerror(e));`. */
sl_status sl_fail(sl_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* This thread's last error message; never NULL, owned by the thread. */
const char *sl_errmsg(void);

/* A short name of a status ("invalid", "io", ...), for logs. */
const char *sl_status_name(sl_status st);

/* Invariant violations are bugs: they abort loudly with file:line. */
#define SL_ASSERT(cond)                                                        \
    ((cond) ? (void)0 : sl_assert_fail(#cond, __FILE__, __LINE__))
_Noreturn void sl_assert_fail(const char *what, const char *file, int line);

#endif
