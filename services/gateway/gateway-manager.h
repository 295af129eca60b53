/* SPDX-License-Identifier: MIT */
#pragma once

/* The gateway's manager: owns the loop, the front rpc server, the route
 * table, the backend channels and the optional HTTP metrics listener. */

#include <stdio.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "daemon.h"
#include "rpc.h"

typedef struct GatewayConfig {
        RpcServerOptions rpc;
        char **allow_users;       /* user names or numeric uids; root is always allowed */
        char **allow_groups;      /* group names or numeric gids */
        char **routes;            /* extra "service.prefix=part" or "service.prefix=unix:/path" */
        char *metrics_listen;     /* "127.0.0.1:9464" serves GET /metrics; empty = off */
        uint64_t backend_timeout_usec; /* cap for calls without a deadline (0 = none) */
        char *tcp_listen;         /* "0.0.0.0:8443": remote callers with bearer tokens; empty = off */
        char *tls_cert;           /* PEM files; both, or the listener must be tcp_insecure */
        char *tls_key;
        bool tcp_insecure;        /* plaintext TCP, allowed on a loopback address only */
        char *bearer_audience;    /* audience bearer tokens must carry */
        char **bearer_allow;      /* methods beyond the public API that bearer callers may call */
        uint64_t revocation_cache_usec; /* how long identityd's "not revoked" is reused */
} GatewayConfig;

typedef struct Backend {
        char *part;               /* "dns"; NULL for a custom target */
        char *target;             /* "unix:/run/hostmesh/dns.sock" */
        RpcClient *client;        /* connected lazily */
} Backend;

typedef struct Route {
        char *prefix;             /* "hostmesh.dns.v1." — matched against the service name */
        Backend *backend;
} Route;

typedef struct Manager {
        sd_event *event;
        RpcLoop *rpc_loop;
        RpcServer *server;
        GatewayConfig config;

        Backend *backends;
        size_t n_backends;
        Route *routes;
        size_t n_routes;

        uid_t *allowed_uids;
        size_t n_allowed_uids;
        gid_t *allowed_gids;
        size_t n_allowed_gids;

        struct GatewayBearer *bearer;

        struct HttpServer *metrics_http;
        struct HttpServer *tcp_http;      /* gRPC and Connect for bearer-token callers */
        struct HttpServer *local_http;    /* Connect on the unix socket */
        bool tcp_from_systemd;
} Manager;

int manager_new(const DaemonArgs *args, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
int manager_start(Manager *m);
int manager_run(Manager *m);
void manager_print_config(Manager *m, FILE *f);

Backend *manager_find_backend(Manager *m, const char *part);
/* Routes a full method path ("/pkg.Service/Method") to a backend; NULL when none. */
Backend *manager_route(Manager *m, const char *method);
RpcClient *backend_client(Manager *m, Backend *b);
