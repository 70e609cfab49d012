/* source_gen.h - the deterministic generator of the reference data set.
 *
 * Users {"uuid","fn","ln","friends":[uuid...]}: unique UUIDs, realistic
 * first and last names (some with apostrophes or non-ASCII letters), 5-20
 * friends each (about 12 on average), friendship symmetric and always inside
 * the same chunk. Everything is derived from (seed, chunk index), so chunk i
 * is the same bytes every time it is asked for, in any process. */
#ifndef SL_SOURCE_GEN_H
#define SL_SOURCE_GEN_H

#include <stdint.h>

#include "buf.h"

/* Appends chunk `chunk` - `count` users whose global indices start at
 * `first` - as one compact JSON array to out. */
void sl_gen_users(uint64_t seed, int64_t chunk, int64_t first, int64_t count,
                  sl_buf *out);

#endif
