/* SPDX-License-Identifier: MIT */
#pragma once

/* gRPC surface of dnsd: decode → manager → encode, nothing else. */

typedef struct Manager Manager;

int dns_grpc_register(Manager *m);
