/* SPDX-License-Identifier: MIT */
#pragma once

/* gRPC surface of vmmd: decode → manager → encode, nothing else. The
 * manager calls the vmm_grpc_send_* functions to answer calls it keeps
 * (waits, commands, log follows). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Manager Manager;
typedef struct Instance Instance;
typedef struct RpcCall RpcCall;

int vmm_grpc_register(Manager *m);

/* WaitInstance: one metadata update (stream) or the final answer (sync). */
/* container: fills container_status; may be NULL. */
typedef struct VmmContainer VmmContainer;
int vmm_grpc_send_wait(RpcCall *c, Instance *i, bool stream, const VmmContainer *container);
/* RunCommand: output chunk (stream 1 = stdout, 2 = stderr) and the end. */
int vmm_grpc_send_output(RpcCall *c, int stream, const void *data, size_t size);
int vmm_grpc_send_exit(RpcCall *c, int32_t code);
int vmm_grpc_reply_sync(RpcCall *c, const void *out, size_t out_size, const void *err, size_t err_size, int32_t code);
/* StreamInstanceLogs: one line. */
int vmm_grpc_send_log_line(RpcCall *c, uint64_t usec, const char *stream, const char *line);
/* StreamInstanceLogs: everything stored in the instance directory, in blocks of lines. */
int vmm_grpc_send_log_replay(RpcCall *c, const char *dir);
