/* source_file.c - file:PATH (to be written: issue 6). */
#include "source.h"

sl_status sl_source_file_open(const sl_source_opts *o, int64_t *objects, void **impl, const sl_source_ops **ops)
{
    (void)objects, (void)impl, (void)ops;
    return sl_fail(SL_EINVAL, "--source: %s: file sources are not built yet", o->uri);
}
