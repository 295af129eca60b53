/* SPDX-License-Identifier: MIT */
#pragma once

/* Container image layers: a tar reader (ustar, GNU long names, PAX) and an
 * unpacker that applies a layer to a directory the way OCI says (whiteouts,
 * opaque directories), refusing entries that would reach outside the tree.
 * Layers come from registries and from files users import: nothing in them
 * is trusted. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TAR_BLOCK 512
#define TAR_PATH_MAX 4096

typedef struct TarLimits {
        uint64_t max_bytes;         /* regular file bytes over all layers of one image */
        uint64_t max_entries;       /* entries over all layers of one image */
        size_t max_header;          /* one PAX or GNU long-name record */
} TarLimits;

#define TAR_LIMITS_DEFAULT                                                                              \
        ((TarLimits){ .max_bytes = 16ULL << 30, .max_entries = 1000000, .max_header = 1 << 20 })

typedef struct TarHeader {
        char type;                  /* '0' file, '1' hard link, '2' symlink, '3' char, '4' block,
                                     * '5' directory, '6' fifo, 'x'/'g' PAX, 'L'/'K' GNU long names */
        char name[257];             /* prefix "/" name of the ustar header */
        char linkname[101];
        uint32_t mode, uid, gid;
        uint64_t size;
        int64_t mtime;
} TarHeader;

/* Parses one 512-byte header block. 0 on success, 1 for an all-zero block
 * (the end marker), -EBADMSG when the checksum or a number is wrong. */
int tar_header_parse(const uint8_t block[TAR_BLOCK], TarHeader *ret);

/* PAX extended header records ("LEN key=value\n"...): the keys that
 * matter here. Values longer than TAR_PATH_MAX are refused. */
typedef struct TarPax {
        char *path, *linkpath;
        bool have_size, have_uid, have_gid, have_mtime;
        uint64_t size;
        uint32_t uid, gid;
        int64_t mtime;
} TarPax;
int tar_pax_parse(const char *data, size_t n, TarPax *ret);
void tar_pax_done(TarPax *p);

/* A stream of bytes: returns how many were read, 0 at the end, < 0 errno. */
typedef ssize_t (*TarReadFn)(void *userdata, void *buf, size_t n);

typedef struct TarReader TarReader;
/* Reads gzip (detected by its magic) or plain tar from `read`. */
int tar_reader_new(TarReadFn read, void *userdata, const TarLimits *limits, TarReader **ret);
TarReader *tar_reader_free(TarReader *r);

/* One entry, names and sizes with PAX and GNU records applied. */
typedef struct TarEntry {
        char type;                  /* '0' '1' '2' '3' '4' '5' '6' */
        char path[TAR_PATH_MAX];    /* as in the archive */
        char link[TAR_PATH_MAX];
        uint32_t mode, uid, gid;
        uint64_t size;
        int64_t mtime;
} TarEntry;
/* 1 with the next entry, 0 at the end of the archive, < 0 on error with a
 * message naming the entry in *ret_error. Data the caller did not read is
 * skipped. */
int tar_reader_next(TarReader *r, TarEntry *ret, char **ret_error);
/* Reads the current entry's data. */
ssize_t tar_reader_read_data(TarReader *r, void *buf, size_t n);

/* What unpacking one image did, summed over its layers. */
typedef struct TarStats {
        uint64_t entries, bytes, whiteouts, opaque_dirs, skipped_devices;
} TarStats;

/* Applies one layer to the tree under root_fd (a directory fd). Never
 * follows a symlink: every path is walked component by component with
 * O_NOFOLLOW. Refused with -EINVAL (and a message naming the entry):
 * absolute paths, "..", a path through a symlink, hard links to what is not
 * already in the tree, unknown entry types; with -E2BIG: more than the
 * limits (counted in *stats across calls). Device nodes and fifos are
 * skipped and counted: an unprivileged unpacker cannot make them and the
 * guest's devtmpfs provides /dev. */
int tar_unpack_layer(int root_fd, TarReadFn read, void *userdata, const TarLimits *limits, TarStats *stats,
                     char **ret_error);
/* The same from a file descriptor. */
int tar_unpack_layer_fd(int root_fd, int fd, const TarLimits *limits, TarStats *stats, char **ret_error);
/* Removes the tree under dir_fd's entry `name`, never following symlinks. */
int rm_rf_at(int dir_fd, const char *name);
