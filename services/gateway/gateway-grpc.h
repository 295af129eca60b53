/* SPDX-License-Identifier: MIT */
#pragma once

/* The gateway's own API (hostmesh.gateway.v1.Gateway). */

typedef struct Manager Manager;

int gateway_grpc_register(Manager *m);
