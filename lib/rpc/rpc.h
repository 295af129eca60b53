/* SPDX-License-Identifier: MIT */
#pragma once

/* The rpc runtime: gRPC core hidden behind a small table-driven API.
 *
 *   RpcLoop   one completion-queue thread whose events are handed to the
 *             daemon's sd-event loop, so handlers and callbacks always run
 *             on the loop thread (the daemon's state has one owner).
 *   RpcServer listens on the socket systemd passes (LISTEN_FDS) or binds the
 *             path itself; dispatches calls by full method path through a
 *             method table; serves grpc.health.v1.Health; enforces message
 *             size and per-peer concurrency limits; drains on SIGTERM;
 *             sd_notify READY/STOPPING/WATCHDOG; optional exit-on-idle.
 *   RpcCall   one server-side call: peer credentials, metadata, deadline,
 *             cancellation, reply/stream/fail verbs.
 *   RpcClient a channel to a `unix:` target with blocking and asynchronous
 *             calls; errors come back as negative errno plus RpcStatus.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <protobuf-c/protobuf-c.h>
#include <systemd/sd-event.h>

#include "rpc-status.h"

typedef struct RpcLoop RpcLoop;
typedef struct RpcServer RpcServer;
typedef struct RpcCall RpcCall;
typedef struct RpcClient RpcClient;

typedef enum RpcKind {
        RPC_UNARY,
        RPC_SERVER_STREAMING,
        RPC_CLIENT_STREAMING,
        RPC_BIDI_STREAMING,
} RpcKind;

typedef struct RpcPeer {
        bool known;      /* false when the transport gave no credentials */
        pid_t pid;
        uid_t uid;
        gid_t gid;
} RpcPeer;

/* ---- loop ---------------------------------------------------------------- */

int rpc_loop_new(sd_event *event, RpcLoop **ret);
RpcLoop *rpc_loop_free(RpcLoop *l);
sd_event *rpc_loop_event(RpcLoop *l);

/* ---- server -------------------------------------------------------------- */

/* Typed handler for unary and server-streaming methods: `request` is decoded
 * already and is freed when the handler returns (copy what you keep). The
 * handler must end the call with rpc_call_reply()/rpc_call_fail() (unary) or
 * rpc_call_send()… rpc_call_finish() (streaming), now or later; to finish
 * later it takes a reference with rpc_call_ref(). */
typedef void (*RpcHandler)(RpcCall *call, const ProtobufCMessage *request, void *userdata);

/* Raw handler: gets the call before any message is read. Used by the
 * gateway, which forwards bytes without decoding; see rpc-raw.h. */
typedef void (*RpcRawHandler)(RpcCall *call, void *userdata);

typedef struct RpcMethod {
        const char *path;                                /* "/hostmesh.dns.v1.Dns/AddRecord" */
        RpcKind kind;                                    /* RPC_UNARY or RPC_SERVER_STREAMING */
        const ProtobufCMessageDescriptor *request;
        const ProtobufCMessageDescriptor *response;
        RpcHandler handler;
} RpcMethod;

#define RPC_SEND_QUEUE_DEFAULT ((size_t) 4 << 20)

typedef struct RpcServerOptions {
        const char *name;               /* part name: "dns"; names the default socket and health service */
        const char *socket_path;        /* bind this when systemd passes no socket; NULL → default path */
        size_t max_message_size;        /* 0 → 4 MiB */
        size_t max_send_queue;          /* 0 → RPC_SEND_QUEUE_DEFAULT: stream messages waiting for one slow reader */
        unsigned max_calls_per_peer;    /* 0 → 256 */
        uint64_t idle_exit_usec;        /* 0 → never exit on idle */
        uint64_t drain_usec;            /* 0 → 5 s bound for in-flight calls at shutdown */
        bool refuse_unknown_fields;     /* fields the request type lacks are INVALID_ARGUMENT, not ignored */
        const char *const *unknown_fields_allowed; /* "pkg.Message:N" passed over anyway; NULL-terminated */
} RpcServerOptions;

int rpc_server_new(RpcLoop *loop, const RpcServerOptions *opts, RpcServer **ret);
RpcServer *rpc_server_free(RpcServer *s);
int rpc_server_add_methods(RpcServer *s, const RpcMethod *methods, size_t n_methods, void *userdata);
/* Calls matching no method go here instead of getting UNIMPLEMENTED. */
void rpc_server_set_fallback(RpcServer *s, RpcRawHandler handler, void *userdata);
/* Runs first for every call; returning true means it took the call (and
 * must end it), false lets the method table dispatch it. The gateway uses
 * this to authenticate every call and to route calls it forwards. */
typedef bool (*RpcInterceptor)(RpcCall *call, void *userdata);
void rpc_server_set_interceptor(RpcServer *s, RpcInterceptor interceptor, void *userdata);
/* Health status of a service name ("" = the server as a whole); SERVING by
 * default once started. Watchers are notified. */
void rpc_server_set_health(RpcServer *s, const char *service, bool serving);
/* Takes the listening socket(s) and starts serving. Extra fds passed by
 * systemd (named with FileDescriptorName=) are left for the daemon and can
 * be fetched with rpc_server_take_fd(). */
int rpc_server_start(RpcServer *s);
int rpc_server_take_fd(RpcServer *s, const char *fd_name);
/* Adds a TCP listener ("0.0.0.0:8443", "[::]:8443", "127.0.0.1:0"), with TLS
 * when cert and key (PEM file paths) are given. Before rpc_server_start().
 * Callers on it have no peer credentials (RpcPeer.known is false): the
 * daemon authenticates them otherwise. Returns the bound port. Needs the
 * executable linked with TLS (target property HOSTMESH_GRPC_TLS). */
int rpc_server_add_tcp_listener(RpcServer *s, const char *address, const char *cert_path, const char *key_path);
/* Hands an accepted connection to gRPC (after rpc_server_start()); the
 * server owns fd. `peer` NULL: no credentials (authenticated otherwise). */
int rpc_server_add_connection(RpcServer *s, int fd, const RpcPeer *peer);
/* Sees every connection accepted on the unix socket first; returning true
 * means it took the fd (it may give it back with rpc_server_add_connection()).
 * The gateway sniffs for HTTP/1.1 this way. */
typedef bool (*RpcConnectionHook)(int fd, const RpcPeer *peer, void *userdata);
void rpc_server_set_connection_hook(RpcServer *s, RpcConnectionHook hook, void *userdata);
/* Asked before an idle exit: true keeps the daemon running (work that is
 * not a gRPC call, such as open HTTP connections). */
typedef bool (*RpcBusyCheck)(void *userdata);
void rpc_server_set_busy_check(RpcServer *s, RpcBusyCheck check, void *userdata);
/* Begins a graceful shutdown: stop accepting, refuse new calls with
 * UNAVAILABLE while in-flight calls finish (up to drain_usec), close the
 * connections, then exit the event loop with `code`. SIGTERM and SIGINT do
 * this by themselves. */
void rpc_server_shutdown(RpcServer *s, int code);
/* Counts and latency per method, in Prometheus text. */
struct Metrics *rpc_server_metrics(RpcServer *s);

/* ---- call ---------------------------------------------------------------- */

RpcCall *rpc_call_ref(RpcCall *c);
RpcCall *rpc_call_unref(RpcCall *c);
const RpcPeer *rpc_call_peer(RpcCall *c);
const char *rpc_call_method(RpcCall *c);
/* First value of a metadata key (lower case), NULL when absent. */
const char *rpc_call_metadata(RpcCall *c, const char *key);
/* Remaining time before the caller's deadline, UINT64_MAX when none. */
uint64_t rpc_call_remaining_usec(RpcCall *c);
bool rpc_call_cancelled(RpcCall *c);
/* Called on the loop when the client cancels or the deadline passes. */
void rpc_call_on_cancel(RpcCall *c, void (*cb)(RpcCall *c, void *userdata), void *userdata);

/* Unary: sends `response` and status OK. */
int rpc_call_reply(RpcCall *c, const ProtobufCMessage *response);
/* Streaming: queues one message (sent in order, one at a time). A reader
 * that falls more than max_send_queue behind (what the queued messages cost
 * in memory) has its call ended with RESOURCE_EXHAUSTED, the queue dropped,
 * and the on_cancel callback run as for a cancellation; this returns
 * -ENOBUFS then. */
int rpc_call_send(RpcCall *c, const ProtobufCMessage *message);
/* Ends the call with a status; messages queued before are sent first. */
int rpc_call_finish(RpcCall *c, RpcCode code, const char *message);
int rpc_call_fail(RpcCall *c, RpcCode code, const char *format, ...) __attribute__((format(printf, 3, 4)));
/* Maps the negative errno through rpc_code_from_errno(); the message should
 * say what failed and what to do. */
int rpc_call_fail_errno(RpcCall *c, int error, const char *format, ...) __attribute__((format(printf, 3, 4)));

/* ---- client -------------------------------------------------------------- */

typedef struct RpcStatus {
        RpcCode code;
        char *message;  /* owned; rpc_status_done() frees it */
} RpcStatus;
void rpc_status_done(RpcStatus *s);

/* target: "unix:/path" or "host:port". `loop` may be NULL for blocking use
 * only (CLIs, tests); asynchronous calls need it. */
int rpc_client_new(RpcLoop *loop, const char *target, RpcClient **ret);
RpcClient *rpc_client_free(RpcClient *c);

/* Metadata sent with a call: NULL-terminated key, value, key, value, … */
typedef const char *const *RpcMetadata;

/* Blocking unary call. Returns 0 on OK; otherwise a negative errno from
 * rpc_errno_from_code() with *ret_status filled (when not NULL).
 * *ret_response is freed with protobuf_c_message_free_unpacked(). */
int rpc_client_call(RpcClient *c, const char *method, RpcMetadata metadata, const ProtobufCMessage *request,
                    const ProtobufCMessageDescriptor *response_type, uint64_t timeout_usec,
                    ProtobufCMessage **ret_response, RpcStatus *ret_status);

/* Blocking server-streaming call: on_message runs for each message (the
 * message is freed after it returns); a negative return cancels the call
 * and is returned. */
typedef int (*RpcStreamCallback)(const ProtobufCMessage *message, void *userdata);
int rpc_client_call_stream(RpcClient *c, const char *method, RpcMetadata metadata,
                           const ProtobufCMessage *request, const ProtobufCMessageDescriptor *response_type,
                           uint64_t timeout_usec, RpcStreamCallback on_message, void *userdata,
                           RpcStatus *ret_status);

/* Asynchronous unary call; `done` runs on the loop with r = 0 or a negative
 * errno, the response (NULL unless r == 0; freed after done returns) and the
 * status. */
typedef void (*RpcDoneCallback)(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata);
int rpc_client_call_async(RpcClient *c, const char *method, RpcMetadata metadata, const ProtobufCMessage *request,
                          const ProtobufCMessageDescriptor *response_type, uint64_t timeout_usec,
                          RpcDoneCallback done, void *userdata);
