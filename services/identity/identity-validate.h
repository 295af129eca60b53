/* SPDX-License-Identifier: MIT */
#pragma once

/* Token validation: every refusal has its own reason and a precise message.
 * Fail closed: an empty expected audience or issuer is refused, the
 * algorithm is the key's (the header's "alg" must merely agree with it),
 * "none" and HMAC algorithms are refused before any key is looked at. */

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "identity-jwt.h"
#include "identity-revoke.h"

typedef enum TokenRefusal {
        TOKEN_VALID,
        TOKEN_MALFORMED,
        TOKEN_BAD_SIGNATURE,
        TOKEN_UNKNOWN_KID,
        TOKEN_ALG_NOT_ALLOWED,
        TOKEN_EXPIRED,
        TOKEN_NOT_YET_VALID,
        TOKEN_WRONG_ISSUER,
        TOKEN_AUDIENCE_MISMATCH,
        TOKEN_REVOKED,
        TOKEN_TOO_LARGE,
        _TOKEN_REFUSAL_MAX,
} TokenRefusal;

/* "malformed", "bad_signature", "unknown_kid", "alg_not_allowed", "expired",
 * "not_yet_valid", "wrong_issuer", "audience_mismatch", "revoked", "too_large". */
const char *token_refusal_to_string(TokenRefusal r);
/* -EBADMSG, -EKEYREJECTED, -ENOKEY, -EKEYREJECTED, -EKEYEXPIRED, -EKEYREJECTED,
 * -EKEYREJECTED, -EKEYREJECTED, -EKEYREVOKED, -EMSGSIZE. */
int token_refusal_to_errno(TokenRefusal r);

typedef struct TokenPolicy {
        const char *issuer;        /* required "iss" */
        const char *audience;      /* must appear in "aud" */
        uint64_t now;              /* seconds since the epoch */
        uint64_t leeway;           /* seconds of clock skew tolerated for exp/nbf/iat */
        size_t max_size;           /* 0 → JWT_MAX_SIZE_DEFAULT */
        bool allow_missing_kid;    /* external issuers with a single key may omit "kid" */
} TokenPolicy;

/* Returns 0 with the claims, a negative errno from token_refusal_to_errno()
 * with *ret_refusal and *ret_message (to free) set, or -ENOMEM. `revocations`
 * may be NULL. */
int token_validate(const char *token, const JwtKeySet *keys, const Revocations *revocations,
                   const TokenPolicy *policy, json_t **ret_claims, TokenRefusal *ret_refusal,
                   char **ret_message);

/* True when `aud` (a string or an array of strings) contains `audience`. */
bool token_audience_contains(json_t *aud, const char *audience);
/* Reads a NumericDate claim (RFC 7519 §2); -ENOENT when absent, -EBADMSG when not a non-negative number. */
int token_claim_time(json_t *claims, const char *name, uint64_t *ret);
