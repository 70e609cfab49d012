/* command.c - parse, set up logging, dispatch. */
#include "command.h"

#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "roles.h"

static const struct {
    const char *name;
    sl_command cmd;
    int (*main)(const sl_config *cfg);
    const char *summary;
} commands[] = {
    {"run", SL_CMD_RUN, sl_run_main, "run a whole job on this machine (nats-server and every role)"},
    {"fetcher", SL_CMD_FETCHER, sl_fetcher_main, "run the job's fetcher (one per job)"},
    {"mapper", SL_CMD_MAPPER, sl_mapper_main, "run one mapper (as many as you like)"},
    {"saver", SL_CMD_SAVER, sl_saver_main, "run one saver"},
    {"status", SL_CMD_STATUS, sl_status_main, "print where a running job stands"},
    {"nats-exporter", SL_CMD_EXPORTER, sl_nats_exporter_main, "serve nats-server's monitoring data as Prometheus metrics"},
    {"mock-api", SL_CMD_MOCKAPI, sl_mock_api_main, "serve generated users as a paginated JSON API (for the http source)"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "Usage: sluice <command> [flags]\n\n"
                 "sluice pushes a large data set through slow processing by splitting it into\n"
                 "chunks and spreading them over mappers that talk only through NATS.\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-13s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`sluice <command> --help` lists a command's flags.\n");
}

int sl_command_main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        sl_config cfg;
        bool help = false;
        if (sl_config_load(&cfg, commands[i].cmd, argc - 2, argv + 2, &help) != SL_OK) {
            fprintf(stderr, "sluice %s: %s\n", commands[i].name, sl_errmsg());
            sl_config_free(&cfg);
            return 2;
        }
        if (help) {
            sl_config_help(commands[i].cmd, stdout);
            sl_config_free(&cfg);
            return 0;
        }
        if (sl_log_setup(commands[i].name, cfg.log_format, cfg.log_level) != SL_OK) {
            fprintf(stderr, "sluice %s: %s\n", commands[i].name, sl_errmsg());
            sl_config_free(&cfg);
            return 2;
        }
        int rc = commands[i].main(&cfg);
        sl_config_free(&cfg);
        return rc;
    }
    fprintf(stderr, "sluice: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
