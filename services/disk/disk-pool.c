/* SPDX-License-Identifier: MIT */
/* Disk files in the pool and the admission rule.
 *
 * Backends, fastest first:
 *   reflink  FICLONE of a raw base (XFS with reflink=1, btrfs): the blocks
 *            are shared copy-on-write, the disk is a plain raw file;
 *   qcow2    an overlay whose clusters read from the base until written;
 *            written here in C (disk-qcow2.c), no qemu-img on the hot path;
 *   sparse   an empty raw file of the disk's size (a hole). */

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>

#include "disk-pool.h"
#include "disk-qcow2.h"
#include "fs-util.h"
#include "macro.h"

#ifndef XFS_SUPER_MAGIC
#define XFS_SUPER_MAGIC 0x58465342
#endif
#ifndef BTRFS_SUPER_MAGIC
#define BTRFS_SUPER_MAGIC 0x9123683E
#endif

static const char *fs_name(long type) {
        switch (type) {
        case EXT4_SUPER_MAGIC: return "ext4";
        case XFS_SUPER_MAGIC: return "xfs";
        case BTRFS_SUPER_MAGIC: return "btrfs";
        case TMPFS_MAGIC: return "tmpfs";
        case OVERLAYFS_SUPER_MAGIC: return "overlay";
        default: return "other";
        }
}

/* Asks the filesystem itself: two scratch files, a FICLONE between them. */
static bool detect_reflink(const char *dir) {
        _cleanup_free_ char *a = path_join(dir, ".reflink-probe-a"), *b = path_join(dir, ".reflink-probe-b");
        _cleanup_close_ int fa = -EBADF, fb = -EBADF;
        char block[4096] = { 1 };
        bool ok = false;

        if (!a || !b)
                return false;
        (void) unlink(a);
        (void) unlink(b);
        fa = open(a, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        fb = open(b, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fa >= 0 && fb >= 0 && pwrite(fa, block, sizeof(block), 0) == (ssize_t) sizeof(block) && fsync(fa) == 0)
                ok = ioctl(fb, FICLONE, fa) == 0;
        (void) unlink(a);
        (void) unlink(b);
        return ok;
}

int pool_open(const char *path, Pool **ret) {
        _cleanup_(pool_freep) Pool *p = NULL;
        struct statfs sfs;
        int r;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->path = strdup(path);
        p->disks_dir = path_join(path, "disks");
        p->images_dir = path_join(path, "images");
        if (!p->path || !p->disks_dir || !p->images_dir)
                return -ENOMEM;
        r = mkdir_p(p->disks_dir, 0700);
        if (r < 0)
                return r;
        r = mkdir_p(p->images_dir, 0700);
        if (r < 0)
                return r;
        if (statfs(path, &sfs) < 0)
                return negative_errno();
        snprintf(p->fs_name, sizeof(p->fs_name), "%s", fs_name((long) sfs.f_type));
        p->reflink = detect_reflink(p->disks_dir);
        *ret = TAKE_PTR(p);
        return 0;
}

Pool *pool_free(Pool *p) {
        if (!p)
                return NULL;
        free(p->path);
        free(p->disks_dir);
        free(p->images_dir);
        free(p);
        return NULL;
}

int pool_space(Pool *p, PoolSpace *ret) {
        struct statvfs st;

        if (statvfs(p->path, &st) < 0)
                return negative_errno();
        ret->capacity = (uint64_t) st.f_blocks * st.f_frsize;
        ret->free = (uint64_t) st.f_bavail * st.f_frsize;
        return 0;
}

static int create_file(const char *path) {
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        return fd < 0 ? negative_errno() : fd;
}

/* Makes what we wrote durable before a record points at it; on failure
 * removes the half-made file. */
static int finish_file(int fd, const char *path, int r) {
        if (r >= 0 && fdatasync(fd) < 0)
                r = negative_errno();
        if (r < 0)
                (void) unlink(path);
        return r;
}

int pool_create_sparse(const char *path, uint64_t size) {
        _cleanup_close_ int fd = create_file(path);
        int r = 0;

        if (fd < 0)
                return fd;
        if (ftruncate(fd, (off_t) size) < 0)
                r = negative_errno();
        return finish_file(fd, path, r);
}

int pool_create_qcow2(const char *path, uint64_t size, const char *backing, const char *backing_format) {
        _cleanup_close_ int fd = create_file(path);

        if (fd < 0)
                return fd;
        return finish_file(fd, path, qcow2_write_image(fd, size, backing, backing_format));
}

int pool_create_reflink(const char *path, uint64_t size, const char *source) {
        _cleanup_close_ int src = -EBADF, fd = -EBADF;
        struct stat st;
        int r = 0;

        src = open(source, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (src < 0)
                return negative_errno();
        if (fstat(src, &st) < 0)
                return negative_errno();
        if ((uint64_t) st.st_size > size)
                return -EINVAL;
        fd = create_file(path);
        if (fd < 0)
                return fd;
        if (ioctl(fd, FICLONE, src) < 0)
                r = negative_errno();
        else if (ftruncate(fd, (off_t) size) < 0)
                r = negative_errno();
        return finish_file(fd, path, r);
}

int pool_file_allocated(const char *path, uint64_t *ret) {
        struct stat st;

        if (stat(path, &st) < 0)
                return negative_errno();
        *ret = (uint64_t) st.st_blocks * 512;
        return 0;
}

char *pool_format_bytes(uint64_t bytes) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
        double v = (double) bytes;
        size_t u = 0;
        char *s;

        while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
                v /= 1024;
                u++;
        }
        if (u == 0 ? asprintf(&s, "%llu B", (unsigned long long) bytes) < 0
                   : asprintf(&s, v == (double) (uint64_t) v ? "%.0f %s" : "%.1f %s", v, units[u]) < 0)
                return NULL;
        return s;
}

int pool_admit(const PoolAdmission *a, uint64_t new_virtual, uint64_t new_physical, char **ret_message) {
        _cleanup_free_ char *s_new = pool_format_bytes(new_virtual), *s_free = NULL, *s_reserve = NULL,
                            *s_after = NULL, *s_virtual = NULL, *s_limit = NULL, *s_cap = NULL;
        double limit = (double) a->capacity * a->overcommit;
        int k;

        if (a->free < a->reserve || a->free - a->reserve < new_physical) {
                s_free = pool_format_bytes(a->free);
                s_reserve = pool_format_bytes(a->reserve);
                s_after = pool_format_bytes(a->free > new_physical ? a->free - new_physical : 0);
                k = asprintf(ret_message,
                             "The pool has %s free; a %s disk would leave %s, below the reserve of %s. "
                             "Delete disks or images, or lower 'reserve' in disk.conf.",
                             s_free, s_new, s_after, s_reserve);
                if (k < 0)
                        *ret_message = NULL;
                return -ENOSPC;
        }
        if ((double) a->virtual_total + (double) new_virtual > limit) {
                s_virtual = pool_format_bytes(a->virtual_total);
                s_limit = pool_format_bytes((uint64_t) limit);
                s_cap = pool_format_bytes(a->capacity);
                k = asprintf(ret_message,
                             "Disks in the pool already total %s of virtual size; a %s disk would pass the limit of "
                             "%s (capacity %s x overcommit_ratio %g). Delete disks or raise 'overcommit_ratio' "
                             "in disk.conf.",
                             s_virtual, s_new, s_limit, s_cap, a->overcommit);
                if (k < 0)
                        *ret_message = NULL;
                return -ENOSPC;
        }
        return 0;
}
