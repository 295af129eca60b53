/* SPDX-License-Identifier: MIT */
#pragma once

/* Small helpers hostmesh-init's files share. libc only: hostmesh-init is
 * static and PID 1. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* One line on the console, "hostmesh-init: " first. Keeps errno for %m. */
void say(const char *format, ...) __attribute__((format(printf, 1, 2)));

uint64_t now_usec(clockid_t clock);

/* Reads at most size - 1 bytes of path into buf and NUL-terminates them.
 * Returns the byte count, or a negative errno. */
ssize_t read_text(const char *path, char *buf, size_t size);

/* Writes text as the whole of path (created 0644, truncated; a symlink is
 * not followed). 0, or a negative errno (-EIO for a short write). */
int write_text(const char *path, const char *text);

int mkdir_p(const char *path, mode_t mode);

/* The entry of a sysfs directory (such as /sys/block) whose attribute file
 * attr holds value (one line): its name in ret. Entries whose names do not
 * start with prefix are passed over. 0, or -ENODEV when none matches. */
int sysfs_find_by_attr(const char *dir, const char *prefix, const char *attr, const char *value, char *ret,
                       size_t size);

/* Forks and execs path with argv and envp as a child of init's: signals
 * unblocked, its own session, stdout and stderr appended to log_path (0600;
 * the console's when that cannot be opened). The child's pid, or a negative
 * errno when fork fails; an exec that fails exits 127. */
pid_t spawn_logged(const char *log_path, const char *path, char *const argv[], char *const envp[]);
/* The same, with pass_fd (>= 0) given to the child as its fd 3. */
pid_t spawn_logged_fd(const char *log_path, const char *path, char *const argv[], char *const envp[], int pass_fd);
