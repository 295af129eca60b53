/* SPDX-License-Identifier: MIT */
#pragma once

/* gRPC surface of vmmd: decode → manager → encode, nothing else. */

typedef struct Manager Manager;

int vmm_grpc_register(Manager *m);
