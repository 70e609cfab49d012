/* fuzz_config.c - the configuration parser (config.c sl_config_load), with
 * flags and environment variables made from the input.
 *
 * Input: the first byte picks the command; the rest is split at NUL bytes
 * into at most 48 tokens. A token that starts with 0x01 sets an environment
 * variable: its next byte picks the variable (NATS_* and SLUICE_*, plus one
 * that is no setting) and the rest is the value. Any other token is an
 * argument. The environment is cleared of every setting before each input,
 * so inputs do not leak into each other. Checks, when the load succeeds:
 *   - no string setting is NULL, every integer is in its range (README),
 *     the job name is a subject token, the ledger's <job> is filled in;
 *   - sl_config_export followed by a load without flags gives back the
 *     same settings (what `sluice run` relies on to configure its children);
 * and when it fails, that a message says why. Leaks show through ASan. */
#include <stddef.h>

#include "config.h"
#include "fuzz.h"

static const char *const envs[] = {
    "NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_CA", "NATS_CERT", "NATS_KEY",
    "SLUICE_CONNECT_TIMEOUT_MS", "SLUICE_JOB", "SLUICE_LOG_FORMAT", "SLUICE_LOG_LEVEL", "SLUICE_HTTP",
    "SLUICE_SOURCE", "SLUICE_OBJECTS", "SLUICE_CHUNK_SIZE", "SLUICE_LEDGER", "SLUICE_LEASE_MS",
    "SLUICE_MAX_ATTEMPTS", "SLUICE_LINGER", "SLUICE_FRESH", "SLUICE_TRANSFORM", "SLUICE_WORK_MS",
    "SLUICE_WORK_JITTER_MS", "SLUICE_SINK", "SLUICE_MAPPERS", "SLUICE_SAVERS", "SLUICE_NATS_SERVER",
    "SLUICE_MONITOR", "SLUICE_PROMETHEUS", "SLUICE_NATS_MONITOR", "SLUICE_PROGRESS_MS", "SLUICE_NOT_A_SETTING",
};
#define NENVS (sizeof envs / sizeof envs[0])

static const sl_command cmds[] = {SL_CMD_RUN, SL_CMD_FETCHER, SL_CMD_MAPPER, SL_CMD_SAVER, SL_CMD_STATUS,
                                  SL_CMD_EXPORTER};

#define S(f) offsetof(sl_config, f)
static const size_t strs[] = {S(nats_url), S(nats_user), S(nats_password), S(nats_token), S(nats_creds),
                              S(nats_ca), S(nats_cert), S(nats_key), S(job), S(log_format), S(log_level),
                              S(http), S(source), S(ledger), S(transform), S(sink), S(nats_server),
                              S(prometheus), S(nats_monitor)};
static const struct {
    size_t off;
    int64_t min, max;
} ints[] = {
    {S(connect_timeout_ms), 100, 600000}, {S(objects), 1, INT64_C(1000000000000)},
    {S(chunk_size), 1, 100000},           {S(lease_ms), 50, 86400000},
    {S(max_attempts), 1, 1000},           {S(work_ms), 0, 86400000},
    {S(work_jitter_ms), 0, 86400000},     {S(mappers), 1, 1000},
    {S(savers), 1, 100},                  {S(progress_ms), 0, 3600000},
};
static const size_t bools[] = {S(linger), S(fresh), S(monitor)};
#define N(a) (sizeof a / sizeof a[0])

static const char *str_at(const sl_config *c, size_t off) { return *(char *const *)((const char *)c + off); }
static int64_t int_at(const sl_config *c, size_t off) { return *(const int64_t *)((const char *)c + off); }
static bool bool_at(const sl_config *c, size_t off) { return *(const bool *)((const char *)c + off); }

static void clear_env(void)
{
    for (size_t i = 0; i < NENVS; i++)
        unsetenv(envs[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    clear_env();
    sl_command cmd = cmds[data[0] % N(cmds)];
    char *text = fz_cstr(data + 1, size - 1);
    char *argv[48];
    int argc = 0;
    for (char *p = text; p <= text + (size - 1) && argc < (int)N(argv); p += strlen(p) + 1) {
        if (p[0] == '\x01' && p[1]) {
            setenv(envs[(unsigned char)p[1] % NENVS], p + 2, 1);
            continue;
        }
        argv[argc++] = p;
    }

    sl_config cfg;
    bool help = true;
    sl_status st = sl_config_load(&cfg, cmd, argc, argv, &help);
    if (st != SL_OK) {
        FZ_CHECK(st == SL_EINVAL);
        FZ_CHECK(sl_errmsg()[0] != '\0');
    } else if (!help) {
        for (size_t i = 0; i < N(strs); i++)
            FZ_CHECK(str_at(&cfg, strs[i]) != NULL);
        for (size_t i = 0; i < N(ints); i++)
            FZ_CHECK(int_at(&cfg, ints[i].off) >= ints[i].min && int_at(&cfg, ints[i].off) <= ints[i].max);
        size_t jl = strlen(cfg.job);
        FZ_CHECK(jl >= 1 && jl <= 64 && !strpbrk(cfg.job, " .*>\t\r\n"));
        FZ_CHECK(strcmp(cfg.ledger, "sluice-<job>.ledger") != 0);
        char want[80];
        snprintf(want, sizeof want, "sluice.%s", cfg.job);
        FZ_CHECK(strcmp(sl_config_prefix(&cfg), want) == 0);

        /* What run does for its children: export, then load from the
         * environment alone. */
        clear_env();
        sl_config_export(&cfg);
        sl_config again;
        bool help2 = true;
        FZ_CHECK(sl_config_load(&again, cmd, 0, NULL, &help2) == SL_OK && !help2);
        for (size_t i = 0; i < N(strs); i++)
            FZ_CHECK(strcmp(str_at(&cfg, strs[i]), str_at(&again, strs[i])) == 0);
        for (size_t i = 0; i < N(ints); i++)
            FZ_CHECK(int_at(&cfg, ints[i].off) == int_at(&again, ints[i].off));
        for (size_t i = 0; i < N(bools); i++)
            FZ_CHECK(bool_at(&cfg, bools[i]) == bool_at(&again, bools[i]));
        sl_config_free(&again);
    }
    sl_config_free(&cfg);
    clear_env();
    free(text);
    return 0;
}
