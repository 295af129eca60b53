/* SPDX-License-Identifier: MIT */
#pragma once

/* Bearer-token authentication for callers on the gateway's TCP listener.
 * Tokens are verified locally with identityd's keys: the JWKS (and the
 * issuer) are fetched from identityd, cached, and fetched again when a token
 * names an unknown kid — at most once per refresh interval. */

#include <jansson.h>

#include "rpc.h"

typedef struct Manager Manager;
typedef struct GatewayBearer GatewayBearer;

/* Called on the loop: r = 0 with the token's claims (borrowed), or a
 * negative errno and a message for the caller. */
typedef void (*GatewayBearerDone)(RpcCall *call, int r, const char *message, json_t *claims, void *userdata);

int gateway_bearer_new(Manager *m, GatewayBearer **ret);
GatewayBearer *gateway_bearer_free(GatewayBearer *b);
/* Authenticates the call's "authorization: Bearer <jwt>" metadata. */
void gateway_bearer_authenticate(GatewayBearer *b, RpcCall *call, GatewayBearerDone done, void *userdata);
