/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "rpc-status.h"

static const char *const code_names[_RPC_CODE_MAX] = {
        [RPC_OK] = "OK",
        [RPC_CANCELLED] = "CANCELLED",
        [RPC_UNKNOWN] = "UNKNOWN",
        [RPC_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
        [RPC_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
        [RPC_NOT_FOUND] = "NOT_FOUND",
        [RPC_ALREADY_EXISTS] = "ALREADY_EXISTS",
        [RPC_PERMISSION_DENIED] = "PERMISSION_DENIED",
        [RPC_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
        [RPC_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
        [RPC_ABORTED] = "ABORTED",
        [RPC_OUT_OF_RANGE] = "OUT_OF_RANGE",
        [RPC_UNIMPLEMENTED] = "UNIMPLEMENTED",
        [RPC_INTERNAL] = "INTERNAL",
        [RPC_UNAVAILABLE] = "UNAVAILABLE",
        [RPC_DATA_LOSS] = "DATA_LOSS",
        [RPC_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

RpcCode rpc_code_from_errno(int error) {
        switch (error < 0 ? -error : error) {
        case 0:
                return RPC_OK;
        case EINVAL: case EDOM: case EBADMSG: case ENAMETOOLONG: case EILSEQ:
                return RPC_INVALID_ARGUMENT;
        case ENOENT: case ESRCH: case ENXIO:
                return RPC_NOT_FOUND;
        case EEXIST:
                return RPC_ALREADY_EXISTS;
        case EPERM: case EACCES:
                return RPC_PERMISSION_DENIED;
        case ENOSPC: case EDQUOT: case EUSERS: case EMFILE: case ENFILE: case ENOBUFS: case E2BIG:
        case EMSGSIZE: case ENOMEM:
                return RPC_RESOURCE_EXHAUSTED;
        case EBUSY: case ENOTEMPTY: case ENOPKG: case ENOEXEC: case ENOMEDIUM: case ESTALE:
        case ENOTDIR: case EISDIR: case ELOOP: case EXDEV:
                return RPC_FAILED_PRECONDITION;
        case ETIMEDOUT: case ETIME:
                return RPC_DEADLINE_EXCEEDED;
        case ECONNREFUSED: case ECONNRESET: case ENOTCONN: case EHOSTDOWN: case EPIPE: case EAGAIN:
        case ESHUTDOWN: case ECONNABORTED: case EHOSTUNREACH: case ENETUNREACH:
                return RPC_UNAVAILABLE;
        case ECANCELED:
                return RPC_CANCELLED;
        case ERANGE: case EOVERFLOW:
                return RPC_OUT_OF_RANGE;
        case EOPNOTSUPP: case ENOSYS:
                return RPC_UNIMPLEMENTED;
        case EKEYREJECTED: case EKEYEXPIRED: case EKEYREVOKED: case ENOKEY:
                return RPC_UNAUTHENTICATED;
        case EPROTO: case EUCLEAN:
                return RPC_DATA_LOSS;
        case EALREADY:
                return RPC_ABORTED;
        default:
                return RPC_INTERNAL;
        }
}

int rpc_errno_from_code(RpcCode code) {
        switch (code) {
        case RPC_OK:                  return 0;
        case RPC_CANCELLED:           return -ECANCELED;
        case RPC_INVALID_ARGUMENT:    return -EINVAL;
        case RPC_DEADLINE_EXCEEDED:   return -ETIMEDOUT;
        case RPC_NOT_FOUND:           return -ENOENT;
        case RPC_ALREADY_EXISTS:      return -EEXIST;
        case RPC_PERMISSION_DENIED:   return -EPERM;
        case RPC_RESOURCE_EXHAUSTED:  return -ENOSPC;
        case RPC_FAILED_PRECONDITION: return -EBUSY;
        case RPC_ABORTED:             return -EALREADY;
        case RPC_OUT_OF_RANGE:        return -ERANGE;
        case RPC_UNIMPLEMENTED:       return -EOPNOTSUPP;
        case RPC_UNAVAILABLE:         return -ECONNREFUSED;
        case RPC_DATA_LOSS:           return -EPROTO;
        case RPC_UNAUTHENTICATED:     return -EKEYREJECTED;
        case RPC_UNKNOWN:
        case RPC_INTERNAL:
        default:                      return -EIO;
        }
}

const char *rpc_code_to_string(RpcCode code) {
        if ((unsigned) code >= _RPC_CODE_MAX)
                return "UNKNOWN";
        return code_names[code];
}

int rpc_code_from_string(const char *s) {
        for (int i = 0; i < _RPC_CODE_MAX; i++)
                if (strcasecmp(s, code_names[i]) == 0)
                        return i;
        return -EINVAL;
}
