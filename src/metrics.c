/* metrics.c - registry and text exposition (Prometheus format 0.0.4). */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "status.h"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "dev"
#endif

typedef enum { T_COUNTER, T_GAUGE, T_HISTOGRAM } mtype;

struct sl_metric {
    struct sl_metrics *reg;
    int fam;          /* index of its family in reg->fam */
    char *labels;     /* `k="v",...` with role and sluice_job first */
    double value;     /* counter, gauge; histogram: sum */
    uint64_t count;   /* histogram */
    uint64_t *bucket; /* histogram: per bound, not cumulative */
};

typedef struct {
    char *name, *help;
    mtype type;
    double *bounds;
    int nbounds;
    sl_metric **series;
    int nseries;
} family;

struct sl_metrics {
    pthread_mutex_t mu;
    char *base; /* role="..",sluice_job=".." */
    family *fam;
    int nfam;
    void (*collect[4])(void *);
    void *collect_arg[4];
    int ncollect;
    double started; /* unix seconds */
    sl_metric *start_time, *cpu, *rss, *build;
};

const double sl_metrics_duration_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,  0.5,    1,     2.5,  5,     10,   30, 60};
const int sl_metrics_duration_nbounds = sizeof sl_metrics_duration_bounds / sizeof sl_metrics_duration_bounds[0];

void sl_metrics_escape(sl_buf *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sl_buf_putc(out, '\\'), sl_buf_putc(out, *v);
        else if (*v == '\n')
            sl_buf_puts(out, "\\n");
        else
            sl_buf_putc(out, *v);
    }
}

void sl_metrics_value(sl_buf *out, double v)
{
    if (isnan(v))
        sl_buf_puts(out, "NaN");
    else if (isinf(v))
        sl_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(long long)v && fabs(v) < 1e15)
        sl_buf_printf(out, "%lld", (long long)v);
    else {
        /* The shortest text that reads back as the same double: 0.1, not
         * 0.10000000000000001. */
        char text[40];
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(text, sizeof text, "%.*g", prec, v);
            if (strtod(text, NULL) == v)
                break;
        }
        sl_buf_puts(out, text);
    }
}

static sl_metric *add(sl_metrics *m, mtype type, const char *name, const char *help, const char *labels,
                      const double *bounds, int nbounds)
{
    pthread_mutex_lock(&m->mu);
    family *f = NULL;
    for (int i = 0; i < m->nfam; i++)
        if (!strcmp(m->fam[i].name, name))
            f = &m->fam[i];
    if (!f) {
        m->fam = sl_xrealloc(m->fam, (size_t)(m->nfam + 1) * sizeof *m->fam);
        f = &m->fam[m->nfam++];
        memset(f, 0, sizeof *f);
        f->name = sl_xstrdup(name);
        f->help = sl_xstrdup(help);
        f->type = type;
        if (type == T_HISTOGRAM) {
            f->bounds = sl_xmalloc((size_t)nbounds * sizeof *f->bounds);
            memcpy(f->bounds, bounds, (size_t)nbounds * sizeof *bounds);
            f->nbounds = nbounds;
        }
    }
    SL_ASSERT(f->type == type);
    sl_buf all = SL_BUF_INIT;
    sl_buf_puts(&all, m->base);
    if (labels && labels[0]) {
        sl_buf_putc(&all, ',');
        sl_buf_puts(&all, labels);
    }
    sl_metric *s = NULL;
    for (int i = 0; i < f->nseries; i++)
        if (!strcmp(f->series[i]->labels, all.data))
            s = f->series[i];
    if (!s) {
        s = sl_xcalloc(1, sizeof *s);
        s->reg = m;
        s->fam = (int)(f - m->fam);
        s->labels = all.data;
        all.data = NULL;
        if (type == T_HISTOGRAM)
            s->bucket = sl_xcalloc((size_t)f->nbounds, sizeof *s->bucket);
        f->series = sl_xrealloc(f->series, (size_t)(f->nseries + 1) * sizeof *f->series);
        f->series[f->nseries++] = s;
    }
    sl_buf_free(&all);
    pthread_mutex_unlock(&m->mu);
    return s;
}

sl_metric *sl_metrics_counter(sl_metrics *m, const char *name, const char *help, const char *labels)
{
    return add(m, T_COUNTER, name, help, labels, NULL, 0);
}

sl_metric *sl_metrics_gauge(sl_metrics *m, const char *name, const char *help, const char *labels)
{
    return add(m, T_GAUGE, name, help, labels, NULL, 0);
}

sl_metric *sl_metrics_histogram(sl_metrics *m, const char *name, const char *help, const char *labels,
                                const double *bounds, int nbounds)
{
    return add(m, T_HISTOGRAM, name, help, labels, bounds, nbounds);
}

void sl_metric_add(sl_metric *c, double v)
{
    pthread_mutex_lock(&c->reg->mu);
    c->value += v;
    pthread_mutex_unlock(&c->reg->mu);
}

void sl_metric_inc(sl_metric *c)
{
    sl_metric_add(c, 1);
}

void sl_metric_set(sl_metric *g, double v)
{
    pthread_mutex_lock(&g->reg->mu);
    g->value = v;
    pthread_mutex_unlock(&g->reg->mu);
}

void sl_metric_observe(sl_metric *h, double v)
{
    sl_metrics *m = h->reg;
    pthread_mutex_lock(&m->mu);
    family *f = &m->fam[h->fam];
    SL_ASSERT(f->type == T_HISTOGRAM);
    for (int b = 0; b < f->nbounds; b++)
        if (v <= f->bounds[b]) {
            h->bucket[b]++;
            break;
        }
    h->count++;
    h->value += v;
    pthread_mutex_unlock(&m->mu);
}

void sl_metrics_on_collect(sl_metrics *m, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&m->mu);
    SL_ASSERT(m->ncollect < 4);
    m->collect[m->ncollect] = fn;
    m->collect_arg[m->ncollect++] = arg;
    pthread_mutex_unlock(&m->mu);
}

double sl_metric_get(sl_metric *m)
{
    pthread_mutex_lock(&m->reg->mu);
    double v = m->reg->fam[m->fam].type == T_HISTOGRAM ? (double)m->count : m->value;
    pthread_mutex_unlock(&m->reg->mu);
    return v;
}

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

sl_metrics *sl_metrics_new(const char *role, const char *job)
{
    sl_metrics *m = sl_xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    sl_buf b = SL_BUF_INIT;
    sl_buf_puts(&b, "role=\"");
    sl_metrics_escape(&b, role);
    sl_buf_puts(&b, "\",sluice_job=\"");
    sl_metrics_escape(&b, job);
    sl_buf_putc(&b, '"');
    m->base = b.data;
    m->started = unix_now();
    m->start_time = sl_metrics_gauge(m, "process_start_time_seconds",
                                     "Start time of the process since unix epoch in seconds.", "");
    sl_metric_set(m->start_time, m->started);
    m->cpu = sl_metrics_counter(m, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "");
    m->rss = sl_metrics_gauge(m, "process_resident_memory_bytes", "Resident memory size in bytes.", "");
    m->build = sl_metrics_gauge(m, "sluice_build_info", "Always 1; the labels say which sluice this is.",
                                "version=\"" SLUICE_VERSION "\"");
    sl_metric_set(m->build, 1);
    return m;
}

/* process_* from the kernel, read at each scrape. */
static void process_stats(sl_metrics *m)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        sl_metric_set(m->cpu, (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                                  (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
    FILE *fp = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (fp) {
        if (fscanf(fp, "%ld %ld", &pages, &resident) == 2)
            sl_metric_set(m->rss, (double)resident * (double)sysconf(_SC_PAGESIZE));
        fclose(fp);
    }
}

static const char *type_name(mtype t)
{
    return t == T_COUNTER ? "counter" : t == T_GAUGE ? "gauge" : "histogram";
}

static void sample(sl_buf *out, const char *name, const char *suffix, const char *labels, const char *extra,
                   double v)
{
    sl_buf_printf(out, "%s%s{%s%s%s} ", name, suffix, labels, extra ? "," : "", extra ? extra : "");
    sl_metrics_value(out, v);
    sl_buf_putc(out, '\n');
}

void sl_metrics_render(sl_metrics *m, sl_buf *out)
{
    pthread_mutex_lock(&m->mu);
    int n = m->ncollect;
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < n; i++)
        m->collect[i](m->collect_arg[i]);
    process_stats(m);
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->nfam; i++) {
        family *f = &m->fam[i];
        sl_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, type_name(f->type));
        for (int k = 0; k < f->nseries; k++) {
            sl_metric *s = f->series[k];
            if (f->type != T_HISTOGRAM) {
                sample(out, f->name, "", s->labels, NULL, s->value);
                continue;
            }
            uint64_t cum = 0;
            char le[64];
            for (int b = 0; b < f->nbounds; b++) {
                cum += s->bucket[b];
                sl_buf tmp = SL_BUF_INIT;
                sl_metrics_value(&tmp, f->bounds[b]);
                snprintf(le, sizeof le, "le=\"%s\"", tmp.data);
                sl_buf_free(&tmp);
                sample(out, f->name, "_bucket", s->labels, le, (double)cum);
            }
            sample(out, f->name, "_bucket", s->labels, "le=\"+Inf\"", (double)s->count);
            sample(out, f->name, "_sum", s->labels, NULL, s->value);
            sample(out, f->name, "_count", s->labels, NULL, (double)s->count);
        }
    }
    pthread_mutex_unlock(&m->mu);
}

void sl_metrics_destroy(sl_metrics *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->nfam; i++) {
        family *f = &m->fam[i];
        for (int k = 0; k < f->nseries; k++) {
            free(f->series[k]->labels);
            free(f->series[k]->bucket);
            free(f->series[k]);
        }
        free(f->series);
        free(f->name);
        free(f->help);
        free(f->bounds);
    }
    free(m->fam);
    free(m->base);
    pthread_mutex_destroy(&m->mu);
    free(m);
}
