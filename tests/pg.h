/* pg.h - a throwaway PostgreSQL cluster, for the tests and bench/sink.c.
 *
 * sl_pgc_start runs initdb into a new directory under `parent` and starts
 * `postgres` on a free 127.0.0.1 port with its socket in that directory.
 * postgres runs as a child of the caller, in the caller's process group
 * (not daemonised by pg_ctl), so whatever kills the group - the test
 * runner's timeout included - takes the server with it. PostgreSQL refuses
 * to run as root: as root, initdb and postgres run as the system user
 * "postgres", and `parent` is made traversable (0711) for it.
 *
 * Its life: start (initdb + postgres, polled with PQping until it answers)
 * -> [stop with a mode / start_again on the same port and data] ->
 * destroy (immediate stop, directory removed). Nothing here depends on the
 * test harness; failures return -1 with a message in err. */
#ifndef SL_TEST_PG_H
#define SL_TEST_PG_H

#include <stddef.h>
#include <sys/types.h>

typedef struct sl_pgc sl_pgc;

/* The PostgreSQL binary directory: $SLUICE_PG_BIN, else the newest
 * /usr/lib/postgresql/N/bin with initdb in it; NULL if there is none. */
const char *sl_pgc_bindir(void);

/* fsync: 0 runs the server with fsync=off (fast, not crash-safe). On
 * success *out is set; its log is "<dir>/server.log". */
int sl_pgc_start(sl_pgc **out, const char *parent, int fsync, char *err, size_t errlen);

/* "postgresql://sluice@127.0.0.1:PORT/sluice?sslmode=disable", owned by c. */
const char *sl_pgc_uri(const sl_pgc *c);
int sl_pgc_port(const sl_pgc *c);
const char *sl_pgc_dir(const sl_pgc *c);
pid_t sl_pgc_pid(const sl_pgc *c); /* the postmaster; 0 when stopped */

/* Stops the server and waits (15 s) until it has exited: mode 'f' fast
 * (SIGINT: clients are disconnected, a clean shutdown), 'i' immediate
 * (SIGQUIT: crash-like, recovery at the next start), as pg_ctl's modes. */
int sl_pgc_stop(sl_pgc *c, char mode);

/* Starts the stopped server again on the same port and data. */
int sl_pgc_start_again(sl_pgc *c, char *err, size_t errlen);

/* Immediate stop if running, removes the directory, frees c. Accepts NULL. */
void sl_pgc_destroy(sl_pgc *c);

#endif
