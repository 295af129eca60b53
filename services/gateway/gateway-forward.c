/* SPDX-License-Identifier: MIT */
/* Forwarding proceeds as four independent pumps on the loop thread:
 *
 *   caller → backend   server RECV_MESSAGE → client SEND_MESSAGE → repeat;
 *                      end of stream → client SEND_CLOSE_FROM_CLIENT
 *   backend → caller   client RECV_MESSAGE → server SEND_MESSAGE → repeat
 *   headers            client RECV_INITIAL_METADATA, sent to the caller with
 *                      the first message or with the status
 *   status             client RECV_STATUS_ON_CLIENT, sent to the caller once
 *                      every message before it has been sent
 *
 * The pumps' completions run directly on the completion-queue thread
 * (rpc_batch_inline), not on the loop: a forwarded call then costs no
 * thread hops beyond gRPC's own. Everything they touch lives in the Forward
 * and is guarded by its lock; what belongs to the loop (the caller's RpcCall
 * reference) is released there, through rpc_loop_post().
 *
 * The backend call is created with the caller's call as parent, so gRPC
 * itself propagates the deadline and the caller's cancellation. A backend
 * that answers with a status only delivers it before its initial metadata;
 * holding the metadata until the first message or the status keeps that
 * case correct. */

#include <grpc/grpc.h>
#include <grpc/support/alloc.h>
#include <pthread.h>

#include "gateway-auth.h"
#include "gateway-bearer.h"
#include "gateway-forward.h"
#include "gateway-manager.h"
#include "log.h"
#include "rpc-raw.h"

typedef struct Forward {
        unsigned n_ref;                 /* atomic */
        pthread_mutex_t lock;
        Manager *manager;
        Backend *backend;
        RpcCall *scall;                 /* the caller's call (server side) */
        grpc_call *server;
        grpc_call *client;              /* the call to the backend */

        grpc_metadata *send_md;
        size_t n_send_md;
        grpc_slice peer_values[5];

        grpc_metadata_array client_initial_md, client_trailing_md;
        bool client_initial_md_received;
        bool server_initial_md_sent;
        grpc_status_code client_status;
        grpc_slice client_details;
        bool status_received;
        bool status_sent;

        grpc_byte_buffer *up_buffer;    /* caller → backend */
        grpc_byte_buffer *down_buffer;  /* backend → caller */
        grpc_byte_buffer *down_received; /* RECV_MESSAGE target; gRPC writes it before the
                                          * completion reaches the loop, so only
                                          * on_down_recv() may look at it */
        grpc_byte_buffer *down_pending; /* received before the backend's headers */
        bool down_sending;
        bool down_done;
        bool failed;
} Forward;

static Forward *forward_ref(Forward *f) {
        __atomic_add_fetch(&f->n_ref, 1, __ATOMIC_SEQ_CST);
        return f;
}

/* The last part of freeing runs on the loop, which owns the caller's call. */
static void forward_free_on_loop(void *userdata, bool ok) {
        Forward *f = userdata;

        (void) ok;
        rpc_call_on_cancel(f->scall, NULL, NULL);
        rpc_call_unref(f->scall);
        pthread_mutex_destroy(&f->lock);
        free(f);
}

static void forward_unref(Forward *f) {
        if (__atomic_sub_fetch(&f->n_ref, 1, __ATOMIC_SEQ_CST) > 0)
                return;
        /* on_caller_cancelled() may still look at the client call until the
         * loop clears it in forward_free_on_loop(). */
        pthread_mutex_lock(&f->lock);
        if (f->client)
                grpc_call_unref(f->client);
        f->client = NULL;
        pthread_mutex_unlock(&f->lock);
        for (size_t i = 0; i < f->n_send_md; i++)
                grpc_slice_unref(f->send_md[i].key);
        for (size_t i = 0; i < ELEMENTSOF(f->peer_values); i++)
                grpc_slice_unref(f->peer_values[i]);
        free(f->send_md);
        grpc_metadata_array_destroy(&f->client_initial_md);
        grpc_metadata_array_destroy(&f->client_trailing_md);
        grpc_slice_unref(f->client_details);
        if (f->up_buffer)
                grpc_byte_buffer_destroy(f->up_buffer);
        if (f->down_buffer)
                grpc_byte_buffer_destroy(f->down_buffer);
        if (f->down_pending)
                grpc_byte_buffer_destroy(f->down_pending);
        if (f->down_received)
                grpc_byte_buffer_destroy(f->down_received);
        if (rpc_loop_post(f->manager->rpc_loop, forward_free_on_loop, f) < 0)
                log_error("Out of memory releasing a forwarded call, leaking it.");
}

static int forward_batch(Forward *f, grpc_call *call, const grpc_op *ops, size_t n, RpcBatchCallback cb) {
        int r = rpc_batch_inline(call, ops, n, cb, forward_ref(f));
        if (r < 0)
                forward_unref(f);
        return r;
}

/* Every completion callback runs on the completion-queue thread with the
 * Forward locked and referenced: NAME() wraps NAME_locked(). */
#define DEFINE_LOCKED_CALLBACK(name)                            \
        static void name##_locked(void *userdata, bool ok);     \
        static void name(void *userdata, bool ok) {             \
                Forward *f = forward_ref(userdata);             \
                pthread_mutex_lock(&f->lock);                   \
                name##_locked(f, ok);                           \
                pthread_mutex_unlock(&f->lock);                 \
                forward_unref(f);                               \
        }
DEFINE_LOCKED_CALLBACK(on_server_status_sent)
DEFINE_LOCKED_CALLBACK(on_down_sent)
DEFINE_LOCKED_CALLBACK(on_down_recv)
DEFINE_LOCKED_CALLBACK(on_client_initial_md)
DEFINE_LOCKED_CALLBACK(on_client_status)
DEFINE_LOCKED_CALLBACK(on_up_closed)
DEFINE_LOCKED_CALLBACK(on_up_sent)
DEFINE_LOCKED_CALLBACK(on_up_recv)

/* Metadata we set ourselves, or that gRPC manages: never taken from a caller. */
static bool metadata_key_reserved(grpc_slice key) {
        static const char *const prefixes[] = { "x-hostmesh-peer-", "x-hostmesh-subject", "x-hostmesh-tenant",
                                                "x-hostmesh-principal", "grpc-", ":" };
        static const char *const exact[] = { "user-agent", "te", "content-type", "host", "x-hostmesh-part" };
        size_t len = GRPC_SLICE_LENGTH(key);
        const char *p = (const char *) GRPC_SLICE_START_PTR(key);

        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                if (len >= strlen(prefixes[i]) && strncmp(p, prefixes[i], strlen(prefixes[i])) == 0)
                        return true;
        for (size_t i = 0; i < ELEMENTSOF(exact); i++)
                if (len == strlen(exact[i]) && strncmp(p, exact[i], len) == 0)
                        return true;
        return false;
}

static void forward_send_status(Forward *f);

static void on_server_status_sent_locked(void *userdata, bool ok) {
        Forward *f = userdata;
        (void) ok;
        forward_unref(f);
}

static void forward_fail(Forward *f, grpc_status_code code, const char *message) {
        if (f->status_sent)
                return;
        f->failed = true;
        f->client_status = code;
        grpc_slice_unref(f->client_details);
        f->client_details = grpc_slice_from_copied_string(message);
        f->status_received = true;
        f->down_done = true;
        if (f->client)
                grpc_call_cancel(f->client, NULL);
        forward_send_status(f);
}

/* Sends the backend's status to the caller once everything before it is out. */
static void forward_send_status(Forward *f) {
        grpc_op ops[2];
        size_t n = 0;
        grpc_slice details;
        char *msg = NULL;

        if (f->status_sent || !f->status_received || !f->down_done || f->down_sending)
                return;
        memset(ops, 0, sizeof(ops));
        if (!f->server_initial_md_sent) {
                ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
                ops[n].data.send_initial_metadata.count = f->client_initial_md.count;
                ops[n].data.send_initial_metadata.metadata = f->client_initial_md.metadata;
                n++;
                f->server_initial_md_sent = true;
        }
        /* A backend we cannot reach gets named, so the caller knows which part is down. */
        if (f->client_status == GRPC_STATUS_UNAVAILABLE && !f->failed) {
                const char *orig = (const char *) GRPC_SLICE_START_PTR(f->client_details);
                int len = (int) GRPC_SLICE_LENGTH(f->client_details);
                if (asprintf(&msg, "hostmesh-%sd (%s) is unavailable: %.*s", f->backend->part ? f->backend->part : "backend",
                             f->backend->target, len, orig) < 0)
                        msg = NULL;
        }
        details = msg ? grpc_slice_from_copied_string(msg) : grpc_slice_ref(f->client_details);
        free(msg);
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = f->client_status;
        ops[n].data.send_status_from_server.status_details = &details;
        ops[n].data.send_status_from_server.trailing_metadata_count = f->client_trailing_md.count;
        ops[n].data.send_status_from_server.trailing_metadata = f->client_trailing_md.metadata;
        n++;
        f->status_sent = true;
        rpc_call_mark_finished(f->scall, (RpcCode) f->client_status);
        if (forward_batch(f, f->server, ops, n, on_server_status_sent) < 0)
                log_error("Failed to send the status of %s to the caller.", rpc_call_method(f->scall));
        grpc_slice_unref(details);
}

/* ---- backend → caller --------------------------------------------------- */

static void down_recv(Forward *f);

static void on_down_sent_locked(void *userdata, bool ok) {
        Forward *f = userdata;

        f->down_sending = false;
        if (f->down_buffer) {
                grpc_byte_buffer_destroy(f->down_buffer);
                f->down_buffer = NULL;
        }
        if (!ok) {
                /* The caller is gone: stop the backend too. */
                f->down_done = true;
                if (f->client)
                        grpc_call_cancel(f->client, NULL);
        } else if (!f->down_done)
                down_recv(f);
        forward_send_status(f);
        forward_unref(f);
}

static void down_send(Forward *f, grpc_byte_buffer *b) {
        grpc_op ops[2];
        size_t n = 0;

        memset(ops, 0, sizeof(ops));
        if (!f->server_initial_md_sent) {
                ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
                ops[n].data.send_initial_metadata.count = f->client_initial_md.count;
                ops[n].data.send_initial_metadata.metadata = f->client_initial_md.metadata;
                n++;
                f->server_initial_md_sent = true;
        }
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = b;
        n++;
        f->down_buffer = b;
        f->down_sending = true;
        if (forward_batch(f, f->server, ops, n, on_down_sent) < 0) {
                f->down_sending = false;
                forward_fail(f, GRPC_STATUS_INTERNAL, "gateway: failed to forward a message to the caller");
        }
}

static void on_down_recv_locked(void *userdata, bool ok) {
        Forward *f = userdata;
        grpc_byte_buffer *b = TAKE_PTR(f->down_received);

        if (!ok || !b) {
                if (b)
                        grpc_byte_buffer_destroy(b);
                f->down_done = true;
                forward_send_status(f);
        } else if (!f->client_initial_md_received)
                f->down_pending = b; /* wait for the headers; on_client_initial_md() sends it */
        else
                down_send(f, b);
        forward_unref(f);
}

static void down_recv(Forward *f) {
        grpc_op op = { .op = GRPC_OP_RECV_MESSAGE };

        op.data.recv_message.recv_message = &f->down_received;
        if (forward_batch(f, f->client, &op, 1, on_down_recv) < 0) {
                f->down_done = true;
                forward_send_status(f);
        }
}

static void on_client_initial_md_locked(void *userdata, bool ok) {
        Forward *f = userdata;

        (void) ok;
        f->client_initial_md_received = true;
        if (f->down_pending)
                down_send(f, TAKE_PTR(f->down_pending));
        forward_unref(f);
}

static void on_client_status_locked(void *userdata, bool ok) {
        Forward *f = userdata;

        (void) ok;
        f->status_received = true;
        forward_send_status(f);
        forward_unref(f);
}

/* ---- caller → backend --------------------------------------------------- */

static void up_recv(Forward *f);

static void on_up_closed_locked(void *userdata, bool ok) {
        (void) ok;
        forward_unref(userdata);
}

static void on_up_sent_locked(void *userdata, bool ok) {
        Forward *f = userdata;

        if (f->up_buffer) {
                grpc_byte_buffer_destroy(f->up_buffer);
                f->up_buffer = NULL;
        }
        /* A failed send means the backend call is over; its status says why. */
        if (ok && !f->status_sent)
                up_recv(f);
        forward_unref(f);
}

static void on_up_recv_locked(void *userdata, bool ok) {
        Forward *f = userdata;

        if (!ok || f->status_sent) {
                if (f->up_buffer) {
                        grpc_byte_buffer_destroy(f->up_buffer);
                        f->up_buffer = NULL;
                }
        } else if (f->up_buffer) {
                grpc_op op = { .op = GRPC_OP_SEND_MESSAGE };
                op.data.send_message.send_message = f->up_buffer;
                (void) forward_batch(f, f->client, &op, 1, on_up_sent);
        } else {
                grpc_op op = { .op = GRPC_OP_SEND_CLOSE_FROM_CLIENT };
                (void) forward_batch(f, f->client, &op, 1, on_up_closed);
        }
        forward_unref(f);
}

static void up_recv(Forward *f) {
        grpc_op op = { .op = GRPC_OP_RECV_MESSAGE };

        op.data.recv_message.recv_message = &f->up_buffer;
        (void) forward_batch(f, f->server, &op, 1, on_up_recv);
}

/* ---- start -------------------------------------------------------------- */

static void on_caller_cancelled(RpcCall *c, void *userdata) {
        Forward *f = userdata;
        (void) c;
        pthread_mutex_lock(&f->lock);
        if (f->client && !f->status_sent)
                grpc_call_cancel(f->client, NULL);
        pthread_mutex_unlock(&f->lock);
}

static int forward_build_metadata(Forward *f, const char *subject, const char *tenant) {
        const grpc_metadata_array *in = rpc_call_initial_metadata(f->scall);
        const RpcPeer *peer = rpc_call_peer(f->scall);
        static const char *const peer_keys[] = { "x-hostmesh-peer-uid", "x-hostmesh-peer-gid", "x-hostmesh-peer-pid" };
        char buf[32];

        f->send_md = calloc(in->count + ELEMENTSOF(f->peer_values), sizeof(grpc_metadata));
        if (!f->send_md)
                return -ENOMEM;
        for (size_t i = 0; i < in->count; i++) {
                if (metadata_key_reserved(in->metadata[i].key))
                        continue;
                f->send_md[f->n_send_md].key = grpc_slice_ref(in->metadata[i].key);
                f->send_md[f->n_send_md].value = in->metadata[i].value; /* lives as long as scall */
                f->n_send_md++;
        }
        /* Who the caller is, as the gateway saw it; backends trust these only
         * from the gateway (see identity), and callers cannot set them. */
        if (peer->known) {
                unsigned long v[3] = { peer->uid, peer->gid, (unsigned long) peer->pid };
                for (size_t i = 0; i < ELEMENTSOF(peer_keys); i++) {
                        snprintf(buf, sizeof(buf), "%lu", v[i]);
                        f->peer_values[i] = grpc_slice_from_copied_string(buf);
                        f->send_md[f->n_send_md].key = grpc_slice_from_static_string(peer_keys[i]);
                        f->send_md[f->n_send_md].value = f->peer_values[i];
                        f->n_send_md++;
                }
        }
        if (subject) {
                f->peer_values[3] = grpc_slice_from_copied_string(subject);
                f->send_md[f->n_send_md].key = grpc_slice_from_static_string("x-hostmesh-subject");
                f->send_md[f->n_send_md].value = f->peer_values[3];
                f->n_send_md++;
        }
        if (tenant) {
                f->peer_values[4] = grpc_slice_from_copied_string(tenant);
                f->send_md[f->n_send_md].key = grpc_slice_from_static_string("x-hostmesh-tenant");
                f->send_md[f->n_send_md].value = f->peer_values[4];
                f->n_send_md++;
        }
        return 0;
}

void gateway_forward(Manager *m, RpcCall *call, Backend *b, const char *subject, const char *tenant) {
        RpcClient *client = backend_client(m, b);
        grpc_op ops[2];
        Forward *f;
        grpc_slice method;
        gpr_timespec deadline;

        if (!client) {
                rpc_call_fail(call, RPC_INTERNAL, "gateway: cannot create a channel to %s.", b->target);
                return;
        }
        f = calloc(1, sizeof(*f));
        if (!f) {
                rpc_call_fail(call, RPC_RESOURCE_EXHAUSTED, "gateway: out of memory.");
                return;
        }
        f->n_ref = 1;
        pthread_mutex_init(&f->lock, NULL);
        /* Held until set-up is complete: completions may arrive before. */
        pthread_mutex_lock(&f->lock);
        f->manager = m;
        f->backend = b;
        f->scall = rpc_call_ref(call);
        f->server = rpc_call_grpc(call);
        f->client_details = grpc_empty_slice();
        grpc_metadata_array_init(&f->client_initial_md);
        grpc_metadata_array_init(&f->client_trailing_md);
        for (size_t i = 0; i < ELEMENTSOF(f->peer_values); i++)
                f->peer_values[i] = grpc_empty_slice();

        if (forward_build_metadata(f, subject, tenant) < 0) {
                rpc_call_fail(call, RPC_RESOURCE_EXHAUSTED, "gateway: out of memory.");
                goto finish;
        }

        deadline = rpc_call_deadline(call);
        if (m->config.backend_timeout_usec > 0 &&
            gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
                deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                        gpr_time_from_micros((int64_t) m->config.backend_timeout_usec, GPR_TIMESPAN));
        method = grpc_slice_from_copied_string(rpc_call_method(call));
        f->client = grpc_channel_create_call(rpc_client_channel(client), f->server,
                                             GRPC_PROPAGATE_DEADLINE | GRPC_PROPAGATE_CANCELLATION,
                                             rpc_loop_cq(m->rpc_loop), method, NULL, deadline, NULL);
        grpc_slice_unref(method);
        if (!f->client) {
                rpc_call_fail(call, RPC_INTERNAL, "gateway: failed to create the backend call.");
                goto finish;
        }

        /* gRPC propagates the caller's cancellation to the backend call by
         * itself (parent call); cancelling explicitly as well costs nothing.
         * The callback is cleared when the Forward goes away. */
        rpc_call_on_cancel(call, on_caller_cancelled, f);

        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].data.send_initial_metadata.count = f->n_send_md;
        ops[0].data.send_initial_metadata.metadata = f->send_md;
        ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[1].data.recv_initial_metadata.recv_initial_metadata = &f->client_initial_md;
        if (forward_batch(f, f->client, ops, 2, on_client_initial_md) < 0) {
                forward_fail(f, GRPC_STATUS_INTERNAL, "gateway: failed to start the backend call");
                goto finish;
        }

        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[0].data.recv_status_on_client.status = &f->client_status;
        ops[0].data.recv_status_on_client.status_details = &f->client_details;
        ops[0].data.recv_status_on_client.trailing_metadata = &f->client_trailing_md;
        if (forward_batch(f, f->client, ops, 1, on_client_status) < 0) {
                forward_fail(f, GRPC_STATUS_INTERNAL, "gateway: failed to start the backend call");
                goto finish;
        }

        up_recv(f);
        down_recv(f);
finish:
        pthread_mutex_unlock(&f->lock);
        forward_unref(f);
}

/* Where a call goes once its caller is known; true when the call was taken. */
static bool route_call(Manager *m, RpcCall *call, const char *subject, const char *tenant) {
        const char *method = rpc_call_method(call);
        Backend *b;

        /* Health and metrics exist in every part: x-hostmesh-part picks one. */
        if (strncmp(method, "/grpc.health.v1.Health/", 23) == 0 ||
            strncmp(method, "/hostmesh.common.v1.Metrics/", 28) == 0) {
                const char *part = rpc_call_metadata(call, "x-hostmesh-part");
                if (!part || streq(part, "gateway"))
                        return false;
                b = manager_find_backend(m, part);
                if (!b) {
                        rpc_call_fail(call, RPC_NOT_FOUND, "No hostmesh part named '%s'.", part);
                        return true;
                }
                gateway_forward(m, call, b, subject, tenant);
                return true;
        }
        if (strncmp(method, "/hostmesh.gateway.v1.", 21) == 0)
                return false;

        b = manager_route(m, method);
        if (!b) {
                rpc_call_fail(call, RPC_UNIMPLEMENTED, "No hostmesh service routes %s; see 'ListRoutes' or the "
                              "gateway's routes config.", method);
                return true;
        }
        gateway_forward(m, call, b, subject, tenant);
        return true;
}

static void release_call(void *userdata) {
        rpc_call_unref(userdata);
}

static void bearer_decided(Manager *m, RpcCall *call, int r, const char *message, json_t *claims) {
        const char *method = rpc_call_method(call);
        json_t *sub, *tenant;

        if (rpc_call_cancelled(call))
                return;
        if (r < 0) {
                /* Every refusal of the token itself is UNAUTHENTICATED, whatever
                 * its reason; only "cannot check now" keeps its own code. */
                RpcCode code = rpc_code_from_errno(r);
                if (code != RPC_UNAVAILABLE && code != RPC_FAILED_PRECONDITION && code != RPC_RESOURCE_EXHAUSTED)
                        code = RPC_UNAUTHENTICATED;
                rpc_call_fail(call, code, "%s", message);
                return;
        }
        sub = json_object_get(claims, "sub");
        tenant = json_object_get(claims, "tenant_id");
        if (!json_is_string(sub) || !*json_string_value(sub)) {
                rpc_call_fail(call, RPC_UNAUTHENTICATED, "Bearer token has no subject.");
                return;
        }
        /* Authenticated is not authorized: a remote caller reaches the public
         * API, and administrative methods only where the operator said so. */
        if (strncmp(method, "/hostmesh.gateway.v1.", 21) != 0 && gateway_auth_bearer_method(m, method) < 0) {
                rpc_call_fail(call, RPC_PERMISSION_DENIED,
                              "%s is not part of the public API (%s) nor in [gateway] bearer_allow: bearer-token "
                              "callers such as %s may not call it.", method, gateway_auth_public_api,
                              json_string_value(sub));
                return;
        }
        if (!route_call(m, call, json_string_value(sub), json_is_string(tenant) ? json_string_value(tenant) : NULL))
                /* The gateway's own methods are for local callers. */
                rpc_call_fail(call, RPC_PERMISSION_DENIED, "%s is only served on the gateway's unix socket.", method);
}

static void on_bearer_done(Manager *m, int r, const char *message, json_t *claims, void *userdata) {
        RpcCall *call = userdata;
        bearer_decided(m, call, r, message, claims);
        rpc_call_unref(call);
}

bool gateway_intercept(RpcCall *call, void *userdata) {
        Manager *m = userdata;
        const char *method = rpc_call_method(call);
        const RpcPeer *peer = rpc_call_peer(call);

        if (!peer->known) {
                /* A TCP caller: health of the gateway itself is open (load
                 * balancers), everything else needs a valid bearer token. */
                if (streq(method, "/grpc.health.v1.Health/Check") && !rpc_call_metadata(call, "x-hostmesh-part"))
                        return false;
                gateway_bearer_authenticate(m->bearer, rpc_call_metadata(call, "authorization"), on_bearer_done,
                                            release_call, rpc_call_ref(call));
                return true;
        }
        if (gateway_auth_check(m, peer) < 0) {
                rpc_call_fail(call, RPC_PERMISSION_DENIED,
                              "uid %u may not use hostmesh; add the user to the 'hostmesh' group or to "
                              "allow_users in gateway.conf.", (unsigned) peer->uid);
                return true;
        }
        return route_call(m, call, NULL, NULL);
}
