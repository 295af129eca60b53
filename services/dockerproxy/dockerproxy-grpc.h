/* SPDX-License-Identifier: MIT */
#pragma once

/* gRPC surface of dockerproxyd: decode → manager → encode, nothing else. */

typedef struct Manager Manager;

int dockerproxy_grpc_register(Manager *m);
