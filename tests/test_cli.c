/* test_cli.c - the command line as a user meets it: help, usage errors,
 * one-line failures with exit 1, and the launcher supervising children. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "pipeline.h"
#include "test.h"

static int run_cmd(const char *const *argv, const char *const *env, char **out)
{
    return th_run(argv, env, out, 20000);
}

/* The number of lines in s. */
static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

SL_TEST(cli_help_on_every_command, 20)
{
    const char *cmds[] = {"run", "fetcher", "mapper", "saver", "status"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        const char *argv[] = {"sluice", cmds[i], "--help", NULL};
        char *out = NULL;
        CHECK_INT(run_cmd(argv, NULL, &out), ==, 0);
        CHECK_MSG(strstr(out, "Usage: sluice ") && strstr(out, "--job NAME") && strstr(out, "SLUICE_JOB") &&
                      strstr(out, "NATS_URL") && strstr(out, "default default"),
                  "sluice %s --help:\n%s", cmds[i], out);
        free(out);
    }
    const char *fetcher[] = {"sluice", "fetcher", "-h", NULL};
    char *out = NULL;
    CHECK_INT(run_cmd(fetcher, NULL, &out), ==, 0);
    const char *want[] = {"--objects N", "SLUICE_OBJECTS", "default 100000", "--chunk-size C", "default 100",
                          "--lease-ms MS", "default 10000", "--max-attempts K", "default 5", "--ledger PATH",
                          "--linger", "SLUICE_LINGER", "--source URI", "default gen:users"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK_MSG(strstr(out, want[i]), "fetcher --help lacks %s", want[i]);
    free(out);
    const char *top[] = {"sluice", "--help", NULL};
    CHECK_INT(run_cmd(top, NULL, &out), ==, 0);
    CHECK(strstr(out, "run") && strstr(out, "fetcher") && strstr(out, "mapper") && strstr(out, "saver"));
    free(out);
}

SL_TEST(cli_usage_errors_exit_2, 20)
{
    const char *cases[][6] = {
        {"sluice", NULL},
        {"sluice", "frobnicate", NULL},
        {"sluice", "fetcher", "--objects", "abc", NULL},
        {"sluice", "fetcher", "--objects", "0", NULL},
        {"sluice", "fetcher", "--chunk-size", "99999999999999999999999", NULL},
        {"sluice", "mapper", "--mappers", "3", NULL},
        {"sluice", "saver", "--no-such-flag", NULL},
        {"sluice", "run", "--lease-ms", NULL},
        {"sluice", "mapper", "--transform", "nonsense", NULL},
        {"sluice", "saver", "--sink", "mysql://x", NULL},
        {"sluice", "fetcher", "--source", "ftp://x", NULL},
        {"sluice", "mapper", "--log-format", "xml", NULL},
        {"sluice", "run", "--job", "a.b", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        const char *env[] = {"NATS_URL=nats://127.0.0.1:1", NULL};
        int rc = run_cmd(cases[i], env, &out);
        CHECK_MSG(rc == 2, "case %zu (%s %s) exited %d:\n%s", i, cases[i][1] ? cases[i][1] : "",
                  cases[i][1] && cases[i][2] ? cases[i][2] : "", rc, out);
        CHECK_MSG(strstr(out, "sluice"), "case %zu says nothing useful: %s", i, out);
        free(out);
    }
    /* A bad environment variable is named in the message. */
    const char *argv[] = {"sluice", "fetcher", NULL};
    const char *env[] = {"SLUICE_LEASE_MS=soon", NULL};
    char *out = NULL;
    CHECK_INT(run_cmd(argv, env, &out), ==, 2);
    CHECK_MSG(strstr(out, "SLUICE_LEASE_MS") && lines(out) == 1, "%s", out);
    free(out);
}

SL_TEST(cli_no_nats_is_one_line_exit_1, 30)
{
    char url[64];
    snprintf(url, sizeof url, "NATS_URL=nats://127.0.0.1:%d", th_free_port());
    char *lf = tp_flag("ledger", "", "x.ledger"), *sf = tp_flag("sink", "sqlite:", "x.db");
    const char *env[] = {url, "SLUICE_CONNECT_TIMEOUT_MS=1000", NULL};
    const char *cases[][4] = {
        {"sluice", "fetcher", lf, NULL},
        {"sluice", "mapper", NULL},
        {"sluice", "saver", sf, NULL},
        {"sluice", "status", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        CHECK_INT(run_cmd(cases[i], env, &out), ==, 1);
        /* The one line for people, after the logfmt line for machines. */
        const char *last = strstr(out, "sluice ");
        CHECK_MSG(last && strstr(last, "cannot connect to NATS at nats://127.0.0.1:"), "%s", out);
        CHECK_MSG(lines(last) == 1, "%s", out);
        free(out);
    }
    free(lf), free(sf);
}

SL_TEST(cli_wrong_credentials_exit_1, 30)
{
    const char *auth[] = {"--user", "sluice", "--pass", "s3cret", NULL};
    th_nats *ns = th_nats_start(auth);
    char *url = tp_env_url(th_nats_url(ns));
    const char *bad[] = {url, "NATS_USER=sluice", "NATS_PASSWORD=wrong", NULL};
    const char *argv[] = {"sluice", "mapper", NULL};
    char *out = NULL;
    CHECK_INT(run_cmd(argv, bad, &out), ==, 1);
    CHECK_MSG(strstr(out, "cannot connect to NATS") && strstr(out, "uthorization"), "%s", out);
    free(out);
    /* The right ones work. */
    const char *good[] = {url, "NATS_USER=sluice", "NATS_PASSWORD=s3cret", NULL};
    th_proc *m = th_spawn("mapper", argv, good);
    th_proc_wait_log(m, "mapper started", 10000);
    th_proc_free(m);
    th_nats_stop(ns);
    free(url);
}

SL_TEST(cli_unwritable_database_exit_1, 60)
{
    th_nats *ns = th_nats_start(NULL);
    char *url = tp_env_url(th_nats_url(ns));
    const char *env[] = {url, NULL};
    /* A directory where the database file should be, and a path under a
     * file: neither can hold a database, even for root. */
    char *dir = th_path("a-directory");
    CHECK(mkdir(dir, 0755) == 0);
    sl_buf sink = SL_BUF_INIT;
    sl_buf_printf(&sink, "--sink=sqlite:%s", dir);
    const char *argv[] = {"sluice", "saver", sink.data, NULL};
    char *out = NULL;
    CHECK_INT(run_cmd(argv, env, &out), ==, 1);
    CHECK_MSG(strstr(out, "sluice saver: cannot") && strstr(out, dir), "%s", out);
    free(out);
    sl_buf ledger = SL_BUF_INIT;
    sl_buf_printf(&ledger, "--ledger=/proc/self/status/x.ledger");
    const char *fargv[] = {"sluice", "fetcher", ledger.data, NULL};
    CHECK_INT(run_cmd(fargv, env, &out), ==, 1);
    CHECK_MSG(strstr(out, "sluice fetcher: cannot open database /proc/self/status/x.ledger"), "%s", out);
    free(out);
    /* The launcher does not restart such a saver forever: it gives up
     * with the saver's own error. */
    char *lf = tp_flag("ledger", "", "run.ledger");
    const char *rargv[] = {"sluice", "run", "--objects", "1000", sink.data, lf, NULL};
    CHECK_INT(th_run(rargv, NULL, &out, 50000), ==, 1);
    CHECK_MSG(strstr(out, "keeps failing at start") && strstr(out, dir), "%s", out);
    free(out);
    free(dir), free(url), free(lf);
    sl_buf_free(&sink), sl_buf_free(&ledger);
    th_nats_stop(ns);
}

/* The pid the launcher logged for a child, e.g. "mapper.1". */
static pid_t child_pid(th_proc *run, const char *child)
{
    char needle[64];
    snprintf(needle, sizeof needle, "child=%s pid=", child);
    th_proc_wait_log(run, needle, 10000);
    char *log = th_proc_log(run);
    const char *p = strstr(log, needle);
    pid_t pid = (pid_t)atoi(p + strlen(needle));
    free(log);
    return pid;
}

SL_TEST(run_restarts_a_killed_child, 90)
{
    char *sink = th_path("out.db"), *sf = tp_flag("sink", "sqlite:", "out.db");
    char *lf = tp_flag("ledger", "", "run.ledger");
    const char *argv[] = {"sluice", "run", "--objects", "10000", "--mappers", "2", "--work-ms", "40",
                          "--lease-ms", "1000", sf, lf, NULL};
    th_proc *run = th_spawn("run", argv, NULL);
    pid_t m1 = child_pid(run, "mapper.1"), s1 = child_pid(run, "saver.1"), f = child_pid(run, "fetcher");
    th_proc_wait_log(run, "progress", 20000);
    CHECK(kill(m1, SIGKILL) == 0);
    th_proc_wait_log(run, "child=mapper.1 kind=mapper code=137", 10000);
    th_proc_wait_log(run, "child=mapper.1 pid=", 10000);
    CHECK(kill(s1, SIGKILL) == 0);
    th_proc_wait_log(run, "child=saver.1 kind=saver code=137", 10000);
    CHECK(kill(f, SIGKILL) == 0);
    th_proc_wait_log(run, "child=fetcher kind=fetcher code=137", 10000);
    th_proc_wait_log(run, "fetcher resuming", 10000);
    CHECK_INT(th_proc_wait(run, 60000), ==, 0);
    char *log = th_proc_log(run);
    CHECK(strstr(log, "objects saved   10000 of 10000"));
    free(log);
    tp_verify_sink(sink, 10000, 100, 0);
    free(sink), free(sf), free(lf);
    th_proc_free(run);
}

SL_TEST(run_interrupt_stops_everything, 60)
{
    char *sink = th_path("out.db"), *sf = tp_flag("sink", "sqlite:", "out.db");
    char *lf = tp_flag("ledger", "", "run.ledger");
    const char *argv[] = {"sluice", "run", "--objects", "100000", "--mappers", "2", "--work-ms", "1000",
                          sf, lf, NULL};
    th_proc *run = th_spawn("run", argv, NULL);
    pid_t pids[3] = {child_pid(run, "fetcher"), child_pid(run, "mapper.2"), child_pid(run, "saver.1")};
    th_proc_wait_log(run, "mapper started", 10000);
    th_proc_kill(run, SIGINT);
    CHECK_INT(th_proc_wait(run, 20000), ==, 128 + SIGINT);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(kill(pids[i], 0) != 0, "child %d outlived the launcher", (int)pids[i]);
    char *log = th_proc_log(run);
    CHECK(strstr(log, "interrupted; stopping"));
    free(log);
    free(sink), free(sf), free(lf);
    th_proc_free(run);
}
