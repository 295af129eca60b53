/* SPDX-License-Identifier: MIT */
#pragma once

/* Runs the external tools diskd needs (qemu-img, mkfs.ext4) with
 * posix_spawn: no shell, no fork of the threaded daemon. */

/* Runs argv[0] (looked up in PATH) with stdin from /dev/null and waits for
 * it. Returns 0 on exit status 0, -EIO otherwise, with the tool's stderr
 * (at most 4 KiB, trailing newline removed) in *ret_output when not NULL. */
int disk_exec(char *const argv[], char **ret_output);
