/* SPDX-License-Identifier: MIT */
#pragma once

/* Containers in the guest: hostmesh-init's side of AGENT_CONTAINER. The
 * guest system disk (virtio-blk serial "hm-system", read-only ext4) brings
 * containerd, runc, ctr, the CNI plugins, iptables and the kernel modules
 * containers need; each container's root file system is its own
 * copy-on-write disk made by diskd, found by its serial. Each container is
 * a containerd container and task in namespace "default", run through ctr,
 * whose stdout, stderr and exit code hostmesh-init streams like any command.
 *
 * cgroups are v2 only (/sys/fs/cgroup), owned by containerd. */

#include <stdbool.h>
#include <sys/types.h>

#include "agent-protocol.h"

#define CONTAINERS_SYSTEM_SERIAL "hm-system"

/* Whether vmmd asked for containers (hostmesh.containers=1 on the command
 * line). Reads /proc/cmdline. */
bool containers_requested(void);

/* The block device ("/dev/vdb") whose virtio-blk serial is serial, from
 * sysfs (no udev, no /dev/disk/by-id); -ENODEV when there is none. */
int containers_find_disk(const char *serial, char *ret, size_t size);

/* Mounts cgroup2 and the system disk, loads the container modules (on a
 * modular kernel), and
 * starts containerd (not waiting for it). Needs the disk modules. Logs its
 * failures; containers started later report them. */
void containers_setup(const char *nameserver, const char *search_domain, bool modular);

/* Prepares a container from an AGENT_CONTAINER frame (its disk mounted,
 * containerd up, resolv.conf and hosts written into its root) and returns
 * the argv and env of the command that runs its main task (ctr run).
 * On failure returns a negative errno and a message in *ret_error. */
int containers_prepare(const AgentFrame *f, char ***ret_argv, char **ret_error);

/* The argv of a command run inside the named container (ctr tasks exec),
 * with env passed through env(1) in the container. -ENOENT for an unknown
 * container. */
int containers_exec_argv(const char *name, uint32_t exec_id, char *const *argv, char *const *env, const char *cwd,
                         char ***ret_argv);

/* Exported ports of BRIDGE containers: an fd to poll (-1 while no
 * container has any), and what to do when it is readable (forward the
 * guest's ports to the containers whose addresses were just leased). */
int containers_ports_fd(void);
void containers_ports_event(void);

/* PID 1 reaped a child: dockerd's exit starts it again (bounded). */
void containers_child_exited(pid_t pid, int status);

void containers_strv_free(char **l);
