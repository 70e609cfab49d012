/* args.h - what the bench programs share to read their flags. */
#ifndef SL_BENCH_ARGS_H
#define SL_BENCH_ARGS_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* The whole decimal number >= min that s is; false for anything else,
 * NULL included (a flag given last, without its value). */
static inline bool bench_count(const char *s, int64_t min, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < min)
        return false;
    *out = v;
    return true;
}

#endif
