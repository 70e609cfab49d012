/* main.c - the sluice binary: runs the command of its command line. */
#include "command.h"

int main(int argc, char **argv)
{
    return sl_command_main(argc, argv);
}
