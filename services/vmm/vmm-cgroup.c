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
                /* CPU time is accounted in cpuacct, which may be mounted on its
                 * own (it is on this kind of machine): best effort, for
                 * GetInstanceMetrics only. */
                if (access(CGROUP_ROOT "/cpuacct/cpuacct.usage", F_OK) >= 0) {
                        _cleanup_free_ char *acct = NULL;
                        if (make_dir(CGROUP_ROOT "/cpuacct", name, &acct) >= 0)
                                (void) write_string(acct, "cgroup.procs", pidstr);
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
                _cleanup_free_ char *c = NULL;
                if (asprintf(&a, CGROUP_ROOT "/cpu/%s", description + 3) < 0 ||
                    asprintf(&b, CGROUP_ROOT "/memory/%s", description + 3) < 0 ||
                    asprintf(&c, CGROUP_ROOT "/cpuacct/%s", description + 3) < 0)
                        return -ENOMEM;
                (void) rmdir(c);  /* only there when cpuacct is mounted apart */
                if (rmdir(a) < 0 && errno != ENOENT)
                        r = -errno;
                if (rmdir(b) < 0 && errno != ENOENT)
                        r = -errno;
        }
        return r;
}

/* The first number in a file, or the value after "key " in a key-value file. */
static int read_number(const char *path, const char *key, uint64_t *ret) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        char buf[4096], *p = buf, *end;
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0)
                return -errno;
        buf[n] = 0;
        if (key) {
                size_t kl = strlen(key);
                for (p = buf; p && !(strncmp(p, key, kl) == 0 && p[kl] == ' '); p = strchr(p, '\n'), p = p ? p + 1 : NULL)
                        ;
                if (!p)
                        return -ENODATA;
                p += kl + 1;
        }
        errno = 0;
        *ret = strtoull(p, &end, 10);
        if (errno || end == p)
                return -EBADMSG;
        return 0;
}

int vmm_cgroup_usage(const char *description, VmmCgroupUsage *ret) {
        _cleanup_free_ char *cpu = NULL, *mem = NULL;
        VmmCgroupUsage u = {};
        uint64_t ns;
        int r;

        if (!description || strlen(description) < 4)
                return -ENOENT;
        if (strncmp(description, "v2:", 3) == 0) {
                if (asprintf(&cpu, CGROUP_ROOT "/%s/cpu.stat", description + 3) < 0 ||
                    asprintf(&mem, CGROUP_ROOT "/%s/memory.current", description + 3) < 0)
                        return -ENOMEM;
                u.has_cpu = read_number(cpu, "usage_usec", &u.cpu_usec) >= 0;
        } else {
                if (asprintf(&cpu, CGROUP_ROOT "/cpuacct/%s/cpuacct.usage", description + 3) < 0 ||
                    asprintf(&mem, CGROUP_ROOT "/memory/%s/memory.usage_in_bytes", description + 3) < 0)
                        return -ENOMEM;
                if (read_number(cpu, NULL, &ns) >= 0) {
                        u.cpu_usec = ns / 1000;
                        u.has_cpu = true;
                }
        }
        r = read_number(mem, NULL, &u.memory_bytes);
        if (r < 0)
                return r;
        *ret = u;
        return 0;
}
