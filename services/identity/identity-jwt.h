/* SPDX-License-Identifier: MIT */
#pragma once

/* Compact JWS (RFC 7515) for JWTs (RFC 7519), JWK (RFC 7517) and JWK
 * thumbprints (RFC 7638), on OpenSSL 3 EVP and jansson.
 *
 * Only ES256 (P-256, signatures as raw R||S per RFC 7518 §3.4) and RS256
 * (RSA ≥ 2048 bits) exist here. A key carries its algorithm; verification
 * always uses the key's algorithm, never the token header's. This module is
 * self-contained (no daemon state), so the gateway can link identity_core
 * and verify bearer tokens with a JWKS it fetched:
 *
 *   JwtKeySet *ks; jwt_keyset_parse(jwks_json, len, &ks);
 *   token_validate(token, ks, NULL, &opts, &claims, &refusal, &msg);  (identity-validate.h)
 *
 * Threads: a key prepares its OpenSSL contexts on first use and reuses
 * them, so one key (and the sets holding it) belongs to one thread at a
 * time — in the daemons, the event loop thread. */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define JWT_MAX_SIZE_DEFAULT (16U * 1024U)
#define JWK_MAX_KEYS 64U

typedef enum JwtAlg {
        JWT_ALG_ES256,
        JWT_ALG_RS256,
        _JWT_ALG_MAX,
        _JWT_ALG_INVALID = -EINVAL,
} JwtAlg;

const char *jwt_alg_to_string(JwtAlg a);
JwtAlg jwt_alg_from_string(const char *s);  /* only "ES256"/"RS256"; anything else _JWT_ALG_INVALID */

/* ---- base64url (RFC 4648 §5, no padding) ---------------------------------- */

char *base64url_encode(const void *data, size_t len);  /* NULL on OOM */
/* Refuses padding, whitespace and non-canonical trailing bits: -EBADMSG. */
int base64url_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len);

/* ---- keys ---------------------------------------------------------------- */

typedef struct JwtKey JwtKey;

int jwt_key_generate(JwtAlg alg, JwtKey **ret);
/* Private key in PEM (PKCS#8); the algorithm follows from the key type. */
int jwt_key_from_private_pem(const char *pem, JwtKey **ret);
int jwt_key_to_private_pem(const JwtKey *k, char **ret);
/* Public JWK object: kty EC (crv P-256) or RSA. "alg", when present, must
 * match the key type; "use", when present, must be "sig". The kid is always
 * the RFC 7638 thumbprint; a different "kid" in the object is kept as the
 * lookup name (external issuers choose their own kids). */
int jwt_key_from_jwk(json_t *jwk, JwtKey **ret);
/* Public JWK with kty, crv/x/y or n/e, kid, alg, use. */
int jwt_key_to_jwk(const JwtKey *k, json_t **ret);
JwtKey *jwt_key_ref(JwtKey *k);
JwtKey *jwt_key_unref(JwtKey *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(JwtKey *, jwt_key_unref);
const char *jwt_key_kid(const JwtKey *k);
JwtAlg jwt_key_alg(const JwtKey *k);
bool jwt_key_has_private(const JwtKey *k);

/* RFC 7638 thumbprint (SHA-256, base64url) of the public key. */
int jwt_key_thumbprint(const JwtKey *k, char **ret);

/* ---- key sets (JWKS) ----------------------------------------------------- */

typedef struct JwtKeySet JwtKeySet;

int jwt_keyset_new(JwtKeySet **ret);
JwtKeySet *jwt_keyset_free(JwtKeySet *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(JwtKeySet *, jwt_keyset_free);
/* Takes a reference. -EEXIST for a duplicate kid, -E2BIG beyond JWK_MAX_KEYS. */
int jwt_keyset_add(JwtKeySet *s, JwtKey *k);
const JwtKey *jwt_keyset_find(const JwtKeySet *s, const char *kid);
size_t jwt_keyset_size(const JwtKeySet *s);
const JwtKey *jwt_keyset_get(const JwtKeySet *s, size_t i);
/* Parses {"keys":[...]}; keys of unsupported types (kty OKP, "use":"enc"...)
 * are skipped as RFC 7517 §5 allows; a malformed supported key is -EBADMSG. */
int jwt_keyset_parse(const char *json, size_t len, JwtKeySet **ret);
int jwt_keyset_to_json(const JwtKeySet *s, json_t **ret);

/* ---- tokens -------------------------------------------------------------- */

/* Signs `claims` with header {alg, kid, typ:"JWT"} → compact JWS. */
int jwt_sign(const JwtKey *k, json_t *claims, char **ret_token);
/* Same with the claims already serialized (a JSON object, not checked). */
int jwt_sign_payload(const JwtKey *k, const char *payload, size_t len, char **ret_token);

typedef struct JwtParsed {
        json_t *header;
        json_t *payload;
        const char *alg;        /* points into header */
        const char *kid;        /* points into header; NULL when absent */
        size_t signing_input_len;  /* token[0..len) is "header.payload" */
        uint8_t *signature;
        size_t signature_len;
} JwtParsed;

/* Splits and decodes a compact JWS without verifying it: -EMSGSIZE when
 * longer than max_size, -EBADMSG when not three base64url parts with JSON
 * objects in the first two, or the header has no string "alg". */
int jwt_parse(const char *token, size_t max_size, JwtParsed *ret);
void jwt_parsed_done(JwtParsed *p);

/* 0 when `signature` is valid for `input` under the key's algorithm;
 * -EKEYREJECTED otherwise (wrong length, DER instead of R||S, mismatch). */
int jwt_verify_signature(const JwtKey *k, const void *input, size_t input_len, const uint8_t *signature,
                         size_t signature_len);

/* JWS ECDSA signatures are R||S (RFC 7518 §3.4); OpenSSL speaks DER. */
int ecdsa_der_to_raw(const uint8_t *der, size_t der_len, uint8_t raw[64]);
int ecdsa_raw_to_der(const uint8_t raw[64], uint8_t **ret, size_t *ret_len);
