/* SPDX-License-Identifier: MIT */
#pragma once

/* Containers of an instance (CreateInstanceRequest.containers): each image
 * is resolved through diskd (PullImage), each container gets a
 * copy-on-write disk over the image's base (CreateDisk; the disk holds the
 * image until the instance is gone), attached to QEMU as virtio-blk with a
 * serial the guest finds it by, next to the read-only guest system disk.
 * Once the guest runs, each container is started over the agent channel
 * (AGENT_CONTAINER); its main task streams like a command: a RunCommand
 * naming the container with no command attaches to it (what is written
 * before the attach is kept, up to CONTAINER_OUTPUT_MAX). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent-protocol.h"

#define CONTAINERS_PER_INSTANCE_MAX 8
#define CONTAINER_OUTPUT_MAX (1024 * 1024)
#define CONTAINER_PORTS_MAX AGENT_PORTS_MAX

typedef struct PortForward PortForward;

/* An exported port (ContainerRequest.export_ports): the container's TCP
 * port, reachable on the host at [vmm] export_address:host_port. */
typedef struct VmmPort {
        uint16_t container_port;
        uint16_t host_port;       /* from [vmm] export_ports; 0 once given back */
        uint32_t proto;           /* ContainerPort.Proto as asked (HTTP or TCP, both forwarded as TCP) */
        PortForward *forward;     /* NULL until the instance has its address, and once it is gone */
} VmmPort;

typedef struct Manager Manager;
typedef struct Instance Instance;
typedef struct Exec Exec;
typedef struct RpcCall RpcCall;

typedef struct VmmContainer {
        char *id;                 /* "c" + 16 hex: containerd's id, the disk serial's suffix */
        char *name;
        char *image_ref;
        char **argv, **env;       /* NULL-terminated: the request's, then (once pulled) the process's */
        char *cwd;                /* the image's WorkingDir, NULL when it sets none */
        char *user;               /* the image's User, NULL for root */
        uint32_t network;         /* AgentNetwork */
        char *docker_sock_path;   /* NULL, or where its docker.sock goes (Docker enabled) */

        char *image;              /* diskd's base image name once pulled */
        char *disk_id, *disk_path, *disk_format;
        char serial[AGENT_DISK_SERIAL_MAX + 1];
        /* Docker enabled: the image's base disk (diskd's ext4 file), attached
         * read-only so that the guest's dockerd gets the image without the
         * network, and the serial it is found by ("hi-" + id). */
        char *image_path;
        char image_serial[AGENT_DISK_SERIAL_MAX + 1];
        uint32_t exec_id;         /* the main task's command id; 0 until started */
        char *status;             /* "pending", "running", "exited N", "failed: why" */
        bool exited;
        int32_t exit_code;
        uint8_t *pending;         /* output before an attach: [u8 stream][u32 len][bytes]... */
        size_t pending_size;
        bool pending_truncated;
        VmmPort ports[CONTAINER_PORTS_MAX];
        size_t n_ports;
} VmmContainer;

VmmContainer *vmm_container_free_all(VmmContainer *c, size_t n);
/* A copy of the validated request: name, image, n_argv args, env
 * (NULL-terminated), network. */
int vmm_container_init(VmmContainer *c, const char *name, const char *image_ref, char *const *argv, size_t n_argv,
                       char *const *env, uint32_t network);

/* The container's process from its image's config (diskd's ImageConfig,
 * NULL when diskd has none) and the request, the way a container runtime
 * given the image makes it: argv = Entrypoint + (the request's args, else
 * Cmd); env = the image's Env with the request's variables over it; cwd =
 * WorkingDir; user = User unless it names root (the guest switches to it). -EINVAL (*ret_error naming containers[index]) when there is
 * no command at all or the result is over the agent's limits. */
typedef struct Hostmesh__Disk__V1__ImageConfig Hostmesh__Disk__V1__ImageConfig;
int vmm_container_resolve_process(VmmContainer *c, size_t index, const Hostmesh__Disk__V1__ImageConfig *config,
                                  char **ret_error);

/* The create pipeline's containers step: pull every image, make every
 * disk (i->pending_ops counts the calls). */
void vmm_containers_prepare(Manager *m, Instance *i);
/* Gives back the containers' disks (the images are released with them). */
void vmm_containers_release(Manager *m, Instance *i);
/* Starts every container in the guest (the instance just became RUNNING). */
void vmm_containers_start(Instance *i);

VmmContainer *vmm_container_find(Instance *i, const char *name_or_id);
VmmContainer *vmm_container_by_exec(Instance *i, uint32_t exec_id);
/* Agent frames of a container's main task with no reader attached. */
void vmm_container_on_output(VmmContainer *c, AgentFrameType stream, const uint8_t *data, size_t size);
void vmm_container_on_exit(Instance *i, VmmContainer *c, int32_t code);
void vmm_container_on_state(Instance *i, VmmContainer *c, const char *state);
/* Replays what the main task wrote so far to the stream of call c. */
int vmm_container_replay(VmmContainer *c, RpcCall *call);

/* Exported ports. _allocate takes a host port from the range for each
 * (at create: -ENOSPC when the range is used up, *ret_error says which
 * key to widen); _open listens on each and forwards to the instance's
 * address (after its network is set up, and again after a vmmd restart,
 * which takes the stored ports back); _close stops listening and ends
 * every connection, and with release gives the host ports back. */
int vmm_containers_allocate_ports(Manager *m, Instance *i, char **ret_error);
int vmm_containers_open_ports(Manager *m, Instance *i, bool restart);
void vmm_containers_close_ports(Manager *m, Instance *i, bool release);
size_t vmm_containers_count_ports(const Instance *i);

/* What vmmd keeps across its restarts (the store's containers column):
 * names, ids, disks, the main task's command id and state. */
char *vmm_containers_to_json(const Instance *i);
int vmm_containers_from_json(Instance *i, const char *text);
