/* SPDX-License-Identifier: MIT */
#pragma once

/* One instance: a QEMU micro-VM and everything vmmd holds for it.
 *
 *   PENDING → CREATING → RUNNING → DESTROYING → DESTROYED
 *        ↘         ↘          ↘           ↘
 *                        ERROR (with a reason)
 *
 * PENDING: accepted, nothing allocated yet. CREATING: disk, token, QEMU
 * booting. RUNNING: the guest said READY and has its token. ERROR and
 * DESTROYED are final; their resources are released. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "agent-protocol.h"
#include "shape.h"

typedef enum InstanceState {
        INSTANCE_PENDING,
        INSTANCE_CREATING,
        INSTANCE_RUNNING,
        INSTANCE_DESTROYING,
        INSTANCE_DESTROYED,
        INSTANCE_ERROR,
        _INSTANCE_STATE_MAX,
        _INSTANCE_STATE_INVALID = -EINVAL,
} InstanceState;

const char *instance_state_to_string(InstanceState s);
InstanceState instance_state_from_string(const char *s);
/* Whether the state machine allows from → to. */
bool instance_state_transition_allowed(InstanceState from, InstanceState to);
bool instance_state_is_final(InstanceState s);
/* Final or on its way there: holds no capacity for new work. */
bool instance_state_is_active(InstanceState s);

typedef struct Manager Manager;
typedef struct AgentConn AgentConn;
typedef struct QmpClient QmpClient;
typedef struct InstanceLog InstanceLog;
typedef struct RpcCall RpcCall;

typedef struct Waiter {
        RpcCall *call;
        bool stream;              /* WaitInstance (stream) or WaitInstanceSync */
        bool destroyed_ok;
        const struct VmmContainer *container; /* WaitInstanceRequest.container_id; NULL: none */
        struct Waiter *next;
} Waiter;

typedef struct Exec {
        struct Instance *instance;
        RpcCall *call;
        uint32_t id;
        bool sync;                /* RunCommandSync: collect, reply at the end */
        char *out, *err;
        size_t out_size, err_size;
        struct Exec *next;
} Exec;

typedef struct LogFollower {
        RpcCall *call;
        struct LogFollower *next;
} LogFollower;

enum {
        CREATE_DISK_DONE = 1 << 0,
        CREATE_TOKEN_DONE = 1 << 1,
        CREATE_NET_DONE = 1 << 2,
        CREATE_DNS_DONE = 1 << 3,
        CREATE_CONTAINERS_DONE = 1 << 4,
};

typedef struct VmmContainer VmmContainer;

typedef struct Instance {
        Manager *manager;
        char *id;
        char *log_field;          /* "INSTANCE_ID=<id>" for structured logs */
        InstanceState state;
        char *reason;
        Shape shape;
        char *purpose;
        char **label_names, **label_values;
        size_t n_labels;
        char *creator;            /* "uid:1000" */
        uint64_t created_usec, deadline_usec, destroyed_usec;  /* CLOCK_REALTIME */
        uint64_t create_mono_usec;

        char *dir;                /* state: <state>/instances/<id> */
        char *run_dir;            /* sockets: <runtime>/vmm/<id> */
        char *machine, *accel;
        char *accel_reason;       /* why this accelerator: the probe's verdict */
        bool accel_wait;          /* launch waits for the accelerator decision */
        bool tcg_retry;           /* KVM failed at once: relaunched under TCG */
        uint64_t launch_mono_usec;/* when its QEMU was spawned */
        char **events;            /* "2026-12-04T21:00:00Z what happened", oldest first */
        size_t n_events;
        pid_t pid;
        int pidfd;
        sd_event_source *pid_source;
        QmpClient *qmp;
        AgentConn *agent;
        int console_fd;
        sd_event_source *console_source;
        InstanceLog *log;

        sd_event_source *deadline_timer, *boot_timer, *shutdown_timer;
        bool kill_sent;

        char *disk_id, *disk_path, *disk_format;
        uint64_t disk_bytes;
        char *token;              /* in memory until the guest has it; never stored */
        char *token_subject;      /* for revocation */
        char *cgroup;
        char *tenant;             /* instances of one tenant may talk when [vmm] network_same_tenant */
        char *address;            /* IPv4 address in the pool, NULL without network */
        char *tap;                /* tap device; NULL once the network is given back */
        char *dns_name;           /* <id>.<zone> registered in dnsd; NULL when not */
        int tap_fd;               /* from the network helper until QEMU has it */

        uint64_t guest_kernel_usec, guest_init_usec, ready_usec;
        /* Boot phases (nsc describe): QEMU spawn → guest clock start, the
         * guest's own split of init → READY, READY → first command byte. */
        uint64_t boot_qemu_usec, first_command_usec;
        uint64_t guest_phase_usec[_AGENT_PHASE_MAX];
        bool guest_phases_known;
        char *guest_kernel;       /* release READY named */
        uint64_t ready_mono_usec; /* when READY arrived; not stored */
        uint64_t vmmd_cost_usec;  /* loop time spent on the create, QEMU's own start excluded */

        VmmContainer *containers; /* CreateInstanceRequest.containers (vmm-containers.h) */
        size_t n_containers;
        int containers_error;     /* RpcCode of a failed pull, for the waiters' status */
        struct VmmPull *pulls;    /* images the guest asked for (vmm-pull.h) */

        Waiter *waiters;
        Exec *execs;
        uint32_t next_exec_id;
        LogFollower *followers;
        unsigned pending_ops;     /* backend calls in flight (disk, token) */
        unsigned create_flags;    /* CREATE_* steps done */
} Instance;

Instance *instance_new(Manager *m, const char *id);
Instance *instance_free(Instance *i);
int instance_set_reason(Instance *i, const char *reason);
/* Notes something that happened to the instance (kept, bounded, shown by
 * nsc describe). */
int instance_add_event(Instance *i, const char *format, ...) __attribute__((format(printf, 2, 3)));
int instance_generate_id(char **ret);
