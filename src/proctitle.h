/* proctitle.h - what ps and /proc/PID/cmdline show for this process.
 *
 * A role that `sluice run` forks (rather than execs) inherits run's command
 * line; sl_proctitle_set writes the role's own over it, so `ps`, `pgrep -f`
 * and scripts that read /proc/PID/cmdline (bench/run.sh) see
 * "sluice mapper --http ..." as they did when each role was exec'd. The
 * kernel shows the memory the original argv strings occupy (and, once the
 * last byte of that is no longer NUL, the environment strings after it up
 * to the first NUL): the title is written there, so nothing else may still
 * point into that memory -- sl_proctitle_set is only for a freshly forked
 * process whose environment has been replaced (clearenv) first. */
#ifndef SL_PROCTITLE_H
#define SL_PROCTITLE_H

/* Remembers where argv's strings and the environment strings after them
 * lie. Call it first thing in main, before anything changes argv or the
 * environment. */
void sl_proctitle_init(int argc, char **argv);

/* Shows argv (NULL-terminated) as the process's command line: as separate
 * arguments when they fit in the original argv's memory, else joined by
 * spaces into one (over the old environment strings too; cut if even that
 * is too short); nothing if sl_proctitle_init was not called. Also names
 * the process "sluice-ARGV1" for the kernel (/proc/PID/comm). Only after
 * clearenv(): see above. */
void sl_proctitle_set(const char *const *argv);

#endif
