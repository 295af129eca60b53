/* SPDX-License-Identifier: MIT */
#pragma once

/* Revocations: by token id (jti) or by subject. A jti entry lives until the
 * token it names would have expired anyway; a subject entry refuses every
 * token of that subject issued at or before the revocation and lives until
 * the longest token issued before it has expired. Kept in one JSON file in
 * the state directory, written atomically on every change. */

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "macro.h"

#define REVOCATIONS_MAX_DEFAULT 100000U
#define REVOCATION_ID_MAX 512U

typedef struct Revocations Revocations;

/* `path` NULL keeps everything in memory (tests, fuzzers). A missing file is
 * an empty list; an unreadable or corrupt one is an error (failing open
 * would resurrect revoked tokens). */
int revocations_load(const char *path, size_t max_entries, Revocations **ret);
Revocations *revocations_free(Revocations *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Revocations *, revocations_free);

/* -EINVAL for an empty or oversized id, -ENOSPC when full. Revoking again
 * extends `until`. Both persist before returning. */
int revocations_add_jti(Revocations *r, const char *jti, uint64_t until);
int revocations_add_subject(Revocations *r, const char *subject, uint64_t revoked_at, uint64_t until);

/* True when a token with this jti, or of this subject issued at `iat`, is revoked. */
bool revocations_check(const Revocations *r, const char *jti, const char *subject, uint64_t iat);

/* Drops entries whose `until` lies before `now`; returns how many (persisted). */
int revocations_prune(Revocations *r, uint64_t now);
size_t revocations_count(const Revocations *r);
/* {"jti":[{"id","until"}...],"subjects":[{"id","revoked_at","until"}...]} */
int revocations_to_json(const Revocations *r, json_t **ret);
