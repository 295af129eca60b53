/* SPDX-License-Identifier: MIT */
/* The gRPC server side of the rpc runtime.
 *
 * Connections: we own the accept loop (on the systemd-passed socket or one we
 * bind), read SO_PEERCRED, and hand each connection to gRPC with
 * grpc_server_add_channel_from_fd(). gRPC then reports the peer of every call
 * as "fd:N", which we map back to the credentials read at accept time.
 *
 * Calls: no method is registered with gRPC; a pool of generic
 * grpc_server_request_call() slots receives every call and we dispatch on
 * the method path, so unknown methods get UNIMPLEMENTED at once instead of
 * hanging until their deadline. */

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <systemd/sd-daemon.h>

#include "fs-util.h"
#include "grpc/health/v1/health.pb-c.h"
#include "hostmesh/common/v1/metrics.pb-c.h"
#include "log.h"
#include "metrics.h"
#include "paths.h"
#include "proto-json.h"
#include "rpc-internal.h"
#include "rpc-raw.h"

#define GENERIC_SLOTS 8
#define SLOTS_PER_METHOD 4
#define PEERS_MAX 65536
#define HEALTH_SERVICES_MAX 32

typedef struct MethodEntry {
        RpcMethod method;
        void *userdata;
        Metric *latency;
        void *registered;          /* gRPC's handle when registered with payload */
        Metric *calls[_RPC_CODE_MAX]; /* by status code, looked up on first use */
} MethodEntry;

/* A posted request for the next call: generic (any method, details tell
 * which) or for one registered method, whose first message then arrives
 * with the call itself — one completion less per call. */
typedef struct RequestSlot {
        RpcTag tag;
        RpcServer *server;
        MethodEntry *entry;  /* NULL: generic */
        grpc_call *call;
        grpc_call_details details;
        grpc_metadata_array metadata;
        gpr_timespec deadline;
        grpc_byte_buffer *payload;
} RequestSlot;

typedef struct PeerSlot {
        RpcPeer peer;
        uint64_t generation;
} PeerSlot;

/* Concurrent calls per client process: a client opening more connections
 * gets no more calls. Small linear table; entries go when they reach 0. */
typedef struct PeerCalls {
        pid_t pid;
        unsigned n_calls;
} PeerCalls;

typedef struct HealthService {
        char *name;
        bool serving;
} HealthService;

typedef struct SendItem {
        grpc_byte_buffer *buffer;
        size_t cost;               /* counted against max_send_queue */
        struct SendItem *next;
} SendItem;

/* What a queued message costs beyond its bytes: the item, gRPC's byte
 * buffer with its inline slice array, the slice. Measured: a stalled log
 * follower of 21-byte lines made vmmd grow by ~470 bytes per line. */
#define SEND_ITEM_OVERHEAD 512U

struct RpcCall {
        unsigned n_ref;
        RpcServer *server;
        grpc_call *call;
        char *method;
        grpc_metadata_array metadata;
        char **metadata_strv;      /* materialized lazily: key, value, ..., NULL */
        gpr_timespec deadline;
        RpcPeer peer;
        int conn_fd;
        uint64_t start_usec;
        MethodEntry *entry;

        bool cancelled;
        bool finished;             /* status decided (queued or sent) */
        bool status_sent;
        bool initial_metadata_sent;
        bool send_in_flight;
        bool accounted;            /* per-peer/active counters decremented */
        bool serving;              /* taken before shutdown began: the drain waits for it */
        bool close_started;        /* RECV_CLOSE_ON_SERVER posted */
        bool close_in_send;        /* ...as part of the in-flight send batch */
        RpcCode status_code;
        char *status_message;
        SendItem *send_head, *send_tail;
        size_t send_queued;        /* sum of the queued items' cost */
        grpc_byte_buffer *in_flight[2];

        RpcTag close_tag;
        int close_cancelled;
        RpcTag recv_tag;
        grpc_byte_buffer *recv_buffer;
        RpcTag send_tag;

        void (*on_cancel)(RpcCall *c, void *userdata);
        void *on_cancel_userdata;

        /* Every live call is on the server's list, so the server can detach
         * them when it goes away before a handler drops its reference. */
        struct RpcCall *all_prev, *all_next;

        /* Health Watch calls are linked to the server for updates. */
        struct RpcCall *watch_next;
        char *watch_service;
};

struct RpcServer {
        RpcLoop *loop;
        sd_event *event;
        grpc_server *grpc;
        grpc_server_credentials *creds;
        RpcServerOptions opts;
        char *name;
        char *socket_path;         /* set when we bound it ourselves (and unlink it) */

        MethodEntry *methods;
        size_t n_methods;
        RpcRawHandler fallback;
        void *fallback_userdata;
        RpcInterceptor interceptor;
        void *interceptor_userdata;
        RpcConnectionHook connection_hook;
        void *connection_hook_userdata;
        RpcBusyCheck busy_check;
        void *busy_check_userdata;

        int listen_fd;
        sd_event_source *listen_source;
        PeerSlot *peers;           /* indexed by connection fd */
        PeerCalls *peer_calls;
        size_t n_peer_calls;
        uint64_t generation;

        /* fds systemd passed that are not ours, by name */
        int extra_fds[16];
        char *extra_names[16];
        size_t n_extra;

        RequestSlot **slots;
        size_t n_slots;
        unsigned n_slots_alive;

        unsigned n_active_calls;
        unsigned n_serving_calls;  /* calls the drain waits for (RpcCall.serving) */
        sd_event_source *idle_timer;
        sd_event_source *drain_timer;
        sd_event_source *sigterm_source, *sigint_source;
        bool started, shutting_down, closing, shutdown_done;
        int exit_code;
        RpcTag shutdown_tag;

        HealthService health[HEALTH_SERVICES_MAX];
        size_t n_health;
        RpcCall *watchers;
        RpcCall *calls;

        Metrics *metrics;
};

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

static void call_pump(RpcCall *c);
static void server_arm_idle(RpcServer *s);
static int request_slot_post(RequestSlot *slot);
static void server_maybe_finish_shutdown(RpcServer *s);
static void server_maybe_close(RpcServer *s);

/* ---- call lifetime ------------------------------------------------------- */

RpcCall *rpc_call_ref(RpcCall *c) {
        if (c)
                c->n_ref++;
        return c;
}

static PeerCalls *peer_calls_find(RpcServer *s, pid_t pid, bool create) {
        for (size_t i = 0; i < s->n_peer_calls; i++)
                if (s->peer_calls[i].pid == pid)
                        return &s->peer_calls[i];
        if (!create)
                return NULL;
        PeerCalls *n = realloc(s->peer_calls, (s->n_peer_calls + 1) * sizeof(PeerCalls));
        if (!n)
                return NULL;
        s->peer_calls = n;
        n[s->n_peer_calls] = (PeerCalls){ .pid = pid };
        return &n[s->n_peer_calls++];
}

static void call_account_done(RpcCall *c) {
        RpcServer *s = c->server;

        if (c->accounted || !s)
                return;
        c->accounted = true;
        if (c->peer.known) {
                PeerCalls *p = peer_calls_find(s, c->peer.pid, false);
                if (p && p->n_calls > 0 && --p->n_calls == 0)
                        *p = s->peer_calls[--s->n_peer_calls];
        }
        if (s->n_active_calls > 0)
                s->n_active_calls--;
        if (c->serving) {
                c->serving = false;
                if (s->n_serving_calls > 0)
                        s->n_serving_calls--;
                server_maybe_close(s);
        }
        server_arm_idle(s);
}

static void call_free(RpcCall *c) {
        RpcServer *s = c->server;

        if (s) {
                if (c->all_prev)
                        c->all_prev->all_next = c->all_next;
                else
                        s->calls = c->all_next;
                if (c->all_next)
                        c->all_next->all_prev = c->all_prev;
                /* Unlink from the health watchers. */
                for (RpcCall **p = &s->watchers; *p; p = &(*p)->watch_next)
                        if (*p == c) {
                                *p = c->watch_next;
                                break;
                        }
        }
        call_account_done(c);
        while (c->send_head) {
                SendItem *i = c->send_head;
                c->send_head = i->next;
                grpc_byte_buffer_destroy(i->buffer);
                free(i);
        }
        if (c->recv_buffer)
                grpc_byte_buffer_destroy(c->recv_buffer);
        if (c->call)
                grpc_call_unref(c->call);
        grpc_metadata_array_destroy(&c->metadata);
        if (c->metadata_strv) {
                for (char **p = c->metadata_strv; *p; p++)
                        free(*p);
                free(c->metadata_strv);
        }
        free(c->method);
        free(c->status_message);
        free(c->watch_service);
        free(c);
        if (s)
                server_maybe_finish_shutdown(s);
}

RpcCall *rpc_call_unref(RpcCall *c) {
        if (!c)
                return NULL;
        if (--c->n_ref == 0)
                call_free(c);
        return NULL;
}

const RpcPeer *rpc_call_peer(RpcCall *c) {
        return &c->peer;
}

const char *rpc_call_method(RpcCall *c) {
        return c->method;
}

const char *rpc_call_metadata(RpcCall *c, const char *key) {
        if (!c->metadata_strv) {
                size_t n = c->metadata.count;
                c->metadata_strv = calloc(n * 2 + 1, sizeof(char *));
                if (!c->metadata_strv)
                        return NULL;
                for (size_t i = 0; i < n; i++) {
                        c->metadata_strv[2 * i] = rpc_slice_to_string(c->metadata.metadata[i].key);
                        c->metadata_strv[2 * i + 1] = rpc_slice_to_string(c->metadata.metadata[i].value);
                        if (!c->metadata_strv[2 * i] || !c->metadata_strv[2 * i + 1])
                                return NULL;
                }
        }
        for (char **p = c->metadata_strv; p[0] && p[1]; p += 2)
                if (streq(p[0], key))
                        return p[1];
        return NULL;
}

uint64_t rpc_call_remaining_usec(RpcCall *c) {
        gpr_timespec now, left;

        if (gpr_time_cmp(c->deadline, gpr_inf_future(c->deadline.clock_type)) == 0)
                return UINT64_MAX;
        now = gpr_now(c->deadline.clock_type);
        if (gpr_time_cmp(c->deadline, now) <= 0)
                return 0;
        left = gpr_time_sub(c->deadline, now);
        return (uint64_t) left.tv_sec * USEC_PER_SEC + (uint64_t) left.tv_nsec / NSEC_PER_USEC;
}

bool rpc_call_cancelled(RpcCall *c) {
        return c->cancelled;
}

void rpc_call_on_cancel(RpcCall *c, void (*cb)(RpcCall *c, void *userdata), void *userdata) {
        c->on_cancel = cb;
        c->on_cancel_userdata = userdata;
}

grpc_call *rpc_call_grpc(RpcCall *c) {
        return c->call;
}

const grpc_metadata_array *rpc_call_initial_metadata(RpcCall *c) {
        return &c->metadata;
}

gpr_timespec rpc_call_deadline(RpcCall *c) {
        return c->deadline;
}

static void call_record_metrics(RpcCall *c, RpcCode code) {
        RpcServer *s = c->server;
        char labels[512];
        Metric *m;

        if (!s || !s->metrics)
                return;
        /* Typed methods keep their counters: no formatting or lookup per call. */
        m = c->entry && (unsigned) code < _RPC_CODE_MAX ? c->entry->calls[code] : NULL;
        if (!m) {
                snprintf(labels, sizeof(labels), "method=\"%s\",code=\"%s\"", c->method, rpc_code_to_string(code));
                m = metrics_counter(s->metrics, "hostmesh_rpc_calls_total", "gRPC calls handled, by method and status.",
                                    labels);
                if (c->entry && (unsigned) code < _RPC_CODE_MAX)
                        c->entry->calls[code] = m;
        }
        if (m)
                metric_add(m, 1);
        if (c->entry && c->entry->latency)
                metric_observe(c->entry->latency, (double) (now_usec() - c->start_usec) / 1e6);
        else {
                snprintf(labels, sizeof(labels), "method=\"%s\"", c->method);
                m = metrics_histogram(s->metrics, "hostmesh_rpc_duration_seconds",
                                      "Time from receiving a call to sending its status.", labels);
                if (m)
                        metric_observe(m, (double) (now_usec() - c->start_usec) / 1e6);
        }
}

void rpc_call_mark_finished(RpcCall *c, RpcCode code) {
        if (c->finished)
                return;
        c->finished = true;
        c->status_sent = true;
        c->status_code = code;
        call_record_metrics(c, code);
}

/* ---- sending ------------------------------------------------------------- */

static void call_closed(RpcCall *c);

static void call_drop_queue(RpcCall *c) {
        while (c->send_head) {
                SendItem *i = c->send_head;
                c->send_head = i->next;
                grpc_byte_buffer_destroy(i->buffer);
                free(i);
        }
        c->send_tail = NULL;
        c->send_queued = 0;
}

static void on_send_done(RpcTag *t, bool ok) {
        RpcCall *c = (RpcCall *) ((char *) t - offsetof(RpcCall, send_tag));
        bool closed = c->close_in_send;

        for (size_t i = 0; i < ELEMENTSOF(c->in_flight); i++)
                if (c->in_flight[i]) {
                        grpc_byte_buffer_destroy(c->in_flight[i]);
                        c->in_flight[i] = NULL;
                }
        c->send_in_flight = false;
        if (!ok) {
                /* The client went away: drop what is still queued. */
                c->cancelled = true;
                call_drop_queue(c);
                c->status_sent = true;
        } else
                call_pump(c);
        if (closed) {
                c->close_in_send = false;
                call_closed(c);
        }
        rpc_call_unref(c);
}

/* Starts the next send batch: one queued message, or the status once the
 * queue is empty. A lone last message and the status go in one batch, so
 * that a unary reply costs a single batch. */
static void call_pump(RpcCall *c) {
        grpc_op ops[4];
        size_t n = 0;
        grpc_slice details;
        bool with_status;

        if (c->send_in_flight || c->status_sent || c->cancelled)
                return;
        if (!c->send_head && !c->finished)
                return;

        memset(ops, 0, sizeof(ops));
        if (!c->initial_metadata_sent) {
                ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
                ops[n].data.send_initial_metadata.count = 0;
                n++;
                c->initial_metadata_sent = true;
        }
        if (c->send_head) {
                SendItem *i = c->send_head;
                c->send_head = i->next;
                if (!c->send_head)
                        c->send_tail = NULL;
                c->send_queued -= i->cost;
                ops[n].op = GRPC_OP_SEND_MESSAGE;
                ops[n].data.send_message.send_message = i->buffer;
                c->in_flight[0] = i->buffer;
                n++;
                free(i);
        }
        with_status = c->finished && !c->send_head;
        if (with_status) {
                details = grpc_slice_from_copied_string(c->status_message ? c->status_message : "");
                ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
                ops[n].data.send_status_from_server.status = (grpc_status_code) c->status_code;
                ops[n].data.send_status_from_server.status_details = &details;
                ops[n].data.send_status_from_server.trailing_metadata_count = 0;
                n++;
                c->status_sent = true;
                /* A call answered at once never needed to watch for
                 * cancellation: learn how it closed with the status. */
                if (!c->close_started) {
                        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
                        ops[n].data.recv_close_on_server.cancelled = &c->close_cancelled;
                        n++;
                        c->close_started = c->close_in_send = true;
                }
        }
        c->send_in_flight = true;
        rpc_call_ref(c);
        if (grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL) != GRPC_CALL_OK) {
                log_error("Failed to start a send batch on %s, ignoring.", c->method);
                c->send_in_flight = false;
                rpc_call_unref(c);
        }
        if (with_status)
                grpc_slice_unref(details);
}

/* The reader stopped reading and the queue is full: buffering on would let
 * one stalled client take the daemon's memory. The call ends now; what the
 * reader already has comes before the status, what was queued is lost. */
static void call_overflow(RpcCall *c, size_t cost) {
        char msg[256];

        snprintf(msg, sizeof(msg), "%s: the reader fell %zu KiB behind, more than [rpc] max_send_queue (%zu KiB) "
                 "allows; the stream was ended. Read faster or ask again.", c->method,
                 (c->send_queued + cost) / 1024, c->server ? c->server->opts.max_send_queue / 1024 : 0);
        call_drop_queue(c);
        c->finished = true;
        c->status_sent = true;
        c->status_code = RPC_RESOURCE_EXHAUSTED;
        call_record_metrics(c, RPC_RESOURCE_EXHAUSTED);
        /* Completes the pending batches (the send in flight, the close
         * watch); call_closed() then runs the on_cancel callback. */
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, NULL);
}

int rpc_call_send(RpcCall *c, const ProtobufCMessage *message) {
        size_t limit = c->server ? c->server->opts.max_send_queue : SIZE_MAX;
        SendItem *i;

        if (c->finished)
                return -EALREADY;
        if (c->cancelled)
                return -ECANCELED;
        i = calloc(1, sizeof(*i));
        if (!i)
                return -ENOMEM;
        i->buffer = rpc_pack(message);
        i->cost = grpc_byte_buffer_length(i->buffer) + SEND_ITEM_OVERHEAD;
        /* One message always fits, however large (max_message_size bounds it). */
        if (c->send_head && c->send_queued + i->cost > limit) {
                call_overflow(c, i->cost);
                grpc_byte_buffer_destroy(i->buffer);
                free(i);
                return -ENOBUFS;
        }
        c->send_queued += i->cost;
        if (c->send_tail)
                c->send_tail->next = i;
        else
                c->send_head = i;
        c->send_tail = i;
        call_pump(c);
        return 0;
}

int rpc_call_finish(RpcCall *c, RpcCode code, const char *message) {
        if (c->finished)
                return -EALREADY;
        c->finished = true;
        c->status_code = code;
        if (message) {
                c->status_message = strdup(message);
                if (!c->status_message)
                        return -ENOMEM;
        }
        call_record_metrics(c, code);
        call_pump(c);
        return 0;
}

int rpc_call_reply(RpcCall *c, const ProtobufCMessage *response) {
        int r = rpc_call_send(c, response);
        if (r < 0 && r != -ECANCELED)
                return r;
        return rpc_call_finish(c, RPC_OK, NULL);
}

static int call_failv(RpcCall *c, RpcCode code, const char *format, va_list ap) {
        char buf[1024];
        vsnprintf(buf, sizeof(buf), format, ap);
        return rpc_call_finish(c, code, buf);
}

int rpc_call_fail(RpcCall *c, RpcCode code, const char *format, ...) {
        va_list ap;
        int r;
        va_start(ap, format);
        r = call_failv(c, code, format, ap);
        va_end(ap);
        return r;
}

int rpc_call_fail_errno(RpcCall *c, int error, const char *format, ...) {
        va_list ap;
        int r;
        errno = error < 0 ? -error : error; /* so that %m in the format works */
        va_start(ap, format);
        r = call_failv(c, rpc_code_from_errno(error), format, ap);
        va_end(ap);
        return r;
}

/* ---- receiving and dispatch -------------------------------------------- */

/* The call is over (status sent or the client gone); drops the reference
 * the call was created with. */
static void call_closed(RpcCall *c) {
        if (c->close_cancelled || !c->status_sent) {
                c->cancelled = true;
                if (!c->finished)
                        call_record_metrics(c, RPC_CANCELLED), c->finished = true;
                if (c->on_cancel)
                        c->on_cancel(c, c->on_cancel_userdata);
        }
        call_account_done(c);
        rpc_call_unref(c);
}

static void on_close(RpcTag *t, bool ok) {
        (void) ok;
        call_closed((RpcCall *) ((char *) t - offsetof(RpcCall, close_tag)));
}

static int call_watch_close(RpcCall *c) {
        grpc_op op;

        if (c->close_started)
                return 0;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        op.data.recv_close_on_server.cancelled = &c->close_cancelled;
        if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK)
                return -EPROTO;
        c->close_started = true;
        return 0;
}

static void call_dispatch_typed(RpcCall *c, const ProtobufCMessage *request) {
        unsigned refs_before = c->n_ref;

        c->entry->method.handler(c, request, c->entry->userdata);
        if (!c->finished && c->n_ref <= refs_before && !c->cancelled) {
                log_error("Handler for %s returned without replying or keeping the call, failing it.", c->method);
                rpc_call_fail(c, RPC_INTERNAL, "The server did not answer %s; this is a bug in hostmesh.", c->method);
        }
        /* Answering later: the handler must hear of a cancellation. */
        if (!c->status_sent && call_watch_close(c) < 0)
                log_error("Failed to watch %s for cancellation, ignoring.", c->method);
}

/* The request arrived with the call (registered method). */
/* A field the request type lacks would be dropped without a word: with
 * refuse_unknown_fields the caller hears which one instead. */
static bool unknown_field_refused(RpcCall *c, const ProtobufCMessage *request) {
        const char *type;
        uint32_t number;

        if (!c->server->opts.refuse_unknown_fields ||
            !proto_find_unknown_field(request, c->server->opts.unknown_fields_allowed, &type, &number))
                return false;
        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "%s: field %u of %s is not supported by hostmesh; leave it unset "
                      "(it would otherwise be ignored).", c->method, (unsigned) number, type);
        return true;
}

static void call_dispatch_payload(RpcCall *c, grpc_byte_buffer *payload) {
        ProtobufCMessage *request = NULL;

        if (!payload) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "%s expects one request message, got none.", c->method);
                return;
        }
        if (rpc_unpack(payload, c->entry->method.request, &request) < 0) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "Malformed request: not a valid %s message.",
                              c->entry->method.request->name);
                return;
        }
        if (!unknown_field_refused(c, request))
                call_dispatch_typed(c, request);
        protobuf_c_message_free_unpacked(request, NULL);
}

static void on_recv_request(RpcTag *t, bool ok) {
        RpcCall *c = (RpcCall *) ((char *) t - offsetof(RpcCall, recv_tag));
        ProtobufCMessage *request = NULL;
        grpc_byte_buffer *b = TAKE_PTR(c->recv_buffer);
        int r;

        if (!ok || c->cancelled) {
                if (b)
                        grpc_byte_buffer_destroy(b);
                rpc_call_unref(c);
                return;
        }
        if (!b) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "%s expects one request message, got none.", c->method);
                rpc_call_unref(c);
                return;
        }
        r = rpc_unpack(b, c->entry->method.request, &request);
        grpc_byte_buffer_destroy(b);
        if (r < 0) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "Malformed request: not a valid %s message.",
                              c->entry->method.request->name);
                rpc_call_unref(c);
                return;
        }
        if (!unknown_field_refused(c, request))
                call_dispatch_typed(c, request);
        protobuf_c_message_free_unpacked(request, NULL);
        rpc_call_unref(c);
}

static MethodEntry *server_find_method(RpcServer *s, const char *path) {
        for (size_t i = 0; i < s->n_methods; i++)
                if (streq(s->methods[i].method.path, path))
                        return &s->methods[i];
        return NULL;
}

static int peer_fd_from_string(const char *peer) {
        /* Connections handed over with grpc_server_add_channel_from_fd() are
         * named "fd:N" by gRPC. */
        if (peer && strncmp(peer, "fd:", 3) == 0) {
                char *end;
                long v = strtol(peer + 3, &end, 10);
                if (*end == 0 && v >= 0 && v < PEERS_MAX)
                        return (int) v;
        }
        return -1;
}

static void server_start_call(RpcServer *s, grpc_call *gcall, const char *method_path, grpc_slice method_slice,
                              gpr_timespec deadline, grpc_metadata_array *metadata, MethodEntry *entry,
                              grpc_byte_buffer *payload) {
        RpcCall *c;
        grpc_op op;
        char *peer;

        c = calloc(1, sizeof(*c));
        if (!c) {
                grpc_call_cancel_with_status(gcall, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
                grpc_call_unref(gcall);
                return;
        }
        c->n_ref = 1; /* dropped by call_closed() */
        c->server = s;
        c->call = gcall;
        c->method = method_path ? strdup(method_path) : rpc_slice_to_string(method_slice);
        c->deadline = deadline;
        c->metadata = *metadata;
        grpc_metadata_array_init(metadata);
        c->start_usec = now_usec();
        c->close_tag.fn = on_close;
        c->recv_tag.fn = on_recv_request;
        c->send_tag.fn = on_send_done;
        c->conn_fd = -1;
        c->all_next = s->calls;
        if (s->calls)
                s->calls->all_prev = c;
        s->calls = c;

        peer = grpc_call_get_peer(gcall);
        c->conn_fd = peer_fd_from_string(peer);
        gpr_free(peer);
        if (c->conn_fd >= 0)
                c->peer = s->peers[c->conn_fd].peer;

        s->n_active_calls++;
        if (s->idle_timer)
                sd_event_source_set_enabled(s->idle_timer, SD_EVENT_OFF);
        PeerCalls *pc = c->peer.known ? peer_calls_find(s, c->peer.pid, true) : NULL;
        if (pc)
                pc->n_calls++;

        /* Raw and generic calls watch for cancellation from the start; typed
         * calls of registered methods only if they are not answered at once. */
        if (!entry && call_watch_close(c) < 0) {
                log_error("Failed to watch a call for cancellation, dropping it.");
                rpc_call_unref(c);
                return;
        }
        if (!c->method) {
                rpc_call_fail(c, RPC_RESOURCE_EXHAUSTED, "Out of memory.");
                return;
        }

        if (pc && pc->n_calls > s->opts.max_calls_per_peer) {
                rpc_call_fail(c, RPC_RESOURCE_EXHAUSTED,
                              "Too many concurrent calls from this client (limit %u); wait for some to finish.",
                              s->opts.max_calls_per_peer);
                return;
        }
        if (s->shutting_down) {
                rpc_call_fail(c, RPC_UNAVAILABLE, "hostmesh-%sd is shutting down; retry.", s->name);
                return;
        }
        c->serving = true;
        s->n_serving_calls++;

        if (entry) {
                c->entry = entry;
                call_dispatch_payload(c, payload);
                return;
        }

        if (s->interceptor) {
                bool taken;
                rpc_call_ref(c);
                taken = s->interceptor(c, s->interceptor_userdata);
                rpc_call_unref(c);
                if (taken)
                        return;
        }

        c->entry = server_find_method(s, c->method);
        if (!c->entry) {
                if (s->fallback) {
                        rpc_call_ref(c);
                        s->fallback(c, s->fallback_userdata);
                        rpc_call_unref(c);
                        return;
                }
                rpc_call_fail(c, RPC_UNIMPLEMENTED, "Method %s is not implemented by hostmesh-%sd.", c->method,
                              s->name);
                return;
        }

        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &c->recv_buffer;
        rpc_call_ref(c);
        if (grpc_call_start_batch(gcall, &op, 1, &c->recv_tag, NULL) != GRPC_CALL_OK) {
                rpc_call_unref(c);
                rpc_call_fail(c, RPC_INTERNAL, "Failed to read the request.");
        }
}

static void on_request_slot(RpcTag *t, bool ok) {
        RequestSlot *slot = (RequestSlot *) t;
        RpcServer *s = slot->server;

        /* Slots stay posted while the server drains, so that every call
         * arriving meanwhile reaches server_start_call() and is refused with
         * UNAVAILABLE; gRPC itself cancels (CANCELLED) the calls it still
         * holds unmatched when it shuts down. */
        if (!ok || !s || s->closing) {
                if (ok && slot->call) {
                        grpc_call_cancel_with_status(slot->call, GRPC_STATUS_UNAVAILABLE, "shutting down", NULL);
                        grpc_call_unref(slot->call);
                }
                if (slot->payload)
                        grpc_byte_buffer_destroy(slot->payload);
                grpc_call_details_destroy(&slot->details);
                grpc_metadata_array_destroy(&slot->metadata);
                if (s) {
                        for (size_t i = 0; i < s->n_slots; i++)
                                if (s->slots[i] == slot)
                                        s->slots[i] = NULL;
                        s->n_slots_alive--;
                }
                free(slot);
                if (s)
                        server_maybe_finish_shutdown(s);
                return;
        }

        if (slot->entry)
                server_start_call(s, slot->call, slot->entry->method.path, grpc_empty_slice(), slot->deadline,
                                  &slot->metadata, slot->entry, slot->payload);
        else
                server_start_call(s, slot->call, NULL, slot->details.method, slot->details.deadline, &slot->metadata,
                                  NULL, NULL);
        if (slot->payload)
                grpc_byte_buffer_destroy(slot->payload);
        slot->payload = NULL;
        grpc_call_details_destroy(&slot->details);
        slot->call = NULL;
        if (request_slot_post(slot) < 0)
                log_error("Failed to post a request slot, serving with fewer.");
}

static int request_slot_post(RequestSlot *slot) {
        grpc_call_details_init(&slot->details);
        grpc_metadata_array_init(&slot->metadata);
        slot->payload = NULL;
        if (slot->entry) {
                if (grpc_server_request_registered_call(slot->server->grpc, slot->entry->registered, &slot->call,
                                                        &slot->deadline, &slot->metadata, &slot->payload,
                                                        rpc_loop_cq(slot->server->loop),
                                                        rpc_loop_cq(slot->server->loop), &slot->tag) != GRPC_CALL_OK)
                        return -EPROTO;
                return 0;
        }
        if (grpc_server_request_call(slot->server->grpc, &slot->call, &slot->details, &slot->metadata,
                                     rpc_loop_cq(slot->server->loop), rpc_loop_cq(slot->server->loop),
                                     &slot->tag) != GRPC_CALL_OK)
                return -EPROTO;
        return 0;
}

/* ---- health ------------------------------------------------------------- */

static HealthService *health_find(RpcServer *s, const char *service) {
        for (size_t i = 0; i < s->n_health; i++)
                if (streq(s->health[i].name, service))
                        return &s->health[i];
        return NULL;
}

static int health_status_of(RpcServer *s, const char *service) {
        HealthService *h = health_find(s, service);
        if (!h)
                return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
        return h->serving && !s->shutting_down
                       ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static void health_notify(RpcServer *s) {
        for (RpcCall *c = s->watchers; c; c = c->watch_next) {
                Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
                resp.status = health_status_of(s, c->watch_service);
                (void) rpc_call_send(c, &resp.base);
        }
}

void rpc_server_set_health(RpcServer *s, const char *service, bool serving) {
        HealthService *h = health_find(s, service);

        if (!h) {
                if (s->n_health >= HEALTH_SERVICES_MAX)
                        return;
                h = &s->health[s->n_health++];
                h->name = strdup(service);
                if (!h->name) {
                        s->n_health--;
                        return;
                }
        }
        if (h->serving != serving) {
                h->serving = serving;
                health_notify(s);
        }
}

static void health_check(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Grpc__Health__V1__HealthCheckRequest *req = (const void *) request;
        Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        RpcServer *s = userdata;
        int st = health_status_of(s, req->service);

        if (st == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN) {
                rpc_call_fail(c, RPC_NOT_FOUND, "Unknown service '%s'.", req->service);
                return;
        }
        resp.status = st;
        rpc_call_reply(c, &resp.base);
}

static void health_watch_cancelled(RpcCall *c, void *userdata) {
        (void) userdata;
        rpc_call_unref(c);
}

static void health_watch(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Grpc__Health__V1__HealthCheckRequest *req = (const void *) request;
        Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        RpcServer *s = userdata;

        c->watch_service = strdup(req->service);
        if (!c->watch_service) {
                rpc_call_fail(c, RPC_RESOURCE_EXHAUSTED, "Out of memory.");
                return;
        }
        resp.status = health_status_of(s, req->service);
        rpc_call_send(c, &resp.base);
        /* Stays open until the client goes away; the reference is dropped then. */
        rpc_call_ref(c);
        rpc_call_on_cancel(c, health_watch_cancelled, NULL);
        c->watch_next = s->watchers;
        s->watchers = c;
}

static void metrics_get(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        Hostmesh__Common__V1__GetMetricsResponse resp = HOSTMESH__COMMON__V1__GET_METRICS_RESPONSE__INIT;
        RpcServer *s = userdata;
        _cleanup_free_ char *text = NULL;
        int r;

        (void) request;
        r = metrics_format(s->metrics, NULL, &text);
        if (r < 0) {
                rpc_call_fail_errno(c, r, "Failed to format metrics.");
                return;
        }
        resp.text = text;
        rpc_call_reply(c, &resp.base);
}

static const RpcMethod health_methods[] = {
        { "/hostmesh.common.v1.Metrics/GetMetrics", RPC_UNARY, &hostmesh__common__v1__get_metrics_request__descriptor,
          &hostmesh__common__v1__get_metrics_response__descriptor, metrics_get },
        { "/grpc.health.v1.Health/Check", RPC_UNARY, &grpc__health__v1__health_check_request__descriptor,
          &grpc__health__v1__health_check_response__descriptor, health_check },
        { "/grpc.health.v1.Health/Watch", RPC_SERVER_STREAMING, &grpc__health__v1__health_check_request__descriptor,
          &grpc__health__v1__health_check_response__descriptor, health_watch },
};

/* ---- server ------------------------------------------------------------- */

int rpc_server_new(RpcLoop *loop, const RpcServerOptions *opts, RpcServer **ret) {
        RpcServer *s;
        grpc_arg args[3];
        grpc_channel_args cargs;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->loop = loop;
        s->event = sd_event_ref(rpc_loop_event(loop));
        s->listen_fd = -EBADF;
        s->opts = *opts;
        if (s->opts.max_message_size == 0)
                s->opts.max_message_size = 4 * 1024 * 1024;
        if (s->opts.max_send_queue == 0)
                s->opts.max_send_queue = RPC_SEND_QUEUE_DEFAULT;
        if (s->opts.max_calls_per_peer == 0)
                s->opts.max_calls_per_peer = 256;
        if (s->opts.drain_usec == 0)
                s->opts.drain_usec = 5 * USEC_PER_SEC;
        s->name = strdup(opts->name ? opts->name : "hostmesh");
        s->peers = calloc(PEERS_MAX, sizeof(PeerSlot));
        s->metrics = metrics_new();
        if (!s->name || !s->peers || !s->metrics) {
                rpc_server_free(s);
                return -ENOMEM;
        }

        args[0] = (grpc_arg){ .type = GRPC_ARG_INTEGER, .key = (char *) GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                              .value.integer = (int) s->opts.max_message_size };
        args[1] = (grpc_arg){ .type = GRPC_ARG_INTEGER, .key = (char *) GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                              .value.integer = (int) s->opts.max_message_size };
        args[2] = (grpc_arg){ .type = GRPC_ARG_INTEGER, .key = (char *) GRPC_ARG_MAX_CONCURRENT_STREAMS,
                              .value.integer = (int) s->opts.max_calls_per_peer + 16 };
        cargs = (grpc_channel_args){ .num_args = ELEMENTSOF(args), .args = args };
        s->grpc = grpc_server_create(&cargs, NULL);
        grpc_server_register_completion_queue(s->grpc, rpc_loop_cq(loop), NULL);
        s->creds = grpc_insecure_server_credentials_create();

        r = rpc_server_add_methods(s, health_methods, ELEMENTSOF(health_methods), s);
        if (r < 0) {
                rpc_server_free(s);
                return r;
        }
        rpc_server_set_health(s, "", true);
        *ret = s;
        return 0;
}

int rpc_server_add_methods(RpcServer *s, const RpcMethod *methods, size_t n_methods, void *userdata) {
        MethodEntry *m;

        /* Request slots point into the table once serving. */
        if (s->started)
                return -EBUSY;
        m = realloc(s->methods, (s->n_methods + n_methods) * sizeof(MethodEntry));
        if (!m)
                return -ENOMEM;
        s->methods = m;
        for (size_t i = 0; i < n_methods; i++) {
                char labels[512], service[256];
                const char *slash;

                if (methods[i].kind != RPC_UNARY && methods[i].kind != RPC_SERVER_STREAMING)
                        return -EOPNOTSUPP; /* typed client streaming: use the fallback raw handler */
                snprintf(labels, sizeof(labels), "method=\"%s\"", methods[i].path);
                s->methods[s->n_methods++] = (MethodEntry){
                        .method = methods[i],
                        .userdata = userdata,
                        .latency = metrics_histogram(s->metrics, "hostmesh_rpc_duration_seconds",
                                                     "Time from receiving a call to sending its status.", labels),
                };
                /* "/pkg.Service/Method" → health service "pkg.Service" */
                slash = strchr(methods[i].path + 1, '/');
                if (slash && (size_t) (slash - methods[i].path - 1) < sizeof(service)) {
                        memcpy(service, methods[i].path + 1, (size_t) (slash - methods[i].path - 1));
                        service[slash - methods[i].path - 1] = 0;
                        if (!health_find(s, service))
                                rpc_server_set_health(s, service, true);
                }
        }
        return 0;
}

void rpc_server_set_fallback(RpcServer *s, RpcRawHandler handler, void *userdata) {
        s->fallback = handler;
        s->fallback_userdata = userdata;
}

void rpc_server_set_interceptor(RpcServer *s, RpcInterceptor interceptor, void *userdata) {
        s->interceptor = interceptor;
        s->interceptor_userdata = userdata;
}

grpc_server *rpc_server_grpc(RpcServer *s) {
        return s->grpc;
}

Metrics *rpc_server_metrics(RpcServer *s) {
        return s->metrics;
}

static int on_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        RpcServer *s = userdata;

        (void) es;
        (void) revents;
        for (;;) {
                struct ucred cred;
                socklen_t len = sizeof(cred);
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        if (errno == EMFILE || errno == ENFILE) {
                                log_warning_errno(errno, "Out of file descriptors accepting a connection: %m");
                                return 0;
                        }
                        log_warning_errno(errno, "Failed to accept a connection, ignoring: %m");
                        return 0;
                }
                if (cfd >= PEERS_MAX) {
                        log_warning("Connection fd %d beyond table size, refusing it.", cfd);
                        close(cfd);
                        continue;
                }
                RpcPeer peer = {};
                if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
                        peer = (RpcPeer){ .known = true, .pid = cred.pid, .uid = cred.uid, .gid = cred.gid };
                if (s->connection_hook && s->connection_hook(cfd, &peer, s->connection_hook_userdata))
                        continue;  /* the hook owns it now */
                (void) rpc_server_add_connection(s, cfd, &peer);
        }
}

int rpc_server_add_connection(RpcServer *s, int fd, const RpcPeer *peer) {
        if (fd < 0 || fd >= PEERS_MAX) {
                log_warning("Connection fd %d beyond table size, refusing it.", fd);
                safe_close(fd);
                return -EMFILE;
        }
        PeerSlot *p = &s->peers[fd];
        *p = (PeerSlot){ .generation = ++s->generation };
        if (peer)
                p->peer = *peer;
        /* gRPC owns the fd from here on. */
        grpc_server_add_channel_from_fd(s->grpc, fd, s->creds);
        return 0;
}

void rpc_server_set_connection_hook(RpcServer *s, RpcConnectionHook hook, void *userdata) {
        s->connection_hook = hook;
        s->connection_hook_userdata = userdata;
}

void rpc_server_set_busy_check(RpcServer *s, RpcBusyCheck check, void *userdata) {
        s->busy_check = check;
        s->busy_check_userdata = userdata;
}

static int bind_socket(RpcServer *s, const char *path) {
        _cleanup_close_ int fd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_free_ char *dir = NULL;
        char *slash;
        int r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);

        dir = strdup(path);
        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = 0;
                r = mkdir_p(dir, 0755);
                if (r < 0)
                        return r;
        }

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();

        /* A socket file left by a dead instance is removed; a live one is not. */
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0)
                return -EADDRINUSE;
        close(fd);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();
        (void) unlink(path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return negative_errno();
        (void) chmod(path, 0660);
        if (listen(fd, SOMAXCONN) < 0)
                return negative_errno();
        s->socket_path = strdup(path);
        if (!s->socket_path)
                return -ENOMEM;
        return TAKE_FD(fd);
}

static bool fd_is_unix_listener(int fd) {
        int type = 0, listening = 0;
        struct sockaddr_storage ss;
        socklen_t l = sizeof(type), sl = sizeof(ss);

        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0 || type != SOCK_STREAM)
                return false;
        l = sizeof(listening);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) < 0 || !listening)
                return false;
        if (getsockname(fd, (struct sockaddr *) &ss, &sl) < 0)
                return false;
        return ss.ss_family == AF_UNIX;
}

static int take_listen_fds(RpcServer *s) {
        char **names = NULL;
        int n, grpc_fd = -EBADF;

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return n;
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "unknown";

                /* The gRPC socket is the one named "grpc", or else the first
                 * unix stream listener; everything else is for the daemon. */
                if (grpc_fd < 0 && (streq(name, "grpc") ||
                                    ((streq(name, "unknown") || streq(name, "stored") || streq(name, "connection") ||
                                      strstr(name, ".socket")) && fd_is_unix_listener(fd))))
                        grpc_fd = fd;
                else if (s->n_extra < ELEMENTSOF(s->extra_fds)) {
                        s->extra_fds[s->n_extra] = fd;
                        s->extra_names[s->n_extra] = strdup(name);
                        s->n_extra++;
                } else
                        close(fd);
        }
        if (names) {
                for (int i = 0; i < n; i++)
                        free(names[i]);
                free(names);
        }
        return grpc_fd;
}

int rpc_server_take_fd(RpcServer *s, const char *fd_name) {
        for (size_t i = 0; i < s->n_extra; i++)
                if (s->extra_fds[i] >= 0 && streq(s->extra_names[i], fd_name)) {
                        int fd = s->extra_fds[i];
                        s->extra_fds[i] = -EBADF;
                        return fd;
                }
        return -ENOENT;
}

static int on_idle(sd_event_source *es, uint64_t usec, void *userdata) {
        RpcServer *s = userdata;
        (void) es;
        (void) usec;
        if (s->busy_check && s->busy_check(s->busy_check_userdata)) {
                server_arm_idle(s);
                return 0;
        }
        if (s->n_active_calls == 0 && !s->shutting_down) {
                log_debug("Idle for %llu ms, exiting; the socket stays with systemd.",
                          (unsigned long long) (s->opts.idle_exit_usec / USEC_PER_MSEC));
                rpc_server_shutdown(s, 0);
        }
        return 0;
}

static void server_arm_idle(RpcServer *s) {
        if (!s->idle_timer || s->n_active_calls > 0 || s->shutting_down)
                return;
        uint64_t now;
        sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(s->idle_timer, now + s->opts.idle_exit_usec);
        sd_event_source_set_enabled(s->idle_timer, SD_EVENT_ONESHOT);
}

static int on_signal(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        RpcServer *s = userdata;
        (void) es;
        if (!s->shutting_down)
                log_info("Received %s, shutting down.", si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        rpc_server_shutdown(s, 0);
        return 0;
}

int rpc_server_start(RpcServer *s) {
        int r, fd;

        fd = take_listen_fds(s);
        if (fd < 0 && fd != -EBADF)
                return fd;
        if (fd < 0) {
                _cleanup_free_ char *path = s->opts.socket_path ? strdup(s->opts.socket_path)
                                                                 : hostmesh_socket_path(s->name);
                if (!path)
                        return -ENOMEM;
                fd = bind_socket(s, path);
                if (fd < 0)
                        return log_error_errno(fd, "Failed to listen on %s: %m", path);
        } else {
                int flags = fcntl(fd, F_GETFL);
                if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                        return negative_errno();
        }
        s->listen_fd = fd;

        /* Typed methods are registered with gRPC so that their request comes
         * with the call. Not when an interceptor or fallback may want the
         * raw call (the gateway forwards bytes it must not consume). */
        bool register_methods = !s->interceptor && !s->fallback;
        size_t n_slots = GENERIC_SLOTS;
        if (register_methods)
                for (size_t i = 0; i < s->n_methods; i++) {
                        s->methods[i].registered = grpc_server_register_method(
                                s->grpc, s->methods[i].method.path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
                        if (!s->methods[i].registered)
                                return -EPROTO;
                        n_slots += SLOTS_PER_METHOD;
                }
        s->slots = calloc(n_slots, sizeof(RequestSlot *));
        if (!s->slots)
                return -ENOMEM;

        grpc_server_start(s->grpc);
        for (size_t i = 0; i < n_slots; i++) {
                RequestSlot *slot = calloc(1, sizeof(*slot));
                if (!slot)
                        return -ENOMEM;
                slot->tag.fn = on_request_slot;
                slot->server = s;
                if (i >= GENERIC_SLOTS)
                        slot->entry = &s->methods[(i - GENERIC_SLOTS) / SLOTS_PER_METHOD];
                s->slots[s->n_slots++] = slot;
                s->n_slots_alive++;
                r = request_slot_post(slot);
                if (r < 0)
                        return r;
        }

        /* Connections are accepted only after grpc_server_start(), as gRPC requires. */
        r = sd_event_add_io(s->event, &s->listen_source, s->listen_fd, EPOLLIN, on_accept, s);
        if (r < 0)
                return r;
        r = sd_event_add_signal(s->event, &s->sigterm_source, SIGTERM, on_signal, s);
        if (r < 0)
                return r;
        r = sd_event_add_signal(s->event, &s->sigint_source, SIGINT, on_signal, s);
        if (r < 0)
                return r;
        if (s->opts.idle_exit_usec > 0) {
                r = sd_event_add_time_relative(s->event, &s->idle_timer, CLOCK_MONOTONIC, s->opts.idle_exit_usec,
                                               10 * USEC_PER_MSEC, on_idle, s);
                if (r < 0)
                        return r;
        }
        /* Honours WATCHDOG_USEC when the unit asks for a watchdog. */
        (void) sd_event_set_watchdog(s->event, true);
        s->started = true;
        (void) sd_notify(false, "READY=1\nSTATUS=Serving");
        log_debug("hostmesh-%sd serving.", s->name);
        return 0;
}

static void on_shutdown_done(RpcTag *t, bool ok) {
        RpcServer *s = (RpcServer *) ((char *) t - offsetof(RpcServer, shutdown_tag));
        (void) ok;
        s->shutdown_done = true;
        server_maybe_finish_shutdown(s);
}

static void server_maybe_finish_shutdown(RpcServer *s) {
        if (!s->shutting_down || !s->shutdown_done || s->n_slots_alive > 0)
                return;
        if (s->event && sd_event_get_state(s->event) != SD_EVENT_FINISHED)
                sd_event_exit(s->event, s->exit_code);
}

/* Ends the drain: the connections are closed first, then gRPC shuts down.
 *
 * The order matters. grpc_server_shutdown_and_notify() sends a graceful
 * GOAWAY and goes on accepting streams for a round trip, but gRPC cancels
 * every call that starts once shutdown has been called: the client gets
 * CANCELLED, not retryable, for a call no handler ever saw. Under load
 * (calls through the gateway while systemd restarts a part) that happened
 * on most restarts. Disconnecting first (grpc_server_cancel_all_calls()
 * closes every channel's transport and nothing else; grpc.h says to call it
 * after shutdown, gRPC 1.51 does not depend on that) ends each stream still
 * open with UNAVAILABLE, and each transport's close is queued before any
 * cancellation shutdown could cause. Clients then connect again and wait in
 * the listening socket's backlog for the next process. */
static void server_close(RpcServer *s) {
        if (s->closing)
                return;
        s->closing = true;
        s->drain_timer = sd_event_source_disable_unref(s->drain_timer);
        grpc_server_cancel_all_calls(s->grpc);
        s->shutdown_tag.fn = on_shutdown_done;
        grpc_server_shutdown_and_notify(s->grpc, rpc_loop_cq(s->loop), &s->shutdown_tag);
}

/* The drain is over when every call taken before it began has closed. */
static void server_maybe_close(RpcServer *s) {
        if (s->shutting_down && !s->closing && s->n_serving_calls == 0)
                server_close(s);
}

static int on_drain_timeout(sd_event_source *es, uint64_t usec, void *userdata) {
        RpcServer *s = userdata;
        (void) es;
        (void) usec;
        log_warning("%u call(s) still running after the drain timeout, cancelling them.", s->n_serving_calls);
        server_close(s);
        return 0;
}

/* Drains in two steps. First the server stops accepting connections and
 * refuses new calls with UNAVAILABLE while the calls it had already taken
 * finish (up to drain_usec); then server_close() closes the connections. */
void rpc_server_shutdown(RpcServer *s, int code) {
        if (s->shutting_down)
                return;
        s->shutting_down = true;
        s->exit_code = code;
        (void) sd_notify(false, "STOPPING=1");
        health_notify(s);
        s->listen_source = sd_event_source_disable_unref(s->listen_source);
        s->listen_fd = safe_close(s->listen_fd);
        /* Open health watches never end by themselves. */
        for (RpcCall *c = s->watchers; c; c = c->watch_next)
                if (!c->finished)
                        rpc_call_finish(c, RPC_UNAVAILABLE, "Server is shutting down.");
        (void) sd_event_add_time_relative(s->event, &s->drain_timer, CLOCK_MONOTONIC, s->opts.drain_usec,
                                          10 * USEC_PER_MSEC, on_drain_timeout, s);
        server_maybe_close(s);
}

RpcServer *rpc_server_free(RpcServer *s) {
        if (!s)
                return NULL;
        if (s->grpc) {
                if (!s->shutting_down && s->started)
                        rpc_server_shutdown(s, 0);
                if (s->started) {
                        server_close(s);
                        if (!s->shutdown_done)
                                grpc_server_cancel_all_calls(s->grpc);
                        rpc_loop_run_until(s->loop, &s->shutdown_done);
                }
                grpc_server_destroy(s->grpc);
        }
        /* Calls finishing after this point must not touch the server. */
        for (RpcCall *c = s->calls; c; c = c->all_next) {
                call_account_done(c);
                c->server = NULL;
        }
        for (size_t i = 0; i < s->n_slots; i++)
                if (s->slots[i])
                        s->slots[i]->server = NULL;
        free(s->slots);
        if (s->creds)
                grpc_server_credentials_release(s->creds);
        sd_event_source_disable_unref(s->listen_source);
        sd_event_source_disable_unref(s->idle_timer);
        sd_event_source_disable_unref(s->drain_timer);
        sd_event_source_disable_unref(s->sigterm_source);
        sd_event_source_disable_unref(s->sigint_source);
        safe_close(s->listen_fd);
        if (s->socket_path)
                (void) unlink(s->socket_path);
        for (size_t i = 0; i < s->n_extra; i++) {
                safe_close(s->extra_fds[i]);
                free(s->extra_names[i]);
        }
        for (size_t i = 0; i < s->n_health; i++)
                free(s->health[i].name);
        free(s->methods);
        free(s->peers);
        free(s->peer_calls);
        free(s->socket_path);
        free(s->name);
        metrics_free(s->metrics);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}
