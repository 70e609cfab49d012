/* run.c - `sluice run`: a whole job on one machine.
 *
 * The launcher is a small supervisor, like Kubernetes on one node: it
 * starts a private nats-server (unless NATS_URL is given), the savers, the
 * fetcher and the mappers as child processes of this same binary, passes
 * them its configuration through the environment, forwards their log lines
 * with a name prefix, restarts whichever dies, and shows progress by asking
 * the fetcher for P.status. The job ends when the fetcher exits 0 or 3;
 * then everything else is stopped. A child that keeps failing at start
 * (bad database path, NATS refusing it) ends the run with its error rather
 * than a restart loop.
 *
 * Its own children (the roles, the exporter) are forked by a fork server
 * (forkserver.h) that run starts before anything else, not exec'd: 50
 * mappers then start in a fraction of the time. nats-server and Prometheus
 * are exec'd, and so is every child if the fork server cannot be had. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "bus.h"
#include "clock.h"
#include "command.h"
#include "forkserver.h"
#include "log.h"
#include "roles.h"
#include "stop.h"
#include "transform.h"
#include "url.h"

#define MAX_CHILDREN 1200
#define QUICK_EXIT_MS 2000
#define GIVE_UP_AFTER 3
#define STOP_GRACE_MS 5000
/* A saver stopping merges what its sink has staged (sink_sqlite.c): a
 * few seconds at 10 million rows. Killed sooner, it would leave objects
 * out of the objects table until a saver runs on the file again. */
#define SAVER_GRACE_MS 120000

/* Infrastructure (nats-server, the exporter, Prometheus) and the roles. */
typedef enum { K_NATS, K_EXPORTER, K_PROMETHEUS, K_FETCHER, K_SAVER, K_MAPPER } kind;

static bool is_infra(kind k)
{
    return k == K_NATS || k == K_EXPORTER || k == K_PROMETHEUS;
}

/* The prometheus.yml and rules.yml of deploy/prometheus, linked in by the
 * Makefile (ld -b binary), so --monitor needs no files beside the binary. */
extern const char _binary_deploy_prometheus_prometheus_yml_start[], _binary_deploy_prometheus_prometheus_yml_end[];
extern const char _binary_deploy_prometheus_rules_yml_start[], _binary_deploy_prometheus_rules_yml_end[];

typedef struct {
    char name[32];
    kind kind;
    pid_t pid;        /* 0 when not running */
    int fd;           /* its stdout+stderr, -1 when closed */
    sl_buf partial;   /* an unfinished log line */
    char last_line[512];
    int64_t started_ms;
    int64_t restart_at; /* > 0: start again at this time */
    int quick_exits;  /* consecutive exits soon after start */
    int restarts;
    int http_port;    /* its /metrics (roles, exporter) or UI (Prometheus) */
    double cpu_s;     /* user+system CPU of every run reaped so far */
    long maxrss_kb;   /* the largest peak RSS of those runs */
} child;

typedef struct {
    const sl_config *cfg;
    child kids[MAX_CHILDREN];
    int nkids;
    char tmpdir[64];
    char url[128];
    int nats_port, monitor_port;
    char promdir[96]; /* --monitor: Prometheus's config, targets, data */
    bool tty;
    bool bar_shown;
    int64_t started_ms;
    sl_bus *bus;
    pthread_mutex_t mu;
    char *done_json;  /* the fetcher's P.done summary */
    char *last_status;
    int64_t objects_at_start; /* saved before this run began */
    bool have_start;
    int64_t ended_ms;
    sl_forkserver *fs;  /* NULL: children are exec'd */
    struct rusage fs_usage; /* the fork server's, once it is reaped */
} launcher;

static void clear_bar(launcher *ln)
{
    if (ln->tty && ln->bar_shown) {
        fputs("\r\033[K", stderr);
        ln->bar_shown = false;
    }
}

static void say(launcher *ln, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(launcher *ln, const char *fmt, ...)
{
    clear_bar(ln);
    va_list ap;
    va_start(ap, fmt);
    fputs("sluice run: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void forward_line(launcher *ln, child *c, const char *line, size_t len)
{
    if (c->kind == K_NATS && !strstr(line, "[ERR]") && !strstr(line, "[FTL]") && !strstr(line, "[WRN]"))
        return; /* nats-server's start-up chatter is not news */
    if (c->kind == K_PROMETHEUS && !strstr(line, "level=warn") && !strstr(line, "level=error"))
        return;
    snprintf(c->last_line, sizeof c->last_line, "%.*s", (int)len, line);
    clear_bar(ln);
    fprintf(stderr, "%-9s | %.*s\n", c->name, (int)len, line);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* waitpid for child c that also keeps its resource use: every run's CPU
 * time adds up (restarts included) and the peak RSS is the largest run's.
 * The peak includes the few pages of this launcher that the child held
 * between fork and exec. */
static pid_t reap(child *c, int *status, int flags)
{
    struct rusage ru;
    int st = 0;
    pid_t r = wait4(c->pid, &st, flags, &ru);
    if (r == c->pid) {
        c->cpu_s += tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
        if (ru.ru_maxrss > c->maxrss_kb)
            c->maxrss_kb = ru.ru_maxrss;
        if (status)
            *status = st;
    }
    return r;
}

/* Reads what a child wrote; forwards whole lines. */
static void drain_child(launcher *ln, child *c)
{
    char buf[8192];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                if (c->partial.len)
                    forward_line(ln, c, c->partial.data, c->partial.len);
                sl_buf_reset(&c->partial);
                close(c->fd);
                c->fd = -1;
            }
            return;
        }
        sl_buf_append(&c->partial, buf, (size_t)n);
        char *start = c->partial.data, *nl;
        while ((nl = memchr(start, '\n', c->partial.len - (size_t)(start - c->partial.data)))) {
            forward_line(ln, c, start, (size_t)(nl - start));
            start = nl + 1;
        }
        size_t rest = c->partial.len - (size_t)(start - c->partial.data);
        memmove(c->partial.data, start, rest);
        c->partial.len = rest;
        c->partial.data[rest] = '\0';
    }
}

/* Ends the fork server and keeps its resource use; children are exec'd
 * from now on. */
static void stop_forkserver(launcher *ln)
{
    if (ln->fs)
        sl_forkserver_stop(ln->fs, &ln->fs_usage);
    ln->fs = NULL;
}

/* Forks and execs path with argv, its stdout and stderr on out_fd, with
 * envp as its environment (NULL: this process's). */
static sl_status exec_child(const char *path, const char *const *argv, char **envp, int out_fd, pid_t *out)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return sl_fail(SL_EIO, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* If the launcher dies, so do its children. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        dup2(out_fd, STDOUT_FILENO);
        dup2(out_fd, STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        /* Children stop on the launcher's word, not on the terminal's. */
        setpgid(0, 0);
        if (envp)
            environ = envp;
        if (strchr(path, '/'))
            execv(path, (char *const *)argv);
        else
            execvp(path, (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    *out = pid;
    return SL_OK;
}

/* What a child runs. argv points into the buffers, so a cmdline is filled
 * in place and not copied. */
typedef struct {
    const char *path; /* NULL: this binary, through the fork server if there is one */
    const char *argv[16];
    char **envp; /* NULL: run's own; else freed by cmdline_free */
    char port[16], mport[16], http[32], monurl[64], cfgflag[160], dataflag[160], listen[64];
} cmdline;

/* run's environment with GOMAXPROCS=1 added, unless it has one: the
 * nats-server of one machine's job moves a few thousand messages a second,
 * and with a Go scheduler thread per core it spent a quarter more CPU on
 * them (0.32 -> 0.23-0.25 s in the 100,000-object job, four runs), CPU the
 * roles beside it need on a small machine. NULL when nothing is added. */
static char **nats_environment(void)
{
    if (getenv("GOMAXPROCS"))
        return NULL;
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = sl_xmalloc((n + 2) * sizeof *env);
    memcpy(env, environ, n * sizeof *env);
    env[n] = "GOMAXPROCS=1";
    env[n + 1] = NULL;
    return env;
}

static void cmdline_free(cmdline *cl)
{
    free(cl->envp); /* the strings are environ's */
    cl->envp = NULL;
}

static void command_line(const launcher *ln, const child *c, cmdline *cl)
{
    memset(cl, 0, sizeof *cl);
    snprintf(cl->port, sizeof cl->port, "%d", ln->nats_port);
    snprintf(cl->mport, sizeof cl->mport, "%d", ln->monitor_port);
    snprintf(cl->http, sizeof cl->http, "127.0.0.1:%d", c->http_port);
    snprintf(cl->monurl, sizeof cl->monurl, "http://127.0.0.1:%d", ln->monitor_port);
    snprintf(cl->cfgflag, sizeof cl->cfgflag, "--config.file=%s/prometheus.yml", ln->promdir);
    snprintf(cl->dataflag, sizeof cl->dataflag, "--storage.tsdb.path=%s/data", ln->promdir);
    snprintf(cl->listen, sizeof cl->listen, "--web.listen-address=127.0.0.1:%d", c->http_port);
    switch (c->kind) {
    case K_NATS: {
        const char *path = cl->path = ln->cfg->nats_server;
        cl->envp = nats_environment();
        if (ln->nats_port) {
            const char *a[] = {path, "-a", "127.0.0.1", "-p", cl->port, "-m", cl->mport, NULL};
            memcpy(cl->argv, a, sizeof a);
        } else {
            const char *a[] = {path, "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--ports_file_dir", ln->tmpdir, NULL};
            memcpy(cl->argv, a, sizeof a);
        }
        break;
    }
    case K_PROMETHEUS: {
        const char *path = cl->path = ln->cfg->prometheus;
        const char *a[] = {path, cl->cfgflag, cl->dataflag, cl->listen, "--log.level=warn", NULL};
        memcpy(cl->argv, a, sizeof a);
        break;
    }
    case K_EXPORTER: {
        const char *a[] = {"sluice", "nats-exporter", "--nats-monitor", cl->monurl, "--http", cl->http, NULL};
        memcpy(cl->argv, a, sizeof a);
        break;
    }
    default: {
        const char *role = c->kind == K_FETCHER ? "fetcher" : c->kind == K_SAVER ? "saver" : "mapper";
        const char *a[] = {"sluice", role, "--http", cl->http, NULL};
        memcpy(cl->argv, a, sizeof a);
    }
    }
}

/* Child c runs as pid, writing to the pipe whose read end is fd. */
static void started(launcher *ln, child *c, pid_t pid, int fd)
{
    fcntl(fd, F_SETFL, O_NONBLOCK);
    if (c->fd >= 0) {
        drain_child(ln, c);
        if (c->fd >= 0)
            close(c->fd);
    }
    c->fd = fd;
    c->pid = pid;
    c->started_ms = sl_now_ms();
    c->restart_at = 0;
    if (c->kind != K_NATS || sl_log_enabled(SL_LOG_DEBUG))
        sl_info("started", "child=%s pid=%d restarts=%d http_port=%d", c->name, (int)pid, c->restarts,
                c->http_port);
}

/* Starts the n children at cs (at most SL_FORKSERVER_BATCH): this
 * binary's in one request to the fork server, the others (and all of them
 * without a fork server) with fork and exec. */
static sl_status start_children(launcher *ln, child *cs, int n)
{
    SL_ASSERT(n >= 1 && n <= SL_FORKSERVER_BATCH);
    cmdline cl[SL_FORKSERVER_BATCH];
    int fds[SL_FORKSERVER_BATCH][2];
    sl_forkserver_child fk[SL_FORKSERVER_BATCH];
    int nfk = 0, opened = 0;
    sl_status st = SL_OK;
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return sl_fail(SL_EIO, "cannot find my own binary: %s", strerror(errno));
    self[len] = '\0';
    /* Everything a child needs is prepared before fork: after it, an
     * exec'd child only dups descriptors and execs. */
    for (; opened < n; opened++) {
        if (pipe2(fds[opened], O_CLOEXEC) != 0) {
            st = sl_fail(SL_EIO, "pipe: %s", strerror(errno));
            goto cleanup;
        }
        command_line(ln, &cs[opened], &cl[opened]);
        if (!cl[opened].path)
            fk[nfk++] = (sl_forkserver_child){.argv = cl[opened].argv, .out_fd = fds[opened][1]};
    }
    if (nfk && !ln->fs)
        nfk = 0;
    if (nfk && sl_forkserver_spawn(ln->fs, fk, nfk) != SL_OK) {
        sl_warn("fork server failed; children are exec'd from now on", "error=%s", sl_log_q(sl_errmsg()));
        stop_forkserver(ln);
        nfk = 0;
    }
    for (int i = 0, k = 0; i < n; i++) {
        pid_t pid = 0;
        if (!cl[i].path && k < nfk)
            pid = fk[k++].pid;
        else if ((st = exec_child(cl[i].path ? cl[i].path : self, cl[i].argv, cl[i].envp, fds[i][1], &pid)))
            goto cleanup;
        close(fds[i][1]);
        started(ln, &cs[i], pid, fds[i][0]);
        fds[i][0] = fds[i][1] = -1;
    }
cleanup:
    for (int i = 0; i < opened; i++) {
        cmdline_free(&cl[i]);
        for (int e = 0; e < 2; e++)
            if (fds[i][e] >= 0)
                close(fds[i][e]);
    }
    return st;
}

static sl_status start_child(launcher *ln, child *c)
{
    return start_children(ln, c, 1);
}

/* A port on 127.0.0.1 that was free a moment ago. The child binds it a
 * few milliseconds later; keeping it for the child's restarts keeps
 * Prometheus's targets valid. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static child *add_child(launcher *ln, kind k, const char *name)
{
    child *c = &ln->kids[ln->nkids++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->kind = k;
    c->fd = -1;
    /* The kernel may offer a probed port again before the child it went to
     * has bound it: never give two children the same one (the second
     * would fail to listen, and fail again on every restart). */
    for (bool taken = k != K_NATS; taken;) {
        c->http_port = free_port();
        taken = c->http_port && (c->http_port == ln->nats_port || c->http_port == ln->monitor_port);
        for (int i = 0; i < ln->nkids - 1 && c->http_port && !taken; i++)
            taken = ln->kids[i].http_port == c->http_port;
    }
    return c;
}

/* Reads the ports file nats-server writes into tmpdir. */
static bool read_ports(launcher *ln, pid_t pid)
{
    char path[128];
    snprintf(path, sizeof path, "%s/nats-server_%d.ports", ln->tmpdir, (int)pid);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j)
        return false;
    const char *u = json_string_value(json_array_get(json_object_get(j, "nats"), 0));
    const char *m = json_string_value(json_array_get(json_object_get(j, "monitoring"), 0));
    bool ok = false;
    if (u && m) {
        const char *up = strrchr(u, ':'), *mp = strrchr(m, ':');
        ln->nats_port = up ? atoi(up + 1) : 0;
        ln->monitor_port = mp ? atoi(mp + 1) : 0;
        snprintf(ln->url, sizeof ln->url, "nats://127.0.0.1:%d", ln->nats_port);
        ok = ln->nats_port > 0;
    }
    json_decref(j);
    return ok;
}

static void on_done(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    launcher *ln = closure;
    pthread_mutex_lock(&ln->mu);
    free(ln->done_json);
    ln->done_json = strndup(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    pthread_mutex_unlock(&ln->mu);
    sl_msg_free(m);
}

static int64_t jint(json_t *j, const char *a, const char *b)
{
    json_t *v = json_object_get(j, a);
    if (b)
        v = json_object_get(v, b);
    return (int64_t)json_integer_value(v);
}

/* Asks the fetcher for its status and draws the progress bar or line. */
static void show_progress(launcher *ln)
{
    natsMsg *req = sl_msg_new(sl_bus_subject(ln->bus, SL_SUBJ_STATUS), NULL, NULL, 0);
    natsMsg *reply = NULL;
    sl_status st = sl_bus_request(ln->bus, req, 250, &reply);
    sl_msg_free(req);
    if (st != SL_OK)
        return;
    json_t *j = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, NULL);
    if (json_is_object(j)) {
        pthread_mutex_lock(&ln->mu);
        free(ln->last_status);
        ln->last_status = strndup(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply));
        pthread_mutex_unlock(&ln->mu);
        int64_t total = jint(j, "objects", "total"), saved = jint(j, "objects", "saved");
        int64_t dead_chunks = jint(j, "chunks", "dead"), redeliv = jint(j, "redeliveries", NULL);
        if (!ln->have_start) {
            ln->objects_at_start = jint(j, "objects", "saved_before");
            ln->have_start = true;
        }
        double secs = (double)(sl_now_ms() - ln->started_ms) / 1000.0;
        double rate = secs > 0 ? (double)(saved - ln->objects_at_start) / secs : 0;
        double frac = total ? (double)saved / (double)total : 0;
        char eta[32] = "?";
        if (rate > 0)
            snprintf(eta, sizeof eta, "%.0fs", (double)(total - saved) / rate);
        if (ln->tty) {
            char bar[31];
            int fill = (int)(frac * 30);
            for (int i = 0; i < 30; i++)
                bar[i] = i < fill ? '#' : '-';
            bar[30] = '\0';
            fprintf(stderr, "\r\033[K[%s] %5.1f%% %" PRId64 "/%" PRId64 " objects  %.0f obj/s  ETA %s"
                            "  redeliveries %" PRId64 "  dead %" PRId64,
                    bar, frac * 100, saved, total, rate, eta, redeliv, dead_chunks);
            ln->bar_shown = true;
        } else {
            fprintf(stderr, "sluice run: progress %.1f%% %" PRId64 "/%" PRId64 " objects, %.0f objects/s,"
                            " ETA %s, redeliveries %" PRId64 ", dead chunks %" PRId64 "\n",
                    frac * 100, saved, total, rate, eta, redeliv, dead_chunks);
        }
        fflush(stderr);
    }
    json_decref(j);
    sl_msg_free(reply);
}

/* Resource use of one kind of child, over all its processes and runs. */
typedef struct {
    int n;          /* processes that ran */
    double cpu_s;   /* CPU seconds, summed */
    long maxrss_kb; /* the largest peak RSS of any of them */
} usage;

static usage usage_of(const launcher *ln, kind k)
{
    usage u = {0};
    for (int i = 0; i < ln->nkids; i++) {
        const child *c = &ln->kids[i];
        if (c->kind != k || (c->cpu_s == 0 && c->maxrss_kb == 0))
            continue;
        u.n++;
        u.cpu_s += c->cpu_s;
        if (c->maxrss_kb > u.maxrss_kb)
            u.maxrss_kb = c->maxrss_kb;
    }
    return u;
}

/* The roles and NATS in the order the summary and the stats file show them. */
static const struct {
    kind k;
    const char *label, *key;
} shown_kinds[] = {{K_FETCHER, "fetcher", "fetcher"}, {K_MAPPER, "mappers", "mapper"},
                   {K_SAVER, "savers", "saver"},     {K_NATS, "nats-server", "nats"}};

static void print_resources(const launcher *ln)
{
    printf("  cpu, peak rss\n");
    for (size_t i = 0; i < sizeof shown_kinds / sizeof shown_kinds[0]; i++) {
        usage u = usage_of(ln, shown_kinds[i].k);
        if (!u.n)
            continue;
        char who[32];
        snprintf(who, sizeof who, u.n > 1 ? "%s (%d)" : "%s", shown_kinds[i].label, u.n);
        printf("    %-14s %7.2f s  %6.1f MiB%s\n", who, u.cpu_s, (double)u.maxrss_kb / 1024.0,
               u.n > 1 ? " (largest)" : "");
    }
    if (ln->fs_usage.ru_maxrss)
        printf("    %-14s %7.2f s  %6.1f MiB\n", "fork server",
               tv_s(ln->fs_usage.ru_utime) + tv_s(ln->fs_usage.ru_stime), (double)ln->fs_usage.ru_maxrss / 1024.0);
}

/* --stats FILE: the summary's figures for a program to read, one
 * key=value a line (cpu in seconds, rss in KiB). */
static void write_stats(const launcher *ln, int rc, double secs, int64_t objects, int64_t redeliveries)
{
    FILE *f = fopen(ln->cfg->stats, "w");
    if (!f) {
        say((launcher *)ln, "cannot write --stats %s: %s", ln->cfg->stats, strerror(errno));
        return;
    }
    struct rusage self;
    getrusage(RUSAGE_SELF, &self);
    fprintf(f, "exit=%d\nwall_s=%.3f\nobjects=%" PRId64 "\nobjects_per_s=%.0f\nredeliveries=%" PRId64 "\n", rc,
            secs, objects, secs > 0 ? (double)objects / secs : 0.0, redeliveries);
    for (size_t i = 0; i < sizeof shown_kinds / sizeof shown_kinds[0]; i++) {
        usage u = usage_of(ln, shown_kinds[i].k);
        fprintf(f, "%s_processes=%d\n%s_cpu_s=%.3f\n%s_maxrss_kb=%ld\n", shown_kinds[i].key, u.n,
                shown_kinds[i].key, u.cpu_s, shown_kinds[i].key, u.maxrss_kb);
    }
    fprintf(f, "forkserver_cpu_s=%.3f\nforkserver_maxrss_kb=%ld\n",
            tv_s(ln->fs_usage.ru_utime) + tv_s(ln->fs_usage.ru_stime), ln->fs_usage.ru_maxrss);
    fprintf(f, "run_cpu_s=%.3f\nrun_maxrss_kb=%ld\n", tv_s(self.ru_utime) + tv_s(self.ru_stime), self.ru_maxrss);
    if (fclose(f) != 0)
        say((launcher *)ln, "cannot write --stats %s: %s", ln->cfg->stats, strerror(errno));
}

static void print_summary(launcher *ln, int rc)
{
    clear_bar(ln);
    double secs = (double)((ln->ended_ms ? ln->ended_ms : sl_now_ms()) - ln->started_ms) / 1000.0;
    pthread_mutex_lock(&ln->mu);
    const char *text = ln->done_json ? ln->done_json : ln->last_status;
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    pthread_mutex_unlock(&ln->mu);
    if (!j) {
        printf("sluice run: job %s ended (exit %d) after %.2f s; no summary from the fetcher\n", ln->cfg->job, rc,
               secs);
        if (ln->cfg->stats[0])
            write_stats(ln, rc, secs, 0, 0);
        return;
    }
    int64_t saved = jint(j, "objects", "saved"), total = jint(j, "objects", "total");
    int64_t chunks_done = jint(j, "chunks", "done"), chunks = jint(j, "chunks", "total");
    int64_t dead_chunks = jint(j, "chunks", "dead"), dead_objects = jint(j, "objects", "dead");
    int64_t now_saved = saved - (ln->have_start ? ln->objects_at_start : jint(j, "objects", "saved_before"));
    printf("sluice run: job %s %s\n", ln->cfg->job,
           rc == 0 ? "complete" : rc == 3 ? "finished with dead letters" : "stopped");
    printf("  objects saved   %" PRId64 " of %" PRId64 "\n", saved, total);
    printf("  chunks saved    %" PRId64 " of %" PRId64 "\n", chunks_done, chunks);
    printf("  redeliveries    %" PRId64 "\n", jint(j, "redeliveries", NULL));
    printf("  dead letters    %" PRId64 " chunks, %" PRId64 " objects\n", dead_chunks, dead_objects);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(j, "dead_chunks"), i, d)
    {
        const char *why = json_string_value(json_object_get(d, "reason"));
        printf("    chunk %" PRId64 ": %s\n", (int64_t)json_integer_value(json_object_get(d, "chunk")), why ? why : "?");
    }
    printf("  wall time       %.3f s\n", secs);
    printf("  throughput      %.0f objects/s\n", secs > 0 ? (double)now_saved / secs : 0.0);
    print_resources(ln);
    fflush(stdout);
    if (ln->cfg->stats[0])
        write_stats(ln, rc, secs, now_saved, jint(j, "redeliveries", NULL));
    json_decref(j);
}

/* Stops the roles, and the infrastructure too when `infra`. */
/* How long run waits for its Prometheus to be ready before pointing to it. */
#define PROMETHEUS_READY_MS 30000

/* True once the Prometheus on port answers its readiness check (200). */
static bool prometheus_ready(int port)
{
    CURL *c = curl_easy_init();
    if (!c)
        return false;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/-/ready", port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    long code = 0;
    bool ok = curl_easy_perform(c) == CURLE_OK && curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
              code == 200;
    curl_easy_cleanup(c);
    return ok;
}

/* How long child c has to stop after SIGTERM before it is killed. */
static int64_t grace_ms(const child *c)
{
    return c->kind == K_SAVER ? SAVER_GRACE_MS : STOP_GRACE_MS;
}

/* Says how role c ended after SIGTERM; false unless it exited 0. */
static bool stopped_cleanly(launcher *ln, child *c, int status, bool killed)
{
    if (is_infra(c->kind) || (WIFEXITED(status) && WEXITSTATUS(status) == 0))
        return true;
    if (killed)
        say(ln, "%s did not stop within %" PRId64 " s; killed", c->name, grace_ms(c) / 1000);
    else if (WIFEXITED(status))
        say(ln, "%s exited %d as it stopped: %s", c->name, WEXITSTATUS(status), c->last_line);
    else
        say(ln, "%s was ended by signal %d as it stopped: %s", c->name, WTERMSIG(status), c->last_line);
    return false;
}

/* Stops the roles, and with infra NATS and the monitoring too. False if a
 * role did not stop cleanly: it exited with another code than 0 (a saver
 * that could not leave its sink settled; a leak report under ASan) or had
 * to be killed. */
static bool stop_children(launcher *ln, bool infra)
{
    bool clean = true, killed[MAX_CHILDREN] = {false};
    for (int i = 0; i < ln->nkids; i++)
        if (ln->kids[i].pid > 0 && (infra || !is_infra(ln->kids[i].kind)))
            kill(ln->kids[i].pid, SIGTERM);
    int64_t t0 = sl_now_ms();
    for (;;) {
        bool any = false;
        for (int i = 0; i < ln->nkids; i++) {
            child *c = &ln->kids[i];
            int status;
            if (c->pid <= 0 || (!infra && is_infra(c->kind)))
                continue;
            if (c->fd >= 0)
                drain_child(ln, c);
            if (reap(c, &status, WNOHANG) == c->pid) {
                if (c->fd >= 0)
                    drain_child(ln, c);
                c->pid = 0;
                clean &= stopped_cleanly(ln, c, status, killed[i]);
            } else if (sl_now_ms() - t0 > grace_ms(c)) {
                kill(c->pid, SIGKILL);
                killed[i] = true;
                any = true;
            } else {
                any = true;
            }
        }
        if (!any)
            break;
        /* Children stop within milliseconds; polling at 10 ms added up to
         * 20 ms (two rounds) to the end of every run. */
        usleep(1000);
    }
    return clean;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void remove_tmpdir(launcher *ln)
{
    if (ln->tmpdir[0])
        nftw(ln->tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Starts the private nats-server and waits until it answers. */
static sl_status start_nats(launcher *ln)
{
    child *c = add_child(ln, K_NATS, "nats");
    sl_status st = start_child(ln, c);
    if (st)
        return st;
    int64_t deadline = sl_now_ms() + 10000;
    while (!read_ports(ln, c->pid)) {
        int status;
        if (reap(c, &status, WNOHANG) == c->pid) {
            c->pid = 0;
            drain_child(ln, c);
            return sl_fail(SL_EIO, "%s exited at start: %s", ln->cfg->nats_server,
                           c->last_line[0] ? c->last_line : "no output");
        }
        if (sl_now_ms() > deadline)
            return sl_fail(SL_ETIMEOUT, "%s did not start within 10 s", ln->cfg->nats_server);
        /* It answers 5-10 ms after its exec; every ms waited past that
         * is the whole job's. */
        usleep(1000);
    }
    sl_info("nats-server started", "url=%s monitor=http://127.0.0.1:%d pid=%d", ln->url, ln->monitor_port,
            (int)c->pid);
    return SL_OK;
}

static sl_status write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return sl_fail(SL_EIO, "cannot write %s: %s", path, strerror(errno));
    size_t w = fwrite(data, 1, len, f);
    if (fclose(f) != 0 || w != len)
        return sl_fail(SL_EIO, "cannot write %s: %s", path, strerror(errno));
    return SL_OK;
}

/* --monitor: the exporter (for a private nats-server) and Prometheus with
 * deploy/prometheus's configuration, scraping every child through the
 * file_sd target files written here. */
static sl_status setup_monitoring(launcher *ln)
{
    sl_status st;
    child *exporter = ln->monitor_port ? add_child(ln, K_EXPORTER, "exporter") : NULL;
    child *prom = add_child(ln, K_PROMETHEUS, "prometheus");
    snprintf(ln->promdir, sizeof ln->promdir, "%s/prometheus", ln->tmpdir);
    char targets[160];
    snprintf(targets, sizeof targets, "%s/targets", ln->promdir);
    if (mkdir(ln->promdir, 0755) != 0 || mkdir(targets, 0755) != 0)
        return sl_fail(SL_EIO, "mkdir %s: %s", targets, strerror(errno));
    sl_buf roles = SL_BUF_INIT, nats = SL_BUF_INIT;
    sl_buf_puts(&roles, "[{\"targets\": [");
    for (int i = 0, n = 0; i < ln->nkids; i++)
        if (!is_infra(ln->kids[i].kind))
            sl_buf_printf(&roles, "%s\"127.0.0.1:%d\"", n++ ? ", " : "", ln->kids[i].http_port);
    sl_buf_puts(&roles, "]}]\n");
    if (exporter)
        sl_buf_printf(&nats, "[{\"targets\": [\"127.0.0.1:%d\"]}]\n", exporter->http_port);
    else
        sl_buf_puts(&nats, "[]\n");
    if (!(st = write_file(ln->promdir, "prometheus.yml", _binary_deploy_prometheus_prometheus_yml_start,
                          (size_t)(_binary_deploy_prometheus_prometheus_yml_end -
                                   _binary_deploy_prometheus_prometheus_yml_start))) &&
        !(st = write_file(ln->promdir, "rules.yml", _binary_deploy_prometheus_rules_yml_start,
                          (size_t)(_binary_deploy_prometheus_rules_yml_end - _binary_deploy_prometheus_rules_yml_start))) &&
        !(st = write_file(targets, "sluice.json", roles.data, roles.len)))
        st = write_file(targets, "nats.json", nats.data, nats.len);
    sl_buf_free(&roles);
    sl_buf_free(&nats);
    (void)prom;
    return st;
}

static const char *kind_name(kind k)
{
    static const char *names[] = {"nats-server", "nats-exporter", "prometheus", "fetcher", "saver", "mapper"};
    return names[k];
}

/* Handles the exit of child c. Returns -1 to go on, or the run's exit code. */
static int child_exited(launcher *ln, child *c, int status)
{
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (c->fd >= 0)
        drain_child(ln, c);
    c->pid = 0;
    if (c->kind == K_FETCHER && (code == 0 || code == 3))
        return code;
    if (code == 2) {
        say(ln, "%s refused its configuration: %s", c->name, c->last_line);
        return 2;
    }
    int64_t lived = sl_now_ms() - c->started_ms;
    c->quick_exits = lived < QUICK_EXIT_MS ? c->quick_exits + 1 : 0;
    if (c->quick_exits >= GIVE_UP_AFTER) {
        say(ln, "%s keeps failing at start (%d times), giving up: %s", c->name, c->quick_exits, c->last_line);
        return 1;
    }
    int64_t backoff = 100;
    for (int i = 0; i < c->quick_exits; i++)
        backoff *= 4;
    c->restarts++;
    c->restart_at = sl_now_ms() + backoff;
    sl_warn("child exited; restarting", "child=%s kind=%s code=%d in_ms=%" PRId64, c->name, kind_name(c->kind),
            code, backoff);
    return -1;
}

/* One round of supervision: forwards what children wrote, notices exits,
 * restarts what is due. Returns -1 to go on, or the run's exit code. */
static int step(launcher *ln)
{
    struct pollfd pfd[MAX_CHILDREN];
    int map[MAX_CHILDREN], n = 0, rc = -1, timeout = 50;
    for (int i = 0; i < ln->nkids; i++) {
        if (ln->kids[i].fd >= 0) {
            pfd[n] = (struct pollfd){.fd = ln->kids[i].fd, .events = POLLIN};
            map[n++] = i;
        } else if (ln->kids[i].pid > 0) {
            /* Its output closed as it exits, a moment before it can be
             * reaped: look again soon rather than in 50 ms (which was 5 %
             * of the 100,000-object job, at its end). */
            timeout = 1;
        }
    }
    poll(pfd, (nfds_t)n, timeout);
    for (int k = 0; k < n; k++)
        if (pfd[k].revents)
            drain_child(ln, &ln->kids[map[k]]);
    for (int i = 0; i < ln->nkids && rc < 0; i++) {
        child *c = &ln->kids[i];
        int status;
        if (c->pid > 0 && reap(c, &status, WNOHANG) == c->pid)
            rc = child_exited(ln, c, status);
        if (rc < 0 && c->pid == 0 && c->restart_at && sl_now_ms() >= c->restart_at && start_child(ln, c)) {
            say(ln, "cannot restart %s: %s", c->name, sl_errmsg());
            rc = 1;
        }
    }
    return rc;
}

/* The job, with the fork server fs (NULL: exec every child) started. */
static int supervise(const sl_config *cfg, sl_forkserver *fs, int64_t started_ms)
{
    launcher ln = {.cfg = cfg, .fs = fs, .started_ms = started_ms};
    int rc = 1;
    sl_status st;
    pthread_mutex_init(&ln.mu, NULL);
    sl_stop_install();
    ln.tty = isatty(STDERR_FILENO);
    int64_t progress_ms = cfg->progress_ms ? cfg->progress_ms : ln.tty ? 200 : 2000;
    if (fs)
        sl_info("fork server started", "pid=%d", (int)sl_forkserver_pid(fs));

    if (cfg->fresh) {
        const char *sfx[] = {"", "-wal", "-shm"};
        for (int i = 0; i < 3; i++) {
            char path[4200];
            snprintf(path, sizeof path, "%s%s", cfg->ledger, sfx[i]);
            if (unlink(path) != 0 && errno != ENOENT) {
                say(&ln, "cannot remove the ledger %s: %s", path, strerror(errno));
                goto cleanup;
            }
        }
    }
    snprintf(ln.tmpdir, sizeof ln.tmpdir, "/tmp/sluice-run.XXXXXX");
    if (!mkdtemp(ln.tmpdir)) {
        ln.tmpdir[0] = '\0';
        say(&ln, "cannot make a temporary directory: %s", strerror(errno));
        goto cleanup;
    }
    if (cfg->nats_url_given) {
        snprintf(ln.url, sizeof ln.url, "%s", cfg->nats_url);
    } else if ((st = start_nats(&ln))) {
        say(&ln, "cannot start NATS: %s", sl_errmsg());
        goto cleanup;
    }

    /* The children read the whole configuration from the environment. */
    sl_config child_cfg = *cfg;
    child_cfg.nats_url = ln.url;
    child_cfg.fresh = false;
    sl_config_export(&child_cfg);
    setenv("SLUICE_LOG_FORMAT", cfg->log_format, 1);

    if ((st = sl_bus_open(&ln.bus, &child_cfg, "sluice-run"))) {
        say(&ln, "%s", sl_errmsg());
        goto cleanup;
    }
    if ((st = sl_bus_subscribe(ln.bus, SL_SUBJ_DONE, NULL, on_done, &ln))) {
        say(&ln, "%s", sl_errmsg());
        goto cleanup;
    }
    natsConnection_Flush(sl_bus_nc(ln.bus));

    /* Savers first: a mapper that finishes a chunk before any saver has
     * subscribed finds nobody to take it and must wait. Then the fetcher,
     * then the mappers, which only ask it for work. */
    char name[32];
    for (int64_t i = 1; i <= cfg->savers; i++) {
        snprintf(name, sizeof name, "saver.%" PRId64, i);
        add_child(&ln, K_SAVER, name);
    }
    add_child(&ln, K_FETCHER, "fetcher");
    for (int64_t i = 1; i <= cfg->mappers; i++) {
        snprintf(name, sizeof name, "mapper.%" PRId64, i);
        add_child(&ln, K_MAPPER, name);
    }
    if (cfg->monitor && (st = setup_monitoring(&ln))) {
        say(&ln, "cannot set up monitoring: %s", sl_errmsg());
        goto cleanup;
    }
    /* In the order added, each kind in as few requests to the fork server
     * as its batches allow. */
    for (int i = 0, n; i < ln.nkids; i += n) {
        for (n = 1; i + n < ln.nkids && n < SL_FORKSERVER_BATCH && ln.kids[i + n].kind == ln.kids[i].kind &&
                    ln.kids[i + n].pid == 0;
             n++)
            ;
        if (ln.kids[i].pid != 0)
            continue;
        if ((st = start_children(&ln, &ln.kids[i], n))) {
            say(&ln, "cannot start %s: %s", ln.kids[i].name, sl_errmsg());
            goto cleanup;
        }
    }
    sl_buf where = SL_BUF_INIT;
    for (int i = 0; i < ln.nkids; i++)
        if (ln.kids[i].http_port && ln.kids[i].kind != K_PROMETHEUS)
            sl_buf_printf(&where, " %s=http://127.0.0.1:%d/metrics", ln.kids[i].name, ln.kids[i].http_port);
    say(&ln, "metrics:%s", where.data ? where.data : " none");
    sl_buf_free(&where);
    for (int i = 0; i < ln.nkids; i++)
        if (ln.kids[i].kind == K_PROMETHEUS)
            say(&ln, "Prometheus: http://127.0.0.1:%d (try the query nats_varz_cpu)", ln.kids[i].http_port);
    char shown[256], shown_src[512];
    sl_url_redact(ln.url, shown, sizeof shown);
    sl_url_redact(cfg->source, shown_src, sizeof shown_src);
    say(&ln, "job %s: %s in chunks of %" PRId64 ", %" PRId64 " mappers, %" PRId64 " savers, NATS %s", cfg->job,
        shown_src, cfg->chunk_size, cfg->mappers, cfg->savers, shown);

    int64_t next_progress = sl_now_ms() + progress_ms;
    rc = -1;
    while (rc < 0) {
        if (sl_stop_requested()) {
            say(&ln, "interrupted; stopping");
            rc = 128 + (sl_stop_signal() ? sl_stop_signal() : SIGINT);
            break;
        }
        rc = step(&ln);
        if (rc < 0 && sl_now_ms() >= next_progress) {
            show_progress(&ln);
            next_progress = sl_now_ms() + progress_ms;
        }
    }
    /* The fetcher publishes P.done just before it exits; let it arrive. */
    if (rc == 0 || rc == 3)
        natsConnection_FlushTimeout(sl_bus_nc(ln.bus), 500);
    if (!stop_children(&ln, false) && (rc == 0 || rc == 3)) {
        say(&ln, "the job is done, but a role did not stop cleanly (above)");
        rc = 1;
    }
    /* The job's time ends when the savers have stopped: only then is
     * every object where readers look for it (a saver's last merge). */
    ln.ended_ms = sl_now_ms();
    if (!cfg->monitor) {
        /* Nothing needs NATS any more: stopping it now lets the summary
         * count its resources too. */
        sl_bus_close(ln.bus, 0);
        ln.bus = NULL;
        stop_children(&ln, true);
        stop_forkserver(&ln);
    }
    print_summary(&ln, rc);
    if (cfg->monitor && (rc == 0 || rc == 3)) {
        /* The job is over; its history is in Prometheus, which stays up
         * (with NATS and the exporter) for a person to look at - once it
         * answers: it opens its storage a few seconds after it starts,
         * and a small job is over before that. */
        for (int i = 0; i < ln.nkids; i++) {
            if (ln.kids[i].kind != K_PROMETHEUS)
                continue;
            for (int64_t until = sl_now_ms() + PROMETHEUS_READY_MS;
                 !sl_stop_requested() && sl_now_ms() < until && !prometheus_ready(ln.kids[i].http_port);)
                step(&ln);
            say(&ln, "Prometheus stays up at http://127.0.0.1:%d until Ctrl-C", ln.kids[i].http_port);
        }
        while (!sl_stop_requested() && step(&ln) < 0)
            ;
    }
cleanup:
    if (rc < 0)
        rc = 1;
    sl_bus_close(ln.bus, 0);
    stop_children(&ln, true);
    remove_tmpdir(&ln);
    for (int i = 0; i < ln.nkids; i++)
        sl_buf_free(&ln.kids[i].partial);
    stop_forkserver(&ln);
    free(ln.done_json);
    free(ln.last_status);
    pthread_mutex_destroy(&ln.mu);
    return rc;
}

int sl_run_main(const sl_config *cfg)
{
    int64_t started_ms = sl_now_ms();
    /* A transform that cannot open (a jq program with a syntax error) is a
     * usage error, told once here rather than by every mapper in turn. */
    sl_transform *tf = NULL;
    if (sl_transform_open(&tf, cfg->transform) != SL_OK) {
        fprintf(stderr, "sluice run: %s\n", sl_errmsg());
        return 2;
    }
    sl_transform_destroy(tf);
    /* The roles the fork server forks are orphaned on purpose, to be
     * adopted, reaped and accounted for here. The server goes first, while
     * this process has no thread, no handler and no connection, and from
     * this small frame: the launcher's large one is not copied into every
     * child. */
    sl_forkserver *fs = NULL;
    const char *why = NULL;
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        why = strerror(errno);
    else if (sl_forkserver_start(&fs, sl_command_main) != SL_OK)
        why = sl_errmsg();
    if (why)
        sl_warn("no fork server; children are exec'd", "error=%s", sl_log_q(why));
    return supervise(cfg, fs, started_ms);
}
