/* roles.h - the entry points of sluice's commands, one file each.
 *
 * Each takes the loaded configuration and returns the process's exit code:
 * 0 done, 1 failure, 3 finished with dead letters (fetcher, run), 128+N
 * stopped by signal N before the job was done (fetcher, run). */
#ifndef SL_ROLES_H
#define SL_ROLES_H

#include "config.h"

int sl_fetcher_main(const sl_config *cfg);
int sl_mapper_main(const sl_config *cfg);
int sl_saver_main(const sl_config *cfg);
int sl_run_main(const sl_config *cfg);
int sl_status_main(const sl_config *cfg);
int sl_nats_exporter_main(const sl_config *cfg);
int sl_mock_api_main(const sl_config *cfg);

#endif
