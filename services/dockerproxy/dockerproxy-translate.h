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

#include "dockerproxy-owned.h"
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
        /* Inside an instance: images come from the host only, so a pull
         * (which would reach a registry over the network) is refused. */
        bool refuse_pull;
        /* Inside an instance whose host answers pulls: the proxy answers
         * POST /images/create?fromImage= itself, with the image fetched by
         * the host (diskd) and loaded into the engine without the network.
         * Wins over refuse_pull; imports (fromSrc) stay refused. */
        bool pull_via_host;
} DockerPolicy;

typedef struct DockerCaller {
        const char *id;                /* registration id; names its owner label */
        const char *root;              /* host path of the caller's root */
        char *const *ancestors;        /* NULL-terminated registration ids, may be NULL */
        const DockerPolicy *policy;
        const OwnedSet *owned;         /* what it made through its socket (and its descendants); may be NULL */
} DockerCaller;

/* Something the engine must be asked before a request may go on. */
typedef enum DockerCheckKind {
        DOCKER_CHECK_CONTAINER,    /* a container the caller owns */
        DOCKER_CHECK_EXEC,         /* an exec whose container the caller owns */
        DOCKER_CHECK_NETWORK,      /* a network the caller owns */
        DOCKER_CHECK_VOLUME_FREE,  /* a volume name that does not exist yet */
        DOCKER_CHECK_IMAGE_FREE,   /* an image reference that does not exist yet */
        DOCKER_CHECK_IMAGE_LABELS, /* an image to create a container from: no reserved labels */
} DockerCheckKind;

typedef struct DockerCheck {
        DockerCheckKind kind;
        char *ref;
        bool in_path;              /* the ref is the request path's: forward with the resolved id */
} DockerCheck;

/* Applied to the caller's records when the engine answers 2xx. */
typedef struct DockerRecord {
        OwnedKind kind;
        char *id;
        bool add;                  /* false: forget it */
} DockerRecord;

typedef struct DockerDecision {
        unsigned status;        /* 0: forward; else the HTTP status to answer with */
        const char *rule;       /* names the rule for the audit log ("bind-translate", "privileged", …) */
        char *message;          /* why, for the client; never contains secrets */
        bool needs_body;        /* buffer the body and call docker_decide_body() */
        bool hijack;            /* attach / exec start: raw stream after the response head */
        char *new_query;        /* forward with this query instead (label filters) */
        char *new_body;         /* forward this body instead (re-serialized JSON) */
        size_t new_body_len;
        DockerCheck *checks;    /* in order, before forwarding */
        size_t n_checks;
        bool verify_mounts;     /* start/restart: re-check bind sources with docker_verify_mounts() */
        char *path_id;          /* full id the path's ref resolved to: the engine gets this instead */
        OwnedKind record_answer;  /* record the id a 2xx answer names (creates), or OWNED_NONE */
        OwnedKind forget_path;    /* forget path_id after a 2xx answer (deletes), or OWNED_NONE */
        DockerRecord *records;  /* applied after a 2xx answer */
        size_t n_records;
        char *pull_ref;         /* answered by the proxy: pull this (normalized) reference through the host */
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

/* The engine request (a GET path) that answers check `i` of a decision. */
int docker_check_path(const DockerDecision *d, size_t i, char **ret_path);
/* Judges the engine's answer to check `i`: sets d->status to refuse, may
 * resolve d->path_id or add checks (an exec names its container). A
 * negative errno when the answer is unusable (the engine failed). */
int docker_check_answer(const DockerCaller *c, DockerDecision *d, size_t i, unsigned status, const char *body,
                        size_t len);
/* The id a create answer names: "Id" (containers, networks) or "Name" (volumes). */
int docker_created_id(OwnedKind kind, const char *body, size_t len, char **ret_id);
/* `path` ("/containers/web/start") with its second segment replaced by `id`. */
int docker_path_with_id(const char *path, const char *id, char **ret_path);
/* Normalizes an image reference the way the engine names it
 * ("ubuntu" → "docker.io/library/ubuntu:latest"); -EINVAL when it is not one,
 * or when it could also be read as an image id (bare hex). */
int docker_image_ref_normalize(const char *ref, char **ret);
/* The end of a pull answered through the host, as the Engine API's
 * progress stream (JSON lines): the status line of success, or an error
 * line ({"errorDetail":{"message":M},"error":M}) whose message says what
 * to do. status is an AgentPullStatus, message the host's words. */
int docker_pull_result(const char *ref, unsigned status, const char *message, char **ret_lines);
/* The stream's first line, sent as soon as the pull is asked for. */
int docker_pull_started(const char *ref, char **ret_line);

/* Before a start or restart, from the container's inspect response: every
 * bind source must still lie in the caller's root and contain no symlink
 * (the root is the caller's to change between create and start). Sets
 * d->status 403 when not. */
int docker_verify_mounts(const DockerCaller *c, const char *body, size_t len, DockerDecision *d);

/* From a GET /exec/{id}/json response: the container the exec belongs to. */
int docker_exec_inspect_container(const char *body, size_t len, char **ret_container);
/* The full id in a GET /containers/{id}/json response. */
int docker_inspect_id(const char *body, size_t len, char **ret_id);
