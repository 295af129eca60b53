/* SPDX-License-Identifier: MIT */
#pragma once

/* The signing key store, kept in one file in the state directory (0600,
 * written atomically). Each key has an activation time; the signing key is
 * the one activated last. Rotation adds a key that is published at once but
 * signs only one JWKS max-age later, so every verifier that caches the JWKS
 * has seen it before the first token it signed arrives. A superseded key
 * stays published until every token it could have signed has expired
 * (superseded at + longest token lifetime + leeway), then it is dropped.
 * Opening an existing store never adds a key: only an empty store gets its
 * first key, which signs at once (nobody can have cached a JWKS yet). */

#include <jansson.h>
#include <stdint.h>

#include "identity-jwt.h"

typedef struct KeyStoreOptions {
        const char *path;             /* NULL keeps keys in memory only (tests, bench) */
        JwtAlg alg;                   /* for new keys */
        uint64_t publish_ahead;       /* seconds a new key is published before it signs (JWKS max-age) */
        uint64_t keep_after_retire;   /* seconds a superseded key stays published */
        uint64_t rotation_interval;   /* seconds a key signs before its successor takes over; 0 = manual */
} KeyStoreOptions;

typedef struct KeyStore KeyStore;

int keystore_open(const KeyStoreOptions *o, uint64_t now, KeyStore **ret);
KeyStore *keystore_free(KeyStore *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(KeyStore *, keystore_free);

/* Schedules a successor: published now, signing at now + publish_ahead. When
 * one is scheduled already, nothing is added. *ret_kid/ret_activate_at (may
 * be NULL) describe the successor. */
int keystore_rotate(KeyStore *s, uint64_t now, const char **ret_kid, uint64_t *ret_activate_at);
/* Automatic rotation and pruning; returns 1 when the published set changed. */
int keystore_maintain(KeyStore *s, uint64_t now);
/* When keystore_maintain() has something to do next, or UINT64_MAX. */
uint64_t keystore_next_change(const KeyStore *s, uint64_t now);

/* The key that signs now; NULL when none is active (clock went backwards). */
const JwtKey *keystore_signing_key(const KeyStore *s, uint64_t now);
/* Every published key (pending, signing, superseded): the JWKS. */
const JwtKeySet *keystore_published(const KeyStore *s);
/* [{kid, alg, state: pending|signing|retired, activate_at, retired_at?, remove_at?}] */
int keystore_status_json(const KeyStore *s, uint64_t now, json_t **ret);
