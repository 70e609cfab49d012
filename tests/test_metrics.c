/* test_metrics.c - the registry renders what Prometheus expects. */
#include <math.h>
#include <string.h>

#include "metrics.h"
#include "test.h"

static char *render(sl_metrics *m)
{
    sl_buf b = SL_BUF_INIT;
    sl_metrics_render(m, &b);
    return b.data;
}

SL_TEST(metrics_counter_gauge_and_labels, 5)
{
    sl_metrics *m = sl_metrics_new("mapper", "nightly");
    sl_metric *c = sl_metrics_counter(m, "sluice_things_total", "Things.", "kind=\"a\"");
    sl_metric *c2 = sl_metrics_counter(m, "sluice_things_total", "ignored", "kind=\"b\"");
    sl_metric *g = sl_metrics_gauge(m, "sluice_level", "A level.", "");
    CHECK(sl_metrics_counter(m, "sluice_things_total", "", "kind=\"a\"") == c);
    sl_metric_inc(c);
    sl_metric_add(c, 2.5);
    sl_metric_add(c2, 7);
    sl_metric_set(g, -3);
    CHECK(sl_metric_get(c) == 3.5);
    char *out = render(m);
    CHECK(strstr(out, "# HELP sluice_things_total Things.\n# TYPE sluice_things_total counter\n"
                      "sluice_things_total{role=\"mapper\",sluice_job=\"nightly\",kind=\"a\"} 3.5\n"
                      "sluice_things_total{role=\"mapper\",sluice_job=\"nightly\",kind=\"b\"} 7\n"));
    CHECK(strstr(out, "# TYPE sluice_level gauge\nsluice_level{role=\"mapper\",sluice_job=\"nightly\"} -3\n"));
    CHECK(strstr(out, "sluice_build_info{role=\"mapper\",sluice_job=\"nightly\",version=\""));
    CHECK(strstr(out, "# TYPE process_start_time_seconds gauge\n"));
    CHECK(strstr(out, "# TYPE process_resident_memory_bytes gauge\n"));
    /* One HELP/TYPE per family. */
    const char *first = strstr(out, "# TYPE sluice_things_total");
    CHECK(first && !strstr(first + 1, "# TYPE sluice_things_total"));
    free(out);
    sl_metrics_destroy(m);
}

SL_TEST(metrics_histogram_is_cumulative, 5)
{
    sl_metrics *m = sl_metrics_new("saver", "default");
    const double bounds[] = {0.1, 1, 10};
    sl_metric *h = sl_metrics_histogram(m, "sluice_wait_seconds", "Waits.", "", bounds, 3);
    sl_metric_observe(h, 0.05);
    sl_metric_observe(h, 0.1); /* le is inclusive */
    sl_metric_observe(h, 5);
    sl_metric_observe(h, 100);
    CHECK(sl_metric_get(h) == 4);
    char *out = render(m);
    const char *l = "{role=\"saver\",sluice_job=\"default\"";
    char want[512];
    snprintf(want, sizeof want,
             "sluice_wait_seconds_bucket%s,le=\"0.1\"} 2\n"
             "sluice_wait_seconds_bucket%s,le=\"1\"} 2\n"
             "sluice_wait_seconds_bucket%s,le=\"10\"} 3\n"
             "sluice_wait_seconds_bucket%s,le=\"+Inf\"} 4\n"
             "sluice_wait_seconds_sum%s} 105.15\n"
             "sluice_wait_seconds_count%s} 4\n",
             l, l, l, l, l, l);
    CHECK_MSG(strstr(out, want), "%s", out);
    free(out);
    sl_metrics_destroy(m);
}

SL_TEST(metrics_escape_and_values, 5)
{
    sl_buf b = SL_BUF_INIT;
    sl_metrics_escape(&b, "a\"b\\c\nd");
    CHECK_STR(b.data, "a\\\"b\\\\c\\nd");
    sl_buf_reset(&b);
    sl_metrics_value(&b, NAN);
    sl_buf_putc(&b, ' ');
    sl_metrics_value(&b, INFINITY);
    sl_buf_putc(&b, ' ');
    sl_metrics_value(&b, -INFINITY);
    sl_buf_putc(&b, ' ');
    sl_metrics_value(&b, 42);
    sl_buf_putc(&b, ' ');
    sl_metrics_value(&b, 0.25);
    CHECK_STR(b.data, "NaN +Inf -Inf 42 0.25");
    sl_buf_free(&b);
    /* A job name that needs escaping stays one label value. */
    sl_metrics *m = sl_metrics_new("fetcher", "we\"ird");
    char *out = render(m);
    CHECK(strstr(out, "sluice_job=\"we\\\"ird\""));
    free(out);
    sl_metrics_destroy(m);
}

SL_TEST(buf_json_escape_always_yields_valid_utf8, 5)
{
    sl_buf b = SL_BUF_INIT;
    const char in[] = "ok \xc3\xa9 \xff \"q\" \x01";
    sl_buf_json_escape(&b, in, sizeof in - 1);
    CHECK_STR(b.data, "ok \xc3\xa9 \\ufffd \\\"q\\\" \\u0001");
    sl_buf_free(&b);
}
