/* test_harness.c - the test harness, tested against real processes: a real
 * nats-server, /bin/sh, and forked copies of the test that are meant to fail
 * so that the failure messages can be read back. */
#include "harness.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* A connected socket to 127.0.0.1:port, or -1 with errno set. */
static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Reads what the peer sends within timeout_ms (up to cap - 1 bytes, stopping
 * at the first "\r\n"), NUL-terminated; returns its length. */
static size_t read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t got = 0;
    int64_t deadline = th_now_ms() + timeout_ms;
    while (got + 1 < cap && !(got >= 2 && memcmp(buf + got - 2, "\r\n", 2) == 0)) {
        int64_t left = deadline - th_now_ms();
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)left) <= 0)
            break;
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    return got;
}

/* The greeting a nats-server sends on a new connection to port. */
static void nats_info(int port, char *buf, size_t cap)
{
    int fd = connect_local(port);
    CHECK_MSG(fd >= 0, "connect 127.0.0.1:%d: %s", port, strerror(errno));
    read_line(fd, buf, cap, 5000);
    close(fd);
}

/* Runs fn in a forked copy of this test whose stderr goes to a file, as a
 * test that is meant to fail; returns its exit status code, and what it
 * printed in *err (malloc'd, caller frees). */
static int run_forked(void (*fn)(void), char **err, int timeout_ms)
{
    char *err_path = th_path("forked.err"); /* the tmpdir exists before fork */
    unlink(err_path);
    fflush(NULL);
    pid_t pid = fork();
    CHECK_MSG(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0)
            _exit(99);
        close(fd);
        fn();
        exit(0);
    }
    int status = 0;
    int64_t deadline = th_now_ms() + timeout_ms;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (th_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            CHECK_MSG(0, "forked test still running after %d ms", timeout_ms);
        }
        usleep(10000);
    }
    *err = th_read_file(err_path, NULL);
    free(err_path);
    CHECK(*err != NULL);
    CHECK_MSG(WIFEXITED(status), "forked test died: status %d", status);
    return WEXITSTATUS(status);
}

static int pid_alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

/* ---- nats-server -------------------------------------------------------- */

SL_TEST(harness_nats_starts_and_answers, 20)
{
    th_nats *ns = th_nats_start(NULL);
    int port = th_nats_port(ns);
    pid_t pid = th_nats_pid(ns);
    CHECK(port > 0 && port < 65536);
    CHECK(th_nats_monitor_port(ns) > 0);
    CHECK(th_nats_monitor_port(ns) != port);
    CHECK(pid > 0 && pid_alive(pid));
    char want[64];
    snprintf(want, sizeof want, "nats://127.0.0.1:%d", port);
    CHECK_STR(th_nats_url(ns), want);

    char info[4096];
    nats_info(port, info, sizeof info);
    CHECK_MSG(strncmp(info, "INFO {", 6) == 0, "greeting: %s", info);
    int mfd = connect_local(th_nats_monitor_port(ns));
    CHECK_MSG(mfd >= 0, "monitoring port: %s", strerror(errno));
    close(mfd);
    CHECK(th_count_in_file(th_nats_log_path(ns), "Server is ready") == 1);

    th_nats_stop(ns);
    CHECK(!pid_alive(pid));
    CHECK_INT(connect_local(port), ==, -1);
    CHECK_INT(errno, ==, ECONNREFUSED);
}

SL_TEST(harness_nats_restart_same_port, 30)
{
    const char *const extra[] = {"--user", "u", "--pass", "p", NULL};
    th_nats *ns = th_nats_start(extra);
    int port = th_nats_port(ns);
    pid_t pid1 = th_nats_pid(ns);
    char url[64];
    snprintf(url, sizeof url, "%s", th_nats_url(ns));

    /* A client connected before the crash sees its connection end. */
    int client = connect_local(port);
    CHECK(client >= 0);
    char info[4096];
    CHECK(read_line(client, info, sizeof info, 5000) > 0);
    CHECK(strstr(info, "\"auth_required\":true") != NULL);

    th_nats_restart(ns);
    CHECK_INT(th_nats_port(ns), ==, port);
    CHECK_STR(th_nats_url(ns), url);
    CHECK(th_nats_pid(ns) != pid1);
    CHECK(!pid_alive(pid1));
    CHECK_INT(read_line(client, info, sizeof info, 5000), ==, 0);
    close(client);

    /* The same extra arguments: still asking for a password. */
    nats_info(port, info, sizeof info);
    CHECK_MSG(strstr(info, "\"auth_required\":true") != NULL, "%s", info);
    CHECK(th_count_in_file(th_nats_log_path(ns), "Server is ready") == 2);

    th_nats_restart(ns); /* twice in a row works too */
    CHECK_INT(th_nats_port(ns), ==, port);
    pid_t pid3 = th_nats_pid(ns);
    th_nats_stop(ns);
    CHECK(!pid_alive(pid3));
}

static void start_bad_nats(void)
{
    const char *const extra[] = {"-c", "/nonexistent/nats.conf", NULL};
    th_nats_start(extra);
}

SL_TEST(harness_nats_bad_args_fail_fast, 20)
{
    char *err = NULL;
    int64_t t0 = th_now_ms();
    CHECK_INT(run_forked(start_bad_nats, &err, 10000), ==, 1);
    CHECK_MSG(th_now_ms() - t0 < 5000, "took %lld ms",
              (long long)(th_now_ms() - t0));
    CHECK_MSG(strstr(err, "nats-server (nats-1) ended with code 1") &&
                  strstr(err, "/nonexistent/nats.conf"),
              "%s", err);
    free(err);
}

/* ---- processes ---------------------------------------------------------- */

SL_TEST(harness_spawn_exit_code_and_log, 10)
{
    const char *const argv[] = {"/bin/sh", "-c", "echo hello; exit 7", NULL};
    th_proc *p = th_spawn("hello", argv, NULL);
    CHECK(th_proc_pid(p) > 0);
    CHECK_STR(th_proc_name(p), "hello");
    CHECK_INT(th_proc_wait(p, 5000), ==, 7);
    CHECK_INT(th_proc_wait(p, 0), ==, 7); /* reaped: the same answer */
    CHECK(!th_proc_running(p));

    char *want = th_path("hello.log");
    CHECK_STR(th_proc_log_path(p), want);
    free(want);
    char *log = th_proc_log(p);
    CHECK_STR(log, "hello\n");
    free(log);
    CHECK_INT(th_count_in_file(th_proc_log_path(p), "hello"), ==, 1);
    CHECK_INT(th_count_in_file(th_proc_log_path(p), "absent"), ==, 0);
    th_proc_stop(p); /* idempotent on a reaped process */
    th_proc_free(p);
    th_proc_free(NULL);
}

SL_TEST(harness_spawn_stdin_and_fds, 10)
{
    /* stdin is /dev/null, so cat ends at once; a descriptor the test holds
     * without O_CLOEXEC is not inherited (fd 9 stays closed). */
    int fd = open("/dev/null", O_RDONLY);
    CHECK(fd >= 0);
    CHECK(dup2(fd, 9) == 9);
    const char *const argv[] = {
        "sh", "-c",
        "cat; if [ -e /proc/$$/fd/9 ]; then echo fd9-open; else echo fd9-closed; fi",
        NULL};
    char *out = NULL;
    CHECK_INT(th_run(argv, NULL, &out, 5000), ==, 0);
    CHECK_MSG(strstr(out, "fd9-closed") != NULL, "%s", out);
    free(out);
    close(9);
    close(fd);
}

SL_TEST(harness_wait_log_later_line, 15)
{
    /* exec, so that stopping the shell leaves no orphaned sleep behind. */
    const char *const argv[] = {"sh", "-c",
                                "sleep 0.2; echo ready; exec sleep 5", NULL};
    int64_t t0 = th_now_ms();
    th_proc *p = th_spawn("later", argv, NULL);
    th_proc_wait_log(p, "ready", 5000);
    CHECK_MSG(th_now_ms() - t0 >= 190, "found after %lld ms",
              (long long)(th_now_ms() - t0));
    CHECK(th_proc_running(p));
    th_proc_stop(p);
    CHECK(!th_proc_running(p));
    CHECK_INT(th_proc_wait(p, 0), ==, 128 + SIGTERM);
    th_proc_free(p);
}

SL_TEST(harness_wait_log_counts, 15)
{
    const char *const argv[] = {
        "sh", "-c",
        "for i in 1 2; do echo tick; sleep 0.05; done; echo tick; exec sleep 5",
        NULL};
    th_proc *p = th_spawn("ticks", argv, NULL);
    th_proc_wait_log_n(p, "tick", 3, 5000);
    CHECK_INT(th_count_in_file(th_proc_log_path(p), "tick"), ==, 3);
    CHECK_INT(th_count_in_file(th_proc_log_path(p), "ti"), ==, 3);
    th_proc_free(p);
}

SL_TEST(harness_kill_sigkill, 10)
{
    const char *const argv[] = {"sh", "-c", "echo up; exec sleep 30", NULL};
    th_proc *p = th_spawn("victim", argv, NULL);
    th_proc_wait_log(p, "up", 5000);
    th_proc_kill(p, SIGKILL);
    CHECK_INT(th_proc_wait(p, 5000), ==, 128 + SIGKILL);
    CHECK(!pid_alive(th_proc_pid(p)));
    th_proc_kill(p, SIGKILL); /* reaped: a no-op, never a stray pid */
    th_proc_free(p);
}

SL_TEST(harness_stop_escalates_to_sigkill, 20)
{
    const char *const argv[] = {
        "sh", "-c", "trap '' TERM; echo trapped; exec sleep 30", /* inherits */
        NULL};
    th_proc *p = th_spawn("stubborn", argv, NULL);
    th_proc_wait_log(p, "trapped", 5000);
    int64_t t0 = th_now_ms();
    th_proc_stop(p);
    int64_t took = th_now_ms() - t0;
    CHECK_MSG(took >= 4900 && took < 8000, "stop took %lld ms", (long long)took);
    CHECK_INT(th_proc_wait(p, 0), ==, 128 + SIGKILL);
    th_proc_free(p);
}

SL_TEST(harness_run_captures_output, 10)
{
    const char *const argv[] = {"sh", "-c",
                                "echo out; echo err >&2; exit 3", NULL};
    char *out = NULL;
    CHECK_INT(th_run(argv, NULL, &out, 5000), ==, 3);
    CHECK(out != NULL);
    CHECK(strstr(out, "out\n") != NULL);
    CHECK(strstr(out, "err\n") != NULL);
    free(out);

    const char *const ok[] = {"true", NULL};
    CHECK_INT(th_run(ok, NULL, NULL, 5000), ==, 0);
    const char *const killed[] = {"sh", "-c", "kill -9 $$", NULL};
    CHECK_INT(th_run(killed, NULL, NULL, 5000), ==, 128 + SIGKILL);
}

SL_TEST(harness_env_reaches_child, 10)
{
    setenv("TH_INHERITED", "from-parent", 1);
    setenv("TH_REPLACED", "old", 1);
    const char *const env[] = {"TH_EXTRA=hello world", "TH_REPLACED=new", NULL};
    const char *const argv[] = {
        "sh", "-c",
        "echo \"[$TH_EXTRA][$TH_INHERITED][$TH_REPLACED]\"; "
        "env | grep -c '^TH_REPLACED='",
        NULL};
    char *out = NULL;
    CHECK_INT(th_run(argv, env, &out, 5000), ==, 0);
    CHECK_STR(out, "[hello world][from-parent][new]\n1\n");
    free(out);

    /* Also through th_spawn, and the parent's own environment is unchanged. */
    const char *const show[] = {"sh", "-c", "echo \"v=$TH_EXTRA\"", NULL};
    th_proc *p = th_spawn("env", show, env);
    CHECK_INT(th_proc_wait(p, 5000), ==, 0);
    char *log = th_proc_log(p);
    CHECK_STR(log, "v=hello world\n");
    free(log);
    th_proc_free(p);
    CHECK(getenv("TH_EXTRA") == NULL);
    CHECK_STR(getenv("TH_REPLACED"), "old");
}

SL_TEST(harness_sluice_bin_from_env, 10)
{
    setenv("SLUICE_BIN", "/bin/echo", 1);
    CHECK_STR(th_sluice_bin(), "/bin/echo");
    const char *const argv[] = {"sluice", "fetcher", "--x", NULL};
    char *out = NULL;
    CHECK_INT(th_run(argv, NULL, &out, 5000), ==, 0);
    CHECK_STR(out, "fetcher --x\n");
    free(out);
}

static void sluice_bin_unset(void)
{
    unsetenv("SLUICE_BIN");
    th_sluice_bin();
}

static void sluice_bin_missing(void)
{
    setenv("SLUICE_BIN", "/nonexistent/sluice", 1);
    const char *const argv[] = {"sluice", NULL};
    th_spawn("s", argv, NULL);
}

SL_TEST(harness_sluice_bin_fails_clearly, 10)
{
    char *err = NULL;
    CHECK_INT(run_forked(sluice_bin_unset, &err, 5000), ==, 1);
    CHECK_MSG(strstr(err, "SLUICE_BIN is not set") && strstr(err, "FAIL"),
              "%s", err);
    free(err);
    CHECK_INT(run_forked(sluice_bin_missing, &err, 5000), ==, 1);
    CHECK_MSG(strstr(err, "/nonexistent/sluice: No such file"), "%s", err);
    free(err);
}

static void spawn_unknown(void)
{
    const char *const argv[] = {"th-no-such-program", NULL};
    th_spawn("unknown", argv, NULL);
}

static void spawn_not_executable(void)
{
    char *path = th_path("not-exec");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    close(fd);
    const char *const argv[] = {path, NULL};
    th_spawn("notexec", argv, NULL);
}

SL_TEST(harness_spawn_failures_are_clear, 10)
{
    char *err = NULL;
    CHECK_INT(run_forked(spawn_unknown, &err, 5000), ==, 1);
    CHECK_MSG(strstr(err, "th-no-such-program not found in PATH"), "%s", err);
    free(err);
    CHECK_INT(run_forked(spawn_not_executable, &err, 5000), ==, 1);
    CHECK_MSG(strstr(err, "Permission denied"), "%s", err);
    free(err);
}

/* ---- failures are fast, clear, and clean up ----------------------------- */

static void wait_log_on_exited(void)
{
    const char *const argv[] = {"sh", "-c", "echo something else; exit 2",
                                NULL};
    th_proc *p = th_spawn("quitter", argv, NULL);
    th_proc_wait_log(p, "never printed", 10000);
}

SL_TEST(harness_wait_log_fails_at_once_on_exit, 15)
{
    char *err = NULL;
    int64_t t0 = th_now_ms();
    CHECK_INT(run_forked(wait_log_on_exited, &err, 8000), ==, 1);
    int64_t took = th_now_ms() - t0;
    CHECK_MSG(took < 3000, "took %lld ms", (long long)took);
    CHECK_MSG(strstr(err, "test_harness.c:") &&
                  strstr(err, "ended with code 2 before writing "
                              "\"never printed\"") &&
                  strstr(err, "something else"),
              "%s", err);
    free(err);
}

static void wait_times_out(void)
{
    char *pidfile = th_path("sleeper.pid");
    char *script = NULL;
    if (asprintf(&script, "echo $$ > %s; echo waiting; exec sleep 30",
                 pidfile) < 0)
        abort();
    const char *const argv[] = {"sh", "-c", script, NULL};
    th_proc *p = th_spawn("sleeper", argv, NULL);
    free(script);
    free(pidfile);
    th_proc_wait_log(p, "waiting", 5000);
    th_proc_wait(p, 100);
}

SL_TEST(harness_timeout_fails_and_kills, 15)
{
    char *err = NULL;
    CHECK_INT(run_forked(wait_times_out, &err, 8000), ==, 1);
    CHECK_MSG(strstr(err, "sleeper (pid ") &&
                  strstr(err, "still running after 100 ms") &&
                  strstr(err, "waiting"),
              "%s", err);
    free(err);
    /* The failed test's exit killed and reaped what it had started. */
    char *pidfile = th_path("sleeper.pid");
    char *text = th_read_file(pidfile, NULL);
    free(pidfile);
    CHECK(text != NULL);
    pid_t pid = (pid_t)strtol(text, NULL, 10);
    free(text);
    CHECK(pid > 0);
    CHECK_MSG(!pid_alive(pid), "pid %d still alive", (int)pid);
}

static void nats_then_fail(void)
{
    th_nats *ns = th_nats_start(NULL);
    char *pidfile = th_path("nats.pid");
    FILE *f = fopen(pidfile, "w");
    fprintf(f, "%d\n", (int)th_nats_pid(ns));
    fclose(f);
    free(pidfile);
    CHECK_MSG(0, "failing on purpose with nats-server running");
}

SL_TEST(harness_failed_test_stops_nats, 20)
{
    char *err = NULL;
    CHECK_INT(run_forked(nats_then_fail, &err, 15000), ==, 1);
    CHECK_MSG(strstr(err, "failing on purpose"), "%s", err);
    free(err);
    char *pidfile = th_path("nats.pid");
    char *text = th_read_file(pidfile, NULL);
    free(pidfile);
    CHECK(text != NULL);
    pid_t pid = (pid_t)strtol(text, NULL, 10);
    free(text);
    CHECK(pid > 0);
    CHECK_MSG(!pid_alive(pid), "nats-server %d still alive", (int)pid);
}

static int calls_until_three(void *arg)
{
    int *n = arg;
    return ++*n >= 3;
}

static int never(void *arg)
{
    (void)arg;
    return 0;
}

static void wait_for_never(void)
{
    th_wait_until(never, NULL, 50, "the impossible");
}

SL_TEST(harness_wait_until, 10)
{
    int n = 0;
    th_wait_until(calls_until_three, &n, 5000, "three calls");
    CHECK_INT(n, ==, 3);
    char *err = NULL;
    CHECK_INT(run_forked(wait_for_never, &err, 5000), ==, 1);
    CHECK_MSG(strstr(err, "timed out after 50 ms waiting for the impossible"),
              "%s", err);
    free(err);
}

/* ---- small helpers ------------------------------------------------------ */

SL_TEST(harness_tmpdir_and_paths, 10)
{
    const char *dir = th_tmpdir();
    CHECK(strncmp(dir, "/tmp/sluice-test.", 17) == 0);
    CHECK(th_tmpdir() == dir);
    struct stat st;
    CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));
    char *p = th_path("x.log");
    char want[256];
    snprintf(want, sizeof want, "%s/x.log", dir);
    CHECK_STR(p, want);
    free(p);
    CHECK(th_read_file("/nonexistent/file", NULL) == NULL);
    CHECK_INT(th_count_in_file("/nonexistent/file", "x"), ==, 0);

    /* A forked copy of the test exits without removing the directory it
     * inherited: only the process that made it removes it. */
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        exit(0);
    CHECK(waitpid(pid, NULL, 0) == pid);
    CHECK(stat(dir, &st) == 0);
}

SL_TEST(harness_tmpdir_removed_at_exit, 10)
{
    unsetenv("SLUICE_KEEP_TMP");
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* No tmpdir in this test process yet: the child makes its own. */
        close(fds[0]);
        char *f = th_path("some.log");
        int fd = open(f, O_WRONLY | O_CREAT, 0644);
        close(fd);
        free(f);
        const char *d = th_tmpdir();
        ssize_t w = write(fds[1], d, strlen(d));
        (void)w;
        close(fds[1]);
        exit(0);
    }
    close(fds[1]);
    char dir[256];
    ssize_t n = 0, r;
    while ((r = read(fds[0], dir + n, sizeof dir - 1 - (size_t)n)) > 0)
        n += r;
    close(fds[0]);
    dir[n] = '\0';
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(strncmp(dir, "/tmp/sluice-test.", 17) == 0);
    struct stat st;
    CHECK_MSG(stat(dir, &st) != 0 && errno == ENOENT, "%s still exists", dir);
}

SL_TEST(harness_free_port_and_clock, 10)
{
    int port = th_free_port();
    CHECK(port > 0 && port < 65536);
    CHECK_INT(connect_local(port), ==, -1);
    CHECK_INT(errno, ==, ECONNREFUSED);
    int64_t a = th_now_ms(), b = th_now_ms();
    CHECK(a > 0 && b >= a);
}
