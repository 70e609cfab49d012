/* harness.c - real processes for integration tests: spawn, poll, stop.
 *
 * Every process started here is recorded in a list owned by the process that
 * started it; an atexit handler SIGKILLs and reaps what is left of that list,
 * so a test that fails half-way (sl_test_fail calls exit) still stops its
 * nats-server and sluice roles. The test runner also SIGKILLs the test's
 * process group afterwards, which catches grandchildren the harness never
 * saw (say, a command a shell script left running). */
#include "harness.h"

#include "buf.h"
#include "status.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define POLL_MS 10
#define STOP_GRACE_MS 5000
#define NATS_READY_MS 10000
#define LOG_TAIL_BYTES 2048

struct th_proc {
    char *name;
    char *log_path;
    pid_t pid;
    pid_t owner; /* the process that forked it, the only one that can reap it */
    int reaped;
    int code; /* exit code, or 128 + signal; valid once reaped */
    th_proc *next;
};

struct th_nats {
    th_proc *proc;
    int id; /* the N of nats-N.log */
    int port;
    int mon_port;
    char url[64];
    char **extra; /* NULL-terminated copy of the extra arguments */
    pid_t owner;
    th_nats *next;
};

static char *tmpdir;
static pid_t tmpdir_owner;
static int atexit_done;
static th_proc *procs;
static th_nats *servers;
static int nats_seq;
static int run_seq;
/* The message of a failure being reported: kept reachable so that the leak
 * checker, running after exit(), does not count it. */
static char *fail_text;

/* ---- small things ------------------------------------------------------- */

int64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(void)
{
    struct timespec ts = {0, POLL_MS * 1000000L};
    nanosleep(&ts, NULL);
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
    sl_buf b = SL_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (!b.data)
        return sl_xstrdup("");
    return b.data;
}

static int code_of(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

/* The last `bytes` (at most LOG_TAIL_BYTES) of a file, printable, malloc'd. */
static char *file_tail(const char *path, size_t bytes)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return xprintf("(no log: %s)", strerror(errno));
    struct stat st;
    char *out;
    if (fstat(fd, &st) != 0) {
        out = xprintf("(cannot stat log: %s)", strerror(errno));
        close(fd);
        return out;
    }
    if (bytes > LOG_TAIL_BYTES)
        bytes = LOG_TAIL_BYTES;
    off_t from = st.st_size > (off_t)bytes ? st.st_size - (off_t)bytes : 0;
    char buf[LOG_TAIL_BYTES];
    ssize_t n = pread(fd, buf, bytes, from);
    close(fd);
    if (n < 0)
        n = 0;
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\0')
            buf[i] = '?';
    if (n == 0)
        return sl_xstrdup("(log is empty)");
    return xprintf("%s%.*s", from > 0 ? "...\n" : "", (int)n, buf);
}

/* Appends "---- last of PATH ----", the last `bytes` of that file and a
 * line end to b. */
static void append_tail(sl_buf *b, const char *path, size_t bytes)
{
    char *tail = file_tail(path, bytes);
    sl_buf_printf(b, "---- last of %s ----\n%s", path, tail);
    free(tail);
    if (b->len && b->data[b->len - 1] != '\n')
        sl_buf_putc(b, '\n');
}

/* Fails the test with a message followed by the tail of p's log, and a
 * little of every other process's of the test: a process that waits
 * forever is often waiting for another one. */
static _Noreturn void fail_log(const char *file, int line, const th_proc *p,
                               const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static _Noreturn void fail_log(const char *file, int line, const th_proc *p,
                               const char *fmt, ...)
{
    sl_buf b = SL_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    sl_buf_putc(&b, '\n');
    append_tail(&b, p->log_path, LOG_TAIL_BYTES);
    for (const th_proc *q = procs; q; q = q->next)
        if (q != p)
            append_tail(&b, q->log_path, LOG_TAIL_BYTES / 4);
    sl_buf_puts(&b, "---- end of log ----");
    fail_text = b.data;
    sl_test_fail(file, line, "%s", fail_text);
}

/* ---- the temporary directory and cleanup at exit ------------------------ */

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void proc_unlink(th_proc *p)
{
    for (th_proc **pp = &procs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

/* Blocks until p is reaped; for a process already sent SIGKILL. */
static void reap_blocking(th_proc *p)
{
    int status;
    while (!p->reaped) {
        pid_t r = waitpid(p->pid, &status, 0);
        if (r == p->pid) {
            p->reaped = 1;
            p->code = code_of(status);
        } else if (r < 0 && errno != EINTR) {
            p->reaped = 1; /* not ours to reap: nothing more to do */
            p->code = -1;
        }
    }
}

static void cleanup_at_exit(void)
{
    pid_t me = getpid();
    /* Kill first, then reap, so that the processes die in parallel. */
    for (th_proc *p = procs; p; p = p->next)
        if (p->owner == me && !p->reaped)
            kill(p->pid, SIGKILL);
    for (th_proc *p = procs; p; p = p->next)
        if (p->owner == me)
            reap_blocking(p);
    th_nats **np = &servers;
    while (*np) {
        th_nats *ns = *np;
        if (ns->owner == me)
            th_nats_stop(ns); /* unlinks ns */
        else
            np = &ns->next;
    }
    th_proc **pp = &procs;
    while (*pp) {
        th_proc *p = *pp;
        if (p->owner == me)
            th_proc_free(p); /* unlinks p */
        else
            pp = &p->next;
    }
    if (tmpdir && tmpdir_owner == me) {
        if (getenv("SLUICE_KEEP_TMP"))
            fprintf(stderr, "    kept %s\n", tmpdir);
        else
            nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(tmpdir);
        tmpdir = NULL;
    }
    free(fail_text);
    fail_text = NULL;
}

const char *th_tmpdir(void)
{
    if (!atexit_done) {
        atexit(cleanup_at_exit);
        atexit_done = 1;
    }
    if (!tmpdir) {
        char tmpl[] = "/tmp/sluice-test.XXXXXX";
        CHECK_MSG(mkdtemp(tmpl) != NULL, "mkdtemp(%s): %s", tmpl,
                  strerror(errno));
        tmpdir = sl_xstrdup(tmpl);
        tmpdir_owner = getpid();
    }
    return tmpdir;
}

char *th_path(const char *name)
{
    return xprintf("%s/%s", th_tmpdir(), name);
}

/* ---- files -------------------------------------------------------------- */

char *th_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    sl_buf b = SL_BUF_INIT;
    for (;;) {
        sl_buf_reserve(&b, 65536);
        ssize_t n = read(fd, b.data + b.len, b.cap - b.len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            close(fd);
            sl_buf_free(&b);
            return NULL;
        }
        if (n == 0)
            break;
        b.len += (size_t)n;
    }
    close(fd);
    b.data[b.len] = '\0';
    if (len)
        *len = b.len;
    return b.data;
}

/* Counts non-overlapping occurrences of needle in the file from *pos on,
 * and moves *pos past what has been decided: past the last match, and to
 * where a match could still be completed by bytes not yet written. Calling
 * it again as the file grows counts each occurrence exactly once. */
static int scan_file(const char *path, const char *needle, size_t nlen,
                     off_t *pos)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return 0;
    }
    if (st.st_size < *pos) /* truncated: start over */
        *pos = 0;
    if ((size_t)(st.st_size - *pos) < nlen) {
        close(fd);
        return 0;
    }
    size_t want = (size_t)(st.st_size - *pos), got = 0;
    char *buf = sl_xmalloc(want);
    while (got < want) {
        ssize_t n = pread(fd, buf + got, want - got, *pos + (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    int count = 0;
    size_t at = 0; /* where the next match may start, relative to *pos */
    while (got - at >= nlen) {
        char *m = memmem(buf + at, got - at, needle, nlen);
        if (!m)
            break;
        count++;
        at = (size_t)(m - buf) + nlen;
    }
    size_t undecided = got >= nlen ? got - nlen + 1 : 0;
    *pos += (off_t)(at > undecided ? at : undecided);
    free(buf);
    return count;
}

int th_count_in_file(const char *path, const char *needle)
{
    SL_ASSERT(needle && needle[0]);
    off_t pos = 0;
    return scan_file(path, needle, strlen(needle), &pos);
}

int th_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_MSG(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
             getsockname(fd, (struct sockaddr *)&a, &alen) == 0;
    int e = errno;
    close(fd);
    CHECK_MSG(ok, "binding 127.0.0.1:0: %s", strerror(e));
    return ntohs(a.sin_port);
}

int th_listen_silent(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_MSG(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    CHECK_MSG(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 8) == 0 &&
                  getsockname(fd, (struct sockaddr *)&a, &alen) == 0,
              "listening on 127.0.0.1:0: %s", strerror(errno));
    *port = ntohs(a.sin_port);
    return fd;
}

const char *th_sluice_bin_at(const char *file, int line)
{
    const char *bin = getenv("SLUICE_BIN");
    if (!bin || !bin[0])
        sl_test_fail(file, line,
                     "SLUICE_BIN is not set: run the tests with "
                     "SLUICE_BIN=/path/to/sluice (make test does)");
    struct stat st;
    if (stat(bin, &st) != 0)
        sl_test_fail(file, line, "SLUICE_BIN=%s: %s (build it with make)", bin,
                     strerror(errno));
    if (!S_ISREG(st.st_mode) || access(bin, X_OK) != 0)
        sl_test_fail(file, line, "SLUICE_BIN=%s is not an executable file",
                     bin);
    return bin;
}

void th_wait_until_at(const char *file, int line, int (*cond)(void *),
                      void *arg, int timeout_ms, const char *what)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return;
        if (th_now_ms() >= deadline)
            sl_test_fail(file, line, "timed out after %d ms waiting for %s",
                         timeout_ms, what);
        nap();
    }
}

/* ---- processes ---------------------------------------------------------- */

/* The program argv[0] names, as a path to execve, malloc'd; NULL if a bare
 * name is nowhere in $PATH. Resolved before fork so that the child only
 * makes async-signal-safe calls, and so a typo fails with a clear message. */
static char *find_program(const char *name)
{
    if (strchr(name, '/'))
        return sl_xstrdup(name);
    const char *path = getenv("PATH");
    if (!path || !path[0])
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *dir = path;; dir++) {
        const char *end = strchrnul(dir, ':');
        char *cand = end == dir ? xprintf("./%s", name)
                                : xprintf("%.*s/%s", (int)(end - dir), dir, name);
        struct stat st;
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) &&
            access(cand, X_OK) == 0)
            return cand;
        free(cand);
        if (!*end)
            return NULL;
        dir = end;
    }
}

/* The inherited environment with the "K=V" entries of extra added, each
 * replacing an inherited K. The array is malloc'd; its strings are not. */
static char **build_env(const char *file, int line, const char *const *extra)
{
    size_t n = 0, k = 0;
    while (environ[n])
        n++;
    while (extra && extra[k]) {
        const char *eq = strchr(extra[k], '=');
        if (!eq || eq == extra[k])
            sl_test_fail(file, line, "environment entry \"%s\" is not KEY=VALUE",
                         extra[k]);
        k++;
    }
    char **out = sl_xcalloc(n + k + 1, sizeof *out);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int replaced = 0;
        for (size_t x = 0; x < k && !replaced; x++)
            replaced = strncmp(extra[x], environ[i], klen) == 0 &&
                       extra[x][klen] == '=';
        if (!replaced)
            out[j++] = environ[i];
    }
    for (size_t x = 0; x < k; x++)
        out[j++] = (char *)extra[x];
    out[j] = NULL;
    return out;
}

/* In the child between fork and exec: async-signal-safe calls only. If exec
 * fails, its errno goes back to the parent through errfd. */
static _Noreturn void exec_child(const char *exe, char *const *argv,
                                 char *const *envp, int infd, int logfd,
                                 int errfd, const sigset_t *none)
{
    if (dup2(infd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
        goto fail;
    /* Ignored signals stay ignored across exec (the runner ignores
     * SIGPIPE); a process under test should start as from a shell. */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
            sa.sa_handler == SIG_IGN) {
            sa.sa_handler = SIG_DFL;
            sa.sa_flags = 0;
            sa.sa_mask = *none;
            sigaction(sig, &sa, NULL);
        }
    }
    sigprocmask(SIG_SETMASK, none, NULL);
    /* Descriptors the test opened without O_CLOEXEC (a client socket, a
     * listener) must not outlive it in the child. errfd closes at exec. */
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    execve(exe, argv, envp);
fail:;
    int e = errno;
    ssize_t w = write(errfd, &e, sizeof e);
    (void)w;
    _exit(127);
}

th_proc *th_spawn_at(const char *file, int line, const char *name,
                     const char *const *argv, const char *const *env)
{
    if (!name || !name[0] || strchr(name, '/') || !argv || !argv[0])
        sl_test_fail(file, line, "th_spawn: need a plain name and argv[0]");
    char *exe = strcmp(argv[0], "sluice") == 0
                    ? sl_xstrdup(th_sluice_bin_at(file, line))
                    : find_program(argv[0]);
    if (!exe)
        sl_test_fail(file, line, "th_spawn(%s): %s not found in PATH", name,
                     argv[0]);
    size_t argc = 0;
    while (argv[argc])
        argc++;
    /* argv[0] becomes the path executed, so a program that re-executes
     * itself through argv[0] finds itself. */
    char **args = sl_xcalloc(argc + 1, sizeof *args);
    args[0] = exe;
    for (size_t i = 1; i < argc; i++)
        args[i] = (char *)argv[i];
    char **envp = build_env(file, line, env);
    char *log_name = xprintf("%s.log", name);
    char *log_path = th_path(log_name);
    free(log_name);

    int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0)
        sl_test_fail(file, line, "open %s: %s", log_path, strerror(errno));
    int infd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (infd < 0)
        sl_test_fail(file, line, "open /dev/null: %s", strerror(errno));
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) != 0)
        sl_test_fail(file, line, "pipe2: %s", strerror(errno));
    sigset_t none;
    sigemptyset(&none);

    pid_t pid = fork();
    if (pid < 0)
        sl_test_fail(file, line, "fork for %s: %s", name, strerror(errno));
    if (pid == 0)
        exec_child(exe, args, envp, infd, logfd, errpipe[1], &none);

    close(errpipe[1]);
    close(logfd);
    close(infd);
    int exec_errno = 0;
    ssize_t r;
    do
        r = read(errpipe[0], &exec_errno, sizeof exec_errno);
    while (r < 0 && errno == EINTR);
    close(errpipe[0]);
    free(envp);
    free(args);

    th_proc *p = sl_xcalloc(1, sizeof *p);
    p->name = sl_xstrdup(name);
    p->log_path = log_path;
    p->pid = pid;
    p->owner = getpid();
    p->next = procs;
    procs = p;
    if (r == (ssize_t)sizeof exec_errno) {
        reap_blocking(p);
        char *msg = xprintf("th_spawn(%s): exec %s: %s", name, exe,
                            strerror(exec_errno));
        free(exe);
        fail_text = msg;
        sl_test_fail(file, line, "%s", fail_text);
    }
    free(exe);
    return p;
}

pid_t th_proc_pid(const th_proc *p)
{
    return p->pid;
}

const char *th_proc_name(const th_proc *p)
{
    return p->name;
}

const char *th_proc_log_path(const th_proc *p)
{
    return p->log_path;
}

char *th_proc_log(const th_proc *p)
{
    char *s = th_read_file(p->log_path, NULL);
    return s ? s : sl_xstrdup("");
}

/* Reaps p if it has ended; 1 if it is reaped. Never blocks. */
static int try_reap(th_proc *p)
{
    if (p->reaped)
        return 1;
    int status;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid) {
        p->reaped = 1;
        p->code = code_of(status);
        return 1;
    }
    if (r < 0 && errno != EINTR)
        sl_test_fail(__FILE__, __LINE__,
                     "waitpid(%s, pid %d): %s (a harness process used from a "
                     "process that did not start it?)",
                     p->name, (int)p->pid, strerror(errno));
    return 0;
}

int th_proc_running(th_proc *p)
{
    return !try_reap(p);
}

int th_proc_wait_at(const char *file, int line, th_proc *p, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    for (;;) {
        if (try_reap(p))
            return p->code;
        if (th_now_ms() >= deadline)
            fail_log(file, line, p, "%s (pid %d) still running after %d ms",
                     p->name, (int)p->pid, timeout_ms);
        nap();
    }
}

void th_proc_kill(th_proc *p, int sig)
{
    if (!p->reaped)
        kill(p->pid, sig);
}

void th_proc_stop(th_proc *p)
{
    if (p->reaped)
        return;
    kill(p->pid, SIGTERM);
    int64_t deadline = th_now_ms() + STOP_GRACE_MS;
    while (!try_reap(p)) {
        if (th_now_ms() >= deadline) {
            fprintf(stderr, "    %s (pid %d) ignored SIGTERM for %d ms: SIGKILL\n",
                    p->name, (int)p->pid, STOP_GRACE_MS);
            kill(p->pid, SIGKILL);
            reap_blocking(p);
            return;
        }
        nap();
    }
}

void th_proc_free(th_proc *p)
{
    if (!p)
        return;
    if (p->owner == getpid())
        th_proc_stop(p);
    proc_unlink(p);
    free(p->name);
    free(p->log_path);
    free(p);
}

void th_proc_wait_log_at(const char *file, int line, th_proc *p,
                         const char *needle, int n, int timeout_ms)
{
    if (!needle || !needle[0] || n < 1)
        sl_test_fail(file, line, "th_proc_wait_log: need a needle and n >= 1");
    size_t nlen = strlen(needle);
    int64_t deadline = th_now_ms() + timeout_ms;
    off_t pos = 0;
    int found = 0;
    for (;;) {
        /* Look at "ended" before reading, so that what a process wrote
         * just before it exited is still read once. */
        int ended = try_reap(p);
        found += scan_file(p->log_path, needle, nlen, &pos);
        if (found >= n)
            return;
        if (ended)
            fail_log(file, line, p,
                     "%s (pid %d) ended with code %d before writing \"%s\"%s",
                     p->name, (int)p->pid, p->code, needle,
                     n > 1 ? " often enough" : "");
        if (th_now_ms() >= deadline)
            fail_log(file, line, p,
                     "timed out after %d ms waiting for \"%s\" (%d of %d) in "
                     "the log of %s",
                     timeout_ms, needle, found, n, p->name);
        nap();
    }
}

int th_run_at(const char *file, int line, const char *const *argv,
              const char *const *env, char **output, int timeout_ms)
{
    if (!argv || !argv[0])
        sl_test_fail(file, line, "th_run: empty argv");
    const char *slash = strrchr(argv[0], '/');
    char *name = xprintf("run-%d-%s", ++run_seq, slash ? slash + 1 : argv[0]);
    th_proc *p = th_spawn_at(file, line, name, argv, env);
    free(name);
    int code = th_proc_wait_at(file, line, p, timeout_ms);
    if (output)
        *output = th_proc_log(p);
    th_proc_free(p);
    return code;
}

/* ---- nats-server -------------------------------------------------------- */

static int url_port(json_t *url)
{
    const char *s = json_string_value(url);
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || (*end && *end != '/') || v < 1 ||
        v > 65535)
        return -1;
    return (int)v;
}

/* Reads "<tmpdir>/nats-server_<pid>.ports"; 0 until it exists and is
 * complete (it may be caught half-written). */
static int read_ports(pid_t pid, int *port, int *mon_port)
{
    char *name = xprintf("nats-server_%d.ports", (int)pid);
    char *path = th_path(name);
    free(name);
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    free(path);
    if (!root)
        return 0;
    int p = url_port(json_array_get(json_object_get(root, "nats"), 0));
    int m = url_port(json_array_get(json_object_get(root, "monitoring"), 0));
    json_decref(root);
    if (p < 0 || m < 0)
        return 0;
    *port = p;
    *mon_port = m;
    return 1;
}

/* 1 if a connection to 127.0.0.1:port receives "INFO " (the greeting every
 * nats-server sends first) before the deadline. */
static int nats_answers(int port, int64_t deadline)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char buf[5];
    size_t got = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        while (got < sizeof buf) {
            int64_t left = deadline - th_now_ms();
            if (left <= 0)
                break;
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            int r = poll(&pfd, 1, left > 1000 ? 1000 : (int)left);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            ssize_t n = read(fd, buf + got, sizeof buf - got);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
    }
    close(fd);
    return got == sizeof buf && memcmp(buf, "INFO ", 5) == 0;
}

/* Starts ns's server on port (-1: any) and waits until it answers. */
static void nats_launch(const char *file, int line, th_nats *ns, int port)
{
    char port_arg[16], name[32];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    snprintf(name, sizeof name, "nats-%d", ns->id);
    size_t nextra = 0;
    while (ns->extra[nextra])
        nextra++;
    const char *base[] = {"nats-server", "-a", "127.0.0.1", "-p", port_arg,
                          "-m", "-1", "--ports_file_dir", th_tmpdir()};
    size_t nbase = sizeof base / sizeof base[0];
    const char **argv = sl_xcalloc(nbase + nextra + 1, sizeof *argv);
    memcpy(argv, base, sizeof base);
    for (size_t i = 0; i < nextra; i++)
        argv[nbase + i] = ns->extra[i];
    ns->proc = th_spawn_at(file, line, name, argv, NULL);
    free(argv);

    int64_t deadline = th_now_ms() + NATS_READY_MS;
    int have_ports = 0;
    for (;;) {
        int ended = try_reap(ns->proc);
        if (!have_ports && !ended)
            have_ports = read_ports(ns->proc->pid, &ns->port, &ns->mon_port);
        if (have_ports && nats_answers(ns->port, deadline))
            break;
        if (ended)
            fail_log(file, line, ns->proc,
                     "nats-server (%s) ended with code %d before it answered",
                     name, ns->proc->code);
        if (th_now_ms() >= deadline) {
            if (have_ports)
                fail_log(file, line, ns->proc,
                         "nats-server (%s, pid %d) not answering on port %d "
                         "after %d ms",
                         name, (int)ns->proc->pid, ns->port, NATS_READY_MS);
            fail_log(file, line, ns->proc,
                     "nats-server (%s, pid %d) wrote no ports file in %s "
                     "within %d ms",
                     name, (int)ns->proc->pid, th_tmpdir(), NATS_READY_MS);
        }
        nap();
    }
    if (port > 0 && ns->port != port)
        fail_log(file, line, ns->proc,
                 "nats-server came back on port %d, not %d", ns->port, port);
    snprintf(ns->url, sizeof ns->url, "nats://127.0.0.1:%d", ns->port);
}

th_nats *th_nats_start_at(const char *file, int line,
                          const char *const *extra_args)
{
    th_nats *ns = sl_xcalloc(1, sizeof *ns);
    size_t n = 0;
    while (extra_args && extra_args[n])
        n++;
    ns->extra = sl_xcalloc(n + 1, sizeof *ns->extra);
    for (size_t i = 0; i < n; i++)
        ns->extra[i] = sl_xstrdup(extra_args[i]);
    ns->id = ++nats_seq;
    ns->owner = getpid();
    ns->next = servers;
    servers = ns;
    nats_launch(file, line, ns, -1);
    return ns;
}

const char *th_nats_url(const th_nats *ns)
{
    return ns->url;
}

int th_nats_port(const th_nats *ns)
{
    return ns->port;
}

int th_nats_monitor_port(const th_nats *ns)
{
    return ns->mon_port;
}

pid_t th_nats_pid(const th_nats *ns)
{
    return ns->proc->pid;
}

const char *th_nats_log_path(const th_nats *ns)
{
    return ns->proc->log_path;
}

void th_nats_restart_at(const char *file, int line, th_nats *ns)
{
    pid_t old = ns->proc->pid;
    th_proc_kill(ns->proc, SIGKILL);
    reap_blocking(ns->proc);
    th_proc_free(ns->proc);
    ns->proc = NULL;
    /* A killed server leaves its ports file behind. */
    char *name = xprintf("nats-server_%d.ports", (int)old);
    char *path = th_path(name);
    unlink(path);
    free(path);
    free(name);
    nats_launch(file, line, ns, ns->port);
}

void th_nats_stop(th_nats *ns)
{
    if (!ns)
        return;
    for (th_nats **np = &servers; *np; np = &(*np)->next)
        if (*np == ns) {
            *np = ns->next;
            break;
        }
    th_proc_free(ns->proc);
    for (size_t i = 0; ns->extra[i]; i++)
        free(ns->extra[i]);
    free(ns->extra);
    free(ns);
}

char *th_src_path(const char *rel)
{
    const char *dir = getenv("SLUICE_SRCDIR");
    return xprintf("%s/%s", dir && dir[0] ? dir : ".", rel);
}

char *th_src_read_at(const char *file, int line, const char *rel)
{
    char *path = th_src_path(rel);
    char *text = th_read_file(path, NULL);
    if (!text)
        sl_test_fail(file, line, "cannot read %s (set SLUICE_SRCDIR to the repository)", path);
    free(path);
    return text;
}
