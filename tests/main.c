/* main.c - runs every registered test in a child process with a timeout.
 *
 * Usage: sluice-test [-l] [NAME-SUBSTRING...]
 * Prints one line per test and closes with "N passed, N failed". */
#include "test.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "db.h"

typedef struct {
    const char *name;
    sl_test_fn fn;
    int timeout_s;
    const char *file;
} test_case;

static test_case tests[512];
static int ntests;

void sl_test_register(const char *name, sl_test_fn fn, int timeout_s,
                      const char *file)
{
    if (ntests == (int)(sizeof tests / sizeof tests[0])) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[ntests++] = (test_case){name, fn, timeout_s, file};
}

void sl_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "    FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_case(const void *a, const void *b)
{
    const test_case *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

static int selected(const test_case *t, int argc, char **argv)
{
    if (argc == 0)
        return 1;
    for (int i = 0; i < argc; i++)
        if (strstr(t->name, argv[i]))
            return 1;
    return 0;
}

/* Runs one test in its own process group; returns 0 if it passed. */
static int run_one(const test_case *t, double *secs)
{
    double t0 = now_s();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        t->fn();
        exit(0);
    }
    setpgid(pid, pid);
    int status = 0, timed_out = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            break;
        if (now_s() - t0 > t->timeout_s) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            timed_out = 1;
            break;
        }
        usleep(10000);
    }
    /* Whatever the test started and left behind goes with it. */
    kill(-pid, SIGKILL);
    *secs = now_s() - t0;
    if (timed_out) {
        fprintf(stderr, "    FAIL timed out after %d s\n", t->timeout_s);
        return 1;
    }
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "    FAIL killed by signal %d\n", WTERMSIG(status));
        return 1;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    int list = 0;
    if (argc > 1 && strcmp(argv[1], "-l") == 0) {
        list = 1;
        argc--, argv++;
    }
    qsort(tests, (size_t)ntests, sizeof tests[0], cmp_case);
    signal(SIGPIPE, SIG_IGN);
    sl_db_init(); /* the tests' sinks and ledgers as sluice's */
    int passed = 0, failed = 0;
    for (int i = 0; i < ntests; i++) {
        const test_case *t = &tests[i];
        if (!selected(t, argc - 1, argv + 1))
            continue;
        if (list) {
            printf("%s\n", t->name);
            continue;
        }
        double secs = 0;
        int rc = run_one(t, &secs);
        printf("%s %-40s %6.2fs\n", rc ? "FAIL" : "ok  ", t->name, secs);
        fflush(stdout);
        if (rc)
            failed++;
        else
            passed++;
    }
    if (!list)
        printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
