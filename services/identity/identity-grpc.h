/* SPDX-License-Identifier: MIT */
#pragma once

/* gRPC surface of identityd: decode → manager → encode, nothing else. */

typedef struct Manager Manager;

int identity_grpc_register(Manager *m);
