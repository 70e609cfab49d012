/* forkserver.c - the fork server of `sluice run` (see forkserver.h).
 *
 * Run and server speak over a stream socketpair. A request is a header (n
 * children, envc, bytes of strings) carrying the n stdout/stderr
 * descriptors as SCM_RIGHTS, then each child's argc (uint32), then the
 * strings, each with its NUL: every child's argv in turn, then the
 * environment. The answer is n int32: each child's pid, or a negative
 * errno.
 *
 * A batch's life:
 *
 *     server: reads the request; makes the gate (a pipe) and the go flag (a
 *             shared page); forks the intermediate child
 *     middle: forks the n roles; writes their pids to the server; exits
 *     roles:  each blocks reading the gate
 *     server: reads the pids, reaps the middle child (the roles are now
 *             run's), sends the pids to run; only if that worked sets go;
 *             closes its end of the gate
 *     roles:  see EOF; without go they exit at once, else they become
 *             what exec would have made them and run entry
 *
 * So no role runs before run knows its pid and can reap it. */
#include "forkserver.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "proctitle.h"

extern char **environ;

#define REPLY_TIMEOUT_MS 10000
#define MAX_REQUEST (8u << 20) /* argv and environment: far beyond ARG_MAX */
#define SOCK 3                 /* the server's socket, once it has tidied up */

struct sl_forkserver {
    pid_t pid;
    int sock; /* -1 once the server is of no use */
};

typedef struct {
    uint32_t n, envc, len;
} header;

typedef struct {
    int n;
    int fds[SL_FORKSERVER_BATCH]; /* each child's stdout and stderr */
    uint32_t argc[SL_FORKSERVER_BATCH];
    char **argv[SL_FORKSERVER_BATCH]; /* into strings */
    char **env;
    char *strings;
} request;

/* The dispositions run had when it forked the server: the ones an exec'd
 * child would have had after its own start-up (a sanitizer's handlers
 * included), which each role is given back. */
static struct sigaction start_dispositions[NSIG];

static void request_free(request *rq)
{
    for (int i = 0; i < SL_FORKSERVER_BATCH; i++) {
        free(rq->argv[i]);
        if (rq->fds[i] >= 0)
            close(rq->fds[i]);
    }
    free(rq->env);
    free(rq->strings);
}

/* 0, or the errno that stopped it (EPIPE at EOF). */
static int read_full(int fd, void *p, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? errno : EPIPE;
        got += (size_t)r;
    }
    return 0;
}

/* To a socket, without SIGPIPE. */
static int send_full(int fd, const void *p, size_t n)
{
    for (size_t put = 0; put < n;) {
        ssize_t w = send(fd, (const char *)p + put, n - put, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EPIPE;
        put += (size_t)w;
    }
    return 0;
}

/* Splits n NUL-terminated strings off *p into a NULL-terminated array;
 * NULL if they are not all there. */
static char **split(char **p, const char *end, uint32_t n)
{
    char **v = sl_xcalloc((size_t)n + 1, sizeof *v);
    for (uint32_t i = 0; i < n; i++) {
        char *nul = *p < end ? memchr(*p, '\0', (size_t)(end - *p)) : NULL;
        if (!nul) {
            free(v);
            return NULL;
        }
        v[i] = *p;
        *p = nul + 1;
    }
    return v;
}

/* 1 with a request, 0 at EOF (run is done with the server), -1 on a
 * malformed one. rq is to be freed either way. */
static int read_request(int sock, request *rq)
{
    memset(rq, 0, sizeof *rq);
    for (int i = 0; i < SL_FORKSERVER_BATCH; i++)
        rq->fds[i] = -1;
    header h;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * SL_FORKSERVER_BATCH)];
    } control;
    struct iovec iov = {.iov_base = &h, .iov_len = sizeof h};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t got;
    while ((got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    if (got == 0)
        return 0;
    if (got < 0)
        return -1;
    int nfds = 0;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        memcpy(rq->fds, CMSG_DATA(c), sizeof(int) * (size_t)nfds);
    }
    if (got < (ssize_t)sizeof h && read_full(sock, (char *)&h + got, sizeof h - (size_t)got))
        return -1;
    if (h.n < 1 || h.n > SL_FORKSERVER_BATCH || (int)h.n != nfds || h.len > MAX_REQUEST ||
        read_full(sock, rq->argc, sizeof rq->argc[0] * h.n))
        return -1;
    rq->n = (int)h.n;
    rq->strings = sl_xmalloc(h.len + 1);
    if (read_full(sock, rq->strings, h.len))
        return -1;
    char *p = rq->strings;
    const char *end = rq->strings + h.len;
    for (int i = 0; i < rq->n; i++)
        if (rq->argc[i] < 1 || !(rq->argv[i] = split(&p, end, rq->argc[i])))
            return -1;
    rq->env = split(&p, end, h.envc);
    return rq->env ? 1 : -1;
}

/* In role i: waits for the server's word, then becomes the process exec
 * would have made and runs entry. */
static _Noreturn void become_role(request *rq, int i, const int gate[2], atomic_int *go, pid_t run,
                                  sl_forkserver_entry entry)
{
    close(gate[1]);
    char b;
    while (read(gate[0], &b, 1) < 0 && errno == EINTR)
        ;
    if (!atomic_load(go))
        _exit(1);
    munmap(go, sizeof *go);
    /* If run dies, so does the role, as with the children run execs. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != run)
        _exit(1);
    /* Children stop on run's word, not on the terminal's. */
    setpgid(0, 0);
    for (int s = 1; s < NSIG; s++)
        sigaction(s, &start_dispositions[s], NULL); /* fails harmlessly for SIGKILL, SIGSTOP, glibc's own */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(rq->fds[i], STDOUT_FILENO) < 0 || dup2(rq->fds[i], STDERR_FILENO) < 0)
        _exit(127);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0)
        _exit(127);
    /* The server's socket, the other roles' output, the gate: not the
     * role's. */
    close_range(3, ~0u, 0);
    for (int k = 0; k < SL_FORKSERVER_BATCH; k++)
        rq->fds[k] = -1;
    clearenv();
    for (char **e = rq->env; *e; e++) {
        char *eq = strchr(*e, '=');
        if (!eq || eq == *e)
            continue;
        *eq = '\0';
        setenv(*e, eq + 1, 1);
        *eq = '=';
    }
    /* Only now does nothing point into the memory the title goes to. */
    sl_proctitle_set((const char *const *)rq->argv[i]);
    int rc = entry((int)rq->argc[i], rq->argv[i]);
    request_free(rq);
    exit(rc);
}

/* Forks the batch's roles through an intermediate child and answers run.
 * Returns 0, or -1 if run could not be answered. */
static int spawn(request *rq, pid_t run, sl_forkserver_entry entry)
{
    int32_t pids[SL_FORKSERVER_BATCH];
    for (int i = 0; i < rq->n; i++)
        pids[i] = -EIO;
    int p[2] = {-1, -1}, gate[2] = {-1, -1};
    atomic_int *go = mmap(NULL, sizeof *go, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t middle = -1;
    if (go == MAP_FAILED || pipe2(p, O_CLOEXEC) != 0 || pipe2(gate, O_CLOEXEC) != 0 || (middle = fork()) < 0) {
        pids[0] = -errno;
        goto answer;
    }
    if (middle == 0) {
        close(p[0]);
        for (int i = 0; i < rq->n; i++) {
            pid_t pid = fork();
            if (pid == 0)
                become_role(rq, i, gate, go, run, entry);
            pids[i] = pid < 0 ? -errno : pid;
        }
        /* At most 256 bytes: one write to a pipe, never split. */
        size_t len = sizeof pids[0] * (size_t)rq->n;
        _exit(write(p[1], pids, len) == (ssize_t)len ? 0 : 1);
    }
    close(p[1]);
    p[1] = -1;
    int32_t got[SL_FORKSERVER_BATCH];
    if (read_full(p[0], got, sizeof got[0] * (size_t)rq->n) == 0)
        memcpy(pids, got, sizeof got[0] * (size_t)rq->n);
    /* Once it is reaped, the roles' parent is run. */
    while (waitpid(middle, NULL, 0) < 0 && errno == EINTR)
        ;
answer:;
    bool all = true;
    for (int i = 0; i < rq->n; i++)
        all = all && pids[i] > 0;
    int err = send_full(SOCK, pids, sizeof pids[0] * (size_t)rq->n);
    if (go != MAP_FAILED) {
        atomic_store(go, all && !err);
        munmap(go, sizeof *go);
    }
    for (int k = 0; k < 2; k++) {
        if (p[k] >= 0)
            close(p[k]);
        if (gate[k] >= 0)
            close(gate[k]); /* the roles' EOF */
    }
    return err ? -1 : 0;
}

/* nats.c built with TLS seeds its unique ids from OpenSSL's RAND_bytes
 * when it starts; the first call in a process loads OpenSSL's configuration,
 * providers and error strings, a third of a mapper's start-up CPU. Made
 * once here, it is inherited by every role; OpenSSL's random generator
 * reseeds itself in a process whose pid is not the one it was seeded in,
 * so the roles' ids still differ. Looked up, not linked: sluice does not
 * use OpenSSL itself, and a nats.c without TLS does not load it. No thread
 * is started. */
static void prime_openssl(void)
{
    int (*rand_bytes)(unsigned char *, int) = (int (*)(unsigned char *, int))dlsym(RTLD_DEFAULT, "RAND_bytes");
    unsigned char b[16];
    if (rand_bytes)
        rand_bytes(b, sizeof b);
}

static _Noreturn void serve(int sock, pid_t run, sl_forkserver_entry entry)
{
    /* Killed with run, even if the socket's EOF never came. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != run)
        _exit(1);
    /* Ctrl-C is for run alone, which then stops its children in order. */
    setpgid(0, 0);
    for (int s = 1; s < NSIG; s++)
        sigaction(s, NULL, &start_dispositions[s]);
    /* Everything but stdin, stdout, stderr and the socket: run's other
     * descriptors are not the children's. */
    if (sock != SOCK && (dup2(sock, SOCK) < 0 || close(sock) != 0))
        _exit(1);
    close_range(SOCK + 1, ~0u, 0);
    /* The server needs no environment (each request brings the children's),
     * and its command line tells ps what it is. */
    clearenv();
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)run);
    sl_proctitle_set((const char *const[]){"sluice", "fork-server", "--run", pid, NULL});
    prime_openssl();
    for (;;) {
        request rq;
        int r = read_request(SOCK, &rq);
        if (r > 0)
            r = spawn(&rq, run, entry) == 0 ? 1 : -1;
        request_free(&rq);
        if (r <= 0)
            _exit(r == 0 ? 0 : 1);
    }
}

/* Threads of this process, from /proc/self/stat (field 20); 0 if unknown. */
static long threads(void)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    for (int field = 2; p && field < 20; field++)
        p = strchr(p + 1, ' ');
    return p ? strtol(p + 1, NULL, 10) : 0;
}

sl_status sl_forkserver_start(sl_forkserver **out, sl_forkserver_entry entry)
{
    long n = threads();
    if (n != 1)
        return sl_fail(SL_EINVAL, "cannot fork a fork server: the process has %ld threads", n);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return sl_fail(SL_EIO, "socketpair: %s", strerror(errno));
    /* Whatever stdio holds unwritten would be written again by each child. */
    fflush(NULL);
    pid_t run = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return sl_fail(SL_EIO, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        close(sv[0]);
        serve(sv[1], run, entry);
    }
    close(sv[1]);
    sl_forkserver *fs = sl_xcalloc(1, sizeof *fs);
    fs->pid = pid;
    fs->sock = sv[0];
    *out = fs;
    return SL_OK;
}

/* The server misbehaved or is gone: kill it (if need be) and refuse from
 * now on. It is reaped by sl_forkserver_stop. */
static sl_status give_up(sl_forkserver *fs, const char *why)
{
    if (fs->sock >= 0) {
        close(fs->sock);
        fs->sock = -1;
        kill(fs->pid, SIGKILL);
    }
    return sl_fail(SL_EIO, "fork server %d: %s", (int)fs->pid, why);
}

sl_status sl_forkserver_spawn(sl_forkserver *fs, sl_forkserver_child *kids, int n)
{
    SL_ASSERT(n >= 1 && n <= SL_FORKSERVER_BATCH);
    if (fs->sock < 0)
        return sl_fail(SL_EIO, "fork server %d is gone", (int)fs->pid);
    sl_buf b = SL_BUF_INIT;
    uint32_t argc[SL_FORKSERVER_BATCH];
    header h = {.n = (uint32_t)n};
    for (int i = 0; i < n; i++)
        for (argc[i] = 0; kids[i].argv[argc[i]]; argc[i]++)
            sl_buf_append(&b, kids[i].argv[argc[i]], strlen(kids[i].argv[argc[i]]) + 1);
    for (; environ && environ[h.envc]; h.envc++)
        sl_buf_append(&b, environ[h.envc], strlen(environ[h.envc]) + 1);
    if (b.len > MAX_REQUEST) {
        sl_buf_free(&b);
        return give_up(fs, "argv and environment are too long");
    }
    h.len = (uint32_t)b.len;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * SL_FORKSERVER_BATCH)];
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = &h, .iov_len = sizeof h};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++)
        memcpy(CMSG_DATA(c) + sizeof(int) * (size_t)i, &kids[i].out_fd, sizeof(int));
    ssize_t sent;
    while ((sent = sendmsg(fs->sock, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    int err = sent < 0 ? errno : 0;
    if (!err && sent < (ssize_t)sizeof h)
        err = send_full(fs->sock, (char *)&h + sent, sizeof h - (size_t)sent);
    if (!err)
        err = send_full(fs->sock, argc, sizeof argc[0] * (size_t)n);
    if (!err)
        err = send_full(fs->sock, b.data, b.len);
    sl_buf_free(&b);
    if (err)
        return give_up(fs, strerror(err));
    struct pollfd p = {.fd = fs->sock, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, REPLY_TIMEOUT_MS)) < 0 && errno == EINTR)
        ;
    if (r == 0)
        return give_up(fs, "no answer within 10 s");
    int32_t pids[SL_FORKSERVER_BATCH];
    if (read_full(fs->sock, pids, sizeof pids[0] * (size_t)n) != 0)
        return give_up(fs, "it exited");
    for (int i = 0; i < n; i++)
        if (pids[i] <= 0)
            return give_up(fs, strerror(pids[i] < 0 ? -pids[i] : EIO));
    for (int i = 0; i < n; i++)
        kids[i].pid = pids[i];
    return SL_OK;
}

pid_t sl_forkserver_pid(const sl_forkserver *fs)
{
    return fs->pid;
}

void sl_forkserver_stop(sl_forkserver *fs, struct rusage *ru)
{
    if (ru)
        memset(ru, 0, sizeof *ru);
    if (!fs)
        return;
    if (fs->sock >= 0)
        close(fs->sock); /* its EOF: the server exits */
    struct rusage got;
    pid_t r = 0;
    for (int i = 0; i < 1000 && (r = wait4(fs->pid, NULL, WNOHANG, &got)) == 0; i++)
        usleep(1000); /* it exits within a ms or two of the EOF; run waits for it */
    if (r == 0) {
        kill(fs->pid, SIGKILL);
        while ((r = wait4(fs->pid, NULL, 0, &got)) < 0 && errno == EINTR)
            ;
    }
    if (r == fs->pid && ru)
        *ru = got;
    free(fs);
}
