/* telemetry.c - a role's registry, HTTP endpoint and NATS state. */
#include "telemetry.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

static void render(void *arg, sl_buf *out)
{
    sl_telemetry *t = arg;
    sl_metrics_render(t->metrics, out);
}

static int ready(void *arg, sl_buf *why)
{
    sl_telemetry *t = arg;
    sl_bus *bus = atomic_load(&t->bus);
    if (!bus) {
        sl_buf_puts(why, "not connected to NATS yet");
        return 0;
    }
    if (!sl_bus_connected(bus)) {
        sl_buf_puts(why, "NATS connection lost; reconnecting");
        return 0;
    }
    return t->ready ? t->ready(t->ready_arg, why) : 1;
}

static void collect_nats(void *arg)
{
    sl_telemetry *t = arg;
    sl_bus *bus = atomic_load(&t->bus);
    sl_metric_set(t->nats_connected, bus && sl_bus_connected(bus) ? 1 : 0);
    sl_metric_set(t->nats_reconnects, bus ? (double)sl_bus_reconnects(bus) : 0);
}

sl_status sl_telemetry_start(sl_telemetry *t, const sl_config *cfg, const char *role, sl_http_ready_fn ready_fn,
                             void *ready_arg)
{
    memset(t, 0, sizeof *t);
    t->ready = ready_fn;
    t->ready_arg = ready_arg;
    t->metrics = sl_metrics_new(role, cfg->job);
    t->nats_connected = sl_metrics_gauge(t->metrics, "sluice_nats_connected", "1 while connected to NATS.", "");
    t->nats_reconnects =
        sl_metrics_counter(t->metrics, "sluice_nats_reconnects_total", "Reconnections to NATS.", "");
    sl_metrics_on_collect(t->metrics, collect_nats, t);
    if (!cfg->http[0])
        return SL_OK;
    sl_status st = sl_http_start(&t->http, cfg->http, render, t, ready, t);
    if (st) {
        sl_metrics_destroy(t->metrics);
        t->metrics = NULL;
        return st;
    }
    sl_info("http listening", "addr=%s port=%d", sl_log_q(cfg->http), sl_http_port(t->http));
    return SL_OK;
}

void sl_telemetry_bus(sl_telemetry *t, sl_bus *bus)
{
    atomic_store(&t->bus, bus);
}

sl_metric *sl_telemetry_bad(sl_telemetry *t, const char *reason)
{
    char labels[96];
    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    return sl_metrics_counter(t->metrics, "sluice_bad_messages_total",
                              "Malformed or forged messages dropped, by reason.", labels);
}

void sl_telemetry_stop(sl_telemetry *t)
{
    sl_http_stop(t->http);
    t->http = NULL;
}

void sl_telemetry_free(sl_telemetry *t)
{
    sl_telemetry_stop(t);
    sl_metrics_destroy(t->metrics);
    t->metrics = NULL;
}
