/* harness.h - starting real processes from sluice's integration tests.
 *
 * A test runs in its own forked process (tests/main.c). Everything the
 * harness starts there -- nats-server, sluice roles, one-shot commands -- is
 * a child of that process, stays in the test's process group, and writes its
 * stdout and stderr to "<tmpdir>/<name>.log", so a failing test leaves a log
 * per process to read.
 *
 * The life of a test, as the harness sees it:
 *
 *     th_nats *ns = th_nats_start(NULL);           // random port, polled
 *     const char *argv[] = {"sluice", "fetcher", "--nats", th_nats_url(ns),
 *                           NULL};
 *     th_proc *f = th_spawn("fetcher", argv, NULL);
 *     th_proc_wait_log(f, "event=ready", 5000);    // polled, never a sleep
 *     ...
 *     th_proc_free(f);                              // SIGTERM, then SIGKILL
 *     th_nats_stop(ns);
 *
 * Waiting is always polling for a condition until a deadline (every 10 ms).
 * When a deadline passes, or something the test cannot go on without fails
 * (a binary missing, a process that died before it printed what was
 * awaited), the helper ends the test through sl_test_fail with a message
 * naming the caller's file:line, the process and, where there is one, the
 * last 2 KB of its log. Those helpers are macros over a th_*_at function
 * that takes the caller's file and line; each evaluates its arguments once.
 *
 * At exit of the test process (including exit(1) after a failed CHECK), an
 * atexit handler SIGKILLs and reaps every process the harness started and
 * has not yet reaped, frees what the test did not, and removes the temporary
 * directory unless SLUICE_KEEP_TMP is set in the environment. A process
 * forked from the test only cleans up what it itself started.
 *
 * The harness is not thread-safe: call it from the test's main thread. It
 * may be used after the test started threads (nats.c's, say): between fork
 * and exec a child only makes async-signal-safe calls. */
#ifndef SL_TEST_HARNESS_H
#define SL_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- time, files and ports --------------------------------------------- */

/* Milliseconds on the monotonic clock (arbitrary origin). */
int64_t th_now_ms(void);

/* The test's temporary directory, "/tmp/sluice-test.XXXXXX", created on the
 * first call (fails the test if it cannot be). Owned by the harness; removed
 * with its contents at exit unless SLUICE_KEEP_TMP is set, in which case its
 * path is printed to stderr. */
const char *th_tmpdir(void);

/* "<tmpdir>/<name>", malloc'd: the caller frees it. */
char *th_path(const char *name);

/* The whole content of a file, NUL-terminated, malloc'd (caller frees);
 * its length, without the NUL, goes to *len if len is not NULL. Returns NULL
 * if the file cannot be opened or read. */
char *th_read_file(const char *path, size_t *len);

/* "<repository>/<rel>", from $SLUICE_SRCDIR (default "."), malloc'd: the
 * caller frees it. */
char *th_src_path(const char *rel);

/* The whole content of a file of the repository (see th_src_path),
 * malloc'd; fails the test if it cannot be read. */
#define th_src_read(rel) th_src_read_at(__FILE__, __LINE__, rel)
char *th_src_read_at(const char *file, int line, const char *rel);

/* How many non-overlapping times needle occurs in the file; 0 if the file
 * does not exist. needle must not be empty. */
int th_count_in_file(const char *path, const char *needle);

/* A TCP port on 127.0.0.1 that was free a moment ago: bound to port 0, read
 * back, closed. For tests that need a port nothing listens on. */
int th_free_port(void);

/* A TCP socket listening on 127.0.0.1 at a port the kernel chose (in
 * *port) that never accepts: connections are made, nothing ever answers.
 * Returns it; the caller closes it. */
int th_listen_silent(int *port);

/* The sluice binary under test, from $SLUICE_BIN; fails the test if that
 * is unset or not an executable file. Owned by the environment. */
#define th_sluice_bin() th_sluice_bin_at(__FILE__, __LINE__)
const char *th_sluice_bin_at(const char *file, int line);

/* Polls cond(arg) every 10 ms until it returns non-zero; fails the test
 * with "timed out after N ms waiting for <what>" if timeout_ms passes
 * first. cond is called at least once. */
#define th_wait_until(cond, arg, timeout_ms, what)                             \
    th_wait_until_at(__FILE__, __LINE__, cond, arg, timeout_ms, what)
void th_wait_until_at(const char *file, int line, int (*cond)(void *),
                      void *arg, int timeout_ms, const char *what);

/* ---- processes ---------------------------------------------------------- */

/* A child process started by th_spawn; owned by the test, freed by
 * th_proc_free. */
typedef struct th_proc th_proc;

/* Forks and execs argv[0] with arguments argv (NULL-terminated). argv[0]
 * "sluice" means th_sluice_bin(); a name without '/' is looked up in $PATH.
 * env is NULL or a NULL-terminated list of "KEY=VALUE" entries, added to
 * (or replacing in) the inherited environment. stdin is /dev/null; stdout
 * and stderr are appended to "<tmpdir>/<name>.log". Signals the test
 * ignores or blocks are reset for the child, and descriptors the test left
 * open without O_CLOEXEC are not inherited. Fails the test if the program
 * is not found or cannot be executed. Nothing in argv or env is kept. */
#define th_spawn(name, argv, env) th_spawn_at(__FILE__, __LINE__, name, argv, env)
th_proc *th_spawn_at(const char *file, int line, const char *name,
                     const char *const *argv, const char *const *env);

pid_t th_proc_pid(const th_proc *p);
const char *th_proc_name(const th_proc *p);     /* owned by p */
const char *th_proc_log_path(const th_proc *p); /* owned by p */

/* The whole log so far, malloc'd (caller frees); "" if nothing was written. */
char *th_proc_log(const th_proc *p);

/* Waits for the process to end and returns its exit code, or 128 + the
 * signal that killed it. Fails the test, printing the log's tail, if it is
 * still running after timeout_ms. Once reaped, returns the same code again
 * at once. */
#define th_proc_wait(p, timeout_ms) th_proc_wait_at(__FILE__, __LINE__, p, timeout_ms)
int th_proc_wait_at(const char *file, int line, th_proc *p, int timeout_ms);

/* 1 if the process is running, 0 if it has ended (and then reaps it, so
 * th_proc_wait returns its code at once). Never blocks. */
int th_proc_running(th_proc *p);

/* Sends sig to the process if it has not been reaped; does not wait. */
void th_proc_kill(th_proc *p, int sig);

/* SIGTERM, up to 5 s for it to exit, then SIGKILL; reaps. Does nothing if
 * the process was already reaped, so it may be called twice. */
void th_proc_stop(th_proc *p);

/* th_proc_stop, then frees p. Accepts NULL. */
void th_proc_free(th_proc *p);

/* Polls the log until needle has appeared at least once (th_proc_wait_log)
 * or n times, non-overlapping (th_proc_wait_log_n). Fails the test at once
 * if the process has ended without writing it, or after timeout_ms; either
 * way the message shows the last 2 KB of the log. */
#define th_proc_wait_log(p, needle, timeout_ms)                                \
    th_proc_wait_log_at(__FILE__, __LINE__, p, needle, 1, timeout_ms)
#define th_proc_wait_log_n(p, needle, n, timeout_ms)                           \
    th_proc_wait_log_at(__FILE__, __LINE__, p, needle, n, timeout_ms)
void th_proc_wait_log_at(const char *file, int line, th_proc *p,
                         const char *needle, int n, int timeout_ms);

/* Runs a command to completion, as th_spawn would (its log is
 * "<tmpdir>/run-<N>-<basename>.log") and returns its exit code, or 128 +
 * the signal that killed it. If output is not NULL, *output receives all it
 * wrote to stdout and stderr, malloc'd (caller frees). Fails the test if it
 * has not ended after timeout_ms. */
#define th_run(argv, env, output, timeout_ms)                                  \
    th_run_at(__FILE__, __LINE__, argv, env, output, timeout_ms)
int th_run_at(const char *file, int line, const char *const *argv,
              const char *const *env, char **output, int timeout_ms);

/* ---- nats-server -------------------------------------------------------- */

/* A nats-server started by th_nats_start; owned by the test, freed by
 * th_nats_stop. */
typedef struct th_nats th_nats;

/* Starts "nats-server -a 127.0.0.1 -p -1 -m -1 --ports_file_dir <tmpdir>"
 * followed by extra_args (NULL, or NULL-terminated, e.g. {"--user", "u",
 * "--pass", "p", NULL}; copied), logging to "<tmpdir>/nats-<N>.log".
 * Reads the ports it chose from its ports file, then polls until a TCP
 * connection to the client port gets the server's INFO greeting. Fails the
 * test if that takes over 10 s or the server exits. */
#define th_nats_start(extra_args) th_nats_start_at(__FILE__, __LINE__, extra_args)
th_nats *th_nats_start_at(const char *file, int line,
                          const char *const *extra_args);

/* "nats://127.0.0.1:<port>", owned by ns; the same after a restart. */
const char *th_nats_url(const th_nats *ns);
int th_nats_port(const th_nats *ns);
/* The HTTP monitoring port; a new one after each restart. */
int th_nats_monitor_port(const th_nats *ns);
pid_t th_nats_pid(const th_nats *ns);
const char *th_nats_log_path(const th_nats *ns); /* owned by ns */

/* A crash and a comeback: SIGKILLs the server, reaps it, starts it again
 * with the same extra arguments on the same client port, and waits (10 s)
 * until it answers there again. Clients see their connection drop. */
#define th_nats_restart(ns) th_nats_restart_at(__FILE__, __LINE__, ns)
void th_nats_restart_at(const char *file, int line, th_nats *ns);

/* SIGTERM, up to 5 s, then SIGKILL; reaps and frees ns. Accepts NULL. */
void th_nats_stop(th_nats *ns);

#endif
