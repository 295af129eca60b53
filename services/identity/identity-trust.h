/* SPDX-License-Identifier: MIT */
#pragma once

/* Trust relationships (inbound federation): an external issuer whose tokens
 * may be exchanged for hostmesh tokens of one tenant. Each names the
 * issuer, its JWKS (inline JSON or a file, re-read when it changes), a
 * subject glob (fnmatch), the audience the external token must carry, the
 * tenant the exchanged token belongs to and the longest lifetime it may
 * get. Kept in one JSON file in the state directory. */

#include <jansson.h>
#include <stdint.h>

#include "identity-jwt.h"
#include "identity-validate.h"

#define TRUST_RELATIONSHIPS_MAX 256U
#define TRUST_JWKS_MAX (256U * 1024U)

typedef struct TrustRelationship {
        char *id;                 /* "tr-" + 12 hex, or given by the admin */
        char *issuer;
        char *jwks_json;          /* exactly one of jwks_json, jwks_file */
        char *jwks_file;
        char *subject_pattern;    /* fnmatch glob over "sub" */
        char *audience;           /* the external token must be for this audience */
        char *tenant_id;
        uint64_t max_duration;    /* seconds */
        uint64_t created;
} TrustRelationship;

typedef struct TrustStore TrustStore;

int truststore_load(const char *path, TrustStore **ret);
TrustStore *truststore_free(TrustStore *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(TrustStore *, truststore_free);

/* Validates and persists a copy of `spec` (its id may be NULL); *ret_id
 * points into the store. -EINVAL with *ret_error (to free) naming the bad
 * field; -EEXIST for a taken id; -ENOSPC when full. */
int truststore_add(TrustStore *s, const TrustRelationship *spec, uint64_t now, const char **ret_id,
                   char **ret_error);
int truststore_remove(TrustStore *s, const char *id);
size_t truststore_size(const TrustStore *s);
const TrustRelationship *truststore_get(const TrustStore *s, size_t i);
int trust_relationship_to_json(const TrustRelationship *t, json_t **ret);

/* Finds the relationship that accepts `token`: same issuer, signature valid
 * under its JWKS, audience, time claims, subject glob. Returns 0 with the
 * relationship and the verified claims; -EPERM with *ret_error saying which
 * check failed (for the last relationship of that issuer that was tried);
 * -ENOMEM. */
int truststore_match(TrustStore *s, const char *token, uint64_t now, uint64_t leeway, size_t max_size,
                     const TrustRelationship **ret, json_t **ret_claims, char **ret_error);
