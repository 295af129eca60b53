/* SPDX-License-Identifier: MIT */
#pragma once

/* Decisions on Docker Engine API requests made by a registered container:
 * which endpoints it may use, how a create body's bind mounts are translated
 * into its root on the host, which HostConfig settings the policy refuses,
 * and which containers must be its own (or its descendants') first. All
 * bodies are parsed with jansson and forwarded re-serialized, so that the
 * engine sees exactly what was checked. No I/O but the path resolution. */

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define DOCKER_LABEL_OWNER_PREFIX "io.hostmesh.dockerproxy.owner."
#define DOCKER_LABEL_CREATOR      "io.hostmesh.dockerproxy.creator"
#define DOCKER_LABEL_RESERVED     "io.hostmesh.dockerproxy."
#define DOCKER_BODY_MAX           (4U * 1024U * 1024U) /* bodies we parse */

typedef struct DockerPolicy {
        bool allow_privileged;
        char **cap_add_allow;          /* NULL-terminated; "ALL" allows any */
        bool allow_devices;
        bool allow_host_namespaces;
        bool allow_host_network;
        bool allow_unconfined;
        bool allow_sysctls;
        bool allow_privileged_exec;
        bool see_all_containers;
} DockerPolicy;

typedef struct DockerCaller {
        const char *id;                /* registration id; names its owner label */
        const char *root;              /* host path of the caller's root */
        char *const *ancestors;        /* NULL-terminated registration ids, may be NULL */
        const DockerPolicy *policy;
} DockerCaller;

typedef struct DockerDecision {
        unsigned status;        /* 0: forward; else the HTTP status to answer with */
        const char *rule;       /* names the rule for the audit log ("bind-translate", "privileged", …) */
        char *message;          /* why, for the client; never contains secrets */
        bool needs_body;        /* buffer the body and call docker_decide_body() */
        bool hijack;            /* attach / exec start: raw stream after the response head */
        char *new_query;        /* forward with this query instead (label filters) */
        char *new_body;         /* forward this body instead (re-serialized JSON) */
        size_t new_body_len;
        char **must_own;        /* NULL-terminated container refs to check before forwarding */
        char *must_own_exec;    /* exec id whose container must be owned */
        bool verify_mounts;     /* start/restart: re-check bind sources with docker_verify_mounts() */
} DockerDecision;

void docker_decision_done(DockerDecision *d);

/* First look at a request: method, API path without /vX.Y, raw query. */
int docker_decide_request(const DockerCaller *c, const char *method, const char *path, const char *query,
                          DockerDecision *d);
/* Second look, for requests that set needs_body. */
int docker_decide_body(const DockerCaller *c, const char *method, const char *path, const char *body, size_t len,
                       DockerDecision *d);
/* POST /containers/create body: policy + bind-mount translation + labels. */
int docker_translate_create(const DockerCaller *c, const char *body, size_t len, DockerDecision *d);

/* Resolves `path` (absolute, as the caller sees it) inside `root` without
 * leaving it. Returns 0 and the host path, or -EPERM with a reason (no `..`,
 * no symlink leaving the root, no /proc, /sys or /dev), -ENOENT, or another
 * negative errno. */
int docker_resolve_in_root(const char *root, const char *path, char **ret_host_path, char **ret_reason);

/* From a GET /containers/{id}/json response: does the caller own it? Sets
 * *ret_id to the full container id when not NULL. */
int docker_inspect_is_owned(const DockerCaller *c, const char *body, size_t len, bool *ret_owned, char **ret_id);
/* Before a start or restart, from the container's inspect response: every
 * bind source must still lie in the caller's root and contain no symlink
 * (the root is the caller's to change between create and start). Sets
 * d->status 403 when not. */
int docker_verify_mounts(const DockerCaller *c, const char *body, size_t len, DockerDecision *d);

/* From a GET /exec/{id}/json response: the container the exec belongs to. */
int docker_exec_inspect_container(const char *body, size_t len, char **ret_container);
/* Owner registrations named by an inspect response's labels (for a new
 * registration's ancestors). NULL-terminated. */
int docker_inspect_owners(const char *body, size_t len, char ***ret_owners);
