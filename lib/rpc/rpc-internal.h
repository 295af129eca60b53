/* SPDX-License-Identifier: MIT */
#pragma once

/* Internals shared by the rpc runtime's files and by code that drives gRPC
 * core directly (the gateway's forwarder, via rpc-raw.h). */

#include <grpc/grpc.h>
#include <stdbool.h>

#include "rpc.h"

/* Every completion-queue tag is an RpcTag; `fn` runs on the loop thread with
 * the event's success flag — or, with run_inline, directly on the
 * completion-queue thread (see rpc_batch_inline()). */
typedef struct RpcTag RpcTag;
struct RpcTag {
        void (*fn)(RpcTag *tag, bool ok);
        bool run_inline;
};

grpc_completion_queue *rpc_loop_cq(RpcLoop *l);
/* Processes completions on the calling (loop) thread until *done is true. */
void rpc_loop_run_until(RpcLoop *l, const bool *done);

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *m);
/* -EBADMSG when the bytes are not a valid message of that type. */
int rpc_unpack(grpc_byte_buffer *b, const ProtobufCMessageDescriptor *d, ProtobufCMessage **ret);
char *rpc_slice_to_string(grpc_slice s);
gpr_timespec rpc_deadline_from_timeout(uint64_t timeout_usec);

grpc_server *rpc_server_grpc(RpcServer *s);
