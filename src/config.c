/* config.c - the table of settings and the one parser that fills them. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

typedef enum { T_STR, T_INT, T_BOOL } opt_type;

typedef struct {
    const char *flag;  /* without the leading "--" */
    const char *env;
    const char *arg;   /* placeholder in --help, NULL for booleans */
    opt_type type;
    size_t offset;
    const char *def;   /* default, as it would be typed */
    int64_t min, max;  /* range of T_INT */
    unsigned cmds;     /* sl_command bits that take it */
    const char *help;
    /* Refuses a value beyond type and range; NULL accepts any. */
    sl_status (*check)(const char *value, const char *from);
} opt;

/* A field or table name: letters, digits and _, not starting with a digit,
 * so it can be quoted into SQL without escaping and read in a JSON path. */
static sl_status check_name(const char *v, const char *from)
{
    size_t n = strlen(v);
    bool ok = n > 0 && n <= 63 && !(v[0] >= '0' && v[0] <= '9');
    for (size_t i = 0; ok && i < n; i++)
        ok = (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') || (v[i] >= '0' && v[i] <= '9') ||
             v[i] == '_';
    if (!ok)
        return sl_fail(SL_EINVAL, "%s: \"%s\" must be 1 to 63 letters, digits or _, not starting with a digit",
                       from, v);
    return SL_OK;
}

/* A job name becomes a subject token: sluice.<job>.work. */
static sl_status check_job(const char *v, const char *from)
{
    if (!v[0] || strlen(v) > 64 || strpbrk(v, " .*>\t\r\n"))
        return sl_fail(SL_EINVAL, "%s: \"%s\" must be a NATS subject token of 1 to 64 characters "
                                  "(no spaces, dots, * or >)", from, v);
    return SL_OK;
}

#define ALL (SL_CMD_RUN | SL_CMD_FETCHER | SL_CMD_MAPPER | SL_CMD_SAVER | SL_CMD_STATUS | SL_CMD_EXPORTER)
#define ROLES (SL_CMD_FETCHER | SL_CMD_MAPPER | SL_CMD_SAVER | SL_CMD_EXPORTER)
#define RF (SL_CMD_RUN | SL_CMD_FETCHER)
#define RM (SL_CMD_RUN | SL_CMD_MAPPER)
#define RS (SL_CMD_RUN | SL_CMD_SAVER)
#define OFF(f) offsetof(sl_config, f)

static const opt opts[] = {
    {"nats-url", "NATS_URL", "URLS", T_STR, OFF(nats_url), "nats://127.0.0.1:4222", 0, 0,
     ALL, "NATS server(s), comma-separated for a cluster (run: a private server is started when unset)", NULL},
    {"nats-user", "NATS_USER", "USER", T_STR, OFF(nats_user), "", 0, 0, ALL, "NATS user name", NULL},
    {"nats-password", "NATS_PASSWORD", "PASS", T_STR, OFF(nats_password), "", 0, 0, ALL,
     "NATS password (prefer the variable: flags show in ps)", NULL},
    {"nats-token", "NATS_TOKEN", "TOKEN", T_STR, OFF(nats_token), "", 0, 0, ALL, "NATS authorization token", NULL},
    {"nats-creds", "NATS_CREDS", "FILE", T_STR, OFF(nats_creds), "", 0, 0, ALL,
     "NATS credentials file (JWT and nkey seed)", NULL},
    {"nats-nkey", "NATS_NKEY", "PUBKEY", T_STR, OFF(nats_nkey), "", 0, 0, ALL,
     "NATS NKey user (public key, U...); with --nats-nkey-seed", NULL},
    {"nats-nkey-seed", "NATS_NKEY_SEED", "FILE", T_STR, OFF(nats_nkey_seed), "", 0, 0, ALL,
     "file holding that NKey user's seed (SU...)", NULL},
    {"nats-ca", "NATS_CA", "FILE", T_STR, OFF(nats_ca), "", 0, 0, ALL, "CA certificates that verify the server (turns TLS on)", NULL},
    {"nats-cert", "NATS_CERT", "FILE", T_STR, OFF(nats_cert), "", 0, 0, ALL, "TLS client certificate", NULL},
    {"nats-key", "NATS_KEY", "FILE", T_STR, OFF(nats_key), "", 0, 0, ALL, "TLS client key", NULL},
    {"connect-timeout-ms", "SLUICE_CONNECT_TIMEOUT_MS", "MS", T_INT, OFF(connect_timeout_ms), "5000", 100,
     600000, ALL, "give up connecting to NATS after this long", NULL},
    {"job", "SLUICE_JOB", "NAME", T_STR, OFF(job), "default", 0, 0, ALL,
     "job name; subjects are sluice.<job>.*", check_job},
    {"log-format", "SLUICE_LOG_FORMAT", "FMT", T_STR, OFF(log_format), "logfmt", 0, 0, ALL | SL_CMD_MOCKAPI,
     "logfmt or json", NULL},
    {"log-level", "SLUICE_LOG_LEVEL", "LEVEL", T_STR, OFF(log_level), "info", 0, 0, ALL | SL_CMD_MOCKAPI,
     "debug, info, warn or error", NULL},
    {"http", "SLUICE_HTTP", "ADDR", T_STR, OFF(http), "", 0, 0, ROLES | SL_CMD_MOCKAPI,
     "serve /metrics, /healthz and /readyz on HOST:PORT or :PORT (nats-exporter: :7777 when unset; "
     "mock-api: its API, 127.0.0.1:8080 when unset)", NULL},
    {"source", "SLUICE_SOURCE", "URI", T_STR, OFF(source), "gen:users", 0, 0, RF,
     "where the objects come from: gen:users[?count=N&seed=S], file:PATH, http(s)://URL-TEMPLATE", NULL},
    {"objects", "SLUICE_OBJECTS", "N", T_INT, OFF(objects), "100000", 1, INT64_C(1000000000000),
     RF | SL_CMD_MOCKAPI,
     "number of objects the generator makes (http: when the API sends no X-Total-Count)", NULL},
    {"source-timeout-ms", "SLUICE_SOURCE_TIMEOUT_MS", "MS", T_INT, OFF(source_timeout_ms), "30000", 100,
     3600000, RF, "http source: give up one request after this long", NULL},
    {"source-retries", "SLUICE_SOURCE_RETRIES", "N", T_INT, OFF(source_retries), "8", 0, 100, RF,
     "http source: retries of a request that failed with 5xx or a connection error", NULL},
    {"chunk-size", "SLUICE_CHUNK_SIZE", "C", T_INT, OFF(chunk_size), "100", 1, 100000, RF, "objects per chunk", NULL},
    {"ledger", "SLUICE_LEDGER", "PATH", T_STR, OFF(ledger), "sluice-<job>.ledger", 0, 0, RF,
     "the fetcher's record of chunk states (SQLite); a restarted fetcher resumes from it", NULL},
    {"lease-ms", "SLUICE_LEASE_MS", "MS", T_INT, OFF(lease_ms), "10000", 50, 86400000, RF,
     "a chunk not confirmed or extended within this is sent again", NULL},
    {"max-attempts", "SLUICE_MAX_ATTEMPTS", "K", T_INT, OFF(max_attempts), "5", 1, 1000, RF,
     "a chunk that failed this many times is dead-lettered", NULL},
    {"linger", "SLUICE_LINGER", NULL, T_BOOL, OFF(linger), "false", 0, 0, SL_CMD_FETCHER,
     "stay up after the job is done, answering done and status (Kubernetes)", NULL},
    {"fresh", "SLUICE_FRESH", NULL, T_BOOL, OFF(fresh), "false", 0, 0, RF,
     "forget the ledger and start the job over", NULL},
    {"transform", "SLUICE_TRANSFORM", "SPEC", T_STR, OFF(transform), "fullname", 0, 0, RM,
     "what a mapper does to each object: fullname, identity or jq:FILTER", NULL},
    {"work-ms", "SLUICE_WORK_MS", "X", T_INT, OFF(work_ms), "0", 0, 86400000, RM,
     "simulated heavy processing per chunk, in ms", NULL},
    {"work-jitter-ms", "SLUICE_WORK_JITTER_MS", "J", T_INT, OFF(work_jitter_ms), "0", 0, 86400000, RM,
     "add a random 0..J ms to --work-ms per chunk", NULL},
    {"cpu-work-ms", "SLUICE_CPU_WORK_MS", "X", T_INT, OFF(cpu_work_ms), "0", 0, 86400000, RM,
     "simulated heavy processing per chunk that burns CPU, in ms", NULL},
    {"prefetch-lead-ms", "SLUICE_PREFETCH_LEAD_MS", "MS", T_INT, OFF(prefetch_lead_ms), "20", 0, 86400000, RM,
     "ask for the next chunk this long before the current one should be done (0: only when free)", NULL},
    {"in-flight", "SLUICE_IN_FLIGHT", "N", T_INT, OFF(in_flight), "4", 1, 64, RM,
     "chunks sent to the savers and not yet answered for, at most (back-pressure)", NULL},
    {"sink", "SLUICE_SINK", "URI", T_STR, OFF(sink), "sqlite:sluice.db", 0, 0, RS,
     "where results are saved: sqlite:PATH, postgres://..., ndjson:PATH", NULL},
    {"id", "SLUICE_ID", "FIELD", T_STR, OFF(id), "id", 0, 0, RS,
     "the field of a mapped object that is its key (an object without it is dead-lettered)", check_name},
    {"group-commit-ms", "SLUICE_GROUP_COMMIT_MS", "MS", T_INT, OFF(group_commit_ms), "50", 0, 10000, RS,
     "a transaction takes every chunk that arrives within this, then commits (0: one per chunk)", NULL},
    {"table", "SLUICE_TABLE", "NAME", T_STR, OFF(table), "objects", 0, 0, RS,
     "the sink's table of objects (others: chunks, dead_letters, or NAME_chunks, NAME_dead_letters)",
     check_name},
    {"mappers", "SLUICE_MAPPERS", "N", T_INT, OFF(mappers), "4", 1, 1000, SL_CMD_RUN, "mapper processes", NULL},
    {"savers", "SLUICE_SAVERS", "M", T_INT, OFF(savers), "1", 1, 100, SL_CMD_RUN, "saver processes", NULL},
    {"nats-server", "SLUICE_NATS_SERVER", "PATH", T_STR, OFF(nats_server), "nats-server", 0, 0, SL_CMD_RUN,
     "the nats-server binary run starts when NATS_URL is unset", NULL},
    {"monitor", "SLUICE_MONITOR", NULL, T_BOOL, OFF(monitor), "false", 0, 0, SL_CMD_RUN,
     "also run the NATS exporter and a local Prometheus scraping everything, and print its URL", NULL},
    {"prometheus", "SLUICE_PROMETHEUS", "PATH", T_STR, OFF(prometheus), "prometheus", 0, 0, SL_CMD_RUN,
     "the Prometheus binary --monitor starts", NULL},
    {"nats-monitor", "SLUICE_NATS_MONITOR", "URL", T_STR, OFF(nats_monitor), "http://127.0.0.1:8222", 0, 0,
     SL_CMD_EXPORTER, "nats-server's monitoring endpoint (its -m port)", NULL},
    {"seed", "SLUICE_SEED", "S", T_INT, OFF(seed), "1", 0, INT64_MAX, SL_CMD_MOCKAPI,
     "the generator's seed (the same as gen:users?seed=S)", NULL},
    {"fail-percent", "SLUICE_FAIL_PERCENT", "P", T_INT, OFF(fail_percent), "0", 0, 100, SL_CMD_MOCKAPI,
     "answer this share of requests with 500", NULL},
    {"slow-percent", "SLUICE_SLOW_PERCENT", "P", T_INT, OFF(slow_percent), "0", 0, 100, SL_CMD_MOCKAPI,
     "delay this share of responses by --slow-ms", NULL},
    {"slow-ms", "SLUICE_SLOW_MS", "MS", T_INT, OFF(slow_ms), "1000", 0, 600000, SL_CMD_MOCKAPI,
     "how long a slow response waits", NULL},
    {"stats", "SLUICE_STATS", "FILE", T_STR, OFF(stats), "", 0, 0, SL_CMD_RUN,
     "write the job's figures (wall time, CPU seconds and peak RSS by role) to FILE as key=value lines", NULL},
    {"progress-ms", "SLUICE_PROGRESS_MS", "MS", T_INT, OFF(progress_ms), "0", 0, 3600000, SL_CMD_RUN,
     "progress update interval (0: 200 ms on a terminal, 2000 ms otherwise)", NULL},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const struct {
    sl_command cmd;
    const char *name;
    const char *usage;
} commands[] = {
    {SL_CMD_RUN, "run",
     "Runs a whole job on this machine: a private nats-server (unless NATS_URL\n"
     "is set), the fetcher, the mappers and the savers as child processes,\n"
     "restarting any that dies. Exits with the job: 0 done, 3 dead letters,\n"
     "1 failure, 2 usage, 130 interrupted."},
    {SL_CMD_FETCHER, "fetcher",
     "Runs the job's one fetcher: splits the source into chunks, leases each\n"
     "to a mapper that asks, re-sends what is not confirmed in time and keeps\n"
     "the ledger. Exits 0 when every chunk is saved, 3 if some are dead."},
    {SL_CMD_MAPPER, "mapper",
     "Runs one mapper: asks the fetcher for a chunk whenever it is free,\n"
     "transforms every object and sends the result to the savers."},
    {SL_CMD_SAVER, "saver",
     "Runs one saver: writes each mapped chunk to the sink in one transaction,\n"
     "then confirms it to the fetcher."},
    {SL_CMD_STATUS, "status", "Asks the job's fetcher where the job stands and prints it."},
    {SL_CMD_EXPORTER, "nats-exporter",
     "Serves a nats-server's monitoring data (/varz, /connz) as Prometheus\n"
     "metrics on /metrics, with the names the official prometheus-nats-exporter\n"
     "gives them with -prefix=nats (nats_varz_cpu, nats_connz_num_connections, ...)."},
    {SL_CMD_MOCKAPI, "mock-api",
     "Serves the generator's users over HTTP, as a paginated JSON API for the\n"
     "http source to read: GET /users?page=P&size=S (P from 0) or\n"
     "/users?offset=O&limit=L, a JSON array with X-Total-Count. It can fail or\n"
     "slow down a share of requests, to test what reads it."},
};

static const char *command_name(sl_command cmd)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].cmd == cmd)
            return commands[i].name;
    return "?";
}

void sl_config_help(sl_command cmd, FILE *out)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].cmd == cmd)
            fprintf(out, "Usage: sluice %s [flags]\n\n%s\n\nFlags (default, environment variable):\n",
                    commands[i].name, commands[i].usage);
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &opts[i];
        if (!(o->cmds & cmd))
            continue;
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->flag, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(out, "  %-26s %s\n  %-26s [%s%s%s] %s\n", left, o->help, "",
                o->def[0] ? "default " : "no default", o->def, "", o->env);
    }
    fprintf(out, "  %-26s %s\n", "-h, --help", "show this help");
}

static sl_status set_value(sl_config *cfg, const opt *o, const char *value, const char *from)
{
    char *field = (char *)cfg + o->offset;
    switch (o->type) {
    case T_STR: {
        char **s = (char **)field;
        if (o->check) {
            sl_status st = o->check(value, from);
            if (st)
                return st;
        }
        free(*s);
        *s = sl_xstrdup(value);
        return SL_OK;
    }
    case T_INT: {
        errno = 0;
        char *end = NULL;
        long long v = strtoll(value, &end, 10);
        if (errno == ERANGE || end == value || *end != '\0' || v < o->min || v > o->max)
            return sl_fail(SL_EINVAL, "%s: \"%s\" is not an integer in %" PRId64 "..%" PRId64,
                           from, value, o->min, o->max);
        *(int64_t *)field = v;
        return SL_OK;
    }
    case T_BOOL: {
        bool *b = (bool *)field;
        if (!strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "yes"))
            *b = true;
        else if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "no") || !value[0])
            *b = false;
        else
            return sl_fail(SL_EINVAL, "%s: \"%s\" is not true or false", from, value);
        return SL_OK;
    }
    }
    return SL_OK;
}

sl_status sl_config_load(sl_config *cfg, sl_command cmd, int argc, char **argv, bool *help)
{
    memset(cfg, 0, sizeof *cfg);
    *help = false;
    char from[96];
    /* Defaults for every field, so no field is ever left NULL. */
    for (size_t i = 0; i < NOPTS; i++) {
        snprintf(from, sizeof from, "default of --%s", opts[i].flag);
        sl_status st = set_value(cfg, &opts[i], opts[i].def, from);
        SL_ASSERT(st == SL_OK);
    }
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (!(opts[i].cmds & cmd) || !v)
            continue;
        snprintf(from, sizeof from, "%s", opts[i].env);
        sl_status st = set_value(cfg, &opts[i], v, from);
        if (st)
            return st;
        if (opts[i].offset == OFF(nats_url))
            cfg->nats_url_given = true;
    }
    for (int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            *help = true;
            return SL_OK;
        }
        if (strncmp(arg, "--", 2) != 0)
            return sl_fail(SL_EINVAL, "unexpected argument \"%s\" (see sluice %s --help)", arg,
                           command_name(cmd));
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt *o = NULL;
        for (size_t i = 0; i < NOPTS; i++)
            if ((opts[i].cmds & cmd) && strlen(opts[i].flag) == nlen &&
                !strncmp(opts[i].flag, name, nlen))
                o = &opts[i];
        if (!o)
            return sl_fail(SL_EINVAL, "unknown flag \"--%.*s\" for sluice %s (see --help)", (int)nlen,
                           name, command_name(cmd));
        const char *value;
        if (eq)
            value = eq + 1;
        else if (o->type == T_BOOL)
            value = "true";
        else if (a + 1 < argc)
            value = argv[++a];
        else
            return sl_fail(SL_EINVAL, "flag --%s needs a value", o->flag);
        snprintf(from, sizeof from, "--%s", o->flag);
        sl_status st = set_value(cfg, o, value, from);
        if (st)
            return st;
        if (o->offset == OFF(nats_url))
            cfg->nats_url_given = true;
    }
    if (!strcmp(cfg->ledger, "sluice-<job>.ledger")) {
        sl_buf b = SL_BUF_INIT;
        sl_buf_printf(&b, "sluice-%s.ledger", cfg->job);
        free(cfg->ledger);
        cfg->ledger = b.data;
    }
    return SL_OK;
}

void sl_config_export(const sl_config *cfg)
{
    char num[32];
    for (size_t i = 0; i < NOPTS; i++) {
        const char *field = (const char *)cfg + opts[i].offset;
        const char *v = NULL;
        switch (opts[i].type) {
        case T_STR: v = *(char *const *)field; break;
        case T_INT: snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)field); v = num; break;
        case T_BOOL: v = *(const bool *)field ? "true" : "false"; break;
        }
        setenv(opts[i].env, v, 1);
    }
}

void sl_config_free(sl_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].type == T_STR) {
            char **s = (char **)((char *)cfg + opts[i].offset);
            free(*s);
            *s = NULL;
        }
}

const char *sl_config_prefix(const sl_config *cfg)
{
    static _Thread_local char prefix[160];
    snprintf(prefix, sizeof prefix, "sluice.%s", cfg->job);
    return prefix;
}
