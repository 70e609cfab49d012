/* main.c - the sluice binary: remembers where its command line lies (so a
 * child forked by `sluice run` can show its own role in ps), then runs the
 * command. */
#include "command.h"
#include "proctitle.h"

int main(int argc, char **argv)
{
    sl_proctitle_init(argc, argv);
    return sl_command_main(argc, argv);
}
