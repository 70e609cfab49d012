/* source_http.c - http(s):// paginated APIs (to be written: issue 6). */
#include "source.h"

sl_status sl_source_http_open(const sl_source_opts *o, int64_t *objects, void **impl, const sl_source_ops **ops)
{
    (void)o, (void)objects, (void)impl, (void)ops;
    return sl_fail(SL_EINVAL, "--source: http sources are not built yet");
}
