/* SPDX-License-Identifier: MIT */
#pragma once

/* Bearer-token authentication for callers on the gateway's TCP listener.
 * Tokens are verified locally with identityd's keys: the JWKS (and the
 * issuer) are fetched from identityd, cached, and fetched again when a token
 * names an unknown kid — at most once per refresh interval.
 *
 * Revocations live in identityd. A token that verifies is then checked
 * there (ValidateToken) and the answer kept per jti for revocation_cache:
 * a revoked token is refused within that time, a token in steady use costs
 * one local call per interval, and the revocation list (up to 100000
 * entries, more than fits in one message) never has to be copied. When
 * identityd cannot answer, the call fails UNAVAILABLE: a revocation is
 * never ignored for want of an answer. */

#include <jansson.h>

#include "rpc.h"

typedef struct Manager Manager;
typedef struct GatewayBearer GatewayBearer;

/* Called on the loop: r = 0 with the token's claims (borrowed), or a
 * negative errno and a message for the caller. */
typedef void (*GatewayBearerDone)(Manager *m, int r, const char *message, json_t *claims, void *userdata);

int gateway_bearer_new(Manager *m, GatewayBearer **ret);
GatewayBearer *gateway_bearer_free(GatewayBearer *b);
/* Authenticates an "authorization" value ("Bearer <jwt>"; NULL when the
 * caller sent none) of a gRPC call or an HTTP request. `done` runs exactly
 * once, now or later; if the bearer is freed first, `release` runs instead
 * (either way userdata is handed back once). */
void gateway_bearer_authenticate(GatewayBearer *b, const char *authorization, GatewayBearerDone done,
                                  void (*release)(void *userdata), void *userdata);
