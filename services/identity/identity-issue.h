/* SPDX-License-Identifier: MIT */
#pragma once

/* Building and signing hostmesh tokens: claims iss, sub, aud, exp, iat, nbf,
 * jti, tenant_id, instance_id (and container_name), plus any extra claims
 * (exchanged tokens carry where they came from). */

#include <jansson.h>
#include <stdint.h>

#include "identity-jwt.h"

#define TOKEN_AUDIENCES_MAX 16U
#define TOKEN_FIELD_MAX 253U

typedef struct TokenRequest {
        const char *subject;          /* NULL → tenant_id/instance_id[/container_name] */
        const char *tenant_id;
        const char *instance_id;
        const char *container_name;
        const char *const *audience;  /* NULL-terminated, 1..TOKEN_AUDIENCES_MAX */
        uint64_t lifetime;            /* seconds, already checked against policy */
        json_t *extra;                /* optional object merged into the claims */
} TokenRequest;

typedef struct TokenIssued {
        char *token;
        char jti[23];                 /* 128 random bits, base64url */
        uint64_t expires_at;
} TokenIssued;

void token_issued_done(TokenIssued *t);

/* -EINVAL when a field is missing, too long or has characters outside
 * [A-Za-z0-9._-] (tenant, instance, container), or no audience is given. */
int token_issue(const JwtKey *key, const char *issuer, const TokenRequest *req, uint64_t now, TokenIssued *ret);
/* True for a name allowed in tenant_id, instance_id, container_name. */
bool token_name_is_valid(const char *s);
