/* SPDX-License-Identifier: MIT */
#pragma once

/* Base image files: what they are (raw or qcow2, virtual size), their
 * content digest, copying them into the pool, and turning a directory into
 * an ext4 image. */

#include <stdint.h>

#define IMAGE_DIGEST_MAX 72  /* "sha256:" + 64 hex + NUL */

typedef struct ImageProbe {
        char format[8];        /* "raw" | "qcow2" */
        uint64_t virtual_size;
        uint64_t file_size;
} ImageProbe;

/* Reads the file's header. A qcow2 image that itself has a backing file is
 * refused (-EXDEV): a base must stand alone. Corrupt qcow2 → -EBADMSG. */
int image_probe(const char *path, ImageProbe *ret);
/* "sha256:<hex>" of the file's bytes (OpenSSL EVP). */
int image_digest(const char *path, char ret[IMAGE_DIGEST_MAX]);
/* Copies src to a new 0600 file dst: a reflink when the filesystem can,
 * otherwise a sparse-aware copy (holes stay holes). */
int image_copy(const char *src, const char *dst);
/* Makes dst an ext4 filesystem image holding the tree under dir
 * (mkfs.ext4 -d). size 0 fits the content with room to spare. On failure
 * *ret_output holds mkfs's message. */
int image_make_ext4(const char *dir, const char *dst, uint64_t size, char **ret_output);
