/* SPDX-License-Identifier: MIT */
#pragma once

/* The proxy proper: one listening unix socket per registered container, on
 * the daemon's sd-event loop (no thread per connection). Each client
 * connection gets its own upstream connection to the engine; requests are
 * framed with dockerproxy-http, judged with dockerproxy-translate, and
 * bodies, long streams and hijacked (attach/exec) streams are pumped both
 * ways with backpressure: a side is only read while the other side's buffer
 * has room. */

#include <systemd/sd-event.h>

#include "dockerproxy-translate.h"
#include "macro.h"

struct Metrics;

/* Told when a request through `caller`'s socket made (add) or removed
 * something the caller owns; the records live with the registration. */
typedef void (*ProxyRecordFunc)(void *userdata, const DockerCaller *caller, OwnedKind kind, const char *id, bool add);

typedef struct ProxyContext {
        sd_event *event;
        const char *upstream;          /* engine socket path */
        struct Metrics *metrics;       /* may be NULL */
        unsigned max_connections;      /* per socket */
        uint64_t idle_timeout_usec;    /* between requests; 0: the default */
        ProxyRecordFunc on_record;     /* may be NULL */
        /* Inside an instance: hostmesh-init's pull socket (guest/init-pull.h),
         * for decisions with pull_ref; NULL elsewhere. */
        const char *pull_socket;
        void *userdata;
} ProxyContext;

typedef struct Proxy Proxy;

/* Binds `socket_path` (replacing a stale socket, mode 0666 so any user in the
 * container can connect) and serves `caller`, which must outlive the proxy.
 * With listen_fd >= 0 that already listening socket is used instead (kept
 * across restarts in systemd's fd store, so the inode bind-mounted into the
 * container stays the same); the proxy owns it either way. */
int proxy_new(const ProxyContext *ctx, const DockerCaller *caller, const char *socket_path, int listen_fd,
              Proxy **ret);
/* Closes the listener and every connection. The socket file stays (the
 * container's bind mount points at it); proxy_unlink() removes it. */
Proxy *proxy_free(Proxy *p);
void proxy_unlink(Proxy *p);
int proxy_listen_fd(const Proxy *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(Proxy *, proxy_free);
unsigned proxy_connections(const Proxy *p);

/* Blocking GET on the engine socket (registration only): status and body. */
int proxy_engine_get(const char *upstream, const char *path, uint64_t timeout_usec, unsigned *ret_status,
                     char **ret_body, size_t *ret_len);
