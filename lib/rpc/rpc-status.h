/* SPDX-License-Identifier: MIT */
#pragma once

/* gRPC status codes and the one mapping between them and negative errno. */

typedef enum RpcCode {
        RPC_OK = 0,
        RPC_CANCELLED = 1,
        RPC_UNKNOWN = 2,
        RPC_INVALID_ARGUMENT = 3,
        RPC_DEADLINE_EXCEEDED = 4,
        RPC_NOT_FOUND = 5,
        RPC_ALREADY_EXISTS = 6,
        RPC_PERMISSION_DENIED = 7,
        RPC_RESOURCE_EXHAUSTED = 8,
        RPC_FAILED_PRECONDITION = 9,
        RPC_ABORTED = 10,
        RPC_OUT_OF_RANGE = 11,
        RPC_UNIMPLEMENTED = 12,
        RPC_INTERNAL = 13,
        RPC_UNAVAILABLE = 14,
        RPC_DATA_LOSS = 15,
        RPC_UNAUTHENTICATED = 16,
        _RPC_CODE_MAX,
} RpcCode;

/*  -EINVAL -EDOM -EBADMSG -ENAMETOOLONG → INVALID_ARGUMENT
 *  -ENOENT -ESRCH                       → NOT_FOUND
 *  -EEXIST                              → ALREADY_EXISTS
 *  -EPERM -EACCES                       → PERMISSION_DENIED
 *  -ENOSPC -EDQUOT -EUSERS -EMFILE -ENOBUFS -E2BIG -EMSGSIZE → RESOURCE_EXHAUSTED
 *  -EBUSY -ENOTEMPTY -ENOPKG -ENOEXEC -ENOMEDIUM -ESTALE → FAILED_PRECONDITION
 *  -ETIMEDOUT -ETIME                    → DEADLINE_EXCEEDED
 *  -ECONNREFUSED -ECONNRESET -ENOTCONN -EHOSTDOWN -EPIPE -EAGAIN -ESHUTDOWN → UNAVAILABLE
 *  -ECANCELED                           → CANCELLED
 *  -ERANGE -EOVERFLOW                   → OUT_OF_RANGE
 *  -EOPNOTSUPP -ENOSYS                  → UNIMPLEMENTED
 *  -EKEYREJECTED -EKEYEXPIRED -EKEYREVOKED -ENOKEY → UNAUTHENTICATED
 *  -EIO -EPROTO -EUCLEAN                → DATA_LOSS (-EIO: INTERNAL)
 *  anything else                        → INTERNAL */
RpcCode rpc_code_from_errno(int error);
int rpc_errno_from_code(RpcCode code);
const char *rpc_code_to_string(RpcCode code);  /* "INVALID_ARGUMENT" */
int rpc_code_from_string(const char *s);        /* or -EINVAL */
