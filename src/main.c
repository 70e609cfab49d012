/* main.c - the sluice binary: remembers where its command line lies (so a
 * child forked by `sluice run` can show its own role in ps), sets SQLite's
 * process-wide options, then runs the command. */
#include "command.h"
#include "db.h"
#include "proctitle.h"

int main(int argc, char **argv)
{
    sl_proctitle_init(argc, argv);
    sl_db_init();
    return sl_command_main(argc, argv);
}
