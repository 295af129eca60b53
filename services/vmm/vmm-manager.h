/* SPDX-License-Identifier: MIT */
#pragma once

/* The vmm daemon's manager: owns the loop, the rpc server, the config,
 * the instances and their timers. Every instance change happens here, on
 * the loop thread. */

#include <netinet/in.h>
#include <stdio.h>
#include <systemd/sd-event.h>

#include "daemon.h"
#include "rpc.h"
#include "vmm-instance.h"
#include "vmm-containers.h"

typedef enum BackendMode {
        BACKEND_OFF,
        BACKEND_OPTIONAL,
        BACKEND_REQUIRED,
} BackendMode;

typedef struct VmmConfig {
        RpcServerOptions rpc;
        char *qemu;                 /* binary name or path */
        char *kernel, *initrd;      /* guest image */
        char *machine;              /* microvm | pc */
        char *accel;                /* auto | kvm | tcg */
        uint32_t vcpus;             /* capacity; 0: 4 × host CPUs */
        uint64_t memory;            /* capacity in bytes; 0: host RAM */
        uint64_t default_duration_usec, max_duration_usec;
        uint64_t boot_timeout_usec, shutdown_timeout_usec;
        char *disk;                 /* off | optional | required */
        char *token;                /* off | optional | required */
        char *token_audience;
        char *tenant;
        uint64_t log_max;
        uint64_t memory_overhead;   /* cgroup headroom above the guest RAM */
        bool allow_large_shapes;
        uint32_t max_instances;     /* history + live kept in memory */
        bool network;               /* taps on a bridge, nftables; off: no NIC */
        char *network_bridge;
        char *network_pool;         /* "10.88.0.0/16" */
        uint32_t network_dns_port;  /* dnsd's port on the bridge address */
        bool network_same_tenant;   /* instances of one tenant may talk to each other */
        char *network_helper;       /* path of hostmesh-vmm-nethelper; empty: next to vmmd */
        char *dns;                  /* names in dnsd: off | optional | required */
        char *dns_zone;
        char *system_disk;          /* guest system disk for instances with containers */
        char *export_address;       /* where exported container ports listen on the host */
        char *export_ports;         /* "FIRST-LAST": the host ports they get */
} VmmConfig;

typedef struct NetHelper NetHelper;
typedef struct PortPool PortPool;

typedef struct Store Store;
typedef struct Accel Accel;
typedef struct AccelQemuProbe AccelQemuProbe;

typedef struct Manager {
        sd_event *event;
        RpcLoop *rpc_loop;
        RpcServer *server;
        VmmConfig config;
        BackendMode disk_mode, token_mode, dns_mode;
        char *machine;              /* effective machine: microvm, or pc when QEMU lacks microvm */
        int accel_mode;             /* AccelMode from [vmm] accel */
        uint32_t tsc_khz;           /* the host's TSC rate, told to every guest; 0 until measured */
        struct {                    /* what the kernel image was found to take, while it is that file */
                dev_t dev;
                ino_t ino;
                off_t size;
                struct timespec mtime;
                bool known, mmio_cmdline;
        } kernel_probe;
        Accel *accel;               /* KVM or TCG, decided once by the probe */
        AccelQemuProbe *accel_probe;
        bool accel_waiting;         /* instances wait for the decision */
        uint32_t capacity_vcpus;
        uint64_t capacity_memory;
        char *state_dir, *run_dir;
        Store *store;
        Instance **instances;
        size_t n_instances;
        RpcClient *disk_client, *identity_client, *dns_client;
        char *disk_socket, *identity_socket, *dns_socket;
        NetHelper *nethelper;       /* NULL when networking is off */
        struct in_addr net_pool, net_gateway;
        unsigned net_prefixlen;
        uint32_t net_pool_size;     /* usable addresses, gateway included */
        struct in_addr export_addr; /* [vmm] export_address */
        PortPool *export_pool;      /* [vmm] export_ports */
} Manager;

int manager_new(const DaemonArgs *args, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
int manager_start(Manager *m);
int manager_run(Manager *m);
void manager_print_config(Manager *m, FILE *f);

/* What CreateInstance asks for, already decoded. */
typedef struct CreateParams {
        Shape shape;
        uint64_t deadline_usec;          /* 0: default duration */
        const char *purpose;
        char **label_names, **label_values;
        size_t n_labels;
        const char *creator;
        const char *tenant;              /* NULL: [vmm] tenant */
        VmmContainer **containers;       /* validated; the instance takes the array (NULL after) */
        size_t n_containers;
} CreateParams;

/* On failure, *ret_error says what went wrong and what to do. */
int manager_create_instance(Manager *m, const CreateParams *p, Instance **ret, char **ret_error);
Instance *manager_find(Manager *m, const char *id);
int manager_destroy_instance(Manager *m, Instance *i, const char *reason);
int manager_extend_instance(Manager *m, Instance *i, uint64_t new_deadline_usec, char **ret_error);
/* Validates a shape against the rule and the capacity left. */
int manager_check_shape(Manager *m, const Shape *s, char **ret_error);

/* The create pipeline's next step (after a backend answered). */
void manager_instance_continue(Instance *i);
/* Puts the instance in ERROR with the reason; kills its VM. */
void manager_instance_fail(Instance *i, const char *reason);

/* WaitInstance: takes a reference on the call; ends it when the instance
 * is RUNNING (or final). */
void manager_add_waiter(Manager *m, Instance *i, RpcCall *c, bool stream, bool destroyed_ok,
                        const VmmContainer *container);
/* RunCommand: takes a reference on the call. */
int manager_exec(Manager *m, Instance *i, RpcCall *c, bool sync, char **argv, char **env, const char *cwd,
                 char **ret_error);
/* RunCommand in a container: with argv, a new process in it; without, an
 * attach to its main task (what it wrote so far, then the rest, then its
 * exit code). */
int manager_exec_container(Manager *m, Instance *i, RpcCall *c, bool sync, const char *container, char **argv,
                           char **env, const char *cwd, char **ret_error);
/* StreamInstanceLogs with follow: takes a reference on the call. */
void manager_follow_logs(Manager *m, Instance *i, RpcCall *c);
