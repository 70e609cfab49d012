/* stop.h - asking a process to stop: SIGTERM / SIGINT.
 *
 * sl_stop_install routes both signals to a flag and a self-pipe, so a role's
 * main loop can sleep with sl_stop_sleep and still wake at once when asked
 * to stop (Kubernetes' grace period is short). */
#ifndef SL_STOP_H
#define SL_STOP_H

#include <stdbool.h>
#include <stdint.h>

void sl_stop_install(void);
bool sl_stop_requested(void);
/* The signal that asked for the stop (0 if none). */
int sl_stop_signal(void);
/* Sleeps up to ms; returns early (true) when a stop is requested. */
bool sl_stop_sleep(int64_t ms);
/* Requests a stop from inside the process (e.g. the job is done). */
void sl_stop_request(void);

#endif
