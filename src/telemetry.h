/* telemetry.h - what every role shows the outside: metrics and health.
 *
 * sl_telemetry_start makes the role's metrics registry and, when --http is
 * set, serves it with /healthz and /readyz. Once the role has its NATS
 * connection it hands it over (sl_telemetry_bus), and the NATS state
 * (sluice_nats_connected, sluice_nats_reconnects_total) is exported from
 * it; readiness then requires the connection plus whatever the role's own
 * ready callback says. */
#ifndef SL_TELEMETRY_H
#define SL_TELEMETRY_H

#include "bus.h"
#include "config.h"
#include "http.h"
#include "metrics.h"

typedef struct {
    sl_metrics *metrics;
    sl_http *http;
    _Atomic(sl_bus *) bus; /* read by the HTTP thread */
    sl_metric *nats_connected, *nats_reconnects;
    sl_http_ready_fn ready; /* the role's own condition, may be NULL */
    void *ready_arg;
} sl_telemetry;

/* Fills t for `role`; listens on cfg->http unless it is empty. On failure
 * the message names the address. Stop with sl_telemetry_stop. */
sl_status sl_telemetry_start(sl_telemetry *t, const sl_config *cfg, const char *role, sl_http_ready_fn ready,
                             void *ready_arg);

/* The connection whose state /readyz and the nats metrics report. */
void sl_telemetry_bus(sl_telemetry *t, sl_bus *bus);

/* Registers sluice_bad_messages_total{reason="<reason>"}. */
sl_metric *sl_telemetry_bad(sl_telemetry *t, const char *reason);

/* Stops serving HTTP. Call before what the callbacks read goes away. */
void sl_telemetry_stop(sl_telemetry *t);

/* Frees the registry: after everything that updates metrics (the NATS
 * handlers) has stopped. */
void sl_telemetry_free(sl_telemetry *t);

#endif
