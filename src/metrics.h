/* metrics.h - a process's Prometheus metrics, in the text exposition format.
 *
 * A registry holds metric families (counter, gauge, histogram), each with
 * one series per label set. Every series of a registry carries the labels
 * role="<role>" and sluice_job="<job>" (not `job`, which Prometheus sets to
 * the scrape job and would rename). The registry also serves the standard
 * process_* metrics and sluice_build_info.
 *
 * Series are created once at start-up (so every series exists, at 0, from
 * the first scrape: a dashboard's rate() has data before the first event)
 * and updated through the handle returned; handles live as long as the
 * registry. All calls are thread-safe. */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include "buf.h"

typedef struct sl_metrics sl_metrics;
typedef struct sl_metric sl_metric;

/* A registry for one process; free with sl_metrics_destroy. */
sl_metrics *sl_metrics_new(const char *role, const char *job);
void sl_metrics_destroy(sl_metrics *m); /* accepts NULL */

/* Registers the series `name{labels}` (labels: "" or `k="v",k2="v2"`,
 * values already escaped, see sl_metrics_escape) and returns its handle.
 * Registering the same name and labels twice returns the same handle; the
 * same name with another type aborts (a bug). Help is taken from the first
 * registration of a family. */
sl_metric *sl_metrics_counter(sl_metrics *m, const char *name, const char *help, const char *labels);
sl_metric *sl_metrics_gauge(sl_metrics *m, const char *name, const char *help, const char *labels);
/* upper bounds in increasing order, +Inf implied */
sl_metric *sl_metrics_histogram(sl_metrics *m, const char *name, const char *help, const char *labels,
                                const double *bounds, int nbounds);

void sl_metric_inc(sl_metric *c);               /* counter or gauge += 1 */
void sl_metric_add(sl_metric *c, double v);     /* counter (v >= 0) or gauge */
void sl_metric_set(sl_metric *g, double v);     /* gauge; or a counter to a
                                                   total kept elsewhere */
void sl_metric_observe(sl_metric *h, double v); /* histogram */
double sl_metric_get(sl_metric *m);             /* counter/gauge value;
                                                   histogram: count */

/* fn(arg) runs before each render, outside the registry's lock, to set
 * gauges from state owned elsewhere (the fetcher's ledger counts). Up to
 * four hooks; they run in the order they were added. */
void sl_metrics_on_collect(sl_metrics *m, void (*fn)(void *arg), void *arg);

/* Appends the whole exposition to out. */
void sl_metrics_render(sl_metrics *m, sl_buf *out);

/* Appends v escaped as a label value (\\, \", \n) to out. */
void sl_metrics_escape(sl_buf *out, const char *v);

/* Appends a sample value as Prometheus writes it (NaN, +Inf, -Inf). */
void sl_metrics_value(sl_buf *out, double v);

/* Bucket bounds in seconds for durations from 1 ms to 1 min. */
extern const double sl_metrics_duration_bounds[];
extern const int sl_metrics_duration_nbounds;

#endif
