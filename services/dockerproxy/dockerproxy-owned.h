/* SPDX-License-Identifier: MIT */
#pragma once

/* What a registered container made through its own socket: the ids of its
 * containers and networks, the names of its volumes and the image
 * references it built or tagged. Ownership is decided here and nowhere
 * else: labels are written for people and tools, but a caller can set
 * labels (an image's labels end up on every container made from it), so
 * they decide nothing. Plain data, no I/O; the manager persists it. */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define OWNED_MAX     4096U /* per kind and registration */
#define OWNED_ID_MAX  512U

typedef enum OwnedKind {
        OWNED_NONE,        /* nothing (a zeroed decision records nothing) */
        OWNED_CONTAINER,   /* full 64-hex container id */
        OWNED_VOLUME,      /* volume name */
        OWNED_NETWORK,     /* full network id */
        OWNED_IMAGE,       /* normalized image reference (docker.io/library/x:latest) */
        _OWNED_KIND_MAX,
} OwnedKind;

typedef struct OwnedSet OwnedSet;

int owned_set_new(OwnedSet **ret);
OwnedSet *owned_set_free(OwnedSet *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(OwnedSet *, owned_set_free);

bool owned_set_has(const OwnedSet *s, OwnedKind kind, const char *id);
/* 1 added, 0 already there, -ENOSPC at OWNED_MAX, -EINVAL for an unusable id. */
int owned_set_add(OwnedSet *s, OwnedKind kind, const char *id);
/* 1 removed, 0 was not there. */
int owned_set_remove(OwnedSet *s, OwnedKind kind, const char *id);
size_t owned_set_size(const OwnedSet *s, OwnedKind kind);
/* The i-th entry of a kind, in insertion order; NULL past the end. */
const char *owned_set_get(const OwnedSet *s, OwnedKind kind, size_t i);

const char *owned_kind_to_string(OwnedKind kind);

/* {"containers": [...], "volumes": [...], "networks": [...], "images": [...]} */
json_t *owned_set_to_json(const OwnedSet *s);
/* Entries that are not usable ids are skipped; -EBADMSG when j is not an object. */
int owned_set_from_json(OwnedSet *s, json_t *j);
