/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <grp.h>
#include <pwd.h>

#include "config.h"
#include "gateway-auth.h"
#include "gateway-bearer.h"
#include "gateway-forward.h"
#include "gateway-grpc.h"
#include "gateway-http.h"
#include "gateway-manager.h"
#include "log.h"
#include "parse-util.h"
#include "paths.h"

static const ConfigItem config_table[] = {
        DAEMON_RPC_CONFIG_ITEMS(GatewayConfig, rpc),
        CONFIG_ITEM("gateway", "allow_users", config_type_strv, GatewayConfig, allow_users,
                    "Local users allowed to call (root always is)"),
        CONFIG_ITEM("gateway", "allow_groups", config_type_strv, GatewayConfig, allow_groups,
                    "Local groups whose members may call"),
        CONFIG_ITEM("gateway", "routes", config_type_strv, GatewayConfig, routes,
                    "Extra routes: service.prefix=part or service.prefix=unix:/path"),
        CONFIG_ITEM("gateway", "metrics_listen", config_type_string, GatewayConfig, metrics_listen,
                    "Address for the HTTP /metrics listener (empty = off)"),
        CONFIG_ITEM("gateway", "backend_timeout", config_type_usec, GatewayConfig, backend_timeout_usec,
                    "Deadline given to forwarded calls that have none (0 = none)"),
        CONFIG_ITEM("gateway", "tcp_listen", config_type_string, GatewayConfig, tcp_listen,
                    "TCP address for remote callers with bearer tokens (empty = off)"),
        CONFIG_ITEM("gateway", "tls_cert", config_type_string, GatewayConfig, tls_cert,
                    "TLS certificate chain (PEM) for the TCP listener"),
        CONFIG_ITEM("gateway", "tls_key", config_type_string, GatewayConfig, tls_key,
                    "TLS private key (PEM) for the TCP listener"),
        CONFIG_ITEM("gateway", "tcp_insecure", config_type_bool, GatewayConfig, tcp_insecure,
                    "Serve tcp_listen without TLS (only on a loopback address)"),
        CONFIG_ITEM("gateway", "bearer_audience", config_type_string, GatewayConfig, bearer_audience,
                    "Audience that bearer tokens must carry"),
        CONFIG_ITEM("gateway", "bearer_allow", config_type_strv, GatewayConfig, bearer_allow,
                    "Methods bearer callers may call beyond the public API (pkg.Service/Method or a prefix)"),
        CONFIG_ITEM("gateway", "revocation_cache", config_type_usec, GatewayConfig, revocation_cache_usec,
                    "How long identityd's answer that a token is not revoked is reused (0 = ask every call)"),
};

static Backend *backend_add(Manager *m, const char *part, const char *target) {
        Backend *b;

        for (size_t i = 0; i < m->n_backends; i++)
                if (streq(m->backends[i].target, target))
                        return &m->backends[i];
        /* Routes point into this array: it is sized once in manager_new(). */
        b = &m->backends[m->n_backends++];
        *b = (Backend){ .part = part ? strdup(part) : NULL, .target = strdup(target) };
        if ((part && !b->part) || !b->target)
                return NULL;
        return b;
}

static int route_add(Manager *m, const char *prefix, Backend *b) {
        Route *r = realloc(m->routes, (m->n_routes + 1) * sizeof(Route));
        if (!r)
                return -ENOMEM;
        m->routes = r;
        m->routes[m->n_routes] = (Route){ .prefix = strdup(prefix), .backend = b };
        if (!m->routes[m->n_routes].prefix)
                return -ENOMEM;
        m->n_routes++;
        return 0;
}

static char *part_target(const char *part) {
        _cleanup_free_ char *p = hostmesh_socket_path(part);
        char *t;
        if (!p || asprintf(&t, "unix:%s", p) < 0)
                return NULL;
        return t;
}

/* Defaults: hostmesh.<part>.v1.* → <part>.sock; the public compute API →
 * vmm; the public iam API → identity. Configured routes come first, so
 * they win. */
static int routes_build(Manager *m) {
        static const struct {
                const char *prefix, *part;
        } defaults[] = {
                { "namespace.cloud.compute.v1beta.", "vmm" },
                { "namespace.cloud.iam.v1beta.", "identity" },
        };
        size_t n_cfg = 0;
        int r;

        for (char **p = m->config.routes; p && *p; p++)
                n_cfg++;
        m->backends = calloc(HOSTMESH_PARTS_MAX + n_cfg, sizeof(Backend));
        if (!m->backends)
                return -ENOMEM;

        for (char **p = m->config.routes; p && *p; p++) {
                _cleanup_free_ char *prefix = NULL, *target = NULL;
                const char *eq = strchr(*p, '=');
                const char *dest;
                Backend *b;

                if (!eq || eq == *p || !eq[1])
                        return log_error_errno(-EINVAL, "Invalid route '%s': expected service.prefix=part or "
                                               "service.prefix=unix:/path.", *p);
                prefix = strndup(*p, (size_t) (eq - *p));
                dest = eq + 1;
                if (!prefix)
                        return -ENOMEM;
                if (strncmp(dest, "unix:", 5) == 0)
                        b = backend_add(m, NULL, dest);
                else {
                        bool known = false;
                        for (size_t i = 0; i < HOSTMESH_PARTS_MAX; i++)
                                known = known || streq(hostmesh_parts[i], dest);
                        if (!known || streq(dest, "gateway"))
                                return log_error_errno(-EINVAL, "Invalid route '%s': unknown part '%s'.", *p, dest);
                        target = part_target(dest);
                        if (!target)
                                return -ENOMEM;
                        b = backend_add(m, dest, target);
                }
                if (!b)
                        return -ENOMEM;
                r = route_add(m, prefix, b);
                if (r < 0)
                        return r;
        }

        for (size_t i = 0; i < HOSTMESH_PARTS_MAX; i++) {
                const char *part = hostmesh_parts[i];
                _cleanup_free_ char *target = NULL;
                char prefix[64];
                Backend *b;

                if (streq(part, "gateway"))
                        continue;
                target = part_target(part);
                if (!target)
                        return -ENOMEM;
                b = backend_add(m, part, target);
                if (!b)
                        return -ENOMEM;
                snprintf(prefix, sizeof(prefix), "hostmesh.%s.v1.", part);
                r = route_add(m, prefix, b);
                if (r < 0)
                        return r;
                for (size_t j = 0; j < ELEMENTSOF(defaults); j++)
                        if (streq(defaults[j].part, part)) {
                                r = route_add(m, defaults[j].prefix, b);
                                if (r < 0)
                                        return r;
                        }
        }
        return 0;
}

/* Whether the host part of "host:port" / "[v6]:port" is a loopback address. */
static bool address_is_loopback(const char *address) {
        _cleanup_free_ char *host = NULL;
        const char *colon;
        struct in6_addr a6;
        struct in_addr a4;

        if (address[0] == '[') {
                const char *end = strchr(address, ']');
                if (!end)
                        return false;
                host = strndup(address + 1, (size_t) (end - address - 1));
        } else {
                colon = strrchr(address, ':');
                host = colon ? strndup(address, (size_t) (colon - address)) : strdup(address);
        }
        if (!host)
                return false;
        if (streq(host, "localhost"))
                return true;
        if (inet_pton(AF_INET, host, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127;
        if (inet_pton(AF_INET6, host, &a6) == 1)
                return IN6_IS_ADDR_LOOPBACK(&a6);
        return false;
}

/* Bearer tokens are credentials: on the network they travel in TLS. A
 * plaintext listener is for tests and for a TLS-terminating proxy on the
 * same host, so it must be asked for and can only be bound to loopback. */
static int tcp_listen_check(const GatewayConfig *c) {
        bool cert = !isempty(c->tls_cert), key = !isempty(c->tls_key);

        if (isempty(c->tcp_listen))
                return 0;
        if (cert != key)
                return log_error_errno(-EINVAL, "[gateway] tcp_listen = %s: TLS needs both tls_cert and tls_key; "
                                       "only %s is set.", c->tcp_listen, cert ? "tls_cert" : "tls_key");
        if (cert)
                return 0;
        if (!c->tcp_insecure)
                return log_error_errno(-EINVAL, "[gateway] tcp_listen = %s without TLS: set tls_cert and tls_key, or "
                                       "tcp_insecure = yes with a loopback address (bearer tokens would cross the "
                                       "network in the clear).", c->tcp_listen);
        if (!address_is_loopback(c->tcp_listen))
                return log_error_errno(-EINVAL, "[gateway] tcp_insecure = yes needs a loopback tcp_listen "
                                       "(127.0.0.1:PORT, [::1]:PORT, localhost:PORT), not %s.", c->tcp_listen);
        return 0;
}

Backend *manager_find_backend(Manager *m, const char *part) {
        for (size_t i = 0; i < m->n_backends; i++)
                if (streq_ptr(m->backends[i].part, part))
                        return &m->backends[i];
        return NULL;
}

Backend *manager_route(Manager *m, const char *method) {
        /* method is "/pkg.Service/Method": match prefixes against "pkg.Service/". */
        const char *service = method[0] == '/' ? method + 1 : method;

        for (size_t i = 0; i < m->n_routes; i++)
                if (strncmp(service, m->routes[i].prefix, strlen(m->routes[i].prefix)) == 0)
                        return m->routes[i].backend;
        return NULL;
}

RpcClient *backend_client(Manager *m, Backend *b) {
        if (!b->client) {
                int r = rpc_client_new(m->rpc_loop, b->target, &b->client);
                if (r < 0) {
                        log_error_errno(r, "Failed to create a channel to %s: %m", b->target);
                        return NULL;
                }
        }
        return b->client;
}

int manager_new(const DaemonArgs *args, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory.");
        m->config.rpc = (RpcServerOptions){ .name = "gateway", .idle_exit_usec = 60 * USEC_PER_SEC };
        m->config.bearer_audience = strdup("hostmesh");
        if (!m->config.bearer_audience)
                return log_error_errno(-ENOMEM, "Out of memory.");
        m->config.revocation_cache_usec = 5 * USEC_PER_SEC;

        r = daemon_load_config(args, config_table, ELEMENTSOF(config_table), &m->config);
        if (r < 0)
                return r;
        r = tcp_listen_check(&m->config);
        if (r < 0)
                return r;
        r = gateway_auth_check_bearer_allow(m);
        if (r < 0)
                return r;
        r = gateway_auth_resolve(m);
        if (r < 0)
                return r;
        r = routes_build(m);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        gateway_http_stop(m);
        gateway_listeners_stop(m);
        /* The server goes first: forwarded calls still hold backend channels. */
        m->server = rpc_server_free(m->server);
        m->bearer = gateway_bearer_free(m->bearer);
        for (size_t i = 0; i < m->n_backends; i++) {
                rpc_client_free(m->backends[i].client);
                free(m->backends[i].part);
                free(m->backends[i].target);
        }
        free(m->backends);
        for (size_t i = 0; i < m->n_routes; i++)
                free(m->routes[i].prefix);
        free(m->routes);
        free(m->allowed_uids);
        free(m->allowed_gids);
        rpc_loop_free(m->rpc_loop);
        sd_event_unref(m->event);
        config_done(config_table, ELEMENTSOF(config_table), &m->config);
        free(m);
        return NULL;
}

void manager_print_config(Manager *m, FILE *f) {
        config_print(config_table, ELEMENTSOF(config_table), &m->config, f);
}

int manager_start(Manager *m) {
        int r;

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");
        r = rpc_loop_new(m->event, &m->rpc_loop);
        if (r < 0)
                return log_error_errno(r, "Failed to start the rpc loop: %m");
        r = rpc_server_new(m->rpc_loop, &m->config.rpc, &m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to create the rpc server: %m");
        r = gateway_grpc_register(m);
        if (r < 0)
                return log_error_errno(r, "Failed to register methods: %m");
        rpc_server_set_interceptor(m->server, gateway_intercept, m);
        r = gateway_bearer_new(m, &m->bearer);
        if (r < 0)
                return log_error_errno(r, "Out of memory.");
        r = rpc_server_start(m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to start serving: %m");
        r = gateway_listeners_start(m);
        if (r < 0)
                return r;
        r = gateway_http_start(m);
        if (r < 0)
                return r;
        return 0;
}

int manager_run(Manager *m) {
        return sd_event_loop(m->event);
}
