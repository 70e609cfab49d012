/* log.c - logfmt / JSON lines on stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

static const char *role_name = "sluice";
static int json_format;
static sl_log_level min_level = SL_LOG_INFO;

static const char *level_names[] = {"debug", "info", "warn", "error"};

sl_status sl_log_setup(const char *role, const char *format, const char *level)
{
    if (role)
        role_name = role;
    if (format) {
        if (strcmp(format, "json") == 0)
            json_format = 1;
        else if (strcmp(format, "logfmt") == 0)
            json_format = 0;
        else
            return sl_fail(SL_EINVAL, "--log-format must be logfmt or json, not \"%s\"", format);
    }
    if (level) {
        int found = 0;
        for (int i = 0; i < 4; i++)
            if (strcmp(level, level_names[i]) == 0) {
                min_level = (sl_log_level)i;
                found = 1;
            }
        if (!found)
            return sl_fail(SL_EINVAL, "--log-level must be debug, info, warn or error, not \"%s\"", level);
    }
    return SL_OK;
}

int sl_log_enabled(sl_log_level lvl)
{
    return lvl >= min_level;
}

const char *sl_log_q(const char *value)
{
    static _Thread_local char bufs[4][512];
    static _Thread_local int next;
    if (!value)
        return "\"\"";
    int plain = value[0] != '\0';
    for (const char *p = value; *p; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p < 0x20 ||
            (unsigned char)*p >= 0x80)
            plain = 0;
    if (plain)
        return value;
    char *out = bufs[next++ & 3];
    size_t n = 0, cap = sizeof bufs[0];
    out[n++] = '"';
    size_t left = strlen(value);
    for (const char *p = value; *p && n + 6 < cap; p++, left--) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x80) {
            /* Whole characters only; a stray byte becomes '?'. */
            size_t len = sl_utf8_char(p, left);
            if (!len) {
                out[n++] = '?';
                continue;
            }
            memcpy(out + n, p, len);
            n += len;
            p += len - 1;
            left -= len - 1;
        } else if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else if (c < 0x20) {
            out[n++] = ' ';
        } else {
            out[n++] = (char)c;
        }
    }
    out[n++] = '"';
    out[n] = '\0';
    return out;
}

/* Turns `a=1 b="x y"` into `,"a":"1","b":"x y"` for the JSON format. Values
 * stay strings: a log reader must not have to guess types. */
static void fields_to_json(sl_buf *b, const char *f)
{
    while (*f) {
        while (*f == ' ')
            f++;
        if (!*f)
            break;
        const char *eq = strchr(f, '=');
        if (!eq)
            break;
        sl_buf_puts(b, ",\"");
        sl_buf_json_escape(b, f, (size_t)(eq - f));
        sl_buf_puts(b, "\":\"");
        const char *v = eq + 1;
        if (*v == '"') {
            v++;
            const char *s = v;
            while (*v && *v != '"') {
                if (*v == '\\' && v[1])
                    v++;
                v++;
            }
            sl_buf_json_escape(b, s, (size_t)(v - s));
            if (*v == '"')
                v++;
        } else {
            const char *s = v;
            while (*v && *v != ' ')
                v++;
            sl_buf_json_escape(b, s, (size_t)(v - s));
        }
        sl_buf_putc(b, '"');
        f = v;
    }
}

void sl_log(sl_log_level lvl, const char *msg, const char *fmt, ...)
{
    if (lvl < min_level)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t wl = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + wl, sizeof when - wl, ".%03ldZ", ts.tv_nsec / 1000000);

    sl_buf fields = SL_BUF_INIT;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        sl_buf_vprintf(&fields, fmt, ap);
        va_end(ap);
    }
    sl_buf line = SL_BUF_INIT;
    if (json_format) {
        sl_buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"role\":\"", when, level_names[lvl]);
        sl_buf_json_escape(&line, role_name, strlen(role_name));
        sl_buf_puts(&line, "\",\"msg\":\"");
        sl_buf_json_escape(&line, msg, strlen(msg));
        sl_buf_putc(&line, '"');
        if (fields.len)
            fields_to_json(&line, fields.data);
        sl_buf_puts(&line, "}\n");
    } else {
        sl_buf_printf(&line, "ts=%s level=%s role=%s msg=%s", when, level_names[lvl],
                      role_name, sl_log_q(msg));
        if (fields.len) {
            sl_buf_putc(&line, ' ');
            sl_buf_append(&line, fields.data, fields.len);
        }
        sl_buf_putc(&line, '\n');
    }
    ssize_t w = write(STDERR_FILENO, line.data, line.len);
    (void)w;
    sl_buf_free(&line);
    sl_buf_free(&fields);
}
