/* config.h - every setting of every command, in one struct and one parser.
 *
 * A setting is filled from its default, then from its environment variable
 * (NATS_* / SLUICE_*), then from its flag, all through the same code path
 * with the same range checks, so `--lease-ms 5000` and SLUICE_LEASE_MS=5000
 * cannot disagree. Each command accepts only the flags that mean something
 * to it; `--help` prints them with default and variable from the same table
 * the parser uses. */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "status.h"

typedef enum {
    SL_CMD_RUN = 1 << 0,
    SL_CMD_FETCHER = 1 << 1,
    SL_CMD_MAPPER = 1 << 2,
    SL_CMD_SAVER = 1 << 3,
    SL_CMD_STATUS = 1 << 4,
    SL_CMD_EXPORTER = 1 << 5,
    SL_CMD_MOCKAPI = 1 << 6,
} sl_command;

typedef struct {
    /* NATS connection, shared by every command */
    char *nats_url;   /* comma-separated list of servers */
    bool nats_url_given; /* set by NATS_URL or --nats-url, not the default */
    char *nats_user;
    char *nats_password;
    char *nats_token;
    char *nats_creds; /* a .creds file (JWT + nkey seed) */
    char *nats_nkey;  /* a user's NKey public key ... */
    char *nats_nkey_seed; /* ... and the file holding its seed */
    char *nats_ca;    /* TLS: CA bundle to verify the server */
    char *nats_cert;  /* TLS: client certificate ... */
    char *nats_key;   /* ... and its key */
    int64_t connect_timeout_ms;
    char *job;
    char *log_format;
    char *log_level;
    char *http;         /* HOST:PORT of /metrics, /healthz, /readyz; "" = off */
    /* fetcher */
    char *source;
    int64_t objects;
    int64_t source_timeout_ms; /* http source: one request */
    int64_t source_retries;    /* http source: on 5xx and connection errors */
    int64_t chunk_size;
    char *ledger;
    int64_t lease_ms;
    int64_t max_attempts;
    bool linger;
    bool fresh;
    /* mapper */
    char *transform;
    int64_t work_ms;
    int64_t work_jitter_ms;
    int64_t cpu_work_ms;
    int64_t prefetch_lead_ms;
    int64_t in_flight; /* chunks sent to the savers and not yet answered for, at most */
    /* saver */
    char *sink;
    char *id;           /* the key field of a mapped object */
    char *table;        /* the sink's objects table */
    int64_t group_commit_ms;
    /* run */
    int64_t mappers;
    int64_t savers;
    char *nats_server;
    int64_t progress_ms;
    bool monitor;       /* also start Prometheus */
    char *prometheus;   /* its binary */
    char *stats;        /* "": none; else a file for the per-role resource figures */
    /* nats-exporter */
    char *nats_monitor; /* nats-server's monitoring URL */
    /* mock-api */
    int64_t seed;
    int64_t fail_percent;
    int64_t slow_percent;
    int64_t slow_ms;
} sl_config;

/* Fills cfg for `cmd` from defaults, environment and argv (the arguments
 * after the command name). Returns SL_OK, or SL_EINVAL with a message naming
 * the flag or variable at fault. *help is set when --help/-h was given (cfg
 * is then only partly filled). Strings in cfg are owned by cfg. */
sl_status sl_config_load(sl_config *cfg, sl_command cmd, int argc, char **argv,
                         bool *help);

/* Prints the usage and flag table of cmd. */
void sl_config_help(sl_command cmd, FILE *out);

/* Puts every setting of cfg into the environment as its variable, so a
 * child process (run's roles) sees exactly the parent's configuration. */
void sl_config_export(const sl_config *cfg);

void sl_config_free(sl_config *cfg);

/* "sluice.<job>" - the subject prefix P of the protocol. */
const char *sl_config_prefix(const sl_config *cfg);

#endif
