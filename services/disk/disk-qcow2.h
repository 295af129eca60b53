/* SPDX-License-Identifier: MIT */
#pragma once

/* qcow2 images written and read without qemu-img: a fresh overlay is three
 * clusters of metadata plus an empty L1 table, so writing it ourselves takes
 * microseconds where exec'ing qemu-img takes ~30 ms. Format: QEMU's
 * docs/interop/qcow2.txt (version 3, 64 KiB clusters, 16-bit refcounts). */

#include <stddef.h>
#include <stdint.h>

#define QCOW2_BACKING_NAME_MAX 1023U

typedef struct Qcow2Info {
        uint32_t version;
        uint32_t cluster_bits;
        uint64_t size;                 /* virtual size in bytes */
        char backing_file[QCOW2_BACKING_NAME_MAX + 1];  /* "" when none */
        char backing_format[32];       /* from the header extension, "" when absent */
} Qcow2Info;

/* Builds the metadata of an image of `size` bytes whose unallocated clusters
 * read from `backing` (NULL: none; format `backing_format`, e.g. "raw") into
 * *ret (malloc'ed, *ret_len bytes, the image's whole length: the file is
 * exactly this). Only the first cluster and the refcount structures hold
 * non-zero bytes. -EINVAL for sizes qcow2 cannot hold. */
int qcow2_build_image(uint64_t size, const char *backing, const char *backing_format, uint8_t **ret,
                      size_t *ret_len);
/* Writes a new image into `fd` (an empty file): sparse, only the non-zero
 * parts are written. */
int qcow2_write_image(int fd, uint64_t size, const char *backing, const char *backing_format);
/* Parses the header of an image from its first bytes (at least the first
 * cluster, or the whole file when smaller). -EBADMSG when it is not a
 * qcow2 image we can use. */
int qcow2_parse_header(const uint8_t *data, size_t len, Qcow2Info *ret);
/* True when the bytes start with the qcow2 magic. */
int qcow2_has_magic(const uint8_t *data, size_t len);
