/* SPDX-License-Identifier: MIT */
#pragma once

/* gRPC surface of diskd: decode → manager → encode, nothing else. */

typedef struct Manager Manager;

int disk_grpc_register(Manager *m);
