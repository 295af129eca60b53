/* SPDX-License-Identifier: MIT */
#pragma once

/* Registered containers: who they are (id, root, ancestors), what they may
 * do (policy), where their socket is; and the state file that keeps them
 * across restarts (one JSON document, written atomically). */

#include <jansson.h>

#include "dockerproxy-proxy.h"
#include "dockerproxy-translate.h"
#include "macro.h"

#define REGISTRATION_ID_MAX 128U
#define REGISTRATIONS_MAX   4096U

typedef struct Registration {
        char *id;
        char *root;
        char *socket_path;
        char **ancestors;       /* NULL-terminated */
        DockerPolicy policy;    /* cap_add_allow owned */
        OwnedSet *owned;        /* what it and its descendants made through their sockets */
        DockerCaller caller;    /* points into the fields above */
        Proxy *proxy;
} Registration;

int registration_new(const char *id, const char *root, const char *socket_path, Registration **ret);
Registration *registration_free(Registration *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Registration *, registration_free);
/* Copies a NULL-terminated list (NULL → empty list). */
int registration_set_ancestors(Registration *r, char *const *ancestors);
int registration_set_cap_allow(Registration *r, char *const *caps, size_t n);

json_t *registration_to_json(const Registration *r);
/* Parses one entry of the state file; validates like a new registration. */
int registration_from_json(json_t *j, const char *socket_dir, Registration **ret);

int registry_save(const char *path, Registration *const *regs, size_t n);
/* Returns the entries (caller frees each and the array); a missing file is 0 entries. */
int registry_load(const char *path, const char *socket_dir, Registration ***ret, size_t *ret_n);

/* Checks an id is usable as a socket name and label suffix. */
bool registration_id_is_valid(const char *id);
