/* SPDX-License-Identifier: MIT */
#pragma once

/* The image's User for a container's main process. `ctr run` has no user
 * flag, so the process is started through hostmesh-init itself, bind-
 * mounted into the container as USER_HELPER_PATH: it resolves the user
 * against the container's own /etc/passwd and /etc/group (as runc does for
 * `docker run --user`), drops to it and execs the command. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* In the container's /run, which containerd mounts as a tmpfs: nothing is
 * written to the container's root. */
#define USER_HELPER_PATH "/run/.hostmesh-user"
#define USER_GROUPS_MAX 64

typedef struct UserIds {
        uid_t uid;
        gid_t gid;
        gid_t groups[USER_GROUPS_MAX];  /* supplementary: the groups listing the user by name */
        size_t n_groups;
        char home[256];                 /* passwd's home field; "/" when none (as runc does) */
} UserIds;

/* Resolves spec against the text of passwd and group (either may be
 * empty). A number not in passwd is that uid with gid 0; a name not there
 * is -ENOENT, and so is a group name not in group. *ret_error says which. */
int user_resolve(const char *spec, const char *passwd, const char *group, UserIds *ret, const char **ret_error);
/* hostmesh-init started as USER_HELPER_PATH --user=SPEC [--home] -- COMMAND...
 * (--home: the environment given to the container has no HOME, so HOME is
 * set to the user's home from passwd rather than left at root's):
 * never returns on success (exit 126 when the user cannot be set, 127 when
 * the command cannot be run, as a shell would). */
int user_helper_main(int argc, char **argv);
