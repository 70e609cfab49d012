/* test_config.c - defaults, environment, flags, range checks and --help.
 *
 * Each test runs in its own process, so setenv here touches nobody else.
 * Every test first removes NATS_* and SLUICE_* variables (other than the
 * test runner's own) that the environment of the run may carry. */
#include "test.h"

#include <stdbool.h>

#include "config.h"

extern char **environ;

static void clean_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; e && *e; e++) {
            const char *eq = strchr(*e, '=');
            size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
            if (n >= sizeof name)
                continue;
            if (strncmp(*e, "NATS_", 5) != 0 && strncmp(*e, "SLUICE_", 7) != 0)
                continue;
            if (!strncmp(*e, "SLUICE_BIN=", 11) || !strncmp(*e, "SLUICE_KEEP_TMP=", 16) ||
                !strncmp(*e, "SLUICE_TEST_", 12))
                continue;
            memcpy(name, *e, n);
            name[n] = '\0';
            break;
        }
        if (!name[0])
            return;
        unsetenv(name);
    }
}

/* Loads with argv given as a NULL-terminated list. */
#define LOAD(cfg, cmd, help, ...)                                              \
    load_args(cfg, cmd, help, (const char *[]){__VA_ARGS__, NULL})

static sl_status load_args(sl_config *cfg, sl_command cmd, bool *help, const char **args)
{
    int argc = 0;
    while (args[argc])
        argc++;
    return sl_config_load(cfg, cmd, argc, (char **)args, help);
}

static sl_config load_ok(sl_command cmd, int argc, char **argv)
{
    sl_config cfg;
    bool help = true;
    sl_status st = sl_config_load(&cfg, cmd, argc, argv, &help);
    CHECK_MSG(st == SL_OK, "sl_config_load: %s", sl_errmsg());
    CHECK(!help);
    return cfg;
}

/* Expects SL_EINVAL with every one of the needles in the message. */
static void expect_einval(sl_command cmd, const char **args, const char *needle1,
                          const char *needle2)
{
    sl_config cfg;
    bool help = false;
    int argc = 0;
    while (args[argc])
        argc++;
    sl_status st = sl_config_load(&cfg, cmd, argc, (char **)args, &help);
    CHECK_MSG(st == SL_EINVAL, "accepted %s%s%s (status %d)", argc ? args[0] : "",
              argc > 1 ? " " : "", argc > 1 ? args[1] : "", (int)st);
    CHECK_MSG(strstr(sl_errmsg(), needle1) != NULL, "\"%s\" not in \"%s\"", needle1, sl_errmsg());
    if (needle2)
        CHECK_MSG(strstr(sl_errmsg(), needle2) != NULL, "\"%s\" not in \"%s\"", needle2,
                  sl_errmsg());
    sl_config_free(&cfg);
}

#define EXPECT_EINVAL(cmd, n1, n2, ...)                                        \
    expect_einval(cmd, (const char *[]){__VA_ARGS__, NULL}, n1, n2)

SL_TEST(config_defaults_fetcher, 5)
{
    clean_env();
    sl_config cfg = load_ok(SL_CMD_FETCHER, 0, NULL);
    CHECK_STR(cfg.source, "gen:users");
    CHECK_INT(cfg.objects, ==, 100000);
    CHECK_INT(cfg.chunk_size, ==, 100);
    CHECK_INT(cfg.lease_ms, ==, 10000);
    CHECK_INT(cfg.max_attempts, ==, 5);
    CHECK_STR(cfg.job, "default");
    CHECK_STR(cfg.ledger, "sluice-default.ledger");
    CHECK(!cfg.linger);
    CHECK(!cfg.fresh);
    CHECK_STR(cfg.nats_url, "nats://127.0.0.1:4222");
    CHECK(!cfg.nats_url_given);
    CHECK_STR(cfg.log_format, "logfmt");
    CHECK_STR(cfg.log_level, "info");
    CHECK_INT(cfg.connect_timeout_ms, ==, 5000);
    CHECK_STR(cfg.nats_user, "");
    CHECK_STR(cfg.nats_password, "");
    CHECK_STR(cfg.nats_token, "");
    CHECK_STR(cfg.nats_creds, "");
    CHECK_STR(cfg.nats_ca, "");
    CHECK_STR(cfg.nats_cert, "");
    CHECK_STR(cfg.nats_key, "");
    CHECK_STR(sl_config_prefix(&cfg), "sluice.default");
    sl_config_free(&cfg);
    /* Free leaves no dangling pointers, and a second free is harmless. */
    CHECK(cfg.job == NULL && cfg.ledger == NULL);
    sl_config_free(&cfg);
    sl_config_free(NULL);
}

SL_TEST(config_defaults_every_command, 5)
{
    clean_env();
    sl_config cfg = load_ok(SL_CMD_RUN, 0, NULL);
    CHECK_INT(cfg.objects, ==, 100000);
    CHECK_INT(cfg.chunk_size, ==, 100);
    CHECK_INT(cfg.mappers, ==, 4);
    CHECK_INT(cfg.savers, ==, 1);
    CHECK_STR(cfg.source, "gen:users");
    CHECK_STR(cfg.transform, "fullname");
    CHECK_STR(cfg.sink, "sqlite:sluice.db");
    CHECK_STR(cfg.job, "default");
    CHECK_INT(cfg.work_ms, ==, 0);
    CHECK_INT(cfg.lease_ms, ==, 10000);
    CHECK_INT(cfg.max_attempts, ==, 5);
    CHECK_STR(cfg.nats_server, "nats-server");
    CHECK(!cfg.nats_url_given);
    sl_config_free(&cfg);

    cfg = load_ok(SL_CMD_MAPPER, 0, NULL);
    CHECK_STR(cfg.transform, "fullname");
    CHECK_INT(cfg.work_ms, ==, 0);
    CHECK_INT(cfg.work_jitter_ms, ==, 0);
    CHECK_STR(cfg.job, "default");
    sl_config_free(&cfg);

    cfg = load_ok(SL_CMD_SAVER, 0, NULL);
    CHECK_STR(cfg.sink, "sqlite:sluice.db");
    CHECK_STR(cfg.job, "default");
    sl_config_free(&cfg);

    cfg = load_ok(SL_CMD_STATUS, 0, NULL);
    CHECK_STR(cfg.job, "default");
    CHECK_STR(sl_config_prefix(&cfg), "sluice.default");
    sl_config_free(&cfg);
}

SL_TEST(config_env_overrides_default_and_flag_overrides_env, 5)
{
    clean_env();
    setenv("SLUICE_OBJECTS", "5000", 1);
    setenv("SLUICE_CHUNK_SIZE", "50", 1);
    setenv("SLUICE_LEASE_MS", "2500", 1);
    setenv("SLUICE_SOURCE", "gen:other", 1);
    sl_config cfg = load_ok(SL_CMD_FETCHER, 0, NULL);
    CHECK_INT(cfg.objects, ==, 5000);
    CHECK_INT(cfg.chunk_size, ==, 50);
    CHECK_INT(cfg.lease_ms, ==, 2500);
    CHECK_STR(cfg.source, "gen:other");
    CHECK_INT(cfg.max_attempts, ==, 5); /* untouched */
    sl_config_free(&cfg);

    char *argv[] = {"--objects", "7000", "--source=gen:flag"};
    cfg = load_ok(SL_CMD_FETCHER, 3, argv);
    CHECK_INT(cfg.objects, ==, 7000);    /* flag beats env */
    CHECK_STR(cfg.source, "gen:flag");   /* flag beats env */
    CHECK_INT(cfg.chunk_size, ==, 50);   /* env beats default */
    CHECK_INT(cfg.lease_ms, ==, 2500);
    sl_config_free(&cfg);

    /* The last of a repeated flag wins. */
    char *argv2[] = {"--objects", "1", "--objects=2", "--objects", "3"};
    cfg = load_ok(SL_CMD_FETCHER, 5, argv2);
    CHECK_INT(cfg.objects, ==, 3);
    sl_config_free(&cfg);
}

SL_TEST(config_flag_forms, 5)
{
    clean_env();
    char *argv[] = {"--objects=42", "--chunk-size", "7", "--ledger=/tmp/x=y.ledger",
                    "--source", "gen:two words"};
    sl_config cfg = load_ok(SL_CMD_FETCHER, 6, argv);
    CHECK_INT(cfg.objects, ==, 42);
    CHECK_INT(cfg.chunk_size, ==, 7);
    /* Only the first '=' separates name and value. */
    CHECK_STR(cfg.ledger, "/tmp/x=y.ledger");
    CHECK_STR(cfg.source, "gen:two words");
    sl_config_free(&cfg);

    /* An empty value given with '=' is a value. */
    char *argv2[] = {"--nats-user=", "--job=x"};
    cfg = load_ok(SL_CMD_SAVER, 2, argv2);
    CHECK_STR(cfg.nats_user, "");
    CHECK_STR(cfg.job, "x");
    sl_config_free(&cfg);
}

SL_TEST(config_booleans, 5)
{
    clean_env();
    sl_config cfg;
    char *a1[] = {"--linger"};
    cfg = load_ok(SL_CMD_FETCHER, 1, a1);
    CHECK(cfg.linger);
    sl_config_free(&cfg);

    char *a2[] = {"--linger=false"};
    cfg = load_ok(SL_CMD_FETCHER, 1, a2);
    CHECK(!cfg.linger);
    sl_config_free(&cfg);

    char *a3[] = {"--linger=true", "--fresh=1"};
    cfg = load_ok(SL_CMD_FETCHER, 2, a3);
    CHECK(cfg.linger);
    CHECK(cfg.fresh);
    sl_config_free(&cfg);

    setenv("SLUICE_LINGER", "true", 1);
    cfg = load_ok(SL_CMD_FETCHER, 0, NULL);
    CHECK(cfg.linger);
    sl_config_free(&cfg);
    /* A flag overrides the variable, both ways. */
    cfg = load_ok(SL_CMD_FETCHER, 1, a2);
    CHECK(!cfg.linger);
    sl_config_free(&cfg);

    setenv("SLUICE_LINGER", "false", 1);
    cfg = load_ok(SL_CMD_FETCHER, 0, NULL);
    CHECK(!cfg.linger);
    sl_config_free(&cfg);
    cfg = load_ok(SL_CMD_FETCHER, 1, a1);
    CHECK(cfg.linger);
    sl_config_free(&cfg);

    setenv("SLUICE_LINGER", "yes", 1);
    cfg = load_ok(SL_CMD_FETCHER, 0, NULL);
    CHECK(cfg.linger);
    sl_config_free(&cfg);
    setenv("SLUICE_LINGER", "0", 1);
    cfg = load_ok(SL_CMD_FETCHER, 0, NULL);
    CHECK(!cfg.linger);
    sl_config_free(&cfg);

    setenv("SLUICE_LINGER", "garbage", 1);
    EXPECT_EINVAL(SL_CMD_FETCHER, "SLUICE_LINGER", "garbage", NULL);
    unsetenv("SLUICE_LINGER");

    /* A boolean flag does not swallow the next word. */
    char *a4[] = {"--linger", "--objects", "10"};
    cfg = load_ok(SL_CMD_FETCHER, 3, a4);
    CHECK(cfg.linger);
    CHECK_INT(cfg.objects, ==, 10);
    sl_config_free(&cfg);
    EXPECT_EINVAL(SL_CMD_FETCHER, "--linger", "maybe", "--linger=maybe");
}

SL_TEST(config_integer_range_checks, 5)
{
    clean_env();
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objects", "\"0\"", "--objects", "0");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objects", "-5", "--objects", "-5");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objects", "abc", "--objects", "abc");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objects", "99999999999999999999", "--objects",
                  "99999999999999999999");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objects", NULL, "--objects", "12abc");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objects", NULL, "--objects", "");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objects", NULL, "--objects", "1e5");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objects", NULL, "--objects", "0x10");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objects", NULL, "--objects", "1000000000001");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--lease-ms", "10", "--lease-ms", "10");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--lease-ms", NULL, "--lease-ms=49");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--chunk-size", NULL, "--chunk-size", "100001");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--max-attempts", NULL, "--max-attempts", "0");
    EXPECT_EINVAL(SL_CMD_RUN, "--mappers", NULL, "--mappers", "0");
    EXPECT_EINVAL(SL_CMD_RUN, "--savers", NULL, "--savers", "101");
    EXPECT_EINVAL(SL_CMD_MAPPER, "--work-ms", NULL, "--work-ms", "-1");

    /* The edges themselves are accepted. */
    char *argv[] = {"--objects", "1000000000000", "--lease-ms", "50", "--chunk-size", "1",
                    "--max-attempts", "1000"};
    sl_config cfg = load_ok(SL_CMD_FETCHER, 8, argv);
    CHECK_INT(cfg.objects, ==, INT64_C(1000000000000));
    CHECK_INT(cfg.lease_ms, ==, 50);
    CHECK_INT(cfg.chunk_size, ==, 1);
    CHECK_INT(cfg.max_attempts, ==, 1000);
    sl_config_free(&cfg);
}

SL_TEST(config_bad_env_value_names_the_variable, 5)
{
    clean_env();
    setenv("SLUICE_OBJECTS", "lots", 1);
    EXPECT_EINVAL(SL_CMD_FETCHER, "SLUICE_OBJECTS", "lots", NULL);
    /* A valid flag does not excuse a broken variable: the operator should
     * hear about it rather than have it silently shadowed. */
    EXPECT_EINVAL(SL_CMD_FETCHER, "SLUICE_OBJECTS", NULL, "--objects", "10");
    unsetenv("SLUICE_OBJECTS");

    setenv("SLUICE_LEASE_MS", "10", 1);
    EXPECT_EINVAL(SL_CMD_RUN, "SLUICE_LEASE_MS", NULL, NULL);
    unsetenv("SLUICE_LEASE_MS");

    setenv("SLUICE_MAPPERS", "-3", 1);
    EXPECT_EINVAL(SL_CMD_RUN, "SLUICE_MAPPERS", NULL, NULL);
    /* ... but a variable of another command's setting is not this one's
     * business (a shared ConfigMap may carry it). */
    sl_config cfg = load_ok(SL_CMD_MAPPER, 0, NULL);
    CHECK_INT(cfg.mappers, ==, 4);
    sl_config_free(&cfg);
}

SL_TEST(config_unknown_and_foreign_flags_refused, 5)
{
    clean_env();
    EXPECT_EINVAL(SL_CMD_FETCHER, "--bogus", NULL, "--bogus");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--bogus", NULL, "--bogus=1");
    /* A prefix of a flag is not the flag. */
    EXPECT_EINVAL(SL_CMD_FETCHER, "--obj", NULL, "--obj", "5");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objectsx", NULL, "--objectsx", "5");
    /* Flags of other commands. */
    EXPECT_EINVAL(SL_CMD_MAPPER, "--mappers", "mapper", "--mappers", "2");
    EXPECT_EINVAL(SL_CMD_SAVER, "--transform", "saver", "--transform", "identity");
    EXPECT_EINVAL(SL_CMD_MAPPER, "--sink", NULL, "--sink", "sqlite:x.db");
    EXPECT_EINVAL(SL_CMD_STATUS, "--objects", "status", "--objects", "10");
    EXPECT_EINVAL(SL_CMD_RUN, "--linger", NULL, "--linger");
    EXPECT_EINVAL(SL_CMD_MAPPER, "--ledger", NULL, "--ledger", "x");
    /* Positional arguments and single-dash flags. */
    EXPECT_EINVAL(SL_CMD_FETCHER, "stray", NULL, "stray");
    EXPECT_EINVAL(SL_CMD_FETCHER, "-x", NULL, "-x");
    EXPECT_EINVAL(SL_CMD_FETCHER, "\"--\"", NULL, "--");
}

SL_TEST(config_missing_value, 5)
{
    clean_env();
    EXPECT_EINVAL(SL_CMD_FETCHER, "--objects", "value", "--objects");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--ledger", "value", "--chunk-size", "5", "--ledger");
    EXPECT_EINVAL(SL_CMD_SAVER, "--sink", "value", "--sink");
}

SL_TEST(config_help_flag, 5)
{
    clean_env();
    sl_config cfg;
    bool help = false;
    CHECK_INT(LOAD(&cfg, SL_CMD_FETCHER, &help, "--help"), ==, SL_OK);
    CHECK(help);
    sl_config_free(&cfg);
    help = false;
    CHECK_INT(LOAD(&cfg, SL_CMD_MAPPER, &help, "-h"), ==, SL_OK);
    CHECK(help);
    sl_config_free(&cfg);
    /* After other (valid) flags too. */
    help = false;
    CHECK_INT(LOAD(&cfg, SL_CMD_SAVER, &help, "--job", "x", "--help"), ==, SL_OK);
    CHECK(help);
    sl_config_free(&cfg);
    /* No help asked: *help is reset to false. */
    help = true;
    CHECK_INT(LOAD(&cfg, SL_CMD_STATUS, &help, "--job", "x"), ==, SL_OK);
    CHECK(!help);
    sl_config_free(&cfg);
}

SL_TEST(config_job_names, 5)
{
    clean_env();
    EXPECT_EINVAL(SL_CMD_FETCHER, "--job", "a.b", "--job", "a.b");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--job", NULL, "--job", "a b");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--job", NULL, "--job", "a*");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--job", NULL, "--job", "a>");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--job", NULL, "--job", "a\tb");
    EXPECT_EINVAL(SL_CMD_FETCHER, "--job", NULL, "--job", "");
    EXPECT_EINVAL(SL_CMD_STATUS, "--job", NULL, "--job=x.y");

    /* The default ledger follows the job; an explicit one does not. */
    sl_config cfg;
    bool help;
    CHECK_INT(LOAD(&cfg, SL_CMD_FETCHER, &help, "--job", "nightly-2"), ==, SL_OK);
    CHECK_STR(cfg.job, "nightly-2");
    CHECK_STR(cfg.ledger, "sluice-nightly-2.ledger");
    CHECK_STR(sl_config_prefix(&cfg), "sluice.nightly-2");
    sl_config_free(&cfg);
    CHECK_INT(LOAD(&cfg, SL_CMD_FETCHER, &help, "--ledger", "/var/lib/l.db", "--job", "j"), ==,
              SL_OK);
    CHECK_STR(cfg.ledger, "/var/lib/l.db");
    sl_config_free(&cfg);
    setenv("SLUICE_JOB", "fromenv", 1);
    CHECK_INT(LOAD(&cfg, SL_CMD_RUN, &help, "--objects", "10"), ==, SL_OK);
    CHECK_STR(cfg.ledger, "sluice-fromenv.ledger");
    CHECK_STR(sl_config_prefix(&cfg), "sluice.fromenv");
    sl_config_free(&cfg);
}

SL_TEST(config_nats_url_given, 5)
{
    clean_env();
    sl_config cfg;
    bool help;
    CHECK_INT(LOAD(&cfg, SL_CMD_RUN, &help, "--job", "j"), ==, SL_OK);
    CHECK(!cfg.nats_url_given);
    sl_config_free(&cfg);

    CHECK_INT(LOAD(&cfg, SL_CMD_RUN, &help, "--nats-url", "nats://h:1"), ==, SL_OK);
    CHECK(cfg.nats_url_given);
    CHECK_STR(cfg.nats_url, "nats://h:1");
    sl_config_free(&cfg);

    setenv("NATS_URL", "nats://a:1,nats://b:2", 1);
    CHECK_INT(LOAD(&cfg, SL_CMD_MAPPER, &help, "--job", "j"), ==, SL_OK);
    CHECK(cfg.nats_url_given);
    CHECK_STR(cfg.nats_url, "nats://a:1,nats://b:2");
    sl_config_free(&cfg);
    CHECK_INT(LOAD(&cfg, SL_CMD_MAPPER, &help, "--nats-url=nats://c:3"), ==, SL_OK);
    CHECK(cfg.nats_url_given);
    CHECK_STR(cfg.nats_url, "nats://c:3");
    sl_config_free(&cfg);

    setenv("NATS_USER", "alice", 1);
    setenv("NATS_PASSWORD", "s3cret", 1);
    CHECK_INT(LOAD(&cfg, SL_CMD_SAVER, &help, "--nats-token", "tok"), ==, SL_OK);
    CHECK_STR(cfg.nats_user, "alice");
    CHECK_STR(cfg.nats_password, "s3cret");
    CHECK_STR(cfg.nats_token, "tok");
    sl_config_free(&cfg);
}

SL_TEST(config_export_then_load_reproduces, 5)
{
    clean_env();
    sl_config a;
    bool help;
    CHECK_INT(LOAD(&a, SL_CMD_RUN, &help, "--objects", "1234", "--chunk-size", "17", "--mappers",
                   "9", "--savers", "3", "--source", "gen:x", "--transform", "identity",
                   "--sink", "sqlite:/tmp/out.db", "--job", "exp", "--work-ms", "12",
                   "--lease-ms", "777", "--max-attempts", "8", "--nats-user", "bob",
                   "--log-format", "json", "--fresh", "--progress-ms", "300",
                   "--connect-timeout-ms", "250"),
              ==, SL_OK);
    sl_config_export(&a);
    sl_config b;
    CHECK_INT(LOAD(&b, SL_CMD_RUN, &help, "--job", "exp"), ==, SL_OK);
    CHECK_INT(b.objects, ==, 1234);
    CHECK_INT(b.chunk_size, ==, 17);
    CHECK_INT(b.mappers, ==, 9);
    CHECK_INT(b.savers, ==, 3);
    CHECK_STR(b.source, "gen:x");
    CHECK_STR(b.transform, "identity");
    CHECK_STR(b.sink, "sqlite:/tmp/out.db");
    CHECK_STR(b.job, "exp");
    CHECK_STR(b.ledger, "sluice-exp.ledger");
    CHECK_INT(b.work_ms, ==, 12);
    CHECK_INT(b.lease_ms, ==, 777);
    CHECK_INT(b.max_attempts, ==, 8);
    CHECK_STR(b.nats_user, "bob");
    CHECK_STR(b.nats_password, "");
    CHECK_STR(b.log_format, "json");
    CHECK(b.fresh);
    CHECK_INT(b.progress_ms, ==, 300);
    CHECK_INT(b.connect_timeout_ms, ==, 250);
    CHECK_STR(b.nats_url, a.nats_url);
    /* The exported NATS_URL is an explicit setting for the process that
     * reads it (run hands its children the server it started). */
    CHECK(b.nats_url_given);

    /* A child of another command reads its own settings from the same
     * environment. */
    sl_config f;
    CHECK_INT(LOAD(&f, SL_CMD_FETCHER, &help, "--linger"), ==, SL_OK);
    CHECK_INT(f.objects, ==, 1234);
    CHECK_INT(f.lease_ms, ==, 777);
    CHECK_STR(f.ledger, "sluice-exp.ledger");
    CHECK(f.linger);
    sl_config m;
    CHECK_INT(LOAD(&m, SL_CMD_MAPPER, &help, "--job", "exp"), ==, SL_OK);
    CHECK_STR(m.transform, "identity");
    CHECK_INT(m.work_ms, ==, 12);
    sl_config_free(&a);
    sl_config_free(&b);
    sl_config_free(&f);
    sl_config_free(&m);
}

/* Every flag each command takes, with its variable (DESIGN.md's command
 * lines, plus the NATS connection settings every command shares). */
static const struct {
    const char *flag, *env;
    unsigned cmds;
} expected_flags[] = {
#define ALLC (SL_CMD_RUN | SL_CMD_FETCHER | SL_CMD_MAPPER | SL_CMD_SAVER | SL_CMD_STATUS)
    {"--nats-url", "NATS_URL", ALLC},
    {"--nats-user", "NATS_USER", ALLC},
    {"--nats-password", "NATS_PASSWORD", ALLC},
    {"--nats-token", "NATS_TOKEN", ALLC},
    {"--nats-creds", "NATS_CREDS", ALLC},
    {"--nats-ca", "NATS_CA", ALLC},
    {"--nats-cert", "NATS_CERT", ALLC},
    {"--nats-key", "NATS_KEY", ALLC},
    {"--connect-timeout-ms", "SLUICE_CONNECT_TIMEOUT_MS", ALLC},
    {"--job", "SLUICE_JOB", ALLC},
    {"--log-format", "SLUICE_LOG_FORMAT", ALLC},
    {"--log-level", "SLUICE_LOG_LEVEL", ALLC},
    {"--source", "SLUICE_SOURCE", SL_CMD_RUN | SL_CMD_FETCHER},
    {"--objects", "SLUICE_OBJECTS", SL_CMD_RUN | SL_CMD_FETCHER},
    {"--chunk-size", "SLUICE_CHUNK_SIZE", SL_CMD_RUN | SL_CMD_FETCHER},
    {"--ledger", "SLUICE_LEDGER", SL_CMD_RUN | SL_CMD_FETCHER},
    {"--lease-ms", "SLUICE_LEASE_MS", SL_CMD_RUN | SL_CMD_FETCHER},
    {"--max-attempts", "SLUICE_MAX_ATTEMPTS", SL_CMD_RUN | SL_CMD_FETCHER},
    {"--linger", "SLUICE_LINGER", SL_CMD_FETCHER},
    {"--fresh", "SLUICE_FRESH", SL_CMD_RUN | SL_CMD_FETCHER},
    {"--transform", "SLUICE_TRANSFORM", SL_CMD_RUN | SL_CMD_MAPPER},
    {"--work-ms", "SLUICE_WORK_MS", SL_CMD_RUN | SL_CMD_MAPPER},
    {"--work-jitter-ms", "SLUICE_WORK_JITTER_MS", SL_CMD_RUN | SL_CMD_MAPPER},
    {"--sink", "SLUICE_SINK", SL_CMD_RUN | SL_CMD_SAVER},
    {"--mappers", "SLUICE_MAPPERS", SL_CMD_RUN},
    {"--savers", "SLUICE_SAVERS", SL_CMD_RUN},
    {"--nats-server", "SLUICE_NATS_SERVER", SL_CMD_RUN},
    {"--progress-ms", "SLUICE_PROGRESS_MS", SL_CMD_RUN},
#undef ALLC
};

static char *help_text(sl_command cmd)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    sl_config_help(cmd, f);
    CHECK_INT(fclose(f), ==, 0);
    CHECK(buf != NULL && len > 0);
    return buf;
}

/* The two lines that describe flag (the first starting "  --flag " or
 * "  --flag\n", and the one after it), malloc'd; NULL if there is none. */
static char *flag_block(const char *text, const char *flag)
{
    size_t n = strlen(flag);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        const char *s = p;
        while (*s == ' ')
            s++;
        if (s - p < 2 || strncmp(s, flag, n) != 0 || !(s[n] == ' ' || s[n] == '\n'))
            continue;
        const char *end = strchr(p, '\n');
        if (end)
            end = strchr(end + 1, '\n');
        return strndup(p, end ? (size_t)(end - p) : strlen(p));
    }
    return NULL;
}

/* needle occurs in hay as a whole word of [A-Z_] (NATS_KEY is not found
 * in NATS_KEYS). */
static int has_word(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *h = strstr(hay, needle); h; h = strstr(h + 1, needle)) {
        char before = h == hay ? ' ' : h[-1], after = h[n];
        if (!(before == '_' || (before >= 'A' && before <= 'Z')) &&
            !(after == '_' || (after >= 'A' && after <= 'Z')))
            return 1;
    }
    return 0;
}

SL_TEST(config_help_lists_every_flag_with_its_variable, 5)
{
    clean_env();
    static const struct {
        sl_command cmd;
        const char *name;
    } cmds[] = {{SL_CMD_RUN, "run"},
                {SL_CMD_FETCHER, "fetcher"},
                {SL_CMD_MAPPER, "mapper"},
                {SL_CMD_SAVER, "saver"},
                {SL_CMD_STATUS, "status"}};
    for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++) {
        char *text = help_text(cmds[c].cmd);
        char usage[64];
        snprintf(usage, sizeof usage, "sluice %s", cmds[c].name);
        CHECK_MSG(strstr(text, usage) != NULL, "help of %s lacks \"%s\"", cmds[c].name, usage);
        CHECK_MSG(strstr(text, "--help") != NULL, "help of %s lacks --help", cmds[c].name);
        for (size_t i = 0; i < sizeof expected_flags / sizeof expected_flags[0]; i++) {
            char *block = flag_block(text, expected_flags[i].flag);
            if (!(expected_flags[i].cmds & cmds[c].cmd)) {
                CHECK_MSG(block == NULL, "help of %s lists %s, which it does not take",
                          cmds[c].name, expected_flags[i].flag);
                continue;
            }
            CHECK_MSG(block != NULL, "help of %s lacks %s:\n%s", cmds[c].name,
                      expected_flags[i].flag, text);
            /* The variable is shown with the flag, in its two lines. */
            CHECK_MSG(has_word(block, expected_flags[i].env), "help of %s: %s without %s:\n%s",
                      cmds[c].name, expected_flags[i].flag, expected_flags[i].env, block);
            free(block);
        }
        free(text);
    }

    /* Defaults are shown with their flags. */
    static const struct {
        const char *flag, *def;
    } defs[] = {{"--objects", "100000"},        {"--chunk-size", "100"},
                {"--sink", "sqlite:sluice.db"}, {"--transform", "fullname"},
                {"--job", "default"},           {"--lease-ms", "10000"},
                {"--max-attempts", "5"},        {"--mappers", "4"},
                {"--source", "gen:users"}};
    char *text = help_text(SL_CMD_RUN);
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        char *block = flag_block(text, defs[i].flag);
        char want[64];
        snprintf(want, sizeof want, "default %s", defs[i].def);
        CHECK_MSG(block && strstr(block, want), "%s does not show \"%s\": %s", defs[i].flag, want,
                  block ? block : "(missing)");
        free(block);
    }
    free(text);
}

/* Every flag the help shows is accepted by the parser: the two come from
 * one table, and this keeps it so. */
SL_TEST(config_every_listed_flag_parses, 5)
{
    clean_env();
    for (size_t i = 0; i < sizeof expected_flags / sizeof expected_flags[0]; i++) {
        static const sl_command all[] = {SL_CMD_RUN, SL_CMD_FETCHER, SL_CMD_MAPPER, SL_CMD_SAVER,
                                         SL_CMD_STATUS};
        for (size_t c = 0; c < 5; c++) {
            if (!(expected_flags[i].cmds & all[c]))
                continue;
            /* A value valid for every flag type: integers accept 100, strings
             * anything, booleans need true/false. */
            const char *flag = expected_flags[i].flag;
            const char *value = (!strcmp(flag, "--linger") || !strcmp(flag, "--fresh")) ? "true"
                                : !strcmp(flag, "--job")                              ? "j"
                                : !strcmp(flag, "--connect-timeout-ms")               ? "1000"
                                                                                      : "100";
            char arg[128];
            snprintf(arg, sizeof arg, "%s=%s", flag, value);
            char *argv[] = {arg};
            sl_config cfg;
            bool help;
            sl_status st = sl_config_load(&cfg, all[c], 1, argv, &help);
            CHECK_MSG(st == SL_OK, "%s refused: %s", arg, sl_errmsg());
            sl_config_free(&cfg);
        }
    }
}

/* A bad job name from SLUICE_JOB names the variable, not the flag: an
 * operator who never typed --job (a Kubernetes Deployment) must be pointed
 * at the right place. */
SL_TEST(config_bad_job_env_names_the_variable, 5)
{
    clean_env();
    setenv("SLUICE_JOB", "nightly.2", 1);
    EXPECT_EINVAL(SL_CMD_MAPPER, "SLUICE_JOB", "nightly.2", "--work-ms", "1");
    /* The flag, when it is the flag at fault, is still named as such. */
    unsetenv("SLUICE_JOB");
    EXPECT_EINVAL(SL_CMD_MAPPER, "--job", "nightly.2", "--job", "nightly.2");
}
