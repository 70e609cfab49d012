/* proctitle.c - rewriting the memory /proc/PID/cmdline shows, as
 * PostgreSQL's ps_status.c does on Linux. */
#include "proctitle.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

extern char **environ;

static char *area;      /* argv[0]'s first byte */
static size_t arg_len;  /* argv's strings with their NULs: the kernel's arg area */
static size_t area_len; /* that and the environment strings right after it */

void sl_proctitle_init(int argc, char **argv)
{
    if (argc < 1 || !argv[0])
        return;
    /* The kernel lays argv's strings out end to end, the environment's
     * right after; anything else (a caller that rearranged them) is left
     * alone. */
    char *end = argv[0];
    for (int i = 0; i < argc; i++) {
        if (argv[i] != end)
            return;
        end += strlen(argv[i]) + 1;
    }
    area = argv[0];
    arg_len = (size_t)(end - area);
    for (char **e = environ; e && *e && *e == end; e++)
        end += strlen(*e) + 1;
    area_len = (size_t)(end - area);
}

void sl_proctitle_set(const char *const *argv)
{
    /* The kernel's own short name (top, ps -o comm, perf), which a fork
     * shares with its parent: "sluice-ROLE", cut at the kernel's 15. Set
     * first: whoever sees the new command line sees it too. */
    if (argv[0] && argv[1]) {
        char comm[16];
        snprintf(comm, sizeof comm, "sluice-%s", argv[1]);
        prctl(PR_SET_NAME, comm);
    }
    if (!area)
        return;
    size_t need = 0;
    for (int i = 0; argv[i]; i++)
        need += strlen(argv[i]) + 1;
    memset(area, 0, area_len);
    size_t at = 0;
    if (need <= arg_len) {
        /* Separate strings, NUL-padded: the arg area's last byte stays NUL,
         * so the kernel shows exactly these arguments. */
        for (int i = 0; argv[i]; i++) {
            size_t n = strlen(argv[i]) + 1;
            memcpy(area + at, argv[i], n);
            at += n;
        }
    } else {
        /* One string running on over the old environment: the kernel then
         * reads past the arg area up to the first NUL. */
        for (int i = 0; argv[i] && at + 1 < area_len; i++) {
            size_t n = strlen(argv[i]);
            if (i)
                area[at++] = ' ';
            if (n > area_len - 1 - at)
                n = area_len - 1 - at;
            memcpy(area + at, argv[i], n);
            at += n;
        }
    }
    /* glibc's names for the program point into argv[0], which now holds
     * something else; error messages keep naming the binary. */
    program_invocation_name = program_invocation_short_name = (char *)"sluice";
}
