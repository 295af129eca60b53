/* SPDX-License-Identifier: MIT */
/* The client side: a channel per target, blocking calls on a private
 * completion queue (for CLIs and tests) and asynchronous calls whose
 * completion runs on the daemon's loop. */

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "macro.h"
#include "rpc-internal.h"
#include "rpc-raw.h"

struct RpcClient {
        RpcLoop *loop;
        grpc_channel *channel;
        char *target;
};

void rpc_status_done(RpcStatus *s) {
        if (!s)
                return;
        free(s->message);
        s->message = NULL;
}

int rpc_client_new(RpcLoop *loop, const char *target, RpcClient **ret) {
        grpc_channel_credentials *creds;
        RpcClient *c;
        /* Reconnect quickly after a backend restarts: the default backoff
         * (1 s growing to 2 min) would turn a restart into minutes of errors.
         * The minimum backoff is left alone on purpose: gRPC also uses it as
         * the connect timeout, and a socket-activated daemon needs tens of
         * milliseconds (more on a loaded host) before it answers its first
         * connection. */
        grpc_arg args[] = {
                { .type = GRPC_ARG_INTEGER, .key = (char *) GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, .value.integer = 100 },
                { .type = GRPC_ARG_INTEGER, .key = (char *) GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, .value.integer = 1000 },
                { .type = GRPC_ARG_INTEGER, .key = (char *) GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = 64 << 20 },
                { .type = GRPC_ARG_INTEGER, .key = (char *) GRPC_ARG_ENABLE_RETRIES, .value.integer = 0 },
        };
        grpc_channel_args cargs = { .num_args = ELEMENTSOF(args), .args = args };

        if (isempty(target))
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->target = strdup(target);
        if (!c->target) {
                free(c);
                return -ENOMEM;
        }
        if (!loop)
                grpc_init();
        c->loop = loop;
        creds = grpc_insecure_credentials_create();
        c->channel = grpc_channel_create(target, creds, &cargs);
        grpc_channel_credentials_release(creds);
        if (!c->channel) {
                free(c->target);
                free(c);
                return -EINVAL;
        }
        *ret = c;
        return 0;
}

RpcClient *rpc_client_free(RpcClient *c) {
        if (!c)
                return NULL;
        grpc_channel_destroy(c->channel);
        if (!c->loop)
                grpc_shutdown();
        free(c->target);
        free(c);
        return NULL;
}

grpc_channel *rpc_client_channel(RpcClient *c) {
        return c->channel;
}

static grpc_metadata *metadata_build(RpcMetadata md, size_t *ret_n) {
        size_t n = 0;
        grpc_metadata *m;

        for (size_t i = 0; md && md[i] && md[i + 1]; i += 2)
                n++;
        *ret_n = n;
        if (n == 0)
                return NULL;
        m = calloc(n, sizeof(*m));
        if (!m)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                m[i].key = grpc_slice_from_copied_string(md[2 * i]);
                m[i].value = grpc_slice_from_copied_string(md[2 * i + 1]);
        }
        return m;
}

static void metadata_free(grpc_metadata *m, size_t n) {
        for (size_t i = 0; i < n; i++) {
                grpc_slice_unref(m[i].key);
                grpc_slice_unref(m[i].value);
        }
        free(m);
}

static int status_fill(grpc_status_code code, grpc_slice details, RpcStatus *ret) {
        if (ret) {
                ret->code = (RpcCode) code;
                ret->message = rpc_slice_to_string(details);
        }
        return rpc_errno_from_code((RpcCode) code);
}

/* What every call needs: the outgoing half, then reading. */
typedef struct CallCtx {
        grpc_call *call;
        grpc_metadata *md;
        size_t n_md;
        grpc_byte_buffer *request;
        grpc_metadata_array initial_md, trailing_md;
        grpc_status_code code;
        grpc_slice details;
        grpc_byte_buffer *response;
} CallCtx;

static int call_ctx_init(CallCtx *x, RpcClient *c, grpc_completion_queue *cq, const char *method,
                         RpcMetadata metadata, const ProtobufCMessage *request, uint64_t timeout_usec) {
        grpc_slice m = grpc_slice_from_copied_string(method);

        memset(x, 0, sizeof(*x));
        x->md = metadata_build(metadata, &x->n_md);
        if (x->n_md > 0 && !x->md)
                return -ENOMEM;
        x->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                           rpc_deadline_from_timeout(timeout_usec), NULL);
        grpc_slice_unref(m);
        if (!x->call)
                return -ENOMEM;
        x->request = rpc_pack(request);
        grpc_metadata_array_init(&x->initial_md);
        grpc_metadata_array_init(&x->trailing_md);
        x->details = grpc_empty_slice();
        return 0;
}

static void call_ctx_done(CallCtx *x) {
        if (x->call)
                grpc_call_unref(x->call);
        metadata_free(x->md, x->n_md);
        if (x->request)
                grpc_byte_buffer_destroy(x->request);
        if (x->response)
                grpc_byte_buffer_destroy(x->response);
        grpc_metadata_array_destroy(&x->initial_md);
        grpc_metadata_array_destroy(&x->trailing_md);
        grpc_slice_unref(x->details);
}

/* Six ops: send metadata + request + half-close, receive metadata + one
 * message + status. With `with_response` false the receive of the message
 * is left to the caller (streaming). */
static size_t call_ops_fill(CallCtx *x, grpc_op *ops, bool with_response, bool with_status) {
        size_t n = 0;

        memset(ops, 0, 6 * sizeof(grpc_op));
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = x->n_md;
        ops[n].data.send_initial_metadata.metadata = x->md;
        n++;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = x->request;
        n++;
        ops[n].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        n++;
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &x->initial_md;
        n++;
        if (with_response) {
                ops[n].op = GRPC_OP_RECV_MESSAGE;
                ops[n].data.recv_message.recv_message = &x->response;
                n++;
        }
        if (with_status) {
                ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
                ops[n].data.recv_status_on_client.status = &x->code;
                ops[n].data.recv_status_on_client.status_details = &x->details;
                ops[n].data.recv_status_on_client.trailing_metadata = &x->trailing_md;
                n++;
        }
        return n;
}

static int call_ctx_result(CallCtx *x, const ProtobufCMessageDescriptor *response_type, ProtobufCMessage **ret,
                           RpcStatus *ret_status) {
        int r;

        if (x->code != GRPC_STATUS_OK)
                return status_fill(x->code, x->details, ret_status);
        if (!x->response) {
                if (ret_status) {
                        ret_status->code = RPC_INTERNAL;
                        ret_status->message = strdup("The server sent no response message.");
                }
                return -EBADMSG;
        }
        r = rpc_unpack(x->response, response_type, ret);
        if (r < 0 && ret_status) {
                ret_status->code = RPC_INTERNAL;
                ret_status->message = strdup("The server's response could not be decoded.");
        }
        return r;
}

int rpc_client_call(RpcClient *c, const char *method, RpcMetadata metadata, const ProtobufCMessage *request,
                    const ProtobufCMessageDescriptor *response_type, uint64_t timeout_usec,
                    ProtobufCMessage **ret_response, RpcStatus *ret_status) {
        grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
        grpc_op ops[6];
        CallCtx x;
        size_t n;
        int r;

        if (ret_status)
                *ret_status = (RpcStatus){};
        r = call_ctx_init(&x, c, cq, method, metadata, request, timeout_usec);
        if (r < 0)
                goto finish;
        n = call_ops_fill(&x, ops, true, true);
        if (grpc_call_start_batch(x.call, ops, n, &x, NULL) != GRPC_CALL_OK) {
                r = -EPROTO;
                goto finish;
        }
        grpc_completion_queue_pluck(cq, &x, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        r = call_ctx_result(&x, response_type, ret_response, ret_status);

finish:
        call_ctx_done(&x);
        grpc_completion_queue_shutdown(cq);
        while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_completion_queue_destroy(cq);
        return r;
}

int rpc_client_call_stream(RpcClient *c, const char *method, RpcMetadata metadata,
                           const ProtobufCMessage *request, const ProtobufCMessageDescriptor *response_type,
                           uint64_t timeout_usec, RpcStreamCallback on_message, void *userdata,
                           RpcStatus *ret_status) {
        grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
        grpc_op ops[6];
        CallCtx x;
        size_t n;
        int r, cb_error = 0;

        if (ret_status)
                *ret_status = (RpcStatus){};
        r = call_ctx_init(&x, c, cq, method, metadata, request, timeout_usec);
        if (r < 0)
                goto finish;
        n = call_ops_fill(&x, ops, false, false);
        if (grpc_call_start_batch(x.call, ops, n, &x, NULL) != GRPC_CALL_OK) {
                r = -EPROTO;
                goto finish;
        }
        grpc_completion_queue_pluck(cq, &x, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

        for (;;) {
                grpc_op op = { .op = GRPC_OP_RECV_MESSAGE };
                grpc_byte_buffer *b = NULL;
                ProtobufCMessage *m;
                grpc_event ev;

                op.data.recv_message.recv_message = &b;
                if (grpc_call_start_batch(x.call, &op, 1, &b, NULL) != GRPC_CALL_OK)
                        break;
                ev = grpc_completion_queue_pluck(cq, &b, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
                if (!ev.success || !b)
                        break;
                r = rpc_unpack(b, response_type, &m);
                grpc_byte_buffer_destroy(b);
                if (r < 0) {
                        cb_error = r;
                        grpc_call_cancel_with_status(x.call, GRPC_STATUS_INTERNAL, "undecodable message", NULL);
                        break;
                }
                r = on_message(m, userdata);
                protobuf_c_message_free_unpacked(m, NULL);
                if (r < 0) {
                        cb_error = r;
                        grpc_call_cancel(x.call, NULL);
                        break;
                }
        }

        {
                grpc_op op = { .op = GRPC_OP_RECV_STATUS_ON_CLIENT };
                op.data.recv_status_on_client.status = &x.code;
                op.data.recv_status_on_client.status_details = &x.details;
                op.data.recv_status_on_client.trailing_metadata = &x.trailing_md;
                if (grpc_call_start_batch(x.call, &op, 1, &x.code, NULL) == GRPC_CALL_OK)
                        grpc_completion_queue_pluck(cq, &x.code, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        }
        if (cb_error < 0) {
                r = cb_error;
                if (ret_status && !ret_status->message) {
                        ret_status->code = rpc_code_from_errno(cb_error);
                        ret_status->message = strdup("Stopped by the client.");
                }
        } else
                r = x.code == GRPC_STATUS_OK ? 0 : status_fill(x.code, x.details, ret_status);

finish:
        call_ctx_done(&x);
        grpc_completion_queue_shutdown(cq);
        while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_completion_queue_destroy(cq);
        return r;
}

typedef struct AsyncCall {
        RpcTag tag;
        CallCtx x;
        const ProtobufCMessageDescriptor *response_type;
        RpcDoneCallback done;
        void *userdata;
} AsyncCall;

static void on_async_done(RpcTag *t, bool ok) {
        AsyncCall *a = (AsyncCall *) t;
        ProtobufCMessage *response = NULL;
        RpcStatus status = {};
        int r;

        if (!ok) {
                status.code = RPC_INTERNAL;
                status.message = strdup("The call failed inside gRPC.");
                r = -EIO;
        } else
                r = call_ctx_result(&a->x, a->response_type, &response, &status);
        a->done(r, r >= 0 ? response : NULL, &status, a->userdata);
        if (response)
                protobuf_c_message_free_unpacked(response, NULL);
        rpc_status_done(&status);
        call_ctx_done(&a->x);
        free(a);
}

int rpc_client_call_async(RpcClient *c, const char *method, RpcMetadata metadata, const ProtobufCMessage *request,
                          const ProtobufCMessageDescriptor *response_type, uint64_t timeout_usec,
                          RpcDoneCallback done, void *userdata) {
        AsyncCall *a;
        grpc_op ops[6];
        size_t n;
        int r;

        if (!c->loop)
                return -EINVAL;
        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->tag.fn = on_async_done;
        a->response_type = response_type;
        a->done = done;
        a->userdata = userdata;
        r = call_ctx_init(&a->x, c, rpc_loop_cq(c->loop), method, metadata, request, timeout_usec);
        if (r < 0) {
                call_ctx_done(&a->x);
                free(a);
                return r;
        }
        n = call_ops_fill(&a->x, ops, true, true);
        if (grpc_call_start_batch(a->x.call, ops, n, &a->tag, NULL) != GRPC_CALL_OK) {
                call_ctx_done(&a->x);
                free(a);
                return -EPROTO;
        }
        return 0;
}
