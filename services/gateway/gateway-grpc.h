/* SPDX-License-Identifier: MIT */
#pragma once

/* gRPC surface of gatewayd: decode → manager → encode, nothing else. */

typedef struct Manager Manager;

int gateway_grpc_register(Manager *m);
