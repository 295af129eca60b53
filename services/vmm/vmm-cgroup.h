/* SPDX-License-Identifier: MIT */
#pragma once

/* Per-VM cgroups with the shape's CPU and memory limits. cgroup v2 when the
 * unified hierarchy has the cpu and memory controllers, v1 (cpu, memory
 * hierarchies) otherwise (DESIGN.md: this kind of machine is hybrid with
 * an empty v2 tree). */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Creates hostmesh/<name> with the limits and moves pid into it; returns a
 * description ("v1:hostmesh/<id>") for later removal. -EPERM/-EACCES/-EROFS
 * when not allowed (not root): the caller goes on without limits. */
int vmm_cgroup_create(const char *name, pid_t pid, unsigned vcpus, uint64_t memory_bytes, char **ret);
/* Removes the cgroup(s) named by the description; the VM must be gone. */
int vmm_cgroup_remove(const char *description);

typedef struct VmmCgroupUsage {
        uint64_t cpu_usec;        /* CPU time used by the VM so far */
        bool has_cpu;             /* false on cgroup v1 without a cpuacct hierarchy */
        uint64_t memory_bytes;    /* memory charged to the VM now */
} VmmCgroupUsage;

/* Reads what the VM's cgroup(s) account now. */
int vmm_cgroup_usage(const char *description, VmmCgroupUsage *ret);
