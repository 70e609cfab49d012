/* test_run.c - how `sluice run` starts its children: through a fork server
 * (src/forkserver.h), which must give each child what exec gave it, go on
 * working when children crash, be done without when it dies itself, and
 * never outlive run. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "pipeline.h"
#include "test.h"

/* The pid= the launcher logged on the line of the n-th `needle` (1: the
 * first), e.g. ("child=mapper.1 ", 2) for the first restart. */
static pid_t logged_pid(th_proc *run, const char *needle, int n)
{
    th_proc_wait_log_n(run, needle, n, 20000);
    char *log = th_proc_log(run);
    const char *p = log;
    for (int i = 0; i < n; i++)
        p = strstr(i ? p + 1 : p, needle);
    const char *eol = strchrnul(p, '\n'), *at = strstr(p, " pid=");
    CHECK_MSG(at && at < eol, "no pid= after %s", needle);
    pid_t pid = (pid_t)atoi(at + 5);
    free(log);
    return pid;
}

/* Field `field` (1-based, as proc(5) counts) of /proc/PID/stat as a
 * number; -1 if the process is gone. Field 3, the state, as its letter. */
static long proc_stat(pid_t pid, int field)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *s = th_read_file(path, NULL);
    const char *p = s ? strrchr(s, ')') : NULL;
    long v = -1;
    for (int f = 2; p && f < field; f++)
        p = strchr(p + 1, ' ');
    if (p)
        v = field == 3 ? (long)p[1] : strtol(p + 1, NULL, 10);
    free(s);
    return v;
}

/* Running, not a zombie waiting for whoever adopted it. */
static int alive(pid_t pid)
{
    long state = proc_stat(pid, 3);
    return state > 0 && state != 'Z' && state != 'X';
}

/* /proc/PID/cmdline with the NULs between arguments as spaces and the
 * trailing ones dropped; malloc'd. */
static char *cmdline(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    size_t len = 0;
    char *s = th_read_file(path, &len);
    CHECK_MSG(s, "no %s", path);
    while (len && s[len - 1] == '\0')
        len--;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\0')
            s[i] = ' ';
    s[len] = '\0';
    return s;
}

/* The kernel's short name of pid (/proc/PID/comm, what top shows). */
static void check_comm(pid_t pid, const char *want)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    char *s = th_read_file(path, NULL);
    CHECK_MSG(s, "no %s", path);
    s[strcspn(s, "\n")] = '\0';
    CHECK_STR(s, want);
    free(s);
}

/* Waits (5 s at most) until pid's command line starts with want. A
 * forked process shows its parent's until it sets its own, a moment after
 * its parent has logged it; an exec'd one until its exec. */
static void wait_cmdline(pid_t pid, const char *want)
{
    for (int64_t deadline = th_now_ms() + 5000;; usleep(10000)) {
        char *cl = cmdline(pid);
        int ok = !strncmp(cl, want, strlen(want));
        CHECK_MSG(ok || th_now_ms() < deadline, "pid %d shows \"%s\", not \"%s...\"", (int)pid, cl, want);
        free(cl);
        if (ok)
            break;
    }
}

/* Child pid of run is what `sluice <role> --http ...` exec'd by run would
 * be: run's child, shown as its role, in a process group of its own, stdin
 * /dev/null. */
static void check_child(pid_t run, pid_t pid, const char *role)
{
    char want[64];
    snprintf(want, sizeof want, "sluice %s --http 127.0.0.1:", role);
    wait_cmdline(pid, want);
    CHECK_INT(proc_stat(pid, 4), ==, run);
    CHECK_INT(proc_stat(pid, 5), ==, pid);
    char path[64], target[64] = "";
    snprintf(path, sizeof path, "/proc/%d/fd/0", (int)pid);
    CHECK(readlink(path, target, sizeof target - 1) > 0);
    CHECK_STR(target, "/dev/null");
}

/* The stats file's value of key, or -1 without it. */
static double stat_of(const char *stats, const char *key)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\n%s=", key);
    const char *p = strstr(stats, needle);
    return p ? strtod(p + strlen(needle), NULL) : -1;
}

static int no_report(const char *log)
{
    return !strstr(log, "runtime error:") && !strstr(log, "==ERROR: ");
}

/* A crashed child comes back, through the fork server, as the same kind
 * of process; --stats still accounts for every role. */
SL_TEST(run_children_are_what_exec_made_them, 90)
{
    char *sink = th_path("out.db"), *sf = tp_flag("sink", "sqlite:", "out.db");
    char *lf = tp_flag("ledger", "", "run.ledger"), *stf = tp_flag("stats", "", "stats"), *stats = th_path("stats");
    const char *argv[] = {"sluice", "run", "--objects", "10000", "--mappers", "2", "--work-ms", "40",
                          "--lease-ms", "1000", sf, lf, stf, NULL};
    th_proc *run = th_spawn("run", argv, NULL);
    pid_t rp = th_proc_pid(run), fs = logged_pid(run, "fork server started", 1);
    char want[64];
    snprintf(want, sizeof want, "sluice fork-server --run %d", (int)rp);
    wait_cmdline(fs, want);
    char *cl = cmdline(fs);
    CHECK_STR(cl, want);
    free(cl);
    CHECK_INT(proc_stat(fs, 4), ==, rp);
    th_proc_wait_log(run, "mapper started", 20000);
    check_child(rp, logged_pid(run, "child=saver.1 pid=", 1), "saver");
    check_child(rp, logged_pid(run, "child=fetcher pid=", 1), "fetcher");
    check_child(rp, logged_pid(run, "child=mapper.2 pid=", 1), "mapper");
    pid_t m1 = logged_pid(run, "child=mapper.1 pid=", 1);
    check_child(rp, m1, "mapper");
    /* Forked, each also has a short name of its own (an exec'd one would
     * be "sluice"). */
    check_comm(fs, "sluice-fork-ser");
    check_comm(logged_pid(run, "child=saver.1 pid=", 1), "sluice-saver");
    check_comm(logged_pid(run, "child=fetcher pid=", 1), "sluice-fetcher");
    check_comm(m1, "sluice-mapper");
    CHECK(kill(m1, SIGKILL) == 0);
    th_proc_wait_log(run, "child=mapper.1 kind=mapper code=137", 10000);
    pid_t again = logged_pid(run, "child=mapper.1 pid=", 2);
    CHECK(again != m1);
    check_child(rp, again, "mapper");
    CHECK_INT(th_proc_wait(run, 60000), ==, 0);
    char *log = th_proc_log(run);
    CHECK_MSG(strstr(log, "objects saved   10000 of 10000") && !strstr(log, "fork server failed") && no_report(log),
              "%s", log);
    free(log);
    tp_verify_sink(sink, 10000, 100, 0);
    char *st = th_read_file(stats, NULL);
    CHECK(st);
    const char *roles[] = {"fetcher", "mapper", "saver", "nats"};
    int procs[] = {1, 2, 1, 1};
    for (int i = 0; i < 4; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s_processes", roles[i]);
        CHECK_MSG(stat_of(st, key) == procs[i], "%s in:\n%s", key, st);
        snprintf(key, sizeof key, "%s_cpu_s", roles[i]);
        CHECK_MSG(stat_of(st, key) > 0, "%s in:\n%s", key, st);
        snprintf(key, sizeof key, "%s_maxrss_kb", roles[i]);
        CHECK_MSG(stat_of(st, key) > 1024, "%s in:\n%s", key, st);
    }
    CHECK_MSG(stat_of(st, "forkserver_maxrss_kb") > 0, "%s", st);
    free(st);
    CHECK(!alive(fs));
    free(sink), free(sf), free(lf), free(stf), free(stats);
    th_proc_free(run);
}

/* Without its fork server, run execs what it has to restart and the job
 * completes. */
SL_TEST(run_goes_on_without_its_fork_server, 90)
{
    char *sink = th_path("out.db"), *sf = tp_flag("sink", "sqlite:", "out.db");
    char *lf = tp_flag("ledger", "", "run.ledger");
    const char *argv[] = {"sluice", "run", "--objects", "10000", "--mappers", "2", "--work-ms", "40",
                          "--lease-ms", "1000", sf, lf, NULL};
    th_proc *run = th_spawn("run", argv, NULL);
    pid_t rp = th_proc_pid(run), fs = logged_pid(run, "fork server started", 1);
    th_proc_wait_log(run, "progress", 20000);
    CHECK(kill(fs, SIGKILL) == 0);
    pid_t m1 = logged_pid(run, "child=mapper.1 pid=", 1);
    CHECK(kill(m1, SIGKILL) == 0);
    th_proc_wait_log(run, "fork server failed; children are exec'd from now on", 10000);
    pid_t again = logged_pid(run, "child=mapper.1 pid=", 2);
    check_child(rp, again, "mapper");
    CHECK_INT(th_proc_wait(run, 60000), ==, 0);
    char *log = th_proc_log(run);
    CHECK_MSG(strstr(log, "objects saved   10000 of 10000") && no_report(log), "%s", log);
    free(log);
    tp_verify_sink(sink, 10000, 100, 0);
    free(sink), free(sf), free(lf);
    th_proc_free(run);
}

/* run killed outright takes its fork server, NATS and every role with it. */
SL_TEST(run_killed_leaves_no_process_behind, 60)
{
    char *sf = tp_flag("sink", "sqlite:", "out.db"), *lf = tp_flag("ledger", "", "run.ledger");
    const char *argv[] = {"sluice", "run", "--objects", "100000", "--mappers", "3", "--work-ms", "1000",
                          sf, lf, NULL};
    th_proc *run = th_spawn("run", argv, NULL);
    const char *needles[] = {"fork server started", "nats-server started", "child=saver.1 pid=",
                             "child=fetcher pid=",  "child=mapper.1 pid=", "child=mapper.3 pid="};
    pid_t pids[6];
    for (int i = 0; i < 6; i++)
        pids[i] = logged_pid(run, needles[i], 1);
    th_proc_wait_log_n(run, "mapper started", 3, 20000);
    th_proc_kill(run, SIGKILL);
    CHECK_INT(th_proc_wait(run, 5000), ==, 128 + SIGKILL);
    int64_t deadline = th_now_ms() + 15000;
    for (int i = 0; i < 6; i++) {
        while (alive(pids[i])) {
            CHECK_MSG(th_now_ms() < deadline, "%s: pid %d outlived run", needles[i], (int)pids[i]);
            usleep(10000);
        }
    }
    free(sf), free(lf);
    th_proc_free(run);
}
