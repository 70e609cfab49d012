/* pg.c - a throwaway PostgreSQL cluster (see pg.h). */
#include "pg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct sl_pgc {
    char dir[512], log[600], uri[160];
    int port, fsync;
    pid_t pid;
    uid_t uid; /* whom initdb and postgres run as */
    gid_t gid;
    int drop; /* 1 when running as root: switch to uid/gid */
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *sl_pgc_bindir(void)
{
    static char dir[512];
    const char *env = getenv("SLUICE_PG_BIN");
    if (env && env[0])
        return env;
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0)
        return NULL;
    int best = -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int v = atoi(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"));
        if (v > best) {
            best = v;
            snprintf(dir, sizeof dir, "%.*s", (int)(strlen(g.gl_pathv[i]) - strlen("/initdb")), g.gl_pathv[i]);
        }
    }
    globfree(&g);
    return best >= 0 ? dir : NULL;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &n) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Forks and execs argv as the cluster's user, output appended to the log. */
static pid_t spawn(const sl_pgc *c, char *const argv[])
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int log = open(c->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int null = open("/dev/null", O_RDONLY);
    if (log < 0 || null < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
        _exit(126);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    if (chdir(c->dir) != 0)
        _exit(126);
    if (c->drop && (setgroups(0, NULL) != 0 || setgid(c->gid) != 0 || setuid(c->uid) != 0))
        _exit(126);
    execv(argv[0], argv);
    _exit(127);
}

/* Waits for pid until timeout_ms; its exit code, 128+signal, or -1. */
static int wait_for(pid_t pid, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ms() > end)
            return -1;
        nap_ms(10);
    }
}

static int launch(sl_pgc *c, char *err, size_t errlen)
{
    char bin[600], data[600], port[16], fs[32];
    snprintf(bin, sizeof bin, "%s/postgres", sl_pgc_bindir());
    snprintf(data, sizeof data, "%s/data", c->dir);
    snprintf(port, sizeof port, "%d", c->port);
    snprintf(fs, sizeof fs, "fsync=%s", c->fsync ? "on" : "off");
    char *argv[] = {bin, "-D", data, "-p", port, "-k", c->dir, "-c", "listen_addresses=127.0.0.1",
                    "-c", fs, "-c", "max_connections=40", "-c", "shared_buffers=32MB", NULL};
    c->pid = spawn(c, argv);
    if (c->pid < 0)
        return fail(err, errlen, "fork: %s", strerror(errno));
    char conn[256];
    snprintf(conn, sizeof conn, "host=127.0.0.1 port=%d user=sluice dbname=postgres connect_timeout=2", c->port);
    long long end = now_ms() + 30000;
    while (now_ms() < end) {
        if (PQping(conn) == PQPING_OK)
            return 0;
        int status;
        if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
            c->pid = 0;
            return fail(err, errlen, "postgres exited before it answered on port %d (log: %s)", c->port, c->log);
        }
        nap_ms(20);
    }
    return fail(err, errlen, "postgres did not answer on port %d within 30 s (log: %s)", c->port, c->log);
}

int sl_pgc_start(sl_pgc **out, const char *parent, int fsync, char *err, size_t errlen)
{
    const char *bindir = sl_pgc_bindir();
    if (!bindir)
        return fail(err, errlen,
                    "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb; "
                    "install the Debian package postgresql, or set SLUICE_PG_BIN)");
    sl_pgc *c = calloc(1, sizeof *c);
    if (!c)
        return fail(err, errlen, "out of memory");
    c->fsync = fsync;
    snprintf(c->dir, sizeof c->dir, "%s/pg-XXXXXX", parent);
    if (!mkdtemp(c->dir)) {
        fail(err, errlen, "mkdtemp %s: %s", c->dir, strerror(errno));
        free(c);
        return -1;
    }
    snprintf(c->log, sizeof c->log, "%s/server.log", c->dir);
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw) {
            fail(err, errlen, "running as root and there is no user \"postgres\" to run PostgreSQL as");
            goto fail;
        }
        c->drop = 1;
        c->uid = pw->pw_uid;
        c->gid = pw->pw_gid;
        if (chmod(parent, 0711) != 0 || chown(c->dir, c->uid, c->gid) != 0) {
            fail(err, errlen, "chmod %s / chown %s: %s", parent, c->dir, strerror(errno));
            goto fail;
        }
    }
    char initdb[600], data[600];
    snprintf(initdb, sizeof initdb, "%s/initdb", bindir);
    snprintf(data, sizeof data, "%s/data", c->dir);
    char *argv[] = {initdb, "-D", data, "-U", "sluice", "-A", "trust", "-E", "UTF8", "--locale=C", "-N", NULL};
    pid_t pid = spawn(c, argv);
    int rc = pid > 0 ? wait_for(pid, 120000) : -1;
    if (rc != 0) {
        if (pid > 0 && rc < 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        fail(err, errlen, "initdb failed (code %d; log: %s)", rc, c->log);
        goto fail;
    }
    if ((c->port = free_port()) < 0) {
        fail(err, errlen, "no free port: %s", strerror(errno));
        goto fail;
    }
    snprintf(c->uri, sizeof c->uri, "postgresql://sluice@127.0.0.1:%d/postgres?sslmode=disable", c->port);
    if (launch(c, err, errlen) != 0)
        goto fail;
    *out = c;
    return 0;
fail:
    sl_pgc_destroy(c);
    return -1;
}

const char *sl_pgc_uri(const sl_pgc *c) { return c->uri; }
int sl_pgc_port(const sl_pgc *c) { return c->port; }
const char *sl_pgc_dir(const sl_pgc *c) { return c->dir; }
pid_t sl_pgc_pid(const sl_pgc *c) { return c->pid; }

int sl_pgc_stop(sl_pgc *c, char mode)
{
    if (!c->pid)
        return 0;
    kill(c->pid, mode == 'f' ? SIGINT : SIGQUIT);
    int rc = wait_for(c->pid, 15000);
    if (rc < 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
    }
    c->pid = 0;
    return rc < 0 ? -1 : 0;
}

int sl_pgc_start_again(sl_pgc *c, char *err, size_t errlen)
{
    if (c->pid)
        return fail(err, errlen, "postgres is still running");
    return launch(c, err, errlen);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

void sl_pgc_destroy(sl_pgc *c)
{
    if (!c)
        return;
    sl_pgc_stop(c, 'i');
    if (!getenv("SLUICE_KEEP_TMP"))
        nftw(c->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(c);
}
