/* SPDX-License-Identifier: MIT */
#pragma once

/* The pool: a directory holding disks/ and images/, the backends that make
 * disk files in it, and the admission rule. No state beyond the directory;
 * the records live in disk-store. */

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

typedef struct Pool {
        char *path;
        char *disks_dir;       /* <pool>/disks */
        char *images_dir;      /* <pool>/images */
        bool reflink;          /* FICLONE works here */
        char fs_name[16];      /* "ext4", "xfs", "btrfs", "tmpfs", ... */
} Pool;

typedef struct PoolSpace {
        uint64_t capacity;     /* bytes of the filesystem */
        uint64_t free;         /* bytes available to us */
} PoolSpace;

int pool_open(const char *path, Pool **ret);
Pool *pool_free(Pool *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(Pool *, pool_free);

int pool_space(Pool *p, PoolSpace *ret);

/* Backends. Each creates `path` (which must not exist) as a 0600 file. */
int pool_create_sparse(const char *path, uint64_t size);
int pool_create_qcow2(const char *path, uint64_t size, const char *backing, const char *backing_format);
int pool_create_reflink(const char *path, uint64_t size, const char *source);
/* Blocks the file uses on disk. */
int pool_file_allocated(const char *path, uint64_t *ret);

/* Admission. usage: what the pool holds now (virtual = sum of disk sizes).
 * Refuses (-ENOSPC, with the numbers in *ret_message) a new disk of
 * `new_virtual` bytes that would allocate about `new_physical` bytes now,
 * when the free space would drop below `reserve` or the virtual total
 * would pass capacity × overcommit. */
typedef struct PoolAdmission {
        uint64_t capacity, free, virtual_total;
        uint64_t reserve;
        double overcommit;
} PoolAdmission;
int pool_admit(const PoolAdmission *a, uint64_t new_virtual, uint64_t new_physical, char **ret_message);

/* "64 GiB", "1.5 GiB", "512 MiB", "4096 B" for messages. */
char *pool_format_bytes(uint64_t bytes);
