/* command.h - `sluice <command> [flags]`: the one path from argv to a role.
 *
 * main() calls it for the process's own command line, and run's fork server
 * calls it in each child it forks ("sluice mapper --http 127.0.0.1:PORT"),
 * so a role started by run goes through exactly the parsing, logging set-up
 * and dispatch it would get from exec. */
#ifndef SL_COMMAND_H
#define SL_COMMAND_H

/* Loads the configuration of argv[1] from the environment and argv[2...],
 * sets up logging and runs the command; returns the process's exit code
 * (2 for a usage error). argv is NULL-terminated and not kept. */
int sl_command_main(int argc, char **argv);

#endif
