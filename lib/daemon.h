/* SPDX-License-Identifier: MIT */
#pragma once

/* What every daemon's main() shares: the common command line
 * (--config, --check-config, --help, --version) and signal set-up. */

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "macro.h"

typedef struct DaemonArgs {
        const char *part;          /* "dns" */
        char *config_path;         /* --config, else the default path for the part */
        bool config_explicit;      /* --config given: a missing file is an error */
        bool check_config;         /* --check-config: validate, print, exit */
} DaemonArgs;

/* Returns 0 to go on, 1 when the command line was fully handled (--help,
 * --version), negative errno on a usage error (already printed). */
int daemon_parse_args(int argc, char **argv, const char *part, const char *summary, DaemonArgs *ret);
void daemon_args_done(DaemonArgs *a);
/* Blocks SIGTERM/SIGINT/SIGHUP/SIGPIPE in the calling thread; must run before
 * grpc_init() so that gRPC's threads inherit the mask (sd-event then gets the
 * signals through signalfd). */
int daemon_block_signals(void);

struct ConfigItem;
/* Loads the daemon's config file into cfg (which holds defaults). A missing
 * default file is fine; a missing --config file or a bad line is an error,
 * logged once here with the file and line. */
int daemon_load_config(const DaemonArgs *a, const struct ConfigItem *table, size_t n_items, void *cfg);

/* The [rpc] section every daemon's config table starts with; `member` is an
 * RpcServerOptions inside the daemon's config struct. */
#define DAEMON_RPC_CONFIG_ITEMS(type, member)                                                              \
        CONFIG_ITEM("rpc", "max_message_size", config_type_size, type, member.max_message_size,            \
                    "Largest request or response accepted"),                                               \
        CONFIG_ITEM("rpc", "max_send_queue", config_type_size, type, member.max_send_queue,                \
                    "Stream messages queued for one slow reader before its call is ended"),                 \
        CONFIG_ITEM("rpc", "max_calls_per_peer", config_type_uint32, type, member.max_calls_per_peer,      \
                    "Concurrent calls one client process may have in flight"),                             \
        CONFIG_ITEM("rpc", "idle_exit", config_type_usec, type, member.idle_exit_usec,                     \
                    "Exit after this long without connections or calls (0 = never)"),                      \
        CONFIG_ITEM("rpc", "drain_timeout", config_type_usec, type, member.drain_usec,                     \
                    "How long in-flight calls may run on after SIGTERM")
