/* log.h - one line per event on stderr.
 *
 * logfmt by default (`ts=... level=info role=mapper msg="..." k=v`), or one
 * JSON object per line with --log-format json. Fields after the message are
 * given as a printf format of `key=value` pairs separated by spaces; values
 * containing spaces or quotes must be passed through sl_log_q(). Lines are
 * written with a single write(2), so lines from threads never interleave. */
#ifndef SL_LOG_H
#define SL_LOG_H

#include "status.h"

typedef enum { SL_LOG_DEBUG, SL_LOG_INFO, SL_LOG_WARN, SL_LOG_ERROR } sl_log_level;

/* Sets the role shown on every line, the format ("logfmt" or "json") and
 * the lowest level printed ("debug", "info", "warn", "error"). */
sl_status sl_log_setup(const char *role, const char *format, const char *level);

/* Logs msg with optional key=value fields (fmt may be NULL). */
void sl_log(sl_log_level lvl, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sl_debug(msg, ...) sl_log(SL_LOG_DEBUG, msg, __VA_ARGS__)
#define sl_info(msg, ...) sl_log(SL_LOG_INFO, msg, __VA_ARGS__)
#define sl_warn(msg, ...) sl_log(SL_LOG_WARN, msg, __VA_ARGS__)
#define sl_error(msg, ...) sl_log(SL_LOG_ERROR, msg, __VA_ARGS__)

int sl_log_enabled(sl_log_level lvl);

/* Quotes a value for a key=value field if it needs it. Returns a pointer to
 * one of a few per-thread buffers: valid until the next few calls. */
const char *sl_log_q(const char *value);

#endif
