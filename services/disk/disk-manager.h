/* SPDX-License-Identifier: MIT */
#pragma once

/* The disk daemon's manager: owns the loop, the rpc server, the config,
 * the pool and the state store. */

#include <stdio.h>
#include <systemd/sd-event.h>

#include "daemon.h"
#include "disk-pool.h"
#include "disk-store.h"
#include "rpc.h"

typedef struct DiskConfig {
        RpcServerOptions rpc;
        char *pool;                 /* pool directory; NULL → <state dir>/pool */
        uint64_t reserve;           /* bytes that must stay free */
        double overcommit_ratio;    /* virtual sizes may total capacity × this */
        uint32_t max_disks;
        char **large_shape_tenants; /* tenants allowed shapes above 64 GB; "*" = all */
        char **image_source_dirs;   /* AddImage reads only below these; empty = anywhere */
        uint64_t max_image_bytes;   /* a container image unpacks to at most this many file bytes */
        uint32_t max_image_entries; /* and at most this many tar entries */
} DiskConfig;

typedef struct ImageJob ImageJob;
typedef struct Work Work;
typedef struct CreateJob CreateJob;
typedef struct ContainerJob ContainerJob;

typedef struct Manager {
        sd_event *event;
        RpcLoop *rpc_loop;
        RpcServer *server;
        DiskConfig config;
        char *state_dir;
        Pool *pool;
        Store *store;
        struct Metrics *metrics;    /* the rpc server's registry, NULL without one */
        ImageJob *image_jobs;       /* AddImage calls in progress (names taken) */
        CreateJob *create_jobs;     /* CreateDisk calls copying on worker threads */
        ContainerJob *container_jobs; /* PullImage/ImportImage calls in progress */
        Work *works;                /* file work running on worker threads */
} Manager;

int manager_new(const DaemonArgs *args, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
/* Opens the store and the pool and reconciles them (no rpc): used by
 * manager_start() and by the tests. */
int manager_open_state(Manager *m);
int manager_start(Manager *m);
int manager_run(Manager *m);
void manager_print_config(Manager *m, FILE *f);
void disk_config_defaults(DiskConfig *c);
