/* SPDX-License-Identifier: MIT */
#pragma once

/* The dns daemon's manager: owns the loop, the rpc server, the config
 * and every piece of state. */

#include <stdio.h>
#include <systemd/sd-event.h>

#include "daemon.h"
#include "macro.h"
#include "rpc.h"

typedef struct DnsConfig {
        RpcServerOptions rpc;
} DnsConfig;

typedef struct Manager {
        sd_event *event;
        RpcLoop *rpc_loop;
        RpcServer *server;
        DnsConfig config;
} Manager;

int manager_new(const DaemonArgs *args, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
int manager_start(Manager *m);
int manager_run(Manager *m);
void manager_print_config(Manager *m, FILE *f);
