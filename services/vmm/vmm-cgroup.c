/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#include "macro.h"
#include "vmm-cgroup.h"

#define CGROUP_ROOT "/sys/fs/cgroup"

static int write_string(const char *dir, const char *file, const char *value) {
        _cleanup_free_ char *p = NULL;
        _cleanup_close_ int fd = -EBADF;
        size_t n = strlen(value);

        if (asprintf(&p, "%s/%s", dir, file) < 0)
                return -ENOMEM;
        fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (write(fd, value, n) != (ssize_t) n)
                return -errno;
        return 0;
}

static int make_dir(const char *parent, const char *name, char **ret) {
        _cleanup_free_ char *base = NULL, *p = NULL;

        if (asprintf(&base, "%s/hostmesh", parent) < 0 || asprintf(&p, "%s/%s", base, name) < 0)
                return -ENOMEM;
        if (mkdir(base, 0755) < 0 && errno != EEXIST)
                return -errno;
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
                return -errno;
        *ret = TAKE_PTR(p);
        return 0;
}

static bool v2_has_controllers(void) {
        char buf[512] = {};
        _cleanup_close_ int fd = open(CGROUP_ROOT "/cgroup.controllers", O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return false;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return false;
        return strstr(buf, "cpu") && strstr(buf, "memory");
}

int vmm_cgroup_create(const char *name, pid_t pid, unsigned vcpus, uint64_t memory_bytes, char **ret) {
        char pidstr[32], value[64];
        char *desc;
        int r;

        snprintf(pidstr, sizeof(pidstr), "%d", (int) pid);
        if (v2_has_controllers()) {
                _cleanup_free_ char *dir = NULL;

                /* The parent must delegate the controllers to its children. */
                (void) write_string(CGROUP_ROOT, "cgroup.subtree_control", "+cpu +memory");
                r = make_dir(CGROUP_ROOT, name, &dir);
                if (r < 0)
                        return r;
                (void) write_string(CGROUP_ROOT "/hostmesh", "cgroup.subtree_control", "+cpu +memory");
                snprintf(value, sizeof(value), "%u 100000", vcpus * 100000);
                r = write_string(dir, "cpu.max", value);
                if (r < 0)
                        return r;
                snprintf(value, sizeof(value), "%" PRIu64, memory_bytes);
                r = write_string(dir, "memory.max", value);
                if (r < 0)
                        return r;
                r = write_string(dir, "cgroup.procs", pidstr);
                if (r < 0)
                        return r;
                if (asprintf(&desc, "v2:hostmesh/%s", name) < 0)
                        return -ENOMEM;
        } else {
                _cleanup_free_ char *cpu = NULL, *mem = NULL;

                r = make_dir(CGROUP_ROOT "/cpu", name, &cpu);
                if (r < 0)
                        return r;
                r = make_dir(CGROUP_ROOT "/memory", name, &mem);
                if (r < 0)
                        return r;
                r = write_string(cpu, "cpu.cfs_period_us", "100000");
                snprintf(value, sizeof(value), "%u", vcpus * 100000);
                r = r ?: write_string(cpu, "cpu.cfs_quota_us", value);
                snprintf(value, sizeof(value), "%" PRIu64, memory_bytes);
                r = r ?: write_string(mem, "memory.limit_in_bytes", value);
                r = r ?: write_string(cpu, "cgroup.procs", pidstr);
                r = r ?: write_string(mem, "cgroup.procs", pidstr);
                if (r < 0) {
                        (void) rmdir(cpu);
                        (void) rmdir(mem);
                        return r;
                }
                if (asprintf(&desc, "v1:hostmesh/%s", name) < 0)
                        return -ENOMEM;
        }
        *ret = desc;
        return 0;
}

int vmm_cgroup_remove(const char *description) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        int r = 0;

        if (!description || strlen(description) < 4)
                return 0;
        if (strncmp(description, "v2:", 3) == 0) {
                if (asprintf(&a, CGROUP_ROOT "/%s", description + 3) < 0)
                        return -ENOMEM;
                if (rmdir(a) < 0 && errno != ENOENT)
                        r = -errno;
        } else {
                if (asprintf(&a, CGROUP_ROOT "/cpu/%s", description + 3) < 0 ||
                    asprintf(&b, CGROUP_ROOT "/memory/%s", description + 3) < 0)
                        return -ENOMEM;
                if (rmdir(a) < 0 && errno != ENOENT)
                        r = -errno;
                if (rmdir(b) < 0 && errno != ENOENT)
                        r = -errno;
        }
        return r;
}
