/* SPDX-License-Identifier: MIT */
#pragma once

/* Where hostmesh keeps things. Defaults are the system paths; the
 * environment overrides them so that tests and the dev launcher run
 * unprivileged in a temp dir:
 *   HOSTMESH_RUNTIME_DIR (default /run/hostmesh)  → <dir>/<part>.sock
 *   HOSTMESH_STATE_DIR   (default /var/lib/hostmesh) → <dir>/<part>/
 *   STATE_DIRECTORY (set by systemd's StateDirectory=) wins for the state dir.
 *   HOSTMESH_CONFIG_DIR  (default /etc/hostmesh) → <dir>/<part>.conf */

#define HOSTMESH_PARTS_MAX 6
extern const char *const hostmesh_parts[HOSTMESH_PARTS_MAX]; /* identity dns disk vmm dockerproxy gateway */

const char *hostmesh_runtime_dir(void);
/* All return malloc'ed strings, NULL on OOM. */
char *hostmesh_socket_path(const char *part);
char *hostmesh_state_dir(const char *part);
char *hostmesh_config_path(const char *part);
