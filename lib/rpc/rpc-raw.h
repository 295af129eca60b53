/* SPDX-License-Identifier: MIT */
#pragma once

/* Lower-level access for code that must drive gRPC core itself: the
 * gateway forwards calls byte for byte. Completions still run on the loop. */

#include <grpc/grpc.h>

#include "rpc.h"

grpc_call *rpc_call_grpc(RpcCall *c);
const grpc_metadata_array *rpc_call_initial_metadata(RpcCall *c);
gpr_timespec rpc_call_deadline(RpcCall *c);
/* Records that the raw handler has sent the status (for metrics and the
 * idle/drain accounting). */
void rpc_call_mark_finished(RpcCall *c, RpcCode code);

/* Starts a batch on any call; `done` runs on the loop thread. */
typedef void (*RpcBatchCallback)(void *userdata, bool ok);
int rpc_batch(RpcLoop *l, grpc_call *call, const grpc_op *ops, size_t n_ops, RpcBatchCallback done,
              void *userdata);

/* Same, but `done` runs directly on the completion-queue thread, saving the
 * hop to the loop. Only for code whose state is guarded by its own lock and
 * that touches nothing else of the daemon (the gateway's byte pumps). */
int rpc_batch_inline(grpc_call *call, const grpc_op *ops, size_t n_ops, RpcBatchCallback done, void *userdata);

/* Runs `done(userdata, true)` on the loop thread soon; callable from any thread. */
int rpc_loop_post(RpcLoop *l, RpcBatchCallback done, void *userdata);

grpc_completion_queue *rpc_loop_cq(RpcLoop *l);
/* The channel behind a client, for creating raw calls. */
grpc_channel *rpc_client_channel(RpcClient *c);
