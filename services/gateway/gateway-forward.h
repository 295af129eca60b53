/* SPDX-License-Identifier: MIT */
#pragma once

/* Byte-for-byte forwarding of gRPC calls to a backend: all four call kinds,
 * metadata both ways, deadline and cancellation propagation, status and
 * trailers. Messages are never decoded. */

#include <stdbool.h>

#include "rpc.h"

typedef struct Manager Manager;
typedef struct Backend Backend;

/* The rpc interceptor: authenticates every call, then either forwards it
 * (true) or leaves it to the gateway's own methods (false). */
bool gateway_intercept(RpcCall *call, void *userdata);
/* `subject` and `tenant` are the verified identity of a bearer-token caller
 * (NULL for local callers, who are identified by peer credentials). */
void gateway_forward(Manager *m, RpcCall *call, Backend *b, const char *subject, const char *tenant);
