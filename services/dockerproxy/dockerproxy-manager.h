/* SPDX-License-Identifier: MIT */
#pragma once

/* The dockerproxy daemon's manager: owns the loop, the rpc server, the config
 * and every registration (each with its listening socket). */

#include <stdio.h>
#include <systemd/sd-event.h>

#include "daemon.h"
#include "dockerproxy-registry.h"
#include "macro.h"
#include "rpc.h"

typedef struct DockerproxyConfig {
        RpcServerOptions rpc;
        char *upstream;            /* engine socket */
        char *socket_dir;          /* per-container sockets; NULL → $RUNTIME_DIR/dockerproxy */
        uint32_t max_connections;  /* per container socket */
        uint64_t engine_timeout_usec;
        uint64_t idle_timeout_usec;  /* client connections between requests */
} DockerproxyConfig;

typedef struct Manager {
        sd_event *event;
        RpcLoop *rpc_loop;
        RpcServer *server;
        DockerproxyConfig config;
        char *state_dir;
        char *state_file;
        char *socket_dir;
        Registration **regs;
        size_t n_regs;
} Manager;

int manager_new(const DaemonArgs *args, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
int manager_start(Manager *m);
int manager_run(Manager *m);
void manager_print_config(Manager *m, FILE *f);

/* Registers (or re-registers) a container. `root` may be NULL/empty: then
 * it is asked from the engine. Errors: -EINVAL bad id or root, -ENOENT no
 * such container in the engine, -ENOTDIR root is not a directory,
 * -ECONNREFUSED/-ENOENT engine unreachable (*ret_error says which), -ENOSPC
 * too many registrations. */
int manager_register(Manager *m, const char *id, const char *root, const DockerPolicy *policy,
                     Registration **ret, char **ret_error);
int manager_unregister(Manager *m, const char *id);
Registration *manager_find(Manager *m, const char *id);
