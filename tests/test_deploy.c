/* test_deploy.c - what deploy/ ships works with the real tools: Prometheus's
 * config and alerting rules pass promtool, every alert fires when it should
 * and not otherwise (promtool test rules on generated series), and both
 * Grafana dashboards are importable as they are: a templated Prometheus
 * datasource, the documented metrics, and PromQL that parses. */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "test.h"

/* Runs promtool with args; returns its exit code, its output in *out. */
static int promtool(const char *const *args, char **out)
{
    const char *argv[8] = {"promtool"};
    int n = 1;
    for (; args[n - 1]; n++) {
        CHECK(n < 7);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    return th_run(argv, NULL, out, 60000);
}

/* `name` is a metric of the README's Monitoring table (the contract):
 * written there as `name` or `name{labels}`. A histogram's _bucket, _sum
 * and _count series are its own name's. */
static int documented(const char *readme, const char *name)
{
    char base[128];
    snprintf(base, sizeof base, "%s", name);
    const char *suffixes[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(base), s = strlen(suffixes[i]);
        if (n > s && !strcmp(base + n - s, suffixes[i])) {
            base[n - s] = '\0';
            break;
        }
    }
    size_t n = strlen(base);
    for (const char *p = readme; (p = strstr(p, base)); p += n)
        if (p > readme && p[-1] == '`' && (p[n] == '`' || p[n] == '{'))
            return 1;
    return 0;
}

/* ---- Prometheus ---------------------------------------------------------- */

/* An example target file: a JSON array of {"targets": [...], "labels": {}},
 * whose labels do not shadow the role and sluice_job every series has. */
static void check_target_file(const char *rel)
{
    char *path = th_src_path(rel);
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    CHECK_MSG(doc, "%s:%d: %s", path, err.line, err.text);
    CHECK_MSG(json_is_array(doc) && json_array_size(doc) > 0, "%s: not a non-empty array", path);
    size_t i;
    json_t *group;
    json_array_foreach(doc, i, group) {
        json_t *targets = json_object_get(group, "targets");
        CHECK_MSG(json_is_array(targets) && json_array_size(targets) > 0, "%s[%zu]: no targets", path, i);
        size_t j;
        json_t *t;
        json_array_foreach(targets, j, t) {
            CHECK_MSG(json_is_string(t) && !strncmp(json_string_value(t), "127.0.0.1:", 10),
                      "%s[%zu]: target %zu is not 127.0.0.1:PORT", path, i, j);
        }
        json_t *labels = json_object_get(group, "labels");
        CHECK_MSG(!labels || json_is_object(labels), "%s[%zu]: labels is not an object", path, i);
        CHECK_MSG(!json_object_get(labels, "role") && !json_object_get(labels, "sluice_job"),
                  "%s[%zu]: a target label shadows a metric's role or sluice_job", path, i);
    }
    json_decref(doc);
    free(path);
}

SL_TEST(deploy_prometheus_config_passes_promtool, 60)
{
    char *config = th_src_path("deploy/prometheus/prometheus.yml");
    char *out = NULL;
    const char *args[] = {"check", "config", config, NULL};
    int rc = promtool(args, &out);
    CHECK_MSG(rc == 0, "promtool check config %s: exit %d\n%s", config, rc, out);
    CHECK_MSG(strstr(out, "SUCCESS: 1 rule files found"), "rules.yml not loaded:\n%s", out);
    /* A target file that is missing is only a warning to promtool. */
    CHECK_MSG(!strstr(out, "WARNING"), "promtool warns:\n%s", out);
    free(out);
    free(config);

    char *text = th_src_read("deploy/prometheus/prometheus.yml");
    CHECK(strstr(text, "scrape_interval: 5s"));
    CHECK(strstr(text, "evaluation_interval: 5s"));
    CHECK(strstr(text, "job_name: sluice"));
    CHECK(strstr(text, "job_name: nats"));
    CHECK(strstr(text, "- targets/sluice.json"));
    CHECK(strstr(text, "- targets/nats.json"));
    CHECK(strstr(text, "- rules.yml"));
    free(text);
    check_target_file("deploy/prometheus/targets/sluice.json");
    check_target_file("deploy/prometheus/targets/nats.json");
}

SL_TEST(deploy_prometheus_rules_pass_promtool, 60)
{
    char *rules = th_src_path("deploy/prometheus/rules.yml");
    char *out = NULL;
    const char *args[] = {"check", "rules", rules, NULL};
    int rc = promtool(args, &out);
    CHECK_MSG(rc == 0, "promtool check rules %s: exit %d\n%s", rules, rc, out);
    CHECK_MSG(strstr(out, "SUCCESS: 6 rules found"), "%s", out);
    free(out);
    free(rules);

    char *text = th_src_read("deploy/prometheus/rules.yml");
    char *readme = th_src_read("README.md");
    const char *alerts[] = {"SluiceNoProgress",      "SluiceDeadLetters",     "SluiceRedeliveryRateHigh",
                            "NatsSlowConsumers",     "SluiceMapperPoolEmpty", "SluiceFetcherDown"};
    for (size_t i = 0; i < sizeof alerts / sizeof alerts[0]; i++) {
        char want[80];
        snprintf(want, sizeof want, "- alert: %s\n", alerts[i]);
        CHECK_MSG(strstr(text, want), "rules.yml has no alert %s", alerts[i]);
    }
    /* Every sluice metric an alert asks for is one sluice serves. */
    for (const char *p = text; (p = strstr(p, "sluice_")); ) {
        size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyz_");
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)n, p);
        if (p == text || !(isalnum((unsigned char)p[-1]) || p[-1] == '_' || p[-1] == '$'))
            CHECK_MSG(!strcmp(name, "sluice_job") || documented(readme, name),
                      "rules.yml uses %s, which README's Monitoring does not list", name);
        p += n;
    }
    /* Each alert has a severity, a summary and a description. */
    int alerts_n = 0, sev = 0, sum = 0, desc = 0;
    for (const char *p = text; (p = strstr(p, "- alert: ")); p++) alerts_n++;
    for (const char *p = text; (p = strstr(p, "severity: ")); p++) sev++;
    for (const char *p = text; (p = strstr(p, "summary: ")); p++) sum++;
    for (const char *p = text; (p = strstr(p, "description: ")); p++) desc++;
    CHECK_INT(alerts_n, ==, 6);
    CHECK_INT(sev, ==, alerts_n);
    CHECK_INT(sum, ==, alerts_n);
    CHECK_INT(desc, ==, alerts_n);
    free(readme);
    free(text);
}

/* Series that make each alert fire, and others that must not, with the
 * exact alerts (labels and rendered annotations) expected at given times:
 * the rules mean what they say. Preceded by rule_files in the test. */
static const char alert_tests[] =
    "evaluation_interval: 1m\n"
    "tests:\n"
    "  # A dead chunk, or objects dead-lettered by a mapper or a saver.\n"
    "  - name: dead letters\n"
    "    interval: 1m\n"
    "    input_series:\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"dead\",state=\"dead\"}', values: '0 0 1 1 1 1'}\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"clean\",state=\"dead\"}', values: '0x5'}\n"
    "      - {series: 'sluice_objects_dead_lettered_total{role=\"mapper\",sluice_job=\"clean\"}', values: '0x5'}\n"
    "      - {series: 'sluice_objects_dead_lettered_total{role=\"saver\",sluice_job=\"obj\"}', values: '0 0 0 2 2 2'}\n"
    "    alert_rule_test:\n"
    "      - {eval_time: 1m, alertname: SluiceDeadLetters, exp_alerts: []}\n"
    "      - eval_time: 4m\n"
    "        alertname: SluiceDeadLetters\n"
    "        exp_alerts:\n"
    "          - exp_labels: {severity: warning, sluice_job: dead}\n"
    "            exp_annotations:\n"
    "              summary: \"sluice job dead has dead letters\"\n"
    "              description: \"Job dead has dead letters: 1 (dead chunks, or else objects dead-lettered in the last 15 minutes). The sink's dead_letters table holds each with its reason.\"\n"
    "          - exp_labels: {severity: warning, sluice_job: obj}\n"
    "            exp_annotations:\n"
    "              summary: \"sluice job obj has dead letters\"\n"
    "              description: \"Job obj has dead letters: 2 (dead chunks, or else objects dead-lettered in the last 15 minutes). The sink's dead_letters table holds each with its reason.\"\n"
    "\n"
    "  # Pending chunks: job \"none\" never had a mapper, job \"gone\" lost its only\n"
    "  # one at 3m, job \"ok\" has an idle one, job \"idle\" has nothing pending.\n"
    "  - name: mapper pool empty\n"
    "    interval: 1m\n"
    "    input_series:\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"gone\",state=\"pending\"}', values: '10x12'}\n"
    "      - {series: 'sluice_mapper_busy{role=\"mapper\",sluice_job=\"gone\",instance=\"m1\"}', values: '1 1 1 stale'}\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"none\",state=\"pending\"}', values: '10x12'}\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"ok\",state=\"pending\"}', values: '10x12'}\n"
    "      - {series: 'sluice_mapper_busy{role=\"mapper\",sluice_job=\"ok\",instance=\"m2\"}', values: '0x12'}\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"idle\",state=\"pending\"}', values: '0x12'}\n"
    "    alert_rule_test:\n"
    "      - {eval_time: 1m, alertname: SluiceMapperPoolEmpty, exp_alerts: []}\n"
    "      - eval_time: 4m\n"
    "        alertname: SluiceMapperPoolEmpty\n"
    "        exp_alerts:\n"
    "          - &none\n"
    "            exp_labels: {severity: critical, sluice_job: none}\n"
    "            exp_annotations:\n"
    "              summary: \"sluice job none has no mapper\"\n"
    "              description: \"Job none has 10 chunks pending and no mapper of this job has been up (scraped) for 2 minutes.\"\n"
    "      - eval_time: 5m\n"
    "        alertname: SluiceMapperPoolEmpty\n"
    "        exp_alerts:\n"
    "          - *none\n"
    "          - exp_labels: {severity: critical, sluice_job: gone}\n"
    "            exp_annotations:\n"
    "              summary: \"sluice job gone has no mapper\"\n"
    "              description: \"Job gone has 10 chunks pending and no mapper of this job has been up (scraped) for 2 minutes.\"\n"
    "\n"
    "  # \"stall\" saves until 5m then stops: fires at 25m. \"held\" never saves\n"
    "  # and has leased chunks: fires at 11m. \"resumed\" stops from 5m to 23m,\n"
    "  # 9 minutes short of firing. \"moving\" saves all along; \"complete\" has\n"
    "  # nothing left to do.\n"
    "  - name: no progress\n"
    "    interval: 1m\n"
    "    input_series:\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"stall\",state=\"pending\"}', values: '50x40'}\n"
    "      - {series: 'sluice_objects_saved_total{role=\"fetcher\",sluice_job=\"stall\"}', values: '0+100x5 500x35'}\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"held\",state=\"pending\"}', values: '0x40'}\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"held\",state=\"leased\"}', values: '3x40'}\n"
    "      - {series: 'sluice_objects_saved_total{role=\"fetcher\",sluice_job=\"held\"}', values: '700x40'}\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"resumed\",state=\"pending\"}', values: '50x40'}\n"
    "      - {series: 'sluice_objects_saved_total{role=\"fetcher\",sluice_job=\"resumed\"}', values: '0+100x5 500x17 600+100x17'}\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"moving\",state=\"pending\"}', values: '50x40'}\n"
    "      - {series: 'sluice_objects_saved_total{role=\"fetcher\",sluice_job=\"moving\"}', values: '0+10x40'}\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"complete\",state=\"pending\"}', values: '0x40'}\n"
    "      - {series: 'sluice_chunks{role=\"fetcher\",sluice_job=\"complete\",state=\"leased\"}', values: '0x40'}\n"
    "      - {series: 'sluice_objects_saved_total{role=\"fetcher\",sluice_job=\"complete\"}', values: '1000x40'}\n"
    "    alert_rule_test:\n"
    "      - {eval_time: 10m, alertname: SluiceNoProgress, exp_alerts: []}\n"
    "      - eval_time: 11m\n"
    "        alertname: SluiceNoProgress\n"
    "        exp_alerts:\n"
    "          - &held\n"
    "            exp_labels: {severity: warning, sluice_job: held}\n"
    "            exp_annotations:\n"
    "              summary: \"sluice job held makes no progress\"\n"
    "              description: \"Job held has 3 chunks pending or leased, and no object was confirmed saved in the last 10 minutes. Are the mappers and savers up, and connected to NATS?\"\n"
    "      - {eval_time: 22m, alertname: SluiceNoProgress, exp_alerts: [*held]}\n"
    "      - {eval_time: 24m, alertname: SluiceNoProgress, exp_alerts: [*held]}\n"
    "      - eval_time: 25m\n"
    "        alertname: SluiceNoProgress\n"
    "        exp_alerts:\n"
    "          - *held\n"
    "          - &stall\n"
    "            exp_labels: {severity: warning, sluice_job: stall}\n"
    "            exp_annotations:\n"
    "              summary: \"sluice job stall makes no progress\"\n"
    "              description: \"Job stall has 50 chunks pending or leased, and no object was confirmed saved in the last 10 minutes. Are the mappers and savers up, and connected to NATS?\"\n"
    "      - {eval_time: 35m, alertname: SluiceNoProgress, exp_alerts: [*held, *stall]}\n"
    "\n"
    "  # \"hot\" redelivers 2 of every 10 leases, \"cool\" 1 of 20.\n"
    "  - name: redelivery rate\n"
    "    interval: 1m\n"
    "    input_series:\n"
    "      - {series: 'sluice_redeliveries_total{role=\"fetcher\",sluice_job=\"hot\"}', values: '0+2x20'}\n"
    "      - {series: 'sluice_leases_issued_total{role=\"fetcher\",sluice_job=\"hot\"}', values: '0+10x20'}\n"
    "      - {series: 'sluice_redeliveries_total{role=\"fetcher\",sluice_job=\"cool\"}', values: '0+1x20'}\n"
    "      - {series: 'sluice_leases_issued_total{role=\"fetcher\",sluice_job=\"cool\"}', values: '0+20x20'}\n"
    "    alert_rule_test:\n"
    "      - {eval_time: 5m, alertname: SluiceRedeliveryRateHigh, exp_alerts: []}\n"
    "      - eval_time: 12m\n"
    "        alertname: SluiceRedeliveryRateHigh\n"
    "        exp_alerts:\n"
    "          - exp_labels: {severity: warning, sluice_job: hot}\n"
    "            exp_annotations:\n"
    "              summary: \"sluice job hot redelivers 20% of its chunks\"\n"
    "              description: \"In job hot, 20% of the leases issued over the last 5 minutes were redeliveries (leases that expired or were handed back). Mappers crash, are killed, or take longer than --lease-ms without extending.\"\n"
    "\n"
    "  # Server A gets 3 slow consumers at 3m; B has had 2 all along.\n"
    "  - name: nats slow consumers\n"
    "    interval: 1m\n"
    "    input_series:\n"
    "      - {series: 'nats_varz_slow_consumers{server_id=\"A\"}', values: '0 0 0 3x8'}\n"
    "      - {series: 'nats_varz_slow_consumers{server_id=\"B\"}', values: '2x11'}\n"
    "    alert_rule_test:\n"
    "      - {eval_time: 2m, alertname: NatsSlowConsumers, exp_alerts: []}\n"
    "      - eval_time: 4m\n"
    "        alertname: NatsSlowConsumers\n"
    "        exp_alerts:\n"
    "          - exp_labels: {severity: warning, server_id: A}\n"
    "            exp_annotations:\n"
    "              summary: \"NATS server A has new slow consumers\"\n"
    "              description: \"The slow consumer count of NATS server A rose in the last 5 minutes (by about 3.75): some client could not keep up and lost messages.\"\n"
    "      - {eval_time: 10m, alertname: NatsSlowConsumers, exp_alerts: []}\n"
    "\n"
    "  # The fetcher's series end at 3m.\n"
    "  - name: fetcher down\n"
    "    interval: 1m\n"
    "    input_series:\n"
    "      - {series: 'sluice_job_chunks{role=\"fetcher\",sluice_job=\"j\"}', values: '1000 1000 1000 stale'}\n"
    "    alert_rule_test:\n"
    "      - {eval_time: 2m, alertname: SluiceFetcherDown, exp_alerts: []}\n"
    "      - {eval_time: 7m, alertname: SluiceFetcherDown, exp_alerts: []}\n"
    "      - eval_time: 8m\n"
    "        alertname: SluiceFetcherDown\n"
    "        exp_alerts:\n"
    "          - exp_labels: {severity: critical, role: fetcher}\n"
    "            exp_annotations:\n"
    "              summary: \"no sluice fetcher is up\"\n"
    "              description: \"No fetcher has served sluice_job_chunks for 5 minutes: the fetcher is down, not scraped (see up{job=\\\"sluice\\\"}), or no job is deployed.\"\n";

SL_TEST(deploy_alerts_fire_when_they_should, 60)
{
    char *rules = th_src_path("deploy/prometheus/rules.yml");
    char *tests = th_path("alerts_test.yml");
    FILE *f = fopen(tests, "w");
    CHECK(f);
    fprintf(f, "rule_files:\n  - '%s'\n", rules);
    fputs(alert_tests, f);
    CHECK(fclose(f) == 0);
    char *out = NULL;
    const char *args[] = {"test", "rules", tests, NULL};
    int rc = promtool(args, &out);
    CHECK_MSG(rc == 0 && strstr(out, "SUCCESS"), "promtool test rules: exit %d\n%s", rc, out);
    free(out);
    free(tests);
    free(rules);
}

/* ---- Grafana ---------------------------------------------------------------- */

typedef struct {
    const char *file;     /* deploy/grafana/<file> */
    const char *uid, *title;
    const char *var;      /* the dashboard's query variable */
    const char *var_query;
    const char *prefix;   /* every metric it asks for starts so */
    const char *matcher;  /* every selector carries it */
    const char *const *required; /* NULL-terminated */
} dash_spec;

typedef struct {
    char names[96][96]; /* metrics the queries ask for */
    int n;
    FILE *rules;        /* every query as a recording rule */
    int exprs;
} dash_seen;

static int is_ident(int c)
{
    return isalnum(c) || c == '_' || c == ':';
}

/* A datasource reference: the templated Prometheus one. */
static void check_ds(json_t *ds, const char *what)
{
    const char *type = json_string_value(json_object_get(ds, "type"));
    const char *uid = json_string_value(json_object_get(ds, "uid"));
    CHECK_MSG(json_is_object(ds) && type && uid && !strcmp(type, "prometheus") && !strcmp(uid, "${datasource}"),
              "%s: datasource is not {\"type\":\"prometheus\",\"uid\":\"${datasource}\"}", what);
}

/* Every "datasource" anywhere in the document is the templated one (the
 * built-in annotation's Grafana datasource aside): no hard-coded uid. */
static void check_all_ds(json_t *v, const char *file)
{
    if (json_is_object(v)) {
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val) {
            if (!strcmp(key, "datasource") && !json_is_null(val)) {
                const char *type = json_string_value(json_object_get(val, "type"));
                if (!(type && !strcmp(type, "grafana")))
                    check_ds(val, file);
            }
            check_all_ds(val, file);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *val;
        json_array_foreach(v, i, val) check_all_ds(val, file);
    }
}

/* Reads a query: each metric name starts with spec->prefix and is followed
 * by a selector carrying spec->matcher; remembers the names. */
static void scan_expr(const dash_spec *spec, const char *expr, dash_seen *seen, const char *what)
{
    const char *p = expr;
    while (*p) {
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1])
                    p++;
            CHECK_MSG(*p, "%s: unterminated string in %s", what, expr);
            p++;
        } else if (*p == '{') {
            const char *end = strchr(p, '}');
            CHECK_MSG(end, "%s: unterminated selector in %s", what, expr);
            CHECK_MSG(memmem(p, (size_t)(end - p), spec->matcher, strlen(spec->matcher)),
                      "%s: a selector lacks %s in %s", what, spec->matcher, expr);
            p = end + 1;
        } else if (*p == '$') {
            p++; /* checked on the whole file */
            while (is_ident((unsigned char)*p))
                p++;
        } else if (isdigit((unsigned char)*p)) {
            while (isalnum((unsigned char)*p) || *p == '.')
                p++;
        } else if (isalpha((unsigned char)*p) || *p == '_') {
            const char *start = p;
            while (is_ident((unsigned char)*p))
                p++;
            size_t n = (size_t)(p - start);
            const char *grouping[] = {"by", "without", "on", "ignoring", "group_left", "group_right"};
            int group = 0;
            for (size_t i = 0; i < sizeof grouping / sizeof grouping[0]; i++)
                if (n == strlen(grouping[i]) && !strncmp(start, grouping[i], n))
                    group = 1;
            if (group) { /* a label list, not metrics */
                while (*p == ' ')
                    p++;
                if (*p == '(') {
                    const char *end = strchr(p, ')');
                    CHECK_MSG(end, "%s: unterminated label list in %s", what, expr);
                    p = end + 1;
                }
                continue;
            }
            if (n > strlen(spec->prefix) && !strncmp(start, spec->prefix, strlen(spec->prefix))) {
                CHECK_MSG(*p == '{', "%s: %.*s without a selector in %s", what, (int)n, start, expr);
                CHECK(n < sizeof seen->names[0]);
                int known = 0;
                for (int i = 0; i < seen->n; i++)
                    known |= strlen(seen->names[i]) == n && !strncmp(seen->names[i], start, n);
                if (!known) {
                    CHECK(seen->n < (int)(sizeof seen->names / sizeof seen->names[0]));
                    snprintf(seen->names[seen->n++], sizeof seen->names[0], "%.*s", (int)n, start);
                }
            } else {
                CHECK_MSG(strncmp(start, "sluice_", 7) && strncmp(start, "nats_", 5) && strncmp(start, "gnatsd", 6),
                          "%s: %.*s is not a %s metric, in %s", what, (int)n, start, spec->prefix, expr);
            }
        } else {
            p++;
        }
    }
}

/* The query as a recording rule, Grafana's variables replaced by what they
 * could stand for, so that promtool parses it. */
static void record_expr(const char *expr, dash_seen *seen)
{
    fprintf(seen->rules, "      - record: dashboard:query_%d\n        expr: |\n          ", ++seen->exprs);
    for (const char *p = expr; *p;) {
        if (*p == '$') {
            const char *name = ++p;
            while (is_ident((unsigned char)*p))
                p++;
            if ((size_t)(p - name) == strlen("__rate_interval") && !strncmp(name, "__rate_interval", 15))
                fputs("1m", seen->rules);
            else
                fputs(".*", seen->rules);
        } else if (*p == '\n') {
            fputs("\n          ", seen->rules);
            p++;
        } else {
            fputc(*p++, seen->rules);
        }
    }
    fputc('\n', seen->rules);
}

static void check_panels(const dash_spec *spec, json_t *panels, dash_seen *seen, json_t *ids)
{
    CHECK_MSG(json_is_array(panels), "%s: panels is not an array", spec->file);
    size_t i;
    json_t *panel;
    json_array_foreach(panels, i, panel) {
        const char *type = json_string_value(json_object_get(panel, "type"));
        const char *title = json_string_value(json_object_get(panel, "title"));
        char what[256];
        snprintf(what, sizeof what, "%s: panel \"%s\"", spec->file, title ? title : "?");
        CHECK_MSG(type && title && *title, "%s: panel %zu has no type or title", spec->file, i);
        json_t *id = json_object_get(panel, "id");
        CHECK_MSG(json_is_integer(id), "%s: no id", what);
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)json_integer_value(id));
        CHECK_MSG(!json_object_get(ids, key), "%s: id %s used twice", what, key);
        json_object_set_new(ids, key, json_true());
        json_t *grid = json_object_get(panel, "gridPos");
        CHECK_MSG(json_integer_value(json_object_get(grid, "w")) > 0 && json_integer_value(json_object_get(grid, "h")) > 0,
                  "%s: no gridPos", what);
        if (!strcmp(type, "row")) {
            json_t *inner = json_object_get(panel, "panels");
            if (inner)
                check_panels(spec, inner, seen, ids);
            continue;
        }
        CHECK_MSG(!strcmp(type, "timeseries") || !strcmp(type, "stat") || !strcmp(type, "gauge"),
                  "%s: type %s", what, type);
        check_ds(json_object_get(panel, "datasource"), what);
        json_t *targets = json_object_get(panel, "targets");
        CHECK_MSG(json_is_array(targets) && json_array_size(targets) > 0, "%s: no targets", what);
        int exprs = 0;
        size_t j;
        json_t *target;
        json_array_foreach(targets, j, target) {
            check_ds(json_object_get(target, "datasource"), what);
            const char *expr = json_string_value(json_object_get(target, "expr"));
            CHECK_MSG(json_is_string(json_object_get(target, "refId")), "%s: target %zu has no refId", what, j);
            if (!expr || !*expr)
                continue;
            exprs++;
            scan_expr(spec, expr, seen, what);
            record_expr(expr, seen);
        }
        CHECK_MSG(exprs > 0, "%s: no target has a query", what);
    }
}

static json_t *find_var(json_t *doc, const char *name)
{
    json_t *list = json_object_get(json_object_get(doc, "templating"), "list");
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        const char *n = json_string_value(json_object_get(v, "name"));
        if (n && !strcmp(n, name))
            return v;
    }
    return NULL;
}

static const char *str_of(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

static void check_dashboard(const dash_spec *spec, FILE *rules)
{
    char rel[128];
    snprintf(rel, sizeof rel, "deploy/grafana/%s", spec->file);
    char *text = th_src_read(rel);

    /* Only nats_ names, the ones the exporters serve. */
    CHECK_MSG(!strcasestr(text, "gnatsd"), "%s mentions gnatsd", spec->file);
    /* Only the variables the dashboards define, and Grafana's interval. */
    for (const char *p = text; (p = strchr(p, '$')); ) {
        p++;
        if (*p == '{')
            p++;
        size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
        const char *ok[] = {"datasource", "__rate_interval", spec->var};
        int good = 0;
        for (size_t i = 0; i < 3; i++)
            good |= n == strlen(ok[i]) && !strncmp(p, ok[i], n);
        CHECK_MSG(good, "%s uses the variable $%.*s", spec->file, (int)n, p);
    }

    json_error_t err;
    json_t *doc = json_loads(text, 0, &err);
    CHECK_MSG(doc, "%s:%d: %s", spec->file, err.line, err.text);
    free(text);

    CHECK_MSG(json_is_null(json_object_get(doc, "id")), "%s: id is not null", spec->file);
    CHECK_STR(str_of(doc, "uid"), spec->uid);
    CHECK_STR(str_of(doc, "title"), spec->title);
    CHECK_INT(json_integer_value(json_object_get(doc, "schemaVersion")), >=, 37);
    CHECK_MSG(!json_object_get(doc, "__inputs"), "%s: __inputs would need editing on import", spec->file);

    json_t *ds = find_var(doc, "datasource");
    CHECK_MSG(ds, "%s: no datasource variable", spec->file);
    CHECK_STR(str_of(ds, "type"), "datasource");
    CHECK_STR(str_of(ds, "query"), "prometheus");
    json_t *var = find_var(doc, spec->var);
    CHECK_MSG(var, "%s: no %s variable", spec->file, spec->var);
    CHECK_STR(str_of(var, "type"), "query");
    CHECK_STR(str_of(var, "query"), spec->var_query);
    CHECK_MSG(json_is_true(json_object_get(var, "multi")) && json_is_true(json_object_get(var, "includeAll")),
              "%s: $%s is not multi-valued with All", spec->file, spec->var);
    check_ds(json_object_get(var, "datasource"), spec->var);
    check_all_ds(doc, spec->file);

    dash_seen seen = {.n = 0, .rules = rules};
    fprintf(rules, "  - name: %s\n    rules:\n", spec->uid);
    json_t *ids = json_object();
    check_panels(spec, json_object_get(doc, "panels"), &seen, ids);
    json_decref(ids);
    CHECK_MSG(seen.exprs >= 8, "%s: only %d queries", spec->file, seen.exprs);

    for (const char *const *m = spec->required; *m; m++) {
        int found = 0;
        for (int i = 0; i < seen.n; i++)
            found |= !strcmp(seen.names[i], *m);
        CHECK_MSG(found, "%s: no query asks for %s", spec->file, *m);
    }
    if (!strcmp(spec->prefix, "sluice_")) {
        char *readme = th_src_read("README.md");
        for (int i = 0; i < seen.n; i++)
            CHECK_MSG(documented(readme, seen.names[i]), "%s: %s is not in README's Monitoring", spec->file,
                      seen.names[i]);
        free(readme);
    }
    json_decref(doc);
}

static const char *const sluice_required[] = {
    "sluice_objects_saved_total", "sluice_job_objects",
    "sluice_chunks",              "sluice_redeliveries_total",
    "sluice_objects_dead_lettered_total", "sluice_mapper_busy",
    "sluice_chunk_duration_seconds_bucket", "sluice_save_duration_seconds_bucket",
    NULL};
static const dash_spec sluice_dash = {
    .file = "sluice.json", .uid = "sluice-pipeline", .title = "sluice pipeline",
    .var = "sluice_job", .var_query = "label_values(sluice_build_info, sluice_job)",
    .prefix = "sluice_", .matcher = "sluice_job=~\"$sluice_job\"", .required = sluice_required};

static const char *const nats_required[] = {
    "nats_varz_cpu", "nats_varz_mem", "nats_varz_connections", "nats_varz_in_msgs",
    "nats_varz_out_msgs", "nats_varz_in_bytes", "nats_varz_out_bytes",
    "nats_varz_slow_consumers", "nats_varz_subscriptions", NULL};
static const dash_spec nats_dash = {
    .file = "nats.json", .uid = "sluice-nats", .title = "NATS server",
    .var = "server_id", .var_query = "label_values(nats_varz_cpu, server_id)",
    .prefix = "nats_", .matcher = "server_id=~\"$server_id\"", .required = nats_required};

/* promtool has no `check query`: every query of both dashboards becomes a
 * recording rule, which `promtool check rules` parses. */
static void check_queries_parse(const char *rules_path, int expected)
{
    char *out = NULL;
    const char *args[] = {"check", "rules", rules_path, NULL};
    int rc = promtool(args, &out);
    char want[64];
    snprintf(want, sizeof want, "SUCCESS: %d rules found", expected);
    CHECK_MSG(rc == 0 && strstr(out, want), "a dashboard query is not PromQL (exit %d):\n%s", rc, out);
    free(out);
}

static void check_one(const dash_spec *spec)
{
    char *path = th_path("dashboard_queries.yml");
    FILE *rules = fopen(path, "w");
    CHECK(rules);
    fputs("groups:\n", rules);
    check_dashboard(spec, rules);
    CHECK(fclose(rules) == 0);
    int n = th_count_in_file(path, "- record: ");
    CHECK(n > 0);
    check_queries_parse(path, n);
    free(path);
}

SL_TEST(deploy_grafana_sluice_dashboard, 60)
{
    check_one(&sluice_dash);
}

SL_TEST(deploy_grafana_nats_dashboard, 60)
{
    check_one(&nats_dash);
}
