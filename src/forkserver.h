/* forkserver.h - starting sluice's own children by fork, not exec.
 *
 * `sluice run` starts dozens of children of its own binary. Exec'ing each
 * costs the dynamic loading of some forty libraries (5 ms of CPU; 50
 * mappers starting at once on 2 cores took a third of a second to be
 * ready); forking a process that has them loaded costs a fraction of a
 * millisecond. run itself cannot be that process: once it has connected to
 * NATS it has threads, and a child forked from a multi-threaded process may
 * only exec. Nor can a child inherit a started nats.c: the library seeds
 * the unique ids of its inboxes when it starts, so every child would share
 * them.
 *
 * So run forks a server first thing, while it is still single-threaded and
 * has touched neither NATS nor anything else that keeps state. The server
 * never starts a thread; it waits on a socket. For each request (the
 * environment, and for each child its argv and the descriptor for its
 * stdout and stderr) it forks an intermediate child, which forks the roles
 * and exits at once, so the roles are re-parented to run, a child subreaper
 * (PR_SET_CHILD_SUBREAPER) that therefore reaps them with wait4 -- exit
 * code, CPU time and peak RSS -- as it reaps an exec'd child. A batch of 50
 * mappers costs one round trip and 51 forks. Each role then becomes what
 * exec would have made it (see sl_forkserver_spawn) and calls the entry
 * function with its argv.
 *
 * The server dies with run: it exits at EOF on its socket (run closed it or
 * died) and has PR_SET_PDEATHSIG SIGKILL besides. */
#ifndef SL_FORKSERVER_H
#define SL_FORKSERVER_H

#include <sys/resource.h>
#include <sys/types.h>

#include "status.h"

typedef struct sl_forkserver sl_forkserver;

/* What a forked child runs: argv as a process would get it (argv[argc] is
 * NULL); returns the child's exit code. */
typedef int (*sl_forkserver_entry)(int argc, char **argv);

/* Forks the server, whose children will call entry. The calling process
 * must be single-threaded (SL_EINVAL if it is not: it has threads) and
 * must be made a child subreaper before its first sl_forkserver_spawn, or
 * the children are not its own. *out is set only on success; stop it with
 * sl_forkserver_stop. */
sl_status sl_forkserver_start(sl_forkserver **out, sl_forkserver_entry entry);

/* One child to start: what it runs and where its output goes. */
typedef struct {
    const char *const *argv; /* NULL-terminated; argv[0] is its name in ps */
    int out_fd;              /* its stdout and stderr; the caller keeps its own */
    pid_t pid;               /* set by sl_forkserver_spawn */
} sl_forkserver_child;

/* At most this many children in one sl_forkserver_spawn (their
 * descriptors travel in one message). */
#define SL_FORKSERVER_BATCH 64

/* Starts n children (1 to SL_FORKSERVER_BATCH) at once, each running
 * entry(argv) with the caller's environment as it is now, stdin from
 * /dev/null, stdout and stderr on its out_fd, no other descriptor, its own
 * process group, the signal dispositions the caller had when it started the
 * server, an empty signal mask, PR_SET_PDEATHSIG SIGTERM, and
 * /proc/PID/cmdline showing its argv. A child exits with entry's return
 * value. On success every kids[i].pid is set, each is already the caller's
 * child, and none has started to run entry before the server told the
 * caller its pid. Fails with SL_EIO if the server is gone, does not answer
 * within 10 s, or could not fork them all (none then runs entry: those
 * forked exit at once, and stay the caller's zombies); the server is then
 * of no further use (later calls fail at once). */
sl_status sl_forkserver_spawn(sl_forkserver *fs, sl_forkserver_child *kids, int n);

/* The server's pid (for logs). */
pid_t sl_forkserver_pid(const sl_forkserver *fs);

/* Closes the server's socket, which ends it, waits for it (1 s, then
 * SIGKILL) and frees fs. If ru is not NULL it receives the server's
 * resource use, its short-lived intermediate children included (zeroed
 * if it could not be reaped). Accepts NULL. */
void sl_forkserver_stop(sl_forkserver *fs, struct rusage *ru);

#endif
