/* SPDX-License-Identifier: MIT */
#pragma once

/* File helpers. Every fd is opened O_CLOEXEC. */

#include <stddef.h>
#include <sys/types.h>

/* Writes `data` to `path` atomically: temp file in the same directory,
 * fsync, rename, fsync of the directory. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* Reads a whole file (at most max_size bytes, else -EFBIG); the buffer is
 * NUL-terminated for convenience. */
int read_full_file(const char *path, char **ret, size_t *ret_len, size_t max_size);
/* mkdir -p with `mode` for the directories it creates. */
int mkdir_p(const char *path, mode_t mode);
/* Joins two path parts with exactly one '/'. NULL on OOM. */
char *path_join(const char *a, const char *b);
/* True when `name` is a safe single path component: [A-Za-z0-9._-], not
 * "." or "..", 1..max_len chars. */
int filename_is_valid(const char *name, size_t max_len);
