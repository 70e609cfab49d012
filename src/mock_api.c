/* mock_api.c - `sluice mock-api` (to be written: issue 6). */
#include <stdio.h>

#include "roles.h"

int sl_mock_api_main(const sl_config *cfg)
{
    (void)cfg;
    fprintf(stderr, "sluice mock-api: not built yet\n");
    return 1;
}
